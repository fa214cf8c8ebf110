"""``mamba-genome probe``: cross-validated linear probe of labels on pooled embeddings.

A thin wrapper over :func:`mamba_genome.workflows.probe.probe`; prints the
scores table on stderr and, with ``-o``, writes the full result as JSON.
"""
from __future__ import annotations

import json

import click

from .common import handle_errors, print_table


@click.command("probe")
@click.argument("emb", metavar="EMB", type=click.Path(path_type=str))
@click.option("--labels", "labels", required=True, metavar="LABELS.tsv",
              help="TSV with a header naming 'id' and 'label' columns; ids are the embedding ids.")
@click.option("--folds", type=int, default=5, show_default=True, help="Stratified cross-validation folds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fold shuffle.")
@click.option("-o", "--out", "out", default=None, metavar="RESULT.json", help="Also write the full result as JSON (atomically; missing folders are created).")
@handle_errors
def probe(emb, labels, folds, seed, out):
    """Logistic-regression probe of LABELS on the pooled embeddings in EMB (.h5, .npz or .parquet).

    Reports accuracy and macro-F1 (mean ± std over folds) next to a
    majority-class baseline scored on the same folds.

    \b
    Example:
      mamba-genome embed promoters.fa --model runs/pretrain -o promoters.h5
      printf 'id\\tlabel\\nseq1\\tpromoter\\nseq2\\tbackground\\n...' > labels.tsv
      mamba-genome probe promoters.h5 --labels labels.tsv --folds 5
    """
    from ..outputs import atomic_write_text, check_output_path
    from ..workflows.probe import probe as run_probe
    from ..workflows.probe import summary_rows

    # before the work: a bad -o (a folder, /proc, an input file) must not cost the probe's run time
    target = check_output_path(out, inputs=[emb, labels], example="probe.json") if out is not None else None
    res = run_probe(emb, labels, folds=folds, seed=seed)
    if target is not None:
        atomic_write_text(target, json.dumps(res, indent=2) + "\n")
    print_table(summary_rows(res))
    click.echo(f"{res['n']} labelled records, {len(res['classes'])} classes, d={res['d']}, {folds}-fold CV"
               + (f"; {res['n_unlabelled']} embedded records had no label" if res["n_unlabelled"] else ""), err=True)
    click.echo("metric\tmean\tstd")
    click.echo(f"accuracy\t{res['accuracy_mean']:.4f}\t{res['accuracy_std']:.4f}\n"
               f"macro_f1\t{res['macro_f1_mean']:.4f}\t{res['macro_f1_std']:.4f}\n"
               f"majority_accuracy\t{res['majority_accuracy_mean']:.4f}\t{res['majority_accuracy_std']:.4f}")
