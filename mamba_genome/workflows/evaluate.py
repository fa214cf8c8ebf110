"""`evaluate`: bits per base and perplexity of a language model on held-out sequence.

Every record of a FASTA (or every contig of a token store) is cut into
consecutive, non-overlapping windows of ``seq_len`` tokens; the last, shorter
window of a record is scored too (right-padded; padding is never scored), so
every base except the first of each window is predicted from the bases
before it in its window. Targets that are N are not scored. The result is
the exact mean over scored bases, overall and per record.

This is the same quantity as the validation bits per base of ``pretrain``
(which uses full windows of the validation split only).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..device import resolve_device

LN2 = math.log(2.0)


@dataclass
class _Window:
    record: int
    start: int
    length: int


class _StoreRecords:
    """``records[i]`` -> contig ``names[i]``'s memmap, opened on use: a store of thousands of
    contigs must not hold every memmap (and its file descriptor) at once."""

    def __init__(self, store, names: list[str]):
        self.store, self.names = store, names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.store.tokens(self.names[i])


def _load_sequences(fasta_or_store, progress: bool) -> tuple[list[str], list[np.ndarray], str]:
    """(names, token arrays, description) of a FASTA or a token store."""
    from ..data.store import TokenStore, is_store

    p = Path(fasta_or_store)
    if not p.exists():
        raise UserError(f"--fasta {p}: no such file or token store; check the path")
    if p.is_dir():
        if not is_store(p):
            raise UserError(f"--fasta {p} is a directory but not a token store")
        store = TokenStore.open(p)
        names = [c.name for c in store.contigs if not c.all_n]
        return names, _StoreRecords(store, names), f"store {p}"
    from ..data.fasta import iter_fasta_records
    from ..data.tokenizer import encode

    names, seqs = [], []
    for name, seq in iter_fasta_records(p):
        names.append(name)
        seqs.append(encode(seq, name=name))
    if not names:
        raise UserError(f"{p}: no FASTA records")
    return names, seqs, f"FASTA {p}"


def evaluate(model_path, fasta_or_store, seq_len: int = 1024, batch_size: int = 8, device=None,
             max_windows: int | None = None, progress: bool = True) -> dict:
    """Score held-out sequence with a trained language model.

    Args:
        model_path: a model directory or a pretraining run directory (its ``best/``).
        fasta_or_store: a FASTA file (plain/gzip) or a token store directory.
        seq_len: window length in tokens (context available to each prediction).
        batch_size: windows per forward pass.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA if available).
        max_windows: score only this many windows, evenly spaced (None: all).
        progress: show a progress bar on stderr.

    Returns:
        ``{"bits_per_base", "perplexity", "loss", "bases", "windows", "records",
        "per_record": [{"record", "bases", "bits_per_base"}], ...}``.
    """
    import torch

    from ..checkpoint import load_model
    from ..data.tokenizer import PAD

    if seq_len < 16:
        raise UserError(f"--seq-len must be at least 16, got {seq_len}")
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    device = resolve_device(device)
    model, meta = load_model(model_path, device=device)
    if meta.get("model_type") != "lm":
        raise UserError(f"{model_path} is a '{meta.get('model_type')}' model; evaluate needs a pretrained language model")
    names, seqs, source = _load_sequences(fasta_or_store, progress)

    windows = [_Window(i, s, min(seq_len, len(t) - s)) for i, t in enumerate(seqs) for s in range(0, len(t), seq_len)]
    windows = [w for w in windows if w.length >= 2]  # a 1-base window predicts nothing
    if not windows:
        raise UserError(f"{source}: every record is shorter than 2 bases; nothing to score")
    if max_windows is not None and max_windows < len(windows):
        pick = np.unique(np.linspace(0, len(windows) - 1, max_windows).round().astype(int))
        windows = [windows[i] for i in pick]
    # Full windows first so most batches need no padding.
    windows.sort(key=lambda w: -w.length)

    sums = np.zeros(len(seqs))
    counts = np.zeros(len(seqs), dtype=np.int64)
    use_amp = str(device).startswith("cuda")
    t0 = time.perf_counter()
    from ..progress import progress_bar

    bar = progress_bar(total=len(windows), desc="evaluate", unit="win", file=sys.stderr, disable=not progress, leave=False)
    with torch.inference_mode():
        for b0 in range(0, len(windows), batch_size):
            batch = windows[b0 : b0 + batch_size]
            L = max(w.length for w in batch)
            ids = np.full((len(batch), L), PAD, dtype=np.int64)
            for j, w in enumerate(batch):
                ids[j, : w.length] = np.asarray(seqs[w.record][w.start : w.start + w.length])
            x = torch.from_numpy(ids).to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                per_row = _row_sums(model, x)
            for j, w in enumerate(batch):
                s, n = per_row[j]
                sums[w.record] += s
                counts[w.record] += n
            bar.update(len(batch))
    bar.close()
    total, n = float(sums.sum()), int(counts.sum())
    if n == 0:
        raise UserError(f"{source}: no scorable bases (all N?)")
    loss = total / n
    per_record = [{"record": names[i], "bases": int(counts[i]),
                   "bits_per_base": float(sums[i] / counts[i] / LN2) if counts[i] else float("nan")}
                  for i in range(len(seqs)) if counts[i] or len(seqs[i])]
    seconds = time.perf_counter() - t0
    return {
        "model": str(model_path), "data": source, "seq_len": int(seq_len), "loss": loss,
        "bits_per_base": loss / LN2, "perplexity": math.exp(loss), "bases": n, "windows": len(windows),
        "records": len(seqs), "seconds": seconds, "bases_per_second": n / max(seconds, 1e-9),
        "per_record": per_record,
    }


def _row_sums(model, x) -> list[tuple[float, int]]:
    """Per-row (summed CE nats, scored targets) for a padded batch ``x`` (B, L)."""
    import torch.nn.functional as F

    from ..data.tokenizer import N as N_TOKEN
    from ..data.tokenizer import PAD

    logits = model(x[:, :-1]).float()                                  # (B, L-1, V)
    target = x[:, 1:]
    keep = (target != PAD) & (target != N_TOKEN)
    ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none") * keep  # (B, L-1)
    return [(float(ce[j].sum()), int(keep[j].sum())) for j in range(x.shape[0])]


def summary_rows(result: dict, max_records: int = 10) -> list[dict]:
    """Rows of the evaluate table: one per record (the largest), then ALL."""
    rows = []
    recs = sorted(result["per_record"], key=lambda r: -r["bases"])
    for r in recs[:max_records]:
        rows.append({"record": r["record"], "bases": f"{r['bases']:,}", "bits/base": f"{r['bits_per_base']:.4f}",
                     "perplexity": f"{2 ** r['bits_per_base']:.3f}" if r["bases"] else "nan"})
    if len(recs) > max_records:
        rows.append({"record": f"... {len(recs) - max_records} more", "bases": "", "bits/base": "", "perplexity": ""})
    rows.append({"record": f"ALL ({result['records']} records)", "bases": f"{result['bases']:,}",
                 "bits/base": f"{result['bits_per_base']:.4f}", "perplexity": f"{result['perplexity']:.3f}"})
    return rows


__all__ = ["evaluate", "summary_rows"]
