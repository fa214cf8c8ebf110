"""The Mamba mixer between in_proj and the residual add, as one op: conv1d + SiLU, x_proj,
dt_proj, selective scan with the D skip and the SiLU(z) gate, out_proj.

Files in this folder:
    reference.py  the same path as a composition of the public ops (reference / torch backends)
    fused.py      one autograd Function on the Triton kernels (CUDA default)
    cpu.py        one autograd Function on the compiled CPU kernels (fp32 CPU training)
    replay.py     ``ReplayCache``: lets a checkpointed layer's recomputation skip the scan

The fused backward recomputes u and y instead of saving them and writes dx, dz into one
gradient buffer: less memory and less glue than autograd over the composition, same values.
"""
from __future__ import annotations

from ..utils import check_shape, resolve_backend
from .replay import ReplayCache
from .reference import mamba_inner_composed

__all__ = ["mamba_inner", "mamba_inner_composed", "ReplayCache"]


def mamba_inner(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
                out_proj_weight, out_proj_bias=None, backend=None, replay=None, state_every=None):
    """Mamba mixer from the in_proj output to the out_proj output (Gu & Dao 2023, Alg. 2).

    Args:
        xz: (B, L, 2D) in_proj output: x = xz[..., :D], the gate z = xz[..., D:].
        conv_weight: (D, W) depthwise causal filter, W in 2..4; conv_bias: (D,) or None.
        x_proj_weight: (R + 2N, D): u -> (dt, B, C).
        dt_proj_weight: (D, R); dt_proj_bias: (D,), added before the softplus.
        A: (D, N) negative real; D: (D,) skip.
        out_proj_weight: (d_model, D); out_proj_bias: (d_model,) or None.
        backend: "reference", "torch", "numba" (CPU: one Function on the compiled kernels for fp32
            training, else the composition with them),
            "triton" or None (fastest available).
        replay: optional ``(ReplayCache, key)`` for activation checkpointing (Triton backend;
            ignored by the others): see :class:`ReplayCache`.
        state_every: steps between the scan states saved for the backward (Triton backend; a
            multiple of its 8-step tile; None: 64). 16 makes the scan backward about 10% faster
            at 4x the memory for those states: (L / state_every) x D x N fp32 per sequence.

    Returns:
        (B, L, d_model), in xz's dtype on the Triton backend (as autocast gives on the others).

    Example:
        >>> out = mamba_inner(xz, conv_w, conv_b, W_x, W_dt, b_dt, A, Dskip, W_out)
    """
    if xz.dim() != 3:
        raise ValueError(f"xz must have shape (batch, length, 2 * d_inner), got {tuple(xz.shape)}")
    d_inner = A.shape[0]
    check_shape("xz", xz, (xz.shape[0], xz.shape[1], 2 * d_inner))
    check_shape("dt_proj_weight", dt_proj_weight, (d_inner, None))
    check_shape("x_proj_weight", x_proj_weight, (dt_proj_weight.shape[1] + 2 * A.shape[1], d_inner))
    check_shape("out_proj_weight", out_proj_weight, (None, d_inner))
    backend = resolve_backend(backend, xz.device)
    args = (xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A, D,
            out_proj_weight, out_proj_bias)
    if backend == "triton":
        from .fused import mamba_inner_triton

        if xz.stride(-1) != 1:
            xz = xz.contiguous()
        return mamba_inner_triton(xz, *args[1:], replay=replay, state_every=state_every)
    if backend == "numba":
        from .cpu import fused_applies, mamba_inner_numba
        if fused_applies(*args):
            return mamba_inner_numba(*args)
    return mamba_inner_composed(*args, backend=backend)
