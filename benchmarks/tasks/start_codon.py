"""Task ``start_codon``: is the ATG at the centre of a 256-bp window a gene's start codon? (GC-matched)

Provenance
    Sequence: Debian package ``ragout-examples`` 2.3-4 (E. coli K-12 MG1655 = GenBank U00096.3,
    S. aureus N315, V. cholerae H1), as copied to ``<data>/ecoli/MG1655-K12.fa.gz``,
    ``<data>/saureus/N315.fa.gz``, ``<data>/vcholerae/H1.fa.gz``.
    Genes: predicted by pyrodigal (PyPI), see :mod:`benchmarks.tasks.genes`. Prodigal picks
    starts using RBS motifs and coding statistics, so this task asks whether a classifier
    recovers the translation-initiation signal Prodigal models; it is not curated TIS data.

Construction
    Every window is in gene orientation (reverse-complemented for minus-strand genes) with an
    ATG at bases 128-130 (0-based; ``seq_len // 2`` in general). ``start``: the ATG start codon
    of a complete gene.
    ``internal``: an in-frame ATG of the same gene at least 300 bp after its start and with
    the whole window inside the gene's body (one per gene, at random). Both classes share the
    centre codon, so the signal is upstream: RBS, promoter-side composition, no reading frame.
    Splits: 20-kbp blocks interleaved 8:1:1; a window lies wholly inside one block. Per genome
    and split the classes are matched on GC (20 bins) and balanced.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .coding import GENOMES
from .common import WindowSet, genome_blocks, gc_matched_by_split, read_genome, revcomp, split_of
from .genes import call_genes, check_calls, pyrodigal_version, verify

NAME = "start_codon"
SEQ_LEN = 256
BLOCK = 20_000
MIN_INTERNAL = 300  # an internal ATG lies at least this far into the gene


def _window(seq: bytes, strand: int, atg: int, seq_len: int) -> tuple[int, int, bytes] | None:
    """Forward-strand span and gene-oriented window with the ATG whose first base is ``atg`` at ``seq_len // 2``.

    ``atg`` is a forward coordinate: the A on the plus strand; on the minus strand the ATG reads
    leftwards from ``atg`` (forward bases ``[atg - 2, atg]`` are CAT).
    """
    up = seq_len // 2
    if strand > 0:
        s = atg - up
        e = s + seq_len
        if s < 0 or e > len(seq):
            return None
        return s, e, seq[s:e]
    # minus strand: ATG occupies [atg-2, atg] on the forward strand (as CAT), read leftwards
    e = atg + 1 + up
    s = e - seq_len
    if s < 0 or e > len(seq):
        return None
    return s, e, revcomp(seq[s:e])


def candidates(genome: dict[str, bytes], genes, seq_len: int, block: int, rng: np.random.Generator):
    """Yield ``(label, split, window)``: 0 = start ATG, 1 = internal in-frame ATG."""
    all_blocks = genome_blocks(genome, block)
    for contig, seq in genome.items():
        blocks = all_blocks[contig]
        for g in genes:
            if g.contig != contig or g.partial or g.start_codon != "ATG":
                continue
            length = g.end - g.start
            first = g.start if g.strand > 0 else g.end - 1  # forward coordinate of the start's first base
            w = _window(seq, g.strand, first, seq_len)
            if w is not None and split_of(blocks, w[0], w[1]):
                yield 0, split_of(blocks, w[0], w[1]), w[2]
            cds = g.cds(seq)
            offs = [o for o in range(MIN_INTERNAL - MIN_INTERNAL % 3, length - (seq_len - seq_len // 2) + 1, 3)
                    if cds[o:o + 3] == b"ATG"]
            if not offs:
                continue
            o = int(rng.choice(offs))
            pos = g.start + o if g.strand > 0 else g.end - 1 - o
            w = _window(seq, g.strand, pos, seq_len)
            if w is not None and split_of(blocks, w[0], w[1]):
                yield 1, split_of(blocks, w[0], w[1]), w[2]


def prepare(data: Path, out: Path | None = None, *, seed: int = 0, genomes: dict | None = None,
            seq_len: int = SEQ_LEN, block: int = BLOCK, meta_genes: bool = False) -> WindowSet:
    """Build the task from ``data`` (the /work/shared/data layout); return its windows."""
    rng = np.random.default_rng(seed)
    genomes = genomes or GENOMES
    seqs, ys, splits, per_genome = [], [], [], {}
    for gname, rel in genomes.items():
        genome = read_genome(Path(data) / rel)
        cache = Path(out) / "_genes" / (Path(rel).name.split(".")[0] + ".tsv") if out else None
        genes = call_genes(genome, cache, meta=meta_genes)
        report = verify(genome, genes)
        check_calls(report, f"{NAME}: {rel}")
        cand = list(candidates(genome, genes, seq_len, block, rng))
        lab = np.array([c[0] for c in cand])
        got, labels_, splits_, kept = gc_matched_by_split(cand, rng)
        seqs += got
        ys += labels_
        splits += splits_
        per_genome[gname] = {"file": rel, "genes": len(genes), "gene_check": report,
                             "candidates": {"start": int((lab == 0).sum()), "internal": int((lab == 1).sum())},
                             "gc_matched_pairs": kept}
    ws = WindowSet.from_sequences(NAME, ["start", "internal"], seq_len, seqs, ys, splits, metric="auroc",
                                  provenance={"sequence": "Debian ragout-examples 2.3-4 (see module docstring)",
                                              "genes": f"pyrodigal {pyrodigal_version()} (predicted, not curated)",
                                              "split": f"{block:,}-bp blocks, interleaved 8:1:1",
                                              "genomes": per_genome, "seed": seed})
    ws.check()
    return ws
