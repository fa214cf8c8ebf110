"""Single-step causal conv1d update for generation and streaming inference.

One output position of the convolution in ``naive.py``, with the last W-1 inputs
carried in ``conv_state`` (B, D, W-1), oldest first. Each step reads the window
[conv_state ; x], writes y, then shifts the state left and appends x, in place.
Feeding a sequence token by token through this function matches the full-sequence
conv and its final state (tests/kernels/test_conv_step.py).

``causal_conv1d_update_torch`` is plain PyTorch; ``causal_conv1d_update_triton`` does
the same step in one Triton launch (grid: channel blocks x batch), for decoding on CUDA.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def causal_conv1d_update_torch(x, conv_state, weight, bias=None, activation=None):
    """One step: x (B, D), conv_state (B, D, W-1) updated in place -> y (B, D) in x's dtype.

    Arithmetic is in conv_state's dtype.
    """
    window = torch.cat([conv_state, x.unsqueeze(-1).to(conv_state.dtype)], dim=-1)  # (B, D, W)
    y = (window * weight.to(window.dtype)).sum(-1)
    if bias is not None:
        y = y + bias.to(y.dtype)
    if activation == "silu":
        y = F.silu(y)
    conv_state.copy_(window[:, :, 1:])
    return y.to(x.dtype)


# ----------------------------------------------------------------------------- Triton step
@functools.lru_cache(maxsize=None)
def _conv_update_kernel():
    """Build the Triton kernel on first use.

    ``triton.jit`` decides at decoration time whether to compile or interpret
    (TRITON_INTERPRET); building lazily lets a test session set TRITON_INTERPRET
    after importing the package.
    """
    import triton
    import triton.language as tl

    @triton.jit
    def _conv_update(
        x_ptr, state_ptr, w_ptr, bias_ptr, y_ptr,
        Dn, s_xb, s_xd, s_sb, s_sd, s_sw, s_wd, s_ww, s_bd,
        W: tl.constexpr, WP: tl.constexpr, BD: tl.constexpr,
        HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
    ):
        # One step for BD channels of one batch row. The window is a (BD, WP) tile:
        # columns 0..W-2 from the state, column W-1 is x, columns >= W are padding.
        # Every load happens before the state store, and each program owns its
        # (row, channels) slice of the state, so the in-place shift has no races.
        pid_d = tl.program_id(0).to(tl.int64)
        pid_b = tl.program_id(1).to(tl.int64)
        offs_d = pid_d * BD + tl.arange(0, BD)
        cols = tl.arange(0, WP)
        md = offs_d < Dn
        sp = state_ptr + pid_b * s_sb + offs_d[:, None] * s_sd
        # x rounded to the state's dtype, as it will be stored, so y agrees with the state
        x = tl.load(x_ptr + pid_b * s_xb + offs_d * s_xd, mask=md, other=0.0)
        x = x.to(state_ptr.dtype.element_ty).to(tl.float32)
        # window[:, c] = state[:, c] (c < W-1) or x (c == W-1)
        m_st = md[:, None] & (cols[None, :] < W - 1)
        win = tl.load(sp + cols[None, :] * s_sw, mask=m_st, other=0.0).to(tl.float32)
        win = tl.where(cols[None, :] == W - 1, x[:, None], win)
        # shifted window: new_state[:, c] = window[:, c + 1]
        m_sh = md[:, None] & (cols[None, :] + 1 < W - 1)
        sh = tl.load(sp + (cols[None, :] + 1) * s_sw, mask=m_sh, other=0.0).to(tl.float32)
        sh = tl.where(cols[None, :] + 1 == W - 1, x[:, None], sh)
        m_w = md[:, None] & (cols[None, :] < W)
        w = tl.load(w_ptr + offs_d[:, None] * s_wd + cols[None, :] * s_ww, mask=m_w, other=0.0).to(tl.float32)
        y = tl.sum(win * w, 1)
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_d * s_bd, mask=md, other=0.0).to(tl.float32)
        if SILU:
            y = y * tl.sigmoid(y)
        tl.store(sp + cols[None, :] * s_sw, sh.to(state_ptr.dtype.element_ty), mask=m_st)
        tl.store(y_ptr + pid_b * Dn + offs_d, y.to(y_ptr.dtype.element_ty), mask=md)

    return _conv_update


def causal_conv1d_update_triton(x, conv_state, weight, bias=None, activation=None):
    """Triton version of :func:`causal_conv1d_update_torch` (same arguments, same result).

    x (B, D) fp32/bf16/fp16, any strides; conv_state (B, D, W-1) oldest first, any
    strides and float dtype, updated in place; weight (D, W), W in 2..4; bias (D,);
    activation None or "silu". Arithmetic in fp32; returns y (B, D) contiguous, x's dtype.
    Shapes are checked by the public ``causal_conv1d_update``.
    """
    import triton

    batch, dim = x.shape
    width = weight.shape[1]
    y = torch.empty(batch, dim, device=x.device, dtype=x.dtype)
    if batch == 0 or dim == 0:
        return y
    BD = min(triton.next_power_of_2(dim), 256)
    b = bias if bias is not None else weight[:, 0]                   # dummy pointer when absent
    _conv_update_kernel()[(triton.cdiv(dim, BD), batch)](
        x, conv_state, weight, b, y,
        dim, x.stride(0), x.stride(1),
        conv_state.stride(0), conv_state.stride(1), conv_state.stride(2),
        weight.stride(0), weight.stride(1), b.stride(0),
        W=width, WP=triton.next_power_of_2(width), BD=BD,
        HAS_BIAS=bias is not None, SILU=activation == "silu", num_warps=4)
    return y
