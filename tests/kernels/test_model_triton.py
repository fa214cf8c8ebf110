"""A whole model on the Triton backend (the interpreter on CPU) against the torch backend:
loss and every parameter gradient, so the wiring of the fused kernels into the block (dt_proj
inside the scan, conv, norm) is covered end to end, not only kernel by kernel."""
from __future__ import annotations

import torch

from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM

from .conftest import DEVICE


def test_triton_model_matches_torch_model():
    torch.manual_seed(0)
    cfg = dict(d_model=16, n_layer=2)
    ref = MambaLM(MambaConfig.from_preset("tiny", scan_backend="torch", **cfg)).to(DEVICE)
    tri = MambaLM(MambaConfig.from_preset("tiny", scan_backend="triton", **cfg)).to(DEVICE)
    tri.load_state_dict(ref.state_dict())
    x = torch.randint(0, 8, (2, 45), device=DEVICE)
    losses = []
    for m in (ref, tri):
        logits = m(x)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    grads = {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}
    assert any("dt_proj.weight" in n for n in grads)
    for n, p in tri.named_parameters():
        if n in grads:
            g, r = p.grad, grads[n]
            assert torch.isfinite(g).all(), n
            assert (g - r).norm() <= 1e-4 * r.norm() + 1e-7, (n, float((g - r).norm() / r.norm()))
