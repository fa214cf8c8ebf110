"""The memory planner: micro-batch and memory policy for one sequence-length stage.

Given the architecture, the window length, the windows each device must process
per optimizer step and the device's free memory, :func:`plan_stage` returns the
micro-batch and the :class:`~mamba_genome.model.runtime.RuntimeOptions`
(activation checkpointing, bf16 checkpoints, scan-state spacing, un-checkpointed
layers) expected to give the highest tokens/s that fits. The training engine
calls it once per stage; users never need to.

The estimate is ``fixed + micro_batch * seq_len * bytes_per_token`` where
``bytes_per_token`` depends on the architecture and the policy. Preference order,
fastest first (H100/H200 measurements in BENCHMARKS.md): no checkpointing with
scan states every 8 steps, no checkpointing every 64, checkpointing every 8,
checkpointing, checkpointing with bf16 checkpoints (least memory).

``memory="low"`` asks for the least-memory policy at any size.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..model.config import MambaConfig
from ..model.runtime import RuntimeOptions

MEMORY_MODES = ("auto", "low")
# Tokens per forward pass the GPU needs for full occupancy (H200: 2^14-token windows reach their best
# tokens/s from micro-batches of 32 = 2^19 tokens).
GPU_MICRO_TOKENS = 1 << 19
GPU_MEMORY_FRACTION = 0.85   # of the free memory, for the planned peak


@dataclass(frozen=True)
class MemoryPlan:
    seq_len: int
    micro_batch: int              # windows per device per forward pass
    runtime: RuntimeOptions
    est_bytes: int | None         # predicted peak memory of one step (None on CPU)
    reason: str                   # one line for the run log


def _policies(memory: str) -> list[tuple[str, RuntimeOptions]]:
    low = ("checkpointing, bf16 checkpoints", RuntimeOptions(gradient_checkpointing=True, checkpoint_bf16=True))
    if memory == "low":
        return [low]
    return [
        ("no checkpointing, scan states every 8", RuntimeOptions(scan_state_every=8)),
        ("no checkpointing", RuntimeOptions()),
        ("checkpointing, scan states every 8", RuntimeOptions(gradient_checkpointing=True, scan_state_every=8)),
        ("checkpointing", RuntimeOptions(gradient_checkpointing=True)),
        low,
    ]


def bytes_per_token(arch: MambaConfig, rt: RuntimeOptions) -> float:
    """Activation bytes one token costs in one training step (bf16 autocast, Triton kernels)."""
    d, n_layer, d_inner, n = arch.d_model, arch.n_layer, arch.d_inner, arch.d_state
    states = d_inner * n * 4 / rt.scan_state_every          # fp32 scan states kept for the backward
    if not rt.gradient_checkpointing:
        return n_layer * (20.0 * d + states)
    saved = (2.0 if rt.checkpoint_bf16 else 4.0) * d          # one residual-stream tensor per layer
    keep = states + 2.0 * (arch.dt_rank + 2 * n) if rt.checkpoint_keep_scan else 0.0
    plain = min(rt.checkpoint_skip, n_layer)
    return (n_layer - plain) * (saved + keep) + plain * (20.0 * d + states) + 24.0 * d  # + one live layer


def fixed_bytes(arch: MambaConfig) -> int:
    """Weights, gradients and AdamW state (fp32), plus a workspace margin."""
    params = arch.n_layer * (3 * arch.d_model * 2 * arch.d_inner + arch.d_inner * (arch.dt_rank + 2 * arch.d_state)
                             + arch.d_inner * (arch.dt_rank + arch.d_state + arch.d_conv + 3))
    return int(16 * params + (1 << 30))


def plan_stage(arch: MambaConfig, seq_len: int, per_device_batch: int, *, device_type: str,
               free_bytes: int | None, memory: str = "auto") -> MemoryPlan:
    """The micro-batch and memory policy for ``per_device_batch`` windows of ``seq_len`` tokens.

    ``device_type`` is ``"cuda"`` or ``"cpu"``; ``free_bytes`` the device's free memory
    (``torch.cuda.mem_get_info()[0]``; None on CPU). On CPU the whole per-device batch is one
    micro-batch and the default runtime is kept.
    """
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}, got {memory!r}")
    per_device_batch = max(1, int(per_device_batch))
    if device_type != "cuda" or free_bytes is None:
        return MemoryPlan(seq_len, per_device_batch, RuntimeOptions(), None, "CPU: one micro-batch per step")
    budget = GPU_MEMORY_FRACTION * free_bytes - fixed_bytes(arch)
    want = max(1, min(per_device_batch, GPU_MICRO_TOKENS // seq_len))
    best = None
    for name, rt in _policies(memory):
        per_window = bytes_per_token(arch, rt) * seq_len
        fits = int(budget // per_window) if budget > 0 else 0
        micro = min(want, fits)
        if micro < 1:
            continue
        if best is None or micro * seq_len > best[1] * seq_len * 1.5:   # a faster policy at >= 2/3 the tokens wins
            best = (name, micro, rt, per_window)
        if micro == want:
            break
    if best is None:   # nothing fits by the estimate: the least memory, one window, and let the probe decide
        name, rt = _policies("low")[0]
        best = (name, 1, rt, bytes_per_token(arch, rt) * seq_len)
    name, micro, rt, per_window = best
    est = int(fixed_bytes(arch) + micro * per_window)
    return MemoryPlan(seq_len, micro, rt, est, f"{name}, {micro} x {seq_len:,} tokens per forward "
                                                  f"(estimated peak {est / 2**30:.1f} GiB of {free_bytes / 2**30:.1f} free)")
