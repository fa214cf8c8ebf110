"""Tasks on the fungus Ustilago maydis with its curated gene models: ``coding_umaydis`` and ``splice_donor``.

Provenance
    Debian package ``maffilter-examples`` 1.3.1+dfsg-4 (``apt-get install maffilter-examples``), files
    ``/usr/share/doc/maffilter/examples/Umaydis/Umaydis.fasta.gz`` (36 contigs, 19.7 Mbp; identical
    to ``<data>/umaydis/Umaydis.fa.gz``) and ``Umaydis.gff3.gz`` (MIPS gene models: 6,787 mRNAs,
    9,778 CDS segments; the header says ``gm_readgff ... 6787 CDS entries read``). The GFF path is
    the ``--umaydis-gff`` option of ``prepare``.

Coordinate check (:func:`gene_models`): every mRNA's CDS segments are joined in transcript order
and translated (standard code): 6,360 of 6,787 start with M, 6,377 end with a stop, 403 hold an
internal stop (2026-12-01). Only models that start with M, end with a stop and have no internal
stop are used as positives or negatives; *every* model, good or not, counts as genic when
intergenic windows are chosen.

``coding_umaydis`` (the setting of issue 14: 512-bp windows, coding vs intergenic): ``coding``
windows lie wholly inside one CDS segment of a checked model (at most 2 per segment, from its
middle); ``noncoding`` windows touch no mRNA on either strand. Genome orientation.

``splice_donor``: 256-bp windows in transcript orientation with a GT at bases 128-129. ``donor``:
the first two bases of a real intron (the exon ends at base 127). ``decoy``: a GT inside a CDS
segment of the same kind of model, the whole window inside that segment (one per segment, at
random). The signal is the donor consensus and the exon/intron contrast downstream.

Both: contigs cut into 50-kbp blocks, train/val/test 8:1:1 interleaved (the pattern runs on across
contigs), a window wholly inside one block; per split the classes are matched on GC (20 bins) and
balanced, then capped.
"""
from __future__ import annotations

import gzip
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mamba_genome.errors import UserError

from .common import WindowSet, gc_fraction, gc_matched, genome_blocks, read_genome, revcomp, split_of

DEBIAN_GFF = Path("/usr/share/doc/maffilter/examples/Umaydis/Umaydis.gff3.gz")
GENOME = "umaydis/Umaydis.fa.gz"
BLOCK = 50_000
CAPS = {"train": 4000, "val": 500, "test": 500}


@dataclass(frozen=True)
class Model:
    """One mRNA: contig, strand, CDS segments (0-based half-open, ascending), whether it translates cleanly."""

    contig: str
    strand: str
    segments: tuple[tuple[int, int], ...]
    ok: bool


def gene_models(genome: dict[str, bytes], gff: str | Path) -> tuple[list[Model], dict]:
    """Read the MIPS GFF3 and translate every model; return the models and the check's counts."""
    from Bio.Seq import Seq

    gff = Path(gff)
    if not gff.is_file():
        raise UserError(f"{gff}: no such GFF; `apt-get install maffilter-examples` or pass --umaydis-gff PATH")
    by_chr = {name.split(":")[1] if ":" in name else name: name for name in genome}
    cds = defaultdict(list)
    opener = gzip.open if gff.suffix == ".gz" else open
    with opener(gff, "rt") as fh:
        for line in fh:
            f = line.rstrip("\n").split("\t")
            if line.startswith("#") or len(f) < 9 or f[2] != "CDS":
                continue
            attrs = dict(a.split("=", 1) for a in f[8].split(";") if "=" in a)
            if f[0] not in by_chr:
                raise UserError(f"{gff}: contig {f[0]} is not in the genome FASTA")
            cds[attrs["Parent"]].append((by_chr[f[0]], f[6], int(f[3]) - 1, int(f[4])))
    models, counts = [], {"models": 0, "start_M": 0, "ends_with_stop": 0, "internal_stop": 0, "used": 0}
    for parts in cds.values():
        parts.sort(key=lambda p: p[2])
        contig, strand = parts[0][0], parts[0][1]
        seq = b"".join(genome[contig][a:b] for _, _, a, b in parts)
        seq = revcomp(seq) if strand == "-" else seq
        prot = str(Seq(seq.decode()).translate()) if len(seq) % 3 == 0 else ""
        m, stop, internal = prot[:1] == "M", prot.endswith("*"), "*" in prot[:-1]
        counts["models"] += 1
        counts["start_M"] += m
        counts["ends_with_stop"] += stop
        counts["internal_stop"] += internal
        ok = bool(prot) and m and stop and not internal
        counts["used"] += ok
        models.append(Model(contig, strand, tuple((a, b) for _, _, a, b in parts), ok))
    return models, counts


def _genic_mask(genome, models) -> dict[str, np.ndarray]:
    mask = {c: np.zeros(len(s), dtype=bool) for c, s in genome.items()}
    for m in models:
        mask[m.contig][m.segments[0][0]:m.segments[-1][1]] = True  # whole mRNA span, introns included
    return mask


def coding_candidates(genome, models, seq_len: int, block: int):
    """Yield ``(label, split, window)``: 0 = coding (inside one CDS segment), 1 = intergenic."""
    blocks = genome_blocks(genome, block)
    for m in models:
        if not m.ok:
            continue
        for a, b in m.segments:
            n = min(2, (b - a) // seq_len)
            s0 = a + ((b - a) - n * seq_len) // 2
            for j in range(n):
                s = s0 + j * seq_len
                split = split_of(blocks[m.contig], s, s + seq_len)
                if split:
                    yield 0, split, genome[m.contig][s:s + seq_len]
    for contig, genic in _genic_mask(genome, models).items():
        seq = genome[contig]
        free = ~genic
        edges = np.flatnonzero(np.diff(np.concatenate([[0], free.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            for s in range(a, b - seq_len + 1, seq_len):
                w = seq[s:s + seq_len]
                split = split_of(blocks[contig], s, s + seq_len)
                if split and w.count(b"N") < 0.01 * seq_len:
                    yield 1, split, w


def _oriented(seq: bytes, strand: str, pos: int, seq_len: int) -> tuple[int, int, bytes] | None:
    """Window with transcript-orientation base ``pos`` (a forward coordinate) at ``seq_len // 2``."""
    half = seq_len // 2
    if strand == "+":
        s, e = pos - half, pos - half + seq_len
        return (s, e, seq[s:e]) if s >= 0 and e <= len(seq) else None
    e = pos + 1 + half
    s = e - seq_len
    return (s, e, revcomp(seq[s:e])) if s >= 0 and e <= len(seq) else None


def donor_candidates(genome, models, seq_len: int, block: int, rng: np.random.Generator):
    """Yield ``(label, split, window)``: 0 = intron donor GT, 1 = exon-internal GT decoy."""
    blocks = genome_blocks(genome, block)
    half = seq_len // 2
    for m in models:
        if not m.ok:
            continue
        seq = genome[m.contig]
        segs = list(m.segments) if m.strand == "+" else list(reversed(m.segments))
        for i, (a, b) in enumerate(segs):
            if i + 1 < len(segs):  # a donor follows this segment
                pos = b if m.strand == "+" else a - 1  # first intron base, forward coordinate
                w = _oriented(seq, m.strand, pos, seq_len)
                if w is not None and w[2][half:half + 2] == b"GT":
                    split = split_of(blocks[m.contig], w[0], w[1])
                    if split:
                        yield 0, split, w[2]
            # decoy: a GT with the whole window inside this segment
            lo, hi = a + half, b - (seq_len - half)
            if hi <= lo:
                continue
            seg = seq[a:b] if m.strand == "+" else revcomp(seq[a:b])
            offs = [o for o in range(half, (b - a) - (seq_len - half) + 1) if seg[o:o + 2] == b"GT"]
            if not offs:
                continue
            o = int(rng.choice(offs))
            pos = a + o if m.strand == "+" else b - 1 - o
            w = _oriented(seq, m.strand, pos, seq_len)
            split = split_of(blocks[m.contig], w[0], w[1])
            if split:
                yield 1, split, w[2]


def _matched(name, labels, cand, seq_len, rng, caps, provenance) -> WindowSet:
    lab = np.array([c[0] for c in cand])
    spl = np.array([c[1] for c in cand])
    gc = np.array([gc_fraction(c[2]) for c in cand])
    seqs, ys, splits = [], [], []
    for s in ("train", "val", "test"):
        i0, i1 = np.flatnonzero((lab == 0) & (spl == s)), np.flatnonzero((lab == 1) & (spl == s))
        ia, ib = gc_matched(gc[i0], gc[i1], rng, cap=caps[s])
        for j in np.concatenate([i0[ia], i1[ib]]):
            seqs.append(cand[j][2])
            ys.append(int(lab[j]))
            splits.append(s)
    provenance["candidates"] = {labels[0]: int((lab == 0).sum()), labels[1]: int((lab == 1).sum())}
    ws = WindowSet.from_sequences(name, labels, seq_len, seqs, ys, splits, metric="auroc", provenance=provenance)
    ws.check()
    return ws


def _load(data, gff):
    genome = read_genome(Path(data) / GENOME)
    models, check = gene_models(genome, gff or DEBIAN_GFF)
    prov = {"sequence": "Debian maffilter-examples 1.3.1+dfsg-4 Umaydis.fasta.gz (= <data>/" + GENOME + ")",
            "annotation": f"{gff or DEBIAN_GFF} (MIPS gene models, maffilter-examples)", "gene_check": check}
    return genome, models, prov


def prepare_coding(data: Path, out: Path | None = None, *, seed: int = 0, gff=None, seq_len: int = 512,
                   block: int = BLOCK, caps: dict | None = None) -> WindowSet:
    """``coding_umaydis`` from ``data`` and the GFF (default: the Debian package's path)."""
    rng = np.random.default_rng(seed)
    genome, models, prov = _load(data, gff)
    prov.update({"split": f"{block:,}-bp blocks, interleaved 8:1:1", "seed": seed})
    return _matched("coding_umaydis", ["coding", "intergenic"], list(coding_candidates(genome, models, seq_len, block)),
                    seq_len, rng, caps or CAPS, prov)


def prepare_donor(data: Path, out: Path | None = None, *, seed: int = 0, gff=None, seq_len: int = 256,
                  block: int = BLOCK, caps: dict | None = None) -> WindowSet:
    """``splice_donor`` from ``data`` and the GFF (default: the Debian package's path)."""
    rng = np.random.default_rng(seed)
    genome, models, prov = _load(data, gff)
    prov.update({"split": f"{block:,}-bp blocks, interleaved 8:1:1", "seed": seed})
    return _matched("splice_donor", ["donor", "decoy"], list(donor_candidates(genome, models, seq_len, block, rng)),
                    seq_len, rng, caps or CAPS, prov)
