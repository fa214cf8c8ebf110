"""Compiled CPU RMSNorm with the fused residual add (numba): kernels, launchers, autograd Function.

    res = x + residual      (or x)
    y   = res * rstd * w,   rstd = 1 / sqrt(mean(res^2) + eps)

fp32 only (the CPU default; other dtypes take ``rms_norm_torch``). One pass over each row in the
forward (res, its sum of squares, y) and one in the backward, instead of the PyTorch path's
dozen small ops per norm (each a full pass over (B, L, D), most of them parallel regions).
A job is ROWS rows; the rows run in GIL-free threads as the other CPU kernels' jobs do, compiled
without numba's runtime (``cpu_common._jit``).

Backward, per row (D channels), with g = dy * w and s = sum_i res_i g_i:
    d res_i = rstd * g_i - res_i * rstd^3 * s / D  (+ the gradient of the returned res)
    d w_i  += dy_i * res_i * rstd                    (per-worker partials, summed after)
d x and d residual are both d res.
"""
from __future__ import annotations

import numpy as np
import torch

from ..cpu_common import _FLAGS, _ONE, _ZERO, _jit, _run_jobs, _threads

ROWS = 256       # rows per job


# ----------------------------------------------------------------------------- kernels
@_jit(_FLAGS)
def _rms_fwd_kernel(job0, job1, x, r, res, y, rstd, w, nrows, dim, has_res, store_res, eps):
    """Rows of jobs job0..job1-1: res = x + r (stored with ``store_res``), y, rstd (nrows,).
    x, r, res, y (nrows, D) contiguous, flat; w (D,)."""
    inv_d = _ONE / np.float32(dim)
    for row in range(job0 * ROWS, min(job1 * ROWS, nrows)):
        o = row * dim
        xr = x[o:o + dim]
        yr = y[o:o + dim]
        vr = res[o:o + dim] if store_res else xr
        if has_res:
            rr = r[o:o + dim]
            for c in range(dim):
                vr[c] = xr[c] + rr[c]
        ss = _ZERO
        for c in range(dim):
            ss += vr[c] * vr[c]
        s = _ONE / np.sqrt(ss * inv_d + eps)
        rstd[row] = s
        for c in range(dim):
            yr[c] = vr[c] * s * w[c]


@_jit(_FLAGS)
def _rms_bwd_kernel(job0, job1, part, res, rstd, w, dy, dres, dx, dw_p, nrows, dim, has_dres):
    """d res (into dx) for the rows of jobs job0..job1-1; adds d w into dw_p[part] (D,).
    res, dy, dres, dx (nrows, D) contiguous, flat."""
    inv_d = _ONE / np.float32(dim)
    dwp = dw_p[part * dim:(part + 1) * dim]
    for row in range(job0 * ROWS, min(job1 * ROWS, nrows)):
        o = row * dim
        vr = res[o:o + dim]
        gr = dy[o:o + dim]
        xr = dx[o:o + dim]
        s = rstd[row]
        dot = _ZERO
        for c in range(dim):
            dot += vr[c] * gr[c] * w[c]
        k = s * s * s * dot * inv_d
        if has_dres:
            rr = dres[o:o + dim]
            for c in range(dim):
                xr[c] = s * w[c] * gr[c] - vr[c] * k + rr[c]
        else:
            for c in range(dim):
                xr[c] = s * w[c] * gr[c] - vr[c] * k
        for c in range(dim):
            dwp[c] += gr[c] * vr[c] * s


# ----------------------------------------------------------------------------- launchers
def _jobs(nrows: int, dim: int) -> tuple[int, int]:
    njobs = -(-nrows // ROWS)
    return njobs, min(_threads(nrows * dim), njobs)


def _flat(t: torch.Tensor) -> np.ndarray:
    return t.detach().reshape(-1).numpy()


def _rms_fwd(x, weight, residual, eps):
    """(y, res or None, rstd): fp32, x / residual contiguous (..., D)."""
    dim = x.shape[-1]
    nrows = x.numel() // dim
    y = torch.empty_like(x)
    res = torch.empty_like(x) if residual is not None else None
    rstd = torch.empty(nrows, dtype=torch.float32)
    kw = dict(x=_flat(x), r=_flat(residual) if residual is not None else np.zeros(1, np.float32),
              res=_flat(res) if res is not None else np.zeros(1, np.float32), y=_flat(y), rstd=rstd.numpy(),
              w=_flat(weight), nrows=nrows, dim=dim, has_res=residual is not None, store_res=res is not None,
              eps=np.float32(eps))
    njobs, nwork = _jobs(nrows, dim)
    _run_jobs(lambda w_, j0, j1: _rms_fwd_kernel(j0, j1, **kw), njobs, nwork)
    return y, res, rstd


def _rms_bwd(res, rstd, weight, dy, dres):
    """(d res, d weight) fp32."""
    dim = res.shape[-1]
    nrows = res.numel() // dim
    njobs, nwork = _jobs(nrows, dim)
    dx = torch.empty_like(res)
    dw_p = torch.zeros(nwork, dim, dtype=torch.float32)
    dy = dy.detach().float().contiguous()
    has_dres = dres is not None
    kw = dict(res=_flat(res), rstd=rstd.numpy(), w=_flat(weight), dy=_flat(dy),
              dres=_flat(dres.detach().float().contiguous()) if has_dres else np.zeros(1, np.float32),
              dx=_flat(dx), dw_p=dw_p.numpy().reshape(-1), nrows=nrows, dim=dim, has_dres=has_dres)
    _run_jobs(lambda w_, j0, j1: _rms_bwd_kernel(j0, j1, w_, **kw), njobs, nwork)
    return dx, (dw_p[0] if nwork == 1 else dw_p.sum(0))


# ----------------------------------------------------------------------------- autograd
class _RMSNormResidualNumba(torch.autograd.Function):
    """(x, weight, residual) -> (y, res = x + residual)."""

    @staticmethod
    def forward(ctx, x, weight, residual, eps):
        y, res, rstd = _rms_fwd(x, weight, residual, eps)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(res, rstd, weight)
        return y, res

    @staticmethod
    def backward(ctx, dy, dres):
        res, rstd, weight = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(res)
        dx, dw = _rms_bwd(res, rstd, weight, dy, dres)
        return dx, dw, dx, None


class _RMSNormNumba(torch.autograd.Function):
    """(x, weight) -> y; the caller returns x itself as the residual stream."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        y, _, rstd = _rms_fwd(x, weight, None, eps)
        ctx.save_for_backward(x, rstd, weight)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, rstd, weight = ctx.saved_tensors
        dx, dw = _rms_bwd(x, rstd, weight, dy, None)
        return dx, dw, None


# ----------------------------------------------------------------------------- public function
def rms_norm_numba(x, weight, residual=None, eps: float = 1e-5):
    """Compiled CPU RMSNorm, same contract as :func:`mamba_genome.kernels.rms_norm` for fp32
    x, weight and residual: returns (y, residual_out), residual_out = x + residual (x itself
    without a residual)."""
    shape = x.shape
    xc = x.contiguous()
    if residual is None:
        need_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        if need_grad:
            y = _RMSNormNumba.apply(xc, weight.contiguous(), float(eps))
        else:
            y, _, _ = _rms_fwd(xc, weight.contiguous(), None, eps)
        return y.view(shape), x
    rc = residual.contiguous()
    need_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, weight, residual))
    if need_grad:
        y, res = _RMSNormResidualNumba.apply(xc, weight.contiguous(), rc, float(eps))
    else:
        y, res, _ = _rms_fwd(xc, weight.contiguous(), rc, eps)
    return y.view(shape), res.view(shape)
