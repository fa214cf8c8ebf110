"""`mamba-genome classify`: tiling, aggregation, TSV output and bad inputs."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from mamba_genome.checkpoint import save_model
from mamba_genome.cli import main
from mamba_genome.model.classifier import MambaClassifier
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM
from mamba_genome.workflows.classify import aggregate_log_probs, classify_fasta, tile_starts

DATA = Path(__file__).parent / "data"
LABELS = ["COL", "N315", "RF122"]


def _cfg():
    return MambaConfig.from_preset("tiny", d_model=16, n_layer=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    clf = MambaClassifier(_cfg(), len(LABELS), pooling="mean")
    with torch.no_grad():
        clf.head.weight.normal_(std=1.0)  # make predictions differ between windows
    return save_model(clf, tmp_path_factory.mktemp("clf") / "best",
                      extra={"labels": LABELS, "seq_len": 64}, init_kwargs=clf.init_kwargs).parent


@pytest.fixture()
def sample(tmp_path):
    rng = np.random.default_rng(0)
    seqs = {"long": 200, "short": 30, "exact": 64}
    text = "".join(f">{k} description\n{''.join(rng.choice(list('ACGT'), n))}\n" for k, n in seqs.items())
    p = tmp_path / "sample.fa"
    p.write_text(text)
    return p


@pytest.mark.parametrize("length, seq_len, expected", [
    pytest.param(10, 4, [0, 4, 6], id="L10-W4-last-aligned"),
    pytest.param(8, 4, [0, 4], id="L8-W4-exact"),
    pytest.param(3, 4, [0], id="short"),
    pytest.param(4, 4, [0], id="one"),
    pytest.param(9, 4, [0, 4, 5], id="L9-W4"),
])
def test_tile_starts(length, seq_len, expected):
    starts = tile_starts(length, seq_len)
    assert starts == expected
    covered = set()
    for s in starts:
        covered |= set(range(s, min(length, s + seq_len)))
    assert covered == set(range(length))


def test_aggregate_is_softmax_of_mean_log_prob():
    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]])
    got = aggregate_log_probs(np.log(p))
    geo = np.sqrt(p[0] * p[1])
    np.testing.assert_allclose(got, geo / geo.sum(), rtol=1e-12)
    np.testing.assert_allclose(aggregate_log_probs(np.log(p[:1])), p[0], rtol=1e-12)


def test_classify_records_and_windows_agree(model_dir, sample):
    rows = classify_fasta(sample, model_dir, batch_size=3, device="cpu")
    win = classify_fasta(sample, model_dir, batch_size=2, device="cpu", per_window=True)
    assert [r["id"] for r in rows] == ["long", "short", "exact"]
    assert [r["length"] for r in rows] == [200, 30, 64]
    assert [(w["start"], w["end"]) for w in win if w["id"] == "long"] == [(0, 64), (64, 128), (128, 192), (136, 200)]
    assert [(w["start"], w["end"]) for w in win if w["id"] == "short"] == [(0, 30)]
    for r in rows:
        ws = np.array([[w[f"p_{x}"] for x in LABELS] for w in win if w["id"] == r["id"]])
        expect = aggregate_log_probs(np.log(ws))
        np.testing.assert_allclose([r[f"p_{x}"] for x in LABELS], expect, rtol=1e-5)
        assert r["predicted"] == LABELS[int(np.argmax(expect))]
    # --seq-len overrides the training length
    short = classify_fasta(sample, model_dir, device="cpu", per_window=True, seq_len=100)
    assert [(w["start"], w["end"]) for w in short if w["id"] == "long"] == [(0, 100), (100, 200)]


def test_cli_tsv_stdout_and_file(model_dir, sample, tmp_path):
    r = CliRunner().invoke(main, ["classify", str(sample), "--model", str(model_dir)])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(io.StringIO(r.stdout), sep="\t")
    assert list(df.columns) == ["id", "length", "predicted"] + [f"p_{x}" for x in LABELS]
    np.testing.assert_allclose(df[[f"p_{x}" for x in LABELS]].sum(axis=1), 1.0, atol=1e-5)
    out = tmp_path / "pred.tsv"
    r = CliRunner().invoke(main, ["classify", str(sample), "-m", str(model_dir / "best"), "-o", str(out),
                                  "--per-window", "--batch-size", "1"])
    assert r.exit_code == 0, r.output
    dfw = pd.read_csv(out, sep="\t")
    assert list(dfw.columns[:4]) == ["id", "start", "end", "predicted"] and len(dfw) == 6
    assert not list(tmp_path.glob(".pred.tsv.tmp*"))


def test_cli_bad_inputs(model_dir, sample, tmp_path):
    lm_dir = save_model(MambaLM(_cfg()), tmp_path / "lm")
    cases = [
        (["classify", str(sample), "--model", str(lm_dir)], "no classification head"),
        (["classify", str(DATA / "not_fasta.fq"), "--model", str(model_dir)], "FASTA"),
        (["classify", str(tmp_path / "absent.fa"), "--model", str(model_dir)], "no such file"),
        (["classify", str(sample), "--model", str(tmp_path / "absent")], "does not exist"),
        (["classify", str(sample), "--model", str(model_dir), "--batch-size", "0"], "--batch-size"),
    ]
    for args, msg in cases:
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1, (args, r.output)
        assert r.stderr.startswith("error: ") and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_pipe_to_head_prints_no_traceback(model_dir, tmp_path):
    import subprocess
    import sys

    many = tmp_path / "many.fa"
    many.write_text("".join(f">read{i}\nACGTACGTTTGACCA\n" for i in range(1500)))
    cmd = f"{sys.executable} -m mamba_genome classify {many} -m {model_dir} --batch-size 512 | head -2"
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).parent.parent)
    assert p.stdout.splitlines()[0].startswith("id\tlength") and len(p.stdout.splitlines()) == 2
    assert "Traceback" not in p.stderr and "Error" not in p.stderr, p.stderr
