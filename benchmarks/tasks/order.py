"""Tasks ``order_short`` and ``order_long``: which of two motifs comes first (k-mer content identical).

``order_short`` (control): the records of ``benchmarks/make_order_task.py`` (random DNA of 512 bp
holding two fixed 12-mers once each, >= 100 bp apart; class = which is upstream). Both classes
have the same motifs and the same background distribution, so a bag of k-mers is at chance by
construction (tests/test_order_task.py checks it).

``order_long`` (needs > 4 kbp of context): the same question in 8,192-bp windows of *real*
bacterial sequence, with the two 16-mers at least 5,000 bp apart, so no classifier whose
receptive field is shorter than that can see both motifs at once. Each background window is used
once, with a class drawn at random (balanced per split); the motifs occur nowhere in the
background genomes (either strand).

Provenance (``order_long`` background): Debian package ``ragout-examples`` 2.3-4,
``E.Coli/references/DH1.fasta.gz``, ``V.Cholerae/references/O395.fasta.gz`` and
``S.Aureus/references/RF122.fasta.gz``, as copied to ``<data>/ecoli/DH1.fa.gz``,
``<data>/vcholerae/O395.fa.gz``, ``<data>/saureus/RF122.fa.gz``; and Debian package
``maffilter-examples`` (U. maydis, 36 contigs), as copied to ``<data>/umaydis/Umaydis.fa.gz``.
Splits: 100-kbp blocks
interleaved 8:1:1; a window lies wholly inside one block; windows are non-overlapping tiles
(< 1% N).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from .common import WindowSet, genome_blocks, read_genome, revcomp

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["M1_first", "M2_first"]
SHORT_LEN, LONG_LEN = 512, 8192
SHORT_PER_CLASS = {"train": 1500, "val": 300, "test": 300}
LONG_GAP = 5000
LONG_MOTIF = 16
LONG_BLOCK = 100_000
LONG_GENOMES = ("ecoli/DH1.fa.gz", "vcholerae/O395.fa.gz", "saureus/RF122.fa.gz", "umaydis/Umaydis.fa.gz")
_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)


def _order_script():
    spec = importlib.util.spec_from_file_location("make_order_task", ROOT / "benchmarks" / "make_order_task.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def prepare_short(data: Path | None = None, out: Path | None = None, *, seed: int = 0,
                  per_class: dict | None = None, seq_len: int = SHORT_LEN, min_gap: int = 100) -> WindowSet:
    """Synthetic control (reads no data): the make_order_task.py records as one window set."""
    mod = _order_script()
    rng = np.random.default_rng(seed)
    m1 = _BASES[rng.integers(0, 4, 12)].tobytes()
    m2 = _BASES[rng.integers(0, 4, 12)].tobytes()
    per_class = per_class or SHORT_PER_CLASS
    seqs, ys, splits = [], [], []
    for split, n in per_class.items():
        for k, (a, b) in enumerate(((m1, m2), (m2, m1))):
            for _ in range(n):
                seqs.append(mod.make_record(rng, seq_len, a, b, min_gap))
                ys.append(k)
                splits.append(split)
    ws = WindowSet.from_sequences("order_short", LABELS, seq_len, seqs, ys, splits, metric="accuracy",
                                  provenance={"sequence": "synthetic: benchmarks/make_order_task.py make_record",
                                              "M1": m1.decode(), "M2": m2.decode(), "min_gap": min_gap, "seed": seed})
    ws.check()
    return ws


def _absent_motif(rng, genomes: list[bytes], length: int, avoid: bytes = b"") -> bytes:
    while True:
        m = _BASES[rng.integers(0, 4, length)].tobytes()
        rc = revcomp(m)
        if m == avoid or rc == avoid or m == rc:
            continue
        if not any(m in g or rc in g for g in genomes):
            return m


def prepare_long(data: Path, out: Path | None = None, *, seed: int = 0, files=LONG_GENOMES,
                 seq_len: int = LONG_LEN, min_gap: int = LONG_GAP, block: int = LONG_BLOCK,
                 motif_len: int = LONG_MOTIF) -> WindowSet:
    """Real-background long-range order task from ``data`` (the /work/shared/data layout)."""
    rng = np.random.default_rng(seed)
    genomes = [read_genome(Path(data) / rel) for rel in files]
    contigs = [seq for g in genomes for seq in g.values()]
    m1 = _absent_motif(rng, contigs, motif_len)
    m2 = _absent_motif(rng, contigs, motif_len, avoid=m1)
    room = seq_len - 2 * motif_len - min_gap
    if room < 0:
        raise ValueError(f"seq_len {seq_len} too short for two {motif_len}-mers {min_gap} bp apart")
    bg = {"train": [], "val": [], "test": []}
    for genome in genomes:
        for contig, blocks in genome_blocks(genome, block).items():
            seq = genome[contig]
            for b0, b1, split in blocks:
                for s in range(b0, b1 - seq_len + 1, seq_len):  # tiles inside the block
                    w = seq[s:s + seq_len]
                    if w.count(b"N") < 0.01 * seq_len:
                        bg[split].append(w)
    seqs, ys, splits = [], [], []
    for split, windows in bg.items():
        labels = np.arange(len(windows)) % 2
        rng.shuffle(labels)
        for w, k in zip(windows, labels):
            first, second = (m1, m2) if k == 0 else (m2, m1)
            a = int(rng.integers(0, room + 1))
            b = int(rng.integers(a + motif_len + min_gap, seq_len - motif_len + 1))
            w = bytearray(w)
            w[a:a + motif_len] = first
            w[b:b + motif_len] = second
            seqs.append(bytes(w))
            ys.append(int(k))
            splits.append(split)
    ws = WindowSet.from_sequences("order_long", LABELS, seq_len, seqs, ys, splits, metric="accuracy",
                                  provenance={"sequence": "Debian ragout-examples 2.3-4 and maffilter-examples (module docstring)",
                                              "files": list(files), "M1": m1.decode(), "M2": m2.decode(),
                                              "min_gap": min_gap, "split": f"{block:,}-bp blocks, interleaved 8:1:1",
                                              "seed": seed})
    ws.check()
    return ws
