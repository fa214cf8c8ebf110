"""RMSNorm with an optional fused residual add.

    residual_out = x + residual            (if residual is given)
    y            = residual_out / sqrt(mean(residual_out^2) + eps) * weight

Files in this folder:
    naive.py   float64 reference (ground truth for tests)
    fused.py   Triton forward/backward, residual add fused (CUDA default)
    cpu.py     numba forward/backward, residual add fused (CPU default for fp32 when numba imports)
    here       ``rms_norm_torch``: plain PyTorch (other CPU dtypes, and without numba)
"""
from __future__ import annotations

import torch

from ..utils import resolve_backend
from .naive import rms_norm_naive

__all__ = ["rms_norm", "rms_norm_torch", "rms_norm_naive"]


def rms_norm_torch(x, weight, residual=None, eps: float = 1e-5, residual_in_fp32: bool = True):
    """PyTorch RMSNorm (the CPU path and the semantics every backend follows)."""
    in_dtype = x.dtype
    if residual is not None:
        res = x.float() + residual.float() if residual_in_fp32 else x + residual
    else:
        res = x.float() if residual_in_fp32 else x
    xf = res.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return y.to(in_dtype), res


def rms_norm(x, weight, residual=None, eps: float = 1e-5, residual_in_fp32: bool = True, backend=None):
    """x, residual (B, L, D); weight (D,). Returns (normed, residual_out).

    ``residual_out`` is x + residual (fp32 when ``residual_in_fp32``), the value
    the next block adds to. ``backend="reference"`` returns float64 for both.
    """
    backend = resolve_backend(backend, x.device)
    if backend == "reference":
        return rms_norm_naive(x, weight, residual=residual, eps=eps)
    if (backend == "numba" and x.dtype == weight.dtype == torch.float32
            and (residual is None or residual.dtype == torch.float32)):
        from .cpu import rms_norm_numba

        return rms_norm_numba(x, weight, residual=residual, eps=eps)
    if backend == "triton":
        try:
            from .fused import rms_norm_triton
        except ImportError:
            rms_norm_triton = None
        if rms_norm_triton is not None:
            return rms_norm_triton(x, weight, residual=residual, eps=eps, residual_in_fp32=residual_in_fp32)
    return rms_norm_torch(x, weight, residual=residual, eps=eps, residual_in_fp32=residual_in_fp32)
