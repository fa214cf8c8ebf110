"""``score --vcf`` workflow: a VCF + reference FASTA + model -> one LLR per ALT allele (TSV or VCF).

Owns the checks and bookkeeping around :class:`mamba_genome.variants.effect.VariantScorer`
(which defines the score: see its module docstring for the windows, the prefix reuse and the
length normalisation):

- the VCF is streamed in chunks of whole records (``chunk_alleles`` ALT alleles each);
  multi-allelic records are split into one row per ALT; output keeps the input order; each
  chunk is checked, planned and queued on the device before the previous one is read back
  and written, so the host's parsing and checks overlap the model;
- each allele gets a status (:data:`mamba_genome.variants.vcf.STATUSES`); a bad record
  (unknown contig, REF that disagrees with the FASTA, window off the contig end, symbolic or
  non-DNA ALT, allele longer than half the window) never stops the run: it is written with
  an empty score and its status (a FILTER in the VCF), counted, and reported once at the end
  with a few examples;
- a VCF whose contig names miss the reference only by a ``chr`` prefix stops at once with a
  one-line error that says so;
- output by extension: ``.tsv`` / ``.tsv.gz`` (one row per allele) or ``.vcf`` / ``.vcf.gz``
  (input records annotated with ``INFO/MG_LLR`` and ``INFO/MG_LLR_PB``), written atomically.
"""
from __future__ import annotations

import gzip
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError

TSV_COLUMNS = ["chrom", "pos", "id", "ref", "alt", "llr", "llr_per_base", "llr_forward", "llr_reverse", "status"]
VCF_SUFFIXES = (".vcf", ".vcf.gz")
TSV_SUFFIXES = (".tsv", ".tsv.gz")
#: examples of each bad status kept for the end-of-run report
N_EXAMPLES = 3


@dataclass
class VariantResult:
    """What :func:`score_vcf` did: counts per status, timings and forward positions."""

    out: Path
    records: int = 0
    alleles: int = 0
    counts: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)
    seconds: float = 0.0
    model_seconds: float = 0.0   # wall time of the scoring loop, from the first chunk read to the last scored
    tokens: int = 0          # forward positions run (prefixes and suffixes, both strands, padding included)
    window: int = 0
    strands: int = 2
    precision: str = ""

    @property
    def scored(self) -> int:
        return int(self.counts.get("ok", 0))

    def problems(self) -> list[str]:
        """One line per bad status: how many alleles, and a few examples."""
        lines = []
        for status, n in self.counts.items():
            if status == "ok" or not n:
                continue
            ex = ", ".join(self.examples.get(status, []))
            lines.append(f"{n:,} allele(s) not scored ({status}), e.g. {ex}")
        return lines

    def summary_rows(self) -> list[dict]:
        sec = max(self.seconds, 1e-9)
        return [{"records": f"{self.records:,}", "alleles": f"{self.alleles:,}", "scored": f"{self.scored:,}",
                 "window": f"{self.window:,}", "strands": self.strands, "precision": self.precision,
                 "seconds": f"{self.seconds:.2f}", "variants/s": f"{self.scored / sec:,.0f}",
                 "model tokens/s": f"{self.tokens / max(self.model_seconds, 1e-9):,.0f}",
                 "positions/variant": f"{self.tokens / max(self.scored, 1):,.0f}", "output": str(self.out)}]


def _out_kind(out) -> tuple[Path, str]:
    p = Path(out)
    name = p.name.lower()
    if name.endswith(VCF_SUFFIXES):
        kind = "vcf"
    elif name.endswith(TSV_SUFFIXES):
        kind = "tsv"
    else:
        raise UserError(f"-o {p}: unknown output type; use .tsv, .tsv.gz, .vcf or .vcf.gz")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"-o {p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"-o {p}: directory {parent} is not writable")
    return p, kind


def score_vcf(vcf, fasta, model_path, out, window: int = 1024, both_strands: bool = True,
              batch_size: int | None = None, device: str | None = None, precision: str = "auto",
              chunk_alleles: int | None = None, progress: bool = True, share: bool = True,
              grid: int | None = None) -> VariantResult:
    """Score every SNV and short indel of ``vcf`` by its log-likelihood ratio under a trained model.

    Args:
        vcf: VCF or BCF (plain, bgzip or gzip).
        fasta: the reference: FASTA (plain, BGZF, or plain gzip, ingested to a cached token store)
            or a token store directory. Contig names must match the VCF's CHROM.
        model_path: model directory or pretraining run directory (its ``best/``).
        out: ``.tsv``/``.tsv.gz`` or ``.vcf``/``.vcf.gz`` (annotated copy of the input).
        window: bases in the (SNV) window around the variant: ``window // 2`` before the REF
            allele (up to ``grid - 1`` more) and ``window - window // 2 - 1`` after it; 8 .. 2^20.
        both_strands: average the forward and reverse-complement LLRs (default) instead of
            reporting the forward strand only.
        batch_size: variants per batch (None: about 2^22 positions per forward on a GPU, 2^15 on CPU).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or None (GPU if available).
        precision: ``"auto"`` (bf16 on a CUDA GPU that supports it, else fp32), ``"fp32"`` or ``"bf16"``.
        chunk_alleles: alleles read, scored and written per step (None: 16 batches).
        progress: tqdm bar in variants on stderr.
        share: variants with the same window start share their prefix and reference pass
            (:mod:`mamba_genome.variants.effect`); False runs each on its own (same scores,
            for benchmarks).
        grid: window anchors on this grid of the contig, so that variants within one cell share
            their context pass (:mod:`mamba_genome.variants.effect`; None: 32; 1: windows
            centred exactly on each variant).

    Returns:
        :class:`VariantResult`; ``problems()`` lists the alleles not scored.

    Raises:
        UserError (or subclasses): bad options, unreadable VCF/FASTA, a chr-prefix naming
        mismatch, missing model files.
    """
    from ..api import check_precision, load
    from ..variants.effect import DEFAULT_GRID, MAX_WINDOW, MIN_WINDOW, VariantScorer
    from ..variants.reference import Reference
    from ..variants.vcf import AnnotatedVcfWriter, iter_allele_chunks, open_vcf

    t0 = time.perf_counter()
    if not MIN_WINDOW <= window <= MAX_WINDOW:
        raise UserError(f"--window must be in {MIN_WINDOW}..{MAX_WINDOW:,} (2^20), got {window:,}")
    grid = DEFAULT_GRID if grid is None else grid
    if grid < 1:
        raise UserError(f"--grid must be >= 1, got {grid}")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    check_precision(precision)
    out, kind = _out_kind(out)
    vf = open_vcf(vcf)
    ref = Reference(fasta, progress=progress)
    model = load(model_path, device=device)
    if model.model_type != "lm":
        raise UserError(f"{model_path} is a '{model.model_type}' model; score --vcf needs a pretrained language model")
    scorer = VariantScorer(model, window=window, both_strands=both_strands, batch_size=batch_size,
                           precision=precision, share=share, grid=grid)
    chunk_alleles = chunk_alleles or 16 * scorer.batch_size
    res = VariantResult(out, window=window, strands=2 if both_strands else 1, precision=scorer.precision,
                        counts={}, examples={})
    centring = ("centred on the variant" if grid == 1 else
                f"starting on a {grid}-base grid of the contig ({window // 2}-{window // 2 + grid - 1} bp before the "
                f"variant, mirrored on the reverse strand)")
    settings = (f"window {window} bp {centring}, "
                f"{'both strands averaged' if both_strands else 'forward strand'}, model {model_path}")
    from tqdm import tqdm

    bar = tqdm(unit="var", unit_scale=True, desc="score", disable=not progress, leave=False, dynamic_ncols=True)
    writer = AnnotatedVcfWriter(out, vf.header, settings) if kind == "vcf" else _TsvWriter(out)
    chunks = iter_allele_chunks(vf, vcf, chunk_alleles, keep_records=kind == "vcf")
    # TSV: the next chunk is parsed and the last one written in threads while the GPU scores
    # (the main thread waits in CUDA syncs, which release the GIL). VCF: pysam records share
    # the reader's header, so everything stays in this thread.
    threaded = kind == "tsv"
    pool = ThreadPoolExecutor(max_workers=1) if threaded else None
    source = _prefetch(chunks) if threaded else chunks
    ok = False
    try:
        first, pending, queued = True, None, None

        def finish(job):
            """Wait for a queued chunk's scores, count them and hand the chunk to the writer."""
            nonlocal pending
            chunk, cols, status, _, toks = _finish_chunk(*job)
            res.tokens += toks
            res.records += chunk.n_records
            res.alleles += len(chunk)
            _tally(res, chunk, status)
            if pending is not None:
                pending.result()
            if threaded:
                pending = pool.submit(writer.write_chunk, chunk, cols, status)
            else:
                writer.write_chunk(chunk, cols, status)
            bar.update(len(chunk))

        for chunk in source:
            if first:
                ref.check_naming(chunk.chrom, f"--vcf {Path(vcf).name}")
                first = False
                t_loop = time.perf_counter()
            # the next chunk is checked, planned and queued before the previous one is read
            # back, so the device always has a chunk of work while the host prepares one
            job = _submit_chunk(chunk, ref, scorer)
            if queued is not None:
                finish(queued)
            queued = job
        if queued is not None:
            finish(queued)
        if pending is not None:
            pending.result()
        if not first:   # the scoring loop's wall time (the device and the host overlap inside it)
            res.model_seconds = time.perf_counter() - t_loop
        ok = True
    finally:
        if pool is not None:
            source.close()          # stops and joins the reader thread before the file closes
            pool.shutdown(wait=True)
        bar.close()
        writer.close(ok)
        vf.close()
    res.seconds = time.perf_counter() - t0
    return res


def _prefetch(it, depth: int = 2):
    """Iterate ``it`` in a background thread, ``depth`` items ahead; its exceptions re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def run():
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        th.join(timeout=5)


def _tally(res: VariantResult, chunk, status: list[str]) -> None:
    st = np.asarray(status)
    for s in np.unique(st):
        res.counts[str(s)] = res.counts.get(str(s), 0) + int((st == s).sum())
        if s != "ok":
            ex = res.examples.setdefault(str(s), [])
            for i in np.flatnonzero(st == s)[: N_EXAMPLES - len(ex)]:
                ex.append(f"{chunk.chrom[i]}:{chunk.pos[i]} {chunk.ref[i]}>{chunk.alt[i]}")


def _finish_chunk(chunk, cols, status, jobs, model_seconds, tokens):
    """Wait for the scores queued by :func:`_submit_chunk` and fill the chunk's columns:
    (chunk, {column: (n,) float64}, status list, model seconds, tokens)."""
    t = time.perf_counter()
    for rows, job in jobs:
        fwd, rev = job.result()
        cols["llr_forward"][rows] = fwd.llr
        if rev is None:
            cols["llr"][rows] = fwd.llr
            cols["llr_per_base"][rows] = fwd.llr_per_base
        else:
            cols["llr_reverse"][rows] = rev.llr
            cols["llr"][rows] = (fwd.llr + rev.llr) / 2
            cols["llr_per_base"][rows] = (fwd.llr_per_base + rev.llr_per_base) / 2
    return chunk, cols, status.tolist(), model_seconds + time.perf_counter() - t, tokens


def _submit_chunk(chunk, ref, scorer):
    """Check one chunk's alleles and queue the scoring of the good ones (one job per contig):
    (chunk, columns to fill, status, [(rows, PendingScores)], model seconds, tokens)."""
    from ..variants.effect import encode_alleles

    n = len(chunk)
    status = np.full(n, "ok", dtype=object)
    known = np.fromiter((c in ref for c in chunk.chrom), dtype=bool, count=n)
    dna = chunk.dna_alleles()
    status[~dna] = "unsupported_allele"
    status[~known] = "unknown_contig"
    cand = np.flatnonzero(known & dna)
    ref_tok, ref_len = encode_alleles([chunk.ref[i] for i in cand])
    alt_tok, alt_len = encode_alleles([chunk.alt[i] for i in cand])
    half = scorer.window // 2
    too_long = np.maximum(ref_len, alt_len) > half
    status[cand[too_long]] = "allele_too_long"
    keep = ~too_long
    cand, ref_tok, ref_len, alt_tok, alt_len = cand[keep], ref_tok[keep], ref_len[keep], alt_tok[keep], alt_len[keep]
    cols = {c: np.full(n, np.nan) for c in ("llr", "llr_per_base", "llr_forward", "llr_reverse")}
    model_seconds, tokens, jobs = 0.0, 0, []
    chroms = np.array([chunk.chrom[i] for i in cand], dtype=object)
    pos0 = chunk.pos[cand] - 1
    for contig in dict.fromkeys(chroms.tolist()):
        sel = np.flatnonzero(chroms == contig)
        L = ref.lengths[contig]
        p = pos0[sel]
        off = (p - scorer.left < 0) | (p + ref_len[sel] + scorer.right > L)
        status[cand[sel[off]]] = "window_off_contig"
        sel = sel[~off]
        if not len(sel):
            continue
        toks = ref.tokens(contig)
        p = pos0[sel]
        r, rl = ref_tok[sel], ref_len[sel]
        j = np.arange(r.shape[1])
        inside = j[None, :] < rl[:, None]
        here = toks[np.where(inside, p[:, None] + j[None, :], 0)]
        mismatch = (inside & (here != r)).any(1)
        status[cand[sel[mismatch]]] = "ref_mismatch"
        sel = sel[~mismatch]
        if not len(sel):
            continue
        t = time.perf_counter()
        scorer.set_contig(contig, toks)
        before = scorer.positions
        jobs.append((cand[sel], scorer.submit(pos0[sel], ref_tok[sel], ref_len[sel], alt_tok[sel], alt_len[sel])))
        model_seconds += time.perf_counter() - t
        tokens += scorer.positions - before
    return chunk, cols, status, jobs, model_seconds, tokens


def _fmt(values: np.ndarray, digits: int) -> list[str]:
    return ["" if v != v else f"{v:.{digits}f}" for v in values.tolist()]


class _TsvWriter:
    """One row per allele, header first; ``.gz`` is gzip; written to a temporary file, then renamed."""

    def __init__(self, out: Path):
        self.out = out
        self.tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        opener = gzip.open if out.name.lower().endswith(".gz") else open
        self.fh = opener(self.tmp, "wt", encoding="utf-8", newline="\n")
        self.fh.write("\t".join(TSV_COLUMNS) + "\n")

    def write_chunk(self, chunk, cols: dict, status: list[str]) -> None:
        fields = [chunk.chrom, chunk.pos.tolist(), chunk.id, chunk.ref, chunk.alt,
                  _fmt(cols["llr"], 5), _fmt(cols["llr_per_base"], 6), _fmt(cols["llr_forward"], 5),
                  _fmt(cols["llr_reverse"], 5), status]
        self.fh.write("".join("\t".join(map(str, row)) + "\n" for row in zip(*fields)))

    def close(self, ok: bool = True) -> None:
        self.fh.close()
        if ok:
            os.replace(self.tmp, self.out)
        else:
            self.tmp.unlink(missing_ok=True)


__all__ = ["score_vcf", "VariantResult", "TSV_COLUMNS"]
