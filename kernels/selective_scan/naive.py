"""Float64 loop reference for the Mamba-1 selective scan (Gu & Dao, 2023, Alg. 2).

For every time step t (shapes per batch element):

    dt_t  = softplus(delta_t + delta_bias)            if delta_softplus else delta_t + delta_bias
    h_t   = exp(dt_t * A) * h_{t-1} + (dt_t * u_t) B_t     h: (D, N)
    y_t   = h_t C_t + D * u_t
    y_t  *= silu(z_t)                                  if z is given

This is the ground truth every fast path is tested against. It is slow on
purpose: one Python step per position, everything upcast to float64.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_naive(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False,
):
    """Reference scan. Same contract as :func:`mamba_genome.kernels.selective_scan`.

    Returns ``y`` (B, L, D) in float64, and ``(y, final_state)`` when
    ``return_final_state`` is set. Differentiable through autograd.
    """
    f64 = torch.float64
    u, delta, A, B, C = (t.to(f64) for t in (u, delta, A, B, C))
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    dt = delta
    if delta_bias is not None:
        dt = dt + delta_bias.to(f64)
    if delta_softplus:
        dt = F.softplus(dt)
    if initial_state is None:
        h = u.new_zeros(batch, d_inner, d_state)
    else:
        h = initial_state.to(f64)
    ys = []
    for t in range(length):
        dA = torch.exp(dt[:, t, :, None] * A)                            # (B, D, N)
        dBu = (dt[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]         # (B, D, N)
        h = dA * h + dBu
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
    y = torch.stack(ys, dim=1) if ys else u.new_zeros(batch, 0, d_inner)
    if D is not None:
        y = y + u * D.to(f64)
    if z is not None:
        y = y * F.silu(z.to(f64))
    return (y, h) if return_final_state else y
