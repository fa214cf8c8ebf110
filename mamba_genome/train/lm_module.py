"""`LMModule`: the Lightning wrapper that trains a :class:`~mamba_genome.model.lm.MambaLM`.

Owns the optimisation recipe of Gu & Dao (2023), App. E.2 (DNA pretraining):
AdamW with betas (0.9, 0.95) and weight decay 0.1 except on A_log, D, norms
and biases; the learning rate set every optimizer step from a
:class:`~mamba_genome.train.schedule.TrainSchedule` (10% linear warmup, cosine
decay to a floor); gradient clipping is the Trainer's (``gradient_clip_val``).

Validation is exact, not a mean of batch means: the summed cross-entropy and
the number of predicted bases are reduced over batches and ranks, then
``val/loss`` (nats/base), ``val/bpb`` (bits/base) and ``val/ppl`` are logged.
Targets that are padding or N are not scored (N is not a base).

Checkpoints carry only tensors and primitives (``weights_only=True`` loads
them): the model weights, optimizer state, Lightning's loop counters and
``mg_state`` (schedule, tokens seen, training seconds, the RNG states of
:mod:`mamba_genome.train.rng`); the data module adds where in its epoch the run is.
"""
from __future__ import annotations

import math
import time

import lightning as L
import torch

from ..model.config import MambaConfig
from ..model.likelihood import next_token_nll_sums
from ..model.lm import MambaLM, param_groups
from .rng import rng_state, set_rng_state
from .schedule import TrainSchedule

LN2 = math.log(2.0)


def lm_sums(model: MambaLM, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token CE in nats, number of scored targets) for a batch ``(B, L)``.

    Targets that are PAD or N are not scored (:mod:`mamba_genome.model.likelihood`).
    """
    return next_token_nll_sums(model, input_ids)


class LMModule(L.LightningModule):
    """Next-token pretraining of a Mamba LM.

    Args:
        config: the model configuration.
        schedule: learning rate / sequence length as functions of the step
            (shared with the data module and the time-budget callback).
        weight_decay: AdamW weight decay on matrices (0.1 in the paper).
        betas: AdamW betas ((0.9, 0.95) in the paper).
    """

    def __init__(self, config: MambaConfig, schedule: TrainSchedule, *, weight_decay: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.95)):
        super().__init__()
        self.config = config
        self.model = MambaLM(config)
        self.schedule = schedule
        self.weight_decay = float(weight_decay)
        self.betas = tuple(float(b) for b in betas)
        self.tokens_seen = 0          # global (all ranks), training tokens fed to the model
        self.train_seconds = 0.0      # wall time in the training loop, summed over resumes
        self._t_last: float | None = None
        self._val_sum = self._val_count = None
        self.last_val: dict[str, float] = {}

    # ------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        # on CPU the fused AdamW is one kernel for all parameters instead of a dozen small ops per tensor
        fused = {"fused": True} if self.device.type == "cpu" else {}
        return torch.optim.AdamW(param_groups(self.model, self.weight_decay), lr=self.schedule.lr,
                                 betas=self.betas, eps=1e-8, **fused)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip by global norm. Under FSDP the norm must be taken over all shards, through the
        wrapped root's ``clip_grad_norm_`` (Lightning's FSDP precision plugin refuses norm clipping)."""
        if not gradient_clip_val:
            return
        wrapped = self.trainer.model if self._trainer is not None else None
        if type(wrapped).__name__ == "FullyShardedDataParallel" and hasattr(wrapped, "clip_grad_norm_"):
            wrapped.clip_grad_norm_(gradient_clip_val)
        else:
            self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                                gradient_clip_algorithm=gradient_clip_algorithm)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        lr = self.schedule.lr_at(self.global_step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step(closure=optimizer_closure)

    # ---------------------------------------------------------------- training
    def on_train_start(self):
        self._t_last = time.perf_counter()

    def training_step(self, batch, batch_idx):
        ids = batch["input_ids"]                                          # (B, L)
        loss = self.model.loss(ids)
        world = self.trainer.world_size if self._trainer is not None else 1
        n_tok = ids.numel() * world
        self.tokens_seen += n_tok
        now = time.perf_counter()
        if self._t_last is not None:
            self.train_seconds += now - self._t_last
        self._t_last = now
        tps = self.tokens_seen / max(self.train_seconds, 1e-9)
        # Nothing here may wait for the GPU: a prog_bar tensor is read back (.item()) after every step, and
        # a Python number is copied to the model's device (a synchronising copy), so the loss goes to the
        # loggers only and the host-side numbers are logged as CPU tensors
        log = dict(on_step=True, on_epoch=False, batch_size=ids.shape[0])
        self.log("train/loss", loss, **log)
        self.log("train/bpb", loss.detach() / LN2, **log)
        self.log("train/ppl", torch.exp(loss.detach()), **log)
        for name, value in (("seq_len", ids.shape[1]), ("tokens_seen", self.tokens_seen), ("tokens_per_s", tps),
                            ("lr", self.schedule.lr_at(self.global_step))):
            self.log(name, torch.tensor(float(value)), **log)
        return loss

    # -------------------------------------------------------------- validation
    def on_validation_epoch_start(self):
        self._val_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self._val_count = torch.zeros((), dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx):
        s, n = lm_sums(self.model, batch["input_ids"])
        self._val_sum += s.double()
        self._val_count += n.double()

    def on_validation_epoch_end(self):
        total = self.trainer.strategy.reduce(self._val_sum, reduce_op="sum")
        count = self.trainer.strategy.reduce(self._val_count, reduce_op="sum")
        loss = (total / count.clamp(min=1)).float()
        self.last_val = {"val_loss": float(loss), "val_bits_per_base": float(loss) / LN2,
                         "val_perplexity": float(torch.exp(loss)), "val_bases": int(count),
                         "step": int(self.global_step), "tokens_seen": int(self.tokens_seen)}
        self.log("val/loss", loss, prog_bar=True, sync_dist=False)
        self.log("val/bpb", loss / LN2, prog_bar=True, sync_dist=False)
        self.log("val/ppl", torch.exp(loss), sync_dist=False)
        # The wall clock of validation is not training time.
        self._t_last = time.perf_counter()

    # ----------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint):
        checkpoint["mg_state"] = {
            "schedule": self.schedule.state_dict(),
            "tokens_seen": int(self.tokens_seen),
            "train_seconds": float(self.train_seconds),
            "last_val": dict(self.last_val),
            "rng": rng_state(),
        }

    def on_load_checkpoint(self, checkpoint):
        st = checkpoint.get("mg_state", {})
        self.tokens_seen = int(st.get("tokens_seen", 0))
        self.train_seconds = float(st.get("train_seconds", 0.0))
        self.last_val = dict(st.get("last_val", {}))
        set_rng_state(st.get("rng", {}))
        # The schedule is rebuilt from this run's flags; a --max-time run's
        # fitted step count is restored by the TimeBudget callback.


__all__ = ["LMModule", "lm_sums", "LN2"]
