"""PyTorch causal depthwise conv1d (CPU default): one grouped ``F.conv1d`` call.

The single-step streaming update lives in ``step.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv1d_torch(x, weight, bias=None, activation=None, initial_state=None, return_final_state=False):
    """x (B, L, D), weight (D, W), bias (D,), initial_state (B, D, W-1) -> y (B, L, D)[, state]."""
    batch, length, dim = x.shape
    width = weight.shape[1]
    xt = x.transpose(1, 2)                                             # (B, D, L)
    if initial_state is not None:
        prev = initial_state.to(x.dtype)
    else:
        prev = xt.new_zeros(batch, dim, width - 1)
    xp = torch.cat([prev, xt], dim=2)                                  # (B, D, W-1+L)
    y = F.conv1d(xp, weight.to(x.dtype).unsqueeze(1),
                 bias.to(x.dtype) if bias is not None else None, groups=dim)
    if activation == "silu":
        y = F.silu(y)
    y = y.transpose(1, 2)
    if return_final_state:
        return y, xp[:, :, xp.shape[2] - (width - 1):].contiguous()
    return y

