"""Progress display for every command: a tqdm bar on a terminal, plain lines in a log.

A bar redraws itself many times a second; written to a file (a SLURM log,
``2> log``, CI) every redraw stays, and a 4-minute run leaves tens of
kilobytes of carriage returns. So :func:`progress_bar` returns a tqdm bar
when the stream is a TTY and otherwise a :class:`PlainProgress`, which has the
part of tqdm's interface that this package uses (``update``, ``n``,
``total``, ``set_postfix``, ``set_description``, ``refresh``, ``close``,
``write``, context manager) and prints one line every
:data:`PLAIN_INTERVAL_S` seconds and at the end (with ``leave=False``, only
if it printed before: a short job leaves nothing, as tqdm's bar), e.g.::

    ingest hg38.fa.gz: 1.2G/3.1G B  39%  210M B/s  eta 9s

:func:`format_count` and :func:`format_eta` are shared by the training
progress (:class:`mamba_genome.train.callbacks.StepProgressBar`).
"""
from __future__ import annotations

import math
import os
import sys
import time

PLAIN_INTERVAL_S = 30.0  # seconds between plain progress lines off a terminal


def stream_is_tty(stream=None) -> bool:
    """Whether ``stream`` (default stderr) is an interactive terminal.

    ``MAMBA_GENOME_PROGRESS=plain`` or ``=bar`` overrides the guess.
    """
    force = os.environ.get("MAMBA_GENOME_PROGRESS", "").lower()
    if force in ("plain", "bar"):
        return force == "bar"
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def format_count(x: float, scale: bool = True) -> str:
    """``4900 -> '4.9k'``, ``1.2e9 -> '1.2G'`` (``scale=False``: ``'4,900'``)."""
    if not scale:
        return f"{x:,.0f}"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}" if float(x).is_integer() or abs(x) >= 10 else f"{x:.1f}"


def format_eta(seconds: float | None) -> str:
    """``130 -> '2m10s'``, ``4000 -> '1h06m'``; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class PlainProgress:
    """A tqdm stand-in that prints a plain line at most every ``interval`` seconds (and at close)."""

    def __init__(self, total=None, desc: str = "", unit: str = "it", unit_scale: bool = False, initial: int = 0,
                 file=None, disable: bool = False, interval: float = PLAIN_INTERVAL_S, leave: bool = True,
                 **_tqdm_only):
        self.total = total
        self.desc = desc or ""
        self.unit = unit
        self.unit_scale = unit_scale
        self.n = initial
        self.file = file
        self.disable = bool(disable)
        self.interval = float(interval)
        self.leave = bool(leave)  # like tqdm's: keep a final line even if the work was too short for any
        self.postfix = ""
        self._n0 = initial
        self._t0 = self._last = time.monotonic()
        self._printed_n = initial
        self._closed = False

    # tqdm's interface --------------------------------------------------------
    def update(self, n: float = 1) -> None:
        self.n += n
        self.refresh(force=False)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = "  ".join(f"{k} {v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self, force: bool = True) -> None:
        """Print a line if ``interval`` has passed since the last one (tqdm's refresh redraws; here,
        only ``force=True`` from :meth:`print_now` and :meth:`close` print unconditionally)."""
        if self.disable or self._closed:
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self.print_now(now)

    def print_now(self, now: float | None = None) -> None:
        """Print the progress line now (stage changes, validation results, the end)."""
        if self.disable:
            return
        now = time.monotonic() if now is None else now
        self._last, self._printed_n = now, self.n
        print(self.line(now), file=self.file if self.file is not None else sys.stderr, flush=True)

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._t0, 1e-9)
        rate = (self.n - self._n0) / elapsed
        parts = []
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            parts.append(f"{format_count(self.n, self.unit_scale)}/{format_count(self.total, self.unit_scale)}{unit}")
            parts.append(f"{100.0 * self.n / self.total:3.0f}%")
        else:
            parts.append(f"{format_count(self.n, self.unit_scale)}{unit}")
        if self.postfix:
            parts.append(self.postfix)
        parts.append(f"{format_count(rate)}{unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"eta {format_eta((self.total - self.n) / rate)}")
        return (f"{self.desc}: " if self.desc else "") + "  ".join(parts)

    def write(self, msg: str) -> None:
        print(msg, file=self.file if self.file is not None else sys.stderr, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        printed_before = self._printed_n != self._n0
        if not self.disable and self.n != self._printed_n and (self.leave or printed_before):
            self.print_now()  # the final count (a short, leave=False job prints nothing, like tqdm)
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress_bar(total=None, *, desc: str = "", unit: str = "it", file=None, disable: bool = False, **kwargs):
    """A tqdm bar on a terminal, a :class:`PlainProgress` elsewhere; same arguments as ``tqdm``.

    ``disable=None`` (tqdm's "off unless a TTY") is treated as enabled here:
    off a terminal the plain lines are what a log should get.
    """
    file = file if file is not None else sys.stderr
    if stream_is_tty(file):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=file, disable=bool(disable), **kwargs)
    return PlainProgress(total=total, desc=desc, unit=unit, file=file, disable=bool(disable), **kwargs)


__all__ = ["progress_bar", "PlainProgress", "stream_is_tty", "format_count", "format_eta", "PLAIN_INTERVAL_S"]
