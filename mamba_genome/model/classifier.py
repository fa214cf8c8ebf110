"""`MambaClassifier`: a Mamba DNA language model with a sequence-classification head.

    input_ids (B, L) -> MambaLM.backbone -> hidden (B, L, d_model) -> pool -> Linear -> logits (B, C)

Follows the great-apes species task of Gu & Dao (2023), Sec. 4.3.4: a
pretrained (or freshly initialised) DNA model is fine-tuned end to end to
name the species of a contiguous window. The backbone is a whole
:class:`~mamba_genome.model.lm.MambaLM` kept under the attribute ``backbone``,
so a pretrained LM's weights load into it under the prefix ``backbone.``; its
(tied) LM head is simply unused.

Pooling: ``"last"`` takes the hidden state of the final token, which in a
causal model has seen the whole window; ``"mean"`` averages over all
positions (more robust early in training). A batch of records shorter than
its width (padded at the end) passes ``lengths`` (B,): pooling then covers the
real tokens only (``last`` = the last real token); the causal model never lets
the padding change a real position.

Strands: ``"fwd"`` pools the forward pass only; a causal model's position i
then summarises bases 0..i, so a mean over positions sees mostly left context.
``"both"`` also runs the backbone on the reverse complement of each window (of
its real bases, padding kept at the end), pools that pass the same way and
concatenates the two pooled vectors before the head (``2 * d_model`` inputs).
Together the two passes see both sides of every position, and, unlike an
average, the head can still tell the strands apart (strand-specific tasks).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..data.tokenizer import COMPLEMENT
from .config import MambaConfig
from .lm import MambaLM
from .runtime import RuntimeOptions

POOLINGS = ("last", "mean")
STRANDS = ("fwd", "both")


class MambaClassifier(nn.Module):
    """Sequence classifier over a :class:`MambaLM` backbone.

    Args:
        config: the backbone's :class:`MambaConfig`.
        num_classes: C, the number of labels (>= 2).
        pooling: ``"last"`` or ``"mean"`` (see module docstring).
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
        self.head = nn.Linear(config.d_model * (2 if strands == "both" else 1), self.num_classes)
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
        """hidden (B, L, d_model), lengths (B,) of real tokens or None (all L) -> (B, d_model)."""
        if lengths is None:
            return hidden[:, -1] if self.pooling == "last" else hidden.mean(dim=1)
        lengths = lengths.to(device=hidden.device, dtype=torch.long).clamp(1, hidden.shape[1])
        if self.pooling == "last":
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
        real = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]   # (B, L)
        summed = (hidden * real[..., None].to(hidden.dtype)).sum(dim=1)
        return summed / lengths[:, None].to(summed.dtype)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, L), lengths (B,) or None -> logits (B, num_classes)."""
        if self.strands == "fwd":
            hidden = self.backbone.backbone(input_ids)  # (B, L, d_model)
            pooled = self.pool(hidden, lengths)  # (B, d_model)
        else:  # one backbone call on the 2B rows: forward windows, then their reverse complements
            both = torch.cat([input_ids, reverse_complement_rows(input_ids, lengths, self.complement)], dim=0)
            lens = None if lengths is None else torch.cat([lengths, lengths], dim=0)
            fwd, rc = self.pool(self.backbone.backbone(both), lens).chunk(2, dim=0)
            pooled = torch.cat([fwd, rc], dim=1)  # (B, 2 * d_model)
        return self.head(pooled.to(self.head.weight.dtype))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


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


__all__ = ["MambaClassifier", "POOLINGS", "STRANDS", "reverse_complement_rows"]
