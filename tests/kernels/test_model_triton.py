"""A whole model on the Triton backend (the interpreter on CPU) against the torch backend:
loss and every parameter gradient, so the wiring of the fused kernels into the block (dt_proj
inside the scan, conv, norm) is covered end to end, not only kernel by kernel."""
from __future__ import annotations

import torch

from mamba_genome.model.lm import MambaLM

from .conftest import DEVICE


def test_triton_model_matches_torch_model():
    torch.manual_seed(0)
    cfg = dict(d_model=16, n_layer=2)
    ref = MambaLM.from_preset("tiny", scan_backend="torch", **cfg).to(DEVICE)
    tri = MambaLM.from_preset("tiny", scan_backend="triton", **cfg).to(DEVICE)
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


def test_triton_checkpointing_with_kept_scan_states(scan_fwd_calls):
    """gradient_checkpointing on the Triton backend: with the scan states kept (the default) each
    layer's scan forward runs once per step instead of twice, and the gradients are those of the
    un-checkpointed model; with checkpoint_keep_scan=False it runs twice, same gradients."""
    calls = scan_fwd_calls
    torch.manual_seed(1)
    cfg = dict(d_model=16, n_layer=2, scan_backend="triton")
    models = {"plain": MambaLM.from_preset("tiny", **cfg).to(DEVICE).train()}
    models["kept"] = MambaLM.from_preset("tiny", gradient_checkpointing=True, **cfg).to(DEVICE).train()
    models["recomputed"] = MambaLM.from_preset("tiny", gradient_checkpointing=True,
                                                           checkpoint_keep_scan=False, **cfg).to(DEVICE).train()
    for m in models.values():
        m.load_state_dict(models["plain"].state_dict())
    x = torch.randint(0, 8, (2, 33), device=DEVICE)
    counts, losses = {}, {}
    for name, m in models.items():
        calls["n"] = 0
        loss = m.loss(x)
        loss.backward()
        counts[name], losses[name] = calls["n"], loss.item()
    assert counts == {"plain": 2, "kept": 2, "recomputed": 4}
    assert losses["kept"] == losses["plain"] == losses["recomputed"]
    ref = dict(models["plain"].named_parameters())
    for name in ("kept", "recomputed"):
        for n, p in models[name].named_parameters():
            g, r = p.grad, ref[n].grad
            assert torch.isfinite(g).all(), (name, n)
            assert (g - r).norm() <= 1e-5 * r.norm() + 1e-7, (name, n, float((g - r).norm() / r.norm()))


def test_triton_checkpointing_under_bf16_autocast():
    """The checkpointed block under bf16 autocast (as in training): the recomputation restores
    autocast, the fused norm backward gets the bf16 mixer gradient and the fp32 stream gradient;
    loss equal and gradients as the plain model's to bf16 rounding."""
    torch.manual_seed(2)
    cfg = dict(d_model=16, n_layer=2, scan_backend="triton")
    plain = MambaLM.from_preset("tiny", **cfg).to(DEVICE).train()
    ckpt = MambaLM.from_preset("tiny", gradient_checkpointing=True, **cfg).to(DEVICE).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randint(0, 8, (2, 40), device=DEVICE)
    losses = []
    for m in (plain, ckpt):
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss = m.loss(x)
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == losses[1]
    ref = dict(plain.named_parameters())
    for n, p in ckpt.named_parameters():
        g, r = p.grad, ref[n].grad
        assert g.dtype == torch.float32 and torch.isfinite(g).all(), n
        assert (g - r).norm() <= 1e-2 * r.norm() + 1e-6, (n, float((g - r).norm() / r.norm()))
