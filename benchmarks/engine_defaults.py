"""Tokens/s of `mamba-genome pretrain` with its defaults, against the hand-tuned figures of issue 13.

For each preset and window length, one `pretrain` run through the CLI with no tuning flags (the
engine's memory planner picks micro-batch, accumulation and memory policy per sequence-length
stage; validation is kept under 3% of the clock) for a fixed wall-clock budget, and the same with
--no-seq-warmup. Reads each run's metrics.json: tokens/s (training loop, validation and exports
counted), tokens seen, the fraction of the clock spent validating, the stage plans. Writes
$OUT/engine_defaults.json (or ./engine_defaults.json) and prints a table.

    PYTHONPATH=. python benchmarks/engine_defaults.py --fasta ../shared/data/umaydis/Umaydis.fa.gz   # 1 GPU
    PYTHONPATH=. python benchmarks/engine_defaults.py --smoke      # CPU, the bundled genome, seconds

Hand-tuned figures to reach 95% of (issue 13, H200, bf16): 1.4m 2.84 M tokens/s at 2^14 and
3.32 M at 2^20; 7m 1.21 M at 8 x 2^17 and 1.18 M at 2^20.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {("1.4m", 1 << 14): 2.84e6, ("1.4m", 1 << 20): 3.32e6, ("7m", 1 << 17): 1.21e6, ("7m", 1 << 20): 1.18e6}


def run_one(exe: list[str], data_flag: list[str], preset: str, seq_len: int, budget: str, out: Path,
            extra: list[str]) -> dict:
    cmd = [*exe, "pretrain", *data_flag, "--preset", preset, "--seq-len", str(seq_len), "--max-time", budget,
           "--out", str(out), "-q", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    row = {"preset": preset, "seq_len": seq_len, "flags": " ".join(extra), "rc": proc.returncode,
           "wall_s": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0:
        row["error"] = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else ["?"]
        return row
    m = json.loads((out / "metrics.json").read_text())
    row.update(tokens_per_second=m["tokens_per_second"], tokens_seen=m["tokens_seen"], steps=m["steps"],
               val_bits_per_base=m["val_bits_per_base"], val_fraction=m.get("val_fraction"),
               train_seconds=m["train_seconds"], wall_seconds=m["wall_seconds"],
               whole_run_tokens_per_second=m["tokens_seen"] / max(m["wall_seconds"], 1e-9),
               stages=[{k: p[k] for k in ("seq_len", "micro_batch", "accumulate", "reason")} for p in m["stages"]])
    target = TARGETS.get((preset, seq_len))
    if target:
        row["target_95pct"] = 0.95 * target
        row["meets_target"] = row["tokens_per_second"] >= 0.95 * target
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fasta", help="genome FASTA (default: the bundled E. coli)")
    ap.add_argument("--presets", nargs="+", default=["1.4m", "7m"])
    ap.add_argument("--exps", nargs="+", type=int, default=[10, 14, 17, 20], help="log2 window lengths")
    ap.add_argument("--budget", default="90s", help="--max-time of each run")
    ap.add_argument("--no-warmup-too", action="store_true", help="also run each shape with --no-seq-warmup")
    ap.add_argument("--smoke", action="store_true", help="CPU: tiny preset, 2^9, 20 s")
    args = ap.parse_args()
    exe = [sys.executable, "-c", "from mamba_genome.cli import main; main()"]
    data_flag = ["--fasta", args.fasta] if args.fasta else []
    shapes = [("tiny", 1 << 9)] if args.smoke else [(p, 1 << e) for p in args.presets for e in args.exps]
    budget = "20s" if args.smoke else args.budget
    extra_sets = [[]] + ([["--no-seq-warmup"]] if args.no_warmup_too else [])
    if args.smoke:
        extra_sets = [["--accelerator", "cpu"]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (preset, L) in enumerate(shapes):
            for j, extra in enumerate(extra_sets):
                row = run_one(exe, data_flag, preset, L, budget, Path(tmp) / f"r{i}-{j}", extra)
                rows.append(row)
                tps = row.get("tokens_per_second")
                print(f"{preset:5s} {L:>8,} {row['flags']:16s} rc={row['rc']} "
                      f"tok/s={tps / 1e6 if tps else float('nan'):.3f}M val_fraction={row.get('val_fraction')} "
                      f"target_met={row.get('meets_target')} {row.get('error', '')}", flush=True)
    out = Path(os.environ.get("OUT", ".")) / "engine_defaults.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "budget": budget,
                               "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
