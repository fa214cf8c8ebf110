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

from ..data.tokenizer import COMPLEMENT
from .config import MambaConfig
from .lm import MambaLM
from .runtime import RuntimeOptions

POOLINGS = ("last", "mean", "max", "attention", "meanmax")
#: Poolings the inference engine computes itself (:meth:`InferenceEngine.class_log_probs`); the
#: classifier pools the others over the engine's stream (:meth:`MambaClassifier.class_log_probs`).
STREAMED_POOLINGS = ("last", "mean")
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

        Streamed through the inference engine (:mod:`mamba_genome.inference.engine`: its batching,
        chunking and precision policy; memory bounded by ``chunk_size``): ``last``/``mean`` by
        :meth:`InferenceEngine.class_log_probs`, the other poolings here, over the engine's
        :meth:`~InferenceEngine.stream` of each batch (a running max; for ``attention`` an online
        softmax: running maximum score, normaliser and weighted sum). The head runs in float32.
        """
        from ..inference.engine import InferenceEngine

        engine = InferenceEngine(self.backbone)
        if self.pooling in STREAMED_POOLINGS:
            return engine.class_log_probs(toks, self.head, self.pooling, chunk_size=chunk_size, batch_size=batch_size,
                                          precision=precision, bar=bar, lengths=lengths, strands=self.strands)
        lengths = [len(toks[i]) for i in range(len(toks))] if lengths is None else [int(n) for n in lengths]
        passes = (False, True) if self.strands == "both" else (False,)
        pooled = np.concatenate([self._stream_pool(engine, toks, lengths, chunk_size, batch_size, precision, bar, rc)
                                 for rc in passes], axis=1)   # (n, head.in_features)
        w = self.head.weight
        with torch.no_grad():
            logits = self.head(torch.from_numpy(pooled).to(device=w.device, dtype=w.dtype)).float()
            return torch.log_softmax(logits, dim=-1).double().cpu().numpy()

    def _stream_pool(self, engine, toks, lengths, chunk_size, batch_size, precision, bar, rc: bool) -> np.ndarray:
        """Pooled features float32 (n, F) of one pass (``rc``: the reverse complements) for ``max``,
        ``meanmax`` and ``attention``, accumulated chunk by chunk in float32."""
        D = self.config.d_model
        out = np.zeros((len(lengths), D * (2 if self.pooling == "meanmax" else 1)), dtype=np.float32)
        with torch.no_grad():
            for b in engine.batches(toks, lengths, chunk_size, batch_size, rc=rc):
                dev = engine.device
                n = len(b.idx)
                blens = torch.tensor(b.lengths, device=dev)
                total = torch.zeros(n, D, device=dev)            # mean: running sum; attention: weighted sum
                top = torch.full((n, D), float("-inf"), device=dev)     # running max
                m = torch.full((n,), float("-inf"), device=dev)         # attention: running max score
                z = torch.zeros(n, device=dev)                          # attention: running normaliser
                for s, e, _ids, active, hidden in engine.stream(b, None, precision, bar):
                    act = torch.as_tensor(active, device=dev)
                    real = (s + torch.arange(e - s, device=dev))[None, :] < blens[act][:, None]  # (A, c)
                    h = hidden.float()
                    if self.pooling == "attention":   # every active row has >= 1 real position here
                        score = self.pool_score(hidden).squeeze(-1).float().masked_fill(~real, float("-inf"))
                        new_m = torch.maximum(m[act], score.amax(dim=1))
                        keep = torch.exp(m[act] - new_m)            # rescales what came before (0 at first)
                        wts = torch.exp(score - new_m[:, None])     # (A, c), 0 on padding
                        z[act] = z[act] * keep + wts.sum(dim=1)
                        total[act] = total[act] * keep[:, None] + torch.einsum("ac,acd->ad", wts, h)
                        m[act] = new_m
                        continue
                    total[act] += (h * real[..., None]).sum(dim=1)
                    top[act] = torch.maximum(top[act], h.masked_fill(~real[..., None], float("-inf")).amax(dim=1))
                if self.pooling == "attention":
                    feats = total / z[:, None]
                elif self.pooling == "max":
                    feats = top
                else:   # meanmax
                    feats = torch.cat([total / blens[:, None].float(), top], dim=1)
                out[b.idx] = feats.cpu().numpy()
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
