"""The two small kernels of a streamed (state-carrying) inference forward, swept on the GPU.

A 7m forward at (1, 2^20) spends 18 ms in the causal conv1d and 7 ms in the scan's chunk-carry
kernel (torch.profiler, H200, 2026-12-02: ``sweep_rows_scan.py``): the conv at 1.14 ms a layer
against 0.86 ms for the same conv without a carried state, and the carry walks ~4,000 chunks one
after another. This times, CUDA-event medians in ms, bf16:

- conv1d forward (width 4, SiLU) on x = xz[..., :512] of a (1, 2^20, 1024) xz, with and without
  an initial state, per tile setting (``causal_conv1d.chunk.TUNE``), beside a device copy of the
  same bytes;
- the no-grad scan at (1, 2^20) and (4, 2^18), D 512, N 16, with a carried state, per carry
  setting (``carry_BLOCK``, ``carry_K``) and chunk-count target.

    PYTHONPATH=. python benchmarks/sweep_stream_small_ops.py      # one H200, about 1 minute

Writes $OUT/sweep_stream_small_ops.json (or ./sweep_stream_small_ops.json).
"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import sweep_short as ss  # noqa: E402
from mamba_genome.kernels.causal_conv1d import chunk as cc  # noqa: E402

res = {"device": torch.cuda.get_device_name(), "conv": [], "carry": []}
L, d = 2 ** 20, 512
xz = torch.randn(1, L, 2 * d, device="cuda", dtype=torch.bfloat16)
x = xz[..., :d]
w = torch.randn(d, 4, device="cuda")
b = torch.randn(d, device="cuda")
init = torch.randn(1, d, 3, device="cuda", dtype=torch.bfloat16)
xc = x.contiguous()
y = torch.empty_like(xc)
res["copy_ms"] = ss.timer(lambda: y.copy_(xc), 30)
print(f"copy of the conv's bytes: {res['copy_ms']:.3f} ms", flush=True)
ref = {k: cc._conv_fwd(x, w, b, i, True) for k, i in (("none", None), ("init", init))}
for tune in ({}, {"BL": 64, "BD": 128}, {"BL": 16, "BD": 256}, {"BL": 32, "BD": 256}, {"BL": 64, "BD": 64},
             {"BL": 128, "BD": 64, "num_warps": 8}, {"BL": 16, "BD": 512, "num_warps": 8}):
    cc.TUNE.clear(); cc.TUNE.update(tune)
    row = {"tune": tune}
    for k, i in (("none", None), ("init", init)):
        row[k + "_same"] = bool(torch.equal(cc._conv_fwd(x, w, b, i, True), ref[k]))
        row[k + "_ms"] = ss.timer(lambda: cc._conv_fwd(x, w, b, i, True), 30)
    res["conv"].append(row)
    print(f"conv {tune}: no state {row['none_ms']:.3f} ms, with state {row['init_ms']:.3f} ms "
          f"(same {row['none_same']}/{row['init_same']})", flush=True)
cc.TUNE.clear()
del xz, x, xc, y

for (B, Lr) in ((1, 2 ** 20), (4, 2 ** 18)):
    inp = ss.make(B, 512, 16, Lr, torch.bfloat16)
    inp["initial_state"] = torch.randn(B, 512, 16, device="cuda")
    with torch.no_grad():
        for mult in (8, 16):
            for blk, k in ((32, 16), (16, 16), (8, 16), (32, 32), (16, 32), (8, 32), (16, 64), (8, 64)):
                ss.set_tune({"fwd_programs": 32 * 132 * mult, "carry_BLOCK": blk, "carry_K": k})
                t = min(ss.timer(lambda: ss.scan(inp), 15) for _ in range(2))
                res["carry"].append({"B": B, "L": Lr, "programs_x": mult, "BLOCK": blk, "K": k, "ms": t})
                print(f"scan B={B} L={Lr} programs x{mult} carry BLOCK {blk} K {k}: {t:.3f} ms", flush=True)
    ss.set_tune({})
    del inp
out = Path(os.environ.get("OUT", ".")) / "sweep_stream_small_ops.json"
out.write_text(json.dumps(res, indent=1) + "\n")
