"""Task ``coding``: is a 256-bp window inside a protein-coding gene or intergenic? (GC-matched)

Provenance
    Sequence: Debian package ``ragout-examples`` 2.3-4, files
    ``/usr/share/doc/ragout/examples/E.Coli/references/MG1655-K12.fasta.gz`` (E. coli K-12
    MG1655, GenBank U00096.3), ``S.Aureus/references/N315.fasta.gz`` and
    ``V.Cholerae/references/H1.fasta.gz``, as copied to ``<data>/ecoli/MG1655-K12.fa.gz``,
    ``<data>/saureus/N315.fa.gz`` and ``<data>/vcholerae/H1.fa.gz``.
    Genes: predicted by pyrodigal (PyPI) on each genome (see :mod:`benchmarks.tasks.genes`):
    no annotation of these assemblies ships in a package reachable here.

Construction
    Each contig is cut into 20-kbp blocks assigned train/val/test 8:1:1 in an interleaved
    pattern; a window lies wholly inside one block. ``coding``: non-overlapping windows wholly
    inside one predicted gene (any strand; at most 2 per gene, from its middle).
    ``noncoding``: non-overlapping windows touching no predicted gene on either strand, centred
    in intergenic stretches. Per genome and split, the two classes are subsampled to the same
    GC histogram (20 bins), so GC content carries no signal; splits are class-balanced.
    Windows are in genome (forward-strand) orientation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import WindowSet, genome_blocks, gc_matched_by_split, read_genome, split_of
from .genes import call_genes, check_calls, pyrodigal_version, verify

NAME = "coding"
SEQ_LEN = 256
BLOCK = 20_000
GENOMES = {"E. coli MG1655": "ecoli/MG1655-K12.fa.gz", "S. aureus N315": "saureus/N315.fa.gz",
           "V. cholerae H1": "vcholerae/H1.fa.gz"}


def candidates(genome: dict[str, bytes], genes, seq_len: int, block: int, per_gene: int = 2):
    """Yield ``(label, split, seq)`` for every candidate window (0 = coding, 1 = noncoding).

    Coding windows: up to ``per_gene`` adjacent tiles from the middle of each gene.
    """
    all_blocks = genome_blocks(genome, block)
    for contig, seq in genome.items():
        blocks = all_blocks[contig]
        mine = sorted((g for g in genes if g.contig == contig), key=lambda g: g.start)
        covered = np.zeros(len(seq) + 1, dtype=np.int32)
        for g in mine:
            covered[g.start] += 1
            covered[g.end] -= 1
            if g.end - g.start >= seq_len:
                n = min(per_gene, (g.end - g.start) // seq_len)
                s0 = g.start + ((g.end - g.start) - n * seq_len) // 2
                for j in range(n):
                    s = s0 + j * seq_len
                    split = split_of(blocks, s, s + seq_len)
                    if split:
                        yield 0, split, seq[s:s + seq_len]
        gene_free = np.cumsum(covered)[:-1] == 0
        # intergenic stretches: runs of gene-free bases
        edges = np.flatnonzero(np.diff(np.concatenate([[0], gene_free.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            n = (b - a) // seq_len
            s0 = a + ((b - a) - n * seq_len) // 2
            for j in range(n):
                s = s0 + j * seq_len
                split = split_of(blocks, s, s + seq_len)
                if split:
                    yield 1, split, seq[s:s + seq_len]


def prepare(data: Path, out: Path | None = None, *, seed: int = 0, genomes: dict | None = None,
            seq_len: int = SEQ_LEN, block: int = BLOCK, meta_genes: bool = False, per_gene: int = 2) -> WindowSet:
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
        cand = list(candidates(genome, genes, seq_len, block, per_gene))
        lab = np.array([c[0] for c in cand])
        got, labels_, splits_, kept = gc_matched_by_split(cand, rng)
        seqs += got
        ys += labels_
        splits += splits_
        per_genome[gname] = {"file": rel, "genes": len(genes), "gene_check": report,
                             "candidates": {"coding": int((lab == 0).sum()), "noncoding": int((lab == 1).sum())},
                             "gc_matched_pairs": kept}
    ws = WindowSet.from_sequences(NAME, ["coding", "noncoding"], seq_len, seqs, ys, splits, metric="auroc",
                                  provenance={"sequence": "Debian ragout-examples 2.3-4 (see module docstring)",
                                              "genes": f"pyrodigal {pyrodigal_version()} (predicted, not curated)",
                                              "split": f"{block:,}-bp blocks, interleaved 8:1:1",
                                              "genomes": per_genome, "seed": seed})
    ws.check()
    return ws

# Expected output (2026-12-01, /work/shared/data):
# coding: 2 classes, ... windows of 256 bp, metric auroc
