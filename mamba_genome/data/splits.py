"""Train/validation/test splits of a genome as lists of non-overlapping regions.

Owns :class:`Region`, :class:`SplitPlan` and :func:`make_splits`. Three ways
to split, all deterministic:

1. By contig name (``val_contigs``/``test_contigs``): whole contigs held out,
   the rest is train (like holding out chr8/chr9 in Enformer-style setups).
2. A BED file with a split column: ``chrom start end split`` as in the
   HyenaDNA / Basenji ``sequences.bed`` for hg38; the split is the 4th column,
   or the column named ``split`` in a ``#``-header line. Values: train,
   val/valid/validation, test. Zero-based, half-open; lines must not overlap.
3. Default, contig tails: the last ``test_fraction`` of every contig is test,
   the ``val_fraction`` before it is val, the rest train, so even a
   one-chromosome bacterium gets all three splits.

All-N contigs are left out of every split. Train, val and test never overlap
(checked when a plan is built).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputFileError, RegionError, UserError

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class Region:
    """A 0-based, half-open interval of one contig, assigned to one split."""

    contig: str
    start: int
    end: int
    split: str

    @property
    def length(self) -> int:
        return self.end - self.start


class SplitPlan:
    """Regions per split, plus a one-line description of how they were made."""

    def __init__(self, regions: list[Region], method: str):
        self._regions = sorted(regions, key=lambda r: (SPLITS.index(r.split), r.contig, r.start))
        self.method = method
        self._check_disjoint()

    def _check_disjoint(self) -> None:
        by_contig: dict[str, list[Region]] = {}
        for r in self._regions:
            if r.split not in SPLITS:
                raise ValueError(f"unknown split {r.split!r}")
            if r.length <= 0:
                raise ValueError(f"empty region {r}")
            by_contig.setdefault(r.contig, []).append(r)
        for regs in by_contig.values():
            regs.sort(key=lambda r: r.start)
            for a, b in zip(regs, regs[1:]):
                if b.start < a.end:
                    raise RegionError(
                        f"regions overlap: {a.contig}:{a.start}-{a.end} ({a.split}) and "
                        f"{b.contig}:{b.start}-{b.end} ({b.split}); each base may be in one split only"
                    )

    def regions(self, split: str) -> list[Region]:
        """Regions of ``split`` (``train``, ``val``/``valid``/``validation`` or ``test``)."""
        key = _SPLIT_ALIASES.get(split.lower())
        if key is None:
            raise UserError(f"unknown split '{split}'; use train, val or test")
        return [r for r in self._regions if r.split == key]

    def bp(self, split: str) -> int:
        return sum(r.length for r in self.regions(split))

    def describe(self) -> str:
        """One line: how the split was made and bp per split."""
        sizes = ", ".join(f"{s} {self.bp(s):,} bp" for s in SPLITS)
        return f"{self.method}: {sizes}"

    def to_json(self) -> str:
        return json.dumps({"method": self.method, "regions": [asdict(r) for r in self._regions]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "SplitPlan":
        d = json.loads(text)
        return cls([Region(**r) for r in d["regions"]], d["method"])

    def __repr__(self) -> str:
        return f"SplitPlan({self.describe()!r})"


def _known(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")


def _by_contig(store, val_contigs, test_contigs) -> SplitPlan:
    names = store.names
    usable = [c for c in store.contigs if not c.all_n]
    for name in (*val_contigs, *test_contigs):
        if name not in store.lengths:
            raise RegionError(f"unknown contig '{name}' for the split; known contigs: {_known(names)}")
    both = set(val_contigs) & set(test_contigs)
    if both:
        raise UserError(f"contig '{sorted(both)[0]}' is in both the val and the test contigs; pick one")
    regions = []
    for c in usable:
        split = "val" if c.name in val_contigs else "test" if c.name in test_contigs else "train"
        regions.append(Region(c.name, 0, c.length, split))
    if not any(r.split == "train" for r in regions):
        raise UserError("every contig is held out for val/test; leave at least one for training")
    held = [f"val={','.join(val_contigs)}"] if val_contigs else []
    held += [f"test={','.join(test_contigs)}"] if test_contigs else []
    return SplitPlan(regions, f"by contig ({'; '.join(held)})")


def _from_bed(store, bed) -> SplitPlan:
    path = Path(bed)
    if not path.is_file():
        raise InputFileError(f"{path}: no such BED file; check the path")
    lengths = store.lengths
    split_col = 3
    regions = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
            if not fields or not fields[0] or fields[0].startswith(("track", "browser")):
                continue
            if fields[0].startswith("#"):
                cols = [f.lstrip("#").strip().lower() for f in fields]
                if "split" in cols:
                    split_col = cols.index("split")
                continue
            where = f"{path}:{lineno}"
            if len(fields) <= max(2, split_col):
                raise InputFileError(f"{where}: expected 'chrom start end split', got {len(fields)} column(s)")
            chrom, s, e = fields[0], fields[1], fields[2]
            try:
                start, end = int(s), int(e)
            except ValueError:
                raise InputFileError(f"{where}: start/end must be integers, got '{s}' '{e}'") from None
            split = _SPLIT_ALIASES.get(fields[split_col].strip().lower())
            if split is None:
                raise InputFileError(f"{where}: split must be train, val/valid/validation or test, got '{fields[split_col]}'")
            if chrom not in lengths:
                raise InputFileError(f"{where}: contig '{chrom}' is not in the store; known contigs: {_known(store.names)}")
            if not (0 <= start < end <= lengths[chrom]):
                raise InputFileError(
                    f"{where}: region {chrom}:{start}-{end} is empty or outside the contig (length {lengths[chrom]:,}); "
                    "BED is 0-based, half-open"
                )
            regions.append(Region(chrom, start, end, split))
    if not regions:
        raise InputFileError(f"{path}: no regions found; expected lines 'chrom start end split'")
    try:
        return SplitPlan(regions, f"from BED {path.name}")
    except RegionError as exc:
        raise InputFileError(f"{path}: {exc}") from exc


def _contig_tails(store, val_fraction: float, test_fraction: float) -> SplitPlan:
    regions = []
    for c in store.contigs:
        if c.all_n:
            continue
        n_test = int(round(c.length * test_fraction))
        n_val = int(round(c.length * val_fraction))
        test_start = c.length - n_test
        val_start = test_start - n_val
        for split, s, e in (("train", 0, val_start), ("val", val_start, test_start), ("test", test_start, c.length)):
            if e > s:
                regions.append(Region(c.name, s, e, split))
    return SplitPlan(regions, f"contig tails (last {test_fraction:.0%} of each contig test, the {val_fraction:.0%} before it val)")


def make_splits(store, *, val_contigs=(), test_contigs=(), bed=None, val_fraction: float = 0.05,
                test_fraction: float = 0.05) -> SplitPlan:
    """Split a :class:`~mamba_genome.data.store.TokenStore` into train/val/test regions.

    Args:
        store: an open ``TokenStore``.
        val_contigs, test_contigs: contig names held out whole (mode 1).
        bed: a BED file ``chrom start end split`` (mode 2); excludes mode 1.
        val_fraction, test_fraction: tail fractions for the default mode 3.

    Returns:
        A :class:`SplitPlan`; ``plan.regions("train")`` etc.

    Example:
        >>> plan = make_splits(store, test_contigs=["chr8"])  # doctest: +SKIP
        >>> plan.describe()                                   # doctest: +SKIP
        'by contig (test=chr8): train 2,900,000 bp, val 0 bp, test 145,138,636 bp'
    """
    val_contigs, test_contigs = tuple(val_contigs or ()), tuple(test_contigs or ())
    if bed is not None:
        if val_contigs or test_contigs:
            raise UserError("give either a split BED file or val/test contigs, not both")
        return _from_bed(store, bed)
    if val_contigs or test_contigs:
        return _by_contig(store, val_contigs, test_contigs)
    for flag, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= v < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be in [0, 1), got {v}")
    if val_fraction + test_fraction >= 1:
        raise UserError("--val-fraction plus --test-fraction must be below 1, leaving something to train on")
    return _contig_tails(store, val_fraction, test_fraction)


__all__ = ["Region", "SplitPlan", "make_splits", "SPLITS"]
