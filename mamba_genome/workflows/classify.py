"""`classify`: label every record of a FASTA with a fine-tuned classifier.

Owns tiling and aggregation. A record longer than the model's training
window (``seq_len``, stored in the checkpoint) is cut into windows of that
length: ``ceil(length / seq_len)`` windows, the last one aligned to the end
of the record (so it overlaps its neighbour rather than being short). A
record's class probabilities are ``softmax(mean over windows of
log_softmax(logits))``: the normalised geometric mean of the window
probabilities, i.e. the windows vote in log space. A record shorter than
``seq_len`` is one shorter window.

Rows (one per record): ``id length predicted p_<label>...``; with
``per_window``: ``id start end predicted p_<label>...`` (0-based, half-open).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, UserError
from ..device import resolve_device as _device


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


def classify_fasta(sample, model_path, batch_size: int = 32, device: str | None = None, per_window: bool = False,
                   seq_len: int | None = None, progress: bool = False) -> list[dict]:
    """Classify every record of ``sample`` (FASTA, plain or gzip) with the classifier at ``model_path``.

    Args:
        sample: FASTA file of records to classify.
        model_path: a finetune run directory (uses ``best/``) or a model directory.
        batch_size: windows per forward pass.
        device: ``cpu``, ``cuda``, ``cuda:N``; default CUDA if available.
        per_window: one row per window instead of per record.
        seq_len: window length; default the model's training length.
        progress: tqdm bar over windows on stderr.

    Returns:
        Row dicts (see module docstring); probabilities as floats summing to 1.
    """
    from ..data.fasta import iter_fasta_records
    from ..data.tokenizer import encode

    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    dev = _device(device)
    model, labels, trained_len = load_classifier(model_path, device=dev)
    L = int(seq_len or trained_len)
    if L < 1:
        raise UserError(f"--seq-len must be at least 1, got {seq_len}")
    records = [(name, encode(seq, name=name)) for name, seq in iter_fasta_records(sample)]
    # All windows, grouped by length so each batch is one tensor.
    windows = [(r, s, min(len(tok), s + L)) for r, (_, tok) in enumerate(records) for s in tile_starts(len(tok), L)]
    log_probs = np.zeros((len(windows), len(labels)), dtype=np.float64)
    order = sorted(range(len(windows)), key=lambda i: windows[i][2] - windows[i][1])
    use_bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
    import sys

    from ..progress import progress_bar

    bar = progress_bar(total=len(windows), unit="win", desc="classify", disable=not progress, file=sys.stderr, leave=False)
    with torch.inference_mode():
        i = 0
        while i < len(order):
            width = windows[order[i]][2] - windows[order[i]][1]
            batch = [order[i]]
            while len(batch) < batch_size and i + len(batch) < len(order) and \
                    windows[order[i + len(batch)]][2] - windows[order[i + len(batch)]][1] == width:
                batch.append(order[i + len(batch)])
            x = torch.from_numpy(np.stack([records[windows[j][0]][1][windows[j][1]:windows[j][2]] for j in batch])
                                 .astype(np.int64)).to(dev)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(x).float()
            log_probs[batch] = torch.log_softmax(logits, -1).cpu().numpy()
            i += len(batch)
            bar.update(len(batch))
    bar.close()
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


def format_tsv(rows: list[dict]) -> str:
    """Rows -> TSV text with a header (probabilities to 6 decimals)."""
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["\t".join(cols)]
    for row in rows:
        lines.append("\t".join(f"{row[c]:.6f}" if isinstance(row[c], float) else str(row[c]) for c in cols))
    return "\n".join(lines) + "\n"


def write_tsv_atomic(rows: list[dict], path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(format_tsv(rows))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["classify_fasta", "tile_starts", "aggregate_log_probs", "load_classifier", "format_tsv", "write_tsv_atomic"]
