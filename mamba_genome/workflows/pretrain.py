"""`pretrain`: next-token pretraining of a Mamba DNA language model on a genome.

The recipe follows Gu & Dao (2023), App. E.2-E.3 (DNA pretraining, after
HyenaDNA): AdamW (0.9, 0.95), weight decay 0.1, peak learning rate 8e-3 with
10% linear warmup and cosine decay, gradient clipping 1.0, about 2^20 tokens
per optimizer step on GPU (a short ``--max-time`` or ``--max-tokens`` run takes
2^19 or 2^18, to make about 2,000 steps: :func:`gpu_tokens_per_step`), and
sequence-length warmup from 1024 tokens doubling up to ``--seq-len``.
bf16-mixed on GPU (fp32 weights), fp32 on CPU.

With no data argument it trains the ``tiny`` preset on the bundled E. coli
K-12 MG1655 genome for under four minutes on a laptop CPU.

A run directory holds::

    best/ last/          model directories (config.json + model.safetensors)
    last.ckpt            resumable Lightning checkpoint (tensors + primitives only)
    metrics.json         final validation loss / bits per base / perplexity, tokens, time
    split.json args.json how the genome was split; the resolved arguments
    loss_curve.png       bits per base against tokens seen
    logs/v<k>/metrics.csv  (and logs/tensorboard/ when tensorboard is installed)
    .mamba-genome-run.json .mamba-genome.lock   the run-directory marker and lock

The run-directory policy (refuse a non-empty ``--out`` unless ``--resume`` or
``--force``, ``--force`` deletes only our files, one live run per directory,
no ``--out`` inside an input) is :mod:`mamba_genome.train.rundir`'s.
SIGTERM / SIGINT save ``last.ckpt`` at the current step and exit 143 / 130
with a note saying how to resume; ``--resume`` continues step for step as if
the run had never stopped (same windows, same RNG states).

Multi-GPU: ``--devices``, ``--num-nodes`` and ``--strategy ddp|fsdp`` go to
Lightning's Trainer, which also reads the SLURM and torchrun environments.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..train.rundir import RUN_DIR_ENV, RunDir, check_resume_checkpoint, launch_rank, resolve_run_dir

PRESET_NAMES = ("tiny", "1.4m", "7m")
GPU_TOKENS_PER_STEP = 2 ** 20     # paper: ~1M tokens per optimizer step (micro-batches: the memory planner's)
# A short run (--max-time / --max-tokens) halves its step, down to 2^18 tokens, until it makes about
# GPU_MIN_STEPS optimizer steps. One H200, 1.4m at 16 kbp, 270 s on U. maydis: held-out 1.8665 bits/base at
# 2^20 tokens per step (632 steps), 1.8442 at 2^19 (1,212), 1.8361 at 2^18 (2,272); BENCHMARKS.md section 4.
GPU_MIN_TOKENS_PER_STEP = 2 ** 18
GPU_MIN_STEPS = 2_000
GPU_LR = 8e-3
GPU_MAX_STEPS = 10_000
# CPU defaults for the out-of-the-box run (tiny preset, 2 cores, < 5 minutes).
CPU_SEQ_LEN = 512
CPU_BATCH = 4
CPU_LR = 4e-3
CPU_MAX_TIME = "3m45s"
CPU_VAL_WINDOWS = 48
GPU_VAL_WINDOWS = 256

BUNDLED_FASTA = Path(__file__).resolve().parent.parent / "bundled" / "ecoli_k12.fa.gz"
RUN_FILES = ("best", "last", "last.ckpt", "metrics.json", "split.json", "args.json", "loss_curve.png", "logs")
# args.json fields that are paths: stored absolute, so a run resumes from any directory
_PATH_ARGS = ("fasta", "data", "split_bed")


@dataclass
class PretrainArgs:
    """Arguments of :func:`pretrain` (the ``mamba-genome pretrain`` flags).

    ``None`` means "pick a default for the hardware": see :meth:`resolved`.
    """

    fasta: str | None = None            # --fasta: reference FASTA (plain/.gz/bgzip); ingested and cached
    data: str | None = None             # --data: a token store from `mamba-genome ingest`
    preset: str = "tiny"                # --preset: tiny | 1.4m | 7m (model size)
    seq_len: int | None = None          # --seq-len: final training window length (tokens)
    batch_size: int | None = None       # --batch-size: windows per optimizer step (all devices)
    micro_batch_size: int | None = None  # --micro-batch-size (hidden): windows per device per forward pass
    memory: str = "auto"                # --memory: auto (fastest that fits) | low (least memory)
    max_steps: int | None = None        # --max-steps: optimizer steps
    max_tokens: int | None = None       # --max-tokens: training tokens (converted to steps)
    max_time: str | float | None = None  # --max-time: wall-clock budget ("4h", "270s"); fits the schedule
    lr: float | None = None             # --lr: peak learning rate
    weight_decay: float = 0.1           # --weight-decay: AdamW decay on matrices
    warmup_fraction: float = 0.1        # fraction of steps of linear LR warmup
    min_lr_ratio: float = 0.1           # cosine floor, as a fraction of --lr
    grad_clip: float = 1.0              # gradient norm clipping
    out: str | None = None              # --out: run directory [runs/pretrain-<timestamp>]
    resume: bool = False                # --resume: continue the run in --out from last.ckpt
    force: bool = False                 # --force: overwrite an existing run directory
    devices: str | int | None = None    # --devices: number of devices (or "auto")
    num_nodes: int = 1                  # --num-nodes: nodes (SLURM/torchrun)
    strategy: str = "auto"              # --strategy: auto | ddp | fsdp | ...
    precision: str | None = None        # --precision: bf16-mixed (GPU) / 32-true (CPU)
    accelerator: str = "auto"           # --accelerator: auto | cpu | gpu
    seed: int = 0                       # --seed: model init and window sampling
    val_contigs: tuple[str, ...] = ()   # --val-contigs: contigs held out for validation
    test_contigs: tuple[str, ...] = ()  # --test-contigs: contigs held out for testing
    split_bed: str | None = None        # --split-bed: BED file chrom/start/end/split
    seq_warmup: bool = True             # --no-seq-warmup switches sequence-length warmup off
    seq_warmup_start: int = 1024        # --seq-warmup-start: first warmup length (paper: 1024)
    # Hidden expert flags over the memory planner's choice (None: the planner decides).
    gradient_checkpointing: bool | None = None  # --grad-checkpointing: recompute blocks in backward
    checkpoint_bf16: bool | None = None  # --checkpoint-bf16: keep those checkpoints in bf16 (half the memory)
    scan_state_every: int | None = None  # --scan-state-every: steps between scan states kept for the backward
    checkpoint_skip: int | None = None   # --checkpoint-skip: last N layers not checkpointed
    val_every: int | None = None        # --val-every: validate every N optimizer steps
    val_windows: int | None = None      # --val-windows: validation windows (evenly spaced)
    num_workers: int | None = None      # --num-workers: DataLoader workers [0 on CPU; GPU: gpu_loader_workers()]
    quiet: bool = False                 # --quiet: no progress bar, no summary
    model_overrides: dict = field(default_factory=dict)  # MambaConfig fields over the preset (tests)

    def __post_init__(self):
        if self.fasta and self.data:
            raise UserError("give either --fasta or --data, not both")
        if self.preset not in PRESET_NAMES:
            raise UserError(f"--preset must be one of {', '.join(PRESET_NAMES)}, got '{self.preset}'")
        budgets = [n for n, v in (("--max-steps", self.max_steps), ("--max-tokens", self.max_tokens),
                                  ("--max-time", self.max_time)) if v is not None]
        if len(budgets) > 1:
            raise UserError(f"{' and '.join(budgets)} exclude each other; give one training budget")
        for flag, v, lo in (("--seq-len", self.seq_len, 16), ("--batch-size", self.batch_size, 1),
                            ("--micro-batch-size", self.micro_batch_size, 1), ("--max-steps", self.max_steps, 1),
                            ("--max-tokens", self.max_tokens, 1), ("--val-every", self.val_every, 1),
                            ("--val-windows", self.val_windows, 1), ("--num-workers", self.num_workers, 0),
                            ("--num-nodes", self.num_nodes, 1),
                            ("--seq-warmup-start", self.seq_warmup_start, 16)):
            if v is not None and int(v) < lo:
                raise UserError(f"{flag} must be at least {lo}, got {v}")
        if self.max_time is not None:
            from ..train.schedule import parse_duration

            self.max_time = parse_duration(self.max_time)
        if self.lr is not None and not (0 < self.lr < 1):
            raise UserError(f"--lr must be in (0, 1), got {self.lr}")
        if self.checkpoint_bf16 and not self.gradient_checkpointing:
            raise UserError("--checkpoint-bf16 only applies with --grad-checkpointing; add that flag")
        if self.checkpoint_skip is not None and self.checkpoint_skip < 0:
            raise UserError(f"--checkpoint-skip must be >= 0, got {self.checkpoint_skip}")
        if self.checkpoint_skip and not self.gradient_checkpointing:
            raise UserError("--checkpoint-skip only applies with --grad-checkpointing; add that flag")
        if self.scan_state_every is not None and (self.scan_state_every < 8 or self.scan_state_every % 8):
            raise UserError(f"--scan-state-every must be a positive multiple of 8, got {self.scan_state_every}")
        from ..train.memory import MEMORY_MODES

        if self.memory not in MEMORY_MODES:
            raise UserError(f"--memory must be one of {', '.join(MEMORY_MODES)}, got '{self.memory}'")
        if not 0 <= self.weight_decay < 1:
            raise UserError(f"--weight-decay must be in [0, 1), got {self.weight_decay}")
        if not 0 <= self.warmup_fraction < 1:
            raise UserError(f"warmup fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"min lr ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.split_bed and (self.val_contigs or self.test_contigs):
            raise UserError("give either --split-bed or --val-contigs/--test-contigs, not both")
        if self.resume and self.force:
            raise UserError("--resume and --force exclude each other (--force starts the run over)")
        if self.resume and not self.out:
            raise UserError("--resume needs --out RUN_DIR (the run to continue)")
        self.val_contigs = tuple(self.val_contigs or ())
        self.test_contigs = tuple(self.test_contigs or ())
        try:
            self.architecture()
            self.expert()
        except (TypeError, ValueError) as exc:
            raise UserError(f"bad model settings: {exc}") from None

    def architecture(self):
        """The :class:`MambaConfig` of this run (the preset, with the architecture fields of the overrides)."""
        from ..model.config import MambaConfig
        from ..model.runtime import split_runtime

        return MambaConfig.from_preset(self.preset, **split_runtime(self.model_overrides)[0])

    def expert(self):
        """The expert flags (and run-time fields of the overrides) that win over the memory planner."""
        from ..model.runtime import RuntimeOptions, split_runtime
        from ..train.engine import ExpertOverrides

        rt = split_runtime(self.model_overrides)[1]
        RuntimeOptions(**rt)  # validates them
        flags = dict(gradient_checkpointing=self.gradient_checkpointing, checkpoint_bf16=self.checkpoint_bf16,
                     checkpoint_skip=self.checkpoint_skip, scan_state_every=self.scan_state_every)
        return ExpertOverrides(micro_batch_size=self.micro_batch_size,
                               **{**rt, **{k: v for k, v in flags.items() if v is not None}})


@dataclass
class _Plan:
    """The concrete settings of one run (defaults resolved for the hardware)."""

    on_gpu: bool
    world: int
    seq_len: int
    batch_size: int        # windows per optimizer step, all devices, at the final length
    micro_batch: int       # windows per device per forward pass, at the final length (the planner's)
    accumulate: int        # micro-batches per optimizer step, at the final length
    lr: float
    precision: str
    total_steps: int       # initial estimate under --max-time
    budget: str            # "max_steps" | "max_tokens" | "max_time"
    max_time: float | None
    val_every: int | None
    val_windows: int
    num_workers: int

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len


def _count_devices(devices, on_gpu: bool) -> int:
    import torch

    if devices in (None, "auto"):
        return torch.cuda.device_count() if on_gpu else 1
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    try:
        n = int(devices)
    except ValueError:
        raise UserError(f"--devices must be a number, a comma list or 'auto', got '{devices}'") from None
    if n == -1:
        return torch.cuda.device_count() if on_gpu else 1
    if n < 1:
        raise UserError(f"--devices must be at least 1, got {devices}")
    return n


def _plan(args: PretrainArgs, memory_info: tuple[str, int | None] | None = None) -> _Plan:
    """The run's settings; ``plan.planner`` (a :class:`~mamba_genome.train.engine.StagePlanner`) plans each
    sequence-length stage. ``memory_info``: ``(device_type, free bytes)``, by default this device's."""
    from ..train.engine import StagePlanner, default_precision, device_memory, resolve_accelerator

    on_gpu = resolve_accelerator(args.accelerator)[1]
    world = _count_devices(args.devices, on_gpu) * args.num_nodes if (on_gpu or args.devices) else 1
    seq_len = int(args.seq_len or (1024 if on_gpu else CPU_SEQ_LEN))
    if args.batch_size:
        batch = int(args.batch_size)
    elif on_gpu:
        batch = max(world, gpu_tokens_per_step(_expected_tokens(args, seq_len, world)) // seq_len)
    else:
        batch = max(1, CPU_BATCH * CPU_SEQ_LEN // seq_len)
    per_device = math.ceil(batch / world)
    device_type, free = memory_info if memory_info is not None else device_memory(on_gpu)
    # a warmup stage of seq_len / 2^j has 2^j times the windows per step (constant tokens per step)
    planner = StagePlanner(args.architecture(), lambda L: per_device * max(1, seq_len // L), device_type=device_type,
                           free_bytes=free, memory=args.memory, expert=args.expert())
    final = planner.plan(seq_len)
    micro, accumulate = final.micro_batch, final.accumulate
    batch = micro * accumulate * world  # rounded to what the devices actually run
    lr = float(args.lr if args.lr is not None else (GPU_LR if on_gpu else CPU_LR))
    precision = args.precision or default_precision(on_gpu)
    max_time = args.max_time
    if args.max_steps:
        budget, total = "max_steps", int(args.max_steps)
    elif args.max_tokens:
        budget, total = "max_tokens", max(1, math.ceil(args.max_tokens / (batch * seq_len)))
    elif max_time is not None or not on_gpu:
        budget, total = "max_time", 1000
        if max_time is None:
            from ..train.schedule import parse_duration

            max_time = parse_duration(CPU_MAX_TIME)
    else:
        budget, total = "max_steps", GPU_MAX_STEPS
    val_windows = int(args.val_windows or (GPU_VAL_WINDOWS if on_gpu else CPU_VAL_WINDOWS))
    val_every = args.val_every
    if val_every is None and budget != "max_time":
        val_every = max(1, total // 8)
    workers = args.num_workers if args.num_workers is not None else (gpu_loader_workers(world) if on_gpu else 0)
    plan = _Plan(on_gpu, world, seq_len, batch, micro, accumulate, lr, precision, total, budget, max_time,
                 val_every, val_windows, int(workers))
    plan.planner = planner  # not a field: args.json records the stage plans instead
    return plan


def gpu_tokens_per_step(expected_tokens: float | None) -> int:
    """Tokens per optimizer step on GPU for a run expected to train ``expected_tokens`` in all (None: a run
    bounded by its step count, or unbounded): 2^20 (the paper's), halved while that leaves fewer than
    ``GPU_MIN_STEPS`` steps, to at least 2^18. Short runs gain more from more steps than from larger ones.

    Example:
        >>> gpu_tokens_per_step(None), gpu_tokens_per_step(0.9e9), gpu_tokens_per_step(1.9e9), gpu_tokens_per_step(4e9)
        (1048576, 262144, 524288, 1048576)
    """
    tokens = GPU_TOKENS_PER_STEP
    if expected_tokens is None:
        return tokens
    while tokens > GPU_MIN_TOKENS_PER_STEP and expected_tokens / tokens < GPU_MIN_STEPS:
        tokens //= 2
    return tokens


def _expected_tokens(args: PretrainArgs, seq_len: int, world: int) -> float | None:
    """Tokens the run will train: ``--max-tokens``, or under ``--max-time`` alone the calibration's best
    tokens/s for the model and length (per device, times the devices) times the budget; None otherwise."""
    if args.max_steps:
        return None
    if args.max_tokens:
        return float(args.max_tokens)
    if args.max_time is None:
        return None
    from ..train.memory import best_tokens_per_s

    return best_tokens_per_s(args.architecture(), seq_len) * world * args.max_time  # seconds (__post_init__)


def gpu_loader_workers(world: int = 1, cpus: int | None = None) -> int:
    """DataLoader workers per rank on a GPU: half of this process's CPUs over the ranks, 2 to 8.

    Short windows make a step out of many windows (1,024 of 1 kbp for a 2^20-token step), each drawn in
    Python; on one H200 with 16 CPUs, 8 workers took the 1.4m training loop at 2^10 from 3.47 to 3.99 M
    tokens/s (4 workers left the GPU waiting; BENCHMARKS.md section 4)."""
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = os.cpu_count() or 2
    return max(2, min(8, cpus // (2 * max(1, world))))


# --------------------------------------------------------------------- run dir


def _run_inputs(args: PretrainArgs) -> dict:
    """The paths this run reads, which its run directory must not be or lie inside."""
    from ..data.store import default_store_path

    inputs = {}
    if args.data:
        inputs["--data"] = args.data
    if args.fasta and Path(args.fasta).is_file():
        inputs["--fasta (its token store)"] = default_store_path(args.fasta)
    return inputs


def _prepare_run_dir(args: PretrainArgs, create: bool = True, run_dir: Path | None = None,
                     rundir: RunDir | None = None) -> Path:
    """Check (and with ``create``, create, lock and with --force clear) the run directory.

    Called once with ``create=False`` before any work, so a bad --out fails
    fast, and again with ``create=True`` only after the data and split have
    been validated, so a bad input never leaves an empty run directory behind.
    The policy is :mod:`mamba_genome.train.rundir`'s (the other ranks of a
    multi-process run take rank 0's directory as it is); ``rundir`` (given
    with ``create``) keeps the lock until :meth:`RunDir.release`.
    """
    run_dir = run_dir or resolve_run_dir(args.out, "pretrain")
    rd = rundir if rundir is not None else RunDir(run_dir, "pretrain", RUN_FILES)
    rd.check(resume=args.resume, force=args.force, inputs=_run_inputs(args))
    if not create:
        return run_dir
    rd.prepare(resume=args.resume, force=args.force)
    if rundir is None:  # nobody to hand the lock to
        rd.release()
    return run_dir


def _merge_resume_args(args: PretrainArgs, run_dir: Path) -> PretrainArgs:
    """On --resume, the run's data, model, window and split settings come from its args.json.

    A ``--fasta`` / ``--data`` given again wins over the recorded path (the
    file may have moved); :func:`_check_same_genome` then checks it is the
    genome the run was trained on.
    """
    try:
        record = json.loads((run_dir / "args.json").read_text())
        saved = record["args"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"--resume: {run_dir}/args.json is missing or unreadable; cannot resume this run") from None
    keep = ("fasta", "data", "preset", "seq_len", "batch_size", "micro_batch_size", "val_contigs", "test_contigs",
            "split_bed", "seq_warmup", "seq_warmup_start", "model_overrides", "seed", "val_windows",
            "memory", "gradient_checkpointing", "checkpoint_bf16", "scan_state_every", "checkpoint_skip")
    merged = dataclasses.asdict(args)
    given_data = bool(args.fasta or args.data)
    for k in keep:
        if k in saved and not (given_data and k in ("fasta", "data")):
            merged[k] = saved[k]
    if not given_data:
        for k in ("fasta", "data"):
            p = merged.get(k)
            if p and not Path(p).exists():
                flag = f"--{k}"
                where = "relative to the directory it was started in; " if not Path(p).is_absolute() else ""
                raise UserError(f"--resume: this run's {flag} {p} is not found ({where}it may have moved); "
                                f"give {flag} PATH again to say where it is now")
    if args.max_steps is None and args.max_tokens is None and args.max_time is None:
        for k in ("max_steps", "max_tokens", "max_time", "lr"):
            merged[k] = saved.get(k)
    resolved = record.get("resolved") if isinstance(record, dict) else None
    if merged.get("batch_size") is None and isinstance(resolved, dict) and resolved.get("batch_size"):
        # the step size a short run chose from its budget stays when the run resumes with another budget
        merged["batch_size"] = int(resolved["batch_size"])
    merged["model_overrides"] = dict(merged.get("model_overrides") or {})
    merged["val_contigs"] = tuple(merged.get("val_contigs") or ())
    merged["test_contigs"] = tuple(merged.get("test_contigs") or ())
    return PretrainArgs(**merged)


def _genome_fingerprint(store) -> dict:
    src = store.manifest.get("source", {})
    return {"sha256": src.get("sha256"), "contigs": [[c["name"], int(c["length"])] for c in store.manifest["contigs"]]}


def _check_same_genome(run_dir: Path, store, source: str) -> str | None:
    """On --resume: refuse a genome other than the run's; a note if only the file's bytes differ."""
    try:
        saved = json.loads((run_dir / "args.json").read_text()).get("genome")
    except (OSError, ValueError):
        saved = None
    if not saved:  # a run from before genome fingerprints were recorded
        return None
    now = _genome_fingerprint(store)
    if now["sha256"] == saved.get("sha256"):
        return None
    old_c = [tuple(c) for c in saved.get("contigs", [])]
    new_c = [tuple(c) for c in now["contigs"]]
    if old_c == new_c:
        return (f"note: {source} is not byte-identical to the file this run started from, but has the same "
                f"{len(new_c)} contigs and lengths; continuing")
    gone = [n for n, _ in old_c if n not in dict(new_c)]
    changed = [n for n, ln in old_c if n in dict(new_c) and dict(new_c)[n] != ln]
    what = (f"contigs missing: {', '.join(gone[:3])}" if gone else
            f"contig lengths differ: {', '.join(changed[:3])}" if changed else
            f"{len(new_c) - len(old_c)} extra contig(s)")
    raise UserError(f"--resume: {source} is not the genome this run was trained on ({what}); give the original "
                    "--fasta/--data, or start a new run")


# ---------------------------------------------------------------------- data


def _open_data(args: PretrainArgs, progress: bool):
    from ..data.store import TokenStore, cached_store_path, ingest, is_store

    if args.data:
        p = Path(args.data)
        if not p.exists():
            raise UserError(f"--data {p}: no such token store; build one with `mamba-genome ingest REF -o {p}`")
        if not is_store(p):
            raise UserError(f"--data {p} is not a token store (no manifest); for a FASTA use --fasta")
        return TokenStore.open(p), f"store {p.resolve()}"
    if args.fasta:
        store = ingest(args.fasta, progress=progress)
        return store, f"FASTA {Path(args.fasta).resolve()}"
    if not BUNDLED_FASTA.is_file():
        raise UserError(f"the bundled genome {BUNDLED_FASTA} is missing from this installation; pass --fasta or --data")
    # keyed by content, so every install of the package shares one store of the bundled genome
    store = ingest(BUNDLED_FASTA, cached_store_path(BUNDLED_FASTA), progress=progress)
    return store, "bundled E. coli K-12 MG1655 (mamba_genome/bundled/ecoli_k12.fa.gz)"


# --------------------------------------------------------------------- train


def pretrain(args: PretrainArgs) -> dict:
    """Pretrain a Mamba LM as ``args`` say; returns the final metrics (also in ``metrics.json``).

    Raises:
        UserError: bad flags, unreadable data, a genome shorter than one
            window, an existing run directory without --resume/--force.
    """
    t_start = time.perf_counter()
    run_dir = _prepare_run_dir(args, create=False)
    if args.resume:
        args = _merge_resume_args(args, run_dir)
        _prepare_run_dir(args, create=False, run_dir=run_dir)  # the recorded inputs, too
        check_resume_checkpoint(run_dir / "last.ckpt")
    progress = not args.quiet
    plan = _plan(args)

    store, source = _open_data(args, progress)
    if args.resume and launch_rank() == 0:
        note = _check_same_genome(run_dir, store, source)
        if note and progress:
            _echo(note)
    from ..data.splits import SplitPlan, make_splits

    if args.resume and (run_dir / "split.json").is_file():
        split = SplitPlan.from_json((run_dir / "split.json").read_text())
    else:
        split = make_splits(store, val_contigs=args.val_contigs, test_contigs=args.test_contigs, bed=args.split_bed)
    if not split.regions("train"):
        raise UserError(f"the split leaves nothing to train on ({split.describe()})")
    if not split.regions("val"):
        raise UserError(f"the split has no validation sequence ({split.describe()}); use --val-contigs or --split-bed")
    longest_train = max(r.length for r in split.regions("train"))
    longest_val = max(r.length for r in split.regions("val"))
    if min(longest_train, longest_val) < plan.seq_len:
        which = "training" if longest_train < plan.seq_len else "validation"
        raise UserError(f"the genome is too short for --seq-len {plan.seq_len:,}: the longest {which} region is "
                        f"{min(longest_train, longest_val):,} bp ({split.describe()}); use a smaller --seq-len")
    rundir = RunDir(run_dir, "pretrain", RUN_FILES)
    run_dir = _prepare_run_dir(args, create=True, run_dir=run_dir, rundir=rundir)
    try:
        return _train(args, plan, store, source, split, run_dir, t_start, progress)
    finally:
        rundir.release()


def _train(args: PretrainArgs, plan: _Plan, store, source: str, split, run_dir: Path, t_start: float,
           progress: bool) -> dict:
    """The Lightning part of :func:`pretrain`, run while the run directory is locked."""
    import lightning as L

    from ..train.callbacks import StepBudget, StepProgressBar, TimeBudget
    from ..train.datamodule import GenomeDataModule
    from ..train.engine import (VAL_MAX_FRACTION, StageRuntime, TrainingRun, ValidationSchedule, resolve_accelerator,
                                write_json)
    from ..train.lm_module import LMModule
    from ..train.plots import plot_loss_curve
    from ..train.schedule import TrainSchedule, format_duration

    L.seed_everything(args.seed, workers=True, verbose=False)
    config = args.architecture()
    schedule = TrainSchedule(total_steps=plan.total_steps, final_seq_len=plan.seq_len, lr=plan.lr,
                             warmup_fraction=args.warmup_fraction, min_lr_ratio=args.min_lr_ratio,
                             seq_warmup=args.seq_warmup, start_seq_len=args.seq_warmup_start)
    module = LMModule(config, schedule, weight_decay=args.weight_decay)
    stage_log = _echo if progress else None
    # validation has no backward: twice the final stage's (probed) micro-batch fits on GPU
    data = GenomeDataModule(store.path, split, schedule, plan_for=plan.planner.plan,
                            on_stage=StageRuntime(stage_log, plan.planner), val_windows=plan.val_windows,
                            val_batch_factor=2 if plan.on_gpu else 1, num_workers=plan.num_workers,
                            pin_memory=plan.on_gpu, seed=args.seed)
    stage_plans = [plan.planner.plan(st.seq_len).to_dict() for st in schedule.stages()]
    n_params = module.model.num_parameters()

    record_args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(args).items()}
    for k in _PATH_ARGS:
        if record_args.get(k):
            record_args[k] = str(Path(record_args[k]).resolve())
    args_record = {"args": record_args, "resolved": {**dataclasses.asdict(plan), "stages": stage_plans},
                   "model_config": config.to_dict(),
                   "source": source, "store": str(store.path), "genome": _genome_fingerprint(store)}
    def provenance(pl_module) -> dict:
        return {"task": "pretrain", "data_source": source, "store": str(store.path), "split": split.describe(),
                "steps": int(pl_module.global_step), "tokens_seen": int(pl_module.tokens_seen),
                "seq_len": plan.seq_len, "tokens_per_step": plan.tokens_per_step, "preset": args.preset,
                "val": dict(pl_module.last_val)}

    val_schedule = ValidationSchedule(plan.val_every, max_fraction=VAL_MAX_FRACTION if plan.on_gpu else None)
    time_budget = None
    if plan.budget == "max_time":
        time_budget = TimeBudget(schedule, plan.max_time, val_every=plan.val_every, val_schedule=val_schedule)
        data.epoch_end = time_budget.next_refit
        budget = [time_budget]
    else:
        budget = [StepBudget(schedule)]

    run = TrainingRun(
        run_dir, command="pretrain", score=lambda m: (-m.last_val.get("val_loss", math.inf),), extra=provenance,
        val_schedule=val_schedule, progress=StepProgressBar(schedule, enabled=progress), budget=budget,
        accelerator=resolve_accelerator(args.accelerator)[0], devices=args.devices, num_nodes=args.num_nodes,
        strategy=args.strategy, precision=plan.precision,
        max_steps=plan.total_steps if plan.budget != "max_time" else -1, accumulate=plan.accumulate,
        grad_clip=args.grad_clip,
        log_every_n_steps=min(50, (plan.total_steps if plan.budget != "max_time" else 100) // 50))
    trainer = run.trainer

    if launch_rank() == 0:
        if not args.resume:
            write_json(run_dir / "args.json", args_record)
            (run_dir / "split.json").write_text(split.to_json() + "\n")
        else:  # the data may have been given again from a new place: record where it is now
            try:
                old = json.loads((run_dir / "args.json").read_text())
                if any(old["args"].get(k) != record_args.get(k) for k in ("fasta", "data")):
                    old["args"].update({k: record_args.get(k) for k in ("fasta", "data")})
                    old["source"], old["store"] = source, str(store.path)
                    old.setdefault("genome", args_record["genome"])
                    write_json(run_dir / "args.json", old)
            except (OSError, ValueError, KeyError, TypeError):
                pass

    if progress and trainer.is_global_zero:
        extra = f", {plan.accumulate} micro-batches of {plan.micro_batch}" if plan.accumulate > 1 else ""
        if plan.on_gpu and not args.batch_size and plan.tokens_per_step < GPU_TOKENS_PER_STEP:
            extra += " (a short run: smaller steps, more of them)"
        limit = (f"{format_duration(plan.max_time)} budget" if plan.budget == "max_time"
                 else f"{plan.total_steps:,} steps")
        stages = schedule.stages()
        warm = f", seq-len warmup {stages[0].seq_len}->{plan.seq_len}" if len(stages) > 1 else ""
        _echo(f"pretrain {args.preset} ({n_params:,} params) on {source}")
        _echo(f"  split: {split.describe()}")
        _echo(f"  {plan.batch_size} x {plan.seq_len:,} = {plan.tokens_per_step:,} tokens/step{extra}, lr {plan.lr:g}, "
              f"{limit}{warm}, {plan.precision} on {plan.world} {'GPU' if plan.on_gpu else 'CPU'} device(s)")
        _echo(f"  run dir: {run_dir}")

    run.fit(module, datamodule=data, resume=args.resume)

    if not trainer.is_global_zero:
        return {}
    if not module.last_val:
        raise UserError("training ended before any validation; increase --max-steps / --max-time")
    csvs = sorted((run_dir / "logs").glob("v*/metrics.csv"))
    try:
        plot_loss_curve(csvs, run_dir / "loss_curve.png", title=f"mamba-genome pretrain ({args.preset})")
    except Exception as exc:  # a plot must never lose a finished run
        _echo(f"warning: loss curve not drawn ({exc})")
    wall = time.perf_counter() - t_start
    lv = module.last_val
    stopped = ("max_time" if time_budget is not None and time_budget.stopped_by_budget else plan.budget)
    metrics = {
        "val_loss": lv["val_loss"], "val_bits_per_base": lv["val_bits_per_base"],
        "val_perplexity": lv["val_perplexity"], "val_bases": lv.get("val_bases"),
        "best_val_loss": -run.exporter.best_score[0], "best_step": run.exporter.best_step,
        "tokens_seen": int(module.tokens_seen), "steps": int(trainer.global_step),
        "wall_seconds": wall, "train_seconds": module.train_seconds,
        "tokens_per_second": module.tokens_seen / max(module.train_seconds, 1e-9),
        "preset": args.preset, "num_parameters": n_params, "seq_len": plan.seq_len,
        "tokens_per_step": plan.tokens_per_step, "lr": plan.lr, "precision": plan.precision,
        "devices": plan.world, "stopped_by": stopped, "memory": args.memory,
        # each stage's plan as it ran (on a GPU, after its probe step)
        "stages": [plan.planner.plan(st.seq_len).to_dict() for st in schedule.stages()],
        "data_source": source, "split": split.describe(), "run_dir": str(run_dir),
    }
    return run.write_metrics(metrics)


def _echo(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def summary_rows(metrics: dict) -> list[dict]:
    """One row for the end-of-run table."""
    from ..train.schedule import format_duration

    return [{
        "preset": metrics["preset"], "params": f"{metrics['num_parameters']:,}", "steps": f"{metrics['steps']:,}",
        "tokens": f"{metrics['tokens_seen']:,}", "wall": format_duration(metrics["wall_seconds"]),
        "tokens/s": f"{metrics['tokens_per_second']:,.0f}", "val_loss": f"{metrics['val_loss']:.4f}",
        "val_bits/base": f"{metrics['val_bits_per_base']:.4f}", "perplexity": f"{metrics['val_perplexity']:.3f}",
        "run_dir": metrics["run_dir"],
    }]


__all__ = ["PretrainArgs", "pretrain", "summary_rows", "BUNDLED_FASTA", "launch_rank", "RUN_DIR_ENV"]
