"""The run-directory policy of every training command (``pretrain``, ``finetune``).

One policy, in one place:

- ``--out`` must be a directory (or not exist yet), must not be, or lie inside,
  an input of the run (a token store, a ``--from`` model directory), and must
  be creatable: anything else is one :class:`~mamba_genome.errors.UserError` line.
- A non-empty ``--out`` is refused unless ``--resume`` (continue it) or
  ``--force`` (start over). ``--force`` deletes only what a run of ours wrote:
  a run directory carries a marker file, :data:`MARKER`, that names the
  command and the entries its runs write; ``--force`` removes those entries
  and nothing else, and refuses a non-empty directory without the marker
  (someone else's files; a run from before markers is recognised by its
  ``args.json`` / ``metrics.json``, see :func:`legacy_command`).
- A live run holds an exclusive ``fcntl.flock`` on :data:`LOCK_NAME` in its
  directory (the file also holds its PID). A second run on the same
  directory fails at once, naming that PID. The operating system drops the
  lock when the process ends, however it ends (``kill -9`` included), so a
  stale lock file never blocks a ``--resume``. With several processes (DDP)
  only rank 0 takes it (:func:`launch_rank`).
- Without ``--out`` a run goes to ``runs/<command>-<timestamp>`` (:func:`default_run_dir`).
  The other ranks of a multi-process run (Lightning re-runs the command line for them) use the
  directory rank 0 published in :data:`RUN_DIR_ENV`, and neither check nor lock it
  (:func:`resolve_run_dir`); several processes started by torchrun / srun need ``--out``.
- ``--resume`` needs a readable ``last.ckpt`` of ours, loaded ``weights_only``
  (:func:`check_resume_checkpoint`): anything else is one line.

Usage::

    rd = RunDir(out, "pretrain", files=RUN_FILES)
    rd.check(resume=..., force=..., inputs={"--data": store_dir})   # cheap, before slow work
    rd.prepare(resume=..., force=...)     # create, take the lock, clear our files (with --force)
    ...
    rd.release()                          # or let the process exit
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import shutil
from pathlib import Path

from ..errors import UserError

MARKER = ".mamba-genome-run.json"
LOCK_NAME = ".mamba-genome.lock"


def launch_rank() -> int:
    """0 for the process that owns the run directory; non-zero for the other ranks of a
    multi-process launch (Lightning's re-launched children, torchrun, srun)."""
    for key in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"):
        try:
            if int(os.environ.get(key) or 0) != 0:
                return int(os.environ[key])
        except ValueError:
            continue
    return 0


def default_run_dir(command: str) -> Path:
    """``runs/<command>-<YYYYmmdd-HHMMSS>``: where a run without ``--out`` goes."""
    return Path("runs") / f"{command}-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"


# Rank 0 publishes its run directory here before Lightning starts the other ranks, which
# re-run the same command line (``--devices N`` on one machine) and must not re-check it.
RUN_DIR_ENV = "MAMBA_GENOME_RUN_DIR"


def _world_size_from_env() -> int:
    for key in ("WORLD_SIZE", "SLURM_NTASKS"):
        try:
            return int(os.environ[key])
        except (KeyError, ValueError):
            continue
    return 1


def resolve_run_dir(out, command: str) -> Path:
    """The run directory of this process: ``--out``, else :func:`default_run_dir`; on the other ranks
    of a multi-process run, the one rank 0 published (:data:`RUN_DIR_ENV`)."""
    if launch_rank() != 0:
        return Path(os.environ.get(RUN_DIR_ENV) or out or default_run_dir(command))
    if not out and _world_size_from_env() > 1 and not os.environ.get(RUN_DIR_ENV):
        raise UserError("this is one of several processes (torchrun / srun): give --out so that every rank "
                        "uses the same run directory")
    return Path(out) if out else default_run_dir(command)


def check_resume_checkpoint(path) -> None:
    """Refuse an unusable ``last.ckpt`` with one line (loaded ``weights_only``: never unpickled)."""
    import pickle

    import torch

    path = Path(path)
    what = "start over with --force (or a new --out)"
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UserError(f"--resume: cannot read {path} ({exc.strerror})") from None
    if size == 0:
        raise UserError(f"--resume: {path} is empty (0 bytes; the run was killed while writing it?); {what}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise UserError(f"--resume: {path} holds Python objects other than tensors and numbers, so it was not "
                        f"written by mamba-genome and is not loaded (only weights_only checkpoints are); {what}") \
            from None
    except (RuntimeError, ValueError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--resume: {path} is truncated or corrupt ({first[:120]}); {what}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        raise UserError(f"--resume: {path} is not a mamba-genome training checkpoint (no state_dict/global_step); "
                        f"{what}")


def _resolved(p) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(p)))).resolve()


def is_within(path, parent) -> bool:
    """Whether ``path`` is ``parent`` or lies inside it (both resolved, symlinks followed)."""
    path, parent = _resolved(path), _resolved(parent)
    return path == parent or parent in path.parents


def read_marker(run_dir) -> dict | None:
    """The marker of a run directory written by mamba-genome, or None."""
    try:
        d = json.loads((Path(run_dir) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("tool") == "mamba-genome" else None


def legacy_command(run_dir) -> str | None:
    """The command of a run directory written before markers existed (recognised by its own files), or None.

    ``pretrain``: an ``args.json`` with ``args``, ``resolved`` and ``model_config``; ``finetune``:
    ``labels.json`` plus a ``metrics.json`` with ``test_accuracy``.
    """
    p = Path(run_dir)
    try:
        a = json.loads((p / "args.json").read_text())
        if isinstance(a, dict) and {"args", "resolved", "model_config"} <= set(a):
            return "pretrain"
    except (OSError, ValueError):
        pass
    try:
        m = json.loads((p / "metrics.json").read_text())
        if (p / "labels.json").is_file() and isinstance(m, dict) and "test_accuracy" in m:
            return "finetune"
    except (OSError, ValueError):
        pass
    return None


def _marker_or_legacy(run_dir, files: tuple[str, ...]) -> dict | None:
    marker = read_marker(run_dir)
    if marker is None and legacy_command(run_dir) is not None:
        marker = {"tool": "mamba-genome", "command": legacy_command(run_dir), "files": list(files)}
    return marker


def lock_holder(run_dir) -> int | None:
    """The PID of the live run holding ``run_dir``'s lock, or None if nobody holds it."""
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            return _read_pid(path) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _busy_error(run_dir: Path, pid: int | None) -> UserError:
    who = f"PID {pid}" if pid and pid > 0 else "another process"
    return UserError(f"run directory {run_dir} is in use by a running mamba-genome run ({who}); wait for it "
                     "to finish, stop it, or choose another --out")


class RunDir:
    """The run directory of one ``command`` run.

    Args:
        path: the ``--out`` directory.
        command: ``"pretrain"`` or ``"finetune"`` (recorded in the marker).
        files: the top-level entries runs of this command write; ``--force``
            removes exactly these (plus stale temporary files of ours).
    """

    def __init__(self, path, command: str, files: tuple[str, ...]):
        self.path = Path(path)
        self.command = command
        self.files = tuple(files)
        self._fd: int | None = None

    # ------------------------------------------------------------- checks
    def check(self, *, resume: bool = False, force: bool = False, inputs: dict | None = None) -> None:
        """Refuse an ``--out`` that cannot hold this run (no side effects).

        ``inputs`` maps a flag to a path the run reads (``{"--data": store}``):
        the run directory may be none of them and lie inside none of them.
        The other ranks of a multi-process run check nothing: rank 0 has.
        """
        if launch_rank() != 0:
            return
        p = self.path
        for flag, src in (inputs or {}).items():
            if src is None:
                continue
            if is_within(p, src):
                where = "is" if _resolved(p) == _resolved(src) else "is inside"
                raise UserError(f"--out {p} {where} the input {flag} {src}; the run would write into its own "
                                "input: choose an --out outside it")
        try:
            exists = p.exists()
            is_dir = p.is_dir()
        except OSError as exc:
            raise UserError(f"--out {p}: cannot use this path ({exc.strerror}); choose another --out") from None
        for parent in p.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    raise UserError(f"--out {p}: {parent} is a file, not a directory; choose another --out")
                if not exists and not os.access(parent, os.W_OK | os.X_OK):
                    raise UserError(f"--out {p}: cannot create it in {parent} (permission denied); "
                                    "choose another --out")
                break
        if exists and not is_dir:
            raise UserError(f"--out {p} exists and is not a directory; choose another --out")
        if resume:
            if not exists:
                raise UserError(f"--resume: {p} has no last.ckpt to continue from (the directory does not exist); "
                                "check --out")
            marker = read_marker(p)
            if marker is not None and marker.get("command") != self.command:
                raise UserError(f"--resume: {p} is a `{marker.get('command')}` run, not a `{self.command}` run; "
                                "check --out")
            if not (p / "last.ckpt").is_file():
                raise UserError(f"--resume: {p} has no last.ckpt to continue from; check --out")
        if exists:
            pid = lock_holder(p)
            if pid is not None:
                raise _busy_error(p, pid)
        if resume or not exists:
            return
        try:
            entries = [e.name for e in p.iterdir() if e.name != LOCK_NAME]
        except OSError as exc:
            raise UserError(f"--out {p}: cannot read the directory ({exc.strerror}); choose another --out") from None
        if not entries:
            return
        if not force:
            if (p / "last.ckpt").is_file():
                raise UserError(f"run directory {p} exists and is not empty; use --resume to continue it, "
                                "--force to overwrite it, or another --out")
            raise UserError(f"run directory {p} exists and is not empty; use --force to overwrite it, "
                            "or another --out")
        if _marker_or_legacy(p, self.files) is None:
            raise UserError(f"--force: {p} is not empty and was not written by mamba-genome (no {MARKER}); "
                            "--force only replaces mamba-genome run directories: choose another --out")

    # ------------------------------------------------------------ writing
    def prepare(self, *, resume: bool = False, force: bool = False) -> Path:
        """Create the directory, take its lock, and with ``force`` clear what an earlier run wrote.

        Call :meth:`check` first (and again here: another run may have
        started in between, so the lock is taken before anything is deleted).
        Rank 0 then publishes the directory to the ranks Lightning starts
        (:data:`RUN_DIR_ENV`); those only make sure it exists.
        """
        p = self.path
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run directory {p} ({exc.strerror}); choose another --out") from None
        if launch_rank() != 0:
            return p
        os.environ[RUN_DIR_ENV] = str(p.resolve())
        self.acquire()
        try:
            if force and not resume:
                self._clear(_marker_or_legacy(p, self.files))
            self._write_marker()
        except BaseException:
            self.release()
            raise
        return p

    def _clear(self, marker: dict | None) -> None:
        if marker is None:  # empty but for our lock: nothing to remove
            return
        names = set(marker.get("files", ())) | set(self.files)
        for entry in self.path.iterdir():
            name = entry.name
            ours = name in names or (name.startswith(".") and ".tmp-" in name and
                                     name.split(".tmp-")[0].lstrip(".") in names)
            if not ours or name in (LOCK_NAME, MARKER):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _write_marker(self) -> None:
        old = read_marker(self.path) or {}
        files = sorted(set(old.get("files", ())) | set(self.files)) if old.get("command") == self.command \
            else sorted(self.files)
        d = {"tool": "mamba-genome", "command": self.command, "files": files}
        tmp = self.path / f".{MARKER}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(d, indent=1) + "\n")
        os.replace(tmp, self.path / MARKER)

    # -------------------------------------------------------------- lock
    def acquire(self) -> None:
        """Take the exclusive lock (fails with the holder's PID if another run has it)."""
        if self._fd is not None:
            return
        path = self.path / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"cannot write in run directory {self.path} ({exc.strerror}); choose another --out") \
                from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise _busy_error(self.path, _read_pid(path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the lock file stays; it is harmless once unlocked)."""
        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


__all__ = ["RunDir", "MARKER", "LOCK_NAME", "is_within", "read_marker", "legacy_command", "lock_holder", "launch_rank",
           "default_run_dir", "check_resume_checkpoint", "resolve_run_dir", "RUN_DIR_ENV"]
