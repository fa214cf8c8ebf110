"""Does generated sequence look like the genome the model was trained on?

:func:`compare_to_genome` puts samples next to the genome on three measures, used by the
``generate`` tests and ``benchmarks/generate_check.py``:

- **bits per base under the model** (the engine's score, the one likelihood definition):
  sampling at temperature 1 draws from the model's own distribution, so the samples'
  bits/base is the model's entropy rate, which for a model that fits the genome is close
  to the genome's cross-entropy under it;
- **GC content**: the fraction of G and C among A/C/G/T;
- **k-mer spectrum**: frequencies of the 4^k k-mers of bases (k-mers with N skipped),
  compared by total variation distance ``TV(p, q) = 0.5 * sum |p - q|`` (0 = identical,
  1 = disjoint).
"""
from __future__ import annotations

import math

import numpy as np

from ..data.tokenizer import A, C, G, T


def gc_content(seqs) -> float:
    """Fraction of G+C among the A/C/G/T tokens of 1-D token arrays ``seqs``."""
    gc = bases = 0
    for s in seqs:
        s = np.asarray(s)
        gc += int(np.count_nonzero((s == C) | (s == G)))
        bases += int(np.count_nonzero((s >= A) & (s <= T)))
    return gc / max(bases, 1)


def kmer_spectrum(seqs, k: int) -> np.ndarray:
    """Normalised counts (4^k,) of the k-mers of bases in 1-D token arrays (k-mers with N skipped)."""
    counts = np.zeros(4 ** k, dtype=np.int64)
    for s in seqs:
        v = np.asarray(s).astype(np.int64) - A
        if len(v) < k:
            continue
        m = len(v) - k + 1
        code = np.zeros(m, dtype=np.int64)
        ok = np.ones(m, dtype=bool)
        for j in range(k):
            col = v[j: j + m]
            ok &= (col >= 0) & (col < 4)
            code = code * 4 + np.clip(col, 0, 3)
        counts += np.bincount(code[ok], minlength=4 ** k)
    return counts / max(counts.sum(), 1)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """0.5 * sum |p - q| of two distributions."""
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())


def bits_per_base(engine, seqs, chunk_size: int | None = None, precision: str = "fp32") -> float:
    """Mean bits per scored base of token arrays ``seqs`` under ``engine``'s model."""
    s = engine.score(seqs, chunk_size=chunk_size, precision=precision)
    return float(-s.log_likelihood.sum() / max(int(s.n_scored.sum()), 1) / math.log(2))


def compare_to_genome(engine, genome, samples, ks=(1, 2, 3, 4), chunk_size: int | None = None,
                      precision: str = "fp32") -> dict:
    """Measures of the module docstring for ``samples`` and ``genome`` (lists of token arrays).

    Returns ``{"bits_per_base": {"genome", "samples", "diff"}, "gc": {...}, "kmer_tv": {k: TV}}``
    (``diff`` = samples - genome).
    """
    bpb_g = bits_per_base(engine, genome, chunk_size, precision)
    bpb_s = bits_per_base(engine, samples, chunk_size, precision)
    gc_g, gc_s = gc_content(genome), gc_content(samples)
    return {
        "bits_per_base": {"genome": bpb_g, "samples": bpb_s, "diff": bpb_s - bpb_g},
        "gc": {"genome": gc_g, "samples": gc_s, "diff": gc_s - gc_g},
        "kmer_tv": {int(k): total_variation(kmer_spectrum(genome, k), kmer_spectrum(samples, k)) for k in ks},
    }


__all__ = ["compare_to_genome", "gc_content", "kmer_spectrum", "total_variation", "bits_per_base"]
