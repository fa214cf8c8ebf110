"""The one inference engine: how token sequences go through a trained Mamba LM.

Every inference command uses it: ``embed``, ``score``, ``classify``, ``evaluate``,
``finetune``'s test pass and the Python API (:mod:`mamba_genome.api` is a thin facade).
``generate`` shares its precision policy and prompt prefill (:mod:`.sample`).

- **Precision** (one rule, :func:`resolve_precision`): ``"auto"`` is bf16 autocast on a CUDA
  device where ``torch.cuda.is_bf16_supported()``, else fp32; ``"fp32"`` and ``"bf16"`` force it.
  Outputs are float32 either way.
- **Batching by length** (:meth:`InferenceEngine.batches`): sequences are sorted longest first
  and right-padded within a batch. The model is causal, so padding after a sequence never
  changes its outputs. On a GPU a batch takes as many sequences as fill about ``CHUNK_TOKENS``
  positions (at least ``DEFAULT_BATCH_SIZE``); on CPU ``DEFAULT_BATCH_SIZE``.
- **Streaming** (:meth:`InferenceEngine.stream`): each batch is fed ``chunk`` positions at a
  time with the conv and SSM states carried between chunks (``MambaLM.allocate_state`` +
  ``backbone(..., state=...)``): the same numbers as one pass, memory bounded by the chunk.
  Finished sequences leave the batch (and the carried state) as soon as they end. Tokens go to
  the device as uint8 (pinned on CUDA, so the host reads the next chunk while the GPU runs).
- **Outputs** (hooks on the streamed hidden states): pooled embeddings (a float64 running sum
  for ``mean``; the final position for ``last``) or per-base rows to a :class:`PerBaseSink`,
  of any layer (``layer=k``: the residual stream after block k, RMS-normed); logits; per-base
  target log-probabilities and predictive entropy; classifier log-probabilities. Per-base rows
  leave the device by a non-blocking copy into pinned memory and are written to the sink by one
  worker thread, in order (:class:`BackgroundWriter`), while the device runs the next chunk; the
  sink (e.g. the atomic :class:`~mamba_genome.io.EmbeddingWriter`) is committed only after the
  last write has finished.

Likelihood (one definition, :mod:`mamba_genome.model.likelihood`): the base at position
``p >= 1`` is scored with ``log P(x_p | x_0..x_{p-1})`` (no ``<bos>``, as in pretraining);
position 0 has no prediction; targets that are N or PAD are never scored. Per-base outputs
are NaN where nothing is scored.
"""
from __future__ import annotations

import sys
from collections import deque
from contextlib import nullcontext
from typing import Iterable, Iterator, NamedTuple, Protocol, Sequence

import numpy as np
import torch

from ..errors import UserError

POOLS = ("mean", "last", None)
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 autocast on a CUDA GPU that supports it, else fp32
#: Positions per streamed chunk when ``chunk_size=None``. On a GPU at least this, and more while
#: fewer sequences of a batch are still running, so that about ``CHUNK_TOKENS`` are in flight.
DEFAULT_CHUNK_SIZE = 1 << 17
#: Positions per streamed chunk on CPU when ``chunk_size=None``: the activations of a chunk stay
#: in the caches (tiny model, one 64 kbp sequence, one thread, 2026-12-01: 47.5 kbp per CPU-second
#: in 2^13 chunks, 37.3 in one 2^16 pass, 39-40 at 2^11-2^12 where the per-chunk work is small;
#: 1.4m: 6.4 against 5.6 at 2^15-2^14).
CPU_CHUNK_SIZE = 1 << 13
#: Positions in flight per streamed step with ``chunk_size=None`` (a full batch of 8 at
#: ``DEFAULT_CHUNK_SIZE``, or one long record in 2^20 chunks): one 7m forward at 2^20 keeps
#: the GPU busy (single 2^17 chunks run about 15% slower on an H100) within about 11 GiB.
CHUNK_TOKENS = 8 * DEFAULT_CHUNK_SIZE
#: Sequences per batch on CPU, and the least per batch on a GPU, when ``batch_size=None``.
DEFAULT_BATCH_SIZE = 8
#: Pooled rows per classifier-head call (bounds the device memory of a huge window list).
_HEAD_ROWS = 1 << 14


# ------------------------------------------------------------------ precision policy
def check_precision(precision: str) -> None:
    """Raise ``UserError`` unless ``precision`` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}; got '{precision}'")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"fp32"`` or ``"bf16"``: ``"auto"`` is bf16 on a CUDA device that supports it, else fp32."""
    check_precision(precision)
    if precision == "auto":
        cuda = torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported()
        return "bf16" if cuda else "fp32"
    return precision


def autocast(precision: str, device: torch.device | str):
    """The autocast context of ``precision`` (``"auto"`` resolved on ``device``)."""
    dev = torch.device(device)
    if resolve_precision(precision, dev) == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return nullcontext()


# ---------------------------------------------------------------------- sinks, bars
class PerBaseSink(Protocol):
    """Receives per-base embeddings chunk by chunk (e.g. an HDF5 writer).

    ``write(index, row, values, combine)``: ``values`` (n, d) float32 are rows
    ``row .. row+n-1`` of sequence ``index`` (after ``stride`` subsampling, in
    forward coordinates). ``combine`` is ``"set"`` or ``"mean"`` (average with
    what was written before: the reverse-complement pass of ``rc_average``).
    """

    def write(self, index: int, row: int, values: np.ndarray, combine: str = "set") -> None: ...


class ArraySink:
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


def progress_bar(progress: bool, total: int | None, desc: str, unit: str = "bp"):
    """Progress on stderr (disabled unless ``progress``): a bar on a terminal, plain lines in a log."""
    from ..progress import progress_bar as _bar

    return _bar(total=total, unit=unit, unit_scale=True, desc=desc, disable=not progress, file=sys.stderr,
                leave=False, dynamic_ncols=True)


# -------------------------------------------------------------------------- engine
class Batch(NamedTuple):
    """One batch: original indices, their lengths, and the reader of its chunks."""

    idx: list[int]
    lengths: list[int]
    reader: "ChunkReader"


class Chunk(NamedTuple):
    """One streamed step of a batch: positions ``start..end-1`` of the sequences still running.

    ``ids`` (B_act, c) int64 token ids (PAD past a sequence's end); ``active``: the batch
    positions of those rows; ``hidden`` (B_act, c, d_model).
    """

    start: int
    end: int
    ids: torch.Tensor
    active: list[int]
    hidden: torch.Tensor


class Scores(NamedTuple):
    """What :meth:`InferenceEngine.score` returns (see there)."""

    log_likelihood: np.ndarray
    n_scored: np.ndarray
    per_base: list[np.ndarray] | None
    entropy: list[np.ndarray] | None


class InferenceEngine:
    """Streams token sequences through ``lm`` (a :class:`~mamba_genome.model.lm.MambaLM`).

    All methods take ``toks``: an indexable of 1-D integer token arrays (or memmaps; only the
    chunk being run is read; ``toks[i]`` is looked up when its batch starts), and optionally
    ``lengths`` (default ``len(toks[i])``).
    ``chunk_size`` / ``batch_size`` ``None`` pick the defaults of the module docstring;
    ``bar`` is a progress bar advanced in bases (or None).
    """

    def __init__(self, lm: torch.nn.Module):
        self.lm = lm

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def resolve_precision(self, precision: str) -> str:
        """``"fp32"`` or ``"bf16"`` on this engine's device (see :func:`resolve_precision`)."""
        return resolve_precision(precision, self.device)

    def check_layer(self, layer: int | None) -> int | None:
        """``layer`` as a block index in 0..n_layer-1 (negative counts from the end); None stays None."""
        if layer is None:
            return None
        n = self.lm.config.n_layer
        if not -n <= layer < n:
            raise UserError(f"--layer must be in 0..{n - 1} (or -{n}..-1 from the end) for this {n}-layer model, "
                            f"got {layer}")
        return layer % n

    # ------------------------------------------------------------ batching, streaming
    def batches(self, toks, lengths: Sequence[int], chunk_size: int | None = None, batch_size: int | None = None,
                rc: bool = False) -> Iterator[Batch]:
        """Yield :class:`Batch` es, longest sequences first (empty sequences are skipped).

        ``batch_size=None``: on a GPU, each batch takes as many sequences as fill about
        CHUNK_TOKENS positions at its first (longest) sequence's step length, at least
        DEFAULT_BATCH_SIZE, so short records (BED regions, tiles, reads) run hundreds at a time;
        on CPU, DEFAULT_BATCH_SIZE. ``rc``: read the reverse complements."""
        if batch_size is not None and batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {batch_size}")
        if chunk_size is not None and int(chunk_size) < 1:
            raise UserError(f"--chunk-size must be >= 1, got {chunk_size}")
        gpu = self.device.type == "cuda"
        # GPU default: adaptive steps (see CHUNK_TOKENS); CPU: fixed, to keep a laptop's peak memory small
        chunk = int(chunk_size) if chunk_size is not None else (None if gpu else CPU_CHUNK_SIZE)
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
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
            yield Batch(idx, blens, ChunkReader([toks[i] for i in idx], blens, chunk, rc))

    def stream(self, batch: Batch, layer: int | None = None, precision: str = "auto", bar=None,
               state: list | None = None) -> Iterator[Chunk]:
        """Run one batch chunk by chunk with the recurrent state carried; yield :class:`Chunk` s.

        ``layer``: block index whose (RMS-normed) residual stream is ``hidden`` (None: final).
        ``state``: a list from ``lm.allocate_state(len(batch.idx))`` to start from; it is left
        updated (prompt prefill; rows of sequences that ended before the longest are dropped
        from it as they end); None: a fresh one. The bar advances when the device finishes a step.
        """
        blens = batch.lengths
        dev = self.device
        active = list(range(len(blens)))
        longest = max(blens)
        if state is None:
            state = self.lm.allocate_state(len(blens), dev)
        pending = _PendingProgress(bar, dev)
        with torch.no_grad(), autocast(precision, dev):
            for s, e in batch.reader.spans():
                # uint8 tokens, read straight into pinned memory on CUDA, so the copy is queued
                # behind the running step and the host goes on reading the next chunk instead of
                # waiting for the GPU (no sync per step, no second host copy)
                host = batch.reader.read(s, e, active, pin=dev.type == "cuda")
                ids = host.to(dev, non_blocking=True).long()
                hidden = self.lm.backbone(ids, state=state, output_layer=layer)   # (B_act, c, d)
                yield Chunk(s, e, ids, active, hidden)
                pending.add(sum(min(e, blens[b]) - s for b in active))
                rows = rows_still_running(active, blens, e, dev) if e < longest else None
                if rows is not None:   # in place, so a caller's state keeps the running rows
                    state[:] = [type(st)(conv=st.conv[rows], ssm=st.ssm[rows]) for st in state]
                    active = [b for b in active if blens[b] > e]
        pending.flush()

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final hidden states (..., d_model) -> next-token logits (..., vocab_size)."""
        return self.lm.lm_head(hidden)[..., : self.lm.config.vocab_size]

    # ---------------------------------------------------------------------- outputs
    def embed(self, toks, pool: str | None = "mean", layer: int | None = None, chunk_size: int | None = None,
              batch_size: int | None = None, rc_average: bool = False, precision: str = "auto", bar=None,
              stride: int = 1, sink: PerBaseSink | None = None, lengths: Sequence[int] | None = None
              ) -> np.ndarray | None:
        """Pooled embeddings float32 (n, d_model); with ``pool=None`` per-base rows go to ``sink``
        (every ``stride``-th position) and None is returned. ``rc_average``: the mean with the
        reverse complement's output (per base: flipped back to forward coordinates)."""
        if pool not in POOLS:
            raise UserError(f"--pool must be mean, last or none, got '{pool}'")
        if pool is None and sink is None:
            raise ValueError("per-base embeddings need a sink")
        layer = self.check_layer(layer)
        lengths = [len(t) for t in toks] if lengths is None else lengths
        pooled = np.zeros((len(lengths), self.lm.config.d_model), dtype=np.float64)
        # per-base rows are copied off the device and written by a worker thread (in order), so the
        # device runs the next chunk meanwhile
        writer = BackgroundWriter() if pool is None else None
        ok = False
        try:
            for rc in ((False, True) if rc_average else (False,)):
                for b in self.batches(toks, lengths, chunk_size, batch_size, rc):
                    out = self._embed_batch(b, pool, layer, precision, bar, rc, stride, sink, writer)
                    if out is not None:
                        pooled[b.idx] = out if not rc else (pooled[b.idx] + out) / 2
            ok = True
        finally:
            if writer is not None:
                writer.close(raise_error=ok)
        return None if pool is None else pooled.astype(np.float32)

    def _embed_batch(self, batch: Batch, pool, layer, precision, bar, rc, stride, sink, writer=None):
        idx, blens = batch.idx, batch.lengths
        acc = torch.zeros(len(idx), self.lm.config.d_model, dtype=torch.float64, device=self.device)
        for s, e, _ids, active, hidden in self.stream(batch, layer, precision, bar):
            if pool == "mean":
                if all(blens[b] >= e for b in active):   # no padding in this chunk: one reduction
                    acc[_rows(active, len(idx), hidden.device)] += hidden.sum(1, dtype=torch.float32).double()
                else:
                    for j, b in enumerate(active):
                        acc[b] += hidden[j, : min(e, blens[b]) - s].sum(0, dtype=torch.float32).double()
            elif pool == "last":
                ends = [j for j, b in enumerate(active) if blens[b] <= e]
                if ends:
                    last = [min(e, blens[active[j]]) - s - 1 for j in ends]
                    acc[[active[j] for j in ends]] = hidden[ends, last].double()
            else:
                host, ready = to_host(hidden.float())
                writer.submit(_write_per_base, host, ready, s, list(active), blens, idx, rc, stride, sink)
        if pool is None:
            return None
        if pool == "mean":
            acc /= torch.tensor(blens, dtype=torch.float64, device=acc.device)[:, None]
        return acc.cpu().numpy()

    def score(self, toks, chunk_size: int | None = None, batch_size: int | None = None, precision: str = "auto",
              bar=None, per_base: bool = False, entropy: bool = False, lengths: Sequence[int] | None = None
              ) -> Scores:
        """Log-likelihoods under the LM (nats), streamed; the definition is the module docstring's.

        Returns :class:`Scores`: ``log_likelihood`` (n,) float64, the sum over scored targets;
        ``n_scored`` (n,) int64; with ``per_base`` one float32 (L,) array of target
        log-probabilities per sequence and with ``entropy`` one of the predictive entropy of
        each position's base (both NaN where not scored: position 0, N, PAD); else None.
        """
        lengths = [len(t) for t in toks] if lengths is None else lengths
        n = len(lengths)
        ll = np.zeros(n, dtype=np.float64)
        count = np.zeros(n, dtype=np.int64)
        pb = [np.full(L, np.nan, dtype=np.float32) for L in lengths] if per_base else None
        ent = [np.full(L, np.nan, dtype=np.float32) for L in lengths] if entropy else None
        dsts = [d for d in (pb, ent) if d is not None]
        # per-base values leave the device without a wait and are filled in by a worker thread
        writer = BackgroundWriter() if dsts else None
        try:
            self._score_batches(toks, lengths, chunk_size, batch_size, precision, bar, per_base, entropy, ll, count,
                                dsts, writer)
        except BaseException:
            if writer is not None:
                writer.close(raise_error=False)
            raise
        if writer is not None:
            writer.close()
        return Scores(ll, count, pb, ent)

    def _score_batches(self, toks, lengths, chunk_size, batch_size, precision, bar, per_base, entropy, ll, count,
                       dsts, writer):
        from ..model import likelihood

        for batch in self.batches(toks, lengths, chunk_size, batch_size, rc=False):
            idx, blens = batch.idx, batch.lengths
            dev = self.device
            acc = torch.zeros(len(idx), dtype=torch.float64, device=dev)
            cnt = torch.zeros(len(idx), dtype=torch.int64, device=dev)
            carry = None  # (B_active, V) logits predicting the next chunk's first base
            for s, e, ids, active, hidden in self.stream(batch, None, precision, bar):
                logits = self.logits(hidden)                                          # (B, c, V)
                if carry is None:   # first chunk: position 0 has no prediction
                    pred, tgt, first = logits[:, :-1], ids[:, 1:], s + 1
                else:
                    pred, tgt, first = torch.cat([carry[:, None], logits[:, :-1]], 1), ids, s
                lp, keep = likelihood.target_log_probs(pred, tgt)                     # (B, c'), float32
                sel = _rows(active, len(idx), dev)
                acc[sel] += lp.sum(1, dtype=torch.float64)
                cnt[sel] += keep.sum(1)
                if dsts:
                    vals = ([lp] if per_base else []) + ([likelihood.entropy(pred)] if entropy else [])
                    v = torch.stack(vals).float().masked_fill(~keep, float("nan"))      # (k, B, c')
                    host, ready = to_host(v)
                    writer.submit(_fill_per_base, host, ready, dsts, list(active), blens, idx, first, e)
                carry = logits[:, -1]
                rows = rows_still_running(active, blens, e, dev)
                if rows is not None:
                    carry = carry[rows]
            ll[idx] = acc.cpu().numpy()
            count[idx] = cnt.cpu().numpy()

    def class_log_probs(self, toks, head: torch.nn.Module, pooling: str, chunk_size: int | None = None,
                        batch_size: int | None = None, precision: str = "auto", bar=None,
                        lengths: Sequence[int] | None = None, strands: str = "fwd") -> np.ndarray:
        """Classifier log-probabilities float64 (n, C): ``log_softmax(head(pool(hidden)))``.

        ``head`` is a classifier's linear head, ``pooling`` its ``"mean"``/``"last"``; the head
        runs in float32 on the pooled embedding, whatever ``precision`` the backbone used.
        ``strands``: the classifier's ``"fwd"`` or ``"both"`` (the head reads the forward pass's
        pooled vector concatenated with the reverse complement's, each pooled over its own pass)."""
        pooled = self.embed(toks, pool=pooling, chunk_size=chunk_size, batch_size=batch_size, precision=precision,
                            bar=bar, lengths=lengths)
        if strands == "both":
            lengths = [len(t) for t in toks] if lengths is None else lengths
            rc = np.zeros_like(pooled)
            for b in self.batches(toks, lengths, chunk_size, batch_size, rc=True):
                rc[b.idx] = self._embed_batch(b, pooling, None, precision, bar, True, 1, None)
            pooled = np.concatenate([pooled, rc], axis=1)
        elif strands != "fwd":
            raise ValueError(f"strands must be 'fwd' or 'both', got {strands!r}")
        w = head.weight
        out = np.empty((len(pooled), head.out_features), dtype=np.float64)
        with torch.no_grad():
            for r in range(0, len(pooled), _HEAD_ROWS):
                x = torch.from_numpy(pooled[r: r + _HEAD_ROWS]).to(device=w.device, dtype=w.dtype)
                out[r: r + _HEAD_ROWS] = torch.log_softmax(head(x).float(), dim=-1).double().cpu().numpy()
        return out


# ---------------------------------------------------------------------------- helpers
def rows_still_running(active, blens, e, device) -> torch.Tensor | None:
    """Rows of the active batch whose records go past ``e``, or None while all do. Decided on
    the host from the lengths, so a streamed step needs no device sync unless a record ends."""
    keep = [j for j, b in enumerate(active) if blens[b] > e]
    return None if len(keep) == len(active) else torch.tensor(keep, dtype=torch.long, device=device)


def _rows(active, n, device):
    """Index of the active rows into a per-batch accumulator: while every record of the batch
    runs, a slice (no index tensor, i.e. no host-to-device copy)."""
    return slice(None) if len(active) == n else torch.tensor(active, device=device)


def to_host(t: torch.Tensor) -> tuple[torch.Tensor, "torch.cuda.Event | None"]:
    """Start copying ``t`` to the host without waiting: on CUDA into pinned memory (non-blocking,
    queued behind the work that produces ``t``) with an event that marks its arrival; on CPU
    ``t`` itself and None."""
    if t.device.type != "cuda":
        return t, None
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    ev = torch.cuda.Event()
    ev.record(torch.cuda.current_stream(t.device))
    return host, ev


class BackgroundWriter:
    """Runs write calls in order on one worker thread, at most ``depth`` waiting.

    ``submit(fn, host, ready, *args)`` queues ``fn(host_numpy, *args)`` to run once the event
    ``ready`` (from :func:`to_host`, or None) has fired; the caller blocks only while ``depth``
    calls are already waiting (bounding host memory: one chunk being written, ``depth`` copied).
    An exception in a write stops the writes; it is raised by the next ``submit`` or by
    ``close()``. ``close`` waits for every queued write: output files are committed only after."""

    def __init__(self, depth: int = 1):
        import queue
        import threading

        self._q: "queue.Queue" = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="mamba-genome-writer")
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self.error is not None:
                continue
            fn, host, ready, args = item
            try:
                if ready is not None:
                    ready.synchronize()
                fn(host.numpy(), *args)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self.error = exc

    def submit(self, fn, host: torch.Tensor, ready, *args) -> None:
        if self.error is not None:
            raise self.error
        self._q.put((fn, host, ready, args))

    def close(self, raise_error: bool = True) -> None:
        self._q.put(None)
        self._thread.join()
        if raise_error and self.error is not None:
            raise self.error


def _fill_per_base(v: np.ndarray, dsts, active, blens, idx, first, e):
    """Per-base values (k, B_act, c') of targets ``first..`` into each of the k lists of arrays."""
    for dst, vk in zip(dsts, v):
        for j, b in enumerate(active):
            m = min(e, blens[b]) - first
            if m > 0:
                dst[idx[b]][first: first + m] = vk[j, :m]


def _write_per_base(h: np.ndarray, s, active, blens, idx, rc, stride, sink):
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
            sink.write(idx[b], (first + off) // stride, np.ascontiguousarray(rows), "mean" if rc else "set")


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


class ChunkReader:
    """Reads (B_active, c) uint8 chunks of a batch from token arrays or memmaps, RC on the fly."""

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

    def read(self, s: int, e: int, active: list[int], pin: bool = False) -> torch.Tensor:
        """(len(active), e - s) uint8 tensor of positions ``s..e-1`` (PAD past a sequence's end);
        ``pin``: in pinned host memory (for a non-blocking copy to a GPU)."""
        from ..data.tokenizer import COMPLEMENT, PAD

        # token ids < VOCAB_SIZE <= 256
        t = torch.full((len(active), e - s), PAD, dtype=torch.uint8, pin_memory=pin)
        out = t.numpy()
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
        return t


__all__ = ["InferenceEngine", "Batch", "Chunk", "Scores", "ChunkReader", "PerBaseSink", "ArraySink", "BackgroundWriter",
           "to_host",
           "check_precision", "resolve_precision", "autocast", "progress_bar", "rows_still_running",
           "POOLS", "PRECISIONS", "DEFAULT_CHUNK_SIZE", "CPU_CHUNK_SIZE", "CHUNK_TOKENS", "DEFAULT_BATCH_SIZE"]
