"""``probe`` workflow: how much of a label is linearly decodable from embeddings.

Owns the linear-probe protocol used to compare embeddings (layers, models,
pooling): standardised features -> L2-regularised logistic regression,
scored by stratified k-fold cross-validation (scikit-learn), reported as mean
± std over folds of accuracy and macro-F1, next to a majority-class baseline
(predict the most frequent training-fold label) scored on the same folds.

Inputs: a pooled embedding file from ``mamba-genome embed`` (any format with
ids: .h5, .npz, .parquet) and a TSV with a header holding ``id`` and
``label`` columns. Every labelled id must be in the embedding file;
embedded records without a label are left out (and counted).
"""
from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputFileError, UserError


def read_labels(path: str | os.PathLike) -> dict[str, str]:
    """``{id: label}`` from a TSV with a header containing ``id`` and ``label``."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: no such labels file; check the --labels path")
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise InputFileError(f"{p}: empty labels file; expected a TSV with a header 'id<TAB>label'")
        cols = [h.strip().lower() for h in header]
        if "id" not in cols or "label" not in cols:
            raise InputFileError(f"{p}: the header must name 'id' and 'label' columns (tab-separated), got {header}")
        i_id, i_lab = cols.index("id"), cols.index("label")
        labels: dict[str, str] = {}
        for lineno, row in enumerate(reader, 2):
            if not row or not "".join(row).strip():
                continue
            if len(row) <= max(i_id, i_lab):
                raise InputFileError(f"{p}:{lineno}: expected {len(header)} tab-separated columns, got {len(row)}")
            key, lab = row[i_id].strip(), row[i_lab].strip()
            if key in labels:
                raise InputFileError(f"{p}:{lineno}: id '{key}' is listed twice")
            labels[key] = lab
    if not labels:
        raise InputFileError(f"{p}: no labelled rows below the header")
    return labels


def probe(emb_path, labels_tsv, folds: int = 5, seed: int = 0) -> dict:
    """Cross-validated logistic-regression probe of ``labels_tsv`` on the embeddings in ``emb_path``.

    Returns:
        dict with ``n``, ``n_unlabelled`` (embedded but not labelled),
        ``classes``, ``folds``, ``d``, ``accuracy_mean``/``_std``,
        ``macro_f1_mean``/``_std``, ``majority_accuracy_mean``/``_std``,
        ``majority_macro_f1_mean``/``_std`` and ``per_fold`` scores.

    Raises:
        UserError: per-base embeddings, unmatched ids, fewer than 2 classes,
            or a class with fewer members than ``folds``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..io import read_embeddings

    if folds < 2:
        raise UserError(f"--folds must be >= 2, got {folds}")
    emb = read_embeddings(emb_path)
    if emb.per_base:
        raise UserError(f"{emb_path}: holds per-base embeddings; probe needs pooled ones "
                        "(re-run `mamba-genome embed` with --pool mean or last)")
    if emb.ids is None:
        raise UserError(f"{emb_path}: a bare .npy has no record ids; embed to .h5, .npz or .parquet to probe")
    labels = read_labels(labels_tsv)
    row = {k: i for i, k in enumerate(emb.ids)}
    missing = [k for k in labels if k not in row]
    if missing:
        raise UserError(f"{len(missing)} of {len(labels)} ids in {labels_tsv} are not in {emb_path} "
                        f"(e.g. {', '.join(repr(m) for m in missing[:3])}); ids must match the embedding ids "
                        "(FASTA record names or BED names)")
    ids = list(labels)
    X = np.asarray(emb.embeddings, dtype=np.float64)[[row[k] for k in ids]]
    classes, y = np.unique([labels[k] for k in ids], return_inverse=True)
    if len(classes) < 2:
        raise UserError(f"{labels_tsv}: only one label ('{classes[0]}'); a probe needs at least 2 classes")
    counts = np.bincount(y)
    if counts.min() < folds:
        small = classes[int(np.argmin(counts))]
        raise UserError(f"label '{small}' has only {counts.min()} example(s), fewer than --folds {folds}; "
                        "lower --folds or add examples")

    per_fold = []
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in skf.split(X, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X[train], y[train])
        pred = clf.predict(X[test])
        major = np.full(len(test), np.bincount(y[train]).argmax())
        kw = dict(labels=np.arange(len(classes)), average="macro", zero_division=0)
        per_fold.append({
            "accuracy": float(accuracy_score(y[test], pred)),
            "macro_f1": float(f1_score(y[test], pred, **kw)),
            "majority_accuracy": float(accuracy_score(y[test], major)),
            "majority_macro_f1": float(f1_score(y[test], major, **kw)),
        })
    result = {"embeddings": str(emb_path), "labels": str(labels_tsv), "n": len(ids),
              "n_unlabelled": len(emb.ids) - len(ids), "classes": [str(c) for c in classes],
              "class_counts": [int(c) for c in counts], "d": int(X.shape[1]), "folds": folds, "seed": seed}
    for key in ("accuracy", "macro_f1", "majority_accuracy", "majority_macro_f1"):
        vals = np.array([f[key] for f in per_fold])
        result[f"{key}_mean"] = float(vals.mean())
        result[f"{key}_std"] = float(vals.std())
    result["per_fold"] = per_fold
    return result


def summary_rows(result: dict) -> list[dict]:
    """Table rows: the probe and the majority baseline, mean ± std over folds."""
    def pm(key):
        return f"{result[key + '_mean']:.3f} ± {result[key + '_std']:.3f}"

    return [
        {"model": "logistic regression", "accuracy": pm("accuracy"), "macro-F1": pm("macro_f1")},
        {"model": "majority class", "accuracy": pm("majority_accuracy"), "macro-F1": pm("majority_macro_f1")},
    ]


__all__ = ["probe", "read_labels", "summary_rows"]
