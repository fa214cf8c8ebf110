"""Labelled genomes for classification: manifests, per-class splits, class-balanced windows.

Owns how ``mamba-genome finetune`` turns "these FASTA files are species X,
these are species Y" into train/val/test windows, following the great-apes
task of Gu & Dao (2023), Sec. 4.3.4: pick a class uniformly, pick a contig
(uniformly or weighted by length), take a contiguous window from it.

Inputs
    A manifest TSV with header ``label  fasta  [split]  [contigs]`` (split is
    ``train``/``val``/``test`` or empty; relative paths are resolved against
    the manifest's directory; ``contigs`` optionally restricts the line to a
    comma-separated list of contigs, so one genome FASTA can serve several
    splits by chromosome), or ``--class LABEL=FASTA`` pairs. A label may
    have several FASTA lines. Every FASTA is ingested once into a token store
    (:func:`mamba_genome.data.store.ingest`, cached).

Splits
    A FASTA with an explicit split contributes all its contigs to that split.
    One without is split by :func:`mamba_genome.data.splits.make_splits`
    (contig tails held out: the last ``test_fraction`` of each contig is test,
    the ``val_fraction`` before it val), unless it holds many short records
    (at least ``RECORD_SPLIT_MIN_RECORDS`` records, the median shorter than
    ``RECORD_SPLIT_MAX_MEDIAN`` bp: reads, genes, 512-bp windows): those are
    held out whole, a seeded shuffle per FASTA (so per class: stratified)
    putting ``val_fraction`` of the records in val and ``test_fraction`` in
    test, so a record never straddles two splits and keeps its full length.
    A class that has train data but no val data gets val windows carved from
    the tails of its train regions.

Windows
    :class:`BalancedWindowDataset` draws fresh training windows every epoch
    (item = pure function of ``(seed, epoch, index)``, so DataLoader workers
    and DDP ranks agree); :class:`FixedWindowDataset` holds deterministic,
    non-overlapping val/test windows inside the held-out regions, hence
    disjoint from every training window.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import InputFileError, UserError
from .splits import Region, make_splits
from .store import TokenStore, ingest, is_store
from .tokenizer import N, PAD
from .windows import draw_window, evenly_spaced, region_table, tile_starts

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "": None}
RECORD_SPLIT_MIN_RECORDS = 20  # a FASTA with at least this many records ...
RECORD_SPLIT_MAX_MEDIAN = 10_000  # ... whose median record is shorter than this is split by whole records


# ---------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class ClassSource:
    """One FASTA (or token store) of one class, optionally pinned to a split."""

    label: str
    fasta: Path
    split: str | None = None  # None: held-out contig tails
    where: str = ""  # "manifest.tsv:3" or "--class", for error messages
    contigs: tuple[str, ...] | None = None  # only these contigs of the FASTA (None: all)


def parse_manifest(path: str | os.PathLike) -> list[ClassSource]:
    """Read a manifest TSV ``label  fasta  [split]`` (header required).

    Raises:
        InputFileError: missing file, missing header columns, an empty label
            or path, an unknown split value, a FASTA that does not exist (the
            message names the manifest line).
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such manifest file; check --manifest")
    base = path.resolve().parent
    sources: list[ClassSource] = []
    with open(path, newline="") as fh:
        rows = [(i, line.rstrip("\r\n")) for i, line in enumerate(fh, 1)]
    rows = [(i, line) for i, line in rows if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        raise InputFileError(f"{path}: manifest is empty; expected a header 'label<TAB>fasta[<TAB>split]' and one line per FASTA")
    header_line, header = rows[0][0], [c.strip().lower() for c in rows[0][1].split("\t")]
    if "label" not in header or "fasta" not in header:
        raise InputFileError(
            f"{path}:{header_line}: header must name the tab-separated columns 'label' and 'fasta' "
            f"(and optionally 'split'), got {rows[0][1]!r}")
    i_label, i_fasta = header.index("label"), header.index("fasta")
    i_split = header.index("split") if "split" in header else None
    i_contigs = header.index("contigs") if "contigs" in header else None
    for lineno, line in rows[1:]:
        fields = [f.strip() for f in line.split("\t")]
        where = f"{path}:{lineno}"
        need = max(i_label, i_fasta) + 1
        if len(fields) < need:
            raise InputFileError(f"{where}: expected tab-separated 'label<TAB>fasta[<TAB>split]', got {len(fields)} column(s)")
        label, fasta = fields[i_label], fields[i_fasta]
        if not label:
            raise InputFileError(f"{where}: empty label")
        if not fasta:
            raise InputFileError(f"{where}: empty FASTA path for class '{label}'")
        raw_split = fields[i_split] if i_split is not None and i_split < len(fields) else ""
        if raw_split.lower() not in _SPLIT_ALIASES:
            raise InputFileError(f"{where}: split must be train, val or test (or empty), got '{raw_split}'")
        p = Path(os.path.expanduser(fasta))
        p = p if p.is_absolute() else base / p
        if not p.exists():
            raise InputFileError(f"{where}: FASTA {p} for class '{label}' does not exist")
        raw_contigs = fields[i_contigs] if i_contigs is not None and i_contigs < len(fields) else ""
        contigs = tuple(c.strip() for c in raw_contigs.split(",") if c.strip()) or None
        sources.append(ClassSource(label, p, _SPLIT_ALIASES[raw_split.lower()], where, contigs))
    if not sources:
        raise InputFileError(f"{path}: manifest has a header but no classes")
    _check_class_count(sources, str(path))
    return sources


def parse_class_pairs(pairs) -> list[ClassSource]:
    """``["human=hg38.fa.gz", "chimp=panTro6.fa.gz"]`` -> sources (split from contig tails)."""
    sources = []
    for pair in pairs:
        label, sep, fasta = str(pair).partition("=")
        label, fasta = label.strip(), fasta.strip()
        if not sep or not label or not fasta:
            raise UserError(f"--class expects LABEL=FASTA, got '{pair}'")
        p = Path(os.path.expanduser(fasta))
        if not p.exists():
            raise InputFileError(f"--class {label}={fasta}: no such file; check the path")
        sources.append(ClassSource(label, p, None, f"--class {label}"))
    _check_class_count(sources, "--class")
    return sources


def _check_class_count(sources, where: str) -> None:
    labels = {s.label for s in sources}
    if len(labels) < 2:
        raise UserError(f"{where}: classification needs at least 2 classes, got {len(labels)} ({', '.join(sorted(labels))})")


# ------------------------------------------------------------------------------ task


@dataclass(frozen=True)
class LabelledRegion(Region):
    """A :class:`Region` of one class's token store (0-based, half-open)."""

    label: int = field(kw_only=True)  # index into ClassificationTask.labels
    store: str = field(kw_only=True)  # token store directory


@dataclass
class ClassificationTask:
    """Classes, their stores and their train/val/test regions."""

    labels: list[str]
    regions: list[LabelledRegion]
    methods: dict[str, str]  # label -> how its split was made

    def split_regions(self, split: str, label: int | None = None) -> list[LabelledRegion]:
        return [r for r in self.regions if r.split == split and (label is None or r.label == label)]

    def bases(self, split: str, label: int) -> int:
        return sum(r.length for r in self.split_regions(split, label))

    def describe_rows(self) -> list[dict]:
        """Rows for the split table printed before training."""
        rows = []
        for k, name in enumerate(self.labels):
            rows.append({"label": name, **{f"{s} bp": f"{self.bases(s, k):,}" for s in SPLITS},
                         "split": self.methods[name]})
        return rows

    def whole_records(self, seq_len: int) -> bool:
        """Whether records shorter than ``seq_len`` are trained and scored whole (padded): when a FASTA
        was split by whole records, or a class's regions in a split are many short records
        (:func:`splits_by_record`) some shorter than ``seq_len``. Contigs too short for a window stay an error."""
        if any("whole records" in m for m in self.methods.values()):
            return True
        for k in range(len(self.labels)):
            for split in SPLITS:
                regs = self.split_regions(split, k)
                if splits_by_record(regs) and min(r.length for r in regs) < seq_len:
                    return True
        return False

    def check_windows(self, seq_len: int, splits=SPLITS, whole_records: bool = False) -> None:
        """Raise ``UserError`` if a class has no region of at least ``seq_len`` in a split (with
        ``whole_records``: no region at all)."""
        for k, name in enumerate(self.labels):
            for split in splits:
                regs = self.split_regions(split, k)
                longest = max((r.length for r in regs), default=0)
                if longest < (1 if whole_records else seq_len):
                    raise UserError(
                        f"class '{name}' has no usable {split} window of {seq_len:,} bp (longest {split} region "
                        f"{longest:,} bp); use a smaller --seq-len or give it more sequence")

    def to_dict(self) -> dict:
        return {"labels": self.labels, "methods": self.methods, "regions": [asdict(r) for r in self.regions]}

    @classmethod
    def from_dict(cls, d: dict) -> "ClassificationTask":
        return cls(list(d["labels"]), [LabelledRegion(**r) for r in d["regions"]], dict(d["methods"]))


def build_task(sources: list[ClassSource], *, val_fraction: float = 0.1, test_fraction: float = 0.1,
               store_dir: str | os.PathLike | None = None, progress: bool = True, seed: int = 0) -> ClassificationTask:
    """Ingest every FASTA and split each class into train/val/test regions.

    Args:
        sources: from :func:`parse_manifest` or :func:`parse_class_pairs`.
        val_fraction, test_fraction: tail fractions (or, for many short records, record
            fractions: see :func:`record_split`) for FASTAs without an explicit split.
        store_dir: where token stores go (default: beside each FASTA, or the cache).
        progress: tqdm bars while ingesting.
        seed: shuffles the records of a FASTA split by whole records.

    Raises:
        UserError: a class with no train or no test data; InputFileError for bad FASTA.
    """
    labels: list[str] = []
    for s in sources:
        if s.label not in labels:
            labels.append(s.label)
    regions: list[LabelledRegion] = []
    methods: dict[str, list[str]] = {name: [] for name in labels}
    stores: dict[Path, TokenStore] = {}
    for s in sources:
        k = labels.index(s.label)
        store = stores.get(s.fasta)
        if store is None:
            store = stores[s.fasta] = _open_store(s, store_dir, progress)
        usable = [c for c in store.contigs if not c.all_n]
        if s.contigs is not None:
            unknown = sorted(set(s.contigs) - set(store.names))
            if unknown:
                raise InputFileError(f"{s.where}: contig '{unknown[0]}' is not in {s.fasta.name} "
                                     f"(it has {', '.join(store.names[:5])}{', ...' if len(store.names) > 5 else ''})")
            usable = [c for c in usable if c.name in set(s.contigs)]
        if not usable:
            raise UserError(f"{s.where}: {s.fasta} has only all-N contigs; class '{s.label}' has no usable sequence")
        if s.split is not None:
            regions += [LabelledRegion(c.name, 0, c.length, s.split, label=k, store=str(store.path)) for c in usable]
            what = f"{len(usable)} contig(s)" if s.contigs is not None else "all"
            methods[s.label].append(f"{s.fasta.name}: {what} {s.split}")
        elif splits_by_record(usable):
            assigned = record_split([c.name for c in usable], val_fraction, test_fraction,
                                    seed=[seed, len(methods[s.label]), k])
            regions += [LabelledRegion(c.name, 0, c.length, assigned[c.name], label=k, store=str(store.path))
                        for c in usable]
            n = {sp: sum(v == sp for v in assigned.values()) for sp in SPLITS}
            methods[s.label].append(f"{s.fasta.name}: whole records ({n['train']} train, {n['val']} val, "
                                    f"{n['test']} test)")
        else:
            plan = make_splits(store, val_fraction=val_fraction, test_fraction=test_fraction)
            keep = {c.name for c in usable}
            for split in SPLITS:
                regions += [LabelledRegion(r.contig, r.start, r.end, split, label=k, store=str(store.path))
                            for r in plan.regions(split) if r.contig in keep]
            methods[s.label].append(f"{s.fasta.name}: tails (val {val_fraction:.0%}, test {test_fraction:.0%})")
    for k, name in enumerate(labels):
        mine = [r for r in regions if r.label == k]
        if not any(r.split == "train" for r in mine):
            raise UserError(f"class '{name}' has no train data: give it a FASTA with split 'train' or an empty split")
        if not any(r.split == "test" for r in mine):
            raise UserError(f"class '{name}' has no test data: give it a FASTA with split 'test' or an empty split")
        if not any(r.split == "val" for r in mine):
            regions = _carve_val(regions, k, max(val_fraction, 0.05))
            methods[name].append(f"val carved from the last {max(val_fraction, 0.05):.0%} of train regions")
    return ClassificationTask(labels, regions, {k: "; ".join(v) for k, v in methods.items()})


def splits_by_record(contigs) -> bool:
    """Whether a FASTA's usable records are many and short enough to be held out whole."""
    if len(contigs) < RECORD_SPLIT_MIN_RECORDS:
        return False
    return float(np.median([c.length for c in contigs])) < RECORD_SPLIT_MAX_MEDIAN


def record_split(names: list[str], val_fraction: float, test_fraction: float, seed=0) -> dict[str, str]:
    """Assign whole records to splits: a seeded shuffle, ``round(fraction * n)`` (at least 1) to val and test.

    Example:
        >>> a = record_split([f"r{i}" for i in range(20)], 0.1, 0.2, seed=0)
        >>> sorted(list(a.values()).count(s) for s in ("train", "val", "test"))
        [2, 4, 14]
    """
    n = len(names)
    n_val = max(1, int(round(val_fraction * n)))
    n_test = max(1, int(round(test_fraction * n)))
    if n_val + n_test >= n:
        raise UserError(f"{n} records are too few to hold out {n_val} for val and {n_test} for test whole")
    order = np.random.default_rng(seed).permutation(n)
    out = {}
    for rank, i in enumerate(order):
        out[names[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def _open_store(s: ClassSource, store_dir, progress: bool) -> TokenStore:
    if is_store(s.fasta):
        return TokenStore.open(s.fasta)
    out = None
    if store_dir is not None:
        from .fasta import cache_key

        out = Path(store_dir) / f"{cache_key(s.fasta)}-{s.fasta.name.split('.')[0]}.mgstore"
    return ingest(s.fasta, out, progress=progress)


def _carve_val(regions: list[LabelledRegion], label: int, fraction: float) -> list[LabelledRegion]:
    out = []
    for r in regions:
        n_val = int(r.length * fraction)
        if r.label == label and r.split == "train" and n_val > 0:
            cut = r.end - n_val
            out += [replace(r, end=cut), replace(r, start=cut, split="val")]
        else:
            out.append(r)
    return out


# -------------------------------------------------------------------------- datasets


class _StoreCache:
    """Token stores opened lazily, once per process (DataLoader workers reopen them)."""

    def __init__(self):
        self._stores: dict[str, TokenStore] = {}
        self._pid = None

    def tokens(self, store: str, contig: str) -> np.ndarray:
        if self._pid != os.getpid():
            self._stores, self._pid = {}, os.getpid()
        st = self._stores.get(store)
        if st is None:
            st = self._stores[store] = TokenStore.open(store)
        return st.tokens(contig)

    def __getstate__(self):
        return {"_stores": {}, "_pid": None}


class BalancedWindowDataset(Dataset):
    """Class-balanced random training windows, fresh each epoch.

    Item ``(epoch, seq_len, i)`` (as yielded by :class:`EpochSampler`; a plain
    int ``i`` uses :attr:`epoch` and :attr:`seq_len`) is a pure function of
    ``(seed, epoch, i)``: a class uniformly at random, a region of that class
    (weighted by its number of window positions, or uniformly), a window
    inside it; windows more than ``max_n_fraction`` N are redrawn; the window
    is reverse-complemented with probability ``rc_prob`` (the windows core,
    :func:`mamba_genome.data.windows.draw_window`, shared with pretraining).

    With ``whole_records``, a region shorter than the window is one item of its own (weight 1,
    as a region exactly one window long), its bases first and PAD after them; ``length`` says
    how many are real, so the classifier pools over those only.

    Returns (per item): ``{"input_ids": LongTensor [L], "label": LongTensor [], "length": LongTensor []}``.
    """

    def __init__(self, regions: list[LabelledRegion], num_classes: int, seq_len: int, *, samples_per_epoch: int,
                 weighting: str = "length", rc_prob: float = 0.5, max_n_fraction: float = 0.1, seed: int = 0,
                 whole_records: bool = False):
        if weighting not in ("length", "uniform"):
            raise UserError(f"--contig-weighting must be 'length' or 'uniform', got '{weighting}'")
        self.all_regions = list(regions)
        self.num_classes = int(num_classes)
        self.samples_per_epoch = int(samples_per_epoch)
        self.weighting = weighting
        self.rc_prob = float(rc_prob)
        self.max_n_fraction = float(max_n_fraction)
        self.seed = int(seed)
        self.whole_records = bool(whole_records)
        self.epoch = 0
        self._stores = _StoreCache()
        self._tables: dict[int, list] = {}
        self.set_seq_len(seq_len)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_seq_len(self, seq_len: int) -> None:
        self.seq_len = int(seq_len)
        self._table(self.seq_len)

    def _table(self, L: int) -> list:
        """Per class: (regions with room for a window of L, cumulative weights)."""
        if L not in self._tables:
            table = []
            for k in range(self.num_classes):
                regs, cum = region_table([r for r in self.all_regions if r.label == k], L, weighting=self.weighting,
                                         whole_records=self.whole_records)
                if not regs:
                    raise UserError(f"class {k} has no training region of at least {L:,} bp; use a smaller --seq-len")
                table.append((regs, cum))
            self._tables[L] = table
        return self._tables[L]

    def __len__(self) -> int:
        return self.samples_per_epoch

    def label_of(self, epoch: int, i: int) -> int:
        """The class of item ``i`` of ``epoch`` (the first draw, whatever the window length)."""
        return int(np.random.default_rng([self.seed, int(epoch), int(i)]).integers(self.num_classes))

    def window(self, epoch: int, seq_len: int, i: int) -> tuple[int, str, str, int, np.ndarray]:
        """(label, store, contig, start, tokens) of item ``i`` of ``epoch`` at ``seq_len`` (the real
        bases only: a whole record shorter than ``seq_len`` is not padded here)."""
        rng = np.random.default_rng([self.seed, int(epoch), int(i)])
        k = int(rng.integers(self.num_classes))
        regs, cum = self._table(seq_len)[k]
        r, start, tokens = draw_window(rng, regs, cum, seq_len, lambda r: self._stores.tokens(r.store, r.contig),
                                       max_n_fraction=self.max_n_fraction, rc_prob=self.rc_prob)
        return k, r.store, r.contig, start, tokens

    def __getitem__(self, key) -> dict:
        epoch, seq_len, i = key if isinstance(key, tuple) else (self.epoch, self.seq_len, key)
        k, _, _, _, tokens = self.window(epoch, seq_len, i)
        return {"input_ids": torch.from_numpy(pad_to(tokens, seq_len)), "label": torch.tensor(k),
                "length": torch.tensor(len(tokens))}


def pad_to(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """``tokens`` followed by PAD up to ``seq_len`` (a whole record shorter than the window)."""
    if len(tokens) >= seq_len:
        return tokens
    out = np.full(seq_len, PAD, dtype=np.int64)
    out[: len(tokens)] = tokens
    return out


class EpochSampler(Sampler):
    """Yields ``(epoch, seq_len, i)`` keys; Lightning calls :meth:`set_epoch` before each epoch.

    ``seq_len_for_epoch(epoch)`` implements sequence-length warmup. With
    ``world > 1`` each rank takes every ``world``-th index (no wrapper needed).
    :meth:`resume_at` makes one epoch start part-way (``--resume``); ``len()``
    stays the whole epoch's, as Lightning counts the resumed epoch's batches
    from where it stopped.
    """

    def __init__(self, n: int, seq_len_for_epoch, rank: int = 0, world: int = 1):
        self.n, self.seq_len_for_epoch, self.rank, self.world = int(n), seq_len_for_epoch, int(rank), int(world)
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, position: int) -> None:
        """Epoch ``epoch`` starts at this rank's item ``position`` (the items before were trained on)."""
        self._resume = (int(epoch), int(position))

    def __iter__(self):
        L = int(self.seq_len_for_epoch(self.epoch))
        keys = [(self.epoch, L, i) for i in range(self.rank, self.n, self.world)]
        if self._resume is not None and self._resume[0] == self.epoch:
            keys = keys[self._resume[1]:]
            self._resume = None
        return iter(keys)

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


class FixedWindowDataset(Dataset):
    """Deterministic val/test windows: up to ``per_class`` non-overlapping tiles per class.

    Each class's held-out regions are tiled with non-overlapping windows of
    ``seq_len`` (tiles more than ``max_n_fraction`` N are skipped); an evenly
    spaced subset of ``per_class`` tiles is kept. Windows lie inside held-out
    regions, so they never overlap training data. With ``whole_records`` a region
    shorter than ``seq_len`` is one window of its own, padded (``lengths`` holds the
    real lengths).

    Returns (per item): ``{"input_ids": LongTensor [L], "label": LongTensor [], "length": LongTensor [],
    "index": int}``.
    """

    def __init__(self, regions: list[LabelledRegion], num_classes: int, seq_len: int, *, per_class: int,
                 max_n_fraction: float = 0.5, whole_records: bool = False):
        if per_class < 1:
            raise UserError(f"windows per class must be at least 1, got {per_class}")
        self.seq_len = int(seq_len)
        self._stores = _StoreCache()
        windows = []  # (label, store, contig, start, length)
        for k in range(num_classes):
            tiles = []
            for r in (r for r in regions if r.label == k):
                toks = self._stores.tokens(r.store, r.contig)
                if whole_records and 0 < r.length < self.seq_len:
                    n_count = np.count_nonzero(np.asarray(toks[r.start: r.end]) == N)
                    if n_count <= max_n_fraction * r.length:
                        tiles.append((k, r.store, r.contig, r.start, r.length))
                    continue
                tiles += [(k, r.store, r.contig, int(st), self.seq_len)
                          for st in tile_starts(toks, r.start, r.length, self.seq_len, max_n_fraction)]
            if not tiles:
                raise UserError(f"class {k} has no held-out window of {self.seq_len:,} bp that is mostly bases")
            windows += [tiles[j] for j in evenly_spaced(len(tiles), per_class)]
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def tokens(self, i: int) -> np.ndarray:
        """The real bases of window ``i`` (not padded)."""
        _, store, contig, start, length = self.windows[i]
        return np.asarray(self._stores.tokens(store, contig)[start : start + length], dtype=np.int64)

    @property
    def lengths(self) -> list[int]:
        return [w[4] for w in self.windows]

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": torch.from_numpy(pad_to(self.tokens(i), self.seq_len)),
                "label": torch.tensor(self.windows[i][0]), "length": torch.tensor(self.windows[i][4]), "index": i}

    @property
    def labels(self) -> np.ndarray:
        return np.array([w[0] for w in self.windows], dtype=np.int64)

    def to_rows(self, label_names: list[str]) -> list[dict]:
        return [{"label": label_names[k], "store": s, "contig": c, "start": st, "end": st + n}
                for k, s, c, st, n in self.windows]


def write_split_json(path: str | os.PathLike, task: ClassificationTask, extra: dict) -> None:
    """Atomically write ``split.json``: classes, regions per split, eval windows, seeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({**task.to_dict(), **extra}, indent=1) + "\n")
    os.replace(tmp, path)


def write_manifest(path: str | os.PathLike, rows: list[tuple]) -> None:
    """Write a manifest TSV atomically; rows are ``(label, fasta, split)`` or ``(label, fasta, split, contigs)``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["label", "fasta", "split", "contigs"][: max((len(r) for r in rows), default=3)])
        w.writerows(rows)
    os.replace(tmp, path)


__all__ = [
    "ClassSource", "parse_manifest", "parse_class_pairs", "LabelledRegion", "ClassificationTask", "build_task",
    "BalancedWindowDataset", "EpochSampler", "FixedWindowDataset", "write_split_json", "write_manifest", "SPLITS",
    "record_split", "splits_by_record",
]
