"""`MambaClassifier`: a Mamba DNA language model with a sequence-classification head.

    input_ids (B, L) -> MambaLM.backbone -> hidden (B, L, d_model) -> pool -> Linear -> logits (B, C)

Follows the great-apes species task of Gu & Dao (2023), Sec. 4.3.4: a
pretrained (or freshly initialised) DNA model is fine-tuned end to end to
name the species of a contiguous window. The backbone is a whole
:class:`~mamba_genome.model.lm.MambaLM` kept under the attribute ``backbone``,
so a pretrained LM's weights load into it under the prefix ``backbone.``; its
(tied) LM head is simply unused.

Pooling (over the real positions of each window):

- ``"last"``: the hidden state of the final token, which in a causal model has seen the whole window;
- ``"mean"``: the average over all positions (robust early in training), which dilutes a signal
  that sits at one place in the window (a splice site, a start codon) over all L positions;
- ``"max"``: the per-channel maximum over positions, so one position can carry a channel;
- ``"attention"``: a learned softmax over positions of a linear score of each hidden state
  (one ``d_model -> 1`` map shared by both strands' passes), the weighted mean of the hidden
  states; the score starts at zero, so training starts from ``mean`` pooling;
- ``"meanmax"``: ``mean`` and ``max`` concatenated (``2 * d_model`` features per pass).

A batch of records shorter than its width (padded at the end) passes ``lengths`` (B,): pooling
then covers the real tokens only (``last`` = the last real token; padding is masked out of the
mean, the max and the softmax); the causal model never lets the padding change a real position.

Strands: ``"fwd"`` pools the forward pass only; a causal model's position i
then summarises bases 0..i, so a mean over positions sees mostly left context.
``"both"`` also runs the backbone on the reverse complement of each window (of
its real bases, padding kept at the end), pools that pass the same way and
concatenates the two pooled vectors before the head (twice the pooled features).
Together the two passes see both sides of every position, and, unlike an
average, the head can still tell the strands apart (strand-specific tasks).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from ..data.tokenizer import COMPLEMENT, PAD
from .config import MambaConfig
from .lm import MambaLM
from .runtime import RuntimeOptions

POOLINGS = ("last", "mean", "max", "attention", "meanmax")
#: Poolings the streaming inference engine computes itself (:meth:`InferenceEngine.class_log_probs`);
#: the others run the classifier's own forward pass on each (window-sized) record.
STREAMED_POOLINGS = ("last", "mean")
#: Positions (both passes) per batch of :meth:`MambaClassifier.class_log_probs` for the other poolings.
DIRECT_TOKENS = 1 << 16
STRANDS = ("fwd", "both")


class MambaClassifier(nn.Module):
    """Sequence classifier over a :class:`MambaLM` backbone.

    Args:
        config: the backbone's :class:`MambaConfig`.
        num_classes: C, the number of labels (>= 2).
        pooling: one of :data:`POOLINGS` (see module docstring).
        strands: ``"fwd"`` or ``"both"`` (forward + reverse-complement passes, concatenated).

    Example:
        >>> cfg = MambaConfig.from_preset("tiny", d_model=32, n_layer=2)
        >>> clf = MambaClassifier(cfg, num_classes=5)
        >>> clf(torch.randint(5, 9, (2, 100))).shape
        torch.Size([2, 5])
    """

    model_type = "classifier"

    def __init__(self, config: MambaConfig, num_classes: int, pooling: str = "last",
                 runtime: RuntimeOptions | None = None, strands: str = "fwd"):
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if strands not in STRANDS:
            raise ValueError(f"strands must be one of {', '.join(STRANDS)}, got {strands!r}")
        self.config = config
        self.num_classes = int(num_classes)
        self.pooling = pooling
        self.strands = strands
        self.backbone = MambaLM(config, runtime)
        if pooling == "attention":   # score (B, L, d_model) -> (B, L, 1); zero: uniform weights (= mean) at first
            self.pool_score = nn.Linear(config.d_model, 1)
            nn.init.zeros_(self.pool_score.weight)
            nn.init.zeros_(self.pool_score.bias)
        features = config.d_model * (2 if pooling == "meanmax" else 1) * (2 if strands == "both" else 1)
        self.head = nn.Linear(features, self.num_classes)
        # token id -> its complement, on the model's device (no host copy per forward pass); not saved
        self.register_buffer("complement", torch.as_tensor(COMPLEMENT, dtype=torch.long), persistent=False)
        nn.init.normal_(self.head.weight, std=config.initializer_range)
        nn.init.zeros_(self.head.bias)

    @property
    def runtime(self) -> RuntimeOptions:
        return self.backbone.runtime

    def set_runtime(self, runtime: RuntimeOptions | None = None, **changes) -> RuntimeOptions:
        """See :meth:`MambaLM.set_runtime`."""
        return self.backbone.set_runtime(runtime, **changes)

    @property
    def init_kwargs(self) -> dict:
        """Constructor arguments besides the config, for :func:`mamba_genome.checkpoint.save_model`."""
        return {"num_classes": self.num_classes, "pooling": self.pooling, "strands": self.strands}

    @classmethod
    def from_pretrained_lm(cls, lm: MambaLM, num_classes: int, pooling: str = "last",
                           strands: str = "fwd") -> "MambaClassifier":
        """A classifier whose backbone starts from the weights of ``lm`` (a fresh head)."""
        clf = cls(lm.config, num_classes, pooling, runtime=lm.runtime, strands=strands)
        clf.backbone.load_state_dict(lm.state_dict())
        return clf

    def freeze_backbone(self) -> None:
        """Train only the head (linear probing)."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)

    def pool(self, hidden: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (B, L, d_model), lengths (B,) of real tokens or None (all L) -> (B, F),
        F = d_model (``2 * d_model`` for ``meanmax``)."""
        B, L, _ = hidden.shape
        if lengths is not None:
            lengths = lengths.to(device=hidden.device, dtype=torch.long).clamp(1, L)
        if self.pooling == "last":
            return hidden[:, -1] if lengths is None else hidden[torch.arange(B, device=hidden.device), lengths - 1]
        real = None if lengths is None else torch.arange(L, device=hidden.device)[None, :] < lengths[:, None]  # (B, L)
        if self.pooling == "mean":
            return _masked_mean(hidden, real, lengths)
        if self.pooling == "max":
            return _masked_max(hidden, real)
        if self.pooling == "meanmax":
            return torch.cat([_masked_mean(hidden, real, lengths), _masked_max(hidden, real)], dim=-1)
        score = self.pool_score(hidden).squeeze(-1).float()  # (B, L)
        if real is not None:
            score = score.masked_fill(~real, float("-inf"))
        weights = torch.softmax(score, dim=1).to(hidden.dtype)  # (B, L), zero on padding
        return torch.einsum("bl,bld->bd", weights, hidden)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, L), lengths (B,) or None -> logits (B, num_classes)."""
        return self.head(self.features(input_ids, lengths).to(self.head.weight.dtype))

    def features(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, L), lengths (B,) or None -> the head's input (B, head.in_features): the pooled
        forward pass, or with ``strands="both"`` it and the pooled reverse-complement pass, concatenated."""
        if self.strands == "fwd":
            hidden = self.backbone.backbone(input_ids)  # (B, L, d_model)
            pooled = self.pool(hidden, lengths)  # (B, d_model)
        else:  # one backbone call on the 2B rows: forward windows, then their reverse complements
            both = torch.cat([input_ids, reverse_complement_rows(input_ids, lengths, self.complement)], dim=0)
            lens = None if lengths is None else torch.cat([lengths, lengths], dim=0)
            fwd, rc = self.pool(self.backbone.backbone(both), lens).chunk(2, dim=0)
            pooled = torch.cat([fwd, rc], dim=1)  # (B, 2F)
        return pooled

    def class_log_probs(self, toks, lengths: Sequence[int] | None = None, batch_size: int | None = None,
                        precision: str = "auto", bar=None, chunk_size: int | None = None) -> np.ndarray:
        """Log-probabilities float64 (n, num_classes) of token sequences ``toks`` (an indexable of
        1-D token arrays, looked up per batch; ``lengths`` default ``len(toks[i])``).

        ``last``/``mean`` stream through the inference engine
        (:meth:`~mamba_genome.inference.engine.InferenceEngine.class_log_probs`, memory bounded
        by ``chunk_size``); the other poolings run :meth:`forward` on padded batches of whole
        sequences (windows: classify tiles records into ``--seq-len`` windows), longest first,
        about :data:`DIRECT_TOKENS` positions per batch (``batch_size`` overrides), with the
        engine's precision policy; the head in float32 either way. ``bar`` advances in bases per pass.
        """
        from ..inference.engine import DEFAULT_BATCH_SIZE, InferenceEngine, autocast, resolve_precision

        if self.pooling in STREAMED_POOLINGS:
            return InferenceEngine(self.backbone).class_log_probs(
                toks, self.head, self.pooling, chunk_size=chunk_size, batch_size=batch_size, precision=precision,
                bar=bar, lengths=lengths, strands=self.strands)
        lengths = [len(toks[i]) for i in range(len(toks))] if lengths is None else [int(n) for n in lengths]
        dev = self.head.weight.device
        precision = resolve_precision(precision, dev)
        out = np.zeros((len(lengths), self.num_classes), dtype=np.float64)
        order = sorted((i for i in range(len(lengths)) if lengths[i] > 0), key=lambda i: -lengths[i])
        passes = 2 if self.strands == "both" else 1
        k = 0
        with torch.no_grad():
            while k < len(order):
                n = batch_size or max(DEFAULT_BATCH_SIZE, DIRECT_TOKENS // (passes * lengths[order[k]]))
                idx, k = order[k: k + n], k + n
                ids = torch.full((len(idx), lengths[idx[0]]), PAD, dtype=torch.long)
                for j, i in enumerate(idx):
                    ids[j, : lengths[i]] = torch.as_tensor(np.asarray(toks[i][: lengths[i]], dtype=np.int64))
                lens = torch.tensor([lengths[i] for i in idx])
                with autocast(precision, dev):
                    x = self.features(ids.to(dev), lens.to(dev))
                logits = self.head(x.to(self.head.weight.dtype))   # outside autocast: in the head's dtype
                out[idx] = torch.log_softmax(logits.float(), dim=-1).double().cpu().numpy()
                if bar is not None:
                    bar.update(passes * int(lens.sum()))
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


def _masked_mean(hidden: torch.Tensor, real: torch.Tensor | None, lengths: torch.Tensor | None) -> torch.Tensor:
    """hidden (B, L, D), real (B, L) bool or None (all real), lengths (B,) -> (B, D)."""
    if real is None:
        return hidden.mean(dim=1)
    summed = (hidden * real[..., None].to(hidden.dtype)).sum(dim=1)
    return summed / lengths[:, None].to(summed.dtype)


def _masked_max(hidden: torch.Tensor, real: torch.Tensor | None) -> torch.Tensor:
    """hidden (B, L, D), real (B, L) bool or None -> (B, D): per-channel max over the real positions."""
    if real is None:
        return hidden.amax(dim=1)
    return hidden.masked_fill(~real[..., None], float("-inf")).amax(dim=1)


def reverse_complement_rows(input_ids: torch.Tensor, lengths: torch.Tensor | None = None,
                            table: torch.Tensor | None = None) -> torch.Tensor:
    """input_ids (B, L), lengths (B,) or None -> (B, L): each row's first ``lengths[b]`` tokens
    reverse-complemented, in place at the start of the row; the padding after them is kept.
    ``table``: :data:`~mamba_genome.data.tokenizer.COMPLEMENT` as a tensor on the device (default: made here)."""
    L = input_ids.shape[1]
    pos = torch.arange(L, device=input_ids.device)[None, :]  # (1, L)
    if lengths is None:
        src = (L - 1 - pos).expand_as(input_ids)
    else:
        n = lengths.to(device=input_ids.device, dtype=torch.long).clamp(0, L)[:, None]  # (B, 1)
        src = torch.where(pos < n, n - 1 - pos, pos)  # (B, L)
    if table is None:
        table = torch.as_tensor(COMPLEMENT, dtype=torch.long, device=input_ids.device)
    return table[input_ids.gather(1, src).long()].to(input_ids.dtype)


__all__ = ["MambaClassifier", "POOLINGS", "STREAMED_POOLINGS", "STRANDS", "reverse_complement_rows"]
