"""The inference scan's chunk count when the rows alone do not fill the GPU (GPU, about 60 s).

    PYTHONPATH=. python benchmarks/sweep_infer_programs.py

No-grad forward of the selective scan (bf16, D 512, N 16, z, D, bias, softplus) at (4, 2^18),
(1, 2^20) and (8, 2^17): the shapes of a streamed embed of 4, 1 and 8 long records. For each
multiplier m, the launcher targets 32 x 132 x m programs (TUNE fwd_programs; the default is
m = 16, kernels/selective_scan/chunk.py `_config`). Prints ms per call (CUDA-event median of 20,
best of two rounds) and the multiplier with the lowest sum; writes $OUT/fnc.json.
"""
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import torch  # noqa: E402

import sweep_short as ss  # noqa: E402


res = {}
for (B, L) in ((4, 2**18), (1, 2**20), (8, 2**17)):
    x = ss.make(B, 512, 16, L, torch.bfloat16)
    with torch.no_grad():
        for mult in (2, 4, 8, 16, 32):
            tgt = 32 * 132 * mult
            ss.set_tune({"fwd_programs": tgt})
            t = min(ss.timer(lambda: ss.scan(x), 20) for _ in range(2))
            res[f"{B}x{L}_x{mult}"] = t
            print(f"B={B} L={L} programs x{mult}: {t:.3f} ms", flush=True)
    ss.set_tune({})
best = {}
for mult in (2, 4, 8, 16, 32):
    best[mult] = res[f"4x{2**18}_x{mult}"] + res[f"1x{2**20}_x{mult}"] + res[f"8x{2**17}_x{mult}"]
m = min(best, key=best.get)
print("BEST", m, 32 * 132 * m)
json.dump(res, open(os.environ.get("OUT", ".") + "/fnc.json", "w"), indent=1)
