"""Float64 reference for RMSNorm with an optional residual add (Zhang & Sennrich, 2019).

Per row (the last axis, width D):

    res = x + residual                       (x alone when residual is None)
    y   = res / sqrt(mean(res^2) + eps) * weight

Ground truth for every fast path: everything is upcast to float64 and there is
no rounding of ``res`` to a narrower dtype. Differentiable through autograd.
"""
from __future__ import annotations

import torch

__all__ = ["rms_norm_naive"]


def rms_norm_naive(x, weight, residual=None, eps: float = 1e-5, residual_in_fp32: bool = True):
    """Reference RMSNorm. Same arguments as :func:`mamba_genome.kernels.rms_norm`.

    ``residual_in_fp32`` is accepted for signature compatibility and ignored:
    the reference keeps everything in float64.

    Returns:
        (y, res), both float64 with x's shape.
    """
    del residual_in_fp32
    res = x.to(torch.float64)
    if residual is not None:
        res = res + residual.to(torch.float64)
    ms = res.pow(2).mean(-1, keepdim=True)
    y = res / torch.sqrt(ms + eps) * weight.to(torch.float64)
    return y, res
