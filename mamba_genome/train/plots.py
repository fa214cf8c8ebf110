"""Loss-curve PNG of a run, drawn from Lightning's CSV log (matplotlib, Agg backend).

:func:`plot_loss_curve` reads ``metrics.csv`` (columns ``step``, ``train/bpb``,
``val/bpb``, ``tokens_seen``, ...) and writes bits per base against tokens
seen: the training curve (raw and smoothed) and the validation points, with
the 2-bit uniform baseline for reference. The PNG is written to a temporary
file and moved into place.
"""
from __future__ import annotations

import csv
import math
import os
from pathlib import Path


def _read_columns(csv_path) -> dict[str, list[tuple[float, float]]]:
    """{column: [(step, value), ...]} for the numeric cells of a Lightning CSV log."""
    out: dict[str, list[tuple[float, float]]] = {}
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                step = float(row.get("step") or "nan")
            except ValueError:
                continue
            for k, v in row.items():
                if k == "step" or v in (None, ""):
                    continue
                try:
                    out.setdefault(k, []).append((step, float(v)))
                except ValueError:
                    pass
    return out


def _smooth(values: list[float]) -> list[float]:
    """Centred moving average over about 1/25 of the points (no lag, unlike an EMA)."""
    half = max(0, len(values) // 50)
    out = []
    for i in range(len(values)):
        window = values[max(0, i - half) : i + half + 1]
        out.append(sum(window) / len(window))
    return out


def plot_loss_curve(csv_path, png_path, title: str = "pretraining") -> Path | None:
    """Write the loss curve of ``csv_path`` (one CSV or a list, e.g. one per resume) to ``png_path``.

    Returns the PNG path, or None if there is nothing to plot.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    paths = [csv_path] if isinstance(csv_path, (str, os.PathLike)) else list(csv_path)
    cols: dict[str, list[tuple[float, float]]] = {}
    for p in paths:
        for k, v in _read_columns(p).items():
            cols.setdefault(k, []).extend(v)
    train, val = cols.get("train/bpb", []), cols.get("val/bpb", [])
    if not train and not val:
        return None
    # x axis: tokens seen (logged with every training step); steps if absent.
    tokens = sorted(cols.get("tokens_seen", []))

    def to_x(step: float) -> float:
        if not tokens:
            return step
        best = tokens[0][1]
        for s, t in tokens:
            if s > step:
                break
            best = t
        return best

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    label = "tokens seen" if tokens else "optimizer step"
    if train:
        x = [to_x(s) for s, _ in train]
        y = [v for _, v in train]
        ax.plot(x, y, color="tab:blue", alpha=0.25, lw=0.8)
        ax.plot(x, _smooth(y), color="tab:blue", lw=1.6, label="train (smoothed)")
    if val:
        ax.plot([to_x(s) for s, _ in val], [v for _, v in val], "o-", color="tab:orange", lw=1.6, ms=4,
                label="validation")
    ax.axhline(2.0, color="gray", ls="--", lw=0.8, label="uniform (2 bits)")
    finite = [v for _, v in train + val if math.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite)
        ax.set_ylim(max(0.0, lo - 0.05), min(max(hi, 2.0) + 0.05, lo + 2.5))
    ax.set_xlabel(label)
    ax.set_ylabel("bits per base")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    from ..outputs import PendingOutput

    png_path = Path(png_path)
    try:
        with PendingOutput(png_path, suffix=".png") as pending:
            fig.savefig(pending.tmp)
    finally:
        plt.close(fig)
    return png_path


__all__ = ["plot_loss_curve"]
