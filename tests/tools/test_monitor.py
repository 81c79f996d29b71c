"""monitor(): per-layer, per-step statistics; exports; plot; TensorBoard."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.tools import monitor
from tests.tools.models import MODEL_CASES, TransformerBlock, mlp


def _train(model, shape, steps=4):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss = model(torch.randn(shape)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_records_every_norm_layer_each_step(case):
    build, shape = MODEL_CASES[case]
    model = build(nk.nn)
    with monitor(model) as mon:
        _train(model, shape, steps=3)
    norms = [n for n, _ in nk.tools.iter_norm_layers(model)]
    assert {r.layer for r in mon.records} == set(norms)
    assert [r.step for r in mon.records] == sorted(s for s in range(3) for _ in norms)
    assert all(r.training and r.p15 <= r.p50 <= r.p85 for r in mon.records)
    # Hooks are gone after the block.
    assert not any(m._forward_pre_hooks for m in model.modules())


def test_statistics_are_right():
    bn = nk.nn.BatchNorm1d(3)
    x = torch.randn(100, 3) * 2 + 5
    with monitor(bn, max_samples=10_000) as mon:
        bn(x)
    r = mon.records[0]
    flat = x.reshape(-1)
    assert r.values == r.sampled == 300
    assert r.mean == pytest.approx(flat.mean().item(), rel=1e-5)
    assert r.std == pytest.approx(flat.std(unbiased=False).item(), rel=1e-5)
    expected = torch.quantile(flat, torch.tensor([0.15, 0.5, 0.85])).tolist()
    assert [r.p15, r.p50, r.p85] == pytest.approx(expected, rel=1e-5)


def test_sampling_and_every():
    bn = nn.BatchNorm2d(4)
    with monitor(bn, every=3, max_samples=500) as mon:
        for _ in range(7):
            bn(torch.randn(8, 4, 16, 16))
    assert [r.step for r in mon.records] == [0, 3, 6]
    r = mon.records[0]
    assert r.values == 8 * 4 * 256 and r.sampled == 500
    assert abs(r.p50) < 0.2 and 0.7 < r.p85 < 1.35  # standard normal quantiles, sampled


def test_figure1_setup_one_sigmoid_unit_output_and_manual_steps():
    model = nn.Sequential(nn.Linear(5, 4), nk.nn.BatchNorm1d(4), nn.Sigmoid())
    with monitor(model, layers=nn.Sigmoid, channel=2, step_on="manual") as mon:
        for _ in range(2):
            model(torch.randn(16, 5))
            model(torch.randn(16, 5))  # same step: recorded once
            mon.next_step()
    assert [(r.step, r.layer, r.values) for r in mon.records] == [(0, "2", 16), (1, "2", 16)]
    with monitor(model, layers=["1"], where="output") as out:
        model(torch.randn(32, 5))
    r = out.records[0]
    assert r.where == "output" and abs(r.mean) < 1e-5 and r.std == pytest.approx(1.0, abs=1e-3)
    with monitor(model, layers=lambda n, m: isinstance(m, nn.Linear)) as lin:
        model(torch.randn(4, 5))
    assert lin.records[0].layer == "0"


def test_exports(tmp_path):
    model = mlp(nn)
    with monitor(model) as mon:
        _train(model, (8, 20), steps=2)
    rows = list(csv.DictReader(mon.to_csv(tmp_path / "stats.csv").open()))
    assert len(rows) == 4 and set(rows[0]) >= {"step", "layer", "mean", "std", "p15", "p50", "p85"}
    data = json.loads(mon.to_json(tmp_path / "stats.json").read_text())
    assert data["config"]["layers"] == ["1", "4"] and len(data["records"]) == 4
    assert "p85" in mon.table() and "2 layer(s)" in str(mon)
    steps, medians = mon.series("4", "p50")
    assert steps == [0, 1] and len(medians) == 2


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    model = TransformerBlock(nk.nn)
    with monitor(model) as mon:
        _train(model, (2, 5, 16), steps=3)
    fig = mon.plot(tmp_path / "fig1.png", title="LayerNorm inputs")
    assert (tmp_path / "fig1.png").stat().st_size > 1000
    assert len([ax for ax in fig.axes if ax.lines]) == 2


def test_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    bn = nn.BatchNorm1d(2)
    with monitor(bn) as mon:
        bn(torch.randn(4, 2))
    mon.to_tensorboard(tmp_path / "tb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    (record,) = mon.records
    for stat in ("mean", "std", "p15", "p50", "p85"):
        (scalar,) = events.Scalars(f"norm/{record.layer}/{stat}")
        assert scalar.step == record.step
        assert scalar.value == pytest.approx(getattr(record, stat), rel=1e-6), stat


def test_errors():
    with pytest.raises(ValueError, match="no normalization layer to watch"):
        monitor(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"no module named \['nope'\]"):
        monitor(mlp(nn), layers=["nope"])
    with pytest.raises(ValueError, match="matches no module"):
        monitor(mlp(nn), layers=nn.Conv2d)
    with pytest.raises(ValueError, match="every must be a positive integer"):
        monitor(mlp(nn), every=0)
    with pytest.raises(ValueError, match="where must be"):
        monitor(mlp(nn), where="grad")
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match=r"channel=5 does not exist"), monitor(bn, channel=5):
        bn(torch.randn(4, 3))
    with pytest.raises(ValueError, match="nothing recorded"):
        monitor(bn).plot()
