"""Runs every kernel variant on shapes that take every code path; used by the cache test.

``python -m tests.kernels._exercise OUT.npz`` writes all outputs, so a fresh process (which
loads the kernels from the on-disk cache) can be compared with the process that compiled
them.
"""

from __future__ import annotations

import sys

import numpy as np
import torch


def exercise() -> dict[str, np.ndarray]:
    from tests.kernels import _ops as nb

    out: dict[str, np.ndarray] = {}
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for name, shape, channels_last in (
            ("planes", (3, 4, 70), False),
            ("short", (5, 4, 9), False),
            ("rows-tiled-tail", (3, 40, 37), True),  # 111 rows of 40: 51 per tile + a tail
            ("bn1d", (300, 7, 1), False),
        ):
            x = torch.randn(shape, generator=gen, dtype=dtype)
            if channels_last:
                x = x.transpose(1, 2).contiguous().transpose(1, 2)
            g = torch.randn(shape, generator=gen, dtype=dtype)
            c = shape[1]
            w = torch.randn(c, generator=gen, dtype=dtype)
            b = torch.randn(c, generator=gen, dtype=dtype)
            key = f"{name}-{dtype}"
            y, mean, var = nb.batch_norm_forward(x, w, b, 1e-5)
            dx, dw, db = nb.batch_norm_backward(g, x, w, mean, var, 1e-5)
            invstd = torch.rsqrt(var + 1e-5)
            sums = nb.batch_norm_backward_reduce(g, x, mean, invstd, w, b, "gelu")
            results = [
                y, mean, var, dx, dw, db, *nb.batch_norm_stats(x),
                nb.batch_norm_elemt(x, mean, invstd, w, b, "silu"), *sums,
                nb.batch_norm_backward_elemt(g, x, mean, invstd, w, b, *sums, 9, "gelu"),
                nb.batch_norm_eval_forward(x, mean, var, w, b, 1e-5),
                *nb.batch_norm_eval_backward(g, x, mean, var, w, 1e-5),
            ]  # fmt: skip
            if shape[1] % 2 == 0:
                for groups in (2, shape[1]):
                    gy, gm, gv = nb.group_norm_forward(x, groups, w, b, 1e-5)
                    results += [gy, gm, gv, *nb.group_norm_backward(g, x, groups, w, gm, gv, 1e-5)]
                one = x[:1]
                gy, gm, gv = nb.group_norm_forward(one, 1, w, b, 1e-5)  # the chunked fallback
                results += [gy, *nb.group_norm_backward(g[:1], one, 1, w, gm, gv, 1e-5)]
            ln2d, ln2d_g = x.contiguous(), g.contiguous()  # channels-first LayerNorm
            ly, lm, lv = torch.ops.normkit.layer_norm_2d_forward(ln2d, w, b, 1e-6)
            results += [ly, lm, lv, *torch.ops.normkit.layer_norm_2d_backward(
                ln2d_g, ln2d, w, lm, lv, 1e-6
            )]  # fmt: skip
            rows, rg = x.reshape(-1, shape[-1]), g.reshape(-1, shape[-1])
            rw = torch.randn(shape[-1], generator=gen, dtype=dtype)
            for center in (True, False):
                ry, rm, rv = nb.row_norm_forward(rows, rw, None, 1e-5, center)
                results += [ry, *nb.row_norm_backward(rg, rows, rw, rm, rv, 1e-5, center)]
            for i, r in enumerate(results):
                if r is not None:
                    out[f"{key}-{i}"] = r.detach().numpy().copy()
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)  # as in the test process: same chunking, same rounding
    np.savez(sys.argv[1], **exercise())
