"""The model zoo for normkit's tests and benchmarks: standard architectures written from
their papers and from the timm / torchvision sources (which cannot be imported here), built
from torch.nn and the ecosystem stand-ins in ``tests.zoo.ecosystem``.

``from tests.zoo.models import ZOO``: ``ZOO[name].build("test" | "bench")``.
"""
