"""numba building blocks shared by the compiled CPU kernels (``selective_scan/cpu.py``,
``causal_conv1d/cpu.py``): the jit wrapper with its on-disk cache, float32 math that vectorises
(exp, exp2, log on [1, 2], softplus, sigmoid), the worker-thread pool and the zero-copy views of
torch tensors that the kernels read.

Importing this module needs numba; only the ``numba`` backend imports it (``kernels/utils.py``).

Caching note: numba keys a kernel's disk cache on its own source file only, so the helpers here
(inlined into the kernels with ``inline="always"``) do not invalidate the kernels' caches when
they change; after editing this file, touch the kernel files (or clear their ``__pycache__``).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_F32 = np.float32
_LOG2E, _LN2_HI, _LN2_LO = _F32(1.4426950408889634), _F32(0.693359375), _F32(-2.12194440e-4)
_SQRT2 = _F32(1.4142135623730951)
_EXP_LO, _EXP_HI = _F32(-87.0), _F32(88.0)
_ZERO, _HALF, _ONE, _TWENTY = _F32(0.0), _F32(0.5), _F32(1.0), _F32(20.0)
# Cephes expf / logf minimax coefficients (relative error ~1 ulp on their reduced ranges)
_E1, _E2, _E3 = _F32(1.9875691500e-4), _F32(1.3981999507e-3), _F32(8.3334519073e-3)
_E4, _E5, _E6 = _F32(4.1665795894e-2), _F32(1.6666665459e-1), _F32(5.0000001201e-1)
_L = tuple(_F32(c) for c in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                             1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                             3.3333331174e-1))
_L0, _L1, _L2, _L3, _L4, _L5, _L6, _L7, _L8 = _L

# FMA contraction only, no reassociation: the exp's two-part ln 2 and log1p's (1 + w) - 1 rely
# on the order of their operations (the helpers are inlined, so the kernels' flags are theirs),
# and NaN / inf keep their meaning. The one reduction over channels, for dB and dC, is written
# out as a tree (``_fold8``, ``_sum8``) so that it vectorises without reassociation.
_FLAGS = {"contract", "nsz"}


def _jit(fastmath, inline="never"):
    """numba.njit, GIL released, with an on-disk cache; without a writable cache location
    (read-only package and home directory) numba refuses ``cache=True`` at decoration, so
    compile uncached. The math helpers are inlined by numba itself (``inline="always"``): left
    to LLVM, a call inside a channel loop is not always inlined and then stops vectorisation.

    Compiled without numba's runtime (``_nrt=False``): the kernels allocate nothing (scratch
    comes from the caller, ``_scratch``), and with the runtime every array slice taken in a
    loop paid an atomic reference-count increment and decrement on the parent array, in a
    function LLVM may not inline or move, shared between the worker threads."""
    def wrap(fn):
        opts = dict(fastmath=fastmath, nogil=True, error_model="numpy", inline=inline, _nrt=False)
        try:
            return numba.njit(cache=True, **opts)(fn)
        except RuntimeError:
            return numba.njit(cache=False, **opts)(fn)
    return wrap


# ----------------------------------------------------------------------------- math helpers
@intrinsic
def _pow2(typingctx, k):
    """2**k as float32 for a whole-valued float32 k in [-126, 127], built from the exponent bits
    (fptosi, add the bias 127, shift into place, bitcast) so that it vectorises."""
    if k != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.shl(builder.add(builder.fptosi(args[0], i32), ir.Constant(i32, 127)),
                           ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Hint the cache line holding arr[idx] into the cache (LLVM's prefetch: read, keep in all
    levels); no effect on values, and an address past the array is harmless (the instruction
    never faults). The scan's jobs read 256 bytes of each time step's rows (u, z, dt, B, C,
    dy) at strides of 0.5-1 KB, which the hardware prefetchers did not follow: the first load
    of each new row was a miss, 20-30% of the kernels' time."""
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen


@_jit(_FLAGS, inline="always")
def _exp(x):
    """exp(x) for float32: 2**k * p(r), r = x - k ln 2 in [-ln2/2, ln2/2]; 0 below -87."""
    xc = min(max(x, _EXP_LO), _EXP_HI)
    k = np.floor(xc * _LOG2E + _HALF)
    r = xc - k * _LN2_HI
    r = r - k * _LN2_LO
    p = ((((_E1 * r + _E2) * r + _E3) * r + _E4) * r + _E5) * r + _E6
    p = p * r * r + r + _ONE
    res = _ZERO if x < _EXP_LO else p * _pow2(k)
    return x if x != x else res                           # NaN stays NaN


# 2**f on [-1/2, 1/2]: degree-6 polynomial fitted to the relative error (max 1.9e-9 in float64;
# 1.7 ulp evaluated in float32 by Horner's rule)
_P2 = tuple(_F32(c) for c in (1.0, 0.6931471824645996, 0.24022646248340607, 0.05550329014658928,
                              0.009618489071726799, 0.0013399887830018997, 0.000153456800035201))
_P20, _P21, _P22, _P23, _P24, _P25, _P26 = _P2
_EXP2_LO, _EXP2_HI = _F32(-126.0), _F32(127.0)


@_jit(_FLAGS, inline="always")
def _exp2(x):
    """2**x for float32 (the scan's decays, exp(dt A) = 2**(dt A log2 e)): 2**k * p(x - k) with
    k = rint(x); x clamped to [-126, 127], so 2**-126 stands for anything smaller. Fewer
    operations than ``_exp`` (no two-part reduction: x - k is exact). The clamps are selects
    written so that NaN passes through them, and then through p."""
    xc = _EXP2_LO if x < _EXP2_LO else x
    xc = _EXP2_HI if xc > _EXP2_HI else xc
    k = np.rint(xc)
    f = xc - k
    p = (((((_P26 * f + _P25) * f + _P24) * f + _P23) * f + _P22) * f + _P21) * f + _P20
    return p * _pow2(k)


@_jit(_FLAGS, inline="always")
def _log_1_2(v):
    """log(v) for float32 v in [1, 2] (Cephes logf after halving v above sqrt 2)."""
    big = v > _SQRT2
    m = v * _HALF if big else v
    e = _ONE if big else _ZERO
    x = m - _ONE
    z = x * x
    y = ((((((((_L0 * x + _L1) * x + _L2) * x + _L3) * x + _L4) * x + _L5) * x + _L6) * x + _L7) * x + _L8)
    y = y * x * z + e * _LN2_LO - _HALF * z
    return x + y + e * _LN2_HI


@_jit(_FLAGS, inline="always")
def _softplus(v):
    """log(1 + exp(v)) = max(v, 0) + log1p(exp(-|v|)), identity above 20 (as torch's softplus).
    Both sides of every choice are computed (selects, no branches), so that it vectorises."""
    w = _exp(-abs(v))
    s = _ONE + w
    d = s - _ONE
    lp = _log_1_2(s) * (w / d)                      # log1p(w) without cancellation ...
    lp = w if d == _ZERO else lp                    # ... and w itself where 1 + w rounds to 1
    r = max(v, _ZERO) + lp
    return v if v > _TWENTY else r


@_jit(_FLAGS, inline="always")
def _sigmoid(v):
    return _ONE / (_ONE + _exp(-v))



# ----------------------------------------------------------------------------- threads and views
_POOL: tuple[int, int, ThreadPoolExecutor] | None = None   # (pid, workers, pool)


# Launches with less work than this (elements x inner work: state updates for the scan, inputs x
# taps for the conv) run in the calling thread alone: handing a job to a pool thread and waiting
# for it costs tens of microseconds on an idle machine and milliseconds on a busy one, which
# dominated streaming with short chunks (2-layer model, 2 x 1 token per call, 2-core VM under
# load: 127 ms per call with 2 threads, 7.5 ms with 1). Tests set it to 0 to cover the split.
MIN_PARALLEL_WORK = 1 << 18


def _threads(work: int | None = None) -> int:
    """Threads for a launch: as many as torch uses (``torch.set_num_threads`` applies here too),
    or 1 when ``work`` is below ``MIN_PARALLEL_WORK``."""
    if work is not None and work < MIN_PARALLEL_WORK:
        return 1
    return max(1, torch.get_num_threads())


def _run_jobs(run, njobs: int, nwork: int, cuts: list[int] | None = None) -> None:
    """``run(w, job0, job1)`` for nwork contiguous slices of range(njobs), in parallel threads
    (the kernels release the GIL): even slices, or worker w takes cuts[w]..cuts[w + 1]. Slice 0
    runs in the calling thread. The pool is made again after a fork (a child process has none
    of its parent's threads)."""
    global _POOL
    if nwork <= 1:
        run(0, 0, njobs)
        return
    pid = os.getpid()
    if _POOL is None or _POOL[0] != pid or _POOL[1] < nwork - 1:
        _POOL = (pid, nwork - 1, ThreadPoolExecutor(nwork - 1, thread_name_prefix="mamba-genome-cpu"))
    if cuts is None:
        cuts = [w * njobs // nwork for w in range(nwork + 1)]
    futures = [_POOL[2].submit(run, w, cuts[w], cuts[w + 1]) for w in range(1, nwork)]
    run(0, cuts[0], cuts[1])
    for f in futures:
        f.result()


_LOCAL = threading.local()


def _scratch(nwork: int, size: int) -> np.ndarray:
    """A (nwork, >= size) fp32 scratch buffer for the kernels' workers, kept per calling thread
    and reused across calls (a fresh one of this size was a fresh mmap with page faults on each
    call); contents undefined."""
    buf = getattr(_LOCAL, "scratch", None)
    if buf is None or buf.shape[0] < nwork or buf.shape[1] < size:
        rows = max(nwork, buf.shape[0] if buf is not None else 0)
        cols = max(size, buf.shape[1] if buf is not None else 0)
        buf = _LOCAL.scratch = np.empty((rows, cols), np.float32)
    return buf


def _flat(t: torch.Tensor):
    """(flat fp32 numpy view, (batch stride, time stride)) of a (B, L, X) tensor with unit stride
    on its last axis; other tensors are converted / copied first."""
    t = t.detach()
    if t.dtype != torch.float32 or t.stride(-1) != 1:
        t = t.float().contiguous()
    span = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))
    flat = torch.as_strided(t, (span,), (1,), t.storage_offset())
    return flat.numpy(), (t.stride(0), t.stride(1)), t


def _vec(t: torch.Tensor | None, n: int) -> np.ndarray:
    """A contiguous fp32 (n,) / flattened numpy array (zeros when ``t`` is None)."""
    if t is None:
        return np.zeros(n, np.float32)
    return t.detach().float().contiguous().reshape(-1).numpy()
