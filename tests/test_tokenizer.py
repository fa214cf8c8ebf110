"""Tests for mamba_genome.data.tokenizer: vocabulary, encoding rules, reverse complement."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mamba_genome.data import tokenizer as tk
from mamba_genome.errors import InputFileError


def test_vocabulary_is_fixed():
    assert tk.VOCAB == ["<pad>", "<bos>", "<eos>", "<mask>", "<unk>", "A", "C", "G", "T", "N"]
    assert tk.VOCAB_SIZE == 10
    assert (tk.PAD, tk.BOS, tk.EOS, tk.MASK, tk.UNK) == (0, 1, 2, 3, 4)
    assert (tk.A, tk.C, tk.G, tk.T, tk.N) == (5, 6, 7, 8, 9)
    assert tk.TOKENIZER_VERSION == 1
    assert all(tk.VOCAB[i] == s for s, i in tk.SPECIAL_TOKENS.items())


@pytest.mark.parametrize("seq", ["ACGTN", b"ACGTN", "acgtn", b"AcGtN"], ids=["str", "bytes", "lower", "mixed"])
def test_encode_bases_any_case(seq):
    out = tk.encode(seq)
    assert out.dtype == np.uint8
    assert out.tolist() == [5, 6, 7, 8, 9]


def test_iupac_becomes_n_and_is_counted():
    tokens, n_iupac = tk.encode_with_stats("ACRYKMSWBDHVryk" + "N")
    assert tokens.tolist() == [5, 6] + [9] * 14
    assert n_iupac == 13  # the trailing N is not an IUPAC code
    assert tk.encode_with_stats("ACGT")[1] == 0


def test_empty_sequence():
    assert tk.encode("").shape == (0,)
    assert tk.decode(tk.encode("")) == ""


@pytest.mark.parametrize("bad,char,pos", [("ACGX", "'X'", 14), ("AC-G", "'-'", 13), ("ACé", "'é'", 13), ("A\nC", "line break", 12)])
def test_invalid_byte_names_record_and_position(bad, char, pos):
    with pytest.raises(InputFileError) as exc:
        tk.encode(bad, name="chr7", offset=10)
    msg = str(exc.value)
    assert "chr7" in msg and f"position {pos}" in msg and char in msg
    assert "\n" not in msg
    with pytest.raises(InputFileError):
        tk.encode_with_stats(bad, name="chr7")


def test_decode_roundtrip_and_specials():
    seq = "ACGTNNACGT"
    assert tk.decode(tk.encode(seq)) == seq
    assert tk.decode(torch.tensor([1, 5, 3, 2, 0])) == "<bos>A<mask><eos><pad>"
    with pytest.raises(ValueError):
        tk.decode([10])


def test_reverse_complement_numpy():
    t = tk.encode("AACGTN")
    rc = tk.reverse_complement_tokens(t)
    assert isinstance(rc, np.ndarray) and rc.dtype == np.uint8
    assert tk.decode(rc) == "NACGTT"
    batch = np.stack([t, tk.encode("GGGCCC")])
    rc2 = tk.reverse_complement_tokens(batch)
    assert rc2.shape == (2, 6)
    assert tk.decode(rc2[1]) == "GGGCCC"
    # specials unchanged, involution
    s = np.array([1, 5, 6, 3, 2], dtype=np.uint8)
    assert tk.reverse_complement_tokens(s).tolist() == [2, 3, 7, 8, 1]
    assert np.array_equal(tk.reverse_complement_tokens(tk.reverse_complement_tokens(batch)), batch)


@pytest.mark.parametrize("dtype", [torch.long, torch.uint8])
def test_reverse_complement_torch(dtype):
    t = torch.tensor([[5, 5, 6, 7, 8, 9], [1, 5, 6, 7, 8, 2]], dtype=dtype)
    rc = tk.reverse_complement_tokens(t)
    assert isinstance(rc, torch.Tensor) and rc.dtype == dtype and rc.shape == t.shape
    assert rc[0].tolist() == [9, 5, 6, 7, 8, 8]
    assert rc[1].tolist() == [2, 5, 6, 7, 8, 1]
    assert torch.equal(tk.reverse_complement_tokens(rc), t)


def test_reverse_complement_string():
    assert tk.reverse_complement("AACGTn") == "nACGTT"
    assert tk.reverse_complement("ACGR") == "YCGT"


def test_encode_is_fast_on_a_megabase():
    # A per-character Python loop would take ~0.3 s here; the table takes ~1 ms.
    import time

    seq = b"ACGTacgtNR" * 100_000
    t0 = time.perf_counter()
    tokens, n_iupac = tk.encode_with_stats(seq)
    assert time.perf_counter() - t0 < 0.1
    assert n_iupac == 100_000 and tokens.size == 1_000_000
