"""Triton kernels for the Mamba-1 selective scan (Gu & Dao, 2023): forward and backward.

Per batch element, channel d and state index n (see README.md in this folder):

    dt_t = softplus(delta_t + delta_bias)       h_t = exp(dt_t A) * h_{t-1} + dt_t u_t B_t
    y_t  = (sum_n h_t C_t + D u_t) * silu(z_t)

The length is cut three ways:

    tile     T steps     the backward keeps the T states h_t of one tile in a small scratch
                         and walks back over them
    segment  S = T*M     the state at every segment start is saved (fp32) for the backward
    chunk    K = S*NSEG  one program walks one chunk; chunks run in parallel

Forward: (1) ``_fwd_chunk_state_kernel`` finds each chunk's end state from a zero start
(a weighted sum, no scan); (2) ``_chunk_carry_kernel`` chains the chunks sequentially,
elementwise over (d, n); (3) ``_fwd_chunk_scan_kernel`` rescans each chunk from its true
start state, writes y and saves the segment-start states.

Backward runs the same three steps in reverse time on dh (the gradient w.r.t. h):
(1) ``_bwd_chunk_state_kernel`` gives each chunk's local gradient w.r.t. the state before it,
(2) the carry kernel chains them back to front, (3) ``_bwd_chunk_kernel`` walks each chunk's
segments back to front: it recomputes the tile-start states of the segment from the saved
segment state (into a small per-program scratch), then per tile rescans h forward and dh
backward and forms every gradient. (B, L, D, N) never exists in memory.

Every per-step loop is software-pipelined by hand: the loads of the next step (t+1, or t-1
walking back) are issued before the current step's arithmetic, so their latency overlaps it.
"""
from __future__ import annotations

import functools
import json
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ..utils import num_sms, triton_interpret

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)


# ----------------------------------------------------------------------------- helpers (jit)
# Row t of the inputs, used by every kernel:
#   u = u[t, d];  v = delta[t, d] + bias[d];  dt = softplus(v) (or v), 0 off the mask;  B = B[t, n]
# They are written inline rather than as nested @triton.jit functions: the CPU interpreter (CI)
# pays a large fixed cost on every nested call.
# The per-step loops issue about one instruction per cycle, so the per-channel math is kept
# short (forward state pass 151 -> 131 SASS instructions per step, scan 233 -> 212):
#   exp(x) = exp2(x * LOG2E)       one MUFU op, without the denormal fix-up of tl.exp
#   softplus(v) = max(v, 0) + log1p(x),  x = exp(-|v|) in (0, 1],  log1p(x) = x (1 + x P(x))
# P is a degree-7 least-squares fit on Chebyshev nodes of [0, 1]: relative error 2e-7 in fp32,
# also for v << 0, where the library's log(1 + exp(v)) loses its digits.
SP1 = tl.constexpr(-0.49999502301216125)
SP2 = tl.constexpr(0.33319273591041565)
SP3 = tl.constexpr(-0.24844388663768768)
SP4 = tl.constexpr(0.1911148577928543)
SP5 = tl.constexpr(-0.13674858212471008)
SP6 = tl.constexpr(0.07836245745420456)
SP7 = tl.constexpr(-0.02958887256681919)
SP8 = tl.constexpr(0.005253523122519255)


# ----------------------------------------------------------------------------- kernels
@triton.jit
def _time_index(t, I32: tl.constexpr):
    """t as int32 (I32: the launcher has checked that every in-row offset fits) or as it is (int64)."""
    if I32:
        t = t.to(tl.int32)
    return t


@triton.jit
def _fwd_chunk_state_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, hloc_ptr, dtsum_ptr,
    L, D, N, NC, K, s_ub, s_ul, s_db, s_dl, s_bb, s_bl,
    BD: tl.constexpr, NP: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    DFIRST: tl.constexpr, I32: tl.constexpr = False,
):
    """End state of chunk c (c < NC-1) started from zero, and sum_t dt_t over the chunk."""
    pid_c = tl.program_id(1 if DFIRST else 0).to(tl.int64)
    pid_d = tl.program_id(0 if DFIRST else 1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BD + tl.arange(0, BD)
    offs_n = tl.arange(0, NP)
    md, mn = offs_d < D, offs_n < N
    mdn = md[:, None] & mn[None, :]
    A2 = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mdn, other=0.0) * LOG2E
    bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    u_ptr += pid_b * s_ub
    delta_ptr += pid_b * s_db
    B_ptr += pid_b * s_bb
    h = tl.zeros([BD, NP], dtype=tl.float32)
    tot = tl.zeros([BD], dtype=tl.float32)
    t_lo = _time_index(pid_c * K, I32)
    t_hi = tl.minimum(t_lo + K, L)
    # software pipelining: the loads of step t+1 are issued before step t's arithmetic
    u_n = tl.load(u_ptr + t_lo * s_ul + offs_d, mask=md & ((offs_d * 0 + t_lo) < t_hi), other=0.0).to(tl.float32)
    v_n = tl.load(delta_ptr + t_lo * s_dl + offs_d, mask=md & ((offs_d * 0 + t_lo) < t_hi), other=0.0).to(tl.float32)
    B_n = tl.load(B_ptr + t_lo * s_bl + offs_n, mask=mn & ((offs_n * 0 + t_lo) < t_hi), other=0.0).to(tl.float32)
    for t in range(t_lo, t_hi):
        u = u_n
        v = v_n + bias
        Bt = B_n
        more_d = (offs_d * 0 + t + 1) < t_hi
        more_n = (offs_n * 0 + t + 1) < t_hi
        u_n = tl.load(u_ptr + (t + 1) * s_ul + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
        v_n = tl.load(delta_ptr + (t + 1) * s_dl + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
        B_n = tl.load(B_ptr + (t + 1) * s_bl + offs_n, mask=mn & more_n, other=0.0).to(tl.float32)
        if SOFTPLUS:
            x = tl.exp2(-tl.abs(v) * LOG2E)
            p = SP1 + x * (SP2 + x * (SP3 + x * (SP4 + x * (SP5 + x * (SP6 + x * (SP7 + x * SP8))))))
            dt = tl.where(md, tl.maximum(v, 0.0) + x * (1.0 + x * p), 0.0)
        else:
            dt = v
        h = tl.exp2(A2 * dt[:, None]) * h + (dt * u)[:, None] * Bt[None, :]
        tot += dt
    row = (pid_b * NC + pid_c) * D + offs_d
    tl.store(hloc_ptr + row[:, None] * N + offs_n[None, :], h, mask=mdn)
    tl.store(dtsum_ptr + row, tot, mask=md)


@triton.jit
def _lin_combine(a1, b1, a2, b2):
    """Compose h -> a1 h + b1, then h -> a2 h + b2."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _chunk_carry_kernel(
    loc_ptr, out_ptr, dtsum_ptr, A_ptr, h0_ptr, D, N, NC,
    BLOCK: tl.constexpr, K: tl.constexpr, HAS_H0: tl.constexpr, REVERSE: tl.constexpr,
):
    """Chain chunk states, elementwise over (d, n).

    Forward:  out[0] = h0,                out[c+1] = exp(A dtsum_c) out[c] + loc[c]
    Reverse:  out[NC-1] = h0 (dfinal),    out[c-1] = exp(A dtsum_c) out[c] + loc[c]

    K chunks at a time: one (K, BLOCK) load, a prefix scan of the affine maps over the K rows,
    then one multiply-add with the incoming state. The dependency chain is NC / K steps long
    instead of NC, which is what bounds this kernel (one batch row at 2^20 has ~500 chunks).
    """
    pid = tl.program_id(0).to(tl.int64)
    pid_b = tl.program_id(1).to(tl.int64)
    j = pid * BLOCK + tl.arange(0, BLOCK)
    m = j < D * N
    A2 = tl.load(A_ptr + j, mask=m, other=0.0) * LOG2E
    d = j // N
    h = tl.zeros([BLOCK], dtype=tl.float32)
    if HAS_H0:
        h = tl.load(h0_ptr + pid_b * D * N + j, mask=m, other=0.0).to(tl.float32)
    first = 0
    if REVERSE:
        first = NC - 1
    tl.store(out_ptr + (pid_b * NC + first) * D * N + j, h, mask=m)
    rows = tl.arange(0, K)
    for base in range(0, NC - 1, K):
        i = base + rows                                   # step i moves chunk src's state to dst
        if REVERSE:
            src = NC - 1 - i
            dst = src - 1
        else:
            src = i
            dst = i + 1
        mk = (i < NC - 1)[:, None] & m[None, :]
        loc = tl.load(loc_ptr + (pid_b * NC + src)[:, None] * D * N + j[None, :], mask=mk, other=0.0)
        dts = tl.load(dtsum_ptr + (pid_b * NC + src)[:, None] * D + d[None, :], mask=mk, other=0.0)
        a = tl.where(mk, tl.exp2(A2[None, :] * dts), 1.0)  # rows past the end: identity maps
        P, S = tl.associative_scan((a, loc), 0, _lin_combine)
        hk = P * h[None, :] + S
        tl.store(out_ptr + (pid_b * NC + dst)[:, None] * D * N + j[None, :], hk, mask=mk)
        h = tl.sum(tl.where((rows == K - 1)[:, None], hk, 0.0), 0)


@triton.jit
def _tanh_approx(x):
    """tanh.approx.f32: one MUFU op, abs error ~5e-4 (GPU only: inline PTX)."""
    return tl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def _fwd_row(u_ptr, delta_ptr, z_ptr, B_ptr, C_ptr, t, t_hi, offs_d, offs_n, md, mn,
             s_ul, s_dl, s_zl, s_bl, s_cl, HAS_Z: tl.constexpr):
    """Row t of u, delta, z (BD,) and B, C (NP,) as fp32; zeros where t >= t_hi."""
    ok_d = md & ((offs_d * 0 + t) < t_hi)
    ok_n = mn & ((offs_n * 0 + t) < t_hi)
    u = tl.load(u_ptr + t * s_ul + offs_d, mask=ok_d, other=0.0).to(tl.float32)
    v = tl.load(delta_ptr + t * s_dl + offs_d, mask=ok_d, other=0.0).to(tl.float32)
    z = tl.zeros([offs_d.shape[0]], dtype=tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + t * s_zl + offs_d, mask=ok_d, other=0.0).to(tl.float32)
    Bt = tl.load(B_ptr + t * s_bl + offs_n, mask=ok_n, other=0.0).to(tl.float32)
    Ct = tl.load(C_ptr + t * s_cl + offs_n, mask=ok_n, other=0.0).to(tl.float32)
    return u, v, z, Bt, Ct


@triton.jit
def _fwd_channel_math(u, v, z, Dv, md, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                      TANH: tl.constexpr):
    """Per-channel terms of one step: dt, dt * u, the gate silu(z) (1 without z) and D u (0 without D)."""
    if SOFTPLUS:
        x = tl.exp2(-tl.abs(v) * LOG2E)
        p = SP1 + x * (SP2 + x * (SP3 + x * (SP4 + x * (SP5 + x * (SP6 + x * (SP7 + x * SP8))))))
        dt = tl.where(md, tl.maximum(v, 0.0) + x * (1.0 + x * p), 0.0)
    else:
        dt = v
    gate = tl.full(u.shape, 1.0, tl.float32)
    if HAS_Z:
        if TANH:
            gate = z * (0.5 + 0.5 * _tanh_approx(0.5 * z))
        else:
            gate = z * (1.0 / (1.0 + tl.exp2(-z * LOG2E)))
    du = tl.zeros(u.shape, dtype=tl.float32)
    if HAS_D:
        du = Dv * u
    return dt, dt * u, gate, du


@triton.jit
def _fwd_segment_pipelined(h, u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, y_ptr, A2, bias, Dv, offs_d, offs_n, md, mn,
                           t0, t_hi, s_ul, s_dl, s_bl, s_cl, s_zl, D,
                           BD: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
                           TANH: tl.constexpr):
    """Steps t0 .. t_hi-1 of the forward scan (the PIPE variant of _fwd_chunk_scan_kernel): rows are
    loaded two steps ahead and the per-channel math runs one step ahead of the state update."""
    u, v, z, B_c, C_c = _fwd_row(u_ptr, delta_ptr, z_ptr, B_ptr, C_ptr, t0, t_hi, offs_d, offs_n, md, mn,
                                 s_ul, s_dl, s_zl, s_bl, s_cl, HAS_Z)
    dt_c, dtu_c, gate_c, du_c = _fwd_channel_math(u, v + bias, z, Dv, md, SOFTPLUS, HAS_D, HAS_Z, TANH)
    u_n, v_n, z_n, B_n, C_n = _fwd_row(u_ptr, delta_ptr, z_ptr, B_ptr, C_ptr, t0 + 1, t_hi, offs_d, offs_n, md, mn,
                                       s_ul, s_dl, s_zl, s_bl, s_cl, HAS_Z)
    for t in range(t0, t_hi):
        # step t+1's per-channel terms (independent of h), then the loads of row t+2
        dt_n, dtu_n, gate_n, du_n = _fwd_channel_math(u_n, v_n + bias, z_n, Dv, md, SOFTPLUS, HAS_D, HAS_Z, TANH)
        B_nx = B_n
        C_nx = C_n
        u_n, v_n, z_n, B_n, C_n = _fwd_row(u_ptr, delta_ptr, z_ptr, B_ptr, C_ptr, t + 2, t_hi, offs_d, offs_n, md,
                                           mn, s_ul, s_dl, s_zl, s_bl, s_cl, HAS_Z)
        h = tl.exp2(A2 * dt_c[:, None]) * h + dtu_c[:, None] * B_c[None, :]
        y = (tl.sum(h * C_c[None, :], 1) + du_c) * gate_c
        tl.store(y_ptr + t * D + offs_d, y.to(y_ptr.dtype.element_ty), mask=md)
        dt_c, dtu_c, gate_c, du_c, B_c, C_c = dt_n, dtu_n, gate_n, du_n, B_nx, C_nx
    return h


@triton.jit
def _fwd_chunk_scan_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, y_ptr,
    hc_ptr, hs_ptr, final_ptr,
    L, D, N, NC, NS, S, NSEG,
    s_ub, s_ul, s_db, s_dl, s_bb, s_bl, s_cb, s_cl, s_zb, s_zl,
    BD: tl.constexpr, NP: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    STORE_FINAL: tl.constexpr, STORE_HS: tl.constexpr,
    DFIRST: tl.constexpr, PIPE: tl.constexpr = False, TANH: tl.constexpr = False, I32: tl.constexpr = False,
):
    """Scan chunk c (NSEG segments of S steps) from its start state hc[b, c]; write y and
    the state at every segment start into hs (with ``STORE_HS``: only the backward reads it).

    Tuning variants (``TUNE`` keys fwd_pipe, fwd_tanh, fwd_i32; off by default, except I32 in the
    inference forward on a GPU, see ``_config``):
    PIPE  the per-channel math of step t+1 (softplus, dt u, the gate silu(z), D u) is done in
          step t, from rows loaded two steps ahead, so that within one step it is independent of
          the state chain and the compiler can interleave it with the (BD, NP) update.
    TANH  the gate's sigmoid(z) = 0.5 + 0.5 tanh(z / 2), one MUFU op (tanh.approx, abs error
          ~5e-4) instead of exp2 + a full-precision division; only for bf16 / fp16 y (the
          launcher checks), where it is below y's rounding. GPU only (inline PTX).
    I32   time offsets in int32 (the launcher checks L * stride < 2^31): fewer 64-bit address ops."""
    pid_c = tl.program_id(1 if DFIRST else 0).to(tl.int64)
    pid_d = tl.program_id(0 if DFIRST else 1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BD + tl.arange(0, BD)
    offs_n = tl.arange(0, NP)
    md, mn = offs_d < D, offs_n < N
    mdn = md[:, None] & mn[None, :]
    dn = offs_d[:, None] * N + offs_n[None, :]
    A2 = tl.load(A_ptr + dn, mask=mdn, other=0.0) * LOG2E
    bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    Dv = tl.zeros([BD], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    u_ptr += pid_b * s_ub
    delta_ptr += pid_b * s_db
    B_ptr += pid_b * s_bb
    C_ptr += pid_b * s_cb
    z_ptr += pid_b * s_zb
    y_ptr += pid_b * L * D
    h = tl.load(hc_ptr + (pid_b * NC + pid_c) * D * N + dn, mask=mdn, other=0.0)
    for sg in range(NSEG):
        seg = pid_c * NSEG + sg
        t_seg = seg * S
        if STORE_HS and t_seg < L:
            tl.store(hs_ptr + (pid_b * NS + seg) * D * N + dn, h, mask=mdn)
        t0 = _time_index(t_seg, I32)
        t_hi = tl.minimum(t0 + S, L)
        ok_d = (offs_d * 0 + t0) < t_hi
        ok_n = (offs_n * 0 + t0) < t_hi
        if PIPE:
            h = _fwd_segment_pipelined(
                h, u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, y_ptr, A2, bias, Dv, offs_d, offs_n, md, mn, t0, t_hi,
                s_ul, s_dl, s_bl, s_cl, s_zl, D, BD, SOFTPLUS, HAS_D, HAS_Z, TANH)
        else:
            u_n = tl.load(u_ptr + t0 * s_ul + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
            v_n = tl.load(delta_ptr + t0 * s_dl + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
            z_n = tl.zeros([BD], dtype=tl.float32)
            if HAS_Z:
                z_n = tl.load(z_ptr + t0 * s_zl + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
            B_n = tl.load(B_ptr + t0 * s_bl + offs_n, mask=mn & ok_n, other=0.0).to(tl.float32)
            C_n = tl.load(C_ptr + t0 * s_cl + offs_n, mask=mn & ok_n, other=0.0).to(tl.float32)
            for t in range(t0, t_hi):
                u = u_n
                v = v_n + bias
                zt = z_n
                Bt = B_n
                Ct = C_n
                more_d = (offs_d * 0 + t + 1) < t_hi
                more_n = (offs_n * 0 + t + 1) < t_hi
                u_n = tl.load(u_ptr + (t + 1) * s_ul + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
                v_n = tl.load(delta_ptr + (t + 1) * s_dl + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
                if HAS_Z:
                    z_n = tl.load(z_ptr + (t + 1) * s_zl + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
                B_n = tl.load(B_ptr + (t + 1) * s_bl + offs_n, mask=mn & more_n, other=0.0).to(tl.float32)
                C_n = tl.load(C_ptr + (t + 1) * s_cl + offs_n, mask=mn & more_n, other=0.0).to(tl.float32)
                if SOFTPLUS:
                    x = tl.exp2(-tl.abs(v) * LOG2E)
                    p = SP1 + x * (SP2 + x * (SP3 + x * (SP4 + x * (SP5 + x * (SP6 + x * (SP7 + x * SP8))))))
                    dt = tl.where(md, tl.maximum(v, 0.0) + x * (1.0 + x * p), 0.0)
                else:
                    dt = v
                h = tl.exp2(A2 * dt[:, None]) * h + (dt * u)[:, None] * Bt[None, :]
                y = tl.sum(h * Ct[None, :], 1)
                if HAS_D:
                    y += Dv * u
                if HAS_Z:
                    if TANH:
                        y *= zt * (0.5 + 0.5 * _tanh_approx(0.5 * zt))
                    else:
                        y *= zt * (1.0 / (1.0 + tl.exp2(-zt * LOG2E)))
                tl.store(y_ptr + t * D + offs_d, y.to(y_ptr.dtype.element_ty), mask=md)
    if STORE_FINAL:
        if pid_c == NC - 1:
            tl.store(final_ptr + pid_b * D * N + dn, h, mask=mdn)


@triton.jit
def _bwd_chunk_state_kernel(
    delta_ptr, bias_ptr, A_ptr, C_ptr, z_ptr, dy_ptr, gloc_ptr, dtsum_ptr,
    L, D, N, NC, K, s_db, s_dl, s_cb, s_cl, s_zb, s_zl,
    BD: tl.constexpr, NP: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_Z: tl.constexpr,
    DFIRST: tl.constexpr, I32: tl.constexpr = False,
):
    """Chunk c >= 1, with no gradient coming from later chunks: the gradient w.r.t. the state
    just before the chunk (g <- exp(dt_t A) (g + C_t dy'_t), walking back), and sum_t dt_t."""
    pid_c = tl.program_id(1 if DFIRST else 0).to(tl.int64) + 1
    pid_d = tl.program_id(0 if DFIRST else 1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BD + tl.arange(0, BD)
    offs_n = tl.arange(0, NP)
    md, mn = offs_d < D, offs_n < N
    mdn = md[:, None] & mn[None, :]
    A2 = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mdn, other=0.0) * LOG2E
    bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    delta_ptr += pid_b * s_db
    C_ptr += pid_b * s_cb
    z_ptr += pid_b * s_zb
    dy_ptr += pid_b * L * D
    g = tl.zeros([BD, NP], dtype=tl.float32)
    tot = tl.zeros([BD], dtype=tl.float32)
    t_lo = _time_index(pid_c * K, I32)
    t_hi = tl.minimum(t_lo + K, L)
    ok_d = (offs_d * 0 + t_lo) < t_hi
    ok_n = (offs_n * 0 + t_lo) < t_hi
    v_n = tl.load(delta_ptr + (t_hi - 1) * s_dl + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
    dy_n = tl.load(dy_ptr + (t_hi - 1) * D + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
    z_n = tl.zeros([BD], dtype=tl.float32)
    if HAS_Z:
        z_n = tl.load(z_ptr + (t_hi - 1) * s_zl + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
    C_n = tl.load(C_ptr + (t_hi - 1) * s_cl + offs_n, mask=mn & ok_n, other=0.0).to(tl.float32)
    for i in range(t_hi - t_lo):
        t = t_hi - 1 - i
        v = v_n + bias
        dyp = dy_n
        zt = z_n
        Ct = C_n
        more_d = (offs_d * 0 + t - 1) >= t_lo
        more_n = (offs_n * 0 + t - 1) >= t_lo
        v_n = tl.load(delta_ptr + (t - 1) * s_dl + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
        dy_n = tl.load(dy_ptr + (t - 1) * D + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
        if HAS_Z:
            z_n = tl.load(z_ptr + (t - 1) * s_zl + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
        C_n = tl.load(C_ptr + (t - 1) * s_cl + offs_n, mask=mn & more_n, other=0.0).to(tl.float32)
        if SOFTPLUS:
            x = tl.exp2(-tl.abs(v) * LOG2E)
            p = SP1 + x * (SP2 + x * (SP3 + x * (SP4 + x * (SP5 + x * (SP6 + x * (SP7 + x * SP8))))))
            dt = tl.where(md, tl.maximum(v, 0.0) + x * (1.0 + x * p), 0.0)
        else:
            dt = v
        if HAS_Z:
            dyp *= zt * (1.0 / (1.0 + tl.exp2(-zt * LOG2E)))
        g = tl.exp2(A2 * dt[:, None]) * (g + dyp[:, None] * Ct[None, :])
        tot += dt
    row = (pid_b * NC + pid_c) * D + offs_d
    tl.store(gloc_ptr + row[:, None] * N + offs_n[None, :], g, mask=mdn)
    tl.store(dtsum_ptr + row, tot, mask=md)


@triton.jit
def _bwd_chunk_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dy_ptr,
    hs_ptr, gc_ptr, scr_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr, y_ptr,
    L, D, N, NC, NS, NSEG,
    s_ub, s_ul, s_db, s_dl, s_bb, s_bl, s_cb, s_cl, s_zb, s_zl, s_dzb, s_dzl, s_yb, s_yl,
    T: tl.constexpr, M: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    STORE_DH0: tl.constexpr, RELAXED: tl.constexpr, STORE_Y: tl.constexpr,
    DFIRST: tl.constexpr, I32: tl.constexpr = False,
):
    """All gradients for chunk c, given gc[b, c] = dLoss/dh at the chunk's last step from later steps.

    Per segment (back to front): from the saved segment state, store the start state of each of
    its M tiles in scratch; per tile (back to front): store its T states h_t in scratch, then walk
    back through it with dh_t = C_t dy'_t + g, g <- exp(dt_t A) dh_t. With STORE_Y the forward's
    output y_t is written as well (the walk-back has h_t in hand), so a caller need not keep y."""
    # DFIRST: channel blocks vary fastest in the launch order, so the programs resident together walk
    # the same rows of B, C (shared by all channels) and whole rows of u, delta, dy, z
    pid_c = tl.program_id(1 if DFIRST else 0).to(tl.int64)
    pid_d = tl.program_id(0 if DFIRST else 1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    n_d = tl.num_programs(0 if DFIRST else 1)
    offs_d = pid_d * BD + tl.arange(0, BD)
    offs_n = tl.arange(0, NP)
    md, mn = offs_d < D, offs_n < N
    mdn = md[:, None] & mn[None, :]
    dn = offs_d[:, None] * N + offs_n[None, :]
    A2 = tl.load(A_ptr + dn, mask=mdn, other=0.0) * LOG2E
    bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    Dv = tl.zeros([BD], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    u_ptr += pid_b * s_ub
    delta_ptr += pid_b * s_db
    B_ptr += pid_b * s_bb
    C_ptr += pid_b * s_cb
    z_ptr += pid_b * s_zb
    dy_ptr += pid_b * L * D
    du_ptr += pid_b * L * D
    ddelta_ptr += pid_b * L * D
    dz_ptr += pid_b * s_dzb
    y_ptr += pid_b * s_yb
    dB_ptr += pid_b * L * N
    dC_ptr += pid_b * L * N
    local = tl.arange(0, BD)[:, None] * NP + offs_n[None, :]
    scr_tile = scr_ptr + ((pid_b * n_d + pid_d) * NC + pid_c) * ((M + T) * BD * NP)
    scr_step = scr_tile + M * BD * NP

    g = tl.load(gc_ptr + (pid_b * NC + pid_c) * D * N + dn, mask=mdn, other=0.0)
    dA_acc = tl.zeros([BD, NP], dtype=tl.float32)
    dD_acc = tl.zeros([BD], dtype=tl.float32)
    dbias_acc = tl.zeros([BD], dtype=tl.float32)
    for i in range(NSEG):
        seg = pid_c * NSEG + (NSEG - 1 - i)
        h = tl.load(hs_ptr + (pid_b * NS + seg) * D * N + dn, mask=mdn & ((dn * 0 + seg) < NS), other=0.0)
        for j in range(M):
            tl.store(scr_tile + j * BD * NP + local, h)
            t0 = _time_index((seg * M + j) * T, I32)
            t_end = tl.minimum(t0 + T, L)
            if j == M - 1:
                t_end = t0  # the last tile's end state is not needed
            ok_d = (offs_d * 0 + t0) < t_end
            ok_n = (offs_n * 0 + t0) < t_end
            u_n = tl.load(u_ptr + t0 * s_ul + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
            v_n = tl.load(delta_ptr + t0 * s_dl + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
            B_n = tl.load(B_ptr + t0 * s_bl + offs_n, mask=mn & ok_n, other=0.0).to(tl.float32)
            for t in range(t0, t_end):
                u = u_n
                v = v_n + bias
                Bt = B_n
                more_d = (offs_d * 0 + t + 1) < t_end
                more_n = (offs_n * 0 + t + 1) < t_end
                u_n = tl.load(u_ptr + (t + 1) * s_ul + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
                v_n = tl.load(delta_ptr + (t + 1) * s_dl + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
                B_n = tl.load(B_ptr + (t + 1) * s_bl + offs_n, mask=mn & more_n, other=0.0).to(tl.float32)
                if SOFTPLUS:
                    x = tl.exp2(-tl.abs(v) * LOG2E)
                    p = SP1 + x * (SP2 + x * (SP3 + x * (SP4 + x * (SP5 + x * (SP6 + x * (SP7 + x * SP8))))))
                    dt = tl.where(md, tl.maximum(v, 0.0) + x * (1.0 + x * p), 0.0)
                else:
                    dt = v
                h = tl.exp2(A2 * dt[:, None]) * h + (dt * u)[:, None] * Bt[None, :]
        for jj in range(M):
            j = M - 1 - jj
            t0 = _time_index((seg * M + j) * T, I32)
            tl.debug_barrier()
            h = tl.load(scr_tile + j * BD * NP + local)
            t_hi = tl.minimum(t0 + T, L)
            ok_d = (offs_d * 0 + t0) < t_hi
            ok_n = (offs_n * 0 + t0) < t_hi
            u_n = tl.load(u_ptr + t0 * s_ul + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
            v_n = tl.load(delta_ptr + t0 * s_dl + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
            B_n = tl.load(B_ptr + t0 * s_bl + offs_n, mask=mn & ok_n, other=0.0).to(tl.float32)
            for t in range(t0, t_hi):
                u = u_n
                v = v_n + bias
                Bt = B_n
                more_d = (offs_d * 0 + t + 1) < t_hi
                more_n = (offs_n * 0 + t + 1) < t_hi
                u_n = tl.load(u_ptr + (t + 1) * s_ul + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
                v_n = tl.load(delta_ptr + (t + 1) * s_dl + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
                B_n = tl.load(B_ptr + (t + 1) * s_bl + offs_n, mask=mn & more_n, other=0.0).to(tl.float32)
                if SOFTPLUS:
                    x = tl.exp2(-tl.abs(v) * LOG2E)
                    p = SP1 + x * (SP2 + x * (SP3 + x * (SP4 + x * (SP5 + x * (SP6 + x * (SP7 + x * SP8))))))
                    dt = tl.where(md, tl.maximum(v, 0.0) + x * (1.0 + x * p), 0.0)
                else:
                    dt = v
                h = tl.exp2(A2 * dt[:, None]) * h + (dt * u)[:, None] * Bt[None, :]
                tl.store(scr_step + (t - t0) * BD * NP + local, h)
            tl.debug_barrier()
            n_valid = t_hi - t0
            # walk back; the loads of step t-1 are issued before step t's arithmetic
            tl_ = t_hi - 1
            h_n = tl.load(scr_step + (tl_ - t0) * BD * NP + local, mask=(local * 0 + n_valid) > 0, other=0.0)
            u_n = tl.load(u_ptr + tl_ * s_ul + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
            v_n = tl.load(delta_ptr + tl_ * s_dl + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
            B_n = tl.load(B_ptr + tl_ * s_bl + offs_n, mask=mn & ok_n, other=0.0).to(tl.float32)
            C_n = tl.load(C_ptr + tl_ * s_cl + offs_n, mask=mn & ok_n, other=0.0).to(tl.float32)
            dy_n = tl.load(dy_ptr + tl_ * D + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
            z_n = tl.zeros([BD], dtype=tl.float32)
            if HAS_Z:
                z_n = tl.load(z_ptr + tl_ * s_zl + offs_d, mask=md & ok_d, other=0.0).to(tl.float32)
            for k in range(n_valid):
                t = t0 + n_valid - 1 - k
                h = h_n
                u = u_n
                v = v_n + bias
                Bt = B_n
                Ct = C_n
                dy = dy_n
                zt = z_n
                more_d = (offs_d * 0 + t - 1) >= t0
                more_n = (offs_n * 0 + t - 1) >= t0
                h_n = tl.load(scr_step + (t - 1 - t0) * BD * NP + local, mask=(local * 0 + t - 1) >= t0, other=0.0)
                u_n = tl.load(u_ptr + (t - 1) * s_ul + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
                v_n = tl.load(delta_ptr + (t - 1) * s_dl + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
                B_n = tl.load(B_ptr + (t - 1) * s_bl + offs_n, mask=mn & more_n, other=0.0).to(tl.float32)
                C_n = tl.load(C_ptr + (t - 1) * s_cl + offs_n, mask=mn & more_n, other=0.0).to(tl.float32)
                dy_n = tl.load(dy_ptr + (t - 1) * D + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
                if HAS_Z:
                    z_n = tl.load(z_ptr + (t - 1) * s_zl + offs_d, mask=md & more_d, other=0.0).to(tl.float32)
                if SOFTPLUS:
                    x = tl.exp2(-tl.abs(v) * LOG2E)
                    p = SP1 + x * (SP2 + x * (SP3 + x * (SP4 + x * (SP5 + x * (SP6 + x * (SP7 + x * SP8))))))
                    dt = tl.where(md, tl.maximum(v, 0.0) + x * (1.0 + x * p), 0.0)
                    sg = (1.0 / (1.0 + tl.exp2(-v * LOG2E)))
                else:
                    dt = v
                if HAS_Z:
                    ypre = tl.sum(h * Ct[None, :], 1)
                    if HAS_D:
                        ypre += Dv * u
                    sz = (1.0 / (1.0 + tl.exp2(-zt * LOG2E)))
                    dz = dy * ypre * sz * (1.0 + zt * (1.0 - sz))
                    tl.store(dz_ptr + t * s_dzl + offs_d, dz.to(dz_ptr.dtype.element_ty), mask=md)
                    if STORE_Y:
                        tl.store(y_ptr + t * s_yl + offs_d, (ypre * zt * sz).to(y_ptr.dtype.element_ty), mask=md)
                    dy = dy * zt * sz
                elif STORE_Y:
                    ypre = tl.sum(h * Ct[None, :], 1)
                    if HAS_D:
                        ypre += Dv * u
                    tl.store(y_ptr + t * s_yl + offs_d, ypre.to(y_ptr.dtype.element_ty), mask=md)
                dtu = dt * u
                dh = dy[:, None] * Ct[None, :] + g                              # (BD, NP)
                # dh_t * exp(dt_t A) h_{t-1}, with exp(dt_t A) h_{t-1} = h_t - dt_t u_t B_t
                dh_hprev = dh * (h - dtu[:, None] * Bt[None, :])
                # dB, dC: sums over channels, so channel blocks add with atomics. "relaxed" lowers to a
                # plain reduction; the default acq_rel fences every step (1.5x slower backward on H100).
                if RELAXED:
                    tl.atomic_add(dC_ptr + t * N + offs_n, tl.sum(h * dy[:, None], 0), mask=mn, sem="relaxed")
                    tl.atomic_add(dB_ptr + t * N + offs_n, tl.sum(dh * dtu[:, None], 0), mask=mn, sem="relaxed")
                else:
                    tl.atomic_add(dC_ptr + t * N + offs_n, tl.sum(h * dy[:, None], 0), mask=mn)
                    tl.atomic_add(dB_ptr + t * N + offs_n, tl.sum(dh * dtu[:, None], 0), mask=mn)
                dhB = tl.sum(dh * Bt[None, :], 1)
                dA_acc += dh_hprev * dt[:, None]
                ddt = u * dhB + tl.sum(dh_hprev * A2, 1) * LN2
                du = dt * dhB
                if HAS_D:
                    du += Dv * dy
                    dD_acc += dy * u
                if SOFTPLUS:
                    ddt = ddt * sg
                ddt = tl.where(md, ddt, 0.0)
                dbias_acc += ddt
                tl.store(du_ptr + t * D + offs_d, du.to(du_ptr.dtype.element_ty), mask=md)
                tl.store(ddelta_ptr + t * D + offs_d, ddt.to(ddelta_ptr.dtype.element_ty), mask=md)
                g = tl.exp2(A2 * dt[:, None]) * dh
    row = (pid_b * NC + pid_c) * D + offs_d
    tl.store(dA_ptr + row[:, None] * N + offs_n[None, :], dA_acc, mask=mdn)
    tl.store(dD_ptr + row, dD_acc, mask=md)
    tl.store(dbias_ptr + row, dbias_acc, mask=md)
    if STORE_DH0:
        if pid_c == 0:
            tl.store(dh0_ptr + pid_b * D * N + dn, g, mask=mdn)


# ----------------------------------------------------------------------------- launchers
def _bld(t):
    """(B, L, X) tensor with unit stride on the last axis (a slice of a projection is fine)."""
    return t if t.stride(-1) == 1 else t.contiguous()


# Launch-parameter overrides, for tuning runs (benchmarks/bench_kernels.py): keys of _config.
# $MAMBA_GENOME_SCAN_TUNE (a JSON dict) sets them for a whole process, e.g. for bench_train.py.
TUNE: dict = json.loads(os.environ.get("MAMBA_GENOME_SCAN_TUNE") or "{}")
# (d, n) elements per program of the chunk-carry kernel, and chunks per step of its chain
CARRY_BLOCK = 32
CARRY_K = 16


def _dfirst() -> bool:
    """Launch order of the per-chunk kernels: channel blocks fastest (default) or chunks fastest."""
    return bool(TUNE.get("dfirst", True))


def _grid(n_chunks, n_dblocks, batch):
    return (n_dblocks, n_chunks, batch) if _dfirst() else (n_chunks, n_dblocks, batch)


def _fits_i32(length, d_inner, *rows) -> bool:
    """Whether every in-row time offset (t * row stride, and t * d_inner for y) fits in int32."""
    return max([d_inner] + [t.stride(1) for t in rows]) * max(length, 1) < 2**31


def _config(batch, length, d_inner, d_state, device, fwd=False, state_every=None, inference=False):
    """:func:`_config_uncached`, memoised per shape, device, TUNE and interpreter mode: the host builds it
    twice per training call of the scan, which at short shapes is host-bound (H200, 2026-12-02: a
    (1, 512, 16, 2^14) forward + backward issues for 1.47 ms on the host against 0.69 ms of kernels).
    The returned dict is shared: read it, do not change it."""
    try:
        return _config_memo(batch, length, d_inner, d_state, device, fwd, state_every, inference,
                            triton_interpret(), tuple(sorted(TUNE.items())))
    except TypeError:            # an unhashable TUNE value: no memo
        return _config_uncached(batch, length, d_inner, d_state, device, fwd, state_every, inference)


@functools.lru_cache(maxsize=4096)
def _config_memo(batch, length, d_inner, d_state, device, fwd, state_every, inference, _interpret, _tune):
    return _config_uncached(batch, length, d_inner, d_state, device, fwd, state_every, inference)


def _config_uncached(batch, length, d_inner, d_state, device, fwd=False, state_every=None, inference=False):
    """Block sizes and the chunking of the length.

    BD channels x NP states per program; the backward stores states every T steps (tile) in
    scratch and the forward saves one every S = T*M steps (segment); a chunk is NSEG segments
    and NC chunks run in parallel, enough of them to fill the GPU. With ``fwd`` the keys
    fwd_BD / fwd_num_warps / fwd_programs override BD / num_warps / programs (T and M are shared:
    the backward reads the forward's segment states). ``state_every``: the segment length S in
    steps, rounded down to a multiple of T (at least T); None: the default (64 on a GPU).
    ``inference``: a forward that saves no states for a backward (embed, score, variant effects);
    on a GPU its default block is 32 channels per one-warp program (H200 sweep, 2026-12-01, at
    (1024, 512, d_inner, 16): 2.87 -> 2.73 ms for d_inner 512, 1.98 -> 1.49 ms for 256)."""

    def knob(key, default):
        return TUNE.get("fwd_" + key, TUNE.get(key, default)) if fwd else TUNE.get(key, default)

    NP = triton.next_power_of_2(d_state)
    interp = triton_interpret()
    # GPU defaults from the H100 sweep (benchmarks/kernels_result.md): backward 32 channels per one-warp
    # program, forward 64 channels per two-warp program; tiles of 8 steps, segments of 64
    BD = knob("BD", 64 if interp else (64 if fwd and not inference else 32))
    BD = max(1, min(triton.next_power_of_2(d_inner), BD))
    T = TUNE.get("T", 16 if interp else 8)
    M = TUNE.get("M", 1 if interp else 8)
    if state_every:
        M = max(1, int(state_every) // T)
    n_d = triton.cdiv(d_inner, BD)
    n_seg = triton.cdiv(length, T * M)
    num_warps = knob("num_warps", 1 if inference and not interp else max(1, min(4, BD * NP // 512)))
    # about 32 programs per SM: the per-step loops are latency bound, so oversubscribe. An inference
    # forward whose rows alone leave the GPU short of that is cut into ~16x more, shorter chunks
    # (H200 sweep, benchmarks/sweep_short.py, 2026-12-01: (1, 2^20, 512, 16) no-grad 8.96 -> 7.94 ms;
    # at (1024, 1024, 512, 16), where the rows fill the GPU, extra chunks cost 4.8 -> 7.3 ms)
    on_gpu = device.type == "cuda" and not interp
    default_target = 32 * num_sms(device) if device.type == "cuda" else 8
    if inference and on_gpu and batch * n_d < default_target:
        default_target *= 16
    target = knob("programs", default_target)
    nc_want = max(1, min(n_seg, triton.cdiv(target, batch * n_d)))
    NSEG = triton.cdiv(n_seg, nc_want)
    NC = max(1, triton.cdiv(n_seg, NSEG))
    launch = {"maxnreg": TUNE["maxnreg"]} if TUNE.get("maxnreg") else {}
    # the forward's chunk-state pass only shares the chunking (NC) with the scan pass; its channel
    # block is its own: 32 channels per one-warp program on a GPU (H100 sweep, kernels_result.md)
    sBD = max(1, min(triton.next_power_of_2(d_inner), TUNE.get("state_BD", BD if interp else 32)))
    s_warps = TUNE.get("state_num_warps", max(1, min(4, sBD * NP // 512)))
    # likewise the backward's chunk-state pass: 64 channels per one-warp program on a GPU (two per
    # thread; H100 sweep, kernels_result.md: 36.18 -> 35.24 ms backward at (1, 512, 16, 2^20))
    bBD = max(1, min(triton.next_power_of_2(d_inner), TUNE.get("bstate_BD", BD if interp else 64)))
    b_warps = TUNE.get("bstate_num_warps", max(1, min(4, bBD * NP // 512)) if interp else 1)
    # variants, off until a GPU sweep picks them: the forward scan's PIPE and TANH (fwd_pipe, fwd_tanh),
    # and I32 (int32 time offsets, all four per-chunk kernels: fwd_i32 for the forward, i32 for both)
    # I32 is on for the inference forward on a GPU (the same sweep: 127 -> 93 registers, (1024, 1024, 512, 16)
    # 5.21 -> 4.82 ms); PIPE and TANH measured no steady gain there and stay off
    variants = dict(pipe=bool(knob("pipe", False)), tanh=bool(knob("tanh", False)),
                    i32=bool(knob("i32", inference and on_gpu)))
    return dict(T=T, BD=BD, NP=NP, M=M, NSEG=NSEG, NC=NC, n_d=n_d, n_seg=n_seg, num_warps=num_warps, **variants,
                relaxed=TUNE.get("relaxed", True), launch=launch, state_BD=sBD, state_num_warps=s_warps,
                bstate_BD=bBD, bstate_num_warps=b_warps)


def _selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, softplus, h0, need_final, need_hs=True,
                        state_every=None):
    """y, the final state or None, and hs: the segment-start states the backward reads (a
    placeholder when ``need_hs`` is False: inference skips that store)."""
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    cfg = _config(batch, length, d_inner, d_state, u.device, fwd=True, state_every=state_every,
                  inference=not need_hs)
    T, BD, NP, M, NSEG, NC, n_d = (cfg[k] for k in ("T", "BD", "NP", "M", "NSEG", "NC", "n_d"))
    NS, S = cfg["n_seg"], T * M
    K = S * NSEG
    f32 = dict(device=u.device, dtype=torch.float32)
    y = torch.empty(batch, length, d_inner, device=u.device, dtype=u.dtype)
    hs = torch.empty(batch, max(NS, 1) if need_hs else 1, d_inner, d_state, **f32)
    final = torch.empty(batch, d_inner, d_state, **f32) if need_final else hs
    zz = z if z is not None else u
    bias = delta_bias if delta_bias is not None else A
    Dp = D if D is not None else A
    flags = dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus)
    nw = cfg["num_warps"]
    i32 = cfg["i32"] and _fits_i32(length, max(d_inner, d_state), u, delta, B, C, zz)
    if NC == 1:
        hc = h0 if h0 is not None else torch.zeros(batch, d_inner, d_state, **f32)
    else:
        hloc = torch.empty(batch, NC, d_inner, d_state, **f32)
        dtsum = torch.empty(batch, NC, d_inner, **f32)
        sBD = cfg["state_BD"]
        _fwd_chunk_state_kernel[_grid(NC - 1, triton.cdiv(d_inner, sBD), batch)](
            u, delta, bias, A, B, hloc, dtsum, length, d_inner, d_state, NC, K,
            u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
            BD=sBD, NP=NP, num_warps=cfg["state_num_warps"], DFIRST=_dfirst(), I32=i32, **flags)
        hc = torch.empty(batch, NC, d_inner, d_state, **f32)
        BLOCK = TUNE.get("carry_BLOCK", CARRY_BLOCK)
        _chunk_carry_kernel[(triton.cdiv(d_inner * d_state, BLOCK), batch)](
            hloc, hc, dtsum, A, h0 if h0 is not None else hloc, d_inner, d_state, NC,
            BLOCK=BLOCK, K=TUNE.get("carry_K", CARRY_K), HAS_H0=h0 is not None, REVERSE=False)
        del hloc, dtsum
    if length > 0:
        _fwd_chunk_scan_kernel[_grid(NC, n_d, batch)](
            u, delta, bias, A, B, C, Dp, zz, y, hc, hs, final, length, d_inner, d_state, NC, NS, S, NSEG,
            u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
            C.stride(0), C.stride(1), zz.stride(0), zz.stride(1),
            BD=BD, NP=NP, HAS_D=D is not None, HAS_Z=z is not None,
            STORE_FINAL=need_final, STORE_HS=need_hs, num_warps=nw, DFIRST=_dfirst(),
            PIPE=cfg["pipe"], I32=i32,
            # tanh.approx is inline PTX (not in the interpreter) and only within a bf16 / fp16 y's rounding
            TANH=cfg["tanh"] and y.dtype != torch.float32 and not triton_interpret(), **flags)
    elif need_final:
        final.copy_(hc if hc.dim() == 3 else hc[:, 0])
    return y, (final if need_final else None), hs


def _selective_scan_bwd(u, delta, A, B, C, D, z, delta_bias, softplus, hs, dy, dfinal, need_dh0,
                        ddelta_out=None, dz_out=None, y_out=None, state_every=None, du_out=None):
    """All input gradients. ``ddelta_out``: a buffer for ddelta, which may be ``delta`` itself.
    Each program reads delta[t] for its own rows and channels only, and never after it has
    written ddelta[t] (it walks back in time and prefetches t - 1), so ddelta can overwrite delta.
    ``dz_out``: a (B, L, D) buffer for dz with unit last stride (a slice of a wider gradient is
    fine). ``y_out``: a (B, L, D) buffer with unit last stride that receives the forward's output y.
    ``du_out``: a contiguous buffer for du, which may be ``dy`` itself (each program reads dy[t] of its
    own rows and channels once, before it writes du[t]). ``state_every``: as given to the forward
    that saved ``hs``."""
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    cfg = _config(batch, length, d_inner, d_state, u.device, state_every=state_every)
    T, BD, NP, M, NSEG, NC, n_d = (cfg[k] for k in ("T", "BD", "NP", "M", "NSEG", "NC", "n_d"))
    NS = cfg["n_seg"]
    K = T * M * NSEG
    nw = cfg["num_warps"]
    dev = u.device
    f32 = dict(device=dev, dtype=torch.float32)
    zz = z if z is not None else u
    bias = delta_bias if delta_bias is not None else A
    Dp = D if D is not None else A
    flags = dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus)
    du = du_out if du_out is not None else torch.empty(batch, length, d_inner, device=dev, dtype=u.dtype)
    assert du.is_contiguous() and du.dtype == u.dtype
    ddelta = ddelta_out
    if ddelta is None:
        ddelta = torch.empty(batch, length, d_inner, device=dev, dtype=delta.dtype)
    dz = du
    if z is not None:
        dz = dz_out if dz_out is not None else torch.empty(batch, length, d_inner, device=dev, dtype=z.dtype)
        assert dz.stride(-1) == 1
    if y_out is not None:
        assert y_out.stride(-1) == 1 and y_out.shape == u.shape
    i32 = cfg["i32"] and _fits_i32(length, max(d_inner, d_state), u, delta, B, C, zz, dz,
                                   y_out if y_out is not None else du)
    dB = torch.zeros(batch, length, d_state, **f32)
    dC = torch.zeros(batch, length, d_state, **f32)
    dA_part = torch.empty(batch, NC, d_inner, d_state, **f32)
    dD_part = torch.empty(batch, NC, d_inner, **f32)
    dbias_part = torch.empty(batch, NC, d_inner, **f32)
    dh0 = torch.empty(batch, d_inner, d_state, **f32) if need_dh0 else dA_part
    if NC == 1:
        gc = (dfinal.float().contiguous() if dfinal is not None
              else torch.zeros(batch, d_inner, d_state, **f32))
    else:
        gloc = torch.empty(batch, NC, d_inner, d_state, **f32)
        dtsum = torch.empty(batch, NC, d_inner, **f32)
        _bwd_chunk_state_kernel[_grid(NC - 1, triton.cdiv(d_inner, cfg["bstate_BD"]), batch)](
            delta, bias, A, C, zz, dy, gloc, dtsum, length, d_inner, d_state, NC, K,
            delta.stride(0), delta.stride(1), C.stride(0), C.stride(1), zz.stride(0), zz.stride(1),
            BD=cfg["bstate_BD"], NP=NP, HAS_Z=z is not None, num_warps=cfg["bstate_num_warps"], DFIRST=_dfirst(),
            I32=i32, **flags)
        gc = torch.empty(batch, NC, d_inner, d_state, **f32)
        BLOCK = TUNE.get("carry_BLOCK", CARRY_BLOCK)
        _chunk_carry_kernel[(triton.cdiv(d_inner * d_state, BLOCK), batch)](
            gloc, gc, dtsum, A, dfinal.float().contiguous() if dfinal is not None else gloc,
            d_inner, d_state, NC, BLOCK=BLOCK, K=TUNE.get("carry_K", CARRY_K), HAS_H0=dfinal is not None,
            REVERSE=True)
        del gloc, dtsum
    # per-program scratch: M tile-start states + T step states, (BD, NP) fp32 each
    per_prog = (M + T) * BD * NP
    scratch = torch.empty(batch * n_d * NC * per_prog, **f32)
    if length > 0:
        _bwd_chunk_kernel[_grid(NC, n_d, batch)](
            u, delta, bias, A, B, C, Dp, zz, dy, hs, gc, scratch,
            du, ddelta, dz, dB, dC, dA_part, dD_part, dbias_part, dh0, y_out if y_out is not None else du,
            length, d_inner, d_state, NC, NS, NSEG,
            u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
            C.stride(0), C.stride(1), zz.stride(0), zz.stride(1), dz.stride(0), dz.stride(1),
            (y_out if y_out is not None else du).stride(0), (y_out if y_out is not None else du).stride(1),
            T=T, M=M, BD=BD, NP=NP, HAS_D=D is not None, HAS_Z=z is not None,
            STORE_DH0=need_dh0, num_warps=nw, RELAXED=cfg["relaxed"], STORE_Y=y_out is not None, DFIRST=_dfirst(),
            I32=i32,
            **cfg["launch"], **flags)
    else:
        du.zero_(); ddelta.zero_(); dz.zero_(); dA_part.zero_(); dD_part.zero_(); dbias_part.zero_()
        if y_out is not None:
            y_out.zero_()
        if need_dh0:
            dh0.copy_(gc if gc.dim() == 3 else gc[:, 0])
    dA = dA_part.sum((0, 1))
    dD = dD_part.sum((0, 1)) if D is not None else None
    dbias = dbias_part.sum((0, 1)) if delta_bias is not None else None
    return (du, ddelta, dA, dB, dC, dD, dz if z is not None else None, dbias,
            dh0 if need_dh0 else None)


# ----------------------------------------------------------------------------- autograd
class SelectiveScanFn(torch.autograd.Function):
    """With ``W`` (dt_proj weight, (D, R)), ``delta`` is the (B, L, R) low-rank time-step: the
    (B, L, D) projection is formed for the forward kernels, not saved, and formed again in the
    backward (a rank-R GEMM: 0.5 GiB per layer of a 1.4m model at 2^20 not kept alive)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, return_final_state,
                need_grad=True, W=None):
        dtypes = [t.dtype if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias, initial_state)]
        u, B, C = _bld(u), _bld(B), _bld(C)
        z = _bld(z) if z is not None else None
        dt_low = delta
        if W is not None:
            # in delta's dtype (W cast to it), or the autocast dtype; the backward repeats it explicitly
            delta = F.linear(dt_low, W.to(dt_low.dtype))
            ctx.proj_dtype = delta.dtype
        delta = _bld(delta)
        Af = A.float().contiguous()
        Df = D.float().contiguous() if D is not None else None
        bf = delta_bias.float().contiguous() if delta_bias is not None else None
        h0 = initial_state.float().contiguous() if initial_state is not None else None
        y, final, hs = _selective_scan_fwd(u, delta, Af, B, C, Df, z, bf, delta_softplus, h0, return_final_state,
                                           need_hs=need_grad)
        ctx.save_for_backward(u, dt_low if W is not None else delta, Af, B, C, Df, z, bf, hs, W)
        ctx.delta_softplus = delta_softplus
        ctx.dtypes = dtypes
        ctx.has_h0 = initial_state is not None
        if return_final_state:
            return y, final
        return y

    @staticmethod
    def backward(ctx, dy, dfinal=None):
        u, delta, Af, B, C, Df, z, bf, hs, W = ctx.saved_tensors
        dW = None
        if W is not None:
            dt_low, Wc = delta.to(ctx.proj_dtype), W.to(ctx.proj_dtype)
            delta = F.linear(dt_low, Wc)
        dy = dy.contiguous() if dy is not None else torch.zeros_like(u)
        # with W, delta is this function's own recomputed (B, L, D) tensor: ddelta is written over
        # it instead of into a second one (1 GiB less at the peak of a 7m layer's backward at 2^20)
        grads = list(_selective_scan_bwd(u, delta, Af, B, C, Df, z, bf, ctx.delta_softplus, hs, dy, dfinal,
                                         ctx.has_h0 and ctx.needs_input_grad[8],
                                         ddelta_out=delta if W is not None else None))
        if W is not None:
            ddelta = grads[1]                                                           # in proj_dtype
            grads[1] = ddelta @ Wc                                                      # (B, L, R)
            dW = (ddelta.reshape(-1, ddelta.shape[-1]).t() @ dt_low.reshape(-1, dt_low.shape[-1])).to(W.dtype)
        out = [g.to(dt) if g is not None and dt is not None and g.dtype != dt else g
               for g, dt in zip(grads, ctx.dtypes)]
        return (*out, None, None, None, dW)


# ----------------------------------------------------------------------------- public
def selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False, delta_proj_weight=None,
):
    """Triton selective scan; same contract as :func:`mamba_genome.kernels.selective_scan`.

    Args:
        u, delta: (B, L, D) fp32 / bf16 / fp16; z optional (B, L, D) gate.
        A: (D, N); B, C: (B, L, N); D, delta_bias: (D,); initial_state: (B, D, N).
        delta_proj_weight: (D, R) optional; then delta is (B, L, R) and the scan uses
            delta @ delta_proj_weight.T, recomputed in the backward rather than saved.

    Returns:
        y (B, L, D) in u's dtype, or (y, final_state (B, D, N) float32).

    Example:
        >>> y = selective_scan_triton(u, dt, A, B, C, D=Dp, z=z, delta_softplus=True)
    """
    if u.device.type != "cuda" and not triton_interpret():
        raise ValueError("selective_scan_triton needs CUDA tensors (or TRITON_INTERPRET=1)")
    # without autograd (inference, embedding) the segment states for the backward are not stored
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad
        for t in (u, delta, A, B, C, D, z, delta_bias, initial_state, delta_proj_weight))
    return SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                 bool(delta_softplus), bool(return_final_state), need_grad, delta_proj_weight)
