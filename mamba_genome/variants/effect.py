"""Zero-shot variant effects: the log-likelihood ratio of alt and ref windows, by prefix reuse.

For a variant whose REF allele starts at 0-based position ``p`` of a contig, with window
length ``W`` (``--window``), the two windows are (``Lf = W // 2``, ``Rf = W - W // 2 - 1``)::

    ref window = contig[p-Lf : p] + REF + contig[p+len(REF) : p+len(REF)+Rf]
    alt window = contig[p-Lf : p] + ALT + contig[p+len(REF) : p+len(REF)+Rf]

i.e. the same left and right flanks around each allele (an SNV's windows are exactly ``W``
long; an indel's alt window is ``len(ALT) - len(REF)`` longer than its ref window). Under a
causal model the positions of the shared left flank have identical log-probabilities in both
windows, so

    llr = log P(alt window) - log P(ref window)
        = sum_{j in alt suffix} log P(x_j | x_<j) - sum_{j in ref suffix} log P(x_j | x_<j)

where a *suffix* is the allele plus the right flank. The recurrent state after the left flank
is computed **once** and both suffixes are run from it (the first suffix base is predicted by
the flank's last logits), so a variant costs ``Lf + 2 (len + Rf)`` positions instead of
``2 W``. ``llr_per_base`` is the length-normalised version: the mean log-probability per
scored base of the alt suffix minus that of the ref suffix (``llr / (len + Rf)`` for an SNV).
Only A/C/G/T targets are scored (:mod:`mamba_genome.model.likelihood`).

The reverse strand is the same computation on the reverse complement of both windows: its
shared prefix is the reverse-complemented right flank and its suffixes are the
reverse-complemented allele plus the reverse-complemented left flank. ``llr`` is the mean of
the two strands by default.

Everything per batch is tensor work on the model's device: the contig is uploaded once as a
token tensor and the windows are cut from it by one gather per batch; no Python runs per
variant. Windows are streamed through the model ``chunk`` positions at a time with the state
carried, so a 2^20 window needs no more memory than a short one.
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


class VariantScorer:
    """Scores variants of one contig at a time with a loaded :class:`~mamba_genome.api.GenomeModel`.

    Args:
        model: the loaded model (its ``.lm`` is run; precision as ``model.resolve_precision``).
        window: window length ``W`` in bases (8 .. 2^20).
        both_strands: also score the reverse complement and average (``llr`` of both strands).
        batch_size: variants per batch (None: fill about ``GPU_TOKENS`` / ``CPU_TOKENS``).
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"``.
    """

    def __init__(self, model, window: int = 1024, both_strands: bool = True, batch_size: int | None = None,
                 precision: str = "auto"):
        self.gm = model
        self.lm = model.lm
        self.window = int(window)
        self.left, self.right = flank_lengths(self.window)
        self.both = both_strands
        self.precision = model.resolve_precision(precision)
        self.device = model.device
        self.budget = GPU_TOKENS if self.device.type == "cuda" else CPU_TOKENS
        self.batch_size = batch_size or max(1, self.budget // (2 * (self.right + 2)))
        self._contig_name = None
        self._contig = None
        self._comp = torch.as_tensor(COMPLEMENT, device=self.device).long()

    # ---------------------------------------------------------------- public
    def set_contig(self, name: str, tokens: np.ndarray) -> None:
        """Upload contig ``name``'s tokens (once per contig)."""
        if name != self._contig_name:
            # uint8 on the device (1 byte per base: 250 MB for human chr1); windows are widened after the gather
            self._contig = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.uint8)).to(self.device)
            self._contig_name = name

    def score(self, pos0: np.ndarray, ref: np.ndarray, ref_len: np.ndarray, alt: np.ndarray,
              alt_len: np.ndarray) -> tuple[StrandScores, StrandScores | None]:
        """Score ``n`` variants of the current contig.

        Args:
            pos0: (n,) 0-based start of each REF allele; every window must lie inside the contig.
            ref, alt: (n, A) padded allele tokens (:func:`pad_alleles`); ``ref_len``, ``alt_len`` (n,).

        Returns:
            (forward-strand scores, reverse-strand scores or None).
        """
        n = len(pos0)
        out = [torch.zeros(4, n, dtype=torch.float64, device=self.device) for _ in range(1 + self.both)]
        if n:
            # longest alleles last, so a batch's suffixes have similar lengths (little padding)
            order = np.argsort(np.maximum(ref_len, alt_len), kind="stable")
            t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device)   # noqa: E731
            w = max(ref.shape[1], alt.shape[1])
            ref, alt = (np.pad(x, ((0, 0), (0, w - x.shape[1])), constant_values=PAD) for x in (ref, alt))
            pos_t, ref_t, alt_t = t(pos0.astype(np.int64)), t(ref).long(), t(alt).long()
            rl_t, al_t = t(ref_len.astype(np.int64)), t(alt_len.astype(np.int64))
            amp = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.precision == "bf16"
                   else nullcontext())
            order_t = t(order)       # one copy: no host-to-device transfer (and wait) per batch
            with torch.no_grad(), amp:
                for b0 in range(0, n, self.batch_size):
                    idx_np = order[b0: b0 + self.batch_size]
                    width = int(max(ref_len[idx_np].max(), alt_len[idx_np].max()))
                    idx = order_t[b0: b0 + self.batch_size]
                    args = (pos_t[idx], ref_t[idx, :width], rl_t[idx], alt_t[idx, :width], al_t[idx])
                    for strand in range(1 + self.both):
                        prefix, suf_ref, suf_alt = self._windows(*args, rc=strand == 1)
                        out[strand][:, idx] = self._run(prefix, suf_ref, suf_alt)
        res = [StrandScores(*o.cpu().numpy()) for o in out]
        return res[0], (res[1] if self.both else None)

    # ------------------------------------------------------------- internals
    def _windows(self, pos, ref, rlen, alt, alen, rc: bool):
        """(shared prefix (B, P), ref suffix (B, S), alt suffix (B, S)) token tensors of one strand."""
        contig = self._contig
        left = contig[(pos - self.left)[:, None] + torch.arange(self.left, device=self.device)].long()   # (B, Lf)
        right = contig[(pos + rlen)[:, None] + torch.arange(self.right, device=self.device)].long()      # (B, Rf)
        if not rc:
            return left, _compose(ref, rlen, right), _compose(alt, alen, right)
        comp = self._comp
        prefix = comp[right.flip(1)]
        tail = comp[left.flip(1)]
        return prefix, _compose(_rc_alleles(ref, rlen, comp), rlen, tail), _compose(_rc_alleles(alt, alen, comp), alen, tail)

    def _run(self, prefix, suf_ref, suf_alt) -> torch.Tensor:
        """(4, B) float64: alt sum, ref sum, alt count, ref count over the suffixes."""
        B = prefix.shape[0]
        state = self.lm.allocate_state(B, self.device)
        first = self._prefix_logits(prefix, state) if prefix.shape[1] else None
        # both suffixes continue from the same state: the batch is doubled, alt rows first
        state = [LayerState(conv=torch.cat([s.conv, s.conv]), ssm=torch.cat([s.ssm, s.ssm])) for s in state]
        suf = torch.cat([suf_alt, suf_ref])                                            # (2B, S)
        sums, counts = self._suffix_sums(suf, state, None if first is None else torch.cat([first, first]))
        return torch.stack([sums[:B], sums[B:], counts[:B], counts[B:]])

    def _chunk(self, rows: int) -> int:
        return max(64, self.budget // max(rows, 1))

    def _prefix_logits(self, ids, state) -> torch.Tensor:
        """Run ``ids`` (R, L) from ``state`` (updated); the last position's logits (R, V)."""
        c = self._chunk(ids.shape[0])
        for s in range(0, ids.shape[1], c):
            logits = self.lm(ids[:, s: s + c], state=state)                          # (R, c, V)
        return logits[:, -1]

    def _suffix_sums(self, ids, state, first_logits):
        """Run ``ids`` (R, S) from ``state``; (summed target log-probs, scored counts), (R,) float64.

        Target 0 is predicted by ``first_logits`` (R, V) (None: target 0 is not scored), target
        j >= 1 by the logits at j - 1.
        """
        R, S = ids.shape
        sums = torch.zeros(R, dtype=torch.float64, device=ids.device)
        counts = torch.zeros(R, dtype=torch.float64, device=ids.device)
        prev = first_logits
        c = self._chunk(R)
        for s in range(0, S, c):
            seg = ids[:, s: s + c]
            logits = self.lm(seg, state=state)                                        # (R, c, V)
            if prev is None:
                pred, tgt = logits[:, :-1], seg[:, 1:]
            else:
                pred, tgt = torch.cat([prev[:, None].to(logits.dtype), logits[:, :-1]], 1), seg
            lp, keep = target_log_probs(pred, tgt)
            sums += lp.sum(1, dtype=torch.float64)
            counts += keep.sum(1)
            prev = logits[:, -1]
        return sums, counts


def _compose(allele, alen, flank):
    """Rows ``allele[i, :alen[i]] + flank[i]``, right-padded with PAD to ``A + F`` columns."""
    B, A = allele.shape
    F = flank.shape[1]
    j = torch.arange(A + F, device=allele.device)
    in_allele = j[None, :] < alen[:, None]
    a = allele.gather(1, j.clamp(max=A - 1).expand(B, -1))
    fi = j[None, :] - alen[:, None]
    in_flank = (fi >= 0) & (fi < F)
    if F:
        f = flank.gather(1, fi.clamp(0, F - 1))
    else:
        f = torch.full_like(a, PAD)
    return torch.where(in_allele, a, torch.where(in_flank, f, torch.full_like(a, PAD)))


def _rc_alleles(allele, alen, comp):
    """Reverse complement of each row's first ``alen`` tokens (PAD after)."""
    B, A = allele.shape
    j = torch.arange(A, device=allele.device)
    src = (alen[:, None] - 1 - j[None, :]).clamp(min=0)
    out = comp[allele.gather(1, src)]
    return torch.where(j[None, :] < alen[:, None], out, torch.full_like(out, PAD))


__all__ = ["VariantScorer", "StrandScores", "pad_alleles", "encode_alleles", "flank_lengths", "MAX_WINDOW", "MIN_WINDOW"]
