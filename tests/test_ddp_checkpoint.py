"""DDP over the checkpointed blocks (``model/recompute.py``): two CPU processes (gloo) train a tiny
model with activation checkpointing on different data; after each step their gradients must equal the
average of the two ranks' gradients computed in one process without DDP. This checks that the custom
autograd Function hands every parameter gradient to DDP's hooks."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mamba_genome.model.lm import MambaLM


def _model():
    return MambaLM.from_preset("tiny", d_model=16, n_layer=2, gradient_checkpointing=True, scan_backend="torch")


def _batch(rank: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randint(5, 9, (2, 33), generator=g)


def _worker(rank: int, world: int, port: int, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = _model()
    assert model.training and model.runtime.gradient_checkpointing   # the checkpointed path
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    grads = []
    for step in range(2):
        ddp.zero_grad(set_to_none=True)
        ddp(_batch(rank, step)[:, :-1]).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    if rank == 0:
        torch.save(grads, out)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_averages_checkpointed_gradients(tmp_path):
    out = str(tmp_path / "grads.pt")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    ddp_grads = torch.load(out, weights_only=True)
    torch.manual_seed(0)
    model = _model()
    for step in range(2):
        want = {}
        for rank in range(2):
            model.zero_grad(set_to_none=True)
            model(_batch(rank, step)[:, :-1]).sum().backward()
            for n, p in model.named_parameters():
                want[n] = want.get(n, 0) + p.grad / 2
        for n, g in ddp_grads[step].items():
            torch.testing.assert_close(g, want[n], rtol=1e-5, atol=1e-6, msg=n)
