"""`classify`: label every record of a FASTA with a fine-tuned classifier.

Owns tiling and aggregation. A record longer than the model's training
window (``seq_len``, stored in the checkpoint) is cut into windows of that
length: ``ceil(length / seq_len)`` windows, the last one aligned to the end
of the record (so it overlaps its neighbour rather than being short). A
record's class probabilities are ``softmax(mean over windows of
log_softmax(logits))``: the normalised geometric mean of the window
probabilities, i.e. the windows vote in log space. A record shorter than
``seq_len`` is one shorter window.

Windows go through :meth:`MambaClassifier.class_log_probs` and the inference engine
(:mod:`mamba_genome.inference.engine`): batched by length, streamed, pooled as the classifier was
trained (any ``--pooling``; a ``--strands both`` classifier also streams each window's reverse
complement and reads both pooled passes), then its head.

Rows (one per record): ``id length predicted p_<label>...``; with
``per_window``: ``id start end predicted p_<label>...`` (0-based, half-open).
Records are read and classified in groups (:data:`GROUP_BATCHES`), so rows
stream to stdout or a pipe as groups finish (:func:`classify_to`).
"""
from __future__ import annotations

import math
import os
from typing import Iterable, Iterator

import numpy as np

from ..errors import CheckpointError, UserError
from ..device import resolve_device as _device
from ..outputs import OutputTarget, atomic_write_text, check_output_path, open_output


def tile_starts(length: int, seq_len: int) -> list[int]:
    """Window starts covering ``[0, length)`` with windows of ``seq_len`` (last one end-aligned).

    Example:
        >>> tile_starts(10, 4)
        [0, 4, 6]
        >>> tile_starts(3, 4)
        [0]
    """
    if length <= seq_len:
        return [0]
    n = math.ceil(length / seq_len)
    return [i * seq_len for i in range(n - 1)] + [length - seq_len]


def aggregate_log_probs(log_probs: np.ndarray) -> np.ndarray:
    """Window log-probabilities ``[W, C]`` -> record probabilities ``[C]`` (softmax of the mean)."""
    m = np.asarray(log_probs, dtype=np.float64).mean(axis=0)
    m -= m.max()
    p = np.exp(m)
    return p / p.sum()


def load_classifier(model_path, device="cpu"):
    """(model, labels, seq_len) from a finetune run/model directory; a clear error for anything else."""
    from ..checkpoint import load_model, read_meta

    meta = read_meta(model_path)
    if meta["model_type"] != "classifier":
        raise CheckpointError(
            f"{model_path} is a {meta['model_type']!r} model with no classification head; "
            f"fine-tune it first: mamba-genome finetune --from {model_path} --class LABEL=FASTA ...")
    model, meta = load_model(model_path, device=device)
    labels = meta.get("extra", {}).get("labels")
    if not labels or len(labels) != model.num_classes:
        raise CheckpointError(f"{model_path}: config.json has no label list matching its {model.num_classes} classes")
    return model, list(labels), int(meta["extra"].get("seq_len", 1024))


#: records are classified in groups of consecutive records, so rows come out (and can be streamed) as
#: each group finishes and memory is bounded by a group, not by the input; the first group holds one
#: batch of windows (the first rows come quickly), each next one twice as many, up to this many batches
GROUP_BATCHES = 16


def classify_fasta(sample, model_path, batch_size: int = 32, device: str | None = None, per_window: bool = False,
                   seq_len: int | None = None, progress: bool = False, precision: str = "auto") -> list[dict]:
    """Classify every record of ``sample`` (FASTA, plain or gzip) with the classifier at ``model_path``.

    Args:
        sample: FASTA file of records to classify.
        model_path: a finetune run directory (uses ``best/``) or a model directory.
        batch_size: windows per forward pass.
        device: ``cpu``, ``cuda``, ``cuda:N``; default CUDA if available.
        per_window: one row per window instead of per record.
        seq_len: window length; default the model's training length.
        progress: progress on stderr (a bar on a terminal, plain lines in a log).
        precision: ``"auto"`` (bf16 autocast on a CUDA GPU that supports it, else fp32),
            ``"fp32"`` or ``"bf16"``.

    Returns:
        Row dicts (see module docstring); probabilities as floats summing to 1.
    """
    return [row for group in iter_classify(sample, model_path, batch_size, device, per_window, seq_len, progress,
                                           precision)
            for row in group]


def iter_classify(sample, model_path, batch_size: int = 32, device: str | None = None, per_window: bool = False,
                  seq_len: int | None = None, progress: bool = False,
                  precision: str = "auto") -> Iterator[list[dict]]:
    """Like :func:`classify_fasta`, but yields the rows group by group, in input order, as groups finish.

    A group is consecutive records holding at least ``batch_size`` windows
    for the first group, twice as many for each next one, at most
    ``GROUP_BATCHES * batch_size`` (or the rest of the file); windows are
    batched by length within a group.
    """
    from ..inference.engine import progress_bar
    from ..inference.sequences import iter_sequences

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    dev = _device(device)
    model, labels, trained_len = load_classifier(model_path, device=dev)
    L = int(seq_len or trained_len)
    if L < 1:
        raise UserError(f"--seq-len must be at least 1, got {seq_len}")
    model.eval()
    bar = progress_bar(progress, None, "classify")
    try:
        group: list = []
        n_windows, want = 0, batch_size
        for name, tok in iter_sequences(sample):
            group.append((name, tok))
            n_windows += len(tile_starts(len(tok), L))
            if n_windows >= want:
                yield _classify_group(model, labels, group, L, batch_size, per_window, precision, bar)
                group, n_windows, want = [], 0, min(2 * want, GROUP_BATCHES * batch_size)
        if group:
            yield _classify_group(model, labels, group, L, batch_size, per_window, precision, bar)
    finally:
        bar.close()


def _classify_group(model, labels, records, L, batch_size, per_window, precision, bar) -> list[dict]:
    """Rows for ``records`` [(name, tokens)]; the windows are batched by length."""
    windows = [(r, s, min(len(tok), s + L)) for r, (_, tok) in enumerate(records) for s in tile_starts(len(tok), L)]
    log_probs = model.class_log_probs(
        [records[r][1][s:e] for r, s, e in windows], batch_size=batch_size,
        precision=precision, bar=bar, lengths=[e - s for _, s, e in windows])
    rows = []
    pcols = [f"p_{x}" for x in labels]
    if per_window:
        for (r, s, e), lp in zip(windows, log_probs):
            p = np.exp(lp - lp.max())
            p /= p.sum()
            rows.append({"id": records[r][0], "start": s, "end": e, "predicted": labels[int(p.argmax())],
                         **dict(zip(pcols, p.tolist()))})
        return rows
    by_record: dict[int, list[int]] = {}
    for j, (r, _, _) in enumerate(windows):
        by_record.setdefault(r, []).append(j)
    for r, (name, tok) in enumerate(records):
        p = aggregate_log_probs(log_probs[by_record[r]])
        rows.append({"id": name, "length": len(tok), "predicted": labels[int(p.argmax())], **dict(zip(pcols, p.tolist()))})
    return rows


def _format_row(row: dict, cols: list[str]) -> str:
    return "\t".join(f"{row[c]:.6f}" if isinstance(row[c], float) else str(row[c]) for c in cols) + "\n"


def format_tsv(rows: list[dict]) -> str:
    """Rows -> TSV text with a header (probabilities to 6 decimals)."""
    if not rows:
        return ""
    cols = list(rows[0])
    return "\t".join(cols) + "\n" + "".join(_format_row(r, cols) for r in rows)


def write_tsv(groups: Iterable[list[dict]], fh, flush: bool = False) -> int:
    """Write row groups (see :func:`iter_classify`) as one TSV with a header; returns the row count.

    ``flush``: flush after every group, so a reader of a pipe sees rows as they are made.
    """
    cols = None
    n = 0
    for rows in groups:
        if not rows:
            continue
        if cols is None:
            cols = list(rows[0])
            fh.write("\t".join(cols) + "\n")
        fh.write("".join(_format_row(r, cols) for r in rows))
        n += len(rows)
        if flush:
            fh.flush()
    return n


def classify_to(sample, model_path, out=None, **kwargs) -> tuple[int, OutputTarget]:
    """Classify ``sample`` and write the TSV to ``out`` (None or ``-``: stdout); returns (rows, target).

    The output is checked before the model is loaded (see
    :func:`mamba_genome.outputs.check_output_path`; it may not be the FASTA or
    a model file). To stdout, a pipe or a FIFO, rows are written and flushed as
    each group of records finishes; a regular file is written to a temporary
    beside it and moved into place at the end. ``kwargs`` go to :func:`iter_classify`.
    """
    from ..checkpoint import model_dir_or_none

    target = check_output_path("-" if out is None else out, inputs=[sample, model_dir_or_none(model_path)],
                               example="predictions.tsv")
    with open_output(target, "w") as fh:
        n = write_tsv(iter_classify(sample, model_path, **kwargs), fh, flush=target.streaming)
    return n, target


def write_tsv_atomic(rows: list[dict], path: str | os.PathLike) -> None:
    """Write ``rows`` as TSV to ``path`` (atomically for a regular file; see :mod:`mamba_genome.outputs`)."""
    atomic_write_text(path, format_tsv(rows))


__all__ = ["classify_fasta", "iter_classify", "classify_to", "write_tsv", "GROUP_BATCHES", "tile_starts", "aggregate_log_probs", "load_classifier", "format_tsv", "write_tsv_atomic"]
