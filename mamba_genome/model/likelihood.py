"""The one next-base likelihood definition: which targets are scored and how.

Every place that turns logits into a log-likelihood or a loss (training, ``evaluate``,
``score``, variant effects, the Python API) goes through these functions, so that
"bits per base" means the same thing everywhere:

* the model predicts token ``t+1`` from tokens ``0..t``; the log-probability is a
  log-softmax over the whole vocabulary, computed in float32 whatever the logits' dtype;
* a target is **scored** only when it is one of the four bases A, C, G, T. PAD, N (any
  ambiguous base) and the special tokens are never scored: their log-probability is
  reported as 0 and they count in no denominator.

Shapes: ``logits`` (..., V) and ``targets`` (...) with the same leading dimensions.
"""
from __future__ import annotations

import math

import torch

from ..data.tokenizer import A as _A
from ..data.tokenizer import T as _T

LN2 = math.log(2.0)


def scored_mask(targets: torch.Tensor) -> torch.Tensor:
    """Bool tensor, True where ``targets`` is a base (A/C/G/T) and so counts in a likelihood."""
    return (targets >= _A) & (targets <= _T)


def target_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log P(target) in nats, float32, 0 where not scored; the scored mask).

    ``logits`` (..., V) for the position *before* each target; ``targets`` (...) int.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    lp = logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    keep = scored_mask(targets)
    return lp.masked_fill(~keep, 0.0), keep


def nll_sums(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed negative log-likelihood in nats, number of scored targets), both 0-dim tensors.

    Differentiable in ``logits``; the training loss is ``sum / max(count, 1)``.
    """
    ce = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1).long(), reduction="none")
    keep = scored_mask(targets).reshape(-1)
    return (ce * keep).sum(), keep.sum()


def next_token_nll_sums(model, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``nll_sums`` of a language model on a batch ``input_ids`` (B, L): targets are positions 1..L-1.

    Calls ``model(...)`` (so DDP/FSDP forward hooks run) on positions 0..L-2.
    """
    logits = model(input_ids[:, :-1])                                     # (B, L-1, V)
    return nll_sums(logits, input_ids[:, 1:])


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the predicted next-token distribution in nats, float32, shape ``logits.shape[:-1]``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)
