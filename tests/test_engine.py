"""mamba_genome.inference: batching, streaming, the precision policy, the one likelihood definition
(evaluate == API score == training loss), classifier outputs and open_sequences."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mamba_genome.checkpoint import save_model
from mamba_genome.data.tokenizer import N, PAD, encode, reverse_complement
from mamba_genome.errors import UserError
from mamba_genome.inference import engine as eng
from mamba_genome.inference import open_sequences
from mamba_genome.inference.engine import ChunkReader, InferenceEngine, resolve_precision
from mamba_genome.model import likelihood
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM

ONE_PASS = 10**9


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return MambaLM(MambaConfig.from_preset("tiny", d_model=16, n_layer=2)).eval()


@pytest.fixture(scope="module")
def engine(lm):
    return InferenceEngine(lm)


@pytest.fixture(scope="module")
def seqs():
    rng = np.random.default_rng(1)
    return ["".join(rng.choice(list("ACGTN"), n, p=[0.24, 0.24, 0.24, 0.24, 0.04])) for n in (101, 37, 5, 64)]


def _toks(seqs):
    return [encode(s) for s in seqs]


def _reference_scores(lm, tok):
    """Target log-probs of one sequence from a single full forward, by likelihood.py."""
    x = torch.from_numpy(tok).long()[None]
    with torch.no_grad():
        lp, keep = likelihood.target_log_probs(lm(x[:, :-1]), x[:, 1:])
    return lp[0].numpy(), keep[0].numpy()


# ------------------------------------------------------------------ batching and streaming
def test_default_batch_fills_positions_on_gpu(engine, monkeypatch):
    """batch_size=None: on a GPU as many records as fill CHUNK_TOKENS at the batch's first
    (longest) record's step, at least DEFAULT_BATCH_SIZE; on CPU DEFAULT_BATCH_SIZE."""
    for name, value in (("DEFAULT_CHUNK_SIZE", 4), ("CHUNK_TOKENS", 24), ("DEFAULT_BATCH_SIZE", 2)):
        monkeypatch.setattr(eng, name, value)
    lengths = [100, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2]
    toks = [np.zeros(n, dtype=np.uint8) for n in lengths]
    assert [len(b.idx) for b in engine.batches(toks, lengths)] == [2] * 6   # CPU
    monkeypatch.setattr(InferenceEngine, "device", property(lambda self: torch.device("cuda")))
    # longest 100 -> step 4 -> 24 // 4 = 6 records; then longest 3 -> 8 records (6 left)
    assert [len(b.idx) for b in engine.batches(toks, lengths)] == [6, 6]
    assert [len(b.idx) for b in engine.batches(toks, lengths, batch_size=5)] == [5, 5, 2]
    first = next(iter(engine.batches(toks, lengths, batch_size=5)))
    assert first.idx[0] == 0 and first.lengths == [100, 3, 3, 3, 3]           # longest first


def test_default_chunk_keeps_positions_in_flight(engine, seqs, monkeypatch):
    """chunk_size=None on a GPU: each step is CHUNK_TOKENS / sequences still running, at least
    DEFAULT_CHUNK_SIZE (on CPU: CPU_CHUNK_SIZE)."""
    monkeypatch.setattr(eng, "DEFAULT_CHUNK_SIZE", 4)
    monkeypatch.setattr(eng, "CPU_CHUNK_SIZE", 5)
    monkeypatch.setattr(eng, "CHUNK_TOKENS", 24)
    lengths = [len(s) for s in seqs]                                  # 101, 37, 5, 64
    reader = ChunkReader(seqs, lengths, None, rc=False)               # what a GPU model streams
    # 4 running -> steps of 6 until 5 ends; 3 -> 8 until 37; 2 -> 12 until 64; then 1 -> 24
    assert list(reader.spans()) == [(0, 6), (6, 14), (14, 22), (22, 30), (30, 38), (38, 50), (50, 62),
                                    (62, 74), (74, 98), (98, 101)]
    (fixed,) = engine.batches(seqs, lengths, 7, 8)
    assert list(fixed.reader.spans())[:2] == [(0, 7), (7, 14)]
    (cpu,) = engine.batches(seqs, lengths, None, 8)                   # CPU: fixed CPU_CHUNK_SIZE
    assert list(cpu.reader.spans())[:2] == [(0, 5), (5, 10)]


def test_chunk_reader_reads_uint8_padded_chunks(seqs):
    """Chunks travel to the device as uint8 token ids (1 byte a base), PAD past a record's end,
    reverse-complemented on the fly with rc."""
    toks = [encode(seqs[0]), encode(seqs[2])]                        # 101 and 5 bases
    chunk = ChunkReader(toks, [101, 5], 8, rc=False).read(0, 8, [0, 1])
    assert chunk.dtype == torch.uint8 and chunk.shape == (2, 8)
    chunk = chunk.numpy()
    np.testing.assert_array_equal(chunk[0], toks[0][:8])
    np.testing.assert_array_equal(chunk[1], np.r_[toks[1], [PAD] * 3])
    rc = ChunkReader(toks, [101, 5], 8, rc=True).read(0, 8, [1]).numpy()
    np.testing.assert_array_equal(rc[0, :5], encode(reverse_complement(seqs[2])))


def test_stream_drops_finished_rows_and_carries_state(engine, lm, seqs):
    """Finished sequences leave the batch; the streamed hidden states equal one backbone pass."""
    toks = _toks(seqs)
    (batch,) = engine.batches(toks, [len(t) for t in toks], chunk_size=16, batch_size=4)
    got = {i: [] for i in batch.idx}
    for s, e, ids, active, hidden in engine.stream(batch, precision="fp32"):
        assert ids.shape == hidden.shape[:2] and len(active) == hidden.shape[0]
        assert all(batch.lengths[b] > s for b in active)
        for j, b in enumerate(active):
            got[batch.idx[b]].append(hidden[j, : min(e, batch.lengths[b]) - s])
    with torch.no_grad():
        for i, t in enumerate(toks):
            want = lm.backbone(torch.from_numpy(t).long()[None])[0]
            torch.testing.assert_close(torch.cat(got[i]), want, atol=1e-5, rtol=1e-5)


def test_pending_progress_counts_bases():
    class Bar:
        n = 0

        def update(self, k):
            self.n += k
    bar = Bar()
    p = eng._PendingProgress(bar, torch.device("cpu"))
    p.add(7)
    p.add(5)
    p.flush()
    assert bar.n == 12
    eng._PendingProgress(None, torch.device("cpu")).add(3)           # no bar: a no-op


# ------------------------------------------------------------------------- precision
def test_precision_policy(monkeypatch):
    """auto: bf16 only on a CUDA device that supports it; everything else fp32."""
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"
    for supported, want in ((False, "fp32"), (True, "bf16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
        assert resolve_precision("auto", torch.device("cuda")) == want
    with pytest.raises(UserError, match="--precision must be one of auto, fp32, bf16"):
        resolve_precision("fp16", "cpu")
    assert not torch.is_autocast_enabled("cpu")
    with eng.autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
    with eng.autocast("auto", "cpu"):
        assert not torch.is_autocast_enabled("cpu")


# ----------------------------------------------------------------------- likelihood
@pytest.mark.parametrize("chunk,batch", [(ONE_PASS, 1), (7, 3), (2, 4)], ids=["one-pass", "c7-b3", "c2-b4"])
def test_score_is_the_likelihood_definition(engine, lm, seqs, chunk, batch):
    """Per-base target log-probs equal likelihood.target_log_probs of one forward pass; position 0,
    N targets are NaN and not counted; entropy likewise; streaming does not change them."""
    toks = _toks(seqs)
    res = engine.score(toks, chunk_size=chunk, batch_size=batch, per_base=True, entropy=True)
    for i, t in enumerate(toks):
        lp, keep = _reference_scores(lm, t)
        pb, ent = res.per_base[i], res.entropy[i]
        assert np.isnan(pb[0]) and np.isnan(ent[0])
        np.testing.assert_array_equal(~np.isnan(pb[1:]), keep)
        np.testing.assert_array_equal(keep, t[1:] != N)
        np.testing.assert_allclose(pb[1:][keep], lp[keep], atol=1e-5, rtol=1e-5)
        assert res.n_scored[i] == keep.sum()
        assert res.log_likelihood[i] == pytest.approx(lp.sum(), rel=1e-5, abs=1e-5)
        x = torch.from_numpy(t).long()[None]
        with torch.no_grad():
            want_ent = likelihood.entropy(lm(x[:, :-1]))[0].numpy()
        np.testing.assert_allclose(ent[1:][keep], want_ent[keep], atol=1e-5, rtol=1e-5)


def test_training_losses_share_the_definition(lm):
    """MambaLM.loss, lm_sums (validation) and bench_train.lm_loss all skip N and PAD targets."""
    from mamba_genome.train.lm_module import lm_sums
    from mamba_genome.workflows.bench_train import lm_loss

    x = torch.from_numpy(np.stack([encode("ACGTNNACGGT"), np.r_[encode("ACGTTGCA"), [PAD] * 3]])).long()
    with torch.no_grad():
        total, count = likelihood.next_token_nll_sums(lm, x)
        assert int(count) == 8 + 7                                    # 10 targets - 2 N; 7 bases then PAD
        s, n = lm_sums(lm, x)
        assert int(n) == int(count) and float(s) == pytest.approx(float(total))
        assert float(lm.loss(x)) == pytest.approx(float(total / count))
        assert float(lm_loss(lm, x)) == pytest.approx(float(total / count))
        lp, keep = likelihood.target_log_probs(lm(x[:, :-1]), x[:, 1:])
        assert float(-lp.sum()) == pytest.approx(float(total), rel=1e-6)


def test_evaluate_equals_api_score(tmp_path, lm, seqs):
    """fp32: evaluate's bits/base equals the API's score over the same windows to 1e-6."""
    import mamba_genome
    from mamba_genome.workflows.evaluate import evaluate

    model_dir = save_model(lm, tmp_path / "model")
    fa = tmp_path / "x.fa"
    fa.write_text("".join(f">r{i}\n{s}\n" for i, s in enumerate(seqs)))
    seq_len = 32
    r = evaluate(model_dir, fa, seq_len=seq_len, batch_size=3, device="cpu", precision="fp32", progress=False)
    windows = [s[k: k + seq_len] for s in seqs for k in range(0, len(s), seq_len)]
    windows = [w for w in windows if len(w) >= 2]
    res = mamba_genome.load(model_dir, device="cpu").score(windows, precision="fp32", chunk_size=10)
    bits = -res.log_likelihood.sum() / res.n_scored.sum() / math.log(2)
    assert r["bases"] == res.n_scored.sum()
    assert r["bits_per_base"] == pytest.approx(bits, rel=1e-6)
    assert r["precision"] == "fp32"
    rec0 = [w for w in windows[:4]]                                   # r0 (101 bases): windows 0..3
    res0 = mamba_genome.load(model_dir, device="cpu").score(rec0, precision="fp32")
    want0 = -res0.log_likelihood.sum() / res0.n_scored.sum() / math.log(2)
    assert r["per_record"][0]["bits_per_base"] == pytest.approx(want0, rel=1e-6)


# ---------------------------------------------------------------------- classifier, embed
@pytest.mark.parametrize("strands", ["fwd", "both"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_class_log_probs_equal_classifier_forward(lm, seqs, pooling, strands):
    from mamba_genome.model.classifier import MambaClassifier

    torch.manual_seed(1)
    clf = MambaClassifier.from_pretrained_lm(lm, num_classes=3, pooling=pooling, strands=strands).eval()
    if strands == "both":   # a head that weighs the two strands differently
        torch.nn.init.normal_(clf.head.weight, std=1.0)
    toks = _toks(seqs)
    lp = InferenceEngine(clf.backbone).class_log_probs(toks, clf.head, clf.pooling, chunk_size=9, batch_size=3,
                                                       strands=clf.strands)
    for i, t in enumerate(toks):
        with torch.no_grad():
            want = torch.log_softmax(clf(torch.from_numpy(t).long()[None]), -1)[0].double().numpy()
        np.testing.assert_allclose(lp[i], want, atol=1e-5)


def test_embed_any_layer_and_lazy_inputs(engine, lm, seqs):
    """Hidden states of any layer; toks may be any indexable (looked up per batch) with lengths."""
    toks = _toks(seqs)
    seen = []

    class Lazy:
        def __getitem__(self, i):
            seen.append(i)
            return toks[i]

    out = engine.embed(Lazy(), pool="last", layer=0, chunk_size=11, batch_size=2, lengths=[len(t) for t in toks])
    assert sorted(seen) == [0, 1, 2, 3]
    with torch.no_grad():
        want = np.stack([lm.backbone(torch.from_numpy(t).long()[None], output_layer=0)[0, -1].numpy() for t in toks])
    np.testing.assert_allclose(out, want, atol=1e-5)


# ---------------------------------------------------------------------- open_sequences
def test_open_sequences_fasta_store_and_errors(tmp_path):
    from mamba_genome.data.store import ingest

    fa = tmp_path / "g.fa"
    fa.write_text(">a\nACGTNACGT\n>b\nNNNN\n>c\nGGCC\n")
    mem = open_sequences(fa)
    assert mem.names == ["a", "b", "c"] and mem.lengths == {"a": 9, "b": 4, "c": 4} and mem.store is None
    assert mem.source == f"FASTA {fa}" and mem.all_n("b") and not mem.all_n("a")
    big = open_sequences(fa, in_memory_below=0)                       # a "large" FASTA: through a store
    assert big.store is not None and (tmp_path / "g.mgstore").is_dir()
    store = open_sequences(ingest(fa, tmp_path / "s.mgstore", progress=False).path)
    for s in (big, store):
        assert s.names == mem.names and s.all_n("b") and not s.all_n("c")
        for name in mem.names:
            np.testing.assert_array_equal(np.asarray(s[name]), mem[name])
    with pytest.raises(UserError, match="--fasta .*no such file or token store"):
        open_sequences(tmp_path / "missing.fa", what="--fasta")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(UserError, match="not a token store"):
        open_sequences(tmp_path / "plain_dir")


def test_per_base_sink_errors_surface_and_writes_keep_order(engine, seqs):
    """Per-base rows are written by a worker thread: in order (rc rows average over forward rows),
    and a failing sink raises in the caller."""
    from mamba_genome.inference.engine import ArraySink

    seqs = _toks(seqs)
    lengths = [len(s) for s in seqs]
    sink = ArraySink(lengths, engine.lm.config.d_model, 1)
    engine.embed(seqs, pool=None, sink=sink, chunk_size=16, rc_average=True)
    ref = ArraySink(lengths, engine.lm.config.d_model, 1)
    engine.embed(seqs, pool=None, sink=ref, chunk_size=10_000, rc_average=True)
    for a, b in zip(sink.arrays, ref.arrays):
        np.testing.assert_allclose(a, b, atol=1e-5)

    class Broken:
        calls = 0

        def write(self, *args):
            Broken.calls += 1
            if Broken.calls == 2:
                raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        engine.embed(seqs, pool=None, sink=Broken(), chunk_size=16)
