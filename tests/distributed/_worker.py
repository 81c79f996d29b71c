"""Scenarios run inside each gloo process, and the data they share with the parent test.

Every rank regenerates the same global batches from a seed and keeps its own slice, so
the parent can run single-process BatchNorm on the concatenation and compare.
"""

from __future__ import annotations

import os
import traceback
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ---------------------------------------------------------------------------------------
# Data shared by the workers and the parent.


def global_batches(config: dict[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` pairs ``(x, grad)`` of the concatenated batch, identical on every process."""
    gen = torch.Generator().manual_seed(config.get("seed", 0))
    dtype = DTYPES[config.get("dtype", "float64")]
    total = sum(config["sizes"])
    shape = (total, *config["shape"])
    offset, scale = config.get("offset", 0.5), config.get("scale", 2.0)
    out = []
    for step in range(config.get("steps", 3) + 1):  # the last one is for eval
        x = torch.randn(shape, generator=gen, dtype=torch.float64) * scale + offset + step
        grad = torch.randn(shape, generator=gen, dtype=torch.float64)
        out.append((x.to(dtype), grad.to(dtype)))
    return out


def global_masks(config: dict[str, Any]) -> list[torch.Tensor] | None:
    """Per step (the eval step included), the bool mask of the concatenated batch: prefix
    masks from ``lengths`` (one per sample, over the last dim) or random ``holes`` (the
    fraction of valid positions); None for an unmasked config."""
    if "lengths" not in config and "holes" not in config:
        return None
    total = sum(config["sizes"])
    spatial = tuple(config["shape"][1:])
    gen = torch.Generator().manual_seed(100 + config.get("seed", 0))
    masks = []
    for _ in range(config.get("steps", 3) + 1):
        if "lengths" in config:
            lengths = torch.tensor(config["lengths"])
            rows = torch.arange(spatial[-1]) < lengths[:, None]
            shape = (total, *(1,) * (len(spatial) - 1), spatial[-1])
            masks.append(rows.reshape(shape).expand(total, *spatial).contiguous())
        else:
            masks.append(torch.rand((total, *spatial), generator=gen) < config["holes"])
    return masks


def local_slice(t: torch.Tensor, rank: int, sizes: list[int]) -> torch.Tensor:
    start = sum(sizes[:rank])
    return t[start : start + sizes[rank]]


def initial_parameters(config: dict[str, Any]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + config.get("seed", 0))
    channels = config["shape"][0]
    return {
        "weight": torch.randn(channels, generator=gen, dtype=torch.float64) * 0.5 + 1.0,
        "bias": torch.randn(channels, generator=gen, dtype=torch.float64),
        "running_mean": torch.randn(channels, generator=gen, dtype=torch.float64),
        "running_var": torch.rand(channels, generator=gen, dtype=torch.float64) + 0.5,
    }


def build_layer(module_cls, config: dict[str, Any], **extra) -> torch.nn.Module:
    """A BatchNorm-like layer with the config's options and the shared initial state."""
    layer = module_cls(
        config["shape"][0],
        momentum=config.get("momentum", 0.1),
        affine=config.get("affine", True),
        track_running_stats=config.get("track", True),
        **extra,
    ).to(DTYPES[config.get("dtype", "float64")])
    state = initial_parameters(config)
    with torch.no_grad():
        for name, value in state.items():
            target = getattr(layer, name, None)
            if target is not None:
                target.copy_(value)
    return layer


def to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _numpy(t: torch.Tensor | None):
    return None if t is None else t.detach().to(torch.float64).clone().numpy()


# ---------------------------------------------------------------------------------------
# Scenarios: (rank, world, config) -> picklable result.


def _parity(rank: int, world: int, config: dict[str, Any]) -> dict[str, Any]:
    """Several training steps (outputs, gradients, buffers recorded), then one eval step."""
    import normkit as nk

    group = None
    if config.get("subgroups"):
        groups = [dist.new_group(ranks) for ranks in config["subgroups"]]
        group = next(
            g for g, ranks in zip(groups, config["subgroups"], strict=True) if rank in ranks
        )
    layer = build_layer(nk.nn.SyncBatchNorm, config, process_group=group)
    if config.get("compile"):
        import torch._functorch.config as functorch_config
        import torch._inductor.config as inductor_config

        # No on-disk caches (see tests/variants/test_common.py::fresh_compile).
        functorch_config.enable_autograd_cache = False
        inductor_config.fx_graph_cache = False
        layer = torch.compile(layer, fullgraph=config.get("fullgraph", False))
    records = []
    batches = global_batches(config)
    masks = global_masks(config)
    for step, (x_full, g_full) in enumerate(batches[:-1]):
        x = to_layout(local_slice(x_full, rank, config["sizes"]), config.get("layout", ""))
        x = x.clone().requires_grad_(True)
        grad = local_slice(g_full, rank, config["sizes"])
        if masks is None:
            y = layer(x)
        else:
            y = layer(x, mask=local_slice(masks[step], rank, config["sizes"]))
        record = {"y": _numpy(y), "layout_kept": y.stride() == x.stride() or y.numel() == 0}
        if config.get("double_backward"):
            (dx,) = torch.autograd.grad(y, x, grad, create_graph=True)
            (dx.square().sum()).backward()
            record["dx"] = _numpy(dx)
        else:
            y.backward(grad)
        record["x_grad"] = _numpy(x.grad)
        for name in ("weight", "bias"):
            param = getattr(layer, name, None)
            record[f"{name}_grad"] = None if param is None else _numpy(param.grad)
            if param is not None:
                param.grad = None
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            buf = getattr(layer, name, None)
            record[name] = None if buf is None else _numpy(buf.to(torch.float64))
        records.append(record)
    layer.eval()
    x_eval = to_layout(local_slice(batches[-1][0], rank, config["sizes"]), config.get("layout", ""))
    with torch.no_grad():
        if masks is None:
            records.append({"y": _numpy(layer(x_eval))})
        else:
            mask = local_slice(masks[-1], rank, config["sizes"])
            records.append({"y": _numpy(layer(x_eval, mask=mask))})
    return records


def _bad_count(rank: int, world: int, config: dict[str, Any]) -> Any:
    """One value per channel across all processes: every rank must raise the same error."""
    import normkit as nk

    layer = nk.nn.SyncBatchNorm(3)
    x = torch.randn(1 if rank == 0 else 0, 3)
    try:
        layer(x)
    except ValueError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def _bad_valid_count(rank: int, world: int, config: dict[str, Any]) -> Any:
    """One valid value per channel across all processes (rank 1 has samples but no valid
    position): every rank must raise the same error and keep its running statistics."""
    import normkit as nk

    layer = nk.nn.SyncBatchNorm(3)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(2, 3, 4)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    if rank == 0:
        mask[0, 0] = True
    try:
        layer(x, mask=mask)
    except ValueError as exc:
        unchanged = all(torch.equal(v, before[k]) for k, v in layer.state_dict().items())
        return f"{type(exc).__name__}: {exc}; unchanged={unchanged}"
    return "no error"


def _dead_peer(rank: int, world: int, config: dict[str, Any]) -> Any:
    """The last rank dies before the first collective; the others must get a clear error."""
    import normkit as nk

    if rank == world - 1:
        os._exit(3)
    layer = nk.nn.SyncBatchNorm(3)
    x = torch.randn(4, 3, requires_grad=True)
    try:
        layer(x).sum().backward()
    except RuntimeError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def _hung_peer(rank: int, world: int, config: dict[str, Any]) -> Any:
    """The last rank never joins the collective; the others must time out with a clear
    error after the process group's timeout instead of waiting forever."""
    import time

    import normkit as nk

    if rank == world - 1:
        time.sleep(120)  # killed by the launcher long before
        return "woke up"
    layer = nk.nn.SyncBatchNorm(3)
    start = time.monotonic()
    try:
        layer(torch.randn(4, 3))
    except RuntimeError as exc:
        return f"{type(exc).__name__} after {time.monotonic() - start:.0f}s: {exc}"
    return "no error"


def _ddp_train(rank: int, world: int, config: dict[str, Any]) -> Any:
    """A few DDP steps of a small CNN with converted SyncBatchNorm (example's code path)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "ddp_syncbn.py"
    spec = importlib.util.spec_from_file_location("ddp_syncbn_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train(steps=config.get("steps", 3), batch_size=config.get("batch_size", 16))


def _parity_cases(rank: int, world: int, config: dict[str, Any]) -> dict[str, Any]:
    """Several parity configurations in one process group (saves a launch per case)."""
    return {name: _parity(rank, world, case) for name, case in config["cases"].items()}


SCENARIOS = {
    "parity": _parity,
    "parity_cases": _parity_cases,
    "bad_count": _bad_count,
    "bad_valid_count": _bad_valid_count,
    "dead_peer": _dead_peer,
    "hung_peer": _hung_peer,
    "ddp_train": _ddp_train,
}


def main(rank: int, world: int, store: str, scenario: str, config: dict, results) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    status, payload = "ok", None
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{store}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=config.get("timeout", 30)),
        )
        payload = SCENARIOS[scenario](rank, world, config)
    except BaseException:
        status, payload = "error", traceback.format_exc()
    results.put((rank, status, payload))
    results.close()
    results.join_thread()
    if config.get("expect_dead_peer"):
        os._exit(0)  # the group is broken: skip the collective teardown
    if dist.is_initialized():
        dist.destroy_process_group()
