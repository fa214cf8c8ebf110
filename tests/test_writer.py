"""Run-directory writes off the training thread: the snapshot taken on the training thread
(mamba_genome.checkpoint.host_copy), and the order and errors of the background jobs
(mamba_genome.train.writer). A training run's exports
through it: tests/test_train_engine.py."""
from __future__ import annotations

import threading
import time

import pytest
import torch
from mamba_genome.checkpoint import host_copy
from mamba_genome.train.writer import BackgroundWriter


def test_host_copy_is_a_snapshot_that_keeps_sharing():
    w = torch.arange(6.0).reshape(2, 3)
    state = {"a": w, "tied": w, "nested": [{"b": w[1]}, (torch.ones(2), 3)], "n": 7}
    snap = host_copy(state)
    w.add_(100)                                          # the next optimizer step
    assert torch.equal(snap["a"], torch.arange(6.0).reshape(2, 3))
    assert snap["tied"] is snap["a"]                     # written once, tied again on load
    assert torch.equal(snap["nested"][0]["b"], torch.tensor([3.0, 4.0, 5.0]))
    assert isinstance(snap["nested"][1], tuple) and snap["nested"][1][1] == 3 and snap["n"] == 7


def test_jobs_run_in_order_off_the_caller_thread_and_errors_surface():
    writer, seen = BackgroundWriter(), []

    def job(i):
        def run():
            time.sleep(0.02 * (3 - i))                    # a later job is quicker: order still holds
            seen.append((i, threading.current_thread() is threading.main_thread()))
        return run

    for i in range(3):
        writer.submit(job(i))
    writer.flush()
    assert seen == [(0, False), (1, False), (2, False)]
    assert not [t for t in threading.enumerate() if t.name.startswith("mamba-genome-writer")]   # nothing to fork

    def fail():
        raise OSError(28, "No space left on device")

    writer.submit(job(0))
    writer.submit(fail)
    with pytest.raises(OSError, match="No space left"):
        writer.flush()
    writer.submit(fail)
    time.sleep(0.1)
    with pytest.raises(OSError, match="No space left"):   # or at the next submit, once it has failed
        writer.submit(job(0))
    writer.flush()
    writer.submit(fail)
    writer.flush(raise_errors=False)                     # while another error propagates: quiet
