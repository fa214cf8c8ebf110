"""The four classifiers scored on every task's windows: k-mer LR, a small CNN, a frozen probe, fine-tuning.

All four see exactly the windows of a :class:`~benchmarks.tasks.common.WindowSet`: fit on
``train``, choose hyper-parameters on ``val``, score once on ``test``.

``kmer``      k-mer frequencies (k in 4..8 and the L2 strength C chosen on val), standardised,
              logistic regression (scikit-learn). Sparse features, so k=8 fits in memory.
``cnn``       the GenomicBenchmarks baseline kind (Gresova et al. 2023): one-hot input, three
              Conv1d-BatchNorm-ReLU blocks with max-pooling, global mean+max pooling, a linear
              head; AdamW, early stopping on val accuracy (patience 3, at most 12 epochs), best
              epoch restored.
``probe``     our model frozen: ``mamba_genome.load(model).embed(windows, pool, layer)`` of the
              forward windows and of their reverse complements, at 4 layers mean-pooled and the
              last layer last-token pooled; logistic regression on train; the best (layer, pool,
              forward or forward+RC average, C) on val.
``finetune``  ``mamba-genome finetune`` (a subprocess) on the task's ``manifest.tsv`` (one FASTA
              record per window, explicit splits, so its val/test windows are ours), from a
              pretrained model or a preset: mean pooling (:data:`POOLING_BY_TASK` where not) over
              both strands' passes (``--strands both``), no reverse-complement augmentation on the oriented tasks (:data:`ORIENTED`),
              class-balanced draws, batch and steps sized by the task (:func:`finetune_plan`), the
              best-on-val model scored; its test predictions are mapped back to our windows.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mamba_genome.data.tokenizer import A, T

from .common import WindowSet
from .metrics import majority_rate, score_predictions

KS = (4, 5, 6, 7, 8)
CHANNELS = (16, 16, 32)  # CNN conv widths
CS = (0.01, 0.1, 1.0)


# ------------------------------------------------------------------------------ k-mer


def kmer_matrix(tokens: np.ndarray, k: int):
    """Token windows ``[n, L]`` -> sparse k-mer frequencies ``[n, 4**k]`` (k-mers with N skipped)."""
    from scipy import sparse

    tok = np.asarray(tokens, dtype=np.int64)
    n, L = tok.shape
    ok = (tok >= A) & (tok <= T)
    base = np.where(ok, tok - A, 0)
    m = L - k + 1
    code = np.zeros((n, m), dtype=np.int64)
    valid = np.ones((n, m), dtype=bool)
    for j in range(k):
        code = code * 4 + base[:, j:j + m]
        valid &= ok[:, j:j + m]
    rows = np.broadcast_to(np.arange(n)[:, None], (n, m))[valid]
    X = sparse.coo_matrix((np.ones(len(rows), np.float32), (rows, code[valid])), shape=(n, 4 ** k)).tocsr()
    X.sum_duplicates()
    totals = np.asarray(X.sum(axis=1)).ravel()
    return sparse.diags(1.0 / np.maximum(totals, 1)).dot(X).astype(np.float32).tocsr()


def _fit_lr(X_train, y_train, C: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(with_mean=False), LogisticRegression(C=C, max_iter=2000, random_state=seed))
    clf.fit(X_train, y_train)
    return clf


def kmer_stage(ws: WindowSet, *, ks=KS, cs=CS, seed: int = 0, log=print) -> dict:
    """Best k (at the middle C), then best C at that k, both on val; the chosen fit is scored on test."""
    t0 = time.perf_counter()
    (xtr, ytr), (xva, yva), (xte, yte) = ws.part("train"), ws.part("val"), ws.part("test")
    grid = []
    best = None
    c0 = cs[len(cs) // 2]  # k is chosen at the middle C, then C at the chosen k
    for k in ks:
        Xtr, Xva = kmer_matrix(xtr, k), kmer_matrix(xva, k)
        for C in (c0,):
            clf = _fit_lr(Xtr, ytr, C, seed)
            acc = float(np.mean(clf.predict(Xva) == yva))
            grid.append({"k": k, "C": C, "val_accuracy": acc})
            log(f"  kmer k={k} C={C}: val {acc:.3f}")
            if best is None or acc > best[0]:
                best = (acc, k, C, clf)
    k = best[1]
    Xtr, Xva = kmer_matrix(xtr, k), kmer_matrix(xva, k)
    for C in cs:  # then the regularisation strength at the chosen k
        if C == best[2]:
            continue
        clf = _fit_lr(Xtr, ytr, C, seed)
        acc = float(np.mean(clf.predict(Xva) == yva))
        grid.append({"k": k, "C": C, "val_accuracy": acc})
        log(f"  kmer k={k} C={C}: val {acc:.3f}")
        if acc > best[0]:
            best = (acc, k, C, clf)
    acc, k, C, clf = best
    Xte = kmer_matrix(xte, k)
    proba = clf.predict_proba(Xte)
    out = score_predictions(yte, proba.argmax(1), proba, len(ws.labels))
    out.update({"method": f"{k}-mer frequencies + logistic regression (C={C})", "chosen": {"k": k, "C": C},
                "val_accuracy": acc, "grid": grid, "seconds": round(time.perf_counter() - t0, 1)})
    return out


# -------------------------------------------------------------------------------- CNN


def _cnn(num_classes: int, seq_len: int):
    import torch
    from torch import nn

    # Max-pool factor per block: long windows are pooled harder so an epoch stays affordable on a CPU
    # (receptive field of the last block: 9 + 8p + 8p^2 bases, p = 2: 57, 4: 169, 8: 585).
    pool = 8 if seq_len >= 4096 else 4 if seq_len >= 512 else 2

    class SmallCNN(nn.Module):
        """One-hot [B, 4, L] -> 3 x (Conv1d k=9, BatchNorm, ReLU, MaxPool) -> mean+max pool -> linear.

        Small widths (16, 16, 32): the GenomicBenchmarks baseline is a CNN of this size, and an epoch
        over every task has to fit a shared CPU.
        """

        def __init__(self):
            super().__init__()
            self.pool = pool
            layers, c_in = [], 4
            for c_out in CHANNELS:
                layers += [nn.Conv1d(c_in, c_out, 9, padding=4), nn.BatchNorm1d(c_out), nn.ReLU(), nn.MaxPool1d(pool)]
                c_in = c_out
            self.body = nn.Sequential(*layers)
            self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * c_in, num_classes))

        def forward(self, tokens):  # tokens: (B, L) int
            x = torch.nn.functional.one_hot((tokens - A).clamp(0, 4), 5)[..., :4].float()  # N -> all zero
            x = x * ((tokens >= A) & (tokens <= T)).unsqueeze(-1)
            h = self.body(x.transpose(1, 2))  # (B, C, L')
            return self.head(torch.cat([h.mean(-1), h.amax(-1)], dim=1))

    return SmallCNN()


def cnn_stage(ws: WindowSet, *, seed: int = 0, max_epochs: int = 12, patience: int = 3, batch_size: int = 64,
              lr: float = 1e-3, threads: int | None = None, max_time_s: float | None = None, log=print) -> dict:
    """Train the small CNN on train, early-stop on val accuracy, score the best epoch on test.

    ``max_time_s``: no new epoch starts when another one (as long as the slowest so far) would end
    past this budget; the result then records ``stopped_by`` = "time".
    """
    import torch

    t0 = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    (xtr, ytr), (xva, yva), (xte, yte) = ws.part("train"), ws.part("val"), ws.part("test")
    model = _cnn(len(ws.labels), ws.seq_len)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)

    def predict(x):
        model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 256):
                out.append(torch.softmax(model(torch.from_numpy(x[i:i + 256].astype(np.int64))), -1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(ws.labels)))

    best, best_state, bad, curve = -1.0, None, 0, []
    stopped_by, slowest = "max_epochs", 0.0
    for epoch in range(max_epochs):
        t_epoch = time.perf_counter()
        model.train()
        order = rng.permutation(len(xtr))
        loss_sum = 0.0
        for i in range(0, len(order), batch_size):
            j = order[i:i + batch_size]
            if len(j) < 2:  # BatchNorm needs two samples
                continue
            logits = model(torch.from_numpy(xtr[j].astype(np.int64)))
            loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(ytr[j]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(j)
        acc = float(np.mean(predict(xva).argmax(1) == yva))
        curve.append({"epoch": epoch, "train_loss": round(loss_sum / len(order), 4), "val_accuracy": acc})
        log(f"  cnn epoch {epoch}: train loss {loss_sum / len(order):.4f}, val {acc:.3f}")
        if acc > best:
            best, bad = acc, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                stopped_by = "early_stopping"
                break
        slowest = max(slowest, time.perf_counter() - t_epoch)
        if max_time_s is not None and time.perf_counter() - t0 + slowest > max_time_s and epoch + 1 < max_epochs:
            stopped_by = "time"
            break
    model.load_state_dict(best_state)
    proba = predict(xte)
    out = score_predictions(yte, proba.argmax(1), proba, len(ws.labels))
    out.update({"method": f"CNN: 3 conv blocks ({', '.join(map(str, CHANNELS))} ch, k=9, max-pool {model.pool}) "
                          "+ global mean/max pool",
                "chosen": {"epoch": int(np.argmax([c["val_accuracy"] for c in curve]))},
                "epochs_run": len(curve), "max_epochs": max_epochs, "patience": patience, "stopped_by": stopped_by,
                "val_accuracy": best,
                "curve": curve,
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "seconds": round(time.perf_counter() - t0, 1)})
    return out


# ------------------------------------------------------------------------------ probe


def probe_layers(n_layer: int) -> list[int]:
    """The blocks probed by default: a third, half, two thirds of the way and the last (12 layers: 4, 6, 8, 11).

    ``embed(layer=k)`` stops the forward pass after block k, so these cost 2.75 full passes, not 4.
    """
    return sorted({n_layer // 3, n_layer // 2, (2 * n_layer) // 3, n_layer - 1})


def _stratified_cap(y: np.ndarray, cap: int | None, rng) -> np.ndarray:
    """Indices of at most ``cap`` rows of ``y``, each class keeping its share (all rows when ``cap`` is None)."""
    if cap is None or len(y) <= cap:
        return np.arange(len(y))
    keep = []
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        keep.append(rng.choice(idx, max(1, round(cap * len(idx) / len(y))), replace=False))
    return np.sort(np.concatenate(keep))


def probe_stage(ws: WindowSet, model_path: str, *, layers=None, pools=("mean", "last"), last_layers=None,
                cs=(0.1, 1.0), max_train: int | None = 4000, seed: int = 0, device=None,
                batch_size: int | None = None, log=print) -> dict:
    """Frozen embeddings, forward and reverse complement; logistic regression per setting; best on val.

    Settings: ``(layer, pool, view, C)`` with ``layer`` in ``layers`` (default :func:`probe_layers`)
    for mean pooling and in ``last_layers`` (default: the final block) for last-token pooling;
    ``view`` is the forward strand's embedding (``fwd``) or its average with the reverse
    complement's (``fwd+rc``, the same window read from the other strand; ``embed --rc-average``);
    ``C`` the L2 strength. At most ``max_train`` training windows (stratified, seeded) are embedded.
    """
    import mamba_genome
    from mamba_genome.data.tokenizer import COMPLEMENT

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    gm = mamba_genome.load(model_path, device=device)
    layers = probe_layers(gm.n_layer) if layers is None else list(layers)
    last_layers = [gm.n_layer - 1] if last_layers is None else list(last_layers)
    settings = [(layer, pool) for pool in pools for layer in (layers if pool == "mean" else last_layers)]
    parts = {s: ws.part(s) for s in ("train", "val", "test")}
    keep = _stratified_cap(parts["train"][1], max_train, rng)
    parts["train"] = (parts["train"][0][keep], parts["train"][1][keep])
    x = np.concatenate([parts[s][0] for s in parts]).astype(np.int64)  # one embed call per setting and strand
    x_rc = np.ascontiguousarray(COMPLEMENT[x][:, ::-1]).astype(np.int64)
    bounds = np.cumsum([0] + [len(parts[s][0]) for s in parts])
    best, grid = None, []
    for layer, pool in settings:
        fwd = gm.embed(x, pool=pool, layer=layer, batch_size=batch_size)
        rc = gm.embed(x_rc, pool=pool, layer=layer, batch_size=batch_size)
        emb = {s: {"fwd": fwd[a:b], "fwd+rc": (fwd[a:b] + rc[a:b]) / 2} for s, a, b in zip(parts, bounds, bounds[1:])}
        for view in ("fwd", "fwd+rc"):
            for C in cs:
                clf = _fit_lr(emb["train"][view], parts["train"][1], C, seed)
                acc = float(np.mean(clf.predict(emb["val"][view]) == parts["val"][1]))
                grid.append({"layer": layer, "pool": pool, "view": view, "C": C, "val_accuracy": acc})
                log(f"  probe layer {layer} pool {pool} {view} C={C}: val {acc:.3f}")
                if best is None or acc > best[0]:
                    best = (acc, layer, pool, view, C, clf.predict_proba(emb["test"][view]))
    acc, layer, pool, view, C, proba = best
    out = score_predictions(parts["test"][1], proba.argmax(1), proba, len(ws.labels))
    out.update({"method": f"frozen {Path(model_path).name}, layer {layer}, {pool}-pooled, {view} + logistic "
                          f"regression (C={C})",
                "chosen": {"layer": layer, "pool": pool, "view": view, "C": C}, "val_accuracy": acc, "grid": grid,
                "model": str(model_path), "train_windows": int(len(keep)),
                "seconds": round(time.perf_counter() - t0, 1)})
    return out


# --------------------------------------------------------------------------- finetune


#: Tasks whose windows have a fixed orientation, so reverse-complement augmentation would mix two
#: different questions: start codons and splice donors are cut in gene / transcript orientation (the
#: signal sits on one strand, on one side of the centre), the order controls insert their motifs on
#: the forward strand (a reverse complement turns "M1 before M2" into "rc(M2) before rc(M1)").
#: The others (genome orientation, genes on either strand; species, strains) are strand-symmetric.
ORIENTED = frozenset({"start_codon", "splice_donor", "order_short", "order_long"})

#: The fine-tuning classifier's pooling where it is not ``"mean"`` (none today). Mean and max concatenated
#: (``meanmax``) won on the position-bound tasks ``splice_donor`` and ``start_codon`` at equal steps with small
#: from-scratch models on CPU (:mod:`.pooling_sweep`; BENCHMARKS.md section 9) and lost on ``coding``; the
#: suite's GPU rows were measured with the mean (start_codon 0.998 with it), so a task goes in here only once
#: a GPU call shows its pooling wins (``ABLATE=splice_donor ABLATE_POOLING=meanmax`` in run_gpu.sh).
POOLING_BY_TASK: dict[str, str] = {}


@dataclass
class FinetunePlan:
    """The ``mamba-genome finetune`` settings of one task, sized by its windows (:func:`finetune_plan`)."""

    batch_size: int
    max_steps: int  # at most this many optimiser steps (``max_epochs`` passes over the train windows)
    val_every: int  # ``--steps-per-epoch``: steps between validations (the best-on-val model is kept)
    warmup_steps: int
    lr: float = 1e-3
    pooling: str = "mean"
    max_time_s: float | None = None
    rc_prob: float = 0.5  # --rc-prob: 0 for the ORIENTED tasks
    strands: str = "both"  # --strands: the classifier pools the forward and the reverse-complement pass


def task_pooling(name: str) -> str:
    """The classifier pooling of task ``name``: :data:`POOLING_BY_TASK`, else ``"mean"``."""
    return POOLING_BY_TASK.get(name, "mean")


def finetune_plan(ws: WindowSet, *, max_time_s: float | None = None, max_epochs: int = 30, lr: float = 1e-3,
                  batch_size: int | None = None, max_steps: int | None = None, strands: str = "both",
                  rc_prob: float | None = None, pooling: str | None = None) -> FinetunePlan:
    """Batch by window length (64 up to 1 kbp, 32 up to 4 kbp, else 16); ``max_epochs`` passes at most;
    two validations per pass over the train windows (at least every 25 steps); warmup 5% (<= 100 steps);
    no reverse-complement augmentation for the :data:`ORIENTED` tasks (``rc_prob`` None), else 0.5;
    the pooling of :func:`task_pooling` (``pooling`` None)."""
    L = ws.seq_len
    bs = batch_size or (64 if L <= 1024 else 32 if L <= 4096 else 16)
    per_pass = max(1, int((ws.split == "train").sum()) // bs)
    steps = max_steps or max(200, max_epochs * per_pass)
    if rc_prob is None:
        rc_prob = 0.0 if ws.name in ORIENTED else 0.5
    return FinetunePlan(batch_size=bs, max_steps=steps, val_every=max(25, per_pass // 2),
                        warmup_steps=min(100, steps // 20), lr=lr, max_time_s=max_time_s, rc_prob=rc_prob,
                        strands=strands, pooling=pooling or task_pooling(ws.name))


def finetune_argv(ws: WindowSet, task_dir: str | Path, run_dir: str | Path, plan: FinetunePlan, *,
                  model_path: str | None = None, preset: str = "tiny", accelerator: str = "auto", seed: int = 0,
                  model_overrides: dict | None = None) -> list[str]:
    """Arguments of ``mamba-genome finetune`` for the task's own windows (writes its manifest when missing).

    The manifest has one FASTA record per window with our splits, so the run's val and test windows
    are ours; every val and test window is scored (``--val-windows``/``--test-windows`` = the
    largest class); a class is drawn uniformly per training window, then a record uniformly.
    """
    counts = ws.counts()
    manifest = Path(task_dir) / "manifest.tsv"
    if not manifest.is_file():
        ws.write_fasta(task_dir)
    argv = ["finetune", "--manifest", str(manifest), "--seq-len", str(ws.seq_len), "--no-seq-len-warmup",
            "--pooling", plan.pooling, "--strands", plan.strands, "--rc-prob", f"{plan.rc_prob:g}", "--batch-size", str(plan.batch_size), "--max-steps", str(plan.max_steps),
            "--steps-per-epoch", str(plan.val_every), "--warmup-steps", str(plan.warmup_steps), "--lr", str(plan.lr),
            "--val-windows", str(max(counts["val"].values())), "--test-windows", str(max(counts["test"].values())),
            "--contig-weighting", "uniform", "--accelerator", accelerator, "--seed", str(seed),
            "--out", str(run_dir), "--force", "-q"]
    if plan.max_time_s:
        argv += ["--max-time", f"{max(1, int(plan.max_time_s))}s"]
    argv += ["--from", str(model_path)] if model_path else ["--preset", preset]
    if model_overrides:
        argv += ["--model-overrides", json.dumps(model_overrides)]
    return argv


def finetune_result(ws: WindowSet, run_dir: str | Path, plan: FinetunePlan, model_path: str | None,
                    preset: str = "tiny") -> dict:
    """Score a finished fine-tuning run on our test windows (its ``test_predictions.tsv``, ``metrics.json``)."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    index = {}
    with open(run_dir / "test_predictions.tsv") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        name_col = header.index("contig")
        cols = [header.index(f"p_{lab}") for lab in ws.labels]
        for line in fh:
            f = line.rstrip("\n").split("\t")
            index[int(f[name_col].rsplit("_", 1)[1])] = [float(f[c]) for c in cols]
    test_idx = np.flatnonzero(ws.split == "test")
    missing = [int(i) for i in test_idx if int(i) not in index]
    if missing:
        raise RuntimeError(f"finetune scored {len(index)} test windows but {len(missing)} of ours are missing "
                           f"(first: {missing[0]})")
    proba = np.array([index[int(i)] for i in test_idx])
    out = score_predictions(ws.y[test_idx], proba.argmax(1), proba, len(ws.labels))
    best = metrics.get("best") or {}
    out.update({"method": f"fine-tuned {'from ' + Path(model_path).name if model_path else preset + ' from scratch'}, "
                          f"{plan.pooling} pooling, strands {plan.strands}, rc-prob {plan.rc_prob:g}, lr {plan.lr:g}, "
                          f"batch {plan.batch_size}, {metrics['steps']} steps, "
                          f"best-on-val step {best.get('step', '?')}",
                "chosen": {"best": best}, "run": str(run_dir), "steps": metrics["steps"],
                "plan": asdict(plan), "val_accuracy": best.get("val_acc")})
    return out


def finetune_stage(ws: WindowSet, task_dir: str | Path, run_dir: str | Path, *, model_path: str | None = None,
                   preset: str = "tiny", max_steps: int | None = None, batch_size: int | None = None,
                   lr: float = 1e-3, max_time_s: float | None = None, max_epochs: int = 30,
                   accelerator: str = "auto", seed: int = 0, model_overrides: dict | None = None,
                   strands: str = "both", pooling: str | None = None, log=print) -> dict:
    """``mamba-genome finetune --manifest <task>/manifest.tsv`` in a subprocess; scored like the rest.

    Through the command line, so the stage depends only on the CLI's flags, not on the library's
    internals. Settings from :func:`finetune_plan`.
    """
    t0 = time.perf_counter()
    plan = finetune_plan(ws, max_time_s=max_time_s, max_epochs=max_epochs, lr=lr, batch_size=batch_size,
                         max_steps=max_steps, strands=strands, pooling=pooling)
    argv = finetune_argv(ws, task_dir, run_dir, plan, model_path=model_path, preset=preset, accelerator=accelerator,
                         seed=seed, model_overrides=model_overrides)
    log("  " + " ".join(["mamba-genome", *argv]))
    p = subprocess.run([sys.executable, "-m", "mamba_genome", *argv], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"mamba-genome finetune exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    out = finetune_result(ws, run_dir, plan, model_path, preset)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def majority(ws: WindowSet) -> float:
    return majority_rate(ws.part("train")[1], ws.part("test")[1])
