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

from . import kernels
from .covariance import _LOG_2PI, get_covariance_type, row_sums
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


class _Pass:
    """What every chunk of one pass shares, computed once per pass.

    ``const[k] = log w_k + log det U_k - D/2 log(2 pi)``, so that the weighted
    log-probabilities of a chunk are ``const - maha / 2`` (one fused op).
    """

    __slots__ = ("cov", "shift", "prep", "const")

    def __init__(self, params: GMMParams):
        cov = params.cov
        d = params.n_features
        self.cov = cov
        self.shift = params.shift
        self.prep = cov.prepare(params.means - self.shift, params.precisions_cholesky)
        log_det = cov.log_det(params.precisions_cholesky, d)
        self.const = torch.log(params.weights) + (log_det - 0.5 * d * _LOG_2PI)

    def weighted_log_prob(self, X: torch.Tensor) -> tuple:
        xc, feats = self.cov.features(X, self.shift)
        maha = self.cov.mahalanobis_prepared(feats, self.prep)
        return torch.add(self.const, maha, alpha=-0.5), xc, feats


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
    return _Pass(params).weighted_log_prob(X)[0]


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
    return wlp.sub_(log_prob_norm.unsqueeze(1)), log_prob_norm


def _add_chunk(total: SuffStats, X: torch.Tensor, sample_weight, ctx: _Pass) -> None:
    """E-step of one chunk; its statistics are added into ``total`` (all but
    ``weight`` and ``count``, which the caller keeps)."""
    wlp, xc, feats = ctx.weighted_log_prob(X)
    # Normalise in place with a single exp: resp = exp(wlp - max) / sum, and
    # log p(x) = max + log(sum), the same numbers logsumexp gives.
    top = wlp.amax(1, keepdim=True)
    resp = wlp.sub_(top).exp_()
    norm = row_sums(resp).unsqueeze(1)
    resp.div_(norm)
    log_prob_norm = norm.log_().add_(top).view(-1)
    if sample_weight is not None:
        resp.mul_(sample_weight.unsqueeze(1))
        total.log_likelihood.add_(log_prob_norm.double() @ sample_weight.double())
    else:
        total.log_likelihood.add_(log_prob_norm.sum(dtype=torch.float64))
    nk, s1, s2 = ctx.cov.moments(xc, resp, feats)
    total.nk.add_(nk)
    total.s1.add_(s1)
    total.s2.add_(s2)


def _zeros(params: GMMParams) -> SuffStats:
    k, d = params.n_components, params.n_features
    return SuffStats.zeros(k, d, params.cov.stat_shape(k, d), device=params.means.device)


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
    return accumulate([(X, sample_weight)], params)


def accumulate(chunks: Chunks, params: GMMParams) -> SuffStats:
    """Sum :func:`chunk_stats` over chunks (one pass over the data).

    The per-pass constants are computed once, each chunk's statistics go
    straight into the float64 totals, and nothing forces a device sync.
    """
    total = _zeros(params)
    ctx = _Pass(params)
    rows = 0
    unweighted_rows = 0
    weight_sums = []
    with kernels.matmul_precision(params.means.device):
        for xb, wb in chunks:
            _add_chunk(total, xb, wb, ctx)
            rows += xb.shape[0]
            if wb is None:
                unweighted_rows += xb.shape[0]
            else:
                weight_sums.append(wb.sum(dtype=torch.float64))
    total.count.fill_(float(rows))
    # An unweighted row has weight one.
    total.weight.fill_(float(unweighted_rows))
    if weight_sums:
        total.weight.add_(torch.stack(weight_sums).sum())
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
