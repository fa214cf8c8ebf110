"""Random-number-generator state for exact resume: Python, NumPy, torch (CPU and CUDA).

:func:`rng_state` returns only tensors, lists and primitives, so it can go in
a ``last.ckpt`` that loads with ``torch.load(weights_only=True)``;
:func:`set_rng_state` puts it back. The window samplers need none of it (their
windows are a pure function of seed, epoch and index), but anything else that
draws random numbers (dropout, a custom augmentation) then resumes exactly.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    """The current state of every global generator, checkpoint-safe."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    state = {
        "python": [int(py[0]), [int(x) for x in py[1]], py[2]],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned (missing parts are left as they are)."""
    if not state:
        return
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    if "numpy" in state:
        n = state["numpy"]
        keys = n["keys"].numpy() if isinstance(n["keys"], torch.Tensor) else np.asarray(n["keys"])
        np.random.set_state((n["kind"], keys.astype(np.uint32), int(n["pos"]), int(n["has_gauss"]), float(n["gauss"])))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


__all__ = ["rng_state", "set_rng_state"]
