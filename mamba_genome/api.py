"""Python API for downstream pipelines: ``mamba_genome.load(path)`` -> :class:`GenomeModel`.

    >>> import mamba_genome
    >>> m = mamba_genome.load("runs/pretrain")                 # doctest: +SKIP
    >>> m.embed(["ACGT" * 100, "GATTACA" * 50]).shape          # doctest: +SKIP
    (2, 256)
    >>> m.score("ACGTACGT").log_likelihood                     # doctest: +SKIP

Owns how sequences go through a trained model for embeddings, likelihoods and
class probabilities. Everything is *streamed*: each batch of sequences is fed
through the model ``chunk_size`` positions at a time with the conv and SSM
states carried between chunks (``MambaLM.allocate_state`` +
``backbone(..., state=...)``), which gives the same numbers as one pass while
memory stays bounded by the chunk, not the sequence. Pooling is accumulated
on the fly (a float64 running sum for ``mean``; the final position for
``last``); per-base output goes into one preallocated array per sequence or,
for whole genomes, to a caller-supplied :class:`PerBaseSink` (an HDF5 file).

Batches mix sequences of different lengths by right-padding. The model is
causal, so padding after a sequence never changes its outputs; finished
sequences are dropped from the batch (and from the carried state) as soon as
they end. Inputs are sorted by length to keep the padding small.

Scoring convention (matches pretraining, which used next-token prediction on
raw windows with no ``<bos>``): the base at position ``p >= 1`` is scored
with ``log P(x_p | x_0..x_{p-1})``; position 0 has no prediction and is
``NaN`` in ``per_base``. ``log_likelihood`` is the sum over positions
``1..L-1`` in nats (so a sequence of length 1 scores 0).
"""
from __future__ import annotations

import sys
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np
import torch

from .errors import UserError
from .device import resolve_device as _resolve_device

POOLS = ("mean", "last", None)
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 autocast on a CUDA GPU that supports it, else fp32
#: Positions per streamed chunk when ``chunk_size=None``. On a GPU at least this, and more while
#: fewer sequences of a batch are still running, so that about ``CHUNK_TOKENS`` are in flight.
DEFAULT_CHUNK_SIZE = 1 << 17
#: Positions in flight per streamed step with ``chunk_size=None`` (a full batch of 8 at
#: ``DEFAULT_CHUNK_SIZE``, or one long record in 2^20 chunks): one 7m forward at 2^20 keeps
#: the GPU busy (single 2^17 chunks run about 15% slower on an H100) within about 11 GiB.
CHUNK_TOKENS = 8 * DEFAULT_CHUNK_SIZE
#: Sequences per batch on CPU, and the least per batch on a GPU, when ``batch_size=None``.
DEFAULT_BATCH_SIZE = 8


class PerBaseSink(Protocol):
    """Receives per-base embeddings chunk by chunk (e.g. an HDF5 writer).

    ``write(index, row, values, combine)``: ``values`` (n, d) float32 are rows
    ``row .. row+n-1`` of sequence ``index`` (after ``stride`` subsampling, in
    forward coordinates). ``combine`` is ``"set"`` or ``"mean"`` (average with
    what was written before: the reverse-complement pass of ``rc_average``).
    """

    def write(self, index: int, row: int, values: np.ndarray, combine: str = "set") -> None: ...


class _ArraySink:
    """Default sink: one preallocated (ceil(L/stride), d) float32 array per sequence."""

    def __init__(self, lengths: Sequence[int], d: int, stride: int):
        self.arrays = [np.zeros(((n + stride - 1) // stride, d), dtype=np.float32) for n in lengths]

    def write(self, index, row, values, combine="set"):
        dst = self.arrays[index][row: row + len(values)]
        if combine == "mean":
            dst += values
            dst *= 0.5
        else:
            dst[...] = values


@dataclass
class ScoreResult:
    """Output of :meth:`GenomeModel.score`.

    ``log_likelihood`` (n,) float64: sum of per-base log-probabilities in nats
    over positions 1..L-1. ``per_base``: one float32 array (L,) per sequence;
    entry 0 is NaN (nothing precedes it). ``n_scored`` (n,): L - 1.
    """

    log_likelihood: np.ndarray
    per_base: list[np.ndarray]
    n_scored: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def nats_per_base(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return -self.log_likelihood / np.maximum(self.n_scored, 1)

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
        single, toks = _as_token_list(seqs)
        layer = self._check_layer(layer)
        lengths = [len(t) for t in toks]
        d = self.d_model
        if pool is None:
            own = sink is None
            out_sink = _ArraySink(lengths, d, stride) if own else sink
        else:
            pooled = np.zeros((len(toks), d), dtype=np.float64)
        passes = (False, True) if rc_average else (False,)
        bar = self._bar(progress, sum(lengths) * len(passes), "embed")
        try:
            for rc in passes:
                for idx, batch_pooled in self._embed_pass(toks, lengths, pool, layer, chunk_size, batch_size, rc,
                                                          precision, bar, stride, out_sink if pool is None else None):
                    if pool is not None:
                        pooled[idx] = batch_pooled if not rc else (pooled[idx] + batch_pooled) / 2
        finally:
            bar.close()
        if pool is None:
            if not own:
                return None
            return out_sink.arrays[0] if single else out_sink.arrays
        pooled = pooled.astype(np.float32)
        return pooled[0] if single else pooled

    def score(self, seqs, chunk_size: int | None = None, batch_size: int | None = None, precision: str = "auto",
              progress: bool = False) -> ScoreResult:
        """Per-base log-probabilities and total log-likelihood (nats) under the LM.

        Position p >= 1 is scored as log P(x_p | x_<p); position 0 is NaN (see
        the module docstring). Streamed with ``chunk_size`` like :meth:`embed`.
        """
        _, toks = _as_token_list(seqs)
        lengths = [len(t) for t in toks]
        per_base = [np.full(n, np.nan, dtype=np.float32) for n in lengths]
        bar = self._bar(progress, sum(lengths), "score")
        head = self.lm.lm_head
        V = self.config.vocab_size
        try:
            for idx, blens, chunks in self._batches(toks, lengths, chunk_size, batch_size, rc=False):
                carry = None  # (B_active, V) log-probs predicting the next chunk's first base
                for s, e, ids, active, hidden in self._run(chunks, blens, None, precision, bar):
                    logp = torch.log_softmax(head(hidden)[..., :V].float(), dim=-1)   # (B, c, V)
                    tgt = ids.long()
                    lp = torch.empty(tgt.shape, dtype=torch.float32, device=tgt.device)
                    lp[:, 1:] = logp[:, :-1].gather(-1, tgt[:, 1:, None]).squeeze(-1)
                    lp[:, 0] = float("nan") if carry is None else carry.gather(-1, tgt[:, :1]).squeeze(-1)
                    carry = logp[:, -1]
                    lp = lp.cpu().numpy()
                    for j, b in enumerate(active):
                        n = min(e, blens[b]) - s
                        per_base[idx[b]][s: s + n] = lp[j, :n]
                    rows = _rows_still_running(active, blens, e, carry.device)
                    if rows is not None:
                        carry = carry[rows]
        finally:
            bar.close()
        ll = np.array([float(np.nansum(p[1:], dtype=np.float64)) for p in per_base])
        return ScoreResult(ll, per_base, np.array([max(n - 1, 0) for n in lengths], dtype=np.int64))

    def classify(self, seqs, chunk_size: int | None = None, batch_size: int | None = None, precision: str = "auto",
                 progress: bool = False) -> np.ndarray:
        """Class probabilities (n, num_classes) of a fine-tuned classifier (whole sequences, streamed).

        The label names are ``self.labels``. Raises ``UserError`` for a plain LM.
        """
        if self.model_type != "classifier":
            raise UserError(f"{self.path or 'this model'} is a language model with no classification head; "
                            "fine-tune it first (`mamba-genome finetune`)")
        single, _ = _as_token_list(seqs)
        pooled = self.embed(seqs, pool=self.model.pooling, chunk_size=chunk_size, batch_size=batch_size,
                            precision=precision, progress=progress)
        pooled = np.atleast_2d(pooled)
        with torch.no_grad():
            head = self.model.head
            logits = head(torch.from_numpy(pooled).to(device=head.weight.device, dtype=head.weight.dtype))
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return probs[0] if single else probs

    @property
    def labels(self) -> list[str] | None:
        return self.meta.get("extra", {}).get("labels")

    # -------------------------------------------------------------- internals
    def _check_layer(self, layer):
        if layer is None:
            return None
        n = self.n_layer
        if not -n <= layer < n:
            raise UserError(f"--layer must be in 0..{n - 1} (or -{n}..-1 from the end) for this {n}-layer model, "
                            f"got {layer}")
        return layer % n

    def _bar(self, progress: bool, total: int, desc: str):
        from .progress import progress_bar

        return progress_bar(total=total, unit="bp", unit_scale=True, desc=desc, disable=not progress, file=sys.stderr,
                    leave=False, dynamic_ncols=True)

    def _batches(self, toks, lengths, chunk_size, batch_size, rc):
        """Yield (original indices, lengths, chunk reader) per batch, longest sequences first.

        ``batch_size=None``: on a GPU, each batch takes as many sequences as fill about
        CHUNK_TOKENS positions at its first (longest) sequence's step length, at least
        DEFAULT_BATCH_SIZE, so short records (BED regions, tiles, reads) run hundreds at a time;
        on CPU, DEFAULT_BATCH_SIZE."""
        if batch_size is not None and batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {batch_size}")
        gpu = self.device.type == "cuda"
        if chunk_size is not None and int(chunk_size) < 1:
            raise UserError(f"--chunk-size must be >= 1, got {chunk_size}")
        # GPU default: adaptive steps (see CHUNK_TOKENS); CPU: fixed, to keep a laptop's peak memory small
        chunk = int(chunk_size) if chunk_size is not None else (None if gpu else DEFAULT_CHUNK_SIZE)
        order = sorted(range(len(toks)), key=lambda i: -lengths[i])
        order = [i for i in order if lengths[i] > 0]
        k = 0
        while k < len(order):
            n = batch_size
            if n is None:
                step = min(lengths[order[k]], chunk or DEFAULT_CHUNK_SIZE)
                n = max(DEFAULT_BATCH_SIZE, CHUNK_TOKENS // step) if gpu else DEFAULT_BATCH_SIZE
            idx = order[k: k + n]
            k += n
            blens = [lengths[i] for i in idx]
            yield idx, blens, _ChunkReader([toks[i] for i in idx], blens, chunk, rc)

    def resolve_precision(self, precision: str) -> str:
        """``"fp32"`` or ``"bf16"``: ``"auto"`` is bf16 on a CUDA device that supports it."""
        check_precision(precision)
        if precision == "auto":
            cuda = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            return "bf16" if cuda else "fp32"
        return precision

    def _run(self, chunks, blens, layer, precision, bar):
        """Stream one batch: yield (start, end, ids (B_act, c), active batch positions, hidden (B_act, c, d))."""
        precision = self.resolve_precision(precision)
        dev = self.device
        amp = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext())
        active = list(range(len(blens)))
        state = self.lm.allocate_state(len(blens), dev)
        pending = _PendingProgress(bar, dev)
        with torch.no_grad(), amp:
            for s, e in chunks.spans():
                host = torch.from_numpy(chunks.read(s, e, active))     # uint8 tokens
                if dev.type == "cuda":
                    # pinned, so the copy is queued behind the running step and the host goes on
                    # reading the next chunk instead of waiting for the GPU (no sync per step)
                    host = host.pin_memory()
                ids = host.to(dev, non_blocking=True).long()
                hidden = self.lm.backbone(ids, state=state, output_layer=layer)   # (B_act, c, d)
                yield s, e, ids, active, hidden
                pending.add(sum(min(e, blens[b]) - s for b in active))
                rows = _rows_still_running(active, blens, e, dev)
                if rows is not None:
                    state = [type(st)(conv=st.conv[rows], ssm=st.ssm[rows]) for st in state]
                    active = [b for b in active if blens[b] > e]
        pending.flush()

    def _embed_pass(self, toks, lengths, pool, layer, chunk_size, batch_size, rc, precision, bar, stride, sink):
        for idx, blens, chunks in self._batches(toks, lengths, chunk_size, batch_size, rc):
            acc = torch.zeros(len(idx), self.d_model, dtype=torch.float64, device=self.device)
            for s, e, _ids, active, hidden in self._run(chunks, blens, layer, precision, bar):
                if pool == "mean":
                    if all(blens[b] >= e for b in active):   # no padding in this chunk: one reduction
                        # while every record of the batch runs, no index tensor (a host-to-device copy)
                        sel = slice(None) if len(active) == len(idx) else torch.tensor(active, device=hidden.device)
                        acc[sel] += hidden.sum(1, dtype=torch.float32).double()
                    else:
                        for j, b in enumerate(active):
                            acc[b] += hidden[j, : min(e, blens[b]) - s].sum(0, dtype=torch.float32).double()
                elif pool == "last":
                    ends = [j for j, b in enumerate(active) if blens[b] <= e]
                    if ends:
                        last = [min(e, blens[active[j]]) - s - 1 for j in ends]
                        acc[[active[j] for j in ends]] = hidden[ends, last].double()
                else:
                    self._write_per_base(hidden, s, active, blens, idx, rc, stride, sink)
            if pool is not None:
                if pool == "mean":
                    acc /= torch.tensor(blens, dtype=torch.float64, device=acc.device)[:, None]
                yield idx, acc.cpu().numpy()

    @staticmethod
    def _write_per_base(hidden, s, active, blens, idx, rc, stride, sink):
        h = hidden.float().cpu().numpy()
        for j, b in enumerate(active):
            L = blens[b]
            n = min(s + h.shape[1], L) - s
            rows = h[j, :n]
            if rc:  # RC positions s..s+n-1 are forward positions L-1-s .. L-s-n
                rows = rows[::-1]
                first = L - s - n
            else:
                first = s
            # keep forward positions p with p % stride == 0
            off = (-first) % stride
            rows = rows[off::stride]
            if len(rows):
                sink.write(idx[b], (first + off) // stride, np.ascontiguousarray(rows),
                           "mean" if rc else "set")


def check_precision(precision: str) -> None:
    """Raise ``UserError`` unless ``precision`` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}; got '{precision}'")


def _rows_still_running(active, blens, e, device) -> torch.Tensor | None:
    """Rows of the active batch whose records go past ``e``, or None while all do. Decided on
    the host from the lengths, so a streamed step needs no device sync unless a record ends."""
    keep = [j for j, b in enumerate(active) if blens[b] > e]
    return None if len(keep) == len(active) else torch.tensor(keep, dtype=torch.long, device=device)


class _PendingProgress:
    """Advances a progress bar when the GPU *finishes* a step, not when the host queues it.

    The streaming loop never waits for the GPU, so the host runs a few steps ahead; a CUDA event
    per step, polled without blocking, keeps the bar (and its bp/s) honest."""

    def __init__(self, bar, device: torch.device):
        self.bar = bar
        self.cuda = bar is not None and device.type == "cuda"
        self.stream = torch.cuda.current_stream(device) if self.cuda else None
        self.queue: deque = deque()

    def add(self, n: int) -> None:
        if self.bar is None:
            return
        if not self.cuda:
            self.bar.update(n)
            return
        ev = torch.cuda.Event()
        ev.record(self.stream)
        self.queue.append((ev, n))
        while self.queue and self.queue[0][0].query():
            self.bar.update(self.queue.popleft()[1])

    def flush(self) -> None:
        while self.queue:
            ev, n = self.queue.popleft()
            ev.synchronize()
            self.bar.update(n)


class _ChunkReader:
    """Reads (B_active, c) uint8 chunks of a batch from strings' tokens or memmaps, RC on the fly."""

    def __init__(self, toks, lengths, chunk: int | None, rc: bool):
        self.toks, self.lengths, self.chunk, self.rc = toks, lengths, chunk, rc

    def spans(self) -> Iterable[tuple[int, int]]:
        """(start, end) of each streamed step: ``chunk`` positions, or with ``chunk`` None
        CHUNK_TOKENS / (sequences still running), at least DEFAULT_CHUNK_SIZE, so the
        steps stay large as the shorter sequences of a batch finish."""
        Lmax = max(self.lengths)
        s = 0
        while s < Lmax:
            c = self.chunk or max(DEFAULT_CHUNK_SIZE, CHUNK_TOKENS // sum(L > s for L in self.lengths))
            yield s, min(s + c, Lmax)
            s += c

    def read(self, s: int, e: int, active: list[int]) -> np.ndarray:
        from .data.tokenizer import COMPLEMENT, PAD

        out = np.full((len(active), e - s), PAD, dtype=np.uint8)   # token ids < VOCAB_SIZE <= 256
        for j, b in enumerate(active):
            L = self.lengths[b]
            hi = min(e, L)
            if hi <= s:
                continue
            if self.rc:
                piece = COMPLEMENT[np.asarray(self.toks[b][L - hi: L - s])][::-1]
            else:
                piece = np.asarray(self.toks[b][s:hi])
            out[j, : hi - s] = piece
        return out


def _as_token_list(seqs) -> tuple[bool, list]:
    """(single input?, list of 1-D uint8 token arrays / memmaps)."""
    from .data.tokenizer import VOCAB_SIZE, encode

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
    toks = [one(x, i) for i, x in enumerate(seqs)]
    return False, toks


__all__ = ["load", "GenomeModel", "ScoreResult", "PerBaseSink", "DEFAULT_CHUNK_SIZE", "CHUNK_TOKENS",
           "DEFAULT_BATCH_SIZE", "POOLS", "PRECISIONS"]
