"""fold(): eval-mode BN merged into Conv/ConvTranspose/Linear gives the same outputs."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import normkit as nk
from normkit.tools import FoldError, fold, fold_bn_weights, fold_conv_bn, fold_linear_bn
from tests.conftest import assert_close
from tests.tools.models import ResNetish, mlp, randomize_norm_state

NAMESPACES = {"torch": nn, "normkit": nk.nn}


def _eval(model, x):
    with torch.no_grad():
        return model(x)


def test_tensor_level_matches_torch_fusion():
    conv = nn.Conv2d(4, 6, 3)
    bn = randomize_norm_state(nn.Sequential(nn.BatchNorm2d(6)))[0]
    w, b = fold_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    w_ref, b_ref = torch.nn.utils.fusion.fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    assert_close(w, w_ref.detach())
    assert_close(b, b_ref.detach())
    assert w.dtype == torch.float32


def _conv_cases():
    # (label, layer, input shape, BN class name)
    yield "conv1d", nn.Conv1d(4, 6, 3), (3, 4, 9), "BatchNorm1d"
    yield "conv2d", nn.Conv2d(4, 6, 3, padding=1), (3, 4, 7, 5), "BatchNorm2d"
    yield "conv3d", nn.Conv3d(2, 4, 2), (2, 2, 4, 5, 3), "BatchNorm3d"
    yield "grouped", nn.Conv2d(4, 6, 3, groups=2), (3, 4, 6, 6), "BatchNorm2d"
    yield "depthwise", nn.Conv2d(6, 6, 3, groups=6, bias=False), (3, 6, 6, 6), "BatchNorm2d"
    yield "no bias", nn.Conv2d(4, 6, 1, bias=False), (3, 4, 5, 5), "BatchNorm2d"
    yield (
        "reflect pad",
        nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
        (2, 4, 5, 5),
        "BatchNorm2d",
    )
    yield "transpose1d", nn.ConvTranspose1d(4, 6, 3, stride=2), (3, 4, 5), "BatchNorm1d"
    yield (
        "transpose2d",
        nn.ConvTranspose2d(4, 6, 3, stride=2, output_padding=1),
        (2, 4, 4, 4),
        "BatchNorm2d",
    )
    yield "transpose grouped", nn.ConvTranspose2d(4, 6, 3, groups=2), (2, 4, 4, 4), "BatchNorm2d"
    yield (
        "transpose3d no bias",
        nn.ConvTranspose3d(2, 4, 2, groups=2, bias=False),
        (2, 2, 3, 3, 3),
        "BatchNorm3d",
    )
    yield "linear", nn.Linear(5, 6), (7, 5), "BatchNorm1d"
    yield "linear no bias", nn.Linear(5, 6, bias=False), (7, 5), "BatchNorm1d"


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("library", sorted(NAMESPACES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(_conv_cases()), ids=lambda c: c[0])
def test_module_level_fold_equals_conv_then_bn(case, library, affine, dtype):
    _, layer, shape, bn_cls = case
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    bn = getattr(NAMESPACES[library], bn_cls)(channels, affine=affine)
    pair = randomize_norm_state(nn.Sequential(copy.deepcopy(layer), bn)).to(dtype).eval()
    x = torch.randn(shape, dtype=dtype)
    folder = fold_linear_bn if isinstance(layer, nn.Linear) else fold_conv_bn
    before = copy.deepcopy(pair.state_dict())
    folded = folder(pair[0], pair[1])
    assert type(folded) is type(layer) and folded.bias is not None
    assert_close(_eval(folded, x), _eval(pair, x), dtype=dtype)
    for key, value in pair.state_dict().items():  # inputs untouched
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("library", sorted(NAMESPACES))
def test_resnet_fold_uses_fx_and_folds_every_bn(library):
    model = randomize_norm_state(ResNetish(NAMESPACES[library])).eval()
    x = torch.randn(2, 3, 16, 16)
    folded, report = fold(model, return_report=True, example=x)
    assert report.method == "fx"
    assert len(report) == 6 and not report.skipped
    assert not list(nk.tools.iter_norm_layers(folded))
    assert isinstance(folded, ResNetish) and isinstance(folded.layers[0].bn1, nn.Identity)
    assert_close(_eval(folded, x), _eval(model, x))
    assert list(nk.tools.iter_norm_layers(model))  # the input model is untouched
    assert report.max_rel_error < 1e-5


def test_mlp_linear_bn_fold():
    model = randomize_norm_state(mlp(nk.nn)).eval()
    x = torch.randn(8, 20)
    folded = fold(model)
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[4], nn.Identity)
    assert_close(_eval(folded, x), _eval(model, x))


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Sequential(nn.Conv2d(4, 4, 1)),
            nk.nn.BatchNorm2d(4),
        )

    def forward(self, x):
        if x.sum() > 0:
            return self.body(x)
        return self.body(-x)


def test_fallback_for_models_that_do_not_trace():
    model = randomize_norm_state(Untraceable()).eval()
    x = torch.randn(2, 3, 8, 8)
    folded, report = fold(model, return_report=True)
    assert report.method == "sequential" and "TraceError" in report.trace_error
    assert len(report) == 2
    assert_close(_eval(folded, x), _eval(model, x))


def test_refuses_training_mode():
    model = ResNetish(nn)
    with pytest.raises(FoldError, match=r"training mode.*call model.eval\(\) first.*<root>"):
        fold(model)
    with pytest.raises(FoldError, match="training mode"):
        fold_conv_bn(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 1)
        self.bn2 = nn.BatchNorm2d(3)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y + self.bn2(self.conv2(x))


def test_refuses_bn_whose_input_is_used_elsewhere():
    model = randomize_norm_state(Branchy()).eval()
    with pytest.raises(FoldError, match=r"'bn'.*output of 'conv' is also used by.*strict=False"):
        fold(model)
    x = torch.randn(2, 3, 4, 4)
    folded, report = fold(model, strict=False, return_report=True)
    assert report.folded == [("conv2", "bn2")]
    assert isinstance(folded.bn, nn.BatchNorm2d)
    assert_close(_eval(folded, x), _eval(model, x))


def test_refuses_shared_modules():
    conv, bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
    model = nn.Sequential(conv, bn, nn.ReLU(), conv, bn).eval()
    with pytest.raises(FoldError, match="called more than once"):
        fold(model)


def test_unfoldable_bns_are_kept_and_reported():
    model = nn.Sequential(
        nn.BatchNorm2d(3),  # first layer: nothing before it
        nn.Conv2d(3, 4, 1),
        nn.BatchNorm2d(4, track_running_stats=False),
        nn.Conv2d(4, 4, 1),
        nn.ReLU(),
        nn.BatchNorm2d(4),  # after an activation
    ).eval()
    _, report = fold(model, return_report=True)
    reasons = dict(report.skipped)
    assert len(report) == 0
    assert "not directly after" in reasons["0"] and "not directly after" in reasons["5"]
    assert "track_running_stats=False" in reasons["2"]
    assert "kept" in str(report)


def test_example_check_catches_linear_on_3d_input():
    # Linear acts on the last dim, BatchNorm1d normalizes dim 1: folding would be wrong.
    model = randomize_norm_state(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))).eval()
    with pytest.raises(FoldError, match="differs from the original"):
        fold(model, example=torch.randn(5, 3, 4))
    fold(model, example=torch.randn(5, 4))  # the MLP pattern is fine


def test_onnx_export_of_folded_model(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = randomize_norm_state(ResNetish(nn)).eval()
    folded = fold(model)
    x = torch.randn(2, 3, 16, 16)
    path = tmp_path / "folded.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import onnxscript  # noqa: F401

            torch.onnx.export(folded, (x,), str(path))
        except ImportError:
            torch.onnx.export(folded, (x,), str(path), dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert_close(torch.from_numpy(out), _eval(model, x))
