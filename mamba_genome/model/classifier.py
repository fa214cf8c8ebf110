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
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import MambaConfig
from .lm import MambaLM
from .runtime import RuntimeOptions

POOLINGS = ("last", "mean")


class MambaClassifier(nn.Module):
    """Sequence classifier over a :class:`MambaLM` backbone.

    Args:
        config: the backbone's :class:`MambaConfig`.
        num_classes: C, the number of labels (>= 2).
        pooling: ``"last"`` or ``"mean"`` (see module docstring).

    Example:
        >>> cfg = MambaConfig.from_preset("tiny", d_model=32, n_layer=2)
        >>> clf = MambaClassifier(cfg, num_classes=5)
        >>> clf(torch.randint(5, 9, (2, 100))).shape
        torch.Size([2, 5])
    """

    model_type = "classifier"

    def __init__(self, config: MambaConfig, num_classes: int, pooling: str = "last",
                 runtime: RuntimeOptions | None = None):
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.config = config
        self.num_classes = int(num_classes)
        self.pooling = pooling
        self.backbone = MambaLM(config, runtime)
        self.head = nn.Linear(config.d_model, self.num_classes)
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
        return {"num_classes": self.num_classes, "pooling": self.pooling}

    @classmethod
    def from_pretrained_lm(cls, lm: MambaLM, num_classes: int, pooling: str = "last") -> "MambaClassifier":
        """A classifier whose backbone starts from the weights of ``lm`` (a fresh head)."""
        clf = cls(lm.config, num_classes, pooling, runtime=lm.runtime)
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
        hidden = self.backbone.backbone(input_ids)  # (B, L, d_model)
        pooled = self.pool(hidden, lengths).to(self.head.weight.dtype)  # (B, d_model)
        return self.head(pooled)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())


__all__ = ["MambaClassifier", "POOLINGS"]
