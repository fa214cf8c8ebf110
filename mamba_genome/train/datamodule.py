"""`GenomeDataModule`: training and validation batches from a token store and a split plan.

Training uses :class:`~mamba_genome.data.sampler.RandomWindowDataset` over
the ``train`` regions (random windows, N filtering, reverse-complement
augmentation); validation uses a fixed, evenly spaced subset of
:class:`~mamba_genome.data.sampler.TiledWindowDataset` tiles over the ``val``
regions, always at the final sequence length.

Sequence-length warmup: the Trainer reloads the training DataLoader every
"epoch" (``reload_dataloaders_every_n_epochs=1``), and an epoch here is
exactly the optimizer steps left in the current warmup stage. Each reload
asks the :class:`~mamba_genome.train.schedule.TrainSchedule` which stage the
global step is in and the engine's planner (:class:`~mamba_genome.train.engine.StagePlanner`)
how that length runs: the micro-batch and gradient accumulation (a short stage
packs more windows per forward pass) and the memory policy, which ``on_stage``
applies to the Trainer and the model. Windows are a pure function of (seed,
global step at the reload, index).

Exact resume: the data module's ``state_dict`` (saved in ``last.ckpt``) is
the current epoch (its first step, length, window length, micro-batch and
accumulation) and how many
micro-batches of it this rank has consumed; a resumed run rebuilds that same
epoch and starts it at the next unseen window, so it trains on exactly the
windows, in the same order, as a run that was never interrupted.

Workers and pinned memory are used on GPU; on CPU the default is no worker
processes (the 2-core laptop case, where workers only compete with the model).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import lightning as L
from torch.utils.data import DataLoader

from ..data.sampler import RandomWindowDataset, ResumableShardSampler, TiledWindowDataset
from ..data.splits import SplitPlan
from .engine import StagePlan
from .schedule import TrainSchedule


def _collate_ids(items):
    import torch

    return {"input_ids": torch.stack([it["input_ids"] for it in items])}


class GenomeDataModule(L.LightningDataModule):
    """Batches of ``input_ids`` (B, L) for pretraining.

    Args:
        store_path: token store directory.
        plan: the train/val/test split.
        schedule: the run's schedule (sequence-length stage per step).
        plan_for: ``seq_len -> StagePlan`` (micro-batch, accumulation, runtime of that length).
        on_stage: ``(trainer, StagePlan, probe=True) -> StagePlan``, called when a stage starts being
            served (:class:`~mamba_genome.train.engine.StageRuntime`); the epoch runs at the plan it
            returns (on a GPU, after a probe step).
        val_windows: at most this many validation windows (evenly spaced tiles).
        val_batch_size: validation windows per forward pass; by default ``val_batch_factor`` times the
            final length's micro-batch, read when the validation loader is built (after that stage's
            probe, once it has run).
        val_batch_factor: see ``val_batch_size`` (validation has no backward: 2 fit on a GPU).
        num_workers: DataLoader worker processes.
        pin_memory: page-locked host memory (for GPU training).
        seed: seed of the random windows.
        rc_prob: reverse-complement augmentation probability.
    """

    def __init__(self, store_path, plan: SplitPlan, schedule: TrainSchedule, *,
                 plan_for: Callable[[int], StagePlan], on_stage: Callable | None = None, val_windows: int = 64,
                 val_batch_size: int | None = None, val_batch_factor: int = 1, num_workers: int = 0,
                 pin_memory: bool = False, seed: int = 0,
                 rc_prob: float = 0.5):
        super().__init__()
        self.store_path = str(store_path)
        self.plan = plan
        self.schedule = schedule
        self.plan_for = plan_for
        self.on_stage = on_stage
        self.val_windows = int(val_windows)
        self.val_batch_size = int(val_batch_size) if val_batch_size else None
        self.val_batch_factor = int(val_batch_factor)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.seed = int(seed)
        self.rc_prob = float(rc_prob)
        self._val_ds: TiledWindowDataset | None = None
        self.current_seq_len = schedule.final_seq_len
        self.epoch_end: Callable[[int], int | None] | None = None
        self._epoch: dict | None = None    # the training epoch being served (see state_dict)
        self._resume: dict | None = None   # an epoch restored from a checkpoint, to continue once

    def _loader(self, ds, batch_size: int, drop_last: bool, sampler=None, workers: int | None = None) -> DataLoader:
        workers = self.num_workers if workers is None else workers
        return DataLoader(ds, batch_size=batch_size, shuffle=False, drop_last=drop_last, collate_fn=_collate_ids,
                          sampler=sampler, num_workers=workers, pin_memory=self.pin_memory,
                          persistent_workers=False, prefetch_factor=4 if workers else None)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        step = trainer.global_step if trainer is not None else 0
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        epoch, self._resume = self._resume, None
        resumed = epoch is not None and epoch.get("world") == world and \
            epoch["start_step"] <= step <= epoch["start_step"] + epoch["steps"]
        if resumed:
            # a checkpoint from before per-stage plans: its accumulation was the final length's
            epoch.setdefault("accumulate", self.plan_for(self.schedule.final_seq_len).accumulate)
            skip = (step - epoch["start_step"]) * epoch["accumulate"] * epoch["batch"]  # this rank's windows done
        else:
            stage = self.schedule.stage_at(step)
            sp = self.plan_for(stage.seq_len)
            if self.on_stage is not None and trainer is not None:
                sp = self.on_stage(trainer, sp) or sp   # on a GPU, checked by a probe step first
            steps = self.schedule.steps_in_stage(step)
            if self.epoch_end is not None:  # e.g. the next --max-time re-fit of the schedule
                end = self.epoch_end(step)
                if end is not None and end > step:
                    steps = min(steps, end - step)
            epoch = {"start_step": step, "steps": steps, "seq_len": stage.seq_len,
                     "batch": sp.micro_batch, "accumulate": sp.accumulate, "world": world}
            skip = 0
        self._epoch = epoch
        if resumed and self.on_stage is not None and trainer is not None:
            self.on_stage(trainer, self.current_plan(), probe=False)   # the micro-batch it was started with
        samples = epoch["steps"] * epoch["accumulate"] * epoch["batch"] * world
        ds = RandomWindowDataset(self.store_path, self.plan.regions("train"), epoch["seq_len"],
                                 samples_per_epoch=samples, rc_prob=self.rc_prob, seed=self.seed)
        ds.set_epoch(epoch["start_step"])
        self.current_seq_len = epoch["seq_len"]
        sampler = ResumableShardSampler(samples, rank=rank, world=world, start=skip)
        return self._loader(ds, epoch["batch"], drop_last=True, sampler=sampler)

    def current_plan(self) -> StagePlan | None:
        """The plan of the epoch being served (a resumed epoch keeps its recorded micro-batch)."""
        if self._epoch is None:
            return None
        e = self._epoch
        return dataclasses.replace(self.plan_for(e["seq_len"]), micro_batch=e["batch"], accumulate=e["accumulate"],
                                   batch=e["batch"] * e["accumulate"])

    def state_dict(self) -> dict:
        """The epoch being trained on (saved in ``last.ckpt`` at an optimizer-step boundary)."""
        return dict(self._epoch) if self._epoch is not None else {}

    def load_state_dict(self, state: dict) -> None:
        self._resume = {k: int(v) for k, v in state.items()} if state else None

    def val_dataset(self) -> TiledWindowDataset:
        if self._val_ds is None:
            regions = self.plan.regions("val")
            self._val_ds = TiledWindowDataset(self.store_path, regions, self.schedule.final_seq_len,
                                              max_windows=self.val_windows)
        return self._val_ds

    def val_dataloader(self) -> DataLoader:
        batch = self.val_batch_size or self.val_batch_factor * self.plan_for(self.schedule.final_seq_len).micro_batch
        # In the main process: a validation reads a few fixed tiles (64 x 1 kbp in a few ms), while starting
        # worker processes for it cost 0.5 s per validation with 8 workers (measured on the 2-CPU dev VM)
        return self._loader(self.val_dataset(), batch, drop_last=False, workers=0)


__all__ = ["GenomeDataModule"]
