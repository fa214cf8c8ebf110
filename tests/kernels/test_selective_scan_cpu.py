"""Compiled CPU scan (``backend="numba"``, kernels/selective_scan/cpu.py) against the float64
reference, and how the CPU backend is chosen: the default when numba imports, the PyTorch
path with one warning line when it does not, a GPU run never warned.

Every case compares y, the final state and the gradient of every input, as
test_selective_scan.py does for the other backends. The first test to run compiles the
kernels (or loads them from numba's cache next to the source).
"""
from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mamba_genome.kernels import selective_scan, utils

from .conftest import TOL, assert_close
from .test_selective_scan import (
    ALL, NAMES, NONE, case, check, check_fused_projection, make_inputs, run,
)

numba_only = pytest.mark.skipif(not utils.numba_available(), reason="needs numba")

CASES = [
    case(1, 1, 8, 16, torch.float32),                            # one step
    case(2, 63, 16, 16, torch.float32),                          # odd length, two segments
    case(1, 63, 16, 1, torch.float32, **NONE),                   # d_state 1, nothing optional
    case(3, 100, 32, 16, torch.float32, bias=False),
    case(2, 130, 200, 16, torch.float32),                        # jobs of 64 channels + a tail of 8
    case(2, 97, 40, 16, torch.float32, softplus=False),
    case(1, 64, 48, 16, torch.float32, D=False, h0=False),       # exactly two segments
    case(1, 500, 32, 16, torch.bfloat16),
    case(1, 200, 24, 8, torch.float16, z=False, h0=False),
    case(1, 2049, 4, 4, torch.float32),
]


@numba_only
@pytest.mark.parametrize("p", CASES)
def test_numba_scan_matches_reference(p):
    check(p, "numba")


@numba_only
def test_numba_scan_sliced_inputs():
    """u, delta, z, B, C as strided views of one (B, L, 3D + 2N) projection, read in place."""
    check(dict(b=2, l=130, d=40, n=8, dtype=torch.float32, **ALL), "numba", sliced=True)


def fused_case(c, rank, threads):
    return pytest.param(c.values[0], rank, threads, id=f"{c.id}-R{rank}-T{threads}")


@pytest.mark.parametrize("p,rank,threads", [
    fused_case(case(2, 130, 200, 16, torch.float32), 4, 2),                   # 64-channel jobs + a tail of 8
    fused_case(case(3, 97, 40, 16, torch.float32, bias=False, z=False), 3, 2),  # 3 rows over 2 workers
    fused_case(case(1, 63, 16, 1, torch.float32, **NONE), 1, 2),              # 1 row: per-worker partials
    fused_case(case(2, 70, 48, 16, torch.float32, h0=False), 16, 3),          # more workers than rows
    fused_case(case(2, 33, 24, 8, torch.float16, D=False), 2, 1),
])
@numba_only
def test_numba_scan_fused_delta_projection(p, rank, threads):
    """delta = dt_low @ W.T formed inside the kernels: ranks 1-16, channel tails, rows owned by
    one worker (dB, dC, d dt written in place) and rows shared by workers (partials summed)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check_fused_projection(p, "numba", rank=rank)
    finally:
        torch.set_num_threads(before)


@numba_only
@pytest.mark.parametrize("threads", [1, 3])
def test_numba_scan_thread_counts(threads):
    """Other splits of the work: 1 thread (jobs of 64 channels), 3 threads for 2 x 3 channel
    blocks (workers with 1 and 2 jobs, dB/dC partials of several workers summed)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check(dict(b=2, l=90, d=48, n=16, dtype=torch.float32, **ALL), "numba")
    finally:
        torch.set_num_threads(before)


@numba_only
def test_small_launches_stay_in_the_calling_thread(monkeypatch):
    """Below ``MIN_PARALLEL_WORK`` the scan and the conv use one worker (streaming short chunks
    paid a thread hand-off per call); above it, every thread. The kernel tests otherwise run
    with the threshold at 0 (conftest), so the split over threads stays covered."""
    import importlib

    common = importlib.import_module("mamba_genome.kernels.cpu_common")
    scan = importlib.import_module("mamba_genome.kernels.selective_scan.cpu")
    conv = importlib.import_module("mamba_genome.kernels.causal_conv1d.cpu")
    monkeypatch.setattr(common, "MIN_PARALLEL_WORK", 1 << 18)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert scan._split(2, 128, 1, 16)[2] == 1 and conv._jobs(2, 1, 128, 4)[1] == 1
        assert scan._split(4, 128, 512, 16)[2] == 2 and conv._jobs(4, 512, 128, 4)[1] == 2
        check(dict(b=2, l=7, d=32, n=16, dtype=torch.float32, **ALL), "numba")   # one worker, same values
    finally:
        torch.set_num_threads(before)


@numba_only
def test_numba_scan_ignores_stale_scratch():
    """The kernels' scratch is reused across calls (``cpu_common._scratch``), and every job sums
    over all 64 lanes (dB, dC, d dt): lanes past a job's last channel must be reset by the job,
    never read as left. Poisoned with NaN, a 40-channel scan (one job with 24 dead lanes) after
    a larger one still matches the reference, with and without the fused dt_proj."""
    common = importlib.import_module("mamba_genome.kernels.cpu_common")
    check(dict(b=2, l=70, d=200, n=16, dtype=torch.float32, **ALL), "numba")
    common._scratch(4, 1)[:] = np.nan            # the buffer the next calls get, grown as needed
    check(dict(b=2, l=70, d=40, n=16, dtype=torch.float32, **ALL), "numba")
    common._scratch(4, 1)[:] = np.nan
    check_fused_projection(case(1, 37, 40, 8, torch.float32).values[0], "numba", rank=3)


@numba_only
def test_numba_scan_large_dt():
    """dt above the softplus cut-off and exp(dt A) below float32's range: the state restarts."""
    p = dict(b=1, l=90, d=16, n=8, dtype=torch.float32, **ALL)
    x = make_inputs(**p)
    x["delta"][:, ::7] = 30.0
    x["delta"][:, 3::7] = 200.0
    check(p, "numba", inputs=x)


@numba_only
def test_numba_scan_small_dt():
    """delta + bias far below 0 (dt ~ 1e-9..1e-3, where softplus needs log1p's accuracy)."""
    p = dict(b=1, l=80, d=16, n=8, dtype=torch.float32, **ALL)
    x = make_inputs(**p)
    x["delta"] = x["delta"] * 4 - 12.0
    check(p, "numba", inputs=x)


@numba_only
def test_numba_scan_inference_path():
    """Without autograd no segment states are kept; y and the final state are those of the
    training-mode forward, bit for bit, and match the reference."""
    p = dict(b=2, l=300, d=24, n=16, dtype=torch.float32, **ALL)
    inputs = make_inputs(**p)
    y_ref, f_ref, _ = run(inputs, True, "reference", grad=False)
    y_train, f_train, _ = run(inputs, True, "numba", grad=True)
    with torch.no_grad():
        y, f, _ = run(inputs, True, "numba", grad=False)
    assert_close("y", y_ref, y, TOL[torch.float32])
    assert_close("final_state", f_ref, f, TOL[torch.float32])
    assert torch.equal(y, y_train.detach()) and torch.equal(f, f_train.detach())


@numba_only
def test_numba_scan_streaming():
    """scan([x1; x2]) == scan(x1) then scan(x2, initial_state=final1), as embed streams it."""
    p = dict(b=2, l=300, d=16, n=8, dtype=torch.float32, **ALL)
    x = make_inputs(**p)
    kw = dict(D=x["D"], delta_bias=x["delta_bias"], delta_softplus=True, return_final_state=True,
              backend="numba")
    y, f = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], z=x["z"],
                          initial_state=x["initial_state"], **kw)
    cut, h, ys = 137, x["initial_state"], []
    for s in (slice(0, cut), slice(cut, None)):
        y_s, h = selective_scan(x["u"][:, s], x["delta"][:, s], x["A"], x["B"][:, s], x["C"][:, s],
                                z=x["z"][:, s], initial_state=h, **kw)
        ys.append(y_s)
    assert_close("y", y, torch.cat(ys, 1), 1e-6)
    assert_close("final_state", f, h, 1e-6)


@numba_only
def test_cpu_default_is_numba_and_agrees_with_torch_path(monkeypatch):
    """On CPU tensors backend=None resolves to the compiled scan; it gives the PyTorch path's
    values and gradients at a model-like shape (several jobs, several segments)."""
    monkeypatch.delenv("MAMBA_GENOME_BACKEND", raising=False)
    assert utils.resolve_backend(None, torch.device("cpu")) == "numba"
    assert "numba" in utils.available_backends("cpu")
    p = dict(b=2, l=200, d=128, n=16, dtype=torch.float32, **ALL)
    inputs = make_inputs(**p)
    y_t, f_t, g_t = run(inputs, True, "torch")
    y_n, f_n, g_n = run(inputs, True, None)
    assert_close("y", y_t, y_n, 1e-5)
    assert_close("final_state", f_t, f_n, 1e-5)
    for name in g_t:
        assert_close(f"d{name}", g_t[name], g_n[name], 1e-5)


@numba_only
def test_numba_math_helpers():
    """The kernels' exp, exp2, softplus and sigmoid polynomials against float64, over the range
    the scan meets (softplus down to -80, where log1p(exp(v)) ~ exp(v); exp2 for the decays)."""
    import importlib

    common = importlib.import_module("mamba_genome.kernels.cpu_common")
    xs = np.concatenate([np.linspace(-87, 88, 701), -np.logspace(-6, 1.9, 60), np.logspace(-6, 1.9, 60)])
    xs = xs.astype(np.float32)
    x64 = xs.astype(np.float64)
    x2 = np.concatenate([np.linspace(-125, 126, 1001), -np.logspace(-7, 2, 80)]).astype(np.float32)
    cases = [("exp", common._exp, xs, np.exp(x64)), ("softplus", common._softplus, xs, np.logaddexp(0.0, x64)),
             ("sigmoid", common._sigmoid, xs, 1.0 / (1.0 + np.exp(-x64))),
             ("exp2", common._exp2, x2, np.exp2(x2.astype(np.float64)))]
    for name, fn, x, want in cases:
        got = np.array([fn(v) for v in x], dtype=np.float64)
        rel = np.abs(got - want) / np.abs(want)
        assert rel.max() < 5e-7, f"{name}: max relative error {rel.max():.2e} at x = {x[rel.argmax()]}"
    assert common._exp(np.float32(-200.0)) == 0.0 and np.isnan(common._exp(np.float32("nan")))
    assert 0.0 <= common._exp2(np.float32(-300.0)) < 2e-38 and np.isnan(common._exp2(np.float32("nan")))


# ----------------------------------------------------------------------------- backend choice
@pytest.fixture
def no_numba(monkeypatch):
    """Pretend numba does not import (as on the GPU image); the warning cache is reset around."""
    monkeypatch.delenv("MAMBA_GENOME_BACKEND", raising=False)
    monkeypatch.setattr(utils, "numba_available", lambda: False)
    monkeypatch.setattr(utils, "_numba_import_error", lambda: "ModuleNotFoundError: No module named 'numba'")
    utils._warn_no_numba.cache_clear()
    yield
    utils._warn_no_numba.cache_clear()


def test_cpu_without_numba_falls_back_with_one_warning(no_numba, caplog):
    caplog.set_level(logging.WARNING, logger="mamba_genome")
    for _ in range(3):
        assert utils.resolve_backend(None, torch.device("cpu")) == "torch"
    records = [r for r in caplog.records if r.name == "mamba_genome"]
    assert len(records) == 1 and "numba" in records[0].getMessage()
    assert "\n" not in records[0].getMessage()
    assert "numba" not in utils.available_backends("cpu")
    with pytest.raises(ValueError, match="numba"):
        utils.resolve_backend("numba", torch.device("cpu"))


def test_gpu_resolution_never_warns_about_numba(no_numba, caplog):
    caplog.set_level(logging.WARNING, logger="mamba_genome")
    assert utils.resolve_backend(None, torch.device("cuda")) in ("triton", "torch")
    assert not [r for r in caplog.records if r.name == "mamba_genome"]


@numba_only
def test_numba_backend_refuses_cuda_tensors():
    with pytest.raises(ValueError, match="CPU tensors"):
        utils.resolve_backend("numba", torch.device("cuda"))


_NO_NUMBA = """
import sys
sys.modules["numba"] = None          # `import numba` raises ImportError, as where it is not installed
import torch
from mamba_genome.kernels import selective_scan
u = torch.randn(1, 40, 8, requires_grad=True)
for _ in range(2):
    y = selective_scan(u, torch.rand(1, 40, 8), -torch.rand(8, 4), torch.randn(1, 40, 4), torch.randn(1, 40, 4),
                       delta_softplus=True)
    y.sum().backward()
assert "mamba_genome.kernels.selective_scan.cpu" not in sys.modules
print("ok", float(y.sum()))
"""


def test_package_runs_without_numba():
    """A process where numba cannot be imported: the package imports, the scan runs on the
    PyTorch path, and stderr has exactly one warning line about it."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    env.pop("MAMBA_GENOME_BACKEND", None)
    res = subprocess.run([sys.executable, "-c", _NO_NUMBA], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok")
    lines = [ln for ln in res.stderr.splitlines() if "numba" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning: numba is not available"), res.stderr


_FORK = {}


def _scan_in_child(q):
    # only the numba scan here: torch's own OpenMP pool does not survive a fork either, so the
    # reference values come from the parent (fork copies them) and are compared with numpy
    y, f, g = run(_FORK["inputs"], True, "numba")
    same = all(np.array_equal(a.detach().numpy(), b) for a, b in zip((y, f, g["u"], g["A"]), _FORK["want"]))
    q.put(same)


@numba_only
def test_numba_scan_after_fork():
    """A forked child (multiprocessing's default start on Linux) has none of the parent's
    worker threads: its scan must make its own pool instead of waiting on the parent's."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        inputs = make_inputs(2, 70, 64, 16, torch.float32, **ALL)
        y, f, g = run(inputs, True, "numba")                   # the parent's pool is up now
        _FORK.update(inputs=inputs, want=[t.numpy() for t in (y.detach(), f.detach(), g["u"], g["A"])])
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        proc = ctx.Process(target=_scan_in_child, args=(q,))
        proc.start()
        proc.join(120)
        if proc.is_alive():
            proc.kill()
            pytest.fail("the scan in a forked child hung")
        assert proc.exitcode == 0
        assert q.get(timeout=5), "the child's scan differs from the parent's"
    finally:
        _FORK.clear()
        torch.set_num_threads(before)


@numba_only
def test_model_on_cpu_runs_the_numba_scan(monkeypatch):
    """A tiny model on CPU with the default backend: training (the mixer's composed path) and
    streamed inference (``backbone(..., state=...)``, as embed / score / classify run it) both
    go through the compiled scan, and match the PyTorch path: loss, every gradient, and the
    streamed hidden states against one pass."""
    from mamba_genome.kernels.selective_scan import cpu
    from mamba_genome.model.lm import MambaLM

    monkeypatch.delenv("MAMBA_GENOME_BACKEND", raising=False)
    calls = {"n": 0}
    real = cpu._scan_fwd

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(cpu, "_scan_fwd", counting)
    torch.manual_seed(0)
    ref = MambaLM.from_preset("tiny", d_model=16, n_layer=2, scan_backend="torch")
    dflt = MambaLM.from_preset("tiny", d_model=16, n_layer=2)
    dflt.load_state_dict(ref.state_dict())
    x = torch.randint(0, 8, (2, 75))
    losses = []
    for m in (ref, dflt):
        logits = m(x)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        loss.backward()
        losses.append(loss.detach())
    assert calls["n"] == 2                                    # one per layer, in training mode
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    grads = dict(ref.named_parameters())
    for n, p in dflt.named_parameters():
        r = grads[n].grad
        assert (p.grad - r).norm() <= 1e-4 * r.norm() + 1e-7, n
    with torch.no_grad():
        whole = ref.backbone(x)
        state = dflt.allocate_state(2)
        parts = [dflt.backbone(x[:, s], state=state) for s in (slice(0, 40), slice(40, None))]
    assert calls["n"] == 2 + 2 * 2                            # two chunks x two layers, state carried
    assert_close("streamed hidden", whole, torch.cat(parts, 1), 1e-5)
