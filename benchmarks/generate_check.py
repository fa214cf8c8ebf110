"""Does ``mamba-genome generate`` produce sequence like the genome the model was trained on?

Samples ``--num-samples`` sequences of ``--length`` bases (default: the scoring window) from
a pretrained model with :func:`mamba_genome.workflows.generate.generate` (temperature 1, all
four bases), then compares them with the training genome on the measures of
:mod:`mamba_genome.inference.compare`: bits per base under the model (genome and samples
both scored in windows of ``--window``, the context the model was trained on), GC content
and the k-mer spectrum (total variation distance, k = 1..6). Prints a table with PASS/FAIL
against the tolerances (options below) and exits 1 if any fails; also reports generate's
bases/s.

Why these should agree: at temperature 1 the samples are draws from the model, so their
bits/base is the model's entropy rate; for a model that fits the genome that is close to the
genome's cross-entropy under it, and the samples' composition is the genome's.

Usage (from the repo root):
    python benchmarks/generate_check.py --model runs/ecoli-7m --window 1024        # any pretrained run
    python benchmarks/generate_check.py --quick          # pretrain tiny on the bundled E. coli first
Writes ``$OUT/generate_check.json`` when ``$OUT`` is set (or to ``--json``).

Expected output (--quick, tiny preset, 2 CPU cores; shape, not exact numbers): a table of
bits/base, GC and k-mer TV for genome vs samples, each marked PASS, and "all checks passed".
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a source checkout

import numpy as np  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="pretrained model or run directory")
    ap.add_argument("--genome", default=str(ROOT / "mamba_genome" / "bundled" / "ecoli_k12.fa.gz"),
                    help="the training genome (FASTA or token store) [bundled E. coli K-12]")
    ap.add_argument("--genome-bp", type=int, default=None, help="score only the first N bases of the genome")
    ap.add_argument("--window", type=int, default=1024, help="scoring window = the model's training context")
    ap.add_argument("--length", type=int, default=None, help="bases per sample [--window]")
    ap.add_argument("--num-samples", type=int, default=None, help="[1024 on a GPU, 256 on CPU]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--tol-bits", type=float, default=0.05, help="|bits/base samples - genome|")
    ap.add_argument("--tol-gc", type=float, default=0.01, help="|GC samples - genome|")
    ap.add_argument("--tol-tv", type=float, default=0.05, help="k-mer total variation for k <= 3")
    ap.add_argument("--quick", action="store_true",
                    help="first pretrain the tiny preset on --genome for --quick-steps steps (CPU: minutes)")
    ap.add_argument("--quick-steps", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not args.model and not args.quick:
        ap.error("give --model RUN, or --quick to pretrain a tiny model first")

    import torch

    from mamba_genome.api import load
    from mamba_genome.inference.compare import compare_to_genome
    from mamba_genome.inference.sequences import open_sequences
    from mamba_genome.workflows.generate import generate

    work = Path(tempfile.mkdtemp(prefix="generate-check-"))
    if args.quick:
        from mamba_genome.workflows.pretrain import PretrainArgs, pretrain

        args.model = str(work / "run")
        pretrain(PretrainArgs(fasta=args.genome, preset="tiny", seq_len=args.window, max_steps=args.quick_steps,
                              out=args.model, quiet=True))
    gm = load(args.model, device=args.device)
    dev = gm.device
    length = args.length or args.window
    n = args.num_samples or (1024 if dev.type == "cuda" else 256)
    res = generate(args.model, work / "samples.fa", length=length, num_samples=n, seed=args.seed,
                   device=str(dev), progress=False)
    samples = open_sequences(work / "samples.fa")
    genome = open_sequences(args.genome, progress=False)

    def windows(seqs, names, limit=None):
        out, total = [], 0
        for name in names:
            t = seqs[name]
            for s in range(0, len(t) - 1, args.window):
                w = np.asarray(t[s: s + args.window])
                out.append(w)
                total += len(w)
                if limit and total >= limit:
                    return out
        return out

    t0 = time.perf_counter()
    r = compare_to_genome(gm.engine, windows(genome, genome.names, args.genome_bp),
                          windows(samples, samples.names), ks=(1, 2, 3, 4, 5, 6),
                          precision="auto")
    checks = [("bits/base", r["bits_per_base"]["genome"], r["bits_per_base"]["samples"],
               abs(r["bits_per_base"]["diff"]), args.tol_bits),
              ("GC", r["gc"]["genome"], r["gc"]["samples"], abs(r["gc"]["diff"]), args.tol_gc)]
    checks += [(f"{k}-mer TV", None, None, tv, args.tol_tv if k <= 3 else None) for k, tv in r["kmer_tv"].items()]
    print(f"model {args.model}; {n} samples x {length:,} bases on {dev}: generate {res.bases_per_s:,.0f} bases/s; "
          f"scoring {time.perf_counter() - t0:.1f} s")
    print(f"{'measure':<12}{'genome':>10}{'samples':>10}{'|diff|':>10}{'tolerance':>11}  result")
    failed = 0
    for name, g, s, d, tol in checks:
        ok = tol is None or d <= tol
        failed += not ok
        print(f"{name:<12}{'' if g is None else format(g, '.4f'):>10}{'' if s is None else format(s, '.4f'):>10}"
              f"{d:>10.4f}{'' if tol is None else format(tol, '.3f'):>11}  "
              f"{'-' if tol is None else 'PASS' if ok else 'FAIL'}")
    print("all checks passed" if not failed else f"{failed} check(s) failed")
    out = args.json or (os.path.join(os.environ["OUT"], "generate_check.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({"model": args.model, "device": str(dev), "samples": n, "length": length,
                                         "window": args.window, "generate_bases_per_s": res.bases_per_s,
                                         "torch": torch.__version__, "tolerances": {
                                             "bits": args.tol_bits, "gc": args.tol_gc, "tv_k<=3": args.tol_tv},
                                         **r, "passed": not failed}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
