"""Single-step selective-scan update for generation and streaming inference.

One position of the recurrence in ``naive.py``, applied in place to a carried
state (B, D, N). Feeding a sequence token by token through this function
matches the full-sequence scan (tests/kernels/test_step.py).

``selective_state_update_torch`` is plain PyTorch; ``selective_state_update_triton`` does
the same step in one Triton launch (grid: channel blocks x batch), for decoding on CUDA.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def selective_state_update_torch(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """state (B,D,N) float32, updated in place; x, dt, z (B,D); A (D,N); B, C (B,N); D, dt_bias (D,).

    Returns y (B, D) in x's dtype.
    """
    f = state.dtype
    dtf = dt.to(f)
    if dt_bias is not None:
        dtf = dtf + dt_bias.to(f)
    if dt_softplus:
        dtf = F.softplus(dtf)
    xf = x.to(f)
    dA = torch.exp(dtf.unsqueeze(-1) * A.to(f))
    dBx = (dtf * xf).unsqueeze(-1) * B.to(f).unsqueeze(1)
    state.mul_(dA).add_(dBx)
    y = torch.einsum("bdn,bn->bd", state, C.to(f))
    if D is not None:
        y = y + xf * D.to(f)
    if z is not None:
        y = y * F.silu(z.to(f))
    return y.to(x.dtype)


# ----------------------------------------------------------------------------- Triton step
@functools.lru_cache(maxsize=None)
def _state_update_kernel():
    """Build the Triton kernel on first use.

    ``triton.jit`` decides at decoration time whether to compile or interpret
    (TRITON_INTERPRET), and this module is imported with the package; building
    lazily lets a test session set TRITON_INTERPRET after importing the package.
    """
    import triton
    import triton.language as tl

    @triton.jit
    def _state_update(
        state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
        Dn, N, s_sb, s_sd, s_sn, s_xb, s_dtb, s_bb, s_cb, s_zb,
        BD: tl.constexpr, NP: tl.constexpr,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    ):
        # one step for (BD channels, all N states) of one batch row; state updated in place
        pid_d = tl.program_id(0).to(tl.int64)
        pid_b = tl.program_id(1).to(tl.int64)
        offs_d = pid_d * BD + tl.arange(0, BD)
        offs_n = tl.arange(0, NP)
        md, mn = offs_d < Dn, offs_n < N
        mdn = md[:, None] & mn[None, :]
        sp = state_ptr + pid_b * s_sb + offs_d[:, None] * s_sd + offs_n[None, :] * s_sn
        h = tl.load(sp, mask=mdn, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + pid_b * s_xb + offs_d, mask=md, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + pid_b * s_dtb + offs_d, mask=md, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt += tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
        if SOFTPLUS:
            dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(dt)))
        A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mdn, other=0.0).to(tl.float32)
        Bv = tl.load(B_ptr + pid_b * s_bb + offs_n, mask=mn, other=0.0).to(tl.float32)
        Cv = tl.load(C_ptr + pid_b * s_cb + offs_n, mask=mn, other=0.0).to(tl.float32)
        h = tl.exp(dt[:, None] * A) * h + (dt * x)[:, None] * Bv[None, :]
        tl.store(sp, h.to(state_ptr.dtype.element_ty), mask=mdn)
        y = tl.sum(h * Cv[None, :], 1)
        if HAS_D:
            y += x * tl.load(D_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_ptr + pid_b * s_zb + offs_d, mask=md, other=0.0).to(tl.float32)
            y *= z * tl.sigmoid(z)
        tl.store(y_ptr + pid_b * Dn + offs_d, y.to(y_ptr.dtype.element_ty), mask=md)

    return _state_update


def selective_state_update_triton(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """Triton version of :func:`selective_state_update_torch` (same arguments, same result).

    state (B, D, N) float32 updated in place; x, dt, z (B, D); A (D, N); B, C (B, N);
    D, dt_bias (D,). Returns y (B, D) in x's dtype.
    """
    import triton

    batch, d_inner = x.shape
    d_state = A.shape[1]
    x, dt, B, C = (t if t.stride(-1) == 1 else t.contiguous() for t in (x, dt, B, C))
    z = z if z is None or z.stride(-1) == 1 else z.contiguous()
    A = A.float().contiguous()
    y = torch.empty(batch, d_inner, device=x.device, dtype=x.dtype)
    NP = triton.next_power_of_2(d_state)
    BD = max(1, min(triton.next_power_of_2(d_inner), max(16, 2048 // NP)))
    zz = z if z is not None else x
    _state_update_kernel()[(triton.cdiv(d_inner, BD), batch)](
        state, x, dt, A, B, C, D if D is not None else A, zz, dt_bias if dt_bias is not None else A, y,
        d_inner, d_state, state.stride(0), state.stride(1), state.stride(2),
        x.stride(0), dt.stride(0), B.stride(0), C.stride(0), zz.stride(0),
        BD=BD, NP=NP, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None,
        SOFTPLUS=bool(dt_softplus), num_warps=4)
    return y
