"""Causal conv1d: Triton, torch and numba (compiled CPU) backends against the float64 loop reference.

Compares y, the final conv state and the gradients of x, weight, bias and initial_state.
"""
from __future__ import annotations

import pytest
import torch

from mamba_genome.kernels import causal_conv1d, utils

from .conftest import DEVICE, DTYPE_NAME, TOL, assert_close, cuda_only

# the compiled CPU kernels (kernels/causal_conv1d/cpu.py), where numba imports and tensors are on CPU
NUMBA = pytest.param("numba", marks=pytest.mark.skipif(not (utils.numba_available() and DEVICE == "cpu"),
                                                       reason="needs numba and CPU tensors"))


def case(b, l, d, w, dtype, bias=True, silu=True, h0=True, marks=()):
    tag = "".join(s for s, on in (("bias", bias), ("-silu", silu), ("-h0", h0)) if on) or "plain"
    return pytest.param(dict(b=b, l=l, d=d, w=w, dtype=dtype, bias=bias, silu=silu, h0=h0),
                        id=f"B{b}-L{l}-D{d}-W{w}-{DTYPE_NAME[dtype]}-{tag}", marks=marks)


CASES = [
    case(1, 1, 8, 4, torch.float32),
    case(2, 2, 5, 4, torch.float32, silu=False),
    case(2, 63, 16, 4, torch.float32),
    case(3, 500, 24, 3, torch.float32, bias=False, h0=False),
    case(2, 500, 32, 2, torch.bfloat16),
    case(1, 2049, 8, 4, torch.float16, silu=False),
    case(2, 4096, 512, 4, torch.bfloat16, marks=cuda_only),
    case(2, 4099, 1000, 3, torch.float32, marks=cuda_only),
]


def make_inputs(b, l, d, w, dtype, bias, silu, h0):
    g = dict(device=DEVICE)
    return dict(x=torch.randn(b, l, d, **g).to(dtype), weight=torch.randn(d, w, **g),
                bias=torch.randn(d, **g) if bias else None,
                initial_state=torch.randn(b, d, w - 1, **g).to(dtype) if h0 else None)


def run(inputs, silu, backend):
    leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in inputs.items()}
    y, final = causal_conv1d(leaves["x"], leaves["weight"], leaves["bias"], activation="silu" if silu else None,
                             initial_state=leaves["initial_state"], return_final_state=True, backend=backend)
    gen = torch.Generator().manual_seed(99)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device)
    gf = torch.randn(final.shape, generator=gen, dtype=torch.float64).to(y.device)
    ((y.double() * gy).sum() + (final.double() * gf).sum()).backward()
    return y, final, {k: v.grad for k, v in leaves.items() if v is not None}


@pytest.mark.parametrize("backend", ["triton", "torch", NUMBA])
@pytest.mark.parametrize("p", CASES)
def test_conv_matches_reference(p, backend):
    inputs = make_inputs(**p)
    y_ref, f_ref, g_ref = run(inputs, p["silu"], "reference")
    y, f, g = run(inputs, p["silu"], backend)
    tol = TOL[p["dtype"]]
    assert y.dtype == p["dtype"]
    assert_close("y", y_ref, y, tol)
    assert_close("final_state", f_ref, f, tol)
    for name, ref in g_ref.items():
        assert g[name].dtype == inputs[name].dtype, name
        assert_close(f"d{name}", ref, g[name], tol)


@pytest.mark.parametrize("backend", ["triton", "torch", NUMBA])
def test_conv_streaming(backend):
    """conv([x1; x2]) == conv(x1) then conv(x2, initial_state=final1)."""
    p = dict(b=2, l=200, d=16, w=4, dtype=torch.float32, bias=True, silu=True, h0=True)
    x = make_inputs(**p)
    kw = dict(activation="silu", return_final_state=True, backend=backend)
    y, f = causal_conv1d(x["x"], x["weight"], x["bias"], initial_state=x["initial_state"], **kw)
    y1, f1 = causal_conv1d(x["x"][:, :77], x["weight"], x["bias"], initial_state=x["initial_state"], **kw)
    y2, f2 = causal_conv1d(x["x"][:, 77:], x["weight"], x["bias"], initial_state=f1, **kw)
    assert_close("y", y, torch.cat([y1, y2], 1), 1e-6)
    assert_close("final_state", f, f2, 1e-6)


@pytest.mark.parametrize("backend", ["triton", NUMBA])
def test_conv_sliced_input(backend):
    """x as a strided view of a wider projection (the model's x half of in_proj's output), read
    in place; the gradient lands in the projection's slice."""
    proj = torch.randn(2, 300, 48, device=DEVICE)
    w = torch.randn(32, 4, device=DEVICE)
    gy = torch.randn(2, 300, 32, device=DEVICE, dtype=torch.float64)
    outs = {}
    for name in ("reference", backend):
        leaf = proj.clone().requires_grad_(True)
        y = causal_conv1d(leaf[..., 8:40], w, activation="silu", backend=name)
        (y.double() * gy).sum().backward()
        outs[name] = (y, leaf.grad)
    assert_close("y", outs["reference"][0], outs[backend][0], 1e-5)
    assert_close("dproj", outs["reference"][1], outs[backend][1], 1e-5)
    assert outs[backend][1][..., :8].abs().max() == 0 and outs[backend][1][..., 40:].abs().max() == 0


@pytest.mark.parametrize("p,tune", [
    (case(2, 300, 24, 4, torch.float32), dict(g_BL=16, g_BD=16, g_programs=3)),    # strips of 7 tiles, some past L
    (case(1, 77, 8, 3, torch.float32, h0=False), dict(g_BL=8, g_programs=1)),        # one strip of 10 tiles
    (case(2, 45, 6, 2, torch.float32, bias=False), dict(g_BL=16, g_programs=64)),    # one tile per strip
])
def test_conv_backward_strips(p, tune, monkeypatch):
    """The backward's first pass walks strips of tiles and reduces dw / dbias once per strip:
    several tiles per strip, partial last tiles and strips that run past the end."""
    import importlib

    chunk = importlib.import_module("mamba_genome.kernels.causal_conv1d.chunk")
    monkeypatch.setattr(chunk, "TUNE", dict(tune))
    p = p.values[0]
    inputs = make_inputs(**p)
    _, _, g_ref = run(inputs, p["silu"], "reference")
    _, _, g = run(inputs, p["silu"], "triton")
    for name, ref in g_ref.items():
        assert_close(f"d{name}", ref, g[name], TOL[p["dtype"]])
