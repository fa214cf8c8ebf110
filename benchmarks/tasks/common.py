"""Shared pieces of the labelled-task suite: genomes, block splits, window sets, GC matching, files.

Every task builds a :class:`WindowSet`: fixed-length windows (token ids of
:mod:`mamba_genome.data.tokenizer`, ``uint8 [n, L]``), an integer label and a
split (``train``/``val``/``test``) per window, plus provenance. Splits are made
on the genome *before* windows are cut (:func:`block_splits`): each contig is cut
into blocks that are assigned to splits in an interleaved pattern, and a window
lies wholly inside one block, so no two windows of different splits share a base.

On disk (:meth:`WindowSet.save`), ``<out>/<task>/``::

    windows.npz      tokens uint8 [n, L], labels int64 [n], split str [n], gc float32 [n]
    meta.json        labels, seq_len, metric, provenance, statistics
    fasta/<label>.<split>.fa  one record per window (for `mamba-genome finetune --manifest`;
    manifest.tsv     label, fasta, split                written by the finetune stage when missing)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mamba_genome.data.fasta import iter_fasta_records
from mamba_genome.data.tokenizer import A, C, G, N, T, encode
from mamba_genome.errors import UserError

SPLITS = ("train", "val", "test")
DEFAULT_DATA = Path("/work/shared/data")
# The genomes as Debian installs them (``apt-get install ragout-examples maffilter-examples``):
# the layout ``--data`` expects -> the packaged file (the same bytes as the copies in DEFAULT_DATA).
DEBIAN_ROOT = Path("/usr/share/doc")
_RAGOUT = "ragout/examples/{}/references/{}.fasta.gz"
DEBIAN_GENOMES = {
    "ecoli/MG1655-K12.fa.gz": _RAGOUT.format("E.Coli", "MG1655-K12"),
    "ecoli/DH1.fa.gz": _RAGOUT.format("E.Coli", "DH1"),
    **{f"saureus/{s}.fa.gz": _RAGOUT.format("S.Aureus", s) for s in ("COL", "JKD6008", "N315", "RF122", "USA300_FPR3757")},
    **{f"vcholerae/{s}.fa.gz": _RAGOUT.format("V.Cholerae", s) for s in ("H1", "O1_Inaba", "O1_biovar", "O395")},
    "umaydis/Umaydis.fa.gz": "maffilter/examples/Umaydis/Umaydis.fasta.gz",
}
DEBIAN_PACKAGES = "ragout-examples maffilter-examples"


def resolve_data(data: str | os.PathLike, out: str | os.PathLike, root: Path | None = None) -> Path:
    """The genome folder for ``prepare``: ``data`` itself, or with ``data == "debian"`` (or the
    default folder missing) a folder ``<out>/_data`` of links to the Debian packages' files.

    Raises UserError naming the packages to install when neither is there."""
    root = DEBIAN_ROOT if root is None else Path(root)
    if str(data) != "debian" and (Path(data).is_dir() or Path(data) != DEFAULT_DATA):
        return Path(data)
    missing = [rel for rel in DEBIAN_GENOMES.values() if not (root / rel).is_file()]
    if missing:
        raise UserError(f"{root / missing[0]} is missing ({len(missing)} of {len(DEBIAN_GENOMES)} genomes): "
                        f"`apt-get install {DEBIAN_PACKAGES}`, or pass --data DIR with ecoli/, saureus/, vcholerae/, "
                        "umaydis/")
    dest = Path(out) / "_data"
    for rel, src in DEBIAN_GENOMES.items():
        link = dest / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(root / src)
    return dest
# 10 blocks form one period: 8 train, 1 val, 1 test, interleaved along the contig.
PATTERN = ("train", "train", "train", "train", "val", "train", "train", "train", "train", "test")


def read_genome(path: str | os.PathLike) -> dict[str, bytes]:
    """FASTA (plain or gzip) -> ``{record name: upper-case bytes}``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such FASTA; check --data (the folder holding ecoli/, saureus/, ...)")
    out = {}
    for name, seq in iter_fasta_records(path):
        seq = seq if isinstance(seq, bytes) else seq.encode()
        out[name] = seq.upper()
    return out


def block_splits(length: int, block: int, offset: int = 0) -> list[tuple[int, int, str]]:
    """Cut ``[0, length)`` into blocks of ``block`` bp assigned by :data:`PATTERN` (rotated by ``offset``).

    Returns ``(start, end, split)`` half-open intervals covering the contig; the last one may be short.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    out = []
    for i, s in enumerate(range(0, length, block)):
        out.append((s, min(length, s + block), PATTERN[(i + offset) % len(PATTERN)]))
    return out


def genome_blocks(genome: dict[str, bytes], block: int) -> dict[str, list[tuple[int, int, str]]]:
    """:func:`block_splits` of every contig, the pattern running on across contigs (in file order).

    So a genome of many short contigs still gets val and test blocks in the 8:1:1 proportion.
    """
    out, offset = {}, 0
    for contig, seq in genome.items():
        out[contig] = block_splits(len(seq), block, offset)
        offset += len(out[contig])
    return out


def split_of(blocks: list[tuple[int, int, str]], start: int, end: int) -> str | None:
    """The split of the block holding ``[start, end)`` wholly, or ``None`` if it crosses a block edge."""
    lo = 0
    hi = len(blocks)
    while lo < hi:  # first block with end > start
        mid = (lo + hi) // 2
        if blocks[mid][1] <= start:
            lo = mid + 1
        else:
            hi = mid
    if lo == len(blocks):
        return None
    s, e, split = blocks[lo]
    return split if s <= start and end <= e else None


def gc_fraction(seq: bytes) -> float:
    """G+C over A+C+G+T of a byte string (0.5 when it has no bases)."""
    a = np.frombuffer(seq, dtype=np.uint8)
    gc = np.count_nonzero((a == 71) | (a == 67))
    at = np.count_nonzero((a == 65) | (a == 84))
    return gc / (gc + at) if gc + at else 0.5


def revcomp(seq: bytes) -> bytes:
    return seq[::-1].translate(bytes.maketrans(b"ACGTN", b"TGCAN"))


def gc_matched(gc_a: np.ndarray, gc_b: np.ndarray, rng: np.random.Generator, bins: int = 20,
               cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``a`` and ``b`` with equal counts in every GC bin (at most ``cap`` pairs in total).

    Within a bin the larger side is subsampled at random, so both classes end with the same GC histogram.
    """
    edges = np.linspace(0, 1, bins + 1)
    ba = np.clip(np.digitize(gc_a, edges) - 1, 0, bins - 1)
    bb = np.clip(np.digitize(gc_b, edges) - 1, 0, bins - 1)
    ia, ib = [], []
    for k in range(bins):
        xa, xb = np.flatnonzero(ba == k), np.flatnonzero(bb == k)
        m = min(len(xa), len(xb))
        if m:
            ia.append(rng.choice(xa, m, replace=False))
            ib.append(rng.choice(xb, m, replace=False))
    ia = np.concatenate(ia) if ia else np.zeros(0, np.int64)
    ib = np.concatenate(ib) if ib else np.zeros(0, np.int64)
    if cap is not None and len(ia) > cap:
        keep = rng.choice(len(ia), cap, replace=False)
        ia, ib = ia[keep], ib[keep]
    return np.sort(ia), np.sort(ib)


@dataclass
class WindowSet:
    """Fixed-length labelled windows of one task, with their split and provenance."""

    name: str
    labels: list[str]
    seq_len: int
    tokens: np.ndarray  # uint8 [n, L]
    y: np.ndarray  # int64 [n]
    split: np.ndarray  # str [n]
    metric: str = "accuracy"  # headline metric: "accuracy" or "auroc" (binary)
    provenance: dict = field(default_factory=dict)
    gc: np.ndarray | None = None  # float32 [n]

    def __post_init__(self):
        self.tokens = np.asarray(self.tokens, dtype=np.uint8)
        self.y = np.asarray(self.y, dtype=np.int64)
        self.split = np.asarray(self.split).astype(str)
        if self.tokens.ndim != 2 or self.tokens.shape[1] != self.seq_len:
            raise ValueError(f"{self.name}: tokens must be [n, {self.seq_len}], got {self.tokens.shape}")
        if not len(self.tokens) == len(self.y) == len(self.split):
            raise ValueError(f"{self.name}: tokens, labels and splits differ in length")
        if self.gc is None:
            t = self.tokens
            gc = np.count_nonzero((t == C) | (t == G), axis=1)
            acgt = np.count_nonzero((t >= A) & (t <= T), axis=1)
            self.gc = (gc / np.maximum(acgt, 1)).astype(np.float32)

    @classmethod
    def from_sequences(cls, name, labels, seq_len, seqs: list[bytes], y, split, **kw) -> "WindowSet":
        for s in seqs:
            if len(s) != seq_len:
                raise ValueError(f"{name}: window of {len(s)} bp, expected {seq_len}")
        toks = np.stack([encode(s) for s in seqs]).astype(np.uint8) if seqs else np.zeros((0, seq_len), np.uint8)
        return cls(name, list(labels), seq_len, toks, y, split, **kw)

    def part(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        m = self.split == split
        return self.tokens[m], self.y[m]

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {lab: int(np.count_nonzero((self.split == s) & (self.y == k))) for k, lab in enumerate(self.labels)}
                for s in SPLITS}

    def stats(self) -> dict:
        """Windows per split and class, mean GC per class and split, N fraction."""
        out = {"seq_len": self.seq_len, "windows": self.counts(), "mean_gc": {}}
        for s in SPLITS:
            out["mean_gc"][s] = {lab: round(float(self.gc[(self.split == s) & (self.y == k)].mean()), 4)
                                 if np.any((self.split == s) & (self.y == k)) else None
                                 for k, lab in enumerate(self.labels)}
        out["n_fraction"] = round(float(np.count_nonzero(self.tokens == N) / max(self.tokens.size, 1)), 5)
        return out

    def check(self) -> None:
        """Every class in every split; raises ``UserError`` otherwise."""
        for s, per in self.counts().items():
            empty = [lab for lab, n in per.items() if n == 0]
            if empty:
                raise UserError(f"task {self.name}: no {s} windows for class {empty[0]}; give it more sequence")

    def describe(self) -> str:
        st = self.stats()
        lines = [f"{self.name}: {len(self.labels)} classes, {len(self.y):,} windows of {self.seq_len:,} bp, "
                 f"metric {self.metric}"]
        for s in SPLITS:
            cells = ", ".join(f"{lab} {st['windows'][s][lab]:,} (GC {st['mean_gc'][s][lab]})" for lab in self.labels)
            lines.append(f"  {s:5s}: {cells}")
        return "\n".join(lines)

    def save(self, out: str | os.PathLike) -> Path:
        """Write ``<out>/<name>/windows.npz`` and ``meta.json`` (FASTA: :meth:`write_fasta`, on demand)."""
        d = Path(out) / self.name
        d.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(d / "windows.npz", tokens=self.tokens, labels=self.y, split=self.split, gc=self.gc)
        meta = {"name": self.name, "labels": self.labels, "seq_len": self.seq_len, "metric": self.metric,
                "provenance": self.provenance, "stats": self.stats()}
        (d / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        return d

    def write_fasta(self, d: str | os.PathLike) -> Path:
        """One record per window in ``<d>/fasta/<label>.<split>.fa`` and ``<d>/manifest.tsv``; returns the manifest.

        Record ``<label>_<split>_<j>`` is window ``j`` of this set.
        """
        d = Path(d)
        (d / "fasta").mkdir(parents=True, exist_ok=True)
        alphabet = np.frombuffer(b"-----ACGTN", dtype=np.uint8)
        rows = ["label\tfasta\tsplit"]
        for k, lab in enumerate(self.labels):
            for s in SPLITS:
                idx = np.flatnonzero((self.split == s) & (self.y == k))
                path = d / "fasta" / f"{lab}.{s}.fa"
                with open(path, "wb") as fh:
                    for j in idx:
                        fh.write(b">%s_%s_%d\n%s\n" % (lab.encode(), s.encode(), j, alphabet[self.tokens[j]].tobytes()))
                rows.append(f"{lab}\tfasta/{lab}.{s}.fa\t{s}")
        (d / "manifest.tsv").write_text("\n".join(rows) + "\n")
        return d / "manifest.tsv"

    @classmethod
    def load(cls, d: str | os.PathLike) -> "WindowSet":
        d = Path(d)
        if not (d / "windows.npz").is_file():
            raise UserError(f"{d}: no windows.npz; run `python -m benchmarks.tasks prepare` first")
        meta = json.loads((d / "meta.json").read_text())
        z = np.load(d / "windows.npz")
        return cls(meta["name"], meta["labels"], meta["seq_len"], z["tokens"], z["labels"], z["split"],
                   metric=meta["metric"], provenance=meta["provenance"], gc=z["gc"])



def gc_matched_by_split(cand: list, rng: np.random.Generator) -> tuple[list[str], list[int], list[str], dict]:
    """GC-matched pairs of the two classes within each split.

    ``cand``: ``(label 0/1, split, sequence)`` triples. Returns the kept sequences, labels and splits
    (train, then val, then test; within a split label 0 then label 1) and the pairs kept per split.
    """
    lab = np.array([c[0] for c in cand])
    spl = np.array([c[1] for c in cand])
    gc = np.array([gc_fraction(c[2]) for c in cand])
    seqs, ys, splits, kept = [], [], [], {}
    for s in ("train", "val", "test"):
        a, b = np.flatnonzero((lab == 0) & (spl == s)), np.flatnonzero((lab == 1) & (spl == s))
        ia, ib = gc_matched(gc[a], gc[b], rng)
        for j in np.concatenate([a[ia], b[ib]]):
            seqs.append(cand[j][2])
            ys.append(cand[j][0])
            splits.append(s)
        kept[s] = int(len(ia))
    return seqs, ys, splits, kept


def subsample_per_class(y: np.ndarray, split: np.ndarray, per_split: dict[str, int], rng) -> np.ndarray:
    """Indices keeping at most ``per_split[s]`` windows of each class in split ``s`` (equal counts per class).

    Within a split every class is cut to the size of the smallest class, so splits are class-balanced.
    """
    keep = []
    for s, cap in per_split.items():
        groups = [np.flatnonzero((split == s) & (y == k)) for k in np.unique(y)]
        m = min([cap] + [len(g) for g in groups])
        for g in groups:
            keep.append(np.sort(rng.choice(g, m, replace=False)))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
