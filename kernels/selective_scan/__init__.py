"""Mamba-1 selective scan: public functions, input checks and backend dispatch.

Files in this folder:
    naive.py     float64 loop reference (ground truth for tests)
    parallel.py  chunked, checkpointed PyTorch path (fallback everywhere)
    cpu.py       compiled (numba) forward/backward kernels + autograd wrapper (CPU default)
    chunk.py     Triton forward/backward kernels + autograd wrapper (CUDA default)
    step.py      single-step state update (decode / streaming)
"""
from __future__ import annotations

import torch

from ..utils import check_shape, resolve_backend
from .naive import selective_scan_naive
from .parallel import selective_scan_torch
from .step import selective_state_update_torch

__all__ = ["selective_scan", "selective_state_update", "selective_scan_naive"]


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False, backend=None, delta_proj_weight=None,
):
    """Selective scan over a whole sequence, batch-first.

    Args:
        u:        (B, L, D) input, fp32 / bf16 / fp16 (fp64 for the reference).
        delta:    (B, L, D) time-step before bias and softplus.
        A:        (D, N) state matrix (negative real, S4D-real init), fp32.
        B:        (B, L, N) input projection, shared across channels.
        C:        (B, L, N) output projection, shared across channels.
        D:        (D,) optional skip connection, y += D * u.
        z:        (B, L, D) optional gate, y *= silu(z).
        delta_bias: (D,) optional bias added to delta before softplus.
        delta_softplus: apply softplus to delta (+ bias).
        initial_state: (B, D, N) optional starting state h_{-1} (zeros if None).
        return_final_state: also return h_{L-1}, (B, D, N) float32.
        backend:  "reference", "torch", "numba", "triton" or None (fastest available: "triton"
                  for CUDA tensors, "numba" for CPU tensors when numba imports, else "torch").
                  "numba" runs float64 inputs on the PyTorch path (its kernels are fp32).
        delta_proj_weight: (D, R) optional; then ``delta`` is the (B, L, R) low-rank time-step
                  and the scan uses delta @ delta_proj_weight.T in delta's dtype (Mamba's dt_proj,
                  without its bias: pass that as ``delta_bias``). The Triton backend recomputes this
                  projection in the backward instead of saving the (B, L, D) result; the numba
                  backend forms it per step inside its kernels (never stored).

    Returns:
        y (B, L, D) in u's dtype (float64 for the reference), or
        (y, final_state) when ``return_final_state``.

    Example:
        >>> u = torch.randn(2, 100, 64); dt = torch.rand(2, 100, 64)
        >>> A = -torch.rand(64, 16); B = torch.randn(2, 100, 16); C = torch.randn(2, 100, 16)
        >>> y = selective_scan(u, dt, A, B, C).shape   # (2, 100, 64)
    """
    if u.dim() != 3:
        raise ValueError(f"u must have shape (batch, length, d_inner), got {tuple(u.shape)}")
    batch, length, d_inner = u.shape
    check_shape("A", A, (d_inner, None))
    d_state = A.shape[1]
    if delta_proj_weight is not None:
        check_shape("delta_proj_weight", delta_proj_weight, (d_inner, None))
        check_shape("delta", delta, (batch, length, delta_proj_weight.shape[1]))
    else:
        check_shape("delta", delta, (batch, length, d_inner))
    check_shape("B", B, (batch, length, d_state))
    check_shape("C", C, (batch, length, d_state))
    check_shape("D", D, (d_inner,), optional=True)
    check_shape("z", z, (batch, length, d_inner), optional=True)
    check_shape("delta_bias", delta_bias, (d_inner,), optional=True)
    check_shape("initial_state", initial_state, (batch, d_inner, d_state), optional=True)
    backend = resolve_backend(backend, u.device)
    kw = dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
              initial_state=initial_state, return_final_state=return_final_state)
    if backend == "triton":
        from .chunk import selective_scan_triton

        return selective_scan_triton(u, delta, A, B, C, delta_proj_weight=delta_proj_weight, **kw)
    if backend == "reference":
        if delta_proj_weight is not None:
            delta = torch.nn.functional.linear(delta.double(), delta_proj_weight.double())
        return selective_scan_naive(u, delta, A, B, C, **kw)
    if backend == "numba" and u.dtype != torch.float64:
        from .cpu import selective_scan_numba        # forms delta = dt @ W.T per step itself

        return selective_scan_numba(u, delta, A, B, C, delta_proj_weight=delta_proj_weight, **kw)
    if delta_proj_weight is not None:  # in delta's dtype, as the Triton backend does
        delta = torch.nn.functional.linear(delta, delta_proj_weight.to(delta.dtype))
    return selective_scan_torch(u, delta, A, B, C, **kw)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, backend=None):
    """One recurrent step, updating ``state`` in place.

    Args:
        state: (B, D, N) float32 SSM state, modified in place.
        x, dt: (B, D) input and time-step for this position.
        A: (D, N); B, C: (B, N); D, dt_bias: (D,); z: (B, D) optional gate.

    Returns:
        y (B, D) in x's dtype.
    """
    if x.dim() != 2:
        raise ValueError(f"x must have shape (batch, d_inner), got {tuple(x.shape)}")
    batch, d_inner = x.shape
    check_shape("A", A, (d_inner, None))
    d_state = A.shape[1]
    check_shape("state", state, (batch, d_inner, d_state))
    check_shape("dt", dt, (batch, d_inner))
    check_shape("B", B, (batch, d_state))
    check_shape("C", C, (batch, d_state))
    backend = resolve_backend(backend, x.device)
    if backend == "triton":
        try:
            from .step import selective_state_update_triton
        except ImportError:
            selective_state_update_triton = None
        if selective_state_update_triton is not None:
            return selective_state_update_triton(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias,
                                                 dt_softplus=dt_softplus)
    return selective_state_update_torch(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)
