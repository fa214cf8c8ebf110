"""Tests for FASTA reading (mamba_genome.data.fasta), token stores (data.store) and `mamba-genome ingest`.

Inputs are small real slices in tests/data (see the header lines for their
source genomes) and deliberately broken files. Every test works on copies in
tmp_path, so no .fai/.gzi/.mgstore is ever written into tests/data.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mamba_genome.data import fasta, store as store_mod
from mamba_genome.data.fasta import detect_format, iter_fasta_records, stream_fasta_tokens
from mamba_genome.data.store import TokenStore, ingest, open_or_ingest
from mamba_genome.data.tokenizer import encode
from mamba_genome.errors import InputFileError, RegionError, UserError

DATA = Path(__file__).parent / "data"
REAL = ["ecoli_MG1655_3kb.fa", "umaydis_3contigs.fa", "vcholerae_H1_2chrom.fa", "human_chr17_softmasked.fa"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBA_GENOME_CACHE", str(tmp_path / "cache"))


def _copy(tmp_path: Path, name: str, fmt: str = "plain") -> Path:
    """Copy tests/data/<name> into tmp_path as plain, gzip or BGZF."""
    raw = (DATA / name).read_bytes()
    if fmt == "plain":
        out = tmp_path / name
        out.write_bytes(raw)
    elif fmt == "gzip":
        out = tmp_path / (name + ".gz")
        out.write_bytes(gzip.compress(raw, mtime=0))
    else:
        from Bio import bgzf

        out = tmp_path / (name + ".bgz")
        with bgzf.BgzfWriter(str(out), "wb") as fh:
            fh.write(raw)
    return out


def _expected(name: str) -> dict[str, np.ndarray]:
    """Reference tokens by a naive reader: header = first word, join lines, encode."""
    recs, cur = {}, None
    for line in (DATA / name).read_text().splitlines():
        if line.startswith(">"):
            cur = line[1:].split()[0]
            recs[cur] = []
        elif line.strip():
            recs[cur].append(line.strip())
    return {k: encode("".join(v)) for k, v in recs.items()}


# ----------------------------------------------------------------------- reading


@pytest.mark.parametrize("fmt", ["plain", "gzip", "bgzf"])
def test_detect_format(tmp_path, fmt):
    assert detect_format(_copy(tmp_path, "ecoli_MG1655_3kb.fa", fmt)) == fmt


def test_detect_other_compression(tmp_path):
    import bz2

    p = tmp_path / "x.fa.bz2"
    p.write_bytes(bz2.compress(b">a\nACGT\n"))
    with pytest.raises(InputFileError, match="bzip2"):
        detect_format(p)


@pytest.mark.parametrize("fmt", ["plain", "gzip", "bgzf"])
def test_iter_fasta_records(tmp_path, fmt):
    recs = list(iter_fasta_records(_copy(tmp_path, "umaydis_3contigs.fa", fmt)))
    exp = _expected("umaydis_3contigs.fa")
    assert [n for n, _ in recs] == list(exp) == ["Umaydis:chr01:1:+:2476500", "Umaydis:chr02:1:+:1879391", "Umaydis:chr03:1:+:1633472"]
    for name, seq in recs:
        assert np.array_equal(encode(seq, name=name), exp[name])


@pytest.mark.parametrize("fmt", ["plain", "gzip", "bgzf"])
@pytest.mark.parametrize("name", REAL)
def test_stream_tokens_match_direct_encode(tmp_path, name, fmt):
    blocks = list(stream_fasta_tokens(_copy(tmp_path, name, fmt), block_size=500))
    got: dict[str, list] = {}
    for b in blocks:
        assert b.start == sum(len(t) for t in got.get(b.name, []))  # contiguous, in order
        got.setdefault(b.name, []).append(b.tokens)
        assert b.n_count == int(np.count_nonzero(b.tokens == 9))
    exp = _expected(name)
    assert list(got) == list(exp)
    for k in exp:
        assert np.array_equal(np.concatenate(got[k]), exp[k])


def test_vcholerae_names_are_first_word(tmp_path):
    names = [n for n, _ in iter_fasta_records(_copy(tmp_path, "vcholerae_H1_2chrom.fa"))]
    assert names == ["gi|393210368|gb|AKGH01000001.1|", "gi|393210367|gb|AKGH01000002.1|"]


# ----------------------------------------------------------------------- bad input

BAD = [
    # (file, formats, message fragment)
    ("empty.fa", ["plain"], "file is empty"),
    ("not_fasta.fq", ["plain", "gzip", "bgzf"], "not a FASTA file"),
    ("header_no_sequence.fa", ["plain", "gzip", "bgzf"], "'chrB' has a header but no sequence"),
    ("duplicate_names.fa", ["plain", "gzip", "bgzf"], "duplicate record name 'chrA'"),
    ("invalid_char.fa", ["plain", "gzip", "bgzf"], "'X' in record 'chrB' at position 81"),
]


@pytest.mark.parametrize("name,fmts,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_are_one_line_errors(tmp_path, name, fmts, msg):
    for fmt in fmts:
        path = _copy(tmp_path, name, fmt)
        with pytest.raises(InputFileError) as exc:
            ingest(path, tmp_path / f"{fmt}.mgstore", progress=False)
        text = str(exc.value)
        assert msg in text and "\n" not in text, (fmt, text)
        assert str(path) in text  # says which file
        assert not (tmp_path / f"{fmt}.mgstore").exists()  # nothing half-built left behind
        assert not list(tmp_path.glob("*.tmp-*"))


@pytest.mark.parametrize("name", [b[0] for b in BAD])
def test_iter_records_rejects_the_same_files(tmp_path, name):
    with pytest.raises(InputFileError):
        for rec_name, seq in iter_fasta_records(_copy(tmp_path, name)):
            encode(seq, name=rec_name)


@pytest.mark.parametrize("fmt", ["plain", "gzip", "bgzf"])
def test_ragged_lines_are_read_in_every_format(tmp_path, fmt):
    # Every format is streamed by the same parser, so line lengths do not matter.
    recs = list(iter_fasta_records(_copy(tmp_path, "ragged_lines.fa", fmt)))
    assert len(recs[0][1]) == 70 * 3 + 40
    (tmp_path / "s").mkdir()
    store = ingest(_copy(tmp_path / "s", "ragged_lines.fa", fmt), progress=False)
    assert store.total_length == 70 * 3 + 40


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        ingest(tmp_path / "nope.fa.gz", progress=False)
    with pytest.raises(InputFileError, match="is a directory"):
        ingest(tmp_path, progress=False)


def test_truncated_gzip(tmp_path):
    path = tmp_path / "truncated.fa.gz"
    shutil.copy(DATA / "truncated.fa.gz", path)
    with pytest.raises(InputFileError, match=r"truncated \(gzip stream ended early\): re-download it"):
        ingest(path, progress=False)
    with pytest.raises(InputFileError, match="truncated"):
        list(iter_fasta_records(path))


def test_corrupt_gzip(tmp_path):
    raw = bytearray(gzip.compress((DATA / "umaydis_3contigs.fa").read_bytes()))
    raw[200:260] = b"\xff" * 60
    path = tmp_path / "corrupt.fa.gz"
    path.write_bytes(bytes(raw))
    with pytest.raises(InputFileError, match="corrupt|truncated"):
        ingest(path, progress=False)


@pytest.mark.parametrize("fmt", ["plain", "gzip", "bgzf"])
def test_crlf_line_endings(tmp_path, fmt):
    store = ingest(_copy(tmp_path, "crlf.fa", fmt), tmp_path / "s.mgstore", progress=False)
    exp = _expected("crlf.fa")
    assert store.names == ["chrA", "chrB"]
    for k in exp:
        assert np.array_equal(store.tokens(k), exp[k])


def test_iupac_counted_not_fatal(tmp_path):
    store = ingest(_copy(tmp_path, "iupac.fa", "gzip"), tmp_path / "s.mgstore", progress=False)
    c = store.manifest["contigs"][0]
    assert c["iupac_count"] == 10 and c["n_count"] == 10
    assert store.manifest["iupac_count"] == 10


def test_all_n_contig_is_kept_and_flagged(tmp_path):
    store = ingest(_copy(tmp_path, "all_n_contig.fa"), tmp_path / "s.mgstore", progress=False)
    info = {c.name: c for c in store.contigs}
    assert info["gap_only"].all_n and info["gap_only"].length == 280
    assert not info["chrA"].all_n


# ----------------------------------------------------------------------- store


@pytest.mark.parametrize("fmt", ["plain", "gzip", "bgzf"])
def test_ingest_store_layout_and_access(tmp_path, fmt):
    src = _copy(tmp_path, "umaydis_3contigs.fa", fmt)
    store = ingest(src, progress=False)
    assert store.path == tmp_path / "umaydis_3contigs.mgstore"  # default: beside, suffixes stripped
    m = json.loads((store.path / "manifest.json").read_text())
    assert m["format_version"] == 1 and m["tokenizer_version"] == 1 and len(m["vocab"]) == 10
    assert m["source"]["path"] == str(src.resolve()) and m["source"]["size"] == src.stat().st_size
    assert len(m["source"]["sha256"]) == 64 and m["source"]["format"] == fmt
    assert m["total_length"] == 3600 == store.total_length
    for c in m["contigs"]:
        assert set(c) >= {"name", "length", "n_count", "iupac_count", "file", "all_n"}
        assert (store.path / c["file"]).stat().st_size == c["length"]
        assert ":" not in c["file"] and "+" not in c["file"]  # file names made safe
    exp = _expected("umaydis_3contigs.fa")
    for name in store.names:
        mm = store.tokens(name)
        assert isinstance(mm, np.memmap) and mm.dtype == np.uint8 and not mm.flags.writeable
        assert np.array_equal(mm, exp[name])
    name = store.names[1]
    assert np.array_equal(store.fetch(name, 100, 160), exp[name][100:160])
    assert store.lengths == {k: 1200 for k in exp}
    assert store.ingest_stats.text_bytes > 0 and not store.ingest_stats.reused


def test_fetch_errors(tmp_path):
    store = ingest(_copy(tmp_path, "ecoli_MG1655_3kb.fa", "gzip"), progress=False)
    with pytest.raises(RegionError, match="unknown contig 'chrZ'.*K-12-MG1655"):
        store.fetch("chrZ", 0, 10)
    for s, e in [(-1, 10), (10, 10), (2990, 3001), (20, 5)]:
        with pytest.raises(RegionError, match="0-based, half-open"):
            store.fetch("K-12-MG1655", s, e)


def test_reingest_is_noop_and_change_rebuilds(tmp_path):
    src = _copy(tmp_path, "ecoli_MG1655_3kb.fa", "gzip")
    first = ingest(src, progress=False)
    bin_file = first.path / first.manifest["contigs"][0]["file"]
    inode = bin_file.stat().st_ino
    again = ingest(src, progress=False)
    assert again.ingest_stats.reused and bin_file.stat().st_ino == inode
    # touched but identical bytes: still reused (sha256 confirms)
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 5_000_000_000))
    assert ingest(src, progress=False).ingest_stats.reused
    # changed content (same size): rebuilt
    raw = bytearray((DATA / "ecoli_MG1655_3kb.fa").read_bytes())
    raw[20:24] = b"NNNN"
    src.write_bytes(gzip.compress(bytes(raw), mtime=0))
    rebuilt = ingest(src, progress=False)
    assert not rebuilt.ingest_stats.reused
    assert rebuilt.contigs[0].n_count == 4
    assert rebuilt.manifest["source"]["sha256"] != first.manifest["source"]["sha256"]
    assert ingest(src, force=True, progress=False).ingest_stats.reused is False
    assert [p.name for p in tmp_path.iterdir() if ".old-" in p.name or ".tmp-" in p.name] == []


def test_concurrent_ingests_of_one_fasta_build_it_once(tmp_path):
    """Two commands started together on one FASTA (e.g. two fine-tunes of a task): one builds the
    store, the other waits for it and reuses it, and neither ever sees a half-replaced store."""
    import threading

    src = _copy(tmp_path, "umaydis_3contigs.fa", "gzip")
    results, errors = [], []

    def run():
        try:
            st = ingest(src, progress=False)
            results.append((st.ingest_stats.reused, [st.fetch(c.name, 0, c.length).tobytes() for c in st.contigs]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r for r, _ in results) == [False, True, True, True]
    assert len({tuple(tokens) for _, tokens in results}) == 1
    assert [p.name for p in tmp_path.iterdir() if ".old-" in p.name or ".tmp-" in p.name] == []


def test_store_for_another_fasta_needs_force(tmp_path):
    a = _copy(tmp_path, "ecoli_MG1655_3kb.fa")
    b = _copy(tmp_path, "iupac.fa")
    ingest(a, tmp_path / "s.mgstore", progress=False)
    with pytest.raises(UserError, match="--force"):
        ingest(b, tmp_path / "s.mgstore", progress=False)
    assert ingest(b, tmp_path / "s.mgstore", force=True, progress=False).names == ["chrA"]


def test_incomplete_store_is_not_a_store(tmp_path):
    store = ingest(_copy(tmp_path, "ecoli_MG1655_3kb.fa"), progress=False)
    (store.path / "manifest.json").unlink()  # what a crash before the last write leaves
    with pytest.raises(InputFileError, match="not a token store"):
        TokenStore.open(store.path)
    with pytest.raises(InputFileError, match="not a token store"):
        TokenStore.open(tmp_path / "missing.mgstore")


def test_store_validation_on_open(tmp_path):
    store = ingest(_copy(tmp_path, "umaydis_3contigs.fa"), progress=False)
    mpath = store.path / "manifest.json"
    m = json.loads(mpath.read_text())
    m["tokenizer_version"] = 99
    mpath.write_text(json.dumps(m))
    with pytest.raises(InputFileError, match="tokenizer version 99"):
        TokenStore.open(store.path)
    m["tokenizer_version"] = 1
    mpath.write_text(json.dumps(m))
    (store.path / m["contigs"][1]["file"]).unlink()
    with pytest.raises(InputFileError, match="missing or the wrong size"):
        TokenStore.open(store.path)


def test_crash_midway_leaves_no_store(tmp_path, monkeypatch):
    src = _copy(tmp_path, "umaydis_3contigs.fa", "gzip")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store_mod, "_move_into_place", boom)
    with pytest.raises(KeyboardInterrupt):
        ingest(src, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [src.name]  # no store, no .tmp-<pid>


def test_read_only_directory_uses_cache(tmp_path, monkeypatch):
    # Root ignores permission bits, so also simulate the check being false.
    ro = tmp_path / "ro"
    ro.mkdir()
    src = ro / "umaydis_3contigs.fa"
    shutil.copy(DATA / "umaydis_3contigs.fa", src)
    bgz = _copy(ro, "vcholerae_H1_2chrom.fa", "bgzf")
    real = fasta.dir_writable
    monkeypatch.setattr(fasta, "dir_writable", lambda d: False if Path(d) == ro else real(d))
    monkeypatch.setattr(store_mod, "dir_writable", lambda d: False if Path(d) == ro else real(d))
    os.chmod(ro, 0o555)
    try:
        s1 = ingest(src, progress=False)
        s2 = ingest(bgz, progress=False)
        assert sorted(p.name for p in ro.iterdir()) == sorted([src.name, bgz.name])  # nothing written beside
        cache = tmp_path / "cache"
        assert s1.path.parent == cache / "stores" and s2.path.parent == cache / "stores"
        # Ingest streams every format: no index is needed, none is written anywhere.
        assert not (cache / "index").exists()
        assert ingest(src, progress=False).ingest_stats.reused
    finally:
        os.chmod(ro, 0o755)


def test_chmod_read_only_dir_counts_even_for_root(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    os.chmod(d, 0o555)
    try:
        assert not fasta.dir_writable(d)
    finally:
        os.chmod(d, 0o755)
    assert fasta.dir_writable(d)


def test_open_or_ingest(tmp_path):
    src = _copy(tmp_path, "ecoli_MG1655_3kb.fa", "gzip")
    s = open_or_ingest(src, progress=False)
    assert open_or_ingest(s.path).path == s.path
    assert open_or_ingest(s) is s
    assert open_or_ingest(str(src), progress=False).ingest_stats.reused


def test_store_pickles_without_memmaps(tmp_path):
    import pickle

    s = ingest(_copy(tmp_path, "ecoli_MG1655_3kb.fa"), progress=False)
    s.tokens("K-12-MG1655")
    s2 = pickle.loads(pickle.dumps(s))
    assert np.array_equal(s2.fetch("K-12-MG1655", 0, 10), s.fetch("K-12-MG1655", 0, 10))


# ----------------------------------------------------------------------- CLI


def _cli(args):
    """Invoke the CLI; click >= 8.2 keeps stderr apart from stdout in the result."""
    from mamba_genome.cli import main

    return CliRunner().invoke(main, args)


def test_cli_ingest_prints_summary(tmp_path):
    src = _copy(tmp_path, "all_n_contig.fa", "gzip")
    res = _cli(["ingest", str(src), "-o", str(tmp_path / "x.mgstore")])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "TOTAL (3 contigs)" in out and "1,120" in out and "gap_only (all N)" in out and "MB/s" in out
    assert str(tmp_path / "x.mgstore") in out
    res = _cli(["ingest", str(src), "-o", str(tmp_path / "x.mgstore")])
    assert res.exit_code == 0 and "up to date" in res.stderr


def test_cli_ingest_quiet_prints_only_path(tmp_path):
    src = _copy(tmp_path, "ecoli_MG1655_3kb.fa")
    res = _cli(["ingest", "-q", str(src)])
    assert res.exit_code == 0
    assert res.stdout.strip() == str(tmp_path / "ecoli_MG1655_3kb.mgstore")


@pytest.mark.parametrize("name", ["empty.fa", "duplicate_names.fa", "truncated.fa.gz", "nope.fa"])
def test_cli_bad_input_is_one_error_line(tmp_path, name):
    src = tmp_path / name
    if (DATA / name).exists():
        shutil.copy(DATA / name, src)
    res = _cli(["ingest", str(src)])
    assert res.exit_code == 1
    err = res.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


def test_cli_help_has_example():
    res = _cli(["ingest", "--help"])
    assert res.exit_code == 0 and "mamba-genome ingest hg38.fa.gz" in res.output


def test_many_contigs_keep_few_files_open(tmp_path):
    """A store of thousands of short records (reads, a fragmented assembly, a synthetic task)
    stays readable under a low open-file limit: only the recently used contig memmaps stay open."""
    import subprocess
    import sys
    n = 3 * store_mod.MAX_OPEN_CONTIGS
    fa = tmp_path / "many.fa"
    rng = np.random.default_rng(0)
    with open(fa, "w") as fh:
        for i in range(n):
            fh.write(f">r{i}\n" + "".join(rng.choice(list("ACGT"), 50)) + "\n")
    ingest(fa, tmp_path / "many.mgstore", progress=False)
    script = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({store_mod.MAX_OPEN_CONTIGS + 100}, "
        "resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
        "from mamba_genome.data.store import TokenStore\n"
        f"s = TokenStore.open({str(tmp_path / 'many.mgstore')!r})\n"
        "for rep in range(2):\n"
        f"    for i in range({n}):\n"
        "        assert s.fetch(f'r{i}', 0, 50).size == 50\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
