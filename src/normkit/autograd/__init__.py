"""Autograd compositions of the BatchNorm primitives that the variants share (batch renorm,
ghost batches, sync BN) and the collectives of sync BN.

Dependencies point one way: this package calls the dispatch table (:mod:`normkit.backends`)
and is called by :mod:`normkit.functional`. It owns autograd, never validation (that is
:mod:`normkit.functional._validate`).
"""
