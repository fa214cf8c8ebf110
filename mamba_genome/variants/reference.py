"""The reference genome for variant scoring: contig names, lengths and encoded contig tokens.

Owns how ``score --vcf --fasta REF`` reads the reference. A plain or BGZF FASTA is opened
with pyfaidx (``.fai``/``.gzi`` indexes placed by :func:`mamba_genome.data.fasta.index_paths`);
a plain-gzip FASTA (which cannot be randomly accessed) or a token store directory goes
through the token store (:func:`mamba_genome.data.store.open_or_ingest`, ingested once and
cached). Each contig a variant touches is encoded once, whole, to a ``uint8`` token array
(1 byte per base, 250 MB for human chr1) so that windows are cut from it by numpy fancy
indexing, never base by base; the few most recently used contigs are kept.

Contig naming: a VCF that says ``chr1`` against a reference that says ``1`` (or the
reverse) is the commonest reason nothing matches; :meth:`Reference.check_naming` turns that
case into one error line that says so.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import InputFileError, UserError

#: encoded contigs kept in memory at once (a sorted VCF needs one at a time)
MAX_CACHED_CONTIGS = 4


class Reference:
    """Random access to an encoded reference genome.

    Args:
        path: FASTA (plain, BGZF or plain gzip) or token store directory.
        progress: progress bar while a plain-gzip FASTA is ingested to a store.

    Attributes:
        lengths: ``{contig: length}`` in file order.
    """

    def __init__(self, path, progress: bool = False):
        from ..data.fasta import check_readable, detect_format, open_faidx
        from ..data.store import is_store, open_or_ingest

        p = Path(path)
        self.path = p
        self._faidx = None
        self._store = None
        if p.is_dir():
            if not is_store(p):
                raise InputFileError(f"--fasta {p} is a directory but not a token store")
            self._store = open_or_ingest(p, progress=progress)
        else:
            if not p.exists():
                raise InputFileError(f"--fasta {p}: no such file; check the path")
            check_readable(p)
            fmt = detect_format(p)
            if fmt == "gzip":
                self._store = open_or_ingest(p, progress=progress)
            else:
                self._faidx = open_faidx(p, fmt)
        if self._store is not None:
            self.lengths = dict(self._store.lengths)
        else:
            self.lengths = {name: int(rec.rlen) for name, rec in self._faidx.index.items()}
        if not self.lengths:
            raise InputFileError(f"{p}: no FASTA records")
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def __contains__(self, contig: str) -> bool:
        return contig in self.lengths

    def tokens(self, contig: str) -> np.ndarray:
        """The whole contig as ``uint8`` token ids, shape ``[length]`` (encoded once, cached)."""
        arr = self._cache.get(contig)
        if arr is not None:
            self._cache.move_to_end(contig)
            return arr
        if self._store is not None:
            arr = np.array(self._store.tokens(contig))
        else:
            from ..data.tokenizer import encode

            n = self.lengths[contig]
            seq = self._faidx.from_file(contig, 1, n) if n else ""
            arr = encode(str(seq), name=contig)
        self._cache[contig] = arr
        if len(self._cache) > MAX_CACHED_CONTIGS:
            self._cache.popitem(last=False)
        return arr

    def check_naming(self, contigs, source: str) -> None:
        """Raise one-line ``UserError`` when none of ``contigs`` is in the reference but they
        would be with a ``chr`` prefix added or removed (``chr1`` vs ``1``)."""
        contigs = [c for c in dict.fromkeys(contigs)]
        if not contigs or any(c in self.lengths for c in contigs):
            return
        fixed = [_flip_chr(c) for c in contigs]
        hits = [(c, f) for c, f in zip(contigs, fixed) if f in self.lengths]
        if hits:
            c, f = hits[0]
            raise UserError(
                f"{source} names contigs like '{c}' but the reference {self.path.name} names them like '{f}' "
                f"(chr prefix mismatch); rename the VCF contigs (e.g. `bcftools annotate --rename-chrs`) "
                "or use a reference with the same naming")


def _flip_chr(name: str) -> str:
    if name.lower().startswith("chr"):
        return name[3:]
    return "chr" + name


__all__ = ["Reference", "MAX_CACHED_CONTIGS"]
