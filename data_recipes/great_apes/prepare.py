"""Download the five great-ape reference genomes and write a species-classification manifest.

This is the data of the "Great Apes DNA Classification" task in Gu & Dao
(2023), "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
Sec. 4.3.4: name the species (human, chimpanzee, bonobo, gorilla, orangutan)
of a DNA window of 2^10 .. 2^20 bases. The five species share about 99% of
their DNA, so long context is what makes the task solvable.

It downloads the UCSC soft-masked assemblies (plain gzip, about 4.6 GB in
all, about 15 GB once ingested as token stores):

    hg38     Homo sapiens             (human)
    panTro6  Pan troglodytes          (chimpanzee)
    panPan3  Pan paniscus             (bonobo)
    gorGor6  Gorilla gorilla gorilla  (gorilla)
    ponAbe3  Pongo abelii             (Sumatran orangutan)

from https://hgdownload.soe.ucsc.edu/goldenPath/<asm>/bigZips/<asm>.fa.gz,
with resume (HTTP Range) and a size check against the server's
Content-Length, and writes ``manifest.tsv`` for
``mamba-genome finetune --manifest``. The split is by chromosome, the same for
every species, so a test window never comes from a chromosome seen in
training: chr19 and chr20 are val, chr21 and chr22 are test, all other
autosomes are train. Human chr2 is a fusion of the ancestral ape
chromosomes 2A and 2B, which UCSC names chr2A/chr2B in the four other apes;
both sides go to train. Sex chromosomes (the reference individuals differ in
sex), chrM and unplaced/alt contigs are left out.

A small version: ``--chromosomes chr21,chr22`` downloads only those chromosomes of every
species, one file each, from ``goldenPath/<asm>/chromosomes/<chr>.fa.gz`` (about 1-2% of the
download per chromosome), into ``<out>/<asm>/<chr>.fa.gz``. ``chr2`` means chr2A and chr2B
outside human. When the chosen chromosomes include a train, a val and a test chromosome of the
split above, that split is kept; otherwise (e.g. ``chr21,chr22``, both test chromosomes) the
manifest leaves the split empty and ``mamba-genome finetune`` holds out the tail of each
chromosome for val and test (``--val-fraction``, ``--test-fraction``), the same share in every
species.

Usage:
    python data_recipes/great_apes/prepare.py --out data/great_apes --dry-run
    python data_recipes/great_apes/prepare.py --out data/great_apes
    python data_recipes/great_apes/prepare.py --out data/apes_small --chromosomes chr21,chr22
    mamba-genome finetune --manifest data/great_apes/manifest.tsv --preset 1.4m --seq-len 16384
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BASE_URL = "https://hgdownload.soe.ucsc.edu/goldenPath/{asm}/bigZips/{asm}.fa.gz"
CHROM_URL = "https://hgdownload.soe.ucsc.edu/goldenPath/{asm}/chromosomes/{chrom}.fa.gz"

# label, UCSC assembly, approximate size of <asm>.fa.gz in bytes. Only hg38 is
# a known figure (~938 MB); the others are estimates from genome size (all
# ~3.0-3.1 Gbp, soft-masked, gzip) and are labelled approximate: the download
# is checked against the server's Content-Length, not against these.
ASSEMBLIES = [
    ("human", "hg38", 938_000_000),
    ("chimpanzee", "panTro6", 900_000_000),
    ("bonobo", "panPan3", 900_000_000),
    ("gorilla", "gorGor6", 950_000_000),
    ("orangutan", "ponAbe3", 930_000_000),
]

VAL_CHROMS = ["chr19", "chr20"]
TEST_CHROMS = ["chr21", "chr22"]


def train_chroms(asm: str) -> list[str]:
    """Autosomes other than the val/test ones; chr2 is chr2A + chr2B outside human."""
    chr2 = ["chr2"] if asm.startswith("hg") else ["chr2A", "chr2B"]
    held = set(VAL_CHROMS + TEST_CHROMS)
    return [c for c in ["chr1", *chr2, *(f"chr{i}" for i in range(3, 23))] if c not in held]


def manifest_rows(out: Path) -> list[tuple[str, str, str, str]]:
    rows = []
    for label, asm, _ in ASSEMBLIES:
        fa = f"{asm}.fa.gz"  # relative to the manifest's directory
        rows.append((label, fa, "train", ",".join(train_chroms(asm))))
        rows.append((label, fa, "val", ",".join(VAL_CHROMS)))
        rows.append((label, fa, "test", ",".join(TEST_CHROMS)))
    return rows


AUTOSOMES = ["chr1", "chr2", *(f"chr{i}" for i in range(3, 23))]


def parse_chromosomes(arg: str) -> list[str]:
    """``--chromosomes chr21,chr22`` -> human names (``21`` and ``chr21`` both work), in the order given."""
    out = []
    for c in (x.strip() for x in arg.split(",")):
        if not c:
            continue
        c = c if c.startswith("chr") else f"chr{c}"
        if c in ("chr2A", "chr2B"):
            c = "chr2"
        if c not in AUTOSOMES:
            raise SystemExit(f"error: --chromosomes: '{c}' is not an autosome chr1..chr22 (sex chromosomes and "
                             "chrM are left out, see the module docstring)")
        if c not in out:
            out.append(c)
    if not out:
        raise SystemExit("error: --chromosomes: give at least one chromosome, e.g. --chromosomes chr21,chr22")
    return out


def species_chroms(asm: str, chrom: str) -> list[str]:
    """The assembly's names of human ``chrom`` (chr2 -> chr2A, chr2B outside human)."""
    return ["chr2A", "chr2B"] if chrom == "chr2" and not asm.startswith("hg") else [chrom]


def split_of(chrom: str) -> str:
    return "val" if chrom in VAL_CHROMS else "test" if chrom in TEST_CHROMS else "train"


def chromosome_rows(chroms: list[str]) -> tuple[list[tuple[str, str, str]], str]:
    """Manifest rows ``(label, <asm>/<chr>.fa.gz, split)`` for a chromosome subset, and how it is split."""
    keep_split = {split_of(c) for c in chroms} == {"train", "val", "test"}
    rows = [(label, f"{asm}/{name}.fa.gz", split_of(c) if keep_split else "")
            for label, asm, _ in ASSEMBLIES for c in chroms for name in species_chroms(asm, c)]
    how = ("by chromosome, as in the full recipe" if keep_split else
           "the same chromosomes in every split: finetune holds out each chromosome's tail for val/test "
           "(--val-fraction, --test-fraction), since the subset lacks a train, val or test chromosome")
    return rows, how


def write_manifest(path: Path, rows) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["label", "fasta", "split", "contigs"][:len(rows[0]) if rows else 4])
        w.writerows(rows)
    os.replace(tmp, path)


def remote_size(url: str, timeout: float = 60) -> int | None:
    req = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        n = r.headers.get("Content-Length")
    return int(n) if n else None


def download(url: str, dest: Path, expected: int | None, chunk: int = 1 << 20) -> int:
    """Download ``url`` to ``dest`` with resume (``dest.part`` + HTTP Range); check the final size."""
    if dest.exists() and expected is not None and dest.stat().st_size == expected:
        print(f"  {dest.name}: already complete ({expected / 1e6:,.0f} MB)")
        return expected
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if expected is not None and have > expected:
        part.unlink()
        have = 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    req = urllib.request.Request(url, headers=headers)
    t0 = time.time()
    with urllib.request.urlopen(req, timeout=120) as r:
        resumed = have and r.status == 206
        mode = "ab" if resumed else "wb"
        done = have if resumed else 0
        with open(part, mode) as fh:
            while block := r.read(chunk):
                fh.write(block)
                done += len(block)
                if expected:
                    rate = (done - (have if resumed else 0)) / 1e6 / max(time.time() - t0, 1e-6)
                    print(f"\r  {dest.name}: {done / 1e6:,.0f} / {expected / 1e6:,.0f} MB ({rate:.1f} MB/s)",
                          end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise SystemExit(f"error: {dest.name}: got {size:,} bytes, the server said {expected:,}; re-run to resume")
    os.replace(part, dest)
    return size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/great_apes", help="directory for the FASTA files and manifest.tsv")
    ap.add_argument("--dry-run", action="store_true", help="print what would be downloaded and the manifest; touch nothing")
    ap.add_argument("--only", nargs="*", metavar="ASM", help="download only these assemblies (e.g. hg38 panTro6)")
    ap.add_argument("--chromosomes", metavar="LIST", default=None,
                    help="a small version: only these chromosomes of every species, e.g. chr21,chr22 (one file each)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    chosen = [a for a in ASSEMBLIES if not args.only or a[1] in args.only]
    if args.chromosomes:
        return _main_chromosomes(out, chosen, parse_chromosomes(args.chromosomes), args.dry_run)
    total = sum(a[2] for a in chosen)
    print(f"great apes: {len(chosen)} assemblies, ~{total / 1e9:.1f} GB compressed (approximate) -> {out.resolve()}")
    for label, asm, approx in chosen:
        print(f"  {label:<11} {asm:<8} ~{approx / 1e6:,.0f} MB  {BASE_URL.format(asm=asm)} -> {out / (asm + '.fa.gz')}")
    rows = manifest_rows(out)
    print(f"split: train = {len(train_chroms('hg38'))} autosomes (chr2 = chr2A+chr2B in non-human apes), "
          f"val = {','.join(VAL_CHROMS)}, test = {','.join(TEST_CHROMS)}")
    if args.dry_run:
        print(f"manifest ({out / 'manifest.tsv'}):")
        print("label\tfasta\tsplit\tcontigs")
        for r in rows:
            print("\t".join(r))
        print("dry run: nothing downloaded or written")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for label, asm, approx in chosen:
        url = BASE_URL.format(asm=asm)
        size = remote_size(url)
        if size is not None and abs(size - approx) > 0.4 * approx:
            print(f"  note: {asm}.fa.gz is {size / 1e6:,.0f} MB on the server (expected ~{approx / 1e6:,.0f} MB)")
        size = download(url, out / f"{asm}.fa.gz", size)
        print(f"  {label:<11} {asm}.fa.gz  {size / 1e6:,.0f} MB")
    write_manifest(out / "manifest.tsv", rows)
    print(f"wrote {out / 'manifest.tsv'} ({len(rows)} lines)")
    print(f"next: mamba-genome finetune --manifest {out / 'manifest.tsv'} --preset 1.4m --seq-len 16384")
    return 0


def _main_chromosomes(out: Path, chosen, chroms: list[str], dry_run: bool) -> int:
    files = [(label, asm, name) for label, asm, _ in chosen for c in chroms for name in species_chroms(asm, c)]
    print(f"great apes, small: {len(chosen)} assemblies x {', '.join(chroms)} ({len(files)} files; sizes from the "
          f"server) -> {out.resolve()}")
    for label, asm, name in files:
        print(f"  {label:<11} {asm:<8} {name:<6} {CHROM_URL.format(asm=asm, chrom=name)} -> {out / asm / (name + '.fa.gz')}")
    rows, how = chromosome_rows(chroms)
    rows = [r for r in rows if any(r[1].startswith(asm + "/") for _, asm, _ in chosen)]
    print(f"split: {how}")
    if dry_run:
        print(f"manifest ({out / 'manifest.tsv'}):")
        print("label\tfasta\tsplit")
        for r in rows:
            print("\t".join(r))
        print("dry run: nothing downloaded or written")
        return 0
    for label, asm, name in files:
        url = CHROM_URL.format(asm=asm, chrom=name)
        (out / asm).mkdir(parents=True, exist_ok=True)
        try:
            size = remote_size(url)
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"error: {url}: HTTP {exc.code}; this assembly may have no per-chromosome files, "
                             "use the full download (without --chromosomes)") from None
        size = download(url, out / asm / f"{name}.fa.gz", size)
        print(f"  {label:<11} {asm}/{name}.fa.gz  {size / 1e6:,.1f} MB")
    write_manifest(out / "manifest.tsv", rows)
    print(f"wrote {out / 'manifest.tsv'} ({len(rows)} lines)")
    print(f"next: mamba-genome finetune --manifest {out / 'manifest.tsv'} --preset 1.4m --seq-len 16384")
    return 0


if __name__ == "__main__":
    sys.exit(main())

# Expected output of `python data_recipes/great_apes/prepare.py --out data/great_apes`
# (sizes on the server may differ from the approximate ones):
#
# great apes: 5 assemblies, ~4.6 GB compressed (approximate) -> /home/me/data/great_apes
#   human       hg38     ~938 MB  https://hgdownload.soe.ucsc.edu/goldenPath/hg38/bigZips/hg38.fa.gz -> data/great_apes/hg38.fa.gz
#   chimpanzee  panTro6  ~900 MB  ...
#   ...
# split: train = 18 autosomes (chr2 = chr2A+chr2B in non-human apes), val = chr19,chr20, test = chr21,chr22
#   human       hg38.fa.gz  938 MB
#   ...
# wrote data/great_apes/manifest.tsv (15 lines)
# next: mamba-genome finetune --manifest data/great_apes/manifest.tsv --preset 1.4m --seq-len 16384
