"""Every path a layer call can take, as a test parameter.

A normkit layer call runs on one of two backends (``"numba"``: normkit's kernels for
float32/float64 CPU tensors; ``"torch"``: torch's kernels with normkit's guard, and the
fallback for float16/bfloat16), either eagerly or inside a ``torch.compile`` graph (where
the backend is chosen once, when Dynamo traces the call). A test that takes the ``path``
fixture runs once per path it is parametrized with::

    @pytest.mark.parametrize("path", FULL_PRECISION_PATHS, indirect=True)
    def test_something(path):
        layer = nk.nn.BatchNorm2d(3)
        y = path.prepare(layer)(x)        # eager: the layer; compiled: torch.compile(layer)

The fixture (``tests/conftest.py``) holds :meth:`CallPath.active` open for the whole test:
the backend forced by name (so a test of the numba path fails, not falls back, if numba
cannot take the input) and, for a compiled path, Dynamo's caches emptied before and after
(a graph traced under another backend, or by another test, is never reused).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch

import normkit as nk

#: The dtypes that go through the torch backend whatever the request (numba takes neither).
HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class CallPath:
    """One way through the stack: a backend (``"auto"`` for the automatic choice) and a
    ``torch.compile`` backend (``None`` for eager calls)."""

    backend: str
    compiler: str | None = None

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.compiler or 'eager'}"

    def __str__(self) -> str:
        return self.id

    @property
    def compiled(self) -> bool:
        return self.compiler is not None

    def prepare(self, module: torch.nn.Module, fullgraph: bool = True) -> Callable:
        """What a test calls instead of ``module``: the module itself, or its compiled form
        (``fullgraph=False`` where the call is expected to raise: with ``fullgraph=True``
        Dynamo replaces any exception raised while tracing by its own ``Unsupported``)."""
        if not self.compiled:
            return module
        return torch.compile(module, backend=self.compiler, fullgraph=fullgraph)

    @contextmanager
    def active(self) -> Iterator[None]:
        with ExitStack() as stack:
            stack.enter_context(nk.use_backend(self.backend))
            if self.compiled:
                stack.enter_context(fresh_compile())
            yield


@contextmanager
def fresh_compile() -> Iterator[None]:
    """No graph from an earlier test and no on-disk compile cache (torch's AOT-autograd
    cache key does not cover a custom op's registered backward)."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    torch._dynamo.reset()
    try:
        with (
            functorch_config.patch(enable_autograd_cache=False),
            inductor_config.patch(fx_graph_cache=False),
        ):
            yield
    finally:
        torch._dynamo.reset()


NUMBA = CallPath("numba")
TORCH = CallPath("torch")
NUMBA_COMPILED = CallPath("numba", "aot_eager")
TORCH_COMPILED = CallPath("torch", "aot_eager")
NUMBA_INDUCTOR = CallPath("numba", "inductor")
TORCH_INDUCTOR = CallPath("torch", "inductor")
#: float16/bfloat16 inputs: the automatic choice, which must fall back to torch's kernels.
AUTO = CallPath("auto")
AUTO_COMPILED = CallPath("auto", "aot_eager")

EAGER_PATHS = [NUMBA, TORCH]
COMPILED_PATHS = [NUMBA_COMPILED, TORCH_COMPILED]
INDUCTOR_PATHS = [NUMBA_INDUCTOR, TORCH_INDUCTOR]
#: float32/float64 inputs: each backend, eager and compiled (aot_eager).
FULL_PRECISION_PATHS = [*EAGER_PATHS, *COMPILED_PATHS]
#: float16/bfloat16 inputs, eager and compiled.
HALF_PATHS = [AUTO, AUTO_COMPILED]


def path_params(paths: list[CallPath], dtypes: tuple[torch.dtype, ...]) -> list:
    """``pytest.param(path, dtype)`` pairs for ``parametrize(("path", "dtype"), ...,
    indirect=["path"])``."""
    import pytest

    return [
        pytest.param(path, dtype, id=f"{path}-{str(dtype).removeprefix('torch.')}")
        for path in paths
        for dtype in dtypes
    ]


#: Every (path, dtype) a float input can take: both backends eager and compiled for float32,
#: the torch fallback eager and compiled for float16 and bfloat16.
EVERY_PATH = [
    *path_params(FULL_PRECISION_PATHS, (torch.float32,)),
    *path_params(HALF_PATHS, HALF_DTYPES),
]
