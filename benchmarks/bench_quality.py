"""Time-to-quality: held-out bits/base after a fixed wall-clock budget of `mamba-genome pretrain` (issue 13, item 6).

For each configuration (the CLI defaults first, then any ``--config``), runs

    mamba-genome pretrain --data STORE --preset 1.4m --seq-len 16384 --max-time 270s \\
        --val-contigs VAL --test-contigs TEST --out RUN [extra args]
    mamba-genome evaluate RUN --fasta TEST.fa --seq-len 16384 --json

on U. maydis (36 contigs, 19.7 Mbp) with whole contigs held out: chr22 for validation, chr21 and
chr23 for test (815 kbp; never seen in training). The genome is ingested once beforehand, so
no configuration pays for it. Reported per configuration: tokens seen, tokens/s (the run's own
figure, and tokens over the whole pretrain command's wall clock), held-out test bits/base (of
``best/``), the final validation bits/base, and the validation curve against wall clock: the
bits/base from the run's ``logs/v0/metrics.csv``, the time at which each validation ended from
``cli_clock.py`` (the same CLI and flags, plus a callback that only records the clock).

Writes ``bench_quality.json``, ``bench_quality.md`` (table + curve) and ``bench_quality.png`` to
$OUT (or ``--out-dir``), and each run's metrics.json, args.json and metrics.csv under
``runs/<label>/`` there (no model weights).

    PYTHONPATH=. python benchmarks/bench_quality.py --fasta .probe/data/Umaydis.fa.gz \\
        --max-time 240s --config 'hand-tuned=--micro-batch-size 32 --no-seq-warmup'      # one GPU, ~9 min
    PYTHONPATH=. python benchmarks/bench_quality.py --smoke                               # CPU, < 1 min
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
CLOCK = Path(__file__).resolve().parent / "cli_clock.py"
sys.path.insert(0, str(CLOCK.parent))
from cli_clock import read_clock  # noqa: E402
DEFAULT_FASTA = ".probe/data/Umaydis.fa.gz"
VAL_CONTIGS = "Umaydis:chr22:1:+:403592"
TEST_CONTIGS = "Umaydis:chr21:1:+:470506,Umaydis:chr23:1:+:344927"
TIME_COLUMNS = ("wall_s", "elapsed_s", "time_s")
SMOKE_FASTA = _REPO / "tests" / "data" / "umaydis_3contigs.fa"


# ------------------------------------------------------------------------------------ arithmetic
def parse_config(spec: str, labelled: bool = True) -> tuple[str, list[str]]:
    """'LABEL=--flag value ...' -> (label, args). Without ``labelled`` (``--extra-args``) the
    whole spec is flags and the label is made from them."""
    label, sep, rest = spec.partition("=") if labelled else ("", "", spec)
    if not sep:
        rest = spec
        label = "_".join(t.lstrip("-") for t in shlex.split(spec)) or "defaults"
    label = label.strip()
    if not label or any(c in label for c in "/\\"):
        raise ValueError(f"bad configuration label in {spec!r}")
    return label, shlex.split(rest)


def read_curve(csv_path: str | os.PathLike, clock=(), t0: float | None = None) -> list[dict]:
    """Validation points of a Lightning CSV log, in step order:
    [{"step", "seconds", "wall_s", "train_s", "tokens", "val_bpb"}].

    ``wall_s``: seconds from ``t0`` (the pretrain command's start) to the end of that validation,
    from ``clock`` (:func:`cli_clock.read_clock` events), or the log's own wall-clock column
    (TIME_COLUMNS) when it has one; ``train_s``: the training clock of the last training row at
    or before the validation (tokens_seen / tokens_per_s: validation and start-up excluded).
    ``seconds`` is ``wall_s`` where known, else ``train_s``.
    """
    rows = []
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: v for k, v in row.items() if v not in (None, "")})

    def num(row, key):
        try:
            return float(row[key])
        except (KeyError, TypeError, ValueError):
            return None

    time_col = next((c for c in TIME_COLUMNS if any(c in r for r in rows)), None)
    # the clock's k-th validation is the log's k-th (Lightning logs it at global_step - 1)
    val_end = [t - t0 for t, event, _, _ in clock if event == "val"] if t0 is not None else []
    train = []   # (step, tokens, train seconds)
    for r in rows:
        step, tok, tps = num(r, "step"), num(r, "tokens_seen"), num(r, "tokens_per_s")
        if step is not None and tok is not None:
            train.append((step, tok, tok / tps if tps else None))
    train.sort()
    vals = sorted((num(r, "step"), i, r) for i, r in enumerate(rows)
                  if num(r, "val/bpb") is not None and num(r, "step") is not None)
    out = []
    for k, (step, _, r) in enumerate(vals):
        before = [t for t in train if t[0] <= step] or train[:1]
        _, tokens, train_s = before[-1] if before else (step, None, None)
        wall = val_end[k] if len(val_end) == len(vals) else (num(r, time_col) if time_col else None)
        out.append({"step": int(step), "seconds": wall if wall is not None else train_s, "wall_s": wall,
                    "train_s": train_s, "tokens": tokens, "val_bpb": num(r, "val/bpb")})
    return out


def clock_name(results: list[dict]) -> str:
    """What the curves' seconds are: "wall clock" when every point has one."""
    pts = [p for r in results for p in r.get("curve") or []]
    return "wall clock" if pts and all(p.get("wall_s") is not None for p in pts) else "training clock"


def summarize(label: str, extra: list[str], metrics: dict, evaluation: dict, curve: list[dict],
              pretrain_wall_s: float) -> dict:
    """One configuration's row of the result."""
    tokens = int(metrics["tokens_seen"])
    return {
        "label": label, "extra_args": extra, "tokens_seen": tokens, "steps": int(metrics["steps"]),
        "tokens_per_s": float(metrics["tokens_per_second"]),
        "tokens_per_s_wall": tokens / pretrain_wall_s if pretrain_wall_s > 0 else float("nan"),
        "pretrain_wall_s": pretrain_wall_s, "run_wall_s": metrics.get("wall_seconds"),
        "train_s": metrics.get("train_seconds"),
        "val_bpb": float(metrics["val_bits_per_base"]), "best_step": metrics.get("best_step"),
        "val_fraction": metrics.get("val_fraction"),
        "test_bpb": float(evaluation["bits_per_base"]), "test_bases": int(evaluation["bases"]),
        "curve": curve,
    }


def rate(v) -> str:
    """tokens/s for a table: '2.840 M' or '24.4 k'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v / 1e6:.3f} M" if v >= 1e5 else f"{v / 1e3:.1f} k"


def _fmt(v, spec, none="-"):
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown(results: list[dict], meta: dict) -> str:
    """The table (one row per configuration) and the validation curves, as markdown."""
    lines = [f"Time-to-quality on {meta.get('genome', '?')}: {meta.get('preset')} at --seq-len "
             f"{meta.get('seq_len')}, --max-time {meta.get('max_time')}, {meta.get('device', '?')}, "
             f"{meta.get('date', '?')}. Test: {meta.get('test_contigs')} ({_fmt(meta.get('test_bases'), ',')} "
             f"bases); val: {meta.get('val_contigs')}.", "",
             "| configuration | extra args | steps | tokens seen | tokens/s (run) | tokens/s (wall) "
             "| val bits/base | held-out test bits/base |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r.get("error"):
            lines.append(f"| {r['label']} | `{' '.join(r['extra_args'])}` | failed: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['label']} | `{' '.join(r['extra_args']) or '(defaults)'}` | {r['steps']:,} "
                     f"| {r['tokens_seen'] / 1e6:,.1f} M | {rate(r['tokens_per_s'])} "
                     f"| {rate(r['tokens_per_s_wall'])} | {r['val_bpb']:.4f} | **{r['test_bpb']:.4f}** |")
    lines += ["", f"Validation bits/base against time (s: {clock_name(results)} from the start of "
              "the pretrain command):", ""]
    for r in results:
        if r.get("error") or not r["curve"]:
            continue
        pts = ", ".join(f"{_fmt(p['seconds'], '.0f', '?')} s: {p['val_bpb']:.4f}" for p in r["curve"])
        lines.append(f"- {r['label']}: {pts}")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], png: Path, title: str) -> Path | None:
    """Validation bits/base against time per configuration, the test figure as a marker at the end."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    drawn = False
    for r in results:
        pts = [p for p in r.get("curve") or [] if p["seconds"] is not None]
        if r.get("error") or not pts:
            continue
        line, = ax.plot([p["seconds"] for p in pts], [p["val_bpb"] for p in pts], marker="o", ms=3,
                        label=f"{r['label']} (test {r['test_bpb']:.3f})")
        ax.plot([pts[-1]["seconds"]], [r["test_bpb"]], marker="*", ms=10, color=line.get_color())
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel(f"seconds ({clock_name(results)})")
    ax.set_ylabel("bits per base")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return png


# ----------------------------------------------------------------------------------------- runs
def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "mamba_genome", *map(str, args)]


def write_test_fasta(fasta: Path, names: list[str], dest: Path) -> int:
    """The held-out contigs of ``fasta`` as their own FASTA (for `evaluate`); returns the bases written."""
    from mamba_genome.data.fasta import iter_fasta_records

    want, n = set(names), 0
    with open(dest, "w") as fh:
        for name, seq in iter_fasta_records(fasta):
            if name in want:
                text = seq.decode() if isinstance(seq, (bytes, bytearray)) else str(seq)
                fh.write(f">{name}\n")
                for i in range(0, len(text), 80):
                    fh.write(text[i:i + 80] + "\n")
                n += len(text)
                want.discard(name)
    if want:
        raise SystemExit(f"error: {fasta} has no contig(s) {', '.join(sorted(want))}")
    return n


def run_config(label, extra, a, store: Path, test_fa: Path, work: Path, out_dir: Path, log) -> dict:
    run = work / label
    budget = ["--max-time", a.max_time] if a.max_time else []
    cli = ["pretrain", "--data", store, "--preset", a.preset, "--seq-len", a.seq_len, *budget,
           "--val-contigs", a.val_contigs, "--test-contigs", a.test_contigs, "--out", run, *a.common_args, *extra]
    clock = work / f"{label}.clock"
    cmd = [sys.executable, str(CLOCK), str(clock), *map(str, cli)]   # the CLI, plus a clock callback
    keep = out_dir / "runs" / label
    keep.mkdir(parents=True, exist_ok=True)
    log(f"[{label}] mamba-genome {shlex.join(map(str, cli))}")
    t0, t0_unix = time.perf_counter(), time.time()
    with open(keep / "pretrain_stderr.txt", "w") as err:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=a.timeout_s)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        tail = (keep / "pretrain_stderr.txt").read_text().strip().splitlines()[-1:] or ["?"]
        return {"label": label, "extra_args": extra, "error": f"pretrain exit {p.returncode}: {tail[0][:200]}"}
    ev_cmd = _cli("evaluate", run, "--fasta", test_fa, "--seq-len", a.eval_seq_len or a.seq_len, "--json", "-q",
                  *(["--max-windows", a.eval_max_windows] if a.eval_max_windows else []))
    ev = subprocess.run(ev_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=a.timeout_s)
    if ev.returncode != 0:
        why = f"evaluate exit {ev.returncode}: {ev.stderr.strip()[-200:]}"
        return {"label": label, "extra_args": extra, "error": why}
    evaluation = json.loads(ev.stdout)
    evaluation.pop("per_record", None)
    metrics = json.loads((run / "metrics.json").read_text())
    csvs = sorted((run / "logs").glob("v*/metrics.csv"))
    curve = read_curve(csvs[-1], read_clock(clock), t0_unix) if csvs else []
    for name in ("metrics.json", "args.json", "loss_curve.png"):
        if (run / name).is_file():
            shutil.copy2(run / name, keep / name)
    if csvs:
        shutil.copy2(csvs[-1], keep / "metrics.csv")
    (keep / "evaluate.json").write_text(json.dumps(evaluation, indent=1))
    row = summarize(label, extra, metrics, evaluation, curve, wall)
    log(f"[{label}] {row['tokens_seen'] / 1e6:.2f} M tokens, {rate(row['tokens_per_s'])} tokens/s, "
        f"val {row['val_bpb']:.4f}, test {row['test_bpb']:.4f} bits/base ({wall:.0f} s)")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fasta", default=DEFAULT_FASTA, help=f"genome FASTA [{DEFAULT_FASTA}]")
    ap.add_argument("--preset", default="1.4m")
    ap.add_argument("--seq-len", type=int, default=16384)
    ap.add_argument("--max-time", default="270s", help="pretrain --max-time of every configuration")
    ap.add_argument("--val-contigs", default=VAL_CONTIGS)
    ap.add_argument("--test-contigs", default=TEST_CONTIGS)
    ap.add_argument("--config", action="append", default=[], metavar="LABEL=ARGS",
                    help="an extra configuration: pretrain flags after the defaults, e.g. "
                         "'hand-tuned=--micro-batch-size 32 --no-seq-warmup' (repeatable)")
    ap.add_argument("--extra-args", action="append", default=[], metavar="ARGS",
                    help="an extra configuration labelled by its flags (repeatable)")
    ap.add_argument("--no-defaults", action="store_true", help="skip the plain-defaults configuration")
    ap.add_argument("--common-args", default="", help="flags for every configuration (e.g. '--num-workers 8')")
    ap.add_argument("--eval-seq-len", type=int, help="evaluate --seq-len [--seq-len]")
    ap.add_argument("--eval-max-windows", type=int)
    ap.add_argument("--timeout-s", type=float, default=900.0, help="per command")
    ap.add_argument("--out-dir", help="results directory [$OUT, else bench_quality_out]")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny model, tests/data slice, < 1 min")
    a = ap.parse_args(argv)
    if a.smoke:
        a.fasta, a.preset, a.seq_len = str(SMOKE_FASTA), "tiny", 128
        a.val_contigs, a.test_contigs = "Umaydis:chr02:1:+:1879391", "Umaydis:chr03:1:+:1633472"
        a.max_time = None   # a step budget: the CPU's first step (numba compilation) takes seconds
        a.common_args += " --max-steps 4 --val-every 2 --val-windows 4 --batch-size 4 --accelerator cpu"
    a.common_args = shlex.split(a.common_args)
    configs = [] if a.no_defaults else [("defaults", [])]
    configs += [parse_config(s) for s in a.config] + [parse_config(s, labelled=False) for s in a.extra_args]
    if len({c[0] for c in configs}) != len(configs):
        raise SystemExit("error: two configurations have the same label")
    fasta = Path(a.fasta)
    if not fasta.is_file():
        raise SystemExit(f"error: {fasta}: no such FASTA; pass --fasta (U. maydis: Umaydis.fa.gz)")
    out_dir = Path(a.out_dir or os.environ.get("OUT") or "bench_quality_out")
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not a.smoke else "cpu"
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_quality_") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        store = work / "genome.mgstore"
        from mamba_genome.data.store import ingest

        ingest(fasta, store, progress=False)
        test_fa = work / "test.fa"
        test_bases = write_test_fasta(fasta, a.test_contigs.split(","), test_fa)
        log(f"ingested {fasta} and wrote {test_bases:,} test bases in {time.perf_counter() - t0:.0f} s")
        meta = {"genome": fasta.name, "preset": a.preset, "seq_len": a.seq_len, "max_time": a.max_time,
                "val_contigs": a.val_contigs, "test_contigs": a.test_contigs, "test_bases": test_bases,
                "device": device, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "common_args": a.common_args, "torch": torch.__version__}
        for label, extra in configs:
            try:
                results.append(run_config(label, extra, a, store, test_fa, work, out_dir, log))
            except subprocess.TimeoutExpired:
                results.append({"label": label, "extra_args": extra, "error": f"timed out after {a.timeout_s:.0f} s"})
            # write after every configuration: a cut-off call still leaves its results
            (out_dir / "bench_quality.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
            (out_dir / "bench_quality.md").write_text(markdown(results, meta))
            try:
                plot(results, out_dir / "bench_quality.png",
                     f"{a.preset}, {a.seq_len:,} bp windows, {a.max_time or 'step budget'}, {device}")
            except Exception as exc:  # a plot must never lose the numbers
                log(f"warning: no plot ({exc})")
    print(markdown(results, meta))
    return 0 if all(not r.get("error") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
