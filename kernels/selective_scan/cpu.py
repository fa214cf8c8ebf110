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
    _FLAGS, _HALF, _LOG2E, _ONE, _ZERO, _exp2, _flat, _jit, _run_jobs, _sigmoid, _softplus, _threads, _vec,
)

BD = 16          # channel block: two AVX2 vectors of fp32, one AVX-512 vector; a job is 1, 2 or 4 blocks
SEG_LEN = 32     # steps between the states saved for the backward


@_jit(_FLAGS, inline="always")
def _fold8(v, width, out):
    """out[0:8] = the sums of v's 8-lane columns, v[k] + v[k + 8] + ... (width a power of two
    >= 8), by halving; v is overwritten. The rest of a sum over channels (``_sum8``) is done
    later, outside the hot loop."""
    half = width // 2
    while half >= 8:
        for j in range(half):
            v[j] += v[j + half]
        half //= 2
    for k in range(8):
        out[k] = v[k]


@_jit(_FLAGS, inline="always")
def _sum8(r):
    return ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))


# ----------------------------------------------------------------------------- kernels
# A job is (batch row b, W channels from c0). Its scratch is flat: state-like tiles (N, W) at
# n * W + j, per-step rows at i * W + j. Lanes past the last channel (cw <= j < W) are zero
# (a = 0, u = 0, D = 0, delta = 0), so they compute zeros and are never stored.
# Every row is read and written through a slice (``row = x[o:o + W]``, then ``row[j]``): numba
# wraps negative indices, and unless LLVM can prove ``o + j >= 0`` (it cannot for offsets from
# strides or from loops that count down) that check turns each vector load into 8 scalar ones.
# delta is either given (rank 0: (B, L, D)) or the low-rank dt (B, L, R) with wdt = dt_proj's
# weight transposed, (R, D): then delta = dt @ wdt is formed per step here (R multiply-adds per
# channel), never stored.
@_jit(_FLAGS, inline="always")
def _load_delta(dd, dl, o, wdt, rank, dim, c0, cw):
    """dd[0:cw] = delta of this step for channels c0..c0+cw: dl[o + c0 + j] (rank 0) or
    sum_r dl[o + r] * wdt[r, c0 + j]."""
    if rank == 0:
        d_row = dl[o + c0:o + c0 + cw]
        for j in range(cw):
            dd[j] = d_row[j]
    else:
        for j in range(cw):
            dd[j] = _ZERO
        for r in range(rank):
            s = dl[o + r]
            w_row = wdt[r * dim + c0:r * dim + c0 + cw]
            for j in range(cw):
                dd[j] += s * w_row[j]


@_jit(_FLAGS)
def _fwd_step(h, a2, dt, dtu, acc, B_row, C_row, nstate, W):
    """One step of the recurrence for a job's (N, W) state tile: h = 2**(dt a2) h + dt u B_n,
    acc += C_n h. A function of its own (called, not inlined): compiled inside the whole
    kernel, this loop came out 1.5x slower (LLVM's choices for the big function spill it)."""
    for n in range(nstate):
        bn = B_row[n]
        cn = C_row[n]
        o = n * W
        for j in range(W):
            hv = _exp2(dt[j] * a2[o + j]) * h[o + j] + dtu[j] * bn
            h[o + j] = hv
            acc[j] += hv * cn


@_jit(_FLAGS)
def _scan_fwd_kernel(job0, job1, W, u, su, dl, sdl, wdt, rank, z, sz, Bm, sB, Cm, sC, A_T, Dv, bias, h0, y, hT,
                     seg, batch, length, dim, nstate, has_z, softplus, has_h0, store_seg):
    """Jobs job0..job1-1 of the forward. Writes y (B, L, D), hT (B, D, N) and, with
    ``store_seg``, seg (B, nseg, N, D): the state entering each segment of SEG_LEN steps.
    u/dl/z (B, L, D) (dl (B, L, R) for rank R > 0) and Bm/Cm (B, L, N) are flat arrays with
    (batch, time) strides su, sdl, ... and unit stride on their last axis; wdt (R, D); A_T (N, D);
    Dv, bias (D,); h0 (B, D, N)."""
    jobs_per_row = (dim + W - 1) // W
    nseg = (length + SEG_LEN - 1) // SEG_LEN
    a2 = np.empty(nstate * W, np.float32)       # A log2(e): the decay is 2**(dt a2)
    h = np.empty(nstate * W, np.float32)
    dv = np.empty(W, np.float32)
    bv = np.empty(W, np.float32)
    uu = np.empty(W, np.float32)
    dd = np.empty(W, np.float32)
    dt = np.empty(W, np.float32)
    dtu = np.empty(W, np.float32)
    acc = np.empty(W, np.float32)
    for job in range(job0, job1):
        b = job // jobs_per_row
        c0 = (job - b * jobs_per_row) * W
        cw = min(W, dim - c0)
        for j in range(W):
            live = j < cw
            dv[j] = Dv[c0 + j] if live else _ZERO
            bv[j] = bias[c0 + j] if live else _ZERO
            uu[j] = _ZERO
            dd[j] = _ZERO
        for n in range(nstate):
            for j in range(W):
                live = j < cw
                a2[n * W + j] = A_T[n * dim + c0 + j] * _LOG2E if live else _ZERO
                h[n * W + j] = h0[(b * dim + c0 + j) * nstate + n] if (live and has_h0) else _ZERO
        for t in range(length):
            if store_seg and t % SEG_LEN == 0:
                o = (b * nseg + t // SEG_LEN) * nstate * dim + c0
                for n in range(nstate):
                    seg_row = seg[o + n * dim:o + n * dim + cw]
                    for j in range(cw):
                        seg_row[j] = h[n * W + j]
            u_row = u[b * su[0] + t * su[1] + c0:]
            for j in range(cw):
                uu[j] = u_row[j]
            _load_delta(dd, dl, b * sdl[0] + t * sdl[1], wdt, rank, dim, c0, cw)
            if softplus:
                for j in range(W):
                    dt[j] = _softplus(dd[j] + bv[j])
            else:
                for j in range(W):
                    dt[j] = dd[j] + bv[j]
            for j in range(W):
                dtu[j] = dt[j] * uu[j]
                acc[j] = dv[j] * uu[j]
            oB, oC = b * sB[0] + t * sB[1], b * sC[0] + t * sC[1]
            _fwd_step(h, a2, dt, dtu, acc, Bm[oB:oB + nstate], Cm[oC:oC + nstate], nstate, W)
            y_row = y[(b * length + t) * dim + c0:]
            if has_z:
                z_row = z[b * sz[0] + t * sz[1] + c0:]
                for j in range(cw):
                    zz = z_row[j]
                    y_row[j] = acc[j] * zz * _sigmoid(zz)
            else:
                for j in range(cw):
                    y_row[j] = acc[j]
        for j in range(cw):
            for n in range(nstate):
                hT[(b * dim + c0 + j) * nstate + n] = h[n * W + j]


@_jit(_FLAGS)
def _scan_bwd_kernel(job0, job1, W, part, assign_first, u, su, dl, sdl, wdt, rank, z, sz, Bm, sB, Cm, sC, A_T,
                     Dv, bias, seg, dy, dhT, du, ddl, dz, dB_p, dC_p, ddt_p, dW_p, dA_p, dD_p, dbias_p, dh0,
                     batch, length, dim, nstate, has_z, softplus, has_dhT):
    """Jobs job0..job1-1 of the backward of <y, dy> + <hT, dhT>.
    Writes du, dz (B, L, D) and ddl (w.r.t. delta before the bias, (B, L, D), rank 0 only);
    the sums over channels go into part ``part`` of dB_p, dC_p ((parts, B, L, N)) and, for
    rank R > 0, ddt_p ((parts, B, L, R), w.r.t. the low-rank dt): added, or written by the
    first job of a batch row (c0 = 0) with ``assign_first`` (one worker owns the whole row).
    Writes the per-(batch row) partials dA_p (B, N, D), dD_p, dbias_p (B, D), dW_p (B, R, D)
    and dh0 (B, D, N). Inputs as the forward's; seg from it; dy (B, L, D) and dhT (B, D, N)
    contiguous."""
    jobs_per_row = (dim + W - 1) // W
    nseg = (length + SEG_LEN - 1) // SEG_LEN
    tile = nstate * W
    nr = max(rank, 1)
    hs = np.empty((SEG_LEN + 1) * tile, np.float32)   # tile i + 1: h after step s0 + i; tile 0: before
    es = np.empty(SEG_LEN * tile, np.float32)         # tile i: the decays exp(dt A) of step s0 + i
    dts = np.empty(SEG_LEN * W, np.float32)           # row i: dt, dt * u, u, softplus' of step s0 + i
    dtus = np.empty(SEG_LEN * W, np.float32)
    uus = np.zeros(SEG_LEN * W, np.float32)
    sig = np.empty(SEG_LEN * W, np.float32)           # (1 without softplus)
    redC = np.empty(SEG_LEN * nstate * 8, np.float32)  # (step, n, 8 lanes): what is left of dC, dB
    redB = np.empty(SEG_LEN * nstate * 8, np.float32)
    redR = np.empty(SEG_LEN * nr * 8, np.float32)      # (step, r, 8 lanes): what is left of d dt
    a = np.empty(tile, np.float32)
    a2 = np.empty(tile, np.float32)
    dh = np.empty(tile, np.float32)
    dA = np.empty(tile, np.float32)
    wt = np.zeros(nr * W, np.float32)                  # this job's columns of wdt (zero lanes past cw)
    dWa = np.empty(nr * W, np.float32)
    dv = np.empty(W, np.float32)
    bv = np.empty(W, np.float32)
    dd = np.empty(W, np.float32)
    gy = np.empty(W, np.float32)
    yp = np.empty(W, np.float32)
    sbj = np.empty(W, np.float32)
    saj = np.empty(W, np.float32)
    pc = np.empty(W, np.float32)
    pb = np.empty(W, np.float32)
    dDa = np.empty(W, np.float32)
    dba = np.empty(W, np.float32)
    for job in range(job0, job1):
        b = job // jobs_per_row
        c0 = (job - b * jobs_per_row) * W
        cw = min(W, dim - c0)
        assign = assign_first and c0 == 0
        for j in range(W):
            live = j < cw
            dv[j] = Dv[c0 + j] if live else _ZERO
            bv[j] = bias[c0 + j] if live else _ZERO
            dd[j] = _ZERO
            gy[j] = _ZERO
            dDa[j] = _ZERO
            dba[j] = _ZERO
        for r in range(rank):
            for j in range(W):
                wt[r * W + j] = wdt[r * dim + c0 + j] if j < cw else _ZERO
                dWa[r * W + j] = _ZERO
        for n in range(nstate):
            for j in range(W):
                live = j < cw
                a[n * W + j] = A_T[n * dim + c0 + j] if live else _ZERO
                a2[n * W + j] = a[n * W + j] * _LOG2E
                dh[n * W + j] = dhT[(b * dim + c0 + j) * nstate + n] if (live and has_dhT) else _ZERO
                dA[n * W + j] = _ZERO
        for s in range(nseg - 1, -1, -1):
            s0 = s * SEG_LEN
            T = min(SEG_LEN, length - s0)
            o = (b * nseg + s) * nstate * dim + c0
            for n in range(nstate):
                seg_row = seg[o + n * dim:]
                for j in range(W):
                    hs[n * W + j] = seg_row[j] if j < cw else _ZERO
            # rebuild the segment's states and decays
            for i in range(T):
                t = s0 + i
                u_row = u[b * su[0] + t * su[1] + c0:]
                uu = uus[i * W:(i + 1) * W]
                dt = dts[i * W:(i + 1) * W]
                dtu = dtus[i * W:(i + 1) * W]
                sg = sig[i * W:(i + 1) * W]
                for j in range(cw):
                    uu[j] = u_row[j]
                _load_delta(dd, dl, b * sdl[0] + t * sdl[1], wdt, rank, dim, c0, cw)
                if softplus:
                    for j in range(W):
                        v = dd[j] + bv[j]
                        dt[j] = _softplus(v)
                        sg[j] = _sigmoid(v)
                else:
                    for j in range(W):
                        dt[j] = dd[j] + bv[j]
                        sg[j] = _ONE
                for j in range(W):
                    dtu[j] = dt[j] * uu[j]
                B_row = Bm[b * sB[0] + t * sB[1]:]
                for n in range(nstate):
                    bn = B_row[n]
                    o = n * W
                    p0 = i * tile + o
                    h_prev = hs[p0:p0 + W]
                    h_new = hs[p0 + tile:p0 + tile + W]
                    e_t = es[p0:p0 + W]
                    for j in range(W):
                        e = _exp2(dt[j] * a2[o + j])
                        e_t[j] = e
                        h_new[j] = e * h_prev[j] + dtu[j] * bn
            # walk back over it
            for i in range(T - 1, -1, -1):
                t = s0 + i
                uu = uus[i * W:(i + 1) * W]
                dt = dts[i * W:(i + 1) * W]
                dtu = dtus[i * W:(i + 1) * W]
                sg = sig[i * W:(i + 1) * W]
                oy = (b * length + t) * dim + c0
                dy_row = dy[oy:oy + cw]
                B_row = Bm[b * sB[0] + t * sB[1]:]
                C_row = Cm[b * sC[0] + t * sC[1]:]
                for j in range(cw):
                    gy[j] = dy_row[j]
                if has_z:                       # dz needs the pre-gate output C.h + D u
                    for j in range(W):
                        yp[j] = dv[j] * uu[j]
                    for n in range(nstate):
                        cn = C_row[n]
                        h_t = hs[(i + 1) * tile + n * W:(i + 1) * tile + (n + 1) * W]
                        for j in range(W):
                            yp[j] += h_t[j] * cn
                    z_row = z[b * sz[0] + t * sz[1] + c0:]
                    dz_row = dz[oy:oy + cw]
                    for j in range(cw):
                        zz = z_row[j]
                        sz_ = _sigmoid(zz)
                        dz_row[j] = gy[j] * yp[j] * sz_ * (_ONE + zz * (_ONE - sz_))
                        gy[j] *= zz * sz_
                for j in range(W):
                    dDa[j] += gy[j] * uu[j]
                    sbj[j] = _ZERO
                    saj[j] = _ZERO
                for n in range(nstate):
                    bn = B_row[n]
                    cn = C_row[n]
                    o = n * W
                    p0 = i * tile + o
                    h_prev = hs[p0:p0 + W]
                    h_t = hs[p0 + tile:p0 + tile + W]
                    e_t = es[p0:p0 + W]
                    for j in range(W):
                        g = dh[o + j] + cn * gy[j]              # dL/dh_t
                        pc[j] = gy[j] * h_t[j]
                        pb[j] = g * dtu[j]
                        sbj[j] += g * bn
                        q = g * e_t[j]                          # dL/dh_{t-1} through h_t
                        r = q * h_prev[j]
                        saj[j] += a[o + j] * r
                        dA[o + j] += dt[j] * r
                        dh[o + j] = q
                    m = (i * nstate + n) * 8
                    _fold8(pc, W, redC[m:m + 8])
                    _fold8(pb, W, redB[m:m + 8])
                du_row = du[oy:oy + cw]
                for j in range(W):
                    pc[j] = dt[j] * sbj[j] + dv[j] * gy[j]         # du
                    pb[j] = (uu[j] * sbj[j] + saj[j]) * sg[j]      # d delta
                    dba[j] += pb[j]
                for j in range(cw):
                    du_row[j] = pc[j]
                if rank == 0:
                    dd_row = ddl[oy:oy + cw]
                    for j in range(cw):
                        dd_row[j] = pb[j]
                else:                           # d dt = d delta @ wdt.T; d wdt += dt (x) d delta
                    od = b * sdl[0] + t * sdl[1]
                    for r in range(rank):
                        sr = dl[od + r]
                        for j in range(W):
                            dWa[r * W + j] += sr * pb[j]
                            pc[j] = pb[j] * wt[r * W + j]
                        m = (i * nr + r) * 8
                        _fold8(pc, W, redR[m:m + 8])
            # dB, dC (d dt): what is left of the sums over this job's channels
            for i in range(T):
                op = ((part * batch + b) * length + s0 + i) * nstate
                for n in range(nstate):
                    m = (i * nstate + n) * 8
                    if assign:
                        dC_p[op + n] = _sum8(redC[m:m + 8])
                        dB_p[op + n] = _sum8(redB[m:m + 8])
                    else:
                        dC_p[op + n] += _sum8(redC[m:m + 8])
                        dB_p[op + n] += _sum8(redB[m:m + 8])
                if rank > 0:
                    op = ((part * batch + b) * length + s0 + i) * rank
                    for r in range(rank):
                        m = (i * nr + r) * 8
                        if assign:
                            ddt_p[op + r] = _sum8(redR[m:m + 8])
                        else:
                            ddt_p[op + r] += _sum8(redR[m:m + 8])
        for j in range(cw):
            dD_p[b * dim + c0 + j] = dDa[j]
            dbias_p[b * dim + c0 + j] = dba[j]
            for n in range(nstate):
                dh0[(b * dim + c0 + j) * nstate + n] = dh[n * W + j]
                dA_p[(b * nstate + n) * dim + c0 + j] = dA[n * W + j]
            for r in range(rank):
                dW_p[(b * rank + r) * dim + c0 + j] = dWa[r * W + j]


# ----------------------------------------------------------------------------- launchers
def _split(batch: int, dim: int, length: int, nstate: int) -> tuple[int, int, int]:
    """(channels per job W, jobs, workers): W = 16 * G with G in (4, 2, 1) channel blocks, the
    widest that still gives every thread a job (wide jobs read whole cache lines of each row of
    u, delta, z, y; 16-channel jobs were 1.5-2x slower at D = 128). One worker for a small scan
    (``MIN_PARALLEL_WORK`` state updates)."""
    threads = _threads(batch * length * dim * nstate)
    blocks = -(-dim // BD)
    group = 1
    for g in (4, 2):
        if g <= blocks and batch * -(-blocks // g) >= threads:
            group = g
            break
    width = BD * group
    njobs = batch * -(-dim // width)
    return width, njobs, min(threads, njobs)


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
    width, njobs, nwork = _split(batch, dim, length, nstate)
    _run_jobs(lambda w, j0, j1: _scan_fwd_kernel(j0, j1, width, **kw), njobs, nwork)
    del keep
    return y, hT, (seg if store_seg else None)


def _scan_bwd(u, delta, A, B, C, D, z, delta_bias, softplus, seg, dy, dhT, wdt=None):
    """Backward launcher: fp32 (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, d initial_state,
    d wdt); ddelta is w.r.t. the (B, L, R) low-rank dt when ``wdt`` is given (else d wdt is None).

    When there are at least as many batch rows as workers, each worker takes whole rows, so the
    sums over channels (dB, dC, d dt) are written in place: no zero-filled per-worker partials
    to add up afterwards."""
    batch, length, dim = u.shape
    nstate = A.shape[1]
    arrays, keep = _prepare(u, delta, A, B, C, D, z, delta_bias, wdt)
    rank = arrays["rank"]
    width, njobs, nwork = _split(batch, dim, length, nstate)
    own_rows = batch >= nwork
    jobs_per_row = njobs // batch
    cuts = [(w * batch // nwork) * jobs_per_row for w in range(nwork + 1)] if own_rows else None
    parts = 1 if own_rows else nwork
    f32 = dict(dtype=torch.float32)
    new = torch.empty if own_rows else torch.zeros
    du = torch.empty(batch, length, dim, **f32)
    ddl = torch.empty(batch, length, dim, **f32) if rank == 0 else torch.empty(1, **f32)
    dz = torch.empty(batch, length, dim, **f32) if z is not None else torch.empty(1, **f32)
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
              ddl=flat(ddl), dz=flat(dz), dB_p=flat(dB_p), dC_p=flat(dC_p), ddt_p=flat(ddt_p), dW_p=flat(dW_p),
              dA_p=flat(dA_p), dD_p=flat(dD_p), dbias_p=flat(dbias_p), dh0=flat(dh0), batch=batch, length=length,
              dim=dim, nstate=nstate, has_z=z is not None, softplus=bool(softplus), has_dhT=dhT is not None)
    _run_jobs(lambda w, j0, j1: _scan_bwd_kernel(j0, j1, width, 0 if own_rows else w, **kw), njobs, nwork, cuts)
    del keep
    total = (lambda p: p[0] if parts == 1 else p.sum(0))
    rowsum = (lambda p: p[0] if batch == 1 else p.sum(0))
    ddelta = total(ddt_p) if rank else ddl
    dwdt = rowsum(dW_p).t() if rank else None
    return (du, ddelta, rowsum(dA_p).t(), total(dB_p), total(dC_p), rowsum(dD_p),
            dz if z is not None else None, rowsum(dbias_p), dh0, dwdt)


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
