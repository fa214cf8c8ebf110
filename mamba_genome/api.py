"""Python API for downstream pipelines: ``mamba_genome.load(path)`` -> :class:`GenomeModel`.

    >>> import mamba_genome
    >>> m = mamba_genome.load("runs/pretrain")                 # doctest: +SKIP
    >>> m.embed(["ACGT" * 100, "GATTACA" * 50]).shape          # doctest: +SKIP
    (2, 256)
    >>> m.score("ACGTACGT").log_likelihood                     # doctest: +SKIP

A thin facade over the inference engine (:mod:`mamba_genome.inference`), which owns how
sequences go through the model: streaming with the conv and SSM states carried (memory
bounded by ``chunk_size``, not the sequence), batching by length, the precision policy and
the likelihood definition. This module owns the user-facing argument handling: what input
kinds are accepted, single-sequence vs list results, in-memory per-base arrays, progress bars.

Scoring convention (matches pretraining, which used next-token prediction on raw windows
with no ``<bos>``; :mod:`mamba_genome.model.likelihood`): the base at position ``p >= 1`` is
scored with ``log P(x_p | x_0..x_{p-1})``; position 0 has no prediction. Targets that are N
(or PAD) are not scored. ``per_base`` is ``NaN`` wherever nothing is scored;
``log_likelihood`` is the sum over scored positions in nats (a sequence of length 1 scores 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .device import resolve_device as _resolve_device
from .errors import UserError
from .inference.engine import (CHUNK_TOKENS, DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE, POOLS, PRECISIONS,
                               ArraySink, InferenceEngine, PerBaseSink, check_precision, progress_bar)
from .inference.sequences import as_token_list as _as_token_list


@dataclass
class ScoreResult:
    """Output of :meth:`GenomeModel.score`.

    ``log_likelihood`` (n,) float64: sum of per-base log-probabilities in nats over the
    scored positions (1..L-1, not N). ``per_base``: one float32 array (L,) per sequence; NaN
    where not scored (entry 0, N). ``n_scored`` (n,): the scored positions. ``entropy``
    (with ``score(..., entropy=True)``): one float32 (L,) array per sequence, the entropy
    in nats of the model's prediction of each scored base, NaN elsewhere.
    """

    log_likelihood: np.ndarray
    per_base: list[np.ndarray]
    n_scored: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    entropy: list[np.ndarray] | None = None

    @property
    def nats_per_base(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return -self.log_likelihood / np.maximum(self.n_scored, 1)

    @property
    def bits_per_base(self) -> np.ndarray:
        return self.nats_per_base / np.log(2.0)

    def __getitem__(self, key):  # dict-style access for convenience
        return getattr(self, key)


def load(path, device=None) -> "GenomeModel":
    """Load a model directory or run directory (its ``best/``) as a :class:`GenomeModel`.

    Raises:
        CheckpointError: missing or incomplete checkpoint files.
    """
    from .checkpoint import load_model

    dev = _resolve_device(device)
    model, meta = load_model(path, device=dev)
    return GenomeModel(model, meta=meta, path=str(path))


def load_while(path, read, device=None):
    """``(load(path, device), read())``: the model loads on a worker thread (checkpoint, CUDA
    context, weights onto the device) while ``read`` runs on this one, typically reading or
    ingesting the input (a 100 Mbp FASTA's first ingest takes about 0.5 s). An error of ``read``
    is raised before one of the load (after the load has finished)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mamba-genome-load") as pool:
        loading = pool.submit(load, path, device)
        value = read()   # an error leaves the block, which waits for the load and drops its outcome
        return loading.result(), value


class GenomeModel:
    """A loaded model with ``embed``, ``score`` and (for classifiers) ``classify``.

    Args:
        model: a :class:`~mamba_genome.model.lm.MambaLM`, or a classifier with
            a ``.backbone`` LM and a ``.head``.
        meta: the checkpoint's ``config.json`` contents (optional).
        path: where it was loaded from (recorded in output files).
    """

    def __init__(self, model: torch.nn.Module, meta: dict | None = None, path: str | None = None):
        self.model = model.eval()
        self.meta = meta or {}
        self.path = path
        self.model_type = getattr(model, "model_type", "lm")
        self.lm = model.backbone if self.model_type == "classifier" else model
        self.engine = InferenceEngine(self.lm)
        self.config = self.lm.config
        self.d_model = self.config.d_model
        self.n_layer = self.config.n_layer

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def __repr__(self) -> str:
        return (f"GenomeModel({self.path or 'in memory'}, type={self.model_type}, d_model={self.d_model}, "
                f"n_layer={self.n_layer}, device={self.device})")

    # ---------------------------------------------------------------- public
    def embed(self, seqs, pool: str | None = "mean", layer: int | None = None, chunk_size: int | None = None,
              batch_size: int | None = None, rc_average: bool = False, precision: str = "auto",
              progress: bool = False,
              stride: int = 1, sink: PerBaseSink | None = None):
        """Embeddings of one or many sequences.

        Args:
            seqs: a DNA string, a list of strings, a 1-D token array (one
                sequence), a 2-D token array (B, L) or a list of token arrays
                (numpy memmaps are read chunk by chunk, never copied whole).
            pool: ``"mean"`` (average over positions), ``"last"`` (final
                position, which has seen the whole sequence) or ``None``
                (per-base embeddings).
            layer: block index k (0-based; negative counts from the end) whose
                residual stream is returned, RMS-normed; ``None`` = final layer.
            chunk_size: positions per streamed chunk (``None``: on a GPU ``CHUNK_TOKENS`` / the
                batch's sequences still running, at least ``DEFAULT_CHUNK_SIZE``; on CPU
                ``DEFAULT_CHUNK_SIZE``). Results equal a single pass.
            batch_size: sequences run together (``None``: on a GPU as many as fill about
                ``CHUNK_TOKENS`` positions, at least ``DEFAULT_BATCH_SIZE``; on CPU ``DEFAULT_BATCH_SIZE``).
            rc_average: average with the reverse complement's embedding (per
                base: the RC output is flipped back to forward coordinates).
            precision: ``"auto"`` (bf16 on a CUDA GPU that supports it, else fp32), ``"fp32"``
                or ``"bf16"`` (autocast; output is float32).
            progress: tqdm bar in base pairs on stderr.
            stride: per-base only: keep every ``stride``-th position (0, s, 2s, ...).
            sink: per-base only: a :class:`PerBaseSink` receiving the rows
                instead of in-memory arrays (then ``None`` is returned).

        Returns:
            pooled: float32 (n, d_model), or (d_model,) for a single string /
            1-D token input. ``pool=None``: a list of (ceil(L_i/stride), d_model)
            float32 arrays (one array for a single input).
        """
        if pool not in POOLS:
            raise UserError(f"--pool must be mean, last or none, got '{pool}'")
        if stride < 1:
            raise UserError(f"--stride must be >= 1, got {stride}")
        if stride != 1 and pool is not None:
            raise UserError("--stride only applies to per-base output (--pool none)")
        check_precision(precision)
        single, toks = _as_token_list(seqs)
        self.engine.check_layer(layer)
        own = pool is None and sink is None
        if own:
            sink = ArraySink([len(t) for t in toks], self.d_model, stride)
        bar = self._bar(progress, sum(len(t) for t in toks) * (2 if rc_average else 1), "embed")
        try:
            pooled = self.engine.embed(toks, pool=pool, layer=layer, chunk_size=chunk_size, batch_size=batch_size,
                                       rc_average=rc_average, precision=precision, bar=bar, stride=stride,
                                       sink=sink if pool is None else None)
        finally:
            bar.close()
        if pool is None:
            if not own:
                return None
            return sink.arrays[0] if single else sink.arrays
        return pooled[0] if single else pooled

    def score(self, seqs, chunk_size: int | None = None, batch_size: int | None = None, precision: str = "auto",
              progress: bool = False, entropy: bool = False) -> ScoreResult:
        """Per-base log-probabilities and total log-likelihood (nats) under the LM.

        Position p >= 1 is scored as log P(x_p | x_<p) unless x_p is N; position 0 and N are
        NaN in ``per_base`` (see the module docstring). Streamed with ``chunk_size`` like
        :meth:`embed`. ``entropy``: also the predictive entropy per base (``ScoreResult.entropy``).
        """
        check_precision(precision)
        _, toks = _as_token_list(seqs)
        bar = self._bar(progress, sum(len(t) for t in toks), "score")
        try:
            s = self.engine.score(toks, chunk_size=chunk_size, batch_size=batch_size, precision=precision, bar=bar,
                                  per_base=True, entropy=entropy)
        finally:
            bar.close()
        return ScoreResult(s.log_likelihood, s.per_base, s.n_scored, s.entropy)

    def classify(self, seqs, chunk_size: int | None = None, batch_size: int | None = None, precision: str = "auto",
                 progress: bool = False) -> np.ndarray:
        """Class probabilities (n, num_classes) of a fine-tuned classifier (whole sequences, streamed).

        The label names are ``self.labels``. Raises ``UserError`` for a plain LM.
        """
        if self.model_type != "classifier":
            raise UserError(f"{self.path or 'this model'} is a language model with no classification head; "
                            "fine-tune it first (`mamba-genome finetune`)")
        check_precision(precision)
        single, toks = _as_token_list(seqs)
        passes = 2 if self.model.strands == "both" else 1   # the reverse-complement pass streams them again
        bar = self._bar(progress, passes * sum(len(t) for t in toks), "classify")
        try:
            lp = self.model.class_log_probs(toks, chunk_size=chunk_size, batch_size=batch_size, precision=precision,
                                            bar=bar)
        finally:
            bar.close()
        probs = np.exp(lp).astype(np.float32)
        return probs[0] if single else probs

    @property
    def labels(self) -> list[str] | None:
        return self.meta.get("extra", {}).get("labels")

    def resolve_precision(self, precision: str) -> str:
        """``"fp32"`` or ``"bf16"``: ``"auto"`` is bf16 on a CUDA device that supports it."""
        return self.engine.resolve_precision(precision)

    # -------------------------------------------------------------- internals
    def _bar(self, progress: bool, total: int, desc: str):
        return progress_bar(progress, total, desc)


__all__ = ["load", "load_while", "GenomeModel", "ScoreResult", "PerBaseSink", "check_precision", "DEFAULT_CHUNK_SIZE",
           "CHUNK_TOKENS", "DEFAULT_BATCH_SIZE", "POOLS", "PRECISIONS"]
