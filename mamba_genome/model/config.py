"""`MambaConfig`: every architectural choice of the Mamba DNA language model.

Follows Gu & Dao (2023), "Mamba: Linear-Time Sequence Modeling with Selective
State Spaces", Sec. 3.4 / App. E.3 (DNA models). The two DNA presets are the
paper's: `1.4m` (d_model 128, 12 layers) and `7m` (d_model 256, 16 layers).

Architecture only: how the model executes (activation checkpointing, scan-state
spacing, kernel backend) is :class:`~mamba_genome.model.runtime.RuntimeOptions`,
chosen per run and never saved in a checkpoint.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


@dataclass
class MambaConfig:
    # --- sizes -------------------------------------------------------------
    d_model: int = 128          # residual stream width (model dimension)
    n_layer: int = 12           # number of Mamba blocks
    vocab_size: int = 10        # tokenizer vocabulary (mamba_genome.data.tokenizer.VOCAB_SIZE)
    pad_vocab_size_multiple: int = 8  # embedding rows are padded up to a multiple of this
    # --- selective SSM (the mixer) ----------------------------------------
    d_state: int = 16           # N: SSM state size per channel
    d_conv: int = 4             # width of the causal depthwise conv1d
    expand: int = 2             # d_inner = expand * d_model
    dt_rank: int | str = "auto"  # rank of the dt projection; "auto" = ceil(d_model / 16)
    dt_min: float = 1e-3        # dt initialised log-uniform in [dt_min, dt_max]
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4  # lower clamp on the initial dt
    conv_bias: bool = True      # bias in the conv1d
    bias: bool = False          # bias in in_proj / out_proj
    # --- residual stream ----------------------------------------------------
    rms_norm_eps: float = 1e-5  # epsilon of every RMSNorm
    residual_in_fp32: bool = True  # keep the residual stream in fp32 under bf16 autocast
    tie_embeddings: bool = True  # LM head shares the embedding matrix
    initializer_range: float = 0.02  # std of the embedding init
    rescale_prenorm_residual: bool = True  # out_proj init scaled by 1/sqrt(n_layer) (GPT-2 style)

    def __post_init__(self):
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "expand", "dt_rank"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"MambaConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 2 <= self.d_conv <= 4:
            raise ValueError(f"MambaConfig.d_conv must be in 2..4, got {self.d_conv}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError("MambaConfig needs 0 < dt_min <= dt_max")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return ((self.vocab_size + m - 1) // m) * m

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MambaConfig":
        """The config of a ``config.json``; the run-time options older checkpoints carried
        (:data:`~mamba_genome.model.runtime.RUNTIME_FIELDS`) are ignored."""
        from .runtime import RUNTIME_FIELDS

        d = {k: v for k, v in d.items() if k not in RUNTIME_FIELDS}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown MambaConfig fields: {unknown}")
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MambaConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


# The paper's DNA models plus a CPU demo size.
PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=64, n_layer=4),      # ~0.1M params: CPU demo, trains in minutes
    "1.4m": dict(d_model=128, n_layer=12),    # paper's Mamba 1.4M (HG38 / great apes)
    "7m": dict(d_model=256, n_layer=16),      # paper's Mamba 7M
}
