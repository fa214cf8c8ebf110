"""Inference: the one engine every inference command uses (:mod:`.engine`), reading FASTA or
token stores (:mod:`.sequences`) and sampling new sequence (:mod:`.sample`)."""
from __future__ import annotations

from .engine import (CHUNK_TOKENS, CPU_CHUNK_SIZE, DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE, POOLS, PRECISIONS,
                     InferenceEngine, PerBaseSink, Scores, autocast, check_precision, resolve_precision)
from .sequences import Sequences, as_token_list, open_sequences

__all__ = ["InferenceEngine", "PerBaseSink", "Scores", "Sequences", "open_sequences", "as_token_list",
           "autocast", "check_precision", "resolve_precision", "POOLS", "PRECISIONS", "DEFAULT_CHUNK_SIZE",
           "CPU_CHUNK_SIZE", "CHUNK_TOKENS", "DEFAULT_BATCH_SIZE"]
