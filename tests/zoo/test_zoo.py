"""The model zoo: every model trains in float64 at test size; at bench size it has the real
models' parameter counts, state_dict names and layer details, and runs one forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.zoo.ecosystem.timm_layers import DropPath, StdConv2d
from tests.zoo.ecosystem.timm_norm_act import GroupNormAct
from tests.zoo.ecosystem.torchvision_ops import FrozenBatchNorm2d, Permute
from tests.zoo.ecosystem.torchvision_ops import LayerNorm2d as TvLayerNorm2d
from tests.zoo.norm_state import NORM_CLASSES, norm_classes_in, norm_layers, randomize_norm_state
from tests.zoo.registry import TEST_CLASSES, ZOO

NAMES = sorted(ZOO)

# --- test size --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_test_size_trains_in_float64(name):
    entry = ZOO[name]
    model = randomize_norm_state(entry.build("test")).double().train()
    assert norm_classes_in(model) == entry.norm_classes
    x = torch.randn(entry.input_shape("test"), dtype=torch.float64, requires_grad=True)
    y = model(x)
    assert y.shape == (x.shape[0], TEST_CLASSES) and y.dtype == torch.float64
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == [], f"{name}: parameters without gradient: {unused[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


# --- bench size -------------------------------------------------------------------------

#: A sample of each original's state_dict keys (read in the timm / torchvision sources).
SAMPLE_KEYS = {
    "resnet18": [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.bn1.running_mean",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "layer4.1.bn2.num_batches_tracked",
        "fc.weight",
    ],
    "resnet50": [
        "layer1.0.downsample.1.weight",
        "layer1.0.bn3.bias",
        "layer3.5.conv3.weight",
        "layer4.2.bn3.running_mean",
    ],
    "resnet50_frozenbn": ["layer1.0.bn1.weight", "layer1.0.downsample.1.running_var"],
    "mobilenet_v2": [
        "features.0.0.weight",
        "features.0.1.weight",
        "features.1.conv.0.0.weight",
        "features.1.conv.1.weight",
        "features.2.conv.0.1.running_mean",
        "features.2.conv.3.running_var",
        "features.18.1.bias",
        "classifier.1.weight",
    ],
    "mobilenetv3_large_100": [
        "conv_stem.weight",
        "bn1.running_var",
        "blocks.0.0.conv_dw.weight",
        "blocks.0.0.bn2.running_mean",
        "blocks.2.0.se.conv_reduce.weight",
        "blocks.6.0.conv.weight",
        "blocks.6.0.bn1.weight",
        "conv_head.bias",
        "classifier.weight",
    ],
    "efficientnet_b0": [
        "blocks.0.0.conv_dw.weight",
        "blocks.0.0.se.conv_reduce.weight",
        "blocks.0.0.bn2.running_var",
        "blocks.1.0.conv_pw.weight",
        "blocks.1.0.bn3.num_batches_tracked",
        "blocks.5.3.conv_pwl.weight",
        "conv_head.weight",
        "bn2.running_mean",
        "classifier.bias",
    ],
    "efficientnet_b0_gn": ["blocks.1.0.bn1.weight", "bn2.bias"],
    "efficientnet_b0_frozen": ["bn1.running_var", "blocks.6.0.bn3.weight"],
    "convnext_tiny": [
        "features.0.0.weight",
        "features.0.1.weight",
        "features.1.0.block.0.weight",
        "features.1.0.block.2.weight",
        "features.1.0.block.5.bias",
        "features.1.0.layer_scale",
        "features.2.0.weight",
        "features.2.1.weight",
        "features.7.2.layer_scale",
        "classifier.0.weight",
        "classifier.2.weight",
    ],
    "convnext_tiny_timm": [
        "stem.0.weight",
        "stem.1.weight",
        "stages.0.blocks.0.conv_dw.weight",
        "stages.0.blocks.0.norm.weight",
        "stages.0.blocks.0.mlp.fc1.weight",
        "stages.0.blocks.0.gamma",
        "stages.1.downsample.0.weight",
        "stages.1.downsample.1.weight",
        "stages.3.blocks.2.mlp.fc2.bias",
        "head.norm.weight",
        "head.fc.weight",
    ],
    "convnextv2_tiny": ["stages.0.blocks.0.mlp.grn.weight", "stages.2.blocks.8.mlp.grn.bias"],
    "convnextv2_atto": ["stages.2.blocks.5.mlp.grn.bias", "stages.3.blocks.1.norm.weight"],
    "convnext_atto_rms": ["stem.1.weight", "stages.1.downsample.0.weight", "head.norm.weight"],
    "vit_base_patch16_224": [
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.0.norm1.weight",
        "blocks.0.attn.qkv.bias",
        "blocks.0.attn.proj.weight",
        "blocks.11.mlp.fc2.bias",
        "norm.weight",
        "head.weight",
    ],
    "swin_tiny_patch4_window7_224": [
        "patch_embed.proj.weight",
        "patch_embed.norm.weight",
        "layers.0.blocks.0.norm1.weight",
        "layers.0.blocks.1.attn.relative_position_bias_table",
        "layers.1.downsample.norm.weight",
        "layers.1.downsample.reduction.weight",
        "layers.2.blocks.5.mlp.fc1.weight",
        "norm.weight",
        "head.fc.weight",
    ],
    "levit_128s": [
        "stem.conv1.linear.weight",
        "stem.conv4.bn.running_mean",
        "stages.0.blocks.0.attn.qkv.linear.weight",
        "stages.0.blocks.0.attn.qkv.bn.weight",
        "stages.0.blocks.0.attn.attention_biases",
        "stages.0.blocks.0.attn.proj.ln.bn.weight",
        "stages.1.downsample.attn_downsample.kv.linear.weight",
        "stages.1.downsample.attn_downsample.q.ln.bn.running_var",
        "stages.1.downsample.mlp.ln2.bn.bias",
        "head.bn.weight",
        "head_dist.linear.bias",
    ],
    "densenet121": [
        "features.conv0.weight",
        "features.norm0.running_mean",
        "features.denseblock1.denselayer1.norm1.weight",
        "features.denseblock1.denselayer1.conv2.weight",
        "features.denseblock4.denselayer16.norm2.running_var",
        "features.transition1.norm.weight",
        "features.transition3.conv.weight",
        "features.norm5.bias",
        "classifier.weight",
    ],
    "resnetv2_50x1_bit": [
        "stem.conv.weight",
        "stages.0.blocks.0.downsample.conv.weight",
        "stages.0.blocks.0.norm1.weight",
        "stages.3.blocks.2.norm3.bias",
        "norm.weight",
        "head.fc.bias",
    ],
    "resnetv2_50d_frn": [
        "stem.conv1.weight",
        "stem.norm1.tau",
        "stem.conv3.weight",
        "stages.1.blocks.0.downsample.conv.weight",
        "norm.tau",
    ],
    "resnetv2_50d_evos": ["stem.norm2.v", "stages.2.blocks.5.norm3.v", "norm.weight"],
    "poolformer_s12": [
        "stem.conv.weight",
        "stages.0.blocks.0.norm1.weight",
        "stages.0.blocks.0.layer_scale1.scale",
        "stages.1.downsample.conv.weight",
        "stages.2.blocks.5.layer_scale2.scale",
        "head.norm.weight",
        "head.fc.weight",
    ],
}

#: Keys the originals do not have (non-persistent buffers, absent parameters).
ABSENT_KEYS = {
    "resnet50_frozenbn": ["layer1.0.bn1.num_batches_tracked"],
    "convnextv2_tiny": ["stages.0.blocks.0.gamma"],
    "convnext_atto_rms": ["stem.1.bias"],
    "swin_tiny_patch4_window7_224": [
        "layers.0.blocks.0.attn.relative_position_index",
        "layers.0.blocks.1.attn_mask",
    ],
    "levit_128s": ["stages.0.blocks.0.attn.attention_bias_idxs"],
    "efficientnet_b0_gn": ["bn2.running_mean"],
}


def _act(module, cls, inplace):
    return type(module) is cls and module.inplace is inplace


#: Details of the originals worth pinning: in-place activations, eps, Identity slots.
LAYOUT = {
    "resnet18": lambda m: _act(m.relu, nn.ReLU, True) and _act(m.layer1[0].relu, nn.ReLU, True),
    "resnet50_frozenbn": lambda m: type(m.layer2[0].downsample[1]) is FrozenBatchNorm2d,
    "mobilenet_v2": lambda m: _act(m.features[0][2], nn.ReLU6, True),
    "efficientnet_b0": lambda m: (
        _act(m.bn1.act, nn.SiLU, True)
        and type(m.blocks[1][0].bn3.act) is nn.Identity
        and type(m.blocks[1][0].se.gate) is nn.Sigmoid
        and _act(m.blocks[1][0].se.act1, nn.SiLU, True)
        and type(m.blocks[0][0].drop_path) is nn.Identity
        and type(m.blocks[6][0].drop_path) is DropPath
        and m.blocks[6][0].drop_path.drop_prob == pytest.approx(0.2 * 15 / 16)
    ),
    "mobilenetv3_large_100": lambda m: (
        _act(m.blocks[0][0].bn1.act, nn.ReLU, True)
        and _act(m.blocks[3][0].bn1.act, nn.Hardswish, True)
        and type(m.blocks[2][0].se.gate) is nn.Hardsigmoid
        and _act(m.blocks[2][0].se.act1, nn.ReLU, True)
        and m.blocks[2][0].se.conv_reduce.out_channels == 24  # make_divisible(72 / 4)
        and _act(m.act2, nn.Hardswish, True)
        and m.blocks[0][0].has_skip
    ),
    "convnext_tiny": lambda m: (
        type(m.features[0][1]) is TvLayerNorm2d
        and m.features[0][1].eps == 1e-6
        and type(m.features[1][0].block[1]) is Permute
        and type(m.features[1][0].block[2]) is nn.LayerNorm
        and m.features[1][0].block[2].eps == 1e-6
        and m.features[7][2].stochastic_depth.p == pytest.approx(0.1)
    ),
    "densenet121": lambda m: (
        _act(m.features.relu0, nn.ReLU, True)
        and _act(m.features.denseblock1.denselayer1.relu1, nn.ReLU, True)
    ),
    "resnetv2_50x1_bit": lambda m: (
        type(m.stem.conv) is StdConv2d
        and m.stem.conv.eps == 1e-8
        and type(m.stages[0].blocks[0].norm1) is GroupNormAct
        and m.stages[0].blocks[0].norm1.num_groups == 32
        and _act(m.stages[0].blocks[0].norm1.act, nn.ReLU, True)
    ),
    "levit_128s": lambda m: (
        type(m.stages[0].downsample) is nn.Identity
        and type(m.stages[1].blocks[0].drop_path1) is nn.Identity
    ),
    "vit_base_patch16_224": lambda m: (
        type(m.blocks[0].ls1) is nn.Identity and m.blocks[0].norm1.eps == 1e-6
    ),
}


def _state_size(model: nn.Module) -> int:
    """Parameters, plus the weight/bias a frozen BatchNorm keeps as buffers."""
    frozen = sum(
        t.numel()
        for _, m in norm_layers(model)
        if "Frozen" in type(m).__name__
        for t in (m.weight, m.bias)
    )
    return sum(p.numel() for p in model.parameters()) + frozen


@pytest.mark.parametrize("name", NAMES)
def test_bench_size_is_the_real_model(name):
    entry = ZOO[name]
    model = entry.build("bench").eval()
    assert norm_classes_in(model) == entry.norm_classes
    size = _state_size(model)
    if entry.published_params is not None:
        assert size == entry.published_params
    if entry.timm_params_m is not None:
        assert abs(size / 1e6 - entry.timm_params_m) <= 0.005, size
    keys = set(model.state_dict())
    missing = [k for k in SAMPLE_KEYS.get(name, []) if k not in keys]
    assert missing == [], f"{name}: keys not in the state_dict: {missing}"
    present = [k for k in ABSENT_KEYS.get(name, []) if k in keys]
    assert present == [], f"{name}: keys the original does not have: {present}"
    if name in LAYOUT:
        assert LAYOUT[name](model), f"{name}: layout differs from the original"
    shape = entry.input_shape("bench")
    with torch.no_grad():
        y = model(torch.randn(1, *shape[1:]))
    assert y.shape == (1, 1000) and torch.isfinite(y).all()


def test_every_model_but_the_zoos_own_has_a_published_count_and_sample_keys():
    own = {"normmix"}
    for name, entry in ZOO.items():
        if name in own:
            continue
        assert entry.published_params or entry.timm_params_m, name
        assert name in SAMPLE_KEYS, name


def test_bench_inputs():
    for name, entry in ZOO.items():
        shape = entry.input_shape("bench")
        assert 16 <= shape[0] <= 32 and shape[1] == 3, name
        assert shape[2:] == ((112, 112) if entry.conv else (224, 224)), name


def test_every_stand_in_norm_class_appears_in_some_model():
    used = set().union(*(entry.norm_classes for entry in ZOO.values()))
    assert NORM_CLASSES - used <= {
        nn.BatchNorm3d,
        nn.SyncBatchNorm,
        nn.InstanceNorm1d,
        nn.InstanceNorm2d,
        nn.InstanceNorm3d,
        nn.RMSNorm,
        nn.GroupNorm,
    }


def test_foldable_means_a_batchnorm_family_layer():
    foldable = {name for name, entry in ZOO.items() if entry.foldable}
    assert foldable == {
        "densenet121",
        "efficientnet_b0",
        "efficientnet_b0_frozen",
        "levit_128s",
        "mobilenet_v2",
        "mobilenetv3_large_100",
        "resnet18",
        "resnet50",
        "resnet50_frozenbn",
    }


def test_build_rejects_an_unknown_size():
    with pytest.raises(ValueError, match=r"resnet18: size must be one of \('test', 'bench'\)"):
        ZOO["resnet18"].build("huge")


# --- randomize_norm_state ---------------------------------------------------------------


def _norm_state(model):
    return {
        f"{name}.{k}": t.clone()
        for name, m in norm_layers(model)
        for k, t in m.state_dict(keep_vars=False).items()
    }


@pytest.mark.parametrize("name", NAMES)
def test_randomize_moves_every_norm_tensor_off_its_init(name):
    model = ZOO[name].build("test")
    before = _norm_state(model)
    randomize_norm_state(model)
    after = _norm_state(model)
    assert before, name
    unchanged = [k for k in before if torch.equal(before[k], after[k]) and "num_batches" not in k]
    assert unchanged == [], f"{name}: {unchanged[:5]}"
    for key, t in after.items():
        if key.endswith("running_var"):
            assert (t >= 0.5).all(), key
        if key.endswith("num_batches_tracked"):
            assert t.item() == 7, key


def test_randomize_is_deterministic_and_reaches_layer_scales():
    a = randomize_norm_state(ZOO["convnext_tiny"].build("test"))
    b = randomize_norm_state(ZOO["convnext_tiny"].build("test"))
    assert all(
        torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items() if "block.2" in k
    )
    assert (a.features[1][0].layer_scale - 1).abs().max() < 1.5
    assert a.features[1][0].layer_scale.abs().min() > 1e-3  # no longer 1e-6
    pool = randomize_norm_state(ZOO["poolformer_s12"].build("test"))
    assert pool.stages[0].blocks[0].layer_scale1.scale.abs().min() > 1e-3


# --- model semantics that parameter counts and keys cannot see --------------------------


def test_swin_shifted_window_attends_within_its_region_only():
    """Token (0, 0) of an 8x8 map, window 4 shifted by 2: after the cyclic shift it sits in
    the corner region of the last window, which holds the original tokens rows 0-1, cols 0-1;
    the -100 mask must cut it off from the other 12 tokens of that window."""
    model = randomize_norm_state(ZOO["swin_tiny_patch4_window7_224"].build("test")).double()
    block = model.layers[0].blocks[1]
    assert (block.window, block.shift) == (4, 2)
    x = torch.randn(1, 8, 8, block.norm1.normalized_shape[0], dtype=torch.float64)
    x.requires_grad_()
    block(x)[0, 0, 0].sum().backward()
    reach = x.grad[0].abs().amax(dim=-1) > 1e-20
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(reach, expected)
