"""Does the no-grad scan get faster when 2^20 positions come as many rows instead of one?

The inference forward of one long row (embed of a chromosome) does not fill the GPU, so the scan
cuts the length into chunks and pays a second pass (the chunk-state kernel) for it. With more
rows in flight (several records, or several layers of one model at once) fewer chunks are needed.
This times ``selective_scan`` under ``torch.no_grad`` (bf16, D 512, N 16, z, D, softplus) at a
fixed 2^20 positions per call for several row counts, with the default chunking and with one
chunk per row (no state pass), per channel block; CUDA-event medians in ms. Then a torch.profiler
table of one 7m backbone forward at (1, 2^20) (CUDA time per kernel).

    PYTHONPATH=. python benchmarks/sweep_rows_scan.py      # one H200, about 1 minute

Writes $OUT/sweep_rows_scan.json (or ./sweep_rows_scan.json).
"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import sweep_short as ss  # noqa: E402

TOKENS = 2 ** 20
res = {"scan": {}, "device": torch.cuda.get_device_name()}
for rows in (1, 4, 16, 32, 64, 128, 256, 1024):
    x = ss.make(rows, 512, 16, TOKENS // rows, torch.bfloat16)
    line = []
    with torch.no_grad():
        for name, tune in (("default", {}), ("nc1_bd32", {"fwd_programs": 1}), ("nc1_bd16", {"fwd_programs": 1, "fwd_BD": 16}),
                           ("nc1_bd64w2", {"fwd_programs": 1, "fwd_BD": 64, "fwd_num_warps": 2})):
            ss.set_tune(tune)
            t = min(ss.timer(lambda: ss.scan(x), 15) for _ in range(2))
            res["scan"][f"{rows}_{name}"] = t
            line.append(f"{name} {t:.3f}")
    ss.set_tune({})
    print(f"rows {rows:5d} x {TOKENS // rows:8d}: " + "  ".join(line), flush=True)
    del x
    torch.cuda.empty_cache()

# a profile of one 7m forward at (1, 2^20): where the time goes per kernel
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from mamba_genome.model.config import MambaConfig  # noqa: E402
from mamba_genome.model.lm import MambaLM  # noqa: E402

lm = MambaLM(MambaConfig.from_preset("7m")).cuda().eval()
ids = torch.randint(0, 4, (1, TOKENS), device="cuda")
with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
    for _ in range(2):
        lm.backbone(ids, state=lm.allocate_state(1, "cuda"))
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            lm.backbone(ids, state=lm.allocate_state(1, "cuda"))
        torch.cuda.synchronize()
rows = []
for ev in prof.key_averages():
    if ev.device_type.name == "CUDA" or getattr(ev, "self_device_time_total", 0):
        rows.append((ev.key, getattr(ev, "self_device_time_total", 0) / 3 / 1e3, ev.count // 3))
rows.sort(key=lambda r: -r[1])
total = sum(r[1] for r in rows)
print(f"7m forward (1, 2^20) CUDA time per call: {total:.1f} ms")
for k, ms, n in rows[:20]:
    print(f"  {ms:8.2f} ms  {n:4d} calls  {k[:90]}")
res["profile_7m_2p20"] = [{"kernel": k, "ms": ms, "calls": n} for k, ms, n in rows[:30]]
out = Path(os.environ.get("OUT", ".")) / "sweep_rows_scan.json"
out.write_text(json.dumps(res, indent=1) + "\n")
