"""Causal conv1d decode step: stepping token by token must reproduce the float64 full-sequence conv."""
from __future__ import annotations

import pytest
import torch

from mamba_genome.kernels import causal_conv1d_update
from mamba_genome.kernels.causal_conv1d import causal_conv1d_naive

from .conftest import DEVICE, DTYPE_NAME, assert_close

STEP_TOL = {torch.float32: 1e-6, torch.bfloat16: 1e-2}
L = 37

CASES = [  # (batch, dim, width, dtype, bias, activation): every width x dtype x (bias, act) at D=50, two at D=64
    (2, 50, w, dt, bias, act)
    for w in (2, 3, 4)
    for dt in (torch.float32, torch.bfloat16)
    for bias, act in [(True, "silu"), (False, None)]
] + [(1, 64, 4, torch.bfloat16, True, None), (1, 64, 3, torch.float32, False, "silu")]


def case_id(c):
    b, d, w, dt, bias, act = c
    return f"B{b}-D{d}-W{w}-{DTYPE_NAME[dt]}-{act or 'id'}{'-bias' if bias else ''}"


def make(b, d, w, dtype, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(b, L, d, generator=g).to(DEVICE, dtype)
    weight = (torch.randn(d, w, generator=g) / w ** 0.5).to(DEVICE, dtype)
    bvec = torch.randn(d, generator=g).to(DEVICE, dtype) if bias else None
    init = torch.randn(b, d, w - 1, generator=g).to(DEVICE, dtype)
    return xs, weight, bvec, init


def run_steps(xs, state, weight, bias, act, backend):
    return torch.stack([causal_conv1d_update(xs[:, t], state, weight, bias, activation=act, backend=backend)
                        for t in range(xs.shape[1])], 1)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_steps_match_full_conv(backend, case):
    b, d, w, dtype, bias, act = case
    xs, weight, bvec, init = make(*case[:5])
    y_ref, f_ref = causal_conv1d_naive(xs, weight, bvec, activation=act, initial_state=init,
                                       return_final_state=True)
    state = init.clone()
    y = run_steps(xs, state, weight, bvec, act, backend)
    assert y.dtype == dtype and state.dtype == dtype
    assert_close("y", y_ref, y, STEP_TOL[dtype])
    # the state only ever holds copies of inputs: exact
    assert torch.equal(state.double(), f_ref), "final conv_state differs from the reference final_state"


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_strided_inputs(backend):
    """x as a column slice (like in_proj(...).chunk) and a conv_state with channel-last storage."""
    b, d, w = 3, 40, 4
    xs, weight, bvec, init = make(b, d, w, torch.float32, True, seed=1)
    xz = torch.cat([xs, torch.randn_like(xs)], dim=-1)                 # x = xz[..., :d], stride(1) == 1
    state = init.transpose(1, 2).contiguous().transpose(1, 2)          # (B, D, W-1), stride(1) == 1
    assert not state.is_contiguous()
    y_ref, f_ref = causal_conv1d_naive(xs, weight, bvec, activation="silu", initial_state=init,
                                       return_final_state=True)
    y = torch.stack([causal_conv1d_update(xz[:, t, :d], state, weight.t().contiguous().t(), bvec,
                                          activation="silu", backend=backend) for t in range(L)], 1)
    assert_close("y", y_ref, y, STEP_TOL[torch.float32])
    assert torch.equal(state.double(), f_ref)


def test_reference_backend_and_default():
    xs, weight, bvec, init = make(2, 50, 3, torch.float32, True, seed=2)
    y_ref, f_ref = causal_conv1d_naive(xs, weight, bvec, activation="silu", initial_state=init,
                                       return_final_state=True)
    for backend in ("reference", None):
        state = init.clone()
        y = run_steps(xs, state, weight, bvec, "silu", backend)
        assert_close(f"y[{backend}]", y_ref, y, STEP_TOL[torch.float32])
        assert torch.equal(state.double(), f_ref)


BAD = {
    "x-3d": (dict(x=(2, 1, 8)), "x must have shape"),
    "weight-dim": (dict(weight=(9, 4)), "weight must have shape"),
    "width-5": (dict(weight=(8, 5), state=(2, 8, 4)), "conv width must be 2..4"),
    "width-1": (dict(weight=(8, 1), state=(2, 8, 0)), "conv width must be 2..4"),
    "bias": (dict(bias=(7,)), "bias must have shape"),
    "state-width": (dict(state=(2, 8, 2)), "conv_state must have shape"),
    "state-batch": (dict(state=(3, 8, 3)), "conv_state must have shape"),
    "activation": (dict(act="relu"), "activation must be"),
}


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
def test_bad_shapes(bad):
    over, msg = bad
    shapes = dict(x=(2, 8), state=(2, 8, 3), weight=(8, 4), bias=(8,))
    shapes.update({k: v for k, v in over.items() if k != "act"})
    x, state, weight, bias = (torch.zeros(shapes[k]) for k in ("x", "state", "weight", "bias"))
    with pytest.raises(ValueError, match=msg):
        causal_conv1d_update(x, state, weight, bias, activation=over.get("act", "silu"))
