"""The fused mixer op (``mamba_inner``, Triton) against its op-by-op composition in float64:
output and every gradient, fp32 and bf16, lengths that are not multiples of any block; and the
checkpoint replay (``ReplayCache``), which must give the same gradients with one scan forward."""
from __future__ import annotations

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from mamba_genome.kernels import utils
from mamba_genome.kernels.mamba_inner import ReplayCache, mamba_inner, mamba_inner_composed

from .conftest import DEVICE, DTYPE_NAME, TOL, assert_close, cuda_only

NAMES = ("xz", "conv_w", "conv_b", "x_proj_w", "dt_proj_w", "dt_proj_b", "A", "D", "out_w", "out_b")


def make_inputs(b, l, d, n, r, dm, width, out_bias, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    rnd = lambda *s, scale=1.0: (scale * torch.randn(*s, generator=g)).to(DEVICE)  # noqa: E731
    return dict(
        xz=rnd(b, l, 2 * d), conv_w=rnd(d, width, scale=0.5), conv_b=rnd(d, scale=0.1),
        x_proj_w=rnd(r + 2 * n, d, scale=d ** -0.5), dt_proj_w=rnd(d, r, scale=r ** -0.5),
        dt_proj_b=rnd(d, scale=0.5) - 2.0, A=-(0.1 + torch.rand(d, n, generator=g)).to(DEVICE),
        D=rnd(d), out_w=rnd(dm, d, scale=d ** -0.5), out_b=rnd(dm, scale=0.1) if out_bias else None)


def run(inputs, fn, dtype, **kw):
    leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in inputs.items()}
    xz = leaves["xz"]
    xz_in = xz.to(dtype) if dtype != torch.float64 else xz
    out = fn(xz_in, *[leaves[k] for k in NAMES[1:]], **kw)
    gen = torch.Generator(device="cpu").manual_seed(99)
    gout = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device)
    (out.double() * gout).sum().backward()
    return out, {k: v.grad for k, v in leaves.items() if v is not None}


CASES = [
    pytest.param(dict(b=2, l=83, d=8, n=4, r=3, dm=6, width=4, out_bias=True), torch.float32, id="fp32-L83-bias"),
    pytest.param(dict(b=1, l=150, d=12, n=8, r=4, dm=10, width=3, out_bias=False), torch.float32, id="fp32-L150"),
    pytest.param(dict(b=1, l=70, d=8, n=4, r=3, dm=6, width=4, out_bias=False), torch.bfloat16, id="bf16-L70"),
    pytest.param(dict(b=2, l=1100, d=64, n=16, r=4, dm=32, width=4, out_bias=True), torch.bfloat16,
                 marks=cuda_only, id="bf16-L1100"),
]


def rel(a, ref):
    return ((a.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("p,dtype", CASES)
def test_fused_matches_float64_composition(p, dtype):
    """fp32: 1e-5 on the output and every gradient. bf16 (run as in training, under autocast):
    the op chains five bf16 roundings (xz, u, x_proj, delta, y) at tiny widths where little
    averages out, so the bound is 3e-2, and the fused op may not be worse than autograd over
    the same ops in bf16 (both against float64)."""
    inputs = make_inputs(**p)
    ref_in = {k: v.double() if v is not None else None for k, v in inputs.items()}
    out_ref, g_ref = run(ref_in, mamba_inner_composed, torch.float64, backend="reference")
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out, g = run(inputs, mamba_inner, dtype, backend="triton")
        if dtype == torch.bfloat16:
            out_c, g_c = run(inputs, mamba_inner_composed, dtype, backend="triton")
    tol = TOL[dtype] if dtype == torch.float32 else 3e-2
    assert out.dtype == dtype, DTYPE_NAME[dtype]
    assert_close("out", out_ref, out, tol)
    for name in NAMES:
        if name in g_ref:
            assert g[name].dtype == inputs[name].dtype, name
            assert_close(f"d{name}", g_ref[name], g[name], tol)
            if dtype == torch.bfloat16:
                assert rel(g[name], g_ref[name]) <= 1.25 * rel(g_c[name], g_ref[name]) + 1e-3, name


@pytest.mark.skipif(DEVICE != "cpu" or not utils.numba_available(), reason="needs numba on the CPU")
@pytest.mark.parametrize("p", [dict(b=2, l=83, d=8, n=4, r=3, dm=6, width=4, out_bias=True),
                               dict(b=1, l=301, d=72, n=16, r=4, dm=10, width=3, out_bias=False),  # 64 + 8 channels
                               dict(b=3, l=40, d=128, n=16, r=1, dm=64, width=2, out_bias=True)])
def test_cpu_fused_matches_float64_composition(p):
    """The fused CPU Function (kernels/mamba_inner/cpu.py, fp32 training on the numba kernels): the output
    and every gradient against the float64 composition, and against autograd over the composition on the
    same kernels (the same arithmetic: dx and dz only land in one buffer); without autograd or under
    autocast the composition runs."""
    inputs = make_inputs(**p)
    ref_in = {k: v.double() if v is not None else None for k, v in inputs.items()}
    out_ref, g_ref = run(ref_in, mamba_inner_composed, torch.float64, backend="reference")
    out, g = run(inputs, mamba_inner, torch.float32, backend="numba")
    assert type(out.grad_fn).__name__ == "MambaInnerNumbaFnBackward"
    out_c, g_c = run(inputs, mamba_inner_composed, torch.float32, backend="numba")
    assert_close("out", out_ref, out, TOL[torch.float32])
    assert_close("out vs composition", out_c.double(), out, 1e-6)
    for name in NAMES:
        if name in g_ref:
            assert g[name].dtype == torch.float32 and g[name].shape == inputs[name].shape, name
            assert_close(f"d{name}", g_ref[name], g[name], TOL[torch.float32])
            assert_close(f"d{name} vs composition", g_c[name].double(), g[name], 1e-5)
    args = [inputs[k] for k in NAMES]
    with torch.no_grad():
        assert mamba_inner(*args, backend="numba").grad_fn is None
    leaves = [a.detach().clone().requires_grad_(True) if a is not None else None for a in args]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert type(mamba_inner(*leaves, backend="numba").grad_fn).__name__ != "MambaInnerNumbaFnBackward"


def test_torch_backend_is_the_composition():
    p = dict(b=1, l=40, d=8, n=4, r=3, dm=6, width=4, out_bias=True)
    inputs = make_inputs(**p)
    out_ref, g_ref = run(inputs, mamba_inner_composed, torch.float32, backend="torch")
    out, g = run(inputs, mamba_inner, torch.float32, backend="torch")
    assert torch.equal(out, out_ref)
    for name in g_ref:
        assert torch.equal(g[name], g_ref[name]), name


def test_checkpoint_replay_skips_the_scan_and_keeps_the_gradients(scan_fwd_calls):
    """Two checkpointed layers: with a ReplayCache each layer's scan forward runs once (not twice)
    and the gradients match the un-checkpointed fused op."""
    calls = scan_fwd_calls
    p = dict(b=2, l=19, d=8, n=4, r=3, dm=8, width=4, out_bias=False)
    layers = [make_inputs(**p, seed=s) for s in (1, 2)]
    x0 = torch.randn(2, 19, 8, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    w_in = [torch.randn(16, 8, generator=torch.Generator().manual_seed(6 + i)).to(DEVICE) * 0.3 for i in range(2)]

    def forward(mode):
        params = [{k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in lay.items()
                   if k != "xz"} for lay in layers]
        x = x0.clone().requires_grad_(True)
        cache = ReplayCache()

        def layer(h, i, replay):
            xz = h @ w_in[i].t()
            args = [params[i][k] for k in NAMES[1:]]
            return h + mamba_inner(xz, *args, backend="triton", replay=replay)

        h = x
        for i in range(2):
            if mode == "plain":
                h = layer(h, i, None)
            else:
                h = checkpoint(layer, h, i, (cache, i) if mode == "replay" else None, use_reentrant=False)
        cache.arm()
        h.square().sum().backward()
        grads = [x.grad] + [v.grad for prm in params for v in prm.values() if v is not None]
        return h.detach(), grads

    calls["n"] = 0
    h_plain, g_plain = forward("plain")
    assert calls["n"] == 2
    calls["n"] = 0
    h_ckpt, g_ckpt = forward("checkpoint")
    assert calls["n"] == 4                      # every layer's scan runs again in the backward
    calls["n"] = 0
    h_rep, g_rep = forward("replay")
    assert calls["n"] == 2                      # ... but not with the replay cache
    assert torch.equal(h_plain, h_rep) and torch.equal(h_plain, h_ckpt)
    for a, b, c in zip(g_plain, g_ckpt, g_rep):
        assert_close("grad (checkpoint)", a, b, 1e-6)
        assert_close("grad (replay)", a, c, 1e-6)


def test_replay_cache_protocol():
    cache = ReplayCache()
    assert cache.take(0) is None                 # nothing before arming
    cache.put(0, "hs", "xdbl")
    assert cache.take(0) is None                 # not armed: a forward, not a recomputation
    cache.arm()
    assert cache.take(0) == ("hs", "xdbl")
    assert cache.take(0) is None                 # handed out once
    cache.put(1, "a", "b")                       # armed: a recomputation stores nothing
    assert cache.take(1) is None
