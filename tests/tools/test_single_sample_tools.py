"""The batch-of-1 policy in the tools: nk.tools.set_single_sample_policy, convert carrying
(or reporting) single_sample, and doctor's single-sample finding (with the zoo: what doctor
flags is exactly what fails, and nothing on a loader without a batch of one)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import normkit as nk
from normkit.tools import SingleSamplePolicyError, doctor, set_single_sample_policy
from tests.zoo.fixtures import stand_in_packages  # noqa: F401  (fixture)
from tests.zoo.registry import ZOO


def _head_model(ns=nn) -> nn.Module:
    """A CNN whose classifier BatchNorm1d (after global pooling) sees one value per channel
    per sample; the BatchNorm2d sees 36."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, bias=False), ns.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4, bias=False), ns.BatchNorm1d(4),
    )  # fmt: skip


def _loader(samples: int, batch_size: int, **kwargs) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(samples, 3, 8, 8)), batch_size, **kwargs)


# ----------------------------------------------------------------- set_single_sample_policy


def test_set_policy_gives_every_normkit_batch_norm_the_policy():
    model = nn.Sequential(
        nk.nn.BatchNorm1d(4), nk.nn.BatchRenorm1d(4), nk.nn.GhostBatchNorm1d(4),
        nk.nn.BatchNormAct1d(4), nk.nn.SyncBatchNorm(4), nk.nn.LazyBatchNorm1d(),
        nk.nn.FrozenBatchNorm1d(4), nk.nn.LayerNorm(4),
    )  # fmt: skip
    assert set_single_sample_policy(model, "running_stats") == ["0", "1", "2", "3", "4", "5"]
    assert [getattr(m, "single_sample", None) for m in model] == ["running_stats"] * 6 + [None] * 2
    model.train()(torch.randn(1, 4))  # a batch of one passes every layer
    assert set_single_sample_policy(model, "error", include=lambda n, m: n == "1") == ["1"]
    assert model[1].single_sample == "error" and model[0].single_sample == "running_stats"
    with pytest.raises(ValueError, match=r"^BatchRenorm1d\(4\): Expected more than 1 value"):
        model(torch.randn(1, 4))
    root = nk.nn.BatchNorm2d(3)
    assert set_single_sample_policy(root, "skip_update") == [""]


def test_set_policy_is_all_or_nothing_and_names_the_layers():
    model = nn.Sequential(nk.nn.BatchNorm1d(4), nn.BatchNorm1d(4), nn.Sequential(nn.BatchNorm1d(4)))
    with pytest.raises(SingleSamplePolicyError, match=r"nothing changed: '1' \(BatchNorm1d\), "
                       r"'2.0' \(BatchNorm1d\): not normkit's.*convert\(model, 'normkit'\)"):  # fmt: skip
        set_single_sample_policy(model, "running_stats")
    assert model[0].single_sample == "error"
    no_stats = nn.Sequential(nk.nn.BatchNorm1d(4), nk.nn.BatchNorm1d(4, track_running_stats=False))
    with pytest.raises(SingleSamplePolicyError, match=r"'1' \(BatchNorm1d\): "
                       r"track_running_stats=False.*'skip_update'"):  # fmt: skip
        set_single_sample_policy(no_stats, "running_stats")
    assert no_stats[0].single_sample == "error"
    assert set_single_sample_policy(no_stats, "skip_update") == ["0", "1"]
    with pytest.raises(ValueError, match=r"^set_single_sample_policy: single_sample must be"):
        set_single_sample_policy(no_stats, "eval")


# ---------------------------------------------------------------------------------- convert


def test_convert_from_torch_gives_the_default_and_back_to_torch_reports_the_drop():
    ours = nk.tools.convert(_head_model(), "normkit")
    assert [m.single_sample for m in ours if hasattr(m, "single_sample")] == ["error", "error"]
    set_single_sample_policy(ours, "running_stats")
    with pytest.warns(nk.tools.ConversionWarning, match=r"single_sample policy of 2 layer\(s\) "
                      r"\(1, 6\) was dropped"):  # fmt: skip
        back, report = nk.tools.convert(ours, "torch", return_report=True)
    assert [type(m) for m in back] == [type(m) for m in _head_model()]
    notes = {r.name: r.note for r in report.replaced}
    assert notes["6"] == "single_sample='running_stats' dropped (BatchNorm1d has no such option)"
    assert list(back.state_dict()) == list(ours.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nk.tools.convert(ours, "torch", quiet=True)
        plain = nk.tools.convert(_head_model(), "normkit")
        nk.tools.convert(plain, "torch")  # default policies: nothing to say


def test_convert_keeps_the_policy_between_normkit_layers_and_through_fusion():
    bn = nk.nn.BatchNorm2d(4, single_sample="skip_update")
    for target in ("renorm", "ghost", "sync"):
        converted = nk.tools.convert(bn, target)
        assert converted.single_sample == "skip_update", target
        assert nk.tools.convert(converted, "original").single_sample == "skip_update"
        assert nk.tools.convert(converted, "batchnorm").single_sample == "skip_update"
    for target in ("frozen", "group"):  # no batch statistics: nothing lost, nothing to warn
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            converted, report = nk.tools.convert(bn, target, return_report=True)
        assert "single_sample='skip_update' not needed" in report.replaced[0].note
        assert nk.tools.convert(converted, "original").single_sample == "skip_update"
    # A normkit BatchNorm fused with its ReLU keeps its policy (also one converted earlier).
    model = nk.tools.convert(
        nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4), nn.ReLU()), "normkit",
        fuse=False,
    )  # fmt: skip
    model[1].single_sample = "running_stats"
    fused, report = nk.tools.convert(model, "normkit", return_report=True)
    assert [p.norm for p in report.fused] == ["1"]
    assert type(fused[1]).__name__ == "BatchNormAct1d"
    assert fused[1].single_sample == "running_stats"


# ----------------------------------------------------------------------------------- doctor


@pytest.mark.parametrize("ns", [nn, nk.nn], ids=["torch", "normkit"])
def test_doctor_names_the_layers_a_last_batch_of_one_breaks(ns):
    model = _head_model(ns)
    example = torch.randn(8, 3, 8, 8)
    findings = doctor(model, example, loader=_loader(33, 8))
    single = [f for f in findings if f.code == "single-sample"]
    assert [(f.severity, f.layers) for f in single] == [("error", ["6 (BatchNorm1d)"])]
    assert (
        "last batch has 1 sample (33 samples, batch_size=8, drop_last=False)" in single[0].evidence
    )
    assert "drop_last=True" in single[0].fix and "set_single_sample_policy" in single[0].fix
    assert ("convert(model, 'normkit')" in single[0].fix) == (ns is nn)
    # what doctor says is what happens
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model.train()(torch.randn(1, 3, 8, 8))


def test_doctor_says_nothing_without_a_batch_of_one_and_respects_the_policy():
    model = _head_model(nk.nn)
    example = torch.randn(8, 3, 8, 8)
    for loader in (_loader(34, 8), _loader(33, 8, drop_last=True), _loader(8, 8)):
        assert "single-sample" not in doctor(model, example, loader=loader).codes()
    assert "single-sample" not in doctor(model, example).codes()  # no loader: no guess
    set_single_sample_policy(model, "running_stats")
    assert "single-sample" not in doctor(model, example, loader=_loader(33, 8)).codes()
    model.train()(torch.randn(1, 3, 8, 8))  # and indeed it passes


def test_doctor_single_sample_without_example_or_sizes_and_every_batch_of_one():
    model = _head_model()
    (f,) = doctor(model, loader=_loader(33, 8), checks=["single-sample"])
    assert f.severity == "info" and "pass example_batch" in f.fix
    stream = DataLoader(_Stream(), batch_size=4)
    (f,) = doctor(model, torch.randn(4, 3, 8, 8), loader=stream, checks=["single-sample"])
    assert f.severity == "info" and "does not tell its batch sizes" in f.evidence
    (f,) = doctor(model, torch.randn(4, 3, 8, 8), loader=_loader(5, 1), checks=["single-sample"])
    assert f.severity == "error" and "every batch of the loader has 1 sample" in f.evidence
    assert "larger batches" in f.fix and "drop_last" not in f.fix


class _Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(torch.randn(9, 3, 8, 8))


def test_doctor_small_batch_points_to_the_policy_and_eval_without_running_stats():
    model = _head_model(nk.nn)
    errors = [f for f in doctor(model, torch.randn(1, 3, 8, 8)) if f.severity == "error"]
    assert [(f.code, f.layers) for f in errors] == [("small-batch", ["6 (BatchNorm1d)"])]
    assert "single_sample='running_stats'" in errors[0].fix and "drop_last=True" in errors[0].fix
    set_single_sample_policy(model, "running_stats")
    findings = doctor(model, torch.randn(1, 3, 8, 8), checks=["small-batch"])
    assert [f.severity for f in findings] == ["warning"]
    assert any("single_sample='running_stats'" in d for d in findings[0].details)
    # track_running_stats=False: a batch of one raises in eval mode too (pytorch#156051)
    no_stats = nn.Sequential(
        nn.Linear(3, 4, bias=False), nk.nn.BatchNorm1d(4, track_running_stats=False)
    )
    (f,) = doctor(no_stats.eval(), torch.randn(8, 3), checks=["batch-stats-in-eval"])
    assert "a batch of one sample raises even in eval mode" in f.evidence
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        no_stats.eval()(torch.randn(1, 3))
    wide = nn.Sequential(
        nn.Conv1d(3, 4, 1, bias=False), nk.nn.BatchNorm1d(4, track_running_stats=False)
    )
    (f,) = doctor(wide.eval(), torch.randn(8, 3, 5), checks=["batch-stats-in-eval"])
    assert "raises even in eval mode" not in f.evidence  # 5 values per sample: no such risk


# ------------------------------------------------------------------------------------- zoo


@pytest.mark.usefixtures("stand_in_packages")
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_doctor_flags_exactly_what_a_batch_of_one_breaks(name):
    torch.manual_seed(0)
    model = ZOO[name].build("test").double()
    shape = ZOO[name].input_shape("test")
    x = torch.randn(shape, dtype=torch.float64)
    batch = shape[0]
    # a loader without a batch of one sample: no finding (no false alarm)
    assert "single-sample" not in doctor(model, x, loader=_loader(2 * batch + 2, batch)).codes()
    assert "single-sample" not in doctor(model, x).codes()
    flagged = [
        layer
        for f in doctor(model, x, loader=_loader(2 * batch + 1, batch))
        if f.code == "single-sample"
        for layer in f.layers
    ]
    one = x[:1]
    if not flagged:
        copy.deepcopy(model).train()(one)  # nothing flagged: a batch of one trains
        return
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        copy.deepcopy(model).train()(one)
    ours = nk.tools.convert(model, "normkit", quiet=True)
    names = {label.split(" (")[0] for label in flagged}
    assert set_single_sample_policy(ours, "running_stats", include=lambda n, m: n in names)
    ours.train()(one)  # the flagged layers were all that failed
