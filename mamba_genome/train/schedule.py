"""Training schedules: learning rate, sequence-length warmup, and time budgets.

Owns the pure, testable arithmetic of every training run (pretrain and finetune):

- :func:`warmup_cosine`: the one learning-rate curve, linear warmup then cosine
  decay to a floor (Gu & Dao 2023, App. E.2: "linear learning rate warmup with
  cosine decay", as in HyenaDNA); :func:`lr_multiplier` is it as a fraction of
  the peak, with the warmup a fraction of the run (pretraining: 10%).
- :func:`seq_len_stages`: sequence-length warmup (paper App. E.3.2, following
  HyenaDNA): start at 1024 tokens (or the target if smaller), double the
  length each stage up to the target, halving the batch so tokens per step
  stay constant.
- :class:`TrainSchedule`: both of the above for one run, with a total step
  count that may be re-fitted to a wall-clock budget (``--max-time``).
- :func:`seq_len_for_epoch`: the same warmup lengths for fine-tuning, one per epoch
  (App. E.3.4: from 2^14, doubling each epoch up to the target).
- :func:`parse_duration`: ``"4h"``, ``"90m"``, ``"270s"``, ``"1h30m"`` -> seconds.

Nothing here imports torch; the Lightning pieces read these objects.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import UserError

# ------------------------------------------------------------------ durations

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|s)", re.IGNORECASE)
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str | float | int, flag: str = "--max-time") -> float:
    """``"4h"`` | ``"90m"`` | ``"270s"`` | ``"1h30m"`` | ``"1d"`` | ``"300"`` (seconds) -> seconds.

    Raises :class:`UserError` naming ``flag`` for anything else, or for a
    duration that is not positive.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", s):
            seconds = float(s)
        else:
            parts = _DURATION_RE.findall(s)
            if not s or "".join(n + u for n, u in parts) != s or len({u for _, u in parts}) != len(parts):
                raise UserError(f"{flag}: cannot read duration '{text}'; use e.g. 4h, 90m, 270s or 1h30m")
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"{flag}: duration must be positive, got '{text}'")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds -> ``"1h02m03s"`` / ``"4m05s"`` / ``"12.3s"``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


# ------------------------------------------------------------- learning rate


def warmup_cosine(step: int, *, warmup_steps: int, max_steps: int, lr: float, min_lr: float) -> float:
    """Learning rate at optimizer step ``step`` (0-based): linear warmup from ``lr / warmup_steps`` to
    ``lr`` over ``warmup_steps`` steps, then cosine decay to ``min_lr`` at ``max_steps``; ``min_lr`` after."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def lr_multiplier(step: int, total_steps: int, warmup_fraction: float = 0.1, min_lr_ratio: float = 0.1) -> float:
    """:func:`warmup_cosine` as a fraction of the peak, warming up over ``warmup_fraction`` of
    ``total_steps`` and decaying to ``min_lr_ratio``."""
    total_steps = max(1, int(total_steps))
    return warmup_cosine(step, warmup_steps=int(round(warmup_fraction * total_steps)), max_steps=total_steps,
                         lr=1.0, min_lr=min_lr_ratio)


# ------------------------------------------------------ sequence-length warmup


@dataclass(frozen=True)
class SeqLenStage:
    """One stage of sequence-length warmup: from ``start_step`` on, windows of
    ``seq_len`` tokens in micro-batches ``batch_multiplier`` times the final one."""

    start_step: int
    seq_len: int
    batch_multiplier: int


def seq_len_lengths(final_seq_len: int, start_seq_len: int = 1024) -> list[int]:
    """Lengths of the warmup stages, shortest first, ending at ``final_seq_len``.

    Each is the final length halved ``j`` times (so the batch can double
    exactly); the shortest is the last one still ``>= start_seq_len``.
    """
    start = min(start_seq_len, final_seq_len)
    lengths = [final_seq_len]
    while lengths[-1] // 2 >= start and lengths[-1] % 2 == 0:
        lengths.append(lengths[-1] // 2)
    return lengths[::-1]


def seq_len_stages(final_seq_len: int, total_steps: int, *, start_seq_len: int = 1024,
                   stage_fraction: float = 0.05, max_warmup_fraction: float = 0.5,
                   enabled: bool = True) -> list[SeqLenStage]:
    """The sequence-length warmup stages of a run of ``total_steps`` optimizer steps.

    Each warmup stage (every length below the final one) lasts
    ``stage_fraction`` of the run, the warmup stages together at most
    ``max_warmup_fraction``; the final length runs to the end. Stage ``j``
    from the end uses windows ``final / 2**j`` long in micro-batches
    ``2**j`` times larger, so tokens per step are constant.
    """
    lengths = seq_len_lengths(final_seq_len, start_seq_len) if enabled else [final_seq_len]
    n_warm = len(lengths) - 1
    if n_warm == 0 or total_steps < 2 * len(lengths):
        return [SeqLenStage(0, final_seq_len, 1)]
    per_stage = max(1, int(total_steps * min(stage_fraction, max_warmup_fraction / n_warm)))
    stages = []
    for i, length in enumerate(lengths):
        stages.append(SeqLenStage(i * per_stage, length, 2 ** (n_warm - i)))
    return stages


def seq_len_for_epoch(epoch: int, target: int, start: int = 1 << 14, warmup: bool = True) -> int:
    """Fine-tuning's sequence-length warmup: the stages of :func:`seq_len_lengths` (the one warmup),
    one epoch each, then ``target`` (``start * 2**epoch`` when ``target`` is a power-of-two multiple
    of ``start``; ``target`` if shorter than ``start``)."""
    if not warmup:
        return target
    lengths = seq_len_lengths(target, start)
    return lengths[min(max(int(epoch), 0), len(lengths) - 1)]


# ------------------------------------------------------------------ one run


class TrainSchedule:
    """Learning rate and sequence length as functions of the optimizer step.

    ``total_steps`` may change during a run (``--max-time`` re-fits it from
    the measured step time); the learning-rate curve and the warmup stages
    stretch or shrink with it. ``state_dict()`` holds only primitives.
    """

    def __init__(self, *, total_steps: int, final_seq_len: int, lr: float, warmup_fraction: float = 0.1,
                 min_lr_ratio: float = 0.1, seq_warmup: bool = True, start_seq_len: int = 1024,
                 stage_fraction: float = 0.05):
        self.total_steps = max(1, int(total_steps))
        self.final_seq_len = int(final_seq_len)
        self.lr = float(lr)
        self.warmup_fraction = float(warmup_fraction)
        self.min_lr_ratio = float(min_lr_ratio)
        self.seq_warmup = bool(seq_warmup)
        self.start_seq_len = int(start_seq_len)
        self.stage_fraction = float(stage_fraction)

    # -- learning rate
    def lr_at(self, step: int) -> float:
        return self.lr * lr_multiplier(step, self.total_steps, self.warmup_fraction, self.min_lr_ratio)

    # -- sequence length
    def stages(self) -> list[SeqLenStage]:
        return seq_len_stages(self.final_seq_len, self.total_steps, start_seq_len=self.start_seq_len,
                              stage_fraction=self.stage_fraction, enabled=self.seq_warmup)

    def stage_at(self, step: int) -> SeqLenStage:
        current = None
        for st in self.stages():
            if st.start_step <= step:
                current = st
        return current

    def steps_in_stage(self, step: int) -> int:
        """Optimizer steps from ``step`` until the next stage begins or the run ends (at least 1)."""
        later = [st.start_step for st in self.stages() if st.start_step > step]
        end = later[0] if later else self.total_steps
        return max(1, end - step)

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            if k in vars(self):
                setattr(self, k, type(getattr(self, k))(v))


__all__ = [
    "parse_duration", "format_duration", "warmup_cosine", "lr_multiplier", "seq_len_for_epoch", "SeqLenStage", "seq_len_lengths",
    "seq_len_stages", "TrainSchedule",
]
