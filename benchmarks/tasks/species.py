"""Task ``species``: which of five species does a 1,024-bp window come from? (bacteria, a fungus, human)

A species-identity task with real signal, beside ``strain`` (near-identical S. aureus strains, at
chance for every method) and ``great_apes`` (four apes, ~1-3% apart).

Provenance
    E. coli K-12 MG1655, S. aureus N315, V. cholerae H1: Debian ``ragout-examples`` 2.3-4 (as in
    :mod:`benchmarks.tasks.coding`, ``<data>/ecoli/MG1655-K12.fa.gz``, ``<data>/saureus/N315.fa.gz``,
    ``<data>/vcholerae/H1.fa.gz``); U. maydis: Debian ``maffilter-examples`` (``<data>/umaydis/Umaydis.fa.gz``);
    human: the ``Hsap`` rows (chr22) of the maffilter-examples EPO alignment (:mod:`benchmarks.tasks.apes`).

Construction
    Each genome keeps the block split of the task group it shares sequence with, so one
    pretraining FASTA per group (:mod:`benchmarks.tasks.pretraining`) never holds a test base of
    any task: the bacteria use the 20-kbp blocks of ``coding``/``start_codon``, U. maydis the 50-kbp
    blocks of ``coding_umaydis``/``splice_donor``, human the 100-kbp human-coordinate blocks of
    ``great_apes`` (all 8:1:1 interleaved). Non-overlapping 1,024-bp tiles wholly inside one block
    (< 1% N), subsampled to equal counts per species and split. Genome orientation. GC content
    differs between these species (32-65%), so the task is easy for composition-based methods;
    it checks that a model separates distant genomes at 1 kbp.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import apes, coding, umaydis
from .common import WindowSet, genome_blocks, read_genome, split_of, subsample_per_class

NAME = "species"
SEQ_LEN = 1024
PER_CLASS = {"train": 1500, "val": 200, "test": 200}
# label -> (file under --data, block size of its task group); human comes from the apes MAF
GENOMES = {"E_coli": ("ecoli/MG1655-K12.fa.gz", coding.BLOCK), "S_aureus": ("saureus/N315.fa.gz", coding.BLOCK),
           "V_cholerae": ("vcholerae/H1.fa.gz", coding.BLOCK), "U_maydis": (umaydis.GENOME, umaydis.BLOCK)}


def _tiles(seq: bytes, blocks, seq_len: int):
    for s in range(0, len(seq) - seq_len + 1, seq_len):
        split = split_of(blocks, s, s + seq_len)
        w = seq[s:s + seq_len]
        if split and w.count(b"N") < 0.01 * seq_len:
            yield split, w


def prepare(data: Path, out: Path | None = None, *, seed: int = 0, maf=None, genomes: dict | None = None,
            seq_len: int = SEQ_LEN, per_class: dict | None = None) -> WindowSet:
    """Build the task from ``data`` (the /work/shared/data layout) and the apes MAF; return its windows."""
    rng = np.random.default_rng(seed)
    genomes = genomes or GENOMES
    per_class = per_class or PER_CLASS
    labels = [*genomes, "human"]
    seqs, ys, splits = [], [], []
    for k, (label, (rel, block)) in enumerate(genomes.items()):
        genome = read_genome(Path(data) / rel)
        for contig, blocks in genome_blocks(genome, block).items():
            for split, w in _tiles(genome[contig], blocks, seq_len):
                seqs.append(w)
                ys.append(k)
                splits.append(split)
    for split, _start, run in apes.runs(apes.read_maf(maf or apes.DEBIAN_MAF)):
        seq = run["Hsap"]
        for s in range(0, len(seq) - seq_len + 1, seq_len):
            w = seq[s:s + seq_len]
            if w.count(b"N") < 0.01 * seq_len:
                seqs.append(w)
                ys.append(len(labels) - 1)
                splits.append(split)
    ys, splits = np.array(ys), np.array(splits)
    keep = subsample_per_class(ys, splits, per_class, rng)
    ws = WindowSet.from_sequences(NAME, labels, seq_len, [seqs[i] for i in keep], ys[keep], splits[keep],
                                  metric="accuracy",
                                  provenance={"sequence": "Debian ragout-examples 2.3-4, maffilter-examples 1.3.1 "
                                                          "(module docstring)",
                                              "files": {lab: rel for lab, (rel, _) in genomes.items()},
                                              "human": "Hsap rows of the maffilter-examples EPO MAF (chr22)",
                                              "split": "each genome's task-group blocks (20 kbp bacteria, 50 kbp "
                                                       "U. maydis, 100 kbp human), interleaved 8:1:1",
                                              "seed": seed})
    ws.check()
    return ws
