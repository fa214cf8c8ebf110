"""Exact long-k-mer matching on a classification task: how much memorisable signal the test windows hold.

A second reference beside the 6-mer bag for ``bench_finetune.py``. For each
class, the canonical k-mers (default k = 31) of its train regions that occur
in no other class's train regions are its "marker" k-mers. A test window is
assigned the class whose markers it contains most often (ties and windows
with no marker at all: a seeded random class). This is what a model could
reach by memorising training sequence exactly; it counts, per window length,
how many test windows carry any marker ("evidence") and the accuracy.

It scores exactly the fixed test windows of ``finetune`` (same regions,
``per_class`` and window length). Counting is vectorised over whole test
regions (cumulative marker hits), so five bacterial genomes take about a
minute on one core.

    PYTHONPATH=. python benchmarks/kmer_match.py --src ../shared/data/saureus --seq-lens 1024,16384
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

_INVALID = np.uint64(1 << 63)


def canonical_kmers(tokens: np.ndarray, k: int) -> np.ndarray:
    """Token ids ``[L]`` -> canonical 2-bit k-mer codes ``uint64 [L-k+1]`` (``1<<63`` where a k-mer has N)."""
    from mamba_genome.data.tokenizer import A, T

    if not 1 <= k <= 31:
        raise ValueError(f"k must be in 1..31, got {k}")
    tok = np.asarray(tokens, dtype=np.int64)
    n = len(tok) - k + 1
    if n <= 0:
        return np.zeros(0, np.uint64)
    ok = (tok >= A) & (tok <= T)
    base = np.where(ok, tok - A, 0).astype(np.uint64)  # A C G T -> 0 1 2 3; complement = 3 - b
    fwd = np.zeros(n, np.uint64)
    rev = np.zeros(n, np.uint64)
    valid = np.ones(n, bool)
    for j in range(k):
        b = base[j : j + n]
        fwd = (fwd << np.uint64(2)) | b
        rev |= (np.uint64(3) - b) << np.uint64(2 * j)
        valid &= ok[j : j + n]
    out = np.minimum(fwd, rev)
    out[~valid] = _INVALID
    return out


def marker_sets(task, k: int) -> list[np.ndarray]:
    """Per class: sorted canonical k-mers of its train regions found in no other class's train regions."""
    from mamba_genome.data.store import TokenStore

    stores: dict[str, TokenStore] = {}
    per_class = []
    for c in range(len(task.labels)):
        codes = [canonical_kmers(stores.setdefault(r.store, TokenStore.open(r.store)).tokens(r.contig)[r.start : r.end], k)
                 for r in task.split_regions("train", c)]
        u = np.unique(np.concatenate(codes)) if codes else np.zeros(0, np.uint64)
        per_class.append(u[u != _INVALID])
    allk, counts = np.unique(np.concatenate(per_class), return_counts=True)
    shared = allk[counts > 1]
    return [np.setdiff1d(u, shared, assume_unique=True) for u in per_class]


def match_scores(task, seq_lens, *, per_class: int, k: int = 31, seed: int = 0) -> dict:
    """``{seq_len: {"accuracy", "macro_f1", "evidence", "n_test"}}`` on finetune's fixed test windows."""
    from sklearn.metrics import accuracy_score, f1_score

    from mamba_genome.data.labels import FixedWindowDataset
    from mamba_genome.data.store import TokenStore

    t0 = time.perf_counter()
    C = len(task.labels)
    markers = marker_sets(task, k)
    # Cumulative marker hits per class along every test region: window sums are two lookups.
    cum = {}
    for r in task.split_regions("test"):
        codes = canonical_kmers(TokenStore.open(r.store).tokens(r.contig)[r.start : r.end], k)
        hits = np.stack([np.isin(codes, m) for m in markers])  # (C, n_kmers)
        cum[(r.store, r.contig, r.start)] = np.concatenate([np.zeros((C, 1), np.int64), np.cumsum(hits, 1)], 1)
    rng = np.random.default_rng(seed)
    out = {}
    for L in seq_lens:
        ds = FixedWindowDataset(task.split_regions("test"), C, L, per_class=per_class)
        regions = task.split_regions("test")
        pred, evidence = [], 0
        for row in ds.to_rows(task.labels):
            r = next(r for r in regions if r.store == row["store"] and r.contig == row["contig"]
                     and r.start <= row["start"] and row["end"] <= r.end)
            cs = cum[(r.store, r.contig, r.start)]
            a, b = row["start"] - r.start, max(row["start"] - r.start, row["end"] - r.start - k + 1)
            score = cs[:, b] - cs[:, a]
            best = np.flatnonzero(score == score.max())
            evidence += int(score.max() > 0)
            pred.append(int(rng.choice(best)))
        y = ds.labels
        out[L] = {"accuracy": float(accuracy_score(y, pred)),
                  "macro_f1": float(f1_score(y, pred, labels=list(range(C)), average="macro", zero_division=0)),
                  "evidence": evidence / max(1, len(y)), "n_test": int(len(y)), "k": k}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_finetune import class_pairs

    from mamba_genome.data.labels import build_task, parse_class_pairs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default="../shared/data/saureus", help="directory of FASTA files, one per class")
    ap.add_argument("--seq-lens", default="1024,16384")
    ap.add_argument("--k", type=int, default=31)
    ap.add_argument("--test-windows", type=int, default=300, help="fixed test windows per class, as finetune")
    ap.add_argument("--store-dir", default=None, help="where token stores go [default: beside the FASTA or the cache]")
    args = ap.parse_args(argv)
    task = build_task(parse_class_pairs(class_pairs(Path(args.src))), val_fraction=0.1, test_fraction=0.2,
                      store_dir=args.store_dir, progress=False)
    res = match_scores(task, [int(x) for x in args.seq_lens.split(",")], per_class=args.test_windows, k=args.k)
    print("seq_len\tn_test\tevidence\taccuracy\tmacro_f1")
    for L, r in res.items():
        if L != "seconds":
            print(f"{L}\t{r['n_test']}\t{r['evidence']:.3f}\t{r['accuracy']:.3f}\t{r['macro_f1']:.3f}")
    print(f"({res['seconds']} s, k={args.k}, chance {1 / len(task.labels):.3f})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
