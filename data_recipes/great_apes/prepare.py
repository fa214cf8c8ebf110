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

Usage:
    python data_recipes/great_apes/prepare.py --out data/great_apes --dry-run
    python data_recipes/great_apes/prepare.py --out data/great_apes
    mamba-genome finetune --manifest data/great_apes/manifest.tsv --preset 1.4m --seq-len 16384
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import urllib.request
from pathlib import Path

BASE_URL = "https://hgdownload.soe.ucsc.edu/goldenPath/{asm}/bigZips/{asm}.fa.gz"

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


def write_manifest(path: Path, rows) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["label", "fasta", "split", "contigs"])
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
    args = ap.parse_args(argv)
    out = Path(args.out)
    chosen = [a for a in ASSEMBLIES if not args.only or a[1] in args.only]
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
