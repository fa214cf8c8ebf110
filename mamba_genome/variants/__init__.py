"""Variant effect prediction: VCF I/O, the reference genome, and the prefix-reuse LLR scorer.

- :mod:`.vcf`: reading VCF/BCF as allele chunks (pysam) and writing the TSV/annotated VCF;
- :mod:`.reference`: encoded reference contigs (pyfaidx or a token store), contig naming checks;
- :mod:`.effect`: :class:`VariantScorer`, the definition of the score (windows, both strands,
  length normalisation) and its batched computation.

The workflow that ties them together is :func:`mamba_genome.workflows.variants.score_vcf`.
"""
from .effect import VariantScorer, encode_alleles, flank_lengths, pad_alleles
from .reference import Reference
from .vcf import STATUS_FILTERS, STATUSES, AnnotatedVcfWriter, iter_allele_chunks, open_vcf, read_alleles

__all__ = ["VariantScorer", "encode_alleles", "flank_lengths", "pad_alleles", "Reference", "STATUS_FILTERS",
           "STATUSES", "AnnotatedVcfWriter", "iter_allele_chunks", "open_vcf", "read_alleles"]
