"""One autograd Function for the Mamba mixer's inner path on the compiled CPU (numba) kernels.

    xz (B, L, 2D) -> x, z -> u = silu(conv1d(x)) -> (dt, B, C) = x_proj(u)
                  -> y = selective_scan(u, dt_proj(dt), A, B, C, D, z) -> out = out_proj(y)

The same kernels and the same fp32 arithmetic as autograd over the composition (``reference.py``
with ``backend="numba"``), in one node per layer instead of about eight. The backward writes dx
(the conv kernel) and dz (the scan kernel) straight into the two halves of one (B, L, 2D)
gradient: through the composition, autograd undoes the split of xz with a ``torch.cat`` of the
whole (B, L, 2D) gradient in every layer, 3-4% of a tiny CPU training step. u and y are kept for
the backward (on the CPU memory is not the limit; the Triton path recomputes them).

Used for fp32 training on CPU (the CPU default); under autocast, in other dtypes or without
autograd the composition runs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..causal_conv1d import cpu as _conv
from ..selective_scan import cpu as _scan


class MambaInnerNumbaFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_proj_b, A, D, out_w, out_b):
        d_inner, d_state = A.shape
        dt_rank = dt_proj_w.shape[1]
        x, z = xz[..., :d_inner], xz[..., d_inner:]
        u = _conv._conv_fwd(x, conv_w, conv_b, None, True)                       # (B, L, D) fp32
        x_dbl = F.linear(u, x_proj_w)                                             # (B, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
        y, _, seg = _scan._scan_fwd(u, dt, A, B, C, D, z, dt_proj_b, True, None, store_seg=True, wdt=dt_proj_w)
        out = F.linear(y, out_w, out_b)
        ctx.save_for_backward(xz, conv_w, conv_b, u, x_dbl, x_proj_w, dt_proj_w, dt_proj_b, A, D, out_w, out_b,
                              y, seg)
        return out

    @staticmethod
    def backward(ctx, dout):
        (xz, conv_w, conv_b, u, x_dbl, x_proj_w, dt_proj_w, dt_proj_b, A, D, out_w, out_b, y,
         seg) = ctx.saved_tensors
        d_inner, d_state = A.shape
        dt_rank = dt_proj_w.shape[1]
        x, z = xz[..., :d_inner], xz[..., d_inner:]
        dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
        dout = dout.float().contiguous()
        dout2 = dout.reshape(-1, dout.shape[-1])
        dy = dout @ out_w                                                          # (B, L, D)
        dout_w = dout2.t() @ y.reshape(-1, d_inner)
        dout_b = dout2.sum(0) if out_b is not None else None
        dxz = torch.empty(xz.shape, dtype=torch.float32)
        du, ddt, dA, dB, dC, dD, _, dbias, _, ddt_w = _scan._scan_bwd(
            u, dt, A, B, C, D, z, dt_proj_b, True, seg, dy, None, wdt=dt_proj_w, dz_out=dxz[..., d_inner:])
        del dy
        dx_dbl = torch.cat([ddt, dB, dC], dim=-1).reshape(-1, dt_rank + 2 * d_state)   # (B*L, R + 2N): small
        dx_proj_w = dx_dbl.t() @ u.reshape(-1, d_inner)
        du.view(-1, d_inner).addmm_(dx_dbl, x_proj_w)                             # du += dx_dbl @ W_x
        _, dconv_w, dconv_b, _ = _conv._conv_bwd(x, conv_w, conv_b, None, True, du, dx_out=dxz[..., :d_inner])
        return (dxz, dconv_w, dconv_b if conv_b is not None else None, dx_proj_w, ddt_w, dbias, dA, dD, dout_w,
                dout_b)


def fused_applies(xz, *params) -> bool:
    """Whether the fused Function runs: autograd on, some input needs a gradient, no autocast, and
    xz and every parameter fp32 on the CPU."""
    if not torch.is_grad_enabled() or torch.is_autocast_enabled("cpu"):
        return False
    tensors = [t for t in (xz, *params) if t is not None]
    return (any(t.requires_grad for t in tensors)
            and all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors))


def mamba_inner_numba(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
                      out_proj_weight, out_proj_bias=None):
    """Fused CPU path of :func:`mamba_genome.kernels.mamba_inner` (see there; fp32, autograd)."""
    return MambaInnerNumbaFn.apply(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
                                   out_proj_weight, out_proj_bias)
