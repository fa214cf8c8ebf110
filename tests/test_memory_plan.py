"""train/memory.py: the memory model against measured peaks, plan_stage's choices for given device
memory, and probe_stage's step-down logic (a fake step that runs out of memory above a size; CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mamba_genome.model.config import MambaConfig
from mamba_genome.train import memory as mem
from mamba_genome.train.memory import (GPU_MEMORY_FRACTION, LOW_MEMORY, POLICIES, MemoryPlan, bytes_per_token,
                                       estimate_bytes, fallbacks, plan_stage, predicted_tokens_per_s, probe_stage,
                                       runtime_of)

GiB = 2 ** 30
LENGTHS = [1 << e for e in (10, 12, 14, 17, 20)]
PRESETS = ["1.4m", "7m"]

# Peak memory (max_memory_allocated, GiB) of one training step (bf16 autocast, AdamW):
# (preset, policy, seq_len, micro-batch, GiB). One H200, 2026-12-01 14:02 UTC,
# benchmarks/calibrate_memory.py (a sample of its 58 rows, every policy), and for the plain last
# layers one H100, 2026-11-22 18:10 UTC (BENCHMARKS.md section 4).
MEASURED_PEAKS = [
    ("1.4m", "none-s8", 1 << 10, 128, 6.360),
    ("1.4m", "none-s8", 1 << 10, 1024, 49.652),
    ("1.4m", "none-s64", 1 << 14, 64, 28.607),
    ("1.4m", "ckpt-s8", 1 << 17, 8, 35.992),
    ("1.4m", "ckpt-s64", 1 << 20, 1, 15.044),
    ("1.4m", "ckpt-bf16", 1 << 14, 64, 8.703),
    ("7m", "none-s8", 1 << 14, 8, 16.264),
    ("7m", "none-s8", 1 << 20, 1, 128.435),
    ("7m", "none-s64", 1 << 10, 1024, 72.974),
    ("7m", "ckpt-s8", 1 << 17, 8, 91.368),
    ("7m", "ckpt-s64", 1 << 14, 64, 35.455),
    ("7m", "ckpt-bf16", 1 << 20, 1, 19.016),
    ("1.4m", "ckpt-s8+skip2", 1 << 20, 1, 37.00),
    ("1.4m", "ckpt-s8+skip3", 1 << 20, 1, 38.25),
    ("1.4m", "ckpt-s8+skip5", 1 << 20, 1, 40.76),
]


def arch(preset):
    return MambaConfig.from_preset(preset)


@pytest.mark.parametrize("preset,policy,seq_len,micro,gib", MEASURED_PEAKS,
                         ids=[f"{p}-{pol}-{m}x{L}" for p, pol, L, m, _ in MEASURED_PEAKS])
def test_estimate_matches_measured_peaks(preset, policy, seq_len, micro, gib):
    est = estimate_bytes(arch(preset), runtime_of(policy), seq_len, micro) / GiB
    assert est >= gib, f"under the measured peak: {est:.2f} vs {gib} GiB"
    assert est <= gib * 1.10, f"over the measured peak by more than 10%: {est:.2f} vs {gib} GiB"


def test_estimate_orders_policies_by_memory():
    a = arch("7m")
    per_tok = {p: bytes_per_token(a, runtime_of(p)) for p in POLICIES}
    assert per_tok["none-s8"] > per_tok["none-s64"] > per_tok["ckpt-s64"] > per_tok["ckpt-bf16"]
    assert per_tok["none-s8"] > per_tok["ckpt-s8"] > per_tok["ckpt-s64"]
    assert min(per_tok, key=per_tok.get) == LOW_MEMORY
    # each plain (un-checkpointed) last layer costs memory; all plain = no checkpointing
    skips = [bytes_per_token(a, runtime_of(f"ckpt-s8+skip{k}")) for k in range(1, a.n_layer)]
    assert skips == sorted(skips) and skips[-1] <= per_tok["none-s8"] * 1.001
    assert estimate_bytes(a, runtime_of("none-s8"), 1 << 14, 4) < estimate_bytes(a, runtime_of("none-s8"), 1 << 14, 8)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("seq_len", LENGTHS)
def test_plan_fits_budget_and_is_monotone_in_memory(preset, seq_len):
    a = arch(preset)
    per_device = max(1, (1 << 20) // seq_len)
    speeds, plans = [], []
    for gib in (8, 24, 80, 139):
        plan = plan_stage(a, seq_len, per_device, device_type="cuda", free_bytes=gib * GiB)
        plans.append(plan)
        assert 1 <= plan.micro_batch <= per_device
        assert plan.seq_len == seq_len
        assert plan.est_bytes == estimate_bytes(a, plan.runtime, seq_len, plan.micro_batch)
        fits_somehow = estimate_bytes(a, runtime_of(LOW_MEMORY), seq_len, 1) <= GPU_MEMORY_FRACTION * gib * GiB
        if fits_somehow:
            assert plan.est_bytes <= GPU_MEMORY_FRACTION * gib * GiB, plan.reason
        else:  # nothing fits by the estimate: least memory, one window, the probe decides
            assert (plan.micro_batch, plan.policy) == (1, LOW_MEMORY)
        speeds.append(plan.predicted_tokens_per_s)
        assert plan.reason and "\n" not in plan.reason
    # more memory never gives a slower plan
    assert all(b >= a_ * (1 - 1e-9) for a_, b in zip(speeds, speeds[1:])), speeds
    # 80 GiB is enough for the whole 2^20-token step of the small model without checkpointing
    if preset == "1.4m":
        assert not plans[2].runtime.gradient_checkpointing


# (preset, seq_len, free GiB) -> (policy, micro-batch) at the default 2^20 tokens per step
EXPECTED = {
    ("1.4m", 1 << 14, 139): ("none-s8", 64),     # everything fits: the fastest policy, one forward per step
    ("1.4m", 1 << 20, 80): ("none-s8", 1),
    ("1.4m", 1 << 14, 24): ("none-s8", 16),      # 4 micro-batches without checkpointing beat 64 checkpointed
    ("1.4m", 1 << 20, 24): ("ckpt-s64", 1),
    ("1.4m", 1 << 20, 8): ("ckpt-bf16", 1),
    ("7m", 1 << 17, 139): ("none-s8", 4),        # 2^19 tokens per forward are within 1.5% of 2^20
    ("7m", 1 << 20, 139): ("ckpt-s8+skip15", 1),  # none-s8 needs 128.8 GiB (est. 130.7): checkpoint 1 of 16 layers
    ("7m", 1 << 20, 140): ("none-s8", 1),         # an H200's 139.3 GiB free and up: nothing checkpointed
    ("7m", 1 << 20, 80): ("none-s64", 1),         # 74 GiB: scan states every 64 beat checkpointing
    ("7m", 1 << 20, 24): ("ckpt-bf16", 1),
}


@pytest.mark.parametrize("key", list(EXPECTED), ids=[f"{p}-{L}-{g}GiB" for p, L, g in EXPECTED])
def test_plan_choices(key):
    preset, seq_len, gib = key
    plan = plan_stage(arch(preset), seq_len, (1 << 20) // seq_len, device_type="cuda", free_bytes=gib * GiB)
    assert (plan.policy, plan.micro_batch) == EXPECTED[key], plan.reason
    assert plan.runtime == runtime_of(plan.policy)


@pytest.mark.parametrize("preset", PRESETS)
def test_plan_on_big_and_small_gpus(preset):
    a = arch(preset)
    big = plan_stage(a, 1 << 14, 64, device_type="cuda", free_bytes=139 * GiB)
    small = plan_stage(a, 1 << 14, 64, device_type="cuda", free_bytes=8 * GiB)
    assert small.est_bytes < big.est_bytes
    assert small.micro_batch < big.micro_batch or small.runtime.gradient_checkpointing
    assert small.predicted_tokens_per_s <= big.predicted_tokens_per_s


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("seq_len", [1 << 10, 1 << 17, 1 << 20])
def test_memory_low_takes_the_least_memory(preset, seq_len):
    a = arch(preset)
    per_device = max(1, (1 << 20) // seq_len)
    for gib in (24, 80):
        low = plan_stage(a, seq_len, per_device, device_type="cuda", free_bytes=gib * GiB, memory="low")
        auto = plan_stage(a, seq_len, per_device, device_type="cuda", free_bytes=gib * GiB)
        assert low.policy == LOW_MEMORY and low.runtime.checkpoint_bf16 and low.runtime.gradient_checkpointing
        assert bytes_per_token(a, low.runtime) == min(bytes_per_token(a, runtime_of(p)) for p in POLICIES)
        assert low.est_bytes <= auto.est_bytes * (low.micro_batch / auto.micro_batch) + 1


def test_cpu_plan_and_bad_mode():
    plan = plan_stage(arch("tiny"), 512, 4, device_type="cpu", free_bytes=None)
    assert (plan.micro_batch, plan.est_bytes) == (4, None)
    assert plan.runtime == POLICIES["none-s64"]
    with pytest.raises(ValueError, match="memory must be one of"):
        plan_stage(arch("tiny"), 512, 4, device_type="cuda", free_bytes=GiB, memory="max")


def test_target_micro_batch_from_the_measured_curve():
    a7, a1 = arch("7m"), arch("1.4m")
    # 7m at 2^17: 4 windows (2^19 tokens, 1.346 M tokens/s) are within 1.5% of 8 (1.358)
    assert mem.target_micro_batch(a7, 1 << 17, 8) == 4
    # 1.4m at 2^17: 2^19 tokens are 2.3% slower than 2^20, so the whole batch
    assert mem.target_micro_batch(a1, 1 << 17, 8) == 8
    # the noisy dip of the 1.4m 2^14 curve (3.247, 3.153, 3.252 at 2^18, 2^19, 2^20) is smoothed
    assert mem._monotone([3.047, 3.247, 3.153, 3.252]) == pytest.approx([3.047, 3.2, 3.2, 3.252])
    for L in LENGTHS:
        for per_device in (1, 3, 8, 64):
            m = mem.target_micro_batch(a1, L, per_device)
            assert per_device % m == 0
            assert mem.occupancy(a1, L, m * L) >= mem.occupancy(a1, L, per_device * L) * (1 - mem.OCCUPANCY_TOLERANCE)
    assert mem.micro_batch_choices(12) == [12, 6, 4, 3, 2, 1]


# ----------------------------------------------------------------------------------------- probe
class FakeDevice:
    """A GPU of ``capacity`` bytes on which a step needs ``scale`` x the planner's estimate."""

    def __init__(self, arch, capacity, scale=1.0):
        self.arch, self.capacity, self.scale = arch, capacity, scale
        self.tried: list[tuple[str, int]] = []
        self._peak = 0

    def step(self, plan: MemoryPlan):
        self.tried.append((plan.policy, plan.micro_batch))
        need = int(self.scale * estimate_bytes(self.arch, plan.runtime, plan.seq_len, plan.micro_batch))
        if need > self.capacity:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {need} bytes")
        self._peak = need

    def reset(self):
        self._peak = 0

    def peak(self):
        return self._peak


def _probe(a, seq_len, per_device, free, scale, **kw):
    plan = plan_stage(a, seq_len, per_device, device_type="cuda", free_bytes=free)
    dev = FakeDevice(a, capacity=free, scale=scale)
    got = probe_stage(plan, dev.step, a, per_device, free_bytes=free, device_memory=dev, **kw)
    return plan, got, dev


def test_probe_keeps_a_plan_that_fits():
    a = arch("1.4m")
    plan, got, dev = _probe(a, 1 << 14, 64, 80 * GiB, scale=1.0)
    assert dev.tried == [(plan.policy, plan.micro_batch)]
    assert (got.micro_batch, got.runtime) == (plan.micro_batch, plan.runtime)
    assert got.measured_bytes == plan.est_bytes and "probed" in got.reason


def test_probe_steps_down_the_micro_batch_on_oom():
    a = arch("1.4m")
    plan, got, dev = _probe(a, 1 << 14, 64, 80 * GiB, scale=1.5)   # the model under-estimates by 1.5x
    assert len(dev.tried) > 1 and dev.tried[0] == (plan.policy, plan.micro_batch)
    assert got.policy == plan.policy and got.micro_batch < plan.micro_batch
    assert got.measured_bytes <= 80 * GiB * GPU_MEMORY_FRACTION
    # it tried the micro-batches in decreasing order, stopping at the first that ran
    micros = [m for p, m in dev.tried]
    assert micros == sorted(micros, reverse=True) and micros[-1] == got.micro_batch


def test_probe_moves_to_a_lighter_policy_when_one_window_does_not_fit():
    a = arch("7m")
    free = 44 * GiB
    plan = plan_stage(a, 1 << 20, 1, device_type="cuda", free_bytes=free)
    assert plan.micro_batch == 1 and plan.policy != LOW_MEMORY
    dev = FakeDevice(a, capacity=free, scale=1.3)
    got = probe_stage(plan, dev.step, a, 1, free_bytes=free, device_memory=dev)
    assert got.policy != plan.policy
    assert bytes_per_token(a, got.runtime) < bytes_per_token(a, plan.runtime)
    assert 1.3 * estimate_bytes(a, got.runtime, 1 << 20, 1) <= free


def test_probe_steps_down_when_the_peak_is_over_budget_without_oom():
    a = arch("1.4m")
    free = 80 * GiB
    plan = plan_stage(a, 1 << 14, 64, device_type="cuda", free_bytes=free)
    dev = FakeDevice(a, capacity=10 * free, scale=1.6)   # never OOM, but the peak is over the budget
    got = probe_stage(plan, dev.step, a, 64, free_bytes=free, device_memory=dev)
    assert got.micro_batch < plan.micro_batch or got.policy != plan.policy
    assert got.measured_bytes <= GPU_MEMORY_FRACTION * free
    # the first peak says the estimates are 1.6x low: the next try is one that fits at 1.6x
    assert len(dev.tried) == 2


def test_probe_uses_the_memory_left_after_an_oom():
    """The planner was told 80 GiB, but another process has taken all but 20: after the first
    out-of-memory the probe plans for what the device reports is left, and the next try fits."""
    a = arch("1.4m")
    plan = plan_stage(a, 1 << 14, 64, device_type="cuda", free_bytes=80 * GiB)
    dev = FakeDevice(a, capacity=20 * GiB)
    dev.available = lambda: 20 * GiB
    got = probe_stage(plan, dev.step, a, 64, free_bytes=80 * GiB, device_memory=dev)
    assert len(dev.tried) == 2 and got.measured_bytes <= GPU_MEMORY_FRACTION * 20 * GiB


def test_probe_raises_when_nothing_fits_and_passes_other_errors():
    a = arch("7m")
    plan = plan_stage(a, 1 << 20, 1, device_type="cuda", free_bytes=4 * GiB)
    dev = FakeDevice(a, capacity=4 * GiB)
    with pytest.raises(torch.OutOfMemoryError):
        probe_stage(plan, dev.step, a, 1, free_bytes=4 * GiB, device_memory=dev)

    def broken(_plan):
        raise RuntimeError("an ordinary bug")
    with pytest.raises(RuntimeError, match="ordinary bug"):
        probe_stage(plan, broken, a, 1, free_bytes=80 * GiB, device_memory=FakeDevice(a, 80 * GiB))


def test_probe_is_a_no_op_on_cpu():
    plan = plan_stage(arch("tiny"), 512, 4, device_type="cpu", free_bytes=None)
    called = []
    assert probe_stage(plan, called.append, arch("tiny"), 4, free_bytes=None) is plan
    assert called == []


def test_fallbacks_order():
    a = arch("1.4m")
    plan = plan_stage(a, 1 << 14, 64, device_type="cuda", free_bytes=139 * GiB)
    steps = fallbacks(plan, a, 64)
    same = [s for s in steps if s.policy == plan.policy]
    assert [s.micro_batch for s in same] == sorted((s.micro_batch for s in same), reverse=True)
    assert all(s.micro_batch < plan.micro_batch for s in same)
    others = steps[len(same):]
    assert others and all(bytes_per_token(a, s.runtime) < bytes_per_token(a, plan.runtime) for s in others)


# ----------------------------------------------------------------------------------- calibration
CALIBRATION_JSON = (Path(__file__).resolve().parents[1] / "benchmarks" / "results"
                    / "calibrate_memory_h200_2026-12-01.json")


def test_calibration_table_is_the_shipped_json():
    rows = json.loads(CALIBRATION_JSON.read_text())["rows"]
    assert mem.calibration_table(rows) == mem.CALIBRATION


def test_estimate_never_under_any_calibration_peak():
    rows = [r for r in json.loads(CALIBRATION_JSON.read_text())["rows"] if r["status"] == "ok"]
    assert len(rows) == 58
    ratios = [estimate_bytes(arch(r["preset"]), runtime_of(r["policy"]), r["seq_len"], r["micro_batch"])
              / (r["peak_gib"] * GiB) for r in rows]
    assert 1.0 <= min(ratios) and max(ratios) <= 1.10, (min(ratios), max(ratios))


def test_skip_speed_goes_through_a_measured_row(monkeypatch):
    a = arch("1.4m")
    row = {k: dict(v) for k, v in mem.CALIBRATION[(128, 12, 1 << 14)].items()}
    lo, hi = row["policies"]["ckpt-s8"] / row["policies"]["none-s8"], 1.0
    assert mem.relative_speed(a, 1 << 14, "ckpt-s8+skip6") == pytest.approx((lo + hi) / 2)
    row["policies"]["ckpt-s8+skip6"] = row["policies"]["none-s8"] * 0.99
    monkeypatch.setitem(mem.CALIBRATION, (128, 12, 1 << 14), row)
    assert mem.relative_speed(a, 1 << 14, "ckpt-s8+skip6") == pytest.approx(0.99)
    assert mem.relative_speed(a, 1 << 14, "ckpt-s8+skip3") == pytest.approx((lo + 0.99) / 2)
    assert mem.relative_speed(a, 1 << 14, "ckpt-s8+skip12") == pytest.approx(1.0)


def test_lm_probe_step_runs_a_real_step_with_the_plans_runtime(monkeypatch):
    from mamba_genome.model.lm import MambaLM

    monkeypatch.setattr(mem, "WORKSPACE_BYTES", 0)   # a tiny model: let activations decide
    a = MambaConfig.from_preset("tiny", d_model=16, n_layer=2)
    model = MambaLM(a)
    per_device, seq_len = 8, 128
    free = int(estimate_bytes(a, runtime_of("none-s8"), seq_len, per_device) / GPU_MEMORY_FRACTION * 1.01)
    plan = plan_stage(a, seq_len, per_device, device_type="cuda", free_bytes=free)
    assert (plan.policy, plan.micro_batch) == ("none-s8", per_device)
    dev = FakeDevice(a, capacity=free, scale=1.3)    # needs 1.3x the estimate: the plan runs out of memory
    step = mem.lm_probe_step(model, "cpu")
    ran = []

    def step_on_fake_gpu(p):
        dev.step(p)          # raises for sizes over the fake device, as a GPU would
        step(p)              # a real forward and backward on CPU
        ran.append(p)

    got = probe_stage(plan, step_on_fake_gpu, a, per_device, free_bytes=free, device_memory=dev)
    assert [(p.policy, p.micro_batch) for p in ran] == [(got.policy, got.micro_batch)]
    assert got.micro_batch < plan.micro_batch and got.measured_bytes is not None
    # the plan that ran is on the model, and the probe left no gradients behind
    cfg = model.runtime
    assert (cfg.gradient_checkpointing, cfg.scan_state_every) == (got.runtime.gradient_checkpointing,
                                                                  got.runtime.scan_state_every)
    assert all(p.grad is None for p in model.parameters())
    mem.apply_runtime(model, runtime_of("ckpt-bf16"))
    cfg = model.runtime
    assert cfg.gradient_checkpointing and cfg.checkpoint_bf16 and not cfg.checkpoint_keep_scan


def test_fallbacks_keep_a_hand_set_runtime():
    a = arch("1.4m")
    rt = mem.RuntimeOptions(scan_state_every=16)      # e.g. from the expert --scan-state-every flag
    plan = MemoryPlan(1 << 14, 64, rt, estimate_bytes(a, rt, 1 << 14, 64), "given")
    steps = fallbacks(plan, a, 64)
    same = [s for s in steps if s.runtime == rt]
    assert [s.micro_batch for s in same] == [32, 16, 8, 4, 2, 1]
    assert all(s.policy is None and "given runtime" in s.reason for s in same)
    assert all(bytes_per_token(a, s.runtime) < bytes_per_token(a, rt) for s in steps[len(same):])


def test_default_relative_speeds_are_the_calibration_medians():
    import statistics

    for policy, speed in mem.DEFAULT_RELATIVE_SPEED.items():
        ratios = [r["policies"][policy] / r["policies"]["none-s8"] for r in mem.CALIBRATION.values()]
        assert speed == pytest.approx(statistics.median(ratios), abs=5e-4), policy
