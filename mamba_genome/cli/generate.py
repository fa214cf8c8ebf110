"""``mamba-genome generate``: sample new DNA from a trained language model.

A thin wrapper over :func:`mamba_genome.workflows.generate.generate`; writes FASTA to
``-o`` (default stdout) and prints a summary (samples, bases, seconds, bases/s) on stderr.
"""
from __future__ import annotations

import click

from .common import handle_errors, print_table


@click.command("generate")
@click.option("-m", "--model", "model", required=True, metavar="RUN",
              help="Model directory, or a run directory from pretrain (its best/ model).")
@click.option("--prompt", metavar="FASTA", default=None,
              help="Continue every record of this FASTA (--num-samples each) [default: no prompt; the first "
                   "base is uniform].")
@click.option("--length", type=int, required=True, metavar="N", help="Bases to generate per sample.")
@click.option("--temperature", type=float, default=1.0, show_default=True,
              help="Divides the logits: < 1 sharper, > 1 flatter than the model.")
@click.option("--top-k", type=int, default=None, metavar="K",
              help="Sample among the K most likely bases only (1..4; 1 = greedy) [default: all].")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same output).")
@click.option("--num-samples", type=int, default=1, show_default=True, metavar="K",
              help="Samples (per prompt record).")
@click.option("-o", "--out", "out", default="-", show_default=True, metavar="OUT.fa",
              help="Output FASTA (written atomically); - for stdout.")
@click.option("--batch-size", type=int, default=None,
              help="Samples run together [default: 256 on a GPU, 64 on CPU].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: bf16 autocast on a CUDA GPU that supports it, else fp32.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary table.")
@handle_errors
def generate(model, prompt, length, temperature, top_k, seed, num_samples, out, batch_size, device, precision,
             quiet):
    """Sample new sequence from a trained language model, base by base.

    Uses the model's recurrent step with its state carried, so memory does not grow
    with --length, and runs many samples per batch. Bases are drawn from the model's
    prediction over A/C/G/T (never N). Only the generated bases are written.

    \b
    Examples:
      mamba-genome generate --model runs/pretrain --length 100000 -o synthetic.fa
      mamba-genome generate --model runs/pretrain --length 5000 --num-samples 100 --temperature 0.8 -o gen.fa
      mamba-genome generate --model runs/hg38-7m --prompt promoter.fa --length 1000 --top-k 2 --seed 7 > cont.fa
      mamba-genome evaluate runs/pretrain --fasta synthetic.fa     # bits/base of the samples under the model
    """
    from ..workflows.generate import generate as run_generate

    res = run_generate(model, out=out, length=length, prompt=prompt, num_samples=num_samples,
                       temperature=temperature, top_k=top_k, seed=seed, batch_size=batch_size, device=device,
                       precision=precision, progress=not quiet)
    if not quiet:
        print_table(res.summary_rows())
    if out != "-":
        click.echo(res.out)
