"""``mamba-genome bench``: measure training throughput and the kernels on this machine.

``bench train`` is a thin wrapper over
:func:`mamba_genome.workflows.bench_train.run_bench_train`; ``bench kernels`` runs the
kernel micro-benchmarks in ``benchmarks/bench_kernels.py`` and ``bench tasks`` the
labelled-task suite in ``benchmarks/tasks/`` of a source checkout.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from pathlib import Path

import click

from ..errors import UserError
from .common import handle_errors, print_table


@click.group("bench")
def bench():
    """Benchmarks: training step throughput/memory, kernel speed, the labelled-task suite.

    \b
    Examples:
      mamba-genome bench train --preset 7m --seq-len 1048576 --grad-checkpointing
      mamba-genome bench train --preset tiny --seq-len 1024 --device cpu --steps 2
      mamba-genome bench kernels
      mamba-genome bench tasks -- run --tasks-dir runs/tasks --stages kmer,cnn
    """


@bench.command("train")
@click.option("--preset", default="7m", show_default=True, help="Model preset: tiny, 1.4m or 7m.")
@click.option("--seq-len", type=int, default=1 << 20, show_default=True, help="Tokens per sequence.")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Sequences per step.")
@click.option("--steps", type=int, default=10, show_default=True, help="Measured steps (median is reported).")
@click.option("--warmup", type=int, default=3, show_default=True,
              help="Unmeasured steps first (Triton compilation and autotuning).")
@click.option("--memory", type=click.Choice(["auto", "low"]), default="auto", show_default=True,
              help="The planner's choice for the shape: auto, the micro-batch and memory policy with the most "
                   "tokens/s in the free memory; low, the least memory.")
@click.option("--micro-batch-size", type=int, default=None,
              help="Hand-set: sequences per forward pass (the step accumulates --batch-size / N) [default: the planner's].")
@click.option("--grad-checkpointing/--no-grad-checkpointing", default=None,
              help="Hand-set: recompute each block in backward: less memory, ~1 extra forward [default: the planner's].")
@click.option("--checkpoint-bf16", is_flag=True, default=None,
              help="Hand-set, with --grad-checkpointing: the least memory: bf16 checkpoints, scan recomputed.")
@click.option("--checkpoint-skip", type=int, default=None, help="Hand-set, with --grad-checkpointing: leave the last N layers un-checkpointed (faster; each keeps its activations, ~0.5-1.3 GiB per 1.4m layer at 2^20).")
@click.option("--scan-state-every", type=int, default=None, help="Hand-set: steps between the scan states saved for the backward (multiple of 8). 16: ~10% faster scan backward, 4x the memory for those states (1 GiB per 1.4m layer at 2^20) [default: the planner's; 64 on CPU].")
@click.option("--precision", type=click.Choice(["bf16-mixed", "32"]), default=None,
              help="[default: bf16-mixed on a GPU, 32 on CPU, as pretrain runs; CPU autocast to bf16 is slow "
                   "without native bf16 matrix units]")
@click.option("--device", default="auto", show_default=True, help="auto (cuda if available), cuda, cuda:N or cpu.")
@click.option("--backend", type=click.Choice(["reference", "torch", "numba", "triton"]), default=None,
              help="Force a kernels backend [default: fastest available: triton on a GPU, numba on CPU].")
@click.option("--scan-share/--no-scan-share", default=True, show_default=True,
              help="Also time one layer's scan alone to estimate its share of the step.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Also write the result as JSON to this file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def train(preset, seq_len, batch_size, steps, warmup, memory, micro_batch_size, grad_checkpointing, checkpoint_bf16,
          checkpoint_skip, scan_state_every, precision, device, backend, scan_share, json_out, quiet):
    """Time full training steps (forward, loss, backward, AdamW) on random tokens.

    No data is needed. The step is what `pretrain` would run for --batch-size
    sequences of --seq-len: the training engine's micro-batch and memory policy
    for this device's free memory (checked by one probe step on a GPU), unless
    flags set them by hand. Prints the plan, tokens/s, median step time (CUDA
    events), the forward/backward/optimizer split, peak GPU memory and the
    estimated share of the step spent in the selective scan.

    \b
    Examples:
      mamba-genome bench train --preset 1.4m --seq-len 16384 --batch-size 64
      mamba-genome bench train --preset 1.4m --seq-len 1048576 --grad-checkpointing \
          --scan-state-every 8 --checkpoint-skip 3
      mamba-genome bench train --preset 1.4m --seq-len 131072 --batch-size 4 --json b.json
    """
    import torch

    from ..outputs import atomic_write_text, check_output_path
    from ..workflows.bench_train import BenchTrainConfig, run_bench_train

    json_target = check_output_path(json_out, flag="--json", example="bench.json") if json_out else None
    if precision is None:
        on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        precision = "bf16-mixed" if on_gpu else "32"

    cfg = BenchTrainConfig(preset=preset, seq_len=seq_len, batch_size=batch_size, steps=steps, warmup=warmup,
                           memory=memory, micro_batch_size=micro_batch_size, grad_checkpointing=grad_checkpointing,
                           checkpoint_bf16=checkpoint_bf16, checkpoint_skip=checkpoint_skip,
                           scan_state_every=scan_state_every, precision=precision, device=device,
                           scan_backend=backend, scan_share=scan_share)
    bar = None
    if not quiet:
        from ..progress import progress_bar

        bar = progress_bar(total=warmup + steps, desc="steps", unit="step", file=sys.stderr, leave=False,
                   disable=None)
    progress = (lambda i, n: bar.update(1)) if bar is not None else None
    try:
        result = run_bench_train(cfg, progress=progress, log=None if quiet else (lambda m: click.echo(m, err=True)))
    except torch.cuda.OutOfMemoryError:
        hint = ("drop the hand-set flags to let the planner choose, or try --grad-checkpointing, a smaller "
                "--micro-batch-size" if cfg.hand_set else "try --memory low, a smaller --batch-size")
        raise UserError(f"out of GPU memory at --preset {preset} --seq-len {seq_len} --batch-size {batch_size}; "
                        f"{hint} or a shorter --seq-len") from None
    finally:
        if bar is not None:
            bar.close()
    print_table(result.summary_rows(), ["metric", "value"], file=sys.stdout)
    if json_target is not None:
        atomic_write_text(json_target, json.dumps(result.to_dict(), indent=2) + "\n")
        click.echo(f"wrote {json_out}", err=True)


def _bench_kernels_script() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    script = root / "benchmarks" / "bench_kernels.py"
    return script if (root / "pyproject.toml").is_file() and script.is_file() else None


@bench.command("kernels", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def kernels(args):
    """Run the kernel micro-benchmarks (benchmarks/bench_kernels.py); ARGS are passed on.

    Needs a source checkout (the benchmarks/ folder is not installed by pip).

    \b
    Example:
      mamba-genome bench kernels -- --help
    """
    import torch

    if not torch.cuda.is_available() and not any(a in ("-h", "--help") for a in args):
        raise UserError("`bench kernels` times the Triton kernels on a CUDA GPU and none is visible here; "
                        "run it on a GPU machine (correctness on CPU: python -m pytest tests/kernels)")
    script = _bench_kernels_script()
    if script is None:
        raise UserError("benchmarks/bench_kernels.py not found: `bench kernels` needs a source checkout "
                        "(git clone the repository and run it from there)")
    spec = importlib.util.spec_from_file_location("mamba_genome_bench_kernels", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    entry = getattr(mod, "main", None)
    if entry is None:
        raise UserError(f"{script} has no main() function")
    argv = sys.argv
    sys.argv = [str(script), *args]
    try:
        takes_argv = bool(inspect.signature(entry).parameters)
        rc = entry(list(args)) if takes_argv else entry()
    except SystemExit as exc:       # argparse --help / errors inside the script
        rc = exc.code
    finally:
        sys.argv = argv
    if rc not in (None, 0):
        sys.exit(rc if isinstance(rc, int) else 1)


@bench.command("tasks", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def tasks(args):
    """The labelled-task suite (benchmarks/tasks): prepare, run, report; ARGS are passed on.

    Needs a source checkout (the benchmarks/ folder is not installed by pip).

    \b
    Examples:
      mamba-genome bench tasks -- prepare --data /work/shared/data --out runs/tasks
      mamba-genome bench tasks -- run --tasks-dir runs/tasks --stages kmer,cnn
      mamba-genome bench tasks -- run --tasks-dir runs/tasks --stages probe,finetune --model runs/pretrain
    """
    root = Path(__file__).resolve().parents[2]
    if not ((root / "pyproject.toml").is_file() and (root / "benchmarks" / "tasks" / "cli.py").is_file()):
        raise UserError("benchmarks/tasks not found: `bench tasks` needs a source checkout "
                        "(git clone the repository and run it from there)")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.tasks.cli import main as tasks_main

    try:
        rc = tasks_main(list(args))
    except SystemExit as exc:  # argparse --help / usage errors
        rc = exc.code
    if rc not in (None, 0):
        sys.exit(rc if isinstance(rc, int) else 1)
