"""What is alive at the peak of one training step on a GPU.

Runs one warm-up step, then records the CUDA caching allocator's trace over one more step
(``torch.cuda.memory._record_memory_history``), replays it to find the moment of the peak, and
prints the blocks alive then, grouped by where they were allocated (the innermost mamba_genome,
kernels, checkpoint and autograd frames). This is how the fp32 copy of the scan output before
out_proj was found (BENCHMARKS.md section 4).

    python benchmarks/train_mem_peak.py --preset 7m --seq-exp 20 --ckpt --ckpt-bf16
"""
from __future__ import annotations

import argparse
import collections
import sys

import torch
import torch.utils.checkpoint

from mamba_genome.workflows.bench_train import (
    BenchTrainConfig, _autocast, build_model, lm_loss, make_optimizer, random_tokens,
)

FRAME_KEYS = ("mamba_genome", "kernels", "checkpoint.py", "bench_train", "autograd")


def where(ev) -> str:
    frames = [f for f in ev.get("frames", []) if any(k in f["filename"] for k in FRAME_KEYS)]
    return " <- ".join(f"{f['filename'].split('/')[-1]}:{f['line']}:{f['name']}" for f in frames[:5]) or "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="7m")
    ap.add_argument("--seq-exp", type=int, default=20, help="log2 of the sequence length")
    ap.add_argument("--ckpt", action="store_true", help="activation checkpointing per layer")
    ap.add_argument("--ckpt-bf16", action="store_true", help="keep the checkpoints in bf16")
    ap.add_argument("--top", type=int, default=14)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("error: needs a CUDA GPU", file=sys.stderr)
        return 2
    cfg = BenchTrainConfig(preset=args.preset, seq_len=1 << args.seq_exp, batch_size=1, device="cuda",
                           grad_checkpointing=args.ckpt, checkpoint_bf16=args.ckpt_bf16)
    dev = torch.device("cuda")
    model = build_model(cfg, dev)
    opt = make_optimizer(model, cfg, dev)
    ids = random_tokens(1, cfg.seq_len + 1, dev)

    def step():
        # PyTorch's checkpoint stops a recomputation early by raising from a saved-tensor hook; with
        # the allocator's history recording on, that exception out of a custom Function's forward
        # comes back as a SystemError (torch 2.11), so recompute in full here (same peak)
        with _autocast(dev, cfg.precision), torch.utils.checkpoint.set_checkpoint_early_stop(False):
            loss = lm_loss(model, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(max_entries=200_000)
    step()
    torch.cuda.synchronize()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    print(f"{args.preset} L=2^{args.seq_exp} ckpt={args.ckpt} ckpt_bf16={args.ckpt_bf16}: "
          f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")

    trace = snap["device_traces"][0]
    live, cur, best, best_i, best_live = {}, 0, -1, -1, {}
    for i, ev in enumerate(trace):
        if ev["action"] == "alloc":
            live[ev["addr"]] = ev
            cur += ev["size"]
        elif ev["action"] == "free_requested" and ev["addr"] in live:
            cur -= live.pop(ev["addr"])["size"]
        if cur > best:
            best, best_i, best_live = cur, i, dict(live)
    print(f"peak of the step's own allocations: {best / 2**30:.2f} GiB at event {best_i} of {len(trace)}")
    size, count = collections.Counter(), collections.Counter()
    for ev in best_live.values():
        size[where(ev)] += ev["size"]
        count[where(ev)] += 1
    for w, sz in size.most_common(args.top):
        print(f"{sz / 2**30:6.2f} GiB x{count[w]}  {w}")
    print("events around the peak:")
    for ev in trace[max(0, best_i - 6): best_i + 3]:
        print(f"  {ev['action']} {ev['size'] / 2**20:.0f} MiB  {where(ev)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
