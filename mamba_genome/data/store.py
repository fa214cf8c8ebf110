"""Token stores: a genome ingested once into memory-mappable token files.

Owns :func:`ingest` (FASTA -> store), :class:`TokenStore` (read access) and
:func:`open_or_ingest`. A store is a directory::

    Umaydis.mgstore/
      manifest.json             written last: its presence means "complete"
      00000_chr1.bin            one uint8 token file per contig (tokenizer ids)
      00001_chr2.bin            ...

``manifest.json`` holds ``format_version``, ``tokenizer_version``, ``vocab``,
``source`` {path, size, mtime, sha256, format}, ``contigs`` [{name, length,
n_count, iupac_count, file, all_n}], ``total_length`` and ``created``.

Whether a store is up to date is decided by content: a store is reused when
its manifest's sha256 is the FASTA's. Hashing is skipped when the file's
identity and times are the ones recorded (``source.seen``: path, size,
device, inode, mtime and ctime; ctime cannot be set back by ``touch`` or
``cp -p``, so a same-size edit with its mtime restored is still seen). When
they differ (a touched file, a copy, a second install) the file is hashed
once and, if it matches, its identity is added to the manifest. That costs
one read of the file: sha256 ran at 0.2-1.3 GB/s on our shared 2-core dev
machine (Dec 2026), i.e. 2.5-15 s for a 3 GB FASTA, plus the disk read. A file
changed less than 2 s before it was hashed is not remembered by its times
(coarse file-system clocks could hide a later edit in the same tick).

Stores in the cache (:func:`cached_store_path`) are named by a content
fingerprint, not by the FASTA's path, so two installs of the package (two
venvs, an upgrade) share the bundled genome's store instead of fighting over it.

Only what ingest wrote is ever deleted: ``--force`` (or a rebuild) replaces a
directory only if it holds a manifest of ours and nothing but our files.
Builds go to ``<out>.tmp-<pid>`` and are moved into place with
``os.replace``, so an interrupted ingest never leaves a directory that looks
complete.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputFileError, RegionError, UserError
from .fasta import cache_dir, check_readable, content_fingerprint, dir_writable, stream_fasta_tokens
from .tokenizer import TOKENIZER_VERSION, VOCAB

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORE_SUFFIX = ".mgstore"
_FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas", ".seq")
_GZ_SUFFIXES = (".gz", ".bgz", ".bgzf")
# contig memmaps a TokenStore keeps open (the least recently used are dropped)
MAX_OPEN_CONTIGS = 256
# file identities (path, inode, times) remembered per store as "verified by sha256"
MAX_SEEN = 8
# a file changed less than this before it was hashed is not remembered: on a file system with
# coarse timestamps a later edit in the same tick would keep the same times (git's "racy clean")
_RACY_NS = 2_000_000_000
_TOKEN_FILE = re.compile(r"^\d{5}_[A-Za-z0-9._-]*\.bin$")


@dataclass(frozen=True)
class ContigInfo:
    """One contig of a store."""

    name: str
    length: int  # bases (= tokens)
    n_count: int  # N tokens, including IUPAC codes turned into N
    all_n: bool  # nothing but N: kept, but never sampled


@dataclass
class IngestStats:
    """What :func:`ingest` did; ``TokenStore.ingest_stats`` after an ingest."""

    reused: bool  # an up-to-date store already existed
    seconds: float
    input_bytes: int  # bytes on disk
    text_bytes: int  # decompressed FASTA bytes
    format: str  # plain | gzip | bgzf

    @property
    def mb_per_s(self) -> float:
        """Decompressed FASTA MB (1e6 bytes) per second."""
        return self.text_bytes / 1e6 / self.seconds if self.seconds > 0 else float("nan")


# ----------------------------------------------------------------------- reading


class TokenStore:
    """Read access to a store directory; token arrays are read-only memmaps.

    Example:
        >>> store = TokenStore.open("Umaydis.mgstore")  # doctest: +SKIP
        >>> store.fetch("chr1", 1000, 1010)             # doctest: +SKIP
        array([5, 6, 7, ...], dtype=uint8)
    """

    def __init__(self, path: str | os.PathLike, manifest: dict):
        self._path = Path(path)
        self._manifest = manifest
        self._by_name = {c["name"]: c for c in manifest["contigs"]}
        # most recently used contig memmaps; each holds an open file descriptor, so a store of
        # thousands of small contigs (reads, a fragmented assembly) must not keep them all
        self._maps: OrderedDict[str, np.memmap] = OrderedDict()
        self.ingest_stats: IngestStats | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "TokenStore":
        """Open a store directory, checking it is complete and matches this tokenizer."""
        p = Path(path)
        if not p.is_dir():
            raise InputFileError(f"{p}: not a token store (no such directory); create one with `mamba-genome ingest REF.fa`")
        mpath = p / MANIFEST
        if not mpath.is_file():
            raise InputFileError(
                f"{p}: not a token store (no {MANIFEST}; an interrupted ingest?); "
                "re-run `mamba-genome ingest` on the FASTA"
            )
        try:
            manifest = json.loads(mpath.read_text())
            contigs = manifest["contigs"]
            fmt, tok = manifest["format_version"], manifest["tokenizer_version"]
            if not isinstance(contigs, list):
                raise TypeError("'contigs' is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            raise InputFileError(f"{mpath}: unreadable store manifest ({exc}); re-run `mamba-genome ingest --force`") from exc
        if fmt != FORMAT_VERSION:
            raise InputFileError(f"{p}: store format {fmt}, this version reads {FORMAT_VERSION}; re-run `mamba-genome ingest --force`")
        if tok != TOKENIZER_VERSION or manifest.get("vocab") != VOCAB:
            raise InputFileError(
                f"{p}: made with tokenizer version {tok}, this version uses {TOKENIZER_VERSION}; "
                "re-run `mamba-genome ingest --force`"
            )
        for c in contigs:
            try:
                f = p / c["file"]
                ok = (isinstance(c["name"], str) and bool(_TOKEN_FILE.match(c["file"])) and f.is_file()
                      and f.stat().st_size == c["length"])
            except (KeyError, TypeError) as exc:
                raise InputFileError(f"{mpath}: unreadable store manifest (bad contig entry: {exc}); "
                                     "re-run `mamba-genome ingest --force`") from exc
            if not ok:
                raise InputFileError(
                    f"{p}: token file {c['file']} for contig '{c['name']}' is missing or the wrong size; "
                    "re-run `mamba-genome ingest --force`"
                )
        return cls(p, manifest)

    # Memmaps are not pickled: a DataLoader worker reopens them lazily.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_maps"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        return f"TokenStore({str(self._path)!r}, contigs={len(self._by_name)}, total_length={self.total_length:,})"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def manifest(self) -> dict:
        return self._manifest

    @property
    def contigs(self) -> list[ContigInfo]:
        return [ContigInfo(c["name"], c["length"], c["n_count"], c["all_n"]) for c in self._manifest["contigs"]]

    @property
    def names(self) -> list[str]:
        return [c["name"] for c in self._manifest["contigs"]]

    @property
    def lengths(self) -> dict[str, int]:
        return {c["name"]: c["length"] for c in self._manifest["contigs"]}

    @property
    def total_length(self) -> int:
        return int(self._manifest["total_length"])

    def _contig(self, name: str) -> dict:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self.names[:5]) + (", ..." if len(self._by_name) > 5 else "")
            raise RegionError(f"unknown contig '{name}' in {self._path}; known contigs: {known}") from None

    def tokens(self, name: str) -> np.memmap:
        """All tokens of contig ``name``: a read-only ``uint8`` memmap, shape ``[length]``."""
        mm = self._maps.get(name)
        if mm is None:
            c = self._contig(name)
            mm = np.memmap(self._path / c["file"], dtype=np.uint8, mode="r", shape=(c["length"],))
            self._maps[name] = mm
            if len(self._maps) > MAX_OPEN_CONTIGS:
                self._maps.popitem(last=False)  # closed once no caller holds it
        else:
            self._maps.move_to_end(name)
        return mm

    def fetch(self, name: str, start: int, end: int) -> np.ndarray:
        """Tokens of ``name[start:end]`` (0-based, half-open), a new ``uint8`` array."""
        length = self._contig(name)["length"]
        if not (0 <= start < end <= length):
            raise RegionError(
                f"region {name}:{start}-{end} is empty or outside the contig (length {length:,}); "
                "coordinates are 0-based, half-open"
            )
        return np.array(self.tokens(name)[start:end])


# ----------------------------------------------------------------------- writing


def _stem(ref: Path) -> str:
    stem = ref.name
    for suffixes in (_GZ_SUFFIXES, _FASTA_SUFFIXES):
        for sfx in suffixes:
            if stem.lower().endswith(sfx) and len(stem) > len(sfx):
                stem = stem[: -len(sfx)]
                break
    return stem


def cached_store_path(ref: str | os.PathLike) -> Path:
    """``$MAMBA_GENOME_CACHE/stores/<stem>-<content fingerprint>.mgstore`` for ``ref``.

    Keyed by content (:func:`~mamba_genome.data.fasta.content_fingerprint`),
    not by path: every copy of one file (another install's bundled genome)
    maps to one store, and a changed file to a new one.
    """
    p = Path(ref).resolve()
    return cache_dir("stores") / f"{_stem(p)}-{content_fingerprint(p)}{STORE_SUFFIX}"


def default_store_path(ref: str | os.PathLike) -> Path:
    """``<ref without .fa[.gz]>.mgstore`` beside ``ref``; :func:`cached_store_path` if that directory is read-only."""
    p = Path(ref).resolve()
    if dir_writable(p.parent):
        return p.parent / f"{_stem(p)}{STORE_SUFFIX}"
    return cached_store_path(p)


def _safe_file_name(i: int, name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "contig"
    return f"{i:05d}_{safe}.bin"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _identity(ref: Path, st: os.stat_result) -> dict | None:
    """What must be unchanged for a file's bytes to be unchanged (without reading them).

    None if the file changed too recently for its times to be trusted (see ``_RACY_NS``).
    """
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < _RACY_NS:
        return None
    return {"path": str(ref), "size": st.st_size, "dev": st.st_dev, "ino": st.st_ino,
            "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def _up_to_date(out: Path, ref: Path) -> TokenStore | None:
    """The existing store at ``out`` if it holds ``ref``'s current content (see the module docstring)."""
    try:
        store = TokenStore.open(out)
    except InputFileError:
        return None
    src = store.manifest.get("source")
    st = ref.stat()
    if not isinstance(src, dict) or src.get("size") != st.st_size or not isinstance(src.get("sha256"), str):
        return None
    seen = src.get("seen") if isinstance(src.get("seen"), list) else []
    ident = _identity(ref, st)
    if ident is not None and ident in seen:
        return store  # same file, not written since it was hashed
    if _sha256(ref) != src["sha256"]:
        return None
    if ident is not None:
        _remember(store, ident)
    return store


def _remember(store: TokenStore, ident: dict) -> None:
    """Add a file identity verified by sha256 to the manifest (best effort, atomic)."""
    m = store.manifest
    seen = [x for x in m["source"].get("seen") or [] if isinstance(x, dict) and x.get("path") != ident["path"]]
    m["source"]["seen"] = ([ident] + seen)[:MAX_SEEN]
    tmp = store.path / f".{MANIFEST}.tmp-{os.getpid()}"
    try:
        tmp.write_text(json.dumps(m, indent=1))
        os.replace(tmp, store.path / MANIFEST)
    except OSError:  # a read-only store still works; it is just hashed again next time
        tmp.unlink(missing_ok=True)


def _ours(out: Path) -> str | None:
    """Why ingest may not replace the existing directory ``out`` (None: it is a store of ours, or empty)."""
    entries = list(out.iterdir())
    if not entries:
        return None
    try:
        m = json.loads((out / MANIFEST).read_text())
        ok = isinstance(m, dict) and {"format_version", "tokenizer_version", "contigs"} <= set(m)
    except (OSError, ValueError):
        ok = False
    if not ok:
        return f"{out}: exists and is not a token store (no mamba-genome {MANIFEST})"
    foreign = sorted(e.name for e in entries if e.name != MANIFEST and not (_TOKEN_FILE.match(e.name) and e.is_file()))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        return f"{out}: is a token store but also holds files ingest did not write ({shown})"
    return None


def _remove_stale_tmp(out: Path) -> None:
    for tmp in out.parent.glob(f"{out.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(tmp, ignore_errors=True)  # left by a crashed ingest
        except PermissionError:
            pass


def ingest(ref: str | os.PathLike, out: str | os.PathLike | None = None, *, force: bool = False, progress: bool = True) -> TokenStore:
    """Tokenize a FASTA (plain, gzip or BGZF) into a store; reuse it if up to date.

    Args:
        ref: reference FASTA, e.g. ``hg38.fa.gz``.
        out: store directory; default :func:`default_store_path`.
        force: rebuild even if an up-to-date store exists, or overwrite a
            store that was built from a different FASTA.
        progress: show a tqdm bar (MB of input) on stderr.

    Returns:
        The opened :class:`TokenStore`; ``store.ingest_stats`` says whether it
        was reused, how long it took and the throughput.

    Raises:
        InputFileError: bad FASTA (see :mod:`mamba_genome.data.fasta`), or
            ``out`` exists and is something else.
    """
    t0 = time.perf_counter()
    ref = check_readable(ref).resolve()
    out = Path(out).resolve() if out is not None else default_store_path(ref)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # reported below, with the store's path
    with _dir_lock(out.parent):  # two commands ingesting the same FASTA at once: the second reuses the first's
        return _ingest_locked(ref, out, force, progress, t0)


@contextlib.contextmanager
def _dir_lock(directory: Path):
    """Exclusive advisory lock (flock) on ``directory`` while a store in it is checked and built; a
    no-op where the directory does not exist yet or the platform has no flock."""
    fd = None
    try:
        import fcntl

        fd = os.open(directory, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except (ImportError, OSError):
        if fd is not None:
            os.close(fd)
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the lock


def _ingest_locked(ref: Path, out: Path, force: bool, progress: bool, t0: float) -> TokenStore:
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{out}: exists and is not a store directory; choose another -o/--out")
        if not force:
            store = _up_to_date(out, ref)
            if store is not None:
                store.ingest_stats = IngestStats(True, time.perf_counter() - t0, ref.stat().st_size, 0, store.manifest["source"].get("format", "?"))
                return store
        why = _ours(out)
        if why is not None:
            raise UserError(f"{why}; it is left untouched, even with --force: choose another -o/--out, "
                            "or move its contents away")
        if not force and (out / MANIFEST).is_file() and out.parent != cache_dir("stores").resolve():
            old_src = json.loads((out / MANIFEST).read_text()).get("source")
            old_src = old_src.get("path") if isinstance(old_src, dict) else None
            if old_src and old_src != str(ref):
                raise UserError(f"{out}: is a store built from {old_src}, not {ref}; use --force to overwrite it or choose another -o")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out.parent} ({exc.strerror}); choose another -o/--out") from exc
    _remove_stale_tmp(out)

    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as exc:
        raise UserError(f"cannot write into {out.parent} ({exc.strerror}); choose another -o/--out") from exc
    st0 = ref.stat()
    try:
        stream = stream_fasta_tokens(ref, hash=True)
        contigs = _write_contigs(stream, tmp, progress)
        st = ref.stat()
        manifest = {
            "format_version": FORMAT_VERSION,
            "tokenizer_version": TOKENIZER_VERSION,
            "vocab": VOCAB,
            "source": {
                "path": str(ref), "size": st.st_size, "mtime": st.st_mtime, "mtime_ns": st.st_mtime_ns,
                "sha256": stream.sha256, "format": stream.format,
                # the file as it was hashed; if it changed while we read it, this will not match it
                "seen": [x for x in [_identity(ref, st0)] if x is not None],
            },
            "contigs": contigs,
            "total_length": sum(c["length"] for c in contigs),
            "n_count": sum(c["n_count"] for c in contigs),
            "iupac_count": sum(c["iupac_count"] for c in contigs),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        with open(tmp / MANIFEST, "w") as fh:  # last: marks the build complete
            json.dump(manifest, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    store = TokenStore.open(out)
    store.ingest_stats = IngestStats(False, time.perf_counter() - t0, stream.input_size, stream.text_bytes, stream.format)
    return store


def _write_contigs(stream, tmp: Path, progress: bool) -> list[dict]:
    from ..progress import progress_bar

    contigs: list[dict] = []
    fh = None
    bar = progress_bar(
        total=stream.input_size, unit="B", unit_scale=True, desc=f"ingest {stream.path.name}",
        disable=None if progress else True, file=sys.stderr, leave=False, dynamic_ncols=True,
    )
    try:
        for block in stream:
            if block.start == 0:
                if fh is not None:
                    fh.close()
                c = {"name": block.name, "length": 0, "n_count": 0, "iupac_count": 0,
                     "file": _safe_file_name(len(contigs), block.name), "all_n": False}
                contigs.append(c)
                fh = open(tmp / c["file"], "wb")
            fh.write(block.tokens)
            c["length"] += len(block.tokens)
            c["n_count"] += block.n_count
            c["iupac_count"] += block.n_iupac
            bar.update(stream.input_pos - bar.n)
    finally:
        if fh is not None:
            fh.close()
        bar.close()
    for c in contigs:
        c["all_n"] = c["n_count"] == c["length"]
    return contigs


def _move_into_place(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f"{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def is_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory that looks like a token store."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def open_or_ingest(path_or_store, progress: bool = True) -> TokenStore:
    """A :class:`TokenStore` from a store, a store directory, or a FASTA (ingested, cached)."""
    if isinstance(path_or_store, TokenStore):
        return path_or_store
    p = Path(path_or_store)
    if p.is_dir():
        return TokenStore.open(p)
    return ingest(p, progress=progress)


def summary_rows(store: TokenStore, max_contigs: int = 8) -> list[dict]:
    """Rows for the end-of-ingest table: the largest contigs, then a TOTAL row."""
    m = store.manifest
    contigs = sorted(m["contigs"], key=lambda c: -c["length"])
    rows = [
        {"contig": c["name"] + (" (all N)" if c["all_n"] else ""), "bp": f"{c['length']:,}",
         "N": f"{c['n_count']:,}", "IUPAC": f"{c['iupac_count']:,}"}
        for c in contigs[:max_contigs]
    ]
    if len(contigs) > max_contigs:
        rows.append({"contig": f"... {len(contigs) - max_contigs} more", "bp": "", "N": "", "IUPAC": ""})
    rows.append({"contig": f"TOTAL ({len(contigs)} contigs)", "bp": f"{m['total_length']:,}",
                 "N": f"{m.get('n_count', 0):,}", "IUPAC": f"{m.get('iupac_count', 0):,}"})
    return rows


__all__ = [
    "TokenStore", "ContigInfo", "IngestStats", "ingest", "open_or_ingest", "default_store_path", "cached_store_path",
    "is_store", "summary_rows", "FORMAT_VERSION", "STORE_SUFFIX",
]
