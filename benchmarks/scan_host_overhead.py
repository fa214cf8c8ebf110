"""Host-side cost of the selective scan's forward and forward+backward at short shapes (GPU).

    PYTHONPATH=. python benchmarks/scan_host_overhead.py

For (1, 512, 16, 2^14) and (8, 1536, 16, 4096) (bf16, z, D, bias, softplus, states every 8 steps as
the training planner sets): the host time to issue 20 calls back to back (no sync inside) against
their wall time with the final sync, so a host-bound call shows host ~= wall; a cProfile of 100
forward+backward calls (top functions by own time); and the host cost of one bare Triton launch
and of one torch.empty, for scale. Kernel times alone: ``sweep_short.py --profile``.
"""
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import torch
import sweep_short as ss
from mamba_genome.kernels.selective_scan import chunk
ss.set_tune({"M": 1, "i32": True})
for key in ("s14", "s4k"):
    x, dy = ss.Inputs(keep=False).get(key)
    leaves = list(x.values())
    def fwd():
        return ss.scan(x)
    def fb():
        y = ss.scan(x)
        torch.autograd.grad(y, leaves, dy)
    for _ in range(5):
        fb()
    torch.cuda.synchronize()
    for name, fn in (("fwd", fwd), ("fb", fb)):
        hs = []
        for _ in range(5):
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(20):
                fn()
            th = (time.perf_counter() - t) / 20
            torch.cuda.synchronize()
            tt = (time.perf_counter() - t) / 20
            hs.append((th, tt))
        print(f"{key} {name}: host issue {1e3*statistics.median(h[0] for h in hs):.3f} ms/call, "
              f"wall {1e3*statistics.median(h[1] for h in hs):.3f} ms/call (20 back to back)", flush=True)
    pr = cProfile.Profile()
    torch.cuda.synchronize()
    pr.enable()
    for _ in range(100):
        fb()
    torch.cuda.synchronize()
    pr.disable()
    st = pstats.Stats(pr)
    print(f"--- {key} fb x100 tottime")
    st.sort_stats("tottime").print_stats(22)
# one bare launch of a small kernel
import triton  # noqa: E402
hloc = torch.randn(1, 9, 256, 16, device="cuda")
hc = torch.empty_like(hloc)
dts = torch.randn(1, 9, 256, device="cuda")
A = -torch.rand(256, 16, device="cuda")
def launch():
    chunk._chunk_carry_kernel[(triton.cdiv(256 * 16, 32), 1)](hloc, hc, dts, A, hloc, 256, 16, 9, BLOCK=32, K=16, HAS_H0=False, REVERSE=False)
for _ in range(10):
    launch()
torch.cuda.synchronize()
t = time.perf_counter()
for _ in range(1000):
    launch()
th = time.perf_counter() - t
torch.cuda.synchronize()
print(f"bare triton launch (_chunk_carry_kernel, 10 args): {th:.3f} ms per launch host")
t = time.perf_counter()
for _ in range(1000):
    torch.empty(1, 9, 256, 16, device="cuda")
print(f"torch.empty: {(time.perf_counter()-t):.3f} ms per call host")
