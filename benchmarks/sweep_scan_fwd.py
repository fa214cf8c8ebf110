"""Launch-knob sweep of the Triton scan forward at inference shapes (no saved states).

Each setting of $MAMBA_GENOME_SCAN_TUNE (fwd_BD, fwd_num_warps) runs in its own process at
(B, L, d_inner, N) = (1024, 512, 512, 16), (2048, 512, 512, 16), (1024, 512, 256, 16); prints the
CUDA-event median of 15 runs in ms. GPU only. Usage: PYTHONPATH=. python benchmarks/sweep_scan_fwd.py
"""
import json, os, statistics, subprocess, sys
import torch
if len(sys.argv) > 1:
    from mamba_genome.kernels.selective_scan.chunk import _selective_scan_fwd
    B, L, D, N = map(int, sys.argv[1:5])
    g = torch.Generator(device="cuda").manual_seed(0)
    u = torch.randn(B, L, D, device="cuda", dtype=torch.bfloat16)
    dt = torch.randn(B, L, D, device="cuda", dtype=torch.bfloat16) * 0.5 - 2
    A = -torch.rand(D, N, device="cuda") - 0.5
    Bm = torch.randn(B, L, N, device="cuda", dtype=torch.bfloat16)
    Cm = torch.randn(B, L, N, device="cuda", dtype=torch.bfloat16)
    Dv = torch.randn(D, device="cuda"); z = torch.randn_like(u); bias = torch.randn(D, device="cuda") * 0.1
    h0 = torch.zeros(B, D, N, device="cuda")
    f = lambda: _selective_scan_fwd(u, dt, A, Bm, Cm, Dv, z, bias, True, h0, True, need_hs=False)
    for _ in range(3): f()
    torch.cuda.synchronize(); ts = []
    for _ in range(15):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); f(); e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
    print(f"{statistics.median(ts):.3f}")
    sys.exit(0)
shapes = [(1024, 512, 512, 16), (2048, 512, 512, 16), (1024, 512, 256, 16)]
knobs = [{}, {"fwd_BD": 32, "fwd_num_warps": 1}, {"fwd_BD": 32, "fwd_num_warps": 2}, {"fwd_BD": 64, "fwd_num_warps": 1},
         {"fwd_BD": 64, "fwd_num_warps": 4}, {"fwd_BD": 128, "fwd_num_warps": 2}, {"fwd_BD": 128, "fwd_num_warps": 4},
         {"fwd_BD": 16, "fwd_num_warps": 1}, {"fwd_BD": 256, "fwd_num_warps": 4}, {"fwd_BD": 256, "fwd_num_warps": 8}]
for sh in shapes:
    for k in knobs:
        env = dict(os.environ, MAMBA_GENOME_SCAN_TUNE=json.dumps(k))
        r = subprocess.run([sys.executable, __file__, *map(str, sh)], env=env, capture_output=True, text=True)
        print(sh, k, r.stdout.strip() or r.stderr.strip()[-200:], "ms", flush=True)
