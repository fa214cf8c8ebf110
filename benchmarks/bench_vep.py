"""End-to-end variant-effect throughput: ``mamba-genome score --vcf`` on N synthetic SNVs.

What it does:
1. reads a genome (default: the bundled E. coli K-12 MG1655, `mamba_genome/bundled/`) and writes it as a
   plain FASTA with its ``.fai`` index into ``--workdir`` (indexing is a one-off, not timed);
2. synthesises ``--n`` SNVs (default 1,000,000) at uniformly random positions at least one
   window from the contig ends, sorted, REF from the genome and a random different ALT, and
   writes them as a bgzipped VCF (pysam's BGZF writer);
3. uses ``--model RUN``, or saves a randomly initialised ``--preset`` model (throughput does
   not depend on the weights);
4. times the whole CLI, ``mamba-genome score --vcf V --fasta REF --model M -o OUT``, in a
   fresh Python process (import, model load, CUDA start, Triton compilation, VCF parsing,
   scoring, writing), and reads the forward tokens/s from its summary table;
5. with ``--precision-check K`` (default 20,000) scores the first K variants again in fp32
   and bf16 through :func:`mamba_genome.workflows.variants.score_vcf` and reports how close
   the bf16 LLRs are to fp32 (Pearson r, max and median absolute difference).

Target (issue 15): 1M SNVs, 7m model, 1 kbp windows, both strands, <= 300 s on one H200.
That is ~3.1 G forward positions (per SNV and strand 512 prefix + 2 x 512 suffix).

Usage (the lead, on the H200, from the repo root):
    PYTHONPATH=. python benchmarks/bench_vep.py --preset 7m --n 1000000 --window 1024
    PYTHONPATH=. python benchmarks/bench_vep.py --smoke          # CPU, tiny model, a few minutes
Prints one markdown table; writes ``$OUT/bench_vep.json`` when ``$OUT`` is set (or ``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# the bundled copy of /work/shared/data/ecoli/MG1655-K12.fa.gz (same file, md5 c610c51b...), so this runs anywhere
DEFAULT_FASTA = str(ROOT / "mamba_genome/bundled/ecoli_k12.fa.gz")


def write_reference(src: str, workdir: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Plain 60-column FASTA + .fai in workdir; returns (path, {contig: tokens})."""
    from mamba_genome.data.fasta import iter_fasta_records, open_faidx
    from mamba_genome.data.tokenizer import encode

    out = workdir / "ref.fa"
    contigs = {}
    with open(out, "w") as fh:
        for name, seq in iter_fasta_records(src):
            contigs[name] = encode(seq, name=name)
            s = seq.decode()
            fh.write(f">{name}\n")
            fh.write("\n".join(s[i: i + 60] for i in range(0, len(s), 60)) + "\n")
    open_faidx(out)          # builds the index now, so the timed run does not
    return out, contigs


def synth_vcf(contigs: dict[str, np.ndarray], n: int, window: int, path: Path, seed: int = 0) -> int:
    """n sorted SNVs, >= window from each contig end, bgzipped VCF. Returns the count written."""
    import pysam

    rng = np.random.default_rng(seed)
    names = [c for c, t in contigs.items() if len(t) > 2 * window + 1]
    usable = np.array([len(contigs[c]) - 2 * window for c in names], dtype=np.float64)
    per = rng.multinomial(n, usable / usable.sum())
    bases = np.array(list("NNNNNACGTN"))      # token id -> letter (5..8 = A, C, G, T)
    header = ["##fileformat=VCFv4.2", *(f"##contig=<ID={c},length={len(contigs[c])}>" for c in names),
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    written = 0
    with pysam.BGZFile(str(path), "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode())
        for c, k in zip(names, per):
            toks = contigs[c]
            pos0 = np.sort(rng.integers(window, len(toks) - window, size=k))
            ref = toks[pos0]
            ok = (ref >= 5) & (ref <= 8)
            pos0, ref = pos0[ok], ref[ok]
            alt = 5 + (ref - 5 + rng.integers(1, 4, size=len(ref))) % 4
            r, a = bases[ref], bases[alt]
            lines = [f"{c}\t{p}\t.\t{x}\t{y}\t.\t.\t.\n" for p, x, y in zip((pos0 + 1).tolist(), r.tolist(), a.tolist())]
            fh.write("".join(lines).encode())
            written += len(lines)
    return written


def make_model(preset: str, workdir: Path) -> Path:
    import torch

    from mamba_genome.checkpoint import save_model
    from mamba_genome.model.config import MambaConfig
    from mamba_genome.model.lm import MambaLM

    torch.manual_seed(0)
    d = workdir / f"model_{preset}"
    save_model(MambaLM(MambaConfig.from_preset(preset)), d)
    return d


def parse_summary(stderr: str) -> dict:
    """The values row of the CLI's summary table (columns separated by 2+ spaces)."""
    lines = [x for x in stderr.splitlines() if x.strip()]
    for i, line in enumerate(lines):
        if line.startswith("records") and "model tokens/s" in line and i + 2 < len(lines):
            cols = re.split(r"\s{2,}", line.strip())
            vals = re.split(r"\s{2,}", lines[i + 2].strip())
            return dict(zip(cols, vals))
    return {}


def precision_check(vcf: Path, ref: Path, model: Path, k: int, window: int, device: str, workdir: Path) -> dict:
    """bf16 vs fp32 LLRs of the first k variants (in-process API call)."""
    import gzip

    import pandas as pd

    from mamba_genome.workflows.variants import score_vcf

    sub = workdir / "first.vcf"
    with gzip.open(vcf, "rt") as fh, open(sub, "w") as out:
        n = 0
        for line in fh:
            if not line.startswith("#"):
                n += 1
                if n > k:
                    break
            out.write(line)
    res = {}
    for prec in ("fp32", "bf16"):
        o = workdir / f"first_{prec}.tsv"
        score_vcf(sub, ref, model, o, window=window, device=device, precision=prec, progress=False)
        res[prec] = pd.read_csv(o, sep="\t")["llr"].to_numpy()
    d = np.abs(res["bf16"] - res["fp32"])
    return {"variants": int(len(d)), "pearson_r": float(np.corrcoef(res["bf16"], res["fp32"])[0, 1]),
            "max_abs_diff": float(d.max()), "median_abs_diff": float(np.median(d)),
            "fp32_llr_sd": float(res["fp32"].std())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fasta", default=None, help=f"genome (FASTA, plain or gzip) [{DEFAULT_FASTA}]")
    ap.add_argument("--n", type=int, default=1_000_000, help="SNVs to synthesise")
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--model", default=None, help="model/run directory (default: random --preset model)")
    ap.add_argument("--preset", default="7m")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--forward-only", action="store_true")
    ap.add_argument("--out-format", default="tsv", choices=["tsv", "vcf.gz"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision-check", type=int, default=20_000, help="variants for the bf16-vs-fp32 check (0: off)")
    ap.add_argument("--workdir", default=None, help="default: $OUT/bench_vep_work or ./bench_vep_work")
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny model, 200 SNVs, 64 bp windows, an 8 kbp genome")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n, args.window, args.preset, args.device = min(args.n, 200), 64, "tiny", "cpu"
        args.precision_check = min(args.precision_check, 50)
        args.fasta = args.fasta or str(ROOT / "tests/data/saureus_COL_8k.fa")
    args.fasta = args.fasta or DEFAULT_FASTA
    out_dir = os.environ.get("OUT")
    workdir = Path(args.workdir or (Path(out_dir) / "bench_vep_work" if out_dir else "bench_vep_work"))
    workdir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))

    t = time.perf_counter()
    ref, contigs = write_reference(args.fasta, workdir)
    vcf = workdir / "snvs.vcf.gz"
    n = synth_vcf(contigs, args.n, args.window, vcf)
    prep = time.perf_counter() - t
    model = Path(args.model) if args.model else make_model(args.preset, workdir)
    out = workdir / f"scored.{args.out_format}"
    cmd = [sys.executable, "-c", "from mamba_genome.cli import main; main()", "score", "--vcf", str(vcf),
           "--fasta", str(ref), "--model", str(model), "-o", str(out), "--window", str(args.window),
           "--precision", args.precision, "--device", args.device]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.forward_only:
        cmd += ["--forward-only"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        return proc.returncode
    summary = parse_summary(proc.stderr)
    check = {}
    if args.precision_check:
        dev = "cuda" if args.device == "auto" and _cuda() else args.device
        check = precision_check(vcf, ref, model, args.precision_check, args.window, dev, workdir)
    gpu = _gpu_name()
    row = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": gpu, "model": str(model),
           "snvs": n, "window": args.window, "strands": 1 if args.forward_only else 2,
           "precision": summary.get("precision", args.precision), "wall_s": round(wall, 1),
           "snvs_per_s": round(n / wall), "model_tokens_per_s": summary.get("model tokens/s"),
           "scored": summary.get("scored"), "prep_s": round(prep, 1), "bf16_check": check,
           "target_met": bool(n >= 1_000_000 and wall <= 300), "command": " ".join(cmd[3:])}
    chk = (f"r={check['pearson_r']:.5f}, max {check['max_abs_diff']:.3g}, median {check['median_abs_diff']:.3g} "
           f"(fp32 sd {check['fp32_llr_sd']:.3g})") if check else "not run"
    print("| device | model | SNVs | window | strands | precision | wall s (CLI, end to end) | SNVs/s | "
          "forward tokens/s | scored | bf16 vs fp32 LLR | <= 300 s for 1M |")
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|---|")
    print(f"| {gpu} | {args.model or args.preset + ' (random init)'} | {n:,} | {args.window} | {row['strands']} | "
          f"{row['precision']} | {wall:.1f} | {n / wall:,.0f} | {row['model_tokens_per_s']} | {row['scored']} | "
          f"{chk} | {'yes' if row['target_met'] else 'no'} |")
    path = args.json or (str(Path(out_dir) / "bench_vep.json") if out_dir else None)
    if path:
        Path(path).write_text(json.dumps(row, indent=2))
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    sys.exit(main())
