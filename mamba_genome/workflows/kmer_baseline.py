"""k-mer baseline for classification: k-mer frequencies + logistic regression.

Owns the "bag of k-mers" reference a fine-tuned model should beat. Each
window becomes its vector of k-mer frequencies (4^k features; k-mers that
contain N are skipped), standardised, and a scikit-learn
``LogisticRegression`` is fitted on the training windows and scored on the
test windows. It uses exactly the windows the model sees: the first
``n_train`` training windows of epoch 0 (same sampler, same seed) and the
fixed test windows of the run, so the two numbers are comparable.
"""
from __future__ import annotations

import time

import numpy as np

from ..data.tokenizer import A, T


def kmer_frequencies(tokens: np.ndarray, k: int = 6) -> np.ndarray:
    """Token ids ``[L]`` -> k-mer frequencies ``float32 [4**k]`` (k-mers with N or specials skipped).

    Example:
        >>> from mamba_genome.data.tokenizer import encode
        >>> kmer_frequencies(encode("ACGTA"), k=4).nonzero()[0].tolist()  # ACGT, CGTA
        [27, 108]
    """
    tok = np.asarray(tokens, dtype=np.int64)
    out = np.zeros(4**k, dtype=np.float32)
    if len(tok) < k:
        return out
    base = tok - A  # A C G T -> 0..3
    ok = (tok >= A) & (tok <= T)
    n_pos = len(tok) - k + 1
    code = np.zeros(n_pos, dtype=np.int64)
    valid = np.ones(n_pos, dtype=bool)
    for j in range(k):
        code = code * 4 + np.where(ok[j : j + n_pos], base[j : j + n_pos], 0)
        valid &= ok[j : j + n_pos]
    counts = np.bincount(code[valid], minlength=4**k).astype(np.float32)
    total = counts.sum()
    return counts / total if total else counts


def features(windows, k: int = 6) -> np.ndarray:
    """Iterable of token arrays -> ``float32 [n, 4**k]`` (windows are consumed one at a time)."""
    rows = [kmer_frequencies(w, k) for w in windows]
    return np.stack(rows) if rows else np.zeros((0, 4**k), np.float32)


def kmer_baseline(train_windows, train_labels, test_windows, test_labels, *, k: int = 6, num_classes: int | None = None,
                  seed: int = 0) -> dict:
    """Fit logistic regression on k-mer frequencies; return test accuracy and macro-F1.

    Args:
        train_windows, test_windows: iterables of token-id arrays (any lengths).
        train_labels, test_labels: int class indices.
        k: k-mer length (4**k features; k=6 -> 4,096).
        num_classes: for macro-F1 over every class (default: classes seen).

    Returns:
        ``{"method", "k", "accuracy", "macro_f1", "n_train", "n_test", "seconds"}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    X_train, X_test = features(train_windows, k), features(test_windows, k)
    y_train, y_test = np.asarray(train_labels), np.asarray(test_labels)
    if len(np.unique(y_train)) < 2:
        raise ValueError("the k-mer baseline needs training windows of at least 2 classes")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=0.1, random_state=seed))
    clf.fit(X_train, y_train)
    pred = clf.predict(X_test)
    labels = list(range(num_classes)) if num_classes else None
    return {
        "method": f"{k}-mer frequencies + logistic regression",
        "k": k,
        "accuracy": float(accuracy_score(y_test, pred)),
        "macro_f1": float(f1_score(y_test, pred, labels=labels, average="macro", zero_division=0)),
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        "seconds": round(time.perf_counter() - t0, 2),
        "predictions": pred.tolist(),
    }


def run_on_datasets(train_ds, test_ds, *, n_train: int, seq_len: int, k: int = 6, num_classes: int) -> dict:
    """The baseline on a run's own windows: train windows ``0..n_train-1`` of epoch 0, all test windows."""
    # Generators: only one window's tokens are held at a time, even at 1 Mbp windows.
    labels = [train_ds.label_of(0, i) for i in range(n_train)]
    train = (train_ds.window(0, seq_len, i)[4] for i in range(n_train))
    test = (test_ds.tokens(i) for i in range(len(test_ds)))
    return kmer_baseline(train, labels, test, test_ds.labels, k=k, num_classes=num_classes)


__all__ = ["kmer_frequencies", "features", "kmer_baseline", "run_on_datasets"]
