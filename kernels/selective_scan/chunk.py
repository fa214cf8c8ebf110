"""Triton kernels for the Mamba-1 selective scan (Gu & Dao, 2023): forward and backward.

Per batch element, channel d and state index n (see README.md in this folder):

    dt_t = softplus(delta_t + delta_bias)       h_t = exp(dt_t A) * h_{t-1} + dt_t u_t B_t
    y_t  = (sum_n h_t C_t + D u_t) * silu(z_t)

The length is cut three ways:

    tile     T steps     one (T, BD, N) register block; inside it the recurrence is a
                         ``tl.associative_scan`` over (decay, input) pairs
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
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..utils import triton_interpret

LOG2E = 1.4426950408889634


# ----------------------------------------------------------------------------- helpers (jit)
@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 * (a1 * h + b1) + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(x)))


@triton.jit
def _load_dt(delta_ptr, s_dl, offs_t, offs_d, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Returns (v, dt): v = delta + bias (pre-softplus), dt = softplus(v) or v; 0 where masked."""
    v = tl.load(delta_ptr + offs_t[:, None] * s_dl + offs_d[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        v = v + bias[None, :]
    if SOFTPLUS:
        dt = _softplus(v)
    else:
        dt = v
    dt = tl.where(mask, dt, 0.0)
    return v, dt


@triton.jit
def _load_tile(ptr, s_l, offs_t, offs_c, mask):
    return tl.load(ptr + offs_t[:, None] * s_l + offs_c[None, :], mask=mask, other=0.0).to(tl.float32)


# ----------------------------------------------------------------------------- kernels
@triton.jit
def _fwd_chunk_state_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, hloc_ptr, dtsum_ptr,
    L, D, N, NC, s_ub, s_ul, s_db, s_dl, s_bb, s_bl,
    T: tl.constexpr, NT: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
):
    """End state of chunk c (c < NC-1) started from zero, and sum_t dt_t over the chunk."""
    pid_c = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BD + tl.arange(0, BD)
    offs_n = tl.arange(0, NP)
    md, mn = offs_d < D, offs_n < N
    A2 = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=md[:, None] & mn[None, :], other=0.0) * LOG2E
    bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    u_ptr += pid_b * s_ub
    delta_ptr += pid_b * s_db
    B_ptr += pid_b * s_bb
    acc = tl.zeros([BD, NP], dtype=tl.float32)
    tot = tl.zeros([BD], dtype=tl.float32)
    for j in range(NT):
        offs_t = pid_c * (NT * T) + j * T + tl.arange(0, T)
        mt = offs_t < L
        m2 = mt[:, None] & md[None, :]
        _, dt = _load_dt(delta_ptr, s_dl, offs_t, offs_d, m2, bias, HAS_BIAS, SOFTPLUS)
        u = _load_tile(u_ptr, s_ul, offs_t, offs_d, m2)
        Bt = _load_tile(B_ptr, s_bl, offs_t, offs_n, mt[:, None] & mn[None, :])
        cum = tl.cumsum(dt, 0)
        ts = tl.sum(dt, 0)
        # h_end = sum_t exp(A * sum_{s>t} dt_s) * dt_t u_t B_t; every weight is <= 1
        w = tl.exp2(A2[None, :, :] * (ts[None, :] - cum)[:, :, None])
        acc = tl.exp2(A2 * ts[:, None]) * acc + tl.sum(w * (dt * u)[:, :, None] * Bt[:, None, :], 0)
        tot += ts
    row = (pid_b * NC + pid_c) * D + offs_d
    tl.store(hloc_ptr + row[:, None] * N + offs_n[None, :], acc, mask=md[:, None] & mn[None, :])
    tl.store(dtsum_ptr + row, tot, mask=md)


@triton.jit
def _chunk_carry_kernel(
    loc_ptr, out_ptr, dtsum_ptr, A_ptr, h0_ptr, D, N, NC,
    BLOCK: tl.constexpr, HAS_H0: tl.constexpr, REVERSE: tl.constexpr,
):
    """Chain chunk states, elementwise over (d, n).

    Forward:  out[0] = h0,          out[c+1] = exp(A dtsum_c) out[c] + loc[c]
    Reverse:  out[NC-1] = h0 (dh_final),  out[c-1] = exp(A dtsum_c) out[c] + loc[c]
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
    for i in range(NC - 1):
        if REVERSE:
            src = NC - 1 - i
            dst = src - 1
        else:
            src = i
            dst = i + 1
        loc = tl.load(loc_ptr + (pid_b * NC + src) * D * N + j, mask=m, other=0.0)
        dts = tl.load(dtsum_ptr + (pid_b * NC + src) * D + d, mask=m, other=0.0)
        h = tl.exp2(A2 * dts) * h + loc
        tl.store(out_ptr + (pid_b * NC + dst) * D * N + j, h, mask=m)


@triton.jit
def _fwd_chunk_scan_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, y_ptr,
    hc_ptr, hs_ptr, final_ptr,
    L, D, N, NC, NS,
    s_ub, s_ul, s_db, s_dl, s_bb, s_bl, s_cb, s_cl, s_zb, s_zl,
    T: tl.constexpr, NT: tl.constexpr, M: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    STORE_FINAL: tl.constexpr,
):
    """Scan chunk c from its start state hc[b, c]; write y and the segment-start states hs."""
    pid_c = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BD + tl.arange(0, BD)
    offs_n = tl.arange(0, NP)
    rows = tl.arange(0, T)
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
    for j in range(NT):
        t0 = pid_c * (NT * T) + j * T
        if j % M == 0:
            seg = t0 // (M * T)
            tl.store(hs_ptr + (pid_b * NS + seg) * D * N + dn, h, mask=mdn & ((dn * 0 + seg) < NS))
        offs_t = t0 + rows
        mt = offs_t < L
        m2 = mt[:, None] & md[None, :]
        _, dt = _load_dt(delta_ptr, s_dl, offs_t, offs_d, m2, bias, HAS_BIAS, SOFTPLUS)
        u = _load_tile(u_ptr, s_ul, offs_t, offs_d, m2)
        mtn = mt[:, None] & mn[None, :]
        Bt = _load_tile(B_ptr, s_bl, offs_t, offs_n, mtn)
        Ct = _load_tile(C_ptr, s_cl, offs_t, offs_n, mtn)
        decay = tl.exp2(A2[None, :, :] * dt[:, :, None])                      # (T, BD, NP)
        bu = (dt * u)[:, :, None] * Bt[:, None, :]
        acum, hcum = tl.associative_scan((decay, bu), 0, _combine)
        hall = hcum + acum * h[None, :, :]
        y = tl.sum(hall * Ct[:, None, :], 2)                                  # (T, BD)
        if HAS_D:
            y += Dv[None, :] * u
        if HAS_Z:
            zt = _load_tile(z_ptr, s_zl, offs_t, offs_d, m2)
            y *= zt * tl.sigmoid(zt)
        tl.store(y_ptr + offs_t[:, None] * D + offs_d[None, :], y.to(y_ptr.dtype.element_ty), mask=m2)
        h = tl.sum(tl.where(rows[:, None, None] == T - 1, hall, 0.0), 0)
    if STORE_FINAL:
        if pid_c == NC - 1:
            tl.store(final_ptr + pid_b * D * N + dn, h, mask=mdn)


@triton.jit
def _bwd_chunk_state_kernel(
    delta_ptr, bias_ptr, A_ptr, C_ptr, z_ptr, dy_ptr, gloc_ptr, dtsum_ptr,
    L, D, N, NC, s_db, s_dl, s_cb, s_cl, s_zb, s_zl,
    T: tl.constexpr, NT: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_Z: tl.constexpr,
):
    """For chunk c >= 1 with zero gradient flowing in from later chunks: the gradient w.r.t.
    the state just before the chunk, sum_t exp(A * sum_{s<=t} dt_s) C_t dy'_t, and sum_t dt_t."""
    pid_c = tl.program_id(0).to(tl.int64) + 1
    pid_d = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    offs_d = pid_d * BD + tl.arange(0, BD)
    offs_n = tl.arange(0, NP)
    md, mn = offs_d < D, offs_n < N
    A2 = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=md[:, None] & mn[None, :], other=0.0) * LOG2E
    bias = tl.zeros([BD], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    delta_ptr += pid_b * s_db
    C_ptr += pid_b * s_cb
    z_ptr += pid_b * s_zb
    dy_ptr += pid_b * L * D
    acc = tl.zeros([BD, NP], dtype=tl.float32)
    pre = tl.zeros([BD], dtype=tl.float32)
    for j in range(NT):
        offs_t = pid_c * (NT * T) + j * T + tl.arange(0, T)
        mt = offs_t < L
        m2 = mt[:, None] & md[None, :]
        _, dt = _load_dt(delta_ptr, s_dl, offs_t, offs_d, m2, bias, HAS_BIAS, SOFTPLUS)
        dyp = _load_tile(dy_ptr, D, offs_t, offs_d, m2)
        if HAS_Z:
            zt = _load_tile(z_ptr, s_zl, offs_t, offs_d, m2)
            dyp *= zt * tl.sigmoid(zt)
        Ct = _load_tile(C_ptr, s_cl, offs_t, offs_n, mt[:, None] & mn[None, :])
        cum = tl.cumsum(dt, 0) + pre[None, :]
        w = tl.exp2(A2[None, :, :] * cum[:, :, None])
        acc += tl.sum(w * dyp[:, :, None] * Ct[:, None, :], 0)
        pre += tl.sum(dt, 0)
    row = (pid_b * NC + pid_c) * D + offs_d
    tl.store(gloc_ptr + row[:, None] * N + offs_n[None, :], acc, mask=md[:, None] & mn[None, :])
    tl.store(dtsum_ptr + row, pre, mask=md)


@triton.jit
def _bwd_chunk_kernel(
    u_ptr, delta_ptr, bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dy_ptr,
    hs_ptr, gc_ptr, scr_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    L, D, N, NC, NS,
    s_ub, s_ul, s_db, s_dl, s_bb, s_bl, s_cb, s_cl, s_zb, s_zl,
    T: tl.constexpr, M: tl.constexpr, NSEG: tl.constexpr, BD: tl.constexpr, NP: tl.constexpr,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_D: tl.constexpr, HAS_Z: tl.constexpr,
    STORE_DH0: tl.constexpr,
):
    """All gradients for chunk c, given gc[b, c] = dL/dh at the chunk's last step from later steps."""
    pid_c = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1).to(tl.int64)
    pid_b = tl.program_id(2).to(tl.int64)
    n_d = tl.num_programs(1)
    offs_d = pid_d * BD + tl.arange(0, BD)
    offs_n = tl.arange(0, NP)
    rows = tl.arange(0, T)
    md, mn = offs_d < D, offs_n < N
    mdn = md[:, None] & mn[None, :]
    dn = offs_d[:, None] * N + offs_n[None, :]
    A = tl.load(A_ptr + dn, mask=mdn, other=0.0)
    A2 = A * LOG2E
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
    dz_ptr += pid_b * L * D
    dB_ptr += pid_b * L * N
    dC_ptr += pid_b * L * N
    bdn = tl.arange(0, BD)[:, None] * NP + offs_n[None, :]
    scr_ptr += ((pid_b * n_d + pid_d) * NC + pid_c) * (M * BD * NP)

    g = tl.load(gc_ptr + (pid_b * NC + pid_c) * D * N + dn, mask=mdn, other=0.0)
    dA_acc = tl.zeros([BD, NP], dtype=tl.float32)
    dD_acc = tl.zeros([BD], dtype=tl.float32)
    dbias_acc = tl.zeros([BD], dtype=tl.float32)
    for i in range(NSEG):
        seg = pid_c * NSEG + (NSEG - 1 - i)
        h = tl.load(hs_ptr + (pid_b * NS + seg) * D * N + dn, mask=mdn & ((dn * 0 + seg) < NS), other=0.0)
        # recompute the start state of every tile in this segment
        for j in range(M):
            tl.store(scr_ptr + j * BD * NP + bdn, h)
            offs_t = seg * (M * T) + j * T + rows
            mt = offs_t < L
            m2 = mt[:, None] & md[None, :]
            _, dt = _load_dt(delta_ptr, s_dl, offs_t, offs_d, m2, bias, HAS_BIAS, SOFTPLUS)
            u = _load_tile(u_ptr, s_ul, offs_t, offs_d, m2)
            Bt = _load_tile(B_ptr, s_bl, offs_t, offs_n, mt[:, None] & mn[None, :])
            cum = tl.cumsum(dt, 0)
            ts = tl.sum(dt, 0)
            w = tl.exp2(A2[None, :, :] * (ts[None, :] - cum)[:, :, None])
            h = tl.exp2(A2 * ts[:, None]) * h + tl.sum(w * (dt * u)[:, :, None] * Bt[:, None, :], 0)
        tl.debug_barrier()
        for jj in range(M):
            j = M - 1 - jj
            h0 = tl.load(scr_ptr + j * BD * NP + bdn)
            offs_t = seg * (M * T) + j * T + rows
            mt = offs_t < L
            m2 = mt[:, None] & md[None, :]
            mtn = mt[:, None] & mn[None, :]
            v, dt = _load_dt(delta_ptr, s_dl, offs_t, offs_d, m2, bias, HAS_BIAS, SOFTPLUS)
            mnext = ((offs_t + 1) < L)[:, None] & md[None, :]
            _, dtn = _load_dt(delta_ptr, s_dl, offs_t + 1, offs_d, mnext, bias, HAS_BIAS, SOFTPLUS)
            u = _load_tile(u_ptr, s_ul, offs_t, offs_d, m2)
            Bt = _load_tile(B_ptr, s_bl, offs_t, offs_n, mtn)
            Ct = _load_tile(C_ptr, s_cl, offs_t, offs_n, mtn)
            dy = _load_tile(dy_ptr, D, offs_t, offs_d, m2)
            # forward recompute of h_t inside the tile
            decay = tl.exp2(A2[None, :, :] * dt[:, :, None])
            dtu = dt * u
            bu = dtu[:, :, None] * Bt[:, None, :]
            acum, hcum = tl.associative_scan((decay, bu), 0, _combine)
            hall = hcum + acum * h0[None, :, :]
            if HAS_Z:
                zt = _load_tile(z_ptr, s_zl, offs_t, offs_d, m2)
                ypre = tl.sum(hall * Ct[:, None, :], 2)
                if HAS_D:
                    ypre += Dv[None, :] * u
                sz = tl.sigmoid(zt)
                dz = dy * ypre * sz * (1.0 + zt * (1.0 - sz))
                tl.store(dz_ptr + offs_t[:, None] * D + offs_d[None, :], dz.to(dz_ptr.dtype.element_ty), mask=m2)
                dy = dy * zt * sz
            # reverse scan: dh_t = C_t dy'_t + exp(dt_{t+1} A) dh_{t+1}; g enters at the last row
            x = dy[:, :, None] * Ct[:, None, :]
            x += tl.where(rows[:, None, None] == T - 1, g[None, :, :], 0.0)
            decn = tl.exp2(A2[None, :, :] * dtn[:, :, None])
            _, dh = tl.associative_scan((decn, x), 0, _combine, reverse=True)
            g = tl.sum(tl.where(rows[:, None, None] == 0, decay * dh, 0.0), 0)
            # gradients
            dC = tl.sum(hall * dy[:, :, None], 1)                              # (T, NP)
            dB = tl.sum(dh * dtu[:, :, None], 1)
            tl.atomic_add(dC_ptr + offs_t[:, None] * N + offs_n[None, :], dC, mask=mtn)
            tl.atomic_add(dB_ptr + offs_t[:, None] * N + offs_n[None, :], dB, mask=mtn)
            dhB = tl.sum(dh * Bt[:, None, :], 2)                               # (T, BD)
            dh_hprev = dh * (hall - bu)                                        # dh_t * exp(dt_t A) h_{t-1}
            dA_acc += tl.sum(dh_hprev * dt[:, :, None], 0)
            ddt = u * dhB + tl.sum(dh_hprev * A[None, :, :], 2)
            du = dt * dhB
            if HAS_D:
                du += Dv[None, :] * dy
                dD_acc += tl.sum(dy * u, 0)
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(v)
            ddt = tl.where(m2, ddt, 0.0)
            dbias_acc += tl.sum(ddt, 0)
            tl.store(du_ptr + offs_t[:, None] * D + offs_d[None, :], du.to(du_ptr.dtype.element_ty), mask=m2)
            tl.store(ddelta_ptr + offs_t[:, None] * D + offs_d[None, :], ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)
        tl.debug_barrier()
    row = (pid_b * NC + pid_c) * D + offs_d
    tl.store(dA_ptr + row[:, None] * N + offs_n[None, :], dA_acc, mask=mdn)
    tl.store(dD_ptr + row, dD_acc, mask=md)
    tl.store(dbias_ptr + row, dbias_acc, mask=md)
    if STORE_DH0:
        if pid_c == 0:
            tl.store(dh0_ptr + pid_b * D * N + dn, g, mask=mdn)


# ----------------------------------------------------------------------------- launchers
def _num_sms(device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


def _bld(t):
    """(B, L, X) tensor with unit stride on the last axis (a slice of a projection is fine)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _config(batch, length, d_inner, d_state, device):
    NP = max(triton.next_power_of_2(d_state), 1)
    T = 16
    BD = max(1, min(triton.next_power_of_2(d_inner), 4096 // (T * NP), 64))
    M = 8                                   # tiles per saved segment: S = 128 steps
    n_d = triton.cdiv(d_inner, BD)
    n_seg = triton.cdiv(length, T * M)
    target = 4 * _num_sms(device) if device.type == "cuda" else 8
    nc_want = max(1, min(n_seg, triton.cdiv(target, batch * n_d)))
    NSEG = triton.cdiv(n_seg, nc_want)
    NC = triton.cdiv(n_seg, NSEG)
    num_warps = 4 if T * BD * NP >= 2048 else 2
    return dict(T=T, BD=BD, NP=NP, M=M, NSEG=NSEG, NC=NC, n_d=n_d, n_seg=n_seg, num_warps=num_warps)


def _selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, softplus, h0, need_final):
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    cfg = _config(batch, length, d_inner, d_state, u.device)
    T, BD, NP, M, NSEG, NC, n_d = (cfg[k] for k in ("T", "BD", "NP", "M", "NSEG", "NC", "n_d"))
    NS = cfg["n_seg"]
    f32 = dict(device=u.device, dtype=torch.float32)
    y = torch.empty(batch, length, d_inner, device=u.device, dtype=u.dtype)
    hs = torch.empty(batch, max(NS, 1), d_inner, d_state, **f32)
    final = torch.empty(batch, d_inner, d_state, **f32) if need_final else hs
    zz = z if z is not None else u
    bias = delta_bias if delta_bias is not None else A
    Dp = D if D is not None else A
    flags = dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus)
    if NC == 1:
        hc = h0 if h0 is not None else torch.zeros(batch, d_inner, d_state, **f32)
    else:
        hloc = torch.empty(batch, NC, d_inner, d_state, **f32)
        dtsum = torch.empty(batch, NC, d_inner, **f32)
        _fwd_chunk_state_kernel[(NC - 1, n_d, batch)](
            u, delta, bias, A, B, hloc, dtsum, length, d_inner, d_state, NC,
            u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
            T=T, NT=NSEG * M, BD=BD, NP=NP, num_warps=cfg["num_warps"], **flags)
        hc = torch.empty(batch, NC, d_inner, d_state, **f32)
        BLOCK = 256
        _chunk_carry_kernel[(triton.cdiv(d_inner * d_state, BLOCK), batch)](
            hloc, hc, dtsum, A, h0 if h0 is not None else hloc, d_inner, d_state, NC,
            BLOCK=BLOCK, HAS_H0=h0 is not None, REVERSE=False)
        del hloc, dtsum
    if length > 0:
        _fwd_chunk_scan_kernel[(NC, n_d, batch)](
            u, delta, bias, A, B, C, Dp, zz, y, hc, hs, final, length, d_inner, d_state, NC, NS,
            u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
            C.stride(0), C.stride(1), zz.stride(0), zz.stride(1),
            T=T, NT=NSEG * M, M=M, BD=BD, NP=NP, HAS_D=D is not None, HAS_Z=z is not None,
            STORE_FINAL=need_final, num_warps=cfg["num_warps"], **flags)
    elif need_final:
        final.copy_(hc if hc.dim() == 3 else hc[:, 0])
    return y, (final if need_final else None), hs


def _selective_scan_bwd(u, delta, A, B, C, D, z, delta_bias, softplus, hs, dy, dfinal, need_dh0):
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    cfg = _config(batch, length, d_inner, d_state, u.device)
    T, BD, NP, M, NSEG, NC, n_d = (cfg[k] for k in ("T", "BD", "NP", "M", "NSEG", "NC", "n_d"))
    NS = cfg["n_seg"]
    dev = u.device
    f32 = dict(device=dev, dtype=torch.float32)
    zz = z if z is not None else u
    bias = delta_bias if delta_bias is not None else A
    Dp = D if D is not None else A
    flags = dict(HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus)
    du = torch.empty(batch, length, d_inner, device=dev, dtype=u.dtype)
    ddelta = torch.empty(batch, length, d_inner, device=dev, dtype=delta.dtype)
    dz = torch.empty(batch, length, d_inner, device=dev, dtype=z.dtype) if z is not None else du
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
        _bwd_chunk_state_kernel[(NC - 1, n_d, batch)](
            delta, bias, A, C, zz, dy, gloc, dtsum, length, d_inner, d_state, NC,
            delta.stride(0), delta.stride(1), C.stride(0), C.stride(1), zz.stride(0), zz.stride(1),
            T=T, NT=NSEG * M, BD=BD, NP=NP, HAS_Z=z is not None, num_warps=cfg["num_warps"], **flags)
        gc = torch.empty(batch, NC, d_inner, d_state, **f32)
        BLOCK = 256
        _chunk_carry_kernel[(triton.cdiv(d_inner * d_state, BLOCK), batch)](
            gloc, gc, dtsum, A, dfinal.float().contiguous() if dfinal is not None else gloc,
            d_inner, d_state, NC, BLOCK=BLOCK, HAS_H0=dfinal is not None, REVERSE=True)
        del gloc, dtsum
    scratch = torch.empty(batch * n_d * NC * M * BD * NP, **f32)
    if length > 0:
        _bwd_chunk_kernel[(NC, n_d, batch)](
            u, delta, bias, A, B, C, Dp, zz, dy, hs, gc, scratch,
            du, ddelta, dz, dB, dC, dA_part, dD_part, dbias_part, dh0,
            length, d_inner, d_state, NC, NS,
            u.stride(0), u.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
            C.stride(0), C.stride(1), zz.stride(0), zz.stride(1),
            T=T, M=M, NSEG=NSEG, BD=BD, NP=NP, HAS_D=D is not None, HAS_Z=z is not None,
            STORE_DH0=need_dh0, num_warps=cfg["num_warps"], **flags)
    else:
        du.zero_(); ddelta.zero_(); dz.zero_(); dA_part.zero_(); dD_part.zero_(); dbias_part.zero_()
        if need_dh0:
            dh0.copy_(gc if gc.dim() == 3 else gc[:, 0])
    dA = dA_part.sum((0, 1))
    dD = dD_part.sum((0, 1)) if D is not None else None
    dbias = dbias_part.sum((0, 1)) if delta_bias is not None else None
    return (du, ddelta, dA, dB, dC, dD, dz if z is not None else None, dbias,
            dh0 if need_dh0 else None)


# ----------------------------------------------------------------------------- autograd
class SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, return_final_state):
        dtypes = [t.dtype if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias, initial_state)]
        u, delta, B, C = _bld(u), _bld(delta), _bld(B), _bld(C)
        z = _bld(z) if z is not None else None
        Af = A.float().contiguous()
        Df = D.float().contiguous() if D is not None else None
        bf = delta_bias.float().contiguous() if delta_bias is not None else None
        h0 = initial_state.float().contiguous() if initial_state is not None else None
        y, final, hs = _selective_scan_fwd(u, delta, Af, B, C, Df, z, bf, delta_softplus, h0, return_final_state)
        ctx.save_for_backward(u, delta, Af, B, C, Df, z, bf, hs)
        ctx.delta_softplus = delta_softplus
        ctx.dtypes = dtypes
        ctx.has_h0 = initial_state is not None
        if return_final_state:
            return y, final
        return y

    @staticmethod
    def backward(ctx, dy, dfinal=None):
        u, delta, Af, B, C, Df, z, bf, hs = ctx.saved_tensors
        dy = dy.contiguous() if dy is not None else torch.zeros_like(u)
        grads = _selective_scan_bwd(u, delta, Af, B, C, Df, z, bf, ctx.delta_softplus, hs, dy, dfinal,
                                    ctx.has_h0 and ctx.needs_input_grad[8])
        out = [g.to(dt) if g is not None and dt is not None and g.dtype != dt else g
               for g, dt in zip(grads, ctx.dtypes)]
        return (*out, None, None)


# ----------------------------------------------------------------------------- public
def selective_scan_triton(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False,
):
    """Triton selective scan; same contract as :func:`mamba_genome.kernels.selective_scan`.

    Args:
        u, delta: (B, L, D) fp32 / bf16 / fp16; z optional (B, L, D) gate.
        A: (D, N); B, C: (B, L, N); D, delta_bias: (D,); initial_state: (B, D, N).

    Returns:
        y (B, L, D) in u's dtype, or (y, final_state (B, D, N) float32).

    Example:
        >>> y = selective_scan_triton(u, dt, A, B, C, D=Dp, z=z, delta_softplus=True)
    """
    if u.device.type != "cuda" and not triton_interpret():
        raise ValueError("selective_scan_triton needs CUDA tensors (or TRITON_INTERPRET=1)")
    return SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, initial_state,
                                 bool(delta_softplus), bool(return_final_state))
