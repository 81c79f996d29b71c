"""normkit: batch normalization and its family for PyTorch.

    import normkit as nk
    nk.nn.BatchNorm2d(64)                 # drop-in for torch.nn.BatchNorm2d
    nk.functional.layer_norm(x, (768,))   # torch.nn.functional's signature
    nk.reference                          # the formulas in NumPy (the oracle, and a page to read)

Heavy or optional parts (``tools``, ``lab``, the Numba kernels) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from normkit import functional, nn
from normkit._version import __version__
from normkit.config import BackendUnavailableError, use_backend

__all__ = [
    "BackendUnavailableError",
    "__version__",
    "functional",
    "nn",
    "reference",
    "use_backend",
]

_LAZY_SUBMODULES = {"reference", "tools", "lab", "kernels", "backends", "config"}


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"normkit.{name}")
    raise AttributeError(f"module 'normkit' has no attribute {name!r}")
