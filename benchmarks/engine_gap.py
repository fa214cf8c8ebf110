"""Where the inference engine loses to the bare forward: one GPU run that times and profiles both.

BENCHMARKS.md section 7 (H200, 2026-12-01): 7m bf16 at 2^20, bare ``backbone`` 5.49 Mbp/s, the
same through the engine (``GenomeModel.embed``) 4.80. The two differ in the model path, not only
in the host loop: a bare forward (no state) runs each mixer as the fused ``mamba_inner`` op,
whose scan saves states for a backward and so launches with the *training* forward config
(64 channels per two-warp program); the engine carries the recurrent state between chunks, so
each mixer runs op by op and its scan, which saves nothing, launches with the *inference* config
(32 channels per one-warp program: ``kernels/selective_scan/chunk.py::_config``, tuned at
(1024, 512), where the rows alone fill the GPU). This script separates the causes, all with a
random 7m model under bf16 autocast, CUDA-event medians:

1. per shape (1 x 2^20: embed; 4096 x 512: a score --vcf batch), Mtok/s of ``backbone`` without
   state, ``backbone`` with state, and (at 2^20) the engine's ``GenomeModel.embed`` of 4 x 2^20
   bases in 2^20 chunks, mean-pooled, and per-base into an ``EmbeddingWriter`` .h5 (2 x 2^20);
2. the same under ``MAMBA_GENOME_SCAN_TUNE={"fwd_BD": 64, "fwd_num_warps": 2}`` (the stateful
   path with the training forward's launch config), in a child process;
3. a torch.profiler table (CUDA time per kernel) of one 2^20 forward without and with state.

Usage (GPU, about a minute): PYTHONPATH=. python benchmarks/engine_gap.py [--json OUT.json]
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

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TRAINING_FWD = {"fwd_BD": 64, "fwd_num_warps": 2}


def _median_s(fn, warmup: int = 2, reps: int = 5) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def measure() -> dict:
    """Mtok/s of each path at each shape (this process's scan launch config)."""
    from mamba_genome.api import GenomeModel
    from mamba_genome.io import EmbeddingWriter, RecordInfo
    from mamba_genome.model.config import MambaConfig
    from mamba_genome.model.lm import MambaLM

    torch.manual_seed(0)
    lm = MambaLM(MambaConfig.from_preset("7m")).cuda().eval()
    gm = GenomeModel(lm)
    out = {}
    amp = dict(device_type="cuda", dtype=torch.bfloat16)
    for B, L in ((1, 1 << 20), (4096, 512)):
        ids = torch.randint(5, 9, (B, L), device="cuda")
        with torch.no_grad(), torch.autocast(**amp):
            bare = _median_s(lambda: lm.backbone(ids))
            stateful = _median_s(lambda: lm.backbone(ids, state=lm.allocate_state(B)))
        out[f"{B}x{L}"] = {"bare_mtok_s": B * L / bare / 1e6, "with_state_mtok_s": B * L / stateful / 1e6}
    seq = np.random.default_rng(0).integers(5, 9, 4 << 20).astype(np.uint8)
    eng = _median_s(lambda: gm.embed(seq, pool="mean", chunk_size=1 << 20, batch_size=1, precision="bf16"), 1, 3)
    out["engine_mean_4x2^20_mtok_s"] = seq.size / eng / 1e6
    per = seq[: 2 << 20]
    with tempfile.TemporaryDirectory() as d:
        def per_base():
            rec = [RecordInfo("r", "r", 0, per.size)]
            with EmbeddingWriter(Path(d) / "e.h5", rec, lm.config.d_model, per_base=True) as w:
                gm.embed([per], pool=None, sink=w, chunk_size=1 << 20, batch_size=1, precision="bf16")
        t = _median_s(per_base, 1, 2)
    out["engine_per_base_h5_2x2^20_mtok_s"] = per.size / t / 1e6
    return out


def profile() -> dict:
    """Top CUDA kernels of one 2^20 forward without and with state."""
    from mamba_genome.model.config import MambaConfig
    from mamba_genome.model.lm import MambaLM

    torch.manual_seed(0)
    lm = MambaLM(MambaConfig.from_preset("7m")).cuda().eval()
    ids = torch.randint(5, 9, (1, 1 << 20), device="cuda")
    tables = {}
    for name, fn in (("bare", lambda: lm.backbone(ids)),
                     ("with_state", lambda: lm.backbone(ids, state=lm.allocate_state(1)))):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            fn()
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                fn()
                torch.cuda.synchronize()
        tables[name] = prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=50)
    return tables


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("engine_gap.py needs a CUDA GPU", file=sys.stderr)
        return 1
    if args.child:
        print(json.dumps(measure()))
        return 0
    result = {"device": torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "default_config": measure()}
    env = {**os.environ, "MAMBA_GENOME_SCAN_TUNE": json.dumps(TRAINING_FWD),
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    result["training_fwd_config"] = json.loads(proc.stdout.strip().splitlines()[-1])
    tables = profile()
    print("| measure | default launch config | scan TUNE " + json.dumps(TRAINING_FWD) + " |")
    print("|---|---:|---:|")
    a, b = result["default_config"], result["training_fwd_config"]
    for k, v in a.items():
        if isinstance(v, dict):
            for kk in v:
                print(f"| {k} {kk} | {v[kk]:.3f} | {b[k][kk]:.3f} |")
        else:
            print(f"| {k} | {v:.3f} | {b[k]:.3f} |")
    for name, t in tables.items():
        print(f"\nprofile 7m bf16 (1, 2^20) {name}:\n{t}")
    result["profiles"] = tables
    path = args.json or (os.path.join(os.environ["OUT"], "engine_gap.json") if os.environ.get("OUT") else None)
    if path:
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
