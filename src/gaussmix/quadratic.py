"""Quadratic features of the data for the joint EM engine (:mod:`gaussmix.joint`).

``phi(x) = [1, x, vech(x x^T)]`` (``vech``: the upper triangle, row-major,
``P = 1 + D + D (D + 1) / 2`` columns): a Gaussian's log-density is linear in
``phi(x)``, so the weighted log-densities of many components are one GEMM, and
their totals ``(n_k, sum r x, sum r x x^T)`` another.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["quadratic_features"]


@functools.lru_cache(maxsize=None)
def _pairs(d: int, device: torch.device):
    """Index maps of the packed upper triangle (``M = D (D + 1) / 2`` entries,
    row-major) of a D x D matrix: its positions in the flattened matrix (M,),
    the packed entry of every flattened position (D * D,), and the weight of
    each packed entry in a quadratic form ``x^T A x`` (1 on the diagonal, 2
    off it: ``x_i x_j`` appears twice)."""
    rows, cols = torch.triu_indices(d, d, device=device)
    flat = rows * d + cols
    packed = torch.empty(d * d, dtype=torch.long, device=device)
    packed[flat] = torch.arange(flat.numel(), device=device)
    packed[cols * d + rows] = torch.arange(flat.numel(), device=device)
    twice = torch.where(rows == cols, 1.0, 2.0).to(torch.float64)
    return rows, cols, flat, packed, twice


def _unpack(v: torch.Tensor, d: int) -> torch.Tensor:
    """Symmetric D x D matrices from their packed upper triangles (..., M)."""
    # index_select: several times faster than advanced indexing on a last axis.
    return v.index_select(-1, _pairs(d, v.device)[3]).unflatten(-1, (d, d))


def quadratic_features(X: torch.Tensor) -> torch.Tensor:
    """``[1, x, vech(x x^T)]`` of every row, float64 (``vech``: the upper
    triangle, row-major).

    Parameters
    ----------
    X : Tensor (N, D)

    Returns
    -------
    Tensor (N, 1 + D + D (D + 1) / 2)
    """
    x = X.double()
    n, d = x.shape
    rows, cols = _pairs(d, x.device)[:2]
    out = torch.empty(n, 1 + d + rows.numel(), dtype=torch.float64, device=x.device)
    out[:, 0] = 1.0
    out[:, 1:1 + d] = x
    torch.mul(x[:, rows], x[:, cols], out=out[:, 1 + d:])
    return out


def _n_features(phi: torch.Tensor) -> int:
    """D from the width ``1 + D + D (D + 1) / 2`` of the quadratic features."""
    return int(round((math.sqrt(1 + 8 * phi.shape[1]) - 3) / 2))
