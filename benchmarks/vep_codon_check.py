"""Do the LLRs mean something? Synonymous vs missense vs stop-gained SNVs in real coding sequence.

What it does (one command on the GPU, see Usage):
1. genome: E. coli K-12 MG1655 (GenBank U00096.2 sequence, 4,639,675 bp; the bundled copy of
   /work/shared/data/ecoli/MG1655-K12.fa.gz, ``--fasta``);
2. coding sequences: ``--cds`` TSV (``contig start end strand``, 0-based half-open, start..end
   covering the start codon through the stop codon). Default: ``benchmarks/data/
   ecoli_MG1655_prodigal_cds.tsv``, **Prodigal gene calls** (pyrodigal, single/training mode,
   translation table 11) made by ``--make-cds`` from the same FASTA. No Debian or PyPI package
   found on 2026-12-01 ships CDS annotations of MG1655, S. aureus, V. cholerae or U. maydis
   (searched: ragout-examples, any2fasta-examples (Leptospira), python-biopython-doc,
   emboss-data, python3-cogent3, python3-pybedtools, r-bioc-rtracklayer, bedtools-test,
   seqan-apps, spades (1 kbp test genes), genometools-common, prokka, artemis, roary,
   bio-tradis, snpeff, abacas-examples, kleborate-examples and a dozen more ``*-examples``
   packages), so gene calls stand in for annotation. Every CDS is checked: it translates
   (table 11) to a protein that starts with M and has no internal stop (all 4,313 calls pass).
   Spot check against the GenBank annotation of MG1655: the first calls are thrA 337..2799,
   thrB 2801..3733, thrC 3734..5020, yaaX 5234..5530, yaaA complement(5683..6459) and yaaJ
   complement(6529..7959) (1-based), exactly the annotated genes;
3. in-silico SNVs: every codon of every CDS except the start and stop codons, every position,
   every other base, classified **on the annotated strand** with the standard bacterial code:
   synonymous (same amino acid), missense (another amino acid), stop-gained (a stop). A
   random sample of ``--per-class`` of each class (positions at least one window from the
   contig ends) is written as a bgzipped VCF (REF/ALT on the forward strand);
4. model: ``--model RUN``, or pretrain one through the CLI on the same genome
   (``mamba-genome pretrain --fasta REF --preset P --max-time T -o RUN``);
5. runs ``mamba-genome score --vcf ... --fasta REF --model RUN --grid G -o scored_gridG.tsv`` (both
   strands) for each ``--grids`` value (default 32, the CLI's; ``32,1`` also scores with windows
   centred exactly and reports both AUROCs and how well the two LLRs agree);
6. baseline: an order-``k`` Markov chain fit on the same genome (both strands, add-one
   smoothing), whose LLR (both strands averaged) changes only at the k+1 positions whose
   context or target holds the variant;
7. AUROC of the LLR separating synonymous (positive) from stop-gained and from missense
   (lower LLR = more damaging expected, so AUROC > 0.5 means the score ranks synonymous
   higher), with stratified bootstrap 95% CIs; prints a markdown table and writes JSON.

Usage (the lead, on the H200, from the repo root):
    PYTHONPATH=. python benchmarks/vep_codon_check.py --preset 7m --max-time 6m
    PYTHONPATH=. python benchmarks/vep_codon_check.py --model runs/pretrain-ecoli
    PYTHONPATH=. python benchmarks/vep_codon_check.py --max-time 2m --grids 32,1   # grid vs exact centring
    PYTHONPATH=. python benchmarks/vep_codon_check.py --smoke      # CPU, tiny model, minutes
Writes ``$OUT/vep_codon_check.json`` when ``$OUT`` is set (or ``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# the bundled copy of /work/shared/data/ecoli/MG1655-K12.fa.gz (same file, md5 c610c51b...), so this runs anywhere
DEFAULT_FASTA = str(ROOT / "mamba_genome/bundled/ecoli_k12.fa.gz")
DEFAULT_CDS = ROOT / "benchmarks/data/ecoli_MG1655_prodigal_cds.tsv"
BASES = "ACGT"
_COMP = str.maketrans("ACGT", "TGCA")
# NCBI translation table 11 (= the standard code for sense codons and stops), TCAG order
_AA = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
CODON = {a + b + c: _AA[16 * i + 4 * j + k] for i, a in enumerate("TCAG") for j, b in enumerate("TCAG")
         for k, c in enumerate("TCAG")}
STARTS = {"ATG", "GTG", "TTG", "CTG", "ATT", "ATC", "ATA"}   # table 11 initiation codons


def rc(s: str) -> str:
    return s.translate(_COMP)[::-1]


def read_genome(path) -> dict[str, str]:
    from mamba_genome.data.fasta import iter_fasta_records

    return {name: seq.decode().upper() for name, seq in iter_fasta_records(path)}


def make_cds(genome: dict[str, str], out: Path, fasta: str) -> None:
    """Prodigal (pyrodigal) gene calls -> TSV with a provenance header."""
    import pyrodigal

    finder = pyrodigal.GeneFinder(meta=False)
    finder.train(*genome.values())
    rows = []
    for name, seq in genome.items():
        for g in finder.find_genes(seq):
            if g.partial_begin or g.partial_end:
                continue
            rows.append((name, g.begin - 1, g.end, "+" if g.strand == 1 else "-"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as fh:
        fh.write(f"# Prodigal gene calls: pyrodigal {pyrodigal.__version__}, GeneFinder(meta=False) trained on the "
                 f"genome, complete genes only; genome {Path(fasta).name} (= /work/shared/data/ecoli/MG1655-K12.fa.gz); made {time.strftime('%Y-%m-%d')}\n")
        fh.write("# contig\tstart (0-based)\tend (half-open)\tstrand\n")
        fh.writelines(f"{c}\t{s}\t{e}\t{st}\n" for c, s, e, st in rows)


def read_cds(path: Path) -> list[tuple[str, int, int, str]]:
    out = []
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        c, s, e, st = line.rstrip("\n").split("\t")[:4]
        out.append((c, int(s), int(e), st))
    return out


def check_cds(genome, cds) -> tuple[list, dict]:
    """Keep CDS whose translation starts with M (start codon), ends in one stop, has no internal stop."""
    good, bad = [], {"length": 0, "start": 0, "internal_stop": 0, "no_stop": 0, "contig": 0}
    for c, s, e, st in cds:
        if c not in genome:
            bad["contig"] += 1
            continue
        seq = genome[c][s:e]
        seq = seq if st == "+" else rc(seq)
        if len(seq) % 3 or len(seq) < 9:
            bad["length"] += 1
            continue
        codons = [seq[i: i + 3] for i in range(0, len(seq), 3)]
        aa = "".join(CODON.get(x, "X") for x in codons)
        if codons[0] not in STARTS:           # translated as M by table 11
            bad["start"] += 1
        elif aa[-1] != "*":
            bad["no_stop"] += 1
        elif "*" in aa[:-1]:
            bad["internal_stop"] += 1
        else:
            good.append((c, s, e, st))
    return good, bad


def candidate_snvs(genome, cds, window: int):
    """All in-silico SNVs of internal codons: dict class -> list of (contig, pos0, ref, alt) forward strand."""
    out = {"synonymous": [], "missense": [], "stop_gained": []}
    for c, s, e, st in cds:
        g = genome[c]
        if s < window or e + window > len(g):
            continue
        for k in range(1, (e - s) // 3 - 1):             # skip the start and the stop codon
            if st == "+":
                cod_pos = [s + 3 * k + i for i in range(3)]
                codon = g[cod_pos[0]: cod_pos[0] + 3]
            else:
                hi = e - 3 * k                             # codon k on the minus strand: g[hi-3:hi] reversed
                cod_pos = [hi - 1 - i for i in range(3)]
                codon = rc(g[hi - 3: hi])
            aa = CODON.get(codon)
            if aa is None or aa == "*":
                continue
            for i in range(3):
                for b in BASES:
                    if b == codon[i]:
                        continue
                    mut = codon[:i] + b + codon[i + 1:]
                    maa = CODON[mut]
                    cls = "synonymous" if maa == aa else ("stop_gained" if maa == "*" else "missense")
                    p = cod_pos[i]
                    ref = g[p]
                    alt = b if st == "+" else b.translate(_COMP)
                    out[cls].append((c, p, ref, alt))
    return out


def write_vcf(variants, path: Path, genome) -> None:
    import pysam

    variants = sorted(variants, key=lambda v: (v[0], v[1]))
    head = ["##fileformat=VCFv4.2", *(f"##contig=<ID={c},length={len(s)}>" for c, s in genome.items()),
            "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    with pysam.BGZFile(str(path), "wb") as fh:
        fh.write(("\n".join(head) + "\n").encode())
        fh.write("".join(f"{c}\t{p + 1}\t{vid}\t{r}\t{a}\t.\t.\t.\n" for c, p, r, a, vid in variants).encode())


class Markov:
    """Order-k Markov chain on both strands with add-one smoothing; log P in nats."""

    def __init__(self, genome: dict[str, str], k: int):
        self.k = k
        counts = np.ones(4 ** (k + 1))
        for seq in genome.values():
            for s in (seq, rc(seq)):
                codes = _codes(s)
                ok = codes < 4
                idx = np.zeros(len(codes) - k, dtype=np.int64)
                valid = np.ones(len(codes) - k, dtype=bool)
                for j in range(k + 1):
                    idx = idx * 4 + np.where(ok[j: len(codes) - k + j], codes[j: len(codes) - k + j], 0)
                    valid &= ok[j: len(codes) - k + j]
                counts += np.bincount(idx[valid], minlength=4 ** (k + 1))
        c = counts.reshape(-1, 4)
        self.logp = np.log(c / c.sum(1, keepdims=True)).reshape(-1)

    def llr(self, seq_ref: str, seq_alt: str, p: int) -> float:
        """log P(alt) - log P(ref) of two equal-length sequences differing at p (targets p..p+k)."""
        k = self.k
        tot = 0.0
        for s, sign in ((seq_alt, 1.0), (seq_ref, -1.0)):
            codes = _codes(s[p - k: p + k + 1])
            for j in range(k, 2 * k + 1):
                ctx = codes[j - k: j + 1]
                if (ctx < 4).all():
                    tot += sign * self.logp[int(np.dot(ctx, 4 ** np.arange(k, -1, -1)))]
        return tot


def _codes(s: str) -> np.ndarray:
    table = np.full(256, 4, dtype=np.int64)
    for i, b in enumerate(BASES):
        table[ord(b)] = i
    return table[np.frombuffer(s.encode(), dtype=np.uint8)]


def auroc_ci(pos: np.ndarray, neg: np.ndarray, n_boot: int, rng) -> tuple[float, float, float]:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    auc = roc_auc_score(y, np.r_[pos, neg])
    boots = []
    for _ in range(n_boot):
        bp, bn = rng.choice(pos, len(pos)), rng.choice(neg, len(neg))
        boots.append(roc_auc_score(y, np.r_[bp, bn]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(auc), float(lo), float(hi)


def cli(*args, env) -> None:
    cmd = [sys.executable, "-c", "from mamba_genome.cli import main; main()", *map(str, args)]
    print("+ mamba-genome " + " ".join(map(str, args)), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fasta", default=DEFAULT_FASTA)
    ap.add_argument("--cds", default=str(DEFAULT_CDS))
    ap.add_argument("--make-cds", action="store_true", help="(re)make --cds from Prodigal gene calls (pyrodigal)")
    ap.add_argument("--model", default=None, help="model/run directory; default: pretrain one (--preset, --max-time)")
    ap.add_argument("--preset", default="7m")
    ap.add_argument("--max-time", default="6m", help="pretraining budget (the whole command then fits in 10 min)")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--grids", default="32", help="score --vcf --grid values to score with, e.g. 32,1 (the first is the "
                    "main table; with more, the AUROCs of each and the LLR agreement between them)")
    ap.add_argument("--per-class", type=int, default=20_000)
    ap.add_argument("--markov-k", type=int, default=5)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--smoke", action="store_true",
                    help="CPU: the first 200 kbp only, tiny model, 60 s pretraining, 100 SNVs per class, 64 bp windows")
    args = ap.parse_args(argv)
    if args.smoke:
        args.preset, args.max_time, args.per_class, args.window, args.seq_len = "tiny", "60s", 100, 64, 128
        args.device, args.bootstrap = "cpu", 200
    out_dir = os.environ.get("OUT")
    work = Path(args.workdir or (Path(out_dir) / "vep_codon_work" if out_dir else "vep_codon_work"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    sys.path.insert(0, str(ROOT))
    rng = np.random.default_rng(0)

    genome = read_genome(args.fasta)
    if args.smoke:
        genome = {name: seq[:200_000] for name, seq in genome.items()}
    ref = work / "ref.fa"
    with open(ref, "w") as fh:
        for name, s in genome.items():
            fh.write(f">{name}\n" + "\n".join(s[i: i + 60] for i in range(0, len(s), 60)) + "\n")
    cds_path = Path(args.cds)
    if args.make_cds or not cds_path.exists():
        make_cds(genome, cds_path, args.fasta)
    cds_all = [c for c in read_cds(cds_path) if c[0] in genome and c[2] <= len(genome[c[0]])]
    cds, bad = check_cds(genome, cds_all)
    print(f"CDS: {len(cds):,} pass the translation check; rejected: {bad}", file=sys.stderr)
    cands = candidate_snvs(genome, cds, args.window)
    chosen = []
    for cls, vs in cands.items():
        pick = rng.choice(len(vs), min(args.per_class, len(vs)), replace=False)
        chosen += [(*vs[i], f"{cls}_{j}") for j, i in enumerate(pick)]
    vcf = work / "in_silico.vcf.gz"
    write_vcf(chosen, vcf, genome)

    model = args.model
    t_pre = 0.0
    if model is None:
        model = work / f"pretrain_{args.preset}"
        t = time.perf_counter()
        cli("pretrain", "--fasta", ref, "--preset", args.preset, "--max-time", args.max_time, "--seq-len",
            args.seq_len, "-o", model, "--force", "-q", env=env)
        t_pre = time.perf_counter() - t
    grids = [int(g) for g in str(args.grids).split(",") if g.strip()]
    t_score, frames = {}, {}
    import pandas as pd

    for g in grids:
        scored = work / f"scored_grid{g}.tsv"
        t = time.perf_counter()
        cli("score", "--vcf", vcf, "--fasta", ref, "--model", model, "-o", scored, "--window", args.window,
            "--grid", g, "--device", args.device, "-q", env=env)
        t_score[g] = round(time.perf_counter() - t, 1)
        frames[g] = pd.read_csv(scored, sep="\t")
    df = frames[grids[0]].copy()
    df["cls"] = df["id"].str.rsplit("_", n=1).str[0]
    for g in grids[1:]:
        df[f"llr_grid{g}"] = frames[g]["llr"].to_numpy()
    mk = Markov(genome, args.markov_k)
    k = args.markov_k
    ml = []
    for c, p1, r, a in zip(df["chrom"], df["pos"], df["ref"], df["alt"]):
        p = p1 - 1
        g = genome[c]
        fwd = mk.llr(g[p - k: p + k + 1], g[p - k: p] + a + g[p + 1: p + k + 1], k)
        rev = mk.llr(rc(g[p - k: p + k + 1]), rc(g[p - k: p] + a + g[p + 1: p + k + 1]), k)
        ml.append((fwd + rev) / 2)
    df["markov_llr"] = ml
    df = df[df["status"] == "ok"]
    rows = []
    syn = df[df["cls"] == "synonymous"]
    cols = {grids[0]: "llr", **{g: f"llr_grid{g}" for g in grids[1:]}}
    for other in ("stop_gained", "missense"):
        o = df[df["cls"] == other]
        b = auroc_ci(syn["markov_llr"].to_numpy(), o["markov_llr"].to_numpy(), args.bootstrap, rng)
        for g, col in cols.items():
            m = auroc_ci(syn[col].to_numpy(), o[col].to_numpy(), args.bootstrap, rng)
            rows.append({"comparison": f"synonymous vs {other.replace('_', '-')}", "grid": g, "n_syn": len(syn),
                         "n_other": len(o), "mamba_auroc": m, "markov_auroc": b})
    print(f"| comparison | --grid | n (syn / other) | Mamba LLR AUROC [95% CI] | order-{k} Markov LLR AUROC [95% CI] |")
    print("|---|---:|---:|---|---|")
    for r in rows:
        f = lambda t: f"{t[0]:.3f} [{t[1]:.3f}, {t[2]:.3f}]"   # noqa: E731
        print(f"| {r['comparison']} | {r['grid']} | {r['n_syn']:,} / {r['n_other']:,} | {f(r['mamba_auroc'])} | "
              f"{f(r['markov_auroc'])} |")
    agreement = {}
    for g in grids[1:]:
        x, y = df["llr"].to_numpy(), df[f"llr_grid{g}"].to_numpy()
        d = np.abs(x - y)
        agreement[f"grid{grids[0]}_vs_grid{g}"] = {"pearson_r": float(np.corrcoef(x, y)[0, 1]),
                                                    "median_abs_diff": float(np.median(d)), "max_abs_diff": float(d.max()),
                                                    "llr_sd": float(x.std())}
        a = agreement[f"grid{grids[0]}_vs_grid{g}"]
        print(f"LLR --grid {grids[0]} vs --grid {g}: r {a['pearson_r']:.5f}, median |diff| {a['median_abs_diff']:.4f}, "
              f"max {a['max_abs_diff']:.3f} (LLR sd {a['llr_sd']:.3f})")
    means = df.groupby("cls")[["llr", "markov_llr"]].mean().to_dict()
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "fasta": args.fasta,
              "cds": str(cds_path), "cds_pass": len(cds), "cds_rejected": bad, "model": str(model),
              "preset": None if args.model else args.preset, "pretrain_s": round(t_pre, 1),
              "score_s": t_score, "grids": grids, "grid_agreement": agreement, "window": args.window,
              "markov_k": k, "rows": rows,
              "mean_llr_by_class": means, "candidates": {c: len(v) for c, v in cands.items()}}
    path = args.json or (str(Path(out_dir) / "vep_codon_check.json") if out_dir else None)
    if path:
        Path(path).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
