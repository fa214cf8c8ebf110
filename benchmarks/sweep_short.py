"""GPU sweep of the scan's tuning variants at short shapes (issue 13 item 5, issue 15), and of the
causal conv1d forward at the model's layout. One call, about 300 s on one H200:

    PYTHONPATH=. python benchmarks/sweep_short.py            # or --budget 270 --only 0,3,5

Each variant is a setting of ``chunk.TUNE`` (the keys of kernels/selective_scan/chunk.py `_config`).
Phase 1 runs every variant in its own process, several at a time: the correctness check against the
float64 reference (bf16 and fp32 inputs at an odd length, all gradients; max relative-norm error
printed, NaN or above the tests' tolerance fails the variant) and one call of every timed function,
which compiles its kernels into Triton's disk cache. Phase 2 times the variants one after another
in one process (a crash restarts it at the next variant). Times are CUDA-event medians in ms, bf16
inputs with z, D, delta_bias and softplus:

    s14  (1, 512, 16, 2^14)   fwd (autograd on, saving states) and fwd+bwd
    s4k  (8, 1536, 16, 4096)  same
    s17  (1, 512, 16, 2^17)   same
    inf1k  (B 1024, L 1024, D 512, N 16) forward under torch.no_grad (VEP scoring)
    inf1m  (B 1, L 2^20, D 512, N 16)    forward under torch.no_grad

Last, the conv1d forward (width 4, SiLU) on x = xz[..., :512] of a (1024, 1024, 1024) bf16 xz, as
the model passes it, per block setting, with the device-copy bandwidth of the same bytes.
Prints one compact table; writes everything to $OUT/sweep_short.json (or ./sweep_short.json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

VARIANTS = [  # (name, TUNE); names are short for the table. Registers and step-loop SASS from an offline
    # sm_90 compile of the inference forward (Triton 3.9): base 32 channels x 1 warp 127 registers, 206
    # instructions per step; with int32 offsets 93 (so 21 instead of 16 resident warps per SM)
    ("base", {}),
    ("i32", {"i32": True}),
    ("pipe+i32", {"fwd_pipe": True, "i32": True}),
    ("tanh+i32", {"fwd_tanh": True, "i32": True}),
    ("pipe+tanh+i32", {"fwd_pipe": True, "fwd_tanh": True, "i32": True}),
    # forward blocks: 16 x 1 warp has no layout conversion (bar.sync) in its step loop, 69 registers;
    # 32 x 2 warps 64 registers (32 warps per SM) but twice the instructions per state update
    ("f16w1+i32", {"fwd_BD": 16, "fwd_num_warps": 1, "i32": True}),
    ("f16w1+tanh+i32", {"fwd_BD": 16, "fwd_num_warps": 1, "fwd_tanh": True, "i32": True}),
    ("f32w2+i32", {"fwd_BD": 32, "fwd_num_warps": 2, "i32": True}),
    ("f64w2+i32", {"fwd_BD": 64, "fwd_num_warps": 2, "i32": True}),
    # forward chunks even at L = 1024 (NC 4 / 16 at inf1k: more, shorter programs, plus the state pass)
    ("fnc4+i32", {"fwd_programs": 4 * 16384, "i32": True}),
    ("fnc16+i32", {"fwd_programs": 16 * 16384, "i32": True}),
    # backward occupancy: _bwd_chunk_kernel holds 221 registers (9 one-warp programs per SM, 1188 on
    # 132 SMs); programs = the target count of per-chunk programs (default 32 per SM)
    ("bprog1w+i32", {"programs": 1188, "fwd_programs": 32 * 132, "i32": True}),
    ("bprog2w+i32", {"programs": 2376, "fwd_programs": 32 * 132, "i32": True}),
    ("bprog64+i32", {"programs": 64 * 132, "fwd_programs": 32 * 132, "i32": True}),
    ("bBD16+i32", {"BD": 16, "fwd_BD": 64, "fwd_num_warps": 2, "i32": True}),
    # states saved every 8 / 16 steps instead of 64 (the model's scan_state_every): the backward skips
    # (M 1) or shortens its tile pass; 8x / 4x the saved states, a few MiB per layer at these lengths
    ("M1+i32", {"M": 1, "i32": True}),
    ("M2+i32", {"M": 2, "i32": True}),
    # states every 8 steps (the planner's none-s8) with the backward's launch count and channel block
    ("M1+bprog1w+i32", {"M": 1, "programs": 1188, "fwd_programs": 32 * 132, "i32": True}),
    ("M1+bprog2w+i32", {"M": 1, "programs": 2376, "fwd_programs": 32 * 132, "i32": True}),
    ("M1+bprog64+i32", {"M": 1, "programs": 64 * 132, "fwd_programs": 32 * 132, "i32": True}),
    ("M1+bBD16+i32", {"M": 1, "BD": 16, "fwd_BD": 64, "fwd_num_warps": 2, "i32": True}),
    ("M1+chunks-first+i32", {"M": 1, "dfirst": False, "i32": True}),
]
TRAIN = {"s14": (1, 512, 16, 2**14), "s4k": (8, 1536, 16, 4096), "s17": (1, 512, 16, 2**17)}
INFER = {"inf1k": (1024, 512, 16, 1024), "inf1m": (1, 512, 16, 2**20)}
CHECK = (2, 64, 16, 1037)            # (batch, d, n, length): odd length, 2 channel blocks of 32
# SWEEP_DRY=1: a CPU dry run of the whole script (Triton interpreter, tiny shapes) to test the sweep itself
DRY = bool(os.environ.get("SWEEP_DRY"))
DEV = "cpu" if DRY else "cuda"
if DRY:
    os.environ["TRITON_INTERPRET"] = "1"
    TRAIN = {k: (1, 8, 4, 24) for k in TRAIN}
    INFER = {k: (2, 8, 4, 16) for k in INFER}
    CHECK = (1, 8, 4, 13)
    VARIANTS = VARIANTS[:2] + [("broken", {"BD": "x"})]   # the last one must fail without stopping the sweep
TOL = {"bf16": 2e-2, "fp32": 1e-5}   # as tests/kernels/conftest.py
CONV = [{}, {"BL": 64, "BD": 128}, {"BL": 32, "BD": 256}, {"BL": 16, "BD": 256}, {"BL": 64, "BD": 64},
        {"BL": 128, "BD": 64}, {"BL": 32, "BD": 128, "num_warps": 8}, {"BL": 64, "BD": 256, "num_warps": 8},
        {"BL": 16, "BD": 512, "num_warps": 8}]


def make(batch, d, n, length, dtype, seed=0):
    import torch
    g = torch.Generator(device=DEV).manual_seed(seed)
    r = lambda *s: torch.randn(*s, device=DEV, generator=g)  # noqa: E731
    return dict(u=r(batch, length, d).to(dtype), delta=(0.5 * r(batch, length, d)).to(dtype),
                A=-(0.5 + torch.rand(d, n, device=DEV, generator=g)), B=r(batch, length, n).to(dtype),
                C=r(batch, length, n).to(dtype), D=r(d), z=r(batch, length, d).to(dtype), delta_bias=0.1 * r(d))


def scan(x, backend="triton"):
    from mamba_genome.kernels import selective_scan
    return selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                          delta_bias=x["delta_bias"], delta_softplus=True, backend=backend,
                          initial_state=x.get("initial_state"), return_final_state="initial_state" in x)


def set_tune(tune):
    from mamba_genome.kernels.selective_scan import chunk
    chunk.TUNE.clear()
    chunk.TUNE.update(tune)


def check(dtype_name):
    """Max over y, final state and every gradient of ||out - ref|| / ||ref|| (inf on NaN)."""
    import torch
    dtype = dict(bf16=torch.bfloat16, fp32=torch.float32)[dtype_name]
    b, d, n, length = CHECK
    x = make(b, d, n, length, dtype, seed=1)
    x["initial_state"] = torch.randn(b, d, n, device=DEV)
    errs = []
    outs = {}
    for backend in ("reference", "triton"):
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in x.items()}
        y, final = scan(leaves, backend)
        gen = torch.Generator(device=DEV).manual_seed(2)
        gy = torch.randn(y.shape, device=DEV, generator=gen, dtype=torch.float64)
        gf = torch.randn(final.shape, device=DEV, generator=gen, dtype=torch.float64)
        ((y.double() * gy).sum() + (final.double() * gf).sum()).backward()
        outs[backend] = [y, final] + [leaves[k].grad for k in sorted(leaves)]
    for ref, out in zip(outs["reference"], outs["triton"]):
        out, ref = out.double(), ref.double()
        if not torch.isfinite(out).all():
            return float("inf")
        errs.append(((out - ref).norm() / ref.norm().clamp_min(1e-30)).item())
    return max(errs)


def timer(fn, reps):
    import torch
    fn()
    if DRY:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return None if reps == 0 else 1e3 * (time.perf_counter() - t0) / reps
    torch.cuda.synchronize()
    if reps == 0:
        return None
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return statistics.median(ts)


class Inputs:
    """Timing inputs per shape, made on first use; ``keep=False`` (phase 1) frees each after use."""

    def __init__(self, keep=True):
        self.keep, self.cache = keep, {}

    def get(self, key):
        import torch
        if key not in self.cache:
            if key in TRAIN:
                b, d, ns, L = TRAIN[key]
                x = {n: v.requires_grad_(True) for n, v in make(b, d, ns, L, torch.bfloat16).items()}
                x = (x, torch.randn(b, L, d, device=DEV, dtype=torch.bfloat16))
            else:
                x = make(*INFER[key], dtype=torch.bfloat16)
            if not self.keep:
                return x
            self.cache[key] = x
        return self.cache[key]


def measure(inp, reps):
    """{shape: ms} for one variant (TUNE already set); reps 0: one call each (compiles), no timing."""
    import torch
    res = {}
    for k in TRAIN:
        x, dy = inp.get(k)
        leaves = list(x.values())
        res[k + "_fwd"] = timer(lambda: scan(x), reps)

        def fb():
            y = scan(x)
            torch.autograd.grad(y, leaves, dy)
        res[k + "_fb"] = timer(fb, reps)
        del x, dy, leaves
        if not inp.keep:
            torch.cuda.empty_cache()
    with torch.no_grad():
        for k in INFER:
            x = inp.get(k)
            res[k] = timer(lambda: scan(x), reps)
            del x
            if not inp.keep:
                torch.cuda.empty_cache()
    return res


def warm_worker(idx):
    """Phase 1: correctness and compilation of one variant."""
    name, tune = VARIANTS[idx]
    set_tune(tune)
    out = {"variant": name}
    try:
        out["err_bf16"] = check("bf16")
        out["err_fp32"] = check("fp32")
        out["ok"] = out["err_bf16"] < TOL["bf16"] and out["err_fp32"] < TOL["fp32"]
        measure(Inputs(keep=False), reps=0)
    except Exception as e:  # noqa: BLE001 - reported, the sweep goes on
        out["ok"] = False
        out["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    print("RESULT " + json.dumps(out), flush=True)


def time_worker(idxs, reps):
    """Phase 2: times the variants in order; one RESULT line each, as it finishes."""
    inp = Inputs()
    for i in idxs:
        name, tune = VARIANTS[i]
        print("START " + json.dumps({"idx": i}), flush=True)
        set_tune(tune)
        try:
            out = {"variant": name, "idx": i, **measure(inp, reps)}
        except Exception as e:  # noqa: BLE001 - a CUDA error is sticky: report it, the parent restarts us
            print("RESULT " + json.dumps({"variant": name, "idx": i, "error": f"{type(e).__name__}: {str(e)[:300]}"}),
                  flush=True)
            sys.exit(3)
        print("RESULT " + json.dumps(out), flush=True)
    set_tune({})


def conv_worker(reps):
    import torch
    from mamba_genome.kernels.causal_conv1d import chunk as cc
    b, L, d = (2, 16, 8) if DRY else (1024, 1024, 512)
    xz = torch.randn(b, L, 2 * d, device=DEV, dtype=torch.bfloat16)
    x = xz[..., :d]
    xc = x.contiguous()
    w = torch.randn(d, 4, device=DEV, dtype=torch.bfloat16)
    b = torch.randn(d, device=DEV, dtype=torch.bfloat16)
    y = torch.empty_like(xc)
    nbytes = 2 * xc.numel() * xc.element_size()
    out = {"copy_ms": timer(lambda: y.copy_(xc), reps)}
    ref = cc._conv_fwd(x, w, b, None, True)
    rows = []
    for tune in CONV:
        cc.TUNE.clear()
        cc.TUNE.update(tune)
        try:
            same = torch.equal(cc._conv_fwd(x, w, b, None, True), ref)
            rows.append({"tune": tune, "strided_ms": timer(lambda: cc._conv_fwd(x, w, b, None, True), reps),
                         "contig_ms": timer(lambda: cc._conv_fwd(xc, w, b, None, True), reps), "same": same})
        except Exception as e:  # noqa: BLE001
            rows.append({"tune": tune, "error": f"{type(e).__name__}: {str(e)[:200]}"})
    cc.TUNE.clear()
    out["rows"] = rows
    out["bytes"] = nbytes
    print("RESULT " + json.dumps(out), flush=True)


def profile_worker(reps):
    """Per-kernel CUDA time of one fwd+bwd at each training shape, states every 8 steps (TUNE M 1)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    set_tune({"M": 1, "i32": True})
    inp = Inputs(keep=False)
    out = {}
    sync = (lambda: None) if DRY else torch.cuda.synchronize  # noqa: E731
    acts = [ProfilerActivity.CPU] if DRY else [ProfilerActivity.CUDA]
    for k in TRAIN:
        x, dy = inp.get(k)
        leaves = list(x.values())

        def fb():
            y = scan(x)
            torch.autograd.grad(y, leaves, dy)
        for _ in range(3):
            fb()
        sync()
        with profile(activities=acts) as prof:
            for _ in range(reps):
                fb()
            sync()
        rows = {}
        for e in prof.key_averages():
            us = e.self_cpu_time_total if DRY else e.self_device_time_total
            if us > 0:
                rows[e.key[:60]] = round(us / reps / 1e3, 4)
        out[k] = dict(sorted(rows.items(), key=lambda r: -r[1]))
        out[k + "_fb_ms"] = timer(fb, reps)
        del x, dy, leaves
        torch.cuda.empty_cache()
    print("RESULT " + json.dumps(out), flush=True)


def _results(text):
    return [json.loads(line[7:]) for line in text.splitlines() if line.startswith("RESULT ")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--warm", type=int)
    ap.add_argument("--time")
    ap.add_argument("--conv", action="store_true")
    ap.add_argument("--profile", action="store_true", help="only: per-kernel CUDA ms of fwd+bwd at the training shapes")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--budget", type=float, default=285.0, help="seconds; later phases are cut to fit")
    ap.add_argument("--only", help="comma-separated variant indices")
    ap.add_argument("--jobs", type=int, default=17, help="phase-1 processes at a time (each peaks near 5 GiB)")
    a = ap.parse_args()
    if a.warm is not None:
        return warm_worker(a.warm)
    if a.time:
        return time_worker([int(i) for i in a.time.split(",")], a.reps)
    if a.conv:
        return conv_worker(a.reps)
    if a.profile:
        return profile_worker(a.reps)

    t_start = time.time()
    idxs = [int(i) for i in a.only.split(",")] if a.only else list(range(len(VARIANTS)))
    out_dir = os.environ.get("OUT", ".")
    report = {"variants": {}, "conv": None, "notes": []}

    def save():
        with open(os.path.join(out_dir, "sweep_short.json"), "w") as f:
            json.dump(report, f, indent=1)

    me = [sys.executable, os.path.abspath(__file__)]
    # phase 1: correctness + compile, a.jobs processes at a time
    pending, running = list(idxs), []
    p1_deadline = t_start + 0.6 * a.budget
    while pending or running:
        while pending and len(running) < a.jobs:
            i = pending.pop(0)
            running.append((i, subprocess.Popen(me + ["--warm", str(i)], stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, text=True)))
        time.sleep(0.5)
        for i, p in list(running):
            if p.poll() is not None or time.time() > p1_deadline:
                if p.poll() is None:
                    p.kill()
                txt = p.communicate()[0]
                r = _results(txt)
                report["variants"][VARIANTS[i][0]] = r[0] if r else {
                    "variant": VARIANTS[i][0], "ok": False, "error": "phase 1: " + (txt.strip()[-300:] or "timeout")}
                running.remove((i, p))
    save()
    print(f"phase 1 (check + compile) {time.time() - t_start:.0f} s", flush=True)
    ok = [i for i in idxs if report["variants"][VARIANTS[i][0]].get("ok")]
    # phase 2: timing, one process; restart after a crash
    todo = list(ok)
    conv_reserve = 25.0
    while todo and time.time() < t_start + a.budget - conv_reserve:
        left = t_start + a.budget - conv_reserve - time.time()
        p = subprocess.Popen(me + ["--time", ",".join(map(str, todo)), "--reps", str(a.reps)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            txt = p.communicate(timeout=max(5.0, left))[0]
        except subprocess.TimeoutExpired:
            p.kill()
            txt = p.communicate()[0]
            report["notes"].append("phase 2 cut by the budget")
        started = [json.loads(line[6:])["idx"] for line in txt.splitlines() if line.startswith("START ")]
        for r in _results(txt):
            report["variants"][r["variant"]].update(r)
            todo.remove(r["idx"])
        if todo and started and started[-1] in todo:       # crashed or cut inside this variant
            i = started[-1]
            report["variants"][VARIANTS[i][0]]["error"] = "phase 2: " + txt.strip()[-300:]
            todo.remove(i)
        elif todo and not started:
            break
        save()
    # conv at the model's layout
    if time.time() < t_start + a.budget - 5:
        p = subprocess.run(me + ["--conv", "--reps", str(a.reps)], capture_output=True, text=True,
                           timeout=max(5.0, t_start + a.budget - time.time()))
        r = _results(p.stdout)
        report["conv"] = r[0] if r else {"error": (p.stdout + p.stderr).strip()[-300:]}
    save()

    cols = ["s14_fwd", "s14_fb", "s4k_fwd", "s4k_fb", "s17_fwd", "s17_fb", "inf1k", "inf1m"]
    print(f"{'variant':<14}{'ok':>3}{'err16':>8}{'err32':>8}" + "".join(f"{c:>9}" for c in cols))
    for i in idxs:
        r = report["variants"][VARIANTS[i][0]]
        row = f"{r['variant']:<14}{'y' if r.get('ok') else 'N':>3}"
        row += "".join(f"{r[k]:>8.0e}" if isinstance(r.get(k), float) else f"{'-':>8}" for k in ("err_bf16", "err_fp32"))
        row += "".join(f"{r[c]:>9.3f}" if c in r else f"{'-':>9}" for c in cols)
        print(row)
        if "error" in r:
            print("   error:", r["error"][-160:].replace("\n", " "))
    c = report["conv"]
    if c and "rows" in c:
        print(f"conv fwd {'tiny (dry run)' if DRY else '(1024, 1024, 512)'} bf16, copy of the same bytes {c['copy_ms']:.3f} ms "
              f"({c['bytes'] / c['copy_ms'] / 1e6:.0f} GB/s)")
        for r in c["rows"]:
            if "error" in r:
                print(f"  {json.dumps(r['tune']):<40} error {r['error'][-100:]}")
            else:
                print(f"  {json.dumps(r['tune']):<40} strided {r['strided_ms']:.3f}  contiguous {r['contig_ms']:.3f} ms"
                      f"  ({c['bytes'] / r['strided_ms'] / 1e6:.0f} GB/s){'' if r['same'] else '  DIFFERS'}")
    elif c:
        print("conv:", c.get("error", "")[-200:])
    for n in report["notes"]:
        print("note:", n)
    print(f"total {time.time() - t_start:.0f} s; JSON: {os.path.join(out_dir, 'sweep_short.json')}")


if __name__ == "__main__":
    main()
