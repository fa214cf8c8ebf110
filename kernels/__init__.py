"""Sequence-mixing kernels for mamba-genome, importable as ``mamba_genome.kernels``.

One folder per op, each with a float64 naive reference, a vectorised PyTorch
path and Triton kernels (the CUDA default); the selective scan also has compiled
CPU kernels (numba, the CPU default when numba imports):

    selective_scan   Mamba-1 selective scan, full sequence (+ ``selective_state_update`` step)
    causal_conv1d    causal depthwise conv1d with optional streaming state
    rmsnorm          RMSNorm with optional fused residual add
    mamba_inner      the mixer from in_proj to out_proj as one op (conv, x_proj, scan, out_proj)

``backend=None`` picks the fastest available implementation; pass
``"reference"``, ``"torch"``, ``"numba"`` or ``"triton"`` to force one (ops
without a numba kernel run their PyTorch path under ``"numba"``).
"""
from .utils import available_backends, resolve_backend
from .selective_scan import selective_scan, selective_state_update
from .causal_conv1d import causal_conv1d, causal_conv1d_update
from .rmsnorm import rms_norm
from .mamba_inner import ReplayCache, mamba_inner

__all__ = [
    "selective_scan",
    "selective_state_update",
    "causal_conv1d",
    "causal_conv1d_update",
    "rms_norm",
    "mamba_inner",
    "ReplayCache",
    "available_backends",
    "resolve_backend",
]
