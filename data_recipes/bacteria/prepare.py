"""Build the 5-strain Staphylococcus aureus classification task from local genomes.

A small, fast stand-in for the great-apes species task of Gu & Dao (2023),
Sec. 4.3.4: five S. aureus strains (COL, JKD6008, N315, RF122,
USA300_FPR3757; one ~2.8 Mbp chromosome each, GenBank reference assemblies)
are near-identical genomes, so naming the strain of a window needs more than
base composition; a 6-mer logistic regression is near chance (0.20).

Nothing is downloaded: it reads ``<src>/<strain>.fa.gz`` (default
``../shared/data/saureus``). Each strain is one contig, so the held-out split
is positional and written as per-split FASTA files::

    <out>/<strain>.train.fa   first 70% of the chromosome
    <out>/<strain>.val.fa     the 10% before the test tail (70-80%)
    <out>/<strain>.test.fa    last 20%
    <out>/manifest.tsv        label = strain, for `mamba-genome finetune --manifest`

Usage:
    python data_recipes/bacteria/prepare.py --out data/saureus --dry-run
    python data_recipes/bacteria/prepare.py --out data/saureus
    mamba-genome finetune --manifest data/saureus/manifest.tsv --baseline kmer
"""
from __future__ import annotations

import argparse
import gzip
import os
import sys
from pathlib import Path

STRAINS = ["COL", "JKD6008", "N315", "RF122", "USA300_FPR3757"]
LINE = 70


def read_single_record(path: Path) -> tuple[str, str]:
    """(name, sequence) of a one-record FASTA (plain or gzip)."""
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    name, parts = None, []
    with opener(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                if name is not None:
                    raise SystemExit(f"error: {path}: expected one record, found a second ('{line[1:].split()[0]}')")
                name = line[1:].split()[0]
            else:
                parts.append(line.strip())
    if name is None:
        raise SystemExit(f"error: {path}: no FASTA header; is it a FASTA file?")
    return name, "".join(parts)


def split_bounds(length: int, val_fraction: float, test_fraction: float) -> dict[str, tuple[int, int]]:
    """0-based half-open [start, end) of train / val / test: test is the tail, val just before it."""
    test_start = length - int(round(length * test_fraction))
    val_start = test_start - int(round(length * val_fraction))
    return {"train": (0, val_start), "val": (val_start, test_start), "test": (test_start, length)}


def write_fasta(path: Path, name: str, seq: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(f">{name}\n")
        for i in range(0, len(seq), LINE):
            fh.write(seq[i : i + LINE] + "\n")
    os.replace(tmp, path)


def build(src: Path, out: Path, strains=STRAINS, val_fraction: float = 0.1, test_fraction: float = 0.2,
          dry_run: bool = False) -> list[tuple[str, str, str]]:
    """Write the per-split FASTA files and manifest (unless ``dry_run``); return the manifest rows."""
    files = {s: src / f"{s}.fa.gz" for s in strains}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"error: missing strain FASTA: {', '.join(missing)} (set --src)")
    rows = []
    if not dry_run:
        out.mkdir(parents=True, exist_ok=True)
    print(f"{'strain':<16} {'length':>11} {'GC':>6} {'train':>11} {'val':>9} {'test':>9}")
    for strain, path in files.items():
        name, seq = read_single_record(path)
        gc = (seq.count("G") + seq.count("C") + seq.count("g") + seq.count("c")) / max(1, len(seq))
        b = split_bounds(len(seq), val_fraction, test_fraction)
        print(f"{strain:<16} {len(seq):>11,} {gc:>6.1%} " + " ".join(f"{e - s:>{w},}" for (s, e), w in
                                                                   zip(b.values(), (11, 9, 9))))
        for split, (s, e) in b.items():
            fa = out / f"{strain}.{split}.fa"
            if not dry_run:
                write_fasta(fa, f"{name}:{s}-{e}", seq[s:e])
            rows.append((strain, fa.name, split))
    if dry_run:
        print(f"dry run: would write {len(rows)} FASTA files and {out / 'manifest.tsv'}:")
        print("label\tfasta\tsplit")
        for r in rows:
            print("\t".join(r))
        return rows
    tmp = out / f".manifest.tsv.tmp-{os.getpid()}"
    tmp.write_text("label\tfasta\tsplit\n" + "".join("\t".join(r) + "\n" for r in rows))
    os.replace(tmp, out / "manifest.tsv")
    print(f"wrote {len(rows)} FASTA files and {out / 'manifest.tsv'}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default="../shared/data/saureus", help="directory with <strain>.fa.gz")
    ap.add_argument("--out", default="data/saureus", help="directory for the split FASTA files and manifest.tsv")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--dry-run", action="store_true", help="read and report, write nothing")
    args = ap.parse_args(argv)
    if not (0 < args.val_fraction and 0 < args.test_fraction and args.val_fraction + args.test_fraction < 1):
        raise SystemExit("error: --val-fraction and --test-fraction must be > 0 and sum to less than 1")
    build(Path(args.src), Path(args.out), val_fraction=args.val_fraction, test_fraction=args.test_fraction,
          dry_run=args.dry_run)
    if not args.dry_run:
        print(f"next: mamba-genome finetune --manifest {Path(args.out) / 'manifest.tsv'} --baseline kmer")
    return 0


if __name__ == "__main__":
    sys.exit(main())

# Expected output of `python data_recipes/bacteria/prepare.py --src ../shared/data/saureus --out data/saureus`:
#
# strain                length     GC       train       val      test
# COL                2,809,422  32.8%   1,966,596   280,942   561,884
# JKD6008            2,924,344  32.9%   2,047,041   292,434   584,869
# N315               2,814,816  32.8%   1,970,371   281,482   562,963
# RF122              2,742,531  32.8%   1,919,772   274,253   548,506
# USA300_FPR3757     2,872,769  32.8%   2,010,938   287,277   574,554
# wrote 15 FASTA files and data/saureus/manifest.tsv
# next: mamba-genome finetune --manifest data/saureus/manifest.tsv --baseline kmer
