"""Triton causal depthwise conv1d (width 2-4) used by Mamba: forward and backward.

With xp = [initial_state ; x] along the length (W-1 + L positions, oldest first):

    y_t = act(bias + sum_{k<W} w_k xp_{t+k})           final_state = xp[L : L+W-1]

The backward is written over xp so that x and initial_state are one case:

    dxp_p = sum_{k<W} w_k dy'_{p-k}  (+ dfinal_{p-L} for p >= L),   dy' = dy * act'(pre-activation)
    dw_k  = sum_{b,t} dy'_t xp_{t+k},   dbias = sum_{b,t} dy'_t

Every kernel tiles (BL positions, BD channels); nothing but the inputs is saved for the
backward. The backward runs in two passes: ``_conv_bwd_g_kernel`` recomputes the
pre-activation once per output position, stores dy' (in x's dtype) and reduces dw and dbias
per tile into small fp32 partial buffers (summed in the launcher); ``_conv_bwd_dx_kernel``
then sums the W shifted tiles of dy'. (A single fused kernel recomputed the pre-activation at
all W shifts of every tile and ran at about 485 GB/s on an H100.)
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..utils import num_sms, triton_interpret


@triton.jit
def _load_xp(x_ptr, init_ptr, q, offs_d, md, L, D, s_xl, W: tl.constexpr, HAS_INIT: tl.constexpr):
    """xp at positions q (BL,) for channels offs_d, as fp32 (zeros outside [0, L+W-1))."""
    t = q - (W - 1)
    v = tl.load(x_ptr + t[:, None] * s_xl + offs_d[None, :],
                mask=((t >= 0) & (t < L))[:, None] & md[None, :], other=0.0).to(tl.float32)
    if HAS_INIT:
        v += tl.load(init_ptr + offs_d[None, :] * (W - 1) + q[:, None],
                     mask=((q >= 0) & (q < W - 1))[:, None] & md[None, :], other=0.0).to(tl.float32)
    return v


@triton.jit
def _pre_act(x_ptr, init_ptr, w_ptr, t, offs_d, md, bias, L, D, s_xl, W: tl.constexpr, HAS_INIT: tl.constexpr,
             BL: tl.constexpr, BD: tl.constexpr):
    """bias + sum_k w_k xp_{t+k} for output positions t (BL,)."""
    acc = tl.zeros([BL, BD], dtype=tl.float32) + bias[None, :]
    for k in tl.static_range(W):
        wk = tl.load(w_ptr + offs_d * W + k, mask=md, other=0.0).to(tl.float32)
        acc += wk[None, :] * _load_xp(x_ptr, init_ptr, t + k, offs_d, md, L, D, s_xl, W, HAS_INIT)
    return acc


@triton.jit
def _conv_fwd_kernel(
    x_ptr, w_ptr, b_ptr, init_ptr, y_ptr, L, D, s_xb, s_xl, tile0,
    W: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, SILU: tl.constexpr,
):
    """Output tiles tile0, tile0+1, ... of (BL positions) x (BD channels). With HAS_INIT the
    launcher passes only the first tile (the one that reaches back into the state)."""
    pid_l = tl.program_id(0).to(tl.int64) + tile0
    pid_d = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    t = pid_l * BL + tl.arange(0, BL)
    offs_d = pid_d * BD + tl.arange(0, BD)
    md = offs_d < D
    bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    x_ptr += pid_b * s_xb
    init_ptr += pid_b * D * (W - 1)
    acc = _pre_act(x_ptr, init_ptr, w_ptr, t, offs_d, md, bias, L, D, s_xl, W, HAS_INIT, BL, BD)
    if SILU:
        acc = acc * (1.0 / (1.0 + tl.exp(-acc)))
    tl.store(y_ptr + pid_b * L * D + t[:, None] * D + offs_d[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(t < L)[:, None] & md[None, :])


@triton.jit
def _conv_bwd_g_kernel(
    x_ptr, w_ptr, b_ptr, init_ptr, dy_ptr, g_ptr, dw_ptr, db_ptr,
    L, D, s_xb, s_xl, TILES,
    W: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, SILU: tl.constexpr,
):
    """Backward, pass 1, over a strip of TILES tiles of (BL output positions) x (BD channels):
    dy' = dy * act'(pre), stored once for pass 2. dw and dbias accumulate elementwise in registers
    over the whole strip and are reduced over positions once, at its end (one cross-warp
    reduction per tile and tap made this pass 2.3x slower than its memory traffic on an H100)."""
    pid_s = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    n_s = tl.num_programs(0)
    offs_d = pid_d * BD + tl.arange(0, BD)
    md = offs_d < D
    bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    w0 = tl.load(w_ptr + offs_d * W, mask=md, other=0.0).to(tl.float32)
    w1 = tl.load(w_ptr + offs_d * W + 1, mask=md, other=0.0).to(tl.float32)
    w2 = tl.zeros([BD], dtype=tl.float32)
    w3 = tl.zeros([BD], dtype=tl.float32)
    if W > 2:
        w2 = tl.load(w_ptr + offs_d * W + 2, mask=md, other=0.0).to(tl.float32)
    if W > 3:
        w3 = tl.load(w_ptr + offs_d * W + 3, mask=md, other=0.0).to(tl.float32)
    x_ptr += pid_b * s_xb
    init_ptr += pid_b * D * (W - 1)
    dy_ptr += pid_b * L * D
    g_ptr += pid_b * L * D
    acc_b = tl.zeros([BL, BD], dtype=tl.float32)
    acc0 = tl.zeros([BL, BD], dtype=tl.float32)
    acc1 = tl.zeros([BL, BD], dtype=tl.float32)
    acc2 = tl.zeros([BL, BD], dtype=tl.float32)
    acc3 = tl.zeros([BL, BD], dtype=tl.float32)
    for i in range(TILES):
        t = (pid_s * TILES + i) * BL + tl.arange(0, BL)
        mt = (t < L)[:, None] & md[None, :]
        g = tl.load(dy_ptr + t[:, None] * D + offs_d[None, :], mask=mt, other=0.0).to(tl.float32)
        # xp_{t+k}: each tap's tile is loaded once, for the pre-activation and for dw_k
        x0 = _load_xp(x_ptr, init_ptr, t, offs_d, md, L, D, s_xl, W, HAS_INIT)
        x1 = _load_xp(x_ptr, init_ptr, t + 1, offs_d, md, L, D, s_xl, W, HAS_INIT)
        x2 = tl.zeros([BL, BD], dtype=tl.float32)
        x3 = tl.zeros([BL, BD], dtype=tl.float32)
        if W > 2:
            x2 = _load_xp(x_ptr, init_ptr, t + 2, offs_d, md, L, D, s_xl, W, HAS_INIT)
        if W > 3:
            x3 = _load_xp(x_ptr, init_ptr, t + 3, offs_d, md, L, D, s_xl, W, HAS_INIT)
        if SILU:
            pre = bias[None, :] + w0[None, :] * x0 + w1[None, :] * x1 + w2[None, :] * x2 + w3[None, :] * x3
            sg = 1.0 / (1.0 + tl.exp(-pre))
            g = g * sg * (1.0 + pre * (1.0 - sg))
        tl.store(g_ptr + t[:, None] * D + offs_d[None, :], g.to(g_ptr.dtype.element_ty), mask=mt)
        acc_b += g
        acc0 += g * x0
        acc1 += g * x1
        acc2 += g * x2
        acc3 += g * x3
    part = (pid_b * n_s + pid_s) * D + offs_d
    tl.store(db_ptr + part, tl.sum(acc_b, 0), mask=md)
    tl.store(dw_ptr + part * W, tl.sum(acc0, 0), mask=md)
    tl.store(dw_ptr + part * W + 1, tl.sum(acc1, 0), mask=md)
    if W > 2:
        tl.store(dw_ptr + part * W + 2, tl.sum(acc2, 0), mask=md)
    if W > 3:
        tl.store(dw_ptr + part * W + 3, tl.sum(acc3, 0), mask=md)


@triton.jit
def _conv_bwd_dx_kernel(
    g_ptr, w_ptr, dfinal_ptr, dx_ptr, dinit_ptr, L, D, s_dxb, s_dxl,
    W: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr, HAS_INIT: tl.constexpr, HAS_DFINAL: tl.constexpr,
):
    """Backward, pass 2, on a (BL positions of xp) x (BD channels) tile: dxp_p = sum_k w_k dy'_{p-k}."""
    pid_l = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    p = pid_l * BL + tl.arange(0, BL)                  # positions in xp
    offs_d = pid_d * BD + tl.arange(0, BD)
    md = offs_d < D
    g_ptr += pid_b * L * D
    dxp = tl.zeros([BL, BD], dtype=tl.float32)
    for k in tl.static_range(W):
        t = p - k                                      # output positions that read xp_p through w_k
        g = tl.load(g_ptr + t[:, None] * D + offs_d[None, :], mask=((t >= 0) & (t < L))[:, None] & md[None, :],
                    other=0.0).to(tl.float32)
        wk = tl.load(w_ptr + offs_d * W + k, mask=md, other=0.0).to(tl.float32)
        dxp += wk[None, :] * g
    if HAS_DFINAL:
        q = p - L
        dxp += tl.load(dfinal_ptr + pid_b * D * (W - 1) + offs_d[None, :] * (W - 1) + q[:, None],
                       mask=((q >= 0) & (q < W - 1))[:, None] & md[None, :], other=0.0)
    t = p - (W - 1)
    tl.store(dx_ptr + pid_b * s_dxb + t[:, None] * s_dxl + offs_d[None, :], dxp.to(dx_ptr.dtype.element_ty),
             mask=((t >= 0) & (t < L))[:, None] & md[None, :])
    if HAS_INIT:
        tl.store(dinit_ptr + pid_b * D * (W - 1) + offs_d[None, :] * (W - 1) + p[:, None], dxp,
                 mask=(p < W - 1)[:, None] & md[None, :])


# Launch-parameter overrides for tuning runs (benchmarks/bench_kernels.py --conv-configs):
# keys BL, BD, num_warps and bwd_BL, bwd_BD, bwd_num_warps.
TUNE: dict = {}


def _blocks(length, dim, bwd=False):
    """(BL positions, BD channels, num_warps) per program."""
    def knob(key, default):
        return TUNE.get("bwd_" + key, TUNE.get(key, default)) if bwd else TUNE.get(key, default)

    # H100 sweeps (benchmarks/kernels_result.md): forward 32 x 128 tiles (1.46x faster than 64 x 64 at
    # (1, 2^20, 512)); two-pass backward 128 x 64 (3.51 ms there, against 3.98 for 64 x 64 and
    # 4.0-6.4 for 64 x 128, 32 x 128, 32 x 64)
    BD = min(knob("BD", 64 if bwd else 128), triton.next_power_of_2(max(dim, 1)))
    BL = knob("BL", 128 if triton_interpret() else (128 if bwd else 32))
    return BL, BD, knob("num_warps", 4)


def _g_blocks(batch, length, dim, device):
    """Backward pass 1: (BL positions, BD channels, num_warps) per tile, tiles per strip, strips.
    Each program walks a strip of tiles; enough strips to fill the GPU a few times over."""
    interp = triton_interpret()
    BD = min(TUNE.get("g_BD", 64), triton.next_power_of_2(max(dim, 1)))
    BL = TUNE.get("g_BL", 128 if interp else 16)
    nw = TUNE.get("g_num_warps", 4)
    n_t = max(1, triton.cdiv(length, BL))
    target = TUNE.get("g_programs", 8 * num_sms(device) if not interp else 4)
    n_strip = max(1, min(n_t, triton.cdiv(target, batch * triton.cdiv(dim, BD))))
    tiles = triton.cdiv(n_t, n_strip)
    return BL, BD, nw, tiles, triton.cdiv(n_t, tiles)


def _conv_fwd(x, w, b, init, silu):
    batch, length, dim = x.shape
    width = w.shape[1]
    BL, BD, nw = _blocks(length, dim)
    y = torch.empty(batch, length, dim, device=x.device, dtype=x.dtype)
    n_t, n_d = triton.cdiv(length, BL), triton.cdiv(dim, BD)
    # only the first tile reaches back into a carried state: it is its own launch, so the other
    # tiles run the stateless kernel (one kernel with a branch on the tile index ran a streamed
    # conv at 1.19 ms against 0.81 ms without a state: H200, (1, 2^20, 512) bf16, 2026-12-02)
    first = 1 if init is not None else 0
    args = (x, w, b if b is not None else w, init if init is not None else w, y, length, dim, x.stride(0), x.stride(1))
    meta = dict(W=width, BL=BL, BD=BD, HAS_BIAS=b is not None, SILU=silu, num_warps=nw)
    if n_t > first:
        _conv_fwd_kernel[(n_t - first, n_d, batch)](*args, first, HAS_INIT=False, **meta)
    if first and n_t > 0:
        _conv_fwd_kernel[(1, n_d, batch)](*args, 0, HAS_INIT=True, **meta)
    return y


def _conv_bwd(x, w, b, init, silu, dy, dfinal, dx_out=None):
    """dx, dw, dbias, dinit. ``dx_out``: a (B, L, D) buffer for dx with unit last stride (a slice
    of a wider gradient is fine)."""
    batch, length, dim = x.shape
    width = w.shape[1]
    BL, BD, nw = _blocks(length, dim, bwd=True)
    f32 = dict(device=x.device, dtype=torch.float32)
    dx = dx_out if dx_out is not None else torch.empty(batch, length, dim, device=x.device, dtype=x.dtype)
    assert dx.stride(-1) == 1
    dinit = torch.empty(batch, dim, width - 1, **f32) if init is not None else None
    # dy' in x's dtype (fp32 for fp32 inputs); dw and dbias are summed from it in fp32 registers
    g = torch.empty(batch, length, dim, device=x.device, dtype=x.dtype)
    gBL, gBD, g_nw, tiles, n_strip = _g_blocks(batch, length, dim, x.device)
    dw_part = torch.empty(batch, n_strip, dim, width, **f32)
    db_part = torch.empty(batch, n_strip, dim, **f32)
    if length > 0:
        _conv_bwd_g_kernel[(n_strip, triton.cdiv(dim, gBD), batch)](
            x, w, b if b is not None else w, init if init is not None else w, dy, g, dw_part, db_part,
            length, dim, x.stride(0), x.stride(1), tiles, W=width, BL=gBL, BD=gBD,
            HAS_BIAS=b is not None, HAS_INIT=init is not None, SILU=silu, num_warps=g_nw)
    else:
        dw_part.zero_(); db_part.zero_()
    _conv_bwd_dx_kernel[(triton.cdiv(length + width - 1, BL), triton.cdiv(dim, BD), batch)](
        g, w, dfinal if dfinal is not None else w, dx, dinit if dinit is not None else w, length, dim,
        dx.stride(0), dx.stride(1), W=width, BL=BL, BD=BD, HAS_INIT=init is not None, HAS_DFINAL=dfinal is not None, num_warps=nw)
    return dx, dw_part.sum((0, 1)), db_part.sum((0, 1)), dinit


class CausalConv1dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, initial_state, silu, return_final_state):
        x = x if x.stride(-1) == 1 else x.contiguous()
        w = weight.contiguous()
        init = initial_state.contiguous() if initial_state is not None else None
        y = _conv_fwd(x, w, bias, init, silu)
        ctx.save_for_backward(x, w, bias, init)
        ctx.silu = silu
        if not return_final_state:
            return y
        width = w.shape[1]
        prev = init.to(x.dtype) if init is not None else x.new_zeros(x.shape[0], x.shape[2], width - 1)
        xp_tail = torch.cat([prev, x[:, max(0, x.shape[1] - (width - 1)):].transpose(1, 2)], dim=2)
        return y, xp_tail[:, :, xp_tail.shape[2] - (width - 1):].contiguous()

    @staticmethod
    def backward(ctx, dy, dfinal=None):
        x, w, bias, init = ctx.saved_tensors
        dy = dy.contiguous() if dy is not None else torch.zeros_like(x)
        dfinal = dfinal.float().contiguous() if dfinal is not None else None
        dx, dw, db, dinit = _conv_bwd(x, w, bias, init, ctx.silu, dy, dfinal)
        return (dx, dw.to(w.dtype), db.to(bias.dtype) if bias is not None else None,
                dinit.to(init.dtype) if init is not None else None, None, None)


def causal_conv1d_triton(x, weight, bias=None, activation=None, initial_state=None, return_final_state=False):
    """Triton causal depthwise conv1d; same contract as :func:`mamba_genome.kernels.causal_conv1d`.

    Args:
        x: (B, L, D); weight: (D, W), W in 2..4; bias: (D,);
        activation: None or "silu"; initial_state: (B, D, W-1), oldest first.

    Returns:
        y (B, L, D) in x's dtype, or (y, final_state (B, D, W-1) in x's dtype).

    Example:
        >>> y = causal_conv1d_triton(x, w, b, activation="silu")
    """
    if x.device.type != "cuda" and not triton_interpret():
        raise ValueError("causal_conv1d_triton needs CUDA tensors (or TRITON_INTERPRET=1)")
    return CausalConv1dFn.apply(x, weight, bias, initial_state, activation == "silu", bool(return_final_state))
