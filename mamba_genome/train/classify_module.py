"""Lightning module for fine-tuning a :class:`~mamba_genome.model.classifier.MambaClassifier`.

Owns the classification training step (cross-entropy on class-balanced
windows), validation on fixed held-out windows, the optimiser (AdamW, no
weight decay on A_log/D/norms/biases) and the schedules of the great-apes
fine-tuning in Gu & Dao (2023), App. E.3.4:

- learning rate: linear warmup, then cosine decay to the floor (1e-6), from the run's
  :class:`~mamba_genome.train.schedule.TrainSchedule` (pretraining's too; under ``--max-time``
  the engine's :class:`~mamba_genome.train.callbacks.TimeBudget` fits its length to the clock);
- sequence length: for long windows, start at 2^14 and double every epoch
  up to the target (:func:`~mamba_genome.train.schedule.seq_len_for_epoch`).

The module keeps a row of training curves per validation and the best one by
:meth:`ClassifyModule.row_score` (validation accuracy, ties: lower loss), which
is also what the engine's one best/last export
(:class:`~mamba_genome.train.callbacks.RunExporter`) keeps as ``best/``.
``last.ckpt`` (tensors and primitives only) carries the curves, the best row,
the time spent, the RNG states and, through the epoch and step, where the
class-balanced sampler was, so ``--resume`` continues on exactly the windows an
uninterrupted run would see.
"""
from __future__ import annotations

import time

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data.labels import BalancedWindowDataset, EpochSampler, FixedWindowDataset
from ..model.classifier import MambaClassifier
from ..model.lm import param_groups
from .rng import rng_state, set_rng_state
from .schedule import TrainSchedule, seq_len_for_epoch, warmup_cosine


class ClassifyModule(L.LightningModule):
    """Trains ``model`` on ``train_ds`` (keys from an :class:`EpochSampler`), validates on ``val_ds``.

    Args:
        model: the classifier to train.
        train_ds, val_ds: class-balanced train windows and fixed val windows.
        seq_len_fn: epoch -> training window length (sequence-length warmup).
        batch_size, num_workers: DataLoader settings (``batch_size``: the micro-batch, until a plan sets it).
        accumulate: micro-batches per optimizer step (until a plan sets it).
        val_batch_size: validation windows per forward pass (default ``batch_size``).
        plan_for, on_stage: ``seq_len -> StagePlan`` (the engine's
            :class:`~mamba_genome.train.engine.StagePlanner`) and its
            :class:`~mamba_genome.train.engine.StageRuntime`: each epoch's loader is built at the
            micro-batch and accumulation of its window length's plan (as checked by ``on_stage``).
        steps_per_epoch: optimizer steps per epoch (the training set holds that many steps' windows).
        schedule: the learning rate per optimizer step (its ``total_steps`` may be re-fitted to a time budget).
        weight_decay: AdamW decay on matrices.
        patience: stop training after this many validations in a row without a better best model
            (None: train to the step or time budget). Counted from the curves, so a resumed run
            continues the count.
    """

    def __init__(self, model: MambaClassifier, train_ds: BalancedWindowDataset, val_ds: FixedWindowDataset, *,
                 seq_len_fn, batch_size: int, schedule: TrainSchedule, weight_decay: float, num_workers: int = 0,
                 accumulate: int = 1, val_batch_size: int | None = None,
                 plan_for=None, on_stage=None, steps_per_epoch: int | None = None, patience: int | None = None):
        super().__init__()
        self.model = model
        self._t0 = time.perf_counter()
        self.train_ds, self.val_ds = train_ds, val_ds
        self.seq_len_fn = seq_len_fn
        self.batch_size, self.num_workers = batch_size, num_workers
        self.accumulate, self.val_batch_size = int(accumulate), int(val_batch_size or batch_size)
        self.plan_for, self.on_stage, self.steps_per_epoch = plan_for, on_stage, steps_per_epoch
        self.schedule, self.weight_decay = schedule, weight_decay
        self.curves: list[dict] = []
        self.best: dict | None = None
        self.patience = patience
        self.stopped_early = False
        self._val = []
        self._train_loss = []
        self._t0 = time.perf_counter()
        self._elapsed_before = 0.0  # training seconds of earlier sessions (--resume)
        self._resume_at: tuple[int, int] | None = None  # (epoch, global step) restored from last.ckpt

    def on_train_start(self):
        # the time budget starts with training, not with data setup (and counts earlier sessions)
        self._t0 = time.perf_counter() - self._elapsed_before

    # ----------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint):
        checkpoint["mg_state"] = {"curves": [dict(r) for r in self.curves],
                                  "best": dict(self.best) if self.best else None,
                                  "elapsed": float(time.perf_counter() - self._t0),
                                  "train_loss": [float(x) for x in self._train_loss], "rng": rng_state()}

    def on_load_checkpoint(self, checkpoint):
        st = checkpoint.get("mg_state", {})
        self.curves = [dict(r) for r in st.get("curves", [])]
        self.best = dict(st["best"]) if st.get("best") else None
        self._elapsed_before = float(st.get("elapsed", 0.0))
        self._train_loss = [torch.tensor(x) for x in st.get("train_loss", [])]
        self._resume_at = (int(checkpoint.get("epoch", 0)), int(checkpoint.get("global_step", 0)))
        set_rng_state(st.get("rng", {}))

    # ------------------------------------------------------------------ data
    def train_dataloader(self):
        """This epoch's windows (rebuilt every epoch), in micro-batches of its length's plan."""
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self._trainer else (0, 1)
        epoch = self._resume_at[0] if self._resume_at is not None else (self.current_epoch if self._trainer else 0)
        plan = self.plan_for(self.seq_len_fn(epoch)) if self.plan_for is not None else None
        if plan is not None and self.on_stage is not None and self._trainer is not None:
            plan = self.on_stage(self.trainer, plan) or plan
        if plan is not None:
            self.batch_size, self.accumulate = plan.micro_batch, plan.accumulate
        per_step = self.batch_size * self.accumulate  # this rank's windows per optimizer step
        if self.steps_per_epoch:
            self.train_ds.samples_per_epoch = self.steps_per_epoch * per_step * world
        sampler = EpochSampler(len(self.train_ds), self.seq_len_fn, rank, world)
        if self._resume_at is not None:  # --resume: continue the epoch at the first unseen window
            epoch, step = self._resume_at
            per_epoch = len(sampler) // per_step  # optimizer steps per epoch
            sampler.resume_at(epoch, max(0, step - epoch * per_epoch) * per_step)
            self._resume_at = None
        return DataLoader(self.train_ds, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=False, pin_memory=torch.cuda.is_available(), drop_last=True)

    def val_dataloader(self):
        return DataLoader(self.val_ds, batch_size=self.val_batch_size, shuffle=False, num_workers=self.num_workers)

    # --------------------------------------------------------------- training
    def training_step(self, batch, batch_idx):
        logits = self.model(batch["input_ids"], batch.get("length"))
        loss = F.cross_entropy(logits.float(), batch["label"])
        acc = (logits.argmax(-1) == batch["label"]).float().mean()
        self._train_loss.append(loss.detach())
        # no prog_bar (read back after every step) and no Python numbers (copied to the device): nothing
        # here waits for the GPU; the progress line reads the loss when it prints
        self.log_dict({"train_loss": loss, "train_acc": acc}, on_step=True, on_epoch=False)
        self.log("seq_len", torch.tensor(float(batch["input_ids"].shape[1])), on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        logits = self.model(batch["input_ids"], batch.get("length")).float()
        loss = F.cross_entropy(logits, batch["label"], reduction="sum")
        correct = (logits.argmax(-1) == batch["label"]).sum()
        self._val.append(torch.stack([loss, correct.float(), torch.tensor(float(len(logits)), device=loss.device)]))

    def on_validation_epoch_end(self):
        if not self._val:
            return
        tot = torch.stack(self._val).sum(0)
        self._val.clear()
        tot = self.trainer.strategy.reduce(tot, reduce_op="sum") if self.trainer.world_size > 1 else tot
        val_loss, val_acc = (tot[0] / tot[2]).item(), (tot[1] / tot[2]).item()
        self.log_dict({"val_loss": val_loss, "val_acc": val_acc}, prog_bar=True, sync_dist=False)
        if self.trainer.sanity_checking:
            return
        train_loss = torch.stack(self._train_loss).mean().item() if self._train_loss else float("nan")
        self._train_loss.clear()
        row = {"step": self.global_step, "epoch": self.current_epoch,
               "seq_len": self.seq_len_fn(self.current_epoch), "lr": self.lr_at(self.global_step),
               "train_loss": train_loss, "val_loss": val_loss, "val_acc": val_acc,
               "wall_s": time.perf_counter() - self._t0}
        self.curves.append(row)
        if self.best is None or self.row_score(row) > self.row_score(self.best):
            self.best = row
        if self.patience and self.trainer.state.fn == "fit" and self.validations_since_best() >= self.patience:
            self.trainer.should_stop = True   # every rank sees the same reduced metrics, so all stop together
            self.stopped_early = True

    @staticmethod
    def row_score(row: dict) -> tuple[float, float]:
        """What makes a validation better (higher): accuracy, then lower loss."""
        return float(row["val_acc"]), -float(row["val_loss"])

    def validations_since_best(self) -> int:
        """Validations (in fit) since the one that gave the best model; 0 right after a new best."""
        if self.best is None:
            return 0
        at = max(i for i, r in enumerate(self.curves) if r["step"] == self.best["step"])
        return len(self.curves) - 1 - at

    # -------------------------------------------------------------- optimiser
    def lr_at(self, step: int) -> float:
        """The schedule's learning rate at optimizer step ``step``."""
        return self.schedule.lr_at(step)

    def configure_optimizers(self):
        groups = param_groups(self.model, self.weight_decay)
        groups = [g for g in groups if g["params"]]
        opt = torch.optim.AdamW(groups, lr=self.schedule.lr, betas=(0.9, 0.95))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: self.lr_at(s) / self.schedule.lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


__all__ = ["ClassifyModule", "warmup_cosine", "seq_len_for_epoch"]
