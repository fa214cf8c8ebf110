"""The four classifiers scored on every task's windows: k-mer LR, a small CNN, a frozen probe, fine-tuning.

All four see exactly the windows of a :class:`~benchmarks.tasks.common.WindowSet`: fit on
``train``, choose hyper-parameters on ``val``, score once on ``test``.

``kmer``      k-mer frequencies (k in 4..8 and the L2 strength C chosen on val), standardised,
              logistic regression (scikit-learn). Sparse features, so k=8 fits in memory.
``cnn``       the GenomicBenchmarks baseline kind (Gresova et al. 2023): one-hot input, three
              Conv1d-BatchNorm-ReLU blocks with max-pooling, global mean+max pooling, a linear
              head; AdamW, early stopping on val accuracy (patience 3, at most 12 epochs), best
              epoch restored.
``probe``     our model frozen: ``mamba_genome.load(model).embed(windows, pool, layer)`` for every
              layer and pool in (mean, last); logistic regression on train; best (layer, pool) on val.
``finetune``  :func:`mamba_genome.workflows.finetune.finetune` on the task's ``manifest.tsv`` (one FASTA
              record per window, explicit splits, so its val/test windows are ours), from a
              pretrained model or a preset; its test predictions are mapped back to our windows.
"""
from __future__ import annotations

import time
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


def probe_stage(ws: WindowSet, model_path: str, *, layers=None, pools=("mean", "last"), seed: int = 0,
                device=None, batch_size: int | None = None, log=print) -> dict:
    """Frozen embeddings of every window; logistic regression per (layer, pool); best on val, scored on test."""
    import mamba_genome

    t0 = time.perf_counter()
    gm = mamba_genome.load(model_path, device=device)
    layers = list(range(gm.n_layer)) if layers is None else list(layers)
    parts = {s: ws.part(s) for s in ("train", "val", "test")}
    best, grid = None, []
    for pool in pools:
        for layer in layers:
            emb = {s: gm.embed(x.astype(np.int64), pool=pool, layer=layer, batch_size=batch_size)
                   for s, (x, _) in parts.items()}
            clf = _fit_lr(emb["train"], parts["train"][1], 1.0, seed)
            acc = float(np.mean(clf.predict(emb["val"]) == parts["val"][1]))
            grid.append({"layer": layer, "pool": pool, "val_accuracy": acc})
            log(f"  probe layer {layer} pool {pool}: val {acc:.3f}")
            if best is None or acc > best[0]:
                best = (acc, layer, pool, clf.predict_proba(emb["test"]))
    acc, layer, pool, proba = best
    out = score_predictions(parts["test"][1], proba.argmax(1), proba, len(ws.labels))
    out.update({"method": f"frozen {Path(model_path).name}, layer {layer}, {pool}-pooled + logistic regression",
                "chosen": {"layer": layer, "pool": pool}, "val_accuracy": acc, "grid": grid, "model": str(model_path),
                "seconds": round(time.perf_counter() - t0, 1)})
    return out


# --------------------------------------------------------------------------- finetune


def finetune_stage(ws: WindowSet, task_dir: str | Path, run_dir: str | Path, *, model_path: str | None = None,
                   preset: str = "tiny", max_steps: int = 2000, batch_size: int = 32, lr: float = 1e-3,
                   pooling: str = "mean", accelerator: str = "auto", max_time_s: float | None = None, seed: int = 0,
                   model_overrides: dict | None = None, log=print) -> dict:
    """``mamba-genome finetune --manifest <task>/manifest.tsv`` on the task's own windows; scored like the rest."""
    from mamba_genome.workflows.finetune import FinetuneArgs, finetune

    t0 = time.perf_counter()
    counts = ws.counts()
    manifest = Path(task_dir) / "manifest.tsv"
    if not manifest.is_file():
        ws.write_fasta(task_dir)
    args = FinetuneArgs(manifest=str(manifest), from_run=model_path, preset=preset,
                        seq_len=ws.seq_len, seq_len_warmup=False, rc_prob=0.0, pooling=pooling,
                        batch_size=batch_size, max_steps=max_steps, lr=lr, max_time_s=max_time_s, seed=seed,
                        val_windows=max(counts["val"].values()), test_windows=max(counts["test"].values()),
                        contig_weighting="uniform", out=str(run_dir), accelerator=accelerator, progress=False,
                        model_overrides=dict(model_overrides or {}))
    metrics = finetune(args)
    index = {}
    with open(Path(run_dir) / "test_predictions.tsv") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        cols = [header.index(f"p_{lab}") for lab in ws.labels]
        for line in fh:
            f = line.rstrip("\n").split("\t")
            index[int(f[1].rsplit("_", 1)[1])] = [float(f[c]) for c in cols]
    test_idx = np.flatnonzero(ws.split == "test")
    missing = [int(i) for i in test_idx if int(i) not in index]
    if missing:
        raise RuntimeError(f"finetune scored {len(index)} test windows but {len(missing)} of ours are missing "
                           f"(first: {missing[0]})")
    proba = np.array([index[int(i)] for i in test_idx])
    yte = ws.y[test_idx]
    out = score_predictions(yte, proba.argmax(1), proba, len(ws.labels))
    out.update({"method": f"fine-tuned {'from ' + Path(model_path).name if model_path else preset + ' from scratch'}, "
                          f"{pooling} pooling, {metrics['steps']} steps",
                "chosen": {"best": metrics.get("best")}, "run": str(run_dir), "steps": metrics["steps"],
                "seconds": round(time.perf_counter() - t0, 1)})
    return out


def majority(ws: WindowSet) -> float:
    return majority_rate(ws.part("train")[1], ws.part("test")[1])
