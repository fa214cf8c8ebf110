"""One autograd Function for the Mamba mixer's inner path on the Triton backend.

    xz (B, L, 2D) -> x, z -> u = silu(conv1d(x)) -> (dt, B, C) = x_proj(u)
                  -> y = selective_scan(u, dt_proj(dt), A, B, C, D, z) -> out = out_proj(y)

What the op-by-op composition (``reference.py``) keeps for the backward and this Function does not:
    u (B, L, D)     recomputed by the conv kernel in the backward (cheap: one pass over x)
    y (B, L, D)     written by the scan's backward kernel, which has every h_t in hand anyway;
                    out_proj's weight gradient is formed after the scan's backward
    delta (B, L, D) the dt_proj output, recomputed as before (a rank-R GEMM)
That is 2 x (B, L, D) less per layer: 1 GiB for a 1.4m layer at 2^20 in bf16, 2 GiB for 7m.
The backward also writes dx and dz straight into the two halves of one (B, L, 2D) gradient (no
torch.cat) and adds x_proj's input gradient to the scan's du inside the GEMM (no extra add).
"""
from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F



def _chunk(op: str):
    """The Triton module of an op, looked up per call (tests reload these modules to switch
    Triton's interpreter on, so a reference taken at import could go stale)."""
    return importlib.import_module(f"..{op}.chunk", __package__)


def _linear(x, w, b=None):
    """x @ w.T (+ b) in x's dtype, with autocast off: the Function casts explicitly."""
    return F.linear(x, w.to(x.dtype), b.to(x.dtype) if b is not None else None)


class MambaInnerFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_proj_b, A, D, out_w, out_b, replay, state_every):
        d_inner = A.shape[0]
        x, z = xz[..., :d_inner], xz[..., d_inner:]
        Af, Df = A.float().contiguous(), D.float().contiguous()
        bias = dt_proj_b.float().contiguous()
        conv_wc = conv_w.contiguous()
        kept = replay[0].take(replay[1]) if replay is not None else None  # (hs, x_dbl) or None
        with torch.autocast(xz.device.type, enabled=False):
            if kept is not None:
                hs, x_dbl = kept
                out = xz.new_empty(*xz.shape[:2], out_w.shape[0])  # a recomputation: not read
            else:
                u = _chunk("causal_conv1d")._conv_fwd(x, conv_wc, conv_b, None, True)
                x_dbl = _linear(u, x_proj_w)
                dt, B, C = _split(x_dbl, dt_proj_w.shape[1], A.shape[1])
                delta = _linear(dt, dt_proj_w)
                y, _, hs = _chunk("selective_scan")._selective_scan_fwd(u, delta, Af, B, C, Df, z, bias, True, None, False,
                                                                       state_every=state_every)
                del u, delta
                out = _linear(y, out_w, out_b)
                if replay is not None:
                    replay[0].put(replay[1], hs, x_dbl)
        ctx.save_for_backward(xz, conv_wc, conv_b, x_dbl, x_proj_w, dt_proj_w, Af, Df, bias, out_w, out_b, hs)
        ctx.dtypes = (A.dtype, D.dtype, dt_proj_b.dtype)
        ctx.state_every = state_every
        return out

    @staticmethod
    def backward(ctx, dout):
        xz, conv_w, conv_b, x_dbl, x_proj_w, dt_proj_w, Af, Df, bias, out_w, out_b, hs = ctx.saved_tensors
        d_inner, d_state = Af.shape
        dt_rank = dt_proj_w.shape[1]
        dtype = xz.dtype
        x, z = xz[..., :d_inner], xz[..., d_inner:]
        with torch.autocast(xz.device.type, enabled=False):
            u = _chunk("causal_conv1d")._conv_fwd(x, conv_w, conv_b, None, True)
            dt, B, C = _split(x_dbl, dt_rank, d_state)
            Wdt = dt_proj_w.to(dtype)
            delta = F.linear(dt, Wdt)
            dout = dout.to(dtype).contiguous()
            dy = dout @ out_w.to(dtype)                                         # (B, L, D)
            # one (B, L, 2D) buffer for dxz; until the conv backward writes dx into its first half,
            # that half holds y. du overwrites dy, ddelta overwrites delta (see _selective_scan_bwd):
            # three (B, L, D) tensors fewer at the peak of the layer's backward
            dxz = torch.empty_like(xz, memory_format=torch.contiguous_format)
            y = dxz[..., :d_inner]
            du, ddelta, dA, dB, dC, dD, _, dbias, _ = _chunk("selective_scan")._selective_scan_bwd(
                u, delta, Af, B, C, Df, z, bias, True, hs, dy, None, False,
                ddelta_out=delta, dz_out=dxz[..., d_inner:], y_out=y, state_every=ctx.state_every, du_out=dy)
            del dy
            d_model = out_w.shape[0]
            dout2 = dout.reshape(-1, d_model)
            dout_w = (dout2.t() @ dxz.view(-1, 2 * d_inner)[:, :d_inner]).to(out_w.dtype)
            dout_b = dout2.sum(0, dtype=torch.float32).to(out_b.dtype) if out_b is not None else None
            del y, dout, dout2
            ddt = ddelta @ Wdt                                                 # (B, L, R)
            ddt_w = (ddelta.reshape(-1, d_inner).t() @ dt.reshape(-1, dt_rank)).to(dt_proj_w.dtype)
            del ddelta, delta
            dx_dbl = torch.cat([ddt, dB.to(dtype), dC.to(dtype)], dim=-1).reshape(-1, dt_rank + 2 * d_state)
            dx_proj_w = (dx_dbl.t() @ u.reshape(-1, d_inner)).to(x_proj_w.dtype)
            du.view(-1, d_inner).addmm_(dx_dbl, x_proj_w.to(dtype))         # du += dx_dbl @ W_x
            del u, dx_dbl
            _, dconv_w, dconv_b, _ = _chunk("causal_conv1d")._conv_bwd(x, conv_w, conv_b, None, True, du, None,
                                                     dx_out=dxz[..., :d_inner])
        a_dt, d_dt, b_dt = ctx.dtypes
        return (dxz, dconv_w.to(conv_w.dtype), dconv_b.to(conv_b.dtype) if conv_b is not None else None,
                dx_proj_w, ddt_w, dbias.to(b_dt), dA.to(a_dt), dD.to(d_dt), dout_w, dout_b, None, None)


def _split(x_dbl, dt_rank, d_state):
    return torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)


def mamba_inner_triton(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
                       out_proj_weight, out_proj_bias=None, replay=None, state_every=None):
    """Triton path of :func:`mamba_genome.kernels.mamba_inner` (see there)."""
    return MambaInnerFn.apply(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
                              out_proj_weight, out_proj_bias, replay, state_every)
