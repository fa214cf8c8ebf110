"""Float64 loop reference for the causal depthwise conv1d used by Mamba.

    y[b, t, d] = bias[d] + sum_{k=0}^{W-1} weight[d, k] * x[b, t - (W-1) + k, d]

with x at negative positions taken from ``initial_state`` (the last W-1 inputs
of the previous chunk, oldest first) or zero. Optional SiLU on the output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv1d_naive(x, weight, bias=None, activation=None, initial_state=None, return_final_state=False):
    f64 = torch.float64
    x, weight = x.to(f64), weight.to(f64)
    batch, length, dim = x.shape
    width = weight.shape[1]
    prev = (initial_state.to(f64).transpose(1, 2) if initial_state is not None
            else x.new_zeros(batch, width - 1, dim))                  # (B, W-1, D)
    xp = torch.cat([prev, x], dim=1)                                   # (B, W-1+L, D)
    ys = []
    for t in range(length):
        acc = (xp[:, t:t + width, :] * weight.t()[None]).sum(1)
        ys.append(acc)
    y = torch.stack(ys, 1) if ys else x.new_zeros(batch, 0, dim)
    if bias is not None:
        y = y + bias.to(f64)
    if activation == "silu":
        y = F.silu(y)
    if return_final_state:
        return y, xp[:, xp.shape[1] - (width - 1):, :].transpose(1, 2)
    return y
