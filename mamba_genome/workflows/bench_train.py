"""Training-step benchmark: tokens/s, step time, forward/backward split, scan share, peak memory.

Builds a :class:`~mamba_genome.model.lm.MambaLM` from a preset on one device, feeds
random nucleotide tokens (no data needed) and runs full training steps (forward,
next-token cross-entropy, backward, AdamW) under bf16 autocast, exactly as
pretraining does: through the training engine (:mod:`mamba_genome.train.engine`), whose
planner chooses, for ``batch_size`` windows of ``seq_len`` per step in the device's free
memory, the micro-batch (a step is ``accumulate`` forward+backward passes, then AdamW)
and the memory policy, checked on a GPU by one probe step. The hand-set flags
(``--micro-batch-size``, ``--grad-checkpointing``, ``--checkpoint-bf16``,
``--checkpoint-skip``, ``--scan-state-every``) override the plan, and a run with any of
them set is not probed (it measures what was asked, or runs out of memory). What is
measured, and how:

* step / forward / backward / optimizer time: CUDA events recorded around each
  phase of every step (``time.perf_counter`` on CPU); the median over the steps
  after ``warmup`` (the first steps include Triton compilation and autotuning).
  With activation checkpointing the backward includes the recomputed forward; with
  several micro-batches each phase is summed over them.
* tokens/s: windows per step * seq_len / median step time.
* peak memory: ``torch.cuda.max_memory_allocated`` over the whole run (weights,
  AdamW state, activations, kernel workspaces); ``reserved`` is what the caching
  allocator held from the driver.
* scan share: after the training steps, one layer's selective scan is timed alone
  at the model's shape and layout (bf16 u/delta/z/B/C slices of the projections,
  fp32 A/D/bias), forward and backward separately, at the micro-batch; the estimate is
  micro-batches x n_layer x (forward x (2 if the recomputation re-runs the scan else 1)
  + backward) / step time.
  It is a lower bound on the time the scan costs inside the step (no cache or
  launch interference), not a profiler measurement.

Used by ``mamba-genome bench train`` and ``benchmarks/bench_train.py``.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from ..errors import UserError
from ..model.likelihood import next_token_nll_sums

PRECISIONS = ("bf16-mixed", "32")


@dataclass
class BenchTrainConfig:
    preset: str = "7m"              # model preset: tiny | 1.4m | 7m (--preset)
    seq_len: int = 1 << 20          # tokens per sequence fed to the model (--seq-len)
    batch_size: int = 1             # sequences per step (--batch-size)
    steps: int = 10                 # measured steps after warm-up (--steps)
    warmup: int = 3                 # unmeasured steps first: compilation, autotuning (--warmup)
    memory: str = "auto"            # the planner's mode: auto (fastest that fits) | low (least memory) (--memory)
    # Hand-set over the planner's choice (None: the planner decides).
    micro_batch_size: int | None = None   # sequences per forward pass (--micro-batch-size)
    grad_checkpointing: bool | None = None  # recompute each block in backward (--grad-checkpointing)
    checkpoint_bf16: bool | None = None   # keep the per-layer checkpoints in bf16 (--checkpoint-bf16)
    scan_state_every: int | None = None   # steps between scan states kept for the backward (--scan-state-every)
    checkpoint_skip: int | None = None    # with checkpointing: the last N layers are not checkpointed
    precision: str = "bf16-mixed"   # "bf16-mixed" (autocast) or "32" (--precision)
    device: str = "auto"            # "auto" (cuda if available), "cuda", "cuda:1", "cpu" (--device)
    lr: float = 8e-3                # AdamW learning rate (the paper's DNA value)
    weight_decay: float = 0.1
    scan_share: bool = True         # also time one layer's scan alone (--no-scan-share skips it)
    scan_backend: str | None = None  # kernels backend override (None: fastest available)
    seed: int = 0

    def __post_init__(self):
        from ..model.config import PRESETS
        from ..train.memory import MEMORY_MODES

        if self.preset not in PRESETS:
            raise UserError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.seq_len < 2:
            raise UserError(f"--seq-len must be >= 2, got {self.seq_len}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.micro_batch_size is not None and self.micro_batch_size < 1:
            raise UserError(f"--micro-batch-size must be >= 1, got {self.micro_batch_size}")
        if self.steps < 1:
            raise UserError(f"--steps must be >= 1, got {self.steps}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be >= 0, got {self.warmup}")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.memory not in MEMORY_MODES:
            raise UserError(f"--memory must be one of {', '.join(MEMORY_MODES)}, got {self.memory!r}")
        if self.checkpoint_skip is not None and self.checkpoint_skip < 0:
            raise UserError(f"--checkpoint-skip must be >= 0, got {self.checkpoint_skip}")
        for flag, v in (("--checkpoint-bf16", self.checkpoint_bf16), ("--checkpoint-skip", self.checkpoint_skip)):
            if v and not self.grad_checkpointing:
                raise UserError(f"{flag} only applies with --grad-checkpointing; add that flag")
        if self.scan_state_every is not None and (self.scan_state_every < 8 or self.scan_state_every % 8):
            raise UserError(f"--scan-state-every must be a positive multiple of 8, got {self.scan_state_every}")

    def expert(self):
        """The hand-set flags, as the engine's :class:`~mamba_genome.train.engine.ExpertOverrides`."""
        from ..train.engine import ExpertOverrides

        return ExpertOverrides(micro_batch_size=self.micro_batch_size, gradient_checkpointing=self.grad_checkpointing,
                               checkpoint_bf16=self.checkpoint_bf16, checkpoint_skip=self.checkpoint_skip,
                               scan_state_every=self.scan_state_every, scan_backend=self.scan_backend)

    @property
    def hand_set(self) -> bool:
        """Whether any flag overrides the planner (then the run is not probed)."""
        return bool(self.expert().describe())

    def runtime(self):
        """The hand-set run-time options over the defaults (scripts that build the model by hand)."""
        from ..model.runtime import RuntimeOptions

        return RuntimeOptions().replace(**self.expert().runtime_changes())

    def resolve_device(self) -> torch.device:
        if self.device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", torch.cuda.current_device())
            return torch.device("cpu")
        try:
            dev = torch.device(self.device)
        except RuntimeError:
            raise UserError(f"--device {self.device!r} is not a torch device (try cpu or cuda)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda was requested but no CUDA GPU is visible; use --device cpu")
        if dev.type == "cuda":
            if dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device())
            elif dev.index >= torch.cuda.device_count():
                raise UserError(f"--device {self.device}: only {torch.cuda.device_count()} GPU(s) visible")
        return dev


@dataclass
class BenchTrainResult:
    preset: str
    params: int
    seq_len: int
    batch_size: int                 # windows per step (micro_batch x accumulate)
    micro_batch: int                # windows per forward pass
    accumulate: int                 # forward+backward passes per step
    policy: str | None              # the planner's memory policy (None: CPU, or options set by hand)
    runtime: dict                   # the run-time options the model ran with
    plan: str                       # who chose the step: "the planner's", or "hand-set <flags>"
    plan_reason: str                # the engine's one line: micro-batches, policy, estimated (and probed) peak
    grad_checkpointing: bool
    precision: str
    device: str                     # e.g. "NVIDIA H100 80GB HBM3" or "cpu"
    tokens_per_step: int
    step_ms: float                  # median over measured steps
    tokens_per_s: float
    fwd_ms: float                   # forward + loss
    bwd_ms: float                   # backward (includes recompute with checkpointing)
    opt_ms: float                   # AdamW step + zero_grad
    first_step_s: float             # wall time of the first step (compilation, autotuning)
    loss: float                     # loss of the last step (random tokens: ~ln 4 = 1.386)
    peak_mem_gib: float | None      # max_memory_allocated (None on CPU)
    reserved_gib: float | None      # max_memory_reserved
    scan_fwd_ms: float | None       # one layer's scan alone, forward
    scan_bwd_ms: float | None       # one layer's scan alone, backward
    scan_share: float | None        # n_layer * (fwd * (2 if ckpt) + bwd) / step_ms
    step_ms_all: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary_rows(self) -> list[dict]:
        """(metric, value) rows for the end-of-command table."""
        gib = (lambda v: "n/a (cpu)" if v is None else f"{v:.2f} GiB")
        rows = [
            ("model", f"{self.preset} ({self.params / 1e6:.2f} M params)"),
            ("shape", f"batch {self.batch_size} x seq_len {self.seq_len:,} = {self.tokens_per_step:,} tokens/step"),
            ("plan", f"{self.policy or ('hand-set runtime' if self.plan.startswith('hand-set') else 'default runtime')}, "
                     f"{self.micro_batch} x {self.seq_len:,} tokens per forward, "
                     f"{self.accumulate} micro-batch{'es' if self.accumulate > 1 else ''} per step ({self.plan})"),
            ("setup", f"{self.precision}, activation checkpointing {'on' if self.grad_checkpointing else 'off'}, "
                      f"scan states every {self.runtime['scan_state_every']}, {self.device}"),
            ("tokens/s", f"{self.tokens_per_s / 1e6:.3f} M" if self.tokens_per_s >= 1e5
             else f"{self.tokens_per_s:,.0f}"),
            ("step", f"{self.step_ms:.1f} ms (median of {len(self.step_ms_all)})"),
            ("forward+loss", f"{self.fwd_ms:.1f} ms ({_pct(self.fwd_ms, self.step_ms)})"),
            ("backward", f"{self.bwd_ms:.1f} ms ({_pct(self.bwd_ms, self.step_ms)})"
                         + (" incl. recompute" if self.grad_checkpointing else "")),
            ("optimizer", f"{self.opt_ms:.1f} ms ({_pct(self.opt_ms, self.step_ms)})"),
            ("peak memory", gib(self.peak_mem_gib)),
            ("reserved", gib(self.reserved_gib)),
            ("first step", f"{self.first_step_s:.2f} s (compile/autotune)"),
            ("loss", f"{self.loss:.4f}"),
        ]
        if self.scan_share is not None:
            rows.append(("scan alone/layer", f"fwd {self.scan_fwd_ms:.2f} ms + bwd {self.scan_bwd_ms:.2f} ms"))
            rows.append(("scan share", f"~{100 * self.scan_share:.0f}% of the step (scan timed alone x n_layer"
                                       f" x micro-batches / step)"))
        return [{"metric": k, "value": v} for k, v in rows]


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole > 0 else "-"


class _Clock:
    """Marks on the device timeline: CUDA events on GPU, perf_counter on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def ms(self, a, b) -> float:
        if self.cuda:
            return a.elapsed_time(b)
        return (b - a) * 1000.0

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()


def _autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def lm_loss(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Next-token CE through ``model(...)`` (so DDP's forward hooks run), same as MambaLM.loss."""
    total, count = next_token_nll_sums(model, input_ids)
    return total / count.clamp(min=1)


def random_tokens(batch: int, length: int, device, seed: int = 0) -> torch.Tensor:
    """(batch, length) uniform random A/C/G/T token ids."""
    from ..data.tokenizer import VOCAB

    g = torch.Generator().manual_seed(seed)
    lo = VOCAB.index("A")                  # A, C, G, T are consecutive ids
    return torch.randint(lo, lo + 4, (batch, length), generator=g).to(device)


def build_model(cfg: BenchTrainConfig, device: torch.device, runtime=None):
    """The preset's MambaLM on ``device``, with ``runtime`` (default: the hand-set options over the defaults)."""
    from ..model.config import MambaConfig
    from ..model.lm import MambaLM

    torch.manual_seed(cfg.seed)
    return MambaLM(MambaConfig.from_preset(cfg.preset), runtime if runtime is not None else cfg.runtime()).to(device)


def device_memory_of(device: torch.device) -> tuple[str, int | None]:
    """``(device_type, free bytes)`` for the planner: the CUDA device's free memory now, None on CPU."""
    if device.type != "cuda":
        return "cpu", None
    torch.cuda.empty_cache()
    return "cuda", int(torch.cuda.mem_get_info(device)[0])


def plan_step(cfg: BenchTrainConfig, device_type: str, free_bytes: int | None):
    """``(planner, plan)``: the engine's :class:`~mamba_genome.train.engine.StagePlan` for ``cfg.batch_size``
    windows of ``cfg.seq_len`` per step on a device with ``free_bytes`` free, the hand-set flags over it."""
    from ..model.config import MambaConfig
    from ..train.engine import StagePlanner

    planner = StagePlanner(MambaConfig.from_preset(cfg.preset), lambda L: cfg.batch_size, device_type=device_type,
                           free_bytes=free_bytes, memory=cfg.memory, expert=cfg.expert())
    return planner, planner.plan(cfg.seq_len)


def make_optimizer(model, cfg: BenchTrainConfig, device: torch.device):
    from ..model.lm import param_groups

    base = model.module if hasattr(model, "module") else model
    # the fused kernel on CPU as well: one pass over all parameters instead of about ten small ops
    # per tensor (tiny preset: 0.6 against 2.6-3.4 ms of main-thread CPU per step)
    return torch.optim.AdamW(param_groups(base, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95),
                             fused=device.type in ("cuda", "cpu"))


def timed_steps(model, opt, ids, cfg: BenchTrainConfig, device: torch.device, progress=None, accumulate: int = 1):
    """Run warmup + steps training steps, each ``accumulate`` forward+backward passes over equal slices of
    ``ids`` then AdamW; returns (per-step [fwd, bwd, opt] ms, first step s, last loss)."""
    clock = _Clock(device)
    model.train()
    chunks = ids.chunk(accumulate)
    marks, first_s, loss = [], 0.0, None
    for i in range(cfg.warmup + cfg.steps):
        t_wall = time.perf_counter()
        step = []
        for chunk in chunks:
            a = clock.mark()
            with _autocast(device, cfg.precision):
                loss = lm_loss(model, chunk)
            b = clock.mark()
            (loss / len(chunks)).backward()
            step.append((a, b, clock.mark()))
        opt.step()
        opt.zero_grad(set_to_none=True)
        end = clock.mark()
        if i == 0:
            clock.sync()
            first_s = time.perf_counter() - t_wall
        if i >= cfg.warmup:
            marks.append((step, end))
        if progress is not None:
            progress(i + 1, cfg.warmup + cfg.steps)
    clock.sync()
    phases = [(sum(clock.ms(a, b) for a, b, _ in step), sum(clock.ms(b, c) for _, b, c in step),
               clock.ms(step[-1][2], end)) for step, end in marks]
    return phases, first_s, float(loss.detach().float().item())


def time_scan(cfg: BenchTrainConfig, device: torch.device, reps: int = 3, batch: int | None = None) -> tuple[float, float]:
    """Median ms of one layer's selective scan forward and backward alone, at the model's shape/layout
    (``batch`` windows, default ``cfg.batch_size``)."""
    from ..kernels import selective_scan
    from ..model.config import MambaConfig

    c = MambaConfig.from_preset(cfg.preset)
    Bsz, L, Di, N, R = batch or cfg.batch_size, cfg.seq_len, c.d_inner, c.d_state, c.dt_rank
    dt = torch.bfloat16 if cfg.precision == "bf16-mixed" else torch.float32
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    rnd = (lambda *s: torch.randn(*s, device=device, dtype=dt, generator=g))
    # the model hands the scan slices of its projections: z of in_proj's (x, z), B/C of x_proj's
    # (dt, B, C); views of buffers that need no grad are leaves, so the layout is kept as is
    xz = rnd(Bsz, L, 2 * Di)
    x_dbl = rnd(Bsz, L, R + 2 * N)
    u = rnd(Bsz, L, Di)
    delta = rnd(Bsz, L, Di) * 0.5 - 4
    z, Bm, Cm = xz[..., Di:], x_dbl[..., R:R + N], x_dbl[..., R + N:]
    A = -torch.arange(1, N + 1, device=device, dtype=torch.float32).repeat(Di, 1)
    Dp = torch.ones(Di, device=device)
    bias = torch.full((Di,), -4.0, device=device)
    leaves = [u, delta, z, Bm, Cm, A, Dp, bias]
    for t in leaves:
        t.requires_grad_(True)
    clock = _Clock(device)
    fwd, bwd = [], []
    for _ in range(reps + 1):
        m0 = clock.mark()
        y = selective_scan(u, delta, A, Bm, Cm, D=Dp, z=z, delta_bias=bias, delta_softplus=True,
                           backend=cfg.scan_backend)
        m1 = clock.mark()
        y.backward(torch.ones_like(y))
        m2 = clock.mark()
        clock.sync()
        fwd.append(clock.ms(m0, m1))
        bwd.append(clock.ms(m1, m2))
        del y
        for t in leaves:
            t.grad = None
    return statistics.median(fwd[1:]), statistics.median(bwd[1:])


def run_bench_train(cfg: BenchTrainConfig, progress=None, model_wrapper=None, log=None) -> BenchTrainResult:
    """Benchmark training steps; see the module docstring for what is measured.

    The step is the engine's plan for the shape (:func:`plan_step`; on a GPU checked by a probe step
    unless a flag is hand-set or ``model_wrapper`` is given); ``log`` gets the plan in one line.
    ``model_wrapper`` (e.g. ``lambda m: DistributedDataParallel(m, ...)``) wraps the model before the
    optimizer is built. Raises ``torch.cuda.OutOfMemoryError`` on OOM (callers decide whether to report
    it or move on).
    """
    from ..train.engine import probe_plan

    device = cfg.resolve_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    planner, plan = plan_step(cfg, *device_memory_of(device))
    model = build_model(cfg, device, plan.runtime)
    if not cfg.hand_set and model_wrapper is None:
        plan = probe_plan(planner, plan, model, cfg.precision)
        model.set_runtime(plan.runtime)
    how = f"hand-set {cfg.expert().describe()}" if cfg.hand_set else "the planner's"
    if log is not None:
        log(f"plan ({how}): {plan.reason}")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)   # the probe's peak is not the step's
    params = model.num_parameters()
    if model_wrapper is not None:
        model = model_wrapper(model)
    opt = make_optimizer(model, cfg, device)
    ids = random_tokens(plan.micro_batch * plan.accumulate, cfg.seq_len + 1, device, seed=cfg.seed)
    try:
        phases, first_s, loss = timed_steps(model, opt, ids, cfg, device, progress=progress, accumulate=plan.accumulate)
        peak = reserved = None
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**30
            reserved = torch.cuda.max_memory_reserved(device) / 2**30
    finally:
        del model, opt, ids
        if device.type == "cuda":
            torch.cuda.empty_cache()
    steps = [sum(p) for p in phases]
    step_ms = statistics.median(steps)
    rt = plan.runtime
    tokens = plan.micro_batch * plan.accumulate * cfg.seq_len
    res = BenchTrainResult(
        preset=cfg.preset, params=params, seq_len=cfg.seq_len, batch_size=plan.micro_batch * plan.accumulate,
        micro_batch=plan.micro_batch, accumulate=plan.accumulate, policy=plan.policy, runtime=rt.to_dict(),
        plan=how, plan_reason=plan.reason, grad_checkpointing=rt.gradient_checkpointing, precision=cfg.precision,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        tokens_per_step=tokens, step_ms=step_ms,
        tokens_per_s=tokens / (step_ms / 1000.0) if step_ms > 0 else math.inf,
        fwd_ms=statistics.median(p[0] for p in phases), bwd_ms=statistics.median(p[1] for p in phases),
        opt_ms=statistics.median(p[2] for p in phases), first_step_s=first_s, loss=loss,
        peak_mem_gib=peak, reserved_gib=reserved, scan_fwd_ms=None, scan_bwd_ms=None, scan_share=None,
        step_ms_all=[round(s, 3) for s in steps],
    )
    if cfg.scan_share:
        try:
            f_ms, b_ms = time_scan(cfg, device, batch=plan.micro_batch)
        except torch.cuda.OutOfMemoryError:
            f_ms = b_ms = None
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if f_ms is not None:
            from ..model.config import MambaConfig

            n_layer = MambaConfig.from_preset(cfg.preset).n_layer
            rescans = rt.gradient_checkpointing and not rt.checkpoint_keep_scan   # the recomputation re-runs it
            res.scan_fwd_ms, res.scan_bwd_ms = f_ms, b_ms
            res.scan_share = plan.accumulate * n_layer * (f_ms * (2 if rescans else 1) + b_ms) / step_ms
    return res
