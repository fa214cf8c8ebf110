"""Default `mamba-genome pretrain` against the best hand-tuned tokens/s (issue 13, item 3: >= 95%).

For each preset (1.4m, 7m) and window length (2^10, 2^14, 2^17, 2^20) runs

    mamba-genome pretrain --data STORE --preset P --seq-len L --no-seq-warmup --max-steps 50 \\
        --val-contigs val --out RUN

with nothing else set (the defaults choose micro-batch, memory policy, validation), on a random
genome (16 Mbp train, 2.1 Mbp val; ingested once) or ``--fasta``. Its tokens/s counts the whole
run after start-up: the tokens trained from the start of optimizer step ``--skip-steps`` (the
first steps compile and autotune the Triton kernels) over the wall clock from then to the end of
the last validation, so every validation and the export after it count (the figure up to the
command's exit, shutdown included, is in the JSON too). The clock comes from ``cli_clock.py``:
the same CLI and flags, plus a callback that only records the time. The best hand-tuned figure
is the highest tokens/s of any row of ``benchmarks/calibrate_memory.py``'s JSON (one micro-batch
step, any policy and micro-batch) for that preset and length. A run that passes its share of
``--total-s`` is stopped and reported from the steps it made.

Prints a table and writes ``$OUT/bench_defaults.json`` and ``.md``.

    PYTHONPATH=. python benchmarks/bench_defaults.py            # one GPU, < 9 min (H200 calibration of 2026-12-01)
    PYTHONPATH=. python benchmarks/bench_defaults.py --smoke                                    # CPU, about a minute
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
CLOCK = Path(__file__).resolve().parent / "cli_clock.py"
sys.path.insert(0, str(CLOCK.parent))
from cli_clock import read_clock  # noqa: E402
DEFAULT_CALIBRATION = _REPO / "benchmarks" / "results" / "calibrate_memory_h200_2026-12-01.json"


# ------------------------------------------------------------------------------------ arithmetic
def best_hand_tuned(calibration: str | os.PathLike) -> dict[tuple[str, int], tuple[float, str]]:
    """{(preset, seq_len): (best tokens/s, "policy, micro x seq_len")} over the calibration rows that ran."""
    best: dict[tuple[str, int], tuple[float, str]] = {}
    for r in json.loads(Path(calibration).read_text())["rows"]:
        if r.get("status") != "ok":
            continue
        key = (r["preset"], int(r["seq_len"]))
        if r["tokens_per_s"] > best.get(key, (0.0, ""))[0]:
            best[key] = (float(r["tokens_per_s"]), f"{r['policy']}, {r['micro_batch']} x {int(r['seq_len']):,}")
    return best


def row(preset: str, seq_len: int, metrics: dict, run_wall_s: float, best: dict, tokens: float | None = None,
        note: str = "") -> dict:
    """One line of the table: the default run's tokens/s over ``run_wall_s`` (after start-up)
    against the hand-tuned best. ``tokens``: trained in that window (default all of the run's)."""
    tok = float(metrics["tokens_seen"] if tokens is None else tokens)
    tps = tok / run_wall_s if run_wall_s > 0 else float("nan")
    ref, how = best.get((preset, seq_len), (float("nan"), "-"))
    return {"preset": preset, "seq_len": seq_len, "tokens_per_s": tps, "tokens": tok, "window_s": run_wall_s,
            "train_tokens_per_s": metrics.get("tokens_per_second"), "steps": metrics.get("steps"),
            "wall_s": metrics.get("wall_seconds"), "best_tokens_per_s": ref, "best_config": how,
            "ratio": tps / ref if ref == ref and ref > 0 else float("nan"), "plan": metrics.get("plan"),
            "val_fraction": metrics.get("val_fraction"), "note": note}


def _exp(n: int) -> str:
    e = int(round(math.log2(n)))
    return f"2^{e}" if 1 << e == n else f"{n:,}"


def markdown(rows: list[dict], device: str) -> str:
    lines = [f"Default `mamba-genome pretrain` against the best hand-tuned tokens/s ({device}):", "",
             "| preset | seq_len | default M tokens/s (whole run after start-up) | training-loop M tokens/s "
             "| best hand-tuned M tokens/s | hand-tuned config | ratio | note |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    for r in rows:
        def m(v):
            return "-" if v is None or v != v else f"{v / 1e6:.3f}"
        ratio = "-" if r["ratio"] != r["ratio"] else f"{r['ratio']:.1%}"
        lines.append(f"| {r['preset']} | {_exp(r['seq_len'])} | {m(r['tokens_per_s'])} | {m(r['train_tokens_per_s'])} "
                     f"| {m(r['best_tokens_per_s'])} | {r['best_config']} | {ratio} | {r.get('note') or ''} |")
    plans = [(r, r["plan"]) for r in rows if isinstance(r.get("plan"), list) and r["plan"]]
    if plans:
        lines += ["", "What the planner chose (its log line):"]
        lines += [f"- {r['preset']} {_exp(r['seq_len'])}: {plan[-1]}" for r, plan in plans]
    return "\n".join(lines) + "\n"


def measure(events, skip_steps: int, tokens_per_step: int | None, final_tokens: int | None,
            t_exit: float) -> tuple[float, float, float, float | None] | None:
    """(tokens, seconds, start time, tokens/s to the command's exit) of the window after start-up.

    The window opens when optimizer step ``skip_steps`` starts and closes when the last validation
    ends (a finished run: ``final_tokens`` known; its periodic validations and exports count), or
    when the last step starts (a stopped run). None if no step reached ``skip_steps``."""
    steps = [(t, step, tok) for t, event, step, tok in events if event == "step" and step >= skip_steps]
    if not steps or not tokens_per_step:
        return None
    t_k, k, tok_k = steps[0]
    before = tok_k if tok_k is not None else k * tokens_per_step
    if final_tokens is not None:
        vals = [t for t, event, _, _ in events if event == "val" and t > t_k]
        end = vals[-1] if vals else t_exit
        tokens = final_tokens - before
        return tokens, end - t_k, t_k, tokens / (t_exit - t_k) if t_exit > t_k else None
    t_last, s_last, _ = steps[-1]
    return (s_last - k) * tokens_per_step, t_last - t_k, t_k, None


# ----------------------------------------------------------------------------------------- runs
def random_genome(path: Path, train_bp: int, val_bp: int, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for name, n in (("train", train_bp), ("val", val_bp)):
            seq = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, n)].tobytes().decode()
            fh.write(f">{name}\n")
            for i in range(0, n, 100):
                fh.write(seq[i:i + 100] + "\n")


def run_one(preset, seq_len, a, store, work, best, timeout_s, log) -> dict:
    run = work / f"{preset}_{seq_len}"
    clock = work / f"{preset}_{seq_len}.clock"
    cli = ["pretrain", "--data", str(store), "--preset", preset, "--seq-len", str(seq_len), "--no-seq-warmup",
           "--max-steps", str(a.max_steps), "--val-contigs", a.val_contigs, "--out", str(run), *a.extra]
    cmd = [sys.executable, str(CLOCK), str(clock), *cli]
    log(f"[{preset} {_exp(seq_len)}] mamba-genome {shlex.join(cli)}  (timeout {timeout_s:.0f} s)")
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    note = ""
    try:
        _, err = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)    # pretrain saves last.ckpt and exits 143
        try:
            _, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
        note = f"stopped at {timeout_s:.0f} s"
    t_exit = time.time()
    events = read_clock(clock)
    metrics_path = run / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    try:
        resolved = json.loads((run / "args.json").read_text())["resolved"]
    except (OSError, ValueError, KeyError):
        resolved = {}
    tps_step = metrics.get("tokens_per_step") or resolved.get("tokens_per_step")
    if p.returncode not in (0, None) and not note:
        msg = (err or "").strip().splitlines()[-1:] or ["?"]
        note = f"exit {p.returncode}: {msg[0][:160]}"
        log("\n".join((err or "").strip().splitlines()[-20:]))
    m = measure(events, a.skip_steps, tps_step, metrics.get("tokens_seen"), t_exit)
    if m is None:
        r = row(preset, seq_len, {"tokens_seen": 0, **metrics}, float("nan"), best, tokens=0.0,
                note=note or "no step past --skip-steps")
        r["startup_s"] = None
        return r
    tokens, window, t_k, to_exit = m
    if not metrics:       # stopped: what the steps it made say
        last = [e for e in events if e[1] == "step"][-1]
        metrics = {"tokens_seen": last[2] * tps_step, "steps": last[2]}
    # the planner's one-line reasons, as the engine logs them (train/memory.py: "... tokens per forward ...")
    metrics.setdefault("plan", [ln.strip() for ln in (err or "").splitlines() if "tokens per forward" in ln][-4:]
                       or resolved.get("stages") or resolved.get("plan"))
    r = row(preset, seq_len, metrics, window, best, tokens=tokens, note=note)
    r["startup_s"] = t_k - t0
    r["tokens_per_s_to_exit"] = to_exit
    r["command"] = "mamba-genome " + shlex.join(cli)
    log(f"[{preset} {_exp(seq_len)}] {r['tokens_per_s'] / 1e6:.3f} M tokens/s after start-up "
        f"({r['startup_s']:.0f} s start-up, {window:.0f} s run), {r['ratio']:.1%} of hand-tuned {note}")
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["1.4m", "7m"])
    ap.add_argument("--seq-exps", nargs="+", type=int, default=[10, 14, 17, 20])
    ap.add_argument("--max-steps", type=int, default=50)
    ap.add_argument("--skip-steps", type=int, default=2, help="optimizer steps left out as start-up (compilation)")
    ap.add_argument("--calibration", default=str(DEFAULT_CALIBRATION),
                    help="benchmarks/calibrate_memory.py JSON with the hand-tuned tokens/s")
    ap.add_argument("--fasta", help="genome to train on [a random one: train 16 Mbp, val 2.1 Mbp]")
    ap.add_argument("--val-contigs", default="val")
    ap.add_argument("--extra", default="", help="more pretrain flags for every run (e.g. to compare)")
    ap.add_argument("--total-s", type=float, default=480.0, help="wall-clock budget of all runs")
    ap.add_argument("--out-dir", help="where the JSON and markdown go [$OUT; none if unset]")
    ap.add_argument("--smoke", action="store_true", help="CPU: tiny preset, 2^8 windows, 4 steps")
    a = ap.parse_args(argv)
    a.extra = shlex.split(a.extra)
    lengths = [1 << e for e in a.seq_exps]
    train_bp, val_bp = 16_000_000, (1 << 21) + 4096
    if a.smoke:
        a.presets, lengths, a.max_steps, a.skip_steps = ["tiny"], [256], 4, 1
        a.extra += ["--accelerator", "cpu", "--batch-size", "4", "--val-windows", "4"]
        train_bp, val_bp = 20_000, 5_000
    best = best_hand_tuned(a.calibration) if Path(a.calibration).is_file() else {}
    if not best:
        print(f"warning: no calibration at {a.calibration}; ratios left empty", file=sys.stderr)
    out_dir = a.out_dir or os.environ.get("OUT")
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not a.smoke else "cpu"
    rows, t_start = [], time.time()
    with tempfile.TemporaryDirectory(prefix="bench_defaults_") as tmp:
        work = Path(tmp)
        fasta = Path(a.fasta) if a.fasta else work / "random.fa"
        if not a.fasta:
            random_genome(fasta, train_bp, val_bp)
        from mamba_genome.data.store import ingest

        store = ingest(fasta, work / "genome.mgstore", progress=False).path
        jobs = [(p, L) for p in a.presets for L in lengths]
        for i, (preset, L) in enumerate(jobs):
            left = a.total_s - (time.time() - t_start)
            if left < 20:
                rows.append(row(preset, L, {"tokens_seen": 0}, float("nan"), best, tokens=0.0,
                                note="skipped: --total-s spent"))
                continue
            rows.append(run_one(preset, L, a, store, work, best, left / (len(jobs) - i), log))
            meta = {"device": device, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "calibration": str(a.calibration), "max_steps": a.max_steps, "skip_steps": a.skip_steps,
                    "extra": a.extra, "torch": torch.__version__}
            if out_dir:   # after every run: a cut-off call still leaves its results
                clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in rows]
                Path(out_dir, "bench_defaults.json").write_text(json.dumps({"meta": meta, "rows": clean}, indent=1))
                Path(out_dir, "bench_defaults.md").write_text(markdown(rows, device))
    print(markdown(rows, device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
