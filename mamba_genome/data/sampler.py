"""Torch Datasets of fixed-length token windows drawn from a token store.

Owns :class:`RandomWindowDataset` (training: random windows, N filtering,
reverse-complement augmentation, as in HyenaDNA/Caduceus pretraining),
:class:`TiledWindowDataset` (evaluation: deterministic non-overlapping tiles)
and :class:`ResumableShardSampler` (each rank's share of an epoch, able to
start part-way through it, so a resumed run sees exactly the windows an
uninterrupted one would).

Both take the store *path* and open the :class:`~mamba_genome.data.store.TokenStore`
lazily in each process, so a ``DataLoader`` with workers pickles only paths
and region lists, never memory maps. Items are dicts with
``input_ids: LongTensor [L]``; collate them into ``[B, L]``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from ..errors import UserError
from .splits import Region
from .store import TokenStore
from .windows import draw_window, evenly_spaced, region_table, tile_starts


class _StoreBacked(Dataset):
    """Opens the token store on first use in each process (after fork/spawn)."""

    def __init__(self, store_path, regions):
        if isinstance(store_path, TokenStore):
            store_path = store_path.path
        self.store_path = Path(store_path)
        self.all_regions = [r if isinstance(r, Region) else Region(*r) for r in regions]
        self._store: TokenStore | None = None
        self._pid: int | None = None

    @property
    def store(self) -> TokenStore:
        if self._store is None or self._pid != os.getpid():
            self._store = TokenStore.open(self.store_path)
            self._pid = os.getpid()
        return self._store

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_store"] = None  # reopened lazily in the worker
        return state

    @staticmethod
    def _too_short(seq_len: int, regions) -> UserError:
        longest = max((r.length for r in regions), default=0)
        return UserError(
            f"genome/split shorter than one window of {seq_len:,} bp (longest region {longest:,} bp): "
            "use a smaller --seq-len"
        )


class RandomWindowDataset(_StoreBacked):
    """``samples_per_epoch`` random windows of ``seq_len`` tokens inside ``regions``.

    Item ``i`` of epoch ``e`` is a pure function of ``(seed, e, i)``: a region
    is drawn with probability proportional to its number of window positions,
    then a window fully inside it; windows with more than ``max_n_fraction``
    N are redrawn (up to 16 tries, then the least-N one is kept); the window
    is reverse-complemented with probability ``rc_prob``: the windows core,
    :func:`mamba_genome.data.windows.draw_window`, which fine-tuning shares.

    Args:
        store_path: store directory (str/Path) or an open ``TokenStore``.
        regions: :class:`~mamba_genome.data.splits.Region` list, e.g. ``plan.regions("train")``.
        seq_len: window length L in tokens.
        samples_per_epoch: ``len(dataset)``.

    Returns (per item): ``{"input_ids": LongTensor [L]}``.

    Note: call :meth:`set_epoch` before each epoch; with
    ``persistent_workers=True`` the workers keep their own copy, so recreate
    the DataLoader (or the workers) to change epochs there.
    """

    def __init__(self, store_path, regions, seq_len: int, *, samples_per_epoch: int, max_n_fraction: float = 0.1,
                 rc_prob: float = 0.5, seed: int = 0):
        super().__init__(store_path, regions)
        if samples_per_epoch < 1:
            raise UserError(f"samples per epoch must be at least 1, got {samples_per_epoch}")
        if not 0 <= max_n_fraction <= 1:
            raise UserError(f"max N fraction must be in [0, 1], got {max_n_fraction}")
        if not 0 <= rc_prob <= 1:
            raise UserError(f"reverse-complement probability must be in [0, 1], got {rc_prob}")
        self.samples_per_epoch = int(samples_per_epoch)
        self.max_n_fraction = float(max_n_fraction)
        self.rc_prob = float(rc_prob)
        self.seed = int(seed)
        self.epoch = 0
        self.set_seq_len(seq_len)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_seq_len(self, seq_len: int) -> None:
        """Change the window length (sequence-length warmup); regions shorter than it are skipped."""
        seq_len = int(seq_len)
        if seq_len < 1:
            raise UserError(f"--seq-len must be at least 1, got {seq_len}")
        usable, cum = region_table(self.all_regions, seq_len)
        if not usable:
            raise self._too_short(seq_len, self.all_regions)
        self.seq_len = seq_len
        self.regions, self._cum = usable, cum

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.samples_per_epoch:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        _, _, tokens = draw_window(rng, self.regions, self._cum, self.seq_len, lambda r: self.store.tokens(r.contig),
                                   max_n_fraction=self.max_n_fraction, rc_prob=self.rc_prob)
        return {"input_ids": torch.from_numpy(tokens)}


class TiledWindowDataset(_StoreBacked):
    """Deterministic non-overlapping windows of ``seq_len`` tokens tiling ``regions``.

    Tiles that are more than ``max_n_fraction`` N are skipped; the tail of a
    region shorter than ``seq_len`` is dropped. With ``max_windows`` an
    evenly spaced subset of the tiles is kept (a fixed, cheap validation set).

    Returns (per item): ``{"input_ids": LongTensor [L], "contig": str, "start": int}``
    where ``start`` is the 0-based contig coordinate of the first token.
    """

    def __init__(self, store_path, regions, seq_len: int, *, max_windows: int | None = None,
                 max_n_fraction: float = 0.5):
        super().__init__(store_path, regions)
        seq_len = int(seq_len)
        if seq_len < 1:
            raise UserError(f"--seq-len must be at least 1, got {seq_len}")
        self.seq_len = seq_len
        self.max_n_fraction = float(max_n_fraction)
        usable = [r for r in self.all_regions if r.length >= seq_len]
        if not usable:
            raise self._too_short(seq_len, self.all_regions)
        self.regions = usable
        region_idx, starts = [], []
        for k, r in enumerate(usable):
            s = tile_starts(self.store.tokens(r.contig), r.start, r.length, seq_len, self.max_n_fraction)
            region_idx.append(np.full(len(s), k, dtype=np.int64))
            starts.append(s)
        self._region_idx = np.concatenate(region_idx) if region_idx else np.zeros(0, np.int64)
        self._starts = np.concatenate(starts).astype(np.int64) if starts else np.zeros(0, np.int64)
        if len(self._starts) == 0:
            raise UserError(f"every {seq_len:,} bp window of the split is more than {self.max_n_fraction:.0%} N; nothing to evaluate")
        if max_windows is not None and max_windows < len(self._starts):
            if max_windows < 1:
                raise UserError(f"max windows must be at least 1, got {max_windows}")
            pick = evenly_spaced(len(self._starts), max_windows)
            self._region_idx, self._starts = self._region_idx[pick], self._starts[pick]

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self._starts):
            raise IndexError(i)
        contig = self.regions[int(self._region_idx[i])].contig
        start = int(self._starts[i])
        tokens = np.asarray(self.store.tokens(contig)[start : start + self.seq_len], dtype=np.int64)
        return {"input_ids": torch.from_numpy(tokens), "contig": contig, "start": start}


class ResumableShardSampler(DistributedSampler):
    """Rank ``rank``'s indices of ``range(n)`` in order (``rank, rank + world, ...``), from position ``start``.

    ``len()`` is the rank's whole share of the epoch, also when ``start > 0``:
    Lightning counts the batches of an epoch it resumes part-way from there,
    so the epoch still ends where the uninterrupted one did. Being a
    ``DistributedSampler``, Lightning does not wrap it in another one.
    """

    def __init__(self, n: int, *, rank: int = 0, world: int = 1, start: int = 0):
        super().__init__(range(int(n)), num_replicas=int(world), rank=int(rank), shuffle=False, drop_last=False)
        self.n = int(n)
        self.start = max(0, int(start))

    def __iter__(self):
        idx = list(range(self.n))
        idx += idx[: self.total_size - len(idx)]  # pad like DistributedSampler (n is a multiple of world here)
        return iter(idx[self.rank : self.total_size : self.num_replicas][self.start :])


__all__ = ["RandomWindowDataset", "TiledWindowDataset", "ResumableShardSampler"]
