"""`generate`: sampling with the recurrent step. Samples of a model trained on a genome have the
genome's bits/base under the model, GC and k-mer spectrum; prompts continue through the carried
state; output FASTA, options and errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mamba_genome.checkpoint import save_model
from mamba_genome.cli import main
from mamba_genome.data.fasta import iter_fasta_records
from mamba_genome.data.tokenizer import A, decode, encode
from mamba_genome.inference.compare import compare_to_genome, kmer_spectrum, total_variation
from mamba_genome.inference.engine import InferenceEngine
from mamba_genome.inference.sample import sample_blocks
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM
from mamba_genome.workflows.generate import generate

#: order-1 Markov chain over A, C, G, T (rows: previous base): GC-rich, entropy rate 1.75 bits
TRANSITIONS = np.array([[0.1, 0.4, 0.4, 0.1], [0.3, 0.1, 0.5, 0.1], [0.2, 0.5, 0.1, 0.2], [0.1, 0.3, 0.3, 0.3]])


@pytest.fixture
def one_thread():
    """Tiny models on a busy 2-core box: one intra-op thread is many times faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def genome():
    rng = np.random.default_rng(0)
    n = 1 << 14
    u, cum = rng.random(n), TRANSITIONS.cumsum(1)
    g = np.zeros(n, dtype=np.int64)
    for i in range(1, n):
        g[i] = min(np.searchsorted(cum[g[i - 1]], u[i]), 3)
    return (g + A).astype(np.uint8)


@pytest.fixture(scope="module")
def trained(genome):
    """A 1-layer d_model=16 LM after 60 Adam steps on 64-base windows of the genome (about 1.75 bits
    per base: it has learned the chain)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    lm = MambaLM(MambaConfig.from_preset("tiny", d_model=16, n_layer=1, d_state=4))
    opt = torch.optim.Adam(lm.parameters(), lr=1.5e-2)
    for _ in range(60):
        starts = rng.integers(0, len(genome) - 64, 32)
        x = torch.from_numpy(np.stack([genome[s: s + 64] for s in starts])).long()
        loss = lm.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    return lm.eval()


@pytest.fixture(scope="module")
def model_dir(trained, tmp_path_factory):
    return save_model(trained, tmp_path_factory.mktemp("gen") / "model")


def _samples(lm, n, length, seed=1, **kw):
    g = torch.Generator().manual_seed(seed)
    return np.concatenate([b for _, b in sample_blocks(lm, n, length, generator=g, **kw)], axis=1)


def test_samples_match_the_training_genome(trained, genome, one_thread):
    """512 samples of 64 bases (the training window) vs the 16 kbp genome. Tolerances: bits/base
    within 0.08 of the genome's (the model's entropy rate vs its cross-entropy on the genome), GC
    within 0.04, k-mer total variation <= 0.05 / 0.07 / 0.10 for k = 1 / 2 / 3. Sampling noise
    is about 0.01 on each; the rest is how well a 60-step model fits (over training seeds the
    largest deviations seen were 0.06, 0.03, 0.03 / 0.05 / 0.07). A uniform random sequence of
    the same size fails every one of them."""
    engine = InferenceEngine(trained)
    samples = list(_samples(trained, 512, 64))
    r = compare_to_genome(engine, [genome], samples, ks=(1, 2, 3), chunk_size=4096)
    assert r["bits_per_base"]["genome"] < 1.8                         # the model learned the chain (1.75)
    assert abs(r["bits_per_base"]["diff"]) < 0.08, r
    assert abs(r["gc"]["diff"]) < 0.04, r
    assert r["kmer_tv"][1] <= 0.05 and r["kmer_tv"][2] <= 0.07 and r["kmer_tv"][3] <= 0.10, r
    uniform = list(np.random.default_rng(2).integers(A, A + 4, (512, 64)).astype(np.uint8))
    u = compare_to_genome(engine, [genome], uniform, ks=(1, 2, 3), chunk_size=4096)
    assert u["bits_per_base"]["diff"] > 0.1 and abs(u["gc"]["diff"]) > 0.05 and u["kmer_tv"][3] > 0.10, u


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.5, None), (1.0, 2)], ids=["T1", "T0.5", "top2"])
def test_samples_follow_the_model(trained, one_thread, temperature, top_k):
    """Calibration of the sampler: over 512 x 64 samples, each base's frequency equals the mean
    probability the model (at that temperature, top-k) gave it, to 0.01 (noise about 0.003),
    and the samples' mean -log p equals the mean entropy of the distributions drawn from, to 0.02
    nats. Top-k 2 never emits a base outside the 2 most likely."""
    x = torch.from_numpy(_samples(trained, 512, 64, seed=4, temperature=temperature, top_k=top_k)).long()
    with torch.no_grad():
        lg = trained(x[:, :-1])[..., A: A + 4].float() / temperature          # (B, L-1, 4)
    if top_k is not None:
        kth = lg.topk(top_k, -1).values[..., -1:]
        lg = lg.masked_fill(lg < kth, float("-inf"))
    logp = torch.log_softmax(lg, -1)
    target = x[:, 1:] - A
    freq = torch.nn.functional.one_hot(target, 4).double().mean((0, 1))
    torch.testing.assert_close(freq, logp.exp().double().mean((0, 1)), atol=0.01, rtol=0)
    nll = -logp.gather(-1, target[..., None]).mean()
    assert torch.isfinite(nll)                                         # never a base outside the top k
    entropy = -(logp.exp() * logp.clamp(min=-1e9)).sum(-1).mean()
    assert float(nll) == pytest.approx(float(entropy), abs=0.02)


def test_prompt_continues_through_the_carried_state(trained, one_thread):
    """Greedy continuation of a prompt: each step's base is the argmax over A/C/G/T of a full forward
    pass over prompt + bases so far, so the prefilled and stepped state equal one pass."""
    prompt = encode("ACGTTGCAGGCCATAGCGCGATTACA")
    cont = _samples(trained, 3, 24, prompt=prompt, top_k=1)
    assert (cont == cont[0]).all()                                    # greedy: every sample the same
    seq = [int(x) for x in prompt]
    with torch.no_grad():
        for t in cont[0]:
            logits = trained(torch.tensor([seq], dtype=torch.long))[0, -1]
            assert t == int(logits[A: A + 4].argmax()) + A
            seq.append(int(t))


def test_blocks_cover_the_length_and_seed_reproduces(trained, one_thread):
    blocks = list(sample_blocks(trained, 3, 23, generator=torch.Generator().manual_seed(5), block=7))
    assert [(s, b.shape) for s, b in blocks] == [(0, (3, 7)), (7, (3, 7)), (14, (3, 7)), (21, (3, 2))]
    a, b, c = _samples(trained, 3, 50, seed=5), _samples(trained, 3, 50, seed=5), _samples(trained, 3, 50, seed=6)
    assert (a == b).all() and not (a == c).all()
    assert set(np.unique(a)) <= {A, A + 1, A + 2, A + 3}
    bf16 = _samples(trained, 2, 20, precision="bf16", prompt=encode("ACGTAC"))   # under bf16 autocast too
    assert bf16.shape == (2, 20) and set(np.unique(bf16)) <= {A, A + 1, A + 2, A + 3}


def test_workflow_writes_fasta_per_prompt(model_dir, tmp_path, one_thread):
    prompts = tmp_path / "p.fa"
    prompts.write_text(">p1\nACGTACGTAC\n>p2\nGGGCCC\n")
    out = tmp_path / "sub" / "gen.fa"
    res = generate(model_dir, out, length=170, prompt=prompts, num_samples=3, batch_size=2, seed=3, progress=False,
                   device="cpu")
    recs = [(name, seq.decode()) for name, seq in iter_fasta_records(out)]
    assert [n for n, _ in recs] == [f"p{i}_sample_{k}" for i in (1, 2) for k in (1, 2, 3)]
    assert all(len(s) == 170 and set(s) <= set("ACGT") for _, s in recs)
    lines = out.read_text().splitlines()
    assert lines[0].startswith(">p1_sample_1 length=170 temperature=1 top_k=none seed=3 prompt=p1")
    assert len(lines[1]) == 80 and len(lines[3]) == 10
    assert res.samples == 6 and res.bases == 6 * 170 and res.bases_per_s > 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["gen.fa"]   # no scratch or temp file left
    again = generate(model_dir, tmp_path / "again.fa", length=170, prompt=prompts, num_samples=3, batch_size=2,
                     seed=3, progress=False, device="cpu")
    assert (tmp_path / "again.fa").read_text() == out.read_text() and again.out.endswith("again.fa")


def test_cli_stdout_help_and_errors(model_dir, tmp_path, one_thread):
    r = CliRunner().invoke(main, ["generate", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output and "--num-samples" in r.output
    r = CliRunner().invoke(main, ["generate", "-m", str(model_dir), "--length", "90", "--num-samples", "2", "-q"])
    assert r.exit_code == 0, r.output
    recs = r.stdout.split(">")[1:]
    assert len(recs) == 2 and recs[0].startswith("sample_1 ") and len("".join(recs[0].splitlines()[1:])) == 90
    r = CliRunner().invoke(main, ["generate", "-m", str(model_dir), "--length", "40", "-o", str(tmp_path / "g.fa")])
    assert r.exit_code == 0 and r.stdout.strip() == str(tmp_path / "g.fa") and "bases/s" in r.stderr

    from mamba_genome.model.classifier import MambaClassifier
    clf = MambaClassifier(MambaConfig.from_preset("tiny", d_model=16, n_layer=1), num_classes=2)
    clf_dir = save_model(clf, tmp_path / "clf", init_kwargs=clf.init_kwargs)
    for args, message in [(["--length", "0"], "--length must be at least 1"),
                          (["--length", "5", "--top-k", "5"], "--top-k must be 1..4"),
                          (["--length", "5", "--temperature", "0"], "--temperature must be a positive"),
                          (["--length", "5", "--num-samples", "0"], "--num-samples"),
                          (["--length", "5", "--prompt", str(tmp_path / "nope.fa")], "--prompt"),
                          (["--length", "5", "-o", str(tmp_path)], "is a directory"),
                          (["--length", "5", "-m", str(clf_dir)], "generate needs a pretrained language model")]:
        argv = ["generate", "-m", str(model_dir), *args] if "-m" not in args else ["generate", *args]
        r = CliRunner().invoke(main, argv)
        assert r.exit_code == 1, (args, r.output)
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (args, r.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf", "g.fa"]


def test_kmer_spectrum_and_tv():
    toks = encode("ACGTNACGT")
    p = kmer_spectrum([toks], 2)                                      # AC CG GT, (N skipped), AC CG GT
    assert p.sum() == pytest.approx(1.0) and np.count_nonzero(p) == 3
    assert total_variation(p, p) == 0 and total_variation(p, kmer_spectrum([encode("TTTT")], 2)) == 1
    assert decode(toks[:4]) == "ACGT" and math.isclose(kmer_spectrum([toks], 1)[1], 0.25)
