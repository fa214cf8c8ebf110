"""CPU A/B in one process: another git ref's selective scan and training step against this checkout's.

Why one process: the development VM has 2 cores shared with other jobs, and two commands run one
after the other see different loads. Here both versions are imported side by side (the ref's
package copied from ``git archive`` and renamed ``mgref``) and their calls alternate, so both see
the same load; the minimum and low percentiles are what the load disturbs least.

What is timed, per version, alternating call by call:

* ``scan fwd`` / ``scan bwd``: :func:`mamba_genome.kernels.selective_scan` on the numba backend at
  one tiny-model layer's shape, (B, L, D, N) = (4, 512, 128, 16), the model's layout (z a slice of
  in_proj's (x, z), dt / B / C slices of x_proj's output, dt_proj inside the scan: rank 4), D,
  delta_bias and softplus; forward with autograd on, then ``y.backward(dy)``. With 1 thread the
  clock is the thread's CPU time (``time.thread_time``), with 2 the wall time.
* ``train step``: one step of the tiny preset, 4 x 512 random tokens, fp32: forward, loss, backward
  and fused AdamW (``mamba_genome.workflows.bench_train``'s pieces, as ``bench train`` runs them), with
  1 thread (wall = its CPU time) and with 2 (wall, and the main thread's CPU time); tokens/s from
  the wall time's 25th percentile.

The ref's numba kernels compile on its first run (about a minute) into ``--workdir``, which is kept
for the next run. ``uptime`` is printed before and after; compare rows of one run only.

Usage (from the repo root):
    python benchmarks/bench_cpu_ab.py --ref main
    python benchmarks/bench_cpu_ab.py --ref 7b0139a --steps 30 --scan-reps 60
"""
from __future__ import annotations

import argparse
import importlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ref_package(ref: str, workdir: Path) -> tuple[str, Path]:
    """(commit, folder to put on sys.path) with the ref's package as ``mgref`` (kernels inside)."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    dest = workdir / sha
    pkg = dest / "mgref"
    if not (pkg / "__init__.py").exists():
        blob = subprocess.run(["git", "archive", sha, "mamba_genome", "kernels"], cwd=ROOT, check=True,
                              capture_output=True).stdout
        src = dest / "src"
        shutil.rmtree(dest, ignore_errors=True)
        src.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(src)
        shutil.copytree(src / "mamba_genome", pkg)
        shutil.copytree(src / "kernels", pkg / "kernels")
        for f in pkg.rglob("*.py"):
            f.write_text(re.sub(r"\bmamba_genome\b", "mgref", f.read_text()))
        shutil.rmtree(src)
    return sha, dest


def pct(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


def scan_case(pkg: str, torch, seed: int = 0):
    """A callable running one forward + backward of the layer-shaped scan; returns (fwd s, bwd s)."""
    kernels = importlib.import_module(pkg + ".kernels")
    b, l, d, n, r = 4, 512, 128, 16, 4
    g = torch.Generator().manual_seed(seed)
    xz = torch.randn(b, l, 2 * d, generator=g)
    xdbl = torch.randn(b, l, r + 2 * n, generator=g)
    u = torch.randn(b, l, d, generator=g).requires_grad_(True)
    w = (torch.randn(d, r, generator=g) * 0.5).requires_grad_(True)
    A = (-torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)).requires_grad_(True)
    D, bias = torch.ones(d, requires_grad=True), torch.full((d,), -4.0, requires_grad=True)
    z, dt, B, C = xz[..., d:], xdbl[..., :r], xdbl[..., r:r + n], xdbl[..., r + n:]
    dy = torch.randn(b, l, d, generator=g)

    def run():
        """((fwd wall, fwd thread CPU), (bwd wall, bwd thread CPU)) in seconds."""
        t0, c0 = time.perf_counter(), time.thread_time()
        y = kernels.selective_scan(u, dt, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True,
                                   backend="numba", delta_proj_weight=w)
        t1, c1 = time.perf_counter(), time.thread_time()
        y.backward(dy)
        t2, c2 = time.perf_counter(), time.thread_time()
        for t in (u, w, A, D, bias):
            t.grad = None
        return (t1 - t0, c1 - c0), (t2 - t1, c2 - c1)
    return run


def step_case(pkg: str, torch):
    bt = importlib.import_module(pkg + ".workflows.bench_train")
    cfg = bt.BenchTrainConfig(preset="tiny", seq_len=512, batch_size=4, device="cpu", precision="32")
    dev = torch.device("cpu")
    model = bt.build_model(cfg, dev)
    opt = bt.make_optimizer(model, cfg, dev)
    ids = bt.random_tokens(cfg.batch_size, cfg.seq_len, dev)

    def run():
        t0, c0 = time.perf_counter(), time.thread_time()
        loss = bt.lm_loss(model, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0, time.thread_time() - c0
    return run


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="main", help="git ref to compare against [%(default)s]")
    ap.add_argument("--workdir", default="/tmp/mamba-genome-ab", help="where the ref's copy and its numba cache live")
    ap.add_argument("--scan-reps", type=int, default=40, help="scan calls per version and thread count")
    ap.add_argument("--steps", type=int, default=20, help="training steps per version")
    args = ap.parse_args(argv)
    sha, path = ref_package(args.ref, Path(args.workdir))
    sys.path.insert(0, str(path))
    sys.path.insert(0, str(ROOT))
    import mamba_genome  # noqa: F401  (sets OMP_WAIT_POLICY before torch is imported)
    import mgref  # noqa: F401
    import torch

    head = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    names = {"mgref": f"{args.ref} ({sha})", "mamba_genome": f"this checkout ({head})"}
    print(f"before: {uptime()}", file=sys.stderr)
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        cases = {p: scan_case(p, torch) for p in names}
        for run in cases.values():                  # compile / load the kernels, fault in the buffers
            run(), run()
        res = {p: {"fwd": [], "bwd": []} for p in names}
        for _ in range(args.scan_reps):
            for p, run in cases.items():
                f, b = run()
                res[p]["fwd"].append(f)
                res[p]["bwd"].append(b)
        for part in ("fwd", "bwd"):
            for p in names:
                v = res[p][part]
                wall = [x[0] for x in v]
                th = f"{threads} thread{'s' if threads > 1 else ''}"
                rows.append((f"scan {part}, {th}, wall", names[p], 1e3 * min(wall), 1e3 * pct(wall, 0.25),
                             1e3 * pct(wall, 0.5), ""))
                if threads == 1:                    # all the work is on this thread: its CPU time
                    cpu = [x[1] for x in v]
                    upd = 4 * 512 * 128 * 16
                    rows.append((f"scan {part}, 1 thread, thread CPU", names[p], 1e3 * min(cpu), 1e3 * pct(cpu, 0.25),
                                 1e3 * pct(cpu, 0.5), f"{1e9 * min(cpu) / upd:.2f} ns per state update"))
    steps = {p: step_case(p, torch) for p in names}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for run in steps.values():
            for _ in range(3):
                run()
        res = {p: ([], []) for p in names}
        for _ in range(args.steps):
            for p, run in steps.items():
                w, c = run()
                res[p][0].append(w)
                res[p][1].append(c)
        th = f"{threads} thread{'s' if threads > 1 else ''}"
        for p in names:
            w, c = res[p]
            rows.append((f"train step, {th}, wall", names[p], 1e3 * min(w), 1e3 * pct(w, 0.25), 1e3 * pct(w, 0.5),
                         f"{2048 / pct(w, 0.25):,.0f} tokens/s (p25)"))
            if threads == 2:
                rows.append((f"train step, {th}, main thread CPU", names[p], 1e3 * min(c), 1e3 * pct(c, 0.25),
                             1e3 * pct(c, 0.5), ""))
    after = uptime()
    print(f"`python benchmarks/bench_cpu_ab.py --ref {args.ref}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    print()
    print("| what | code | min ms | p25 ms | median ms | |")
    print("|---|---|---:|---:|---:|---|")
    for what, code, lo, q1, med, note in rows:
        print(f"| {what} | {code} | {lo:.2f} | {q1:.2f} | {med:.2f} | {note} |")
    print()
    print(f"after: {after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
