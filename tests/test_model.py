"""The Mamba LM: presets, forward/backward, streaming equivalence, init and weight-decay groups."""
from __future__ import annotations

import math

import pytest
import torch

from mamba_genome.model.config import PRESETS, MambaConfig
from mamba_genome.model.lm import MambaLM, param_groups
from mamba_genome.model.runtime import RuntimeOptions, split_runtime


def small(**kw):
    return MambaConfig.from_preset("tiny", d_model=32, n_layer=2, **kw)


def small_lm(n_layer=2, **kw):
    """A small MambaLM; run-time options (scan_backend, gradient_checkpointing, ...) go to its RuntimeOptions."""
    arch, rt = split_runtime(kw)
    return MambaLM(MambaConfig.from_preset("tiny", d_model=32, n_layer=n_layer, **arch), RuntimeOptions(**rt))


@pytest.mark.parametrize("preset,expected", [("1.4m", 1.40e6), ("7m", 7.01e6)])
def test_paper_presets_have_paper_sizes(preset, expected):
    n = MambaLM(MambaConfig.from_preset(preset)).num_parameters()
    assert abs(n - expected) / expected < 0.01


def test_presets_listed():
    assert set(PRESETS) >= {"tiny", "1.4m", "7m"}
    with pytest.raises(ValueError, match="unknown preset"):
        MambaConfig.from_preset("huge")


def test_config_validation_and_roundtrip():
    c = small()
    assert c.dt_rank == 2 and c.d_inner == 64 and c.padded_vocab_size == 16
    assert MambaConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="d_conv"):
        MambaConfig(d_conv=7)
    with pytest.raises(ValueError, match="unknown MambaConfig fields"):
        MambaConfig.from_dict({"d_model": 8, "colour": "red"})


def test_forward_backward_shapes_and_all_grads():
    torch.manual_seed(0)
    m = small_lm()
    x = torch.randint(5, 10, (3, 37))
    logits = m(x)
    assert logits.shape == (3, 37, 10)
    loss = m.loss(x)
    assert math.isfinite(loss.item()) and abs(loss.item() - math.log(10)) < 1.0
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_tied_head_and_initialisation():
    m = small_lm()
    assert m.lm_head.weight is m.embedding.weight
    mixer = m.layers[0].mixer
    A = -torch.exp(mixer.A_log)
    assert torch.allclose(A[0], -torch.arange(1, 17, dtype=torch.float32))  # S4D-real
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-4 - 1e-7 and dt.max() <= 0.1 + 1e-6       # log-uniform [1e-3, 1e-1]
    assert torch.all(mixer.D == 1)


def test_no_weight_decay_on_A_log_D_norms_biases():
    m = small_lm()
    decay, no_decay = param_groups(m, 0.1)
    nd = {id(p) for p in no_decay["params"]}
    names = {id(p): n for n, p in m.named_parameters()}
    for n, p in m.named_parameters():
        if any(k in n for k in ("A_log", ".D", "norm", "bias")):
            assert id(p) in nd, n
    assert all("in_proj" in names[id(p)] or "out_proj" in names[id(p)] or "x_proj" in names[id(p)]
               or "dt_proj.weight" in names[id(p)] or "conv1d.weight" in names[id(p)] or "embedding" in names[id(p)]
               for p in decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


@pytest.mark.parametrize("chunk", [1, 7, 50, 64])
def test_streaming_chunks_match_single_pass(chunk):
    torch.manual_seed(1)
    m = small_lm().eval()
    x = torch.randint(5, 10, (2, 131))
    with torch.no_grad():
        full = m.backbone(x)
        state = m.allocate_state(2)
        parts = [m.backbone(x[:, i:i + chunk], state=state) for i in range(0, x.shape[1], chunk)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-5)


def test_token_by_token_step_matches_forward():
    torch.manual_seed(2)
    m = small_lm().eval()
    x = torch.randint(5, 10, (2, 40))
    with torch.no_grad():
        ref = m(x)
        state = m.allocate_state(2)
        steps = torch.stack([m.step(x[:, t], state) for t in range(x.shape[1])], 1)
    torch.testing.assert_close(steps, ref, rtol=1e-4, atol=1e-5)


def test_reference_and_torch_backends_agree_in_model():
    torch.manual_seed(3)
    x = torch.randint(5, 10, (1, 23))
    m = small_lm(scan_backend="torch").double().eval()
    ref = small_lm(scan_backend="reference").double().eval()
    ref.load_state_dict(m.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x), rtol=1e-9, atol=1e-9)


def test_output_layer_selection():
    m = small_lm().eval()
    x = torch.randint(5, 10, (1, 9))
    with torch.no_grad():
        h0 = m.backbone(x, output_layer=0)
        h_last = m.backbone(x, output_layer=1)
        assert torch.allclose(h_last, m.backbone(x))
        assert not torch.allclose(h0, h_last)
    with pytest.raises(ValueError):
        m.backbone(x, output_layer=5)


def test_bf16_checkpoints_keep_loss_and_grads_close():
    """checkpoint_bf16 saves bf16 copies of the residual stream: the loss is the fp32 one up to the
    rounding of each block's input, and every gradient agrees to bf16 precision."""
    torch.manual_seed(5)
    x = torch.randint(5, 10, (2, 40))
    ref = small_lm()
    low = small_lm(gradient_checkpointing=True, checkpoint_bf16=True)
    low.load_state_dict(ref.state_dict())
    l_ref, l_low = ref.loss(x), low.loss(x)
    assert abs(l_ref.item() - l_low.item()) < 1e-2 * abs(l_ref.item())
    l_ref.backward()
    l_low.backward()
    for (n, p1), p2 in zip(ref.named_parameters(), low.parameters()):
        assert torch.isfinite(p2.grad).all(), n
        rel = ((p1.grad - p2.grad).norm() / p1.grad.norm().clamp_min(1e-12)).item()
        assert rel < 3e-2, (n, rel)


def test_gradient_checkpointing_gives_same_grads():
    torch.manual_seed(4)
    x = torch.randint(5, 10, (2, 33))
    m1 = small_lm()
    m2 = small_lm(gradient_checkpointing=True)
    m2.load_state_dict(m1.state_dict())
    m1.loss(x).backward()
    m2.loss(x).backward()
    for (n, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-5, atol=1e-6, msg=n)


def test_checkpoint_skip_leaves_last_layers_plain():
    """checkpoint_skip=N runs the last N layers without checkpointing: same loss and gradients."""
    torch.manual_seed(6)
    x = torch.randint(5, 10, (2, 30))
    m1 = small_lm(gradient_checkpointing=True)
    m2 = small_lm(gradient_checkpointing=True, checkpoint_skip=1)
    m2.load_state_dict(m1.state_dict())
    m1.loss(x).backward()
    m2.loss(x).backward()
    for (n, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-5, atol=1e-6, msg=n)


@pytest.mark.parametrize("overrides", [dict(), dict(checkpoint_bf16=True), dict(checkpoint_skip=1)])
def test_checkpointing_keeps_one_stream_tensor_per_layer(overrides):
    """Activation checkpointing keeps one (B, L, d_model) tensor per checkpointed layer (the
    residual stream): one more layer adds exactly one saved tensor of that size, where a plain
    layer adds many. checkpoint_skip=1 leaves the last layer plain."""
    torch.manual_seed(7)
    x = torch.randint(5, 10, (2, 24))

    def count(n_layer, **kw):
        model = small_lm(n_layer, **kw)
        n = 0

        def pack(t):
            nonlocal n
            if t.numel() >= x.shape[0] * (x.shape[1] - 1) * model.config.d_model:
                n += 1
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model.loss(x)
        loss.backward()
        return n

    per_plain_layer = count(3) - count(2)
    assert per_plain_layer > 3
    ckpt = dict(gradient_checkpointing=True, **overrides)
    assert count(3, **ckpt) - count(2, **ckpt) == 1
    if overrides.get("checkpoint_skip"):
        assert count(2, **ckpt) - count(1, **ckpt) == 1      # the added layer is checkpointed, the last stays plain
        assert count(1, **ckpt) - count(1, gradient_checkpointing=True) == per_plain_layer - 1


def test_keep_scan_follows_checkpoint_bf16_unless_set():
    """checkpoint_keep_scan defaults to on, and to off with checkpoint_bf16 (the least-memory mode);
    an explicit value wins."""
    assert RuntimeOptions().checkpoint_keep_scan is True
    assert RuntimeOptions(checkpoint_bf16=True).checkpoint_keep_scan is False
    assert RuntimeOptions(checkpoint_bf16=True, checkpoint_keep_scan=True).checkpoint_keep_scan is True


def test_config_holds_architecture_only():
    """No run-time option is a MambaConfig field, so none reaches config.json; an old config dict
    that still carries them loads with them ignored."""
    from mamba_genome.model.runtime import RUNTIME_FIELDS

    d = small().to_dict()
    assert not set(RUNTIME_FIELDS) & set(d)
    with pytest.raises(TypeError):
        small(gradient_checkpointing=True)
    old = {**d, "gradient_checkpointing": True, "checkpoint_bf16": False, "checkpoint_keep_scan": True,
           "checkpoint_skip": 1, "scan_state_every": 16, "scan_backend": "torch"}
    assert MambaConfig.from_dict(old) == small()


def test_set_runtime_changes_execution_not_the_function():
    """set_runtime reaches every layer; gradients with checkpointing switched on later are the plain ones."""
    torch.manual_seed(8)
    x = torch.randint(5, 10, (2, 21))
    m1, m2 = small_lm(), small_lm()
    m2.load_state_dict(m1.state_dict())
    rt = m2.set_runtime(gradient_checkpointing=True, checkpoint_skip=1)
    assert all(layer.mixer.runtime is rt for layer in m2.layers) and m2.runtime.gradient_checkpointing
    assert not m1.runtime.gradient_checkpointing  # the default options are not shared between models
    m1.loss(x).backward()
    m2.loss(x).backward()
    for (n, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-5, atol=1e-6, msg=n)
