"""Causal depthwise conv1d (width 2-4): public functions and backend dispatch.

Files: naive.py (float64 reference), parallel.py (PyTorch: the fallback, and
the CPU path without numba), cpu.py (numba forward/backward in the (B, L, D)
layout, the CPU default), chunk.py (Triton forward/backward, CUDA default),
step.py (single-step decode update: torch + Triton).
"""
from __future__ import annotations

import torch

from ..utils import check_shape, resolve_backend
from .naive import causal_conv1d_naive
from .parallel import causal_conv1d_torch
from .step import causal_conv1d_update_torch

__all__ = ["causal_conv1d", "causal_conv1d_update", "causal_conv1d_naive"]


def _check_filter(weight, bias, activation, dim: int) -> int:
    """Check weight (D, W) with W in 2..4, bias (D,) and activation; return W."""
    check_shape("weight", weight, (dim, None))
    width = weight.shape[1]
    if not 2 <= width <= 4:
        raise ValueError(f"conv width must be 2..4, got {width}")
    if activation not in (None, "silu"):
        raise ValueError(f"activation must be None or 'silu', got {activation!r}")
    check_shape("bias", bias, (dim,), optional=True)
    return width


def causal_conv1d(x, weight, bias=None, activation=None, initial_state=None, return_final_state=False, backend=None):
    """Causal depthwise convolution along the length axis, batch-first.

    Args:
        x: (B, L, D) input.
        weight: (D, W) filter per channel, W in 2..4; tap W-1 multiplies x_t.
        bias: (D,) optional.
        activation: None or "silu".
        initial_state: (B, D, W-1) the previous W-1 inputs (oldest first), for streaming.
        return_final_state: also return the last W-1 inputs, (B, D, W-1).
        backend: "reference", "torch", "numba", "triton" or None (fastest available). "numba"
            runs float64 inputs on the PyTorch path (its kernels are fp32).

    Returns:
        y (B, L, D), or (y, final_state).
    """
    if x.dim() != 3:
        raise ValueError(f"x must have shape (batch, length, dim), got {tuple(x.shape)}")
    batch, length, dim = x.shape
    width = _check_filter(weight, bias, activation, dim)
    check_shape("initial_state", initial_state, (batch, dim, width - 1), optional=True)
    backend = resolve_backend(backend, x.device)
    kw = dict(bias=bias, activation=activation, initial_state=initial_state, return_final_state=return_final_state)
    if backend == "reference":
        return causal_conv1d_naive(x, weight, **kw)
    if backend == "triton":
        from .chunk import causal_conv1d_triton

        return causal_conv1d_triton(x, weight, **kw)
    if backend == "numba" and x.dtype != torch.float64:
        from .cpu import causal_conv1d_numba

        return causal_conv1d_numba(x, weight, **kw)
    return causal_conv1d_torch(x, weight, **kw)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, backend=None):
    """One streaming step of :func:`causal_conv1d`, updating ``conv_state`` in place.

    Args:
        x: (B, D) input at this position.
        conv_state: (B, D, W-1) the previous W-1 inputs, oldest first; shifted left
            and x appended, in place.
        weight: (D, W) filter per channel, W in 2..4.
        bias: (D,) optional.
        activation: None or "silu".
        backend: "reference", "torch", "triton" or None.

    Returns:
        y (B, D) in x's dtype (float64 for the reference).
    """
    if x.dim() != 2:
        raise ValueError(f"x must have shape (batch, dim), got {tuple(x.shape)}")
    batch, dim = x.shape
    width = _check_filter(weight, bias, activation, dim)
    check_shape("conv_state", conv_state, (batch, dim, width - 1))
    backend = resolve_backend(backend, x.device)
    if backend == "reference":
        y, final = causal_conv1d_naive(x.unsqueeze(1), weight, bias=bias, activation=activation,
                                       initial_state=conv_state, return_final_state=True)
        conv_state.copy_(final)
        return y[:, 0]
    if backend == "triton":
        from .step import causal_conv1d_update_triton

        return causal_conv1d_update_triton(x, conv_state, weight, bias=bias, activation=activation)
    return causal_conv1d_update_torch(x, conv_state, weight, bias=bias, activation=activation)
