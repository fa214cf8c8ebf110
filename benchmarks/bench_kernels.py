"""Benchmark the Triton selective scan (and causal conv1d) on one CUDA GPU.

Prints, per shape: forward and backward time (median of ``triton.testing.do_bench``, CUDA
events, after warm-up), achieved GB/s against a device-to-device copy measured in the same
run, the PyTorch path's time where it is practical, mamba_ssm's time when it is importable,
and peak memory for one forward + backward (``torch.cuda.max_memory_allocated``, inputs
and gradients included).

All shapes use bf16 u/delta/B/C/z, fp32 A/D/delta_bias, with z, D, bias and softplus on.

    PYTHONPATH=. python benchmarks/bench_kernels.py            # the table
    PYTHONPATH=. python benchmarks/bench_kernels.py --tune     # block-size sweep first
"""
from __future__ import annotations

import argparse
import datetime
import json
import os

import torch
import triton

from mamba_genome.kernels import causal_conv1d, selective_scan
from mamba_genome.kernels.selective_scan import chunk as scan_chunk

GiB = 2**30
SHAPES = [  # (batch, d_inner, d_state, length)
    (1, 512, 16, 2**14),
    (1, 512, 16, 2**17),
    (1, 512, 16, 2**20),
    (4, 256, 16, 2**20),
    (8, 1536, 16, 4096),
]
# state-spaces/mamba CUDA kernel on one H100 (fwd ms, bwd ms), from the project brief
MAMBA_REF = {(1, 512, 16, 2**14): (0.21, 1.06), (1, 512, 16, 2**17): (1.48, 7.45),
             (1, 512, 16, 2**20): (12.0, 60.8), (4, 256, 16, 2**20): (22.9, 92.9),
             (8, 1536, 16, 4096): (0.89, 3.70)}
TORCH_MAX_ELEMS = 2**24  # B*L*D above which the PyTorch path is skipped (too slow to time)


def bench(fn, rep=200):
    return triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median")


def copy_bandwidth():
    x = torch.empty(GiB // 2, dtype=torch.bfloat16, device="cuda").normal_()
    y = torch.empty_like(x)
    ms = bench(lambda: y.copy_(x))
    return 2 * x.numel() * 2 / ms / 1e6  # GB/s, bytes read + written


def make(batch, d, n, length):
    dev, bf = "cuda", torch.bfloat16
    return dict(
        u=torch.randn(batch, length, d, device=dev, dtype=bf),
        delta=(0.5 * torch.randn(batch, length, d, device=dev)).to(bf),
        A=-(0.5 + torch.rand(d, n, device=dev)),
        B=torch.randn(batch, length, n, device=dev, dtype=bf),
        C=torch.randn(batch, length, n, device=dev, dtype=bf),
        D=torch.randn(d, device=dev),
        z=torch.randn(batch, length, d, device=dev, dtype=bf),
        delta_bias=0.1 * torch.randn(d, device=dev),
    )


def time_scan(x, backend, rep=200):
    leaves = {k: v.detach().requires_grad_(True) for k, v in x.items()}

    def fwd():
        return selective_scan(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], D=leaves["D"],
                              z=leaves["z"], delta_bias=leaves["delta_bias"], delta_softplus=True, backend=backend)

    with torch.no_grad():
        fwd_ms = bench(fwd, rep)
    y = fwd()
    dy = torch.randn_like(y)
    bwd_ms = bench(lambda: torch.autograd.grad(y, list(leaves.values()), dy, retain_graph=True), rep)
    del y
    # peak memory of one forward + backward, inputs and dy included
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    y = fwd()
    grads = torch.autograd.grad(y, list(leaves.values()), dy)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / GiB
    del y, grads
    return fwd_ms, bwd_ms, peak


def time_mamba_ssm(x):
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:
        return None
    t = {k: v.detach() for k, v in x.items()}
    args = [t["u"].transpose(1, 2).contiguous().requires_grad_(True), t["delta"].transpose(1, 2).contiguous(),
            t["A"], t["B"].transpose(1, 2).contiguous(), t["C"].transpose(1, 2).contiguous()]
    kw = dict(D=t["D"], z=t["z"].transpose(1, 2).contiguous(), delta_bias=t["delta_bias"], delta_softplus=True)
    fwd_ms = bench(lambda: selective_scan_fn(*args, **kw))
    y = selective_scan_fn(*args, **kw)
    dy = torch.randn_like(y)
    bwd_ms = bench(lambda: torch.autograd.grad(y, [args[0]], dy, retain_graph=True))
    return fwd_ms, bwd_ms


def scan_bytes(batch, d, n, length):
    bld, bln = batch * length * d, batch * length * n
    fwd = 2 * (4 * bld + 2 * bln)                  # read u, delta, z, B, C; write y (bf16)
    bwd = 2 * (7 * bld + 4 * bln)                  # read u, delta, z, dy, B, C; write du, ddelta, dz, dB, dC
    return fwd, bwd


def report_registers():
    """Registers and spills of every compiled scan kernel (best effort: Triton internals)."""
    for name in ("_fwd_chunk_scan_kernel", "_bwd_chunk_kernel", "_fwd_chunk_state_kernel", "_bwd_chunk_state_kernel"):
        fn = getattr(scan_chunk, name)
        try:
            for cache in fn.device_caches.values():
                for key, k in cache[0].items():
                    c = getattr(k, "constants", None) or {}
                    print(f"{name}: regs {k.n_regs} spills {k.n_spills} warps {k.metadata.num_warps} "
                          f"{ {kk: v for kk, v in c.items() if isinstance(v, int)} if isinstance(c, dict) else ''}",
                          flush=True)
        except Exception as e:
            print(f"{name}: register report unavailable ({type(e).__name__}: {e})", flush=True)


def profile(shape):
    """Per-kernel CUDA time of one forward + backward (torch.profiler), for the current TUNE."""
    x = make(*shape)
    leaves = {k: v.detach().requires_grad_(True) for k, v in x.items()}
    y = selective_scan(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], D=leaves["D"],
                       z=leaves["z"], delta_bias=leaves["delta_bias"], delta_softplus=True, backend="triton")
    dy = torch.randn_like(y)
    torch.autograd.grad(y, list(leaves.values()), dy)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            y = selective_scan(leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], D=leaves["D"],
                               z=leaves["z"], delta_bias=leaves["delta_bias"], delta_softplus=True, backend="triton")
            torch.autograd.grad(y, list(leaves.values()), dy)
        torch.cuda.synchronize()
    print(f"profile B{shape[0]}-D{shape[1]}-N{shape[2]}-L{shape[3]} (3 fwd+bwd), TUNE={json.dumps(scan_chunk.TUNE)}")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=50))


def tune(shapes, configs=None):
    """Time a few launch configurations; return the best one (sum of normalised fwd+bwd)."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    configs = configs or [
        dict(BD=32, num_warps=1, programs=32 * sms), dict(BD=32, num_warps=1, programs=16 * sms),
        dict(BD=64, num_warps=2, programs=16 * sms), dict(BD=32, num_warps=1, programs=32 * sms, T=32, M=4),
        dict(BD=16, num_warps=1, programs=32 * sms)]
    times = {}
    for shape in shapes:
        x = make(*shape)
        for i, cfg in enumerate(configs):
            scan_chunk.TUNE.clear()
            scan_chunk.TUNE.update(cfg)
            try:
                f, b, p = time_scan(x, "triton", rep=100)
            except Exception as e:  # a config that does not compile is reported, not fatal
                print(f"tune {shape} {cfg}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
                continue
            times.setdefault(i, []).append(f + b)
            print(f"tune B{shape[0]}-D{shape[1]}-N{shape[2]}-L{shape[3]} {json.dumps(cfg)}: "
                  f"fwd {f:.3f} ms  bwd {b:.3f} ms  peak {p:.2f} GiB", flush=True)
        del x
    scan_chunk.TUNE.clear()
    report_registers()
    best_per_shape = [min(t[k] for t in times.values() if len(t) == len(shapes)) for k in range(len(shapes))]
    score = {i: sum(t[k] / best_per_shape[k] for k in range(len(shapes)))
             for i, t in times.items() if len(t) == len(shapes)}
    best = configs[min(score, key=score.get)]
    print(f"best config: {json.dumps(best)}", flush=True)
    return best


def time_conv(batch, d, length, rep=200):
    """(fwd ms, bwd ms, minimum bytes of one pass) of causal conv1d, width 4, SiLU, bf16, Triton."""
    xx = torch.randn(batch, length, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(d, 4, device="cuda", requires_grad=True)
    bias = torch.randn(d, device="cuda", requires_grad=True)
    with torch.no_grad():
        f = bench(lambda: causal_conv1d(xx, w, bias, activation="silu", backend="triton"), rep)
    y = causal_conv1d(xx, w, bias, activation="silu", backend="triton")
    dy = torch.randn_like(y)
    b = bench(lambda: torch.autograd.grad(y, [xx, w, bias], dy, retain_graph=True), rep)
    return f, b, batch * length * d * 2


def conv_sweep(configs):
    """Time causal conv1d (width 4, SiLU, bf16) forward and backward per launch configuration."""
    from mamba_genome.kernels.causal_conv1d import chunk as conv_chunk

    for batch, d, length in [(1, 512, 2**20), (8, 3072, 4096)]:
        for cfg in configs:
            conv_chunk.TUNE.clear()
            conv_chunk.TUNE.update(cfg)
            f, b, nbytes = time_conv(batch, d, length, rep=100)
            print(f"conv B{batch}-D{d}-L{length} {json.dumps(cfg)}: fwd {f:.3f} ms ({2 * nbytes / f / 1e6:.0f} GB/s)"
                  f"  bwd {b:.3f} ms ({3 * nbytes / b / 1e6:.0f} GB/s)", flush=True)
        conv_chunk.TUNE.clear()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tune", action="store_true", help="sweep block sizes on two shapes first")
    ap.add_argument("--tune-only", action="store_true")
    ap.add_argument("--config", default=None, help="JSON dict of TUNE overrides for the table")
    ap.add_argument("--configs", default=None, help="JSON list of TUNE dicts for --tune to sweep")
    ap.add_argument("--tune-shapes", default="1,512,16,131072;8,1536,16,4096",
                    help="shapes for --tune, 'B,D,N,L' separated by ';'")
    ap.add_argument("--profile", action="store_true", help="per-kernel CUDA times at the tune shapes")
    ap.add_argument("--conv-configs", default=None,
                    help="JSON list of causal-conv1d TUNE dicts: time each, print, exit")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.cuda.get_device_name()
    print(f"# {dev}, torch {torch.__version__}, triton {triton.__version__}, {datetime.date.today()}")
    copy_gbs = copy_bandwidth()
    print(f"copy bandwidth: {copy_gbs:.0f} GB/s (read + write)", flush=True)
    best = None
    if args.conv_configs:
        conv_sweep(json.loads(args.conv_configs))
        return
    if args.tune or args.tune_only:
        shapes = [tuple(int(v) for v in sh.split(",")) for sh in args.tune_shapes.split(";")]
        best = tune(shapes, json.loads(args.configs) if args.configs else None)
        if args.profile:
            scan_chunk.TUNE.clear()
            scan_chunk.TUNE.update(best)
            for sh in shapes:
                profile(sh)
            scan_chunk.TUNE.clear()
        if args.tune_only:
            return
    if args.config:
        best = json.loads(args.config)
    if best:
        scan_chunk.TUNE.update(best)
    print(f"table config: {json.dumps(scan_chunk.TUNE) if scan_chunk.TUNE else 'defaults'}")
    header = ("| shape (B, D, N, L) | fwd ms | bwd ms | fwd+bwd ms | fwd GB/s (% copy) | bwd GB/s (% copy) "
              "| peak GiB | torch fwd/bwd ms | mamba_ssm fwd/bwd ms | mamba ref (brief) fwd/bwd ms |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    results = []
    for shape in SHAPES:
        batch, d, n, length = shape
        x = make(*shape)
        f, b, peak = time_scan(x, "triton")
        fb, bb = scan_bytes(*shape)
        if batch * length * d <= TORCH_MAX_ELEMS:
            tf, tb, _ = time_scan(x, "torch")
            torch_s = f"{tf:.2f} / {tb:.2f}"
        else:
            torch_s = "skipped (too slow)"
        ms = time_mamba_ssm(x)
        mamba_s = f"{ms[0]:.2f} / {ms[1]:.2f}" if ms else "not installed"
        ref = MAMBA_REF.get(shape)
        ref_s = f"{ref[0]} / {ref[1]}" if ref else "-"
        line = (f"| {batch}, {d}, {n}, 2^{length.bit_length() - 1} ({length}) | {f:.2f} | {b:.2f} | {f + b:.2f} "
                f"| {fb / f / 1e6:.0f} ({100 * fb / f / 1e6 / copy_gbs:.0f}%) "
                f"| {bb / b / 1e6:.0f} ({100 * bb / b / 1e6 / copy_gbs:.0f}%) | {peak:.2f} | {torch_s} | {mamba_s} "
                f"| {ref_s} |")
        print(line, flush=True)
        lines.append(line)
        results.append(dict(shape=dict(batch=batch, d_inner=d, d_state=n, length=length), fwd_ms=f, bwd_ms=b,
                            peak_gib=peak, fwd_gbs=fb / f / 1e6, bwd_gbs=bb / b / 1e6, copy_gbs=copy_gbs,
                            mamba_ssm_ms=ms, mamba_ref_ms=ref))
        del x
        torch.cuda.empty_cache()
    # causal conv1d, bf16, width 4, silu
    for batch, d, length in [(1, 1024, 2**20), (8, 3072, 4096)]:
        f, b, nbytes = time_conv(batch, d, length)
        print(f"conv1d B{batch}-D{d}-L{length}-W4 bf16: fwd {f:.3f} ms ({2 * nbytes / f / 1e6:.0f} GB/s), "
              f"bwd {b:.3f} ms ({3 * nbytes / b / 1e6:.0f} GB/s)", flush=True)
    print("\n".join(lines))
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "bench_kernels.json"), "w") as fh:
            json.dump(dict(device=dev, torch=torch.__version__, triton=triton.__version__,
                           date=str(datetime.date.today()), config=dict(scan_chunk.TUNE), scan=results), fh, indent=1)


if __name__ == "__main__":
    main()
