"""``score`` workflow: per-base log-probability (and entropy) tracks and per-record totals.

Owns choosing what is scored (every record of a FASTA/store, or every BED region), running
it through :meth:`mamba_genome.api.GenomeModel.score` (log-probabilities) and, with
``entropy``, :meth:`~mamba_genome.api.GenomeModel.embed` per base into a sink that applies
the LM head (:func:`mamba_genome.model.likelihood.entropy`), and writing the tracks.

Definitions (the API's and :mod:`mamba_genome.model.likelihood`'s):

- ``logp[p] = log P(x_p | x_0..x_{p-1})`` in nats for ``p >= 1`` where ``x_p`` is A/C/G/T;
  position 0 and N (or other non-base) targets are not scored (NaN; no bedGraph line);
- ``entropy[p]``: entropy in nats of the model's predictive distribution for position ``p``
  (defined for ``p >= 1`` whatever base is there);
- ``rc_average``: the reverse complement is scored too and its track flipped back to forward
  coordinates (so the reverse strand predicts base ``p`` from the bases to its right); where
  both strands score a base the two values are averaged, at the record ends the one strand
  that scores it is used. The record total is then the mean of the two strands' totals;
- totals: ``log_likelihood`` (nats, summed over scored bases), ``nats_per_base``
  (= -log_likelihood / bases) and ``bits_per_base``: the quantity ``evaluate`` reports for a
  record scored as one window.

Outputs by the extension of ``out`` (coordinates are contig coordinates, BED-style 0-based):
``.bedgraph``/``.bg`` (UCSC/IGV track: ``contig start end logp``, one line per scored base;
with ``entropy`` a second file ``<name>.entropy.bedgraph``), ``.bw``/``.bigwig`` (the same
through pyBigWig; the entropy track as ``<name>.entropy.bw``), ``.tsv``/``.tsv.gz`` (``id
contig pos base logp [entropy]``) and ``.h5`` (datasets ``logp``, ``entropy``, ``offsets``,
``ids``, ``contig``, ``start``, ``end``; record i is ``logp[offsets[i]:offsets[i+1]]``).
Records are scored in groups of about ``GROUP_BASES`` bases so memory stays bounded.
"""
from __future__ import annotations

import gzip
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import UserError

LN2 = math.log(2.0)
#: bases scored per call of the API (records are grouped up to this many bases)
GROUP_BASES = 1 << 26
FORMATS = {".bedgraph": "bedgraph", ".bg": "bedgraph", ".bw": "bigwig", ".bigwig": "bigwig", ".tsv": "tsv",
           ".tsv.gz": "tsv", ".h5": "h5", ".hdf5": "h5"}
TOTAL_COLUMNS = ["id", "contig", "start", "end", "bases", "log_likelihood", "nats_per_base", "bits_per_base"]


@dataclass
class ScoreFileResult:
    """What :func:`score_file` did: per-record totals (rows of ``TOTAL_COLUMNS``) and outputs."""

    outputs: list[Path]
    totals: list[dict] = field(default_factory=list)
    bp: int = 0
    seconds: float = 0.0

    def totals_tsv(self) -> str:
        lines = ["\t".join(TOTAL_COLUMNS)]
        for t in self.totals:
            lines.append("\t".join(_cell(t[c]) for c in TOTAL_COLUMNS))
        return "\n".join(lines)

    def summary_rows(self) -> list[dict]:
        return [{"records": f"{len(self.totals):,}", "bp": f"{self.bp:,}", "seconds": f"{self.seconds:.2f}",
                 "bp/s": f"{self.bp / max(self.seconds, 1e-9):,.0f}", "output": ", ".join(map(str, self.outputs))}]


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.6f}"
    return str(v)


def output_format(out) -> tuple[Path, str]:
    """(path, format) from ``out``'s extension; ``UserError`` for an unknown one or a missing directory."""
    p = Path(out)
    name = p.name.lower()
    fmt = next((f for ext, f in sorted(FORMATS.items(), key=lambda kv: -len(kv[0])) if name.endswith(ext)), None)
    if fmt is None:
        raise UserError(f"-o {p}: unknown output type; use .bedgraph (.bg), .bw, .tsv, .tsv.gz or .h5")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UserError(f"-o {p}: directory {parent} does not exist or is not writable")
    return p, fmt


def _entropy_path(p: Path) -> Path:
    name = p.name
    for ext in sorted(FORMATS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return p.with_name(name[: len(name) - len(ext)] + ".entropy" + name[len(name) - len(ext):])
    return p.with_name(name + ".entropy")


class _EntropySink:
    """A :class:`~mamba_genome.api.PerBaseSink`: final hidden rows -> entropy of the next-base prediction.

    Hidden row ``r`` (forward coordinates of the sequence it was given) predicts position ``r + 1``."""

    def __init__(self, lm, lengths):
        import torch

        self.torch = torch
        self.lm = lm
        self.V = lm.config.vocab_size
        self.arrays = [np.full(n, np.nan, dtype=np.float32) for n in lengths]

    def write(self, index, row, values, combine="set"):
        from ..model.likelihood import entropy

        torch = self.torch
        head = self.lm.lm_head
        with torch.no_grad():
            h = torch.from_numpy(values).to(device=head.weight.device, dtype=head.weight.dtype)
            ent = entropy(head(h)[..., : self.V]).cpu().numpy()
        dst = self.arrays[index]
        n = min(len(ent), len(dst) - row - 1)
        if n > 0:
            dst[row + 1: row + 1 + n] = ent[:n]


def _records(input_fa, bed, progress):
    """(Reference, [(id, contig, start, end)])."""
    from ..data.bed import read_bed
    from ..variants.reference import Reference

    if bed is not None and not Path(bed).is_file():
        raise UserError(f"{bed}: no such BED file; check the --bed path")
    ref = Reference(input_fa, progress=progress)
    if bed is None:
        return ref, [(name, name, 0, n) for name, n in ref.lengths.items() if n > 0]
    regions = read_bed(bed, ref.lengths)
    seen: dict[str, int] = {}
    for r in regions:
        if r.id in seen:
            raise UserError(f"{bed}:{r.line}: region id '{r.id}' repeats line {seen[r.id]}; ids (the 4th column) "
                            "must be unique")
        seen[r.id] = r.line
    return ref, [(r.id, r.contig, r.start, r.end) for r in regions]


def _scored(tokens: np.ndarray) -> np.ndarray:
    from ..data.tokenizer import A, T

    return (tokens >= A) & (tokens <= T)


def score_tracks(model, seqs: list[np.ndarray], entropy: bool = False, rc_average: bool = False,
                 batch_size: int | None = None, chunk_size: int | None = None, precision: str = "auto",
                 progress: bool = False) -> tuple[list[np.ndarray], list[np.ndarray] | None, np.ndarray, np.ndarray]:
    """Per-base tracks of token arrays under a loaded :class:`~mamba_genome.api.GenomeModel`.

    Returns:
        (logp list of (L,) float32 with NaN where not scored, entropy list or None,
        log_likelihood (n,) float64 nats, bases (n,) int64 scored in the forward strand).
    """
    from ..data.tokenizer import COMPLEMENT

    kw = dict(batch_size=batch_size, chunk_size=chunk_size, precision=precision, progress=progress)
    strands = [seqs]
    if rc_average:
        strands.append([COMPLEMENT[np.asarray(s)][::-1].copy() for s in seqs])
    tracks, ents, lls = [], [], []
    for k, group in enumerate(strands):
        res = model.score(group, **kw)
        lp = []
        for toks, pb in zip(group, res.per_base):
            pb = pb.astype(np.float32, copy=True)
            pb[~_scored(np.asarray(toks))] = np.nan     # the one likelihood: only A/C/G/T targets
            pb[:1] = np.nan
            lp.append(pb)
        lls.append(np.array([np.nansum(p, dtype=np.float64) for p in lp]))
        if entropy:
            sink = _EntropySink(model.lm, [len(s) for s in group])
            model.embed(group, pool=None, sink=sink, **kw)
            ent = sink.arrays
        if k == 1:
            lp = [p[::-1].copy() for p in lp]
            if entropy:
                ent = [e[::-1].copy() for e in ent]
        tracks.append(lp)
        if entropy:
            ents.append(ent)
    bases = np.array([int(np.isfinite(p).sum()) for p in tracks[0]], dtype=np.int64)
    if not rc_average:
        return tracks[0], (ents[0] if entropy else None), lls[0], bases
    logp = [_mean2(a, b) for a, b in zip(*tracks)]
    ent = [_mean2(a, b) for a, b in zip(*ents)] if entropy else None
    return logp, ent, (lls[0] + lls[1]) / 2, bases


def _mean2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean where both are finite, else whichever is finite (NaN where neither)."""
    with np.errstate(invalid="ignore"):
        out = (a + b) / 2
    out = np.where(np.isnan(a), b, np.where(np.isnan(b), a, out))
    return out.astype(np.float32)


def score_file(input_fa, model_path, out, bed=None, entropy: bool = False, rc_average: bool = False,
               batch_size: int | None = None, device: str | None = None, precision: str = "auto",
               chunk_size: int | None = None, progress: bool = True) -> ScoreFileResult:
    """Per-base log-probabilities (and entropy) of every record of ``input_fa`` or region of ``bed``.

    Args:
        input_fa: FASTA (plain, BGZF, or plain gzip, ingested to a cached token store) or a token store.
        model_path: model directory or pretraining run directory (its ``best/``).
        out: ``.bedgraph``/``.bg``, ``.bw``/``.bigwig``, ``.tsv``/``.tsv.gz`` or ``.h5`` (see the module docstring).
        bed: optional BED regions (0-based, half-open; 4th column = id).
        entropy: also write the entropy of each next-base prediction (one more forward pass).
        rc_average: average with the reverse-complement strand (see the module docstring).
        batch_size, chunk_size, precision, device: as for :meth:`mamba_genome.api.GenomeModel.score`.
        progress: tqdm bars on stderr.

    Returns:
        :class:`ScoreFileResult` with one totals row per record.

    Raises:
        UserError (or subclasses): bad options or output path, bad FASTA or BED, missing model files.
    """
    from ..api import check_precision, load_while

    t0 = time.perf_counter()
    check_precision(precision)
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if chunk_size is not None and chunk_size < 1:
        raise UserError(f"--chunk-size must be >= 1, got {chunk_size}")
    out, fmt = output_format(out)
    model, (ref, records) = load_while(model_path, lambda: _records(input_fa, bed, progress), device)
    precision = model.resolve_precision(precision)
    if model.model_type != "lm":
        raise UserError(f"{model_path} is a '{model.model_type}' model; score needs a pretrained language model")
    attrs = {"model": str(model_path), "input": str(input_fa), "bed": str(bed) if bed else None,
             "rc_average": bool(rc_average), "precision": precision, "mamba_genome_version": __version__}
    writer = _TrackWriter(out, fmt, records, entropy, ref.lengths, attrs)
    res = ScoreFileResult(writer.paths)
    ok = False
    try:
        for group in _groups(records):
            seqs = [np.array(ref.tokens(c)[s:e]) for _, c, s, e in group]
            logp, ent, ll, bases = score_tracks(model, seqs, entropy=entropy, rc_average=rc_average,
                                                batch_size=batch_size, chunk_size=chunk_size, precision=precision,
                                                progress=progress)
            for k, (rid, c, s, e) in enumerate(group):
                writer.write(rid, c, s, seqs[k], logp[k], None if ent is None else ent[k])
                n = int(bases[k])
                npb = -ll[k] / n if n else float("nan")
                res.totals.append({"id": rid, "contig": c, "start": s, "end": e, "bases": n,
                                   "log_likelihood": float(ll[k]), "nats_per_base": float(npb),
                                   "bits_per_base": float(npb / LN2)})
                res.bp += e - s
        ok = True
    finally:
        writer.close(ok)
    res.seconds = time.perf_counter() - t0
    return res


def _groups(records):
    group, n = [], 0
    for r in records:
        if group and n + (r[3] - r[2]) > GROUP_BASES:
            yield group
            group, n = [], 0
        group.append(r)
        n += r[3] - r[2]
    if group:
        yield group


class _TrackWriter:
    """Writes one record's tracks at a time in the chosen format, to temporary files renamed at the end."""

    def __init__(self, out: Path, fmt: str, records, entropy: bool, lengths: dict, attrs: dict):
        self.fmt, self.entropy = fmt, entropy
        self.paths = [out] + ([_entropy_path(out)] if entropy and fmt in ("bedgraph", "bigwig") else [])
        self.tmps = [p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in self.paths]
        desc = f"mamba-genome score: log P(base | preceding bases), nats; model {attrs['model']}"
        if fmt == "bedgraph":
            self.fhs = [open(t, "w", encoding="utf-8", newline="\n") for t in self.tmps]
            descs = [desc, "mamba-genome score: entropy of the next-base prediction, nats"]
            for fh, name, d in zip(self.fhs, ["logp", "entropy"], descs):
                fh.write(f'track type=bedGraph name="{name}" description="{d}"\n')
        elif fmt == "bigwig":
            import pyBigWig

            contigs = list(dict.fromkeys(c for _, c, _, _ in records))
            self.fhs = []
            for t in self.tmps:
                bw = pyBigWig.open(str(t), "w")
                bw.addHeader([(c, int(lengths[c])) for c in contigs])
                self.fhs.append(bw)
            self._last = {}
        elif fmt == "tsv":
            opener = gzip.open if out.name.lower().endswith(".gz") else open
            self.fhs = [opener(self.tmps[0], "wt", encoding="utf-8", newline="\n")]
            self.fhs[0].write("\t".join(["id", "contig", "pos", "base", "logp"] + (["entropy"] if entropy else [])) + "\n")
        else:
            import h5py

            total = sum(e - s for _, _, s, e in records)
            self.h5 = h5py.File(self.tmps[0], "w")
            self.h5.attrs.update({k: ("" if v is None else v) for k, v in attrs.items()})
            self.h5.create_dataset("logp", (total,), dtype="f4", chunks=(min(total, 1 << 20),) if total else None)
            if entropy:
                self.h5.create_dataset("entropy", (total,), dtype="f4", chunks=(min(total, 1 << 20),) if total else None)
            offsets = np.concatenate([[0], np.cumsum([e - s for _, _, s, e in records])]).astype(np.int64)
            self.h5["offsets"] = offsets
            str_dt = h5py.string_dtype()
            self.h5.create_dataset("ids", data=np.array([r[0] for r in records], dtype=object), dtype=str_dt)
            self.h5.create_dataset("contig", data=np.array([r[1] for r in records], dtype=object), dtype=str_dt)
            self.h5["start"] = np.array([r[2] for r in records], dtype=np.int64)
            self.h5["end"] = np.array([r[3] for r in records], dtype=np.int64)
            self._row = 0
            self.fhs = []

    def write(self, rid, contig, start, toks, logp, ent) -> None:
        tracks = [logp] + ([ent] if ent is not None else [])
        if self.fmt == "bedgraph":
            for fh, tr in zip(self.fhs, tracks):
                keep = np.flatnonzero(np.isfinite(tr))
                pos = (keep + start).tolist()
                vals = tr[keep].tolist()
                fh.write("".join(f"{contig}\t{p}\t{p + 1}\t{v:.6g}\n" for p, v in zip(pos, vals)))
        elif self.fmt == "bigwig":
            for bw, tr in zip(self.fhs, tracks):
                keep = np.flatnonzero(np.isfinite(tr))
                if len(keep):
                    # bigWig entries must be sorted within a contig; BED regions may overlap or come unsorted
                    if self._last.get((id(bw), contig), -1) > start:
                        raise UserError(f"bigWig output needs BED regions sorted and non-overlapping per contig "
                                        f"(region {rid}); sort the BED or write .bedgraph/.h5")
                    starts = (keep + start).tolist()
                    bw.addEntries([contig] * len(keep), starts, ends=[x + 1 for x in starts],
                                  values=tr[keep].astype(np.float64).tolist())
                    self._last[(id(bw), contig)] = start + len(tr)
        elif self.fmt == "tsv":
            from ..data.tokenizer import VOCAB

            bases = np.array(VOCAB, dtype=object)[np.asarray(toks)]
            cols = [_fmt(logp)] + ([_fmt(ent)] if ent is not None else [])
            self.fhs[0].write("".join(
                f"{rid}\t{contig}\t{start + i}\t{b}\t" + "\t".join(c[i] for c in cols) + "\n"
                for i, b in enumerate(bases.tolist())))
        else:
            n = len(logp)
            self.h5["logp"][self._row: self._row + n] = logp
            if ent is not None:
                self.h5["entropy"][self._row: self._row + n] = ent
            self._row += n

    def close(self, ok: bool) -> None:
        if self.fmt == "h5":
            self.h5.close()
        else:
            for fh in self.fhs:
                fh.close()
        for t, p in zip(self.tmps, self.paths):
            if ok:
                os.replace(t, p)
            else:
                Path(t).unlink(missing_ok=True)


def _fmt(v: np.ndarray) -> list[str]:
    return ["" if x != x else f"{x:.6g}" for x in v.tolist()]


__all__ = ["score_file", "score_tracks", "ScoreFileResult", "output_format", "TOTAL_COLUMNS", "GROUP_BASES"]
