"""Self-describing checkpoints: round trip, run-directory resolution, clear errors."""
from __future__ import annotations

import json

import pytest
import torch

from mamba_genome.checkpoint import load_model, read_meta, resolve_model_dir, save_model
from mamba_genome.errors import CheckpointError
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM


@pytest.fixture
def model():
    torch.manual_seed(0)
    return MambaLM(MambaConfig.from_preset("tiny", d_model=32, n_layer=2))


def test_round_trip_model_dir(tmp_path, model):
    save_model(model, tmp_path / "m", extra={"source": "test"})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded, meta = load_model(tmp_path / "m")
    x = torch.randint(5, 10, (2, 20))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded.lm_head.weight is loaded.embedding.weight
    assert meta["model_type"] == "lm" and meta["extra"] == {"source": "test"}
    assert meta["tokenizer"]["vocab"][5:] == ["A", "C", "G", "T", "N"]
    assert meta["config"]["d_model"] == 32 and meta["num_parameters"] == model.num_parameters()


def test_run_dir_resolves_best_then_last(tmp_path, model):
    save_model(model, tmp_path / "run" / "last")
    assert resolve_model_dir(tmp_path / "run").name == "last"
    save_model(model, tmp_path / "run" / "best")
    assert resolve_model_dir(tmp_path / "run").name == "best"


def test_overwrite_is_atomic_and_leaves_no_temp(tmp_path, model):
    save_model(model, tmp_path / "m")
    save_model(model, tmp_path / "m")
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


@pytest.mark.parametrize("case", ["missing", "file", "empty_dir", "no_weights", "bad_json", "corrupt_weights"])
def test_clear_errors(tmp_path, model, case):
    target = tmp_path / "m"
    if case == "file":
        target.write_text("x")
    elif case == "empty_dir":
        target.mkdir()
    elif case in ("no_weights", "bad_json", "corrupt_weights"):
        save_model(model, target)
        if case == "no_weights":
            (target / "model.safetensors").unlink()
        elif case == "bad_json":
            (target / "config.json").write_text("{not json")
        else:
            data = (target / "model.safetensors").read_bytes()
            (target / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as info:
        load_model(target)
    assert "\n" not in str(info.value)


def test_mismatched_weights_are_reported(tmp_path, model):
    save_model(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["config"]["n_layer"] = 3
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(tmp_path / "m")
    assert read_meta(tmp_path / "m")["config"]["n_layer"] == 3
