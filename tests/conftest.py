"""Fixtures shared by the test modules: a tiny language model, in memory and saved as a model dir."""
from __future__ import annotations

import pytest
import torch

from mamba_genome.checkpoint import save_model
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM


@pytest.fixture(scope="module")
def lm():
    """A randomly initialised 2-layer, d_model 32 LM in eval mode (seeded)."""
    torch.manual_seed(0)
    return MambaLM(MambaConfig.from_preset("tiny", d_model=32, n_layer=2)).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, lm):
    """``lm`` saved as a model directory (config.json + model.safetensors)."""
    d = tmp_path_factory.mktemp("model") / "m"
    save_model(lm, d)
    return d
