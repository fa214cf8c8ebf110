"""The memory planner: micro-batch and memory policy for one sequence-length stage, and its probe.

Given the architecture, the window length, the windows each device must process per optimizer
step and the device's free memory, :func:`plan_stage` returns the micro-batch and the
:class:`~mamba_genome.model.runtime.RuntimeOptions` (activation checkpointing, bf16 checkpoints,
scan-state spacing, un-checkpointed layers) expected to give the highest tokens/s that fits.
:func:`probe_stage` then runs one real forward+backward at that plan and steps down (a smaller
micro-batch, then a policy that needs less memory) on an out-of-memory error or a peak above the
budget. The training engine calls both once per stage (the probe on a single CUDA device, at the
start of the stage, before its loader is built); users never need to.

Two models, each checked against measurements:

* **Memory** (:func:`estimate_bytes`): ``fixed + tokens * bytes_per_token``. ``bytes_per_token``
  is counted from what the code keeps (bf16 autocast, Triton kernels, fp32 residual stream;
  ``d`` = d_model, ``D`` = d_inner, ``R`` = dt_rank, ``N`` = d_state, ``S`` = scan_state_every):

  - a plain layer (``model/block.py`` + ``kernels/mamba_inner/fused.py``) keeps the fp32 residual
    stream its norm saves (4d), the bf16 norm output in_proj saves (2d), ``xz`` (4D), the x_proj
    output (2(R + 2N)), the norm's rstd (4) and the scan's segment states (4DN/S);
  - a checkpointed layer (``model/recompute.py``) keeps its output residual stream (4d) and, with
    ``checkpoint_keep_scan`` (``ReplayCache``), the segment states and x_proj output; with
    ``checkpoint_bf16`` only a bf16 copy of its input (2d);
  - the backward of one layer adds its workspace: u, delta, dy (2D each), the dxz buffer (4D),
    the incoming bf16 gradient (2d) and the fp32 residual gradients (8d): 10D + 10d; a
    checkpointed layer first rebuilds what it needs (norm output and xz when the scan is kept,
    the whole plain layer when it is not).

  Against the 58 peaks of the H200 calibration (every policy, 1.4m and 7m, 2^10..2^20) this
  count is 0.1% under to 4.9% over; with :data:`TOKEN_BYTES_MARGIN` it is never under. The plain
  last layers (``checkpoint_skip``) are within 1.3% of the H100 rows of BENCHMARKS.md section 4.

* **Speed** (:func:`predicted_tokens_per_s`): the measured tokens/s of the fastest policy
  (no checkpointing, scan states every 8) against tokens per micro-batch (:data:`CALIBRATION`, one
  H200), times each policy's measured speed relative to it. :func:`plan_stage` first takes the
  smallest micro-batch within :data:`OCCUPANCY_TOLERANCE` of the whole per-device batch on that
  curve, then, of the policies at the largest micro-batch up to it that fits, the fastest.

``memory="low"`` asks for the least-memory policy (checkpointing with bf16 checkpoints).
"""
from __future__ import annotations

import gc
import math
from dataclasses import dataclass, replace
from typing import Callable

from ..model.config import PRESETS, MambaConfig
from ..model.runtime import RuntimeOptions

MEMORY_MODES = ("auto", "low")
# of the free memory, for the planned peak. The estimate is never under a measured peak (see above) and
# the probe checks the real one, so 6% headroom is enough; at 0.85, 7m's fastest policy (no
# checkpointing, 128.8 GiB measured at 2^20 tokens per micro-batch of an H200's 139.5 GiB free) did
# not fit and the plan was 1% slower (BENCHMARKS.md section 4).
GPU_MEMORY_FRACTION = 0.94
TOKEN_BYTES_MARGIN = 1.01      # on the per-token bytes: what the count above leaves out
WORKSPACE_BYTES = 256 << 20    # kernel scratch (scan chunk states, dA partials), autocast weight copies, logits
OCCUPANCY_TOLERANCE = 0.015    # a micro-batch within 1.5% of the best tokens/s is full occupancy

# name -> run-time options; "ckpt-s8+skipK" (the last K layers plain) is built by runtime_of
POLICIES: dict[str, RuntimeOptions] = {
    "none-s8": RuntimeOptions(scan_state_every=8),
    "none-s64": RuntimeOptions(scan_state_every=64),
    "ckpt-s8": RuntimeOptions(gradient_checkpointing=True, scan_state_every=8),
    "ckpt-s64": RuntimeOptions(gradient_checkpointing=True, scan_state_every=64),
    "ckpt-bf16": RuntimeOptions(gradient_checkpointing=True, checkpoint_bf16=True),
}
POLICY_WORDS = {
    "none-s8": "no checkpointing, scan states every 8",
    "none-s64": "no checkpointing, scan states every 64",
    "ckpt-s8": "checkpointing, scan states every 8",
    "ckpt-s64": "checkpointing, scan states every 64",
    "ckpt-bf16": "checkpointing, bf16 checkpoints",
}
LOW_MEMORY = "ckpt-bf16"

TOP_TOKENS = 1 << 20           # tokens per micro-batch at which every policy is calibrated
# Measured tokens/s (millions) of one training step (forward, backward, AdamW; bf16 autocast; random
# tokens) per (d_model, n_layer, seq_len): "curve", the fastest policy (none-s8) at 2^17..2^20 tokens
# per micro-batch; "policies", every policy at 2^20 tokens. One NVIDIA H200, torch 2.11, 2026-12-01
# 14:02 UTC: `benchmarks/calibrate_memory.py` (3 steps each after one warm-up, so +-3% noise; the
# curve is made non-decreasing before use). calibration_table() rebuilds this from that JSON
# (benchmarks/results/calibrate_memory_h200_2026-12-01.json; tests/test_memory_plan.py checks both).
CALIBRATION: dict[tuple[int, int, int], dict] = {
    (128, 12, 1 << 10): {"curve": {1 << 17: 2.332, 1 << 18: 3.272, 1 << 19: 3.497, 1 << 20: 3.783},
                         "policies": {"none-s8": 3.783, "none-s64": 3.437, "ckpt-s8": 3.693, "ckpt-s64": 3.354,
                                      "ckpt-bf16": 2.584}},
    (128, 12, 1 << 14): {"curve": {1 << 17: 3.047, 1 << 18: 3.247, 1 << 19: 3.153, 1 << 20: 3.252},
                         "policies": {"none-s8": 3.252, "none-s64": 2.953, "ckpt-s8": 3.184, "ckpt-s64": 2.891,
                                      "ckpt-bf16": 2.26}},
    (128, 12, 1 << 17): {"curve": {1 << 17: 2.319, 1 << 18: 3.216, 1 << 19: 3.375, 1 << 20: 3.453},
                         "policies": {"none-s8": 3.453, "none-s64": 3.087, "ckpt-s8": 3.375, "ckpt-s64": 3.025,
                                      "ckpt-bf16": 2.337}},
    (128, 12, 1 << 20): {"curve": {1 << 20: 3.434},
                         "policies": {"none-s8": 3.434, "none-s64": 3.076, "ckpt-s8": 3.36, "ckpt-s64": 3.013,
                                      "ckpt-bf16": 2.326}},
    (256, 16, 1 << 10): {"curve": {1 << 17: 1.291, 1 << 18: 1.363, 1 << 19: 1.484, 1 << 20: 1.561},
                         "policies": {"none-s8": 1.561, "none-s64": 1.417, "ckpt-s8": 1.515, "ckpt-s64": 1.379,
                                      "ckpt-bf16": 1.077}},
    (256, 16, 1 << 14): {"curve": {1 << 17: 1.276, 1 << 18: 1.232, 1 << 19: 1.267, 1 << 20: 1.359},
                         "policies": {"none-s8": 1.359, "none-s64": 1.231, "ckpt-s8": 1.324, "ckpt-s64": 1.202,
                                      "ckpt-bf16": 0.929}},
    (256, 16, 1 << 17): {"curve": {1 << 17: 1.262, 1 << 18: 1.306, 1 << 19: 1.346, 1 << 20: 1.358},
                         "policies": {"none-s8": 1.358, "none-s64": 1.225, "ckpt-s8": 1.324, "ckpt-s64": 1.197,
                                      "ckpt-bf16": 0.924}},
    (256, 16, 1 << 20): {"curve": {1 << 20: 1.346},
                         "policies": {"none-s8": 1.346, "none-s64": 1.224, "ckpt-s8": 1.311, "ckpt-s64": 1.195,
                                      "ckpt-bf16": 0.923}},
}


def calibration_table(rows: list[dict], presets: dict[str, tuple[int, int]] | None = None) -> dict:
    """:data:`CALIBRATION` from the rows of a ``benchmarks/calibrate_memory.py`` JSON (those that ran).

    ``presets``: preset name -> (d_model, n_layer); default the shipped presets."""
    if presets is None:
        arches = {name: MambaConfig.from_preset(name) for name in PRESETS}
        presets = {name: (c.d_model, c.n_layer) for name, c in arches.items()}
    table: dict[tuple[int, int, int], dict] = {}
    for r in rows:
        if r.get("status") != "ok" or r["preset"] not in presets:
            continue
        key = (*presets[r["preset"]], int(r["seq_len"]))
        entry = table.setdefault(key, {"curve": {}, "policies": {}})
        tokens, mtok = int(r["micro_batch"]) * int(r["seq_len"]), round(r["tokens_per_s"] / 1e6, 3)
        if r["policy"] == "none-s8":
            entry["curve"][tokens] = mtok
        if tokens == TOP_TOKENS:
            entry["policies"][r["policy"]] = mtok
    return table


# Speed of a policy relative to "none-s8" where a row lacks it: the medians over CALIBRATION's rows.
DEFAULT_RELATIVE_SPEED = {"none-s8": 1.0, "ckpt-s8": 0.976, "none-s64": 0.907, "ckpt-s64": 0.884,
                          "ckpt-bf16": 0.683}


@dataclass(frozen=True)
class MemoryPlan:
    seq_len: int
    micro_batch: int              # windows per device per forward pass
    runtime: RuntimeOptions
    est_bytes: int | None         # predicted peak memory of one step (None on CPU)
    reason: str                   # one line for the run log
    policy: str | None = None     # a POLICIES name (with "+skipK"), None on CPU
    measured_bytes: int | None = None  # the probe's peak (max_memory_allocated), when probed
    predicted_tokens_per_s: float | None = None


# ------------------------------------------------------------------------------------ memory model
def _layer_bytes(arch: MambaConfig) -> dict[str, float]:
    """Per-token bytes of one layer's parts (see the module docstring)."""
    d, D, R, N = arch.d_model, arch.d_inner, arch.dt_rank, arch.d_state
    res = 4.0 * d if arch.residual_in_fp32 else 2.0 * d
    return {"res": res, "normed": 2.0 * d, "xz": 4.0 * D, "xdbl": 2.0 * (R + 2 * N), "rstd": 4.0,
            "states_per_step": 4.0 * D * N, "work": 10.0 * D + 2.0 * d + 2.0 * res}


def bytes_per_token(arch: MambaConfig, rt: RuntimeOptions) -> float:
    """Activation bytes one token costs at the peak of a training step (bf16 autocast, Triton kernels)."""
    p = _layer_bytes(arch)
    states = p["states_per_step"] / rt.scan_state_every
    plain = p["res"] + p["normed"] + p["xz"] + p["xdbl"] + p["rstd"] + states
    n = arch.n_layer
    if not rt.gradient_checkpointing:
        total = n * plain + p["work"]
    else:
        k = min(rt.checkpoint_skip, n)
        if rt.checkpoint_bf16:
            kept = 2.0 * arch.d_model + (states + p["xdbl"] if rt.checkpoint_keep_scan else 0.0)
        else:
            kept = p["res"] + (states + p["xdbl"] if rt.checkpoint_keep_scan else 0.0)
        # the layer being recomputed: its norm output, xz and rstd when its scan is kept, else the
        # whole plain layer (whose norm input, with bf16 checkpoints, is the fp32 upcast)
        rebuilt = p["normed"] + p["xz"] + p["rstd"] if rt.checkpoint_keep_scan else plain
        if rt.checkpoint_bf16 and rt.checkpoint_keep_scan:
            rebuilt += p["res"]
        # the plain (last) layers' activations are freed by their backward before the first
        # checkpointed layer is rebuilt
        total = (n - k) * kept + max(k * plain, rebuilt if k < n else 0.0) + p["work"]
    return total * TOKEN_BYTES_MARGIN


def num_parameters(arch: MambaConfig) -> int:
    """Parameters of a MambaLM with ``arch`` (tied head), without building it."""
    d, D, R, N, W = arch.d_model, arch.d_inner, arch.dt_rank, arch.d_state, arch.d_conv
    layer = (d * 2 * D + (2 * D if arch.bias else 0) + D * W + (D if arch.conv_bias else 0)
             + D * (R + 2 * N) + R * D + D + D * d + (d if arch.bias else 0) + D * N + D + d)
    head = 0 if arch.tie_embeddings else arch.padded_vocab_size * d
    return arch.n_layer * layer + arch.padded_vocab_size * d + d + head


def fixed_bytes(arch: MambaConfig) -> int:
    """Weights, gradients and AdamW state (fp32: 16 bytes a parameter), plus kernel workspace."""
    return int(16 * num_parameters(arch) + WORKSPACE_BYTES)


def estimate_bytes(arch: MambaConfig, rt: RuntimeOptions, seq_len: int, micro_batch: int) -> int:
    """Predicted peak device memory (max_memory_allocated) of one training step."""
    return int(fixed_bytes(arch) + micro_batch * seq_len * bytes_per_token(arch, rt))


# ------------------------------------------------------------------------------------- speed model
def _nearest_row(arch: MambaConfig, seq_len: int, curve: bool = False) -> dict:
    """The calibration row nearest to ``arch`` and ``seq_len`` (log scale; width counts most).
    ``curve``: among the rows that measured more than one micro-batch size."""
    def dist(key):
        dm, nl, L = key
        return (abs(math.log2(dm / arch.d_model)) * 4 + abs(math.log2(nl / arch.n_layer))
                + abs(math.log2(L / max(seq_len, 1))))
    keys = [k for k in CALIBRATION if not curve or len(CALIBRATION[k]["curve"]) > 1]
    return CALIBRATION[min(keys, key=dist)]


def _monotone(values: list[float]) -> list[float]:
    """The closest non-decreasing sequence (pool adjacent violators): more tokens per micro-batch
    is never slower, so a dip in the measured curve is noise."""
    blocks: list[list[float]] = []   # [mean, weight]
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2 = blocks.pop()
            m1, w1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    return [m for m, w in blocks for _ in range(int(w))]


def occupancy(arch: MambaConfig, seq_len: int, micro_tokens: int) -> float:
    """Tokens/s at ``micro_tokens`` tokens per micro-batch relative to the best measured (<= 1).

    Log-log interpolation of the measured curve (made non-decreasing); flat above its last point,
    its first slope continued below its first point (at least proportional to sqrt(tokens))."""
    tokens, speeds = zip(*sorted(_nearest_row(arch, seq_len, curve=True)["curve"].items()))
    speeds = _monotone(list(speeds))
    pts = [(math.log2(t), math.log2(v / speeds[-1])) for t, v in zip(tokens, speeds)]
    x = math.log2(max(micro_tokens, 1))
    if x >= pts[-1][0]:
        return 1.0
    if x <= pts[0][0]:
        slope = max((pts[1][1] - pts[0][1]) / (pts[1][0] - pts[0][0]), 0.5)
        return 2 ** (pts[0][1] - slope * (pts[0][0] - x))
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return 2 ** (y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    return 1.0  # pragma: no cover


def relative_speed(arch: MambaConfig, seq_len: int, policy: str) -> float:
    """Tokens/s of ``policy`` relative to no checkpointing with scan states every 8 (same micro-batch).

    ``"ckpt-s8+skipK"`` (the last K layers not checkpointed) is interpolated linearly in the share
    of plain layers, from ckpt-s8 (none plain) through any measured ``+skip`` rows to none-s8 (all
    plain). H100: 2.995 -> 3.004 M tokens/s with 3 of 12 plain, 3.069 with all (BENCHMARKS.md 4)."""
    row = _nearest_row(arch, seq_len)["policies"]
    if "+skip" in policy:
        base, k = policy.split("+skip")
        share = {0.0: relative_speed(arch, seq_len, base),
                 1.0: relative_speed(arch, seq_len, "none-" + base.split("-")[1])}
        for name, v in row.items():
            if name.startswith(base + "+skip") and "none-s8" in row:
                share[min(int(name.split("+skip")[1]), arch.n_layer) / arch.n_layer] = v / row["none-s8"]
        x = min(int(k), arch.n_layer) / arch.n_layer
        xs = sorted(share)
        x0 = max(v for v in xs if v <= x)
        x1 = min(v for v in xs if v >= x)
        return share[x0] if x1 == x0 else share[x0] + (share[x1] - share[x0]) * (x - x0) / (x1 - x0)
    if "none-s8" in row and policy in row:
        return row[policy] / row["none-s8"]
    return DEFAULT_RELATIVE_SPEED[policy]


def best_tokens_per_s(arch: MambaConfig, seq_len: int) -> float:
    """The best measured tokens/s of the nearest calibration row (any policy, any micro-batch)."""
    row = _nearest_row(arch, seq_len)
    return 1e6 * max(max(row["curve"].values()), max(row["policies"].values()))


def predicted_tokens_per_s(arch: MambaConfig, seq_len: int, policy: str, micro_batch: int) -> float:
    """Expected tokens/s of a training step: the best measured (none-s8) x the policy's relative
    speed x the occupancy of ``micro_batch`` windows."""
    top = 1e6 * max(_nearest_row(arch, seq_len)["curve"].values())
    return top * relative_speed(arch, seq_len, policy) * occupancy(arch, seq_len, micro_batch * seq_len)


# --------------------------------------------------------------------------------------- planning
def runtime_of(policy: str) -> RuntimeOptions:
    if "+skip" in policy:
        base, k = policy.split("+skip")
        return POLICIES[base].replace(checkpoint_skip=int(k))
    return POLICIES[policy]


def _words(policy: str) -> str:
    if "+skip" in policy:
        base, k = policy.split("+skip")
        return f"{POLICY_WORDS[base]}, last {k} layers plain"
    return POLICY_WORDS[policy]


def _candidate_policies(arch: MambaConfig, memory: str) -> list[str]:
    if memory == "low":
        return [LOW_MEMORY]
    names = list(POLICIES)
    names += [f"ckpt-s8+skip{k}" for k in range(1, arch.n_layer)]
    return names


def micro_batch_choices(per_device_batch: int) -> list[int]:
    """Micro-batch sizes, largest first: the divisors of the per-device batch, so that the
    micro-batches of a step add up to it exactly (the engine accumulates batch / micro of them)."""
    n = max(1, int(per_device_batch))
    return sorted({d for i in range(1, math.isqrt(n) + 1) if n % i == 0 for d in (i, n // i)}, reverse=True)


def target_micro_batch(arch: MambaConfig, seq_len: int, per_device_batch: int) -> int:
    """The smallest micro-batch whose measured tokens/s is within ``OCCUPANCY_TOLERANCE`` of the
    whole per-device batch in one forward (memory aside)."""
    full = occupancy(arch, seq_len, per_device_batch * seq_len)
    return min(m for m in micro_batch_choices(per_device_batch)
               if occupancy(arch, seq_len, m * seq_len) >= full * (1 - OCCUPANCY_TOLERANCE))


def plan_stage(arch: MambaConfig, seq_len: int, per_device_batch: int, *, device_type: str,
               free_bytes: int | None, memory: str = "auto") -> MemoryPlan:
    """The micro-batch and memory policy for ``per_device_batch`` windows of ``seq_len`` tokens.

    ``device_type`` is ``"cuda"`` or ``"cpu"``; ``free_bytes`` the device's free memory
    (``torch.cuda.mem_get_info()[0]``; None on CPU). On CPU the whole per-device batch is one
    micro-batch and the default runtime is kept. On a GPU:

    1. the target micro-batch is the smallest one at full occupancy (:func:`target_micro_batch`);
    2. of every policy at the largest micro-batch up to the target whose estimate fits in
       ``GPU_MEMORY_FRACTION * free_bytes``, the one with the highest predicted tokens/s wins
       (a tie goes to the faster policy, then to less memory).

    When nothing fits, the least-memory policy at one window (the probe then says whether it runs).
    """
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}, got {memory!r}")
    per_device_batch = max(1, int(per_device_batch))
    if device_type != "cuda" or free_bytes is None:
        return MemoryPlan(seq_len, per_device_batch, RuntimeOptions(), None, "CPU: one micro-batch per step")
    budget = GPU_MEMORY_FRACTION * free_bytes
    target = target_micro_batch(arch, seq_len, per_device_batch)
    options = []   # (predicted tokens/s, policy speed, -est, policy, micro)
    for policy in _candidate_policies(arch, memory):
        rt = runtime_of(policy)
        for micro in micro_batch_choices(per_device_batch):
            est = estimate_bytes(arch, rt, seq_len, micro)
            if micro <= target and est <= budget:
                tps = predicted_tokens_per_s(arch, seq_len, policy, micro)
                options.append((round(tps, -3), relative_speed(arch, seq_len, policy), -est, policy, micro))
                break   # the largest micro-batch of this policy that fits
    if not options:
        rt = runtime_of(LOW_MEMORY)
        est = estimate_bytes(arch, rt, seq_len, 1)
        return MemoryPlan(seq_len, 1, rt, est, f"{_words(LOW_MEMORY)}, 1 x {seq_len:,} tokens per forward: "
                          f"estimated peak {est / 2**30:.1f} GiB is over the {budget / 2**30:.1f} GiB budget "
                          f"({free_bytes / 2**30:.1f} free); the probe decides", LOW_MEMORY, None,
                          predicted_tokens_per_s(arch, seq_len, LOW_MEMORY, 1))
    *_, policy, micro = max(options)
    rt = runtime_of(policy)
    est = estimate_bytes(arch, rt, seq_len, micro)
    tps = predicted_tokens_per_s(arch, seq_len, policy, micro)
    return MemoryPlan(seq_len, micro, rt, est,
                      f"{_words(policy)}, {micro} x {seq_len:,} tokens per forward (estimated peak "
                      f"{est / 2**30:.1f} GiB of {free_bytes / 2**30:.1f} free, ~{tps / 1e6:.2f} M tokens/s)",
                      policy, None, tps)


# ------------------------------------------------------------------------------------------ probe
class CudaMemory:
    """What :func:`probe_stage` reads from the device: peak allocated bytes since a reset."""

    def __init__(self, device=None):
        self.device = device

    def reset(self) -> None:
        import torch

        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        import torch

        torch.cuda.synchronize(self.device)
        return int(torch.cuda.max_memory_allocated(self.device))

    def available(self) -> int:
        """Bytes this process could hold now, on the scale of :meth:`peak`: the device's free memory
        plus what this process has allocated (after releasing its cached blocks)."""
        import torch

        gc.collect()
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(free + torch.cuda.memory_allocated(self.device))


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def fallbacks(plan: MemoryPlan, arch: MambaConfig, per_device_batch: int) -> list[MemoryPlan]:
    """What to try after ``plan``, in order: its runtime with smaller micro-batches (down to one
    window), then each policy that needs less memory per token, from the fastest, at each
    micro-batch up to ``plan``'s whose estimate is under ``plan``'s (or one window)."""
    seq_len, here = plan.seq_len, plan.est_bytes or 0
    out = [_plan_at(arch, seq_len, plan.policy, m, "smaller micro-batch", plan.runtime)
           for m in micro_batch_choices(per_device_batch) if m < plan.micro_batch]
    per_token = bytes_per_token(arch, plan.runtime)
    lighter = [p for p in _candidate_policies(arch, "auto") if bytes_per_token(arch, runtime_of(p)) < per_token]
    for p in sorted(lighter, key=lambda p: -relative_speed(arch, seq_len, p)):
        rt = runtime_of(p)
        for m in micro_batch_choices(per_device_batch):
            if m <= plan.micro_batch and (m == 1 or estimate_bytes(arch, rt, seq_len, m) <= here):
                out.append(_plan_at(arch, seq_len, p, m, "less memory"))
    return out


def _plan_at(arch, seq_len, policy, micro, why, rt=None) -> MemoryPlan:
    """A plan for ``policy`` (a POLICIES name, ``+skipK``, or None for a runtime set by hand)."""
    rt = rt if rt is not None else runtime_of(policy)
    est = estimate_bytes(arch, rt, seq_len, micro)
    words = _words(policy) if policy else "the given runtime options"
    tps = predicted_tokens_per_s(arch, seq_len, policy, micro) if policy else None
    return MemoryPlan(seq_len, micro, rt, est, f"{words}, {micro} x {seq_len:,} tokens per forward ({why})",
                      policy, None, tps)


def apply_runtime(model, rt: RuntimeOptions) -> None:
    """Put ``rt`` on a MambaLM or MambaClassifier (``model.set_runtime``)."""
    model.set_runtime(rt)


def lm_probe_step(model, device, autocast_dtype=None) -> Callable[[MemoryPlan], None]:
    """A ``step_fn`` for :func:`probe_stage`: the plan's runtime on ``model`` (a MambaLM, or a
    MambaClassifier, on ``device``), one forward and backward of random bases (``plan.micro_batch``
    windows of ``plan.seq_len`` tokens, under autocast to ``autocast_dtype`` if given), gradients
    cleared. The bases come from a generator of their own: the run's random streams do not move."""
    import torch

    from ..data.tokenizer import A, T

    dev = torch.device(device)

    def step(plan: MemoryPlan) -> None:
        apply_runtime(model, plan.runtime)
        model.train()
        gen = torch.Generator(device=dev).manual_seed(0)
        ids = torch.randint(A, T + 1, (plan.micro_batch, plan.seq_len + 1), device=dev, generator=gen)
        try:
            with torch.autocast(dev.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
                if hasattr(model, "loss"):
                    loss = model.loss(ids)
                else:  # a classifier: its logits stand in for the loss (the memory is the backbone's)
                    loss = model(ids[:, :-1]).float().logsumexp(-1).mean()
            loss.backward()
        finally:
            model.zero_grad(set_to_none=True)

    return step


def probe_stage(plan: MemoryPlan, step_fn: Callable[[MemoryPlan], object], arch: MambaConfig,
                per_device_batch: int, *, free_bytes: int | None, memory_fraction: float = GPU_MEMORY_FRACTION,
                device_memory=None, max_tries: int = 16, log: Callable[[str], None] | None = None) -> MemoryPlan:
    """Run one real training micro-step at ``plan`` and step down until one fits.

    ``step_fn(plan)`` must apply ``plan.runtime`` to the model and run one forward and backward
    of ``plan.micro_batch`` windows of ``plan.seq_len`` tokens (no optimizer step; it should zero
    the gradients it made). A try fails on an out-of-memory error or when its peak
    (``device_memory.peak()``, by default ``torch.cuda.max_memory_allocated`` after a reset) is
    above ``memory_fraction * free_bytes``; then :func:`fallbacks` are tried in order, skipping
    those that the failures so far say cannot fit (a peak 1.3x its estimate makes every later
    estimate count 1.3x).

    Returns the plan that ran, with ``measured_bytes`` set and the measurement in ``reason``.
    Raises ``torch.OutOfMemoryError`` if nothing fits (not even one window at the least memory).
    On CPU (``est_bytes`` None and no ``device_memory``) the plan is returned unprobed.

    Example (the engine, once per sequence-length stage)::

        free = torch.cuda.mem_get_info()[0]
        plan = plan_stage(arch, seq_len, per_device, device_type="cuda", free_bytes=free)
        plan = probe_stage(plan, lm_probe_step(model, "cuda", torch.bfloat16), arch, per_device,
                           free_bytes=free, log=print)
    """
    import torch

    if plan.est_bytes is None and device_memory is None:
        return plan
    mem = device_memory or CudaMemory()
    budget = memory_fraction * free_bytes if free_bytes is not None else math.inf
    scale = 1.0            # measured / estimated, learnt from the failures
    tried, last_oom = 0, None
    for cand in [plan, *fallbacks(plan, arch, per_device_batch)]:
        if tried >= max_tries:
            break
        if cand is not plan and cand.est_bytes is not None and cand.est_bytes * scale > budget:
            continue
        tried += 1
        mem.reset()
        try:
            step_fn(cand)
            peak = mem.peak()
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled
            if not _is_oom(exc):
                raise
            # keep the message, not the traceback: its frames hold the step's tensors
            last_oom = str(exc).splitlines()[0] if str(exc) else "out of memory"
            exc.__traceback__ = None
            del exc
            # what the device can hold now (another process may have taken memory since the plan)
            available = mem.available() if hasattr(mem, "available") else None
            if available is not None:
                budget = min(budget, memory_fraction * available)
            room = available if available is not None else free_bytes
            if cand.est_bytes and room:
                scale = max(scale, room / cand.est_bytes)   # the try needed more than the room it had
            if log:
                log(f"memory probe: out of memory at {cand.reason}")
            mem.reset()
            continue
        if peak > budget:
            if cand.est_bytes:
                scale = max(scale, peak / cand.est_bytes)
            if log:
                log(f"memory probe: peak {peak / 2**30:.1f} GiB over the {budget / 2**30:.1f} GiB budget "
                    f"at {cand.reason}")
            continue
        note = f"; probed: peak {peak / 2**30:.1f} GiB" + (f" after {tried - 1} step-down(s)" if tried > 1 else "")
        return replace(cand, measured_bytes=peak, reason=cand.reason + note)
    raise torch.OutOfMemoryError(f"no micro-batch of {plan.seq_len:,}-token windows fits in "
                                 f"{budget / 2**30:.1f} GiB (tried {tried} plans; last: {last_oom or 'over budget'})")
