"""The windows core: how a random training window is drawn from a list of regions.

One definition for pretraining (:class:`~mamba_genome.data.sampler.RandomWindowDataset`) and
fine-tuning (:class:`~mamba_genome.data.labels.BalancedWindowDataset`, which first draws a
class and then a window of that class's regions):

- :func:`region_table`: the regions that can hold a window of ``seq_len`` and their cumulative
  weights (the number of window positions, or 1 each); with ``whole_records`` a region shorter
  than the window is one item of its own (weight 1, as a region exactly one window long).
- :func:`draw_window`: a region by weight, a start inside it; a window more than
  ``max_n_fraction`` N is redrawn (up to :data:`MAX_TRIES` times, then the least-N draw is kept);
  reverse-complemented with probability ``rc_prob``. The draws come from ``rng`` in a fixed
  order, so a window is a pure function of the generator's seed.

And how the fixed validation / test windows are laid out, for both commands
(:class:`~mamba_genome.data.sampler.TiledWindowDataset`,
:class:`~mamba_genome.data.labels.FixedWindowDataset`):

- :func:`tile_starts`: the non-overlapping tiles of ``seq_len`` tokens of a region that are at
  most ``max_n_fraction`` N (the tail shorter than a tile is dropped);
- :func:`evenly_spaced`: which ``k`` of ``n`` tiles to keep (a fixed, cheap subset).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .tokenizer import N, reverse_complement_tokens

MAX_TRIES = 16  # draws before settling for the least-N window


def region_table(regions: Sequence, seq_len: int, *, weighting: str = "length",
                 whole_records: bool = False) -> tuple[list, np.ndarray]:
    """``(usable regions, cumulative weights)`` for windows of ``seq_len``; both empty if none is usable.

    ``regions`` need ``.length``; ``weighting`` is ``"length"`` (window positions) or ``"uniform"``.
    """
    usable = [r for r in regions if r.length >= seq_len or whole_records and r.length > 0]
    w = np.array([max(1, r.length - seq_len + 1) if weighting == "length" else 1 for r in usable], dtype=np.float64)
    return usable, np.cumsum(w)


def draw_window(rng: np.random.Generator, regions: Sequence, cum: np.ndarray, seq_len: int,
                tokens_of: Callable[[object], np.ndarray], *, max_n_fraction: float = 0.1,
                rc_prob: float = 0.5) -> tuple[object, int, np.ndarray]:
    """``(region, start, tokens int64)`` of one random window (shorter than ``seq_len`` only for a
    whole record shorter than it). ``tokens_of(region)`` gives the region's contig tokens."""
    best = None
    for _ in range(MAX_TRIES):
        r = regions[int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))]
        start = r.start + int(rng.integers(0, max(1, r.length - seq_len + 1)))
        w = tokens_of(r)[start: min(start + seq_len, r.start + r.length)]
        n = int(np.count_nonzero(w == N))
        if best is None or n / len(w) < best[0]:
            best = (n / len(w), r, start, w)
        if n <= max_n_fraction * len(w):
            break
    _, r, start, w = best
    tokens = np.asarray(w, dtype=np.int64)
    if rng.random() < rc_prob:
        tokens = reverse_complement_tokens(tokens)
    return r, start, np.ascontiguousarray(tokens)


def tile_starts(tokens, start: int, length: int, seq_len: int, max_n_fraction: float = 0.5,
                block_bytes: int = 64 << 20) -> np.ndarray:
    """Starts (int64, contig coordinates) of the tiles ``[start + j * seq_len, + seq_len)`` of the region
    ``(start, length)`` of ``tokens`` with at most ``max_n_fraction * seq_len`` N, read ``block_bytes``
    at a time."""
    n_tiles = int(length) // seq_len
    step = max(1, block_bytes // seq_len)
    out = []
    for t0 in range(0, n_tiles, step):
        t1 = min(n_tiles, t0 + step)
        block = np.asarray(tokens[start + t0 * seq_len: start + t1 * seq_len]).reshape(t1 - t0, seq_len)
        keep = np.flatnonzero(np.count_nonzero(block == N, axis=1) <= max_n_fraction * seq_len)
        out.append(start + (t0 + keep) * seq_len)
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """Indices of ``min(k, n)`` of ``n`` items, evenly spaced from the first to the last (all if ``k >= n``)."""
    if n <= 0:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n - 1, min(int(k), n)).round().astype(np.int64))


__all__ = ["MAX_TRIES", "region_table", "draw_window", "tile_starts", "evenly_spaced"]
