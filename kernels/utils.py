"""Backend resolution and shared helpers for every op in ``kernels/``.

The backend is resolved once per call from the input's device:
CUDA tensors use Triton when it imports, everything else uses the vectorised
PyTorch path. ``MAMBA_GENOME_BACKEND`` overrides the default for a whole process
(useful for A/B runs); an explicit ``backend=`` argument overrides both.
Under ``TRITON_INTERPRET=1`` the Triton kernels also run on CPU tensors, which
is how CI exercises them.
"""
from __future__ import annotations

import functools
import os

import torch

BACKENDS = ("reference", "torch", "triton")


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (launch grids are sized by it); 2 elsewhere."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Backends that can run on ``device`` (default: CPU)."""
    device = torch.device(device or "cpu")
    out = ["reference", "torch"]
    if triton_available() and (device.type == "cuda" or triton_interpret()):
        out.append("triton")
    return out


def resolve_backend(backend: str | None, device: torch.device) -> str:
    """Pick the backend for a call: explicit > $MAMBA_GENOME_BACKEND > fastest."""
    if backend is None:
        backend = os.environ.get("MAMBA_GENOME_BACKEND") or None
    if backend is None:
        if device.type == "cuda" and triton_available():
            return "triton"
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "triton" and not (triton_available() and (device.type == "cuda" or triton_interpret())):
        raise ValueError(
            "backend='triton' needs a CUDA tensor (or TRITON_INTERPRET=1 for the CPU interpreter) "
            "and an importable triton"
        )
    return backend


def check_shape(name: str, t, shape: tuple, optional: bool = False):
    """Raise ValueError unless ``t`` has ``shape`` (None entries match anything)."""
    if t is None:
        if optional:
            return
        raise ValueError(f"{name} is required")
    if t.dim() != len(shape) or any(s is not None and s != ts for s, ts in zip(shape, t.shape)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")
