"""`finetune`: train a genome classifier on labelled FASTA files and report test metrics.

The great-apes species task of Gu & Dao (2023), Sec. 4.3.4 / App. E.3.4,
for any labelled genomes: class-balanced windows (pick a class, a contig,
a window), a Mamba backbone (from scratch or from a pretrained LM) with a
pooled linear head, AdamW with linear warmup then cosine decay to 1e-6,
and sequence-length warmup (2^14, doubling per epoch) for long windows.

The pieces it shares with ``pretrain``: the windows core (:mod:`mamba_genome.data.windows`),
the schedule module (:mod:`mamba_genome.train.schedule`), the run-directory policy
(:mod:`mamba_genome.train.rundir`) and the training engine (:mod:`mamba_genome.train.engine`:
the Trainer, the best/last export, validation every ``--steps-per-epoch`` optimizer steps,
and per sequence-length stage the micro-batch, gradient accumulation and memory policy for
the device, ``--memory auto|low``). What is its own: the classifier's LightningModule
(:mod:`mamba_genome.train.classify_module`), the labelled windows and the test report.
Many short records (genes, reads, 512-bp windows; split whole, seeded, per class) are trained
and scored whole at their own length, padded, the classifier pooling over the real bases.

Run directory (the policy of :mod:`mamba_genome.train.rundir`: a non-empty
``--out`` needs ``--resume`` or ``--force``, ``--force`` removes only what
a run of ours wrote, one live run per directory; ``metrics.json`` is written
last, so an interrupted run never looks complete)::

    best/, last/            config.json + model.safetensors (labels, seq_len in config "extra"); best by
                            validation accuracy (ties: lower loss), both after each validation
    logs/v<k>/metrics.csv   what the LightningModule logs (train loss and accuracy, val loss and accuracy)
    labels.json             the label list, index = class id
    metrics.json            test_accuracy, test_macro_f1, per_class {label: precision recall f1 support}, ...
    confusion_matrix.tsv    rows = true label, columns = predicted label
    confusion_matrix.png
    curves.csv, curves.png  step, epoch, seq_len, lr, train_loss, val_loss, val_acc per validation
    split.json              classes, train/val/test regions, the fixed val/test windows
    test_predictions.tsv    one row per test window
    kmer_baseline.json      with baseline="kmer"
    last.ckpt, args.json    resumable training state (after each validation, and on SIGTERM/SIGINT);
                            the arguments, with absolute paths (``--resume`` reads them)
    .mamba-genome-run.json .mamba-genome.lock   the run-directory marker and lock
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..train.rundir import RunDir, check_resume_checkpoint, launch_rank, resolve_run_dir

_PRESETS = ("tiny", "1.4m", "7m")
RUN_FILES = ("best", "last", "last.ckpt", "args.json", "labels.json", "metrics.json", "confusion_matrix.tsv",
             "confusion_matrix.png", "curves.csv", "curves.png", "split.json", "test_predictions.tsv",
             "kmer_baseline.json", "logs")
# What --resume may change (everything else comes from the run's args.json).
RESUMABLE_OVERRIDES = ("max_steps", "max_time_s", "devices", "accelerator", "precision", "num_workers", "progress",
                       "memory", "micro_batch_size")


@dataclass
class FinetuneArgs:
    """Everything ``mamba-genome finetune`` needs; validated in ``__post_init__``."""

    # --- data -----------------------------------------------------------------
    classes: tuple = ()  # "LABEL=FASTA" pairs (--class); excludes manifest
    manifest: str | None = None  # TSV 'label fasta [split]' (--manifest)
    val_fraction: float = 0.1  # tail of each contig held out for val when a FASTA has no split
    test_fraction: float = 0.1  # tail of each contig held out for test when a FASTA has no split
    val_windows: int = 64  # fixed validation windows per class
    test_windows: int = 256  # fixed test windows per class
    contig_weighting: str = "length"  # pick a contig weighted by "length" or "uniform"ly
    rc_prob: float = 0.5  # reverse-complement probability of a training window
    store_dir: str | None = None  # where token stores go (default: beside each FASTA, or the cache)
    # --- model ----------------------------------------------------------------
    from_run: str | None = None  # pretrained LM (or classifier) run/model directory (--from); None = from scratch
    preset: str = "tiny"  # model size when training from scratch: tiny | 1.4m | 7m
    pooling: str = "last"  # "last" token (the paper's choice), "mean", "max", "attention" or "meanmax" over positions
    strands: str = "fwd"  # "fwd" pass only, or "both": + the reverse complement's pass, pooled, concatenated
    freeze_backbone: bool = False  # train only the linear head
    # --- optimisation -----------------------------------------------------------
    seq_len: int = 1024  # window length in bases
    batch_size: int = 16
    max_steps: int = 300  # optimiser steps in total
    steps_per_epoch: int | None = None  # default: max_steps / 10 (val + seq-len doubling per epoch)
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-6  # cosine decay floor (paper)
    warmup_steps: int | None = None  # linear LR warmup; default 10% of max_steps
    weight_decay: float = 0.1
    seq_len_warmup: bool = True  # start at seq_len_start and double each epoch up to seq_len
    seq_len_start: int = 1 << 14  # first sequence length of the warmup (paper: 2^14)
    grad_clip: float = 1.0
    max_time_s: float | None = None  # wall-clock budget: the LR schedule is fitted to it (train/callbacks.TimeBudget)
    patience: int | None = None  # stop after this many validations without a better best model (--patience)
    seed: int = 0
    # --- hardware / output ------------------------------------------------------
    out: str | None = None  # run directory [runs/finetune-<timestamp>] (train/rundir.py:resolve_run_dir)
    resume: bool = False  # continue the run in `out` from its last.ckpt
    force: bool = False  # replace an existing run directory (mamba-genome runs only)
    devices: int = 1  # GPUs (or CPU processes) to train on
    memory: str = "auto"  # --memory: auto (fastest micro-batch and policy that fit) | low (least memory)
    micro_batch_size: int | None = None  # hidden expert flag: windows per device per forward pass
    accelerator: str = "auto"  # auto | cpu | gpu
    precision: str | None = None  # Lightning precision; default bf16-mixed on a bf16 GPU, else 32-true
    num_workers: int = 0  # DataLoader worker processes
    baseline: str | None = None  # "kmer": also fit the k-mer logistic-regression baseline
    kmer_k: int = 6  # k of the baseline
    kmer_train_windows: int = 2000  # training windows for the baseline (same sampler as the model)
    progress: bool = True  # progress bars and the split table on stderr
    # Hidden: MambaConfig field overrides (tests use tiny widths); not a CLI flag.
    model_overrides: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.classes = tuple(self.classes or ())
        if self.resume and self.force:
            raise UserError("--resume and --force exclude each other (--force starts the run over)")
        if self.out is None and self.resume:
            raise UserError("--resume needs --out RUN_DIR (the run to continue)")
        if bool(self.classes) == bool(self.manifest):
            raise UserError("give either --class LABEL=FASTA (at least twice) or --manifest TSV, not both or neither")
        if self.preset not in _PRESETS:
            raise UserError(f"--preset must be one of {', '.join(_PRESETS)}, got '{self.preset}'")
        from ..model.classifier import POOLINGS

        if self.pooling not in POOLINGS:
            raise UserError(f"--pooling must be one of {', '.join(POOLINGS)}, got '{self.pooling}'")
        if self.strands not in ("fwd", "both"):
            raise UserError(f"--strands must be 'fwd' or 'both', got '{self.strands}'")
        for flag, v in (("seq-len", self.seq_len), ("batch-size", self.batch_size), ("max-steps", self.max_steps),
                        ("val-windows", self.val_windows), ("test-windows", self.test_windows),
                        ("devices", self.devices), ("seq-len-start", self.seq_len_start),
                        ("kmer-k", self.kmer_k), ("kmer-train-windows", self.kmer_train_windows)):
            if int(v) < 1:
                raise UserError(f"--{flag} must be at least 1, got {v}")
        if self.patience is not None and self.patience < 1:
            raise UserError(f"--patience must be at least 1 validation, got {self.patience}")
        if self.max_time_s is not None and not self.max_time_s > 0:
            raise UserError(f"--max-time must be positive seconds, got {self.max_time_s}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise UserError(f"--steps-per-epoch must be at least 1, got {self.steps_per_epoch}")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps < self.max_steps:
            raise UserError(f"--warmup-steps must be in [0, --max-steps), got {self.warmup_steps}")
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise UserError(f"--lr must be > 0 and at least the minimum LR {self.min_lr}, got {self.lr}")
        for flag, v in (("val-fraction", self.val_fraction), ("test-fraction", self.test_fraction)):
            if not 0 < v < 1:
                raise UserError(f"--{flag} must be in (0, 1), got {v}")
        if self.val_fraction + self.test_fraction >= 1:
            raise UserError("--val-fraction plus --test-fraction must be below 1")
        if not 0 <= self.rc_prob <= 1:
            raise UserError(f"--rc-prob must be in [0, 1], got {self.rc_prob}")
        if self.contig_weighting not in ("length", "uniform"):
            raise UserError(f"--contig-weighting must be 'length' or 'uniform', got '{self.contig_weighting}'")
        if self.baseline not in (None, "kmer"):
            raise UserError(f"--baseline must be 'kmer', got '{self.baseline}'")
        from ..train.memory import MEMORY_MODES

        if self.memory not in MEMORY_MODES:
            raise UserError(f"--memory must be one of {', '.join(MEMORY_MODES)}, got '{self.memory}'")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise UserError(f"--micro-batch-size must be at least 1, got {self.micro_batch_size}")
        if self.kmer_k > 12:
            raise UserError(f"--kmer-k must be at most 12 (4^k features), got {self.kmer_k}")

    @property
    def epoch_steps(self) -> int:
        return self.steps_per_epoch or max(1, math.ceil(self.max_steps / 10))


def _log(args: FinetuneArgs, msg: str) -> None:
    if args.progress:
        print(msg, file=sys.stderr, flush=True)


def _run_inputs(args: FinetuneArgs, sources) -> dict:
    """The paths the run reads, which ``--out`` must not be or lie inside."""
    from ..data.store import default_store_path, is_store

    inputs = {"--from": args.from_run, "--store-dir": args.store_dir}
    for s in sources:
        inputs[f"{s.where} (its token store)"] = s.fasta if is_store(s.fasta) else default_store_path(s.fasta)
    return inputs


def _write_args(path: Path, args: FinetuneArgs) -> None:
    d = {k: v for k, v in asdict(args).items() if k not in ("resume", "force", "progress")}
    d["classes"] = [_absolute_pair(p) for p in args.classes]
    for k in ("manifest", "from_run", "store_dir", "out"):
        if d.get(k):
            d[k] = str(Path(d[k]).resolve())
    from ..train.engine import write_json

    write_json(path, {"args": d})


def _absolute_pair(pair: str) -> str:
    label, sep, fasta = str(pair).partition("=")
    return f"{label}={Path(os.path.expanduser(fasta.strip())).resolve()}" if sep else pair


def resume_args(out, **overrides) -> FinetuneArgs:
    """The arguments of the finetune run in ``out`` (its args.json), for ``--resume``.

    ``overrides`` may set only :data:`RESUMABLE_OVERRIDES` (a longer
    ``max_steps``, other devices); a --class / --manifest given again wins
    over the recorded paths (the files may have moved).
    """
    out = Path(out)
    try:
        saved = json.loads((out / "args.json").read_text())["args"]
    except (OSError, ValueError, KeyError, TypeError):
        if not (out / "last.ckpt").is_file():
            raise UserError(f"--resume: {out} has no last.ckpt to continue from; check --out") from None
        raise UserError(f"--resume: {out}/args.json is missing or unreadable; cannot resume this run") from None
    names = {f.name for f in fields(FinetuneArgs)}
    merged = {k: v for k, v in saved.items() if k in names}
    if overrides.get("classes") or overrides.get("manifest"):
        merged["classes"], merged["manifest"] = overrides.get("classes") or (), overrides.get("manifest")
    for k in RESUMABLE_OVERRIDES:
        if k in overrides and overrides[k] is not None:
            merged[k] = overrides[k]
    merged.update(out=str(out), resume=True, force=False)
    merged["classes"] = tuple(merged.get("classes") or ())
    merged["model_overrides"] = dict(merged.get("model_overrides") or {})
    return FinetuneArgs(**merged)


def _build_model(args: FinetuneArgs, num_classes: int):
    from ..checkpoint import load_model
    from ..model.classifier import MambaClassifier
    from ..model.config import MambaConfig

    from ..model.runtime import split_runtime

    arch_overrides = split_runtime(args.model_overrides)[0]
    if args.from_run:
        pre, meta = load_model(args.from_run, **arch_overrides)
        lm = pre.backbone if meta["model_type"] == "classifier" else pre
        model = MambaClassifier.from_pretrained_lm(lm, num_classes, args.pooling, args.strands)
        source = f"pretrained {meta['model_type']} {args.from_run}"
    else:
        try:
            cfg = MambaConfig.from_preset(args.preset, **arch_overrides)
        except (TypeError, ValueError) as exc:
            raise UserError(f"bad model settings: {exc}") from None
        model = MambaClassifier(cfg, num_classes, args.pooling, strands=args.strands)
        source = f"from scratch ({args.preset})"
    if args.freeze_backbone:
        model.freeze_backbone()
    model.train()
    return model, source


def predict_windows(model, ds, batch_size: int, device, precision: str = "auto") -> np.ndarray:
    """Class probabilities ``[n, C]`` for every window of a :class:`FixedWindowDataset`.

    Through :meth:`MambaClassifier.class_log_probs` (the inference engine's precision policy);
    each batch's windows are read from the stores when the batch starts."""
    model.eval().to(device)

    class _Windows:  # ds.tokens(i) on demand
        def __getitem__(self, i):
            return ds.tokens(i)

    return np.exp(model.class_log_probs(_Windows(), batch_size=batch_size, precision=precision, lengths=ds.lengths))


def classification_metrics(y_true, y_pred, labels: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (scikit-learn)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    ids = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    return {
        "test_accuracy": float(accuracy_score(y_true, y_pred)),
        "test_macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {name: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k])}
                      for k, name in enumerate(labels)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


def _write_text(path: Path, text: str) -> None:
    from ..outputs import atomic_write_text

    atomic_write_text(path, text)


def _write_confusion(run: Path, cm: list[list[int]], labels: list[str]) -> None:
    lines = ["true\\predicted\t" + "\t".join(labels)]
    lines += [labels[i] + "\t" + "\t".join(str(v) for v in row) for i, row in enumerate(cm)]
    _write_text(run / "confusion_matrix.tsv", "\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = np.array(cm)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * n, 1.0 + 0.6 * n))
    ax.imshow(arr, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(arr[i, j]), ha="center", va="center",
                    color="white" if arr[i, j] > arr.max() / 2 else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(run / "confusion_matrix.png", dpi=120)
    plt.close(fig)


def _write_curves(run: Path, curves: list[dict]) -> None:
    cols = ["step", "epoch", "seq_len", "lr", "train_loss", "val_loss", "val_acc", "wall_s"]
    with open(run / "curves.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(curves)
    if not curves:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [c["step"] for c in curves]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(steps, [c["train_loss"] for c in curves], label="train")
    a.plot(steps, [c["val_loss"] for c in curves], label="val")
    a.set_xlabel("step")
    a.set_ylabel("cross-entropy")
    a.legend()
    b.plot(steps, [c["val_acc"] for c in curves], marker="o")
    b.set_xlabel("step")
    b.set_ylabel("val accuracy")
    fig.tight_layout()
    fig.savefig(run / "curves.png", dpi=110)
    plt.close(fig)


def finetune(args: FinetuneArgs) -> dict:
    """Fine-tune a classifier as described by ``args``; return the metrics dict (also ``metrics.json``).

    Example:
        >>> m = finetune(FinetuneArgs(classes=("COL=COL.fa.gz", "N315=N315.fa.gz"), out="runs/sa"))  # doctest: +SKIP
        >>> m["test_accuracy"], m["test_macro_f1"]  # doctest: +SKIP
    """
    from ..checkpoint import read_meta
    from ..data.labels import build_task, parse_class_pairs, parse_manifest

    t_start = time.perf_counter()
    # the other ranks of a multi-process run re-run this command: they take rank 0's directory as it is
    out = resolve_run_dir(args.out, "finetune")
    args = replace(args, out=str(out))
    rundir = RunDir(out, "finetune", RUN_FILES)
    rundir.check(resume=args.resume, force=args.force, inputs={"--from": args.from_run})  # before slow work
    if args.resume:
        check_resume_checkpoint(out / "last.ckpt")
    if args.from_run:
        read_meta(args.from_run)
    sources = parse_manifest(args.manifest) if args.manifest else parse_class_pairs(args.classes)
    rundir.check(resume=args.resume, force=args.force, inputs=_run_inputs(args, sources))
    task = build_task(sources, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                      store_dir=args.store_dir, progress=args.progress)
    task.check_windows(args.seq_len, whole_records=task.whole_records(args.seq_len))
    labels = task.labels
    if args.progress:
        from ..cli.common import print_table

        print_table(task.describe_rows())
    rundir.prepare(resume=args.resume, force=args.force)
    try:  # written in place; metrics.json, written last, marks a finished run
        if launch_rank() == 0 and not args.resume:
            _write_args(out / "args.json", args)
        return _finetune_in(args, task, labels, out, t_start)
    finally:
        rundir.release()


def _finetune_in(args: FinetuneArgs, task, labels: list[str], out: Path, t_start: float) -> dict:
    """Train, test and write the run directory ``out`` (locked by :func:`finetune`)."""
    from ..checkpoint import load_model
    from ..data.labels import BalancedWindowDataset, FixedWindowDataset, write_split_json
    from ..model.runtime import split_runtime
    from ..train.callbacks import StepBudget, StepProgressBar, TimeBudget
    from ..train.classify_module import ClassifyModule
    from ..train.engine import (ExpertOverrides, StagePlanner, StageRuntime, TrainingRun, ValidationSchedule,
                                default_precision, device_memory, resolve_accelerator)
    from ..train.schedule import TrainSchedule, seq_len_for_epoch

    torch.manual_seed(args.seed)
    model, source = _build_model(args, len(labels))
    world = args.devices
    seq_fn = lambda e: seq_len_for_epoch(e, args.seq_len, args.seq_len_start, args.seq_len_warmup)  # noqa: E731
    accelerator, on_gpu = resolve_accelerator(args.accelerator)
    device_type, free = device_memory(on_gpu)
    planner = StagePlanner(model.config, lambda L: args.batch_size, device_type=device_type, free_bytes=free,
                           memory=args.memory, expert=ExpertOverrides(micro_batch_size=args.micro_batch_size,
                                                                      **split_runtime(args.model_overrides)[1]),
                           rows_per_window=2 if args.strands == "both" else 1)  # both: + the reverse complement
    # every epoch runs at its window length's plan (sequence-length warmup shortens the windows, not the
    # batch: a short stage packs more of them into each forward pass); validation is at the target length
    final = planner.plan(args.seq_len)
    epochs = math.ceil(args.max_steps / args.epoch_steps)
    stage_lengths = sorted({seq_fn(e) for e in range(min(epochs, 64))} | {args.seq_len})
    first = planner.plan(stage_lengths[0])
    batch = first.micro_batch * first.accumulate
    # many short records (genes, reads, 512-bp windows): each is trained and scored whole, padded
    whole = task.whole_records(args.seq_len)
    train_ds = BalancedWindowDataset(task.split_regions("train"), len(labels), seq_fn(0),
                                     samples_per_epoch=args.epoch_steps * batch * world,
                                     weighting=args.contig_weighting, rc_prob=args.rc_prob, seed=args.seed,
                                     whole_records=whole)
    val_ds = FixedWindowDataset(task.split_regions("val"), len(labels), args.seq_len, per_class=args.val_windows,
                                whole_records=whole)
    test_ds = FixedWindowDataset(task.split_regions("test"), len(labels), args.seq_len, per_class=args.test_windows,
                                 whole_records=whole)
    _log(args, f"model: {source}, {model.num_parameters():,} parameters, pooling={args.pooling}, strands={args.strands}"
               f"{', backbone frozen' if args.freeze_backbone else ''}; {len(val_ds)} val and {len(test_ds)} test windows "
               f"of {args.seq_len:,} bp")
    extra = {"labels": labels, "seq_len": args.seq_len, "pooling": args.pooling, "strands": args.strands,
             "source": source,
             "task": "classification"}
    warmup = args.warmup_steps if args.warmup_steps is not None else args.max_steps // 10
    schedule = TrainSchedule(total_steps=args.max_steps, final_seq_len=args.seq_len, lr=args.lr,
                             warmup_fraction=warmup / args.max_steps, min_lr_ratio=args.min_lr / args.lr,
                             seq_warmup=False)   # the windows' warmup is per epoch (seq_len_for_epoch)
    module = ClassifyModule(
        model, train_ds, val_ds, seq_len_fn=seq_fn, batch_size=first.micro_batch, accumulate=first.accumulate,
        val_batch_size=final.micro_batch * (2 if on_gpu else 1), plan_for=planner.plan,
        on_stage=StageRuntime(lambda m: _log(args, m), planner), steps_per_epoch=args.epoch_steps,
        schedule=schedule, weight_decay=args.weight_decay, num_workers=args.num_workers, patience=args.patience)
    val_schedule = ValidationSchedule(args.epoch_steps)
    # --max-time fits the schedule's length to the clock (capped at --max-steps), as in pretraining
    budget = (TimeBudget(schedule, args.max_time_s, val_every=args.epoch_steps, val_schedule=val_schedule,
                         max_steps=args.max_steps) if args.max_time_s else StepBudget(schedule))
    run = TrainingRun(
        out, command="finetune", score=lambda m: ClassifyModule.row_score(m.curves[-1]),
        restored_best=lambda m: ClassifyModule.row_score(m.best) if m.best else None,
        extra=lambda m: {**extra, "best": m.best}, val_schedule=val_schedule,
        progress=StepProgressBar(schedule, enabled=args.progress, desc="finetune", fields=_progress_fields,
                                 val_fields=_val_fields),
        budget=[budget], accelerator=accelerator, devices=args.devices,
        precision=args.precision or default_precision(on_gpu), max_steps=args.max_steps,
        accumulate=first.accumulate, grad_clip=args.grad_clip,
        use_distributed_sampler=False,   # the EpochSampler shards over ranks itself
        log_every_n_steps=min(50, args.max_steps // 50))
    trainer = run.trainer
    run.fit(module, resume=args.resume)
    if not trainer.is_global_zero:  # DDP: rank 0 writes the run directory
        return {}
    if not module.curves:
        raise UserError("training ended before any validation; increase --max-steps / --max-time")
    train_seconds = time.perf_counter() - t_start
    best, _ = load_model(out / "best")
    device = "cuda" if on_gpu else "cpu"
    probs = predict_windows(best, test_ds, args.batch_size, device)
    y_true, y_pred = test_ds.labels, probs.argmax(1)
    metrics = classification_metrics(y_true, y_pred, labels)

    _write_text(out / "labels.json", json.dumps(labels, indent=1) + "\n")
    _write_confusion(out, metrics["confusion_matrix"], labels)
    _write_curves(out, module.curves)
    with open(out / "test_predictions.tsv", "w") as fh:
        fh.write("\t".join(["store", "contig", "start", "end", "label", "predicted",
                            *(f"p_{x}" for x in labels)]) + "\n")
        for row, p in zip(test_ds.to_rows(labels), probs):
            fh.write("\t".join([row["store"], row["contig"], str(row["start"]), str(row["end"]), row["label"],
                                labels[int(p.argmax())], *(f"{v:.6f}" for v in p)]) + "\n")
    write_split_json(out / "split.json", task, {
        "seed": args.seed, "seq_len": args.seq_len,
        "val_windows": val_ds.to_rows(labels), "test_windows": test_ds.to_rows(labels)})
    baseline = None
    if args.baseline == "kmer":
        from .kmer_baseline import run_on_datasets

        baseline = run_on_datasets(train_ds, test_ds, n_train=args.kmer_train_windows, seq_len=args.seq_len,
                                   k=args.kmer_k, num_classes=len(labels))
        baseline.pop("predictions")
        _write_text(out / "kmer_baseline.json", json.dumps(baseline, indent=1) + "\n")
    metrics.update({
        "labels": labels, "seq_len": args.seq_len, "steps": trainer.global_step,
        "stopped_early": bool(module.stopped_early),
        "best": module.best, "train_seconds": round(train_seconds, 2),
        "n_test_windows": len(test_ds), "n_val_windows": len(val_ds), "model_source": source,
        "num_parameters": model.num_parameters(), "split": task.methods, "memory": args.memory,
        "micro_batch": final.micro_batch, "accumulate": final.accumulate, "runtime": final.runtime.to_dict(),
        "stages": [planner.plan(L).to_dict() for L in stage_lengths],
        "args": {k: v for k, v in asdict(args).items() if k != "model_overrides"},
    })
    if baseline is not None:
        metrics["kmer_baseline"] = {"accuracy": baseline["accuracy"], "macro_f1": baseline["macro_f1"],
                                    "k": baseline["k"]}
    metrics = run.write_metrics(metrics)
    metrics["out"] = str(out)
    return metrics


def _progress_fields(trainer, pl_module, batch) -> dict:
    m = trainer.callback_metrics
    out = {"seq": str(batch["input_ids"].shape[1])}
    if "train_loss" in m:
        out["loss"] = f"{float(m['train_loss']):.3f}"
    return out


def _val_fields(pl_module) -> dict:
    if not pl_module.curves:
        return {}
    last = pl_module.curves[-1]
    return {"val_loss": f"{last['val_loss']:.3f}", "val_acc": f"{last['val_acc']:.3f}"}


def summary_rows(metrics: dict) -> list[dict]:
    """Rows for the end-of-run table: one per class, then the overall model (and baseline) rows."""
    rows = [{"label": name, "precision": f"{m['precision']:.3f}", "recall": f"{m['recall']:.3f}",
             "f1": f"{m['f1']:.3f}", "support": m["support"]} for name, m in metrics["per_class"].items()]
    rows.append({"label": "model (accuracy / macro-F1)", "precision": "", "recall": "",
                 "f1": f"{metrics['test_accuracy']:.3f} / {metrics['test_macro_f1']:.3f}", "support": metrics["n_test_windows"]})
    if "kmer_baseline" in metrics:
        b = metrics["kmer_baseline"]
        rows.append({"label": f"{b['k']}-mer baseline (accuracy / macro-F1)", "precision": "", "recall": "",
                     "f1": f"{b['accuracy']:.3f} / {b['macro_f1']:.3f}", "support": metrics["n_test_windows"]})
    return rows


__all__ = ["FinetuneArgs", "finetune", "classification_metrics", "predict_windows", "summary_rows"]
