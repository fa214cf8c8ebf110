"""Schedules of a pretraining run: LR warmup + cosine floor, sequence-length warmup, durations."""
from __future__ import annotations

import math

import pytest

from mamba_genome.errors import UserError
from mamba_genome.train.schedule import (
    TrainSchedule, format_duration, lr_multiplier, parse_duration, seq_len_lengths, seq_len_stages,
)


@pytest.mark.parametrize("text,seconds", [
    pytest.param("4h", 14400, id="hours"),
    pytest.param("270s", 270, id="seconds"),
    pytest.param("90m", 5400, id="minutes"),
    pytest.param("1h30m", 5400, id="h+m"),
    pytest.param("1d2h", 93600, id="d+h"),
    pytest.param("2.5m", 150, id="fractional"),
    pytest.param("300", 300, id="bare-number"),
    pytest.param(" 4H ", 14400, id="case-space"),
    pytest.param(12.5, 12.5, id="float"),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "4x", "h", "1h1h", "-5m", "0s", "4 hours", "1m30", "abc"])
def test_parse_duration_rejects(text):
    with pytest.raises(UserError, match="--max-time"):
        parse_duration(text)


def test_format_duration():
    assert format_duration(12.34) == "12.3s"
    assert format_duration(245) == "4m05s"
    assert format_duration(3723) == "1h02m03s"


def test_lr_warmup_cosine_floor():
    total = 100
    # linear warmup over the first 10% of steps
    assert lr_multiplier(0, total) == pytest.approx(0.1)
    assert lr_multiplier(4, total) == pytest.approx(0.5)
    assert lr_multiplier(9, total) == pytest.approx(1.0)
    # cosine from 1 at the end of warmup to the floor at the end
    assert lr_multiplier(10, total) == pytest.approx(1.0)
    assert lr_multiplier(55, total) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: midpoint
    assert lr_multiplier(100, total) == pytest.approx(0.1)
    assert lr_multiplier(500, total) == pytest.approx(0.1)  # stays at the floor
    values = [lr_multiplier(s, total) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay
    assert lr_multiplier(50, 100, warmup_fraction=0.0, min_lr_ratio=0.0) == pytest.approx(0.5)


def test_schedule_lr_scales_with_peak_and_total():
    s = TrainSchedule(total_steps=100, final_seq_len=512, lr=8e-3)
    assert s.lr_at(9) == pytest.approx(8e-3)
    assert s.lr_at(100) == pytest.approx(8e-4)
    s.total_steps = 200  # a --max-time re-fit stretches the curve
    assert s.lr_at(19) == pytest.approx(8e-3)
    assert s.lr_at(110) == pytest.approx(8e-4 + 0.5 * 7.2e-3)


@pytest.mark.parametrize("final,start,expected", [
    pytest.param(8192, 1024, [1024, 2048, 4096, 8192], id="pow2"),
    pytest.param(1024, 1024, [1024], id="equal"),
    pytest.param(512, 1024, [512], id="shorter-than-start"),
    pytest.param(3000, 1024, [1500, 3000], id="not-pow2"),
    pytest.param(2 ** 17, 1024, [2 ** k for k in range(10, 18)], id="paper-131k"),
])
def test_seq_len_lengths(final, start, expected):
    assert seq_len_lengths(final, start) == expected


@pytest.mark.parametrize("final,total", [(8192, 1000), (2 ** 17, 20000), (3000, 50), (4096, 40)])
def test_seq_len_stages_keep_tokens_per_step(final, total):
    stages = seq_len_stages(final, total)
    assert stages[0].start_step == 0
    assert stages[-1].seq_len == final and stages[-1].batch_multiplier == 1
    tokens = {st.seq_len * st.batch_multiplier for st in stages}
    assert len(tokens) == 1  # constant tokens per step (final * micro_batch)
    starts = [st.start_step for st in stages]
    assert starts == sorted(set(starts))
    assert stages[-1].start_step <= 0.5 * total  # warmup is at most half the run


def test_seq_len_stages_disabled_and_tiny_runs():
    assert [(s.seq_len, s.batch_multiplier) for s in seq_len_stages(8192, 1000, enabled=False)] == [(8192, 1)]
    assert len(seq_len_stages(8192, 3)) == 1  # too few steps to warm up


def test_schedule_stage_lookup_and_state():
    s = TrainSchedule(total_steps=1000, final_seq_len=4096, lr=1e-3)
    stages = s.stages()
    assert [st.seq_len for st in stages] == [1024, 2048, 4096]
    assert s.stage_at(0).seq_len == 1024
    assert s.stage_at(stages[1].start_step).seq_len == 2048
    assert s.stage_at(999).seq_len == 4096
    assert s.steps_in_stage(0) == stages[1].start_step
    assert s.steps_in_stage(stages[2].start_step) == 1000 - stages[2].start_step
    state = s.state_dict()
    assert all(isinstance(v, (int, float, bool)) for v in state.values())
    t = TrainSchedule(total_steps=1, final_seq_len=4096, lr=1e-3)
    t.load_state_dict(state)
    assert t.total_steps == 1000 and not math.isnan(t.lr_at(5))
