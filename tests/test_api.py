"""mamba_genome.api: streamed embeddings equal one pass; pooling, layers, RC averaging, scoring, loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mamba_genome
from mamba_genome.api import GenomeModel
from mamba_genome.checkpoint import save_model
from mamba_genome.data.tokenizer import encode, reverse_complement
from mamba_genome.errors import CheckpointError, UserError
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM

ONE_PASS = 10**9  # a chunk larger than any test sequence


@pytest.fixture(scope="module")
def gm():
    torch.manual_seed(0)
    return GenomeModel(MambaLM(MambaConfig.from_preset("tiny", d_model=32, n_layer=2)))


@pytest.fixture(scope="module")
def seqs():
    rng = np.random.default_rng(1)
    return ["".join(rng.choice(list("ACGTN"), n, p=[0.24, 0.24, 0.24, 0.24, 0.04])) for n in (101, 37, 5, 64)]


def _close(a, b, tol=1e-5):
    if isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y, tol)
        return
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("pool", ["mean", "last", None], ids=["mean", "last", "per-base"])
@pytest.mark.parametrize("chunk,batch", [(7, 4), (33, 3)], ids=["c7-b4", "c33-b3"])
def test_streamed_equals_one_pass(gm, seqs, pool, chunk, batch):
    ref = gm.embed(seqs, pool=pool, chunk_size=ONE_PASS, batch_size=1)
    out = gm.embed(seqs, pool=pool, chunk_size=chunk, batch_size=batch)
    _close(out, ref)


def test_precision_auto_is_fp32_on_cpu(gm, seqs):
    assert gm.resolve_precision("auto") == "fp32" and gm.resolve_precision("bf16") == "bf16"
    np.testing.assert_array_equal(gm.embed(seqs), gm.embed(seqs, precision="fp32"))
    with pytest.raises(UserError, match="--precision must be one of auto, fp32, bf16"):
        gm.embed(seqs, precision="fp16")


def test_progress_counts_finished_bases(gm, seqs):
    """The bar advances by the bases embedded and ends at the total."""
    seen = []
    orig = gm._bar
    gm._bar = lambda progress, total, desc: type("B", (), {"update": lambda self, k: seen.append(k),
                                                            "close": lambda self: None})()
    try:
        gm.embed(seqs, chunk_size=16, progress=True)
    finally:
        gm._bar = orig
    assert sum(seen) == sum(len(s) for s in seqs)


def test_chunk_of_one_base(gm, seqs):
    short = [seqs[2], seqs[1][:9]]
    _close(gm.embed(short, pool=None, chunk_size=1, batch_size=2), gm.embed(short, pool=None, chunk_size=ONE_PASS))


def test_one_pass_matches_backbone(gm, seqs):
    x = torch.from_numpy(encode(seqs[0])).long()[None]
    with torch.no_grad():
        ref = gm.lm.backbone(x)[0].numpy()
    _close(gm.embed(seqs[0], pool=None, chunk_size=ONE_PASS), ref)


def test_pooled_agrees_with_per_base(gm, seqs):
    per_base = gm.embed(seqs, pool=None, chunk_size=16)
    _close(gm.embed(seqs, pool="mean", chunk_size=16), np.stack([p.mean(0) for p in per_base]))
    _close(gm.embed(seqs, pool="last", chunk_size=16), np.stack([p[-1] for p in per_base]))


def test_shapes_and_input_kinds(gm, seqs):
    d = gm.d_model
    assert gm.embed(seqs[0]).shape == (d,)
    assert gm.embed(seqs).shape == (len(seqs), d)
    assert gm.embed(seqs[1], pool=None).shape == (len(seqs[1]), d)
    toks = [encode(s) for s in seqs]
    _close(gm.embed(toks), gm.embed(seqs))
    _close(gm.embed(torch.from_numpy(toks[0])), gm.embed(seqs[0]))
    equal = np.stack([encode(seqs[0][:20]), encode(seqs[1][:20])])
    assert gm.embed(equal).shape == (2, d)


@pytest.mark.parametrize("pool", ["mean", None], ids=["mean", "per-base"])
def test_rc_average(gm, seqs, pool):
    fwd = gm.embed(seqs, pool=pool)
    rc = gm.embed([reverse_complement(s) for s in seqs], pool=pool)
    if pool is None:
        want = [(f + r[::-1]) / 2 for f, r in zip(fwd, rc)]
    else:
        want = (fwd + rc) / 2
    _close(gm.embed(seqs, pool=pool, rc_average=True, chunk_size=9, batch_size=3), want)


def test_stride_subsamples_per_base(gm, seqs):
    full = gm.embed(seqs, pool=None, rc_average=True)
    _close(gm.embed(seqs, pool=None, stride=3, chunk_size=5, rc_average=True), [f[::3] for f in full])


def test_layer(gm, seqs):
    x = torch.from_numpy(encode(seqs[0])).long()[None]
    with torch.no_grad():
        want = gm.lm.backbone(x, output_layer=0)[0].numpy()
    _close(gm.embed(seqs[0], pool=None, layer=0, chunk_size=10), want)
    _close(gm.embed(seqs, layer=-1), gm.embed(seqs))  # last block == the default
    with pytest.raises(UserError, match="--layer"):
        gm.embed(seqs, layer=2)


def test_bf16_close_to_fp32(gm, seqs):
    a = gm.embed(seqs, precision="bf16", chunk_size=16)
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, gm.embed(seqs), atol=0.1)


def test_bad_arguments(gm, seqs):
    with pytest.raises(UserError, match="--pool"):
        gm.embed(seqs, pool="max")
    with pytest.raises(UserError, match="--stride"):
        gm.embed(seqs, pool="mean", stride=2)
    with pytest.raises(UserError, match="empty"):
        gm.embed(["ACGT", ""])
    with pytest.raises(UserError, match="token ids"):
        gm.embed(np.array([5, 6, 42]))
    with pytest.raises(UserError, match="--chunk-size"):
        gm.embed(seqs, chunk_size=0)


def test_score_matches_training_loss_and_streams(gm, seqs):
    """log_likelihood is the training loss's sum (N targets not scored); per_base is NaN at
    position 0 and at N; streaming in chunks and batches gives the same numbers."""
    res = gm.score(seqs, chunk_size=ONE_PASS)
    x = torch.from_numpy(encode(seqs[0])).long()[None]
    n_bases = sum(c != "N" for c in seqs[0][1:])                  # scored targets: positions 1.. that are bases
    with torch.no_grad():
        nll = gm.lm.loss(x).item() * n_bases                      # mean over scored targets
    assert res.n_scored[0] == n_bases and res.log_likelihood[0] == pytest.approx(-nll, rel=1e-5)
    for p, s in zip(res.per_base, seqs):
        assert len(p) == len(s) and np.isnan(p[0])
        is_n = np.array([c == "N" for c in s])
        assert np.isnan(p[1:][is_n[1:]]).all() and (p[1:][~is_n[1:]] <= 0).all()
    streamed = gm.score(seqs, chunk_size=29, batch_size=3)
    np.testing.assert_allclose(streamed.log_likelihood, res.log_likelihood, rtol=1e-5)
    _close([p[1:] for p in streamed.per_base], [p[1:] for p in res.per_base])
    np.testing.assert_array_equal(streamed.n_scored, res.n_scored)
    assert res["log_likelihood"] is res.log_likelihood
    np.testing.assert_allclose(res.nats_per_base, -res.log_likelihood / res.n_scored)


def test_load_model_dir_and_run_dir(tmp_path, gm, seqs):
    save_model(gm.lm, tmp_path / "model")
    save_model(gm.lm, tmp_path / "run" / "best")
    want = gm.embed(seqs)
    for path in (tmp_path / "model", tmp_path / "run"):
        m = mamba_genome.load(path, device="cpu")
        assert m.d_model == gm.d_model and m.model_type == "lm"
        _close(m.embed(seqs), want)
    with pytest.raises(CheckpointError):
        mamba_genome.load(tmp_path / "missing")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text((tmp_path / "model" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="model.safetensors"):
        mamba_genome.load(tmp_path / "broken")


def test_classifier_checkpoint(tmp_path, gm, seqs):
    from mamba_genome.model.classifier import MambaClassifier

    torch.manual_seed(0)
    clf = MambaClassifier.from_pretrained_lm(gm.lm, num_classes=3, pooling="mean")
    save_model(clf, tmp_path / "clf", init_kwargs=clf.init_kwargs, extra={"labels": ["a", "b", "c"]})
    m = mamba_genome.load(tmp_path / "clf", device="cpu")
    assert m.model_type == "classifier" and m.labels == ["a", "b", "c"]
    _close(m.embed(seqs), gm.embed(seqs))  # embeddings come from the backbone LM
    with torch.no_grad():
        want = torch.softmax(clf(torch.from_numpy(encode(seqs[0])).long()[None]), -1)[0].numpy()
    _close(m.classify(seqs[0], chunk_size=8), want)
    assert m.classify(seqs).shape == (len(seqs), 3)
    with pytest.raises(UserError, match="classification head"):
        gm.classify(seqs)


def test_load_while_returns_the_model_and_what_was_read(tmp_path):
    from mamba_genome.api import load_while

    d = save_model(MambaLM(MambaConfig.from_preset("tiny")), tmp_path / "m")
    threads = []

    def read():
        import threading
        threads.append(threading.current_thread())
        return "input"

    model, value = load_while(d, read, device="cpu")
    assert value == "input" and isinstance(model, GenomeModel) and model.device.type == "cpu"
    import threading
    assert threads == [threading.main_thread()]   # the input is read on the caller's thread


def test_load_while_reports_the_input_error_first(tmp_path):
    from mamba_genome.api import load_while

    def bad_input():
        raise UserError("bad.fa: not a FASTA file")

    with pytest.raises(UserError, match="not a FASTA"):           # the model is missing too
        load_while(tmp_path / "no-model", bad_input)
    with pytest.raises(CheckpointError):                          # a good input, a missing model
        load_while(tmp_path / "no-model", lambda: "ok")
