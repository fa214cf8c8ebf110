"""Backend resolution and shared helpers for every op in ``kernels/``.

The backend is resolved once per call from the input's device:
CUDA tensors use Triton when it imports; CPU tensors use the compiled numba
selective scan and causal conv1d when numba imports (``"numba"``: ops without a
numba kernel, i.e. the norm and the single-step updates, run their PyTorch path
under it) and the vectorised PyTorch path (``"torch"``) otherwise, with a
one-line warning the first time.
``MAMBA_GENOME_BACKEND`` overrides the default for a whole process (useful for
A/B runs); an explicit ``backend=`` argument overrides both. Under
``TRITON_INTERPRET=1`` the Triton kernels also run on CPU tensors, which is how
CI exercises them.
"""
from __future__ import annotations

import functools
import logging
import os

import torch

BACKENDS = ("reference", "torch", "numba", "triton")


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


@functools.lru_cache(maxsize=None)
def numba_available() -> bool:
    """numba imports here (the compiled CPU scan, ``kernels/selective_scan/cpu.py``, needs it)."""
    return _numba_import_error() is None


@functools.lru_cache(maxsize=None)
def _numba_import_error() -> str | None:
    try:
        import numba  # noqa: F401
    except Exception as exc:       # ImportError, or numba refusing this numpy / Python
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


@functools.lru_cache(maxsize=None)
def _warn_no_numba() -> None:
    """Once per process, one line (logging's last-resort handler prints just the message)."""
    logging.getLogger("mamba_genome").warning(
        "warning: numba is not available (%s); the selective scan on CPU falls back to the slower "
        "PyTorch path (pip install numba)", _numba_import_error())


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
    if device.type == "cpu" and numba_available():
        out.append("numba")
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
        if device.type == "cpu":
            if numba_available():
                return "numba"
            _warn_no_numba()
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "numba" and not (device.type == "cpu" and numba_available()):
        raise ValueError("backend='numba' needs CPU tensors and an importable numba (pip install numba)"
                         + ("" if numba_available() else f"; here: {_numba_import_error()}"))
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
