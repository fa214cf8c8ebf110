"""The Mamba mixer's inner path as a plain composition of the public ops (the reference and the
path for the ``reference`` and ``torch`` backends): conv1d + SiLU, x_proj, selective scan with
dt_proj inside, out_proj. Autograd differentiates it op by op."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..causal_conv1d import causal_conv1d
from ..selective_scan import selective_scan


def mamba_inner_composed(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
                         out_proj_weight, out_proj_bias=None, backend=None):
    """Same contract as :func:`mamba_genome.kernels.mamba_inner`, one op at a time."""
    d_inner, d_state, dt_rank = A.shape[0], A.shape[1], dt_proj_weight.shape[1]
    x, z = xz.split(d_inner, dim=-1)
    u = causal_conv1d(x, conv_weight, conv_bias, activation="silu", backend=backend)
    dt, B, C = torch.split(F.linear(u, x_proj_weight), [dt_rank, d_state, d_state], dim=-1)
    y = selective_scan(u, dt, A, B, C, D=D, z=z, delta_bias=dt_proj_bias, delta_softplus=True,
                       backend=backend, delta_proj_weight=dt_proj_weight)
    # under autocast the GEMM casts y itself; outside it, y meets the weight's dtype
    if not torch.is_autocast_enabled(y.device.type) and y.dtype != out_proj_weight.dtype:
        y = y.to(out_proj_weight.dtype)
    return F.linear(y, out_proj_weight, out_proj_bias)
