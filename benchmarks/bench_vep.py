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
With every window centred exactly on its variant that is ~3.1 G forward positions (per SNV and
strand 512 prefix + 2 x 512 suffix, less what variants at one position share); with the CLI's
default 32-base grid of window anchors (``--grid``), variants in one cell share their prefix
and reference pass.

``--alts-per-site 3`` writes saturated sites instead (n/3 records with all three ALTs; a list
such as ``1,3`` runs each); ``--compare`` also runs the CLI with ``--grid 1`` (windows centred
exactly) on the first ``--compare-n`` records and compares time and LLRs; ``--count-only``
only counts forward positions per SNV from the batch plans (CPU, no model) for: exact windows
unshared (the computation before 2026-12-01), exact windows shared per position, and the grid:
the device-independent part of the speed-up.

Usage (the lead, on the H200, from the repo root):
    PYTHONPATH=. python benchmarks/bench_vep.py --preset 7m --n 1000000 --window 1024
    PYTHONPATH=. python benchmarks/bench_vep.py --n 1000000 --compare --compare-n 100000  # grid vs exact
    python benchmarks/bench_vep.py --count-only --n 1000000 --alts-per-site 1,3          # CPU, ~4 min
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


def synth_vcf(contigs: dict[str, np.ndarray], n: int, window: int, path: Path, seed: int = 0,
              alts_per_site: int = 1) -> int:
    """n sorted SNVs, >= window from each contig end, bgzipped VCF. Returns the count written.

    ``alts_per_site`` 1: one random ALT at each of n random positions (positions may repeat);
    2 or 3: n // k random sites, each one record with k different ALTs (3: saturation
    mutagenesis), so that n SNVs are written."""
    import pysam

    rng = np.random.default_rng(seed)
    per_site = int(alts_per_site)
    if not 1 <= per_site <= 3:
        raise SystemExit("--alts-per-site must be 1, 2 or 3")
    names = [c for c, t in contigs.items() if len(t) > 2 * window + 1]
    usable = np.array([len(contigs[c]) - 2 * window for c in names], dtype=np.float64)
    per = rng.multinomial(n // per_site, usable / usable.sum())
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
            if per_site == 1:
                alt = 5 + (ref - 5 + rng.integers(1, 4, size=len(ref))) % 4
                r, a = bases[ref], bases[alt]
            else:   # k of the 3 other bases, in a random order
                shift = np.argsort(rng.random((len(ref), 3)), axis=1)[:, :per_site] + 1
                alt = 5 + (ref[:, None] - 5 + shift) % 4
                r, a = bases[ref], np.array([",".join(row) for row in bases[alt].tolist()])
            lines = [f"{c}\t{p}\t.\t{x}\t{y}\t.\t.\t.\n" for p, x, y in zip((pos0 + 1).tolist(), r.tolist(), a.tolist())]
            fh.write("".join(lines).encode())
            written += len(lines) * per_site
    return written


COUNTED = {"exact_unshared": (False, 1), "exact_shared": (True, 1)}   # name -> (share, grid); + "grid_shared"


def count_positions(vcf: Path, contigs: dict[str, np.ndarray], window: int, batch_size: int | None = None,
                    chunk_alleles: int | None = None, grid: int = 32) -> dict:
    """Forward positions per SNV that ``score --vcf`` runs with exact windows (unshared, shared
    per position) and with ``grid``, from the plans alone
    (:func:`mamba_genome.variants.effect.plan_strand`; no model, no device): the
    device-independent part of the speed-up. Chunks and batches as on a GPU by default
    (``GPU_TOKENS`` per forward; 16 batches per VCF chunk)."""
    import pysam

    from mamba_genome.variants.effect import GPU_TOKENS, encode_alleles, flank_lengths, plan_strand

    right = flank_lengths(window)[1]
    batch_size = batch_size or max(1, GPU_TOKENS // (2 * (right + 2)))
    chunk_alleles = chunk_alleles or 16 * batch_size
    configs = {**COUNTED, "grid_shared": (True, grid)}
    totals = {k: 0 for k in configs}
    n = 0

    def flush(rows):
        nonlocal n
        by_contig: dict[str, list] = {}
        for c, p, r, a in rows:
            by_contig.setdefault(c, []).append((p, r, a))
        for c, vs in by_contig.items():
            pos0 = np.array([v[0] for v in vs])
            r, rl = encode_alleles([v[1] for v in vs])
            a, al = encode_alleles([v[2] for v in vs])
            for name, (share, g) in configs.items():
                for rc in (False, True):
                    totals[name] += plan_strand(contigs[c], pos0, r, rl, a, al, window, rc, 2 * batch_size,
                                                share, g).positions
            n += len(vs)

    rows: list = []
    pysam.set_verbosity(0)
    with pysam.VariantFile(str(vcf)) as vf:
        for rec in vf:
            rows.extend((rec.chrom, rec.pos - 1, rec.ref, a) for a in rec.alts)
            if len(rows) >= chunk_alleles:
                flush(rows)
                rows = []
    if rows:
        flush(rows)
    out = {"snvs": n, "grid": grid}
    out.update({f"positions_per_snv_{k}": v / max(n, 1) for k, v in totals.items()})
    out["ratio_grid_vs_exact_shared"] = totals["exact_shared"] / max(totals["grid_shared"], 1)
    out["ratio_grid_vs_exact_unshared"] = totals["exact_unshared"] / max(totals["grid_shared"], 1)
    return out


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


def first_records(vcf: Path, k: int, dest: Path) -> Path:
    """The header and the first ``k`` records of a (gzipped) VCF, as a plain VCF."""
    import gzip

    with gzip.open(vcf, "rt") as fh, open(dest, "w") as out:
        n = 0
        for line in fh:
            if not line.startswith("#"):
                n += 1
                if n > k:
                    break
            out.write(line)
    return dest


def precision_check(vcf: Path, ref: Path, model: Path, k: int, window: int, device: str, workdir: Path,
                    grid: int = 32) -> dict:
    """bf16 vs fp32 LLRs of the first k records (in-process API call)."""
    import pandas as pd

    from mamba_genome.workflows.variants import score_vcf

    sub = first_records(vcf, k, workdir / f"first_{vcf.name.split('.')[0]}.vcf")
    res = {}
    for prec in ("fp32", "bf16"):
        o = workdir / f"first_{prec}.tsv"
        score_vcf(sub, ref, model, o, window=window, device=device, precision=prec, progress=False, grid=grid)
        res[prec] = pd.read_csv(o, sep="\t")["llr"].to_numpy()
    f32, b16 = res["fp32"], res["bf16"]
    d = np.abs(b16 - f32)
    out = {"variants": int(len(d)), "pearson_r": float(np.corrcoef(b16, f32)[0, 1]),
           "max_abs_diff": float(d.max()), "median_abs_diff": float(np.median(d)), "fp32_llr_sd": float(f32.std())}
    return out


def run_cli(vcf: Path, ref: Path, model: Path, out: Path, args, grid: int | None = None) -> tuple[float, dict]:
    """Wall seconds of one ``mamba-genome score --vcf`` process and its summary row."""
    cmd = [sys.executable, "-c", "from mamba_genome.cli import main; main()", "score", "--vcf", str(vcf),
           "--fasta", str(ref), "--model", str(model), "-o", str(out), "--window", str(args.window),
           "--precision", args.precision, "--device", args.device]
    if grid is not None and grid != 32:
        cmd += ["--grid", str(grid)]
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
        raise SystemExit(proc.returncode)
    return wall, {**parse_summary(proc.stderr), "command": " ".join(cmd[3:])}


def tsv_diff(a: Path, b: Path) -> dict:
    """|llr| differences and Pearson r between two score --vcf TSVs, over the rows of the shorter
    (its records are the first of the longer one's VCF)."""
    import pandas as pd

    x, y = (pd.read_csv(p, sep="\t")["llr"].to_numpy() for p in (a, b))
    m = min(len(x), len(y))
    x, y = x[:m], y[:m]
    d = np.abs(x - y)
    ok = ~(np.isnan(x) | np.isnan(y))
    return {"rows": int(m), "max_abs_diff": float(np.nanmax(d)), "median_abs_diff": float(np.nanmedian(d)),
            "pearson_r": float(np.corrcoef(x[ok], y[ok])[0, 1]), "llr_sd": float(np.nanstd(x)),
            "same_nan": bool((np.isnan(x) == np.isnan(y)).all())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fasta", default=None, help=f"genome (FASTA, plain or gzip) [{DEFAULT_FASTA}]")
    ap.add_argument("--n", type=int, default=1_000_000, help="SNVs to synthesise")
    ap.add_argument("--alts-per-site", default="1",
                    help="1: one ALT per random position; 3: n/3 sites with all three ALTs; a list (1,3) runs each")
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--grid", type=int, default=32, help="score --vcf --grid (window anchors)")
    ap.add_argument("--compare-n", type=int, default=100_000, help="records of the --grid 1 run of --compare")
    ap.add_argument("--model", default=None, help="model/run directory (default: random --preset model)")
    ap.add_argument("--preset", default="7m")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--forward-only", action="store_true")
    ap.add_argument("--out-format", default="tsv", choices=["tsv", "vcf.gz"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision-check", type=int, default=20_000, help="variants for the bf16-vs-fp32 check (0: off)")
    ap.add_argument("--compare", action="store_true",
                    help="also run the CLI with --grid 1 (windows centred exactly) on the first --compare-n records "
                         "and compare time and LLRs")
    ap.add_argument("--no-count", action="store_true",
                    help="skip the position counts (single-threaded host work: minutes at 1 M SNVs)")
    ap.add_argument("--count-only", action="store_true",
                    help="only count forward positions per SNV with and without sharing (CPU, no model)")
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

    ref, contigs = write_reference(args.fasta, workdir)
    model = None
    if not args.count_only:
        model = Path(args.model) if args.model else make_model(args.preset, workdir)
    gpu = _gpu_name() if not args.count_only else "none (plans only)"
    dev = "cuda" if args.device == "auto" and not args.count_only and _cuda() else args.device
    rows = []
    for k in (int(x) for x in str(args.alts_per_site).split(",")):
        t = time.perf_counter()
        vcf = workdir / f"snvs_k{k}.vcf.gz"
        n = synth_vcf(contigs, args.n, args.window, vcf, alts_per_site=k)
        prep = time.perf_counter() - t
        counts = {} if args.no_count else count_positions(vcf, contigs, args.window, grid=args.grid)
        if args.forward_only:
            counts = {**counts, "note": "counted for both strands"}
        row = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": gpu,
               "model": str(model) if model else None, "snvs": n, "alts_per_site": k, "window": args.window,
               "strands": 1 if args.forward_only else 2, "prep_s": round(prep, 1), "positions": counts}
        if counts:
            print(f"alts/site {k}: {n:,} SNVs; forward positions per SNV: exact windows "
                  f"{counts['positions_per_snv_exact_unshared']:,.0f} unshared, "
                  f"{counts['positions_per_snv_exact_shared']:,.0f} shared per position; grid {args.grid}: "
                  f"{counts['positions_per_snv_grid_shared']:,.0f} "
                  f"({counts['ratio_grid_vs_exact_shared']:.3f}x fewer than exact shared)", flush=True)
        if not args.count_only:
            out = workdir / f"scored_k{k}.{args.out_format}"
            wall, summary = run_cli(vcf, ref, model, out, args, grid=args.grid)
            row.update(precision=summary.get("precision", args.precision), wall_s=round(wall, 1),
                       snvs_per_s=round(n / wall), model_tokens_per_s=summary.get("model tokens/s"),
                       scored=summary.get("scored"), command=summary["command"],
                       target_met=bool(n >= 1_000_000 and wall <= 300))
            if args.compare:
                m = min(args.compare_n, n)
                sub = first_records(vcf, m if k == 1 else -(-m // k), workdir / f"first_k{k}_compare.vcf")
                out0 = workdir / f"scored_k{k}_exact.{args.out_format}"
                wall0, summary0 = run_cli(sub, ref, model, out0, args, grid=1)
                row["exact"] = {"snvs": m, "wall_s": round(wall0, 1), "snvs_per_s": round(m / wall0),
                                "model_tokens_per_s": summary0.get("model tokens/s"), "command": summary0["command"]}
                if args.out_format == "tsv":
                    row["grid_vs_exact_tsv"] = tsv_diff(out0, out)
            if args.precision_check:
                row["bf16_check"] = precision_check(vcf, ref, model, args.precision_check, args.window, dev, workdir,
                                                    grid=args.grid)
        rows.append(row)

    print("| device | SNVs | ALTs/site | window | positions/SNV: exact unshared / exact shared / grid | "
          "wall s (CLI, grid) | SNVs/s | forward tokens/s | exact (--grid 1): SNVs, wall s, SNVs/s | "
          "grid vs exact LLR | bf16 vs fp32 LLR |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---|---|---|")
    for r in rows:
        c = r["positions"]
        chk = r.get("bf16_check") or {}
        chk_s = (f"r={chk['pearson_r']:.5f}, max {chk['max_abs_diff']:.3g}, median {chk['median_abs_diff']:.3g}"
                 if chk else "not run")
        diff = r.get("grid_vs_exact_tsv")
        diff_s = (f"r={diff['pearson_r']:.5f}, median {diff['median_abs_diff']:.3g}, max {diff['max_abs_diff']:.3g} "
                  f"(LLR sd {diff['llr_sd']:.3g})" if diff else "-")
        ex = r.get("exact")
        ex_s = f"{ex['snvs']:,}, {ex['wall_s']}, {ex['snvs_per_s']:,}" if ex else "-"
        pos_s = (f"{c['positions_per_snv_exact_unshared']:,.0f} / {c['positions_per_snv_exact_shared']:,.0f} / "
                 f"{c['positions_per_snv_grid_shared']:,.0f} (grid {c['grid']})" if c else "not counted")
        print(f"| {r['device']} | {r['snvs']:,} | {r['alts_per_site']} | {r['window']} | {pos_s} | "
              f"{r.get('wall_s', '-')} | {r.get('snvs_per_s', '-')} | "
              f"{r.get('model_tokens_per_s', '-')} | {ex_s} | {diff_s} | {chk_s} |")
    path = args.json or (str(Path(out_dir) / "bench_vep.json") if out_dir else None)
    if path:
        Path(path).write_text(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    sys.exit(main())
