"""Single-step selective-scan update for generation and streaming inference.

One position of the recurrence in ``naive.py``, applied in place to a carried
state (B, D, N). Feeding a sequence token by token through this function
matches the full-sequence scan (tests/kernels/test_step.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_state_update_torch(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """state (B,D,N) float32, updated in place; x, dt, z (B,D); A (D,N); B, C (B,N); D, dt_bias (D,).

    Returns y (B, D) in x's dtype.
    """
    f = state.dtype
    dtf = dt.to(f)
    if dt_bias is not None:
        dtf = dtf + dt_bias.to(f)
    if dt_softplus:
        dtf = F.softplus(dtf)
    xf = x.to(f)
    dA = torch.exp(dtf.unsqueeze(-1) * A.to(f))
    dBx = (dtf * xf).unsqueeze(-1) * B.to(f).unsqueeze(1)
    state.mul_(dA).add_(dBx)
    y = torch.einsum("bdn,bn->bd", state, C.to(f))
    if D is not None:
        y = y + xf * D.to(f)
    if z is not None:
        y = y * F.silu(z.to(f))
    return y.to(x.dtype)
