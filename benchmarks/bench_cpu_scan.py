"""CPU selective scan: the PyTorch path ("torch") against the compiled numba kernels ("numba").

What is timed: :func:`mamba_genome.kernels.selective_scan` at the model's layout (z a slice of
in_proj's (x, z), B and C slices of x_proj's (dt, B, C); u and delta contiguous), fp32, with
D, delta_bias and softplus, as one Mamba layer calls it. Per (B, L, D, N) shape and backend:

* ``fwd``: the forward with autograd on (what a training step runs),
* ``fwd+bwd``: that forward plus ``y.backward(dy)``,
* ``infer``: the forward under ``torch.no_grad()`` (embed / score / classify).

``time.perf_counter`` around each call; ``--warmup`` untimed calls (compilation or loading of
the numba cache happens in the first), then the median of ``--repeats`` calls. ``G upd/s`` is
state updates (B * L * D * N) per second for fwd+bwd. The load average is printed: the
development VM is shared, so compare rows of one run, not runs of different days.

``--startup`` also times, in fresh subprocesses, the first call of a tiny scan (forward +
backward) with an empty numba cache (the compile) and again with the cache filled (a normal
start), both including ``import mamba_genome.kernels``.

Usage (from the repo root):
    python benchmarks/bench_cpu_scan.py                       # both issue shapes, markdown table
    python benchmarks/bench_cpu_scan.py --shapes 4,512,128,16 --repeats 9 --startup
Writes ``--json`` (or ``$OUT/bench_cpu_scan.json`` when ``$OUT`` is set).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

import torch  # noqa: E402

from mamba_genome.kernels import selective_scan  # noqa: E402

SHAPES = "4,512,128,16;1,65536,256,16"


def make_inputs(b, l, d, n, seed=0):
    """fp32 leaves in the model's layout (see module docstring); every input needs grad."""
    g = torch.Generator().manual_seed(seed)
    rnd = (lambda *s: torch.randn(*s, generator=g))
    rank = max(1, d // 32)
    xz, x_dbl = rnd(b, l, 2 * d), rnd(b, l, rank + 2 * n)
    leaves = dict(u=rnd(b, l, d), delta=rnd(b, l, d) * 0.5 - 4, z=xz[..., d:],
                  B=x_dbl[..., rank:rank + n], C=x_dbl[..., rank + n:],
                  A=-torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
                  D=torch.ones(d), delta_bias=torch.full((d,), -4.0))
    for t in leaves.values():
        t.requires_grad_(True)
    return leaves


def _call(x, backend):
    return selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                          delta_bias=x["delta_bias"], delta_softplus=True, backend=backend)


def time_backend(shape, backend, warmup, repeats):
    """Median ms of fwd, fwd+bwd and the no-grad forward."""
    x = make_inputs(*shape)
    dy = torch.randn(shape[:3], generator=torch.Generator().manual_seed(1))
    fwd, full, infer = [], [], []
    for i in range(warmup + repeats):
        for t in x.values():
            t.grad = None
        t0 = time.perf_counter()
        y = _call(x, backend)
        t1 = time.perf_counter()
        y.backward(dy)
        t2 = time.perf_counter()
        with torch.no_grad():
            _call(x, backend)
        t3 = time.perf_counter()
        if i >= warmup:
            fwd.append(t1 - t0)
            full.append(t2 - t0)
            infer.append(t3 - t2)
        del y
    ms = (lambda v: 1e3 * statistics.median(v))
    return dict(fwd_ms=ms(fwd), fwd_bwd_ms=ms(full), infer_ms=ms(infer))


_STARTUP = """
import time; t0 = time.perf_counter()
import torch
from mamba_genome.kernels import selective_scan
u = torch.randn(1, 70, 20, requires_grad=True)
y = selective_scan(u, torch.rand(1, 70, 20), -torch.rand(20, 16), torch.randn(1, 70, 16), torch.randn(1, 70, 16),
                   delta_softplus=True, backend="numba")
y.sum().backward()
print(time.perf_counter() - t0)
"""


def startup_times() -> dict:
    """Seconds for import + first numba scan call, with an empty and with a filled cache."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        for key in ("first_call_compile_s", "first_call_cached_s"):
            res = subprocess.run([sys.executable, "-c", _STARTUP], env=env, capture_output=True, text=True, check=True)
            out[key] = float(res.stdout.strip().splitlines()[-1])
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], env=env, check=True)
        out["import_torch_s"] = time.perf_counter() - t0
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=SHAPES, help="B,L,D,N;... [%(default)s]")
    ap.add_argument("--backends", default="torch,numba")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--torch-repeats", type=int, default=3, help="repeats for the (slow) torch path")
    ap.add_argument("--torch-warmup", type=int, default=1, help="warm-up calls for the torch path")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (both paths) [torch's default]")
    ap.add_argument("--startup", action="store_true", help="also time compile / cached start-up")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";") if s]
    backends = args.backends.split(",")
    load0 = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}", file=sys.stderr)
    rows = []
    for shape in shapes:
        res = {}
        for bk in backends:
            reps, warm = (args.torch_repeats, args.torch_warmup) if bk == "torch" else (args.repeats, args.warmup)
            res[bk] = time_backend(shape, bk, warm, reps)
            print(f"  {shape} {bk}: {res[bk]}", file=sys.stderr)
        for bk in backends:
            r = res[bk]
            upd = shape[0] * shape[1] * shape[2] * shape[3]
            base = res.get("torch")
            rows.append(dict(shape=shape, backend=bk, **r, gups=upd / r["fwd_bwd_ms"] / 1e6,
                             speedup=(base["fwd_bwd_ms"] / r["fwd_bwd_ms"]) if base else None,
                             speedup_fwd=(base["fwd_ms"] / r["fwd_ms"]) if base else None,
                             speedup_infer=(base["infer_ms"] / r["infer_ms"]) if base else None))
    load1 = os.getloadavg()
    print("| (B, L, D, N) | backend | fwd ms | fwd+bwd ms | no-grad fwd ms | G upd/s (fwd+bwd) "
          "| vs torch: fwd / fwd+bwd / no-grad |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        sp = (f"{r['speedup_fwd']:.1f}x / **{r['speedup']:.1f}x** / {r['speedup_infer']:.1f}x"
              if r["speedup"] is not None and r["backend"] != "torch" else "")
        print(f"| {', '.join(map(str, r['shape']))} | {r['backend']} | {r['fwd_ms']:.1f} | {r['fwd_bwd_ms']:.1f} "
              f"| {r['infer_ms']:.1f} | {r['gups']:.2f} | {sp} |")
    print(f"\nload average before {load0[0]:.2f}, after {load1[0]:.2f} (1 min)")
    result = dict(rows=rows, load_before=load0, load_after=load1, threads=torch.get_num_threads(),
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    if args.startup:
        result["startup"] = startup_times()
        print(f"start-up (import + first tiny fwd+bwd): empty numba cache {result['startup']['first_call_compile_s']:.1f} s, "
              f"cached {result['startup']['first_call_cached_s']:.1f} s (import torch alone "
              f"{result['startup']['import_torch_s']:.1f} s)")
    path = args.json or (os.path.join(os.environ["OUT"], "bench_cpu_scan.json") if os.environ.get("OUT") else None)
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
