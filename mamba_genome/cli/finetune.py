"""``mamba-genome finetune``: train a genome classifier on labelled FASTA files.

A thin wrapper over :func:`mamba_genome.workflows.finetune.finetune`; prints
the split table before training and a per-class summary (with the k-mer
baseline beside the model when ``--baseline kmer``) at the end.
"""
from __future__ import annotations

import json

import click

from ..model.classifier import POOLINGS
from ..train.schedule import parse_duration
from ..workflows.finetune import FinetuneArgs, resume_args
from ..workflows.finetune import finetune as run_finetune
from ..workflows.finetune import summary_rows
from ..errors import UserError
from .common import handle_errors, print_table


def _parse_overrides(text: str | None) -> dict:
    if not text:
        return {}
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--model-overrides must be a JSON object ({exc})") from None
    if not isinstance(d, dict):
        raise UserError("--model-overrides must be a JSON object, e.g. '{\"d_model\": 32}'")
    return d


@click.command("finetune")
@click.option("--class", "classes", metavar="LABEL=FASTA", multiple=True,
              help="A class and its genome FASTA (repeat per class). Contig tails are held out for val/test.")
@click.option("--manifest", metavar="TSV", type=click.Path(dir_okay=False, path_type=str),
              help="TSV with header 'label<TAB>fasta[<TAB>split]' (split: train/val/test or empty); "
                   "paths relative to the TSV.")
@click.option("--from", "from_run", metavar="RUN", type=click.Path(path_type=str),
              help="Start from a pretrained LM run or model directory [default: train from scratch].")
@click.option("--preset", type=click.Choice(["tiny", "1.4m", "7m"]), default="tiny", show_default=True,
              help="Model size when training from scratch (1.4m/7m are the paper's).")
@click.option("--seq-len", type=int, default=1024, show_default=True, help="Window length in bases.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--max-steps", type=int, default=300, show_default=True, help="Optimiser steps.")
@click.option("--max-time", "max_time", default=None, metavar="DURATION",
              help="Wall-clock training budget, e.g. 2h, 90m, 270s or plain seconds (the LR schedule is fitted to it; "
                   "--max-steps still caps it).")
@click.option("--steps-per-epoch", type=int, default=None,
              help="Steps between validations / sequence-length doublings [default: max-steps/10].")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Peak learning rate (cosine decay to 1e-6).")
@click.option("--warmup-steps", type=int, default=None, help="Linear LR warmup steps [default: 10%% of max-steps].")
@click.option("--pooling", type=click.Choice(list(POOLINGS)), default="last", show_default=True,
              help="How the head sees the window: the last token's hidden state, the mean, the per-channel max, "
                   "a learned attention over positions, or mean and max concatenated (meanmax). max / attention "
                   "suit a signal at one place in the window (a splice site, a start codon).")
@click.option("--strands", type=click.Choice(["fwd", "both"]), default="fwd", show_default=True,
              help="fwd: pool the forward pass; both: also run the reverse complement and concatenate the two "
                   "pooled vectors (the classifier sees both sides of every position; twice the compute).")
@click.option("--freeze-backbone", is_flag=True, help="Train only the linear head.")
@click.option("--no-seq-len-warmup", is_flag=True,
              help="Train at --seq-len from the start (default: windows above 2^14 start at 2^14, doubling per epoch).")
@click.option("--val-windows", type=int, default=64, show_default=True, help="Fixed validation windows per class.")
@click.option("--test-windows", type=int, default=256, show_default=True, help="Fixed test windows per class.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Contig tail held out for val (FASTAs without a split).")
@click.option("--test-fraction", type=float, default=0.1, show_default=True,
              help="Contig tail held out for test (FASTAs without a split).")
@click.option("--rc-prob", type=float, default=0.5, show_default=True,
              help="Probability that a training window is reverse-complemented (0 for strand-specific tasks "
                   "such as start codons or splice sites on the gene's strand).")
@click.option("--patience", type=int, default=None, metavar="N",
              help="Stop after N validations in a row without a better best model [train to --max-steps/--max-time].")
@click.option("--contig-weighting", type=click.Choice(["length", "uniform"]), default="length", show_default=True,
              help="Pick a class's contig weighted by length or uniformly.")
@click.option("--baseline", type=click.Choice(["kmer"]), default=None,
              help="Also fit a k-mer logistic-regression baseline on the same windows.")
@click.option("--kmer-k", type=int, default=6, show_default=True, help="k of the k-mer baseline.")
@click.option("-o", "--out", default=None, metavar="RUN_DIR", type=click.Path(path_type=str),
              help="Run directory to write [default: runs/finetune-<timestamp>].")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last.ckpt (settings from its args.json; --max-steps, "
                   "--max-time and the hardware flags may change).")
@click.option("--force", is_flag=True, help="Replace an existing run directory (only files a mamba-genome run wrote).")
@click.option("--devices", type=int, default=1, show_default=True, help="GPUs (or CPU processes) to train on.")
@click.option("--memory", type=click.Choice(["auto", "low"]), default="auto", show_default=True,
              help="auto: the micro-batch and memory policy with the most tokens/s in the GPU's free memory; "
                   "low: the least memory (activation checkpointing, bf16 checkpoints).")
@click.option("--micro-batch-size", type=int, default=None, hidden=True,
              help="Expert: windows per device per forward pass (over the planner).")
@click.option("--accelerator", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True)
@click.option("--precision", default=None, help="Lightning precision [default: bf16-mixed on GPU, else 32-true].")
@click.option("--num-workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or tables; print only the run directory.")
@click.option("--model-overrides", default=None, hidden=True,
              help="JSON object of MambaConfig overrides (tests and experiments), e.g. '{\"d_model\": 32}'.")
@handle_errors
def finetune(classes, manifest, from_run, preset, seq_len, batch_size, max_steps, max_time, steps_per_epoch, lr,
             warmup_steps, pooling, strands, freeze_backbone, no_seq_len_warmup, val_windows, test_windows, val_fraction, test_fraction,
             rc_prob, patience, contig_weighting, baseline, kmer_k, out, resume, force, devices, memory, micro_batch_size, accelerator,
             precision, num_workers, seed, quiet, model_overrides):
    """Fine-tune a classifier that names the genome (species, strain, ...) of a DNA window.

    Windows are drawn class-balanced: a class uniformly, then a contig, then a
    window. Writes best/ and last/ models, metrics.json (test accuracy,
    macro-F1, per-class scores), confusion_matrix.tsv/.png, curves.csv/.png and
    split.json into RUN_DIR.

    \b
    Examples:
      mamba-genome finetune --class COL=COL.fa.gz --class N315=N315.fa.gz --baseline kmer
      mamba-genome finetune --manifest great_apes/manifest.tsv --from runs/pretrain \\
          --preset 1.4m --seq-len 16384 --out runs/apes
      mamba-genome classify sample.fa --model runs/apes
    """
    overrides = _parse_overrides(model_overrides)
    max_time_s = parse_duration(max_time) if max_time is not None else None
    if resume:
        if force:
            raise UserError("--resume and --force exclude each other (--force starts the run over)")
        if not out:
            raise UserError("--resume needs --out RUN_DIR (the run to continue)")
        ctx = click.get_current_context()
        given = {name for name in ctx.params
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
        values = {"max_steps": max_steps, "max_time_s": max_time_s, "devices": devices, "accelerator": accelerator,
                  "memory": memory, "micro_batch_size": micro_batch_size,
                  "precision": precision, "num_workers": num_workers, "classes": classes, "manifest": manifest}
        flag = {"max_time_s": "max_time"}
        args = resume_args(out, **{k: v for k, v in values.items() if flag.get(k, k) in given},
                           progress=not quiet)
    else:
        args = FinetuneArgs(
            classes=classes, manifest=manifest, from_run=from_run, preset=preset, seq_len=seq_len,
            batch_size=batch_size,
            max_steps=max_steps, max_time_s=max_time_s, steps_per_epoch=steps_per_epoch, lr=lr,
            warmup_steps=warmup_steps, pooling=pooling, strands=strands, freeze_backbone=freeze_backbone,
            seq_len_warmup=not no_seq_len_warmup, val_windows=val_windows, test_windows=test_windows,
            val_fraction=val_fraction, test_fraction=test_fraction, contig_weighting=contig_weighting,
            rc_prob=rc_prob, patience=patience,
            baseline=baseline, kmer_k=kmer_k, out=out, force=force, devices=devices, memory=memory,
            micro_batch_size=micro_batch_size, accelerator=accelerator,
            precision=precision, num_workers=num_workers, seed=seed, progress=not quiet, model_overrides=overrides)
    metrics = run_finetune(args)
    if not metrics:  # a non-zero DDP rank
        return
    if not quiet:
        print_table(summary_rows(metrics), ["label", "precision", "recall", "f1", "support"])
        click.echo(f"{metrics['steps']} steps in {metrics['train_seconds']:.0f} s; run directory: {metrics['out']}",
                   err=True)
    click.echo(metrics["out"])
