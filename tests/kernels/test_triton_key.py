"""Triton's compiler cache key kept on disk (kernels/utils.py: stored_triton_key, memoise_triton_key)."""
from __future__ import annotations

import json
import os

import pytest

from mamba_genome.kernels import utils


def _fake_triton(root):
    """A directory with the files Triton's key hashes: runtime/cache.py, compiler/, backends/,
    language/ sources and _C/libtriton.so."""
    for rel, text in (("runtime/cache.py", "x = 1\n"), ("compiler/compiler.py", "y = 2\n"),
                      ("backends/nvidia/compiler.py", "z = 3\n"), ("language/core.py", "w = 4\n"),
                      ("_C/libtriton.so", "\0lib")):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


class Counter:
    def __init__(self, key="KEY-1"):
        self.calls, self.key = 0, key

    def __call__(self):
        self.calls += 1
        return self.key


def test_key_is_computed_once_then_read_back(tmp_path):
    tdir, cache = _fake_triton(tmp_path / "triton"), tmp_path / "cache"
    orig = Counter()
    assert utils.stored_triton_key(orig, str(tdir), "3.6.0", str(cache)) == "KEY-1"
    assert orig.calls == 1
    stored = json.loads((cache / utils._TRITON_KEY_FILE).read_text())
    assert stored["key"] == "KEY-1" and len(stored["fingerprint"]) == 64
    assert [p.name for p in cache.iterdir()] == [utils._TRITON_KEY_FILE]   # no temp file left
    for _ in range(3):   # later processes: read, not recomputed
        assert utils.stored_triton_key(orig, str(tdir), "3.6.0", str(cache)) == "KEY-1"
    assert orig.calls == 1


@pytest.mark.parametrize("change", ["source", "library", "new_file", "version"])
def test_key_is_recomputed_when_triton_changes(tmp_path, change):
    tdir, cache = _fake_triton(tmp_path / "triton"), tmp_path / "cache"
    utils.stored_triton_key(Counter("OLD"), str(tdir), "3.6.0", str(cache))
    version = "3.6.0"
    if change == "source":
        (tdir / "compiler" / "compiler.py").write_text("y = 22\n")      # another size
    elif change == "library":
        lib = tdir / "_C" / "libtriton.so"
        st = os.stat(lib)
        os.utime(lib, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))   # same size, new mtime
    elif change == "new_file":
        (tdir / "language" / "extra.py").write_text("v = 5\n")
    else:
        version = "3.7.0"
    new = Counter("NEW")
    assert utils.stored_triton_key(new, str(tdir), version, str(cache)) == "NEW"
    assert new.calls == 1
    assert json.loads((cache / utils._TRITON_KEY_FILE).read_text())["key"] == "NEW"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"fingerprint": 3}', ""])
def test_a_damaged_file_is_replaced(tmp_path, content):
    tdir, cache = _fake_triton(tmp_path / "triton"), tmp_path / "cache"
    cache.mkdir()
    (cache / utils._TRITON_KEY_FILE).write_text(content)
    orig = Counter()
    assert utils.stored_triton_key(orig, str(tdir), "3.6.0", str(cache)) == "KEY-1"
    assert orig.calls == 1
    assert json.loads((cache / utils._TRITON_KEY_FILE).read_text())["key"] == "KEY-1"


def test_unwritable_cache_or_missing_triton_files_still_give_the_key(tmp_path):
    tdir = _fake_triton(tmp_path / "triton")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    orig = Counter()
    assert utils.stored_triton_key(orig, str(tdir), "3.6.0", str(blocker / "cache")) == "KEY-1"
    assert utils.stored_triton_key(orig, str(tmp_path / "nowhere"), "3.6.0", str(tmp_path / "c")) == "KEY-1"
    assert orig.calls == 2


def test_memoised_key_equals_tritons_own():
    pytest.importorskip("triton")
    assert utils.triton_available()
    import triton.runtime.cache as tc

    if not getattr(tc.triton_key, "memoised_by_mamba_genome", False):
        pytest.skip("this Triton has no triton.runtime.cache.triton_key to memoise")
    assert tc.triton_key() == tc.triton_key.original()


def test_opt_out_leaves_triton_alone(monkeypatch):
    pytest.importorskip("triton")
    import triton.runtime.cache as tc

    current = tc.triton_key
    original = getattr(current, "original", current)
    monkeypatch.setattr(tc, "triton_key", original)
    monkeypatch.setenv(utils.TRITON_KEY_MEMO_ENV, "0")
    utils.memoise_triton_key()
    assert tc.triton_key is original
    monkeypatch.delenv(utils.TRITON_KEY_MEMO_ENV)
    utils.memoise_triton_key()
    assert getattr(tc.triton_key, "memoised_by_mamba_genome", False) and tc.triton_key.original is original
