"""``mamba-genome embed``: files and regions end to end, store-backed streaming, constant memory, bad inputs."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import mamba_genome
from mamba_genome.checkpoint import save_model
from mamba_genome.cli import main
from mamba_genome.data.fasta import iter_fasta_records
from mamba_genome.io import read_embeddings
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM
from mamba_genome.workflows import embed as embed_wf

DATA = Path(__file__).parent / "data"
FASTA = DATA / "vcholerae_H1_2chrom.fa"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory with the model in best/, as `pretrain` writes it."""
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("run")
    save_model(MambaLM(MambaConfig.from_preset("tiny", d_model=16, n_layer=2)), run / "best")
    return run


@pytest.fixture(scope="module")
def records():
    return [(name, seq.decode()) for name, seq in iter_fasta_records(FASTA)]


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_pooled_matches_api(tmp_path, run_dir, records):
    out = tmp_path / "out" / "emb.h5"
    res = _invoke("embed", FASTA, "--model", run_dir, "-o", out, "--chunk-size", 333, "--batch-size", 2)
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(out)
    assert "bp/s" in res.stderr and f"{sum(len(s) for _, s in records):,}" in res.stderr
    e = read_embeddings(out)
    assert e.ids == [n for n, _ in records] and e.attrs["pool"] == "mean" and e.attrs["model"] == str(run_dir)
    want = mamba_genome.load(run_dir, device="cpu").embed([s for _, s in records])
    np.testing.assert_allclose(e.embeddings, want, atol=1e-5)


def test_cli_bed_per_base_stride_rc(tmp_path, run_dir, records):
    name, seq = records[1]
    bed = tmp_path / "r.bed"
    bed.write_text(f"# regions\n{name}\t10\t110\tpromA\n{name}\t200\t237\n")
    out = tmp_path / "pb.npz"
    res = _invoke("embed", FASTA, "--model", run_dir, "-o", out, "--bed", bed, "--pool", "none",
                  "--stride", 4, "--rc-average", "--chunk-size", 30, "-q")
    assert res.exit_code == 0, res.output
    e = read_embeddings(out)
    assert e.ids == ["promA", f"{name}:200-237"] and e.start.tolist() == [10, 200] and e.attrs["stride"] == 4
    gm = mamba_genome.load(run_dir, device="cpu")
    want = gm.embed([seq[10:110], seq[200:237]], pool=None, rc_average=True)
    for got, w in zip(e.embeddings, want):
        np.testing.assert_allclose(got, w[::4], atol=1e-5)


@pytest.mark.parametrize("ext", ["npy", "parquet"])
def test_cli_last_pool_formats(tmp_path, run_dir, ext):
    res = _invoke("embed", FASTA, "--model", run_dir, "-o", tmp_path / f"e.{ext}", "--pool", "last", "--layer", 0, "-q")
    assert res.exit_code == 0, res.output
    assert read_embeddings(tmp_path / f"e.{ext}").embeddings.shape == (2, 16)


def test_large_fasta_goes_through_token_store(tmp_path, run_dir, monkeypatch):
    fa = tmp_path / "genome.fa"
    shutil.copy(FASTA, fa)
    small = embed_wf.embed_file(fa, run_dir, tmp_path / "a.h5", pool="none", chunk_size=100, progress=False)
    monkeypatch.setattr(embed_wf, "SMALL_FASTA_BYTES", 0)  # force the store-backed (memmap) path
    big = embed_wf.embed_file(fa, run_dir, tmp_path / "b.h5", pool="none", chunk_size=100, progress=False)
    assert (tmp_path / "genome.mgstore").is_dir()
    assert big.records == small.records == 2 and big.bp == small.bp
    for x, y in zip(read_embeddings(tmp_path / "a.h5").embeddings, read_embeddings(tmp_path / "b.h5").embeddings):
        np.testing.assert_array_equal(x, y)


def test_store_of_many_records_under_a_low_file_limit(tmp_path, run_dir):
    """Thousands of short records in a token store: each is read into memory, so no memmap (and
    its file descriptor) stays open per record."""
    from mamba_genome.data.store import MAX_OPEN_CONTIGS, ingest
    n = 3 * MAX_OPEN_CONTIGS
    rng = np.random.default_rng(0)
    fa = tmp_path / "reads.fa"
    fa.write_text("".join(f">r{i}\n" + "".join(rng.choice(list("ACGT"), 40)) + "\n" for i in range(n)))
    ingest(fa, tmp_path / "reads.mgstore", progress=False)
    script = textwrap.dedent(f"""
        import resource
        limit = ({MAX_OPEN_CONTIGS + 100}, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        resource.setrlimit(resource.RLIMIT_NOFILE, limit)
        from mamba_genome.workflows.embed import embed_file
        res = embed_file({str(tmp_path / "reads.mgstore")!r}, {str(run_dir)!r}, {str(tmp_path / "e.npz")!r},
                         progress=False, device="cpu")
        print(res.records)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == str(n), out.stderr[-2000:]
    assert read_embeddings(tmp_path / "e.npz").embeddings.shape == (n, 16)


def _assert_one_error_line(res, match):
    assert res.exit_code == 1, res.output
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], res.stderr
    assert "Traceback" not in res.output


def test_cli_bad_inputs(tmp_path, run_dir):
    (tmp_path / "afile").write_text("x")
    res = _invoke("embed", FASTA, "--model", run_dir, "-o", tmp_path / "afile" / "e.h5")
    _assert_one_error_line(res, "cannot create directory")

    broken = tmp_path / "broken_run"
    (broken / "best").mkdir(parents=True)
    shutil.copy(run_dir / "best" / "config.json", broken / "best" / "config.json")
    res = _invoke("embed", FASTA, "--model", broken, "-o", tmp_path / "e.h5")
    _assert_one_error_line(res, "model.safetensors")

    bed = tmp_path / "bad.bed"
    bed.write_text("track x\nchrZ\t1\n")
    res = _invoke("embed", FASTA, "--model", run_dir, "-o", tmp_path / "e.h5", "--bed", bed)
    _assert_one_error_line(res, "bad.bed:2:")

    res = _invoke("embed", FASTA, "--model", run_dir, "-o", tmp_path / "e.parquet", "--pool", "none")
    _assert_one_error_line(res, "need .h5 or .npz")
    res = _invoke("embed", tmp_path / "missing.fa", "--model", run_dir, "-o", tmp_path / "e.h5")
    assert res.exit_code == 1 and "Traceback" not in res.output
    res = _invoke("embed", FASTA, "--model", run_dir, "-o", tmp_path / "e.h5", "--layer", 7)
    _assert_one_error_line(res, "--layer")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "bad.bed", "broken_run"]  # no output left


def test_help_has_examples():
    res = _invoke("embed", "--help")
    assert res.exit_code == 0 and "Examples:" in res.output and "--bed" in res.output


_MEMORY_SCRIPT = textwrap.dedent("""
    import numpy as np, torch
    from mamba_genome.api import GenomeModel
    from mamba_genome.model.config import MambaConfig
    from mamba_genome.model.lm import MambaLM

    torch.manual_seed(0)
    torch.set_num_threads(1)
    gm = GenomeModel(MambaLM(MambaConfig.from_preset("tiny", d_model=8, n_layer=1, d_state=2, expand=1)))

    class Discard:  # a per-base sink that keeps nothing (stands in for an HDF5 file)
        def write(self, *args, **kwargs):
            pass

    def peak_kb():  # VmHWM: peak resident set size of this process, in kB
        with open("/proc/self/status") as fh:
            return int(next(line for line in fh if line.startswith("VmHWM:")).split()[1])

    def reset_peak():  # ru_maxrss/VmHWM start at the parent's peak after fork; reset it (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")

    rng = np.random.default_rng(0)
    small, big = rng.integers(5, 9, 50_000).astype(np.uint8), rng.integers(5, 9, 500_000).astype(np.uint8)
    gm.embed(small[:2000], chunk_size=CHUNK)   # warm up allocator and lazy imports
    reset_peak()
    p0 = peak_kb()
    gm.embed(small, chunk_size=CHUNK); gm.embed(small, pool=None, sink=Discard(), chunk_size=CHUNK)
    p1 = peak_kb()
    gm.embed(big, chunk_size=CHUNK); gm.embed(big, pool=None, sink=Discard(), chunk_size=CHUNK)
    p2 = peak_kb()
    gm.embed(big, chunk_size=10**9)           # one pass: shows the measurement can see growth
    p3 = peak_kb()
    print(p1 - p0, p2 - p1, p3 - p2, p0)
""").replace("CHUNK", "16384")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_streaming_memory_is_flat_in_sequence_length():
    """Peak RSS (VmHWM) grows < 16 MB when the input grows 10x at a fixed chunk size,
    while a single pass over the long input grows it by far more."""
    proc = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    small_kb, growth_kb, one_pass_kb, base_kb = map(int, proc.stdout.split())
    assert growth_kb < 16_000, (small_kb, growth_kb, one_pass_kb, base_kb)
    assert one_pass_kb > growth_kb + 10_000, (small_kb, growth_kb, one_pass_kb, base_kb)


def test_embed_a_real_pretrain_run(tmp_path, records):
    """Two optimizer steps of `pretrain` on a 3 kbp genome, then embed with its run directory."""
    from mamba_genome.workflows.pretrain import PretrainArgs, pretrain

    fa = tmp_path / "ecoli.fa"
    shutil.copy(DATA / "ecoli_MG1655_3kb.fa", fa)
    run = tmp_path / "run"
    pretrain(PretrainArgs(fasta=str(fa), seq_len=64, batch_size=2, max_steps=2, out=str(run), accelerator="cpu",
                          val_windows=2, quiet=True, seq_warmup=False, model_overrides={"d_model": 16, "n_layer": 1}))
    assert (run / "best" / "model.safetensors").is_file()
    gm = mamba_genome.load(run, device="cpu")
    assert gm.d_model == 16 and gm.n_layer == 1
    out = tmp_path / "e.parquet"
    res = _invoke("embed", FASTA, "--model", run, "-o", out, "-q")
    assert res.exit_code == 0, res.output
    np.testing.assert_allclose(read_embeddings(out).embeddings, gm.embed([s for _, s in records]), atol=1e-5)
    assert np.isfinite(gm.score("ACGTACGTTTGA").log_likelihood).all()
