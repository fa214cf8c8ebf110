"""Sampling new DNA from a Mamba LM with the recurrent step (``MambaLM.step``, state carried).

One batch of ``B`` samples runs together: a prompt (if any) is prefilled once through the
inference engine's chunked stream (the conv and SSM states carried, as for ``embed``) and
its state copied to the B samples; then each step feeds the last sampled base of every sample through ``MambaLM.step`` and
samples the next. Memory is the recurrent state, (B, d_inner, d_conv - 1 + d_state) per
layer, whatever the length; sampled bases leave the device in blocks of ``block`` steps.

Sampling (per sample, per step): the model's next-token logits restricted to the four
bases A, C, G, T (N, PAD and the special tokens are never emitted; their probability is
renormalised away), divided by ``temperature``; with ``top_k`` only the k most likely bases
stay; then a draw by the Gumbel-max trick, ``argmax(logits / T + G)``, ``G`` standard Gumbel,
which samples exactly ``softmax(logits / T)`` and needs no device sync.
Without a prompt the first base is uniform over A/C/G/T (the model, trained without
``<bos>``, never predicts a sequence's first base).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..data.tokenizer import A, T
from .engine import InferenceEngine, autocast

#: Steps between copies of the sampled bases from the device to the host.
DEFAULT_BLOCK = 4096
#: Intra-op threads while sampling on CPU (restored afterwards): each step is a handful of
#: tiny matrix products, where thread hand-offs cost more than they give (tiny preset, 64
#: samples, 2 busy cores: 20 ms a step with 1 thread, 295 ms with 2).
CPU_THREADS = 1


def pick_next(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator
              ) -> torch.Tensor:
    """logits (B, V) -> sampled base token ids (B,) (see the module docstring)."""
    lg = logits[:, A: T + 1].float()                                   # (B, 4)
    if top_k is not None and top_k < lg.shape[-1]:
        kth = lg.topk(top_k, dim=-1).values[:, -1:]
        lg = lg.masked_fill(lg < kth, float("-inf"))
    u = torch.rand(lg.shape, generator=generator, device=lg.device).clamp_(min=1e-20)
    gumbel = -torch.log(-torch.log(u))
    return (lg / temperature + gumbel).argmax(-1) + A


def sample_blocks(lm, batch: int, length: int, prompt: np.ndarray | None = None, temperature: float = 1.0,
                  top_k: int | None = None, generator: torch.Generator | None = None, precision: str = "auto",
                  block: int = DEFAULT_BLOCK) -> Iterator[tuple[int, np.ndarray]]:
    """Sample ``batch`` continuations of ``length`` bases; yield ``(start, tokens)`` blocks.

    Args:
        lm: a :class:`~mamba_genome.model.lm.MambaLM` (eval mode).
        batch: B, samples run together.
        length: bases to generate per sample (the prompt is not included).
        prompt: 1-D token array every sample continues (None: start from a uniform base).
        temperature: > 0; divides the logits.
        top_k: keep the k most likely of the 4 bases (None: all).
        generator: a ``torch.Generator`` on the model's device (None: a fresh one, seed 0).
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (the engine's policy).
        block: steps per host copy.

    Yields:
        ``(start, tokens)``: ``tokens`` (B, n) uint8 are positions ``start .. start+n-1`` of
        every sample, in order, covering ``0 .. length-1``.
    """
    dev = next(lm.parameters()).device
    if generator is None:
        generator = torch.Generator(device=dev).manual_seed(0)
    threads = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(CPU_THREADS)
    try:
        yield from _sample(lm, dev, batch, length, prompt, temperature, top_k, generator, precision, block)
    finally:
        torch.set_num_threads(threads)


def _sample(lm, dev, batch, length, prompt, temperature, top_k, generator, precision, block):
    buf = torch.empty(batch, min(block, length), dtype=torch.uint8, device=dev)
    with torch.no_grad(), autocast(precision, dev):
        if prompt is not None and len(prompt):
            # every sample continues the same prompt: prefill it once, then copy the state B times
            engine = InferenceEngine(lm)
            state = lm.allocate_state(1, dev)
            (b,) = engine.batches([prompt], [len(prompt)], batch_size=1)
            for chunk in engine.stream(b, precision=precision, state=state):
                last = chunk.hidden[:, -1]
            logits = engine.logits(last).expand(batch, -1)             # (B, V)
            state = [type(st)(conv=st.conv.repeat(batch, 1, 1), ssm=st.ssm.repeat(batch, 1, 1)) for st in state]
            tok = pick_next(logits, temperature, top_k, generator)
        else:
            state = lm.allocate_state(batch, dev)
            tok = torch.randint(A, T + 1, (batch,), generator=generator, device=dev)
        start = pos = 0
        for i in range(length):
            buf[:, pos] = tok
            pos += 1
            if pos == buf.shape[1] or i == length - 1:
                yield start, buf[:, :pos].cpu().numpy()
                start, pos = start + pos, 0
            if i < length - 1:
                tok = pick_next(lm.step(tok, state), temperature, top_k, generator)


__all__ = ["sample_blocks", "pick_next", "DEFAULT_BLOCK"]
