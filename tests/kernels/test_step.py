"""Decode steps: token-by-token updates must reproduce the full-sequence kernels."""
from __future__ import annotations

import pytest
import torch

from mamba_genome.kernels import causal_conv1d, causal_conv1d_update, selective_scan, selective_state_update

from .conftest import DEVICE, DTYPE_NAME, TOL, assert_close
from .test_selective_scan import make_inputs


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=DTYPE_NAME.get)
@pytest.mark.parametrize("gate", [True, False], ids=["z-Dskip-bias", "plain"])
def test_state_update_matches_scan(backend, dtype, gate):
    b, l, d, n = 2, 40, 24, 16
    x = make_inputs(b, l, d, n, dtype, z=gate, D=gate, bias=gate, softplus=True, h0=True)
    y_ref, f_ref = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                                  delta_bias=x["delta_bias"], delta_softplus=True,
                                  initial_state=x["initial_state"], return_final_state=True, backend="reference")
    state = x["initial_state"].clone()
    ys = []
    for t in range(l):
        ys.append(selective_state_update(state, x["u"][:, t], x["delta"][:, t], x["A"], x["B"][:, t], x["C"][:, t],
                                         D=x["D"], z=x["z"][:, t] if gate else None, dt_bias=x["delta_bias"],
                                         dt_softplus=True, backend=backend))
    y = torch.stack(ys, 1)
    assert y.dtype == dtype
    assert_close("y", y_ref, y, TOL[dtype])
    assert_close("final_state", f_ref, state, 1e-5)


@pytest.mark.parametrize("width", [2, 3, 4])
def test_conv_update_matches_conv(width):
    b, l, d = 2, 30, 16
    xs = torch.randn(b, l, d, device=DEVICE)
    w, bias = torch.randn(d, width, device=DEVICE), torch.randn(d, device=DEVICE)
    init = torch.randn(b, d, width - 1, device=DEVICE)
    y_ref, f_ref = causal_conv1d(xs, w, bias, activation="silu", initial_state=init, return_final_state=True,
                                 backend="triton")
    state = init.clone()
    y = torch.stack([causal_conv1d_update(xs[:, t], state, w, bias, activation="silu") for t in range(l)], 1)
    assert_close("y", y_ref, y, 1e-5)
    assert_close("final_state", f_ref, state, 1e-6)
