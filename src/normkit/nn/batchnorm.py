"""BatchNorm1d/2d/3d: drop-in replacements for torch.nn's, computed by normkit."""

from __future__ import annotations

from torch import Tensor

from normkit.functional.batch_norm import batch_norm
from normkit.nn._base import _NormBase

_DOC_TEMPLATE = r"""Batch normalization over a {rank} input (`Ioffe & Szegedy 2015
    <https://arxiv.org/abs/1502.03167>`__), a drop-in for :class:`torch.nn.{name}`.

    .. math::
        y = \frac{{x - \mathrm{{E}}[x]}}{{\sqrt{{\mathrm{{Var}}[x] + \epsilon}}}} \cdot \gamma + \beta

    Per channel, over the batch{spatial}. Training normalizes with the batch mean and the
    **biased** batch variance and updates the running estimates with the **unbiased** one::

        running_mean = (1 - momentum) * running_mean + momentum * batch_mean
        running_var  = (1 - momentum) * running_var  + momentum * batch_var * n / (n - 1)

    (``momentum=None``: cumulative average, factor ``1 / num_batches_tracked``; note this is
    torch's convention, Keras's ``momentum=0.99`` corresponds to torch's ``0.01``).
    Evaluation normalizes with the running estimates; with ``track_running_stats=False``
    batch statistics are used in both modes. A training batch with NaN/Inf statistics does
    not update the running estimates (a ``RuntimeWarning`` says so; torch would store NaN).

    Args:
        num_features: number of channels ``C``.
        eps: added to the variance. Default: 1e-5
        momentum: running-statistics update factor or ``None``. Default: 0.1
        affine: learnable ``weight`` (gamma) and ``bias`` (beta). Default: True
        track_running_stats: keep ``running_mean``/``running_var``. Default: True
        bias: learn beta (only with ``affine``). Default: True

    Shape:
        Input and output: {shapes}.

    Parameters: 2C trainable (gamma, beta) and 2C non-trainable values (running mean and
    variance) plus the ``num_batches_tracked`` counter, the same state_dict keys as torch.

    Examples::

        >>> import torch, normkit as nk
        >>> bn = nk.nn.{name}(3)
        >>> x = 5 + 2 * torch.randn({example})
        >>> y = bn(x)
        >>> bool(y.mean().abs() < 1e-5), round(y.var(unbiased=False).item(), 2)
        (True, 1.0)
"""


class _BatchNorm(_NormBase):
    """BatchNorm1d/2d/3d differ only in the input ranks they accept."""

    def forward(self, input: Tensor) -> Tensor:
        name = self._check_input(input)
        state = self._batch_norm_state()
        return batch_norm(
            input,
            state["running_mean"],
            state["running_var"],
            self.weight,
            self.bias,
            state["training"],
            self.momentum,
            self.eps,
            num_batches_tracked=state["num_batches_tracked"],
            name=name,
        )


class BatchNorm1d(_BatchNorm):
    __doc__ = _DOC_TEMPLATE.format(
        rank="2D or 3D",
        name="BatchNorm1d",
        spatial=" (and the length L)",
        shapes="``(N, C)`` or ``(N, C, L)``",
        example="16, 3",
    )
    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    __doc__ = _DOC_TEMPLATE.format(
        rank="4D",
        name="BatchNorm2d",
        spatial=" and the spatial dims (H, W)",
        shapes="``(N, C, H, W)``",
        example="8, 3, 4, 4",
    )
    _ranks = (4,)


class BatchNorm3d(_BatchNorm):
    __doc__ = _DOC_TEMPLATE.format(
        rank="5D",
        name="BatchNorm3d",
        spatial=" and the spatial dims (D, H, W)",
        shapes="``(N, C, D, H, W)``",
        example="4, 3, 2, 4, 4",
    )
    _ranks = (5,)
