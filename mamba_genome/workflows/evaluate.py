"""`evaluate`: bits per base and perplexity of a language model on held-out sequence.

Every record of a FASTA (or every contig of a token store) is cut into
consecutive, non-overlapping windows of ``seq_len`` tokens; the last, shorter
window of a record is scored too (right-padded; padding is never scored), so
every base except the first of each window is predicted from the bases
before it in its window. Targets that are N are not scored (the one likelihood
definition, :mod:`mamba_genome.model.likelihood`); records that are all N are left
out. The result is the exact mean over scored bases, overall and per record.

Windows run through the inference engine (:mod:`mamba_genome.inference.engine`): batched
by length, streamed, with its precision policy; so ``evaluate`` and the API's ``score``
give the same numbers for the same windows.

This is the same quantity as the validation bits per base of ``pretrain``
(which uses full windows of the validation split only).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..device import resolve_device

LN2 = math.log(2.0)


@dataclass
class _Window:
    record: int
    start: int
    length: int


class _WindowTokens:
    """``windows[i]`` -> the tokens of window i, sliced from its record when its batch starts
    (a view of the record's array or memmap, so no genome is copied whole)."""

    def __init__(self, seqs, names: list[str], windows: list[_Window]):
        self.seqs, self.names, self.windows = seqs, names, windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int):
        w = self.windows[i]
        return self.seqs[self.names[w.record]][w.start: w.start + w.length]


def evaluate(model_path, fasta_or_store, seq_len: int = 1024, batch_size: int | None = None, device=None,
             max_windows: int | None = None, progress: bool = True, precision: str = "auto",
             chunk_size: int | None = None) -> dict:
    """Score held-out sequence with a trained language model.

    Args:
        model_path: a model directory or a pretraining run directory (its ``best/``).
        fasta_or_store: a FASTA file (plain/gzip) or a token store directory.
        seq_len: window length in tokens (context available to each prediction).
        batch_size: windows run together (None: on a GPU as many as fill about 2^20 positions,
            on CPU 8; see :mod:`mamba_genome.inference.engine`).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA if available).
        max_windows: score only this many windows, evenly spaced (None: all).
        progress: show a progress bar on stderr.
        precision: ``"auto"`` (bf16 autocast on a CUDA GPU that supports it, else fp32),
            ``"fp32"`` or ``"bf16"``.
        chunk_size: positions per streamed step for windows longer than it (None: the engine's
            default); results do not depend on it.

    Returns:
        ``{"bits_per_base", "perplexity", "loss", "bases", "windows", "records",
        "per_record": [{"record", "bases", "bits_per_base"}], ...}``.
    """
    from ..checkpoint import load_model
    from ..inference.engine import InferenceEngine, check_precision, progress_bar
    from ..inference.sequences import open_sequences

    if seq_len < 16:
        raise UserError(f"--seq-len must be at least 16, got {seq_len}")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    check_precision(precision)
    device = resolve_device(device)
    model, meta = load_model(model_path, device=device)
    if meta.get("model_type") != "lm":
        raise UserError(f"{model_path} is a '{meta.get('model_type')}' model; evaluate needs a pretrained language model")
    seqs = open_sequences(fasta_or_store, progress=progress, what="--fasta")
    source = seqs.source
    names = [n for n in seqs.names if not seqs.all_n(n)]   # nothing but N: nothing to score

    windows = [_Window(i, s, min(seq_len, seqs.lengths[n] - s)) for i, n in enumerate(names)
               for s in range(0, seqs.lengths[n], seq_len)]
    windows = [w for w in windows if w.length >= 2]  # a 1-base window predicts nothing
    if not windows:
        raise UserError(f"{source}: every record is shorter than 2 bases; nothing to score")
    if max_windows is not None and max_windows < len(windows):
        pick = np.unique(np.linspace(0, len(windows) - 1, max_windows).round().astype(int))
        windows = [windows[i] for i in pick]

    engine = InferenceEngine(model.eval())
    t0 = time.perf_counter()
    bar = progress_bar(progress, sum(w.length for w in windows), "evaluate")
    try:
        res = engine.score(_WindowTokens(seqs, names, windows), chunk_size=chunk_size, batch_size=batch_size,
                           precision=precision, bar=bar, lengths=[w.length for w in windows])
    finally:
        bar.close()
    rec = np.array([w.record for w in windows])
    sums = np.zeros(len(names))
    counts = np.zeros(len(names), dtype=np.int64)
    np.add.at(sums, rec, -res.log_likelihood)
    np.add.at(counts, rec, res.n_scored)
    total, n = float(sums.sum()), int(counts.sum())
    if n == 0:
        raise UserError(f"{source}: no scorable bases (all N?)")
    loss = total / n
    per_record = [{"record": names[i], "bases": int(counts[i]),
                   "bits_per_base": float(sums[i] / counts[i] / LN2) if counts[i] else float("nan")}
                  for i in range(len(names))]
    seconds = time.perf_counter() - t0
    return {
        "model": str(model_path), "data": source, "seq_len": int(seq_len), "loss": loss,
        "bits_per_base": loss / LN2, "perplexity": math.exp(loss), "bases": n, "windows": len(windows),
        "records": len(names), "seconds": seconds, "bases_per_second": n / max(seconds, 1e-9),
        "precision": engine.resolve_precision(precision), "per_record": per_record,
    }


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
