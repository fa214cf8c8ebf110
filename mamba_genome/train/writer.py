"""Run-directory writes off the training thread: the best/last exports and ``last.ckpt``.

A write is two halves. On the training thread, :func:`~mamba_genome.checkpoint.host_copy` takes
a point-in-time copy of the tensors in host memory (the next optimizer step changes the live
ones); that costs a device-to-host copy of the weights and optimizer state, tens of milliseconds
for ``7m``. The serialisation and the file writes, about half a second for ``7m``, then run on
:class:`BackgroundWriter`'s one worker thread while training goes on.

Writes run one at a time, in the order they were submitted, and each one still writes a
temporary file or directory and renames it into place, so a reader never sees a half-written
file. :meth:`BackgroundWriter.flush` waits for every write and raises the error of one that
failed, and ends the worker thread. The engine flushes before data-loader workers are forked (at
the end of each epoch and before each validation: a fork while another thread holds a lock can
hang the child) and when ``fit`` ends, so whatever runs after training (``metrics.json``, the
test pass, a resume) sees every file complete.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable


class BackgroundWriter:
    """One worker thread that runs write jobs in submission order."""

    def __init__(self):
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job()`` after the jobs submitted before it; an earlier job's error is raised here."""
        self._raise_done()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mamba-genome-writer")
        self._pending.append(self._pool.submit(job))

    def _raise_done(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for f in done:
            f.result()

    def flush(self, raise_errors: bool = True) -> None:
        """Wait for every submitted job and end the worker thread (none is left alive to be forked);
        raise the first error among the jobs (``raise_errors=False``: while another error propagates)."""
        pending, self._pending = self._pending, []
        error = None
        for f in pending:
            try:
                f.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the rest have finished
                error = error or exc
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if error is not None and raise_errors:
            raise error


__all__ = ["BackgroundWriter"]
