"""Fine-tuning benchmark: S. aureus strain classification at several window lengths vs a k-mer baseline.

Builds the 5-strain task from a directory of FASTA files (one class per
file, label = file name without .fa[.gz]; each genome's last 20% is test and
the 10% before it val), fine-tunes the paper's ``1.4m`` model from scratch at
each ``--seq-lens`` value for a bounded wall time, and fits the 6-mer
logistic-regression baseline on exactly the same train/test windows.
Prints a table and writes ``$OUT/bench_finetune.json`` when ``$OUT`` is set.

    PYTHONPATH=. python benchmarks/bench_finetune.py --src ../shared/data/saureus            # GPU
    PYTHONPATH=. python benchmarks/bench_finetune.py --src ../shared/data/saureus \\
        --seq-lens 1024,16384,65536 --minutes 8                                              # longer windows
    PYTHONPATH=. python benchmarks/bench_finetune.py --smoke                                # CPU, < 1 min

Batch size is chosen so every run sees about ``--tokens-per-batch`` tokens per
step. The LR cosine follows the step count or the clock, whichever is further,
so a time-bounded run still anneals.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from mamba_genome.cli.common import print_table
from mamba_genome.workflows.finetune import FinetuneArgs, finetune

_FASTA = (".fa", ".fa.gz", ".fasta", ".fasta.gz", ".fna", ".fna.gz")


def class_pairs(src: Path) -> list[str]:
    files = sorted(p for p in src.iterdir() if p.is_file() and p.name.lower().endswith(_FASTA))
    if len(files) < 2:
        raise SystemExit(f"error: {src} holds {len(files)} FASTA file(s); need one per class, at least 2")
    pairs = []
    for p in files:
        label = p.name
        for suf in sorted(_FASTA, key=len, reverse=True):
            if label.lower().endswith(suf):
                label = label[: -len(suf)]
                break
        pairs.append(f"{label}={p}")
    return pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default="../shared/data/saureus", help="directory of FASTA files, one per class")
    ap.add_argument("--seq-lens", default="1024,16384", help="comma-separated window lengths (e.g. 1024,16384,65536)")
    ap.add_argument("--minutes", type=float, default=4.0, help="training wall time per window length")
    ap.add_argument("--max-steps", type=int, default=20000, help="step cap per run (the LR schedule's horizon)")
    ap.add_argument("--tokens-per-batch", type=int, default=1 << 17, help="batch size = this / seq_len (at least 1)")
    ap.add_argument("--preset", default="1.4m")
    ap.add_argument("--steps-per-epoch", type=int, default=200, help="steps between validations")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--test-windows", type=int, default=300, help="fixed test windows per class (fewer if the tail is short)")
    ap.add_argument("--kmer-train-windows", type=int, default=1500, help="baseline training windows per class")
    ap.add_argument("--num-workers", type=int, default=4)
    ap.add_argument("--work", default=None, help="directory for token stores and runs [default: a temp dir]")
    ap.add_argument("--smoke", action="store_true", help="tiny model, short windows, seconds per run (CPU check)")
    args = ap.parse_args(argv)

    src = Path(args.src)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_finetune-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.smoke and not src.is_dir():
        # No genomes here: the two 8 kbp S. aureus test slices, copied so no index lands in tests/data.
        src = work / "src"
        src.mkdir(exist_ok=True)
        for name in ("saureus_COL_8k.fa", "saureus_N315_8k.fa"):
            shutil.copy(Path(__file__).resolve().parent.parent / "tests" / "data" / name, src / name)
    if not src.is_dir():
        raise SystemExit(f"error: --src {src} is not a directory")
    pairs = class_pairs(src)
    seq_lens = [64, 128] if args.smoke else [int(x) for x in args.seq_lens.split(",")]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(f"bench_finetune: {len(pairs)} classes from {src}; seq_lens {seq_lens}; device {device}", file=sys.stderr)

    results = []
    for L in seq_lens:
        batch = 4 if args.smoke else max(1, args.tokens_per_batch // L)
        fa = FinetuneArgs(
            classes=tuple(pairs), preset="tiny" if args.smoke else args.preset, seq_len=L, batch_size=batch,
            max_steps=4 if args.smoke else args.max_steps, max_time_s=None if args.smoke else args.minutes * 60,
            steps_per_epoch=2 if args.smoke else args.steps_per_epoch, lr=args.lr,
            warmup_steps=None if args.smoke else 100,
            val_fraction=0.1, test_fraction=0.2, val_windows=4 if args.smoke else 32,
            test_windows=4 if args.smoke else args.test_windows, baseline="kmer", kmer_k=4 if args.smoke else 6,
            kmer_train_windows=(20 if args.smoke else args.kmer_train_windows) * len(pairs),
            out=str(work / f"run_L{L}"), store_dir=str(work / "stores"), seed=0,
            accelerator="cpu" if args.smoke else "auto", num_workers=0 if args.smoke else args.num_workers,
            progress=not args.smoke, model_overrides={"d_model": 16, "n_layer": 1} if args.smoke else {})
        t0 = time.perf_counter()
        m = finetune(fa)
        wall = time.perf_counter() - t0
        row = {
            "seq_len": L, "batch_size": batch, "steps": m["steps"], "train_s": m["train_seconds"], "wall_s": round(wall, 1),
            "tokens_per_s": round(m["steps"] * batch * L / max(m["train_seconds"], 1e-9)),
            "test_accuracy": m["test_accuracy"], "test_macro_f1": m["test_macro_f1"],
            "kmer_accuracy": m["kmer_baseline"]["accuracy"], "kmer_macro_f1": m["kmer_baseline"]["macro_f1"],
            "n_test_windows": m["n_test_windows"], "best_val_acc": (m["best"] or {}).get("val_acc"),
            "num_parameters": m["num_parameters"],
        }
        results.append(row)
        print(f"seq_len {L}: acc {row['test_accuracy']:.3f} (k-mer {row['kmer_accuracy']:.3f}) "
              f"after {row['steps']} steps", file=sys.stderr)

    print_table([{"seq_len": r["seq_len"], "steps": r["steps"], "wall_s": r["wall_s"],
                  "test_acc": f"{r['test_accuracy']:.3f}", "macro_f1": f"{r['test_macro_f1']:.3f}",
                  "kmer_acc": f"{r['kmer_accuracy']:.3f}", "tok/s": f"{r['tokens_per_s']:,}"} for r in results],
                file=sys.stdout)
    report = {"benchmark": "finetune", "device": device, "src": str(src), "classes": [p.split("=")[0] for p in pairs],
              "smoke": args.smoke, "preset": "tiny" if args.smoke else args.preset,
              "chance": 1 / len(pairs), "results": results, "torch": torch.__version__}
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "bench_finetune.json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {Path(out) / 'bench_finetune.json'}", file=sys.stderr)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
