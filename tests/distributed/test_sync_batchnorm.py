"""SyncBatchNorm in 2 and 3 gloo processes on localhost vs single-process BatchNorm on the
concatenated batch: outputs, input/weight/bias gradients and running statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import assert_close
from tests.distributed._launch import launch
from tests.distributed._worker import build_layer, global_batches, local_slice

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

_TORCH_BN = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}
_TORCH_BN[5] = torch.nn.BatchNorm3d


def reference_records(config, ranks=None):
    """Single-process torch BatchNorm on the concatenation of ``ranks``' batches (default:
    all ranks), same steps."""
    sizes = config["sizes"]
    ranks = list(range(len(sizes))) if ranks is None else ranks
    start = sum(sizes[: ranks[0]])
    group_sizes = [sizes[r] for r in ranks]
    rows = slice(start, start + sum(group_sizes))
    layer = build_layer(_TORCH_BN[1 + len(config["shape"])], config)
    records = []
    batches = [(x[rows], g[rows]) for x, g in global_batches(config)]
    for x_full, g_full in batches[:-1]:
        x = x_full.clone().requires_grad_(True)
        y = layer(x)
        record = {"y": y.detach()}
        if config.get("double_backward"):
            (dx,) = torch.autograd.grad(y, x, g_full, create_graph=True)
            dx.square().sum().backward()
            record["dx"] = dx.detach()
        else:
            y.backward(g_full)
        record["x_grad"] = x.grad
        for name in ("weight", "bias"):
            param = getattr(layer, name)
            grad = None if param is None else param.grad
            record[f"{name}_grad"] = None if grad is None else grad.clone()
            if param is not None:
                param.grad = None
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            buf = getattr(layer, name)
            record[name] = None if buf is None else buf.clone().to(torch.float64)
        records.append(record)
    layer.eval()
    with torch.no_grad():
        x_eval = batches[-1][0]
        if layer.track_running_stats:
            records.append({"y": layer(x_eval)})
        else:  # batch statistics in eval, and (like torch) no synchronization: per rank
            parts = x_eval.split(group_sizes)
            records.append({"y": torch.cat([layer(p) if len(p) else p for p in parts])})
    return records


def check_against_reference(results, config, ranks=None):
    """Results of ``ranks`` (default: all), which synchronize together, vs the
    single-process reference on their concatenated batches."""
    dtype = torch.float64 if config.get("dtype", "float64") == "float64" else torch.float32
    ranks = list(range(len(results))) if ranks is None else ranks
    expected = reference_records(config, ranks)
    sizes = [config["sizes"][r] for r in ranks]
    for step, exp in enumerate(expected):
        got = [results[r][step] for r in ranks]
        local = range(len(ranks))
        what = f"step {step}"
        for key in ("y", "x_grad", "dx"):
            if key not in exp:
                continue
            for r, i, rec in zip(ranks, local, got, strict=True):
                part = local_slice(exp[key], i, sizes)
                floor = 1.0 if key != "y" else 0.0
                assert_close(
                    torch.from_numpy(rec[key]), part, dtype, what=f"{what} rank {r} {key}",
                    floor=floor,
                )  # fmt: skip
        for key in ("weight_grad", "bias_grad"):
            if key not in exp:
                continue
            if exp[key] is None:
                assert all(rec[key] is None for rec in got), key
                continue
            # Each rank holds its own contribution; their sum is the full-batch gradient.
            total = sum(torch.from_numpy(rec[key]) for rec in got)
            assert_close(total, exp[key], dtype, what=f"{what} sum of {key}", floor=1.0)
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            if key not in exp:
                continue
            for rec in got:
                if exp[key] is None:
                    assert rec[key] is None
                    continue
                assert_close(torch.from_numpy(rec[key]), exp[key], dtype, what=f"{what} {key}")
        if "layout_kept" in got[0]:
            assert all(rec["layout_kept"] for rec in got), "output memory layout not kept"


TWO_PROCESS_CASES = {
    "BN2d uneven": {"sizes": [4, 2], "shape": (3, 5, 4)},
    "BN2d channels_last": {"sizes": [3, 3], "shape": (4, 3, 5), "layout": "channels_last"},
    "BN1d rank with 0 samples": {"sizes": [5, 0], "shape": (4,)},
    "BN1d (N,C,L) momentum=None affine=False": {
        "sizes": [2, 5],
        "shape": (3, 4),
        "momentum": None,
        "affine": False,
    },
    "BN3d track_running_stats=False": {"sizes": [2, 1], "shape": (2, 2, 3, 2), "track": False},
    # |mean| / std = 1e4: merging raw sums of squares would lose ~1e-8 of the variance
    # (and fail 1e-10); Chan's merge of centred moments keeps ~1e-12.
    "large mean offset (|mean| >> std)": {
        "sizes": [3, 4],
        "shape": (3, 6),
        "offset": 1e4,
        "scale": 1.0,
    },
    "float32": {"sizes": [4, 3], "shape": (5, 7), "dtype": "float32"},
    "double backward (gradient penalty)": {
        "sizes": [3, 2],
        "shape": (3, 4),
        "double_backward": True,
        "steps": 2,
    },
}


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    """All 2-process parity cases in one launch per case, reused by the tests below."""
    tmp = tmp_path_factory.mktemp("sync2")
    return {name: launch("parity", 2, config, tmp) for name, config in TWO_PROCESS_CASES.items()}


@pytest.mark.parametrize("case", list(TWO_PROCESS_CASES))
def test_two_processes_match_single_process_batch_norm(case, two_process_results):
    check_against_reference(two_process_results[case], TWO_PROCESS_CASES[case])


THREE_PROCESS_CASES = {
    "uneven": {"sizes": [3, 1, 4], "shape": (3, 2, 3)},
    "middle rank empty": {"sizes": [2, 0, 3], "shape": (4,), "momentum": 0.5},
}


@pytest.fixture(scope="module")
def three_process_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sync3")
    ranks = launch("parity_cases", 3, {"cases": THREE_PROCESS_CASES}, tmp)
    return {name: [r[name] for r in ranks] for name in THREE_PROCESS_CASES}


@pytest.mark.parametrize("case", list(THREE_PROCESS_CASES))
def test_three_processes_match_single_process_batch_norm(case, three_process_results):
    check_against_reference(three_process_results[case], THREE_PROCESS_CASES[case])


@pytest.mark.slow
def test_torch_compile_in_two_processes(tmp_path):
    """torch.compile'd SyncBatchNorm, one graph (the collectives run inside custom ops),
    still equals single-process BatchNorm."""
    config = {"sizes": [3, 4], "shape": (3, 4, 2), "compile": True, "fullgraph": True, "steps": 2}
    check_against_reference(launch("parity", 2, config, tmp_path, timeout=240), config)


def test_process_group_subsets(tmp_path):
    """Ranks 0 and 1 synchronize in their own group; rank 2, alone in its group, falls back
    to plain BatchNorm on its own rows."""
    config = {"sizes": [3, 2, 4], "shape": (3, 5), "subgroups": [[0, 1], [2]]}
    results = launch("parity", 3, config, tmp_path)
    check_against_reference(results, config, ranks=[0, 1])
    check_against_reference(results, config, ranks=[2])


def test_one_value_per_channel_across_processes_raises_on_every_rank(tmp_path):
    results = launch("bad_count", 2, {}, tmp_path)
    for message in results:
        assert "Expected more than 1 value per channel when training, got 1" in message
        assert "2 processes" in message


def test_dead_peer_gives_a_clear_error_not_a_hang(tmp_path):
    config = {"timeout": 15, "expect_dead_peer": True, "may_die": [1]}
    results = launch("dead_peer", 2, config, tmp_path, timeout=90)
    message = results[0]
    assert "SyncBatchNormError" in message, message
    assert "rank 0 of 2" in message and "peer" in message, message


def test_hung_peer_times_out_with_a_clear_error(tmp_path):
    config = {"timeout": 4, "expect_dead_peer": True, "may_die": [1]}
    results = launch("hung_peer", 2, config, tmp_path, timeout=90)
    message = results[0]
    assert message.startswith("SyncBatchNormError after"), message
    assert "rank 0 of 2" in message, message


@pytest.mark.slow
def test_example_runs_under_torchrun(tmp_path):
    """``torchrun --nproc_per_node 2 examples/ddp_syncbn.py`` with a few steps."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(root / "src"), env.get("PYTHONPATH", "")])
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(root / "examples" / "ddp_syncbn.py"), "--steps", "5", "--batch-size", "8",
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "world size 2, 5 steps of 8 per process" in done.stdout, done.stdout
    assert "test accuracy" in done.stdout


def test_ddp_training_steps_agree_across_ranks(tmp_path):
    """The example's DDP + SyncBatchNorm training loop: ranks end with identical weights
    and running statistics, and the loss is finite."""
    results = launch("ddp_train", 2, {"steps": 3, "batch_size": 16}, tmp_path)
    for key in results[0]["state"]:
        np.testing.assert_array_equal(results[0]["state"][key], results[1]["state"][key])
    assert all(np.isfinite(r["losses"]).all() for r in results)
