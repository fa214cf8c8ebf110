"""The training engine on one CUDA GPU: planner defaults against hand-tuned steps, and the probe.

Three checks, one command (about 6 minutes on one H200), results in ``$OUT/engine_gpu_check.json``:

1. ``bench train`` shapes of issue 13 (1.4m: 64 x 2^14, 1 x 2^20; 7m: 8 x 2^17, 1 x 2^20), each
   run twice through :func:`mamba_genome.workflows.bench_train.run_bench_train`: with no hand-set
   flags (the planner's micro-batch and policy, probed) and hand-tuned (the issue's best settings).
   Reported: both tokens/s, their ratio (target >= 0.95), the plan the engine chose.
2. ``pretrain`` (1.4m, bundled E. coli, seq-len 16,384 warming up from 4,096) on a GPU that has
   far less free memory than the planner is told: a ballast tensor takes all but ~16 GiB, and the
   planner is given the free memory from before the ballast. Each stage's probe must run out of
   memory and step down; every stage's plan in metrics.json must carry a measured peak.
3. ``finetune`` (tiny, the S. aureus test slices, seq-len 512, warmup from 256): the classifier's
   probe on CUDA; every stage measured.

Usage (from a source checkout, on a machine with one CUDA GPU)::

    OUT=/tmp/out PYTHONPATH=. python benchmarks/engine_gpu_check.py          # all three
    OUT=/tmp/out PYTHONPATH=. python benchmarks/engine_gpu_check.py --only bench
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mamba_genome.workflows.bench_train import BenchTrainConfig, run_bench_train  # noqa: E402

GiB = 1 << 30
# (preset, seq_len, batch) -> the hand-tuned flags of issue 13 / BENCHMARKS.md
SHAPES = {
    ("1.4m", 1 << 14, 64): dict(micro_batch_size=64, grad_checkpointing=False, scan_state_every=8),
    ("1.4m", 1 << 20, 1): dict(micro_batch_size=1, grad_checkpointing=False, scan_state_every=8),
    ("7m", 1 << 17, 8): dict(micro_batch_size=8, grad_checkpointing=False, scan_state_every=8),
    ("7m", 1 << 20, 1): dict(micro_batch_size=1, grad_checkpointing=True, scan_state_every=8, checkpoint_skip=11),
}


def bench(steps: int) -> list[dict]:
    rows = []
    for (preset, L, b), tuned in SHAPES.items():
        row = {"preset": preset, "seq_len": L, "batch": b}
        for name, flags in (("default", {}), ("hand_tuned", tuned)):
            cfg = BenchTrainConfig(preset=preset, seq_len=L, batch_size=b, steps=steps, warmup=2, scan_share=False,
                                   **flags)
            try:
                r = run_bench_train(cfg, log=lambda m: print(f"  {m}", flush=True))
                row[name] = {"tokens_per_s": r.tokens_per_s, "peak_gib": r.peak_mem_gib, "policy": r.policy,
                             "micro_batch": r.micro_batch, "accumulate": r.accumulate, "runtime": r.runtime,
                             "plan": r.plan_reason}
            except torch.OutOfMemoryError as exc:
                row[name] = {"status": f"OOM: {str(exc).splitlines()[0][:120]}"}
            torch.cuda.empty_cache()
        d, h = row["default"].get("tokens_per_s"), row["hand_tuned"].get("tokens_per_s")
        row["default_over_hand_tuned"] = round(d / h, 4) if d and h else None
        print(f"{preset} {b} x {L}: default {d or 0:,.0f} tok/s, hand-tuned {h or 0:,.0f} -> "
              f"{row['default_over_hand_tuned']}", flush=True)
        rows.append(row)
    return rows


def pretrain_with_ballast(tmp: Path) -> dict:
    from mamba_genome.train import engine
    from mamba_genome.workflows.pretrain import PretrainArgs, pretrain

    torch.cuda.empty_cache()
    free_before = int(torch.cuda.mem_get_info()[0])
    ballast = torch.empty(max(0, free_before - 16 * GiB), dtype=torch.uint8, device="cuda")
    real_free = int(torch.cuda.mem_get_info()[0])
    orig = engine.device_memory
    engine.device_memory = lambda on_gpu: ("cuda", free_before)   # the planner believes the ballast is not there
    try:
        m = pretrain(PretrainArgs(preset="1.4m", seq_len=1 << 14, seq_warmup_start=1 << 12, max_steps=30,
                                  val_every=15, val_windows=16, out=str(tmp / "pretrain"), quiet=False))
    finally:
        engine.device_memory = orig
        del ballast
        torch.cuda.empty_cache()
    stages = [{k: s[k] for k in ("seq_len", "micro_batch", "accumulate", "policy", "est_bytes", "measured_bytes",
                                 "reason")} for s in m["stages"]]
    ok = all(s["measured_bytes"] is not None and s["measured_bytes"] <= 0.85 * free_before for s in stages)
    stepped = all("step-down" in s["reason"] for s in stages)
    print(f"pretrain with ballast: {real_free / GiB:.1f} GiB really free, planned for {free_before / GiB:.1f}; "
          f"every stage probed: {ok}, every stage stepped down: {stepped}; val {m['val_bits_per_base']:.4f} bits/base",
          flush=True)
    return {"free_planned_gib": free_before / GiB, "free_real_gib": real_free / GiB, "stages": stages,
            "all_probed": ok, "all_stepped_down": stepped, "steps": m["steps"],
            "val_bits_per_base": m["val_bits_per_base"], "tokens_per_second": m["tokens_per_second"]}


def finetune_on_gpu(tmp: Path) -> dict:
    from mamba_genome.workflows.finetune import FinetuneArgs, finetune

    data = ROOT / "tests" / "data"
    m = finetune(FinetuneArgs(classes=(f"COL={data / 'saureus_COL_8k.fa'}", f"N315={data / 'saureus_N315_8k.fa'}"),
                              seq_len=512, seq_len_start=256, batch_size=32, max_steps=40, steps_per_epoch=10,
                              val_windows=8, test_windows=8, out=str(tmp / "finetune"), progress=False))
    stages = [{k: s[k] for k in ("seq_len", "micro_batch", "accumulate", "policy", "measured_bytes", "reason")}
              for s in m["stages"]]
    ok = all(s["measured_bytes"] is not None for s in stages)
    print(f"finetune: stages {[s['seq_len'] for s in stages]}, every stage probed: {ok}, "
          f"test accuracy {m['test_accuracy']:.3f}", flush=True)
    return {"stages": stages, "all_probed": ok, "steps": m["steps"], "test_accuracy": m["test_accuracy"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["bench", "pretrain", "finetune"], default=None)
    ap.add_argument("--steps", type=int, default=8, help="measured bench steps per run")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("error: needs a CUDA GPU", file=sys.stderr)
        return 2
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MAMBA_GENOME_CACHE", str(Path(tmp) / "cache"))
        if a.only in (None, "bench"):
            out["bench"] = bench(a.steps)
        if a.only in (None, "pretrain"):
            out["pretrain_ballast"] = pretrain_with_ballast(Path(tmp))
        if a.only in (None, "finetune"):
            out["finetune"] = finetune_on_gpu(Path(tmp))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).mkdir(parents=True, exist_ok=True)
        Path(os.environ["OUT"], "engine_gpu_check.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

# Expected: four bench rows with default_over_hand_tuned near or above 0.95; "every stage probed: True,
# every stage stepped down: True" for pretrain; "every stage probed: True" for finetune.
