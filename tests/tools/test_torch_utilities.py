"""normkit's layers are the torch kinds they replace: torch's and the ecosystem's utilities that
look for torch's classes accept them and give the same result as on torch's layers; models
with normkit layers trace with torch.fx and the traced module computes what the model does.

The utilities that match exact types (``torch.ao.quantization.fuse_modules``, the fx
``fuse`` helper) are checked for what they do with normkit's layers, beside the normkit call
that does the same job (``nk.tools.fold``).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import normkit as nk
from tests.conftest import assert_close
from tests.tools.models import ResNetish, randomize_norm_state
from tests.zoo.ecosystem.timm_norm_act import freeze_batch_norm_2d


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (nk.nn.BatchNorm1d(3), nn.BatchNorm1d),
        (nk.nn.BatchNorm2d(3), nn.BatchNorm2d),
        (nk.nn.BatchNorm3d(3), nn.BatchNorm3d),
        (nk.nn.InstanceNorm1d(3), nn.InstanceNorm1d),
        (nk.nn.InstanceNorm2d(3), nn.InstanceNorm2d),
        (nk.nn.InstanceNorm3d(3), nn.InstanceNorm3d),
        (nk.nn.LayerNorm(3), nn.LayerNorm),
        (nk.nn.GroupNorm(1, 3), nn.GroupNorm),
        (nk.nn.RMSNorm(3), nn.RMSNorm),
        (nk.nn.LayerNorm2d(3), nn.LayerNorm),
        (nk.nn.BatchNormAct2d(3), nn.BatchNorm2d),
        (nk.nn.BatchRenorm2d(3), nn.BatchNorm2d),
        (nk.nn.GhostBatchNorm2d(3), nn.BatchNorm2d),
        (nk.nn.SyncBatchNorm(3), _BatchNorm),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else v.__name__,
)
def test_isinstance_of_the_torch_class(ours, theirs):
    assert isinstance(ours, theirs)


def test_sync_batch_norm_is_deliberately_not_torchs_sync_batch_norm():
    """DDP refuses any torch.nn.SyncBatchNorm in a CPU model ("SyncBatchNorm layers only work
    with GPU modules"): normkit's, which runs on CPU, is a torch BatchNorm but not that."""
    assert not isinstance(nk.nn.SyncBatchNorm(3), nn.SyncBatchNorm)


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    theirs = randomize_norm_state(ResNetish(nn)).double()
    ours = nk.tools.convert(theirs, "normkit")
    return ours, theirs


def _x():
    return torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def test_swa_update_bn_recomputes_the_same_statistics():
    ours, theirs = _pair()
    loader = [_x() + i for i in range(3)]
    torch.optim.swa_utils.update_bn(loader, ours)
    torch.optim.swa_utils.update_bn(loader, theirs)
    for (k, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert_close(a.double(), b.double(), what=k)


def test_functorch_replace_all_batch_norm_modules():
    ours, theirs = _pair()
    for model in (ours, theirs):
        torch.func.replace_all_batch_norm_modules_(model)
    assert all(
        m.running_mean is None and not m.track_running_stats
        for m in ours.modules()
        if isinstance(m, _BatchNorm)
    )
    for mode in ("train", "eval"):  # batch statistics in both modes now
        assert_close(getattr(ours, mode)()(_x()), getattr(theirs, mode)()(_x()), what=mode)


def test_timm_freeze_batch_norm_2d_accepts_normkit_layers():
    """timm's ``freeze_batch_norm_2d`` swaps every ``nn.BatchNorm2d`` instance for a frozen one."""
    ours, theirs = _pair()
    frozen_ours = freeze_batch_norm_2d(ours.eval())
    frozen_theirs = freeze_batch_norm_2d(theirs.eval())
    kinds = {type(m).__name__ for m in frozen_ours.modules()}
    assert "FrozenBatchNorm2d" in kinds and "BatchNorm2d" not in kinds
    assert_close(frozen_ours(_x()), frozen_theirs(_x()))


class Detectron2FrozenBatchNorm2d(nn.Module):
    """detectron2.layers.FrozenBatchNorm2d's conversion, as detectron2 writes it: every
    ``nn.BatchNorm2d`` / ``nn.SyncBatchNorm`` instance becomes a frozen layer with its
    statistics, affine and eps (forward ``x * scale + shift``)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    @classmethod
    def convert_frozen_batchnorm(cls, module):
        if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            res = cls(module.num_features)
            if module.affine:
                res.weight.data = module.weight.data.clone().detach()
                res.bias.data = module.bias.data.clone().detach()
            res.running_mean.data = module.running_mean.data
            res.running_var.data = module.running_var.data
            res.eps = module.eps
            return res
        for name, child in module.named_children():
            new = cls.convert_frozen_batchnorm(child)
            if new is not child:
                module.add_module(name, new)
        return module


def test_detectron2_convert_frozen_batchnorm_accepts_normkit_layers():
    ours, theirs = _pair()
    frozen_ours = Detectron2FrozenBatchNorm2d.convert_frozen_batchnorm(ours).double()
    frozen_theirs = Detectron2FrozenBatchNorm2d.convert_frozen_batchnorm(theirs).double()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen_ours.modules())
    assert_close(frozen_ours(_x()), frozen_theirs(_x()))


def _lightning_freeze(module, train_bn=True):
    """Lightning's ``BaseFinetuning.freeze``: a ``_BatchNorm`` stays trainable (and keeps
    tracking) with ``train_bn``, everything else is frozen and a frozen BatchNorm stops
    tracking running statistics."""
    for m in module.modules():
        if isinstance(m, _BatchNorm) and train_bn:
            m.track_running_stats = True
            for p in m.parameters(recurse=False):
                p.requires_grad = True
        else:
            if isinstance(m, _BatchNorm):
                m.track_running_stats = False
            for p in m.parameters(recurse=False):
                p.requires_grad = False


@pytest.mark.parametrize("train_bn", [True, False])
def test_lightning_style_freezing_behaves_the_same(train_bn):
    ours, theirs = _pair()
    for model in (ours, theirs):
        _lightning_freeze(model, train_bn)
        model.train()
    y_ours, y_theirs = ours(_x()), theirs(_x())
    assert_close(y_ours, y_theirs)
    for (k, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert_close(a.double(), b.double(), what=k)
    trainable = [n for n, p in ours.named_parameters() if p.requires_grad]
    assert trainable == [n for n, p in theirs.named_parameters() if p.requires_grad]
    assert bool(trainable) == train_bn


def test_fuse_modules_matches_exact_types_and_fold_does_the_job():
    """``torch.ao.quantization.fuse_modules`` looks up ``(type(conv), type(bn))`` in a table
    of torch's classes: it refuses normkit's BatchNorm2d. ``nk.tools.fold`` folds it."""
    from torch.ao.quantization import fuse_modules

    theirs = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).double().eval()
    randomize_norm_state(theirs)
    ours = nk.tools.convert(theirs, "normkit").eval()
    with pytest.raises(AssertionError, match="did not find fuser method"):
        fuse_modules(copy.deepcopy(ours), [["0", "1"]])
    fused = fuse_modules(copy.deepcopy(theirs), [["0", "1"]])
    assert_close(nk.tools.fold(ours)(_x()[:, :3]), fused(_x()[:, :3]))


def test_fx_fuse_leaves_normkit_layers_and_fold_does_the_job():
    """``torch.fx.experimental.optimization.fuse`` matches call_module nodes of exact torch
    types; a normkit layer is one call of its wrapped forward, so fuse keeps it (the result
    still computes the same), and ``nk.tools.fold`` folds it."""
    from torch.fx.experimental.optimization import fuse

    ours, theirs = _pair()
    ours.eval(), theirs.eval()
    fused_ours = fuse(copy.deepcopy(ours))
    assert_close(fused_ours(_x()), theirs(_x()))
    assert_close(nk.tools.fold(ours)(_x()), fuse(copy.deepcopy(theirs))(_x()))


# --------------------------------------------------------------------------------------- FX

FX_LAYERS = [
    lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nk.nn.BatchNorm2d(4), nn.ReLU()),
    lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nk.nn.BatchNormAct2d(4, act="silu")),
    lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nk.nn.InstanceNorm2d(4, track_running_stats=True)),
    lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nk.nn.GroupNorm(2, 4)),
    lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nk.nn.LayerNorm2d(4)),
    lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nk.nn.BatchRenorm2d(4)),
    lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nk.nn.GhostBatchNorm2d(4, virtual_batch_size=2)),
    lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nk.nn.SyncBatchNorm(4)),
    lambda: nn.Sequential(nn.Flatten(), nk.nn.LayerNorm(48), nk.nn.RMSNorm(48)),
    lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nk.nn.FrozenBatchNorm2d(4)),
]


@pytest.mark.parametrize("build", FX_LAYERS, ids=range(len(FX_LAYERS)))
def test_symbolic_trace_computes_what_the_module_does_in_both_modes(build):
    torch.manual_seed(0)
    model = build().double()
    randomize_norm_state(model)
    reference = copy.deepcopy(model)
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(4, 3, 4, 4, dtype=torch.float64)
    for _step in range(2):  # training: batch statistics, running statistics updated
        assert_close(traced.train()(x), reference.train()(x))
    traced_state, reference_state = traced.state_dict(), reference.state_dict()
    for (k, a), (_, b) in zip(traced_state.items(), reference_state.items(), strict=True):
        assert_close(a.double(), b.double(), what=k)
    # the traced module follows .train()/.eval() as the original does
    assert_close(traced.eval()(x), reference.eval()(x))


def test_a_traced_zoo_style_block_exposes_intermediate_features():
    """What ``torchvision.models.feature_extraction.create_feature_extractor`` does: trace the
    model and return a node's value; here the output of a normkit layer."""
    torch.manual_seed(0)
    model = ResNetish(nk.nn).double().eval()
    randomize_norm_state(model)
    graph = torch.fx.symbolic_trace(model).graph
    norm_nodes = [n for n in graph.nodes if n.op == "call_function" and "norm" in n.name]
    assert norm_nodes, [n.name for n in graph.nodes]
    target = norm_nodes[0]
    graph.output((target,))  # any node can become an output
    for node in list(graph.nodes):
        if node.op == "output" and node.args != ((target,),):
            graph.erase_node(node)
    extractor = torch.fx.GraphModule(model, graph)
    feature = extractor(_x())[0]
    expected = model.stem[1](model.stem[0](_x()))
    assert_close(feature, expected)


def test_torchs_convert_sync_batchnorm_replaces_normkit_layers_by_torchs():
    """What docs/tools.md says: torch's converter takes any _BatchNorm, normkit's included, and
    puts torch's SyncBatchNorm (torch's computation) in its place with the same state;
    normkit's converter gives normkit's SyncBatchNorm."""
    ours, _ = _pair()
    by_torch = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(ours))
    by_normkit = nk.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(ours))
    torch_bns = [m for m in ours.modules() if isinstance(m, nn.BatchNorm2d)]
    assert torch_bns
    assert sum(type(m) is nn.SyncBatchNorm for m in by_torch.modules()) == len(torch_bns)
    assert sum(type(m) is nk.nn.SyncBatchNorm for m in by_normkit.modules()) == len(torch_bns)
    for converted in (by_torch, by_normkit):
        assert converted.state_dict().keys() == ours.state_dict().keys()
        assert_close(converted.eval()(_x()), ours.eval()(_x()))
