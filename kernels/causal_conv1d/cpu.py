"""Compiled CPU causal depthwise conv1d (numba): forward and backward kernels, launchers, autograd Function.

    v[b, t, c] = bias[c] + sum_k w[c, k] * x[b, t - (W - 1) + k, c]      (x before t = 0: initial_state)
    y          = silu(v)  (or v)

computed in fp32 in the model's (B, L, D) layout: the rows of x are read in place (x is usually
the first half of in_proj's (x, z) output), y comes out contiguous for the scan, and no
transposes, padded copies or separate SiLU pass are made (the PyTorch path, ``parallel.py``,
spent more time in those than in its convolution). A job is one batch row and a run of time
steps, all channels; the channel loop is innermost (unit stride), so it vectorises.

Backward in two passes over the same jobs: (1) dv = dy * silu'(v) (v recomputed) into a
(B, L, D) buffer, with d weight and d bias summed into per-worker partials; (2) dx from dv
(the transposed filter). d initial_state is the few steps of dv that reach before t = 0 and is
formed in PyTorch; the final state (the last W - 1 inputs) is sliced in PyTorch as well, so
autograd carries its gradient. Compiled without numba's runtime (``cpu_common._jit``).
"""
from __future__ import annotations

import numpy as np
import torch

from ..cpu_common import _FLAGS, _ONE, _flat, _jit, _run_jobs, _sigmoid, _threads

T_JOB = 256      # time steps per job (short enough that 2 threads share an inference chunk evenly)


# ----------------------------------------------------------------------------- kernels
# The filter is padded on the left to TAPS = 4 taps (zeros for W < 4) and the state before t = 0
# to 3 rows, so every output step is one pass over the channels reading 4 input rows: the four
# products, the bias and the SiLU are done while the values sit in registers (a loop per tap
# with an accumulator row went through memory 4 times per step and was 3-4x slower).
TAPS = 4


@_jit(_FLAGS, inline="always")
def _row(x, sx0, sx1, h0, b, s, dim):
    """Input row s of batch row b: x for s >= 0, else the padded state h0 (B, 3, D) row 3 + s."""
    if s >= 0:
        o = b * sx0 + s * sx1
        return x[o:o + dim]
    o = (b * (TAPS - 1) + TAPS - 1 + s) * dim
    return h0[o:o + dim]


@_jit(_FLAGS)
def _conv_fwd_kernel(job0, job1, x, sx, h0, w_T, bias, y, length, dim, silu):
    """Jobs job0..job1-1: y (B, L, D) contiguous. x (B, L, D) flat with (batch, time) strides
    sx and unit stride on channels; h0 (B, 3, D) (the inputs before t = 0, oldest first, zero
    rows where the filter is shorter); w_T (4, D) left-padded with zeros; bias (D,)."""
    jobs_per_row = (length + T_JOB - 1) // T_JOB
    w0, w1, w2, w3 = w_T[0:dim], w_T[dim:2 * dim], w_T[2 * dim:3 * dim], w_T[3 * dim:4 * dim]
    for job in range(job0, job1):
        b = job // jobs_per_row
        t0 = (job - b * jobs_per_row) * T_JOB
        t1 = min(length, t0 + T_JOB)
        for t in range(t0, t1):
            r0 = _row(x, sx[0], sx[1], h0, b, t - 3, dim)
            r1 = _row(x, sx[0], sx[1], h0, b, t - 2, dim)
            r2 = _row(x, sx[0], sx[1], h0, b, t - 1, dim)
            r3 = _row(x, sx[0], sx[1], h0, b, t, dim)
            o = (b * length + t) * dim
            y_row = y[o:o + dim]
            if silu:
                for c in range(dim):
                    v = bias[c] + w0[c] * r0[c] + w1[c] * r1[c] + w2[c] * r2[c] + w3[c] * r3[c]
                    y_row[c] = v * _sigmoid(v)
            else:
                for c in range(dim):
                    y_row[c] = bias[c] + w0[c] * r0[c] + w1[c] * r1[c] + w2[c] * r2[c] + w3[c] * r3[c]


@_jit(_FLAGS)
def _conv_bwd_dv_kernel(job0, job1, wk_id, x, sx, h0, w_T, bias, dy, dv, dw_p, db_p, length, dim, silu):
    """Pass 1: dv = dy * silu'(v) (B, L, D); adds d weight into dw_p[wk_id] (4, D) and d bias
    into db_p[wk_id] (D,), this worker's partials. dy (B, L, D) contiguous."""
    jobs_per_row = (length + T_JOB - 1) // T_JOB
    w0, w1, w2, w3 = w_T[0:dim], w_T[dim:2 * dim], w_T[2 * dim:3 * dim], w_T[3 * dim:4 * dim]
    o = wk_id * TAPS * dim
    g0, g1, g2, g3 = dw_p[o:o + dim], dw_p[o + dim:o + 2 * dim], dw_p[o + 2 * dim:o + 3 * dim], dw_p[o + 3 * dim:o + 4 * dim]
    gb = db_p[wk_id * dim:(wk_id + 1) * dim]
    for job in range(job0, job1):
        b = job // jobs_per_row
        t0 = (job - b * jobs_per_row) * T_JOB
        t1 = min(length, t0 + T_JOB)
        for t in range(t0, t1):
            r0 = _row(x, sx[0], sx[1], h0, b, t - 3, dim)
            r1 = _row(x, sx[0], sx[1], h0, b, t - 2, dim)
            r2 = _row(x, sx[0], sx[1], h0, b, t - 1, dim)
            r3 = _row(x, sx[0], sx[1], h0, b, t, dim)
            o = (b * length + t) * dim
            dy_row = dy[o:o + dim]
            dv_row = dv[o:o + dim]
            if silu:
                for c in range(dim):
                    v = bias[c] + w0[c] * r0[c] + w1[c] * r1[c] + w2[c] * r2[c] + w3[c] * r3[c]
                    sg = _sigmoid(v)
                    g = dy_row[c] * sg * (_ONE + v * (_ONE - sg))
                    dv_row[c] = g
                    gb[c] += g
                    g0[c] += g * r0[c]
                    g1[c] += g * r1[c]
                    g2[c] += g * r2[c]
                    g3[c] += g * r3[c]
            else:
                for c in range(dim):
                    g = dy_row[c]
                    dv_row[c] = g
                    gb[c] += g
                    g0[c] += g * r0[c]
                    g1[c] += g * r1[c]
                    g2[c] += g * r2[c]
                    g3[c] += g * r3[c]


@_jit(_FLAGS)
def _conv_bwd_dx_kernel(job0, job1, dv, zero, w_T, dx, sdx, length, dim):
    """Pass 2: dx[b, s] = sum_k w[k] * dv[b, s + 3 - k] over the steps inside the sequence (the
    ``zero`` row past the end); dv (B, L, D) contiguous, dx (B, L, D) with (batch, time) strides
    sdx and unit stride on channels (it may be one half of a (B, L, 2D) buffer)."""
    jobs_per_row = (length + T_JOB - 1) // T_JOB
    w0, w1, w2, w3 = w_T[0:dim], w_T[dim:2 * dim], w_T[2 * dim:3 * dim], w_T[3 * dim:4 * dim]
    for job in range(job0, job1):
        b = job // jobs_per_row
        t0 = (job - b * jobs_per_row) * T_JOB
        t1 = min(length, t0 + T_JOB)
        for s in range(t0, t1):
            o = (b * length + s) * dim
            d0 = dv[o:o + dim]
            d1 = dv[o + dim:o + 2 * dim] if s + 1 < length else zero
            d2 = dv[o + 2 * dim:o + 3 * dim] if s + 2 < length else zero
            d3 = dv[o + 3 * dim:o + 4 * dim] if s + 3 < length else zero
            ox = b * sdx[0] + s * sdx[1]
            dx_row = dx[ox:ox + dim]
            for c in range(dim):
                dx_row[c] = w3[c] * d0[c] + w2[c] * d1[c] + w1[c] * d2[c] + w0[c] * d3[c]


# ----------------------------------------------------------------------------- launchers
def _jobs(batch: int, length: int, dim: int, width: int) -> tuple[int, int]:
    """(jobs, workers): jobs of T_JOB steps; one worker below ``MIN_PARALLEL_WORK`` inputs x taps."""
    njobs = batch * -(-length // T_JOB)
    return njobs, min(_threads(batch * length * dim * width), njobs)


def _inputs(x, weight, bias, initial_state):
    """Kernel-ready fp32 views: x flat + strides, h0 (B, 3, D) and w_T (4, D) padded on the
    left (zeros) for a filter shorter than 4 taps, bias (D,)."""
    batch, _, dim = x.shape
    width = weight.shape[1]
    xf, sx, xt = _flat(x)
    h0 = torch.zeros(batch, TAPS - 1, dim, dtype=torch.float32)
    if initial_state is not None:
        h0[:, TAPS - width:] = initial_state.detach().float().transpose(1, 2)
    w_T = torch.zeros(TAPS, dim, dtype=torch.float32)
    w_T[TAPS - width:] = weight.detach().float().t()
    b = bias.detach().float().contiguous() if bias is not None else torch.zeros(dim, dtype=torch.float32)
    keep = (xt, h0, w_T, b)
    return dict(x=xf, sx=sx, h0=h0.reshape(-1).numpy(), w_T=w_T.reshape(-1).numpy(), bias=b.numpy()), keep


def _conv_fwd(x, weight, bias, initial_state, silu):
    batch, length, dim = x.shape
    arrays, keep = _inputs(x, weight, bias, initial_state)
    y = torch.empty(batch, length, dim, dtype=torch.float32)
    kw = dict(arrays, y=y.numpy().reshape(-1), length=length, dim=dim, silu=bool(silu))
    njobs, nwork = _jobs(batch, length, dim, weight.shape[1])
    _run_jobs(lambda w, j0, j1: _conv_fwd_kernel(j0, j1, **kw), njobs, nwork)
    del keep
    return y


def _conv_bwd(x, weight, bias, initial_state, silu, dy, dx_out=None):
    """fp32 (dx, d weight (D, W), d bias (D,), d initial_state (B, D, W-1) or None). ``dx_out``: an
    fp32 (B, L, D) view with unit channel stride (the x half of the mixer's dxz) that dx is written
    into and returned as."""
    batch, length, dim = x.shape
    width = weight.shape[1]
    arrays, keep = _inputs(x, weight, bias, initial_state)
    njobs, nwork = _jobs(batch, length, dim, weight.shape[1])
    f32 = dict(dtype=torch.float32)
    dy = dy.detach().float().contiguous()
    dv = torch.empty(batch, length, dim, **f32)
    if dx_out is not None:  # written in place: _flat must not copy it
        assert dx_out.dtype == torch.float32 and dx_out.stride(-1) == 1 and dx_out.shape == x.shape
    dx = dx_out if dx_out is not None else torch.empty(batch, length, dim, **f32)
    dx_flat, sdx, _ = _flat(dx)
    dw_p = torch.zeros(nwork, TAPS, dim, **f32)
    db_p = torch.zeros(nwork, dim, **f32)
    flat = (lambda t: t.numpy().reshape(-1))
    kw = dict(arrays, dy=flat(dy), dv=flat(dv), dw_p=flat(dw_p), db_p=flat(db_p), length=length, dim=dim,
              silu=bool(silu))
    _run_jobs(lambda w, j0, j1: _conv_bwd_dv_kernel(j0, j1, w, **kw), njobs, nwork)
    w_T, zero = arrays["w_T"], np.zeros(dim, np.float32)
    _run_jobs(lambda w, j0, j1: _conv_bwd_dx_kernel(j0, j1, flat(dv), zero, w_T, dx_flat, sdx, length, dim),
              njobs, nwork)
    dh0 = None
    if initial_state is not None:
        # input j - (W - 1) (before t = 0) meets tap k at output step j - k
        wf = weight.detach().float()
        dh0 = torch.zeros(batch, dim, width - 1, **f32)
        for j in range(width - 1):
            for k in range(j + 1):
                if j - k < length:
                    dh0[:, :, j] += wf[:, k] * dv[:, j - k, :]
    del keep
    dw = (dw_p.sum(0) if nwork > 1 else dw_p[0])[TAPS - width:].t()
    return dx, dw, (db_p.sum(0) if nwork > 1 else db_p[0]), dh0


# ----------------------------------------------------------------------------- autograd
class _CausalConv1dNumba(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, initial_state, silu):
        y = _conv_fwd(x, weight, bias, initial_state, silu)
        ctx.silu = silu
        ctx.save_for_backward(x, weight, bias, initial_state)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, initial_state = ctx.saved_tensors
        dx, dw, db, dh0 = _conv_bwd(x, weight, bias, initial_state, ctx.silu, dy)
        cast = (lambda g, ref: None if ref is None or g is None else g.to(ref.dtype))
        return cast(dx, x), cast(dw, weight), cast(db, bias), cast(dh0, initial_state), None


# ----------------------------------------------------------------------------- public function
def causal_conv1d_numba(x, weight, bias=None, activation=None, initial_state=None, return_final_state=False):
    """Compiled CPU causal conv1d; same contract as :func:`mamba_genome.kernels.causal_conv1d`.

    x (B, L, D) fp32 / bf16 / fp16 on CPU, computed in fp32; y in x's dtype; the final state
    (B, D, W-1) is the last W - 1 inputs (from ``initial_state`` where L < W - 1).
    """
    batch, length, dim = x.shape
    width = weight.shape[1]
    silu = activation == "silu"
    if length == 0:
        from .parallel import causal_conv1d_torch

        return causal_conv1d_torch(x, weight, bias=bias, activation=activation, initial_state=initial_state,
                                   return_final_state=return_final_state)
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias, initial_state))
    if need_grad:
        y = _CausalConv1dNumba.apply(x, weight, bias, initial_state, silu)
    else:
        y = _conv_fwd(x, weight, bias, initial_state, silu).to(x.dtype)
    if not return_final_state:
        return y
    tail = x[:, max(0, length - (width - 1)):].transpose(1, 2)             # (B, D, <= W-1)
    if tail.shape[2] < width - 1:
        prev = (initial_state.to(x.dtype) if initial_state is not None
                else x.new_zeros(batch, dim, width - 1))
        tail = torch.cat([prev, tail], dim=2)[:, :, -(width - 1):]
    return y, tail.contiguous()
