"""``ReplayCache``: what an activation-checkpointed mixer keeps from its forward so that its
recomputation in the backward can skip the scan."""
from __future__ import annotations


class ReplayCache:
    """Scan results kept from a checkpointed layer's forward for its recomputation.

    Activation checkpointing runs a layer's forward twice: in the forward pass, where only the
    layer's output is kept, and again in the backward, only to rebuild what the backward reads.
    :func:`mamba_inner` with a ``replay=(cache, key)`` argument stores the scan's segment states
    and the x_proj output under ``key`` the first time (fp32 (L/64) x D x N plus (L, R + 2N):
    0.6 GiB per 7m layer at 2^20). After :meth:`arm`, the next call with that key takes them back
    and skips the conv, x_proj, scan and out_proj: a recomputation needs only the saved tensors,
    and PyTorch's non-reentrant checkpoint stops once it has them, so that call's output is left
    uncomputed. A key with nothing stored (or an unarmed cache) computes as usual."""

    def __init__(self):
        self.armed = False
        self._store: dict = {}

    def arm(self) -> None:
        """The forward pass is over: calls from now on are recomputations."""
        self.armed = True

    def put(self, key, hs, x_dbl) -> None:
        if not self.armed:
            self._store[key] = (hs, x_dbl)

    def take(self, key):
        """(hs, x_dbl) or None; an entry is handed out once, so its memory goes with the layer's backward."""
        return self._store.pop(key, None) if self.armed else None
