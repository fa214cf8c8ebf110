"""Fine-tuning benchmark: S. aureus strain classification at several window lengths vs a k-mer baseline.

Builds the 5-strain task from a directory of FASTA files (one class per
file, label = file name without .fa[.gz]; each genome's last 20% is test and
the 10% before it val), optionally pretrains a language model on the train
(and, for its validation, val) portions of every class, fine-tunes that LM
(or the preset from scratch) at each ``--seq-lens`` value, and scores the
6-mer logistic-regression baseline on exactly the same train/test windows.
Prints a table and writes ``$OUT/bench_finetune.json`` after every finished
stage, so a run that is cut off still leaves its results.

    PYTHONPATH=. python benchmarks/bench_finetune.py --src .gpudata/saureus --total-minutes 8 \\
        --pretrain-minutes 2.5 --seq-lens 1024,16384 --time-weights 1,2 --pool mean --lr 3e-3      # one GPU
    PYTHONPATH=. python benchmarks/bench_finetune.py --src DIR --from runs/pretrain-x     # fine-tune an existing LM
    PYTHONPATH=. python benchmarks/bench_finetune.py --smoke                             # CPU, < 1 min

Time: ``--total-minutes`` bounds the whole run (data, pretraining, every
fine-tune, evaluation). Pretraining gets ``--pretrain-minutes`` (its whole
stage: data, training, final validation and export); the rest is
shared between the window lengths by ``--time-weights``, re-divided after
each length from the clock, minus an estimate of each fine-tune's fixed
cost (set-up, kernel compilation, final validation, test prediction). A
length that would get less than ``--min-train-seconds`` is skipped and
recorded as skipped. The fine-tune LR cosine follows the clock.

Defaults: mean pooling, because on CPU (tiny models, 5 easy species at
256 bp) last-token pooling from scratch learned far slower than mean pooling
(test acc 0.30 vs 0.67 after 100 steps at lr 1e-2; 0.21 vs 0.39 after 60 at
2e-3), the likely reason the 2026-11-22 run at 2^10 never left ln 5 and
predicted one class; pretraining closed most of that gap. Short runs
learned faster at higher LR (5e-3 > 2e-3 > 1e-3), so the fine-tuning LR is
not what made that run collapse. ``match31`` in the table is exact 31-mer
marker matching (:mod:`kmer_match`): what memorising training sequence could
give on these test windows.

Pretraining data: the task's own train regions (and val regions, used only
for the LM's validation loss) written to one FASTA with a split BED, so no
test base is ever seen before testing. The baseline runs in background
processes while the GPU trains, on the windows ``finetune`` itself uses
(epoch-0 training windows of the same sampler and seed; the fixed test
windows, checked against the run's ``test_predictions.tsv``).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_FASTA = (".fa", ".fa.gz", ".fasta", ".fasta.gz", ".fna", ".fna.gz")
_REPO = Path(__file__).resolve().parent.parent
# Fixed cost of one fine-tune beyond its training budget (set-up, Triton compilation, final validation,
# test prediction, plots), seconds. An estimate: the 2026-11-22 H100 run spent ~2 s beyond a 120 s budget
# before evaluation; test prediction, plots and the first Triton compilation of a shape come on top.
_FT_OVERHEAD_S = 20.0
_PRETRAIN_OVERHEAD_S = 20.0  # FASTA + ingest + Lightning set-up + final validation/export around max_time


def class_pairs(src: Path) -> list[str]:
    files = sorted(p for p in src.iterdir() if p.is_file() and p.name.lower().endswith(_FASTA))
    if len(files) < 2:
        raise SystemExit(f"error: {src} holds {len(files)} FASTA file(s); need one per class, at least 2")
    pairs = []
    for p in files:
        label = p.name
        for suf in sorted(_FASTA, key=len, reverse=True):
            if label.lower().endswith(suf):
                label = label[: -len(suf)]
                break
        pairs.append(f"{label}={p}")
    return pairs


def wilson(acc: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of an accuracy measured on ``n`` windows."""
    if n <= 0:
        return (float("nan"), float("nan"))
    d = 1 + z * z / n
    c = (acc + z * z / (2 * n)) / d
    h = z * math.sqrt(acc * (1 - acc) / n + z * z / (4 * n * n)) / d
    return (round(c - h, 4), round(c + h, 4))


# ------------------------------------------------------------------------------------------ pretraining data


def write_pretrain_data(task, out_dir: Path) -> tuple[Path, Path, dict]:
    """The task's train and val regions as one FASTA (one contig per region) plus a split BED.

    Test regions are left out entirely, so the LM never sees a test base.
    Returns (fasta, bed, {"train": bp, "val": bp}).
    """
    from mamba_genome.data.store import TokenStore
    from mamba_genome.data.tokenizer import decode

    out_dir.mkdir(parents=True, exist_ok=True)
    fa, bed = out_dir / "train_val.fa", out_dir / "split.bed"
    stores: dict[str, TokenStore] = {}
    bp = {"train": 0, "val": 0}
    with open(fa, "w") as fh, open(bed, "w") as bh:
        bh.write("#chrom\tstart\tend\tsplit\n")
        for i, r in enumerate(sorted((r for r in task.regions if r.split in bp), key=lambda r: (r.label, r.split, r.start))):
            st = stores.setdefault(r.store, TokenStore.open(r.store))
            seq = decode(np.asarray(st.tokens(r.contig)[r.start : r.end]))
            name = f"{task.labels[r.label]}_{r.split}_{i}"
            fh.write(f">{name} {r.contig}:{r.start}-{r.end}\n")
            for j in range(0, len(seq), 100):
                fh.write(seq[j : j + 100] + "\n")
            bh.write(f"{name}\t0\t{r.length}\t{r.split}\n")
            bp[r.split] += r.length
    return fa, bed, bp


def run_pretrain(task, work: Path, args, budget_s: float | None) -> dict:
    """Pretrain an LM with :func:`mamba_genome.workflows.pretrain.pretrain` on the task's train regions."""
    from mamba_genome.workflows.pretrain import PretrainArgs, pretrain

    fa, bed, bp = write_pretrain_data(task, work / "pretrain_data")
    L = args.pretrain_seq_len
    batch = max(1, args.pretrain_tokens_per_step // L)
    pa = PretrainArgs(
        fasta=str(fa), split_bed=str(bed), preset=args.preset_used, seq_len=L, batch_size=batch,
        micro_batch_size=batch if args.smoke else max(1, args.pretrain_micro_tokens // L),
        max_steps=args.smoke_steps if args.smoke else None, max_time=None if args.smoke else budget_s,
        lr=args.pretrain_lr, out=str(work / "pretrain"), force=True, accelerator="cpu" if args.smoke else "auto",
        val_windows=4 if args.smoke else 64, num_workers=0 if args.smoke else args.num_workers,
        quiet=not args.progress, seed=args.seed, model_overrides=dict(args.model_overrides))
    t0 = time.perf_counter()
    m = pretrain(pa)
    return {"run_dir": str(work / "pretrain"), "preset": args.preset_used,
            "data": "train regions of every class (their val regions for the LM's validation loss); no test base",
            "train_bp": bp["train"], "val_bp": bp["val"], "seq_len": L,
            "batch_size": batch, "lr": m["lr"], "steps": m["steps"], "tokens_seen": m["tokens_seen"],
            "tokens_per_s": round(m["tokens_per_second"]), "val_bits_per_base": round(m["val_bits_per_base"], 4),
            "best_val_loss": m["best_val_loss"], "wall_s": round(time.perf_counter() - t0, 1),
            "budget_s": budget_s, "precision": m["precision"]}


# ------------------------------------------------------------------------------------------ k-mer baseline


def _limit_threads(n: int) -> None:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:  # pragma: no cover - sklearn depends on threadpoolctl
        pass


def kmer_job(task_dict: dict, seq_len: int, *, test_windows: int, n_train: int, k: int, seed: int) -> dict:
    """The k-mer baseline on the windows ``finetune`` uses at ``seq_len`` (run in a worker process)."""
    from mamba_genome.data.labels import BalancedWindowDataset, ClassificationTask, FixedWindowDataset
    from mamba_genome.workflows.kmer_baseline import run_on_datasets

    t0 = time.perf_counter()
    task = ClassificationTask.from_dict(task_dict)
    C = len(task.labels)
    # Same construction as finetune(): epoch-0 windows are a pure function of (seed, 0, i); rc_prob 0.5,
    # length weighting are finetune's defaults.
    train_ds = BalancedWindowDataset(task.split_regions("train"), C, seq_len, samples_per_epoch=n_train, seed=seed)
    test_ds = FixedWindowDataset(task.split_regions("test"), C, seq_len, per_class=test_windows)
    res = run_on_datasets(train_ds, test_ds, n_train=n_train, seq_len=seq_len, k=k, num_classes=C)
    rows = [(r["store"], r["contig"], r["start"], r["end"]) for r in test_ds.to_rows(task.labels)]
    return {"accuracy": res["accuracy"], "macro_f1": res["macro_f1"], "k": k, "n_train": res["n_train"],
            "n_test": res["n_test"], "seconds": round(time.perf_counter() - t0, 1),
            "predictions": np.asarray(res["predictions"]).tolist(), "test_windows": rows}


def match_job(task_dict: dict, seq_lens, *, per_class: int, k: int, seed: int) -> dict:
    """Exact k-mer marker matching (:mod:`kmer_match`) on the same test windows (run in a worker process)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from kmer_match import match_scores

    from mamba_genome.data.labels import ClassificationTask

    return match_scores(ClassificationTask.from_dict(task_dict), seq_lens, per_class=per_class, k=k, seed=seed)


def _match_row(fut, L: int) -> dict:
    """The marker-matching result for ``L`` if it is ready (it never holds up the GPU run)."""
    if not fut.done() or fut.exception() is not None:
        return {}
    r = fut.result()[L]
    return {"match31_accuracy": r["accuracy"], "match31_macro_f1": r["macro_f1"], "match31_evidence": r["evidence"]}


def _curve(run_dir: Path) -> list[list[float]]:
    """[step, train_loss, val_loss, val_acc] per validation, from the run's curves.csv."""
    import csv

    with open(run_dir / "curves.csv", newline="") as fh:
        return [[int(r["step"]), round(float(r["train_loss"]), 4), round(float(r["val_loss"]), 4),
                 round(float(r["val_acc"]), 4)] for r in csv.DictReader(fh)]


def _same_windows(run_dir: Path, rows) -> bool:
    """Do the run's test windows (test_predictions.tsv) equal the baseline's, in order?"""
    with open(run_dir / "test_predictions.tsv") as fh:
        next(fh)
        got = [tuple(line.split("\t")[:4]) for line in fh]
    return got == [(s, c, str(a), str(b)) for s, c, a, b in rows]


# -------------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--src", default=None,
                    help="directory of FASTA files, one per class [../shared/data/saureus; --smoke: two 8 kbp test slices]")
    ap.add_argument("--seq-lens", default="1024,16384", help="comma-separated window lengths, run in this order")
    ap.add_argument("--total-minutes", type=float, default=8.0, help="wall-time budget of the whole run")
    ap.add_argument("--time-weights", default=None,
                    help="comma-separated shares of the fine-tuning time per length [equal]")
    ap.add_argument("--min-train-seconds", type=float, default=30.0, help="skip a length left with less training time")
    ap.add_argument("--ft-overhead-seconds", type=float, default=_FT_OVERHEAD_S,
                    help="fixed cost of one fine-tune beyond its training time (set-up, compilation, evaluation)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="fixed training minutes per length instead of sharing --total-minutes")
    ap.add_argument("--pretrain-minutes", type=float, default=0.0, help="pretrain an LM first for this long (0: no)")
    ap.add_argument("--from", dest="from_run", default=None, help="fine-tune this pretrained run/model instead")
    ap.add_argument("--pretrain-seq-len", type=int, default=8192)
    ap.add_argument("--pretrain-tokens-per-step", type=int, default=1 << 18)
    ap.add_argument("--pretrain-micro-tokens", type=int, default=1 << 18, help="tokens per forward pass")
    ap.add_argument("--pretrain-lr", type=float, default=8e-3)
    ap.add_argument("--preset", default="1.4m")
    ap.add_argument("--pool", choices=("mean", "last"), default="mean", help="classifier pooling")
    ap.add_argument("--lr", type=float, default=3e-3, help="fine-tuning peak LR")
    ap.add_argument("--warmup-steps", type=int, default=100)
    ap.add_argument("--max-steps", type=int, default=20000, help="step cap per length (the LR schedule's horizon)")
    ap.add_argument("--tokens-per-batch", type=int, default=1 << 17, help="batch size = this / seq_len (at least 1)")
    ap.add_argument("--steps-per-epoch", type=int, default=200, help="steps between validations")
    ap.add_argument("--test-windows", type=int, default=300, help="fixed test windows per class (fewer if the tail is short)")
    ap.add_argument("--val-windows", type=int, default=32, help="fixed val windows per class (best-model selection)")
    ap.add_argument("--kmer-train-windows", type=int, default=1500, help="baseline training windows per class")
    ap.add_argument("--num-workers", type=int, default=None, help="DataLoader workers [min(8, cores - 4) on GPU]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="directory for token stores and runs [default: a temp dir]")
    ap.add_argument("--smoke", action="store_true", help="tiny model, short windows, a few steps per stage (CPU check)")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    if args.num_workers is None:
        args.num_workers = 0 if args.smoke else min(8, max(0, cores - 4))
    args.seq_lens = [64, 128] if args.smoke else [int(x) for x in args.seq_lens.split(",")]
    w = [float(x) for x in args.time_weights.split(",")] if args.time_weights else [1.0] * len(args.seq_lens)
    if len(w) != len(args.seq_lens) or min(w) <= 0:
        ap.error("--time-weights needs one positive share per --seq-lens value")
    args.time_weights = w
    if args.from_run and args.pretrain_minutes:
        ap.error("--from and --pretrain-minutes exclude each other")
    args.preset_used = "tiny" if args.smoke else args.preset
    args.model_overrides = {"d_model": 16, "n_layer": 1} if args.smoke else {}
    args.smoke_steps = 4
    args.progress = not args.smoke
    if args.smoke:  # the pretrain -> fine-tune path, in seconds
        args.pretrain_minutes = args.pretrain_minutes or (0.0 if args.from_run else 0.1)
        args.pretrain_seq_len, args.pretrain_tokens_per_step = 64, 256
        args.min_train_seconds = 0.0
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    deadline = t_start + args.total_minutes * 60

    src = Path(args.src or "../shared/data/saureus")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_finetune-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.smoke and args.src is None:
        # No genomes here: the two 8 kbp S. aureus test slices, copied so no index lands in tests/data.
        src = work / "src"
        src.mkdir(exist_ok=True)
        for name in ("saureus_COL_8k.fa", "saureus_N315_8k.fa"):
            shutil.copy(_REPO / "tests" / "data" / name, src / name)
    if not src.is_dir():
        raise SystemExit(f"error: --src {src} is not a directory")
    pairs = class_pairs(src)

    from mamba_genome.data.labels import build_task, parse_class_pairs

    val_fraction, test_fraction = 0.1, 0.2
    task = build_task(parse_class_pairs(pairs), val_fraction=val_fraction, test_fraction=test_fraction,
                      store_dir=str(work / "stores"), progress=False)
    C = len(task.labels)
    test_windows = 4 if args.smoke else args.test_windows
    kmer_k = 4 if args.smoke else 6
    n_kmer = (20 if args.smoke else args.kmer_train_windows) * C

    # Baselines first, in forked workers (before CUDA is touched), while the GPU trains.
    pool = cf.ProcessPoolExecutor(max_workers=max(1, min(len(args.seq_lens) + 1, (os.cpu_count() or 2) // 4)),
                                  mp_context=mp.get_context("fork"), initializer=_limit_threads, initargs=(2,))
    kmer_futs = {L: pool.submit(kmer_job, task.to_dict(), L, test_windows=test_windows, n_train=n_kmer, k=kmer_k,
                                seed=args.seed) for L in args.seq_lens}
    match_fut = pool.submit(match_job, task.to_dict(), args.seq_lens, per_class=test_windows, k=31, seed=args.seed)

    import torch

    from mamba_genome.cli.common import print_table
    from mamba_genome.workflows.finetune import FinetuneArgs, finetune

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke else "cpu"
    print(f"bench_finetune: {C} classes from {src}; seq_lens {args.seq_lens}; device {device}; "
          f"budget {args.total_minutes:g} min", file=sys.stderr, flush=True)
    out_env = os.environ.get("OUT")
    report = {"benchmark": "finetune", "device": device, "src": str(src), "classes": task.labels,
              "split": {"val_fraction": val_fraction, "test_fraction": test_fraction, "method": task.methods},
              "smoke": args.smoke, "preset": args.preset_used, "pool": args.pool, "lr": args.lr,
              "chance": 1 / C, "argv": sys.argv[1:] if argv is None else list(argv), "torch": torch.__version__,
              "total_minutes": args.total_minutes, "pretrain": None, "results": [], "skipped": [], "status": "started"}

    def write_report(status: str) -> None:
        report["status"] = status
        report["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        if out_env:
            Path(out_env).mkdir(parents=True, exist_ok=True)
            tmp = Path(out_env) / ".bench_finetune.json.tmp"
            tmp.write_text(json.dumps(report, indent=1, default=str) + "\n")
            os.replace(tmp, Path(out_env) / "bench_finetune.json")

    def keep_files(run: Path, name: str, files) -> None:
        if out_env:
            dst = Path(out_env) / "runs" / name
            dst.mkdir(parents=True, exist_ok=True)
            for f in files:
                if (run / f).is_file():
                    shutil.copy(run / f, dst / f.replace("/", "_"))

    from_run = args.from_run
    if args.pretrain_minutes:
        budget = max(10.0, args.pretrain_minutes * 60 - _PRETRAIN_OVERHEAD_S)
        what = f"{args.smoke_steps} steps" if args.smoke else f"{budget:.0f} s"
        print(f"pretraining {args.preset_used} for {what} on the train regions", file=sys.stderr, flush=True)
        write_report("pretraining")
        report["pretrain"] = run_pretrain(task, work, args, budget)
        from_run = report["pretrain"]["run_dir"]
        keep_files(Path(from_run), "pretrain", ["metrics.json", "args.json", "loss_curve.png", "logs/v0/metrics.csv"])
        print(f"pretrained: {report['pretrain']['steps']} steps, {report['pretrain']['tokens_seen']:,} tokens, "
              f"val {report['pretrain']['val_bits_per_base']} bits/base in {report['pretrain']['wall_s']} s",
              file=sys.stderr, flush=True)
        write_report("pretrained")
    report["model_source"] = from_run or f"from scratch ({args.preset_used})"

    for i, L in enumerate(args.seq_lens):
        left = deadline - time.perf_counter() - 5.0
        if args.minutes is not None:
            train_s = args.minutes * 60
        else:
            share = left * args.time_weights[i] / sum(args.time_weights[i:])
            train_s = share - args.ft_overhead_seconds
        if not args.smoke and train_s < args.min_train_seconds:
            report["skipped"].append({"seq_len": L, "reason": f"{max(0.0, train_s):.0f} s of training left"})
            print(f"seq_len {L}: skipped, {max(0.0, train_s):.0f} s of training left", file=sys.stderr, flush=True)
            write_report("running")
            continue
        batch = 4 if args.smoke else max(1, args.tokens_per_batch // L)
        fa = FinetuneArgs(
            classes=tuple(pairs), preset=args.preset_used, from_run=from_run, pooling=args.pool, seq_len=L,
            batch_size=batch, max_steps=args.smoke_steps if args.smoke else args.max_steps,
            max_time_s=None if args.smoke else train_s,
            steps_per_epoch=2 if args.smoke else args.steps_per_epoch, lr=args.lr,
            warmup_steps=None if args.smoke else min(args.warmup_steps, args.max_steps - 1),
            val_fraction=val_fraction, test_fraction=test_fraction, val_windows=2 if args.smoke else args.val_windows,
            test_windows=test_windows, baseline=None, out=str(work / f"run_L{L}"), store_dir=str(work / "stores"),
            seed=args.seed, accelerator="cpu" if args.smoke else "auto", num_workers=args.num_workers,
            progress=args.progress, model_overrides=dict(args.model_overrides))
        write_report(f"fine-tuning seq_len {L}")
        print(f"seq_len {L}: batch {batch}, {'4 steps' if args.smoke else f'{train_s:.0f} s of training'}",
              file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        m = finetune(fa)
        wall = time.perf_counter() - t0
        kmer = kmer_futs[L].result()
        run = Path(m["out"])
        same = _same_windows(run, kmer["test_windows"])
        n = m["n_test_windows"]
        row = {
            "seq_len": L, "batch_size": batch, "steps": m["steps"], "train_budget_s": round(train_s, 1),
            "train_s": m["train_seconds"], "wall_s": round(wall, 1),
            "tokens_per_s": round(m["steps"] * batch * L / max(m["train_seconds"], 1e-9)),
            "test_accuracy": m["test_accuracy"], "test_acc_ci95": wilson(m["test_accuracy"], n),
            "test_macro_f1": m["test_macro_f1"],
            "kmer_accuracy": kmer["accuracy"], "kmer_acc_ci95": wilson(kmer["accuracy"], kmer["n_test"]),
            "kmer_macro_f1": kmer["macro_f1"], "kmer_k": kmer["k"], "kmer_n_train": kmer["n_train"],
            "kmer_seconds": kmer["seconds"], "same_test_windows": same, "n_test_windows": n,
            "per_class_recall": {k: round(v["recall"], 3) for k, v in m["per_class"].items()},
            "predicted_counts": np.asarray(m["confusion_matrix"]).sum(0).tolist(),
            "confusion_matrix": m["confusion_matrix"], "best": m["best"], "num_parameters": m["num_parameters"],
            "model_source": m["model_source"], "curve": _curve(run), **_match_row(match_fut, L),
        }
        report["results"].append(row)
        keep_files(run, f"L{L}", ["metrics.json", "curves.csv", "confusion_matrix.tsv", "curves.png"])
        write_report("running")
        print(f"seq_len {L}: acc {row['test_accuracy']:.3f} F1 {row['test_macro_f1']:.3f} (k-mer {row['kmer_accuracy']:.3f} "
              f"F1 {row['kmer_macro_f1']:.3f}) after {row['steps']} steps; same test windows: {same}",
              file=sys.stderr, flush=True)
    for r in report["results"]:  # marker matching usually finished long ago; fill in rows that ran before it did
        if "match31_accuracy" not in r:
            try:
                match_fut.result(timeout=max(0.0, deadline - time.perf_counter()))
            except (cf.TimeoutError, Exception) as exc:  # a reference column must never lose the run
                report["match31_error"] = repr(exc)
                break
            r.update(_match_row(match_fut, r["seq_len"]))
    pool.shutdown(wait=False, cancel_futures=True)

    rows = [{"seq_len": r["seq_len"], "steps": r["steps"], "train_s": round(r["train_s"]), "test_n": r["n_test_windows"],
             "model_acc": f"{r['test_accuracy']:.3f}", "acc_95%": "{:.2f}-{:.2f}".format(*r["test_acc_ci95"]),
             "model_F1": f"{r['test_macro_f1']:.3f}", "kmer_acc": f"{r['kmer_accuracy']:.3f}",
             "kmer_F1": f"{r['kmer_macro_f1']:.3f}",
             "match31_acc": f"{r['match31_accuracy']:.3f}" if "match31_accuracy" in r else "-",
             "tok/s": f"{r['tokens_per_s']:,}"} for r in report["results"]]
    if rows:
        print_table(rows, file=sys.stdout)
    print(f"chance {1 / C:.3f}; match31 = exact 31-mer marker matching (benchmarks/kmer_match.py); "
          f"model: {report['model_source']}, pool {args.pool}; "
          f"total {time.perf_counter() - t_start:.0f} s", file=sys.stdout)
    write_report("done")
    if out_env:
        print(f"wrote {Path(out_env) / 'bench_finetune.json'}", file=sys.stderr)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
