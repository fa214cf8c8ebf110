"""The training engine of ``pretrain`` and ``finetune``: run-time choices per stage, and the one Trainer.

The commands differ only in their LightningModule, their data and their labels; everything else is here:

- :class:`StagePlanner` asks the memory planner (:func:`mamba_genome.train.memory.plan_stage`) once per
  sequence-length stage for the micro-batch and the :class:`~mamba_genome.model.runtime.RuntimeOptions`
  that give the most tokens/s in the device's free memory, so every warmup stage runs at full occupancy
  (a short stage packs more windows into each forward pass). The expert flags
  (:class:`ExpertOverrides`: ``--micro-batch-size``, ``--grad-checkpointing``, ...) win over the plan.
  A stage's windows per optimizer step are split into ``accumulate`` equal micro-batches.
- :class:`StageRuntime` starts each stage: on a CUDA device one probe step checks the plan first
  (:func:`~mamba_genome.train.memory.probe_stage`, stepping the micro-batch, then the policy, down
  on out-of-memory), then it applies the stage's runtime to the model (``set_runtime``), sets the
  Trainer's gradient accumulation, and logs the plan's reason once per stage.
- :class:`ValidationSchedule` (a callback) decides when to validate, in optimizer steps (Lightning's
  ``val_check_interval`` counts batches, which changes meaning when the accumulation changes per
  stage). With ``max_fraction`` (on GPU) the interval grows, from the measured step and validation
  times, until validation costs at most that fraction of the wall clock
  (:func:`val_interval_for_fraction`); the fraction spent is reported as ``val_fraction``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lightning.pytorch.callbacks import Callback

from ..model.config import MambaConfig
from ..model.runtime import RuntimeOptions
from .memory import MemoryPlan, estimate_bytes, plan_stage

# validation's share of the wall clock on GPU, the validations so far included: 2.5%, so that the last
# validation, which every run ends with, keeps the whole run under 3%
VAL_MAX_FRACTION = 0.025


@dataclass(frozen=True)
class ExpertOverrides:
    """The hidden expert flags; ``None`` leaves the planner's choice."""

    micro_batch_size: int | None = None       # --micro-batch-size
    gradient_checkpointing: bool | None = None  # --grad-checkpointing
    checkpoint_bf16: bool | None = None       # --checkpoint-bf16
    checkpoint_skip: int | None = None        # --checkpoint-skip
    scan_state_every: int | None = None       # --scan-state-every
    scan_backend: str | None = None           # kernels backend (tests, benchmarks)

    def runtime_changes(self) -> dict:
        names = ("gradient_checkpointing", "checkpoint_bf16", "checkpoint_skip", "scan_state_every", "scan_backend")
        out = {k: getattr(self, k) for k in names if getattr(self, k) is not None}
        if "checkpoint_bf16" in out:  # keep_scan follows checkpoint_bf16 unless set (RuntimeOptions)
            out["checkpoint_keep_scan"] = not out["checkpoint_bf16"]
        return out

    def describe(self) -> str:
        flags = {"micro_batch_size": "--micro-batch-size", "gradient_checkpointing": "--grad-checkpointing",
                 "checkpoint_bf16": "--checkpoint-bf16", "checkpoint_skip": "--checkpoint-skip",
                 "scan_state_every": "--scan-state-every"}
        return ", ".join(f"{flag} {getattr(self, k)}" for k, flag in flags.items() if getattr(self, k) is not None)


@dataclass(frozen=True)
class StagePlan:
    """How one sequence-length stage runs on each device."""

    seq_len: int
    batch: int              # windows per device per optimizer step (micro_batch * accumulate)
    micro_batch: int        # windows per device per forward pass
    accumulate: int         # micro-batches per optimizer step
    runtime: RuntimeOptions
    reason: str             # one line for the run log
    policy: str | None = None          # the planner's policy name (None: CPU, or run-time options set by hand)
    est_bytes: int | None = None       # predicted peak of one micro-step (None on CPU)
    measured_bytes: int | None = None  # the probe's peak, once the stage has been probed

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "runtime": self.runtime.to_dict()}

    def memory_plan(self) -> MemoryPlan:
        """This plan as the memory planner's :class:`~mamba_genome.train.memory.MemoryPlan` (for the probe;
        its reason without the ``seq-len ...: m x a micro-batches per step`` head, which :meth:`StagePlanner.probed`
        writes again)."""
        why = self.reason.split("; ", 1)[1] if self.reason.startswith("seq-len ") and "; " in self.reason \
            else self.reason
        return MemoryPlan(self.seq_len, self.micro_batch, self.runtime, self.est_bytes, why, self.policy,
                          self.measured_bytes)


def split_batch(per_device: int, micro: int) -> tuple[int, int]:
    """``(micro, accumulate)`` with ``micro * accumulate >= per_device``, as even as possible.

    The fewest micro-batches of at most ``micro`` windows; an accumulation count that divides
    ``per_device`` is preferred (then the windows per step are exact) when it costs at most one more
    micro-batch than the fewest.

    Example:
        >>> split_batch(64, 32), split_batch(64, 24), split_batch(10, 4)
        ((32, 2), (16, 4), (5, 2))
    """
    per_device, micro = max(1, int(per_device)), max(1, min(int(micro), int(per_device)))
    acc = math.ceil(per_device / micro)
    for a in (acc, acc + 1):
        if per_device % a == 0:
            return per_device // a, a
    return math.ceil(per_device / acc), acc


# The free memory the plan was made for, published to the processes a multi-GPU run starts from this one
# (Lightning re-runs the command line per rank): every rank must plan the same micro-batches.
FREE_BYTES_ENV = "MAMBA_GENOME_PLAN_FREE_BYTES"


def device_memory(on_gpu: bool) -> tuple[str, int | None]:
    """``(device_type, free bytes)`` to plan for (None on CPU), the same on every rank of a run.

    One process: the device's free memory now. The ranks Lightning starts: what rank 0 measured
    (:data:`FREE_BYTES_ENV`). Ranks started by torchrun / srun, which measure at different moments:
    90% of the device's total memory, the same on identical GPUs.
    """
    if not on_gpu:
        return "cpu", None
    rank = next((int(os.environ[k]) for k in ("RANK", "LOCAL_RANK") if os.environ.get(k, "").isdigit()), 0)
    if rank != 0 and os.environ.get(FREE_BYTES_ENV, "").isdigit():
        return "cuda", int(os.environ[FREE_BYTES_ENV])
    import torch

    if any(int(os.environ.get(k, "1") or 1) > 1 for k in ("WORLD_SIZE", "SLURM_NTASKS")):
        free = int(0.9 * torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    else:
        free = int(torch.cuda.mem_get_info()[0])
    os.environ[FREE_BYTES_ENV] = str(free)
    return "cuda", free


class StagePlanner:
    """The :class:`StagePlan` of each sequence length of a run (cached; pure given its inputs).

    Args:
        arch: the model's architecture.
        windows_per_step: ``seq_len -> windows per device per optimizer step`` at that length.
        device_type, free_bytes: what :func:`device_memory` returns (tests give fake ones).
        memory: ``"auto"`` or ``"low"`` (``--memory``).
        expert: the hidden expert flags, which win over the plan.
        rows_per_window: backbone rows each window costs in a forward pass (2 for a both-strands
            classifier, which runs every window and its reverse complement): memory and speed are
            planned for windows that many times as long.
    """

    def __init__(self, arch: MambaConfig, windows_per_step: Callable[[int], int], *, device_type: str,
                 free_bytes: int | None, memory: str = "auto", expert: ExpertOverrides | None = None,
                 rows_per_window: int = 1):
        self.arch = arch
        self.rows_per_window = max(1, int(rows_per_window))
        self.windows_per_step = windows_per_step
        self.device_type, self.free_bytes = device_type, free_bytes
        self.memory = memory
        self.expert = expert or ExpertOverrides()
        self._plans: dict[int, StagePlan] = {}

    def plan(self, seq_len: int) -> StagePlan:
        seq_len = int(seq_len)
        if seq_len not in self._plans:
            per_device = max(1, int(self.windows_per_step(seq_len)))
            p = plan_stage(self.arch, seq_len * self.rows_per_window, per_device, device_type=self.device_type,
                           free_bytes=self.free_bytes, memory=self.memory)
            micro, reason = p.micro_batch, p.reason
            changes = self.expert.runtime_changes()
            runtime = p.runtime.replace(**changes) if changes else p.runtime
            if self.expert.micro_batch_size:
                micro = min(int(self.expert.micro_batch_size), per_device)
            if self.expert.describe():
                reason = f"{reason}; overridden by {self.expert.describe()}"
            micro, acc = split_batch(per_device, micro)
            est = (estimate_bytes(self.arch, runtime, seq_len * self.rows_per_window, micro)
                   if p.est_bytes is not None else None)
            self._plans[seq_len] = StagePlan(seq_len, micro * acc, micro, acc, runtime,
                                             f"seq-len {seq_len:,}: {micro} x {acc} micro-batches per step; {reason}",
                                             p.policy if runtime == p.runtime else None, est)
        return self._plans[seq_len]

    def probed(self, plan: StagePlan, result: MemoryPlan) -> StagePlan:
        """The stage's plan after the probe ran ``result`` (one micro-step that fitted); it replaces the
        plan of that length from now on."""
        micro, acc = split_batch(plan.batch, result.micro_batch)
        new = StagePlan(plan.seq_len, micro * acc, micro, acc, result.runtime,
                        f"seq-len {plan.seq_len:,}: {micro} x {acc} micro-batches per step; {result.reason}",
                        result.policy, result.est_bytes, result.measured_bytes)
        self._plans[plan.seq_len] = new
        return new


def probe_tools(model, precision: str):
    """``(step_fn, device_memory)`` for :func:`~mamba_genome.train.memory.probe_stage` on the device of
    ``model`` (a MambaLM or MambaClassifier): one forward and backward of random bases under the run's
    autocast, and the CUDA peak-memory counter. None when the model is not on a CUDA device."""
    import torch

    from .memory import CudaMemory, lm_probe_step

    device = next(model.parameters()).device
    if device.type != "cuda":
        return None
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))
    return lm_probe_step(model, device, dtype), CudaMemory(device)


def probe_plan(planner: StagePlanner, plan: StagePlan, model, precision: str,
               log: Callable[[str], None] | None = None) -> StagePlan:
    """``plan`` checked by one probe step of ``model`` (:func:`~mamba_genome.train.memory.probe_stage`),
    stepped down on out-of-memory; the plan that ran replaces ``planner``'s for that length. ``plan``
    itself when the model is not on a CUDA device (:func:`probe_tools`).

    Raises:
        UserError: not even one window fits at the least-memory policy.
    """
    import torch

    from .memory import probe_stage

    tools = probe_tools(model, precision)
    if tools is None:
        return plan
    step_fn, memory = tools
    try:
        result = probe_stage(plan.memory_plan(), step_fn, planner.arch, plan.batch, free_bytes=planner.free_bytes,
                             device_memory=memory, log=log)
    except torch.OutOfMemoryError as exc:
        from ..errors import UserError

        raise UserError(f"out of GPU memory: {str(exc).splitlines()[0]}; use a shorter --seq-len, a smaller "
                        "model or a GPU with more free memory") from None
    return planner.probed(plan, result)


class StageRuntime:
    """Starts a stage when the data starts serving it (a new stage, or a resumed one).

    On a CUDA device (the planner's ``device_type``), one probe step at the stage's plan comes first
    (:func:`~mamba_genome.train.memory.probe_stage`: a real forward and backward of random bases;
    on an out-of-memory error, or a peak over the budget, a smaller micro-batch, then a policy that
    needs less memory), and the plan that ran becomes the stage's plan (``planner.probed``). Then the
    model's runtime (``set_runtime``) and the Trainer's gradient accumulation follow the plan, and
    ``log`` gets its reason once per stage (rank 0). Called from the data's ``train_dataloader``
    (before the loader is built at the plan's micro-batch) rather than ``on_train_epoch_start``,
    which Lightning skips when it resumes mid-epoch. On CPU nothing is probed; with several
    processes neither (each rank would step down on its own), and a resumed epoch keeps the
    micro-batch it was started with (``probe=False``).
    """

    def __init__(self, log: Callable[[str], None] | None = None, planner: StagePlanner | None = None):
        self.log = log
        self.planner = planner
        self._logged: set[int] = set()
        self._probed: set[int] = set()

    def _probe(self, trainer, plan: StagePlan) -> StagePlan:
        self._probed.add(plan.seq_len)
        if trainer.world_size > 1:
            return plan
        return probe_plan(self.planner, plan, trainer.lightning_module.model, trainer.precision,
                          log=self.log if trainer.is_global_zero else None)

    def __call__(self, trainer, plan: StagePlan, probe: bool = True) -> StagePlan:
        """Apply ``plan`` (probed first, see above); returns the plan the stage runs at."""
        if (probe and self.planner is not None and self.planner.device_type == "cuda"
                and plan.seq_len not in self._probed):
            plan = self._probe(trainer, plan)
        trainer.accumulate_grad_batches = plan.accumulate
        trainer.lightning_module.model.set_runtime(plan.runtime)
        if self.log is not None and trainer.is_global_zero and plan.seq_len not in self._logged:
            self._logged.add(plan.seq_len)
            self.log(plan.reason)
        return plan


def val_interval_for_fraction(val_seconds: float, step_seconds: float, max_fraction: float = VAL_MAX_FRACTION) -> int:
    """The fewest optimizer steps between validations for them to take at most ``max_fraction`` of the clock.

    ``k`` steps then one validation spend ``val / (k * step + val)`` of the time in validation;
    that is at most ``f`` for ``k >= val * (1 - f) / (f * step)``.

    Example:
        >>> val_interval_for_fraction(3.0, 0.1, 0.03)   # 3 s validation, 0.1 s steps: 970 steps
        970
    """
    if not 0 < max_fraction < 1:
        raise ValueError(f"max_fraction must be in (0, 1), got {max_fraction}")
    if val_seconds <= 0 or step_seconds <= 0:
        return 1
    return max(1, math.ceil(val_seconds * (1.0 - max_fraction) / (max_fraction * step_seconds) - 1e-9))


def next_val_interval(took: float, val_total: float, train_total: float, step_seconds: float,
                      max_fraction: float = VAL_MAX_FRACTION) -> int:
    """Steps to the next validation: enough for that interval alone to keep ``max_fraction``
    (:func:`val_interval_for_fraction` of the validation just taken), and enough for the session
    so far plus the next validation (``val_total + took`` of validation, ``train_total`` of training)
    to keep it too, so a first validation that compiled its kernels is paid back.

    Example:
        >>> next_val_interval(1.0, 1.0, 100.0, 1.0, 0.03)      # on budget: the interval rule
        33
        >>> next_val_interval(1.0, 10.0, 100.0, 1.0, 0.03)     # a 9 s first validation to pay back
        256
    """
    k = val_interval_for_fraction(took, step_seconds, max_fraction)
    if step_seconds > 0:
        owed = (val_total + took) * (1.0 - max_fraction) / max_fraction - train_total
        k = max(k, math.ceil(owed / step_seconds - 1e-9))
    return k


class ValidationSchedule(Callback):
    """When to validate, in optimizer steps, and how much of the wall clock validation took.

    Validates every ``every`` optimizer steps (and when the run stops). With ``max_fraction``
    (None: a fixed interval) the steps between validations are also at least
    :func:`next_val_interval` of the seconds per training step and of the validations so far,
    as measured (on rank 0, broadcast so every rank validates at the same step);
    the next validation step is then part of the checkpoint. :meth:`set_every` lets a time
    budget change ``every`` (the validations it wants over the fitted run). A validation's
    time runs to the end of the export after it (the engine puts the exporter first).
    """

    def __init__(self, every: int | None, max_fraction: float | None = None):
        self.every = int(every) if every else None
        self.max_fraction = max_fraction
        self.last_val_step = 0            # adaptive mode: the step of the last validation
        self.min_interval = 1             # adaptive mode: fewest steps between validations for max_fraction
        self.val_seconds = 0.0            # spent validating during fit, this session
        self.train_seconds = 0.0          # in the training loop, validation excluded, this session
        self._steps_timed = 0
        self._val_t: float | None = None
        self._t_step: float | None = None
        self._last_step: int | None = None

    @property
    def state_key(self) -> str:
        return "ValidationSchedule"

    def state_dict(self) -> dict:
        return {"last_val_step": int(self.last_val_step), "min_interval": int(self.min_interval),
                "every": -1 if self.every is None else int(self.every)}

    def load_state_dict(self, state: dict) -> None:
        self.last_val_step = int(state.get("last_val_step", 0))
        self.min_interval = int(state.get("min_interval", 1))
        if int(state.get("every", -1)) > 0:
            self.every = int(state["every"])

    def set_every(self, every: int) -> None:
        self.every = max(1, int(every))

    @property
    def val_fraction(self) -> float:
        """Validation's share of this session's training-loop wall clock."""
        total = self.val_seconds + self.train_seconds
        return self.val_seconds / total if total > 0 else 0.0

    def due(self, step: int) -> bool:
        """Whether the optimizer step ``step`` (just taken) is followed by a validation."""
        if step <= 0 or self.every is None and self.max_fraction is None:
            return False
        if self.max_fraction is None:
            return step % self.every == 0
        return step - self.last_val_step >= max(self.every or 10 ** 9, self.min_interval)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, pl_module, stage):
        loop = trainer.fit_loop.epoch_loop

        def should_check_val(data_fetcher):
            if not loop._should_check_val_epoch():
                return False
            if trainer.should_stop and trainer.fit_loop._can_stop_early:
                return True   # the last step is always followed by a validation
            if loop.restarting and loop.restarted_on_last:
                # resumed from a checkpoint of a finished step (epoch end, validation end): Lightning
                # then skips the validation and counts that step, as its own check would have it
                return True
            return not loop._should_accumulate() and self.due(trainer.global_step)

        loop._should_check_val_fx = should_check_val   # the instance attribute wins over Lightning's method

    def on_train_start(self, trainer, pl_module):
        self._t_step = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        if self._t_step is not None:
            self.train_seconds += now - self._t_step
        self._t_step = now
        if trainer.global_step != self._last_step:
            self._last_step = trainer.global_step
            self._steps_timed += 1

    def on_validation_start(self, trainer, pl_module):
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._val_t = time.perf_counter()
            self.last_val_step = trainer.global_step   # before the export writes it into last.ckpt

    def on_validation_end(self, trainer, pl_module):
        if self._val_t is None:
            return
        took = time.perf_counter() - self._val_t
        self._val_t = None
        self.val_seconds += took
        self._t_step = time.perf_counter()     # the next step's clock starts after validation
        if self.max_fraction is not None and self._steps_timed:
            k = next_val_interval(took, self.val_seconds, self.train_seconds, self.train_seconds / self._steps_timed,
                                  self.max_fraction)
            if trainer.world_size > 1:
                k = trainer.strategy.broadcast(k, src=0)
            self.min_interval = int(k)


# ------------------------------------------------------------------------------ the Trainer
def resolve_accelerator(accelerator: str) -> tuple[str, bool]:
    """``(Lightning accelerator, on_gpu)`` for ``--accelerator auto|cpu|gpu|...``."""
    import torch

    on_gpu = accelerator != "cpu" and torch.cuda.is_available()
    if accelerator == "auto":
        return ("gpu" if on_gpu else "cpu"), on_gpu
    return ("gpu" if on_gpu and accelerator in ("gpu", "cuda") else accelerator), on_gpu


def default_precision(on_gpu: bool) -> str:
    """bf16 autocast over fp32 weights on a GPU that has bf16, fp32 otherwise."""
    if not on_gpu:
        return "32-true"
    import torch

    try:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    except (AssertionError, RuntimeError):  # no CUDA runtime to ask (tests fake a GPU)
        return "bf16-mixed"


def quiet_lightning() -> None:
    """Lightning's banner lines and the warnings that do not apply to our runs off; the rest still show."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for msg in (".*does not have many workers.*", ".*num_workers.*", ".*LeafSpec.*", ".*is deprecated.*",
                ".*Checkpoint directory.*exists and is not empty.*", ".*sync_dist=True.*",
                ".*Experiment logs directory.*", ".*Trying to infer the `batch_size`.*",
                ".*The number of training batches.*", ".*tensorboardX.*", ".*val_check_interval.*",
                ".*your dataloader is not resumable.*"):  # it is: the data module / sampler state
        warnings.filterwarnings("ignore", message=msg)


def write_json(path, obj) -> None:
    """``obj`` as indented JSON, atomically (a reader never sees half a file)."""
    from ..outputs import atomic_write_text

    atomic_write_text(Path(path), json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _loggers(run_dir: Path) -> list:
    from lightning.pytorch.loggers import CSVLogger

    log_root = run_dir / "logs"
    version = f"v{len(list(log_root.glob('v*')))}" if log_root.is_dir() else "v0"
    loggers = [CSVLogger(str(run_dir), name="logs", version=version)]
    try:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is not None:
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(str(run_dir), name="logs", version="tensorboard"))
    except Exception:  # pragma: no cover - optional dependency
        pass
    return loggers


class TrainingRun:
    """The one Trainer of a ``pretrain`` or ``finetune`` run, with its callbacks and run-directory files.

    Args:
        run_dir: the (locked) run directory: ``best/``, ``last/``, ``last.ckpt``, ``logs/``, ``metrics.json``.
        command: ``"pretrain"`` or ``"finetune"`` (the resume hint, the progress bar).
        score, extra, restored_best: what the export keeps as best, the metadata of the model
            directories, and the best a resumed module already holds
            (:class:`~mamba_genome.train.callbacks.RunExporter`).
        val_schedule: when to validate (:class:`ValidationSchedule`).
        progress: the progress display (:class:`~mamba_genome.train.callbacks.StepProgressBar`).
        budget: the callbacks that end the run (a step budget, a time budget).
        accelerator, devices, num_nodes, strategy, precision: for Lightning (``resolve_accelerator``,
            ``default_precision``).
        max_steps: optimizer steps (-1: the budget callbacks decide).
        accumulate: micro-batches per optimizer step at the start (each stage sets its own).
        grad_clip: gradient-norm clipping (0 / None: off).
        use_distributed_sampler: False when the data shards itself over ranks.
        log_every_n_steps: rows of ``logs/v<k>/metrics.csv``.
    """

    def __init__(self, run_dir, *, command: str, score: Callable, extra: Callable, val_schedule: ValidationSchedule,
                 progress, budget: list | tuple = (), accelerator: str = "auto", devices="auto", num_nodes: int = 1,
                 strategy: str = "auto", precision: str = "32-true", max_steps: int = -1, accumulate: int = 1,
                 grad_clip: float | None = 1.0, use_distributed_sampler: bool = True,
                 log_every_n_steps: int = 50, restored_best: Callable | None = None):
        import lightning as L
        import torch
        from lightning.fabric.utilities.exceptions import MisconfigurationException

        from .callbacks import GracefulStop, ResumableCheckpoint, RunExporter, WriteFence
        from .writer import BackgroundWriter

        quiet_lightning()  # after importing lightning, which sets its loggers to INFO
        self.run_dir = Path(run_dir)
        self.resume_hint = f"mamba-genome {command} --out {self.run_dir} --resume"
        self.writer = BackgroundWriter()       # exports and last.ckpt are written while training goes on
        self.ckpt = ResumableCheckpoint(self.run_dir, self.writer)
        self.exporter = RunExporter(self.run_dir, score, extra, self.ckpt, restored_best)
        self.graceful = GracefulStop(self.ckpt, self.resume_hint)
        self.val_schedule = val_schedule
        # the exporter before the schedule: its share of the clock counts as validation's
        callbacks = [self.exporter, val_schedule, self.graceful, progress, *budget, WriteFence(self.writer)]
        try:
            self.trainer = L.Trainer(
                accelerator=accelerator, devices=devices if devices is not None else "auto", num_nodes=num_nodes,
                strategy=strategy, precision=precision, max_epochs=-1, max_steps=max_steps,
                gradient_clip_val=grad_clip or None, accumulate_grad_batches=accumulate,
                # every epoch (a sequence-length stage) gets its own loaders; when to validate is
                # val_schedule's, in optimizer steps
                reload_dataloaders_every_n_epochs=1, check_val_every_n_epoch=None, num_sanity_val_steps=0,
                logger=_loggers(self.run_dir), callbacks=callbacks, enable_checkpointing=False,
                enable_model_summary=False, log_every_n_steps=max(1, int(log_every_n_steps)),
                default_root_dir=str(self.run_dir), use_distributed_sampler=use_distributed_sampler)
        except (ValueError, MisconfigurationException) as exc:  # Lightning refuses the combination (FSDP on
            from ..errors import UserError                          # CPU, a GPU that is not there): one line

            flags = " ".join([f"--accelerator {accelerator}"] + [f"--{k} {v}" for k, v in
                                                                  (("devices", devices), ("strategy", strategy))
                                                                  if v not in (None, "auto")])
            raise UserError(f"{flags}: {str(exc).splitlines()[0]}") from None
        torch.set_float32_matmul_precision("high" if accelerator == "gpu" else "highest")

    def fit(self, module, datamodule=None, *, resume: bool = False) -> None:
        """``trainer.fit`` (from ``last.ckpt`` with ``resume``); SIGTERM / SIGINT end it with a checkpoint
        and :class:`~mamba_genome.errors.RunInterrupted` (the callbacks' note)."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from ..errors import RunInterrupted
        from .rundir import launch_rank

        if launch_rank() == 0:
            (self.run_dir / "metrics.json").unlink(missing_ok=True)   # until this run has finished
        ckpt = str(self.run_dir / "last.ckpt") if resume else None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
            warnings.filterwarnings("ignore", category=UserWarning, module="pytorch_lightning")
            finished = False
            try:
                self.trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
                finished = True
            except SIGTERMException:  # Lightning's own stop, before our handler was in place
                saved = f"the last checkpoint is {self.ckpt.path}" if self.ckpt.path.is_file() \
                    else "no checkpoint was saved"
                raise RunInterrupted(f"interrupted by SIGTERM before training started; {saved}", 15) from None
            finally:
                self.graceful.restore()
                # every file written is complete before fit returns or its error shows; a failed
                # write is the error only when nothing else went wrong
                self.writer.flush(raise_errors=finished)

    def write_metrics(self, metrics: dict) -> dict:
        """``metrics.json``, the last file a finished run writes, with the validation's share of the clock
        (``val_fraction``); returns what it wrote."""
        metrics = {**metrics, "val_fraction": round(self.val_schedule.val_fraction, 4)}
        write_json(self.run_dir / "metrics.json", metrics)
        return metrics


__all__ = ["ExpertOverrides", "StagePlan", "StagePlanner", "StageRuntime", "ValidationSchedule", "TrainingRun",
           "VAL_MAX_FRACTION", "FREE_BYTES_ENV", "device_memory", "split_batch", "val_interval_for_fraction",
           "next_val_interval",
           "resolve_accelerator", "default_precision", "quiet_lightning", "write_json", "probe_tools", "probe_plan"]
