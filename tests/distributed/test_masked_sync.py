"""Masked SyncBatchNorm in 2 gloo processes vs single-process masked BatchNorm on the
concatenated padded batch: outputs, input/weight/bias gradients, running statistics and
num_batches_tracked, with uneven valid counts and ranks without any valid position."""

from __future__ import annotations

import pytest
import torch

import normkit as nk
from tests.conftest import assert_close
from tests.distributed._launch import launch
from tests.distributed._worker import build_layer, global_batches, global_masks, local_slice

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

CASES = {
    # lengths: valid positions of each sample of the concatenated batch (rank 0 first)
    "uneven valid counts": {"sizes": [3, 2], "shape": (3, 8), "lengths": [8, 2, 5, 1, 3]},
    "rank 1 without valid positions": {
        "sizes": [3, 2],
        "shape": (3, 6),
        "lengths": [6, 4, 5, 0, 0],
        "momentum": None,
    },
    "rank 1 without samples": {"sizes": [4, 0], "shape": (3, 5), "lengths": [5, 1, 3, 2]},
    "2-D holes, channels_last": {
        "sizes": [2, 3],
        "shape": (3, 4, 5),
        "holes": 0.6,
        "layout": "channels_last",
    },
    "affine=False, track_running_stats=False": {
        "sizes": [1, 3],
        "shape": (2, 7),
        "lengths": [7, 3, 0, 5],
        "affine": False,
        "track": False,
    },
    "double backward": {
        "sizes": [3, 2],
        "shape": (3, 6),
        "lengths": [6, 1, 4, 2, 5],
        "double_backward": True,
        "steps": 2,
    },
}

_BN = {2: nk.nn.BatchNorm1d, 3: nk.nn.BatchNorm1d, 4: nk.nn.BatchNorm2d, 5: nk.nn.BatchNorm3d}


def reference_records(config):
    """Single-process masked BatchNorm on the concatenated batches, same steps."""
    layer = build_layer(_BN[1 + len(config["shape"])], config)
    batches, masks = global_batches(config), global_masks(config)
    records = []
    for (x_full, g_full), mask in zip(batches[:-1], masks, strict=False):
        x = x_full.clone().requires_grad_(True)
        y = layer(x, mask=mask)
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
        if layer.track_running_stats:
            records.append({"y": layer(batches[-1][0], mask=masks[-1])})
        else:  # batch statistics in eval and no synchronization (like torch): per rank
            parts = zip(batches[-1][0].split(config["sizes"]), masks[-1].split(config["sizes"]),
                        strict=True)  # fmt: skip
            records.append(
                {"y": torch.cat([layer(p, mask=m) if m.sum() > 1 else p * 0 for p, m in parts])}
            )
    return records


def check(results, config):
    sizes = config["sizes"]
    for step, expected in enumerate(reference_records(config)):
        got = [r[step] for r in results]
        for key in ("y", "x_grad", "dx"):
            if key not in expected:
                continue
            for rank, record in enumerate(got):
                part = local_slice(expected[key], rank, sizes)
                assert_close(
                    torch.from_numpy(record[key]), part, torch.float64,
                    what=f"step {step} rank {rank} {key}", floor=0.0 if key == "y" else 1.0,
                )  # fmt: skip
        for key in ("weight_grad", "bias_grad"):
            if key not in expected:
                continue
            if expected[key] is None:
                assert all(record[key] is None for record in got), key
                continue
            total = sum(torch.from_numpy(record[key]) for record in got)
            assert_close(total, expected[key], torch.float64, what=f"step {step} {key}", floor=1.0)
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            if key not in expected:
                continue
            for record in got:
                if expected[key] is None:
                    assert record[key] is None, key
                else:
                    assert_close(torch.from_numpy(record[key]), expected[key], torch.float64,
                                 what=f"step {step} {key}")  # fmt: skip


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """All cases in one 2-process launch."""
    tmp = tmp_path_factory.mktemp("masked_sync")
    ranks = launch("parity_cases", 2, {"cases": CASES}, tmp)
    return {name: [r[name] for r in ranks] for name in CASES}


@pytest.mark.parametrize("case", list(CASES))
def test_masked_sync_batch_norm_equals_masked_batch_norm_on_the_concatenated_batch(case, results):
    check(results[case], CASES[case])


def test_one_valid_value_across_processes_raises_on_every_rank(tmp_path):
    for message in launch("bad_valid_count", 2, {}, tmp_path):
        assert message.startswith("NormInputError: SyncBatchNorm(3): Expected more than 1 valid "
                                  "value per channel when training, got 1 across the 2 "
                                  "processes"), message  # fmt: skip
        assert message.endswith("unchanged=True"), message
