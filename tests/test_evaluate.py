"""`evaluate`: bits per base and perplexity of a model on FASTA records or a token store."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mamba_genome.checkpoint import save_model
from mamba_genome.cli import main
from mamba_genome.data.fasta import iter_fasta_records
from mamba_genome.data.store import ingest
from mamba_genome.data.tokenizer import encode
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM
from mamba_genome.workflows.evaluate import evaluate

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = MambaLM(MambaConfig.from_preset("tiny", d_model=16, n_layer=1))
    return save_model(model, tmp_path_factory.mktemp("m") / "model")


@pytest.fixture(scope="module")
def fasta(tmp_path_factory):
    d = tmp_path_factory.mktemp("fa")
    shutil.copy(DATA / "umaydis_3contigs.fa", d / "u.fa")
    return d / "u.fa"


def _reference_bits(model_dir, fasta, seq_len):
    """Window by window with MambaLM.loss: the definition evaluate must match."""
    from mamba_genome.checkpoint import load_model

    model, _ = load_model(model_dir)
    total, n = 0.0, 0
    for name, seq in iter_fasta_records(fasta):
        ids = torch.from_numpy(encode(seq)).long()
        for s in range(0, len(ids), seq_len):
            w = ids[s : s + seq_len][None]
            if w.shape[1] < 2:
                continue
            with torch.no_grad():
                total += model.loss(w).item() * (w.shape[1] - 1)
            n += w.shape[1] - 1
    return total / n / math.log(2), n


@pytest.mark.parametrize("seq_len,batch_size", [(64, 3), (500, 2), (1300, 1)])
def test_matches_window_by_window_reference(model_dir, fasta, seq_len, batch_size):
    r = evaluate(model_dir, fasta, seq_len=seq_len, batch_size=batch_size, device="cpu", progress=False)
    bits, n = _reference_bits(model_dir, fasta, seq_len)  # the slice has no N, so every target counts
    assert r["bases"] == n and r["records"] == 3
    assert r["bits_per_base"] == pytest.approx(bits, rel=1e-5)
    assert r["perplexity"] == pytest.approx(2 ** r["bits_per_base"], rel=1e-6)
    assert sum(p["bases"] for p in r["per_record"]) == n


def test_store_input_equals_fasta(model_dir, fasta, tmp_path):
    store = ingest(fasta, tmp_path / "u.mgstore", progress=False)
    a = evaluate(model_dir, fasta, seq_len=128, device="cpu", progress=False)
    b = evaluate(model_dir, store.path, seq_len=128, device="cpu", progress=False)
    assert a["bases"] == b["bases"] and a["bits_per_base"] == pytest.approx(b["bits_per_base"], rel=1e-6)


def test_n_targets_not_scored(model_dir, tmp_path):
    fa = tmp_path / "n.fa"
    fa.write_text(">a\nACGTNNNNNNNNACGTACGT\n")
    r = evaluate(model_dir, fa, seq_len=16, device="cpu", progress=False)
    assert r["bases"] == 20 - 2 - 8  # first base of each of 2 windows, and the 8 N


def test_cli_table_and_json(model_dir, fasta):
    res = CliRunner().invoke(main, ["evaluate", str(model_dir), "--fasta", str(fasta), "--seq-len", "256", "-q"])
    assert res.exit_code == 0, res.output
    assert "bits/base" in res.stdout and "ALL (3 records)" in res.stdout
    res = CliRunner().invoke(main, ["evaluate", str(model_dir), "--fasta", str(fasta), "--json", "--max-windows", "3"])
    r = json.loads(res.stdout)
    assert r["windows"] == 3 and math.isfinite(r["bits_per_base"])


@pytest.mark.parametrize("args,message", [
    pytest.param(["MODEL", "--fasta", "nope.fa"], "no such file", id="missing-fasta"),
    pytest.param(["nope_model", "--fasta", "FASTA"], "does not exist", id="missing-model"),
    pytest.param(["MODEL", "--fasta", "FASTA", "--seq-len", "4"], "--seq-len", id="seq-len"),
    pytest.param(["MODEL", "--fasta", str(DATA / "not_fasta.fq")], "not_fasta.fq", id="not-fasta"),
])
def test_bad_input_one_line(model_dir, fasta, args, message):
    args = [str(model_dir) if a == "MODEL" else str(fasta) if a == "FASTA" else a for a in args]
    res = CliRunner().invoke(main, ["evaluate", *args])
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("error: ") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("device,message", [("banana", "--device must be"), ("cuda:7", "cuda")])
def test_bad_device_is_one_line(tmp_path, device, message, monkeypatch):
    from mamba_genome.device import resolve_device
    from mamba_genome.errors import UserError

    if device.startswith("cuda"):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=message):
        resolve_device(device)
