"""mamba-genome: long-sequence genomics with selective state-space models.

Public API:
    mamba_genome.load(path)   -> a loaded model (see `mamba_genome.checkpoint`)
    mamba_genome.kernels      -> selective scan, causal conv1d and step kernels
"""
from __future__ import annotations

import os as _os
from pathlib import Path as _Path

__version__ = "0.1.0"

# PyTorch's OpenMP workers spin for a while after each parallel op (libgomp's default wait
# policy), and the compiled CPU kernels (kernels/cpu_common.py) run in threads of their own, so
# on a CPU with few cores those spinning workers take the cores from the kernels: a tiny-model
# training step on 2 cores took 167 ms with the default policy and 129 ms with PASSIVE (idle VM),
# and 10x longer under load. libgomp reads the variable once, when torch is first imported, so it
# is set here, before any module of the package imports torch; a value the user set wins, and
# it has no effect where torch was imported before this package.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# In a source checkout that was not pip-installed, `kernels/` sits beside this
# package; make it importable as `mamba_genome.kernels` exactly as the installed
# package maps it (pyproject.toml [tool.setuptools] package-dir).
_root = _Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "kernels" / "selective_scan").is_dir():
    if not (_Path(__file__).resolve().parent / "kernels").is_dir():
        __path__.append(str(_root))  # type: ignore[name-defined]  # noqa: F821


def load(path, device=None):
    """Load a model from a model directory or a run directory (its best model).

    Returns a :class:`mamba_genome.api.GenomeModel` with ``embed`` / ``score``
    (and ``classify`` when the checkpoint carries a classification head).
    """
    from .api import load as _load

    return _load(path, device=device)


__all__ = ["load", "__version__"]
