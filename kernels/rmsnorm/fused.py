"""Triton fused RMSNorm + residual add, forward and backward (training at 1 Mbp).

Per row r of the flattened (M, D) input (see README.md in this folder):

    res_r = x_r + residual_r                (or x_r when there is no residual)
    rstd  = 1 / sqrt(mean_d(res_r^2) + eps)
    y_r   = res_r * rstd * weight

Why fused: at seq_len 2^20 a PyTorch RMSNorm with a fp32 residual launches ~8
elementwise kernels per block and materialises several fp32 (B, L, D) temporaries;
here the forward reads x (+ residual) once and writes y and res_out once, and the
backward reads res_out, dy (+ d res_out) once and writes dx (+ d residual) once.

Forward: one program per block of BLOCK_M rows (2D tile BLOCK_M x BLOCK_N, BLOCK_N =
next power of two >= D); rstd (fp32, one per row) is saved for the backward.
Backward: a fixed grid of G programs, each walking row blocks pid, pid+G, ...; it
accumulates its share of dweight in registers and writes one fp32 partial row, and
the G partials are summed on the host side (G is a few times the SM count).
All row offsets are 64-bit, so M * D may exceed 2^31.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..utils import num_sms, triton_interpret

__all__ = ["rms_norm_triton"]

_MAX_D = 16384          # widest row kept in registers; wider rows fall back to PyTorch


# ----------------------------------------------------------------------------- kernels
@triton.jit
def _rms_norm_fwd_kernel(
    x_ptr, res_in_ptr, w_ptr, y_ptr, res_out_ptr, rstd_ptr,
    M, D, s_x, s_ri, s_y, s_ro, eps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_RES: tl.constexpr, STORE_RES: tl.constexpr, ROUND_RES: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)          # (BLOCK_M,) int64
    cols = tl.arange(0, BLOCK_N)
    rmask = rows < M
    cmask = cols < D
    mask = rmask[:, None] & cmask[None, :]
    r = tl.load(x_ptr + rows[:, None] * s_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        r += tl.load(res_in_ptr + rows[:, None] * s_ri + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if STORE_RES:
        tl.store(res_out_ptr + rows[:, None] * s_ro + cols[None, :],
                 r.to(res_out_ptr.dtype.element_ty), mask=mask)
        if ROUND_RES:
            # residual_out is narrower than fp32: normalise the rounded value, as PyTorch does
            r = r.to(res_out_ptr.dtype.element_ty).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(r * r, axis=1) / D + eps)                 # (BLOCK_M,)
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    y = r * rstd[:, None] * w[None, :]
    tl.store(y_ptr + rows[:, None] * s_y + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + rows, rstd, mask=rmask)


@triton.jit
def _rms_norm_bwd_kernel(
    r_ptr, w_ptr, rstd_ptr, dy_ptr, dres_ptr, dx_ptr, dri_ptr, dw_ptr,
    M, D, G, ITERS, s_r, s_dy, s_dres, s_dx, s_dri,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_DY: tl.constexpr, HAS_DRES: tl.constexpr, HAS_DRI: tl.constexpr,
):
    """dr = rstd * (dy*w - rhat * mean(dy*w*rhat)) + dres ; dx = dr ; d residual_in = dr."""
    pid = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    cmask = cols < D
    w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for it in range(0, ITERS):
        blk = pid + it * G
        rows = blk * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
        rmask = rows < M
        mask = rmask[:, None] & cmask[None, :]
        dr = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if HAS_DY:
            r = tl.load(r_ptr + rows[:, None] * s_r + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)
            dy = tl.load(dy_ptr + rows[:, None] * s_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            rhat = r * rstd[:, None]
            dw += tl.sum(dy * rhat, axis=0)
            g = dy * w[None, :]
            c = tl.sum(g * rhat, axis=1) / D
            dr = (g - rhat * c[:, None]) * rstd[:, None]
        if HAS_DRES:
            dr += tl.load(dres_ptr + rows[:, None] * s_dres + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(dx_ptr + rows[:, None] * s_dx + cols[None, :], dr.to(dx_ptr.dtype.element_ty), mask=mask)
        if HAS_DRI:
            tl.store(dri_ptr + rows[:, None] * s_dri + cols[None, :], dr.to(dri_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_ptr + pid * BLOCK_N + cols, dw, mask=cmask)


# ----------------------------------------------------------------------------- launchers
def _block_sizes(d: int) -> tuple[int, int, int]:
    block_n = triton.next_power_of_2(max(d, 1))
    block_m = max(1, min(64, 4096 // block_n))   # ~4K fp32 values per tile
    num_warps = 4 if block_m * block_n <= 4096 else 8
    return block_m, block_n, num_warps


def _rows(t: torch.Tensor, d: int) -> torch.Tensor:
    """(..., D) -> (M, D) with unit stride on the last axis (a view when possible)."""
    t2 = t.reshape(-1, d)
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def _rms_norm_fwd(x2, r2, w, eps, res_dtype, store_res, y_dtype=None):
    """(y, res_out, rstd); y in ``y_dtype`` (default x's)."""
    m, d = x2.shape
    block_m, block_n, num_warps = _block_sizes(d)
    y = torch.empty_like(x2, dtype=y_dtype or x2.dtype)
    res = torch.empty(m, d, device=x2.device, dtype=res_dtype) if store_res else x2
    rstd = torch.empty(m, device=x2.device, dtype=torch.float32)
    if m > 0:
        _rms_norm_fwd_kernel[(triton.cdiv(m, block_m),)](
            x2, r2 if r2 is not None else x2, w, y, res, rstd,
            m, d, x2.stride(0), r2.stride(0) if r2 is not None else 0, y.stride(0), res.stride(0), eps,
            BLOCK_M=block_m, BLOCK_N=block_n, HAS_RES=r2 is not None, STORE_RES=store_res,
            ROUND_RES=store_res and res_dtype != torch.float32, num_warps=num_warps)
    return y, res, rstd


def _num_programs(m: int, block_m: int, device) -> int:
    blocks = triton.cdiv(m, block_m)
    if device.type == "cuda":
        return max(1, min(blocks, 8 * num_sms(device)))
    return max(1, min(blocks, 4))


def _rms_norm_bwd(r2, w, rstd, dy2, dres2, x_dtype, ri_dtype):
    m, d = r2.shape
    block_m, block_n, num_warps = _block_sizes(d)
    dx = torch.empty(m, d, device=r2.device, dtype=x_dtype)
    dri = torch.empty(m, d, device=r2.device, dtype=ri_dtype) if ri_dtype is not None else None
    g = _num_programs(m, block_m, r2.device)
    iters = triton.cdiv(triton.cdiv(m, block_m), g)
    dw_part = torch.empty(g, block_n, device=r2.device, dtype=torch.float32)
    if m > 0:
        _rms_norm_bwd_kernel[(g,)](
            r2, w, rstd, dy2 if dy2 is not None else r2, dres2 if dres2 is not None else r2, dx,
            dri if dri is not None else dx, dw_part, m, d, g, iters,
            r2.stride(0), dy2.stride(0) if dy2 is not None else 0,
            dres2.stride(0) if dres2 is not None else 0, dx.stride(0), dri.stride(0) if dri is not None else 0,
            BLOCK_M=block_m, BLOCK_N=block_n, HAS_DY=dy2 is not None, HAS_DRES=dres2 is not None,
            HAS_DRI=dri is not None, num_warps=num_warps)
    else:
        dw_part.zero_()
    dw = dw_part[:, :d].sum(0)
    return dx, dri, dw


# ----------------------------------------------------------------------------- autograd
class RMSNormFn(torch.autograd.Function):
    """Outputs (y, res_out); res_out is returned only when it is a new tensor (store_res)."""

    @staticmethod
    def forward(ctx, x, weight, residual, eps, res_dtype, store_res):
        d = x.shape[-1]
        x2 = _rows(x, d)
        r2 = _rows(residual, d) if residual is not None else None
        w = weight.contiguous()
        y, res, rstd = _rms_norm_fwd(x2, r2, w, eps, res_dtype, store_res)
        ctx.save_for_backward(res, w, rstd)
        ctx.shape = x.shape
        ctx.x_dtype, ctx.w_dtype = x.dtype, weight.dtype
        ctx.ri_dtype = residual.dtype if residual is not None else None
        ctx.store_res = store_res
        ctx.set_materialize_grads(False)
        y = y.view(x.shape)
        if store_res:
            return y, res.view(x.shape)
        return y

    @staticmethod
    def backward(ctx, dy, dres=None):
        res, w, rstd = ctx.saved_tensors
        d = ctx.shape[-1]
        if dy is None and dres is None:
            return None, None, None, None, None, None
        dy2 = _rows(dy, d) if dy is not None else None
        dres2 = _rows(dres, d) if (ctx.store_res and dres is not None) else None
        need_ri = ctx.ri_dtype is not None and ctx.needs_input_grad[2]
        dx, dri, dw = _rms_norm_bwd(res, w, rstd, dy2, dres2, ctx.x_dtype, ctx.ri_dtype if need_ri else None)
        dx = dx.view(ctx.shape)
        dri = dri.view(ctx.shape) if dri is not None else None
        dw = dw.to(ctx.w_dtype) if (ctx.needs_input_grad[1] and dy is not None) else None
        return dx, dw, dri, None, None, None


# ----------------------------------------------------------------------------- public
def rms_norm_triton(x, weight, residual=None, eps: float = 1e-5, residual_in_fp32: bool = True):
    """Fused RMSNorm with optional residual add; same contract as ``rms_norm_torch``.

    Args:
        x:        (..., D) input, typically (B, L, D), fp32 / bf16 / fp16.
        weight:   (D,) scale.
        residual: (..., D) optional; added to ``x`` before the norm.
        eps:      added to the mean square.
        residual_in_fp32: keep ``residual_out`` in fp32 (else x + residual's promoted dtype).

    Returns:
        (normed, residual_out): ``normed`` in x's dtype; ``residual_out`` = x + residual
        (or x itself when there is no residual and no upcast is needed), the value the next
        block adds to.

    Example:
        >>> y, res = rms_norm_triton(x.cuda().bfloat16(), w.cuda(), residual=res_prev)
    """
    if x.device.type != "cuda" and not triton_interpret():
        raise ValueError("rms_norm_triton needs CUDA tensors (or TRITON_INTERPRET=1)")
    d = x.shape[-1]
    if weight.shape != (d,):
        raise ValueError(f"weight must have shape ({d},), got {tuple(weight.shape)}")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual must have x's shape {tuple(x.shape)}, got {tuple(residual.shape)}")
    if d > _MAX_D:
        from . import rms_norm_torch

        return rms_norm_torch(x, weight, residual=residual, eps=eps, residual_in_fp32=residual_in_fp32)
    if residual_in_fp32:
        res_dtype = torch.float32
    elif residual is not None:
        res_dtype = torch.promote_types(x.dtype, residual.dtype)
    else:
        res_dtype = x.dtype
    store_res = residual is not None or res_dtype != x.dtype
    out = RMSNormFn.apply(x, weight, residual, float(eps), res_dtype, store_res)
    if store_res:
        return out
    # residual_out is x itself (same values and dtype as rms_norm_torch returns); autograd
    # adds its gradient to x's directly, so nothing extra is stored or written.
    return out, x
