"""The dispatch table as callers see it: selection, forcing, the op contract, autograd,
threads, forks."""

from __future__ import annotations

import inspect
import threading

import pytest
import torch

import normkit as nk
from normkit import backends
from normkit.backends import numba_backend, select, torch_backend
from normkit.config import ENV_VAR, BackendUnavailableError, reload_environment
from tests.kernels.conftest import numba_ops, runtime, torch_threads

nb = numba_ops
OPS = sorted(torch_backend.OPS)


@pytest.fixture
def environment(monkeypatch):
    """Set NORMKIT_BACKEND for one test (it is otherwise read once per process)."""

    def set_env(value):
        if value is None:
            monkeypatch.delenv(ENV_VAR, raising=False)
        else:
            monkeypatch.setenv(ENV_VAR, value)
        reload_environment()

    yield set_env
    monkeypatch.delenv(ENV_VAR, raising=False)
    reload_environment()


def test_auto_selection_prefers_numba_for_large_cpu_float(environment):
    environment(None)
    x = torch.randn(16, 64, 4096)  # above every measured crossover of crossover.json
    assert select("batch_norm_train", x) is numba_backend.OPS["batch_norm_train"]
    assert select("batch_norm_train", x.double()) is numba_backend.OPS["batch_norm_train"]
    # Not supported: falls back to the torch backend silently.
    assert select("batch_norm_train", x.half()) is torch_backend.batch_norm_train
    assert select("batch_norm_train", x[:0]) is torch_backend.batch_norm_train


def test_below_the_measured_crossover_torch_is_chosen(monkeypatch, environment):
    environment(None)
    crossover = {"float32": {"contiguous": {"min": 500, "max": 5000}}}
    monkeypatch.setitem(backends._CROSSOVER, "batch_norm_train", crossover)
    monkeypatch.setattr(backends, "_DECISIONS", {})
    numba_impl = numba_backend.OPS["batch_norm_train"]
    assert select("batch_norm_train", torch.randn(4, 5, 5)) is torch_backend.batch_norm_train
    assert select("batch_norm_train", torch.randn(4, 5, 25)) is numba_impl
    # above the measured range, torch's kernel again
    assert select("batch_norm_train", torch.randn(4, 5, 251)) is torch_backend.batch_norm_train
    # Forcing numba ignores the crossover.
    small = torch.randn(4, 5, 5)
    assert select("batch_norm_train", small, "numba") is numba_backend.OPS["batch_norm_train"]


def test_an_op_followed_by_an_activation_has_its_own_measured_range(monkeypatch, environment):
    environment(None)
    alone = {"float32": {"contiguous": {"min": 0, "max": 0}}}  # torch's kernel at every size
    fused = {"float32": {"contiguous": {"min": 500, "max": None}}}
    monkeypatch.setitem(backends._CROSSOVER, "batch_norm_eval", alone)
    monkeypatch.setitem(backends._CROSSOVER, "batch_norm_eval+act", fused)
    monkeypatch.setattr(backends, "_DECISIONS", {})
    x = torch.randn(4, 5, 25)
    assert select("batch_norm_eval", x) is torch_backend.batch_norm_eval
    assert select("batch_norm_eval", x, act="relu") is numba_backend.OPS["batch_norm_eval"]
    assert select("batch_norm_eval", x[:1], act="relu") is torch_backend.batch_norm_eval
    # Not measured with an activation: the op's own range.
    monkeypatch.delitem(backends._CROSSOVER, "batch_norm_eval+act")
    monkeypatch.setattr(backends, "_DECISIONS", {})
    assert select("batch_norm_eval", x, act="relu") is torch_backend.batch_norm_eval


def test_layers_with_a_fused_activation_dispatch_on_the_fused_range(monkeypatch, environment):
    environment(None)
    monkeypatch.setitem(
        backends._CROSSOVER, "batch_norm_eval", {"float32": {"contiguous": {"min": 0, "max": 0}}}
    )
    monkeypatch.setitem(
        backends._CROSSOVER,
        "batch_norm_eval+act",
        {"float32": {"contiguous": {"min": 1, "max": None}}},
    )
    monkeypatch.setattr(backends, "_DECISIONS", {})
    calls = []
    numba_eval = numba_backend.OPS["batch_norm_eval"]
    monkeypatch.setitem(
        numba_backend.OPS, "batch_norm_eval", lambda *a: calls.append(a[6]) or numba_eval(*a)
    )
    layer = nk.nn.BatchNormAct2d(5, "relu").eval()
    x = torch.randn(2, 5, 4, 4)
    torch.testing.assert_close(layer(x), torch.relu(torch.nn.functional.batch_norm(
        x, layer.running_mean, layer.running_var, layer.weight, layer.bias
    )))  # fmt: skip
    assert calls == ["relu"]
    nk.nn.BatchNorm2d(5).eval()(x)  # no activation: torch's kernel
    assert calls == ["relu"]


def test_layouts_tell_short_planes_from_long_ones():
    from normkit.kernels.batch_norm_ncl import SHORT_PLANE

    assert backends.SHORT_PLANES == SHORT_PLANE  # the kernels' own switch to row sweeps
    assert backends.layout_of(torch.randn(2, 3, 7, 7)) == "short_planes"
    assert backends.layout_of(torch.randn(2, 3, 63)) == "short_planes"
    assert backends.layout_of(torch.randn(2, 3, 8, 8)) == "contiguous"
    assert backends.layout_of(torch.randn(2, 3, 2, 4, 8)) == "contiguous"
    assert backends.layout_of(torch.randn(0, 3, 4, 4)) == "short_planes"  # empty: no indexing
    assert backends.layout_of(torch.randn(2, 3)) == "2d"
    cl = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    assert backends.layout_of(cl) == "channels_last"


def test_short_planes_have_their_own_range_or_the_contiguous_one(monkeypatch, environment):
    environment(None)
    table = {"float32": {"contiguous": {"min": 1, "max": None}}}
    monkeypatch.setitem(backends._CROSSOVER, "batch_norm_train", table)
    monkeypatch.setitem(backends._CROSSOVER, "batch_norm_train+act", {})
    monkeypatch.setattr(backends, "_DECISIONS", {})
    numba_train = numba_backend.OPS["batch_norm_train"]
    short = torch.randn(16, 40, 4, 4)
    assert select("batch_norm_train", short) is numba_train  # no entry: the contiguous one
    table["float32"]["short_planes"] = {"min": 0, "max": 0}
    monkeypatch.setattr(backends, "_DECISIONS", {})
    assert select("batch_norm_train", short) is torch_backend.batch_norm_train
    assert select("batch_norm_train", torch.randn(16, 40, 8, 8)) is numba_train
    # with an activation: the layout decides first, then the +act entry within it
    assert select("batch_norm_train", short, act="relu") is torch_backend.batch_norm_train
    backends._CROSSOVER["batch_norm_train+act"] = {
        "float32": {"contiguous": {"min": 1, "max": None}}
    }
    monkeypatch.setattr(backends, "_DECISIONS", {})
    long = torch.randn(16, 40, 8, 8)
    assert select("batch_norm_train", long, act="relu") is numba_train
    # the short planes' own range wins over the +act entry of another layout
    assert select("batch_norm_train", short, act="relu") is torch_backend.batch_norm_train
    assert backends.crossover("batch_norm_train", torch.float32, "short_planes", True) == (1, 0)


def test_the_shipped_table_sends_late_stage_planes_to_torch_and_large_ones_to_numba(environment):
    environment(None)
    forget = backends.forget_decisions
    forget()
    # (16, 1280, 4, 4), the last BatchNorm of MobileNetV2 at 112 x 112: numba's row sweeps
    # were 0.74x of torch's kernel there (benchmarks/bench_crossover.py, short_planes)
    low, _ = backends.crossover("batch_norm_train", torch.float32, "short_planes")
    plain, _ = backends.crossover("batch_norm_train", torch.float32, "contiguous")
    assert low > 16 * 1280 * 4 * 4 >= plain
    assert select("batch_norm_train", torch.randn(16, 1280, 4, 4)) is (
        torch_backend.batch_norm_train
    )
    assert (
        select("batch_norm_train", torch.randn(16, 80, 16, 16))
        is (numba_backend.OPS["batch_norm_train"])
    )


def test_env_var_and_context_force_a_backend(environment):
    x = torch.randn(64, 64, 64)
    environment("torch")
    assert select("batch_norm_train", x) is torch_backend.batch_norm_train
    with nk.use_backend("auto"):
        assert select("batch_norm_train", x) is numba_backend.OPS["batch_norm_train"]
    environment(None)
    with nk.use_backend("torch"):
        assert select("batch_norm_train", x) is torch_backend.batch_norm_train
    assert select("batch_norm_train", x, backend="torch") is torch_backend.batch_norm_train


def test_the_env_var_is_read_once(monkeypatch, environment):
    x = torch.randn(64, 64, 64)
    environment("torch")
    assert select("batch_norm_train", x) is torch_backend.batch_norm_train  # read here
    monkeypatch.setenv(ENV_VAR, "numba")  # not seen until reload_environment()
    assert select("batch_norm_train", x) is torch_backend.batch_norm_train
    reload_environment()
    assert select("batch_norm_train", x) is numba_backend.OPS["batch_norm_train"]


def test_numba_asked_for_by_name_raises_on_unsupported_tensors():
    with pytest.raises(BackendUnavailableError, match=r"numba.*torch.float16"):
        select("batch_norm_train", torch.randn(2, 3, 4).half(), backend="numba")
    with pytest.raises(BackendUnavailableError, match="empty tensor"):
        select("batch_norm_train", torch.randn(0, 3, 4), backend="numba")
    with pytest.raises(BackendUnavailableError, match="unknown normkit backend 'cuda'"):
        select("batch_norm_train", torch.randn(2, 3, 4), backend="cuda")


def test_the_op_list_is_complete():
    assert OPS == sorted(numba_backend.OPS)
    assert len(OPS) == 25, OPS  # with the 8 masked ops (normkit.backends.torch_masked)


@pytest.mark.parametrize("op", OPS)
def test_every_op_has_the_same_signature_on_both_backends(op):
    numba_fn = select(op, torch.randn(2, 3, 4), backend="numba")
    torch_fn = select(op, torch.randn(2, 3, 4), backend="torch")
    assert backends.backend_name(numba_fn) == "numba"
    assert backends.backend_name(torch_fn) == "torch"
    if inspect.isfunction(numba_fn):  # registered ops (the primitives) have schemas instead
        assert inspect.signature(numba_fn) == inspect.signature(torch_fn)


# ---------------------------------------------------------------------------------------
# Autograd through the numba backend, float64.


def _bn_train(x, w, b):
    return nk.functional.batch_norm(x, None, None, w, b, training=True, backend="numba")


def _bn_eval(x, w, b):
    rm = torch.linspace(-1, 1, x.shape[1], dtype=x.dtype)
    rv = torch.linspace(0.5, 2, x.shape[1], dtype=x.dtype)
    return nk.functional.batch_norm(x, rm, rv, w, b, training=False, backend="numba")


def _group(x, w, b):
    return nk.functional.group_norm(x, 2, w, b, backend="numba")


def _instance(x, w, b):
    return nk.functional.instance_norm(x, weight=w, bias=b, backend="numba")


def _layer(x, w, b):
    return nk.functional.layer_norm(x, (x.shape[1],), w, b, backend="numba")


def _rms(x, w, b):
    return nk.functional.rms_norm(x, (x.shape[1],), w, eps=1e-6, backend="numba")


CASES = [
    pytest.param(_group, (3, 4, 5), False, id="group"),
    pytest.param(_group, (3, 4, 3, 2), True, id="group-channels_last"),
    pytest.param(_instance, (2, 4, 5), False, id="instance"),
    pytest.param(_layer, (5, 4), False, id="layer"),
    pytest.param(_rms, (5, 4), False, id="rms"),
    pytest.param(_bn_train, (3, 4, 5), False, id="bn-train"),
    pytest.param(_bn_train, (3, 4, 3, 2), True, id="bn-train-channels_last"),
    pytest.param(_bn_train, (6, 4), False, id="bn1d-train"),
    pytest.param(_bn_eval, (3, 4, 5), False, id="bn-eval"),
    pytest.param(_bn_eval, (3, 4, 3, 2), True, id="bn-eval-channels_last"),
]


@pytest.mark.parametrize(("fn", "shape", "channels_last"), CASES)
def test_gradcheck_and_gradgradcheck_float64(fn, shape, channels_last):
    x = torch.randn(shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w = torch.randn(shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.randn(shape[1], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_grads_of_sum_backward_use_expanded_gradients():
    """``.sum().backward()`` hands the kernels a stride-0 gradient."""
    x = torch.randn(4, 3, 6, 5, requires_grad=True)
    layer = nk.nn.BatchNorm2d(3)
    layer(x).sum().backward()
    reference = torch.nn.BatchNorm2d(3)
    x_ref = x.detach().clone().requires_grad_(True)
    reference(x_ref).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad)


# ---------------------------------------------------------------------------------------
# Threads.


def test_kernel_threads_follow_torch_and_small_tensors_run_serially():
    from normkit.kernels import _jit
    from normkit.kernels._common import MIN_CHUNK

    large = torch.randn(4, 3, MIN_CHUNK)  # 12 chunks' worth
    small = torch.randn(4, 3, 50)
    for count in (1, 2, 1):
        with torch_threads(count):
            nb.batch_norm_forward(large, None, None, 1e-5)
            assert _jit._local.threads == min(count, _jit.numba.config.NUMBA_NUM_THREADS)
            assert torch.get_num_threads() == count
            nb.batch_norm_forward(small, None, None, 1e-5)
            assert _jit._local.threads == 1  # no parallel region for 600 values


def test_four_python_threads_share_layers_in_eval_mode():
    """An inference server: four threads run the same eval-mode layers concurrently."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        nk.nn.BatchNorm2d(8),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        nk.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
    )
    with torch.no_grad():
        for bn in (model[0], model[2]):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
    model.eval()
    inputs = [torch.randn(16, 8, 12, 12) for _ in range(4)]
    with torch.no_grad():
        expected = [model(x) for x in inputs]
    x_cl = inputs[0].contiguous(memory_format=torch.channels_last)
    results: dict[int, list[bool]] = {i: [] for i in range(4)}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker(i):
        try:
            barrier.wait()
            with torch.no_grad():
                for _ in range(25):
                    results[i].append(torch.allclose(model(inputs[i]), expected[i], atol=1e-5))
                    results[i].append(torch.allclose(model(x_cl), expected[0], atol=1e-5))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(all(r) and len(r) == 50 for r in results.values())


def _forked_child(queue):
    layer = nk.nn.BatchNorm2d(4)
    x = torch.arange(2 * 4 * 5 * 5, dtype=torch.float32).reshape(2, 4, 5, 5)
    queue.put((runtime.usable(), layer(x).detach().numpy()))


def test_a_forked_child_falls_back_to_torch_instead_of_dying():
    """GNU OpenMP cannot start parallel regions after fork (Numba would kill the child, e.g.
    a DataLoader worker): the child runs the torch backend, with the same results."""
    import multiprocessing

    nb.batch_norm_forward(torch.randn(2, 3, 40), None, None, 1e-5)  # the pool is running
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with torch_threads(1):  # as DataLoader workers run
        child = ctx.Process(target=_forked_child, args=(queue,))
        child.start()
        supported, y = queue.get(timeout=60)
        child.join(60)
    assert child.exitcode == 0
    assert supported == (runtime.THREADING_LAYER != "omp")
    x = torch.arange(2 * 4 * 5 * 5, dtype=torch.float32).reshape(2, 4, 5, 5)
    torch.testing.assert_close(torch.from_numpy(y), torch.nn.BatchNorm2d(4)(x).detach())


def _storages(values):
    return [v.untyped_storage().data_ptr() for v in values if isinstance(v, torch.Tensor)]


def test_no_op_returns_aliasing_tensors():
    """torch.library custom ops (torch.compile) require outputs that alias nothing."""
    x, g = torch.randn(3, 4, 70), torch.randn(3, 4, 70)
    w, b = torch.randn(4), torch.randn(4)
    mean, var = nb.batch_norm_stats(x)
    invstd = torch.rsqrt(var + 1e-5)
    rows, rg = torch.randn(6, 8), torch.randn(6, 8)
    gm, gv = nb.group_norm_forward(x, 2, w, b, 1e-5)[1:]
    rm, rv = nb.row_norm_forward(rows, torch.randn(8), None, 1e-5, True)[1:]
    calls = [
        ((x,), nb.batch_norm_stats(x)),
        ((x,), nb.batch_norm_forward(x, w, b, 1e-5)),
        ((g, x), nb.batch_norm_backward(g, x, w, mean, var, 1e-5)),
        ((g, x), nb.batch_norm_backward_reduce(g, x, mean, invstd, w, b, "relu")),
        ((x,), (nb.batch_norm_elemt(x, mean, invstd, w, b, "silu"),)),
        ((x,), (nb.batch_norm_eval_forward(x, mean, var, w, b, 1e-5),)),
        ((g, x), nb.batch_norm_eval_backward(g, x, mean, var, w, 1e-5)),
        ((x,), nb.group_norm_forward(x, 2, w, b, 1e-5)),
        ((g, x), nb.group_norm_backward(g, x, 2, w, gm, gv, 1e-5)),
        ((rows,), nb.row_norm_forward(rows, None, None, 1e-5, False)),
        ((rg, rows), nb.row_norm_backward(rg, rows, torch.randn(8), rm, rv, 1e-5, True)),
    ]
    for inputs, outputs in calls:
        out = _storages(outputs)
        assert len(set(out)) == len(out), "outputs share storage"
        assert not set(out) & set(_storages([*inputs, w, b, mean, var])), "output aliases input"


def test_torch_compile_runs_the_numba_kernels():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        nk.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        nk.nn.GroupNorm(2, 8),
        torch.nn.Flatten(),
        nk.nn.LayerNorm(8 * 6 * 6),
    )
    x = torch.randn(4, 3, 8, 8)
    compiled = torch.compile(model, backend="eager")
    y = compiled(x)
    y.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    torch.testing.assert_close(model(x), y)
    model(x).sum().backward()
    for a, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)


class _OpLog(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_ops_skip_the_dispatcher_only_in_plain_eager_execution(monkeypatch):
    """A dispatch mode, a torch.func transform and a tensor subclass all meet the registered
    op; plain eager calls go straight to the implementation and give the same result."""
    from normkit.backends import numba_batch_norm

    op = numba_batch_norm.batch_norm_eval_forward
    x, w, b = torch.randn(4, 3, 9), torch.randn(3), torch.randn(3)
    mean, var = torch.randn(3), torch.rand(3) + 0.5
    args = (w, b, mean, var, 1e-5, "identity", 0.01)
    calls = []
    impl = op.impl
    monkeypatch.setattr(op, "impl", lambda *a: calls.append(1) or impl(*a))

    direct = op(x, *args)
    assert calls == [1]
    with _OpLog() as log:
        logged = op(x, *args)
    assert "normkit.batch_norm_eval_forward.default" in log.names
    torch.testing.assert_close(logged, direct)
    mapped = torch.func.vmap(lambda t: op(t.unsqueeze(0), *args).squeeze(0))(x)
    torch.testing.assert_close(mapped, direct, rtol=1e-6, atol=1e-6)
    assert calls == [1], "the dispatched calls must not reach the direct path"
