"""``mamba-genome embed``: per-record, per-region or per-base embeddings from a trained model.

A thin wrapper over :func:`mamba_genome.workflows.embed.embed_file`; prints a
summary table (records, bp, seconds, bp/s, output) on stderr and the output
path on stdout.
"""
from __future__ import annotations

import click

from .common import handle_errors, print_table


@click.command("embed")
@click.argument("input_fa", metavar="INPUT", type=click.Path(path_type=str))
@click.option("-m", "--model", "model", required=True, metavar="RUN",
              help="Model directory, or a run directory from pretrain/finetune (its best/ model).")
@click.option("-o", "--out", "out", required=True, metavar="OUT",
              help="Output file; the extension picks the format: .h5, .npz, .npy or .parquet "
                   "(per-base output needs .h5 or .npz). Written atomically; missing folders are created.")
@click.option("--bed", metavar="REGIONS.bed", default=None,
              help="Embed these regions (0-based, half-open; 4th column = id) instead of whole records.")
@click.option("--pool", type=click.Choice(["mean", "last", "none"]), default="mean", show_default=True,
              help="mean: average over positions; last: final position (it has seen the whole sequence); "
                   "none: one vector per base.")
@click.option("--stride", type=int, default=1, show_default=True,
              help="With --pool none: keep every STRIDE-th base (positions 0, STRIDE, 2*STRIDE, ...).")
@click.option("--layer", type=int, default=None,
              help="Read block LAYER (0-based; negative counts from the end) instead of the final layer.")
@click.option("--rc-average", is_flag=True, help="Average with the reverse complement's embedding.")
@click.option("--batch-size", type=int, default=None,
              help="Records embedded together [default on a GPU: as many as fill about 2^20 positions, "
                   "at least 8; on CPU 8].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: bf16 autocast on a CUDA GPU that supports it (about 2x faster than fp32 on an "
                   "H100), else fp32. Embeddings are written as float32.")
@click.option("--chunk-size", type=int, default=None,
              help="Bases per streamed chunk [default on a GPU: 2^20 / records still running in the batch, "
                   "at least 131072; on CPU 131072]; memory is bounded by this, not by the record length. "
                   "Results do not depend on it.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary table.")
@handle_errors
def embed(input_fa, model, out, bed, pool, stride, layer, rc_average, batch_size, device, precision, chunk_size,
          quiet):
    """Embed every record of INPUT (FASTA, plain/.gz/bgzip, or a token store) with a trained model.

    Long records (whole chromosomes) are streamed through the model in chunks
    with the recurrent state carried, so memory stays constant.

    \b
    Examples:
      mamba-genome embed reads.fa --model runs/pretrain -o reads.parquet
      mamba-genome embed hg38.fa.gz --model runs/pretrain --bed promoters.bed -o promoters.h5
      mamba-genome embed chr21.fa --model runs/pretrain --pool none --stride 100 -o chr21.h5
      mamba-genome probe promoters.h5 --labels promoter_labels.tsv
    """
    from ..outputs import is_stdout
    from ..workflows.embed import embed_file

    res = embed_file(input_fa, model, out, bed=bed, pool=pool, layer=layer, stride=stride, rc_average=rc_average,
                     batch_size=batch_size, device=device, precision=precision, chunk_size=chunk_size,
                     progress=not quiet)
    if not quiet:
        print_table(res.summary_rows())
    if not is_stdout(res.out):  # the path on stdout, unless stdout is the output itself
        click.echo(str(res.out))
