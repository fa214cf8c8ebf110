"""Activation checkpointing of one block, with the residual add left fused into its RMSNorm.

``torch.utils.checkpoint`` keeps a unit's *inputs*. A block's inputs are the previous mixer
output and the residual stream (the add happens inside this block's norm), so checkpointing it
that way keeps 1.5 tensors per layer; ``Block.forward_residual`` instead moves the add to the end
of the unit, which costs a separate add in the forward, a separate gradient sum in the backward
and a cast: about 2.6 ms per 7m layer at 2^20 on an H100.

``BlockCheckpointFn`` keeps the block as it is, fused add included, and saves its *output*
residual stream (fp32, 1 GiB per 7m layer at 2^20) instead of its inputs: that is all the
backward needs, since the norm's input is the sum, and d(hidden) = d(residual) = d(sum). The
backward recomputes the norm and the mixer from it (with a ``ReplayCache``, only in_proj: the
mixer's scan states come from the cache) and, on the Triton backend, runs the norm's fused
backward with the incoming residual gradient added in the same pass.
"""
from __future__ import annotations

import importlib

import torch

from mamba_genome.kernels import resolve_backend


def _norm_kernels():
    return importlib.import_module("mamba_genome.kernels.rmsnorm.fused")


class BlockCheckpointFn(torch.autograd.Function):
    """(hidden, residual) -> (mixer output, residual + hidden) of ``block``, saving only the latter."""

    @staticmethod
    def forward(ctx, hidden, residual, block, replay, *params):
        cfg = block.config
        with torch.no_grad():
            normed, res = block.norm(hidden, residual, residual_in_fp32=cfg.residual_in_fp32)
            out = block.mixer(normed, replay=replay)
        if res is hidden:            # no residual yet and no upcast: the stream is the input itself
            res = res.clone()
        dev = hidden.device.type
        ctx.autocast = (torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        ctx.block, ctx.replay = block, replay
        ctx.hidden_dtype = hidden.dtype
        ctx.residual_dtype = residual.dtype if residual is not None else None
        ctx.save_for_backward(res)
        return out, res

    @staticmethod
    def backward(ctx, d_out, d_res):
        (res,) = ctx.saved_tensors
        block = ctx.block
        norm, mixer = block.norm, block.mixer
        mixer_params = list(mixer.parameters())
        dev = res.device.type
        enabled, dtype = ctx.autocast
        # the Triton norm kernels are called directly (as the block's backend would; on CPU that is
        # the interpreter, under TRITON_INTERPRET=1) when the stream is fp32 and fits their rows
        fused = (resolve_backend(block.runtime.scan_backend, res.device) == "triton" and res.dtype == torch.float32
                 and res.shape[-1] <= _norm_kernels()._MAX_D)
        with torch.enable_grad(), torch.autocast(dev, dtype=dtype, enabled=enabled):
            if fused:
                k = _norm_kernels()
                d = res.shape[-1]
                r2 = res.reshape(-1, d)
                w = norm.weight.contiguous()
                normed, _, rstd = k._rms_norm_fwd(r2, None, w, norm.eps, res.dtype, False, y_dtype=ctx.hidden_dtype)
                leaf = normed.view(res.shape).detach().requires_grad_(True)
                out = mixer(leaf, replay=ctx.replay)
                grads = torch.autograd.grad(out, [leaf, *mixer_params], d_out, allow_unused=True)
                dres2 = d_res.reshape(-1, d) if d_res is not None else None
                if dres2 is not None and dres2.stride(-1) != 1:
                    dres2 = dres2.contiguous()
                dnormed = grads[0].reshape(-1, d)
                dx, dri, dw = k._rms_norm_bwd(r2, w, rstd, dnormed if dnormed.stride(-1) == 1 else dnormed.contiguous(),
                                              dres2, ctx.hidden_dtype, ctx.residual_dtype)
                dx = dx.view(res.shape)
                dri = dri.view(res.shape) if dri is not None else None
                dw = dw.to(norm.weight.dtype)
                mixer_grads = grads[1:]
            else:
                leaf = res.detach().requires_grad_(True)
                normed, _ = norm(leaf, None, residual_in_fp32=block.config.residual_in_fp32)
                out = mixer(normed.to(ctx.hidden_dtype) if normed.dtype != ctx.hidden_dtype else normed,
                            replay=ctx.replay)
                grads = torch.autograd.grad(out, [leaf, norm.weight, *mixer_params], d_out, allow_unused=True)
                dr = grads[0] if d_res is None else grads[0] + d_res
                dx = dr.to(ctx.hidden_dtype)
                dri = dr.to(ctx.residual_dtype) if ctx.residual_dtype is not None else None
                dw, mixer_grads = grads[1], grads[2:]
        return (dx, dri, None, None, dw, *mixer_grads)


def checkpointed_block(block, hidden, residual, replay=None):
    """``block(hidden, residual)`` with activation checkpointing that keeps only the output residual."""
    return BlockCheckpointFn.apply(hidden, residual, block, replay, block.norm.weight, *block.mixer.parameters())
