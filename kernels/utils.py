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
    try:
        memoise_triton_key()
    except Exception:   # an unfamiliar Triton: its own key, computed as usual
        pass
    return True


# ------------------------------------------------------------------ Triton's compiler cache key
#: Set to 0 to let Triton hash its own sources in every process, as it does by default.
TRITON_KEY_MEMO_ENV = "MAMBA_GENOME_TRITON_KEY_MEMO"
_TRITON_KEY_FILE = "mamba_genome_triton_key.json"


def _triton_fingerprint(triton_dir: str, version: str) -> str:
    """sha256 of Triton's version and the (path, size, mtime) of every file its cache key hashes:
    runtime/cache.py, the .py files under compiler/, backends/ and language/, and _C/libtriton."""
    import hashlib

    entries = [version]
    files = [os.path.join(triton_dir, "runtime", "cache.py")]
    for sub in ("compiler", "backends", "language"):
        for root, dirs, names in os.walk(os.path.join(triton_dir, sub)):
            dirs.sort()
            files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
    lib = os.path.join(triton_dir, "_C")
    files += [os.path.join(lib, n) for n in sorted(os.listdir(lib)) if n.startswith("libtriton")]
    for f in files:
        st = os.stat(f)
        entries.append(f"{os.path.relpath(f, triton_dir)}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def _triton_cache_dir() -> str:
    try:
        from triton import knobs

        return knobs.cache.dir
    except Exception:
        return os.environ.get("TRITON_CACHE_DIR") or os.path.join(
            os.environ.get("TRITON_HOME") or os.path.expanduser("~"), ".triton", "cache")


def stored_triton_key(original, triton_dir: str, version: str, cache_dir: str) -> str:
    """``original()`` (Triton's key function), read from ``cache_dir`` when it was stored there
    under the current fingerprint of ``triton_dir``'s files, else computed and stored (atomically:
    a concurrent reader sees the old file or the new one). Never raises for a missing, corrupt or
    unwritable file: it computes the key instead."""
    import json
    import tempfile

    try:
        fp = _triton_fingerprint(triton_dir, version)
    except OSError:
        return original()
    path = os.path.join(cache_dir, _TRITON_KEY_FILE)
    try:
        with open(path) as fh:
            stored = json.load(fh)
        if stored.get("fingerprint") == fp and isinstance(stored.get("key"), str):
            return stored["key"]
    except (OSError, ValueError, AttributeError):
        pass
    key = original()
    try:
        os.makedirs(cache_dir, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".triton_key.")
        with os.fdopen(fd, "w") as fh:
            json.dump({"fingerprint": fp, "key": key}, fh)
        os.replace(tmp, path)
    except OSError:
        pass
    return key


def memoise_triton_key() -> None:
    """Keep Triton's compiler cache key (``triton.runtime.cache.triton_key``) on disk.

    Before Triton looks a compiled kernel up in its disk cache it computes this key, in every
    process: a sha256 of its compiler's sources and of its ~100 MB shared library, 0.37 s of a
    1 kbp ``mamba-genome embed`` on an H200 host (2026-12-02). The key depends only on those
    files, so it is stored in Triton's cache directory under a fingerprint of their paths, sizes
    and modification times (a few ms to stat), and recomputed whenever any of them changes
    (another Triton, an edited source): :func:`stored_triton_key`. Triton's own warm-up pool
    replaces ``triton_key`` the same way. ``MAMBA_GENOME_TRITON_KEY_MEMO=0`` turns this off.
    """
    if os.environ.get(TRITON_KEY_MEMO_ENV, "1") in ("0", ""):
        return
    import importlib

    import triton

    cache_mod = importlib.import_module("triton.runtime.cache")
    original = getattr(cache_mod, "triton_key", None)
    if original is None or getattr(original, "memoised_by_mamba_genome", False):
        return
    triton_dir = os.path.dirname(os.path.dirname(os.path.abspath(cache_mod.__file__)))

    @functools.lru_cache(maxsize=None)
    def triton_key() -> str:
        return stored_triton_key(original, triton_dir, triton.__version__, _triton_cache_dir())

    triton_key.memoised_by_mamba_genome = True
    triton_key.original = original
    for name in ("triton.runtime.cache", "triton.compiler.compiler", "triton.runtime.autotuner", "triton.runtime.jit"):
        try:
            mod = importlib.import_module(name)
        except Exception:
            continue
        if getattr(mod, "triton_key", None) is original:
            mod.triton_key = triton_key


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
