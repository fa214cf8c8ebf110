"""VCF input and output for variant scoring, through pysam (htslib).

Owns reading a VCF/BCF (plain, bgzip or gzip) as chunks of alleles, and writing the two
outputs of ``score --vcf``: a TSV with one row per ALT allele, and an annotated VCF.

Why pysam: it is the samtools/htslib project's own binding, reads VCF, VCF.gz and BCF and
writes bgzipped VCF through the same htslib, has manylinux wheels with no Python
dependencies (pysam 0.24.1: a 4.0 MB wheel for CPython 3.11; cyvcf2 0.35 is 5.2 MB plus
coloredlogs/humanfriendly), and its records can be re-headered (``translate``) and written
back with new INFO and FILTER values, which the annotated VCF needs.

Reading: multi-allelic records are split into one row per ALT allele (``allele`` 1, 2, ...);
rows stay in input order. htslib's own warnings are silenced (``pysam.set_verbosity(0)``);
a file htslib cannot parse raises one-line :class:`~mamba_genome.errors.InputFileError`
naming the file and the last record read.

Annotated VCF: every input record is written once, in input order, with
``INFO/MG_LLR`` and ``INFO/MG_LLR_PB`` (``Number=A``: one value per ALT, ``.`` where an
allele was not scored) and, for a record that was not (fully) scored, a ``FILTER`` saying
why (see :data:`STATUS_FILTERS`). The header lines describe the fields and the settings.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputFileError, UserError

#: allele status -> FILTER id written for records that have it ("ok" writes none)
STATUS_FILTERS = {
    "ref_mismatch": ("MG_REF_MISMATCH", "REF differs from the reference FASTA at this position; not scored"),
    "unknown_contig": ("MG_UNKNOWN_CONTIG", "CHROM is not a contig of the reference FASTA; not scored"),
    "window_off_contig": ("MG_WINDOW_OFF_CONTIG", "the scoring window runs off the contig end; not scored"),
    "unsupported_allele": ("MG_UNSUPPORTED_ALLELE",
                           "an ALT is symbolic, missing, '*' or not DNA; that allele is not scored"),
    "allele_too_long": ("MG_ALLELE_TOO_LONG", "REF or ALT is longer than half the window; not scored"),
}
STATUSES = ("ok", *STATUS_FILTERS)
_DNA = re.compile(r"^[ACGTNRYKMSWBDHVacgtnrykmswbdhv]+$")


@dataclass
class AlleleChunk:
    """One row per ALT allele of a run of consecutive VCF records.

    ``record``: 0-based index of the record in the file; ``allele``: 1-based ALT index;
    ``pos``: the VCF POS (1-based); ``records``: the pysam records (only when kept for the
    annotated VCF) and ``n_records`` how many records the chunk covers.
    """

    record: np.ndarray
    allele: np.ndarray
    chrom: list[str]
    pos: np.ndarray
    id: list[str]
    ref: list[str]
    alt: list[str]
    records: list | None
    n_records: int

    def __len__(self) -> int:
        return len(self.pos)

    def dna_alleles(self) -> np.ndarray:
        """(n,) bool: REF and ALT are both plain DNA (A/C/G/T/N and IUPAC codes)."""
        ok = _DNA.match
        return np.fromiter((bool(ok(r)) and bool(ok(a)) for r, a in zip(self.ref, self.alt)), dtype=bool,
                           count=len(self.ref))


def _quiet():
    import pysam

    pysam.set_verbosity(0)
    return pysam


def open_vcf(path):
    """Open a VCF/BCF with pysam; one-line ``InputFileError`` if it is missing or not a VCF."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"--vcf {p}: no such file; check the path")
    if p.stat().st_size == 0:
        raise InputFileError(f"{p}: empty file; expected a VCF")
    from ..data.fasta import detect_format

    try:
        fmt = detect_format(p)
    except InputFileError as exc:
        raise InputFileError(str(exc).replace("or recompress with gzip or bgzip", "or recompress with bgzip")) from None
    if fmt == "gzip":
        raise InputFileError(f"{p}: is plain gzip, which htslib cannot read as VCF; recompress it with bgzip "
                             f"(`zcat {p.name} | bgzip > new.vcf.gz`)")
    pysam = _quiet()
    try:
        return pysam.VariantFile(str(p), "r")
    except (ValueError, OSError, NotImplementedError) as exc:
        raise InputFileError(f"{p}: not a readable VCF ({_why(exc)}); it needs a '##fileformat=VCF' header "
                             "and a '#CHROM' line") from None


def _why(exc: Exception) -> str:
    msg = " ".join(str(exc).split())
    return msg[:120] or type(exc).__name__


def iter_allele_chunks(vf, path, chunk_alleles: int = 1 << 16, keep_records: bool = False) -> Iterator[AlleleChunk]:
    """Chunks of about ``chunk_alleles`` ALT alleles (whole records) from an open VCF, in order.

    Raises:
        InputFileError: a record htslib cannot parse (names the last good record).
    """
    n_done = 0
    it = iter(vf)
    while True:
        record, allele, chrom, pos, ids, ref, alt = [], [], [], [], [], [], []
        kept = [] if keep_records else None
        n_rec = 0
        while len(pos) < chunk_alleles:
            try:
                rec = next(it)
                c, p, i, r, alts = rec.chrom, rec.pos, rec.id, rec.ref, rec.alts
            except StopIteration:
                break
            except (ValueError, OSError, UnicodeDecodeError, NotImplementedError) as exc:
                where = f"after record {n_done + n_rec:,}" if n_done + n_rec else "in the first record"
                raise InputFileError(f"{path}: malformed VCF {where} ({_why(exc)})") from None
            k = n_done + n_rec
            n_rec += 1
            if keep_records:
                kept.append(rec)
            alts = alts or (".",)
            r = r or ""
            for j, a in enumerate(alts, 1):
                record.append(k)
                allele.append(j)
                chrom.append(c)
                pos.append(p)
                ids.append(i or ".")
                ref.append(r)
                alt.append(a)
        if n_rec == 0:
            return
        n_done += n_rec
        yield AlleleChunk(np.array(record, dtype=np.int64), np.array(allele, dtype=np.int64), chrom,
                          np.array(pos, dtype=np.int64), ids, ref, alt, kept, n_rec)


def read_alleles(path) -> AlleleChunk | None:
    """The whole VCF as one :class:`AlleleChunk` (small files and tests); None if it has no records."""
    vf = open_vcf(path)
    with vf:
        chunks = list(iter_allele_chunks(vf, path, chunk_alleles=1 << 62))
    return chunks[0] if chunks else None


class AnnotatedVcfWriter:
    """Writes input records with ``MG_LLR``/``MG_LLR_PB`` INFO and status FILTERs, atomically.

    ``out`` ending in ``.gz`` is bgzipped (pysam's BGZF writer; indexable with ``tabix -p vcf``),
    else plain text. Records are written as htslib formats them (``str(record)``) with the two
    INFO values appended and the FILTER column set, so nothing else in them changes.
    """

    def __init__(self, out, header, settings: str, command: str | None = None):
        pysam = _quiet()
        self.out = Path(out)
        self.tmp = self.out.with_name(f".{self.out.name}.tmp-{os.getpid()}")
        for key in ("MG_LLR", "MG_LLR_PB"):
            if key in header.info:
                raise UserError(f"the VCF already has an INFO/{key} field (scored before?); remove it first "
                                f"(`bcftools annotate -x INFO/{key}`)")
        extra = []
        extra.append('##INFO=<ID=MG_LLR,Number=A,Type=Float,Description="Mamba log-likelihood ratio '
                     f'log P(alt window) - log P(ref window) in nats; {_quote(settings)}">')
        extra.append('##INFO=<ID=MG_LLR_PB,Number=A,Type=Float,Description="MG_LLR normalised per base: mean '
                     'log-probability per scored base of the alt suffix (allele + right flank) minus that of '
                     'the ref suffix, nats">')
        for fid, desc in STATUS_FILTERS.values():
            if fid not in header.filters:
                extra.append(f'##FILTER=<ID={fid},Description="{desc}">')
        if command:
            extra.append(f"##mamba-genome_scoreCommand={command}")
        lines = str(header).rstrip("\n").split("\n")
        text = "\n".join(lines[:-1] + extra + lines[-1:]) + "\n"
        if self.out.name.endswith(".gz"):
            self.fh = pysam.BGZFile(str(self.tmp), "wb")
        else:
            self.fh = open(self.tmp, "wb")
        self.fh.write(text.encode())

    def write_chunk(self, chunk: AlleleChunk, cols: dict, status: list[str]) -> None:
        """Write the chunk's records; ``cols["llr"]``, ``cols["llr_per_base"]`` and ``status`` have
        one entry per allele row."""
        llr, llr_pb = _values(cols["llr"], 5), _values(cols["llr_per_base"], 6)
        rows = np.searchsorted(chunk.record, chunk.record[0] + np.arange(chunk.n_records + 1)).tolist()
        out = []
        for k, rec in enumerate(chunk.records):
            lo, hi = rows[k], rows[k + 1]
            f = str(rec).rstrip("\n").split("\t", 8)
            if rec.alts:
                info = f"MG_LLR={','.join(llr[lo:hi])};MG_LLR_PB={','.join(llr_pb[lo:hi])}"
                f[7] = info if f[7] == "." else f"{f[7]};{info}"
            bad = next((s for s in status[lo:hi] if s != "ok"), None)
            if bad is not None:
                fid = STATUS_FILTERS[bad][0]
                f[6] = fid if f[6] in (".", "PASS") else f"{f[6]};{fid}"
            out.append("\t".join(f))
        if out:
            self.fh.write(("\n".join(out) + "\n").encode())

    def close(self, ok: bool = True) -> None:
        self.fh.close()
        if ok:
            os.replace(self.tmp, self.out)
        else:
            self.tmp.unlink(missing_ok=True)


def _values(v: np.ndarray, digits: int) -> list[str]:
    return ["." if x != x else f"{x:.{digits}g}" for x in v.tolist()]


def _quote(text: str) -> str:
    return text.replace('"', "'")


__all__ = ["AlleleChunk", "open_vcf", "iter_allele_chunks", "read_alleles", "AnnotatedVcfWriter",
           "STATUS_FILTERS", "STATUSES"]
