"""``open_sequences(path)``: the one way inference commands read "a FASTA or a token store".

Returns a :class:`Sequences`: record names in file order, their lengths, and each record's
tokens on demand (``seqs[name]``), without reading a large genome into memory:

- a token store directory: each contig is its read-only ``uint8`` memmap, opened on use
  (a store of thousands of contigs never holds every memmap and file descriptor at once;
  :class:`~mamba_genome.data.store.TokenStore` keeps at most ``MAX_OPEN_CONTIGS`` open);
- a FASTA (plain, gzip, BGZF) smaller than ``SMALL_FASTA_BYTES`` on disk: read and encoded
  into memory;
- a larger FASTA: ingested once into a token store cached beside it
  (:func:`~mamba_genome.data.store.open_or_ingest`) and then read as above.

Used by ``embed``, ``evaluate`` and ``classify``. Also owns :func:`as_token_list`, which turns
what a Python caller passes (strings, token arrays, memmaps, tensors) into 1-D token arrays.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError

#: FASTA files at least this big (bytes on disk) are ingested to a token store and memory-mapped.
SMALL_FASTA_BYTES = 64 << 20


class Sequences:
    """Named token sequences from a FASTA or a token store (see the module docstring).

    Attributes:
        names: record (contig) names in file order.
        lengths: ``{name: length}`` in file order.
        source: ``"FASTA <path>"`` or ``"store <path>"``, for messages.
        store: the :class:`~mamba_genome.data.store.TokenStore` behind it, or None (in memory).
    """

    def __init__(self, names: list[str], lengths: dict[str, int], source: str, *, arrays: dict | None = None,
                 store=None):
        self.names, self.lengths, self.source = names, lengths, source
        self._arrays, self.store = arrays, store
        self._all_n = {c.name: c.all_n for c in store.contigs} if store is not None else None

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, name: str) -> np.ndarray:
        """Tokens of record ``name``: a 1-D ``uint8`` array (in memory) or read-only memmap."""
        if self._arrays is not None:
            return self._arrays[name]
        return self.store.tokens(name)

    def all_n(self, name: str) -> bool:
        """Whether record ``name`` is nothing but N (no base to score)."""
        from ..data.tokenizer import N

        if self._all_n is not None:
            return bool(self._all_n[name])
        t = self._arrays[name]
        return bool(len(t)) and bool(np.all(t == N))


def open_sequences(path, *, progress: bool = False, what: str | None = None,
                   in_memory_below: int | None = None) -> Sequences:
    """Open a FASTA file (plain/gzip/BGZF) or a token store directory for inference.

    Args:
        path: the FASTA or store.
        progress: progress bar while a large FASTA is ingested.
        what: the option naming ``path`` in error messages (e.g. ``"--fasta"``).
        in_memory_below: FASTA files smaller than this (bytes on disk) are read into memory,
            larger ones go through a token store (None: ``SMALL_FASTA_BYTES``).

    Raises:
        UserError (``InputFileError``): missing path, a directory that is not a store,
            not FASTA, no records, invalid characters (naming the record and position).
    """
    from ..data.store import TokenStore, is_store, open_or_ingest

    p = Path(path)
    label = f"{what} {p}" if what else str(p)
    if not p.exists():
        raise UserError(f"{label}: no such file or token store; check the path")
    if p.is_dir():
        if not is_store(p):
            raise UserError(f"{label} is a directory but not a token store (no manifest.json)")
        return _from_store(TokenStore.open(p), f"store {p}")
    if p.stat().st_size < (SMALL_FASTA_BYTES if in_memory_below is None else in_memory_below):
        from ..data.fasta import iter_fasta_records
        from ..data.tokenizer import encode

        arrays = {name: encode(seq, name=name) for name, seq in iter_fasta_records(p)}
        if not arrays:
            raise UserError(f"{p}: no FASTA records")
        return Sequences(list(arrays), {k: len(v) for k, v in arrays.items()}, f"FASTA {p}", arrays=arrays)
    return _from_store(open_or_ingest(p, progress=progress), f"FASTA {p}")


def iter_sequences(path, *, what: str | None = None):
    """Yield ``(name, tokens)`` for every record of a FASTA or token store, in file order, lazily.

    Unlike :func:`open_sequences`, a FASTA is read record by record (nothing is ingested or held
    whole), so a consumer such as ``classify`` can emit results before the input has been read.

    Raises:
        UserError: as :func:`open_sequences` (missing path, not FASTA, no records, bad characters).
    """
    p = Path(path)
    if p.is_dir() or not p.exists():
        seqs = open_sequences(p, what=what)
        for name in seqs.names:
            yield name, seqs[name]
        return
    from ..data.fasta import iter_fasta_records
    from ..data.tokenizer import encode

    n = 0
    for name, seq in iter_fasta_records(p):
        n += 1
        yield name, encode(seq, name=name)
    if n == 0:
        raise UserError(f"{p}: no FASTA records")


def _from_store(store, source: str) -> Sequences:
    lengths = dict(store.lengths)
    return Sequences(list(lengths), lengths, source, store=store)


def as_token_list(seqs) -> tuple[bool, list]:
    """(single input?, list of 1-D uint8/int token arrays or memmaps) from a Python caller's input.

    Accepts a DNA string, a list of strings, a 1-D token array (one sequence), a 2-D token
    array (B, L), a list of token arrays, numpy memmaps (never copied) or tensors.

    Raises:
        UserError: an empty sequence, a non-integer or out-of-vocabulary token array.
    """
    import torch

    from ..data.tokenizer import VOCAB_SIZE, encode

    def one(x, i):
        if len(x) == 0:
            raise UserError(f"sequence {i} is empty; every sequence needs at least one base")
        if isinstance(x, (str, bytes, bytearray)):
            return encode(x, name=f"sequence {i}")
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        arr = x if isinstance(x, np.memmap) else np.asarray(x)
        if arr.ndim != 1:
            raise UserError(f"sequence {i}: token arrays must be 1-D, got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise UserError(f"sequence {i}: token arrays must be integers, got {arr.dtype}")
        if arr.size and not isinstance(arr, np.memmap) and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
            raise UserError(f"sequence {i}: token ids must be in [0, {VOCAB_SIZE}), got {arr.min()}..{arr.max()}")
        return arr

    if isinstance(seqs, (str, bytes, bytearray)):
        return True, [one(seqs, 0)]
    if isinstance(seqs, (np.ndarray, torch.Tensor)):
        if seqs.ndim == 1:
            return True, [one(seqs, 0)]
        if seqs.ndim == 2:
            return False, [one(row, i) for i, row in enumerate(seqs)]
        raise UserError(f"token input must be 1-D or 2-D, got shape {tuple(seqs.shape)}")
    return False, [one(x, i) for i, x in enumerate(seqs)]


__all__ = ["Sequences", "open_sequences", "iter_sequences", "as_token_list", "SMALL_FASTA_BYTES"]
