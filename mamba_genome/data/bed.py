"""BED region files for ``embed --bed``: 0-based, half-open ``chrom start end [name [score [strand]]]``.

Owns parsing and checking region lists against a genome's contig lengths.
Follows the UCSC BED definition: ``track``/``browser`` lines, ``#`` comments
and blank lines are skipped; fields are tab-separated (runs of spaces are
accepted too); a name of ``.`` means "no name"; the score (column 5) and
columns past the sixth are ignored. The strand (column 6) is ``+``, ``-`` or
``.`` (unknown; also when the column is absent): a ``-`` region means the
reverse complement of ``contig[start:end]``, which is what ``embed`` embeds.
Every problem is one :class:`~mamba_genome.errors.UserError` naming
``file:line``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import InputFileError, RegionError


@dataclass(frozen=True)
class BedRegion:
    """One BED line: ``contig[start:end]`` (0-based, half-open), optional ``name``, source ``line``, ``strand``."""

    contig: str
    start: int
    end: int
    name: str | None = None
    line: int = 0
    strand: str = "."  # "+", "-" (the reverse complement of contig[start:end]) or "." (unknown)

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def id(self) -> str:
        """The name column, else ``contig:start-end``, plus ``(+)``/``(-)`` when stranded (as ``bedtools getfasta -s``)."""
        if self.name:
            return self.name
        return f"{self.contig}:{self.start}-{self.end}" + (f"({self.strand})" if self.strand != "." else "")


def _known(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")


def read_bed(path: str | os.PathLike, contig_lengths: Mapping[str, int] | None = None) -> list[BedRegion]:
    """Read and check a BED file.

    Args:
        path: the BED file.
        contig_lengths: ``{contig: length}`` of the genome; when given, every
            region must lie on a known contig and inside it.

    Returns:
        The regions in file order.

    Raises:
        InputFileError: missing/unreadable file, a malformed line (``file:line``), no regions.
        RegionError: start >= end (empty region), an unknown contig, end past the contig end.

    Example:
        >>> read_bed("peaks.bed", {"chr1": 248_956_422})  # doctest: +SKIP
        [BedRegion(contig='chr1', start=1000, end=2000, name='peak1', line=1, strand='.')]
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: no such BED file; check the --bed path")
    regions: list[BedRegion] = []
    try:
        fh = open(p, encoding="utf-8")
    except OSError as exc:
        raise InputFileError(f"{p}: cannot read the BED file ({exc.strerror})") from None
    with fh:
        try:
            for lineno, line in enumerate(fh, 1):
                region = _parse_line(line, f"{p}:{lineno}", lineno, contig_lengths)
                if region is not None:
                    regions.append(region)
        except UnicodeDecodeError:
            raise InputFileError(f"{p}: not a text file; expected a BED file (chrom start end [name])") from None
    if not regions:
        raise InputFileError(f"{p}: no regions found; expected tab-separated lines 'chrom start end [name]'")
    return regions


def _parse_line(line: str, where: str, lineno: int, lengths: Mapping[str, int] | None) -> BedRegion | None:
    text = line.rstrip("\r\n")
    if not text.strip() or text.startswith(("#", "track", "browser")):
        return None
    fields = text.split("\t") if "\t" in text else text.split()
    if len(fields) < 3:
        raise InputFileError(f"{where}: expected at least 3 columns 'chrom start end', got {len(fields)}: '{text[:60]}'")
    chrom, s, e = (f.strip() for f in fields[:3])
    try:
        start, end = int(s), int(e)
    except ValueError:
        raise InputFileError(f"{where}: start and end must be integers, got '{s}' and '{e}'") from None
    if start < 0:
        raise RegionError(f"{where}: start {start} is negative; BED is 0-based, half-open")
    if start >= end:
        raise RegionError(f"{where}: region {chrom}:{start}-{end} is empty (start must be < end; BED is 0-based, "
                          "half-open)")
    name = fields[3].strip() if len(fields) > 3 else ""
    strand = (fields[5].strip() if len(fields) > 5 else "") or "."
    if strand not in ("+", "-", "."):
        raise InputFileError(f"{where}: strand (column 6) must be '+', '-' or '.', got '{strand[:20]}'")
    if lengths is not None:
        if chrom not in lengths:
            raise RegionError(f"{where}: unknown contig '{chrom}'; known contigs: {_known(list(lengths))}")
        if end > lengths[chrom]:
            raise RegionError(f"{where}: region {chrom}:{start}-{end} ends past the end of '{chrom}' "
                              f"(length {lengths[chrom]:,}); BED is 0-based, half-open")
    return BedRegion(chrom, start, end, name if name not in ("", ".") else None, lineno, strand)


__all__ = ["BedRegion", "read_bed"]
