"""``mamba-genome score``: per-base likelihood tracks, or variant effects from a VCF.

Two modes, thin wrappers over library functions:

- ``score INPUT -o OUT``: :func:`mamba_genome.workflows.score.score_file`; per-record totals
  as TSV on stdout, the summary table on stderr;
- ``score --vcf V --fasta REF -o OUT``: :func:`mamba_genome.workflows.variants.score_vcf`;
  the output path on stdout; the summary table and one line per kind of unscored allele on stderr.
"""
from __future__ import annotations

import sys

import click

from ..errors import UserError
from .common import handle_errors, print_table


@click.command("score")
@click.argument("input_fa", metavar="[INPUT]", required=False, type=click.Path(path_type=str))
@click.option("-m", "--model", "model", required=True, metavar="RUN",
              help="Model directory, or a run directory from pretrain (its best/ model).")
@click.option("-o", "--out", "out", required=True, metavar="OUT",
              help="Output file; the extension picks the format. Per-base: .bedgraph (.bg), .bw, .tsv, .tsv.gz or "
                   ".h5. With --vcf: .tsv, .tsv.gz, .vcf or .vcf.gz.")
@click.option("--bed", metavar="REGIONS.bed", default=None,
              help="Per-base: score these regions (0-based, half-open; 4th column = id) instead of whole records.")
@click.option("--entropy", is_flag=True,
              help="Per-base: also write the entropy of each next-base prediction (one more forward pass; "
                   "bedGraph/bigWig get a second file NAME.entropy.EXT).")
@click.option("--rc-average", is_flag=True,
              help="Per-base: average with the reverse-complement strand (it predicts each base from the right).")
@click.option("--vcf", "vcf", metavar="VARIANTS.vcf[.gz]", default=None,
              help="Score the variants of this VCF/BCF (SNVs and short indels) by LLR = log P(alt) - log P(ref).")
@click.option("--fasta", metavar="REF.fa", default=None,
              help="With --vcf: the reference genome (FASTA, plain/bgzip/gzip, or a token store).")
@click.option("--window", type=int, default=1024, show_default=True,
              help="With --vcf: bases in the window around the variant (8 .. 1048576): WINDOW//2 before the "
                   "REF allele (up to --grid - 1 more), WINDOW-WINDOW//2-1 after it.")
@click.option("--grid", type=int, default=32, show_default=True,
              help="With --vcf: windows start on a GRID-base grid of the contig, so variants within one cell share "
                   "their context pass (about 2x faster for dense VCFs); a score never depends on the other "
                   "variants. 1: every window centred exactly on its variant.")
@click.option("--forward-only", is_flag=True,
              help="With --vcf: score the forward strand only (default: average both strands).")
@click.option("--batch-size", type=int, default=None,
              help="Records (per-base) or variants (--vcf) run together [default: fill the GPU; CPU: small].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: bf16 autocast on a CUDA GPU that supports it, else fp32. Log-probabilities are "
                   "computed in fp32 either way.")
@click.option("--chunk-size", type=int, default=None,
              help="Per-base: bases per streamed chunk (memory is bounded by this; results do not depend on it).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary table.")
@handle_errors
def score(input_fa, model, out, bed, entropy, rc_average, vcf, fasta, window, grid, forward_only, batch_size, device,
          precision, chunk_size, quiet):
    """Per-base log-probabilities of INPUT (FASTA or token store), or variant effects with --vcf.

    Per base: log P(x_p | x_<p) in nats for every A/C/G/T after the first base of each record
    (or BED region); per-record totals (log-likelihood, nats and bits per base) go to stdout
    as TSV. Variant effects: for every ALT allele, the log-likelihood ratio of the alt and ref
    windows, which share their flanks; both strands averaged; the bases before the allele are
    context, the allele and the WINDOW-WINDOW//2-1 bases after it are scored. Multi-allelic records are split;
    input order is kept; records whose REF disagrees with the FASTA, whose contig is unknown or
    whose window runs off the contig are written unscored with a status (FILTER in a VCF).

    \b
    Examples:
      mamba-genome score chr21.fa --model runs/pretrain -o chr21.bw > totals.tsv
      mamba-genome score hg38.fa.gz --model runs/pretrain --bed promoters.bed --entropy -o prom.bedgraph
      mamba-genome score --vcf calls.vcf.gz --fasta hg38.fa --model runs/pretrain -o calls.scored.vcf.gz
      mamba-genome score --vcf calls.vcf --fasta ref.fa --model runs/pretrain --window 4096 -o llr.tsv
    """
    if vcf is not None:
        from ..workflows.variants import score_vcf

        if fasta is None:
            raise UserError("--vcf needs --fasta REF (the reference genome the VCF was called against)")
        if input_fa is not None or bed or entropy or rc_average or chunk_size is not None:
            raise UserError("with --vcf, give no INPUT and none of --bed, --entropy, --rc-average, --chunk-size "
                            "(both strands are averaged unless --forward-only)")
        res = score_vcf(vcf, fasta, model, out, window=window, both_strands=not forward_only, batch_size=batch_size,
                        device=device, precision=precision, progress=not quiet, grid=grid)
        for line in res.problems():
            click.echo(f"warning: {line}", err=True)
        if not quiet:
            print_table(res.summary_rows())
        click.echo(str(res.out))
        return
    if input_fa is None:
        raise UserError("give INPUT (a FASTA or token store) to score per base, or --vcf and --fasta for variants")
    if fasta is not None or forward_only or window != 1024 or grid != 32:
        raise UserError("--fasta, --window, --grid and --forward-only only apply with --vcf")
    from ..workflows.score import score_file

    res = score_file(input_fa, model, out, bed=bed, entropy=entropy, rc_average=rc_average, batch_size=batch_size,
                     device=device, precision=precision, chunk_size=chunk_size, progress=not quiet)
    click.echo(res.totals_tsv())
    sys.stdout.flush()
    if not quiet:
        print_table(res.summary_rows())
