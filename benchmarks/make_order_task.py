"""Synthetic two-class task that a bag of k-mers cannot solve: the order of two motifs.

Every record is random DNA of ``--length`` bases holding two fixed motifs, M1 and M2, each once,
with a random gap between them. Class ``M1_first`` has M1 upstream of M2, class ``M2_first`` the
reverse. Both classes contain the same motifs and the same random background, so their k-mer
count distributions are identical for every k (apart from chance junction k-mers): a k-mer
baseline sits at chance by construction, while a sequence model has to carry "which motif came
first" across the gap. Writes one FASTA per class, for `mamba-genome finetune --class`.

    python benchmarks/make_order_task.py --out /tmp/order --records 1500 --length 512
    mamba-genome finetune --class M1_first=/tmp/order/M1_first.fa --class M2_first=/tmp/order/M2_first.fa \\
        --preset tiny --seq-len 512 --pooling mean --baseline kmer --out runs/order
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


def make_record(rng: np.random.Generator, length: int, first: bytes, second: bytes, min_gap: int) -> bytes:
    seq = BASES[rng.integers(0, 4, length)].copy()
    la, lb = len(first), len(second)
    room = length - la - lb - min_gap
    if room < 0:
        raise SystemExit(f"error: --length {length} is too short for two motifs {min_gap} bases apart")
    start_a = int(rng.integers(0, room + 1))
    start_b = int(rng.integers(start_a + la + min_gap, length - lb + 1))
    seq[start_a:start_a + la] = np.frombuffer(first, dtype=np.uint8)
    seq[start_b:start_b + lb] = np.frombuffer(second, dtype=np.uint8)
    return seq.tobytes()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--records", type=int, default=1500, help="training records per class (val, test: a fifth each)")
    ap.add_argument("--length", type=int, default=512, help="bases per record")
    ap.add_argument("--min-gap", type=int, default=100, help="smallest distance between the two motifs")
    ap.add_argument("--motif-length", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    m1 = BASES[rng.integers(0, 4, args.motif_length)].tobytes()
    m2 = BASES[rng.integers(0, 4, args.motif_length)].tobytes()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = ["label\tfasta\tsplit"]
    sizes = {"train": args.records, "val": max(1, args.records // 5), "test": max(1, args.records // 5)}
    for label, (a, b) in (("M1_first", (m1, m2)), ("M2_first", (m2, m1))):
        for split, n in sizes.items():
            path = out / f"{label}.{split}.fa"
            with open(path, "wb") as fh:
                for i in range(n):
                    fh.write(b">%s_%s_%d\n" % (label.encode(), split.encode(), i))
                    fh.write(make_record(rng, args.length, a, b, args.min_gap) + b"\n")
            manifest.append(f"{label}\t{path.resolve()}\t{split}")
    (out / "manifest.tsv").write_text("\n".join(manifest) + "\n")
    print(f"wrote {out}/manifest.tsv: 2 classes x {sizes} records of {args.length} bp; "
          f"M1={m1.decode()} M2={m2.decode()}, gap >= {args.min_gap}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
