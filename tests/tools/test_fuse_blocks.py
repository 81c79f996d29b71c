"""Block fusion (BN -> residual add -> ReLU, BN -> shared/functional activation) through
``nk.tools.convert`` and ``nk.tools.fuse_model``: the fused model computes what the torch
model computes, keeps its state-dict keys, traces, compiles, pickles, and a model that
cannot be fused says so."""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
import torch.fx
from torch import nn

import normkit as nk
from normkit.nn import fused_calls
from tests.conftest import assert_close
from tests.zoo.registry import ZOO
from tests.zoo.test_zoo_tools import _input, _model

RESIDUAL_SITES = {"resnet18": 4, "resnet50": 5}  # one per block at the zoo's test size


def _step(model, x, train: bool):
    """Output, input gradient, parameter gradients (by name) of one forward/backward."""
    model.train(train)
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    torch.manual_seed(1)  # the same dropout draws for both models
    y = model(x)
    y.backward(torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape))
    return y.detach(), x.grad, {n: p.grad for n, p in model.named_parameters()}


def _assert_same_steps(fused, original, x, dtype, steps=2):
    for step in range(steps):
        for train in (True, False) if step == steps - 1 else (True,):
            what = f"step {step} ({'train' if train else 'eval'})"
            y, gx, gp = _step(fused, x + step, train)
            y_ref, gx_ref, gp_ref = _step(original, x + step, train)
            assert_close(y, y_ref, dtype, what=f"{what}: output")
            assert_close(gx, gx_ref, dtype, what=f"{what}: input grad")
            assert gp.keys() == gp_ref.keys()
            # a gradient that cancels to ~0 (a BN's bias before another BN) is compared at
            # the scale of the model's largest parameter gradient
            floor = max(g.abs().max() for g in gp_ref.values())
            for name in gp:
                assert_close(
                    gp[name], gp_ref[name], dtype, what=f"{what}: grad {name}", floor=floor
                )
    ref_buffers = dict(original.named_buffers())
    for name, b in fused.named_buffers():
        assert_close(b, ref_buffers[name], dtype, what=name)


class _CountCalls:
    """Counts the fused BN + add calls that reach the fused op (not the step-by-step path)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = fused_calls.normalize_add_per_channel

        def counting(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(fused_calls, "normalize_add_per_channel", counting)


@pytest.mark.parametrize("name", sorted(RESIDUAL_SITES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_zoo_resnet_fused_computes_what_torch_computes(name, dtype, monkeypatch):
    original = _model(name).to(dtype)
    fused, report = nk.tools.convert(original, "normkit", return_report=True)
    residual = [p for p in report.fused if p.residual]
    assert len(residual) == RESIDUAL_SITES[name] and {p.act for p in residual} == {"relu"}
    assert report.not_fused == []
    counter = _CountCalls(monkeypatch)
    _assert_same_steps(fused, original, _input(name).to(dtype), dtype)
    assert counter.calls == 3 * RESIDUAL_SITES[name]  # two training steps and one eval


@pytest.mark.parametrize("name", sorted(RESIDUAL_SITES))
def test_state_dict_keys_are_kept_and_checkpoints_load_both_ways(name):
    original = _model(name)
    fused = nk.tools.convert(original, "normkit")
    assert list(fused.state_dict()) == list(original.state_dict())
    other = _model(name)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    fused.load_state_dict(other.state_dict())  # strict: a torch checkpoint into the fused model
    back = copy.deepcopy(original)
    back.load_state_dict(fused.state_dict())  # and the fused model's into torch's
    for (k, a), (_, b) in zip(back.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    x = _input(name)
    assert_close(fused.eval()(x), other.eval()(x), torch.float64, what="output after load")


def test_fused_block_keeps_class_name_repr_and_isinstance():
    original = _model("resnet18")
    fused = nk.tools.convert(original, "normkit")
    block, block_ref = fused.layer1[0], original.layer1[0]
    assert isinstance(block, type(block_ref)) and type(block) is not type(block_ref)
    assert type(block).__name__ == type(block_ref).__name__
    unfused = nk.tools.convert(original, "normkit", fuse=False).layer1[0]
    assert repr(block) == repr(unfused)
    assert nk.tools.fuse_blocks.is_fused_block(block)


def test_fx_trace_of_a_fused_model_has_one_node_per_fused_call():
    fused = nk.tools.convert(_model("resnet18"), "normkit").eval()
    graph_module = torch.fx.symbolic_trace(fused)
    targets = [n.target for n in graph_module.graph.nodes if n.op == "call_function"]
    assert targets.count(fused_calls.norm_add_act) == RESIDUAL_SITES["resnet18"]
    assert targets.count(fused_calls.norm_act) == RESIDUAL_SITES["resnet18"]  # bn1 -> relu
    x = _input("resnet18")
    assert_close(graph_module(x), fused(x), torch.float64, what="traced")


def test_compiled_fused_model_matches_eager(fresh_compile):
    original = _model("resnet18").float()
    fused = nk.tools.convert(original, "normkit")
    eager = copy.deepcopy(fused)
    compiled = torch.compile(fused, backend="aot_eager", fullgraph=True)
    x = _input("resnet18").float()
    for train in (True, False):
        y, gx, gp = _step(compiled, x, train)
        y_ref, gx_ref, gp_ref = _step(eager, x, train)
        assert_close(y, y_ref, torch.float32, what="output")
        assert_close(gx, gx_ref, torch.float32, what="input grad", rtol=1e-4)
        gp = {n.removeprefix("_orig_mod."): g for n, g in gp.items()}
        assert gp.keys() == gp_ref.keys()
        for n in gp_ref:
            assert_close(gp[n], gp_ref[n], torch.float32, what=n, rtol=1e-4)


def test_deepcopy_and_pickle_keep_the_fusion():
    fused = nk.tools.convert(_model("resnet50"), "normkit")
    buffer = io.BytesIO()
    torch.save(fused, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(fused), pickle.loads(pickle.dumps(fused)),
                  torch.load(buffer, weights_only=False)):  # fmt: skip
        assert [type(m) for m in clone.modules()] == [type(m) for m in fused.modules()]
        x = _input("resnet50")
        assert_close(clone.eval()(x), fused.eval()(x), torch.float64, what="clone")


def test_convert_to_torch_undoes_the_fusion():
    original = _model("resnet18")
    back = nk.tools.convert(nk.tools.convert(original, "normkit"), "torch")
    assert [type(m) for m in back.modules()] == [type(m) for m in original.modules()]
    x = _input("resnet18")
    assert_close(back.eval()(x), original.eval()(x), torch.float64, what="unfused")


def test_a_hook_on_the_batch_norm_runs_the_steps_and_fires(monkeypatch):
    original = _model("resnet18")
    fused = nk.tools.convert(original, "normkit")
    seen = []
    fused.layer1[0].bn2.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    original.layer1[0].bn2.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    counter = _CountCalls(monkeypatch)
    _assert_same_steps(fused, original, _input("resnet18"), torch.float64, steps=1)
    assert counter.calls == 2 * (RESIDUAL_SITES["resnet18"] - 1)  # every block but the hooked
    assert len(seen) == 4
    assert_close(seen[0], seen[1], torch.float64, what="hooked BN output")


# ------------------------------------------------------------------- blocks written by hand


class TimmStyleBottleneck(nn.Module):
    """timm's ResNet Bottleneck layout: one activation module per step, optional parts as
    attributes that may be None, ``x += shortcut`` then ``act3``."""

    def __init__(self, ns, c: int, se: bool = False) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act1 = (
            nn.Conv2d(c, c, 1, bias=False),
            ns.BatchNorm2d(c),
            nn.ReLU(True),
        )
        self.conv2, self.bn2, self.act2 = (
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            ns.BatchNorm2d(c),
            nn.ReLU(True),
        )
        self.conv3, self.bn3 = nn.Conv2d(c, c, 1, bias=False), ns.BatchNorm2d(c)
        self.se = None
        self.downsample = None
        self.act3 = nn.ReLU(inplace=True)  # fmt: skip

    def forward(self, x):
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut
        return self.act3(x)


class FunctionalBlock(nn.Module):
    """Residual first, functional ReLU: ``F.relu(identity + bn(conv(x)))``."""

    def __init__(self, ns, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), ns.BatchNorm2d(c)

    def forward(self, x):
        return torch.nn.functional.relu(x + self.bn(self.conv(x)))


class BranchingBlock(nn.Module):
    """A data-dependent branch: torch.fx cannot trace it."""

    def __init__(self, ns, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), ns.BatchNorm2d(c)

    def forward(self, x):
        out = self.bn(self.conv(x))
        if out.mean() > 0:
            out = out * 2
        return torch.relu(out + x)


class TwoUsersBlock(nn.Module):
    """The BN's output feeds the add and a second branch: fusing would lose the BN output."""

    def __init__(self, ns, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), ns.BatchNorm2d(c)

    def forward(self, x):
        out = self.bn(self.conv(x))
        return torch.relu(out + x) + out.mean()


class InPlaceOnInputBlock(nn.Module):
    """``x += bn(conv(x))`` writes into the caller's tensor: FX would record ``x + ...``."""

    def __init__(self, ns, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), ns.BatchNorm2d(c)

    def forward(self, x):
        x += self.bn(self.conv(x))
        return torch.relu(x)


class TrainingBranchBlock(nn.Module):
    """A forward whose graph depends on ``self.training``."""

    def __init__(self, ns, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), ns.BatchNorm2d(c)

    def forward(self, x):
        out = self.bn(self.conv(x))
        if self.training:
            out = out * 0.5
        return torch.relu(out + x)


def _pair(block_cls, c=4):
    torch.manual_seed(0)
    original = nn.Sequential(block_cls(nn, c), block_cls(nn, c)).double()
    ours = nk.tools.convert(original, "normkit", fuse=False)
    return original, ours


@pytest.mark.parametrize("block_cls", [TimmStyleBottleneck, FunctionalBlock])
def test_fuse_model_fuses_handwritten_residual_blocks_exactly(block_cls, monkeypatch):
    original, ours = _pair(block_cls)
    fused, report = nk.tools.fuse_model(ours, return_report=True)
    assert sum(p.residual for p in report.fused) == 2 and not report.not_fused
    assert "residual" in str(report)
    counter = _CountCalls(monkeypatch)
    _assert_same_steps(fused, original, torch.randn(3, 4, 5, 5, dtype=torch.float64),
                       torch.float64)  # fmt: skip
    assert counter.calls == 6


def test_fuse_model_refuses_a_model_it_cannot_fuse_and_says_why():
    _, ours = _pair(BranchingBlock)
    with pytest.raises(nk.tools.FusionError, match=r"0 \(BranchingBlock\): torch.fx cannot"):
        nk.tools.fuse_model(ours)
    _, ours = _pair(TwoUsersBlock)
    with pytest.raises(nk.tools.FusionError, match=r"bn: its output has 2 users"):
        nk.tools.fuse_model(ours)
    _, ours = _pair(InPlaceOnInputBlock)
    with pytest.raises(nk.tools.FusionError, match=r"augmented assignment"):
        nk.tools.fuse_model(ours)
    _, ours = _pair(TrainingBranchBlock)
    with pytest.raises(nk.tools.FusionError, match=r"branches on self.training"):
        nk.tools.fuse_model(ours)
    original, _ = _pair(FunctionalBlock)
    with pytest.raises(nk.tools.FusionError, match=r"torch.nn's: nk.tools.convert"):
        nk.tools.fuse_model(original)
    with pytest.raises(nk.tools.FusionError, match=r"no BatchNorm layer"):
        nk.tools.fuse_model(nn.Sequential(nn.Linear(3, 3)))
    with pytest.raises(nk.tools.FusionError, match=r"fused already"):
        nk.tools.fuse_model(nk.tools.convert(_model("resnet18"), "normkit"))


def test_partly_fusable_model_fuses_the_rest_and_warns_about_the_others():
    torch.manual_seed(0)
    original = nn.Sequential(FunctionalBlock(nn, 4), TwoUsersBlock(nn, 4)).double()
    ours = nk.tools.convert(original, "normkit", fuse=False)
    with pytest.warns(nk.tools.FusionWarning, match=r"1 block\(s\) not fused: 1: bn: its output"):
        fused, report = nk.tools.fuse_model(ours, return_report=True)
    assert [p.norm for p in report.fused] == ["0.bn"]
    assert [(b.block, b.cls) for b in report.not_fused] == [("1", "TwoUsersBlock")]
    _, convert_report = nk.tools.convert(original, "normkit", return_report=True)
    assert convert_report.not_fused == report.not_fused and "(not fused)" in str(convert_report)
    _assert_same_steps(fused, original, torch.randn(3, 4, 5, 5, dtype=torch.float64),
                       torch.float64, steps=1)  # fmt: skip


def test_fuse_model_copies_unless_inplace():
    _, ours = _pair(FunctionalBlock)
    fused = nk.tools.fuse_model(ours)
    assert fused is not ours and not nk.tools.fuse_blocks.is_fused_block(ours[0])
    assert nk.tools.fuse_model(ours, inplace=True) is ours
    assert nk.tools.fuse_blocks.is_fused_block(ours[0])


def test_zoo_models_other_than_resnets_convert_with_block_fusion_unchanged():
    """MobileNetV2's residual is added outside any BN call of the block's own forward."""
    name = "mobilenet_v2"
    assert name in ZOO
    original = _model(name)
    fused, report = nk.tools.convert(original, "normkit", return_report=True)
    assert not any(p.residual for p in report.fused)
    _assert_same_steps(fused, original, _input(name), torch.float64, steps=1)


@pytest.mark.parametrize("name", sorted(RESIDUAL_SITES))
def test_fold_finds_every_conv_bn_pair_inside_fused_blocks(name):
    """The graph tools read a fused call as a call of its BatchNorm: fold folds the same
    pairs as in the unfused model, and the fused calls then run the folded steps."""
    original = _model(name).eval()
    x = _input(name)
    unfused = nk.tools.convert(original, "normkit", fuse=False)
    fused = nk.tools.convert(original, "normkit")
    _, report_unfused = nk.tools.fold(unfused, example=x, return_report=True)
    folded, report = nk.tools.fold(fused, example=x, return_report=True)
    assert sorted(report.folded) == sorted(report_unfused.folded)
    assert len(report.folded) == sum(isinstance(m, nn.BatchNorm2d) for m in original.modules())
    with torch.no_grad():
        assert_close(folded(x), original(x), torch.float64, what="folded", rtol=1e-9)


@pytest.mark.parametrize("policy", ["running_stats", "skip_update"])
def test_a_fused_site_applies_the_norms_single_sample_policy(policy):
    """A one-value-per-channel training batch through a fused block follows the BatchNorm's
    policy exactly as the unfused block does (the fused call hands such a norm back to its
    own forward)."""
    torch.manual_seed(0)
    original = FunctionalBlock(nk.nn, 3).double()
    fused = nk.tools.fuse_model(copy.deepcopy(original))
    assert type(fused) is not type(original)  # the block's forward was rewritten
    for model in (original, fused):
        nk.tools.set_single_sample_policy(model, policy)
    x = torch.randn(1, 3, 1, 1, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nk.functional.SingleSampleWarning)
        assert_close(fused.train()(x), original.train()(x), torch.float64)
    assert int(fused.bn.num_batches_tracked) == 0
