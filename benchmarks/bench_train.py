"""Training throughput and memory of the paper's DNA presets at up to 1 Mbp, on one GPU (or DDP).

Three modes, all writing JSON + a markdown table to $OUT (when set) and printing the table:

sweep (default)   `1.4m` and `7m` x seq_len 2^14, 2^17, 2^20 (batch = --tokens-per-step /
                  seq_len, so 1 at 2^20; plus the baseline's 7m b1 2^17 and 1.4m b4 2^20 rows) x activation
                  checkpointing off/on where it matters (2^20, and
                  any row whose no-checkpointing run ran out of memory). Per row: tokens/s, median
                  step ms, forward/backward/optimizer split, scan share (one layer's scan timed
                  alone x n_layer / step, see mamba_genome/workflows/bench_train.py), peak
                  memory. OOM-safe: an OOM is recorded and the sweep goes on. Rows past
                  --budget-s are skipped (and say so), so one call fits a 9-minute limit.
                  --profile adds a torch.profiler table of the top CUDA kernels of one step;
                  --check-syncs counts host syncs in one step (torch.cuda sync debug mode).
--ddp             the same measurements under DistributedDataParallel, one process per GPU:
                      torchrun --nproc_per_node 2 benchmarks/bench_train.py --ddp
                  reports per-rank and total tokens/s (scaling = total / single-GPU tokens/s).
--warmup-run      one bounded pretrain-like run whose seq_len doubles 2^10 -> 2^20 every
                  --stage-steps steps while the batch halves (tokens/step constant, gradient
                  accumulation above --micro-tokens), same model and optimizer throughout:
                  shows the schedule runs without restart or OOM and prints loss per stage.
                  --fasta FILE trains on windows of its longest record, else random tokens.

Usage (repo root, no install needed):
    PYTHONPATH=. python benchmarks/bench_train.py                  # the sweep, one H100, < 9 min
    PYTHONPATH=. python benchmarks/bench_train.py --smoke          # tiny CPU check, seconds
    PYTHONPATH=. python benchmarks/bench_train.py --warmup-run --preset 7m --fasta chr1.fa
    torchrun --nproc_per_node 2 benchmarks/bench_train.py --ddp
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

import torch  # noqa: E402

from mamba_genome.workflows.bench_train import (  # noqa: E402
    BenchTrainConfig, _autocast, build_model, lm_loss, make_optimizer, random_tokens, run_bench_train,
)

COLUMNS = ["preset", "seq_len", "batch", "ckpt", "status", "Mtok/s", "step_ms", "fwd_ms", "bwd_ms", "opt_ms",
           "scan_share", "peak_GiB"]


# ----------------------------------------------------------------------------- helpers
def _free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _row(cfg: BenchTrainConfig, res=None, status="ok") -> dict:
    row = {"preset": cfg.preset, "seq_len": cfg.seq_len, "batch": cfg.batch_size,
           "ckpt": ("bf16" if cfg.checkpoint_bf16 else "on") if cfg.grad_checkpointing else "off",
           "state_every": cfg.scan_state_every, "status": status}
    if res is not None:
        row.update({
            "Mtok/s": round(res.tokens_per_s / 1e6, 3), "step_ms": round(res.step_ms, 1),
            "fwd_ms": round(res.fwd_ms, 1), "bwd_ms": round(res.bwd_ms, 1), "opt_ms": round(res.opt_ms, 1),
            "scan_share": f"{100 * res.scan_share:.0f}%" if res.scan_share is not None else "-",
            "peak_GiB": round(res.peak_mem_gib, 2) if res.peak_mem_gib is not None else "-",
        })
    return row


def _markdown(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _write_out(name: str, payload: dict, markdown: str):
    out = os.environ.get("OUT")
    if not out:
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    for fname, text in ((f"{name}.json", json.dumps(payload, indent=2) + "\n"), (f"{name}.md", markdown + "\n")):
        tmp = Path(out) / f".{fname}.tmp"
        tmp.write_text(text)
        os.replace(tmp, Path(out) / fname)
    print(f"wrote {out}/{name}.json and {name}.md", file=sys.stderr)


def _env() -> dict:
    import triton

    env = {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["gpus"] = torch.cuda.device_count()
    return env


# ----------------------------------------------------------------------------- sweep
def sweep_configs(args) -> list[BenchTrainConfig]:
    if args.smoke:
        base = dict(steps=2, warmup=1, device=args.device or "cpu", precision="32")
        return [BenchTrainConfig(preset="tiny", seq_len=256, batch_size=2, **base),
                BenchTrainConfig(preset="tiny", seq_len=512, batch_size=1, grad_checkpointing=True, **base)]
    cfgs = []
    for preset, every in ((p, e) for p in args.presets for e in args.scan_state_every):
        base = dict(steps=args.steps, warmup=args.warmup, device=args.device or "auto", scan_state_every=every,
                    checkpoint_skip=args.ckpt_skip)
        for exp in args.seq_exps:
            L = 1 << exp
            b = max(1, args.tokens_per_step // L)
            for ck in ((False, True) if L >= args.ckpt_from else (False,)):
                cfgs.append(BenchTrainConfig(preset=preset, seq_len=L, batch_size=b, micro_batch_size=b,
                                             grad_checkpointing=ck, **base))
                if ck and args.ckpt_bf16:
                    cfgs.append(BenchTrainConfig(preset=preset, seq_len=L, batch_size=b, micro_batch_size=b,
                                                 grad_checkpointing=True, checkpoint_bf16=True, **base))
    # the baseline table's other rows: 7m batch 1 at 2^17, 1.4m batch 4 at 2^20 with checkpointing
    if not args.no_extra:
        if 17 in args.seq_exps and "7m" in args.presets:
            cfgs.append(BenchTrainConfig(preset="7m", seq_len=1 << 17, batch_size=1, grad_checkpointing=False, **base))
        if 20 in args.seq_exps and "1.4m" in args.presets:
            cfgs.append(BenchTrainConfig(preset="1.4m", seq_len=1 << 20, batch_size=4, grad_checkpointing=True,
                                         **base))
    return cfgs


def run_sweep(args) -> int:
    t_start = time.perf_counter()
    rows, results = [], []
    cfgs = sweep_configs(args)
    i = -1
    while i + 1 < len(cfgs):
        i += 1
        cfg = cfgs[i]
        label = f"[{i + 1}/{len(cfgs)}] {cfg.preset} L={cfg.seq_len} b={cfg.batch_size} ckpt={cfg.grad_checkpointing}"
        if time.perf_counter() - t_start > args.budget_s:
            rows.append(_row(cfg, status="skipped (time budget)"))
            print(f"{label}: skipped, past --budget-s {args.budget_s}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        try:
            res = run_bench_train(cfg)
            rows.append(_row(cfg, res))
            results.append(res.to_dict())
            print(f"{label}: {res.tokens_per_s / 1e6:.3f} Mtok/s, {res.step_ms:.1f} ms/step, "
                  f"peak {res.peak_mem_gib if res.peak_mem_gib is None else round(res.peak_mem_gib, 2)} GiB "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        except Exception as exc:  # noqa: BLE001 - a benchmark row must not end the sweep
            status = "OOM" if _is_oom(exc) else f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            if not _is_oom(exc):
                traceback.print_exc()
            rows.append(_row(cfg, status=status))
            results.append({**_row(cfg, status=status)})
            print(f"{label}: {status}", file=sys.stderr, flush=True)
            if _is_oom(exc) and not cfg.grad_checkpointing and not any(
                    c.grad_checkpointing and (c.preset, c.seq_len, c.batch_size) == (cfg.preset, cfg.seq_len,
                                                                                     cfg.batch_size) for c in cfgs):
                cfgs.insert(i + 1, dataclasses.replace(cfg, grad_checkpointing=True))   # what a user would do
        finally:
            _free()
    extras = {}
    if args.check_syncs and torch.cuda.is_available():
        extras["host_syncs"] = count_host_syncs(args)
    if args.profile and torch.cuda.is_available():
        extras["profile"] = profile_step(args)
    md = _markdown(rows, COLUMNS)
    if "host_syncs" in extras:
        md += f"\n\nHost syncs in one training step, ckpt off + on ({args.profile_preset}, L={1 << args.profile_exp}): " \
              f"{extras['host_syncs']['count']}\n" + "".join(f"- `{s}`\n" for s in extras["host_syncs"]["where"][:10])
    if "profile" in extras:
        md += "\n\n" + extras["profile"]["markdown"]
    print(md)
    _write_out("bench_train", {"env": _env(), "rows": results, **extras}, md)
    return 0


def _one_step(model, opt, ids, precision, device):
    with _autocast(device, precision):
        loss = lm_loss(model, ids)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def count_host_syncs(args) -> dict:
    """Both ckpt settings: one (already compiled) step each under torch.cuda sync debug mode."""
    runs = [_count_host_syncs(args, ck) for ck in (False, True)]
    return {"count": sum(r["count"] for r in runs), "where": [w for r in runs for w in r["where"]]}


def _count_host_syncs(args, ckpt: bool) -> dict:
    cfg = BenchTrainConfig(preset=args.profile_preset, seq_len=1 << args.profile_exp, batch_size=1,
                           device="cuda", grad_checkpointing=ckpt)
    device = cfg.resolve_device()
    model = build_model(cfg, device)
    opt = make_optimizer(model, cfg, device)
    ids = random_tokens(1, cfg.seq_len + 1, device)
    _one_step(model, opt, ids, cfg.precision, device)
    torch.cuda.synchronize()
    where = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            _one_step(model, opt, ids, cfg.precision, device)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    for w in caught:
        msg = str(w.message).lower()
        if "synchroniz" in msg and "prototype feature" not in msg:
            where.append(f"ckpt={'on' if ckpt else 'off'} {Path(w.filename).name}:{w.lineno}: "
                         f"{str(w.message).splitlines()[0][:100]}")
    del model, opt, ids
    _free()
    return {"count": len(where), "where": where}


def profile_step(args) -> dict:
    """torch.profiler over one step: CUDA time per kernel, top 30, at --profile-preset / --profile-exp."""
    from torch.profiler import ProfilerActivity, profile

    cfg = BenchTrainConfig(preset=args.profile_preset, seq_len=1 << args.profile_exp, batch_size=args.profile_batch,
                           device="cuda", grad_checkpointing=args.profile_ckpt,
                           scan_state_every=args.scan_state_every[0])
    device = cfg.resolve_device()
    model = build_model(cfg, device)
    opt = make_optimizer(model, cfg, device)
    ids = random_tokens(cfg.batch_size, cfg.seq_len + 1, device)
    for _ in range(2):
        _one_step(model, opt, ids, cfg.precision, device)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        _one_step(model, opt, ids, cfg.precision, device)
        torch.cuda.synchronize()
    del model, opt, ids
    _free()
    kern: dict[str, list] = {}
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            t = getattr(ev, "device_time", None) or getattr(ev, "cuda_time", 0.0)
            k = kern.setdefault(ev.name, [0.0, 0])
            k[0] += t
            k[1] += 1
    total = sum(v[0] for v in kern.values()) or 1.0
    top = sorted(kern.items(), key=lambda kv: -kv[1][0])[:30]
    rows = [{"kernel": n[:90], "calls": c, "ms": round(t / 1000, 2), "share": f"{100 * t / total:.1f}%"}
            for n, (t, c) in top]
    md = (f"CUDA kernel time in one step ({cfg.preset}, {cfg.batch_size} x L={cfg.seq_len}, bf16, "
          f"{'checkpointing' if cfg.grad_checkpointing else 'no ckpt'}, scan states every {cfg.scan_state_every}): "
          f"{total / 1000:.1f} ms total\n\n" + _markdown(rows, ["kernel", "calls", "ms", "share"]))
    return {"total_ms": total / 1000, "top": rows, "markdown": md}


# ----------------------------------------------------------------------------- DDP
def run_ddp(args) -> int:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if args.smoke:
        cfgs = [BenchTrainConfig(preset="tiny", seq_len=256, batch_size=2, steps=2, warmup=1, device=device,
                                 precision="32", scan_share=False)]
    else:
        cfgs = [BenchTrainConfig(preset=p, seq_len=1 << e, batch_size=max(1, args.tokens_per_step >> e),
                                 micro_batch_size=max(1, args.tokens_per_step >> e),
                                 grad_checkpointing=(p == "7m" and e >= 20), steps=args.steps,
                                 warmup=args.warmup, device=device, scan_share=False, seed=rank)
                for p in args.presets for e in args.seq_exps if e >= 17]
    rows, results = [], []
    for cfg in cfgs:
        cfg.seed = rank
        wrap = (lambda m: DDP(m, device_ids=[local_rank] if torch.cuda.is_available() else None,
                              gradient_as_bucket_view=True))
        status, tps, res_d = "ok", 0.0, {}
        try:
            res = run_bench_train(cfg, model_wrapper=wrap)
            tps, res_d = res.tokens_per_s, res.to_dict()
        except Exception as exc:  # noqa: BLE001
            status = "OOM" if _is_oom(exc) else f"error: {type(exc).__name__}"
            _free()
        gathered = [None] * world
        dist.all_gather_object(gathered, {"rank": rank, "status": status, "tokens_per_s": tps, "result": res_d})
        if rank == 0:
            per_rank = [g["tokens_per_s"] for g in gathered]
            ok = all(g["status"] == "ok" for g in gathered)
            row = {**_row(cfg, status="ok" if ok else ",".join(g["status"] for g in gathered)),
                   "world": world, "per_rank_Mtok/s": " ".join(f"{t / 1e6:.3f}" for t in per_rank),
                   "total_Mtok/s": round(sum(per_rank) / 1e6, 3)}
            if ok:
                r0 = gathered[0]["result"]
                row.update({"step_ms": round(r0["step_ms"], 1), "peak_GiB": r0["peak_mem_gib"]})
            rows.append(row)
            results.append({"config": row, "ranks": gathered})
            print(f"{cfg.preset} L={cfg.seq_len} b={cfg.batch_size}/rank: total {row['total_Mtok/s']} Mtok/s "
                  f"over {world} ranks", file=sys.stderr, flush=True)
    if rank == 0:
        cols = ["preset", "seq_len", "batch", "ckpt", "status", "world", "per_rank_Mtok/s", "total_Mtok/s",
                "step_ms", "peak_GiB"]
        md = _markdown(rows, cols) + ("\n\nbatch is per rank; scaling = total_Mtok/s / the single-GPU sweep's "
                                      "Mtok/s at the same per-GPU shape.")
        print(md)
        _write_out("bench_train_ddp", {"env": _env(), "world": world, "rows": results}, md)
    dist.barrier()
    dist.destroy_process_group()
    return 0


# ----------------------------------------------------------------------------- seq-len warm-up run
def _load_contig(fasta: str | None, need: int):
    """(tokens uint8 tensor, description) from the longest record of ``fasta``, or (None, reason)."""
    if not fasta:
        return None, "random A/C/G/T tokens (no --fasta)"
    try:
        from mamba_genome.data.fasta import iter_fasta_records
        from mamba_genome.data.tokenizer import encode
    except ImportError as exc:
        return None, f"random tokens (cannot import the FASTA reader: {exc})"
    best_name, best = None, b""
    for name, seq in iter_fasta_records(fasta):
        if len(seq) > len(best):
            best_name, best = name, seq
    if len(best) < need:
        return None, f"random tokens (longest record of {fasta} has {len(best):,} bp < {need:,} needed)"
    toks = torch.from_numpy(encode(best, name=best_name))
    return toks, f"{fasta}:{best_name} ({len(best):,} bp), random windows"


def run_warmup(args) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    lo, hi = (6, 9) if args.smoke else (args.start_exp, args.end_exp)
    preset = "tiny" if args.smoke else args.preset
    tokens_per_step = (1 << (hi + 1)) if args.smoke else args.tokens_per_step
    micro_tokens = min(tokens_per_step, (1 << hi) if args.smoke else args.micro_tokens)
    if micro_tokens < (1 << hi):
        micro_tokens = 1 << hi            # one sequence of the longest length is the smallest micro-batch
    cfg = BenchTrainConfig(preset=preset, seq_len=1 << hi, grad_checkpointing=args.ckpt, device=str(device),
                           precision="32" if args.smoke else "bf16-mixed", lr=args.lr)
    tokens, source = _load_contig(args.fasta, 1 << hi)
    print(f"data: {source}", file=sys.stderr)
    model = build_model(cfg, device)
    opt = make_optimizer(model, cfg, device)
    total_steps = (hi - lo + 1) * args.stage_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, total_steps // 4)))
    gen = torch.Generator().manual_seed(0)
    rows, step = [], 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t_all = time.perf_counter()
    for exp in range(lo, hi + 1):
        L = 1 << exp
        batch = tokens_per_step // L
        micro = max(1, micro_tokens // L)
        accum = math.ceil(batch / micro)
        losses, t0 = [], time.perf_counter()
        for _ in range(args.stage_steps):
            step_loss = 0.0
            for a in range(accum):
                nb = min(micro, batch - a * micro)
                if tokens is not None:
                    starts = torch.randint(0, len(tokens) - L - 1, (nb,), generator=gen)
                    ids = torch.stack([tokens[s:s + L + 1] for s in starts.tolist()]).long()
                else:
                    ids = torch.randint(5, 9, (nb, L + 1), generator=gen)
                ids = ids.to(device, non_blocking=True)
                with _autocast(device, cfg.precision):
                    loss = lm_loss(model, ids) * (nb / batch)
                loss.backward()
                step_loss += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(step_loss)
            step += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        row = {"seq_len": L, "batch": batch, "micro_batch": micro, "accum": accum, "steps": args.stage_steps,
               "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
               "Mtok/s": round(args.stage_steps * tokens_per_step / dt / 1e6, 3), "stage_s": round(dt, 1),
               "peak_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else "-"}
        rows.append(row)
        print(f"seq_len {L:>8,}: batch {batch} ({micro} x {accum}), loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
              f"{dt:.1f} s", file=sys.stderr, flush=True)
    cols = list(rows[0].keys())
    md = (f"Sequence-length warm-up, {preset}, {tokens_per_step:,} tokens/step, ckpt "
          f"{'on' if args.ckpt else 'off'}, data: {source}; {step} optimizer steps in "
          f"{time.perf_counter() - t_all:.0f} s, one model and optimizer, no restart\n\n" + _markdown(rows, cols))
    print(md)
    _write_out("bench_train_warmup", {"env": _env(), "preset": preset, "data": source, "rows": rows}, md)
    return 0


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny model on CPU, seconds (checks the script)")
    p.add_argument("--ddp", action="store_true", help="DDP mode (launch with torchrun)")
    p.add_argument("--warmup-run", action="store_true", help="sequence-length warm-up run")
    p.add_argument("--device", default=None, help="default: cuda if available (cpu with --smoke)")
    p.add_argument("--presets", nargs="+", default=["1.4m", "7m"])
    p.add_argument("--seq-exps", nargs="+", type=int, default=[14, 17, 20], help="log2 of the sequence lengths")
    p.add_argument("--tokens-per-step", type=int, default=1 << 20)
    p.add_argument("--ckpt-from", type=int, default=1 << 20, help="also run checkpointing on from this length")
    p.add_argument("--ckpt-bf16", action="store_true", help="also run checkpointed rows with bf16 checkpoints")
    p.add_argument("--no-extra", action="store_true", help="skip the 1.4m batch-4 2^20 checkpointed row")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--scan-state-every", type=int, nargs="+", default=[64],
                   help="steps between saved scan states; several values: rows for each")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--budget-s", type=float, default=420.0, help="skip remaining sweep rows after this")
    p.add_argument("--check-syncs", action="store_true", help="count host syncs in one step (GPU)")
    p.add_argument("--profile", action="store_true", help="top CUDA kernels of one step (GPU)")
    p.add_argument("--profile-preset", default="7m")
    p.add_argument("--profile-exp", type=int, default=17)
    p.add_argument("--profile-ckpt", action="store_true", help="profile with activation checkpointing")
    p.add_argument("--profile-batch", type=int, default=1, help="sequences in the profiled step")
    p.add_argument("--ckpt-skip", type=int, default=0, help="checkpointed rows: leave the last N layers plain")
    # warm-up run
    p.add_argument("--preset", default="7m", help="--warmup-run model preset")
    p.add_argument("--start-exp", type=int, default=10)
    p.add_argument("--end-exp", type=int, default=20)
    p.add_argument("--stage-steps", type=int, default=2, help="optimizer steps per sequence length")
    p.add_argument("--micro-tokens", type=int, default=1 << 20, help="tokens per forward/backward")
    p.add_argument("--ckpt", action=argparse.BooleanOptionalAction, default=True,
                   help="activation checkpointing in --warmup-run")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--fasta", default=None, help="--warmup-run: train on windows of this FASTA's longest record")
    args = p.parse_args(argv)
    if args.ddp:
        return run_ddp(args)
    if args.warmup_run:
        return run_warmup(args)
    return run_sweep(args)


if __name__ == "__main__":
    sys.exit(main())
