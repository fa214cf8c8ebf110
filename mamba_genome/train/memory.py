"""The memory planner: micro-batch and memory policy for one sequence-length stage, and its probe.

Given the architecture, the window length, the windows each device must process per optimizer
step and the device's free memory, :func:`plan_stage` returns the micro-batch and the
:class:`~mamba_genome.model.runtime.RuntimeOptions` (activation checkpointing, bf16 checkpoints,
scan-state spacing, un-checkpointed layers) expected to give the highest tokens/s that fits.
:func:`probe_stage` then runs one real forward+backward at that plan and steps down (a smaller
micro-batch, then a policy that needs less memory) on an out-of-memory error or a peak above the
budget. The training engine calls both once per stage; users never need to.

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

  Against H100/H200 peaks (BENCHMARKS.md section 4, ``benchmarks/calibrate_memory.py``) this is
  within a few percent; :data:`TOKEN_BYTES_MARGIN` covers the rest.

* **Speed** (:func:`predicted_tokens_per_s`): the measured tokens/s of the fastest policy over
  micro-batch sizes (:data:`CALIBRATION`, one H200), times each policy's measured speed relative
  to it. The micro-batch is the smallest one within :data:`OCCUPANCY_TOLERANCE` of the best the
  memory allows, and among the policies that fit, the fastest wins.

``memory="low"`` asks for the least-memory policy (checkpointing with bf16 checkpoints).
"""
from __future__ import annotations

import gc
import math
from dataclasses import dataclass, replace
from typing import Callable

from ..model.config import MambaConfig
from ..model.runtime import RuntimeOptions

MEMORY_MODES = ("auto", "low")
GPU_MEMORY_FRACTION = 0.85     # of the free memory, for the planned peak
TOKEN_BYTES_MARGIN = 1.00      # on the per-token bytes: what the count above leaves out
WORKSPACE_BYTES = 256 << 20    # kernel scratch (scan chunk states, dA partials), autocast weight copies, logits
OCCUPANCY_TOLERANCE = 0.015    # a micro-batch within 1.5% of the best tokens/s is full occupancy

# name -> run-time options, and the order of least memory last
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

# Measured tokens/s (millions) of one training step (forward, backward, AdamW; bf16 autocast;
# random tokens) per (d_model, n_layer, seq_len): for the fastest policy ("none-s8") at several
# tokens per micro-batch, and for every policy at the largest micro-batch.
# Source: benchmarks/calibrate_memory.py on one H100 80GB (BENCHMARKS.md section 4, 2026-11-22);
# replaced by the H200 run when it is in (see git log of this file).
CALIBRATION: dict[tuple[int, int, int], dict] = {
    (128, 12, 1 << 14): {"curve": {1 << 20: 3.013}, "policies": {"none-s8": 3.013, "ckpt-s8": 2.932,
                                                                  "none-s64": 2.739, "ckpt-s64": 2.676}},
    (128, 12, 1 << 17): {"curve": {1 << 20: 3.119}, "policies": {"none-s8": 3.119, "ckpt-s8": 3.041,
                                                                  "none-s64": 2.815, "ckpt-s64": 2.743}},
    (128, 12, 1 << 20): {"curve": {1 << 20: 3.069}, "policies": {"none-s8": 3.069, "ckpt-s8": 2.995,
                                                                  "none-s64": 2.690, "ckpt-s64": 2.624}},
    (256, 16, 1 << 14): {"curve": {1 << 20: 1.140}, "policies": {"none-s64": 1.140, "ckpt-s64": 1.104,
                                                                  "ckpt-bf16": 0.848}},
    (256, 16, 1 << 17): {"curve": {1 << 20: 1.107}, "policies": {"none-s64": 1.107, "ckpt-s64": 1.077,
                                                                  "ckpt-bf16": 0.837}},
    (256, 16, 1 << 20): {"curve": {1 << 20: 1.124}, "policies": {"none-s64": 1.124, "ckpt-s64": 1.093,
                                                                  "ckpt-bf16": 0.842}},
}
# Speed of a policy relative to "none-s8" where a row lacks it (medians of the rows that have both).
DEFAULT_RELATIVE_SPEED = {"none-s8": 1.0, "ckpt-s8": 0.975, "none-s64": 0.885, "ckpt-s64": 0.862,
                          "ckpt-bf16": 0.66}


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
        # the layer being recomputed: with the scan kept, only its norm output and xz (and rstd)
        # (else the whole plain layer; with bf16 checkpoints its norm input is the fp32 upcast)
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
def _nearest_row(arch: MambaConfig, seq_len: int) -> dict:
    def dist(key):
        dm, nl, L = key
        return (abs(math.log2(dm / arch.d_model)) * 4 + abs(math.log2(nl / arch.n_layer))
                + abs(math.log2(L / max(seq_len, 1))))
    return CALIBRATION[min(CALIBRATION, key=dist)]


def occupancy(arch: MambaConfig, seq_len: int, micro_tokens: int) -> float:
    """Tokens/s at ``micro_tokens`` tokens per micro-batch relative to the best measured (<= 1).

    Log-log interpolation of the measured curve; flat above its last point, its first slope
    continued below its first point (at least proportional to sqrt(tokens))."""
    curve = sorted(_nearest_row(arch, seq_len)["curve"].items())
    top = max(v for _, v in curve)
    pts = [(math.log2(t), math.log2(v / top)) for t, v in curve]
    x = math.log2(max(micro_tokens, 1))
    if x >= pts[-1][0]:
        return 2 ** pts[-1][1]
    if x <= pts[0][0]:
        slope = (pts[1][1] - pts[0][1]) / (pts[1][0] - pts[0][0]) if len(pts) > 1 else 0.0
        slope = max(slope, 0.5)
        return 2 ** (pts[0][1] - slope * (pts[0][0] - x))
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return 2 ** (y0 + (y1 - y0) * (x - x0) / (x1 - x0))
    return 1.0  # pragma: no cover


def relative_speed(arch: MambaConfig, seq_len: int, policy: str) -> float:
    """Tokens/s of ``policy`` relative to no checkpointing with scan states every 8.

    ``"ckpt-s8+skipK"`` (the last K layers not checkpointed) interpolates between ckpt-s8 and none-s8."""
    if "+skip" in policy:
        base, k = policy.split("+skip")
        frac = min(int(k), arch.n_layer) / arch.n_layer
        lo, hi = relative_speed(arch, seq_len, base), relative_speed(arch, seq_len, "none-" + base.split("-")[1])
        return lo + (hi - lo) * frac
    row = _nearest_row(arch, seq_len)["policies"]
    if "none-s8" in row and policy in row:
        return row[policy] / row["none-s8"]
    # a row measured without none-s8 (it did not fit): go through a policy both have
    for ref in row:
        if ref in DEFAULT_RELATIVE_SPEED and policy in row:
            return row[policy] / row[ref] * DEFAULT_RELATIVE_SPEED[ref]
    return DEFAULT_RELATIVE_SPEED[policy]


def best_tokens_per_s(arch: MambaConfig, seq_len: int) -> float:
    """The best measured tokens/s of the nearest calibration row (any policy, any micro-batch)."""
    row = _nearest_row(arch, seq_len)
    return 1e6 * max(max(row["curve"].values()), max(row["policies"].values()))


def predicted_tokens_per_s(arch: MambaConfig, seq_len: int, policy: str, micro_batch: int) -> float:
    row = _nearest_row(arch, seq_len)
    ref = 1e6 * max(row["curve"].values())
    ref_rel = relative_speed(arch, seq_len, _curve_policy(row))
    return ref / ref_rel * relative_speed(arch, seq_len, policy) * occupancy(arch, seq_len, micro_batch * seq_len)


def _curve_policy(row: dict) -> str:
    return row.get("curve_policy", "none-s8")


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
    """Micro-batch sizes, largest first: ceil(batch / a) for a = 1, 2, ... (the engine
    accumulates ceil(batch / micro) of them)."""
    out, seen = [], set()
    for acc in range(1, per_device_batch + 1):
        m = -(-per_device_batch // acc)
        if m not in seen:
            seen.add(m)
            out.append(m)
    return out


def plan_stage(arch: MambaConfig, seq_len: int, per_device_batch: int, *, device_type: str,
               free_bytes: int | None, memory: str = "auto") -> MemoryPlan:
    """The micro-batch and memory policy for ``per_device_batch`` windows of ``seq_len`` tokens.

    ``device_type`` is ``"cuda"`` or ``"cpu"``; ``free_bytes`` the device's free memory
    (``torch.cuda.mem_get_info()[0]``; None on CPU). On CPU the whole per-device batch is one
    micro-batch and the default runtime is kept. On a GPU: of every (policy, micro-batch) whose
    estimate fits in ``GPU_MEMORY_FRACTION * free_bytes``, the fastest by the speed model; a
    faster policy wins over a bigger micro-batch within ``OCCUPANCY_TOLERANCE``, and the smallest
    micro-batch within it is taken. When nothing fits, the least-memory policy at one window
    (the probe then says whether it runs).
    """
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {', '.join(MEMORY_MODES)}, got {memory!r}")
    per_device_batch = max(1, int(per_device_batch))
    if device_type != "cuda" or free_bytes is None:
        return MemoryPlan(seq_len, per_device_batch, RuntimeOptions(), None, "CPU: one micro-batch per step")
    budget = GPU_MEMORY_FRACTION * free_bytes
    options = []   # (predicted tokens/s, policy speed, -micro, policy, micro, est)
    for policy in _candidate_policies(arch, memory):
        rt = runtime_of(policy)
        speed = relative_speed(arch, seq_len, policy)
        for micro in micro_batch_choices(per_device_batch):
            est = estimate_bytes(arch, rt, seq_len, micro)
            if est > budget:
                continue
            options.append((predicted_tokens_per_s(arch, seq_len, policy, micro), speed, micro, policy, est))
            break   # the largest micro-batch that fits; smaller ones are looked at below
    if not options:
        rt = runtime_of(LOW_MEMORY)
        est = estimate_bytes(arch, rt, seq_len, 1)
        return MemoryPlan(seq_len, 1, rt, est, f"{_words(LOW_MEMORY)}, 1 x {seq_len:,} tokens per forward: "
                          f"estimated peak {est / 2**30:.1f} GiB is over the {budget / 2**30:.1f} GiB budget "
                          f"({free_bytes / 2**30:.1f} free); the probe decides", LOW_MEMORY, None,
                          predicted_tokens_per_s(arch, seq_len, LOW_MEMORY, 1))
    best = max(o[0] for o in options)
    # the fastest policy within the tolerance of the best, then its smallest near-best micro-batch
    _, _, top_micro, policy, _ = max((o for o in options if o[0] >= best * (1 - OCCUPANCY_TOLERANCE)),
                                     key=lambda o: (o[1], -o[2]))
    tps_top = predicted_tokens_per_s(arch, seq_len, policy, top_micro)
    micro = top_micro
    for m in micro_batch_choices(per_device_batch):
        if m <= top_micro and predicted_tokens_per_s(arch, seq_len, policy, m) >= tps_top * (1 - OCCUPANCY_TOLERANCE):
            micro = m
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


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def fallbacks(plan: MemoryPlan, arch: MambaConfig, per_device_batch: int) -> list[MemoryPlan]:
    """What to try after ``plan``, in order: the same policy with smaller micro-batches (down to
    one window), then each policy that needs less memory per token, from the fastest, at the
    largest of those micro-batches its estimate keeps under the failed plan's."""
    seq_len = plan.seq_len
    out = []
    policy = plan.policy or _policy_of(plan.runtime)
    for m in micro_batch_choices(per_device_batch):
        if m < plan.micro_batch:
            out.append(_plan_at(arch, seq_len, policy, m, "smaller micro-batch"))
    here = bytes_per_token(arch, plan.runtime)
    lighter = sorted((p for p in _candidate_policies(arch, "auto") if bytes_per_token(arch, runtime_of(p)) < here),
                     key=lambda p: -relative_speed(arch, seq_len, p))
    for p in lighter:
        rt = runtime_of(p)
        fitting = [m for m in micro_batch_choices(per_device_batch) if m <= plan.micro_batch
                   and estimate_bytes(arch, rt, seq_len, m) <= max(plan.est_bytes or 0, estimate_bytes(arch, rt, seq_len, 1))]
        for m in fitting:
            out.append(_plan_at(arch, seq_len, p, m, "less memory"))
    return out


def _policy_of(rt: RuntimeOptions) -> str:
    for name, opts in POLICIES.items():
        if opts == rt:
            return name
    if rt.gradient_checkpointing and rt.checkpoint_skip and not rt.checkpoint_bf16:
        return f"ckpt-s{rt.scan_state_every}+skip{rt.checkpoint_skip}" if rt.scan_state_every == 8 else "ckpt-s64"
    return "ckpt-s64" if rt.gradient_checkpointing else "none-s64"


def _plan_at(arch, seq_len, policy, micro, why) -> MemoryPlan:
    rt = runtime_of(policy)
    est = estimate_bytes(arch, rt, seq_len, micro)
    return MemoryPlan(seq_len, micro, rt, est, f"{_words(policy)}, {micro} x {seq_len:,} tokens per forward "
                      f"({why})", policy, None, predicted_tokens_per_s(arch, seq_len, policy, micro))


def probe_stage(plan: MemoryPlan, step_fn: Callable[[MemoryPlan], object], arch: MambaConfig,
                per_device_batch: int, *, free_bytes: int | None, memory_fraction: float = GPU_MEMORY_FRACTION,
                device_memory=None, max_tries: int = 12, log: Callable[[str], None] | None = None) -> MemoryPlan:
    """Run one real training micro-step at ``plan`` and step down until one fits.

    ``step_fn(plan)`` must apply ``plan.runtime`` to the model and run one forward and backward
    of ``plan.micro_batch`` windows of ``plan.seq_len`` tokens (no optimizer step; it should zero
    the gradients it made). A try fails on an out-of-memory error or when its peak
    (``device_memory.peak()``, by default ``torch.cuda.max_memory_allocated`` after a reset) is
    above ``memory_fraction * free_bytes``; then :func:`fallbacks` are tried in order.

    Returns the plan that ran, with ``measured_bytes`` set and the measurement in ``reason``.
    Raises the last out-of-memory error if nothing fits (not even one window at the least memory).
    On CPU (``free_bytes`` None and no ``device_memory``) the plan is returned unprobed.
    """
    if plan.est_bytes is None and device_memory is None:
        return plan
    mem = device_memory or CudaMemory()
    budget = memory_fraction * free_bytes if free_bytes is not None else math.inf
    tries = [plan, *fallbacks(plan, arch, per_device_batch)][:max_tries]
    last_exc = None
    for i, cand in enumerate(tries):
        mem.reset()
        try:
            step_fn(cand)
            peak = mem.peak()
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled
            if not _is_oom(exc):
                raise
            last_exc = exc
            del exc
            if log:
                log(f"memory probe: out of memory at {cand.reason}")
            mem.reset()
            continue
        if peak > budget:
            if log:
                log(f"memory probe: peak {peak / 2**30:.1f} GiB over the {budget / 2**30:.1f} GiB budget "
                    f"at {cand.reason}")
            continue
        note = f"; probed: peak {peak / 2**30:.1f} GiB" + (f" after {i} step-down(s)" if i else "")
        return replace(cand, measured_bytes=peak, reason=cand.reason + note)
    if last_exc is not None:
        raise last_exc
    raise MemoryError(f"no micro-batch of {plan.seq_len:,}-token windows fits in "
                      f"{budget / 2**30:.1f} GiB (tried {len(tries)} plans)")
