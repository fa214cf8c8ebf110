"""Embedding throughput (bp/s) of randomly initialised Mamba DNA models: forward only.

What is timed: ``MambaLM.backbone`` (embedding -> n_layer Mamba blocks -> final
RMSNorm, i.e. exactly what ``mamba-genome embed`` runs per chunk) on random
nucleotide tokens of shape (batch, length) already on the GPU, under
``torch.no_grad()``, in fp32 or under bf16 autocast. No checkpoint is needed.

How: CUDA events around each call (``time.perf_counter`` on CPU); ``--warmup``
untimed calls first (Triton compilation and autotuning happen there), then the
median of ``--repeats`` calls. bp/s = batch * length / median seconds. Peak
memory is ``torch.cuda.max_memory_allocated`` since a reset before the config
(weights + activations + kernel workspaces). A config that runs out of memory
is reported as ``oom`` and the sweep goes on.

``--api`` adds end-to-end rows through :meth:`mamba_genome.api.GenomeModel.embed`
(one sequence of 4 x length tokens in host memory, streamed ``length`` at a
time with the state carried, mean-pooled on the fly): the cost of host->device
copies, state handling and pooling on top of the bare forward.

Reference (Gu & Dao's state-spaces/mamba CUDA scan with PyTorch glue, bf16
autocast, one H100, length 2^20): 7m 0.82 Mbp/s, 1.4m 1.9 Mbp/s.
Target >= 5 Mbp/s for 7m (stretch 10).

Usage (from the repo root, no install needed):
    PYTHONPATH=. python benchmarks/bench_embed.py                 # full sweep on the GPU
    PYTHONPATH=. python benchmarks/bench_embed.py --presets 7m --precisions bf16 --lengths 20 --batch-sizes 1,2
    PYTHONPATH=. python benchmarks/bench_embed.py --smoke         # CPU, tiny model, < 1 min
Writes ``$OUT/bench_embed.json`` when ``$OUT`` is set (or to ``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mamba_genome.model.config import MambaConfig  # noqa: E402
from mamba_genome.model.lm import MambaLM  # noqa: E402

REFERENCE_MBPS = {"7m": 0.82, "1.4m": 1.9}  # state-spaces/mamba, bf16, 2^20, H100


def _timer(device: torch.device, fn, warmup: int, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def bench_config(model, device, precision, batch, length, warmup, repeats, api=False) -> dict:
    row = {"preset": model.preset, "params": model.num_parameters(), "precision": precision, "batch": batch,
           "length": length, "mode": "api" if api else "forward"}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    try:
        if api:
            from mamba_genome.api import GenomeModel

            gm = GenomeModel(model)
            seq = np.random.default_rng(0).integers(5, 9, 4 * length).astype(np.uint8)
            bp = seq.size

            def fn():
                gm.embed(seq, pool="mean", chunk_size=length, batch_size=1, precision=precision)
        else:
            x = torch.randint(5, 9, (batch, length), device=device)
            bp = batch * length

            def fn():
                with torch.no_grad(), amp:
                    model.backbone(x)
        sec = _timer(device, fn, warmup, repeats)
    except Exception as exc:  # noqa: BLE001
        if not _is_oom(exc):
            raise
        row.update(status="oom", seconds=None, mbp_per_s=None, peak_gib=None)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return row
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    row.update(status="ok", seconds=sec, mbp_per_s=bp / sec / 1e6, peak_gib=peak)
    ref = REFERENCE_MBPS.get(model.preset)
    row["vs_reference"] = row["mbp_per_s"] / ref if ref and precision == "bf16" and length == 2**20 else None
    return row


def profile_forward(model, device, precision, batch, length) -> None:
    """torch.profiler table of one forward (after one warm-up forward)."""
    x = torch.randint(5, 9, (batch, length), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    with torch.no_grad(), amp:
        model.backbone(x)
        torch.cuda.synchronize(device)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            model.backbone(x)
            torch.cuda.synchronize(device)
    print(f"profile {model.preset} {precision} B={batch} L={length}:", flush=True)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60), flush=True)


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict]) -> None:
    cols = ["preset", "precision", "mode", "batch", "length", "status", "seconds", "Mbp/s", "peak GiB", "x ref"]
    cells = [[r["preset"], r["precision"], r["mode"], str(r["batch"]), f"2^{int(np.log2(r['length']))}",
              r["status"], _fmt(r["seconds"], ".4f"), _fmt(r["mbp_per_s"], ".4g"), _fmt(r["peak_gib"], ".2f"),
              _fmt(r.get("vs_reference"), ".1f")] for r in rows]
    w = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(n) for c, n in zip(cols, w)))
    print("  ".join("-" * n for n in w))
    for x in cells:
        print("  ".join(v.ljust(n) for v, n in zip(x, w)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="1.4m,7m", help="comma-separated MambaConfig presets")
    ap.add_argument("--precisions", default="bf16,fp32", help="bf16 and/or fp32")
    ap.add_argument("--lengths", default="17,20", help="comma-separated log2 sequence lengths")
    ap.add_argument("--batch-sizes", default="1,4,16", help="comma-separated batch sizes")
    ap.add_argument("--max-tokens", type=int, default=1 << 22, help="skip configs with batch*length above this")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-api", action="store_true", help="skip the end-to-end GenomeModel.embed rows")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny model, short inputs, CPU: checks the script in < 1 min")
    ap.add_argument("--profile", action="store_true",
                    help="print the top CUDA kernels of one forward of each preset at the first length and batch")
    ap.add_argument("--json", default=None, help="JSON output path [default: $OUT/bench_embed.json if $OUT is set]")
    args = ap.parse_args(argv)

    if args.smoke:
        args.presets, args.lengths, args.batch_sizes = "tiny", "9", "1,2"
        args.warmup, args.repeats, args.device = 1, 1, args.device or "cpu"
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    presets = [p for p in args.presets.split(",") if p]
    precisions = [p for p in args.precisions.split(",") if p]
    lengths = [2 ** int(x) for x in args.lengths.split(",") if x]
    batches = [int(b) for b in args.batch_sizes.split(",") if b]
    for p in precisions:
        if p not in ("fp32", "bf16"):
            ap.error(f"--precisions: unknown {p!r}; use fp32 and/or bf16")

    rows = []
    for preset in presets:
        torch.manual_seed(0)
        cfg = MambaConfig.from_preset(preset, d_model=32, n_layer=2) if args.smoke else MambaConfig.from_preset(preset)
        model = MambaLM(cfg).to(device).eval()
        model.preset = preset
        if args.profile and device.type == "cuda":
            profile_forward(model, device, precisions[0], batches[0], lengths[0])
        for precision in precisions:
            for length in lengths:
                for batch in batches:
                    if batch * length > args.max_tokens:
                        continue
                    rows.append(bench_config(model, device, precision, batch, length, args.warmup, args.repeats))
                    print(f"  {preset} {precision} B={batch} L={length}: {rows[-1]['status']} "
                          f"{_fmt(rows[-1]['mbp_per_s'], '.4g')} Mbp/s", file=sys.stderr, flush=True)
                if not args.no_api:
                    rows.append(bench_config(model, device, precision, 1, length, max(1, args.warmup - 1),
                                             max(1, args.repeats // 2), api=True))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()

    print_table(rows)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "smoke": args.smoke, "reference_mbp_per_s_bf16_2^20": REFERENCE_MBPS,
              "rows": rows}
    out = args.json or (os.path.join(os.environ["OUT"], "bench_embed.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
