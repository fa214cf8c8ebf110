"""``mamba-genome evaluate``: bits per base and perplexity of a model on held-out sequence.

A thin wrapper over :func:`mamba_genome.workflows.evaluate.evaluate`; prints a
table (one row per record, then ALL) on stderr, or the result as JSON on stdout.
"""
from __future__ import annotations

import json

import click

from .common import handle_errors, print_table


@click.command("evaluate")
@click.argument("model", metavar="MODEL", type=click.Path())
@click.option("--fasta", "data", metavar="FASTA|STORE", required=True, type=click.Path(),
              help="Held-out sequence: a FASTA (plain/.gz) or a token store.")
@click.option("--seq-len", type=int, default=1024, show_default=True, help="Window length (context of each prediction).")
@click.option("--batch-size", type=int, default=None,
              help="Windows run together [default on a GPU: as many as fill about 2^20 positions; on CPU 8].")
@click.option("--max-windows", type=int, help="Score only this many evenly spaced windows.")
@click.option("--device", help="cpu, cuda, cuda:1, ... [cuda if available].")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: bf16 autocast on a CUDA GPU that supports it, else fp32.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def evaluate(model, data, seq_len, batch_size, max_windows, device, precision, as_json, quiet):
    """Score held-out sequence with MODEL (a model or pretraining run directory).

    Every record is tiled into windows of --seq-len; each base is predicted
    from the bases before it in its window. Reports bits per base (2.0 is a
    uniform guess) and perplexity.

    \b
    Examples:
      mamba-genome evaluate runs/pretrain-20250101-120000 --fasta held_out.fa
      mamba-genome evaluate runs/hg38-7m/best --fasta chr9.mgstore --seq-len 4096 --json
    """
    from ..workflows.evaluate import evaluate as run_evaluate
    from ..workflows.evaluate import summary_rows

    if max_windows is not None and max_windows < 1:
        from ..errors import UserError

        raise UserError(f"--max-windows must be at least 1, got {max_windows}")
    result = run_evaluate(model, data, seq_len=seq_len, batch_size=batch_size, device=device,
                          max_windows=max_windows, progress=not quiet and not as_json, precision=precision)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    print_table(summary_rows(result), file=click.get_text_stream("stdout"))
    click.echo(f"{result['bases']:,} bases in {result['windows']:,} windows of <= {seq_len:,} "
               f"({result['bases_per_second']:,.0f} bases/s)", err=True)
