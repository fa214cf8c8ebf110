"""`RuntimeOptions`: how a Mamba model executes, apart from what it is.

`MambaConfig` (model/config.py) is the architecture: it alone goes into a
checkpoint's ``config.json``. Everything here changes memory and speed but not
the function the model computes (up to rounding), so it is chosen per run, and
per sequence-length stage, by the training engine's memory planner
(:mod:`mamba_genome.train.memory`) and may be changed on a trained model:

- ``gradient_checkpointing``: recompute each block in the backward; one saved
  residual-stream tensor per layer instead of all its activations.
- ``checkpoint_bf16``: with checkpointing, keep those tensors in bf16 (half the
  memory; the residual adds stay fp32).
- ``checkpoint_keep_scan``: with checkpointing (Triton), keep each layer's scan
  segment states and x_proj output so its recomputation skips conv, x_proj,
  scan and out_proj. ``None``: on unless ``checkpoint_bf16`` asks for the least
  memory.
- ``checkpoint_skip``: with checkpointing, the last N layers are not
  checkpointed (they keep their activations and skip the recomputation).
- ``scan_state_every``: steps between the scan states the Triton forward saves
  for the backward (multiple of 8). 8 makes the backward ~17% faster than 64
  for 8x the memory of those states.
- ``scan_backend``: "reference" | "torch" | "numba" | "triton" | None (fastest
  available on the tensors' device).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SCAN_BACKENDS = ("reference", "torch", "numba", "triton")

# MambaConfig fields that older checkpoints carried; they are run-time options now.
RUNTIME_FIELDS = ("gradient_checkpointing", "checkpoint_bf16", "checkpoint_keep_scan", "checkpoint_skip",
                  "scan_state_every", "scan_backend")


@dataclass
class RuntimeOptions:
    gradient_checkpointing: bool = False
    checkpoint_bf16: bool = False
    checkpoint_keep_scan: bool | None = None
    checkpoint_skip: int = 0
    scan_state_every: int = 64
    scan_backend: str | None = None

    def __post_init__(self):
        if self.checkpoint_keep_scan is None:
            self.checkpoint_keep_scan = not self.checkpoint_bf16
        if self.checkpoint_skip < 0:
            raise ValueError(f"checkpoint_skip must be >= 0, got {self.checkpoint_skip}")
        if self.scan_state_every < 8 or self.scan_state_every % 8:
            raise ValueError(f"scan_state_every must be a positive multiple of 8, got {self.scan_state_every}")
        if self.scan_backend is not None and self.scan_backend not in SCAN_BACKENDS:
            raise ValueError(f"scan_backend must be one of {', '.join(SCAN_BACKENDS)} or None, "
                             f"got {self.scan_backend!r}")

    def replace(self, **changes) -> "RuntimeOptions":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def split_runtime(options: dict) -> tuple[dict, dict]:
    """``(architecture fields, run-time fields)`` of a dict that may mix both (old configs, overrides)."""
    arch = {k: v for k, v in options.items() if k not in RUNTIME_FIELDS}
    return arch, {k: v for k, v in options.items() if k in RUNTIME_FIELDS}


__all__ = ["RuntimeOptions", "RUNTIME_FIELDS", "SCAN_BACKENDS", "split_runtime"]
