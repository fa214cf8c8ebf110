"""Compiled CPU selective scan (numba): forward and backward kernels, launchers, autograd Function.

The recurrence of ``naive.py`` in float32, compiled ahead of the first call by numba (LLVM) and
cached on disk (``cache=True``). Importing this module needs numba; the package imports it only
when the ``numba`` backend is picked (``kernels/utils.py``), so a machine without numba (the GPU
image) never loads it.

Work split: one job is (one batch row, W = 16, 32 or 64 channels, all N states); jobs run in
GIL-free threads (a small pool, as many threads as torch uses). Inside a job the state is an
(N, W) fp32 tile and time is walked one step at a time; the innermost loops run over the W
channels (unit stride in u, delta, z, dy), which LLVM turns into AVX/NEON vectors, and exp /
softplus / sigmoid are short polynomials here rather than libm calls, so they vectorise too
(the decays exp(dt A) as 2**(dt A log2 e), which needs fewer operations).

With ``delta_proj_weight`` (Mamba's dt_proj) the kernels take the (B, L, R) low-rank dt and form
delta = dt @ W.T per step and channel block (R multiply-adds per channel); delta is never
stored, and the backward returns the gradients of dt and W directly (three thin GEMMs per layer
and a (B, L, D) tensor less than projecting first).

Forward: y, the final state and, for the backward, the state entering every segment of SEG_LEN
steps ((B, ceil(L / SEG_LEN), N, D) fp32, 1/SEG_LEN of the (B, L, D, N) states). Backward: per
job, segments back to front; each segment's states and decays are rebuilt from its saved start
state into a per-thread scratch of SEG_LEN x N x W, then walked back to form every gradient
(the equations are in README.md). dB and dC (and d dt) sum over channels: when there are at
least as many batch rows as threads, each thread takes whole rows and writes them in place;
otherwise each thread adds into its own (B, L, N) partial, summed at the end. dA, dD,
d delta_bias and d W are per-(batch row) partials.

Inputs reach the kernels without copies when they are fp32 with unit stride on the last axis
(the model's slices of one projection): each is passed as a flat array plus its batch and time
strides. Other dtypes are converted to fp32 first; y and the gradients come back in the input's
dtype, the final state in fp32.
"""
from __future__ import annotations

import numpy as np
import torch

from ..cpu_common import (  # noqa: F401  (the math helpers are used inside the kernels)
    _FLAGS, _HALF, _LOG2E, _ONE, _ZERO, _exp2, _flat, _jit, _prefetch, _run_jobs, _scratch, _sigmoid, _softplus, _threads, _vec,
)

WJ = 64          # channels per job: a compile-time constant, so every channel loop has a fixed trip count
SEG_LEN = 32     # steps between the states saved for the backward
# the backward's single rows in its scratch R, at fixed offsets (see _scan_bwd_kernel)
R_GY, R_SB, R_SA, R_PC, R_PB = 3 * WJ, 5 * WJ, 6 * WJ, 7 * WJ, 8 * WJ
R_DT, R_DTU, R_ACC = 14 * WJ, 15 * WJ, 17 * WJ


# ----------------------------------------------------------------------------- row helpers
# A job is (batch row b, WJ channels from c0). Its scratch (a slice of the worker's buffer, passed
# in: the kernels are compiled without numba's runtime, so a slice is a plain view with no
# reference count to update) is flat: state-like tiles (N, WJ) at n * WJ + j, per-step rows at
# i * WJ + j. Lanes past the last channel (cw <= j < WJ) are zero (a = 0, u = 0, D = 0, delta = 0,
# the wdt columns 0), so they compute finite values that are never stored.
# Every row is read and written through a slice (``row = x[o:o + n]``, then ``row[j]``): numba
# wraps negative indices, and unless LLVM can prove ``o + j >= 0`` (it cannot for offsets from
# strides or from loops that count down) that check turns each vector load into 8 scalar ones.
@_jit(_FLAGS, inline="always")
def _load(dst, src, o, cw):
    """dst[0:cw] = src[o:o + cw]; the rest of dst is left as it is. (A loop of unknown trip
    count on purpose: with a fixed count of 64 LLVM unrolls the copy first and then cannot
    vectorise it, not knowing that dst and src do not overlap.)"""
    s = src[o:o + cw]
    for j in range(cw):
        dst[j] = s[j]


@_jit(_FLAGS, inline="always")
def _store(dst, o, src, cw):
    """dst[o:o + cw] = src[0:cw] (see ``_load``)."""
    d = dst[o:o + cw]
    for j in range(cw):
        d[j] = src[j]


@_jit(_FLAGS, inline="always")
def _row(src, o, cw, pad):
    """The job's WJ values src[o:o + WJ], read in place; for a job of cw < WJ channels, a copy
    in ``pad`` whose lanes past cw stay zero."""
    if cw == WJ:
        return src[o:o + WJ]
    _load(pad, src, o, cw)
    return pad


@_jit(_FLAGS, inline="always")
def _prefetch_row(src, o):
    """Prefetch the 4 cache lines of a WJ = 64-float row starting at src[o]."""
    _prefetch(src, o)
    _prefetch(src, o + 16)
    _prefetch(src, o + 32)
    _prefetch(src, o + 48)
    _prefetch(src, o + 63)


PF = 4           # steps ahead that the rows of the inputs are prefetched


@_jit(_FLAGS, inline="always")
def _lane_sum(v, k):
    """v[k] + v[k + 8] + ... + v[k + 56] as a tree."""
    return (((v[k] + v[k + 8]) + (v[k + 16] + v[k + 24]))
            + ((v[k + 32] + v[k + 40]) + (v[k + 48] + v[k + 56])))


@_jit(_FLAGS, inline="always")
def _fold8(v, out, m, lanes):
    """out[m:m + 8] = the sums of v's 8-lane columns, v[k] + v[k + 8] + ... over WJ = 64 values.
    ``lanes`` is 8, passed in at run time: with a trip count known when compiling, LLVM unrolls
    this loop first and then leaves it scalar (numba runs LLVM's SLP vectoriser off), 56 scalar
    adds per call; as a loop it becomes 8 vector loads and 7 vector adds. The last 8 -> 1
    (``_sum8``) is done outside the hot loop."""
    r = out[m:m + lanes]
    for k in range(lanes):
        r[k] = _lane_sum(v, k)


@_jit(_FLAGS, inline="always")
def _sum8(r, m):
    return ((r[m] + r[m + 1]) + (r[m + 2] + r[m + 3])) + ((r[m + 4] + r[m + 5]) + (r[m + 6] + r[m + 7]))


@_jit(_FLAGS, inline="always")
def _delta_row(dd, dl, o, wt, rank, cw):
    """dd = this step's delta for the job's channels: dl[o:o + cw] (rank 0; lanes past cw of dd
    stay zero) or sum_r dl[o + r] * wt[r] (wt: the job's columns of dt_proj's weight, (R, WJ))."""
    if rank == 0:
        _load(dd, dl, o, cw)
    else:
        d_in = dl[o:o + rank]
        for j in range(WJ):
            dd[j] = _ZERO
        for r in range(rank):
            s = d_in[r]
            w_row = wt[r * WJ:(r + 1) * WJ]
            for j in range(WJ):
                dd[j] += s * w_row[j]


@_jit(_FLAGS, inline="always")
def _job_setup(job, dim, nstate, A_T, Dv, bias, wdt, rank, a, a2, ts, dv, bv, wt):
    """(b, c0, cw) of a job, and its constants: a = A, a2 = A log2(e) (N rows of WJ, row n at
    n * ts), D, delta bias, the wdt columns; zero past the last channel."""
    jobs_per_row = (dim + WJ - 1) // WJ
    b = job // jobs_per_row
    c0 = (job - b * jobs_per_row) * WJ
    cw = min(WJ, dim - c0)
    for j in range(WJ):
        live = j < cw
        dv[j] = Dv[c0 + j] if live else _ZERO
        bv[j] = bias[c0 + j] if live else _ZERO
    for n in range(nstate):
        for j in range(WJ):
            v = A_T[n * dim + c0 + j] if j < cw else _ZERO
            a[n * ts + j] = v
            a2[n * ts + j] = v * _LOG2E
    for r in range(rank):
        for j in range(WJ):
            wt[r * WJ + j] = wdt[r * dim + c0 + j] if j < cw else _ZERO
    return b, c0, cw


@_jit(_FLAGS, inline="always")
def _dt_row(dt, dtu, sg, dd, bv, uu, softplus):
    """dt = softplus(delta + bias) (or delta + bias), dt * u and softplus' (or 1), one pass."""
    if softplus:
        for j in range(WJ):
            v = dd[j] + bv[j]
            d = _softplus(v)
            dt[j] = d
            dtu[j] = d * uu[j]
            sg[j] = _sigmoid(v)
    else:
        for j in range(WJ):
            d = dd[j] + bv[j]
            dt[j] = d
            dtu[j] = d * uu[j]
            sg[j] = _ONE


# ----------------------------------------------------------------------------- kernels
@_jit(_FLAGS)
def _fwd_step(ha, rows, Bm, oB, Cm, oC, nstate):
    """One step of the recurrence for a job's N x WJ states: h = 2**(dt a2) h + dt u B_n,
    acc += C_n h. ha: state n's h and a2 = A log2(e) side by side at n * 2 WJ; rows: dt, dt u,
    acc at 0, WJ, 2 WJ (two slices, so LLVM checks one pair for overlap, see _scan_bwd_kernel).
    A function of its own (called, not inlined): compiled inside the whole kernel, this loop
    came out 1.5x slower (LLVM's choices for the big function spill it)."""
    B_row = Bm[oB:oB + nstate]
    C_row = Cm[oC:oC + nstate]
    for n in range(nstate):
        bn = B_row[n]
        cn = C_row[n]
        hn = ha[n * 2 * WJ:(n + 1) * 2 * WJ]
        for j in range(WJ):
            hv = _exp2(rows[j] * hn[WJ + j]) * hn[j] + rows[WJ + j] * bn
            hn[j] = hv
            rows[2 * WJ + j] += hv * cn


@_jit(_FLAGS)
def _scan_fwd_kernel(job0, job1, scr, u, su, dl, sdl, wdt, rank, z, sz, Bm, sB, Cm, sC, A_T, Dv, bias, h0, y, hT,
                     seg, batch, length, dim, nstate, has_z, softplus, has_h0, store_seg):
    """Jobs job0..job1-1 of the forward. Writes y (B, L, D), hT (B, D, N) and, with
    ``store_seg``, seg (B, nseg, N, D): the state entering each segment of SEG_LEN steps.
    u/dl/z (B, L, D) (dl (B, L, R) for rank R > 0) and Bm/Cm (B, L, N) are flat arrays with
    (batch, time) strides su, sdl, ... and unit stride on their last axis; wdt (R, D); A_T (N, D);
    Dv, bias (D,); h0 (B, D, N). scr: this worker's scratch, ``_fwd_scratch`` floats."""
    nseg = (length + SEG_LEN - 1) // SEG_LEN
    tile = nstate * WJ
    nr = max(rank, 1)
    ha = scr[0:2 * tile]                        # state n: h, A log2(e) at n * 2 WJ
    o = 2 * tile
    wt = scr[o:o + nr * WJ]
    o += nr * WJ
    dv, bv, uu, dd = scr[o:o + WJ], scr[o + WJ:o + 2 * WJ], scr[o + 2 * WJ:o + 3 * WJ], scr[o + 3 * WJ:o + 4 * WJ]
    o += 4 * WJ
    dt, dtu, acc, sg = scr[o:o + WJ], scr[o + WJ:o + 2 * WJ], scr[o + 2 * WJ:o + 3 * WJ], scr[o + 3 * WJ:o + 4 * WJ]
    rows = scr[o:o + 3 * WJ]                    # dt, dtu, acc for _fwd_step
    o += 4 * WJ
    zz, yr = scr[o:o + WJ], scr[o + WJ:o + 2 * WJ]
    for job in range(job0, job1):
        a2 = ha[WJ:]
        b, c0, cw = _job_setup(job, dim, nstate, A_T, Dv, bias, wdt, rank, a2, a2, 2 * WJ, dv, bv, wt)
        for j in range(WJ):
            uu[j] = _ZERO
            dd[j] = _ZERO
            zz[j] = _ZERO
        for n in range(nstate):
            for j in range(WJ):
                ha[n * 2 * WJ + j] = h0[(b * dim + c0 + j) * nstate + n] if (j < cw and has_h0) else _ZERO
        for t in range(length):
            if store_seg and t % SEG_LEN == 0:
                o = (b * nseg + t // SEG_LEN) * nstate * dim + c0
                for n in range(nstate):
                    _store(seg, o + n * dim, ha[n * 2 * WJ:n * 2 * WJ + WJ], cw)
            if t + PF < length:
                tp = t + PF
                _prefetch_row(u, b * su[0] + tp * su[1] + c0)
                _prefetch_row(dl, b * sdl[0] + tp * sdl[1] + (0 if rank else c0))
                _prefetch(Bm, b * sB[0] + tp * sB[1])
                _prefetch(Bm, b * sB[0] + tp * sB[1] + nstate - 1)
                _prefetch(Cm, b * sC[0] + tp * sC[1])
                _prefetch(Cm, b * sC[0] + tp * sC[1] + nstate - 1)
                if has_z:
                    _prefetch_row(z, b * sz[0] + tp * sz[1] + c0)
            ur = _row(u, b * su[0] + t * su[1] + c0, cw, uu)
            _delta_row(dd, dl, b * sdl[0] + t * sdl[1] + (0 if rank else c0), wt, rank, cw)
            if softplus:
                for j in range(WJ):
                    d = _softplus(dd[j] + bv[j])
                    dt[j] = d
                    dtu[j] = d * ur[j]
                    acc[j] = dv[j] * ur[j]
            else:
                for j in range(WJ):
                    d = dd[j] + bv[j]
                    dt[j] = d
                    dtu[j] = d * ur[j]
                    acc[j] = dv[j] * ur[j]
            _fwd_step(ha, rows, Bm, b * sB[0] + t * sB[1], Cm, b * sC[0] + t * sC[1], nstate)
            oy = (b * length + t) * dim + c0
            if has_z:
                zr = _row(z, b * sz[0] + t * sz[1] + c0, cw, zz)
                for j in range(WJ):
                    v = zr[j]
                    yr[j] = acc[j] * v * _sigmoid(v)
                _store(y, oy, yr, cw)
            else:
                _store(y, oy, acc, cw)
        for j in range(cw):
            for n in range(nstate):
                hT[(b * dim + c0 + j) * nstate + n] = ha[n * 2 * WJ + j]


def _fwd_scratch(nstate: int, rank: int) -> int:
    return 2 * nstate * WJ + max(rank, 1) * WJ + 10 * WJ


@_jit(_FLAGS)
def _scan_bwd_kernel(job0, job1, scr, lanes, part, assign_first, u, su, dl, sdl, wdt, rank, z, sz, Bm, sB, Cm, sC, A_T,
                     Dv, bias, seg, dy, dhT, du, ddl, dz, sdz, dB_p, dC_p, ddt_p, dW_p, dA_p, dD_p, dbias_p, dh0,
                     batch, length, dim, nstate, has_z, softplus, has_dhT):
    """Jobs job0..job1-1 of the backward of <y, dy> + <hT, dhT>.
    Writes du (B, L, D), dz ((batch, time) strides sdz, unit stride on channels: it may be one
    half of a (B, L, 2D) buffer) and ddl (w.r.t. delta before the bias, (B, L, D), rank 0 only);
    the sums over channels go into part ``part`` of dB_p, dC_p ((parts, B, L, N)) and, for
    rank R > 0, ddt_p ((parts, B, L, R), w.r.t. the low-rank dt): added, or written by the
    first job of a batch row (c0 = 0) with ``assign_first`` (one worker owns the whole row).
    Writes the per-(batch row) partials dA_p (B, N, D), dD_p, dbias_p (B, D), dW_p (B, R, D)
    and dh0 (B, D, N). Inputs as the forward's; seg from it; dy (B, L, D) and dhT (B, D, N)
    contiguous. scr: this worker's scratch, ``_bwd_scratch`` floats; lanes = 8 (see ``_fold8``).

    Scratch layout. LLVM vectorises each channel loop behind a run-time check that the arrays
    it writes do not overlap the others, one check per pair of pointer groups; accesses through
    one slice at fixed offsets (``R[R_GY + j]``) form one group, while every slice is a group of
    its own (numba clamps slice bounds, so LLVM cannot relate two slices). With a slice per row
    the backward's walk loop spent ~25% of the kernel in those checks. So the two hot loops read
    three slices each: R (the single rows: gy, pc, pb, sbj, saj, dt, dt u, acc at fixed offsets),
    state n's T4 rows (a, a2, dh, dA side by side) and its H rows (slot k = [exp(dt A) of step
    k - 1, h after step k], so the state before, the decay and the state after a step are
    adjacent)."""
    nseg = (length + SEG_LEN - 1) // SEG_LEN
    tile = nstate * WJ
    nr = max(rank, 1)
    S = SEG_LEN
    # R: single rows
    dv, bv, dd, gy = scr[0:WJ], scr[WJ:2 * WJ], scr[2 * WJ:3 * WJ], scr[3 * WJ:4 * WJ]
    zz, sbj, saj, pc = scr[4 * WJ:5 * WJ], scr[5 * WJ:6 * WJ], scr[6 * WJ:7 * WJ], scr[7 * WJ:8 * WJ]
    pb, dDa, dba, dzr = scr[8 * WJ:9 * WJ], scr[9 * WJ:10 * WJ], scr[10 * WJ:11 * WJ], scr[11 * WJ:12 * WJ]
    uu, gyp = scr[12 * WJ:13 * WJ], scr[13 * WJ:14 * WJ]     # pads for jobs of fewer than WJ channels
    dt, dtu, sg, acc = scr[14 * WJ:15 * WJ], scr[15 * WJ:16 * WJ], scr[16 * WJ:17 * WJ], scr[17 * WJ:18 * WJ]
    R = scr[0:18 * WJ]                        # the same rows, indexed at fixed offsets in the hot loops
    o = 18 * WJ
    # per-step rows of a segment: dt, dt * u, softplus' (1 without), C.h + D u of step s0 + i
    dts, dtus = scr[o:o + S * WJ], scr[o + S * WJ:o + 2 * S * WJ]
    sig, yps = scr[o + 2 * S * WJ:o + 3 * S * WJ], scr[o + 3 * S * WJ:o + 4 * S * WJ]
    o += 4 * S * WJ
    T4 = scr[o:o + 4 * tile]                  # state n: a, a2, dh, dA at n * 4 WJ + (0, 1, 2, 3) WJ
    o += 4 * tile
    H = scr[o:o + 2 * (S + 1) * tile]         # state n, slot k: (n (S + 1) + k) 2 WJ: decay, state
    o += 2 * (S + 1) * tile
    redC = scr[o:o + S * nstate * 8]          # (step, n, 8 lanes): what is left of dC, dB
    redB = scr[o + S * nstate * 8:o + 2 * S * nstate * 8]
    o += 2 * S * nstate * 8
    redR = scr[o:o + S * nr * 8]              # (step, r, 8 lanes): what is left of d dt
    o += S * nr * 8
    wt, dWa = scr[o:o + nr * WJ], scr[o + nr * WJ:o + 2 * nr * WJ]
    T4a2 = T4[WJ:]
    ts4 = 4 * WJ
    hstride = (S + 1) * 2 * WJ
    for job in range(job0, job1):
        b, c0, cw = _job_setup(job, dim, nstate, A_T, Dv, bias, wdt, rank, T4, T4a2, ts4, dv, bv, wt)
        assign = assign_first and c0 == 0
        for j in range(WJ):
            dd[j] = _ZERO
            uu[j] = _ZERO
            gyp[j] = _ZERO
            zz[j] = _ZERO
            dDa[j] = _ZERO
            dba[j] = _ZERO
        for k in range(nr * WJ):
            dWa[k] = _ZERO
        for n in range(nstate):
            for j in range(WJ):
                T4[n * ts4 + 2 * WJ + j] = dhT[(b * dim + c0 + j) * nstate + n] if (j < cw and has_dhT) else _ZERO
                T4[n * ts4 + 3 * WJ + j] = _ZERO
        for s in range(nseg - 1, -1, -1):
            s0 = s * S
            T = min(S, length - s0)
            o = (b * nseg + s) * nstate * dim + c0
            for n in range(nstate):
                hn = H[n * hstride + WJ:n * hstride + 2 * WJ]
                if cw < WJ:
                    for j in range(WJ):
                        hn[j] = _ZERO
                _load(hn, seg, o + n * dim, cw)
            # rebuild the segment's states, decays and pre-gate outputs
            for i in range(T):
                t = s0 + i
                if i + PF < T:
                    tp = t + PF
                    _prefetch_row(u, b * su[0] + tp * su[1] + c0)
                    _prefetch_row(dl, b * sdl[0] + tp * sdl[1] + (0 if rank else c0))
                    _prefetch(Bm, b * sB[0] + tp * sB[1])
                    _prefetch(Bm, b * sB[0] + tp * sB[1] + nstate - 1)
                    _prefetch(Cm, b * sC[0] + tp * sC[1])
                    _prefetch(Cm, b * sC[0] + tp * sC[1] + nstate - 1)
                ur = _row(u, b * su[0] + t * su[1] + c0, cw, uu)
                _delta_row(dd, dl, b * sdl[0] + t * sdl[1] + (0 if rank else c0), wt, rank, cw)
                _dt_row(dt, dtu, sg, dd, bv, ur, softplus)
                for j in range(WJ):
                    acc[j] = dv[j] * ur[j]
                oB, oC = b * sB[0] + t * sB[1], b * sC[0] + t * sC[1]
                B_row = Bm[oB:oB + nstate]
                C_row = Cm[oC:oC + nstate]
                for n in range(nstate):
                    bn = B_row[n]
                    cn = C_row[n]
                    q = n * hstride + (i + 1) * 2 * WJ
                    hq = H[q - WJ:q + 2 * WJ]        # state before, decay, state after
                    an = T4[n * ts4 + WJ:n * ts4 + 2 * WJ]
                    for j in range(WJ):
                        e = _exp2(R[R_DT + j] * an[j])
                        hq[WJ + j] = e
                        hv = e * hq[j] + R[R_DTU + j] * bn
                        hq[2 * WJ + j] = hv
                        R[R_ACC + j] += hv * cn
                rows = i * WJ
                for j in range(WJ):
                    dts[rows + j] = dt[j]
                    dtus[rows + j] = dtu[j]
                    sig[rows + j] = sg[j]
                    yps[rows + j] = acc[j]
            # walk back over it
            for i in range(T - 1, -1, -1):
                t = s0 + i
                if t >= PF:                     # this walk's next rows of dy, z
                    tp = t - PF
                    _prefetch_row(dy, (b * length + tp) * dim + c0)
                    if has_z:
                        _prefetch_row(z, b * sz[0] + tp * sz[1] + c0)
                if t >= S:                      # the next segment's rebuild: its first rows
                    tp = t - S
                    _prefetch_row(u, b * su[0] + tp * su[1] + c0)
                    _prefetch_row(dl, b * sdl[0] + tp * sdl[1] + (0 if rank else c0))
                    _prefetch(Bm, b * sB[0] + tp * sB[1])
                    _prefetch(Bm, b * sB[0] + tp * sB[1] + nstate - 1)
                    _prefetch(Cm, b * sC[0] + tp * sC[1])
                    _prefetch(Cm, b * sC[0] + tp * sC[1] + nstate - 1)
                rows = i * WJ
                for j in range(WJ):
                    dt[j] = dts[rows + j]
                    dtu[j] = dtus[rows + j]
                ur = _row(u, b * su[0] + t * su[1] + c0, cw, uu)
                oy = (b * length + t) * dim + c0
                dyr = _row(dy, oy, cw, gyp)
                oB, oC = b * sB[0] + t * sB[1], b * sC[0] + t * sC[1]
                B_row = Bm[oB:oB + nstate]
                C_row = Cm[oC:oC + nstate]
                if has_z:                       # dz needs the pre-gate output C.h + D u
                    zr = _row(z, b * sz[0] + t * sz[1] + c0, cw, zz)
                    yp = yps[rows:rows + WJ]
                    for j in range(WJ):
                        v = zr[j]
                        sv = _sigmoid(v)
                        g0 = dyr[j]
                        dzr[j] = g0 * yp[j] * sv * (_ONE + v * (_ONE - sv))
                        gy[j] = g0 * v * sv
                    _store(dz, b * sdz[0] + t * sdz[1] + c0, dzr, cw)
                else:
                    for j in range(WJ):
                        gy[j] = dyr[j]
                for j in range(WJ):
                    dDa[j] += gy[j] * ur[j]
                    sbj[j] = _ZERO
                    saj[j] = _ZERO
                for n in range(nstate):
                    bn = B_row[n]
                    cn = C_row[n]
                    q = n * hstride + (i + 1) * 2 * WJ
                    hq = H[q - WJ:q + 2 * WJ]        # state before, decay, state after
                    t4 = T4[n * ts4:(n + 1) * ts4]   # a, a2, dh, dA of state n
                    for j in range(WJ):
                        gv = R[R_GY + j]
                        g = t4[2 * WJ + j] + cn * gv                # dL/dh_t
                        R[R_PC + j] = gv * hq[2 * WJ + j]
                        R[R_PB + j] = g * R[R_DTU + j]
                        R[R_SB + j] += g * bn
                        qv = g * hq[WJ + j]                         # dL/dh_{t-1} through h_t
                        r = qv * hq[j]
                        R[R_SA + j] += t4[j] * r
                        t4[3 * WJ + j] += R[R_DT + j] * r
                        t4[2 * WJ + j] = qv
                    m = (i * nstate + n) * 8
                    _fold8(pc, redC, m, lanes)
                    _fold8(pb, redB, m, lanes)
                sgr = sig[rows:rows + WJ]
                for j in range(WJ):
                    pc[j] = dt[j] * sbj[j] + dv[j] * gy[j]         # du
                    v = (ur[j] * sbj[j] + saj[j]) * sgr[j]         # d delta
                    pb[j] = v
                    dba[j] += v
                _store(du, oy, pc, cw)
                if rank == 0:
                    _store(ddl, oy, pb, cw)
                else:                           # d dt = d delta @ wdt.T; d wdt += dt (x) d delta
                    od = b * sdl[0] + t * sdl[1]
                    d_in = dl[od:od + rank]
                    for r in range(rank):
                        sr = d_in[r]
                        dWr = dWa[r * WJ:(r + 1) * WJ]
                        w_row = wt[r * WJ:(r + 1) * WJ]
                        for j in range(WJ):
                            dWr[j] += sr * pb[j]
                            pc[j] = pb[j] * w_row[j]
                        _fold8(pc, redR, (i * nr + r) * 8, lanes)
            # dB, dC (d dt): what is left of the sums over this job's channels
            for i in range(T):
                op = ((part * batch + b) * length + s0 + i) * nstate
                dC_row = dC_p[op:op + nstate]
                dB_row = dB_p[op:op + nstate]
                for n in range(nstate):
                    m = (i * nstate + n) * 8
                    if assign:
                        dC_row[n] = _sum8(redC, m)
                        dB_row[n] = _sum8(redB, m)
                    else:
                        dC_row[n] += _sum8(redC, m)
                        dB_row[n] += _sum8(redB, m)
                if rank > 0:
                    op = ((part * batch + b) * length + s0 + i) * rank
                    dt_row = ddt_p[op:op + rank]
                    for r in range(rank):
                        m = (i * nr + r) * 8
                        if assign:
                            dt_row[r] = _sum8(redR, m)
                        else:
                            dt_row[r] += _sum8(redR, m)
        for j in range(cw):
            dD_p[b * dim + c0 + j] = dDa[j]
            dbias_p[b * dim + c0 + j] = dba[j]
            for n in range(nstate):
                dh0[(b * dim + c0 + j) * nstate + n] = T4[n * ts4 + 2 * WJ + j]
                dA_p[(b * nstate + n) * dim + c0 + j] = T4[n * ts4 + 3 * WJ + j]
            for r in range(rank):
                dW_p[(b * rank + r) * dim + c0 + j] = dWa[r * WJ + j]


def _bwd_scratch(nstate: int, rank: int) -> int:
    nr, S = max(rank, 1), SEG_LEN
    return 18 * WJ + 4 * S * WJ + 4 * nstate * WJ + 2 * (S + 1) * nstate * WJ + 2 * S * nstate * 8 + S * nr * 8 + 2 * nr * WJ


# ----------------------------------------------------------------------------- launchers
def _split(batch: int, dim: int, length: int, nstate: int) -> tuple[int, int, int]:
    """(channels per job WJ, jobs, workers): one job per (batch row, WJ channels); one worker
    for a small scan (``MIN_PARALLEL_WORK`` state updates). Wide jobs read whole cache lines of
    each row of u, delta, z, y (16-channel jobs were 1.5-2x slower at D = 128), and a fixed width
    lets LLVM unroll and vectorise every channel loop without remainders."""
    threads = _threads(batch * length * dim * nstate)
    njobs = batch * -(-dim // WJ)
    return WJ, njobs, min(threads, njobs)


def _prepare(u, delta, A, B, C, D, z, delta_bias, wdt):
    """Kernel-ready views of the inputs; the tensors they alias are kept alive in ``keep``."""
    batch, length, dim = u.shape
    (uf, su, ut), (df, sd, dt_), (bf, sb, bt), (cf, sc, ct) = (_flat(t) for t in (u, delta, B, C))
    zf, sz, zt = _flat(z) if z is not None else (np.zeros(1, np.float32), (0, 0), None)
    A_T = A.detach().float().t().contiguous()
    if wdt is not None:
        W_T = wdt.detach().float().t().contiguous()             # (R, D)
        wf, rank = W_T.reshape(-1).numpy(), W_T.shape[0]
    else:
        W_T, wf, rank = None, np.zeros(1, np.float32), 0
    arrays = dict(u=uf, su=su, dl=df, sdl=sd, wdt=wf, rank=rank, z=zf, sz=sz, Bm=bf, sB=sb, Cm=cf, sC=sc,
                  A_T=A_T.reshape(-1).numpy(), Dv=_vec(D, dim), bias=_vec(delta_bias, dim))
    keep = (ut, dt_, bt, ct, zt, A_T, W_T)
    return arrays, keep


def _scan_fwd(u, delta, A, B, C, D, z, delta_bias, softplus, initial_state, store_seg, wdt=None):
    """Forward launcher: (y fp32 (B, L, D), final state fp32 (B, D, N), segment states or None).
    With ``wdt`` (D, R), delta is the (B, L, R) low-rank dt and the scan uses delta @ wdt.T."""
    batch, length, dim = u.shape
    nstate = A.shape[1]
    arrays, keep = _prepare(u, delta, A, B, C, D, z, delta_bias, wdt)
    y = torch.empty(batch, length, dim, dtype=torch.float32)
    hT = torch.empty(batch, dim, nstate, dtype=torch.float32)
    nseg = -(-length // SEG_LEN)
    seg = torch.empty(batch, nseg, nstate, dim, dtype=torch.float32) if store_seg else torch.empty(1)
    kw = dict(arrays, h0=_vec(initial_state, 1), y=y.numpy().reshape(-1), hT=hT.numpy().reshape(-1),
              seg=seg.numpy().reshape(-1), batch=batch, length=length, dim=dim, nstate=nstate,
              has_z=z is not None, softplus=bool(softplus), has_h0=initial_state is not None,
              store_seg=bool(store_seg))
    _, njobs, nwork = _split(batch, dim, length, nstate)
    scr = _scratch(nwork, _fwd_scratch(nstate, arrays["rank"]))
    _run_jobs(lambda w, j0, j1: _scan_fwd_kernel(j0, j1, scr[w], **kw), njobs, nwork)
    del keep
    return y, hT, (seg if store_seg else None)


def _scan_bwd(u, delta, A, B, C, D, z, delta_bias, softplus, seg, dy, dhT, wdt=None, dz_out=None):
    """Backward launcher: fp32 (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, d initial_state,
    d wdt); ddelta is w.r.t. the (B, L, R) low-rank dt when ``wdt`` is given (else d wdt is None).
    ``dz_out``: an fp32 (B, L, D) view with unit channel stride (the z half of the mixer's dxz)
    that dz is written into and returned as.

    When there are at least as many batch rows as workers, each worker takes whole rows, so the
    sums over channels (dB, dC, d dt) are written in place: no zero-filled per-worker partials
    to add up afterwards."""
    batch, length, dim = u.shape
    nstate = A.shape[1]
    arrays, keep = _prepare(u, delta, A, B, C, D, z, delta_bias, wdt)
    rank = arrays["rank"]
    _, njobs, nwork = _split(batch, dim, length, nstate)
    own_rows = batch >= nwork
    jobs_per_row = njobs // batch
    cuts = [(w * batch // nwork) * jobs_per_row for w in range(nwork + 1)] if own_rows else None
    parts = 1 if own_rows else nwork
    f32 = dict(dtype=torch.float32)
    new = torch.empty if own_rows else torch.zeros
    du = torch.empty(batch, length, dim, **f32)
    ddl = torch.empty(batch, length, dim, **f32) if rank == 0 else torch.empty(1, **f32)
    if z is None:
        dz, dz_flat, sdz = None, np.zeros(1, np.float32), (0, 0)
    else:
        if dz_out is not None:  # written in place: _flat must not copy it
            assert dz_out.dtype == torch.float32 and dz_out.stride(-1) == 1 and dz_out.shape == u.shape
        dz = dz_out if dz_out is not None else torch.empty(batch, length, dim, **f32)
        dz_flat, sdz, _ = _flat(dz)
    dB_p = new(parts, batch, length, nstate, **f32)
    dC_p = new(parts, batch, length, nstate, **f32)
    ddt_p = new(parts, batch, length, rank, **f32) if rank else torch.empty(1, **f32)
    dW_p = torch.empty(batch, rank, dim, **f32) if rank else torch.empty(1, **f32)
    dA_p = torch.empty(batch, nstate, dim, **f32)
    dD_p, dbias_p = torch.empty(batch, dim, **f32), torch.empty(batch, dim, **f32)
    dh0 = torch.empty(batch, dim, nstate, **f32)
    dy = dy.detach().float().contiguous()
    flat = (lambda t: t.numpy().reshape(-1))
    kw = dict(arrays, assign_first=own_rows, seg=flat(seg), dy=flat(dy), dhT=_vec(dhT, 1), du=flat(du),
              ddl=flat(ddl), dz=dz_flat, sdz=sdz, dB_p=flat(dB_p), dC_p=flat(dC_p), ddt_p=flat(ddt_p), dW_p=flat(dW_p),
              dA_p=flat(dA_p), dD_p=flat(dD_p), dbias_p=flat(dbias_p), dh0=flat(dh0), batch=batch, length=length,
              dim=dim, nstate=nstate, has_z=z is not None, softplus=bool(softplus), has_dhT=dhT is not None)
    scr = _scratch(nwork, _bwd_scratch(nstate, rank))
    _run_jobs(lambda w, j0, j1: _scan_bwd_kernel(j0, j1, scr[w], 8, 0 if own_rows else w, **kw), njobs, nwork, cuts)
    del keep
    total = (lambda p: p[0] if parts == 1 else p.sum(0))
    rowsum = (lambda p: p[0] if batch == 1 else p.sum(0))
    ddelta = total(ddt_p) if rank else ddl
    dwdt = rowsum(dW_p).t() if rank else None
    return (du, ddelta, rowsum(dA_p).t(), total(dB_p), total(dC_p), rowsum(dD_p),
            dz, rowsum(dbias_p), dh0, dwdt)


# ----------------------------------------------------------------------------- autograd
class _SelectiveScanNumba(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, softplus, wdt):
        y, hT, seg = _scan_fwd(u, delta, A, B, C, D, z, delta_bias, softplus, initial_state, store_seg=True,
                               wdt=wdt)
        ctx.softplus = softplus
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, initial_state, seg, wdt)
        return y.to(u.dtype), hT

    @staticmethod
    def backward(ctx, dy, dhT):
        u, delta, A, B, C, D, z, delta_bias, initial_state, seg, wdt = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros(u.shape, dtype=torch.float32)
        du, ddl, dA, dB, dC, dD, dz, dbias, dh0, dwdt = _scan_bwd(u, delta, A, B, C, D, z, delta_bias, ctx.softplus,
                                                                   seg, dy, dhT, wdt=wdt)
        cast = (lambda g, ref: None if ref is None or g is None else g.to(ref.dtype))
        return (cast(du, u), cast(ddl, delta), cast(dA, A), cast(dB, B), cast(dC, C), cast(dD, D),
                cast(dz, z), cast(dbias, delta_bias), cast(dh0, initial_state), None, cast(dwdt, wdt))


# ----------------------------------------------------------------------------- public function
def selective_scan_numba(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, return_final_state=False, delta_proj_weight=None,
):
    """Compiled CPU scan; same contract as :func:`mamba_genome.kernels.selective_scan`.

    CPU tensors in fp32 / bf16 / fp16, computed in fp32; y in u's dtype, the final state fp32.
    With ``delta_proj_weight`` (D, R), ``delta`` is the (B, L, R) low-rank dt and the kernels
    form delta = dt @ W.T per step in fp32 (not stored; the gradients of dt and W come back).
    Without autograd (no input needs grad, or ``torch.no_grad()``) no segment states are kept.
    """
    if u.numel() == 0:                 # nothing to scan: the PyTorch path returns the right shapes
        from .parallel import selective_scan_torch

        if delta_proj_weight is not None:
            delta = torch.nn.functional.linear(delta, delta_proj_weight.to(delta.dtype))
        return selective_scan_torch(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                    delta_softplus=delta_softplus, initial_state=initial_state,
                                    return_final_state=return_final_state)
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad
        for t in (u, delta, A, B, C, D, z, delta_bias, initial_state, delta_proj_weight))
    if need_grad:
        y, hT = _SelectiveScanNumba.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, bool(delta_softplus),
                                          delta_proj_weight)
    else:
        y, hT, _ = _scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, store_seg=False,
                             wdt=delta_proj_weight)
        y = y.to(u.dtype)
    return (y, hT) if return_final_state else y
