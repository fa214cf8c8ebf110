"""The Mamba block (mixer) and its pre-norm residual wrapper.

Mixer, as in Gu & Dao (2023), Fig. 3 / Alg. 2:
    1. in_proj: x -> (x, z), each (B, L, d_inner)
    2. causal depthwise conv1d (width d_conv) on x, then SiLU
    3. x_proj: x -> (dt, B, C); dt_proj then softplus (inside the scan)
    4. selective scan with the D skip and the SiLU(z) gate
    5. out_proj back to d_model

Every step can carry state (conv tail + SSM state) so long inputs can be
streamed chunk by chunk or token by token with the same result as one pass.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mamba_genome.kernels import (
    causal_conv1d, causal_conv1d_update, mamba_inner, rms_norm, selective_scan, selective_state_update,
)

from .config import MambaConfig
from .runtime import RuntimeOptions


@dataclass
class LayerState:
    """Recurrent state of one mixer: conv tail (B, d_inner, d_conv-1), SSM state (B, d_inner, d_state) fp32."""

    conv: torch.Tensor
    ssm: torch.Tensor


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x, residual=None, residual_in_fp32=True):
        """Returns (normed, new_residual) where new_residual = x + residual."""
        return rms_norm(x, self.weight, residual=residual, eps=self.eps, residual_in_fp32=residual_in_fp32)


class MambaMixer(nn.Module):
    def __init__(self, config: MambaConfig, layer_idx: int = 0, runtime: RuntimeOptions | None = None):
        super().__init__()
        self.config = config
        self.runtime = runtime or RuntimeOptions()   # execution options (MambaLM.set_runtime changes them)
        self.layer_idx = layer_idx
        d_model, d_inner, N, R = config.d_model, config.d_inner, config.d_state, config.dt_rank
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=config.bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, config.d_conv, groups=d_inner, bias=config.conv_bias)
        self.x_proj = nn.Linear(d_inner, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, d_inner, bias=True)
        self.out_proj = nn.Linear(d_inner, d_model, bias=config.bias)
        # S4D-real initialisation: A[:, n] = -(n + 1), stored as log.
        A = torch.arange(1, N + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self._init_dt()

    def _init_dt(self):
        c = self.config
        std = c.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(c.d_inner) * (math.log(c.dt_max) - math.log(c.dt_min)) + math.log(c.dt_min))
        dt = dt.clamp(min=c.dt_init_floor)
        inv_softplus = dt + torch.log(-torch.expm1(-dt))   # softplus(inv_softplus) == dt
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_softplus)
        self.dt_proj.bias._no_reinit = True

    def allocate_state(self, batch: int, device=None) -> LayerState:
        c = self.config
        w = self.conv1d.weight
        return LayerState(
            conv=torch.zeros(batch, c.d_inner, c.d_conv - 1, device=device or w.device, dtype=w.dtype),
            ssm=torch.zeros(batch, c.d_inner, c.d_state, device=device or w.device, dtype=torch.float32),
        )

    def forward(self, hidden: torch.Tensor, state: LayerState | None = None, replay=None) -> torch.Tensor:
        """hidden (B, L, d_model) -> (B, L, d_model). If ``state`` is given it is read and updated.
        ``replay``: ``(ReplayCache, key)`` when this call is an activation-checkpointing unit."""
        c, rt = self.config, self.runtime
        xz = self.in_proj(hidden)                                          # (B, L, 2*d_inner)
        A = -torch.exp(self.A_log.float())                                 # (d_inner, N)
        if state is None:
            # steps 2-5 as one op (kernels/mamba_inner): on the Triton backend its backward
            # recomputes the conv output and the scan output instead of keeping them
            return mamba_inner(xz, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.x_proj.weight,
                               self.dt_proj.weight, self.dt_proj.bias.float(), A, self.D.float(),
                               self.out_proj.weight, self.out_proj.bias, backend=rt.scan_backend, replay=replay,
                               state_every=rt.scan_state_every)
        x, z = xz.chunk(2, dim=-1)
        conv_w = self.conv1d.weight.squeeze(1)                             # (d_inner, W)
        x, conv_tail = causal_conv1d(x, conv_w, self.conv1d.bias, activation="silu",
                                     initial_state=state.conv, return_final_state=True, backend=rt.scan_backend)
        x_dbl = self.x_proj(x)                                             # (B, L, R + 2N)
        dt, B, C = torch.split(x_dbl, [c.dt_rank, c.d_state, c.d_state], dim=-1)
        # dt_proj runs inside the scan (weight here, bias as delta_bias)
        y, ssm = selective_scan(x, dt, A, B, C, D=self.D.float(), z=z, delta_bias=self.dt_proj.bias.float(),
                                delta_softplus=True, backend=rt.scan_backend, delta_proj_weight=self.dt_proj.weight,
                                initial_state=state.ssm, return_final_state=True)
        state.conv, state.ssm = conv_tail.detach(), ssm.detach()
        # under autocast the GEMM casts y itself; outside it, y meets the weight's dtype
        if not torch.is_autocast_enabled(y.device.type) and y.dtype != self.out_proj.weight.dtype:
            y = y.to(self.out_proj.weight.dtype)
        return self.out_proj(y)

    def step(self, hidden: torch.Tensor, state: LayerState) -> torch.Tensor:
        """One token: hidden (B, d_model) -> (B, d_model); ``state`` updated in place."""
        c, rt = self.config, self.runtime
        x, z = self.in_proj(hidden).chunk(2, dim=-1)                       # (B, d_inner) each
        x = causal_conv1d_update(x, state.conv, self.conv1d.weight.squeeze(1), self.conv1d.bias, activation="silu",
                                 backend=rt.scan_backend)
        dt, B, C = torch.split(self.x_proj(x), [c.dt_rank, c.d_state, c.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)
        A = -torch.exp(self.A_log.float())
        y = selective_state_update(state.ssm, x, dt, A, B, C, D=self.D.float(), z=z,
                                   dt_bias=self.dt_proj.bias.float(), dt_softplus=True, backend=rt.scan_backend)
        return self.out_proj(y)


class Block(nn.Module):
    """Pre-norm residual block: residual += mixer(RMSNorm(residual))."""

    def __init__(self, config: MambaConfig, layer_idx: int = 0, runtime: RuntimeOptions | None = None):
        super().__init__()
        self.config = config
        self.norm = RMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.mixer = MambaMixer(config, layer_idx, runtime)

    @property
    def runtime(self) -> RuntimeOptions:
        return self.mixer.runtime

    def forward(self, hidden, residual=None, state: LayerState | None = None):
        """Returns (mixer_out, residual): the caller adds them (fused into the next norm)."""
        normed, residual = self.norm(hidden, residual, residual_in_fp32=self.config.residual_in_fp32)
        return self.mixer(normed, state=state), residual

    def forward_residual(self, residual: torch.Tensor) -> torch.Tensor:
        """Residual stream in -> residual stream out: residual + mixer(RMSNorm(residual)).

        The layer shape of the bf16-checkpoint path (``RuntimeOptions.checkpoint_bf16``), whose
        unit's only input is the residual stream. Same values as ``forward``: the add is the
        same fp32 add, done after the mixer instead of inside the next norm.
        """
        return residual + self.mixer_of_residual(residual)

    def mixer_of_residual(self, residual: torch.Tensor, upcast: bool = False, replay=None) -> torch.Tensor:
        """mixer(RMSNorm(residual)) without the add. With ``upcast`` (the checkpointing unit
        when the checkpoint is kept in bf16, ``RuntimeOptions.checkpoint_bf16``) the bf16 input
        is made fp32 first, so the block computes as in ``forward_residual``."""
        normed, _ = self.norm(residual.float() if upcast else residual, None,
                              residual_in_fp32=self.config.residual_in_fp32)
        return self.mixer(normed, replay=replay)

    def step(self, hidden, residual, state: LayerState):
        normed, residual = self.norm(hidden, residual, residual_in_fp32=self.config.residual_in_fp32)
        return self.mixer.step(normed, state), residual
