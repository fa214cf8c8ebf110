"""`MambaConfig`: every architectural choice of the Mamba DNA language model.

Follows Gu & Dao (2023), "Mamba: Linear-Time Sequence Modeling with Selective
State Spaces", Sec. 3.4 / App. E.3 (DNA models). The two DNA presets are the
paper's: `1.4m` (d_model 128, 12 layers) and `7m` (d_model 256, 16 layers).
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
    # --- execution (not architecture; safe to change after training) --------
    gradient_checkpointing: bool = False  # recompute each block in backward (saves memory at 1 Mbp)
    # with gradient_checkpointing: keep each layer's checkpoint of the fp32 residual stream as bf16
    # (half the saved memory: 0.5 instead of 1 GiB per layer for 7m at 2^20). The residual adds stay
    # fp32; each block reads its input rounded to bf16, as its RMSNorm output already is.
    checkpoint_bf16: bool = False
    # with gradient_checkpointing (Triton backend): keep each layer's scan segment states and x_proj
    # output from the forward (fp32 (L/64) x d_inner x d_state + bf16 (L, dt_rank + 2 d_state): 0.6 GiB
    # per 7m layer at 2^20), so the recomputation in the backward skips the conv, x_proj, the scan and
    # out_proj. False recomputes them: the least memory. None (default): on, unless checkpoint_bf16
    # asks for the least memory.
    checkpoint_keep_scan: bool | None = None
    # with gradient_checkpointing: leave the last N layers un-checkpointed. Each keeps its activations
    # (about 2.4 GiB per 7m layer at 2^20 in bf16) and saves its recomputation in the backward.
    checkpoint_skip: int = 0
    # steps between the scan states the Triton forward saves for the backward (fp32 d_inner x d_state
    # each). The backward rebuilds every state between two saved ones, so 16 makes it ~10% faster
    # (H100, 2^20) for 4x their memory: 1 GiB instead of 0.25 per 1.4m layer at 2^20 (2x for 7m).
    scan_state_every: int = 64
    scan_backend: str | None = None  # "reference" | "torch" | "numba" | "triton" | None (fastest available)

    def __post_init__(self):
        if self.dt_rank == "auto":
            self.dt_rank = math.ceil(self.d_model / 16)
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "expand", "dt_rank"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"MambaConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 2 <= self.d_conv <= 4:
            raise ValueError(f"MambaConfig.d_conv must be in 2..4, got {self.d_conv}")
        if self.checkpoint_keep_scan is None:
            self.checkpoint_keep_scan = not self.checkpoint_bf16
        if self.checkpoint_skip < 0:
            raise ValueError(f"MambaConfig.checkpoint_skip must be >= 0, got {self.checkpoint_skip}")
        if self.scan_state_every < 8 or self.scan_state_every % 8:
            raise ValueError(f"MambaConfig.scan_state_every must be a multiple of 8, got {self.scan_state_every}")
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
