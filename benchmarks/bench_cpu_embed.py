"""CPU embedding end to end: ``mamba-genome embed`` of one 64 kbp sequence (issue 17's target).

What is timed: the CLI in a fresh process (``python -m mamba_genome embed FASTA --model DIR -o
OUT.npy``, mean pooling, the CPU defaults: fp32, ``CPU_CHUNK_SIZE`` steps), for randomly
initialised ``tiny`` and ``1.4m`` models saved as model directories (the weights do not change
the work), with ``--chunk-size`` as given (default: the engine's). Per row: the command's wall
time, the seconds ``embed`` reports for the embedding itself and kbp/s from them, and kbp/s
from the wall time minus that of a run on a 1 kbp record (start-up: imports, numba cache
load, model load). The record is the first
65,536 bases of the bundled E. coli genome. The load average is printed: compare rows of one
run.

``--api`` times instead what the issue's figures (22-25 kbp/s tiny, 3-4 kbp/s 1.4m, BENCHMARKS.md
section 5, 2026-11-22) timed: ``load(DIR).embed(seq)`` of one 64 kbp random sequence (mean
pooling, fp32) in a fresh process, so the first call pays numba's start-up (import, first load
of the cached kernels) as that run paid its own first-call costs. It prints the first call
and a second call in the same process (the steady rate), with ``import mamba_genome`` +
``load`` apart; two fresh processes per preset.

Usage (from the repo root):
    python benchmarks/bench_cpu_embed.py                      # tiny and 1.4m
    python benchmarks/bench_cpu_embed.py --presets tiny --chunk-sizes 8192,131072
    python benchmarks/bench_cpu_embed.py --api
"""
from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def bundled_sequence(n: int) -> str:
    path = next((ROOT / "mamba_genome" / "bundled").glob("*.f*a*"))
    opener = gzip.open if path.suffix == ".gz" else open
    seq = []
    with opener(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                continue
            seq.append(line.strip())
            if sum(map(len, seq)) >= n:
                break
    return "".join(seq)[:n]


def run_embed(fasta: Path, model: Path, out: Path, chunk: int | None) -> tuple[float, float]:
    """(the command's wall seconds, the embedding seconds it reports itself)."""
    cmd = [sys.executable, "-m", "mamba_genome", "embed", str(fasta), "--model", str(model), "-o", str(out)]
    if chunk:
        cmd += ["--chunk-size", str(chunk)]
    if out.exists():
        out.unlink()
    t = time.perf_counter()
    res = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    # the summary table's last row: records, bp, d_model, pool, seconds, bp/s, output
    row = [ln.split() for ln in res.stderr.splitlines() if ln.rstrip().endswith(out.name)][-1]
    return wall, float(row[4])


_API = """
import sys, time
t0 = time.perf_counter()
import numpy as np
from mamba_genome import load
m = load(sys.argv[1])
t1 = time.perf_counter()
rng = np.random.default_rng(0)
seq = "".join(rng.choice(list("ACGT"), int(sys.argv[2])))
t2 = time.perf_counter(); m.embed(seq); t3 = time.perf_counter(); m.embed(seq); t4 = time.perf_counter()
print(t1 - t0, t3 - t2, t4 - t3)
"""


def run_api(model: Path, length: int) -> tuple[float, float, float]:
    """(import + load s, first embed s, second embed s) in a fresh process."""
    res = subprocess.run([sys.executable, "-c", _API, str(model), str(length)], check=True, cwd=ROOT,
                         capture_output=True, text=True)
    return tuple(float(v) for v in res.stdout.split()[-3:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="tiny,1.4m")
    ap.add_argument("--chunk-sizes", default="", help="comma-separated --chunk-size values ('' = the default)")
    ap.add_argument("--length", type=int, default=65536)
    ap.add_argument("--api", action="store_true", help="time load(...).embed in fresh processes (the issue's way)")
    args = ap.parse_args(argv)
    import torch

    from mamba_genome.checkpoint import save_model
    from mamba_genome.model.lm import MambaLM

    seq = bundled_sequence(args.length)
    chunks = [int(c) for c in args.chunk_sizes.split(",") if c] or [None]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "long.fa").write_text(f">long\n{seq}\n")
        (tmp / "short.fa").write_text(f">short\n{seq[:1000]}\n")
        print(f"load average {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} threads, {len(seq):,} bp")
        if args.api:
            print("| preset | import + load s | first embed s | kbp/s (first) | second embed s | kbp/s (second) |")
            print("|---|---:|---:|---:|---:|---:|")
            for preset in args.presets.split(","):
                torch.manual_seed(0)
                model = save_model(MambaLM.from_preset(preset), tmp / f"model_{preset}")
                run_api(model, 1000)                                          # numba cache, page cache
                for _ in range(2):
                    t_load, first, second = run_api(model, args.length)
                    print(f"| {preset} | {t_load:.2f} | {first:.2f} | {args.length / first / 1e3:.1f} | {second:.2f} "
                          f"| {args.length / second / 1e3:.1f} |", flush=True)
            print(f"load average after {os.getloadavg()[0]:.2f}")
            return 0
        print("| preset | chunk | command wall s | embed's own seconds | kbp/s (own) | kbp/s (wall minus 1 kbp run) |")
        print("|---|---:|---:|---:|---:|---:|")
        for preset in args.presets.split(","):
            torch.manual_seed(0)
            model = save_model(MambaLM.from_preset(preset), tmp / f"model_{preset}")
            run_embed(tmp / "short.fa", model, tmp / "warm.npy", None)        # numba cache, page cache
            for chunk in chunks:
                t_short, _ = run_embed(tmp / "short.fa", model, tmp / "s.npy", chunk)
                t_long, own = run_embed(tmp / "long.fa", model, tmp / "l.npy", chunk)
                rate = (len(seq) - 1000) / max(t_long - t_short, 1e-9) / 1e3
                print(f"| {preset} | {chunk or 'default'} | {t_long:.1f} | {own:.2f} | {len(seq) / own / 1e3:.1f} "
                      f"| {rate:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
