"""Lightning callbacks of every training run: stopping, time budget, export, progress.

- :class:`StepBudget` stops the run after ``total_steps`` optimizer
  steps, so the last step is always followed by a validation (Lightning
  validates when ``should_stop`` is set).
- :class:`TimeBudget` (``--max-time``): after a few steps, re-fits
  ``schedule.total_steps`` to the wall-clock budget from the measured time per
  step (validation included), so the cosine schedule ends when the budget
  does, and stops early if the budget runs out anyway.
- :class:`RunExporter`, the one best/last export: ``best/`` (the best
  validation score) and ``last/`` model directories
  (:func:`mamba_genome.checkpoint.write_model_dir`) and the resumable Lightning
  checkpoint ``last.ckpt`` (tmp file, then ``os.replace``: never
  half-written), after every validation; the files are written on the run's
  :class:`~mamba_genome.train.writer.BackgroundWriter` while training goes on.
- :class:`GracefulStop`: on SIGTERM (what SLURM sends before a kill) or
  SIGINT, finish the optimizer step in flight, save ``last.ckpt`` for that
  step, and stop with :class:`~mamba_genome.errors.RunInterrupted` (a one-line
  note saying how to resume; exit status 143 / 130). Lightning's own SIGTERM
  handling (stop, exit 0, no checkpoint) is replaced while training runs.
- :class:`StepProgressBar`: one tqdm bar over optimizer steps on a terminal;
  off a terminal (a log file) one plain line every 30 s, at each sequence
  length stage and after each validation.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.progress import ProgressBar

from ..checkpoint import host_copy, host_weights, model_meta, write_model_dir
from ..errors import RunInterrupted
from ..progress import PLAIN_INTERVAL_S, format_count, format_eta, stream_is_tty
from .schedule import TrainSchedule, format_duration
from .writer import BackgroundWriter


def _in_fit_validation(trainer) -> bool:
    return trainer.state.fn == "fit" and not trainer.sanity_checking


class StepBudget(Callback):
    """Set ``trainer.should_stop`` once ``total_steps`` optimizer steps are done (a number, or a
    schedule's ``total_steps``, which a time budget may re-fit)."""

    def __init__(self, total_steps: "int | TrainSchedule"):
        self.total_steps = total_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        total = getattr(self.total_steps, "total_steps", self.total_steps)
        if trainer.global_step >= total and not (batch_idx + 1) % trainer.accumulate_grad_batches:
            trainer.should_stop = True


class TimeBudget(Callback):
    """Fit the step count of the schedule to ``budget_s`` seconds of wall time.

    The time per step (training, data and validation together) is re-fitted
    at steps 4, 8, 16, ... of the session until half the budget is spent,
    then frozen so the learning rate decays smoothly. Each fit uses the steps
    since the previous fit (the first, all of them), so the compilation and
    autotuning of the first steps and warmup stages do not end the run early.
    ``reserve_s`` is kept for the final validation and export.
    The time spent is carried across ``--resume`` in the checkpoint. ``max_steps``
    caps the fitted step count (a step budget given with the time budget).
    """

    def __init__(self, schedule: TrainSchedule, budget_s: float, reserve_s: float = 5.0, first_fit: int = 4,
                 val_every: int | None = None, n_val: int = 4, val_schedule=None, max_steps: int | None = None):
        self.schedule = schedule
        self.max_steps = max_steps
        self.val_schedule = val_schedule  # the engine's ValidationSchedule, whose interval this sets
        self.val_every = val_every
        self.n_val = int(n_val)
        self.budget_s = float(budget_s)
        self.reserve_s = float(reserve_s)
        self.first_fit = int(first_fit)
        self.spent_before = 0.0     # seconds used by earlier sessions (resume)
        self._t0: float | None = None
        self._step0 = 0
        self._next_fit = self.first_fit
        self._last_fit: tuple[float, int] | None = None   # (clock, step) of the previous fit
        self._val_s = 0.0
        self._val_t: float | None = None
        self.stopped_by_budget = False

    @property
    def state_key(self) -> str:
        return "TimeBudget"

    def state_dict(self) -> dict:
        return {"spent": float(self.spent()), "total_steps": int(self.schedule.total_steps)}

    def load_state_dict(self, state: dict) -> None:
        self.spent_before = float(state.get("spent", 0.0))
        if "total_steps" in state:
            self.schedule.total_steps = int(state["total_steps"])

    def spent(self) -> float:
        return self.spent_before + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def on_train_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()
        self._step0 = trainer.global_step
        self._next_fit = self.first_fit
        self._last_fit = None

    def on_validation_start(self, trainer, pl_module):
        self._val_t = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        if self._val_t is not None:
            self._val_s = max(self._val_s, time.perf_counter() - self._val_t)

    def next_refit(self, step: int) -> int | None:
        """Global step of the next re-fit (the data module ends its epoch there), or None once frozen."""
        if self._t0 is not None and self.spent() >= 0.5 * self.budget_s:
            return None
        return (self._step0 if self._t0 is not None else step) + self._next_fit

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        done = step - self._step0
        if done <= 0 or (batch_idx + 1) % trainer.accumulate_grad_batches:
            return
        spent = self.spent()
        now = time.perf_counter()
        per_step = (now - self._t0) / done
        remaining = self.budget_s - spent - self.reserve_s - self._val_s
        total = self.schedule.total_steps
        refit = done >= self._next_fit and spent < 0.5 * self.budget_s
        if refit:
            self._next_fit *= 2
            recent = per_step
            if self._last_fit is not None and step > self._last_fit[1]:
                recent = (now - self._last_fit[0]) / (step - self._last_fit[1])
            self._last_fit = (now, step)
            total = max(step + 1, step + int(remaining / recent))
            if self.max_steps is not None:
                total = min(total, int(self.max_steps))
        stop = remaining < per_step
        if trainer.world_size > 1:  # every rank must take the same decision
            total, stop = trainer.strategy.broadcast((total, stop), src=0)
        self.schedule.total_steps = total
        if refit and self.val_every is None and self.n_val > 0 and self.val_schedule is not None:
            # Validate about n_val times over the fitted run (and always at the end).
            self.val_schedule.set_every(max(1, total // self.n_val))
        if stop:
            self.stopped_by_budget = True
            self.schedule.total_steps = min(self.schedule.total_steps, step)
        if step >= self.schedule.total_steps:
            trainer.should_stop = True


def _unwrapped_state(trainer, pl_module) -> dict:
    """Full model state dict ``{name: tensor}`` (gathered under FSDP; call on every rank)."""
    full = trainer.strategy.lightning_module_state_dict()
    return {k[len("model."):]: v for k, v in full.items() if k.startswith("model.")}


class ResumableCheckpoint:
    """Writes ``run_dir/last.ckpt`` (the full training state) atomically, at most once per step.

    With a :class:`~mamba_genome.train.writer.BackgroundWriter` and one process, the state is
    copied to host memory on the training thread and written on the writer's thread; with
    several ranks (a collective save, sharded under FSDP) the write is synchronous.
    """

    def __init__(self, run_dir, writer: BackgroundWriter | None = None):
        self.path = Path(run_dir) / "last.ckpt"
        self.saved_step: int | None = None
        self.writer = writer

    def save(self, trainer) -> Path:
        """Collective (call on every rank); rank 0 writes a temporary file, then renames it."""
        if self.saved_step == trainer.global_step:
            return self.path
        tmp = self.path.with_name(f".last.ckpt.tmp-{os.getpid()}")
        connector = getattr(trainer, "_checkpoint_connector", None)   # Lightning's own dump, as save_checkpoint
        if self.writer is not None and trainer.world_size == 1 and connector is not None:
            checkpoint = host_copy(connector.dump_checkpoint(weights_only=False))
            io, path = trainer.strategy.checkpoint_io, self.path

            def write():
                io.save_checkpoint(checkpoint, tmp)
                os.replace(tmp, path)

            self.writer.submit(write)
        else:
            trainer.save_checkpoint(tmp, weights_only=False)  # full training state; collective, rank 0 writes
            if trainer.is_global_zero:
                os.replace(tmp, self.path)
            trainer.strategy.barrier("mg_last_ckpt")
        self.saved_step = trainer.global_step
        return self.path


class RunExporter(Callback):
    """The one best/last export of every training command: after each validation during fit,
    ``last/`` and (on a new best) ``best/`` model directories, then ``last.ckpt``.

    A model directory is :func:`~mamba_genome.checkpoint.write_model_dir`'s: ``config.json`` (the
    architecture, the constructor arguments, ``extra`` metadata) and ``model.safetensors``, the
    full state dict (gathered under FSDP) with the keys of a fresh ``type(pl_module.model)``.
    Host copies are taken at once; the files are written on ``ckpt.writer`` when it has one.

    Args:
        run_dir: the run directory.
        score: ``pl_module -> tuple`` of the validation just run, higher is better
            (pretrain: lower loss; finetune: higher accuracy, then lower loss).
        extra: ``pl_module -> dict``, JSON-able metadata for the model directories (data,
            split, steps, labels); called on rank 0. ``"export"`` (best/last) is added.
        ckpt: the run's :class:`ResumableCheckpoint`.
        restored_best: ``pl_module -> tuple | None``, the best score a resumed module already holds,
            for a checkpoint written before the exporter kept its own (None: none).
    """

    def __init__(self, run_dir, score: Callable[[L.LightningModule], tuple],
                 extra: Callable[[L.LightningModule], dict], ckpt: ResumableCheckpoint | None = None,
                 restored_best: Callable[[L.LightningModule], tuple | None] | None = None):
        self.run_dir = Path(run_dir)
        self.score = score
        self.restored_best = restored_best
        self.extra = extra
        self.ckpt = ckpt or ResumableCheckpoint(run_dir)
        self._ref: tuple[dict, list[str]] | None = None
        self.best_score: tuple | None = None
        self.best_step = -1

    @property
    def state_key(self) -> str:
        return "RunExporter"

    def state_dict(self) -> dict:
        return {"best_score": [float(x) for x in self.best_score] if self.best_score is not None else [],
                "best_step": int(self.best_step)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("best_score"):
            self.best_score = tuple(float(x) for x in state["best_score"])
        elif math.isfinite(float(state.get("best_loss", math.inf))):  # a pretrain checkpoint from before scores
            self.best_score = (-float(state["best_loss"]),)
        self.best_step = int(state.get("best_step", -1))

    def _reference(self, pl_module):
        """(``config.json`` without ``extra``, the state-dict keys a fresh model has): from a copy of
        the model built once on the meta device (the live one may be wrapped or sharded)."""
        if self._ref is None:
            import torch

            src = pl_module.model
            init_kwargs = dict(getattr(src, "init_kwargs", None) or {})
            with torch.device("meta"):
                ref = type(src)(src.config, **init_kwargs)
            self._ref = (model_meta(ref, init_kwargs=init_kwargs), list(ref.state_dict()))
        return self._ref

    def _export(self, trainer, pl_module, names: list[str]) -> None:
        state = _unwrapped_state(trainer, pl_module)
        if not trainer.is_global_zero:
            return
        meta, keys = self._reference(pl_module)
        weights = host_weights({k: state[k] for k in keys if k in state})
        extra = {**self.extra(pl_module), "step": int(trainer.global_step)}
        metas = [(self.run_dir / name, {**meta, "extra": {**extra, "export": name}}) for name in names]

        def write():
            for path, m in metas:
                write_model_dir(weights, m, path)

        if self.ckpt.writer is not None:
            self.ckpt.writer.submit(write)
        else:
            write()

    def on_train_start(self, trainer, pl_module):
        if self.best_score is None and self.restored_best is not None:
            best = self.restored_best(pl_module)
            self.best_score = tuple(float(x) for x in best) if best is not None else None

    def on_validation_end(self, trainer, pl_module):
        if not _in_fit_validation(trainer):
            return
        score = tuple(float(x) for x in self.score(pl_module))
        names = ["last"]
        if self.best_score is None or score > self.best_score:
            self.best_score, self.best_step = score, trainer.global_step
            names.insert(0, "best")
        self._export(trainer, pl_module, names)
        self.ckpt.save(trainer)


class WriteFence(Callback):
    """Wait for the run's background writes where the process is about to fork data-loader
    workers (the end of a training epoch, before a validation). Last in the callback list, after
    every callback that writes; :meth:`~mamba_genome.train.engine.TrainingRun.fit` waits for the
    rest when fit ends."""

    def __init__(self, writer: BackgroundWriter):
        self.writer = writer

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if _validates_after_this_batch(trainer):
            self.writer.flush()

    def on_train_epoch_end(self, trainer, pl_module):
        self.writer.flush()


_SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


def _validates_after_this_batch(trainer) -> bool:
    """Whether Lightning validates right after the current training batch (the engine's
    :class:`~mamba_genome.train.engine.ValidationSchedule` decides)."""
    loop = trainer.fit_loop.epoch_loop
    try:
        return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    except Exception:  # Lightning internals moved: stopping before that validation is still correct
        return False


class GracefulStop(Callback):
    """Turn SIGTERM / SIGINT into: finish this optimizer step, save ``last.ckpt``, stop with a note.

    Args:
        ckpt: the run's :class:`ResumableCheckpoint`.
        resume_hint: the command line that continues the run (for the note).

    The handlers are ours from ``on_train_start`` (after Lightning has put
    in its own SIGTERM handler) and the ones from before ``fit`` come back at
    teardown. If the step in flight is followed by a validation, the run
    validates (and exports) first; a signal during the last step lets the run
    finish normally. A second signal stops at once, without a new checkpoint.
    Under DDP every rank must stop at the same step: the ranks agree through
    one small all-reduce per optimizer step, and rank 0 forwards the signal to
    the processes Lightning launched.
    """

    def __init__(self, ckpt: ResumableCheckpoint, resume_hint: str):
        self.ckpt = ckpt
        self.resume_hint = resume_hint
        self.signum: int | None = None
        self._before: dict = {}
        self._trainer = None
        self._deferred = False
        self._saved: Path | None = None

    # ----------------------------------------------------------- handlers
    def _handler(self, signum, frame):
        if self.signum is not None:  # second signal: stop now
            step = self._trainer.global_step if self._trainer is not None else 0
            saved = (f"the last checkpoint is {self.ckpt.path}" if self.ckpt.path.is_file()
                     else "no checkpoint was saved")
            raise RunInterrupted(f"interrupted by {_SIGNAL_NAMES.get(signum, signum)} again at step {step}; "
                                 f"stopped without saving this step ({saved}); resume with: {self.resume_hint}",
                                 signum)
        self.signum = signum
        trainer = self._trainer
        if trainer is not None and trainer.is_global_zero:
            launcher = getattr(trainer.strategy, "launcher", None)
            if launcher is not None and hasattr(launcher, "kill"):
                try:
                    launcher.kill(signum)  # the other ranks Lightning started, if any
                except Exception:
                    pass

    def _install(self, signals) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in signals:
            if sig not in self._before:
                self._before[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler)

    def restore(self) -> None:
        """Put back the handlers from before fit (also called by the workflow after ``fit``: on an
        exception Lightning restores, after our hooks, what it found, which includes our SIGINT handler)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._before.items():  # kept: restoring twice is harmless
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    # -------------------------------------------------------------- hooks
    def setup(self, trainer, pl_module, stage):
        self._trainer = trainer
        self.signum, self._saved, self._deferred = None, None, False
        if threading.current_thread() is threading.main_thread():
            # the handlers from before fit, which come back at the end (Lightning installs its
            # SIGTERM handler after this hook and restores what it found, i.e. these, at its teardown)
            self._before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        # SIGINT during setup: stop after the first step, not with Lightning's KeyboardInterrupt exit 1
        self._install((signal.SIGINT,))

    def on_train_start(self, trainer, pl_module):
        self._trainer = trainer
        if getattr(trainer, "received_sigterm", False) and self.signum is None:
            self.signum = signal.SIGTERM
        self._install((signal.SIGINT, signal.SIGTERM))  # replaces Lightning's SIGTERM handler

    def _stop_requested(self, trainer) -> bool:
        stop = self.signum is not None
        if trainer.world_size > 1:
            stop = bool(trainer.strategy.reduce_boolean_decision(stop, all=False))
            if stop and self.signum is None:
                self.signum = signal.SIGTERM  # another rank got it
        return stop

    def _save(self, trainer) -> None:
        self._saved = self.ckpt.save(trainer)

    def _raise(self, trainer) -> None:
        name = _SIGNAL_NAMES.get(self.signum, str(self.signum))
        raise RunInterrupted(f"interrupted by {name} at step {trainer.global_step}; checkpoint saved to "
                             f"{self._saved}; resume with: {self.resume_hint}", self.signum)

    # The checkpoint is written at the end of the step (or after the validation that follows it), and
    # the run stops when the next batch would start: by then Lightning has logged the step's metrics.
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._saved is not None or (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # mid-accumulation: only whole optimizer steps are checkpointed
        self._deferred = False
        if not self._stop_requested(trainer):
            return
        if _validates_after_this_batch(trainer):
            self._deferred = True  # validate (and export best/last) first
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # Lightning resumes a checkpoint taken here one batch off; at on_train_epoch_end it is exact
            self._deferred = True
            return
        self._save(trainer)

    def on_validation_end(self, trainer, pl_module):
        if self._deferred and _in_fit_validation(trainer):
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        if not (self._deferred and self._saved is None):
            return
        # Lightning adds one to this counter (the logged step) when it resumes, assuming a checkpoint
        # from on_train_batch_end, where it has not been counted yet; here it has been.
        loop = trainer.fit_loop.epoch_loop
        loop._batches_that_stepped -= 1
        try:
            self._save(trainer)
        finally:
            loop._batches_that_stepped += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._saved is not None:
            self._raise(trainer)

    def on_exception(self, trainer, pl_module, exception):
        self.restore()

    def teardown(self, trainer, pl_module, stage):
        self.restore()
        self._trainer = None


def lm_progress_fields(trainer, pl_module, batch) -> dict:
    """Pretraining: sequence length, train bits/base, throughput."""
    m = trainer.callback_metrics
    out = {"seq": str(batch["input_ids"].shape[1])}
    if "train/loss" in m:
        out["bits/base"] = f"{float(m['train/loss']) / math.log(2):.3f}"
    out["tok/s"] = format_count(pl_module.tokens_seen / max(pl_module.train_seconds, 1e-9))
    return out


def lm_val_fields(pl_module) -> dict:
    lv = pl_module.last_val
    return {"val bits/base": f"{lv['val_bits_per_base']:.3f}"} if "val_bits_per_base" in lv else {}


BAR_REFRESH_S = 0.5  # the terminal bar is redrawn at most this often


def _batch_seq_len(batch) -> int | None:
    """The window length of a training batch (``input_ids`` (B, L)), without touching its values."""
    ids = batch.get("input_ids") if isinstance(batch, dict) else None
    return int(ids.shape[-1]) if ids is not None else None


class StepProgressBar(ProgressBar):
    """Progress over optimizer steps on stderr: a tqdm bar on a terminal, plain lines in a log.

    Off a terminal a line such as
    ``pretrain step 120/516  23%  seq 4096  bits/base 1.950  tok/s 4.9k  eta 2m10s``
    is printed every ``interval`` seconds, when the sequence length changes
    and after each validation (with its result), instead of a redraw per step.

    Args:
        schedule: the run's schedule (its ``total_steps`` may be re-fitted), or None with ``total_steps``.
        enabled: False for ``--quiet``.
        desc: the command name at the start of the bar / line.
        fields: ``(trainer, pl_module, batch) -> {name: text}`` shown after the step count.
        val_fields: ``pl_module -> {name: text}`` after a validation.
        tty: force the bar (True) or the lines (False); default: whether stderr is a terminal.
    """

    def __init__(self, schedule: TrainSchedule | None = None, enabled: bool = True, *, desc: str = "pretrain",
                 total_steps: int | None = None, fields=lm_progress_fields, val_fields=lm_val_fields,
                 interval: float = PLAIN_INTERVAL_S, tty: bool | None = None):
        super().__init__()
        self.schedule = schedule
        self._total_steps = total_steps
        self._enabled = enabled
        self.desc = desc
        self.fields = fields
        self.val_fields = val_fields
        self.interval = float(interval)
        self.tty = tty
        self.bar = None
        self._plain = False
        self._val = {}
        self._last_line = 0.0
        self._last_bar = 0.0
        self._t0 = 0.0
        self._step0 = 0
        self._seq = None
        self._post = {}

    @property
    def total(self) -> int:
        return int(self.schedule.total_steps if self.schedule is not None else self._total_steps or 0)

    def disable(self):
        self._enabled = False

    def enable(self):
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer, pl_module):
        if not (self._enabled and trainer.is_global_zero):
            return
        self._t0 = self._last_line = time.monotonic()
        self._step0 = trainer.global_step
        self._plain = not (self.tty if self.tty is not None else stream_is_tty(sys.stderr))
        if self._plain:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, initial=trainer.global_step, desc=self.desc, unit="step",
                        file=sys.stderr, dynamic_ncols=True, leave=True)

    def line(self, step: int, extra: dict | None = None) -> str:
        total = max(self.total, step, 1)
        parts = [f"{self.desc} step {step:,}/{total:,}", f"{100.0 * step / total:3.0f}%"]
        parts += [f"{k} {v}" for k, v in {**self._post, **self._val, **(extra or {})}.items()]
        done = step - self._step0
        if done > 0 and step < total:
            parts.append(f"eta {format_eta((total - step) * (time.monotonic() - self._t0) / done)}")
        return "  ".join(parts)

    def _print(self, text: str) -> None:
        self._last_line = time.monotonic()
        print(text, file=sys.stderr, flush=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not (self._enabled and trainer.is_global_zero) or (self.bar is None and not self._plain):
            return
        # the fields read the step's loss, which waits for the GPU: only when a line or the bar is redrawn
        seq = _batch_seq_len(batch)
        first_or_new_stage = seq != self._seq  # the first step, or a new sequence-length stage
        self._seq = seq
        now = time.monotonic()
        if self._plain:
            if first_or_new_stage or now - self._last_line >= self.interval:
                self._post = self.fields(trainer, pl_module, batch)
                self._print(self.line(trainer.global_step))
            return
        if not (first_or_new_stage or now - self._last_bar >= BAR_REFRESH_S):
            return
        self._last_bar = now
        self._post = self.fields(trainer, pl_module, batch)
        if self.bar.total != self.total:
            self.bar.total = self.total
        self.bar.n = trainer.global_step
        self.bar.set_postfix({**self._post, **self._val}, refresh=False)
        self.bar.refresh()

    def on_validation_end(self, trainer, pl_module):
        if not (_in_fit_validation(trainer) and self._enabled and trainer.is_global_zero):
            return
        self._val = self.val_fields(pl_module) if self.val_fields is not None else {}
        if self._plain and self._val:
            self._print(self.line(trainer.global_step))

    def on_train_end(self, trainer, pl_module):
        if not (self._enabled and trainer.is_global_zero):
            return
        if self.bar is not None:
            self.bar.total = max(trainer.global_step, 1)
            self.bar.n = trainer.global_step
            self.bar.close()
            self.bar = None
        elif not self._plain:
            return
        seconds = getattr(pl_module, "train_seconds", None)
        seconds = time.monotonic() - self._t0 if seconds is None else seconds
        sys.stderr.write(f"trained {trainer.global_step} steps in {format_duration(seconds)}\n")


__all__ = ["StepBudget", "TimeBudget", "RunExporter", "ResumableCheckpoint", "WriteFence", "GracefulStop",
           "StepProgressBar",
           "lm_progress_fields", "lm_val_fields"]
