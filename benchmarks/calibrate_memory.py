"""Peak memory and tokens/s of one training step over micro-batch sizes and memory policies.

The data behind the memory planner (mamba_genome/train/memory.py): for each preset and window
length, the tokens/s and peak memory of single micro-batch steps (forward, backward, AdamW; bf16
autocast; random tokens) at several micro-batch sizes and memory policies. OOM is recorded, not
fatal. Rows past --budget-s are skipped. Writes $OUT/calibrate_memory.json when $OUT is set.

    PYTHONPATH=. python benchmarks/calibrate_memory.py                 # one GPU, ~4 min
    PYTHONPATH=. python benchmarks/calibrate_memory.py --smoke         # CPU, seconds
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from mamba_genome.workflows.bench_train import BenchTrainConfig, run_bench_train  # noqa: E402

from mamba_genome.train.memory import runtime_of  # noqa: E402

# the planner's policy names; "ckpt-s8+skip8" (half the layers plain) lets train/memory.py interpolate
# the speed of "ckpt-s8+skipK" by K
POLICY_NAMES = ("none-s8", "none-s64", "ckpt-s8", "ckpt-s64", "ckpt-bf16", "ckpt-s8+skip8")


def bench_options(policy: str) -> dict:
    """BenchTrainConfig fields of one of the planner's policies (train/memory.py:runtime_of)."""
    rt = runtime_of(policy)
    return dict(grad_checkpointing=rt.gradient_checkpointing, checkpoint_bf16=rt.checkpoint_bf16,
                scan_state_every=rt.scan_state_every, checkpoint_skip=rt.checkpoint_skip)


def rows(presets, exps, micro_exps):
    for preset in presets:
        for e in exps:
            L = 1 << e
            for m in micro_exps:
                if (1 << m) >= L:
                    yield preset, L, (1 << m) // L, "none-s8"
            top = max(1, (1 << max(micro_exps)) // L)
            for pol in POLICY_NAMES[1:]:   # none-s8 is the curve above
                yield preset, L, top, pol


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["1.4m", "7m"])
    ap.add_argument("--seq-exps", nargs="+", type=int, default=[10, 14, 17, 20])
    ap.add_argument("--micro-exps", nargs="+", type=int, default=[17, 18, 19, 20])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=280.0)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.presets, a.seq_exps, a.micro_exps, a.steps, a.warmup = ["tiny"], [8], [9, 10], 1, 0
    dev = "cuda" if torch.cuda.is_available() and not a.smoke else "cpu"
    out, t0 = [], time.time()
    print(f"{'preset':6} {'seq_len':>8} {'micro':>5} {'policy':13} {'Mtok/s':>7} {'peak GiB':>8}")
    for preset, L, micro, pol in rows(a.presets, a.seq_exps, a.micro_exps):
        rec = dict(preset=preset, seq_len=L, micro_batch=micro, policy=pol)
        if time.time() - t0 > a.budget_s:
            rec["status"] = "skipped (budget)"
            out.append(rec)
            continue
        gc.collect()
        if dev == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            # exactly this micro-batch and policy, in one forward (hand-set: not planned, not probed)
            cfg = BenchTrainConfig(preset=preset, seq_len=L, batch_size=micro, micro_batch_size=micro,
                                   steps=a.steps, warmup=a.warmup,
                                   precision="bf16-mixed" if dev == "cuda" else "32", device=dev,
                                   scan_share=False, **bench_options(pol))
            r = run_bench_train(cfg)
            rec.update(status="ok", tokens_per_s=r.tokens_per_s, step_ms=r.step_ms, peak_gib=r.peak_mem_gib,
                       reserved_gib=r.reserved_gib)
        except torch.OutOfMemoryError:
            rec["status"] = "OOM"
        except RuntimeError as exc:  # e.g. CUDA errors from allocation failure inside Triton
            rec["status"] = f"error: {str(exc).splitlines()[0][:120]}"
        out.append(rec)
        tps = f"{rec['tokens_per_s'] / 1e6:7.3f}" if rec.get("status") == "ok" else f"{rec['status']:>7}"
        peak = f"{rec['peak_gib']:8.2f}" if rec.get("peak_gib") else f"{'':8}"
        print(f"{preset:6} {L:8d} {micro:5d} {pol:13} {tps} {peak}", flush=True)
    meta = dict(device=torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                total_gib=torch.cuda.mem_get_info()[1] / 2**30 if dev == "cuda" else None,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), torch=torch.__version__)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "calibrate_memory.json").write_text(json.dumps(dict(meta=meta, rows=out), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
