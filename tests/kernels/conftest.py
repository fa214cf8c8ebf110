"""Shared fixtures for the kernel tests.

Without CUDA the Triton kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1),
which is how CI tests them. ``triton.jit`` decides between compiling and interpreting
when a kernel is *decorated*, so the variable is set here, at conftest import, and any
kernel module that another test module already imported in compiled mode is reloaded.
"""
from __future__ import annotations

import importlib
import os
import sys

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

_KERNEL_MODULES = ("mamba_genome.kernels.selective_scan.chunk", "mamba_genome.kernels.causal_conv1d.chunk")


def _ensure_interpreter():
    if HAS_CUDA:
        return
    for name in _KERNEL_MODULES:
        if name in sys.modules:
            importlib.reload(sys.modules[name])
    step = sys.modules.get("mamba_genome.kernels.selective_scan.step")
    if step is not None:
        step._state_update_kernel.cache_clear()


_ensure_interpreter()

# Devices the parametrised tests run on: the interpreter on CPU, or the GPU.
DEVICE = "cuda" if HAS_CUDA else "cpu"
cuda_only = pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")


def assert_close(name, ref, out, ratio):
    """Fail unless ||out - ref|| / ||ref|| < ratio; NaN or inf in ``out`` always fails."""
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    out_d, ref_d = out.detach().double(), ref.detach().double()
    assert torch.isfinite(out_d).all(), f"{name}: output has NaN/inf"
    denom = ref_d.norm().item()
    err = (out_d - ref_d).norm().item() / (denom if denom > 0 else 1.0)
    assert err < ratio, f"{name}: relative error {err:.3e} >= {ratio:.1e} (|ref| = {denom:.3e})"
    return err


TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}
DTYPE_NAME = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@pytest.fixture
def scan_fwd_calls(monkeypatch):
    """{"n": calls} of the Triton scan forward launcher, to check what a recomputation reruns."""
    chunk = importlib.import_module("mamba_genome.kernels.selective_scan.chunk")
    calls = {"n": 0}
    real = chunk._selective_scan_fwd

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(chunk, "_selective_scan_fwd", counting)
    return calls


@pytest.fixture(autouse=True)
def split_small_cpu_launches(monkeypatch):
    """The compiled CPU kernels run small launches in one thread (``MIN_PARALLEL_WORK``); the
    kernel tests use small shapes, so they switch that off to cover the split over threads."""
    from mamba_genome.kernels import utils

    if utils.numba_available():
        common = importlib.import_module("mamba_genome.kernels.cpu_common")
        monkeypatch.setattr(common, "MIN_PARALLEL_WORK", 0)
