"""Task ``strain``: which of 5 Staphylococcus aureus strains does a 1-kbp window come from?

Provenance
    Debian package ``ragout-examples`` 2.3-4, files
    ``/usr/share/doc/ragout/examples/S.Aureus/references/{COL,JKD6008,N315,RF122,USA300_FPR3757}.fasta.gz``
    (complete GenBank assemblies), as copied to ``<data>/saureus/<strain>.fa.gz``.

Construction
    The strains are near-identical over their core genome; what tells them apart is accessory
    sequence (prophages, SCCmec, pathogenicity islands, IS elements) and SNPs. Holding out the
    last 20% of each genome leaves a test set whose accessory elements were never seen in
    training, and the 6-mer baseline sat at chance (/work/shared/data/README.md). Here each
    genome is cut into 50-kbp blocks assigned train/val/test 8:1:1 by coordinate with the same
    interleaved pattern in every strain: roughly collinear homologous core sequence falls in the
    same split for all strains, while an accessory island longer than a block has parts in train
    and in test. Windows are non-overlapping tiles inside blocks (< 10% N), subsampled to equal
    counts per strain. ``stats['test_duplicates']`` counts test windows whose exact sequence
    also occurs in another strain (no classifier can get those right reliably).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import WindowSet, genome_blocks, read_genome, subsample_per_class

NAME = "strain"
SEQ_LEN = 1024
BLOCK = 50_000
STRAINS = ("COL", "JKD6008", "N315", "RF122", "USA300_FPR3757")
PER_CLASS = {"train": 1500, "val": 200, "test": 200}


def prepare(data: Path, out: Path | None = None, *, seed: int = 0, files: dict | None = None,
            seq_len: int = SEQ_LEN, block: int = BLOCK, per_class: dict | None = None) -> WindowSet:
    """Build the task from ``data`` (the /work/shared/data layout); return its windows."""
    rng = np.random.default_rng(seed)
    files = files or {s: f"saureus/{s}.fa.gz" for s in STRAINS}
    per_class = per_class or PER_CLASS
    seqs, ys, splits = [], [], []
    for k, (strain, rel) in enumerate(files.items()):
        genome = read_genome(Path(data) / rel)
        for contig, blocks in genome_blocks(genome, block).items():
            seq = genome[contig]
            for b0, b1, split in blocks:
                for s in range(b0, b1 - seq_len + 1, seq_len):  # tiles inside the block
                    w = seq[s:s + seq_len]
                    if w.count(b"N") < 0.1 * seq_len:
                        seqs.append(w)
                        ys.append(k)
                        splits.append(split)
    ys, splits = np.array(ys), np.array(splits)
    keep = subsample_per_class(ys, splits, per_class, rng)
    seqs = [seqs[i] for i in keep]
    ys, splits = ys[keep], splits[keep]
    owners: dict[bytes, set] = {}
    for w, k in zip(seqs, ys):
        owners.setdefault(w, set()).add(int(k))
    dup = sum(1 for w, s in zip(seqs, splits) if s == "test" and len(owners[w]) > 1)
    ws = WindowSet.from_sequences(NAME, list(files), seq_len, seqs, ys, splits, metric="accuracy",
                                  provenance={"sequence": "Debian ragout-examples 2.3-4 (see module docstring)",
                                              "files": files, "split": f"{block:,}-bp blocks, interleaved 8:1:1, "
                                              "same pattern by coordinate in every strain", "seed": seed,
                                              "test_duplicates": int(dup)})
    ws.check()
    return ws
