"""Selective scan: Triton and torch backends against the float64 loop reference.

Every case compares y, the final state and the gradient of every input. On CPU the
Triton kernels run in the interpreter (see conftest.py), so CPU cases stay small;
the CUDA-only cases use model-sized shapes and one case above 2**31 elements.
"""
from __future__ import annotations

import zlib

import pytest
import torch

from mamba_genome.kernels import selective_scan, utils

from .conftest import DEVICE, DTYPE_NAME, TOL, assert_close, cuda_only

# the compiled CPU kernels (kernels/selective_scan/cpu.py), where numba imports and tensors are on CPU
NUMBA = pytest.param("numba", marks=pytest.mark.skipif(not (utils.numba_available() and DEVICE == "cpu"),
                                                       reason="needs numba and CPU tensors"))

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state")
ALL = dict(z=True, D=True, bias=True, softplus=True, h0=True)
NONE = dict(z=False, D=False, bias=False, softplus=False, h0=False)


def case(b, l, d, n, dtype, marks=(), **flags):
    opts = {**ALL, **flags}
    tag = "".join(k[0] if v else "" for k, v in (("z", opts["z"]), ("Dskip", opts["D"]), ("bias", opts["bias"]),
                                                 ("softplus", opts["softplus"]), ("h0", opts["h0"])))
    return pytest.param(dict(b=b, l=l, d=d, n=n, dtype=dtype, **opts),
                        id=f"B{b}-L{l}-D{d}-N{n}-{DTYPE_NAME[dtype]}-{tag or 'plain'}", marks=marks)


CPU_CASES = [  # small: on CPU each program walks its steps in the Triton interpreter
    case(1, 1, 8, 16, torch.float32),
    case(2, 63, 16, 16, torch.float32),
    case(1, 63, 16, 1, torch.float32, **NONE),
    case(2, 77, 24, 16, torch.float32, bias=False),
    case(1, 151, 24, 16, torch.bfloat16),
    case(1, 200, 24, 8, torch.float16, z=False, h0=False),
    case(1, 257, 4, 4, torch.float32),     # 16 interpreter tiles + 1 step; chunks of 48 steps, the last partial
]
# long and odd for the PyTorch path: 8 of its SEQ_CHUNK = 256 steps + 1 (too slow for the interpreter,
# whose chunking the 257-step case and test_scan_tile_configs cover)
LONG_CPU_CASE = case(1, 2049, 4, 4, torch.float32)
CUDA_CASES = [
    case(2, 4096, 512, 16, torch.bfloat16, marks=cuda_only),
    case(2, 4096, 512, 16, torch.float32, marks=cuda_only),
    case(3, 3001, 200, 16, torch.float32, marks=cuda_only, h0=False),
    case(1, 8191, 64, 4, torch.bfloat16, marks=cuda_only, **NONE),
]


def make_inputs(b, l, d, n, dtype, z, D, bias, softplus, h0, device=DEVICE, sliced=False):
    """Random inputs, the same for the same arguments whatever ran before (the seed comes from them).
    With ``sliced``, u/delta/z and B/C are views into one projection, as the model produces them
    (non-contiguous rows)."""
    torch.manual_seed(zlib.crc32(repr((b, l, d, n, str(dtype), z, D, bias, softplus, h0, sliced)).encode()))
    g = dict(device=device)
    if sliced:
        proj = torch.randn(b, l, 3 * d + 2 * n, **g).to(dtype)
        u, delta, zz = proj[..., :d], proj[..., d:2 * d] * 0.5, proj[..., 2 * d:3 * d]
        Bm, Cm = proj[..., 3 * d:3 * d + n], proj[..., 3 * d + n:]
        delta = delta.to(dtype)
    else:
        u = torch.randn(b, l, d, **g).to(dtype)
        delta = (0.5 * torch.randn(b, l, d, **g)).to(dtype)
        zz = torch.randn(b, l, d, **g).to(dtype)
        Bm = torch.randn(b, l, n, **g).to(dtype)
        Cm = torch.randn(b, l, n, **g).to(dtype)
    if not softplus:
        delta = delta.abs()  # keep dt positive so the recurrence decays
    A = -(0.1 + torch.rand(d, n, **g))
    return dict(
        u=u, delta=delta, A=A, B=Bm, C=Cm,
        D=torch.randn(d, **g) if D else None,
        z=zz if z else None,
        # without softplus a negative delta + bias would make the recurrence grow without bound
        delta_bias=(0.3 * torch.randn(d, **g)).abs_() if bias and not softplus else
        0.3 * torch.randn(d, **g) if bias else None,
        initial_state=torch.randn(b, d, n, **g) if h0 else None,
    )


def run(inputs, softplus, backend, grad=True):
    """Forward + backward of <y, gy> + <final, gf>; returns y, final and the input grads."""
    leaves = {k: (v.detach().clone().requires_grad_(grad) if v is not None else None) for k, v in inputs.items()}
    y, final = selective_scan(**{k: leaves[k] for k in ("u", "delta", "A", "B", "C")},
                              D=leaves["D"], z=leaves["z"], delta_bias=leaves["delta_bias"],
                              delta_softplus=softplus, initial_state=leaves["initial_state"],
                              return_final_state=True, backend=backend)
    if not grad:
        return y, final, {}
    gen = torch.Generator(device="cpu").manual_seed(1234)
    gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device)
    gf = torch.randn(final.shape, generator=gen, dtype=torch.float64).to(y.device)
    ((y.double() * gy).sum() + (final.double() * gf).sum()).backward()
    return y, final, {k: v.grad for k, v in leaves.items() if v is not None}


def check(p, backend, sliced=False, inputs=None):
    inputs = make_inputs(**p, sliced=sliced) if inputs is None else inputs
    y_ref, f_ref, g_ref = run(inputs, p["softplus"], "reference")
    y, f, g = run(inputs, p["softplus"], backend)
    tol = TOL[p["dtype"]]
    assert y.dtype == p["dtype"] and f.dtype == torch.float32
    assert_close("y", y_ref, y, tol)
    assert_close("final_state", f_ref, f, tol)
    for name in NAMES:
        if name in g_ref:
            assert g[name].dtype == inputs[name].dtype, name
            assert_close(f"d{name}", g_ref[name], g[name], tol)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("p", CPU_CASES + CUDA_CASES)
def test_scan_matches_reference(p, backend):
    check(p, backend)


@pytest.mark.parametrize("p", [LONG_CPU_CASE])
def test_torch_scan_long_odd_length(p):
    check(p, "torch")


@pytest.mark.parametrize("p", [case(2, 70, 16, 8, torch.float32), case(2, 300, 32, 16, torch.bfloat16, marks=cuda_only)])
def test_scan_sliced_inputs(p):
    """u, delta, z, B, C as strided views of one (B, L, 3D + 2N) projection."""
    check(p, "triton", sliced=True)


@pytest.mark.parametrize("length,d,tune", [(51, 20, dict(T=8, M=4, BD=8, programs=16, state_BD=16, bstate_BD=4)),
                                           (45, 6, dict(T=4, M=1, BD=4, num_warps=1, programs=64, dfirst=False)),
                                           (99, 4, dict(T=2, M=1, BD=4, programs=256)),
                                           # tuning variants (chunk.py: fwd_pipe, i32) with partial tiles,
                                           # masked channels and several chunks
                                           (25, 12, dict(T=4, M=2, BD=8, programs=16, fwd_pipe=True, i32=True)),
                                           (13, 6, dict(T=4, M=1, BD=4, programs=64, fwd_pipe=True))])
def test_scan_tile_configs(length, d, tune, monkeypatch):
    """Other tile / segment / channel-block sizes: partial tiles, many chunks, masked channels.
    The third case has 50 chunks (the last one partial), so the chunk carry chains several blocks of CARRY_K chunks."""
    from mamba_genome.kernels.selective_scan import chunk
    monkeypatch.setattr(chunk, "TUNE", dict(tune))
    check(dict(b=1, l=length, d=d, n=8, dtype=torch.float32, **ALL), "triton")


def test_launch_config_is_memoised_per_shape_and_tune(monkeypatch):
    """_config is built once per (shape, device, TUNE, interpreter mode) and rebuilt when any of them changes."""
    from mamba_genome.kernels.selective_scan import chunk
    chunk._config_memo.cache_clear()
    monkeypatch.setattr(chunk, "TUNE", {})
    dev = torch.device("cpu")
    a = chunk._config(2, 1037, 64, 16, dev, fwd=True)
    assert chunk._config(2, 1037, 64, 16, dev, fwd=True) is a
    assert a == chunk._config_uncached(2, 1037, 64, 16, dev, fwd=True)
    assert chunk._config(2, 1037, 64, 16, dev) is not a                       # backward's own
    assert chunk._config(2, 1038, 64, 16, dev, fwd=True)["n_seg"] >= a["n_seg"]
    monkeypatch.setattr(chunk, "TUNE", {"T": 4, "M": 2})
    b = chunk._config(2, 1037, 64, 16, dev, fwd=True)
    assert (b["T"], b["M"]) == (4, 2) and b is not a
    monkeypatch.setattr(chunk, "TUNE", {"note": ["x"]})                      # unhashable: built each call
    assert chunk._config(2, 1037, 64, 16, dev, fwd=True) is not chunk._config(2, 1037, 64, 16, dev, fwd=True)


def test_scan_large_dt():
    """dt above the softplus cut-off (exp(dt A) ~ 0: the state restarts) stays finite and exact."""
    p = dict(b=1, l=90, d=16, n=8, dtype=torch.float32, **ALL)
    x = make_inputs(**p)
    x["delta"][:, ::7] = 30.0
    check(p, "triton", inputs=x)


def _inference_vs_reference(p, backend):
    """y and final state without autograd, checked against the float64 reference; returns them
    with the forward run under autograd (training mode)."""
    inputs = make_inputs(**p)
    y_ref, f_ref, _ = run(inputs, p["softplus"], "reference", grad=False)
    y_train, f_train, _ = run(inputs, p["softplus"], backend, grad=True)
    with torch.no_grad():
        y, f, _ = run(inputs, p["softplus"], backend, grad=False)
    assert_close("y", y_ref, y, TOL[p["dtype"]])
    assert_close("final_state", f_ref, f, TOL[p["dtype"]])
    return y, f, y_train.detach(), f_train.detach()


@pytest.mark.parametrize("p", [case(1, 151, 24, 16, torch.float32),
                               case(2, 4096, 512, 16, torch.bfloat16, marks=cuda_only)])
def test_scan_inference_path(p):
    """Without autograd the Triton forward skips saving segment states; y and the final state
    are unchanged against the reference (and against the training-mode forward, bit for bit)."""
    y, f, y_train, f_train = _inference_vs_reference(p, "triton")
    assert torch.equal(y, y_train) and torch.equal(f, f_train)


@pytest.mark.parametrize("tune", [dict(fwd_pipe=True, i32=True, T=4, M=2, BD=8)])
def test_scan_inference_path_variants(tune, monkeypatch):
    """The forward's tuning variants (chunk.py TUNE) without autograd: against the reference, and bit
    for bit against the training-mode forward with the same variants."""
    from mamba_genome.kernels.selective_scan import chunk
    monkeypatch.setattr(chunk, "TUNE", dict(tune))
    y, f, y_train, f_train = _inference_vs_reference(dict(b=2, l=19, d=12, n=4, dtype=torch.float32, **ALL), "triton")
    assert torch.equal(y, y_train) and torch.equal(f, f_train)


@pytest.mark.parametrize("p", [case(2, 300, 24, 16, torch.float32), case(1, 517, 8, 4, torch.float32, h0=False),
                               case(2, 70, 16, 8, torch.bfloat16)])
def test_torch_scan_without_autograd(p):
    """The PyTorch path without autograd runs the recurrence step by step in chunks of
    SEQ_CHUNK with reused buffers; it matches the float64 reference and the autograd path."""
    y, _, y_train, _ = _inference_vs_reference(p, "torch")
    assert_close("y vs autograd path", y_train, y, TOL[p["dtype"]])


@pytest.mark.parametrize("scale", [0.1, 30.0])      # 30: |sum dt A| passes the closed form's limit
def test_torch_chunk_closed_form_matches_steps(scale):
    """The closed form (``_scan_chunk``, the torch path for CUDA tensors) and the step loop
    (``_scan_chunk_steps``, the CPU path) agree on one chunk, values and gradients, including
    the parallel-prefix fallback for large |sum dt A|."""
    import importlib
    par = importlib.import_module("mamba_genome.kernels.selective_scan.parallel")
    g = torch.Generator().manual_seed(5)
    b, t, d, n = 2, 64, 6, 4
    leaves = [torch.randn(b, d, n, generator=g, dtype=torch.float64),             # h0
              torch.randn(b, t, d, generator=g, dtype=torch.float64),             # u
              torch.rand(b, t, d, generator=g, dtype=torch.float64) * scale,      # dt
              -torch.rand(d, n, generator=g, dtype=torch.float64) * 4 - 0.5,      # A
              torch.randn(b, t, n, generator=g, dtype=torch.float64),             # B
              torch.randn(b, t, n, generator=g, dtype=torch.float64)]             # C
    outs = []
    for fn in (par._scan_chunk, par._scan_chunk_steps):
        xs = [x.clone().requires_grad_() for x in leaves]
        y, h = fn(*xs)
        grads = torch.autograd.grad(y.sum() + h.sum(), xs)
        outs.append((y, h, grads))
    (y1, h1, g1), (y2, h2, g2) = outs
    torch.testing.assert_close(y1, y2, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(h1, h2, rtol=1e-9, atol=1e-9)
    for a, c in zip(g1, g2):
        torch.testing.assert_close(a, c, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("backend", ["triton", "torch", NUMBA])
@pytest.mark.parametrize("p", [case(2, 70, 16, 8, torch.float32), case(1, 110, 16, 8, torch.bfloat16),
                               case(2, 4096, 512, 16, torch.bfloat16, marks=cuda_only)])
def test_scan_fused_delta_projection(p, backend):
    """delta_proj_weight: delta = dt_low @ W.T inside the scan (recomputed in the Triton backward,
    formed per step by the numba kernels): y, final state and every gradient, dt_low's and W's
    included, against the float64 reference."""
    check_fused_projection(p, backend, rank=4)


def check_fused_projection(p, backend, rank):
    inputs = make_inputs(**p)
    b, l, d = p["b"], p["l"], p["d"]
    inputs["delta"] = (0.5 * torch.randn(b, l, rank, device=DEVICE)).to(p["dtype"])
    inputs["delta_proj_weight"] = 0.4 * torch.randn(d, rank, device=DEVICE)

    def go(bk):
        leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in inputs.items()}
        y, final = selective_scan(**{k: leaves[k] for k in ("u", "delta", "A", "B", "C")}, D=leaves["D"],
                                  z=leaves["z"], delta_bias=leaves["delta_bias"], delta_softplus=True,
                                  initial_state=leaves["initial_state"], return_final_state=True,
                                  delta_proj_weight=leaves["delta_proj_weight"], backend=bk)
        gen = torch.Generator(device="cpu").manual_seed(7)
        gy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device)
        gf = torch.randn(final.shape, generator=gen, dtype=torch.float64).to(y.device)
        ((y.double() * gy).sum() + (final.double() * gf).sum()).backward()
        return y, final, {k: v.grad for k, v in leaves.items() if v is not None}

    y_ref, f_ref, g_ref = go("reference")
    y, f, g = go(backend)
    tol = TOL[p["dtype"]]
    assert_close("y", y_ref, y, tol)
    assert_close("final_state", f_ref, f, tol)
    for name in (*NAMES, "delta_proj_weight"):
        if name in g_ref:
            assert g[name].dtype == inputs[name].dtype, name
            assert_close(f"d{name}", g_ref[name], g[name], tol)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_scan_streaming(backend):
    """scan([x1; x2]) == scan(x1) then scan(x2, initial_state=final1)."""
    p = dict(b=1, l=161, d=16, n=8, dtype=torch.float32, **ALL)
    x = make_inputs(**p)
    kw = dict(delta_softplus=True, return_final_state=True, backend=backend)
    cut = 67
    y, f = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                          delta_bias=x["delta_bias"], initial_state=x["initial_state"], **kw)
    parts = [selective_scan(x["u"][:, s], x["delta"][:, s], x["A"], x["B"][:, s], x["C"][:, s], D=x["D"],
                            z=x["z"][:, s], delta_bias=x["delta_bias"], initial_state=h, **kw)
             for s, h in [(slice(0, cut), x["initial_state"])]]
    parts.append(selective_scan(x["u"][:, cut:], x["delta"][:, cut:], x["A"], x["B"][:, cut:], x["C"][:, cut:],
                                D=x["D"], z=x["z"][:, cut:], delta_bias=x["delta_bias"],
                                initial_state=parts[0][1], **kw))
    assert_close("y", y, torch.cat([parts[0][0], parts[1][0]], 1), 1e-5)
    assert_close("final_state", f, parts[1][1], 1e-5)


@cuda_only
def test_scan_64bit_offsets():
    """B*L*D > 2**31: compare the tail against the torch path on a slice.

    A huge dt at position ``cut`` makes exp(dt A) ~ 0, so the state restarts there and the
    tail depends only on positions >= cut (gradients likewise, with dy zero before it)."""
    b, d, n = 1, 1024, 16
    length = 2**21 + 4096
    assert b * length * d > 2**31
    dev, bf = "cuda", torch.bfloat16
    u = torch.randn(b, length, d, device=dev, dtype=bf)
    delta = torch.randn(b, length, d, device=dev, dtype=bf)
    A = -(0.5 + torch.rand(d, n, device=dev))
    Bm = torch.randn(b, length, n, device=dev, dtype=bf)
    Cm = torch.randn(b, length, n, device=dev, dtype=bf)
    cut = length - 300
    delta[:, cut] = 100.0
    u.requires_grad_(True)
    y = selective_scan(u, delta, A, Bm, Cm, delta_softplus=True, backend="triton")
    dy = torch.zeros_like(y)
    dy[:, cut + 1:] = torch.randn_like(dy[:, cut + 1:])
    y.backward(dy)
    du_tail = u.grad[:, cut + 1:].clone()
    del y
    u.grad = None
    ut = u.detach()[:, cut:].clone().requires_grad_(True)
    y_ref = selective_scan(ut, delta[:, cut:], A, Bm[:, cut:], Cm[:, cut:], delta_softplus=True, backend="torch")
    y_ref.backward(dy[:, cut:])
    y_tri = selective_scan(u.detach()[:, cut:], delta[:, cut:], A, Bm[:, cut:], Cm[:, cut:],
                           delta_softplus=True, backend="triton")
    assert_close("y_tail(slice run)", y_ref[:, 1:], y_tri[:, 1:], 2e-2)
    y_full_tail = selective_scan(u.detach(), delta, A, Bm, Cm, delta_softplus=True, backend="triton")[:, cut + 1:]
    assert_close("y_tail(full run)", y_ref[:, 1:], y_full_tail, 2e-2)
    assert_close("du_tail", ut.grad[:, 1:], du_tail, 2e-2)
