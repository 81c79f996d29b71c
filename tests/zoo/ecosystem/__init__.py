"""Stand-ins for the timm and torchvision layer classes the zoo's models use.

timm and torchvision cannot be imported on the project's CPU machines (the registry's
torchvision wheel is built against CUDA torch and its ops do not load against torch 2.13+cpu;
timm imports torchvision), so these modules re-implement the classes the model zoo needs
from the originals' published behaviour. Each class keeps the original's public contract:
base classes, constructor arguments and defaults, attribute names, state_dict keys and
forward semantics (in-place activations, eps placement, float32 statistics, permutes). Each
class reports the original's import path as its ``__module__``, so code that recognises
layers by ``f"{type(m).__module__}.{type(m).__qualname__}"`` sees e.g.
``timm.layers.norm_act.BatchNormAct2d``.

Versions read: huggingface/pytorch-image-models at aa4b5850 (v1.0.28-14, 1.0.29.dev0),
torchvision 0.28.0 (git 8fb87713; the files used are unchanged in 0.29.1).

``install()`` registers the original module names in ``sys.modules`` (only for a package
that is not importable); ``uninstall()`` takes back exactly what ``install()`` added; the
pytest fixture ``tests.zoo.fixtures.stand_in_packages`` wraps the pair. Without ``install()``
the classes work as they are (``copy.deepcopy`` too), but pickling a model that holds one
(``torch.save(model)``) needs the module names registered, as it would need timm itself.
"""

from tests.zoo.ecosystem.install import REAL_MODULES, install, installed, uninstall

__all__ = ["REAL_MODULES", "install", "installed", "uninstall"]
