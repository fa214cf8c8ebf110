"""Benchmark ``mamba_genome.data.store.ingest`` on plain-gzip, plain and BGZF FASTA.

Times a full ingest (FASTA -> token store, progress bar off, ``force=True``)
and reports the median of ``--repeats`` runs as MB/s of *decompressed* FASTA
text and Mbp/s of bases. Baselines on the same file: ``zcat > /dev/null``
(when ``zcat`` exists) and a pyfaidx full read of the decompressed file.

The plain and BGZF copies (and the stores, and the .fai pyfaidx builds for
its baseline) are written under a temporary directory, never beside the input.

Usage:
    python benchmarks/bench_ingest.py /work/shared/data/umaydis/Umaydis.fa.gz
    python benchmarks/bench_ingest.py REF.fa.gz --repeats 5 --formats gzip
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import tempfile
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout
from mamba_genome.data.store import ingest  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _make_copies(ref: Path, tmp: Path, formats: list[str]) -> dict[str, Path]:
    copies = {"gzip": ref}
    if {"plain", "bgzf"} & set(formats):
        plain = tmp / ref.name.removesuffix(".gz")
        with gzip.open(ref, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
        copies["plain"] = plain
    if "bgzf" in formats:
        from Bio import bgzf

        bgz = tmp / (plain.name + ".bgz.gz")
        with open(plain, "rb") as src, bgzf.BgzfWriter(str(bgz), "wb") as dst:
            while chunk := src.read(8 << 20):
                dst.write(chunk)
        copies["bgzf"] = bgz
    return copies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ref", type=Path, help="a plain-gzip FASTA, e.g. Umaydis.fa.gz")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--formats", default="gzip,plain,bgzf", help="comma-separated subset of gzip,plain,bgzf")
    args = ap.parse_args()
    formats = args.formats.split(",")

    with tempfile.TemporaryDirectory(prefix="bench_ingest_") as d:
        tmp = Path(d)
        copies = _make_copies(args.ref, tmp, formats)
        rows = []
        for fmt in formats:
            src = copies[fmt]
            out = tmp / f"{fmt}.mgstore"
            store = ingest(src, out, force=True, progress=False)  # warm-up
            text = store.ingest_stats.text_bytes
            bp = store.total_length
            # every format is one streaming pass (no .fai/.gzi is built or read)
            t = _median_time(lambda: ingest(src, out, force=True, progress=False), args.repeats)
            rows.append((f"ingest {fmt}", src.stat().st_size, text / 1e6 / t, bp / 1e6 / t, t))
        if shutil.which("zcat"):
            t = _median_time(lambda: subprocess.run(["zcat", str(args.ref)], stdout=subprocess.DEVNULL, check=True), args.repeats)
            rows.append(("zcat > /dev/null", args.ref.stat().st_size, text / 1e6 / t, bp / 1e6 / t, t))
        if "plain" in copies:
            import pyfaidx

            def read_all():
                fa = pyfaidx.Fasta(str(copies["plain"]), as_raw=True)
                for rec in fa:
                    rec[:]
                fa.close()

            t = _median_time(read_all, args.repeats)
            rows.append(("pyfaidx read, index exists", copies["plain"].stat().st_size, text / 1e6 / t, bp / 1e6 / t, t))

    print(f"# {args.ref.name}: {bp:,} bp, {text / 1e6:.1f} MB decompressed; median of {args.repeats}; "
          f"{os.cpu_count()} CPUs")
    print(f"{'what':30s} {'file MB':>8s} {'MB/s':>8s} {'Mbp/s':>8s} {'seconds':>8s}")
    for what, size, mbs, mbps, t in rows:
        print(f"{what:30s} {size / 1e6:8.1f} {mbs:8.1f} {mbps:8.1f} {t:8.3f}")


if __name__ == "__main__":
    main()

# Expected output (2-core CPU; see benchmarks/ingest_result.md for the measured numbers):
# what                          file MB     MB/s    Mbp/s  seconds
# ingest gzip                       5.9    ~200     ~200    ~0.10
