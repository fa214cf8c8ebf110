"""Output files and folders: one policy for everything the tool writes.

Owns where and how results land on disk, for every command (``-o/--out``,
``--json``, model directories, run-directory files):

- :func:`check_output_path` runs *before* any work. It refuses a directory, a
  parent that is a file or cannot be created or written (``/proc/x.tsv``), an
  existing read-only file, and an output that is one of the command's inputs
  (the same path after resolving symlinks, the same file through a hard link,
  or a path inside an input folder such as the model directory). Missing
  parent folders are created. Every refusal is one-line :class:`UserError`.
- *Regular files* are written to a hidden temporary beside the target,
  ``.NAME.tmp-PID-HOST[.ext]``, and moved into place with ``os.replace`` when
  complete, so no reader ever sees a half-written file under the final name.
  A replaced file keeps its permission bits; a new file gets
  ``0o666 & ~umask`` and new folders ``0o777 & ~umask`` (``tempfile.mkstemp``
  / ``mkdtemp`` would give 600 / 700, unreadable to a lab's other users).
- A *symlink* is followed: its target is replaced atomically, the link stays.
- ``-``, ``/dev/stdout``, ``/dev/fd/N``, FIFOs and character devices are
  *written through*, in order (text rows can be flushed as they are produced:
  ``classify | head`` sees rows early). A format that needs a seekable file
  (HDF5, .npz, Parquet) is built in ``$TMPDIR`` and copied in at the end.
- Temporaries are removed on an exception, ``KeyboardInterrupt``, SIGTERM or
  SIGHUP (while a temporary is live and the signal has no other handler, it
  exits with status 128+signal after removing them). Those of processes that
  died without cleaning up (SIGKILL, power loss) are removed by the next run
  writing the same output: the temporary names carry the PID and host, and
  only temporaries of this host whose PID is gone are touched.

Public helpers: :func:`check_output_path`, :func:`check_not_input`,
:func:`open_output`, :class:`PendingOutput` (a temporary *path*, for writers
such as h5py or safetensors that want a file name), :func:`atomic_write_text`,
:func:`atomic_dir` (model directories), :func:`remove_stale_temps`,
:func:`default_file_mode` / :func:`default_dir_mode`.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from .errors import UserError

# ------------------------------------------------------------------------- modes


def current_umask() -> int:
    """The process umask (read from /proc on Linux, so no window where it is changed)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """Mode of a new file, as ``open()`` would create it: ``0o666 & ~umask`` (644 under umask 022)."""
    return 0o666 & ~current_umask()


def default_dir_mode() -> int:
    """Mode of a new folder, as ``mkdir`` would create it: ``0o777 & ~umask`` (755 under umask 022)."""
    return 0o777 & ~current_umask()


def apply_default_modes(root: str | os.PathLike) -> None:
    """Give ``root`` and everything below it (a tree this process just wrote) the umask-derived modes."""
    root = Path(root)
    fmode, dmode = default_file_mode(), default_dir_mode()
    if root.is_symlink():
        return
    if root.is_dir():
        for d, dirs, files in os.walk(root):
            os.chmod(d, dmode)
            for f in files:
                p = os.path.join(d, f)
                if not os.path.islink(p):
                    os.chmod(p, fmode)
    else:
        os.chmod(root, fmode)


# -------------------------------------------------------------- temporary names

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname().split(".")[0])[:32] or "host"


def _temp_name(name: str, kind: str = "tmp", suffix: str = "") -> str:
    """``.NAME.tmp-PID-HOST<suffix>``: hidden, never mistaken for the output, traceable to its writer."""
    return f".{name}.{kind}-{os.getpid()}-{_HOST}{suffix}"


def _stale_pattern(name: str) -> re.Pattern:
    esc = re.escape(name)
    # ours: .NAME.tmp-PID-HOST[.anything]; older releases: .NAME.tmp-PID[.ext] and .NAME.tmp-PID-embeddings.npy
    return re.compile(rf"^\.{esc}\.(?P<kind>tmp|old)-(?P<pid>\d+)"
                      rf"(?:-{re.escape(_HOST)}(?:\..*)?|(?P<legacy>(?:\.[A-Za-z0-9]+)?|-embeddings\.npy))$")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's live process (or not a PID we can ask about): leave it alone
    return True


def _remove(p: Path) -> None:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``path`` left by dead processes of this host; returns what was removed.

    A ``.NAME.old-PID-HOST`` folder (a model directory moved aside while its
    replacement was renamed in) is moved back if ``NAME`` itself is missing,
    so a kill between the two renames never loses the previous model.
    """
    path = Path(path)
    parent = path.parent
    pat = _stale_pattern(path.name)
    removed: list[Path] = []
    try:
        entries = [e.name for e in os.scandir(parent) if e.name.startswith(f".{path.name}.")]
    except OSError:
        return removed
    for entry in entries:
        m = pat.match(entry)
        if m is None or _pid_alive(int(m["pid"])):
            continue
        p = parent / entry
        if m["kind"] == "old" and not os.path.lexists(path):
            try:
                os.replace(p, path)  # the only copy of the previous output: put it back
            except OSError:
                pass
            continue
        _remove(p)
        removed.append(p)
    return removed


# ------------------------------------------------- cleanup on signals (SIGTERM)

_LIVE: dict[int, Path] = {}
_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)
_PREVIOUS: dict[int, object] = {}


def _on_signal(signum, frame):  # pragma: no cover - exercised through a subprocess test
    live = list(_LIVE.values())
    for p in live:
        _remove(p)
    _restore_handlers()
    name = signal.Signals(signum).name
    with contextlib.suppress(Exception):
        sys.stderr.write(f"interrupted by {name}; removed {len(live)} unfinished output file(s)\n")
        sys.stderr.flush()
    raise SystemExit(128 + signum)


def _install_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for s in _SIGNALS:
        if s in _PREVIOUS:
            continue
        try:
            if signal.getsignal(s) is signal.SIG_DFL:  # someone else's handler (Lightning, the caller) wins
                signal.signal(s, _on_signal)
                _PREVIOUS[s] = signal.SIG_DFL
        except (ValueError, OSError):
            pass


def _restore_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for s, prev in list(_PREVIOUS.items()):
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(s) is _on_signal:
                signal.signal(s, prev)
        _PREVIOUS.pop(s, None)


def _track(p: Path) -> int:
    key = id(p)
    _LIVE[key] = p
    _install_handlers()
    return key


def _untrack(key: int) -> None:
    _LIVE.pop(key, None)
    if not _LIVE:
        _restore_handlers()


# -------------------------------------------------------------------- checking

_STDOUT_NAMES = ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")
_FD_LINK = re.compile(r"^/(?:dev/(?:fd/\d+|stdout|stderr)|proc/(?:self|thread-self|\d+)/fd/\d+)$")


@dataclass(frozen=True)
class OutputTarget:
    """A checked output location (from :func:`check_output_path`).

    ``kind``: ``"file"`` (a regular file, written atomically; ``target`` is
    the resolved path that is replaced, the symlink's target for a link),
    ``"stdout"`` or ``"stream"`` (a FIFO, character device or ``/dev/fd/N``,
    written through at ``target``).
    """

    path: Path  # as given (shown in messages and results)
    kind: str
    target: Path

    @property
    def streaming(self) -> bool:
        """Whether bytes reach a reader as they are written (stdout, a pipe, a device)."""
        return self.kind != "file"

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)


def _fd_link(path: str) -> str | None:
    """The first ``/dev/stdout``-like name on ``path``'s chain of symlinks, if any.

    ``os.path.realpath`` would turn ``/dev/stdout`` into whatever fd 1 is open
    on (a pipe's pseudo-name, a deleted file), which must never be replaced.
    """
    p = os.path.abspath(path)
    for _ in range(40):
        if _FD_LINK.match(p):
            return p
        if not os.path.islink(p):
            return None
        try:
            p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
        except OSError:
            return None
    return None


def is_stdout(path) -> bool:
    """Whether ``path`` names standard output (``-``, ``/dev/stdout``, ``/dev/fd/1``)."""
    if isinstance(path, OutputTarget):
        return path.kind == "stdout"
    if path is None:
        return False
    return str(path) == "-" or _fd_link(str(path)) in _STDOUT_NAMES[1:]


def _first_existing_ancestor(p: Path) -> Path:
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def ensure_parent(path: str | os.PathLike, *, flag: str = "-o/--out", shown=None) -> Path:
    """Create ``path``'s missing parent folders and check a file can be created there; returns the parent."""
    path = Path(path)
    shown = path if shown is None else shown
    parent = path.parent
    anc = _first_existing_ancestor(parent)
    if os.path.lexists(anc) and not anc.is_dir():
        raise UserError(f"{flag} {shown}: cannot create directory {parent} ({anc} is a file, not a directory); "
                        "choose another location")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{flag} {shown}: cannot create directory {parent} ({exc.strerror}); "
                        "choose another location") from None
    probe = parent / _temp_name(path.name, "probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"{flag} {shown}: cannot write in {parent} ({exc.strerror}); choose another location") from None
    return parent


def check_not_input(path: str | os.PathLike, inputs: Iterable, *, flag: str = "-o/--out", shown=None) -> None:
    """Refuse an output that is one of ``inputs`` or lies inside an input folder.

    Compares resolved paths (symlinks followed) and, where both exist, inodes
    (``os.path.samefile``, which catches hard links). ``None`` inputs and
    inputs that do not exist are skipped (their own check reports them).

    Raises:
        UserError: one line naming the input that would be overwritten.
    """
    path = Path(path)
    shown = path if shown is None else shown
    real_out = Path(os.path.realpath(path))
    out_exists = os.path.exists(path)
    for inp in inputs:
        if inp is None or not os.path.exists(inp):
            continue
        real_in = Path(os.path.realpath(inp))
        same = real_out == real_in
        if not same and out_exists:
            with contextlib.suppress(OSError):
                same = os.path.samefile(path, inp)
        if same:
            raise UserError(f"{flag} {shown} is the input {inp}; writing it would destroy the input; "
                            "choose another output path")
        if real_in.is_dir() and real_in in real_out.parents:
            raise UserError(f"{flag} {shown} is inside the input directory {inp}; choose a path outside it")


def check_output_path(path: str | os.PathLike, inputs: Iterable = (), *, flag: str = "-o/--out",
                      allow_stream: bool = True, example: str | None = None) -> OutputTarget:
    """Check an output file location before any work; create missing parent folders.

    Args:
        path: the output as the user gave it; ``-`` means standard output.
        inputs: the command's input files and folders (FASTA, BED, model
            directory, store, embedding file...); ``None`` entries are skipped.
        flag: the option named in messages.
        allow_stream: accept stdout, FIFOs and devices (False for outputs that
            must be regular files).
        example: a file name suggested when ``path`` is a directory.

    Returns:
        :class:`OutputTarget` saying how the output will be written.

    Raises:
        UserError: one line saying what is wrong with the location.
    """
    given = Path(path)
    s = str(path)
    via = _fd_link(s) if s != "-" else None
    if s == "-" or via in _STDOUT_NAMES[1:]:
        if not allow_stream:
            raise UserError(f"{flag} {s}: this output must be a regular file, not standard output")
        return OutputTarget(given, "stdout", given)
    try:
        st = os.stat(given)  # follows symlinks
    except (FileNotFoundError, NotADirectoryError):  # a parent that is a file is reported below
        st = None
    except OSError as exc:
        raise UserError(f"{flag} {given}: cannot be used ({exc.strerror}); choose another location") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        hint = f"; give a file name such as {given / example}" if example else "; give a file name inside it"
        raise UserError(f"{flag} {given} is a directory{hint}")
    if st is not None and (not stat.S_ISREG(st.st_mode) or via is not None):
        if not allow_stream:
            raise UserError(f"{flag} {given} is not a regular file (a FIFO, device or descriptor); "
                            "give a file path")
        if stat.S_ISSOCK(st.st_mode) or stat.S_ISBLK(st.st_mode):
            raise UserError(f"{flag} {given} is a socket or block device; give a file path")
        if not os.access(given, os.W_OK):
            raise UserError(f"{flag} {given} is not writable; choose another location")
        return OutputTarget(given, "stream", given)
    target = Path(os.path.realpath(given))  # a symlink's target (dangling or not) is what gets written
    check_not_input(given, inputs, flag=flag)
    if st is not None and not os.access(target, os.W_OK):
        raise UserError(f"{flag} {given} exists and is read-only; choose another location")
    ensure_parent(target, flag=flag, shown=given)
    remove_stale_temps(target)
    return OutputTarget(given, "file", target)


def _as_target(out) -> OutputTarget:
    return out if isinstance(out, OutputTarget) else check_output_path(out)


# --------------------------------------------------------------------- writing

_COUNTER = itertools.count()


class PendingOutput:
    """A temporary path that becomes the output on :meth:`commit` (or vanishes on :meth:`abort`).

    For writers that need a file name (h5py, safetensors, pyarrow, savefig).
    For a regular file the temporary sits beside the target and is renamed
    over it; for stdout or a stream it lives in ``$TMPDIR`` and its bytes are
    copied to the output on commit. Use as a context manager: leaving the
    block normally commits, an exception aborts.

    Example:
        >>> with PendingOutput("emb.h5", suffix=".h5") as p:  # doctest: +SKIP
        ...     h5py.File(p.tmp, "w").close()
    """

    def __init__(self, out, suffix: str = ""):
        self.out = _as_target(out)
        if self.out.kind == "file":
            base = self.out.target
            remove_stale_temps(base)
        else:
            base = Path(tempfile.gettempdir()) / "mamba-genome-out"
            remove_stale_temps(base)
            suffix = f".{next(_COUNTER)}{suffix}"  # several outputs of one process may be built here at once
        self._base = base
        self.tmp = base.parent / _temp_name(base.name, suffix=suffix)
        self._keys = [_track(self.tmp)]
        self._side: list[Path] = []
        self.done = False

    def side_path(self, tag: str) -> Path:
        """A second temporary (e.g. a memory-mapped array) removed when the output is finished."""
        p = self._base.parent / _temp_name(self._base.name, suffix=f".{tag}")
        self._side.append(p)
        self._keys.append(_track(p))
        return p

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False

    def commit(self) -> Path:
        """Move (or copy) the finished temporary into place; returns the output path as given."""
        if self.done:
            return self.out.path
        try:
            if self.out.kind == "file":
                _fsync(self.tmp)
                try:
                    mode = stat.S_IMODE(os.stat(self.out.target).st_mode)
                except FileNotFoundError:
                    mode = default_file_mode()
                os.chmod(self.tmp, mode)
                os.replace(self.tmp, self.out.target)
                _fsync(self.out.target.parent)
            else:
                with open(self.tmp, "rb") as src, _open_stream(self.out, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        except BaseException:
            self.abort()
            raise
        self._finish()
        return self.out.path

    def abort(self) -> None:
        """Remove the temporaries; any previous output is left as it was."""
        self._finish()

    def _finish(self) -> None:
        for p in (self.tmp, *self._side):
            _remove(p)
        for k in self._keys:
            _untrack(k)
        self._keys = []
        self.done = True


def _fsync(p: Path) -> None:
    """Flush a file, or a directory's entries, to disk (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _open_stream(out: OutputTarget, mode: str, **kw) -> Iterator[IO]:
    if out.kind == "stdout":
        fh = sys.stdout.buffer if "b" in mode else sys.stdout
        try:
            yield fh
        finally:
            fh.flush()
        return
    try:
        fh = open(out.target, mode, **kw)
    except OSError as exc:
        raise UserError(f"cannot open {out.path} for writing ({exc.strerror})") from None
    with fh:
        yield fh


@contextlib.contextmanager
def open_output(out, mode: str = "w", *, encoding: str | None = "utf-8", newline: str | None = None) -> Iterator[IO]:
    """Open an output for writing: atomically for a regular file, written through otherwise.

    Args:
        out: a path (``-`` = stdout) or an :class:`OutputTarget` from :func:`check_output_path`.
        mode: ``"w"`` (text) or ``"wb"``.

    Yields:
        A file object. For a regular file it writes a hidden temporary that
        replaces the target when the block ends without an exception (and is
        removed otherwise); for stdout, a pipe or a device, the output itself.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    kw = {} if "b" in mode else {"encoding": encoding, "newline": newline}
    out = _as_target(out)
    if out.streaming:
        with _open_stream(out, mode, **kw) as fh:
            yield fh
        return
    with PendingOutput(out) as pending:
        with open(pending.tmp, mode, **kw) as fh:
            yield fh


def atomic_write_text(out, text: str) -> Path:
    """Write ``text`` to ``out`` (see :func:`open_output`); returns the path as given."""
    out = _as_target(out)
    with open_output(out, "w") as fh:
        fh.write(text)
    return out.path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, flag: str = "--out") -> Iterator[Path]:
    """Build a directory in a temporary beside ``path`` and move it into place when the block ends.

    Yields the temporary folder to fill. On success the tree gets the
    umask-derived modes, an existing ``path`` is moved aside and removed after
    the new one is in place; on an exception (or SIGTERM) the temporary is
    removed and ``path`` is untouched. A symlinked ``path`` replaces its target.
    """
    path = Path(os.path.realpath(path))
    if os.path.lexists(path) and not path.is_dir():
        raise UserError(f"{flag} {path} exists and is not a directory; choose another location")
    ensure_parent(path, flag=flag)
    remove_stale_temps(path)
    tmp = path.parent / _temp_name(path.name)
    _remove(tmp)
    key = _track(tmp)
    try:
        tmp.mkdir()
        yield tmp
        apply_default_modes(tmp)
        if os.path.lexists(path):
            old = path.parent / _temp_name(path.name, "old")
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        _untrack(key)


__all__ = ["OutputTarget", "PendingOutput", "check_output_path", "check_not_input", "ensure_parent", "open_output",
           "atomic_write_text", "atomic_dir", "remove_stale_temps", "apply_default_modes", "default_file_mode",
           "default_dir_mode", "current_umask", "is_stdout"]
