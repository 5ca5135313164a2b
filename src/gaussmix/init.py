"""Initialisation: k-means++, k-means, random and random-from-data, on the device.

Each method yields responsibilities chunk by chunk (never an (N, K) tensor for
the ``kmeans`` and ``k-means++`` methods); their sufficient statistics go
through the same M-step as EM, with ``reg_covar``, exactly as scikit-learn's
``_initialize`` does.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .chunk_workers import balanced_rows, in_workers, workers_for
from .data import iter_chunks
from .em import m_step
from .kmeans import kmeans, kmeans_plusplus
from .params import GMMParams
from .stats import SuffStats

__all__ = ["kmeans_plusplus", "kmeans", "hc_partition", "one_hot", "initial_params", "initial_stats",
           "INIT_METHODS"]

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data", "hc")

#: Rows the hierarchical clustering runs on at most (mclust's default subset).
HC_SUBSET = 2000

def _choice(gen, n_samples, size, weights, device):
    """``size`` distinct indices drawn with probability proportional to weights."""
    if weights is None:
        perm = torch.randperm(n_samples, generator=gen, device=gen.device)
        return perm[:size].to(device)
    w = weights.double().to(gen.device)
    return torch.multinomial(w, size, replacement=False, generator=gen).to(device)


def hc_partition(X: torch.Tensor, n_clusters, gen: torch.Generator,
                 subset: int = HC_SUBSET, *, strict: bool = True) -> tuple[torch.Tensor, dict]:
    """Model-based hierarchical clustering of (a subset of) the data, cut at
    one or several numbers of clusters.

    Parameters
    ----------
    X : Tensor (N, D)
    n_clusters : int or iterable of int
    gen : torch.Generator
        Draws the subset when ``N > subset``.
    subset : int
        Rows the clustering runs on at most; its time and memory grow with
        the square of this number (:mod:`gaussmix.hc`).
    strict : bool
        Raise when the clustered rows hold fewer distinct rows than some
        ``K``; otherwise leave those ``K`` out of ``labels``.

    Returns
    -------
    rows : Tensor (M,) of int64
        Indices of the rows that were clustered, sorted (all rows when
        ``N <= subset``).
    labels : dict
        ``K -> Tensor (M,)`` of labels in ``0..K-1`` for those rows.
    """
    from .hc import hierarchical_merges

    n = X.shape[0]
    ks = [int(n_clusters)] if isinstance(n_clusters, int) else [int(k) for k in n_clusters]
    if subset < max(ks):
        raise ValueError(
            f"hc_subset={subset} is smaller than the number of components ({max(ks)}); "
            f"use a subset of at least as many rows as components."
        )
    if n > subset:
        rows = torch.sort(torch.randperm(n, generator=gen, device=gen.device)[:subset]).values
        rows = rows.to(X.device)
    else:
        rows = torch.arange(n, device=X.device)
    # From single rows, as mclust's Mclust does (its hc() drops the duplicate
    # partition that its signature names).
    sub = X[rows].detach().double().cpu().numpy()
    distinct = np.unique(sub, axis=0).shape[0]
    if strict and distinct < max(ks):
        what = "all rows are identical" if distinct == 1 else f"only {distinct} are distinct"
        raise ValueError(
            f"init_params='hc' cannot form {max(ks)} clusters: of the {sub.shape[0]} rows it "
            f"clusters, {what}. Use fewer components, or init_params='kmeans' on data with "
            f"more distinct rows."
        )
    ks = [k for k in ks if k <= distinct]
    if not ks:
        return rows, {}
    tree = hierarchical_merges(sub, partition=np.arange(sub.shape[0]))
    cuts = tree.cut(ks)
    return rows, {k: torch.as_tensor(cuts[k], dtype=torch.long, device=X.device) for k in ks}


def one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Float64 responsibilities (B, k), one-hot at ``labels`` and all zero
    where the label is ``-1`` (a row that takes no part)."""
    out = torch.zeros(labels.shape[0], k, dtype=torch.float64, device=labels.device)
    hit = labels >= 0
    out[hit, labels[hit]] = 1.0
    return out


def _one_hot_at(rows: torch.Tensor, labels: torch.Tensor, n: int, k: int, device):
    """Responsibilities that are one-hot at ``rows`` (label ``labels``) and zero
    elsewhere, chunk by chunk: the M-step then sees only those rows."""
    pos = torch.full((n,), -1, dtype=torch.long, device=device)
    pos[rows] = labels
    return lambda a, b: one_hot(pos[a:b], k)


def _stats_from_resp(X, sample_weight, resp_fn, n_components, cov, shift, rows):
    d = X.shape[1]
    n = X.shape[0]

    def totals(chunks):
        total = SuffStats.zeros(n_components, d, cov.stat_shape(n_components, d), device=X.device)
        for start, (xb, wb) in chunks:
            # float64 throughout: one pass, and the initial covariances of float32
            # data must not lose precision to the distance between clusters.
            resp = resp_fn(start, start + xb.shape[0]).double()
            if wb is not None:
                resp = resp * wb.double().unsqueeze(1)
            xc = xb.double() - shift.double()
            total.nk += resp.sum(0)
            total.s1 += resp.T @ xc
            total.s2 += cov.second_moment(xc, resp)
        return total

    workers = workers_for(n, X.device)
    rows = balanced_rows(n, rows, workers)
    chunks = zip(range(0, n, rows), iter_chunks(X, sample_weight, rows))
    return in_workers(totals, chunks, workers, add=lambda total, part: total.add_(part))


#: Fewest rows from which the initial statistics of a hard partition may be
#: taken cluster by cluster (:func:`_stats_from_labels`): below it the
#: one-hot pass's few calls cost less than a loop over the clusters.
LABEL_STATS_MIN_ROWS = 10_000


def _by_label(n: int, k: int, d: int, cov) -> bool:
    """Whether a hard partition's statistics are cheaper cluster by cluster:
    the one-hot pass forms every component's second moment from every row
    (``K`` times the work of one's own), which pays for the sort and the
    gather once a component's second moment has at least 64 entries and
    there are at least 8 components.  Measured (100 000 rows, ``full``,
    one-hot / by label, ms): D x K = 16 x 16 137 / 51 and 102 / 25, 32 x 8
    109 / 52, 64 x 8 314 / 110, 8 x 8 32 / 27; 4 x 16 14 / 26, 16 x 4 (300 000
    rows) 56 / 101; diag, tied and spherical at 16 x 16 12-17 / 25-33."""
    if cov.shared or k < 8 or n < LABEL_STATS_MIN_ROWS:
        return False
    return math.prod(cov.stat_shape(k, d)) // k >= 64


def _stats_from_labels(X, sample_weight, rows_idx, labels, n_components, cov, shift, rows):
    """The statistics of a hard partition, cluster by cluster: the labelled
    rows sorted by cluster, each cluster's moments in pieces of at most
    ``rows`` rows (a one-hot pass would form every component's second moment
    from every row, ``K`` times the work).  ``rows_idx`` (M,) are the
    labelled rows (None: all, in order), ``labels`` (M,) their clusters."""
    d = X.shape[1]
    total = SuffStats.zeros(n_components, d, cov.stat_shape(n_components, d), device=X.device)
    order = torch.argsort(labels, stable=True)
    idx = order if rows_idx is None else rows_idx[order]
    counts = torch.bincount(labels, minlength=n_components).tolist()
    shift = shift.double()
    start = 0
    for c, count in enumerate(counts):
        for a in range(start, start + count, rows):
            at = idx[a:min(a + rows, start + count)]
            # float64, as the one-hot pass: the initial covariances of float32
            # data must not lose precision to the distance between clusters.
            xc = X.index_select(0, at).double() - shift
            w = (torch.ones(at.shape[0], 1, dtype=torch.float64, device=X.device)
                 if sample_weight is None else sample_weight.index_select(0, at).double().unsqueeze(1))
            total.nk[c] += w.sum()
            total.s1[c] += (w.T @ xc)[0]
            part = cov.second_moment(xc, w)
            if cov.shared:
                total.s2 += part
            else:
                total.s2[c] += part[0]
        start += count
    return total


def initial_params(
    X: torch.Tensor,
    n_components: int,
    covariance_type: str,
    init_params: str,
    reg_covar: float,
    gen: torch.Generator,
    sample_weight: torch.Tensor | None = None,
    rows: int = 1 << 16,
    hc_subset: int = HC_SUBSET,
    prior=None,
) -> GMMParams:
    """Initial parameters from an initial partition of the data: the M-step
    of :func:`initial_stats`.

    Parameters
    ----------
    X, n_components, covariance_type, init_params, gen, sample_weight, rows, hc_subset
        As in :func:`initial_stats`.
    reg_covar : float
    prior : PriorParams, optional
        mclust's conjugate prior: the initial M-step is then its posterior
        mode, as mclust's ``me`` starts from its partition.

    Returns
    -------
    GMMParams
        In X's dtype and device.
    """
    stats, shift = initial_stats(X, n_components, covariance_type, init_params, gen,
                                 sample_weight, rows, hc_subset)
    eps = torch.finfo(X.dtype).eps
    return m_step(stats, shift, covariance_type, reg_covar, eps, prior=prior).to(dtype=X.dtype)


def initial_stats(
    X: torch.Tensor,
    n_components: int,
    covariance_type: str,
    init_params: str,
    gen: torch.Generator,
    sample_weight: torch.Tensor | None = None,
    rows: int = 1 << 16,
    hc_subset: int = HC_SUBSET,
) -> tuple[SuffStats, torch.Tensor]:
    """Sufficient statistics of an initial partition of the data.

    Parameters
    ----------
    X : Tensor (N, D)
    n_components : int
    covariance_type : str
    init_params : {"kmeans", "k-means++", "random", "random_from_data", "hc"}
    gen : torch.Generator
    sample_weight : Tensor (N,), optional
        Weights the M-step; ``"hc"`` clusters the rows unweighted.
    rows : int
    hc_subset : int
        Rows the ``"hc"`` clustering runs on at most (see :func:`hc_partition`).

    Returns
    -------
    stats : SuffStats
        Of the partition's responsibilities (float64).
    shift : Tensor (D,)
        Where the moments were taken (the data's weighted mean).
    """
    n = X.shape[0]
    device = X.device
    k = n_components
    hard = None  # a hard partition: (labelled rows or None for all, their labels)
    if init_params == "kmeans":
        labels = kmeans(X, k, gen, sample_weight, rows=rows)
        hard = (None, labels)

        def resp_fn(a, b):
            return torch.nn.functional.one_hot(labels[a:b], k)

    elif init_params == "random":
        resp_all = torch.rand(n, k, generator=gen, device=gen.device, dtype=torch.float64).to(device)
        resp_all /= resp_all.sum(1, keepdim=True)

        def resp_fn(a, b):
            return resp_all[a:b]

    elif init_params in ("random_from_data", "k-means++"):
        if init_params == "k-means++":
            _, idx = kmeans_plusplus(X, k, gen, sample_weight, rows)
        else:
            idx = _choice(gen, n, k, None, device)
        hard = (idx, torch.arange(k, device=device))
        resp_fn = _one_hot_at(*hard, n, k, device)

    elif init_params == "hc":
        idx, cuts = hc_partition(X, k, gen, hc_subset)
        hard = (idx, cuts[k])
        resp_fn = _one_hot_at(*hard, n, k, device)

    else:  # pragma: no cover - validated by the estimator
        raise ValueError(f"Unknown init_params {init_params!r}")

    from .covariance import get_covariance_type

    cov = get_covariance_type(covariance_type)
    if sample_weight is None:
        shift = X.mean(0)
    else:
        shift = (sample_weight.unsqueeze(1) * X).sum(0) / sample_weight.sum()
    if hard is not None and _by_label(n, k, X.shape[1], cov):
        return _stats_from_labels(X, sample_weight, *hard, k, cov, shift, rows), shift
    return _stats_from_resp(X, sample_weight, resp_fn, k, cov, shift, rows), shift
