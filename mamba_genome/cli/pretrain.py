"""``mamba-genome pretrain``: next-token pretraining on a genome.

A thin wrapper over :func:`mamba_genome.workflows.pretrain.pretrain`; the
flags map one to one onto :class:`~mamba_genome.workflows.pretrain.PretrainArgs`.
Prints the end-of-run summary table on stderr and the run directory on stdout.
"""
from __future__ import annotations

import click

from .common import handle_errors, print_table

EPILOG = """\b
Examples:
  mamba-genome pretrain                          # tiny model, bundled E. coli, < 5 min on a laptop CPU
  mamba-genome pretrain --fasta hg38.fa.gz --preset 7m --seq-len 131072 --max-time 4h
  mamba-genome pretrain --data hg38.mgstore --val-contigs chr8 --test-contigs chr9 --out runs/hg38-7m
  mamba-genome pretrain --out runs/hg38-7m --resume --max-steps 20000
  mamba-genome evaluate runs/hg38-7m --fasta held_out.fa

\b
Defaults follow Gu & Dao (2023): AdamW (0.9, 0.95), weight decay 0.1, lr 8e-3
with 10% warmup and cosine decay, ~2^20 tokens per step on GPU (batch =
2^20 / seq-len; a short --max-time or --max-tokens run takes 2^19 or 2^18
tokens per step so that it makes about 2,000 steps), bf16-mixed,
sequence-length warmup from 1024 doubling to --seq-len. For each length the
micro-batch, gradient accumulation and memory policy (activation
checkpointing, scan-state spacing) are chosen to fit the GPU's free memory
at the highest throughput (--memory low: the least memory);
validation is kept under 3% of the wall clock. On CPU: tiny windows, fp32, a 3m45s
budget. The run directory holds best/ and last/ models, last.ckpt (--resume),
metrics.json, split.json, args.json, loss_curve.png and logs/.

\b
A non-empty --out needs --resume or --force; --force removes only files a
mamba-genome run wrote. One run at a time per directory (a lock file). On
SIGTERM (SLURM's warning before a kill) or Ctrl-C the run saves last.ckpt at
the current step and exits 143 / 130; --resume then continues exactly where
it stopped. Off a terminal, progress is one plain line every 30 s.

\b
Multi-GPU (Lightning reads the launcher's environment):
  mamba-genome pretrain --data hg38.mgstore --preset 7m --devices 8 --strategy ddp
  torchrun --nproc_per_node 4 $(which mamba-genome) pretrain --devices 4 --strategy ddp ...
  # SLURM, 2 nodes x 4 GPUs (sbatch --nodes 2 --ntasks-per-node 4 --gpus-per-node 4):
  srun mamba-genome pretrain --devices 4 --num-nodes 2 --strategy ddp --data hg38.mgstore --out runs/x
"""


def _csv(ctx, param, value):
    if not value:
        return ()
    return tuple(v.strip() for item in value for v in item.split(",") if v.strip())


@click.command("pretrain", epilog=EPILOG)
@click.option("--fasta", metavar="REF", type=click.Path(dir_okay=False), help="Reference FASTA (plain, .gz, bgzip); ingested and cached.")
@click.option("--data", metavar="STORE", type=click.Path(), help="Token store from `mamba-genome ingest`.")
@click.option("--preset", type=click.Choice(["tiny", "1.4m", "7m"]), default="tiny", show_default=True, help="Model size.")
@click.option("--seq-len", type=int, help="Training window length in tokens [GPU 1024, CPU 512].")
@click.option("--batch-size", type=int, help="Windows per optimizer step, all devices [GPU 2^20/seq-len; 2^19 or 2^18 tokens for a short "
                   "--max-time/--max-tokens run; CPU 4 at 512].")
@click.option("--memory", type=click.Choice(["auto", "low"]), default="auto", show_default=True,
              help="auto: per sequence-length stage, the micro-batch and memory policy with the most tokens/s in "
                   "the GPU's free memory; low: the least memory (activation checkpointing, bf16 checkpoints).")
@click.option("--micro-batch-size", type=int, hidden=True, help="Expert: windows per device per forward pass (over the planner).")
@click.option("--max-steps", type=int, help="Stop after this many optimizer steps [GPU 10000].")
@click.option("--max-tokens", type=int, help="Stop after this many training tokens.")
@click.option("--max-time", metavar="DURATION", help="Wall-clock budget, e.g. 4h, 90m, 270s, 1h30m; the LR schedule is fitted to it [CPU 3m45s].")
@click.option("--lr", type=float, help="Peak learning rate [GPU 8e-3, CPU 4e-3].")
@click.option("--weight-decay", type=float, default=0.1, show_default=True, help="AdamW weight decay (not on A_log, D, norms, biases).")
@click.option("-o", "--out", metavar="RUN_DIR", type=click.Path(), help="Run directory [runs/pretrain-<timestamp>].")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.ckpt (step for step).")
@click.option("--force", is_flag=True,
              help="Start over in a non-empty --out (removes only files a mamba-genome run wrote there).")
@click.option("--devices", help="Devices per node: a number, a comma list of GPU ids, or auto.")
@click.option("--num-nodes", type=int, default=1, show_default=True, help="Nodes (SLURM / torchrun).")
@click.option("--strategy", default="auto", show_default=True, help="Lightning strategy: auto, ddp, fsdp, ...")
@click.option("--precision", help="Lightning precision [GPU bf16-mixed, CPU 32-true].")
@click.option("--accelerator", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the model init and the windows.")
@click.option("--val-contigs", multiple=True, callback=_csv, metavar="NAMES", help="Contigs held out for validation (comma list or repeated).")
@click.option("--test-contigs", multiple=True, callback=_csv, metavar="NAMES", help="Contigs held out for testing.")
@click.option("--split-bed", type=click.Path(dir_okay=False), help="BED file 'chrom start end split' (train/val/test).")
@click.option("--no-seq-warmup", is_flag=True, help="Train at --seq-len from the first step.")
@click.option("--seq-warmup-start", type=int, default=1024, show_default=True, help="First length of the sequence-length warmup.")
# Expert flags over the memory planner (hidden; --memory is the user-facing choice).
@click.option("--grad-checkpointing", is_flag=True, default=None, hidden=True,
              help="Recompute blocks in backward (less memory at long --seq-len).")
@click.option("--checkpoint-bf16", is_flag=True, default=None, hidden=True,
              help="With --grad-checkpointing, the least memory: keep the per-layer checkpoints in bf16 (half "
                   "their memory; the residual adds stay fp32) and recompute the scan rather than keep its states.")
@click.option("--checkpoint-skip", type=int, hidden=True,
              help="With --grad-checkpointing: leave the last N layers un-checkpointed.")
@click.option("--scan-state-every", type=int, hidden=True,
              help="Steps between the scan states saved for the backward (multiple of 8).")
@click.option("--val-every", type=int, help="Validate every N optimizer steps [about 8 times per run].")
@click.option("--val-windows", type=int, help="Validation windows, evenly spaced over the val split [GPU 256, CPU 48].")
@click.option("--num-workers", type=int, help="DataLoader worker processes per rank [GPU: half the CPUs over the ranks, 2 to 8; CPU 0].")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary table.")
@click.option("--model-overrides", hidden=True, metavar="JSON", help="MambaConfig fields over the preset (tests, experiments).")
@handle_errors
def pretrain(fasta, data, preset, seq_len, batch_size, memory, micro_batch_size, max_steps, max_tokens, max_time, lr,
             weight_decay, out, resume, force, devices, num_nodes, strategy, precision, accelerator, seed,
             val_contigs, test_contigs, split_bed, no_seq_warmup, seq_warmup_start, grad_checkpointing, checkpoint_bf16,
             checkpoint_skip, scan_state_every, val_every, val_windows, num_workers, quiet, model_overrides):
    """Pretrain a Mamba DNA language model (next-base prediction) on a genome.

    With no --fasta/--data, trains the tiny model on the bundled E. coli
    K-12 genome: a few minutes on a laptop CPU, reaching below 2 bits per base.
    """
    from ..workflows.pretrain import PretrainArgs, summary_rows
    from ..workflows.pretrain import pretrain as run_pretrain

    args = PretrainArgs(
        fasta=fasta, data=data, preset=preset, seq_len=seq_len, batch_size=batch_size,
        memory=memory, micro_batch_size=micro_batch_size, max_steps=max_steps, max_tokens=max_tokens, max_time=max_time, lr=lr,
        weight_decay=weight_decay, out=out, resume=resume, force=force, devices=devices, num_nodes=num_nodes,
        strategy=strategy, precision=precision, accelerator=accelerator, seed=seed, val_contigs=val_contigs,
        test_contigs=test_contigs, split_bed=split_bed, seq_warmup=not no_seq_warmup, seq_warmup_start=seq_warmup_start,
        gradient_checkpointing=grad_checkpointing or None, checkpoint_bf16=checkpoint_bf16 or None,
        checkpoint_skip=checkpoint_skip, scan_state_every=scan_state_every, val_every=val_every, val_windows=val_windows,
        num_workers=num_workers, quiet=quiet, model_overrides=_parse_overrides(model_overrides),
    )
    metrics = run_pretrain(args)
    if not metrics:  # not rank 0
        return
    if not quiet:
        print_table(summary_rows(metrics))
        run = metrics["run_dir"]
        click.echo(f"models: {run}/best (lowest val loss, step {metrics['best_step']}) and {run}/last; "
                   f"resume: --out {run} --resume; curve: {run}/loss_curve.png", err=True)
    click.echo(metrics["run_dir"])


def _parse_overrides(raw: str | None) -> dict:
    """The hidden --model-overrides JSON object, e.g. '{"d_model": 32, "n_layer": 2}'."""
    import json

    from ..errors import UserError

    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise UserError('--model-overrides must be a JSON object, e.g. \'{"d_model": 32}\'')
    return value
