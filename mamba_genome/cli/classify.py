"""``mamba-genome classify``: label each record of a FASTA with a fine-tuned classifier.

A thin wrapper over :func:`mamba_genome.workflows.classify.classify_to`;
writes a TSV (header ``id length predicted p_<label>...``) to stdout (rows
streamed as records finish) or, atomically, to ``-o``.
"""
from __future__ import annotations

import click

from ..workflows.classify import classify_to
from .common import handle_errors


@click.command("classify")
@click.argument("sample", metavar="SAMPLE.fa", type=click.Path(path_type=str))
@click.option("-m", "--model", "model", required=True, metavar="RUN", type=click.Path(path_type=str),
              help="Finetune run directory (uses best/) or model directory.")
@click.option("-o", "--out", "out", metavar="OUT.tsv", type=click.Path(path_type=str), default=None,
              help="Write the TSV here (a file atomically; missing folders are created; a FIFO or - "
                   "gets rows as they are made) [default: stdout].")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Windows per forward pass.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N [default: cuda if available].")
@click.option("--per-window", is_flag=True, help="One row per window (with start/end) instead of per record.")
@click.option("--seq-len", type=int, default=None, help="Window length [default: the model's training length].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def classify(sample, model, out, batch_size, device, per_window, seq_len, quiet):
    """Predict the class of every record in SAMPLE.fa (plain or gzip FASTA).

    Records longer than the model's window are tiled into windows whose
    log-probabilities are averaged; shorter records are one shorter window.

    \b
    Examples:
      mamba-genome classify contigs.fa --model runs/finetune > predictions.tsv
      mamba-genome classify reads.fa.gz -m runs/apes --per-window -o windows.tsv
    """
    n, target = classify_to(sample, model, out, batch_size=batch_size, device=device, per_window=per_window,
                            seq_len=seq_len, progress=not quiet and out is not None)
    if not target.streaming:
        click.echo(f"{n} rows -> {out}", err=True)
