"""FASTA input for every command: format sniffing, validation, streaming tokens.

Owns how a FASTA file (plain, gzip or BGZF) is read and what counts as a bad
one. Two entry points, both built on the same streaming parser:

- :func:`iter_fasta_records` yields ``(name, sequence_bytes)`` for small
  sample files (``classify``/``embed``/``evaluate`` inputs).
- :func:`stream_fasta_tokens` turns a whole genome into per-contig blocks of
  token ids in constant memory, for :func:`mamba_genome.data.store.ingest`.

The format is sniffed from the content, never from the file name (a plain
text file called ``x.fa.gz`` is read as plain text). Plain text is read in big
blocks; gzip (UCSC's ``hg38.fa.gz``) and BGZF (multi-member gzip) are
inflated once through zlib. Headers are found with ``bytes.find(b">")`` and
each block is stripped of line breaks and tokenized by a single
``bytes.translate`` call. Reading never writes anything beside the input.

The one parser contract (plain and gzip alike):

- Line widths do not matter: records may have ragged lines, as FASTA allows.
  Only :func:`open_faidx` (random access without ingesting, through a
  samtools-compatible ``.fai``) needs one width per record, and it says so.
- LF and CRLF line endings are read; a UTF-8 byte-order mark is skipped.
- Record names are the first whitespace-delimited word of the header (as in
  samtools and pyfaidx) and must be UTF-8; the rest of the header is ignored.
- IUPAC codes become N and are counted.

Fatal (``InputFileError``, one line): missing, unreadable or empty file; not
FASTA; UTF-16 text; CR-only (old Mac) line endings; a header with no
sequence; an empty, non-UTF-8 or duplicate record name; a truncated or
corrupt gzip stream; a character that is not a base or IUPAC code (the message
names the record and 1-based position).

:func:`open_faidx` checks an existing ``.fai`` against the FASTA before using
it (:func:`fai_problem`) and rebuilds a stale or foreign one; when the
directory beside the FASTA is read-only the index goes to
``$MAMBA_GENOME_CACHE/index`` (default ``~/.cache/mamba-genome/index``),
named by a content fingerprint (:func:`content_fingerprint`).
"""
from __future__ import annotations

import hashlib
import os
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InputFileError
from .tokenizer import _IUPAC_MARK, INVALID, IUPAC_MARK_TABLE, N, encode_with_stats

#: Default bytes of decompressed text per block (about 4 Mbp per yielded block).
DEFAULT_BLOCK_SIZE = 4 << 20
_READ_SIZE = 1 << 20  # compressed bytes read per call
_MAX_HEADER = 1 << 20  # a longer "header line" means the file is not FASTA

_HEADER, _SEQ = 0, 1
_GZ_NAMES = (".gz", ".bgz", ".bgzf")
_OTHER_COMPRESSION = {
    b"BZh": "bzip2",
    b"\xfd7zXZ": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
}


# --------------------------------------------------------------------------- paths


def cache_dir(kind: str = "") -> Path:
    """``$MAMBA_GENOME_CACHE`` (default ``~/.cache/mamba-genome``), optionally ``/<kind>``."""
    root = os.environ.get("MAMBA_GENOME_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mamba-genome")
    return Path(root) / kind if kind else Path(root)


def dir_writable(directory: str | os.PathLike) -> bool:
    """Whether we may write into ``directory``.

    A directory without any write bit (``chmod a-w``) counts as read-only even
    for root, so shared data directories are never written into.
    """
    try:
        mode = os.stat(directory).st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(directory, os.W_OK)


def cache_key(path: str | os.PathLike) -> str:
    """A short, stable, file-name-safe key for an absolute path."""
    return hashlib.sha1(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:12]


_FINGERPRINT_BLOCK = 1 << 20  # bytes hashed at the start, the end and 14 places between


def content_fingerprint(path: str | os.PathLike) -> str:
    """A 16-hex-digit key for a file's content, cheap on any size (reads at most 16 MiB).

    sha256 of the size, the first and last MiB and 14 evenly spaced MiB
    blocks. Two copies of one file (a second install, another directory) get
    the same key; a file edited anywhere in the sampled blocks, or resized,
    gets another. It names cache entries only: whether a cached store matches
    a file is decided by the full sha256 in its manifest.
    """
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as fh:
        if size <= 16 * _FINGERPRINT_BLOCK:
            while chunk := fh.read(8 << 20):
                h.update(chunk)
        else:
            for k in range(16):
                fh.seek((size - _FINGERPRINT_BLOCK) * k // 15)
                h.update(fh.read(_FINGERPRINT_BLOCK))
    return h.hexdigest()[:16]


def check_readable(path: str | os.PathLike) -> Path:
    """Raise ``InputFileError`` unless ``path`` is a readable, non-empty file."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise InputFileError(f"{p}: is a directory, expected a FASTA file (.fa, .fa.gz)")
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise InputFileError(f"{p}: cannot be read ({exc.strerror}); check its permissions") from exc
    if p.stat().st_size == 0:
        raise InputFileError(f"{p}: file is empty; expected FASTA records starting with '>'")
    return p


# -------------------------------------------------------------------------- sniffing


def detect_format(path: str | os.PathLike) -> str:
    """Sniff the magic bytes: ``"plain"``, ``"gzip"`` or ``"bgzf"``.

    BGZF is gzip whose first member carries the ``BC`` extra subfield
    (written by ``bgzip``; randomly accessible through a ``.gzi`` index).
    """
    p = check_readable(path)
    with open(p, "rb") as fh:
        head = fh.read(18)
    if head[:2] == b"\x1f\x8b":
        # FLG.FEXTRA set, XLEN at 10..11, then subfields: SI1 SI2 SLEN ...
        if len(head) >= 16 and head[3] & 4:
            xlen = int.from_bytes(head[10:12], "little")
            with open(p, "rb") as fh:
                fh.seek(12)
                extra = fh.read(xlen)
            i = 0
            while i + 4 <= len(extra):
                slen = int.from_bytes(extra[i + 2 : i + 4], "little")
                if extra[i : i + 2] == b"BC":
                    return "bgzf"
                i += 4 + slen
        return "gzip"
    for magic, name in _OTHER_COMPRESSION.items():
        if head.startswith(magic):
            raise InputFileError(
                f"{p}: is {name}-compressed, which is not supported; decompress it, "
                "or recompress with gzip or bgzip"
            )
    return "plain"


# ------------------------------------------------------------------ raw text chunks


def _plain_chunks(path: Path, size: int, progress: "_Progress") -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(size):
            progress.input_pos = fh.tell()
            progress.text_bytes += len(chunk)
            if progress.hasher is not None:
                progress.hasher.update(chunk)
            yield chunk


def _gzip_chunks(path: Path, size: int, progress: "_Progress") -> Iterator[bytes]:
    """Decompress a (multi-member) gzip file, ``size`` bytes of text at a time."""
    truncated = f"{path}: file is truncated (gzip stream ended early): re-download it"
    with open(path, "rb") as fh:
        d = zlib.decompressobj(31)
        in_member = False
        buf = b""
        while True:
            if not buf:
                buf = fh.read(_READ_SIZE)
                progress.input_pos = fh.tell()
                if progress.hasher is not None:
                    progress.hasher.update(buf)
                if not buf:
                    break
            if not in_member and not buf.strip(b"\0"):
                buf = b""  # zero padding after the last member
                continue
            try:
                out = d.decompress(buf, size)
            except zlib.error as exc:
                raise InputFileError(f"{path}: gzip data is corrupt ({exc}); re-download it") from exc
            in_member = True
            buf = d.unconsumed_tail
            if out:
                progress.text_bytes += len(out)
                yield out
            if d.eof:  # end of this gzip member; another may follow (BGZF, cat a.gz b.gz)
                buf = d.unused_data
                d = zlib.decompressobj(31)
                in_member = False
        if in_member:
            try:
                out = d.flush()
            except zlib.error as exc:  # pragma: no cover - zlib reports truncation via eof
                raise InputFileError(truncated) from exc
            if out:
                progress.text_bytes += len(out)
                yield out
            if not d.eof:
                raise InputFileError(truncated)


def _prefetch(chunks: Iterator[bytes], depth: int = 3) -> Iterator[bytes]:
    """Run ``chunks`` in a background thread, ``depth`` items ahead.

    zlib releases the GIL while inflating, so decompression on one core
    overlaps tokenizing and writing on the other. Exceptions are re-raised
    in the consumer; a consumer that stops early stops the thread.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer has gone away

    def produce():
        try:
            for item in chunks:
                if not put((True, item)):
                    return
            put((True, done))
        except BaseException as exc:  # handed to the consumer
            put((False, exc))

    thread = threading.Thread(target=produce, name="fasta-decompress", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _text_chunks(path: Path, fmt: str, size: int, progress: "_Progress") -> Iterator[bytes]:
    chunks = _plain_chunks(path, size, progress) if fmt == "plain" else _gzip_chunks(path, size, progress)
    return _skip_bom(path, chunks)


_UTF8_BOM = b"\xef\xbb\xbf"


def _skip_bom(path: Path, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Drop a UTF-8 byte-order mark (Windows editors write one); refuse UTF-16 text."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= len(_UTF8_BOM):
            break
    if head.startswith(_UTF8_BOM):
        head = head[len(_UTF8_BOM):]
    elif head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise InputFileError(f"{path}: is UTF-16 text; save it as plain text (ASCII or UTF-8), "
                             "e.g. `iconv -f UTF-16 -t ASCII in.fa > out.fa`")
    if head:
        yield head
    yield from chunks


# -------------------------------------------------------------------------- parsing


def _not_fasta(path: Path, data: bytes, k: int) -> InputFileError:
    ch = data[k : k + 1]
    hint = " (this looks like FASTQ; convert it with `seqkit fq2fa`)" if ch == b"@" else ""
    shown = repr(ch.decode("latin-1"))
    return InputFileError(f"{path}: not a FASTA file: first character is {shown}, expected '>'{hint}")


def _cr_only(path: Path) -> InputFileError:
    return InputFileError(
        f"{path}: has old Mac (CR-only) line endings; convert them to LF, e.g. `tr '\\r' '\\n' < in.fa > out.fa`"
    )


def _parse(path: Path, chunks: Iterator[bytes]) -> Iterator[tuple[int, object]]:
    """Split text chunks into ``(_HEADER, name)`` and ``(_SEQ, raw_bytes)`` events.

    Sequence bytes still contain line breaks. A ``>`` that is not at the start
    of a line is passed on inside the sequence so the tokenizer reports it
    with its position.
    """
    pending = b""
    started = False
    prev_last = 10  # the byte before the current chunk; "\n" at file start
    for chunk in chunks:
        data = pending + chunk if pending else chunk
        pending = b""
        pos, n = 0, len(data)
        first = -1  # where the first header starts: whitespace before it, even on its line, is skipped
        if not started:
            stripped = data.lstrip()
            if not stripped:
                continue
            pos = first = n - len(stripped)
            if data[pos] != 0x3E:
                raise _not_fasta(path, data, pos)
            started = True
        while pos < n:
            i = data.find(b">", pos)
            if i < 0:
                yield _SEQ, data[pos:] if pos else data
                break
            if i != first and (data[i - 1] if i > 0 else prev_last) != 10:
                yield _SEQ, data[pos : i + 1]  # '>' inside a line: invalid base
                pos = i + 1
                continue
            if i > pos:
                yield _SEQ, data[pos:i]
            j = data.find(b"\n", i)
            if j < 0:
                pending = data[i:]
                if b"\r" in pending.rstrip(b"\r"):
                    raise _cr_only(path)
                if len(pending) > _MAX_HEADER:
                    raise InputFileError(f"{path}: header line longer than 1 MB; is this really FASTA?")
                break
            line = data[i + 1 : j]
            if b"\r" in line[:-1]:
                raise _cr_only(path)
            yield _HEADER, _record_name(path, line)
            pos = j + 1
        if pending:
            prev_last = 10  # pending starts with a '>' already known to open a line
        elif n:
            prev_last = data[-1]
    if pending:  # last line is a header without a newline
        yield _HEADER, _record_name(path, pending[1:])
    if not started:
        raise InputFileError(f"{path}: contains no FASTA records (only blank lines)")


def _record_name(path: Path, line: bytes) -> str:
    words = line.split(None, 1)
    if not words:
        return ""
    try:
        return words[0].decode("utf-8")
    except UnicodeDecodeError:
        shown = words[0][:60].decode("utf-8", "backslashreplace")
        raise InputFileError(
            f"{path}: record name '{shown}' is not UTF-8 text (Latin-1 or binary bytes?); "
            "rename the record with ASCII characters"
        ) from None


class _RecordChecker:
    """Shared record-level validation: empty names, duplicates, empty sequences."""

    def __init__(self, path: Path):
        self.path = path
        self.seen: set[str] = set()
        self.name: str | None = None
        self.length = 0
        self.count = 0

    def start(self, name: str) -> None:
        self.finish()
        if not name:
            raise InputFileError(
                f"{self.path}: record {self.count + 1} has an empty name ('>' with nothing after it); "
                "give every record a name"
            )
        if name in self.seen:
            raise InputFileError(
                f"{self.path}: duplicate record name '{name}'; record names must be unique "
                "(rename one, e.g. with `seqkit rename`)"
            )
        self.seen.add(name)
        self.name, self.length = name, 0
        self.count += 1

    def finish(self) -> None:
        if self.name is not None and self.length == 0:
            raise InputFileError(
                f"{self.path}: record '{self.name}' has a header but no sequence; remove it or add its sequence"
            )


def iter_fasta_records(path: str | os.PathLike) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, sequence)`` for each record of a small FASTA file.

    Reads plain, gzip and BGZF files; ``sequence`` is the raw bytes with line
    breaks (LF or CRLF) removed, not yet validated base by base (pass it to
    :func:`~mamba_genome.data.tokenizer.encode` with ``name=``).

    Raises:
        InputFileError: missing/empty/unreadable file, not FASTA, a header with
            no sequence, duplicate names, a truncated gzip stream.

    Example:
        >>> for name, seq in iter_fasta_records("reads.fa"):  # doctest: +SKIP
        ...     tokens = encode(seq, name=name)
    """
    p = check_readable(path)
    fmt = detect_format(p)
    check = _RecordChecker(p)
    parts: list[bytes] = []
    for kind, val in _parse(p, _text_chunks(p, fmt, DEFAULT_BLOCK_SIZE, _Progress())):
        if kind == _HEADER:
            if check.name is not None:
                check.finish()
                yield check.name, b"".join(parts)
            check.start(val)
            parts = []
        else:
            seg = val.translate(None, b"\r\n")
            check.length += len(seg)
            parts.append(seg)
    if check.name is not None:
        check.finish()
        yield check.name, b"".join(parts)


# ------------------------------------------------------------------ token streaming


@dataclass
class TokenBlock:
    """A run of token ids from one contig, as yielded by :func:`stream_fasta_tokens`.

    A new contig starts at the block with ``start == 0``; blocks of one contig
    arrive in order and contiguously.
    """

    name: str  # contig (record) name
    start: int  # 0-based position of tokens[0] within the contig
    tokens: np.ndarray  # uint8 [n] token ids (may be a read-only view)
    n_iupac: int  # IUPAC codes in this block (already turned into N)
    n_count: int  # N tokens in this block (including the IUPAC codes)


class _Progress:
    """Counters the readers update as they go (read by the store for its bar)."""

    def __init__(self, hasher=None):
        self.input_pos = 0  # bytes of the input file consumed so far
        self.text_bytes = 0  # bytes of (decompressed) FASTA text seen so far
        self.hasher = hasher


class FastaTokenStream:
    """Iterator of :class:`TokenBlock`; see :func:`stream_fasta_tokens`.

    Attributes, filled in while iterating: ``format``, ``input_size`` (bytes
    on disk), ``input_pos`` (bytes consumed), ``text_bytes`` (decompressed
    FASTA bytes), ``n_iupac``, and ``sha256`` (hex digest of the file, once
    exhausted, if ``hash=True``).
    """

    def __init__(self, path, block_size: int = DEFAULT_BLOCK_SIZE, *, hash: bool = False, prefetch: bool = True):
        self.path = check_readable(path)
        self.prefetch = prefetch
        self.format = detect_format(self.path)
        self.input_size = self.path.stat().st_size
        self.block_size = max(1, int(block_size))
        self.n_iupac = 0
        self.sha256: str | None = None
        self._hasher = hashlib.sha256() if hash else None
        self._progress = _Progress(self._hasher)
        self._gen = self._stream()

    @property
    def input_pos(self) -> int:
        return self._progress.input_pos

    @property
    def text_bytes(self) -> int:
        return self._progress.text_bytes

    def __iter__(self):
        return self

    def __next__(self) -> TokenBlock:
        block = next(self._gen)
        self.n_iupac += block.n_iupac
        return block

    # One sequential pass for every format: ingest touches every byte once, so an
    # index buys nothing (building pyfaidx's BGZF index line by line was ~10x slower),
    # and the same parser means the same rules for .fa and .fa.gz.
    def _stream(self) -> Iterator[TokenBlock]:
        path = self.path
        check = _RecordChecker(path)
        chunks = _text_chunks(path, self.format, self.block_size, self._progress)
        if self.prefetch and self.format != "plain":
            chunks = _prefetch(chunks)
        for kind, val in _parse(path, chunks):
            if kind == _HEADER:
                check.start(val)
                continue
            tokens = val.translate(IUPAC_MARK_TABLE, b"\r\n")
            if not tokens:
                continue
            if INVALID in tokens:
                # Re-run the slow path on this block only, for the exact message.
                _encode_or_explain(path, val.translate(None, b"\r\n"), check.name, check.length)
            n_iupac = tokens.count(_IUPAC_MARK)
            if n_iupac:
                tokens = tokens.replace(bytes([_IUPAC_MARK]), bytes([N]))
            yield TokenBlock(check.name, check.length, np.frombuffer(tokens, dtype=np.uint8), n_iupac, tokens.count(N))
            check.length += len(tokens)
        check.finish()
        if self._hasher is not None:
            self.sha256 = self._hasher.hexdigest()


def _encode_or_explain(path: Path, seq, name: str, offset: int):
    try:
        return encode_with_stats(seq, name=name, offset=offset)
    except InputFileError as exc:
        raise InputFileError(f"{path}: {exc}") from exc


def stream_fasta_tokens(
    path: str | os.PathLike, block_size: int = DEFAULT_BLOCK_SIZE, *, hash: bool = False, prefetch: bool = True
) -> FastaTokenStream:
    """Stream a whole genome as per-contig blocks of token ids, in constant memory.

    Args:
        path: plain, gzip or BGZF FASTA.
        block_size: about how many bases (bytes of text) per block.
        hash: also compute the file's sha256 (see ``FastaTokenStream.sha256``).
        prefetch: decompress gzip in a background thread (uses a second core).

    Returns:
        An iterator of :class:`TokenBlock` ``(name, start, tokens uint8 [n], n_iupac)``
        with progress counters as attributes (see :class:`FastaTokenStream`).

    Raises:
        InputFileError: for every fatal problem listed in the module docstring.

    Example:
        >>> for block in stream_fasta_tokens("hg38.fa.gz"):  # doctest: +SKIP
        ...     out[block.name].write(block.tokens)
    """
    return FastaTokenStream(path, block_size, hash=hash, prefetch=prefetch)


# ------------------------------------------------------------------------- pyfaidx


def _check_starts_like_fasta(path: Path, fmt: str) -> None:
    """Give our own 'not FASTA' / 'truncated' message before pyfaidx gives its own."""
    for chunk in _text_chunks(path, fmt, 1 << 16, _Progress()):
        stripped = chunk.lstrip()
        if stripped:
            if stripped[0] != 0x3E:
                raise _not_fasta(path, stripped, 0)
            return
    raise InputFileError(f"{path}: contains no FASTA records (only blank lines)")


def index_paths(path: str | os.PathLike, fmt: str) -> tuple[Path, Path | None]:
    """Where the ``.fai`` (and for BGZF the ``.gzi``) index of ``path`` lives.

    Beside the FASTA when that directory is writable, or when a valid index
    already sits there (:func:`fai_problem`); otherwise in
    ``cache_dir("index")``, named by :func:`content_fingerprint`, so copies of
    one file share an index and a changed file gets its own.
    """
    p = Path(path).resolve()
    fai, gzi = Path(f"{p}.fai"), (Path(f"{p}.gzi") if fmt == "bgzf" else None)
    if dir_writable(p.parent):
        return fai, gzi
    if fai.exists() and (gzi is None or gzi.exists()) and fai_problem(p, fai, fmt, gzi) is None:
        return fai, gzi
    cdir = cache_dir("index")
    try:
        cdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputFileError(
            f"{p.parent} is read-only and the index cache {cdir} cannot be created ({exc.strerror}); "
            "set MAMBA_GENOME_CACHE to a writable directory"
        ) from exc
    stem = f"{content_fingerprint(p)}-{p.name}"
    return cdir / f"{stem}.fai", (cdir / f"{stem}.gzi" if gzi else None)


def _newer_than(index: Path, fasta: os.stat_result) -> bool:
    """Whether ``index`` was written after the FASTA's last change.

    The FASTA's ctime counts too: a user can set mtime back (``touch -d``,
    ``cp -p``, ``rsync -a``) but not ctime, so an edit is never hidden.
    """
    return index.stat().st_mtime_ns >= max(fasta.st_mtime_ns, fasta.st_ctime_ns)


def _read_fai(fai: Path) -> list[tuple[str, int, int, int, int]]:
    rows = []
    for line in fai.read_bytes().decode("utf-8").split("\n"):
        if not line:
            continue
        fields = line.rstrip("\r").split("\t")
        if len(fields) != 5:
            raise ValueError(f"{len(fields)} columns")
        name, *nums = fields
        length, offset, lb, lw = (int(x) for x in nums)
        if not name or min(length, offset, lb, lw) < 0 or (length and not 0 < lb < lw <= lb + 2):
            raise ValueError(f"bad row for '{name}'")
        rows.append((name, length, offset, lb, lw))
    return rows


def fai_problem(path: str | os.PathLike, fai: str | os.PathLike, fmt: str = "plain",
                gzi: str | os.PathLike | None = None) -> str | None:
    """Why the ``.fai`` ``fai`` does not describe ``path`` (None if it does).

    Cheap checks, a few hundred bytes read per record whatever the file size:
    the index is newer than the FASTA's last change (mtime and ctime); every
    row parses; and, for plain FASTA, each record's header starts where the
    previous record ends (after blank lines), carries the indexed name and ends
    at the indexed offset, the first sequence line has the indexed width, and only blank
    lines follow the last record. Interior line widths are not re-read (that
    is a full pass; pyfaidx does it when it builds the index). For BGZF only
    the times and the rows are checked (the offsets are into decompressed text).
    """
    p, fai = Path(path), Path(fai)
    st = p.stat()
    if not _newer_than(fai, st) or (gzi is not None and not (Path(gzi).exists() and _newer_than(Path(gzi), st))):
        return "it is older than the FASTA"
    try:
        rows = _read_fai(fai)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"it is not a valid .fai ({exc})"
    if not rows:
        return "it is empty"
    if fmt != "plain":
        return None
    size = st.st_size
    with open(p, "rb") as fh:
        head = fh.read(1 << 16)
        body = head[len(_UTF8_BOM):] if head.startswith(_UTF8_BOM) else head
        pos = len(head) - len(body.lstrip())  # the first '>'
        for name, length, offset, lb, lw in rows:
            if not pos < offset <= size or offset - pos > _MAX_HEADER:
                return f"record '{name}' is not where the index says"
            fh.seek(pos)
            text = fh.read(offset - pos + (lw if length > lb else 0))
            header = text[: offset - pos].lstrip()  # blank lines may end the previous record
            if not header.startswith(b">") or not header.endswith(b"\n") or b"\n" in header[:-1]:
                return f"record '{name}' does not start where the index says"
            words = header[1:].split(None, 1)
            if not words or words[0].decode("utf-8", "replace") != name:
                return f"the header before byte {offset:,} is not '{name}'"
            if length > lb and text[offset - pos + lb :] != (b"\n" if lw - lb == 1 else b"\r\n"):
                return f"record '{name}' does not have lines of {lb} bases"
            full, rest = divmod(length, lb) if length else (0, 0)
            pos = offset + full * lw + (rest + lw - lb if rest else 0)
            if pos > size + (lw - lb):
                return f"record '{name}' runs past the end of the file"
        fh.seek(min(pos, size))
        tail = fh.read(1 << 16)
    if tail.strip() or pos + len(tail) < size:
        return "the file has more records than the index"
    return None


def open_faidx(path: str | os.PathLike, fmt: str | None = None):
    """Open ``path`` for random access with ``pyfaidx.Faidx`` (raw strings, strict bounds).

    Plain or BGZF only, with one line width per record (what a ``.fai`` can
    describe). Indexes are placed by :func:`index_paths`; an existing
    ``.fai`` is checked by :func:`fai_problem` and rebuilt if it is stale or
    belongs to another file; an index that fails to build is not left behind.
    pyfaidx's errors become one-line ``InputFileError``s.
    """
    import pyfaidx

    p = check_readable(path)
    fmt = fmt or detect_format(p)
    if fmt == "gzip":
        raise InputFileError(
            f"{p}: is plain gzip, which cannot be randomly accessed; ingest it with "
            "`mamba-genome ingest`, or recompress with `bgzip`"
        )
    if fmt == "plain" and p.name.lower().endswith(_GZ_NAMES):
        raise InputFileError(
            f"{p}: is plain text although its name ends in {p.suffix}; rename it without {p.suffix} "
            "(or compress it with `bgzip`) for indexed access"
        )
    _check_starts_like_fasta(p, fmt)
    fai, gzi = index_paths(p, fmt)
    if fai.exists() and fai_problem(p, fai, fmt, gzi) is not None:
        for f in (fai, gzi):  # stale or foreign: rebuild (index_paths only picks writable places for these)
            if f is not None:
                f.unlink(missing_ok=True)
    created = [f for f in (fai, gzi) if f is not None and not f.exists()]
    fix = f"reformat it with `seqkit seq -w 60 {p.name} > fixed.fa` (or `samtools faidx` to see the problem)"
    try:
        return pyfaidx.Faidx(
            str(p), indexname=str(fai), gzi_indexname=str(gzi) if gzi else None,
            as_raw=True, strict_bounds=True, rebuild=True,
        )
    except BaseException as exc:
        for f in created:
            f.unlink(missing_ok=True)
        raise _faidx_error(p, exc, fix) from exc


def _faidx_error(p: Path, exc: BaseException, fix: str) -> BaseException:
    """pyfaidx's exception as one-line ``InputFileError`` (others pass through)."""
    import pyfaidx

    msg = " ".join(str(exc).split())
    if isinstance(exc, pyfaidx.FastaIndexingError):
        if "not consistent" in msg:
            where = msg.split("Inconsistent line found in", 1)[-1].strip().rstrip(".")
            return InputFileError(f"{p}: line lengths differ within a record ({where}), which an index "
                                  f"cannot describe; {fix}")
        if "Bad sequence name" in msg:
            return InputFileError(f"{p}: a record has an empty name ('>' alone); give every record a name")
        return InputFileError(f"{p}: cannot be indexed ({msg}); {fix}")
    if isinstance(exc, UnicodeDecodeError):
        return InputFileError(f"{p}: contains non-text bytes; is this really FASTA?")
    if isinstance(exc, ValueError) and "Duplicate key" in msg:
        name = msg.split('"')[1] if '"' in msg else "?"
        return InputFileError(f"{p}: duplicate record name '{name}'; record names must be unique "
                              "(rename one, e.g. with `seqkit rename`)")
    if isinstance(exc, EOFError):
        return InputFileError(f"{p}: file is truncated (BGZF stream ended early): re-download it")
    if isinstance(exc, (pyfaidx.UnsupportedCompressionFormat, OSError, ValueError)):
        return InputFileError(f"{p}: cannot be indexed ({msg}); {fix}")
    return exc


__all__ = [
    "detect_format", "iter_fasta_records", "stream_fasta_tokens", "FastaTokenStream", "TokenBlock",
    "open_faidx", "index_paths", "fai_problem", "cache_dir", "dir_writable", "check_readable",
    "content_fingerprint", "DEFAULT_BLOCK_SIZE",
]
