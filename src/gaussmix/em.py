"""The functional core of EM: E-step, sufficient statistics, M-step, EM loop.

One EM iteration is one pass over the data: for every chunk, the E-step under
the current parameters gives responsibilities, whose sufficient statistics
are added to a float64 running total; then one M-step turns the total into new
parameters.  In-memory, out-of-core and distributed fits differ only in where
the chunks come from and in the ``reduce`` applied to the totals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from .covariance import get_covariance_type
from .params import GMMParams
from .stats import SuffStats

__all__ = [
    "estimate_weighted_log_prob",
    "e_step",
    "chunk_stats",
    "accumulate",
    "m_step",
    "EMResult",
    "run_em",
]

Chunks = Iterable[tuple[torch.Tensor, "torch.Tensor | None"]]


def estimate_weighted_log_prob(X: torch.Tensor, params: GMMParams) -> torch.Tensor:
    """``log w_k + log N(x_i | mu_k, Sigma_k)`` for every point and component.

    Parameters
    ----------
    X : Tensor (B, D)
        Data in the parameters' dtype and device.
    params : GMMParams

    Returns
    -------
    Tensor (B, K)
    """
    shift = params.shift
    xc = X - shift
    means_c = params.means - shift
    log_gauss = params.cov.log_gaussian(xc, means_c, params.precisions_cholesky)
    return log_gauss + torch.log(params.weights)


def e_step(X: torch.Tensor, params: GMMParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Log responsibilities and per-sample log-likelihood of one chunk.

    Parameters
    ----------
    X : Tensor (B, D)
    params : GMMParams

    Returns
    -------
    log_resp : Tensor (B, K)
    log_prob_norm : Tensor (B,)
        ``log p(x_i)`` under the mixture.
    """
    wlp = estimate_weighted_log_prob(X, params)
    log_prob_norm = torch.logsumexp(wlp, dim=1)
    return wlp - log_prob_norm.unsqueeze(1), log_prob_norm


def chunk_stats(
    X: torch.Tensor,
    params: GMMParams,
    sample_weight: torch.Tensor | None = None,
) -> SuffStats:
    """E-step on one chunk and its sufficient statistics (float64).

    Parameters
    ----------
    X : Tensor (B, D)
    params : GMMParams
        Current parameters; their mixture mean is the shift of the moments.
    sample_weight : Tensor (B,), optional
        Non-negative weights; a point of weight w counts as w copies.
    """
    cov = params.cov
    shift = params.shift
    xc = X - shift
    log_gauss = cov.log_gaussian(xc, params.means - shift, params.precisions_cholesky)
    wlp = log_gauss + torch.log(params.weights)
    log_prob_norm = torch.logsumexp(wlp, dim=1)
    resp = torch.exp(wlp - log_prob_norm.unsqueeze(1))
    if sample_weight is not None:
        resp = resp * sample_weight.unsqueeze(1)
        ll = (log_prob_norm.double() * sample_weight.double()).sum()
        wsum = sample_weight.double().sum()
    else:
        ll = log_prob_norm.double().sum()
        wsum = torch.tensor(float(X.shape[0]), dtype=torch.float64, device=X.device)
    return SuffStats(
        nk=resp.sum(0).double(),
        s1=(resp.T @ xc).double(),
        s2=cov.second_moment(xc, resp).double(),
        log_likelihood=ll,
        weight=wsum,
        count=torch.tensor(float(X.shape[0]), dtype=torch.float64, device=X.device),
    )


def accumulate(chunks: Chunks, params: GMMParams) -> SuffStats:
    """Sum :func:`chunk_stats` over chunks (one pass over the data)."""
    k, d = params.n_components, params.n_features
    total = SuffStats.zeros(k, d, params.cov.stat_shape(k, d), device=params.means.device)
    for xb, wb in chunks:
        total.add_(chunk_stats(xb, params, wb))
    return total


def m_step(
    stats: SuffStats,
    shift: torch.Tensor,
    covariance_type: str,
    reg_covar: float,
    eps: float,
) -> GMMParams:
    """New parameters from summed statistics, computed in float64.

    Parameters
    ----------
    stats : SuffStats
    shift : Tensor (D,)
        The shift the second moments were taken around.
    covariance_type : str
    reg_covar : float
        Non-negative amount added to every covariance diagonal.
    eps : float
        ``10 * eps`` is added to the effective counts (as scikit-learn does) so
        that an emptied component divides by a tiny number, not by zero.

    Returns
    -------
    GMMParams
        In float64 on the statistics' device.
    """
    cov = get_covariance_type(covariance_type)
    nk = stats.nk + 10.0 * eps
    means_c = stats.s1 / nk.unsqueeze(1)
    shift64 = shift.double()
    covariances = cov.covariances_from_stats(nk, means_c, stats.s2, reg_covar)
    prec_chol = cov.precisions_cholesky(covariances)
    return GMMParams(
        weights=nk / nk.sum(),
        means=means_c + shift64,
        precisions_cholesky=prec_chol,
        covariance_type=covariance_type,
        covariances=covariances,
    )


@dataclass
class EMResult:
    """Outcome of :func:`run_em`.

    Attributes
    ----------
    params : GMMParams
        Parameters after the last M-step.
    converged : bool
    n_iter : int
        Number of EM iterations run.
    lower_bound : float
        Mean log-likelihood per sample from the last E-step (of the parameters
        before the last M-step, as scikit-learn reports it).
    lower_bounds : list of float
        Its history, one value per iteration.
    """

    params: GMMParams
    converged: bool
    n_iter: int
    lower_bound: float
    lower_bounds: list = field(default_factory=list)


def run_em(
    chunks: Callable[[], Chunks],
    params: GMMParams,
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    lower_bound: float = -math.inf,
    reduce: Callable[[SuffStats], SuffStats] | None = None,
    callback: Callable[[int, float, GMMParams], None] | None = None,
    start_iter: int = 0,
    lower_bounds: list | None = None,
) -> EMResult:
    """The EM loop, shared by every way of feeding data.

    Parameters
    ----------
    chunks : callable
        Returns a fresh iterable of ``(X_chunk, weight_chunk)`` pairs, one
        pass over the data, each time it is called.
    params : GMMParams
        Initial parameters, in the data's dtype and on its device.
    reg_covar, tol, max_iter : float, float, int
        As in :class:`gaussmix.GaussianMixture`; iteration stops when the
        mean log-likelihood changes by less than ``tol``.
    lower_bound : float
        Value to measure the first change against (``-inf`` for a fresh fit).
    reduce : callable, optional
        Applied to each pass's totals before the M-step (an all-reduce in
        distributed fits).
    callback : callable, optional
        Called as ``callback(n_iter, lower_bound, params)`` after each M-step.
    start_iter, lower_bounds : int, list, optional
        Resume state (from a checkpoint).

    Returns
    -------
    EMResult
    """
    dtype = params.means.dtype
    eps = torch.finfo(dtype).eps
    history = list(lower_bounds or [])
    converged = False
    n_iter = start_iter
    for n_iter in range(start_iter + 1, max_iter + 1):
        prev = lower_bound
        shift = params.shift
        stats = accumulate(chunks(), params)
        if reduce is not None:
            stats = reduce(stats)
        new = m_step(stats, shift, params.covariance_type, reg_covar, eps)
        params = new.to(dtype=dtype)
        lower_bound = stats.mean_log_likelihood
        history.append(lower_bound)
        if callback is not None:
            callback(n_iter, lower_bound, params)
        if abs(lower_bound - prev) < tol:
            converged = True
            break
    return EMResult(params, converged, n_iter, lower_bound, history)
