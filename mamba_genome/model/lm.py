"""`MambaLM`: the Mamba DNA language model (embedding, blocks, final norm, tied head).

    input_ids (B, L) -> embedding -> n_layer x [RMSNorm -> Mixer, residual] -> RMSNorm -> logits (B, L, V)

How it executes (activation checkpointing, scan-state spacing, kernel backend) is
a :class:`~mamba_genome.model.runtime.RuntimeOptions`, apart from the architecture:
``MambaLM(config, runtime)``, changed later with :meth:`MambaLM.set_runtime`.

`backbone()` returns hidden states for embeddings and classification heads;
`allocate_state()` + `forward(..., state=...)` stream long inputs chunk by chunk
with the conv and SSM states carried, giving the same result as one pass.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from mamba_genome.kernels import ReplayCache

from .block import Block, LayerState, RMSNorm
from .recompute import checkpointed_block
from .config import MambaConfig
from .runtime import RuntimeOptions
from .likelihood import next_token_nll_sums


class MambaLM(nn.Module):
    model_type = "lm"

    def __init__(self, config: MambaConfig, runtime: RuntimeOptions | None = None):
        super().__init__()
        self.config = config
        self.runtime = runtime or RuntimeOptions()
        self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config, i, self.runtime) for i in range(config.n_layer))
        self.norm_f = RMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        self.reset_parameters()
        if config.tie_embeddings:
            self.lm_head.weight = self.embedding.weight

    @classmethod
    def from_preset(cls, name: str, **options) -> "MambaLM":
        """A fresh model of preset ``name``; ``options`` may mix architecture fields (``d_model=32``) and
        run-time options (``scan_backend="torch"``, see :data:`~mamba_genome.model.runtime.RUNTIME_FIELDS`)."""
        from .runtime import split_runtime

        arch, rt = split_runtime(options)
        return cls(MambaConfig.from_preset(name, **arch), RuntimeOptions(**rt))

    def set_runtime(self, runtime: RuntimeOptions | None = None, **changes) -> RuntimeOptions:
        """Execute with ``runtime`` (default: the current options) with ``changes`` applied, from the next
        forward on; returns the options now in use. The weights and what the model computes stay the same."""
        rt = (runtime or self.runtime).replace(**changes) if changes else (runtime or self.runtime)
        self.runtime = rt
        for layer in self.layers:
            layer.mixer.runtime = rt
        return rt

    # ------------------------------------------------------------------ init
    def reset_parameters(self):
        c = self.config
        nn.init.normal_(self.embedding.weight, std=c.initializer_range)
        for layer in self.layers:
            m = layer.mixer
            for lin in (m.in_proj, m.out_proj, m.x_proj):
                nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5))
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
            if c.rescale_prenorm_residual:
                with torch.no_grad():
                    m.out_proj.weight /= math.sqrt(c.n_layer)
        if not c.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, std=c.initializer_range)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    # --------------------------------------------------------------- forward
    def allocate_state(self, batch: int, device=None) -> list[LayerState]:
        return [layer.mixer.allocate_state(batch, device) for layer in self.layers]

    def backbone(self, input_ids: torch.Tensor, state: list[LayerState] | None = None,
                 output_layer: int | None = None) -> torch.Tensor:
        """input_ids (B, L) -> hidden (B, L, d_model).

        ``output_layer=None`` (or n_layer) returns the final normed hidden state;
        ``output_layer=k`` (0 <= k < n_layer) returns the residual stream after
        block k, RMS-normed by the final norm so scales are comparable.
        """
        n = self.config.n_layer
        stop = n if output_layer is None else output_layer + 1
        if not 0 < stop <= n:
            raise ValueError(f"output_layer must be in [0, {n - 1}], got {output_layer}")
        hidden = self.embedding(input_ids)                                 # (B, L, d_model)
        if self.runtime.gradient_checkpointing and self.training and state is None and torch.is_grad_enabled():
            return self._backbone_checkpointed(hidden, stop)
        residual = None
        for i in range(stop):
            layer = self.layers[i]
            st = state[i] if state is not None else None
            hidden, residual = layer(hidden, residual, state=st)
        normed, _ = self.norm_f(hidden, residual, residual_in_fp32=self.config.residual_in_fp32)
        return normed

    def _backbone_checkpointed(self, hidden: torch.Tensor, stop: int) -> torch.Tensor:
        """``backbone`` with activation checkpointing: one saved residual-stream tensor per layer.

        Default: each block runs as in the plain loop (the residual add fused into its norm) and
        keeps only its output residual stream, fp32 (1 GiB per 7m layer at 2^20); see
        ``recompute.py``. With ``checkpoint_bf16`` the unit is residual -> residual +
        mixer(norm(residual)) and its input is kept in bf16 (half that memory). With
        ``checkpoint_keep_scan`` each layer's scan states wait in a ``ReplayCache`` for its
        recomputation. No dropout anywhere, so no RNG state is saved and restored.
        """
        c, rt = self.config, self.runtime
        cache = ReplayCache() if rt.checkpoint_keep_scan else None
        first_plain = max(0, stop - rt.checkpoint_skip)
        residual = None
        lowp = rt.checkpoint_bf16 and c.residual_in_fp32
        if lowp:
            residual = hidden.float()
        for i in range(stop):
            layer = self.layers[i]
            replay = (cache, i) if cache is not None else None
            if lowp:
                if i >= first_plain:
                    residual = layer.forward_residual(residual)
                else:
                    # only the bf16 copy is saved; the fp32 add keeps the stream's precision
                    out = checkpoint(layer.mixer_of_residual, residual.to(torch.bfloat16), True, replay,
                                     use_reentrant=False, preserve_rng_state=False)
                    residual = residual + out
            elif i >= first_plain:
                hidden, residual = layer(hidden, residual)
            else:
                hidden, residual = checkpointed_block(layer, hidden, residual, replay)
        if cache is not None:
            cache.arm()
        if lowp:
            normed, _ = self.norm_f(residual, None, residual_in_fp32=c.residual_in_fp32)
        else:
            normed, _ = self.norm_f(hidden, residual, residual_in_fp32=c.residual_in_fp32)
        return normed

    def forward(self, input_ids: torch.Tensor, state: list[LayerState] | None = None) -> torch.Tensor:
        """input_ids (B, L) -> logits (B, L, vocab_size) (padding rows dropped)."""
        hidden = self.backbone(input_ids, state=state)
        return self.lm_head(hidden)[..., : self.config.vocab_size]

    @torch.no_grad()
    def step(self, token: torch.Tensor, state: list[LayerState]) -> torch.Tensor:
        """One token per sequence: token (B,) -> logits (B, vocab_size); ``state`` updated in place."""
        hidden = self.embedding(token)
        residual = None
        for layer, st in zip(self.layers, state):
            hidden, residual = layer.step(hidden, residual, st)
        normed, _ = self.norm_f(hidden, residual, residual_in_fp32=self.config.residual_in_fp32)
        return self.lm_head(normed)[..., : self.config.vocab_size]

    def loss(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy in nats per scored base over targets 1..L-1 (N and PAD are not
        scored; :mod:`mamba_genome.model.likelihood`); 0 when nothing is scored."""
        total, count = next_token_nll_sums(self, input_ids)
        return total / count.clamp(min=1)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on A_log, D, norms or biases (paper, App. E)."""
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if getattr(p, "_no_weight_decay", False) or p.dim() < 2 or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
