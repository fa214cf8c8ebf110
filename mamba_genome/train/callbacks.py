"""Lightning callbacks of a pretraining run: stopping, time budget, export, progress.

- :class:`StepBudget` stops the run after ``schedule.total_steps`` optimizer
  steps, so the last step is always followed by a validation (Lightning
  validates when ``should_stop`` is set).
- :class:`TimeBudget` (``--max-time``): after a few steps, re-fits
  ``schedule.total_steps`` to the wall-clock budget from the measured time per
  step (validation included), so the cosine schedule ends when the budget
  does, and stops early if the budget runs out anyway.
- :class:`RunExporter` writes ``best/`` (lowest validation loss) and
  ``last/`` model directories with :func:`mamba_genome.checkpoint.save_model`
  and the resumable Lightning checkpoint ``last.ckpt`` (tmp file, then
  ``os.replace``: never half-written), after every validation.
- :class:`StepProgressBar`: one tqdm bar over optimizer steps on stderr.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.progress import ProgressBar

from ..checkpoint import save_model
from ..model.lm import MambaLM
from .schedule import TrainSchedule, format_duration


def _in_fit_validation(trainer) -> bool:
    return trainer.state.fn == "fit" and not trainer.sanity_checking


class StepBudget(Callback):
    """Set ``trainer.should_stop`` once ``schedule.total_steps`` optimizer steps are done."""

    def __init__(self, schedule: TrainSchedule):
        self.schedule = schedule

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.schedule.total_steps and not (batch_idx + 1) % trainer.accumulate_grad_batches:
            trainer.should_stop = True


class TimeBudget(Callback):
    """Fit the step count of the schedule to ``budget_s`` seconds of wall time.

    The time per step is measured over this session (training, data and
    validation together) and re-fitted at steps 4, 8, 16, ... of the
    session until half the budget is spent, then frozen so the learning rate
    decays smoothly. ``reserve_s`` is kept for the final validation and export.
    The time spent is carried across ``--resume`` in the checkpoint.
    """

    def __init__(self, schedule: TrainSchedule, budget_s: float, reserve_s: float = 5.0, first_fit: int = 4,
                 val_every: int | None = None, n_val: int = 4):
        self.schedule = schedule
        self.val_every = val_every
        self.n_val = int(n_val)
        self.budget_s = float(budget_s)
        self.reserve_s = float(reserve_s)
        self.first_fit = int(first_fit)
        self.spent_before = 0.0     # seconds used by earlier sessions (resume)
        self._t0: float | None = None
        self._step0 = 0
        self._next_fit = self.first_fit
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
        per_step = (time.perf_counter() - self._t0) / done
        remaining = self.budget_s - spent - self.reserve_s - self._val_s
        total = self.schedule.total_steps
        if done >= self._next_fit and spent < 0.5 * self.budget_s:
            self._next_fit *= 2
            total = max(step + 1, step + int(remaining / per_step))
            if self.val_every is None and self.n_val > 0:
                # Validate about n_val times over the fitted run (and always at the end).
                # (both: Lightning re-derives val_check_batch from val_check_interval at each reload)
                every = max(1, total // self.n_val) * trainer.accumulate_grad_batches
                trainer.val_check_interval = trainer.val_check_batch = every
        stop = remaining < per_step
        if trainer.world_size > 1:  # every rank must take the same decision
            total, stop = trainer.strategy.broadcast((total, stop), src=0)
        self.schedule.total_steps = total
        if stop:
            self.stopped_by_budget = True
            self.schedule.total_steps = min(self.schedule.total_steps, step)
        if step >= self.schedule.total_steps:
            trainer.should_stop = True


def _unwrapped_state(trainer, pl_module) -> dict:
    """Full model state dict ``{name: tensor}`` (gathered under FSDP; call on every rank)."""
    full = trainer.strategy.lightning_module_state_dict()
    return {k[len("model."):]: v for k, v in full.items() if k.startswith("model.")}


class RunExporter(Callback):
    """Export ``best/``, ``last/`` and ``last.ckpt`` into ``run_dir`` after each validation.

    ``provenance()`` returns the JSON-able ``extra`` metadata for the model
    directories (data source, split, steps, tokens); it is called on rank 0.
    """

    def __init__(self, run_dir, provenance: Callable[[L.LightningModule], dict]):
        self.run_dir = Path(run_dir)
        self.provenance = provenance
        self.best_loss = math.inf
        self.best_step = -1

    @property
    def state_key(self) -> str:
        return "RunExporter"

    def state_dict(self) -> dict:
        return {"best_loss": float(self.best_loss), "best_step": int(self.best_step)}

    def load_state_dict(self, state: dict) -> None:
        self.best_loss = float(state.get("best_loss", math.inf))
        self.best_step = int(state.get("best_step", -1))

    def _export(self, trainer, pl_module, names: list[str]) -> None:
        state = _unwrapped_state(trainer, pl_module)
        if trainer.is_global_zero:
            model = MambaLM(pl_module.config)
            model.load_state_dict(state, strict=False)
            extra = self.provenance(pl_module)
            for name in names:
                save_model(model, self.run_dir / name, extra={**extra, "export": name})

    def save_ckpt(self, trainer) -> None:
        path = self.run_dir / "last.ckpt"
        tmp = self.run_dir / f".last.ckpt.tmp-{os.getpid()}"
        trainer.save_checkpoint(tmp, weights_only=False)  # full training state; collective, rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, path)
        trainer.strategy.barrier("mg_last_ckpt")

    def on_validation_end(self, trainer, pl_module):
        if not _in_fit_validation(trainer):
            return
        loss = pl_module.last_val.get("val_loss", math.inf)
        names = ["last"]
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, trainer.global_step
            names.insert(0, "best")
        self._export(trainer, pl_module, names)
        self.save_ckpt(trainer)


class StepProgressBar(ProgressBar):
    """A single tqdm bar over optimizer steps (stderr), with loss, bits/base, seq_len and tokens/s."""

    def __init__(self, schedule: TrainSchedule, enabled: bool = True):
        super().__init__()
        self.schedule = schedule
        self._enabled = enabled
        self.bar = None
        self._val_bpb = None

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
        from tqdm import tqdm

        self.bar = tqdm(total=self.schedule.total_steps, initial=trainer.global_step, desc="pretrain", unit="step",
                        file=sys.stderr, dynamic_ncols=True, leave=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.bar is None:
            return
        if self.bar.total != self.schedule.total_steps:
            self.bar.total = self.schedule.total_steps
        self.bar.n = trainer.global_step
        m = trainer.callback_metrics
        post = {}
        if "train/loss" in m:
            post["bpb"] = f"{float(m['train/loss']) / math.log(2):.3f}"
        if self._val_bpb is not None:
            post["val_bpb"] = f"{self._val_bpb:.3f}"
        post["L"] = batch["input_ids"].shape[1]
        post["tok/s"] = f"{pl_module.tokens_seen / max(pl_module.train_seconds, 1e-9):,.0f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def on_validation_end(self, trainer, pl_module):
        if _in_fit_validation(trainer) and "val_bits_per_base" in pl_module.last_val:
            self._val_bpb = pl_module.last_val["val_bits_per_base"]

    def on_train_end(self, trainer, pl_module):
        if self.bar is not None:
            self.bar.total = max(trainer.global_step, 1)
            self.bar.n = trainer.global_step
            self.bar.close()
            self.bar = None
            sys.stderr.write(f"trained {trainer.global_step} steps in {format_duration(pl_module.train_seconds)}\n")


__all__ = ["StepBudget", "TimeBudget", "RunExporter", "StepProgressBar"]
