"""Issue 16, part B: inputs, stores and caches, error messages (each test failed on main at 08a32b0).

- ``ingest --force`` deletes only what ingest wrote;
- a stale or foreign ``.fai`` is never trusted, and "up to date" is decided by content;
- the bundled genome's cached store is keyed by content, so two installs share it;
- a non-UTF-8 ``config.json``, a Latin-1 FASTA header, a garbage ``.fai``: one ``error:`` line;
- plain and gzip FASTA follow one parser contract (ragged lines, BOM, CR-only, a text file
  named ``.gz``, no ``.fai`` left behind);
- usage errors are one ``error:`` line with a hint to ``--help``, exit 2;
- the BED strand column is honoured by ``embed``.

CLI promises are checked through the CLI (exit code, exactly one ``error:`` line, no traceback).
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mamba_genome.checkpoint import save_model
from mamba_genome.cli import main
from mamba_genome.data import fasta, store as store_mod
from mamba_genome.data.fasta import fai_problem, iter_fasta_records, open_faidx, stream_fasta_tokens
from mamba_genome.data.store import TokenStore, cached_store_path, ingest
from mamba_genome.data.tokenizer import encode, reverse_complement_tokens
from mamba_genome.errors import InputFileError, UserError

DATA = Path(__file__).parent / "data"
THREE = "umaydis_3contigs.fa"  # 3 contigs x 1,200 bp, 60 per line


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBA_GENOME_CACHE", str(tmp_path / "cache"))


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="mamba-genome")


def _one_error_line(res, fragment: str = "", code: int = 1) -> str:
    """The single stderr line of a failed command, after checking the exit code and the form."""
    assert res.exit_code == code, (res.exit_code, res.output, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output and "Usage:" not in res.output
    assert fragment in lines[0], lines[0]
    return lines[0]


def _copy(tmp_path: Path, name: str = THREE) -> Path:
    out = tmp_path / name
    shutil.copy(DATA / name, out)
    return out


def _records(name: str) -> dict[str, np.ndarray]:
    recs, cur = {}, None
    for line in (DATA / name).read_text().splitlines():
        if line.startswith(">"):
            cur = line[1:].split()[0]
            recs[cur] = []
        elif line.strip():
            recs[cur].append(line.strip())
    return {k: encode("".join(v)) for k, v in recs.items()}


# ------------------------------------------------------------- item 3: --force deletes only our stores


def test_force_refuses_a_directory_that_is_not_a_store(tmp_path):
    src = _copy(tmp_path)
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("my analysis\n")
    line = _one_error_line(_cli("ingest", src, "-o", out, "--force"), "is not a token store")
    assert "--force" in line
    assert (out / "notes.txt").read_text() == "my analysis\n" and sorted(os.listdir(out)) == ["notes.txt"]


def test_force_refuses_a_store_holding_user_files(tmp_path):
    src = _copy(tmp_path)
    out = tmp_path / "g.mgstore"
    assert _cli("ingest", src, "-o", out, "-q").exit_code == 0
    (out / "README.txt").write_text("keep me")
    _one_error_line(_cli("ingest", src, "-o", out, "--force"), "README.txt")
    assert (out / "README.txt").exists() and TokenStore.open(out).total_length == 3600


def test_force_rebuilds_our_store_and_an_empty_directory(tmp_path):
    src = _copy(tmp_path)
    out = tmp_path / "g.mgstore"
    out.mkdir()  # empty: fine to use
    assert _cli("ingest", src, "-o", out, "-q").exit_code == 0
    first = json.loads((out / "manifest.json").read_text())["created"]
    assert _cli("ingest", src, "-o", out, "-q", "--force").exit_code == 0
    assert TokenStore.open(out).total_length == 3600
    assert json.loads((out / "manifest.json").read_text())["created"] >= first


# ---------------------------------------------------- item 5: stale / foreign .fai, up to date by content


def test_ingest_ignores_a_wrong_newer_fai(tmp_path):
    src = _copy(tmp_path)
    fai = Path(f"{src}.fai")
    fai.write_text("Umaydis:chr01:1:+:2476500\t100\t27\t60\t61\n")  # newer than the FASTA, and wrong
    res = _cli("ingest", src, "-o", tmp_path / "s.mgstore", "-q")
    assert res.exit_code == 0, res.output
    s = TokenStore.open(tmp_path / "s.mgstore")
    assert len(s.names) == 3 and s.total_length == 3600
    for name, tokens in _records(THREE).items():
        assert np.array_equal(s.tokens(name), tokens)
    assert fai.read_text().startswith("Umaydis:chr01:1:+:2476500\t100\t")  # the user's file is not touched


def _same_size_edit(path: Path) -> None:
    """Change bases in place (same size) and set the mtime back, as `touch -r` or `cp -p` would."""
    st = path.stat()
    time.sleep(0.02)  # let the clock tick past the store's timestamps
    raw = bytearray(path.read_bytes())
    i = raw.index(b"\n") + 1
    raw[i : i + 8] = b"NNNNNNNN"
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size


def test_same_size_edit_with_mtime_restored_is_not_up_to_date(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "_RACY_NS", 0)  # trust fresh timestamps, so the fast path is used
    src = _copy(tmp_path)
    out = tmp_path / "s.mgstore"
    assert _cli("ingest", src, "-o", out).exit_code == 0
    _same_size_edit(src)
    res = _cli("ingest", src, "-o", out)
    assert res.exit_code == 0 and "up to date" not in res.stderr
    s = TokenStore.open(out)
    assert s.contigs[0].n_count == 8 and s.manifest["source"]["sha256"] == store_mod._sha256(src)


def test_unchanged_file_is_reused_without_hashing(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "_RACY_NS", 0)
    src = _copy(tmp_path)
    ingest(src, tmp_path / "s.mgstore", progress=False)

    def no_hash(path):
        raise AssertionError("an unchanged file was hashed again")

    monkeypatch.setattr(store_mod, "_sha256", no_hash)
    assert ingest(src, tmp_path / "s.mgstore", progress=False).ingest_stats.reused


def test_touched_file_is_hashed_once_then_remembered(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "_RACY_NS", 0)
    src = _copy(tmp_path)
    ingest(src, tmp_path / "s.mgstore", progress=False)
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns - 10**10))
    calls = []
    real = store_mod._sha256
    monkeypatch.setattr(store_mod, "_sha256", lambda p: calls.append(p) or real(p))
    assert ingest(src, tmp_path / "s.mgstore", progress=False).ingest_stats.reused
    assert ingest(src, tmp_path / "s.mgstore", progress=False).ingest_stats.reused
    assert len(calls) == 1


def test_freshly_written_file_is_never_trusted_by_its_times(tmp_path):
    # with the default guard, a file changed < 2 s ago is always hashed: a coarse-timestamp
    # file system could hide an edit made in the same tick
    src = _copy(tmp_path)
    ingest(src, tmp_path / "s.mgstore", progress=False)
    raw = bytearray(src.read_bytes())
    raw[-5:-1] = b"NNNN"
    st = src.stat()
    src.write_bytes(bytes(raw))
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not ingest(src, tmp_path / "s.mgstore", progress=False).ingest_stats.reused


@pytest.mark.parametrize("name", [THREE, "vcholerae_H1_2chrom.fa", "crlf.fa", "all_n_contig.fa",
                                  "human_chr17_softmasked.fa", "iupac.fa"])
def test_fai_check_accepts_the_index_pyfaidx_builds(tmp_path, name):
    src = _copy(tmp_path, name)
    open_faidx(src).close()
    assert fai_problem(src, f"{src}.fai") is None


def test_fai_check_accepts_blank_lines_and_no_final_newline(tmp_path):
    src = tmp_path / "x.fa"
    src.write_bytes(b">a\nACGTACGT\nACG\n\n>b desc\nACGTAC\nAC")  # and a blank line ending "a"
    open_faidx(src).close()
    assert fai_problem(src, f"{src}.fai") is None


def _fetch_all(src: Path) -> dict[str, str]:
    fa = open_faidx(src)
    try:
        return {k: fa.fetch(k, 1, r.rlen) for k, r in fa.index.items()}
    finally:
        fa.close()


@pytest.mark.parametrize("fai_text", [
    pytest.param(b"Umaydis:chr01:1:+:2476500\t100\t27\t60\t61\n", id="foreign-1-contig"),
    pytest.param(b"\x00\xff\xfe garbage \x81\n\n", id="garbage-bytes"),
    pytest.param(b"a\tb\tc\n", id="garbage-text"),
    pytest.param(b"", id="empty"),
])
def test_open_faidx_rebuilds_a_wrong_newer_fai(tmp_path, fai_text):
    src = _copy(tmp_path)
    fai = Path(f"{src}.fai")
    fai.write_bytes(fai_text)
    assert fai_problem(src, fai) is not None
    got = _fetch_all(src)
    assert list(got) == list(_records(THREE)) and all(len(v) == 1200 for v in got.values())
    assert fai_problem(src, fai) is None  # rebuilt in place


def test_open_faidx_does_not_trust_an_index_older_than_an_edit(tmp_path):
    # Record "a" keeps its size, headers and first line, but its 2nd/3rd lines become 59/61 wide
    # and the mtime is set back: only the FASTA's ctime shows that the old index is stale (with it,
    # pyfaidx would return shifted bases). Rebuilding then refuses the ragged record in one line.
    src = tmp_path / "x.fa"
    src.write_bytes(b">a\n" + (b"ACGT" * 15 + b"\n") * 3 + b">b\n" + b"GGCC" * 15 + b"\n")
    assert _fetch_all(src)["a"] == "ACGT" * 45
    time.sleep(0.02)
    st = src.stat()
    body = b"ACGT" * 45
    src.write_bytes(b">a\n" + body[:60] + b"\n" + body[60:119] + b"\n" + body[119:] + b"\n"
                    + b">b\n" + b"GGCC" * 15 + b"\n")
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert src.stat().st_size == st.st_size
    assert "older than the FASTA" in fai_problem(src, f"{src}.fai")
    with pytest.raises(InputFileError, match="line lengths differ"):
        open_faidx(src)


def test_open_faidx_refuses_ragged_lines_and_leaves_no_index(tmp_path):
    src = _copy(tmp_path, "ragged_lines.fa")
    with pytest.raises(InputFileError, match="line lengths differ.*seqkit seq -w 60") as exc:
        open_faidx(src)
    assert "\n" not in str(exc.value)
    assert not Path(f"{src}.fai").exists()


# --------------------------------------------------- item 7: cached stores keyed by content (two installs)


def _install(root: Path) -> Path:
    """A second copy of the package's bundled genome, as another venv or a wheel install has it."""
    from mamba_genome.workflows.pretrain import BUNDLED_FASTA

    dest = root / "site-packages" / "mamba_genome" / "bundled" / BUNDLED_FASTA.name
    dest.parent.mkdir(parents=True)
    shutil.copy(BUNDLED_FASTA, dest)
    return dest


def test_two_installs_share_the_bundled_store(tmp_path, monkeypatch):
    from mamba_genome.workflows import pretrain as pt

    a, b = _install(tmp_path / "venv-a"), _install(tmp_path / "venv-b")
    monkeypatch.setattr(pt, "BUNDLED_FASTA", a)
    store_a, _ = pt._open_data(pt.PretrainArgs(), progress=False)
    monkeypatch.setattr(pt, "BUNDLED_FASTA", b)
    store_b, _ = pt._open_data(pt.PretrainArgs(), progress=False)  # raised "is a store built from ...; use --force"
    assert store_b.path == store_a.path and store_b.ingest_stats.reused
    assert store_a.path.parent == tmp_path / "cache" / "stores"
    monkeypatch.setattr(pt, "BUNDLED_FASTA", a)
    assert pt._open_data(pt.PretrainArgs(), progress=False)[0].ingest_stats.reused  # and back again
    assert len(list((tmp_path / "cache" / "stores").iterdir())) == 1


def test_cached_store_path_follows_content_not_path(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a, b = _copy(tmp_path / "x"), _copy(tmp_path / "y")
    assert cached_store_path(a) == cached_store_path(b)
    raw = bytearray(b.read_bytes())
    raw[-3] = ord("N") if raw[-3] != ord("N") else ord("A")
    b.write_bytes(bytes(raw))
    assert cached_store_path(a) != cached_store_path(b)  # another version owns another store
    sa, sb = ingest(a, cached_store_path(a), progress=False), ingest(b, cached_store_path(b), progress=False)
    assert sa.path != sb.path and not sb.ingest_stats.reused


def test_read_only_dir_default_store_is_content_keyed(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    src = _copy(ro)
    real = fasta.dir_writable
    monkeypatch.setattr(store_mod, "dir_writable", lambda d: False if Path(d) == ro else real(d))
    assert store_mod.default_store_path(src) == cached_store_path(src)
    assert fasta.content_fingerprint(src) in cached_store_path(src).name


# ------------------------------------------------------------------ item 12: bad files, one error line


@pytest.fixture()
def bad_config_model(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_bytes(b'{"model_type": "lm", "config": {"d_model": 16}, "note": "caf\xe9"}')
    (d / "model.safetensors").write_bytes(b"")
    return d


@pytest.mark.parametrize("cmd", ["classify", "embed", "evaluate"])
def test_non_utf8_config_json_is_one_error_line(tmp_path, bad_config_model, cmd):
    fa = DATA / "ecoli_MG1655_3kb.fa"
    args = {
        "classify": ["classify", fa, "-m", bad_config_model, "--device", "cpu"],
        "embed": ["embed", fa, "-m", bad_config_model, "-o", tmp_path / "e.h5", "--device", "cpu"],
        "evaluate": ["evaluate", bad_config_model, "--fasta", fa, "--device", "cpu"],
    }[cmd]
    _one_error_line(_cli(*args), "config.json is not UTF-8")


@pytest.mark.parametrize("text", [b"[1, 2]", b'{"model_type": "lm", "config": 5}', b"\xef\xbb\xbf{"])
def test_odd_config_json_is_a_checkpoint_error(tmp_path, text):
    from mamba_genome.checkpoint import read_meta
    from mamba_genome.errors import CheckpointError

    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_bytes(text)
    (d / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError):
        read_meta(d)


def test_latin1_header_is_one_error_line_only_in_the_name(tmp_path):
    bad = tmp_path / "bad.fa"
    bad.write_bytes(b">caf\xe9 one\nACGT\n")
    _one_error_line(_cli("ingest", bad), "record name 'caf\\xe9' is not UTF-8")
    ok = tmp_path / "ok.fa"
    ok.write_bytes(b">chr1 souche caf\xe9\nACGT\n")  # in the description: ignored, like samtools
    assert _cli("ingest", ok, "-q").exit_code == 0


def test_ingest_with_garbage_fai_beside_it(tmp_path):
    src = _copy(tmp_path)
    Path(f"{src}.fai").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    res = _cli("ingest", src, "-q")
    assert res.exit_code == 0, res.output
    assert TokenStore.open(res.stdout.strip()).total_length == 3600


# ------------------------------------------------------------ item 13: one parser contract, .fa and .fa.gz


def _both(tmp_path: Path, raw: bytes, stem: str = "x") -> list[Path]:
    plain, gz = tmp_path / f"{stem}.fa", tmp_path / f"{stem}.fa.gz"
    plain.write_bytes(raw)
    gz.write_bytes(gzip.compress(raw, mtime=0))
    return [plain, gz]


def test_ragged_lines_are_read_the_same_everywhere(tmp_path):
    raw = (DATA / "ragged_lines.fa").read_bytes()
    want = _records("ragged_lines.fa")
    for path in _both(tmp_path, raw):
        res = _cli("ingest", path, "-q", "-o", tmp_path / f"{path.name}.mgstore")
        assert res.exit_code == 0, res.output
        s = TokenStore.open(tmp_path / f"{path.name}.mgstore")
        assert {k: s.tokens(k).tolist() for k in s.names} == {k: v.tolist() for k, v in want.items()}
        assert {n: encode(q).tolist() for n, q in iter_fasta_records(path)} == {k: v.tolist() for k, v in want.items()}


def test_plain_text_named_gz_is_read_as_text(tmp_path):
    path = tmp_path / "genome.fa.gz"
    shutil.copy(DATA / THREE, path)
    res = _cli("ingest", path, "-q")
    assert res.exit_code == 0, res.output
    assert Path(res.stdout.strip()) == tmp_path / "genome.mgstore"
    assert TokenStore.open(tmp_path / "genome.mgstore").total_length == 3600
    with pytest.raises(InputFileError, match="plain text although its name ends in .gz"):
        open_faidx(path)  # random access goes by name in pyfaidx: say so instead of a bgzip error


def test_cr_only_line_endings_have_a_clear_message(tmp_path):
    raw = (DATA / THREE).read_bytes().replace(b"\n", b"\r")
    for path in _both(tmp_path, raw):
        _one_error_line(_cli("ingest", path), "CR-only")
        with pytest.raises(InputFileError, match="CR-only"):
            list(iter_fasta_records(path))


def test_utf8_bom_is_skipped(tmp_path):
    raw = b"\xef\xbb\xbf" + (DATA / THREE).read_bytes()
    for path in _both(tmp_path, raw):
        s = ingest(path, tmp_path / f"{path.name}.mgstore", progress=False)
        assert s.names == list(_records(THREE)) and s.total_length == 3600
        assert [n for n, _ in iter_fasta_records(path)] == list(_records(THREE))


def test_utf16_is_refused_in_one_line(tmp_path):
    path = tmp_path / "x.fa"
    path.write_bytes(">a\nACGT\n".encode("utf-16"))
    _one_error_line(_cli("ingest", path), "UTF-16")


def test_no_index_left_beside_the_input(tmp_path):
    bad = _copy(tmp_path, "invalid_char.fa")
    _one_error_line(_cli("ingest", bad), "invalid character 'X'")
    good = _copy(tmp_path, THREE)
    assert _cli("ingest", good, "-q").exit_code == 0
    assert not list(tmp_path.glob("*.fai")) and not list(tmp_path.glob("*.gzi"))


def test_stream_block_size_and_format_do_not_change_tokens(tmp_path):
    raw = (DATA / "crlf.fa").read_bytes()
    outs = []
    for path in _both(tmp_path, b"\xef\xbb\xbf" + raw):
        for bs in (1, 7, 4096):
            blocks = list(stream_fasta_tokens(path, block_size=bs, prefetch=False))
            got: dict[str, list] = {}
            for blk in blocks:
                got.setdefault(blk.name, []).extend(blk.tokens.tolist())
            outs.append(got)
    assert all(o == outs[0] for o in outs) and list(outs[0]) == ["chrA", "chrB"]


# ------------------------------------------------------------------ item 14: one-line usage errors


@pytest.mark.parametrize("args,fragment", [
    (["ingest", "--bogus", "x.fa"], "no such option '--bogus'"),
    (["ingest", "--forc", "x.fa"], "did you mean '--force'?"),
    (["ingest"], "missing argument 'REF'"),
    (["nosuch"], "no such command 'nosuch'"),
    (["--bogus"], "no such option '--bogus'"),
    (["pretrain", "--seq-len", "abc"], "invalid value for '--seq-len'"),
    (["embed", "x.fa"], "missing option '-m' / '--model'"),
    (["embed", "x.fa", "-m", "m", "-o", "e.h5", "--pool", "max"], "invalid value for '--pool'"),
    (["ingest", "a.fa", "b.fa"], "unexpected extra argument"),
])
def test_usage_errors_are_one_line(args, fragment):
    res = _cli(*args)
    line = _one_error_line(res, fragment, code=2)
    cmd = "mamba-genome" + ("" if args[0].startswith("-") or args[0] == "nosuch" else f" {args[0]}")
    assert line.endswith(f"(see '{cmd} --help')"), line


def test_help_and_bare_group_still_print_help():
    assert _cli("--help").exit_code == 0 and "Usage:" in _cli("--help").output
    assert _cli("ingest", "-h").exit_code == 0
    assert "Commands:" in _cli().output


# --------------------------------------------------------------------- item 17: BED strand


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("model") / "m"
    from mamba_genome.model.config import MambaConfig
    from mamba_genome.model.lm import MambaLM

    save_model(MambaLM(MambaConfig.from_preset("tiny", d_model=16, n_layer=2)), d)
    return d


def test_bed_minus_strand_embeds_the_reverse_complement(tmp_path, tiny_model):
    import mamba_genome
    from mamba_genome.io import read_embeddings

    fa = DATA / "ecoli_MG1655_3kb.fa"
    name, seq = next(iter_fasta_records(fa))
    bed = tmp_path / "r.bed"
    bed.write_text(f"{name}\t100\t300\tfwd\t0\t+\n{name}\t100\t300\trev\t0\t-\n{name}\t100\t300\n"
                   f"{name}\t100\t300\t.\t0\t-\n")
    res = _cli("embed", fa, "-m", tiny_model, "-o", tmp_path / "e.npz", "--bed", bed, "--device", "cpu", "-q")
    assert res.exit_code == 0, res.output
    e = read_embeddings(tmp_path / "e.npz")
    assert e.ids == ["fwd", "rev", f"{name}:100-300", f"{name}:100-300(-)"]
    assert e.attrs["strand"] == "+-.-"
    gm = mamba_genome.load(tiny_model, device="cpu")
    tokens = encode(seq[100:300])
    want = gm.embed([tokens, reverse_complement_tokens(tokens)])
    np.testing.assert_allclose(e.embeddings[0], want[0], atol=1e-5)
    np.testing.assert_allclose(e.embeddings[1], want[1], atol=1e-5)
    np.testing.assert_allclose(e.embeddings[3], want[1], atol=1e-5)
    assert not np.allclose(e.embeddings[0], e.embeddings[1], atol=1e-4)


def test_bad_strand_is_one_error_line(tmp_path, tiny_model):
    bed = tmp_path / "r.bed"
    bed.write_text("K-12-MG1655\t0\t10\tx\t0\tplus\n")
    res = _cli("embed", DATA / "ecoli_MG1655_3kb.fa", "-m", tiny_model, "-o", tmp_path / "e.h5", "--bed", bed)
    _one_error_line(res, "r.bed:1: strand (column 6) must be '+', '-' or '.'")


def test_input_errors_stay_exit_1(tmp_path):
    # usage errors are 2, input errors stay 1
    res = _cli("ingest", tmp_path / "missing.fa")
    _one_error_line(res, "no such file", code=1)
    assert issubclass(InputFileError, UserError)


@pytest.mark.parametrize("edit", [
    lambda m: m.update(source=5), lambda m: m.update(contigs=3), lambda m: m["contigs"][0].update(file=7),
    lambda m: m["contigs"][0].update(file="../../etc/passwd"), lambda m: m["source"].update(seen={"a": 1}),
])
def test_damaged_manifest_means_rebuild_or_one_error_line(tmp_path, edit):
    src = _copy(tmp_path)
    out = tmp_path / "s.mgstore"
    ingest(src, out, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    edit(m)
    (out / "manifest.json").write_text(json.dumps(m))
    try:
        TokenStore.open(out)
    except InputFileError as exc:
        assert "\n" not in str(exc)
    res = _cli("ingest", src, "-o", out, "-q")
    assert res.exit_code in (0, 1) and "Traceback" not in res.output
    if res.exit_code == 1:
        _one_error_line(res)
    else:
        assert TokenStore.open(out).total_length == 3600
