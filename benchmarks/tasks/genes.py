"""Gene calls for the bacterial genomes of /work/shared/data, with a coordinate check.

No GenBank/GFF annotation matching these assemblies ships in a Debian or PyPI
package that we found (the Debian example-data packages ``ragout-examples``,
``any2fasta-examples``, ``abacas-examples`` and ``seqkit-examples`` hold
sequence only or other organisms), so genes are *predicted* with Prodigal
through its Python binding **pyrodigal** (PyPI, Larralde 2022; Hyatt et al. 2010),
single-genome mode trained on the genome itself, translation table 11.
Labels built from these calls are model predictions, not curated annotation:
Prodigal's start choice uses the RBS motif and coding statistics, so the
start-codon task partly asks "does a classifier agree with Prodigal".

:func:`verify` checks the coordinates the way an annotation would be checked:
every complete gene, cut from the genome (reverse-complemented on the minus
strand) and translated, starts with M and has no internal stop.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mamba_genome.errors import UserError

from .common import revcomp


@dataclass(frozen=True)
class Gene:
    """A predicted CDS, 0-based half-open ``[start, end)`` on the forward strand."""

    contig: str
    start: int
    end: int
    strand: int  # +1 or -1
    start_codon: str  # ATG, GTG, TTG or Edge
    partial: bool  # runs off a contig edge

    def cds(self, seq: bytes) -> bytes:
        s = seq[self.start:self.end]
        return s if self.strand > 0 else revcomp(s)


def pyrodigal_version() -> str:
    try:
        import pyrodigal
    except ImportError:
        raise UserError("the gene-based tasks need pyrodigal: pip install 'mamba-genome[tasks]' "
                        "(or pip install pyrodigal)") from None
    return pyrodigal.__version__


def call_genes(genome: dict[str, bytes], cache: str | os.PathLike | None = None, meta: bool = False) -> list[Gene]:
    """Prodigal genes of every contig (trained on all contigs together unless ``meta``); cached as TSV.

    Args:
        genome: ``{contig: sequence}``.
        cache: TSV path to read if present (keyed by a hash of the sequence) or to write.
        meta: metagenomic mode (pre-trained models; for slices shorter than 20 kbp, e.g. in tests).
    """
    pyrodigal_version()
    import pyrodigal

    key = hashlib.sha1(b"".join(genome[c] for c in sorted(genome))).hexdigest()[:16] + ("-meta" if meta else "")
    if cache is not None and Path(cache).is_file():
        with open(cache) as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
        if rows and rows[0] == ["#key", key]:
            return [Gene(r[0], int(r[1]), int(r[2]), int(r[3]), r[4], r[5] == "1") for r in rows[2:]]
    finder = pyrodigal.GeneFinder(meta=meta)
    if not meta:
        finder.train(*[genome[c] for c in genome])
    genes = []
    for contig, seq in genome.items():
        for g in finder.find_genes(seq):
            genes.append(Gene(contig, g.begin - 1, g.end, int(g.strand), g.start_type,
                              bool(g.partial_begin or g.partial_end)))
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            w.writerow(["#key", key])
            w.writerow(["contig", "start", "end", "strand", "start_codon", "partial"])
            w.writerows([(g.contig, g.start, g.end, g.strand, g.start_codon, int(g.partial)) for g in genes])
    return genes


def verify(genome: dict[str, bytes], genes: list[Gene]) -> dict:
    """Translate every complete gene; count those starting with M and those with an internal stop.

    Returns ``{"complete", "start_M", "internal_stop", "ends_with_stop", "length_not_multiple_of_3"}``;
    :func:`check_calls` refuses gene calls where a complete gene fails.
    """
    from Bio.Seq import Seq

    out = {"complete": 0, "start_M": 0, "internal_stop": 0, "ends_with_stop": 0, "length_not_multiple_of_3": 0}
    for g in genes:
        if g.partial:
            continue
        out["complete"] += 1
        cds = g.cds(genome[g.contig])
        if len(cds) % 3:
            out["length_not_multiple_of_3"] += 1
            continue
        prot = str(Seq(cds.decode()).translate(table=11, cds=False))
        # Table 11 start codons (ATG, GTG, TTG, ...) are read as Met by the initiator tRNA:
        # Biopython's cds=True does that substitution but raises on the first bad gene, so do it here.
        first = "M" if cds[:3] in (b"ATG", b"GTG", b"TTG", b"CTG", b"ATT", b"ATC", b"ATA") else prot[0]
        out["start_M"] += first == "M"
        out["internal_stop"] += "*" in prot[:-1]
        out["ends_with_stop"] += prot.endswith("*")
    return out


def check_calls(report: dict, where: str) -> None:
    """Raise ``UserError`` unless every complete gene starts with M, ends with a stop and has none inside."""
    n = report["complete"]
    if not n or report["start_M"] != n or report["internal_stop"] or report["ends_with_stop"] != n \
            or report["length_not_multiple_of_3"]:
        raise UserError(f"{where}: gene coordinates fail the translation check: {report}")
