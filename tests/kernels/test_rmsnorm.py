"""Fused Triton RMSNorm (+ residual) vs the float64 reference, forward and backward.

Without CUDA the kernels run in Triton's CPU interpreter: ``conftest.py`` sets
TRITON_INTERPRET=1 before any kernel module is decorated; ``fused`` is reloaded
here if something imported it in compiled mode first.
"""
from __future__ import annotations

import importlib
import os

import pytest
import torch

from mamba_genome.kernels import rms_norm, utils
from mamba_genome.kernels.rmsnorm import rms_norm_naive, rms_norm_torch

from .conftest import DEVICE, HAS_CUDA, TOL, assert_close

fused = pytest.importorskip("mamba_genome.kernels.rmsnorm.fused")
if not HAS_CUDA and type(fused._rms_norm_fwd_kernel).__name__ != "InterpretedFunction":
    fused = importlib.reload(fused)


def _case(shape, dtype, has_res, res_fp32):
    return pytest.param(shape, dtype, has_res, res_fp32,
                        id=f"{'x'.join(map(str, shape))}-{str(dtype)[6:]}-{'res' if has_res else 'nores'}"
                           f"-{'fp32res' if res_fp32 else 'inres'}")


CASES = [
    _case((2, 63, 48), torch.float32, True, True),      # rows (126) not a multiple of the block
    _case((2, 63, 48), torch.float32, False, True),
    _case((1, 100, 64), torch.float32, True, False),
    _case((1, 100, 64), torch.float32, False, False),
    _case((3, 17, 256), torch.bfloat16, True, True),     # the 7m width, bf16 under autocast
    _case((3, 17, 256), torch.bfloat16, False, True),
    _case((1, 129, 128), torch.bfloat16, True, False),
    _case((1, 129, 128), torch.bfloat16, False, False),
    _case((5, 7), torch.float32, True, True),            # 2-D input, width not a power of two
]


@pytest.mark.skipif(HAS_CUDA, reason="the interpreter is the CPU path")
def test_interpreter_is_used():
    assert os.environ.get("TRITON_INTERPRET") == "1"
    assert type(fused._rms_norm_fwd_kernel).__name__ == "InterpretedFunction"


@pytest.mark.parametrize("shape,dtype,has_res,res_fp32", CASES)
def test_fused_matches_reference(shape, dtype, has_res, res_fp32):
    torch.manual_seed(0)
    d = shape[-1]
    res_dtype = torch.float32 if (res_fp32 and has_res) else dtype
    x = torch.randn(shape, dtype=dtype).to(DEVICE).requires_grad_()
    r = torch.randn(shape, dtype=res_dtype).to(DEVICE).requires_grad_() if has_res else None
    w = (1 + 0.2 * torch.randn(d)).to(DEVICE).requires_grad_()
    leaves = [x, w] + ([r] if has_res else [])

    y, res = fused.rms_norm_triton(x, w, residual=r, eps=1e-5, residual_in_fp32=res_fp32)
    y_t, res_t = rms_norm_torch(x, w, residual=r, eps=1e-5, residual_in_fp32=res_fp32)
    assert y.dtype == y_t.dtype == dtype and y.shape == x.shape
    assert res.dtype == res_t.dtype and res.shape == x.shape

    gy = torch.randn(shape, dtype=torch.float64).to(DEVICE)
    gr = torch.randn(shape, dtype=torch.float64).to(DEVICE)
    grads = torch.autograd.grad((y.double() * gy).sum() + (res.double() * gr).sum(), leaves)

    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    y_ref, res_ref = rms_norm_naive(ref_leaves[0], ref_leaves[1], ref_leaves[2] if has_res else None, eps=1e-5)
    ref_grads = torch.autograd.grad((y_ref * gy).sum() + (res_ref * gr).sum(), ref_leaves)

    tol = TOL[dtype]
    assert_close("y", y_ref, y, tol)
    assert_close("residual_out", res_ref, res, tol)
    for name, g_ref, g in zip(["dx", "dweight", "dresidual"], ref_grads, grads):
        assert g.dtype == leaves[["dx", "dweight", "dresidual"].index(name)].dtype
        assert_close(name, g_ref, g, tol)


def test_unused_residual_output_and_dispatch():
    """Only y is used (like the final norm): d residual_out arrives as None."""
    torch.manual_seed(1)
    x, r = (torch.randn(2, 33, 32).to(DEVICE).requires_grad_() for _ in range(2))
    w = torch.randn(32).to(DEVICE).requires_grad_()
    y, _ = rms_norm(x, w, residual=r, backend="triton")
    gx, gw, gr = torch.autograd.grad(y.sum(), [x, w, r])
    xr, wr, rr = (t.detach().double().requires_grad_() for t in (x, w, r))
    y_ref, _ = rms_norm(xr, wr, residual=rr, backend="reference")
    assert y_ref.dtype == torch.float64
    for name, a, b in zip(["dx", "dw", "dr"], torch.autograd.grad(y_ref.sum(), [xr, wr, rr]), [gx, gw, gr]):
        assert_close(name, a, b, 1e-5)


def test_bad_weight_shape():
    with pytest.raises(ValueError, match="weight"):
        fused.rms_norm_triton(torch.randn(4, 8, device=DEVICE), torch.ones(7, device=DEVICE))


@pytest.mark.skipif(DEVICE != "cpu" or not utils.numba_available(), reason="needs numba and CPU tensors")
@pytest.mark.parametrize("shape,has_res,threads", [((2, 63, 48), True, 2), ((2, 63, 48), False, 2),
                                                    ((3, 300, 64), True, 3), ((1, 700, 256), False, 1),
                                                    ((5, 7), True, 2)])
def test_numba_matches_reference(shape, has_res, threads, monkeypatch):
    """The compiled CPU norm (fp32, kernels/rmsnorm/cpu.py): y, the residual stream and the
    gradients of x, weight and residual against float64; several row jobs over the threads."""
    common = importlib.import_module("mamba_genome.kernels.cpu_common")
    monkeypatch.setattr(common, "MIN_PARALLEL_WORK", 0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        x = torch.randn(shape).requires_grad_()
        r = torch.randn(shape).requires_grad_() if has_res else None
        w = (1 + 0.2 * torch.randn(shape[-1])).requires_grad_()
        leaves = [x, w] + ([r] if has_res else [])
        y, res = rms_norm(x, w, residual=r, eps=1e-5, backend="numba")
        gy, gr = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
        grads = torch.autograd.grad((y.double() * gy).sum() + (res.double() * gr).sum(), leaves)
        ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
        y_ref, res_ref = rms_norm_naive(ref_leaves[0], ref_leaves[1], ref_leaves[2] if has_res else None, eps=1e-5)
        ref_grads = torch.autograd.grad((y_ref * gy).sum() + (res_ref * gr).sum(), ref_leaves)
        assert y.dtype == res.dtype == torch.float32
        assert_close("y", y_ref, y, TOL[torch.float32])
        assert_close("residual_out", res_ref, res, TOL[torch.float32])
        for name, g_ref, g in zip(["dx", "dweight", "dresidual"], ref_grads, grads):
            assert_close(name, g_ref, g, TOL[torch.float32])
        with torch.no_grad():                          # the inference path: same values
            y2, res2 = rms_norm(x, w, residual=r, eps=1e-5, backend="numba")
        assert torch.equal(y2, y.detach()) and torch.equal(res2, res.detach())
    finally:
        torch.set_num_threads(before)
