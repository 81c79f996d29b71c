"""The torch bridge: autograd and ``torch.compile`` wiring around the backend ops.

Dependencies point one way: this package calls the dispatch table
(:mod:`normkit.backends`) and is called by :mod:`normkit.functional`. It owns autograd,
never validation (that is :mod:`normkit.functional._validate`).
"""

from normkit.autograd.ops import batch_norm_eval, norm

__all__ = ["batch_norm_eval", "norm"]
