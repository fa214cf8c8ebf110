"""Nucleotide tokenizer: the fixed vocabulary every model and token store shares.

Vocabulary (``TOKENIZER_VERSION = 1``; changing it invalidates stores and models)::

    id  token    meaning
    0   <pad>    padding
    1   <bos>    beginning of sequence (also used as the classification token)
    2   <eos>    end of sequence / separator
    3   <mask>   masked position (masked language modelling)
    4   <unk>    unknown (never produced by :func:`encode`)
    5   A
    6   C
    7   G
    8   T
    9   N        any base that is not A/C/G/T: N and IUPAC ambiguity codes

Encoding rules (character-level, like HyenaDNA and Caduceus):
lowercase (soft-masked repeats) folds to uppercase; the IUPAC ambiguity codes
``R Y K M S W B D H V`` become ``N`` and are counted; any other byte is an
error naming the record and its 1-based position. Callers strip newlines.

Everything is a 256-entry translation table applied with ``bytes.translate``
and numpy fancy indexing, so encoding runs at memory speed, not per character.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputFileError

PAD, BOS, EOS, MASK, UNK = 0, 1, 2, 3, 4
A, C, G, T, N = 5, 6, 7, 8, 9
VOCAB = ["<pad>", "<bos>", "<eos>", "<mask>", "<unk>", "A", "C", "G", "T", "N"]
VOCAB_SIZE = len(VOCAB)
TOKENIZER_VERSION = 1
SPECIAL_TOKENS = {"<pad>": PAD, "<bos>": BOS, "<eos>": EOS, "<mask>": MASK, "<unk>": UNK}
CLS, SEP = BOS, EOS  # aliases for classification-style code

IUPAC_CODES = b"RYKMSWBDHV"

# Byte value meaning "not allowed" in ENCODE_TABLE; also a temporary marker for
# IUPAC codes in IUPAC_MARK_TABLE (both outside the vocabulary, 0..9).
INVALID = 0xFF
_IUPAC_MARK = 0xFE


def _build_tables() -> tuple[bytes, bytes]:
    enc = bytearray([INVALID]) * 256
    for ch, tok in zip(b"ACGTN", (A, C, G, T, N)):
        enc[ch] = tok
        enc[ch + 32] = tok  # lowercase
    mark = bytearray(enc)
    for ch in IUPAC_CODES:
        enc[ch] = enc[ch + 32] = N
        mark[ch] = mark[ch + 32] = _IUPAC_MARK
    return bytes(enc), bytes(mark)


#: bytes -> token ids; INVALID (255) for anything not allowed.
ENCODE_TABLE, IUPAC_MARK_TABLE = _build_tables()
#: token id -> token id of the complement (A<->T, C<->G, N and specials unchanged).
COMPLEMENT = np.array([PAD, BOS, EOS, MASK, UNK, T, G, C, A, N], dtype=np.uint8)
_DECODE = np.array(VOCAB, dtype=object)
_STR_COMPLEMENT = str.maketrans("ACGTNacgtnRYKMSWBDHVrykmswbdhv", "TGCANtgcanYRMKSWVHDByrmkswvhdb")


def _as_bytes(seq: str | bytes | bytearray | memoryview) -> bytes:
    if isinstance(seq, str):
        try:
            return seq.encode("ascii")
        except UnicodeEncodeError:
            # Keep going so the error below names the exact position.
            return seq.encode("ascii", errors="replace")
    return bytes(seq)


def _raise_invalid(seq, translated: bytes, name: str, offset: int) -> None:
    i = translated.find(bytes([INVALID]))
    ch = seq[i] if isinstance(seq, str) else bytes(seq[i : i + 1]).decode("latin-1")
    shown = "a line break" if ch in ("\r", "\n") else repr(ch)
    raise InputFileError(
        f"invalid character {shown} in record '{name}' at position {offset + i + 1:,}: "
        "sequences may only contain A, C, G, T, N and IUPAC codes (upper or lower case)"
    )


def encode_with_stats(
    seq: str | bytes, *, name: str = "sequence", offset: int = 0
) -> tuple[np.ndarray, int]:
    """Encode a nucleotide sequence and count its IUPAC ambiguity codes.

    Args:
        seq: bases as ``str`` or ``bytes`` with no line breaks, shape ``[L]``.
        name: record name used in error messages.
        offset: 0-based position of ``seq[0]`` in its record (for messages).

    Returns:
        ``(tokens, n_iupac)``: ``tokens`` is ``uint8 [L]``; ``n_iupac`` the
        number of IUPAC codes (R Y K M S W B D H V) that became ``N``.

    Raises:
        InputFileError: on any other character, naming ``name`` and position.
    """
    raw = _as_bytes(seq)
    marked = raw.translate(IUPAC_MARK_TABLE)
    if INVALID in marked:  # bytes membership test for an int: a C-level scan
        _raise_invalid(seq, marked, name, offset)
    n_iupac = marked.count(_IUPAC_MARK)
    if n_iupac:
        tokens = raw.translate(ENCODE_TABLE)
    else:
        tokens = marked
    return np.frombuffer(tokens, dtype=np.uint8).copy(), n_iupac


def encode(seq: str | bytes, *, name: str = "sequence", offset: int = 0) -> np.ndarray:
    """Encode a nucleotide sequence to ``uint8`` token ids, shape ``[L]``.

    Example:
        >>> encode("ACgtNr").tolist()
        [5, 6, 7, 8, 9, 9]
    """
    raw = _as_bytes(seq)
    tokens = raw.translate(ENCODE_TABLE)
    if INVALID in tokens:
        _raise_invalid(seq, tokens, name, offset)
    return np.frombuffer(tokens, dtype=np.uint8).copy()


def decode(tokens) -> str:
    """Token ids (numpy, torch or list; shape ``[L]``) back to a string.

    Bases decode to ``ACGTN``; special tokens render as ``<pad>``, ``<mask>`` ...

    Example:
        >>> decode([1, 5, 6, 3])
        '<bos>AC<mask>'
    """
    arr = _to_numpy(tokens).astype(np.int64, copy=False).reshape(-1)
    if arr.size and (arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        raise ValueError(f"token ids must be in [0, {VOCAB_SIZE}), got {arr.min()}..{arr.max()}")
    return "".join(_DECODE[arr])


def _to_numpy(tokens) -> np.ndarray:
    if hasattr(tokens, "detach"):  # torch.Tensor
        return tokens.detach().cpu().numpy()
    return np.asarray(tokens)


def reverse_complement_tokens(tokens):
    """Reverse complement token ids along the last axis.

    Works on numpy arrays and torch tensors of any shape ``[..., L]`` and
    returns the same type (and device, for torch). ``N`` and special tokens
    are kept as they are.
    """
    if hasattr(tokens, "detach"):  # torch.Tensor
        import torch

        table = torch.as_tensor(COMPLEMENT, device=tokens.device).to(tokens.dtype)
        return table[tokens.long()].flip(-1)
    arr = np.asarray(tokens)
    return COMPLEMENT[arr].astype(arr.dtype, copy=False)[..., ::-1].copy()


def reverse_complement(seq: str) -> str:
    """Reverse complement of a DNA string; case and IUPAC codes are preserved."""
    return seq.translate(_STR_COMPLEMENT)[::-1]


__all__ = [
    "PAD", "BOS", "EOS", "MASK", "UNK", "A", "C", "G", "T", "N", "CLS", "SEP",
    "VOCAB", "VOCAB_SIZE", "TOKENIZER_VERSION", "SPECIAL_TOKENS", "IUPAC_CODES",
    "ENCODE_TABLE", "COMPLEMENT",
    "encode", "encode_with_stats", "decode", "reverse_complement_tokens", "reverse_complement",
]
