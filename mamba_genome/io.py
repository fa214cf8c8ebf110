"""Embedding output files: HDF5, NumPy (.npy/.npz) and Parquet writers and readers.

Owns the on-disk layout of ``mamba-genome embed`` results. The format follows
the extension of ``-o``:

=========  ==========  =========  ===========================================
extension  pooled      per-base   layout
=========  ==========  =========  ===========================================
.h5/.hdf5  yes         yes        datasets ``embeddings``, ``ids``, ``contig``,
                                  ``start``, ``end``, ``length`` (+ ``offsets``
                                  for per-base); run settings in root attrs
.npz       yes         yes        the same arrays; settings as ``attrs_json``
.npy       yes         no         the (n, d) float32 matrix only
.parquet   yes         no         one row per record: id, contig, start, end,
                                  length, emb_0 .. emb_{d-1} (float32)
=========  ==========  =========  ===========================================

Per-base ("ragged") storage: ``embeddings`` is (total_rows, d) with the rows
of record i at ``embeddings[offsets[i]:offsets[i+1]]``; row k is position
``start + k * stride`` (attr ``stride``). HDF5 and .npz are written chunk by
chunk into preallocated storage (a memory-mapped .npy for .npz), so a whole
chromosome never sits in memory.

Writes follow :mod:`mamba_genome.outputs`: a regular file is built as a hidden
``.<name>.tmp-<pid>-<host><ext>`` beside it and moved into place with
``os.replace`` on success (removed on failure, Ctrl-C or SIGTERM; a later run
removes those of dead processes); a symlink's target is replaced and the link
kept; a FIFO or device gets the finished file's bytes. :func:`check_output`
fails fast (``UserError``) on a bad extension, an unwritable location or an
output that is one of the inputs, before any model work.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import InputFileError, UserError
from .outputs import OutputTarget, PendingOutput, check_output_path

POOLED_FORMATS = (".h5", ".hdf5", ".npz", ".npy", ".parquet")
PER_BASE_FORMATS = (".h5", ".hdf5", ".npz")


@dataclass(frozen=True)
class RecordInfo:
    """Where one embedded sequence came from: ``contig[start:end]`` (0-based, half-open)."""

    id: str
    contig: str
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class Embeddings:
    """An embedding file read back (see :func:`read_embeddings`).

    ``embeddings``: (n, d) float32 for pooled files; for per-base files a list
    of (rows_i, d) arrays. ``ids`` etc. are ``None`` for a bare ``.npy``.
    """

    embeddings: np.ndarray | list[np.ndarray]
    ids: list[str] | None = None
    contig: list[str] | None = None
    start: np.ndarray | None = None
    end: np.ndarray | None = None
    length: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)

    @property
    def per_base(self) -> bool:
        return isinstance(self.embeddings, list)


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def check_output(path: str | os.PathLike | OutputTarget, per_base: bool = False, inputs: Iterable = ()) -> OutputTarget:
    """Check that ``path`` has a supported extension and can be written; create its directory.

    ``inputs``: the files and folders the command reads (refused as outputs,
    see :func:`mamba_genome.outputs.check_output_path`).

    Raises:
        UserError: unknown extension, per-base output to .npy/.parquet, an
            unwritable / non-directory location, or an output that is an input.
    """
    if isinstance(path, OutputTarget):
        return path
    p = Path(path)
    ext = _suffix(p)
    if ext not in POOLED_FORMATS:
        raise UserError(f"-o/--out {p}: unknown output format '{ext or '(none)'}'; use .h5, .npz, .npy or .parquet")
    if per_base and ext not in PER_BASE_FORMATS:
        raise UserError(f"-o/--out {p}: per-base embeddings (--pool none) need .h5 or .npz output, not {ext}")
    return check_output_path(p, inputs, example="embeddings" + ext)


def _meta_arrays(records: Sequence[RecordInfo]) -> dict[str, np.ndarray]:
    return {
        "ids": np.array([r.id for r in records], dtype=object),
        "contig": np.array([r.contig for r in records], dtype=object),
        "start": np.array([r.start for r in records], dtype=np.int64),
        "end": np.array([r.end for r in records], dtype=np.int64),
        "length": np.array([r.length for r in records], dtype=np.int64),
    }


class EmbeddingWriter:
    """Writes one embedding file atomically; use as a context manager.

    Pooled: call :meth:`set_pooled` once. Per-base: it is a
    :class:`~mamba_genome.api.PerBaseSink` (:meth:`write` chunk by chunk).
    Leaving the ``with`` block normally commits; an exception removes the
    temporary file and leaves any previous output untouched.
    """

    def __init__(self, path: str | os.PathLike, records: Sequence[RecordInfo], d_model: int, *,
                 per_base: bool = False, stride: int = 1, attrs: dict | None = None):
        self.target = check_output(path, per_base)
        self.path = self.target.path
        self.ext = _suffix(self.path)
        self.records = list(records)
        self.d = int(d_model)
        self.per_base = per_base
        self.stride = int(stride)
        self.attrs = {"d_model": self.d, "per_base": per_base, "stride": self.stride, **(attrs or {})}
        self._pending = PendingOutput(self.target, suffix=self.ext)
        self.tmp = self._pending.tmp
        self._pooled: np.ndarray | None = None
        self._h5 = None
        self._mm = None
        rows = [(r.length + self.stride - 1) // self.stride for r in self.records]
        self.offsets = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)]).astype(np.int64)
        if per_base:
            self._open_per_base()

    # ------------------------------------------------------------ lifecycle
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False

    def _open_per_base(self):
        total = int(self.offsets[-1])
        if self.ext in (".h5", ".hdf5"):
            import h5py

            self._h5 = h5py.File(self.tmp, "w")
            chunk_rows = max(1, min(total, (1 << 20) // max(1, self.d * 4)))
            self._emb = self._h5.create_dataset("embeddings", shape=(total, self.d), dtype="f4",
                                                chunks=(chunk_rows, self.d) if total else None)
        else:  # .npz: a memory-mapped .npy that is zipped on commit
            mm_path = self._pending.side_path("embeddings.npy")
            self._mm = np.lib.format.open_memmap(mm_path, mode="w+", dtype=np.float32, shape=(total, self.d))
            self._emb = self._mm

    def abort(self) -> None:
        if self._h5 is not None:
            try:
                self._h5.close()
            except Exception:
                pass
            self._h5 = None
        self._mm = None
        self._pending.abort()

    # ---------------------------------------------------------------- data
    def set_pooled(self, pooled: np.ndarray) -> None:
        pooled = np.asarray(pooled, dtype=np.float32)
        if pooled.shape != (len(self.records), self.d):
            raise ValueError(f"pooled must be ({len(self.records)}, {self.d}), got {pooled.shape}")
        self._pooled = pooled

    def write(self, index: int, row: int, values: np.ndarray, combine: str = "set") -> None:
        """Rows ``row..row+n-1`` of record ``index`` (per-base; see ``PerBaseSink``)."""
        a = int(self.offsets[index]) + row
        b = a + len(values)
        if b > self.offsets[index + 1]:
            raise ValueError(f"record {index}: rows {row}..{row + len(values)} past its end")
        if combine == "mean":
            values = (self._emb[a:b] + values) * 0.5
        self._emb[a:b] = values

    def commit(self) -> Path:
        try:
            meta = _meta_arrays(self.records)
            if self.ext in (".h5", ".hdf5"):
                self._commit_h5(meta)
            elif self.ext == ".npz":
                self._commit_npz(meta)
            elif self.ext == ".npy":
                np.save(self.tmp, self._need_pooled())
            else:
                self._commit_parquet(meta)
            self._mm = None
            self._pending.commit()  # also removes the side files (the .npz memmap)
        except BaseException:
            self.abort()
            raise
        return self.path

    def _need_pooled(self) -> np.ndarray:
        if self._pooled is None:
            raise RuntimeError("set_pooled() was not called")
        return self._pooled

    def _commit_h5(self, meta):
        import h5py

        f = self._h5 if self._h5 is not None else h5py.File(self.tmp, "w")
        if not self.per_base:
            f.create_dataset("embeddings", data=self._need_pooled())
        else:
            f.create_dataset("offsets", data=self.offsets)
        str_dt = h5py.string_dtype()
        for k in ("ids", "contig"):
            f.create_dataset(k, data=meta[k].astype(str).astype(object) if len(meta[k]) else np.array([], object),
                             dtype=str_dt)
        for k in ("start", "end", "length"):
            f.create_dataset(k, data=meta[k])
        for k, v in self.attrs.items():
            f.attrs[k] = "none" if v is None else v
        f.close()
        self._h5 = None

    def _commit_npz(self, meta):
        arrays = {k: (v.astype(str) if v.dtype == object else v) for k, v in meta.items()}
        arrays["attrs_json"] = np.array(json.dumps(self.attrs))
        if self.per_base:
            self._mm.flush()
            arrays["offsets"] = self.offsets
            arrays["embeddings"] = self._mm
        else:
            arrays["embeddings"] = self._need_pooled()
        with open(self.tmp, "wb") as fh:
            np.savez(fh, **arrays)
        self._mm = None

    def _commit_parquet(self, meta):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pooled = self._need_pooled()
        cols = {"id": pa.array(meta["ids"].astype(str).tolist(), pa.string()),
                "contig": pa.array(meta["contig"].astype(str).tolist(), pa.string()),
                "start": pa.array(meta["start"]), "end": pa.array(meta["end"]), "length": pa.array(meta["length"])}
        for j in range(self.d):
            cols[f"emb_{j}"] = pa.array(np.ascontiguousarray(pooled[:, j]))
        table = pa.table(cols).replace_schema_metadata({"mamba_genome": json.dumps(self.attrs)})
        pq.write_table(table, self.tmp)


def write_embeddings(path, records: Sequence[RecordInfo], embeddings, attrs: dict | None = None, stride: int = 1) -> Path:
    """Write pooled (n, d) or per-base (list of (rows_i, d)) embeddings in one call (small data, tests)."""
    per_base = isinstance(embeddings, list)
    d = (embeddings[0].shape[1] if embeddings else 0) if per_base else np.asarray(embeddings).shape[1]
    with EmbeddingWriter(path, records, d, per_base=per_base, stride=stride, attrs=attrs) as w:
        if per_base:
            for i, e in enumerate(embeddings):
                w.write(i, 0, np.asarray(e, dtype=np.float32))
        else:
            w.set_pooled(embeddings)
    return w.path


# ----------------------------------------------------------------------- reading


def read_embeddings(path: str | os.PathLike) -> Embeddings:
    """Read a file written by :class:`EmbeddingWriter` (any supported extension).

    Raises:
        InputFileError: missing file, unknown extension or not an embedding file.
    """
    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"{p}: no such embedding file")
    ext = _suffix(p)
    try:
        if ext in (".h5", ".hdf5"):
            return _read_h5(p)
        if ext == ".npz":
            return _read_npz(p)
        if ext == ".npy":
            return Embeddings(np.load(p, allow_pickle=False))
        if ext == ".parquet":
            return _read_parquet(p)
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputFileError(f"{p}: not a mamba-genome embedding file ({' '.join(str(exc).split())})") from None
    raise InputFileError(f"{p}: unknown embedding format '{ext}'; expected .h5, .npz, .npy or .parquet")


def _split(emb: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [emb[offsets[i]: offsets[i + 1]] for i in range(len(offsets) - 1)]


def _read_h5(p: Path) -> Embeddings:
    import h5py

    with h5py.File(p, "r") as f:
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        attrs = {k: (None if v == "none" else v) for k, v in attrs.items()}  # HDF5 has no null attribute
        emb = f["embeddings"][()]
        if "offsets" in f:
            emb = _split(emb, f["offsets"][()])
        return Embeddings(emb, [s.decode() if isinstance(s, bytes) else str(s) for s in f["ids"][()]],
                          [s.decode() if isinstance(s, bytes) else str(s) for s in f["contig"][()]],
                          f["start"][()], f["end"][()], f["length"][()], attrs)


def _read_npz(p: Path) -> Embeddings:
    with np.load(p, allow_pickle=False) as z:
        emb = z["embeddings"]
        if "offsets" in z.files:
            emb = _split(emb, z["offsets"])
        attrs = json.loads(str(z["attrs_json"])) if "attrs_json" in z.files else {}
        return Embeddings(emb, z["ids"].tolist(), z["contig"].tolist(), z["start"], z["end"], z["length"], attrs)


def _read_parquet(p: Path) -> Embeddings:
    import pyarrow.parquet as pq

    t = pq.read_table(p)
    names = [c for c in t.column_names if c.startswith("emb_")]
    names.sort(key=lambda c: int(c[4:]))
    emb = np.stack([t.column(c).to_numpy() for c in names], axis=1).astype(np.float32) if names else np.zeros((t.num_rows, 0), np.float32)
    md = t.schema.metadata or {}
    attrs = json.loads(md[b"mamba_genome"]) if b"mamba_genome" in md else {}
    return Embeddings(emb, t.column("id").to_pylist(), t.column("contig").to_pylist(), t.column("start").to_numpy(),
                      t.column("end").to_numpy(), t.column("length").to_numpy(), attrs)


__all__ = ["RecordInfo", "Embeddings", "EmbeddingWriter", "check_output", "write_embeddings", "read_embeddings",
           "POOLED_FORMATS", "PER_BASE_FORMATS"]
