"""Bounded fuzzing of the FASTA and BED readers with hypothesis.

The promise: any input ends in a parsed result or a ``UserError`` with a
one-line message, never another exception. Inputs are built from pieces that
exercise the parser's edge cases (headers, CR/LF/CRLF, a BOM, IUPAC codes,
``>`` inside a line, Latin-1 and NUL bytes, blank lines, FASTQ's ``@``) mixed
with arbitrary bytes. The FASTA property is also differential: plain and gzip
files of the same bytes, any block size, the record reader and the token
stream, and ``ingest`` all agree (the same records and tokens, or an error
for all of them).

Reproducible and bounded for CI: ``derandomize=True``, a fixed
``max_examples``, no example database, ``deadline=None``.
"""
from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mamba_genome.data.bed import read_bed
from mamba_genome.data.fasta import iter_fasta_records, stream_fasta_tokens
from mamba_genome.data.store import TokenStore, ingest
from mamba_genome.data.tokenizer import encode
from mamba_genome.errors import UserError

FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

FASTA_PIECES = [
    b">", b">chr1", b">chr2 description", b">chr1", b"> x", b">caf\xe9", b">a\tb", b"\n", b"\n", b"\n", b"\r\n",
    b"\r", b"ACGT", b"acgtn", b"NNNN", b"RYKMSWBDHV", b"X", b"-", b"*", b" ", b"\t", b"@r1", b"+", b"\xef\xbb\xbf",
    b"\xff\xfe", b"\x00", b"\xe9", b"ACGTACGTACGTACGTACGTACGTACGTACGT", b"\n\n", b";comment",
]
SEQ_LINES = [b"ACGT", b"ACGTACGTAC", b"acgtnACGTN", b"NNNNNNNN", b"RYKMSW", b"", b"ACGTACGTACGTACGTACGTACGTACGTAC"]
NAMES = [b"chr1", b"chr2", b"chr1 desc", b"chrM\tx", b"a|b|c", b"", b" chr3", b"caf\xe9", b"chr2 caf\xe9"]


@st.composite
def fasta_like(draw):
    """A well-formed FASTA (random names, ragged lines, LF/CRLF/CR, maybe a BOM), then a few edits."""
    eol = draw(st.sampled_from([b"\n", b"\n", b"\n", b"\r\n", b"\r"]))
    parts = [draw(st.sampled_from([b"", b"", b"\n", b"\xef\xbb\xbf"]))]
    for i, (name, lines) in enumerate(draw(st.lists(
            st.tuples(st.sampled_from(NAMES), st.lists(st.sampled_from(SEQ_LINES), min_size=1, max_size=4)),
            min_size=1, max_size=4))):
        unique = draw(st.integers(0, 4)) > 0  # mostly distinct names; sometimes a duplicate
        parts.append(b">" + (name.replace(b"chr", b"chr%d_" % i, 1) if unique else name) + eol
                     + b"".join(line + eol for line in lines))
    raw = b"".join(parts)
    edits = st.lists(st.tuples(st.integers(0, 1 << 16), st.sampled_from(FASTA_PIECES)), max_size=2)
    for pos, piece in draw(st.one_of(st.just([]), edits)):
        k = pos % (len(raw) + 1)
        raw = raw[:k] + piece + raw[k:]
    return raw


fasta_bytes = st.one_of(
    fasta_like(), fasta_like(),
    st.lists(st.sampled_from(FASTA_PIECES), max_size=40).map(b"".join),
    st.lists(st.one_of(st.sampled_from(FASTA_PIECES), st.binary(max_size=8)), max_size=30).map(b"".join),
    st.binary(max_size=200),
)


def _one_line(exc: UserError) -> None:
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, repr(text)


def _outcome(fn):
    """('ok', value) or ('error', message); anything but a UserError propagates (and fails the test)."""
    try:
        return "ok", fn()
    except UserError as exc:
        _one_line(exc)
        return "error", None


def _records(path: Path):
    return [(name, encode(seq, name=name).tolist()) for name, seq in iter_fasta_records(path)]


def _streamed(path: Path, block_size: int, prefetch: bool = False):
    out: dict[str, list[int]] = {}
    for b in stream_fasta_tokens(path, block_size=block_size, prefetch=prefetch):
        assert b.start == len(out.get(b.name, []))
        out.setdefault(b.name, []).extend(b.tokens.tolist())
    return list(out.items())


@pytest.fixture(scope="module")
def workdir():
    d = tempfile.mkdtemp(prefix="fuzz-readers-")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@FUZZ
@given(raw=fasta_bytes, block_size=st.sampled_from([1, 2, 5, 64, 1 << 20]))
def test_fasta_readers_agree_or_fail_in_one_line(workdir, raw, block_size):
    d = Path(tempfile.mkdtemp(dir=workdir))
    plain, gz = d / "x.fa", d / "x.fa.gz"
    plain.write_bytes(raw)
    gz.write_bytes(gzip.compress(raw, mtime=0))
    results = []
    for path in (plain, gz):
        results.append(_outcome(lambda: _records(path)))
        results.append(_outcome(lambda: _streamed(path, block_size)))
    results.append(_outcome(lambda: _streamed(gz, block_size, prefetch=True)))
    kinds = {k for k, _ in results}
    assert len(kinds) == 1, (raw, results)  # all parse, or all refuse
    event(f"fasta: {results[0][0]}")
    if kinds == {"ok"}:
        first = results[0][1]
        assert all(v == first for _, v in results), raw
        assert all(len(toks) > 0 and name for name, toks in first)
    if raw:  # an empty file is refused before anything is created
        for path in (plain, gz):
            kind, store = _outcome(lambda: ingest(path, d / f"{path.name}.mgstore", progress=False))
            assert kind == results[0][0], (raw, path)
            if kind == "ok":
                assert [(c.name, store.tokens(c.name).tolist()) for c in store.contigs] == results[0][1]
                assert TokenStore.open(store.path).total_length == sum(len(t) for _, t in results[0][1])
            else:
                assert not (d / f"{path.name}.mgstore").exists()
    leftovers = [n for n in os.listdir(d) if n not in ("x.fa", "x.fa.gz") and not n.endswith(".mgstore")]
    assert leftovers == [], leftovers  # no .fai, no half-built .tmp-<pid> store
    shutil.rmtree(d, ignore_errors=True)


BED_PIECES = [
    "chr1", "chr2", "chrUn", "\t", "\t", "\t", " ", "0", "10", "100", "999", "1000", "-5", "1e3", "0x10", "+", "-", ".",
    "\n", "\n", "\r\n", "#", "track", "browser", "name", "\u00e9", "\x00", "3.5", "9" * 30,
]


@st.composite
def bed_like(draw):
    """BED lines with plausible fields (some out of range, some bad strands), headers, then a few edits."""
    lines = []
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.sampled_from(["# c", "track name=x", "browser position chr1", ""])))
            continue
        start = draw(st.integers(-2, 1010))
        fields = [draw(st.sampled_from(["chr1", "chr2", "chrUn"])), str(start),
                  str(start + draw(st.integers(-1, 600)))]
        fields += draw(st.lists(st.sampled_from(["peak", ".", "0", "960"]), max_size=2))
        if len(fields) == 5:
            fields.append(draw(st.sampled_from(["+", "-", ".", "", "plus"])))
        lines.append(draw(st.sampled_from(["\t", " "])).join(fields))
    text = draw(st.sampled_from(["\n", "\r\n"])).join(lines) + draw(st.sampled_from(["", "\n"]))
    for pos, piece in draw(st.lists(st.tuples(st.integers(0, 1 << 12), st.sampled_from(BED_PIECES)), max_size=2)):
        k = pos % (len(text) + 1)
        text = text[:k] + piece + text[k:]
    return text


bed_text = st.one_of(
    bed_like(), bed_like(),
    st.lists(st.one_of(st.sampled_from(BED_PIECES), st.text(max_size=4)), max_size=40).map("".join),
)
LENGTHS = {"chr1": 1000, "chr2": 500}


@FUZZ
@given(text=bed_text, encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]), with_lengths=st.booleans())
def test_bed_reader_parses_or_fails_in_one_line(workdir, text, encoding, with_lengths):
    p = Path(tempfile.mkdtemp(dir=workdir)) / "r.bed"
    p.write_bytes(text.encode(encoding, "replace"))
    kind, regions = _outcome(lambda: read_bed(p, LENGTHS if with_lengths else None))
    event(f"bed: {kind}")
    if kind == "ok":
        assert regions
        for r in regions:
            assert 0 <= r.start < r.end and r.strand in "+-." and r.id
            if with_lengths:
                assert r.contig in LENGTHS and r.end <= LENGTHS[r.contig]
    shutil.rmtree(p.parent, ignore_errors=True)


def test_fuzz_corpus_covers_both_outcomes():
    """The piece alphabet reaches both outcomes (a fuzz pass that only ever errors proves little)."""
    d = Path(tempfile.mkdtemp())
    try:
        ok, bad = d / "ok.fa", d / "bad.fa"
        ok.write_bytes(b"\xef\xbb\xbf>chr1 description\r\nACGT\r\nacgtn\n>chr2\nRYKMSWBDHV\n")
        bad.write_bytes(b">chr1\nAC>GT\n")
        assert _outcome(lambda: _records(ok))[1] == [("chr1", [5, 6, 7, 8, 5, 6, 7, 8, 9]), ("chr2", [9] * 10)]
        assert _outcome(lambda: _streamed(bad, 2))[0] == "error"
        assert np.array_equal(encode("ACGT"), [5, 6, 7, 8])
    finally:
        shutil.rmtree(d)
