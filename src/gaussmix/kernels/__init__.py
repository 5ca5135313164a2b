"""Implementations of the E-step hot path, and the switches that choose them.

The fast path is the one in :mod:`gaussmix.covariance` and
:mod:`gaussmix.em` (plain PyTorch, one GEMM per chunk for the distances and
one for the second moments, used on every device).  :mod:`.reference` holds
the straightforward per-component formulation it is checked against.

Matmul precision
----------------
On CUDA, float32 matmuls may use TF32 tensor cores (about 10 mantissa bits:
relative errors near 1e-3 in each product) only when asked for, by
``GAUSSMIX_ALLOW_TF32=1`` in the environment or :func:`set_allow_tf32`.
By default every pass runs with TF32 off, whatever the global torch setting,
so that float32 fits keep full float32 accuracy.  Statistics are summed in
float64 either way.
"""

from __future__ import annotations

import contextlib
import os

import torch

from . import reference

__all__ = ["allow_tf32", "set_allow_tf32", "matmul_precision", "reference"]

_ALLOW_TF32: bool | None = None


def set_allow_tf32(flag: bool | None) -> None:
    """Allow (True) or forbid (False) TF32 matmuls in EM passes on CUDA.

    ``None`` returns to the environment variable ``GAUSSMIX_ALLOW_TF32``.
    """
    global _ALLOW_TF32
    _ALLOW_TF32 = None if flag is None else bool(flag)


def allow_tf32() -> bool:
    """Whether EM passes on CUDA may use TF32 matmuls."""
    if _ALLOW_TF32 is not None:
        return _ALLOW_TF32
    return os.environ.get("GAUSSMIX_ALLOW_TF32", "0").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def _cuda_tf32(flag: bool):
    matmul = torch.backends.cuda.matmul
    old = matmul.allow_tf32
    matmul.allow_tf32 = flag
    try:
        yield
    finally:
        matmul.allow_tf32 = old


def matmul_precision(device) -> contextlib.AbstractContextManager:
    """Context for one EM pass on ``device``: sets the TF32 switch on CUDA,
    does nothing elsewhere (CPU matmuls are always full precision)."""
    if torch.device(device).type != "cuda":
        return contextlib.nullcontext()
    return _cuda_tf32(allow_tf32())
