"""Emptied components: how they are detected, and where they are re-seeded
(the worst-explained samples)."""

from __future__ import annotations

import math
from typing import Callable

import torch

from .expectation import Chunks, sample_log_likelihood
from .params import GMMParams
from .stats import SuffStats


#: A component whose effective count falls below this fraction of one
#: (average) sample's weight has lost all its points and is re-seeded.
EMPTY_FRACTION = 1e-3


class EmptyComponentWarning(UserWarning):
    """A component lost all its points during EM and was re-seeded."""


def empty_components(stats: SuffStats) -> torch.Tensor:
    """Components that have lost all their points.

    A component is empty when its effective count is below
    :data:`EMPTY_FRACTION` of the weight of one average sample
    (``stats.weight / stats.count``).

    Parameters
    ----------
    stats : SuffStats

    Returns
    -------
    Tensor (K,) of bool
    """
    one_sample = stats.weight / stats.count.clamp_min(1.0)
    return stats.nk < EMPTY_FRACTION * one_sample


def _lowest(values: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` lowest of ``values`` (1-D), in the order a stable
    sort gives them (ties by position): a partial selection, then a sort of
    the few candidates, instead of sorting every value."""
    if values.numel() <= n:
        return torch.sort(values, stable=True).indices
    kth = torch.topk(values, n, largest=False, sorted=False).values.max()
    candidates = torch.nonzero(values <= kth).view(-1)
    return candidates[torch.sort(values[candidates], stable=True).indices[:n]]


def worst_explained(
    chunks: Chunks,
    params: GMMParams,
    n_points: int,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The ``n_points`` samples with the lowest log-likelihood under ``params``.

    One pass over the chunks keeps, per chunk, only the best candidates, so
    memory stays ``O(n_points * D)`` whatever the data size; ties are broken
    by position in the data, so the result does not depend on the chunking.
    Samples of zero weight are never chosen.

    Parameters
    ----------
    chunks : iterable of (X_chunk, weight_chunk)
    params : GMMParams
    n_points : int
    gather : callable, optional
        In a distributed fit, concatenates a tensor across ranks (in rank
        order), so that every rank chooses the same points.

    Returns
    -------
    Tensor (M, D) in float64, ``M <= n_points`` (fewer only when fewer
    samples have a positive weight).
    """
    values = points = None
    for xb, wb in chunks:
        lpn = sample_log_likelihood(xb, params).double()
        if wb is not None:
            lpn = lpn.masked_fill(wb <= 0, math.inf)
        order = _lowest(lpn, n_points)
        v, x = lpn[order], xb[order].double()
        if values is not None:
            v, x = torch.cat([values, v]), torch.cat([points, x])
            order = _lowest(v, n_points)
            v, x = v[order], x[order]
        values, points = v, x
    if values is None:
        if gather is None:
            raise ValueError("No data to fit: the data source yielded no chunk.")
        # This rank's pass ended early (a failure the gather reports on every
        # rank) or its shard is empty: it still joins the collective.
        values = torch.empty(0, dtype=torch.float64, device=params.means.device)
        points = torch.empty(0, params.n_features, dtype=torch.float64, device=params.means.device)
    if gather is not None:
        # Same shapes on every rank (a shard may hold fewer candidates).
        short = n_points - values.shape[0]
        if short > 0:
            values = torch.cat([values, values.new_full((short,), math.inf)])
            points = torch.cat([points, points.new_zeros(short, points.shape[1])])
        values, points = gather(values), gather(points)
        order = torch.sort(values, stable=True).indices[:n_points]
        values, points = values[order], points[order]
    return points[values < math.inf]
