"""benchmarks/bench_quality.py and bench_defaults.py: the arithmetic and tables of the smoke mode
(config parsing, the validation curve from a Lightning CSV, the summary row, markdown, plot; the
defaults-vs-hand-tuned ratios), without running pretrain."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bq():
    return _script("bench_quality")


# the shape of a real CPU run's logs/v0/metrics.csv (smoke mode, 2026-12-01): training rows, then a
# validation row at the same step with only val columns
CSV = """epoch,lr,seq_len,step,tokens_per_s,tokens_seen,train/bpb,train/loss,train/ppl,val/bpb,val/loss,val/ppl
0,4e-05,128.0,0,100.0,512.0,3.25,2.25,9.53,,,
0,8e-05,128.0,1,128.0,1024.0,3.10,2.15,8.6,,,
0,,,1,,,,,,2.56,1.77,5.9
0,1e-04,128.0,2,150.0,1536.0,2.90,2.0,7.4,,,
0,1e-04,128.0,3,160.0,2048.0,2.70,1.9,6.5,,,
0,,,3,,,,,,2.42,1.68,5.35
"""


def test_parse_config(bq):
    assert bq.parse_config("hand=--micro-batch-size 32 --no-seq-warmup") == (
        "hand", ["--micro-batch-size", "32", "--no-seq-warmup"])
    assert bq.parse_config("--no-seq-warmup") == ("no-seq-warmup", ["--no-seq-warmup"])
    assert bq.parse_config("--max-time=200s --no-seq-warmup", labelled=False) == (
        "max-time=200s_no-seq-warmup", ["--max-time=200s", "--no-seq-warmup"])
    with pytest.raises(ValueError):
        bq.parse_config("a/b=--x")


def test_read_curve_without_a_clock_uses_the_training_clock(bq, tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text(CSV)
    curve = bq.read_curve(p)
    assert [c["step"] for c in curve] == [1, 3]
    assert [c["val_bpb"] for c in curve] == [2.56, 2.42]
    # seconds = tokens_seen / tokens_per_s of the last training row at or before the step
    assert curve[0]["seconds"] == pytest.approx(1024 / 128)
    assert curve[1]["seconds"] == pytest.approx(2048 / 160)
    assert curve[1]["tokens"] == 2048 and curve[1]["wall_s"] is None
    assert bq.clock_name([{"curve": curve}]) == "training clock"


def test_read_curve_takes_wall_clock_from_the_cli_clock(bq, tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text(CSV)
    clock_file = tmp_path / "run.clock"
    # what cli_clock.py's callback writes: time, event, global step, tokens seen
    # (a real one: validation after 2 and 4 steps, which the CSV logs at steps 1 and 3)
    clock_file.write_text("1000.5 step 0 0\n1001.0 step 1 512\n1003.0 val 2 1024\n1003.2 step 2 1024\n"
                          "1004.5 step 3 1536\n1009.0 val 4 2048\n")
    events = bq.read_clock(clock_file)
    assert events[2] == (1003.0, "val", 2, 1024)
    curve = bq.read_curve(p, events, t0=1000.0)
    assert [c["wall_s"] for c in curve] == [pytest.approx(3.0), pytest.approx(9.0)]
    assert [c["seconds"] for c in curve] == [c["wall_s"] for c in curve]
    assert curve[1]["train_s"] == pytest.approx(2048 / 160)
    assert bq.clock_name([{"curve": curve}]) == "wall clock"


def test_read_curve_prefers_a_wall_clock_column(bq, tmp_path):
    lines = CSV.strip().splitlines()
    rows = [lines[0] + ",wall_s"] + [ln + f",{10.0 * (i + 1)}" for i, ln in enumerate(lines[1:])]
    p = tmp_path / "metrics.csv"
    p.write_text("\n".join(rows) + "\n")
    assert [c["seconds"] for c in bq.read_curve(p)] == [30.0, 60.0]


def test_summary_markdown_and_plot(bq, tmp_path):
    p = tmp_path / "metrics.csv"
    p.write_text(CSV)
    metrics = {"tokens_seen": 297_000_000, "steps": 283, "tokens_per_second": 1.2e6, "wall_seconds": 280.0,
               "train_seconds": 247.5, "val_bits_per_base": 1.79, "best_step": 280}
    row = bq.summarize("defaults", [], metrics, {"bits_per_base": 1.782, "bases": 815_000}, bq.read_curve(p), 297.0)
    assert row["tokens_per_s_wall"] == pytest.approx(1e6)
    assert row["test_bpb"] == 1.782 and row["tokens_seen"] == 297_000_000
    hand = dict(row, label="hand-tuned", extra_args=["--micro-batch-size", "32"], test_bpb=1.757,
                tokens_per_s=2.84e6)
    failed = {"label": "broken", "extra_args": ["--x"], "error": "pretrain exit 2: no such option"}
    md = bq.markdown([row, hand, failed], {"genome": "Umaydis.fa.gz", "preset": "1.4m", "seq_len": 16384,
                                           "max_time": "270s", "test_bases": 815_000})
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(table) == 4   # header + 3 configurations
    assert "| defaults | `(defaults)` | 283 | 297.0 M | 1.200 M | 1.000 M | 1.7900 | **1.7820** |" in md
    assert "2.840 M" in md and "**1.7570**" in md and "failed: pretrain exit 2" in md
    assert "- defaults: 8 s: 2.5600, 13 s: 2.4200" in md and "training clock" in md
    assert bq.rate(24_400.0) == "24.4 k" and bq.rate(float("nan")) == "-"
    png = bq.plot([row, hand, failed], tmp_path / "q.png", "test")
    assert png.is_file() and png.stat().st_size > 1000
    assert bq.plot([failed], tmp_path / "none.png", "test") is None


def test_bench_defaults_ratio_table(tmp_path):
    bd = _script("bench_defaults")
    calib = {"meta": {"device": "NVIDIA H200"}, "rows": [
        {"preset": "1.4m", "seq_len": 16384, "micro_batch": 64, "policy": "none-s8", "status": "ok",
         "tokens_per_s": 3.252e6},
        {"preset": "1.4m", "seq_len": 16384, "micro_batch": 32, "policy": "none-s8", "status": "ok",
         "tokens_per_s": 3.153e6},
        {"preset": "1.4m", "seq_len": 16384, "micro_batch": 64, "policy": "ckpt-s8", "status": "OOM"},
        {"preset": "7m", "seq_len": 1024, "micro_batch": 1024, "policy": "none-s8", "status": "ok",
         "tokens_per_s": 1.561e6},
    ]}
    path = tmp_path / "calib.json"
    path.write_text(json.dumps(calib))
    best = bd.best_hand_tuned(path)
    assert best[("1.4m", 16384)] == (3.252e6, "none-s8, 64 x 16,384")
    assert best[("7m", 1024)][0] == 1.561e6
    metrics = {"tokens_seen": 40 * 2**20, "train_seconds": 12.0, "wall_seconds": 30.0, "steps": 40}
    r = bd.row("1.4m", 16384, metrics, run_wall_s=20.0, best=best)
    assert r["tokens_per_s"] == pytest.approx(40 * 2**20 / 20.0)   # the command's wall after start-up
    assert r["ratio"] == pytest.approx(r["tokens_per_s"] / 3.252e6)
    missing = bd.row("7m", 1 << 20, metrics, run_wall_s=20.0, best=best)
    assert math.isnan(missing["ratio"])
    r["plan"] = ["stage 1: no checkpointing, scan states every 8, 64 x 16,384 tokens per forward (...)"]
    md = bd.markdown([r, missing], "NVIDIA H200")
    assert "- 1.4m 2^14: stage 1: no checkpointing" in md
    assert "| 1.4m | 2^14 |" in md and f"{r['ratio']:.1%}" in md and "| 7m | 2^20 |" in md


def test_bench_defaults_window():
    bd = _script("bench_defaults")
    tps = 1 << 20
    events = [(100.0, "step", 0, 0), (130.0, "step", 1, tps), (131.0, "step", 2, 2 * tps),
              (132.0, "step", 3, 3 * tps), (135.0, "val", 4, 4 * tps), (135.5, "step", 4, 4 * tps),
              (136.5, "step", 5, 5 * tps), (140.0, "val", 6, 6 * tps)]
    # finished: from step 2's start to the last validation's end; step 0 and 1 (compilation) left out
    tokens, seconds, t_k, to_exit = bd.measure(events, 2, tps, 6 * tps, t_exit=150.0)
    assert (tokens, seconds, t_k) == (4 * tps, 9.0, 131.0)
    assert to_exit == pytest.approx(4 * tps / 19.0)
    # stopped (no metrics.json): up to the last step that started
    tokens, seconds, _, to_exit = bd.measure(events, 2, tps, None, t_exit=150.0)
    assert (tokens, seconds, to_exit) == (3 * tps, 5.5, None)
    assert bd.measure(events[:2], 2, tps, None, 150.0) is None
