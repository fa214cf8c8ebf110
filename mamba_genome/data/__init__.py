"""Genome data: tokenizer, FASTA reading, token stores, train/val/test splits, samplers.

Modules, one concern each:

- ``tokenizer``: the fixed 10-token nucleotide vocabulary and ``encode``/``decode``.
- ``fasta``: reading and validating FASTA (plain, gzip, BGZF), streaming tokens.
- ``store``: ``ingest`` a reference into a memory-mapped token store; ``TokenStore``.
- ``splits``: train/val/test regions by contig, BED file or held-out contig tails.
- ``windows``: the windows core (a region by weight, a start, N retries, reverse complement),
  shared by pretraining's and fine-tuning's training windows.
- ``sampler``: torch Datasets of random or tiled windows over a store (pretraining).
- ``labels``: labelled FASTAs, class splits, class-balanced and fixed windows (fine-tuning).

The names below are imported lazily so ``import mamba_genome.data`` stays cheap
(torch is only imported when a sampler is used).
"""
from __future__ import annotations

import importlib

from .tokenizer import (  # noqa: F401  (cheap: numpy only)
    TOKENIZER_VERSION,
    VOCAB,
    VOCAB_SIZE,
    decode,
    encode,
    encode_with_stats,
    reverse_complement,
    reverse_complement_tokens,
)

_LAZY = {
    "detect_format": "fasta",
    "iter_fasta_records": "fasta",
    "stream_fasta_tokens": "fasta",
    "ingest": "store",
    "open_or_ingest": "store",
    "TokenStore": "store",
    "ContigInfo": "store",
    "Region": "splits",
    "SplitPlan": "splits",
    "make_splits": "splits",
    "RandomWindowDataset": "sampler",
    "TiledWindowDataset": "sampler",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TOKENIZER_VERSION", "VOCAB", "VOCAB_SIZE", "decode", "encode", "encode_with_stats",
    "reverse_complement", "reverse_complement_tokens", *_LAZY,
]
