"""The functional core of EM: E-step, sufficient statistics, M-step, EM loop.

One EM iteration is one pass over the data: for every chunk, the E-step under
the current parameters gives responsibilities, whose sufficient statistics
are added to a float64 running total; then one M-step turns the total into new
parameters.  In-memory, out-of-core and distributed fits differ only in where
the chunks come from and in the ``reduce`` applied to the totals.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from . import kernels
from .covariance import get_covariance_type, row_sums
from .covariance.base import _LOG_2PI
from .params import GMMParams
from .stats import SuffStats, VariationalStats
from .stopping import has_converged

__all__ = [
    "estimate_weighted_log_prob",
    "e_step",
    "chunk_stats",
    "accumulate",
    "m_step",
    "empty_components",
    "count_floor",
    "moment_shift",
    "FAR_IN_FLOAT32",
    "worst_explained",
    "split_points",
    "EMResult",
    "run_em",
    "EmptyComponentWarning",
    "EMPTY_FRACTION",
]

#: A component whose effective count falls below this fraction of one
#: (average) sample's weight has lost all its points and is re-seeded.
EMPTY_FRACTION = 1e-3


class EmptyComponentWarning(UserWarning):
    """A component lost all its points during EM and was re-seeded."""

Chunks = Iterable[tuple[torch.Tensor, "torch.Tensor | None"]]


#: Squared Mahalanobis distance from the mixture mean to a component's mean
#: above which float32 passes work per component (about 1.2e-6 relative error
#: of the one-shift arithmetic at this distance: eps32 * 10).
FAR_IN_FLOAT32 = 10.0


def moment_shift(params: GMMParams) -> torch.Tensor:
    """Where the second moments of a pass are taken: (D,) or (K, D).

    The mixture mean (one shift, one GEMM), unless the data are float32, the
    type keeps one covariance per component, and some component's mean lies
    more than ``sqrt(FAR_IN_FLOAT32)`` of its own standard deviations from the
    mixture mean: then each component's current mean.  With one shift such a
    component would lose ``eps32 * distance**2 / sigma**2`` of its covariance's
    accuracy.  The choice depends on the parameters alone, so every chunk and
    every rank agree.
    """
    if params.means.dtype == torch.float64 or not params.cov.per_component_moments:
        return params.shift
    means_c = params.means - params.shift
    origin = torch.zeros(1, params.n_features, dtype=means_c.dtype, device=means_c.device)
    far = params.cov.mahalanobis(origin, means_c, params.precisions_cholesky).amax()
    return params.means if float(far) > FAR_IN_FLOAT32 else params.shift


def _exp_floor(dtype: torch.dtype) -> float:
    """A log-responsibility floor whose exp, divided by up to 1000 components,
    is still a normal number of ``dtype``."""
    return 0.9 * math.log(torch.finfo(dtype).tiny)


class _Pass:
    """What every chunk of one pass shares, computed once per pass.

    ``const[k] = log w_k + log det U_k - D/2 log(2 pi)``, so that the weighted
    log-probabilities of a chunk are ``const - maha / 2`` (one fused op).
    """

    __slots__ = ("cov", "shift", "prep", "const", "offsets", "direct", "entropy", "raw")

    def __init__(self, params: GMMParams, moments_at: torch.Tensor | None = None,
                 entropy: bool = False):
        cov = params.cov
        d = params.n_features
        self.cov = cov
        self.shift = params.shift
        if moments_at is None:
            moments_at = moment_shift(params)
        self.offsets = None if moments_at.dim() == 1 else moments_at - self.shift
        self.direct = None
        if cov.direct_below_float64 and self.offsets is not None:
            # float32 and a component far from the shift: distances per component too.
            self.direct = (params.means - self.shift, params.precisions_cholesky)
        self.prep = cov.prepare(params.means - self.shift, params.precisions_cholesky)
        log_det = cov.log_det(params.precisions_cholesky, d)
        self.const = params.log_weight_terms() + (log_det - 0.5 * d * _LOG_2PI)
        self.entropy = entropy
        self.raw = None  # summed raw_moments_around of the pass's chunks

    def weighted_log_prob(self, X: torch.Tensor) -> tuple:
        if self.direct is not None:
            xc = X - self.shift
            maha = self.cov.mahalanobis(xc, *self.direct)
            return torch.add(self.const, maha, alpha=-0.5), xc, xc
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
        ``log p(x_i)`` under the mixture: ``-inf`` for a point whose density
        underflows in every component (a point very far from every mean),
        whose responsibilities then go to the nearest component in
        Mahalanobis terms, so every row is a valid distribution.
    """
    wlp = estimate_weighted_log_prob(X, params)
    # Normalise around each row's maximum: with log-densities near -1e300 the
    # row's spread is lost to rounding in ``wlp - logsumexp(wlp)``, but not in
    # ``wlp - max``, which keeps every row a distribution.
    top = wlp.amax(1, keepdim=True)
    log_resp = wlp.sub_(top)
    norm = torch.logsumexp(log_resp, dim=1, keepdim=True)
    log_resp.sub_(norm)
    log_prob_norm = norm.add_(top).view(-1)
    lost = ~torch.isfinite(log_prob_norm)
    if bool(lost.any()):
        log_prob_norm[lost] = -math.inf
        log_resp[lost] = _nearest_log_resp(X[lost], params).to(log_resp.dtype)
    return log_resp, log_prob_norm


def _nearest_log_resp(X: torch.Tensor, params: GMMParams) -> torch.Tensor:
    """Log responsibilities of points whose density underflows in every component.

    Far from every mean the log-density is dominated by ``-maha / 2``, so the
    component nearest in Mahalanobis terms takes the point (ties share it).
    The distances are compared on the point and means scaled by the point's
    own magnitude, where they stay finite; components of zero weight never
    take a point.
    """
    out = torch.full((X.shape[0], params.n_components), -math.inf, dtype=torch.float64,
                     device=X.device)
    shift = params.shift.double()
    means_c = params.means.double() - shift
    usable = params.weights > 0
    for i, x in enumerate(X.double() - shift):
        s = x.abs().max().clamp_min(1.0)
        maha = params.cov.mahalanobis((x / s).unsqueeze(0), means_c / s,
                                      params.precisions_cholesky.double())[0]
        maha = torch.where(usable, maha, math.inf)
        best = maha == maha.min() if bool(torch.isfinite(maha.min())) else usable
        out[i, best] = -math.log(int(best.sum()))
    return out


def _add_chunk(total: SuffStats, X: torch.Tensor, sample_weight, ctx: _Pass) -> None:
    """E-step of one chunk; its statistics are added into ``total`` (all but
    ``weight`` and ``count``, which the caller keeps)."""
    wlp, xc, feats = ctx.weighted_log_prob(X)
    # Normalise in place with a single exp: resp = exp(wlp - max) / sum, and
    # log p(x) = max + log(sum), the same numbers logsumexp gives.
    owner = None
    if ctx.offsets is None:
        top = wlp.amax(1, keepdim=True)
    else:
        # Per-component moments want each row's most likely component too.
        top, owner = wlp.max(1, keepdim=True)
    # The floor keeps exp out of the subnormal range, where it is up to 60x
    # slower on the CPU (separated clusters put most entries there); the
    # floored entries are below 1e-34 (float32) or 1e-280 (float64).
    resp = wlp.sub_(top).clamp_min_(_exp_floor(wlp.dtype)).exp_()
    norm = row_sums(resp).unsqueeze(1)
    resp.div_(norm)
    log_prob_norm = norm.log_().add_(top).view(-1)
    if ctx.entropy:
        # sum_k r_ik log r_ik, before the sample weights scale the responsibilities.
        neg_entropy = torch.special.xlogy(resp, resp).sum(1, dtype=torch.float64)
        w = None if sample_weight is None else sample_weight.double()
        total.entropy.add_(neg_entropy.sum() if w is None else neg_entropy @ w)
    if sample_weight is not None:
        resp.mul_(sample_weight.unsqueeze(1))
        total.log_likelihood.add_(log_prob_norm.double() @ sample_weight.double())
    else:
        total.log_likelihood.add_(log_prob_norm.sum(dtype=torch.float64))
    if ctx.offsets is None:
        nk, s1, s2 = ctx.cov.moments(xc, resp, feats)
    else:
        raw = ctx.cov.raw_moments_around(xc, resp, ctx.offsets, owner)
        if raw is not None:
            # Additive; turned into moments once, at the end of the pass.
            ctx.raw = raw.double() if ctx.raw is None else ctx.raw.add_(raw)
            return
        nk, s1, s2 = ctx.cov.moments_around(xc, resp, ctx.offsets, owner)
    _add_moments(total, nk, s1, s2)


def _add_moments(total: SuffStats, nk, s1, s2) -> None:
    total.nk.add_(nk)
    total.s1.add_(s1)
    total.s2.add_(s2)


def _zeros(params: GMMParams, entropy: bool = False) -> SuffStats:
    k, d = params.n_components, params.n_features
    kind = VariationalStats if entropy else SuffStats
    return kind.zeros(k, d, params.cov.stat_shape(k, d), device=params.means.device)


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


def accumulate(chunks: Chunks, params: GMMParams, moments_at: torch.Tensor | None = None,
               entropy: bool = False) -> SuffStats:
    """Sum :func:`chunk_stats` over chunks (one pass over the data).

    The per-pass constants are computed once and each chunk's statistics go
    straight into the float64 totals; the only device sync is float32's
    choice of :func:`moment_shift`, once per pass.

    Parameters
    ----------
    chunks : iterable of (X_chunk, weight_chunk)
    params : GMMParams
    moments_at : Tensor, optional
        :func:`moment_shift` of ``params``, when the caller already has it.
    entropy : bool
        Also sum the responsibilities' ``r log r`` (a
        :class:`~gaussmix.stats.VariationalStats` is returned).
    """
    total = _zeros(params, entropy)
    ctx = _Pass(params, moments_at, entropy)
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
    if ctx.raw is not None:
        _add_moments(total, *ctx.cov.moments_from_raw(ctx.raw, ctx.offsets))
    total.count.fill_(float(rows))
    # An unweighted row has weight one.
    total.weight.fill_(float(unweighted_rows))
    if weight_sums:
        total.weight.add_(torch.stack(weight_sums).sum())
    return total


def _check_finite_stats(stats: SuffStats) -> None:
    if not bool(torch.isfinite(stats.flatten()).all()):
        raise ValueError(
            "EM produced non-finite sufficient statistics (an overflow: the data's squared "
            "distances exceed the range of its dtype, or the parameters are degenerate). "
            "Scale the input data (e.g. sklearn.preprocessing.StandardScaler), fit in "
            "float64 (dtype='float64'), or increase reg_covar."
        )


def count_floor(stats: SuffStats, eps: float) -> torch.Tensor:
    """What the M-step adds to every effective count: ``10 * eps`` samples.

    scikit-learn adds ``10 * eps`` so that an emptied component divides by a
    tiny number rather than zero.  Here it is ``10 * eps`` times the weight of
    one average sample (``stats.weight / stats.count``), so that only the
    relative sample weights matter: weights ``c * w`` give the fit of ``w``
    for any ``c > 0``, and unit weights give scikit-learn's ``10 * eps``.
    """
    # Statistics without a row count (built from responsibilities alone) count
    # one unit of weight as a sample.
    one_sample = torch.where(stats.count > 0, stats.weight / stats.count.clamp_min(1e-300), 1.0)
    return 10.0 * eps * one_sample


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
        _, lpn = e_step(xb, params)
        lpn = lpn.double()
        if wb is not None:
            lpn = lpn.masked_fill(wb <= 0, math.inf)
        order = torch.sort(lpn, stable=True).indices[:n_points]
        v, x = lpn[order], xb[order].double()
        if values is not None:
            v, x = torch.cat([values, v]), torch.cat([points, x])
            order = torch.sort(v, stable=True).indices[:n_points]
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


def split_points(stats: SuffStats, shift: torch.Tensor, covariance_type: str, reg_covar: float,
                 eps: float, n_points: int) -> torch.Tensor:
    """Re-seed points from the statistics alone (no extra pass, no collective).

    The component with the largest spread mass (count times mean variance)
    is split: the points lie one standard deviation from its mean, along its
    most variable feature, alternately on either side.  Every rank of a
    distributed fit computes the same points from the all-reduced totals.

    Returns
    -------
    Tensor (n_points, D) in float64, original coordinates.
    """
    cov = get_covariance_type(covariance_type)
    nk = stats.nk + count_floor(stats, eps)
    means_c = stats.s1 / nk.unsqueeze(1)
    mats = cov._matrix_view(cov.covariances_from_stats(nk, means_c, stats.s2, reg_covar))
    var = torch.diagonal(mats, dim1=-2, dim2=-1) if mats.dim() == 3 else mats
    var = var.expand(nk.shape[0], means_c.shape[1]).clamp_min(0.0)
    mass = torch.where(empty_components(stats), -math.inf, stats.nk * var.mean(1))
    k = int(torch.argmax(mass))
    axis = int(torch.argmax(var[k]))
    step = torch.zeros_like(means_c[k])
    step[axis] = torch.sqrt(var[k, axis])
    signs = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(n_points)],
                         dtype=step.dtype, device=step.device)
    return means_c[k] + shift.double().expand_as(means_c)[k] + signs[:, None] * step


def _reseed(cov, nk, means_c, covariances, stats, empty, points, shift):
    """Put each empty component on one of ``points`` (original coordinates), with the
    count of one average sample and the count-weighted mean covariance of
    the other components."""
    nk, means_c = nk.clone(), means_c.clone()
    idx = torch.nonzero(empty).flatten()
    take = torch.arange(idx.numel(), device=idx.device) % points.shape[0]
    means_c[idx] = points[take] - shift.expand_as(means_c)[idx]
    nk[idx] = stats.weight / stats.count.clamp_min(1.0)
    mats = cov._matrix_view(covariances)
    if mats.shape[0] == nk.shape[0]:  # one covariance per component (not tied)
        keep = ~empty
        w = stats.nk[keep]
        pooled = (w.reshape(-1, *[1] * (mats.dim() - 1)) * mats[keep]).sum(0) / w.sum()
        mats = mats.clone()
        mats[idx] = pooled
        covariances = mats.reshape(covariances.shape)
    return nk, means_c, covariances


def m_step(
    stats: SuffStats,
    shift: torch.Tensor,
    covariance_type: str,
    reg_covar: float,
    eps: float,
    *,
    reseed: tuple[torch.Tensor, torch.Tensor] | None = None,
    events: list | None = None,
) -> GMMParams:
    """New parameters from summed statistics, computed in float64.

    Parameters
    ----------
    stats : SuffStats
    shift : Tensor (D,) or (K, D)
        Where the moments were taken: one shift, or one per component (see
        :func:`moment_shift`).
    covariance_type : str
    reg_covar : float
        Non-negative amount added to every covariance diagonal (absolute, in
        the data's squared units).
    eps : float
        Machine epsilon of the data's dtype.  ``10 * eps`` average samples
        are added to the effective counts (:func:`count_floor`; scikit-learn
        adds ``10 * eps``) so that an emptied component divides by a tiny
        number, not by zero; it also sets the scale of the extra
        regularisation of :meth:`CovarianceType.factorize`.
    reseed : (Tensor (K,) of bool, Tensor (M, D)), optional
        Empty components and the points (original coordinates, M >= 1) to
        put them on; see :func:`empty_components` and :func:`worst_explained`.
        Each re-seeded component gets the weight of one average sample and
        the count-weighted mean covariance of the other components.
    events : list, optional
        Receives a record of every extra regularisation.

    Returns
    -------
    GMMParams
        In float64 on the statistics' device.

    Raises
    ------
    ValueError
        If the statistics are not finite.
    CovarianceError
        If a covariance cannot be factorised even after the retries of
        :meth:`CovarianceType.factorize`.
    """
    _check_finite_stats(stats)
    cov = get_covariance_type(covariance_type)
    nk = stats.nk + count_floor(stats, eps)
    means_c = stats.s1 / nk.unsqueeze(1)
    shift64 = shift.double()
    covariances = cov.covariances_from_stats(nk, means_c, stats.s2, reg_covar)
    if reseed is not None and bool(reseed[0].any()) and reseed[1].shape[0] > 0:
        empty, points = reseed
        nk, means_c, covariances = _reseed(
            cov, nk, means_c, covariances, stats, empty, points.double(), shift64
        )
    # Scale of the raw second moments that were centred: their rounding error
    # (eps times it) bounds what extra regularisation may be needed.
    raw = cov._diagonal_scale(stats.s2)
    raw = raw / (nk if raw.shape[0] == nk.shape[0] else nk.sum())
    prec_chol, covariances = cov.factorize(covariances, reg_covar, eps, events, scale=raw)
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
    events : list of dict
        Numerical interventions, in order: ``{"kind": "reseed", "iteration",
        "components"}`` for re-seeded empty components and ``{"kind":
        "regularization", "iteration", "components", "reg_covar", "retries"}``
        for covariances that needed extra regularisation.
    """

    params: GMMParams
    converged: bool
    n_iter: int
    lower_bound: float
    lower_bounds: list = field(default_factory=list)
    events: list = field(default_factory=list)


def run_em(
    chunks: Callable[[], Chunks],
    params: GMMParams,
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    lower_bound: float = -math.inf,
    reduce: Callable[[SuffStats], SuffStats] | None = None,
    callback: Callable[[int, float, GMMParams, bool], None] | None = None,
    start_iter: int = 0,
    lower_bounds: list | None = None,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    tol_type: str = "absolute",
    update=None,
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
        As in :class:`gaussmix.GaussianMixture`; iteration stops when
        :func:`gaussmix.stopping.has_converged` says so.
    lower_bound : float
        Value to measure the first change against (``-inf`` for a fresh fit).
    reduce : callable, optional
        Applied to each pass's totals before the M-step (an all-reduce in
        distributed fits).
    callback : callable, optional
        Called as ``callback(n_iter, lower_bound, params, converged)`` after
        each M-step; ``converged`` says whether the loop stops there.
    start_iter, lower_bounds : int, list, optional
        Resume state (from a checkpoint).
    gather : callable, optional
        Concatenates a tensor across ranks (an all-gather), so that a re-seed
        uses the worst-explained samples of all ranks (see
        :func:`worst_explained`).  When ``reduce`` is given without
        ``gather``, re-seeding uses :func:`split_points` instead, which needs
        no communication.
    tol_type : {"absolute", "relative"}
        The stopping rule (see :func:`gaussmix.stopping.has_converged`).
    update : object, optional
        Replaces the M-step by a variational update (a
        :class:`gaussmix.variational.VariationalUpdate`): ``update.params(stats,
        shift, eps, events)`` gives the new parameters from the same totals,
        ``update.lower_bound(stats, params)`` the value the stopping rule
        watches.  Components are then never re-seeded: the posterior switching
        components off is the point of the variational fit.

    Returns
    -------
    EMResult

    Notes
    -----
    A component that loses all its points (:func:`empty_components`) is
    re-seeded on the worst-explained sample of the pass (one extra E-step
    pass, only in that iteration), with an :class:`EmptyComponentWarning`
    and a ``"reseed"`` event.  An iteration with a re-seed never counts as
    converged, and its log-likelihood may be lower than the previous one.

    Raises
    ------
    ValueError
        If a pass yields non-finite statistics (overflow).
    CovarianceError
        If a covariance cannot be factorised even with extra regularisation.
    """
    dtype = params.means.dtype
    eps = torch.finfo(dtype).eps
    history = list(lower_bounds or [])
    events: list = []
    converged = False
    n_iter = start_iter
    for n_iter in range(start_iter + 1, max_iter + 1):
        prev = lower_bound
        shift = moment_shift(params)
        stats = accumulate(chunks(), params, shift, entropy=update is not None)
        if reduce is not None:
            stats = reduce(stats)
        _check_finite_stats(stats)
        empty = empty_components(stats)
        reseed = None
        if update is None and bool(empty.any()):
            # Rare: one more E-step pass under the same parameters finds the
            # samples the current model explains worst.
            if reduce is not None and gather is None:
                # Distributed without a gather: a choice every rank agrees on.
                points = split_points(stats, shift, params.covariance_type, reg_covar, eps,
                                      int(empty.sum()))
            else:
                points = worst_explained(chunks(), params, int(empty.sum()), gather)
            reseed = (empty, points)
            comps = torch.nonzero(empty).flatten().tolist()
            warnings.warn(
                f"Component(s) {comps} lost all their points at EM iteration {n_iter} and "
                f"were re-seeded on the worst-explained samples. Consider fewer components "
                f"(n_components={params.n_components}) or check the data for duplicates.",
                EmptyComponentWarning,
                stacklevel=2,
            )
            events.append(dict(kind="reseed", iteration=n_iter, components=comps))
        step_events: list = []
        if update is None:
            new = m_step(
                stats, shift, params.covariance_type, reg_covar, eps,
                reseed=reseed, events=step_events,
            )
            lower_bound = stats.mean_log_likelihood
        else:
            new = update.params(stats, shift, eps, step_events)
            lower_bound = update.lower_bound(stats, new)
        events.extend(dict(e, iteration=n_iter) for e in step_events)
        params = new.to(dtype=dtype)
        history.append(lower_bound)
        # An iteration that re-seeded never stops the loop, whatever the change.
        converged = reseed is None and has_converged(prev, lower_bound, tol, tol_type,
                                                     float(stats.weight))
        if callback is not None:
            callback(n_iter, lower_bound, params, converged)
        if converged:
            break
    return EMResult(params, converged, n_iter, lower_bound, history, events)
