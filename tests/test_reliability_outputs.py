"""Issue 16, part A: output files (``-o`` of classify / embed / probe, model directories, small run files).

One test per reported failure, each through the CLI where the promise is about the CLI:
symlinks, FIFOs and ``/dev/stdout`` written through (1); an output that is an input refused (4);
missing parent folders created and bad locations as one ``error:`` line before any work (11);
temporaries removed on errors, Ctrl-C and SIGTERM, stale ones of dead processes by the next run
(15); umask-derived modes (16); classify rows streamed as records finish (19).
"""
from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from mamba_genome import outputs
from mamba_genome.checkpoint import save_model
from mamba_genome.cli import main
from mamba_genome.io import RecordInfo, read_embeddings, write_embeddings
from mamba_genome.model.classifier import MambaClassifier
from mamba_genome.model.config import MambaConfig
from mamba_genome.model.lm import MambaLM
from mamba_genome.workflows import classify as classify_wf

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["a", "b"]


def _cfg():
    return MambaConfig.from_preset("tiny", d_model=16, n_layer=1)


@pytest.fixture(scope="module")
def clf_run(tmp_path_factory):
    """A finetune-like run directory with a tiny 2-class classifier in best/."""
    torch.manual_seed(0)
    clf = MambaClassifier(_cfg(), len(LABELS), pooling="mean")
    run = tmp_path_factory.mktemp("clf")
    save_model(clf, run / "best", extra={"labels": LABELS, "seq_len": 64}, init_kwargs=clf.init_kwargs)
    return run


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("lm")
    save_model(MambaLM(_cfg()), run / "best")
    return run


def _fasta(path: Path, n: int = 5, length: int = 40, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.write_text("".join(f">r{i}\n{''.join(rng.choice(list('ACGT'), length))}\n" for i in range(n)))
    return path


@pytest.fixture()
def sample(tmp_path):
    return _fasta(tmp_path / "in.fa")


@pytest.fixture()
def emb_labels(tmp_path):
    """A small pooled embedding file and labels for `probe` (2 folds, fast)."""
    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(12)]
    y = ["x", "y"] * 6
    X = rng.standard_normal((12, 4)).astype(np.float32)
    X[:, 0] += 5 * (np.array(y) == "y")
    emb = write_embeddings(tmp_path / "emb.h5", [RecordInfo(i, i, 0, 10) for i in ids], X)
    labels = tmp_path / "labels.tsv"
    labels.write_text("id\tlabel\n" + "".join(f"{i}\t{lab}\n" for i, lab in zip(ids, y)))
    return emb, labels


@pytest.fixture()
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error_line(res, match: str):
    assert res.exit_code == 1, res.output
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], res.stderr
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception


def _temps(*dirs: Path) -> list[str]:
    return sorted(p.name for d in dirs for p in d.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


# ------------------------------------------------------------------ 1: symlinks, FIFOs, /dev/stdout


def _classify_cmd(sample, run, out):
    return ["classify", sample, "-m", run, "-o", out, "-q"]


def _embed_cmd(sample, run, out):
    return ["embed", sample, "-m", run, "-o", out, "-q"]


def test_symlink_output_replaces_its_target_and_keeps_the_link(tmp_path, sample, clf_run, lm_run, emb_labels):
    emb, labels = emb_labels
    cases = [
        ("pred.tsv", _classify_cmd(sample, clf_run, "{link}"),
         lambda p: pd.read_csv(p, sep="\t")["id"].tolist() == [f"r{i}" for i in range(5)]),
        ("e.h5", _embed_cmd(sample, lm_run, "{link}"), lambda p: read_embeddings(p).ids == [f"r{i}" for i in range(5)]),
        ("probe.json", ["probe", emb, "--labels", labels, "--folds", 2, "-o", "{link}"],
         lambda p: json.loads(Path(p).read_text())["folds"] == 2),
    ]
    for name, cmd, ok in cases:
        real = tmp_path / "results" / name
        real.parent.mkdir(exist_ok=True)
        real.write_text("stale")
        link = tmp_path / f"link-{name}"
        link.symlink_to(os.path.relpath(real, tmp_path))
        res = _invoke(*[str(a).replace("{link}", str(link)) for a in cmd])
        assert res.exit_code == 0, res.output
        assert link.is_symlink() and os.readlink(link) == os.path.relpath(real, tmp_path), name
        assert ok(real), name  # the target was rewritten through the link
    assert _temps(tmp_path, tmp_path / "results") == []


def _reader(path: Path, got: dict):
    with open(path, "rb") as fh:
        got["data"] = fh.read()


def test_fifo_reader_gets_every_byte(tmp_path, sample, clf_run, lm_run):
    ref = tmp_path / "ref.tsv"
    assert _invoke(*_classify_cmd(sample, clf_run, ref)).exit_code == 0
    for out, cmd in [("pred.fifo", _classify_cmd(sample, clf_run, "{f}")), ("emb.npy", _embed_cmd(sample, lm_run, "{f}"))]:
        fifo = tmp_path / out
        os.mkfifo(fifo)
        got: dict = {}
        t = threading.Thread(target=_reader, args=(fifo, got), daemon=True)
        t.start()
        res = _invoke(*[str(a).replace("{f}", str(fifo)) for a in cmd])
        t.join(timeout=30)
        assert res.exit_code == 0, res.output
        assert not t.is_alive() and stat.S_ISFIFO(os.lstat(fifo).st_mode), f"{out}: the FIFO was replaced"
        if out.endswith(".fifo"):
            assert got["data"] == ref.read_bytes()
        else:
            arr = np.load(io.BytesIO(got["data"]))  # the whole .npy came through
            assert arr.shape == (5, 16) and np.isfinite(arr).all()
    assert _temps(tmp_path) == []


def test_dev_stdout_is_written_through_not_replaced(tmp_path, sample, clf_run):
    """``-o /dev/stdout`` writes to stdout (here a pipe) and leaves the link alone.

    The command runs on a private copy of the link (``tmp/stdout -> /proc/self/fd/1``, exactly what
    /dev/stdout is), never on the machine's /dev/stdout: as root, a regression would replace that.
    """
    for name in ("/dev/stdout", "-", "/dev/fd/1", "/proc/self/fd/1"):
        assert outputs.check_output_path(name).kind == "stdout", name
    link = tmp_path / "stdout"
    link.symlink_to("/proc/self/fd/1")
    cmd = [sys.executable, "-m", "mamba_genome", "classify", str(sample), "-m", str(clf_run), "-o", str(link)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"
    df = pd.read_csv(io.StringIO(p.stdout), sep="\t")
    assert df["id"].tolist() == [f"r{i}" for i in range(5)] and list(df.columns[:3]) == ["id", "length", "predicted"]
    assert "rows ->" not in p.stderr and _temps(tmp_path) == []


def test_fd_links_of_regular_files_are_not_resolved(tmp_path):
    """/dev/fd/N open on a regular (even deleted) file is written through, never replaced by its realpath."""
    f = tmp_path / "held.txt"
    with open(f, "w") as fh:
        t = outputs.check_output_path(f"/dev/fd/{fh.fileno()}")
        assert t.kind == "stream"
        outputs.atomic_write_text(t, "hello\n")
    assert f.read_text() == "hello\n" and _temps(tmp_path) == []


# -------------------------------------------------------------------------- 4: output over an input


def test_output_that_is_an_input_is_refused_before_any_work(tmp_path, sample, clf_run, lm_run, emb_labels):
    emb, labels = emb_labels
    fasta_bytes, emb_bytes = sample.read_bytes(), Path(emb).read_bytes()
    (tmp_path / "alias.fa").symlink_to(sample)
    os.link(sample, tmp_path / "hard.h5")  # a hard link with an embedding extension
    bed = tmp_path / "r.bed"
    bed.write_text("r0\t0\t10\tx\n")
    os.link(bed, tmp_path / "bedlink.h5")
    cases = [
        (_classify_cmd(sample, clf_run, sample), "is the input"),
        (_classify_cmd(sample, clf_run, tmp_path / "alias.fa"), "is the input"),
        (_classify_cmd(sample, clf_run, clf_run / "best" / "config.json"), "inside the input directory"),
        (_embed_cmd(sample, lm_run, tmp_path / "hard.h5"), "is the input"),
        (_embed_cmd(sample, lm_run, lm_run / "best" / "model.h5"), "inside the input directory"),
        (_embed_cmd(sample, lm_run, tmp_path / "bedlink.h5") + ["--bed", bed], "is the input"),
        (["probe", emb, "--labels", labels, "--folds", 2, "-o", emb], "is the input"),
        (["probe", emb, "--labels", labels, "--folds", 2, "-o", labels], "is the input"),
    ]
    for cmd, match in cases:
        res = _invoke(*cmd)
        _one_error_line(res, match)
        assert res.stdout == "", cmd  # refused before the work: no results printed
    assert sample.read_bytes() == fasta_bytes and Path(emb).read_bytes() == emb_bytes
    assert (clf_run / "best" / "config.json").read_text().startswith("{")
    assert _temps(tmp_path) == []


def test_check_not_input_is_exported_for_run_directories(tmp_path):
    store = tmp_path / "genome.mgstore"
    store.mkdir()
    with pytest.raises(outputs.UserError, match="--out .* is the input"):
        outputs.check_not_input(store, [store], flag="--out")
    with pytest.raises(outputs.UserError, match="inside the input directory"):
        outputs.check_not_input(store / "run", [None, tmp_path / "missing", store], flag="--out")
    outputs.check_not_input(tmp_path / "run", [store], flag="--out")  # beside it is fine


# ---------------------------------------------------------------------- 11: output locations


def test_missing_parent_folders_are_created(tmp_path, sample, clf_run, emb_labels, umask022):
    emb, labels = emb_labels
    out = tmp_path / "newdir" / "sub" / "x.tsv"
    res = _invoke(*_classify_cmd(sample, clf_run, out))
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(out, sep="\t")) == 5
    assert _mode(tmp_path / "newdir") == _mode(tmp_path / "newdir" / "sub") == 0o755
    res = _invoke("probe", emb, "--labels", labels, "--folds", 2, "-o", tmp_path / "a" / "b" / "p.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "a" / "b" / "p.json").read_text())["n"] == 12


def test_bad_output_locations_are_one_error_line_before_the_work(tmp_path, sample, clf_run, lm_run, emb_labels):
    emb, labels = emb_labels
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    bad = [("/proc/x.tsv", "cannot write in /proc"), (tmp_path / "afile" / "x.tsv", "is a file, not a directory"),
           (tmp_path / "adir", "is a directory")]
    for out, match in bad:
        _one_error_line(_invoke(*_classify_cmd(sample, clf_run, out)), match)
        res = _invoke("probe", emb, "--labels", labels, "--folds", 2, "-o", out)
        _one_error_line(res, match)
        assert res.stdout == "" and "labelled records" not in res.stderr  # nothing computed or printed
    for out, match in [("/proc/x.h5", "cannot write in /proc"), (tmp_path / "afile" / "x.h5", "is a file")]:
        _one_error_line(_invoke(*_embed_cmd(sample, lm_run, out)), match)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile", "emb.h5", "in.fa", "labels.tsv"]


# ------------------------------------------------------------------------------- 15: temporaries


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temps_of_dead_processes_are_removed_by_the_next_run(tmp_path, sample, lm_run):
    out = tmp_path / "e.h5"
    dead, host = _dead_pid(), outputs._HOST
    stale = [f".e.h5.tmp-{dead}-{host}.h5", f".e.h5.tmp-{dead}-{host}.embeddings.npy",
             f".e.h5.tmp-{dead}.h5", f".e.h5.tmp-{dead}-embeddings.npy"]  # the last two: names of older releases
    keep = [f".e.h5.tmp-1-{host}.h5",  # PID 1 is alive
            f".e.h5.tmp-{dead}-otherhost.h5",  # another machine's writer (shared file system)
            f".other.h5.tmp-{dead}-{host}.h5"]  # another output's
    for name in stale + keep:
        (tmp_path / name).write_bytes(b"\0" * 1000)
    res = _invoke(*_embed_cmd(sample, lm_run, out))
    assert res.exit_code == 0, res.output
    assert _temps(tmp_path) == sorted(keep)
    assert read_embeddings(out).ids == [f"r{i}" for i in range(5)]


def test_a_model_moved_aside_by_a_killed_save_is_put_back(tmp_path):
    model = MambaLM(_cfg())
    old = tmp_path / f".best.old-{_dead_pid()}-{outputs._HOST}"
    save_model(model, old)  # as if killed between the two renames: best/ is missing, its copy is aside
    assert outputs.remove_stale_temps(tmp_path / "best") == []
    assert (tmp_path / "best" / "model.safetensors").is_file() and not old.exists()


def test_temps_removed_on_error_and_ctrl_c(tmp_path, sample, clf_run, lm_run, monkeypatch):
    from mamba_genome import api

    def interrupted(self, *a, sink=None, **k):
        sink.write(0, 0, np.zeros((3, 16), np.float32))  # the temporary HDF5 exists and holds rows
        assert _temps(tmp_path)
        raise KeyboardInterrupt

    monkeypatch.setattr(api.GenomeModel, "embed", interrupted)
    res = _invoke(*_embed_cmd(sample, lm_run, tmp_path / "e.h5"), "--pool", "none")
    assert res.exit_code == 130 and _temps(tmp_path) == [] and not (tmp_path / "e.h5").exists()
    # a bad record after several groups of rows went to the temporary: the previous output is kept
    out = tmp_path / "pred.tsv"
    out.write_text("previous\n")
    bad = tmp_path / "bad.fa"
    bad.write_text("".join(f">r{i}\nACGTACGT\n" for i in range(40)) + ">z\nACGT!!\n")
    res = _invoke("classify", bad, "-m", clf_run, "-o", out, "--batch-size", 1, "-q")
    _one_error_line(res, "invalid character '!'")
    assert out.read_text() == "previous\n" and _temps(tmp_path) == []


def test_sigterm_removes_the_temporary(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        from mamba_genome.io import EmbeddingWriter, RecordInfo
        w = EmbeddingWriter({str(tmp_path / 'e.h5')!r}, [RecordInfo("a", "a", 0, 1000)], 8, per_base=True)
        w.write(0, 0, np.ones((1000, 8), np.float32))
        print("ready", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=ROOT)
    assert p.stdout.readline().strip() == "ready", p.stderr.read()
    assert _temps(tmp_path)  # the temporary is there while the writer runs
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------ 16: modes


def test_files_and_folders_get_umask_modes(tmp_path, sample, clf_run, lm_run, emb_labels, umask022):
    emb, labels = emb_labels
    model = save_model(MambaLM(_cfg()), tmp_path / "runs" / "m" / "best")
    assert _mode(model) == _mode(tmp_path / "runs") == 0o755
    assert {p.name: _mode(p) for p in model.iterdir()} == {"config.json": 0o644, "model.safetensors": 0o644}
    save_model(MambaLM(_cfg()), model)  # replacing it keeps the modes
    assert _mode(model) == 0o755 and _mode(model / "model.safetensors") == 0o644
    for cmd, out in [(_classify_cmd(sample, clf_run, "{o}"), "c.tsv"), (_embed_cmd(sample, lm_run, "{o}"), "e.h5"),
                     (["probe", emb, "--labels", labels, "--folds", 2, "-o", "{o}"], "p.json")]:
        res = _invoke(*[str(a).replace("{o}", str(tmp_path / "o" / out)) for a in cmd])
        assert res.exit_code == 0, res.output
        assert _mode(tmp_path / "o" / out) == 0o644, out
    # a replaced file keeps the permissions it had (as `>` would)
    (tmp_path / "o" / "c.tsv").chmod(0o640)
    assert _invoke(*_classify_cmd(sample, clf_run, tmp_path / "o" / "c.tsv")).exit_code == 0
    assert _mode(tmp_path / "o" / "c.tsv") == 0o640
    os.umask(0o002)  # a group-writable lab setting is honoured too
    outputs.atomic_write_text(tmp_path / "o" / "g.json", "{}\n")
    assert _mode(tmp_path / "o" / "g.json") == 0o664


# --------------------------------------------------------------------------- 19: streaming rows


class _Recorder(io.StringIO):
    """A stdout that notes how many FASTA records had been read when the first row arrived."""

    def __init__(self, progress: dict):
        super().__init__()
        self.progress, self.first_write_at, self.flushes = progress, None, 0

    def write(self, s):
        if self.first_write_at is None:
            self.first_write_at = self.progress["read"]
        return super().write(s)

    def flush(self):
        self.flushes += 1


def test_classify_streams_rows_to_stdout_before_the_input_is_read(tmp_path, clf_run, monkeypatch):
    from mamba_genome.data import fasta

    big = _fasta(tmp_path / "many.fa", n=100, length=30)
    progress = {"read": 0}
    real = fasta.iter_fasta_records

    def counting(path):
        for rec in real(path):
            progress["read"] += 1
            yield rec

    monkeypatch.setattr(fasta, "iter_fasta_records", counting)
    rec = _Recorder(progress)
    monkeypatch.setattr(sys, "stdout", rec)
    n, target = classify_wf.classify_to(big, clf_run, None, batch_size=2, device="cpu")
    monkeypatch.undo()
    assert n == 100 and target.kind == "stdout"
    assert rec.first_write_at == 2  # the first rows went out after one batch of records, not the whole file
    assert rec.flushes >= 100 // (classify_wf.GROUP_BATCHES * 2)
    df = pd.read_csv(io.StringIO(rec.getvalue()), sep="\t")
    want = pd.DataFrame(classify_wf.classify_fasta(big, clf_run, batch_size=64, device="cpu"))
    assert df["id"].tolist() == want["id"].tolist()
    np.testing.assert_allclose(df[[f"p_{x}" for x in LABELS]], want[[f"p_{x}" for x in LABELS]], atol=2e-6)
