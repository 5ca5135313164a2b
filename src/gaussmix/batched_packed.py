"""The batched engine's passes on packed quadratic features (full-shaped types).

:func:`gaussmix.batched.fit_batched` runs EM for many mixtures of one type as
one mixture of all their components, on data shifted once by their mean.  For
the full-shaped types the plain form of a pass goes through (B, sum K * D)
intermediates; on the features ``[x_i x_j (i <= j), x, 1]`` of
:mod:`gaussmix.covariance.full_packed` it is one GEMM each way, and with the
shift fixed for the whole call the features are built once, before the first
pass.  Where they apply follows :class:`~gaussmix.covariance.CovarianceType`'s
``pass_form`` and the single fit's rule (:mod:`gaussmix.feature_cache`): on
the CPU, from 2000 rows, while the products of two features stay normal
numbers and the features fit in the cache's limit.
"""

from __future__ import annotations

import torch

from .data import chunk_rows, iter_chunks
from .covariance.base import _LOG_2PI
from .chunk_workers import in_workers
from .feature_cache import CACHE_BYTES, keeps_features

__all__ = ["packed_features", "packed_totals"]


def packed_features(X: torch.Tensor, shift: torch.Tensor, cov, total_k: int, workers: int = 1):
    """Each chunk's packed features of ``X - shift``, or None where the plain
    form runs.

    Parameters
    ----------
    X : Tensor (N, D)
    shift : Tensor (D,)
        The batch's one shift.
    cov : CovarianceType
    total_k : int
        Components of the batch (the plain form's intermediate is K * D wide).
    workers : int
        Chunk workers of the passes (:mod:`gaussmix.chunk_workers`).

    Notes
    -----
    The chunks are sized for the (B, sum K) log-probabilities alone, as a
    component-major pass's (:func:`gaussmix.data.chunk_rows` with
    ``kept_features``): longer than the plain form's, whose (B, sum K * D)
    intermediates are gone.
    """
    n, d = X.shape
    if cov.shared:
        return None
    form = cov.pass_form(total_k, d, X.device)
    if not form.keeps_features or n * form.feature_width(d) * X.element_size() > CACHE_BYTES:
        return None
    if not keeps_features(X, shift.double()):
        return None
    rows = chunk_rows(n, total_k, d, X.device, X.dtype, None, cov.name, kept_features=True,
                      workers=workers)
    return form, [form.features(xb, shift)[1] for xb, _ in iter_chunks(X, None, rows)]


def packed_totals(packed, batch, shift, normalise, workers: int = 1):
    """:func:`gaussmix.batched._batched_totals` on the packed features: the
    same ``(nk, s1, s2, ll, count)``, moments around ``shift`` (``workers``:
    threads that share the chunks, :mod:`gaussmix.chunk_workers`)."""
    form, feats = packed
    d = batch.means.shape[1]
    n_groups, kmax = len(batch.sizes), max(batch.sizes)
    const = torch.log(batch.weights) + (form.log_det(batch.prec, d) - 0.5 * d * _LOG_2PI)
    coef = form.prepare(batch.means - shift, batch.prec, const)

    def totals(part):
        raw = None
        ll = torch.zeros(n_groups, dtype=torch.float64, device=batch.means.device)
        count = 0
        for f in part:
            resp, lpn = normalise(f @ coef.T, batch.slot, n_groups, kmax)
            moments = (resp.T @ f).double()
            raw = moments if raw is None else raw.add_(moments)
            ll += lpn.double().sum(0)
            count += f.shape[0]
        return raw, ll, count

    raw, ll, count = in_workers(totals, feats, workers)
    nk, s1, s2 = form.split_moments(raw, d)
    return nk, s1, s2, ll, count
