"""Zero-shot variant effects: the log-likelihood ratio of alt and ref windows, by prefix reuse.

For a variant whose REF allele starts at 0-based position ``p`` of a contig, with window
length ``W`` (``--window``), ``Lf = W // 2`` and ``Rf = W - W // 2 - 1``, the forward-strand
windows are::

    ref window = contig[a-Lf : p] + REF + contig[p+len(REF) : p+len(REF)+Rf]
    alt window = contig[a-Lf : p] + ALT + contig[p+len(REF) : p+len(REF)+Rf]

where the **anchor** ``a`` is ``p`` rounded down to a multiple of the grid ``g`` (``grid``,
default :data:`DEFAULT_GRID` = 32; ``a = p`` where that window would start before the contig).
So the allele has between ``Lf`` and ``Lf + g - 1`` bases of left context and ``Rf`` bases are
scored after it; with ``g = 1`` every window is centred exactly on its variant (an SNV's
windows are then exactly ``W`` long). The anchor depends on the variant's position only, never
on which other variants are in the file. Under a causal model every position before ``p`` has
identical log-probabilities in both windows, so

    llr = log P(alt window) - log P(ref window)
        = sum_{j in alt suffix} log P(x_j | x_<j) - sum_{j in ref suffix} log P(x_j | x_<j)

where a *suffix* is the allele plus the right flank. The recurrent state after the prefix
``contig[a-Lf : a]`` is computed **once**; the ``p - a`` *lead* bases ``contig[a : p]`` and
the suffixes are run from it (the first lead or suffix base is predicted by the prefix's last
logits). ``alt_sum`` and ``ref_sum`` sum the suffix targets only; ``llr_per_base`` is the mean
log-probability per scored base of the alt suffix minus that of the ref suffix (``llr / (1 +
Rf)`` for an SNV). Only A/C/G/T targets are scored (:mod:`mamba_genome.model.likelihood`).

The reverse strand is the same computation on the reverse complement: its anchor is the REF
end ``e = p + len(REF)`` rounded *up* to the grid (``e`` near the contig end), its prefix is
``rc(contig[ae : ae+Rf])``, its lead ``rc(contig[e : ae])`` and its suffixes the
reverse-complemented allele plus ``rc(contig[p-Lf : p])``. ``llr`` is the mean of the two
strands by default.

**Sharing between variants** (exact: every number is the same conditional as above). The
model starts from a zero state at each window's first base, so variants share work when their
windows start at the same base of the strand being read, i.e. when they have the same anchor:

- all variants with one anchor (every variant within one 32-base cell of the grid, the ALTs of
  a multi-allelic site among them) share the prefix; those whose REF matches the contig also
  share one reference pass from the anchor (forward ``contig[a : max(p + len(REF)) + Rf]``):
  each variant's ref sum is that pass's cumulative log-likelihood over its own suffix targets;
- each variant's alt row is its lead, its ALT and its right flank; identical alt rows (the same
  ALT twice at one site) run once.

Per strand, a lone SNV costs ``Lf + 2 (1 + Rf)`` positions with ``g = 1``; with the grid, the
prefix and reference pass of a cell are shared by all its variants and each variant adds its
lead plus ``1 + Rf``. At 1 kbp, both strands (``benchmarks/bench_vep.py --count-only``): 1 M
random SNVs of E. coli (about one per 5 bases) run 1,346 positions per SNV instead of 2,828
with exact centring (2.1x fewer; a 64-base grid: 1,260); a sparse VCF (5,000 SNVs) 3,147
instead of 3,068 (2.6% more, the leads; a 64-base grid: 5% more). Windows with different anchors share nothing: a
window starting one base later conditions every base on a different context. ``share=False``
gives every variant its own prefix and reference pass (the benchmark's baseline); the scores
are the same.

Everything per batch is tensor work on the model's device: the contig is uploaded once as a
token tensor and the rows are cut from it by one gather per batch; the grouping is planned on
the host with numpy (:func:`plan_strand`), no Python runs per variant and nothing waits for
the device until a call's results are read. Batches take whole groups, ordered by suffix
length so little is spent on padding. Windows are streamed through the model ``chunk``
positions at a time with the state carried, so a 2^20 window needs no more memory than a
short one.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from ..data.tokenizer import COMPLEMENT, PAD
from ..model.block import LayerState
from ..model.likelihood import target_log_probs

#: positions per forward call (rows x columns) on a GPU and on CPU
GPU_TOKENS = 1 << 22
CPU_TOKENS = 1 << 15
MAX_WINDOW = 1 << 20
MIN_WINDOW = 8
#: windows are anchored on a grid of this many bases (module docstring)
DEFAULT_GRID = 32


def flank_lengths(window: int) -> tuple[int, int]:
    """(left flank, right flank) lengths of a ``window``: ``W // 2`` and ``W - W // 2 - 1``."""
    return window // 2, window - window // 2 - 1


@dataclass
class StrandScores:
    """Per-variant sums of one strand: alt and ref suffix log-likelihoods (nats) and scored counts."""

    alt_sum: np.ndarray
    ref_sum: np.ndarray
    alt_n: np.ndarray
    ref_n: np.ndarray

    @property
    def llr(self) -> np.ndarray:
        return self.alt_sum - self.ref_sum

    @property
    def llr_per_base(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.alt_sum / self.alt_n - self.ref_sum / self.ref_n


def encode_alleles(alleles: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Allele strings (DNA only: A/C/G/T/N, IUPAC codes, any case) -> :func:`pad_alleles` output.

    One ``bytes.translate`` over all alleles joined, then numpy: no Python per allele beyond
    ``len``."""
    from ..data.tokenizer import ENCODE_TABLE

    lens = np.fromiter(map(len, alleles), dtype=np.int64, count=len(alleles))
    flat = np.frombuffer("".join(alleles).encode("ascii").translate(ENCODE_TABLE), dtype=np.uint8)
    return _pad_flat(flat, lens)


def pad_alleles(codes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged allele token arrays -> (padded (n, max_len) uint8 with PAD, lengths (n,) int64)."""
    lens = np.fromiter((len(c) for c in codes), dtype=np.int64, count=len(codes))
    flat = np.concatenate(codes) if len(codes) else np.zeros(0, np.uint8)
    return _pad_flat(flat, lens)


def _pad_flat(flat: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width = max(1, int(lens.max()) if len(lens) else 1)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]) if len(lens) else lens
    j = np.arange(width)
    inside = j[None, :] < lens[:, None]
    idx = np.where(inside, starts[:, None] + j[None, :], 0)
    out = np.where(inside, flat[idx] if flat.size else 0, PAD).astype(np.uint8)
    return out, lens


@dataclass
class StrandPlan:
    """Host-side plan of one strand of a :meth:`VariantScorer.score` call (:func:`plan_strand`).

    Groups share a prefix (one window start); rows are the distinct suffixes run from a group's
    state; each variant reads its alt and ref sums off two rows. Groups are ordered by their
    longest row, rows by group, variants by group (``order``), so a batch is three slices.

    Attributes:
        key: (G,) the window anchor of each group (:func:`anchors`): forward, at or before the
            REF start (prefix ``contig[key-Lf : key]``); reverse, at or after the REF end
            (prefix ``rc(contig[key : key+Rf])``).
        row_group: (R,) group of each row; ``row_l``: (R,) contig bases of the row's lead, read
            on from its group's prefix (``contig[key : key+l]``, reverse ``rc(contig[key-l :
            key])``); ``row_a``: (R,) allele tokens after the lead (0 for a shared reference
            pass); ``row_allele``: (R, A) those tokens (forward orientation, PAD after
            ``row_a``); ``row_q``, ``row_f``: (R,) the flank after the allele, ``contig[q :
            q+f]`` forward or ``rc(contig[q-f : q])`` reverse.
        order: (n,) variant indices in plan order; ``req_row`` (2, n) the alt and ref row of
            each (plan order); it sums that row's targets ``req_start .. req_end-1`` (both (2, n)).
        batches: (g0, g1, r0, r1, v0, v1, width) slices of groups, rows and variants; ``width``
            the longest row.
        positions: forward positions the plan runs (prefixes plus suffixes less their last base,
            padding included).
    """

    key: np.ndarray
    row_group: np.ndarray
    row_l: np.ndarray
    row_a: np.ndarray
    row_allele: np.ndarray
    row_q: np.ndarray
    row_f: np.ndarray
    order: np.ndarray
    req_row: np.ndarray
    req_start: np.ndarray
    req_end: np.ndarray
    batches: list
    positions: int


def anchors(pos0, ref_len, contig_len: int, window: int, grid: int, rc: bool) -> np.ndarray:
    """Where each variant's window context starts, on the strand being read (module docstring).

    Forward: the REF start ``p`` rounded down to a multiple of ``grid``, or ``p`` itself where the
    rounded window would start before the contig. Reverse: the REF end ``e = p + len(REF)``
    rounded up, or ``e`` where the rounded window would run past the contig end. ``grid`` 1
    gives windows centred exactly on every variant."""
    left, right = flank_lengths(window)
    pos0 = np.asarray(pos0, dtype=np.int64)
    grid = max(1, int(grid))
    if rc:
        end = pos0 + np.asarray(ref_len, dtype=np.int64)
        a = end + (-end) % grid
        return np.where(a + right <= contig_len, a, end)
    a = pos0 - pos0 % grid
    return np.where(a - left >= 0, a, pos0)


def plan_strand(contig: np.ndarray, pos0, ref, ref_len, alt, alt_len, window: int, rc: bool, max_rows: int,
                share: bool = True, grid: int = 1) -> StrandPlan:
    """Group ``n`` variants of one contig by window anchor and list the suffix rows to run.

    Args:
        contig: (L,) token ids of the contig (read for the REF-matches-contig check and its length).
        pos0, ref, ref_len, alt, alt_len: as :meth:`VariantScorer.score` (PAD-padded allele
            arrays; their widths may differ).
        window: window length; ``rc``: plan the reverse strand.
        max_rows: suffix rows per batch (a batch takes whole groups, at least one).
        share: share prefixes and reference passes between variants (see the module docstring);
            False gives every variant its own group and rows.
        grid: anchor windows on this grid of the contig (:func:`anchors`; 1: exactly centred).
    """
    left, right = flank_lengths(window)
    n = len(pos0)
    pos0, rl, al = (np.asarray(x, dtype=np.int64) for x in (pos0, ref_len, alt_len))
    A = max(1, ref.shape[1], alt.shape[1])
    ref = np.pad(ref, ((0, 0), (0, A - ref.shape[1])), constant_values=PAD).astype(np.int64)
    alt = np.pad(alt, ((0, 0), (0, A - alt.shape[1])), constant_values=PAD).astype(np.int64)
    f_std = left if rc else right                        # flank after the allele
    p_len = right if rc else left                        # prefix length
    key = anchors(pos0, rl, len(contig), window, grid, rc)
    lead = key - pos0 - rl if rc else pos0 - key         # contig bases between the prefix and the allele
    if share:
        gkey, ginv = np.unique(key, return_inverse=True)
        j = np.arange(A)
        inside = j[None, :] < rl[:, None]
        here = contig[np.clip(np.where(inside, pos0[:, None] + j[None, :], 0), 0, len(contig) - 1)]
        shared = ~(inside & (here != ref)).any(1)        # REF is the contig: its row is the contig itself
    else:
        gkey, ginv = key, np.arange(n)
        shared = np.zeros(n, dtype=bool)
    G = len(gkey)
    # the shared reference pass of a group: from the anchor, long enough for its farthest REF end
    g_rl = np.zeros(G, dtype=np.int64)
    np.maximum.at(g_rl, ginv[shared], (lead + rl)[shared])
    g_f = g_rl + f_std
    # every variant's two rows: (group, lead, allele length, flank anchor, flank length, allele tokens)
    own_q = pos0 if rc else pos0 + rl
    ref_l = np.where(shared, 0, lead)
    ref_a = np.where(shared, 0, rl)
    ref_q = np.where(shared, key, own_q)
    ref_f = np.where(shared, g_f[ginv], f_std)
    ref_tok = np.where(shared[:, None], PAD, ref)
    row_len = np.maximum(ref_l + ref_a + ref_f, lead + al + f_std)
    g_w = np.zeros(G, dtype=np.int64)
    np.maximum.at(g_w, ginv, row_len)
    g_order = np.argsort(g_w, kind="stable")             # shortest rows first: batches of one length
    rank = np.empty(G, dtype=np.int64)
    rank[g_order] = np.arange(G)
    vg = rank[ginv]
    col = lambda x: x[:, None]   # noqa: E731
    desc = np.concatenate([
        np.concatenate([col(vg), col(ref_l), col(ref_a), col(ref_q), col(ref_f), ref_tok], 1),
        np.concatenate([col(vg), col(lead), col(al), col(own_q), np.full((n, 1), f_std), alt], 1)])
    if not share:     # one row per allele, as without sharing (an alt equal to its ref still runs)
        desc = np.concatenate([desc, np.arange(2 * n)[:, None]], 1)
    rows, inv = _unique_rows(desc)
    inv = inv.reshape(2, n)
    order = np.argsort(vg, kind="stable")
    req_row = np.stack([inv[1][order], inv[0][order]])                     # alt, ref
    req_start = np.stack([lead, lead])[:, order]
    req_end = np.stack([lead + al + f_std, lead + rl + f_std])[:, order]
    row_group = rows[:, 0]
    counts = np.bincount(row_group, minlength=G)
    crow = np.concatenate([[0], np.cumsum(counts)])
    vsorted = vg[order]
    g_w_sorted = g_w[g_order]
    batches, positions, g0 = [], 0, 0
    while g0 < G:
        g1 = int(np.searchsorted(crow, crow[g0] + max_rows, side="right")) - 1
        g1 = min(G, max(g1, g0 + 1))
        r0, r1 = int(crow[g0]), int(crow[g1])
        v0, v1 = (int(x) for x in np.searchsorted(vsorted, [g0, g1], side="left"))
        width = int(g_w_sorted[g1 - 1])
        batches.append((g0, g1, r0, r1, v0, v1, width))
        positions += (g1 - g0) * p_len + (r1 - r0) * (width - 1)
        g0 = g1
    return StrandPlan(gkey[g_order], row_group, rows[:, 1], rows[:, 2], rows[:, 5: 5 + A].astype(np.uint8),
                      rows[:, 3], rows[:, 4], order, req_row, req_start, req_end, batches, positions)


def _unique_rows(desc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(desc, axis=0, return_inverse=True)`` of an int64 matrix, by a lexsort of its
    columns (ten times faster than unique's sort of the rows as opaque records)."""
    if not len(desc):
        return desc, np.zeros(0, dtype=np.int64)
    order = np.lexsort(desc.T[::-1])                     # first column slowest
    srt = desc[order]
    new = np.ones(len(srt), dtype=bool)
    new[1:] = (srt[1:] != srt[:-1]).any(1)
    inv = np.empty(len(srt), dtype=np.int64)
    inv[order] = np.cumsum(new) - 1
    return srt[new], inv


class PendingScores:
    """Scores queued by :meth:`VariantScorer.submit`; ``result()`` waits and returns what
    :meth:`VariantScorer.score` returns."""

    def __init__(self, n: int, plans: list, outs: list, both: bool):
        self.n, self.plans, self.outs, self.both = n, plans, outs, both

    def result(self) -> tuple[StrandScores, StrandScores | None]:
        res = []
        for k in range(1 + self.both):
            out = np.zeros((4, self.n), dtype=np.float64)
            if self.n:
                out[:, self.plans[k].order] = self.outs[k].cpu().numpy()
            res.append(StrandScores(*out))
        return res[0], (res[1] if self.both else None)


def _upload(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host array -> device tensor; on CUDA through pinned memory with a non-blocking copy, so the
    host does not wait for the work already queued."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class VariantScorer:
    """Scores variants of one contig at a time with a loaded :class:`~mamba_genome.api.GenomeModel`.

    Args:
        model: the loaded model (its ``.lm`` is run; precision as ``model.resolve_precision``).
        window: window length ``W`` in bases (8 .. 2^20).
        both_strands: also score the reverse complement and average (``llr`` of both strands).
        batch_size: suffix rows per forward are at most ``2 x batch_size`` (variants per batch
            when nothing is shared); None: fill about ``GPU_TOKENS`` / ``CPU_TOKENS`` positions.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"``.
        share: share prefixes and reference passes between variants with the same window anchor
            (module docstring); the scores are the same either way.
        grid: anchor the windows on this grid of the contig (module docstring; 1: every window
            centred exactly on its variant, :data:`DEFAULT_GRID` by default).

    Attributes:
        positions: forward positions run so far (all calls, both strands, padding included).
    """

    def __init__(self, model, window: int = 1024, both_strands: bool = True, batch_size: int | None = None,
                 precision: str = "auto", share: bool = True, grid: int | None = None):
        if not MIN_WINDOW <= int(window) <= MAX_WINDOW:
            raise ValueError(f"window must be in {MIN_WINDOW}..{MAX_WINDOW}, got {window}")
        self.gm = model
        self.lm = model.lm
        self.window = int(window)
        self.left, self.right = flank_lengths(self.window)
        self.both = both_strands
        self.share = share
        self.grid = DEFAULT_GRID if grid is None else int(grid)
        if self.grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}")
        self.precision = model.resolve_precision(precision)
        self.device = model.device
        self.budget = GPU_TOKENS if self.device.type == "cuda" else CPU_TOKENS
        self.batch_size = batch_size or max(1, self.budget // (2 * (self.right + 2)))
        self.positions = 0
        self._contig_name = None
        self._contig = None
        self._contig_host = None
        self._comp = torch.as_tensor(COMPLEMENT, device=self.device).long()

    # ---------------------------------------------------------------- public
    def set_contig(self, name: str, tokens: np.ndarray) -> None:
        """Upload contig ``name``'s tokens (once per contig)."""
        if name != self._contig_name:
            self._contig_host = np.ascontiguousarray(tokens, dtype=np.uint8)
            # uint8 on the device (1 byte per base: 250 MB for human chr1); windows are widened after the gather
            self._contig = torch.from_numpy(self._contig_host).to(self.device)
            self._contig_name = name

    def plan(self, pos0, ref, ref_len, alt, alt_len, rc: bool = False) -> StrandPlan:
        """The :class:`StrandPlan` that :meth:`score` runs for one strand (host only)."""
        return plan_strand(self._contig_host, pos0, ref, ref_len, alt, alt_len, self.window, rc,
                           2 * self.batch_size, self.share, self.grid)

    def score(self, pos0: np.ndarray, ref: np.ndarray, ref_len: np.ndarray, alt: np.ndarray,
              alt_len: np.ndarray) -> tuple[StrandScores, StrandScores | None]:
        """Score ``n`` variants of the current contig.

        Args:
            pos0: (n,) 0-based start of each REF allele; every window must lie inside the contig.
            ref, alt: (n, A) padded allele tokens (:func:`pad_alleles`); ``ref_len``, ``alt_len`` (n,).

        Returns:
            (forward-strand scores, reverse-strand scores or None).
        """
        return self.submit(pos0, ref, ref_len, alt, alt_len).result()

    def submit(self, pos0: np.ndarray, ref: np.ndarray, ref_len: np.ndarray, alt: np.ndarray,
               alt_len: np.ndarray) -> "PendingScores":
        """:meth:`score` without waiting: the work is queued on the device and ``.result()`` of
        the returned handle waits for it, so the host can prepare the next call meanwhile."""
        n = len(pos0)
        strands = [False, True] if self.both else [False]
        plans = [self.plan(pos0, ref, ref_len, alt, alt_len, rc=rc) for rc in strands] if n else []
        for plan in plans:
            self.positions += plan.positions
        return PendingScores(n, plans, [self._run_plan(plan, rc) for plan, rc in zip(plans, strands)], self.both)

    # ------------------------------------------------------------- internals
    def _run_plan(self, plan: StrandPlan, rc: bool) -> torch.Tensor:
        """(4, n) float64 on the device, in plan order: alt sum, ref sum, alt count, ref count
        (queued; nothing here waits for the device)."""
        dev = self.device
        t = lambda a: _upload(a, dev)   # noqa: E731
        # one copy of each plan array per call: no host-to-device transfer (and wait) per batch
        key, rg, rl, ra, rq, rf = (t(x) for x in (plan.key, plan.row_group, plan.row_l, plan.row_a, plan.row_q,
                                                   plan.row_f))
        allele = t(plan.row_allele).long()
        req_row, req_start, req_end = t(plan.req_row), t(plan.req_start), t(plan.req_end)
        out = torch.zeros(4, len(plan.order), dtype=torch.float64, device=dev)
        amp = (torch.autocast(dev.type, dtype=torch.bfloat16) if self.precision == "bf16" else nullcontext())
        with torch.no_grad(), amp:
            for g0, g1, r0, r1, v0, v1, width in plan.batches:
                prefix = self._prefix_tokens(key[g0:g1], rc)
                rows = self._row_tokens(key[rg[r0:r1]], rl[r0:r1], allele[r0:r1], ra[r0:r1], rq[r0:r1], rf[r0:r1],
                                        width, rc)
                out[:, v0:v1] = self._run(prefix, rows, rg[r0:r1] - g0, req_row[:, v0:v1] - r0,
                                          req_start[:, v0:v1], req_end[:, v0:v1])
        return out

    def _prefix_tokens(self, key, rc: bool):
        """(G, P) prefix tokens: ``contig[key-Lf : key]``, or reverse ``rc(contig[key : key+Rf])``."""
        if not rc:
            return self._contig[(key - self.left)[:, None] + torch.arange(self.left, device=self.device)].long()
        idx = (key + self.right - 1)[:, None] - torch.arange(self.right, device=self.device)
        return self._comp[self._contig[idx].long()]

    def _row_tokens(self, key, lead, allele, a, q, f, width: int, rc: bool):
        """(R, width) suffix rows: contig[key : key+lead] + allele[:a] + contig[q : q+f] (reverse:
        rc(contig[key-lead : key]) + rc(allele) + rc(contig[q-f : q])), right-padded with PAD."""
        R, A = allele.shape
        n = len(self._contig)
        j = torch.arange(width, device=self.device)
        in_lead = j[None, :] < lead[:, None]
        lead_i = (key[:, None] - 1 - j[None, :]) if rc else (key[:, None] + j[None, :])
        aj = j[None, :] - lead[:, None]
        in_allele = (aj >= 0) & (aj < a[:, None])
        if rc:
            al = self._comp[allele.gather(1, (a[:, None] - 1 - aj).clamp(0, A - 1))]
        else:
            al = allele.gather(1, aj.clamp(0, A - 1))
        fj = aj - a[:, None]
        in_flank = (fj >= 0) & (fj < f[:, None])
        ci = (q[:, None] - 1 - fj) if rc else (q[:, None] + fj)
        ci = torch.where(in_lead, lead_i, ci)
        fl = self._contig[ci.clamp(0, n - 1)].long()
        if rc:
            fl = self._comp[fl]
        pad = torch.full_like(al, PAD)
        return torch.where(in_allele, al, torch.where(in_lead | in_flank, fl, pad))

    def _run(self, prefix, rows, gi, req_row, req_start, req_end) -> torch.Tensor:
        """(4, m) float64 for the m variants of a batch: alt sum, ref sum, alt count, ref count.

        ``prefix`` (G, P) tokens of the batch's groups; ``rows`` (R, S) its suffix rows, row r
        continuing from group ``gi[r]``'s state; variant k sums targets ``req_start[0, k] ..
        req_end[0, k] - 1`` of row ``req_row[0, k]`` (alt) and the same of index 1 (ref)."""
        state = self.lm.allocate_state(prefix.shape[0], self.device)
        last = self._prefix_logits(prefix, state)                                  # (G, V)
        # every row continues from its group's state (a gather: the groups' rows are adjacent)
        state = [LayerState(conv=s.conv[gi], ssm=s.ssm[gi]) for s in state]
        sums, counts = self._suffix_sums(rows, state, last[gi], req_row, req_start, req_end)
        return torch.cat([sums, counts])

    def _chunk(self, rows: int) -> int:
        return max(64, self.budget // max(rows, 1))

    def _prefix_logits(self, ids, state) -> torch.Tensor:
        """Run ``ids`` (R, L) from ``state`` (updated); the last position's logits (R, V). The
        head runs on that position only."""
        c = self._chunk(ids.shape[0])
        for s in range(0, ids.shape[1], c):
            hidden = self.lm.backbone(ids[:, s: s + c], state=state)               # (R, c, d)
        return self.lm.lm_head(hidden[:, -1])[..., : self.lm.config.vocab_size]

    def _suffix_sums(self, ids, state, first_logits, req_row, req_start, req_end):
        """Run ``ids`` (R, S) from ``state``; for each request (row, start, end) the summed target
        log-probs and scored counts of the row's targets ``start .. end-1``, both (k, m) float64
        (two cumulative sums read off per request: up to ``end - 1`` and up to ``start - 1``).

        Target 0 is predicted by ``first_logits`` (R, V), target j >= 1 by the logits at j - 1;
        the last column is only a target, so columns 0 .. S-2 are run."""
        R, S = ids.shape
        rr = req_row.reshape(-1).repeat(2)
        ends = torch.cat([req_end.reshape(-1), req_start.reshape(-1)])
        val = torch.zeros(rr.shape[0], dtype=torch.float64, device=ids.device)
        cnt = torch.zeros_like(val)
        acc = torch.zeros(R, dtype=torch.float64, device=ids.device)
        acn = torch.zeros_like(acc)

        def take(lp, keep, t0):   # targets t0 .. t0+c-1 of every row
            nonlocal val, cnt, acc, acn
            cs = torch.cumsum(lp.double(), 1) + acc[:, None]
            cc = torch.cumsum(keep.double(), 1) + acn[:, None]
            t1 = t0 + lp.shape[1]
            hit = (ends > t0) & (ends <= t1)
            j = (ends - 1 - t0).clamp(0, t1 - t0 - 1)
            val = torch.where(hit, cs[rr, j], val)
            cnt = torch.where(hit, cc[rr, j], cnt)
            acc, acn = cs[:, -1], cc[:, -1]

        lp, keep = target_log_probs(first_logits, ids[:, 0])
        take(lp[:, None], keep[:, None], 0)
        c = self._chunk(R)
        for s in range(0, S - 1, c):
            e = min(s + c, S - 1)
            logits = self.lm(ids[:, s: e], state=state)                               # (R, e-s, V)
            lp, keep = target_log_probs(logits, ids[:, s + 1: e + 1])
            take(lp, keep, s + 1)
        m = req_row.numel()
        return (val[:m] - val[m:]).view(req_row.shape), (cnt[:m] - cnt[m:]).view(req_row.shape)


__all__ = ["VariantScorer", "PendingScores", "StrandScores", "StrandPlan", "plan_strand", "pad_alleles", "encode_alleles", "flank_lengths", "anchors", "MAX_WINDOW", "MIN_WINDOW", "DEFAULT_GRID"]
