"""Bad input: clear errors that name the layer, what was expected and what came."""

from __future__ import annotations

import pytest
import torch

import normkit as nk
import normkit.functional as nkf
from normkit.functional import NormDTypeError, NormInputError


def test_wrong_rank_names_layer_and_ranks():
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\): expected 4D input \(got 3D input\)"):
        nk.nn.BatchNorm2d(3)(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\): expected 2D or 3D input \(got 4D"):
        nk.nn.BatchNorm1d(3)(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"InstanceNorm2d\(3\): expected 3D or 4D input"):
        nk.nn.InstanceNorm2d(3)(torch.randn(2, 3))


def test_channel_mismatch_is_value_and_runtime_error():
    layer = nk.nn.BatchNorm2d(3)
    with pytest.raises(NormInputError, match=r"BatchNorm2d\(3\): expected 3 channels .* got 4"):
        layer(torch.randn(2, 4, 5, 5))
    # torch raises RuntimeError here: code catching that keeps working.
    with pytest.raises(RuntimeError):
        layer(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"GroupNorm\(2, 6\): expected 6 channels"):
        nk.nn.GroupNorm(2, 6)(torch.randn(2, 4, 3))


def test_one_value_per_channel_in_training():
    layer = nk.nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        layer(torch.randn(1, 3))
    layer.eval()
    assert layer(torch.randn(1, 3)).shape == (1, 3)  # inference with one sample is fine
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\).*more than 1 value per channel"):
        nk.nn.BatchNorm2d(3)(torch.randn(1, 3, 1, 1))


def test_instance_norm_needs_more_than_one_spatial_element():
    with pytest.raises(ValueError, match="Expected more than 1 spatial element when training"):
        nk.nn.InstanceNorm1d(3)(torch.randn(2, 3, 1))


def test_groups_must_divide_channels():
    with pytest.raises(
        ValueError, match=r"num_channels \(6\) must be divisible by num_groups \(4\)"
    ):
        nk.nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match=r"group_norm: num_channels \(6\) must be divisible"):
        nkf.group_norm(torch.randn(2, 6, 3), 4)
    with pytest.raises(ValueError, match="num_groups"):
        nk.nn.GroupNorm(0, 6)


def test_normalized_shape_mismatch():
    with pytest.raises(
        RuntimeError, match=r"Given normalized_shape=\[4\], expected input with shape \[\*, 4\]"
    ):
        nk.nn.LayerNorm(4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"RMSNorm\(\(3, 4\)\): Given normalized_shape=\[3, 4\]"):
        nk.nn.RMSNorm((3, 4))(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match=r"expected weight of size \(4,\), got \(5,\)"):
        nkf.layer_norm(torch.randn(2, 4), (4,), torch.ones(5))


@pytest.mark.parametrize(
    "layer",
    [
        nk.nn.BatchNorm2d(3),
        nk.nn.InstanceNorm2d(3),
        nk.nn.GroupNorm(1, 3),
        nk.nn.LayerNorm(4),
        nk.nn.RMSNorm(4),
    ],
    ids=lambda m: type(m).__name__,
)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_floating_input_is_a_type_error(layer, dtype):
    x = (
        torch.ones(2, 3, 4, 4).to(dtype)
        if not isinstance(layer, (nk.nn.LayerNorm, nk.nn.RMSNorm))
        else torch.ones(2, 4).to(dtype)
    )
    with pytest.raises(
        NormDTypeError,
        match=rf"{type(layer).__name__}.*expected a floating-point input.*{str(dtype)[6:]}",
    ):
        layer(x)
    with pytest.raises(TypeError):
        layer(x)


def test_instance_norm_channel_mismatch():
    with pytest.raises(ValueError, match=r"InstanceNorm1d\(3\): expected 3 channels at dim 1"):
        nk.nn.InstanceNorm1d(3, affine=True)(torch.randn(2, 4, 5))
    with pytest.warns(UserWarning, match="does not match num_features"):
        nk.nn.InstanceNorm1d(3)(torch.randn(2, 4, 5))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: nk.nn.BatchNorm2d(0), "num_features must be a positive integer, got 0"),
        (lambda: nk.nn.BatchNorm2d(3, eps=-1.0), "eps must be non-negative, got -1.0"),
        (lambda: nk.nn.BatchNorm2d(3, momentum=1.5), r"momentum must be in \[0, 1\] or None"),
        (lambda: nk.nn.LayerNorm(()), "normalized_shape must not be empty"),
        (lambda: nk.nn.LayerNorm((3, 0)), "each entry of normalized_shape must be a positive"),
        (lambda: nk.nn.GroupNorm(2, 0), "num_channels must be a positive integer"),
    ],
)
def test_bad_configuration_fails_at_construction(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_functional_argument_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="running_mean and running_var must be given"):
        nkf.batch_norm(x, None, None, training=False)
    with pytest.raises(
        ValueError, match=r"expected weight of size \(3,\) .* got weight of size \(4,\)"
    ):
        nkf.batch_norm(x, None, None, torch.ones(4), training=True)
    with pytest.raises(ValueError, match=r"expected running_mean of size \(3,\)"):
        nkf.batch_norm(x, torch.zeros(2), torch.ones(3), training=True)
    with pytest.raises(ValueError, match="eps must be positive during training"):
        nkf.batch_norm(x, None, None, training=True, eps=0.0)
    with pytest.raises(ValueError, match=r"momentum=None .* needs num_batches_tracked"):
        nkf.batch_norm(x, torch.zeros(3), torch.ones(3), training=True, momentum=None)
    with pytest.raises(ValueError, match=r"batch_norm: expected an input of at least 2 dimensions"):
        nkf.batch_norm(torch.randn(3), None, None, training=True)


def test_unknown_or_unusable_backend_is_refused():
    with pytest.raises(nk.BackendUnavailableError, match="unknown normkit backend 'cuda-magic'"):
        with nk.use_backend("cuda-magic"):
            pass
    with pytest.raises(nk.BackendUnavailableError, match="unknown normkit backend"):
        nkf.layer_norm(torch.randn(2, 4), (4,), backend="nope")
