"""The E-step and the sufficient statistics of one pass over the data.

For every chunk, the E-step under the current parameters gives responsibilities,
whose sufficient statistics are added to a float64 running total
(:func:`accumulate`); the totals are additive across chunks and ranks.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from . import kernels
from .chunk_workers import in_workers
from .covariance import row_sums
from .covariance.base import _LOG_2PI
from .covariance.full_packed import PackedFull
from .params import GMMParams
from .stats import SuffStats, VariationalStats


Chunks = Iterable[tuple[torch.Tensor, "torch.Tensor | None"]]


#: Squared Mahalanobis distance from the mixture mean to a component's mean
#: above which float32 passes work per component (about 1.2e-6 relative error
#: of the one-shift arithmetic at this distance: eps32 * 10).
FAR_IN_FLOAT32 = 10.0

#: Up to this squared distance, a float32 pass of a type that takes distances
#: per component (diag, spherical) runs the one-shift GEMMs in float64
#: instead: the shift then costs eps64 * 1e8 * few, below 1e-7 relative, no
#: more than the float32 rounding of the per-component form.
FAR_IN_FLOAT64 = 1e8


#: A float32 fit whose passes do less work than this (rows x components x
#: the packed full form's columns, D(D+1)/2 + D + 1, whatever the type) runs
#: them in float64 (:func:`float64_passes`).
SMALL_PASS_WORK = 48 << 20


def float64_passes(n_samples: int, n_components: int, n_features: int, dtype: torch.dtype,
                   device) -> bool:
    """Whether a float32 fit on the CPU runs its EM passes in float64.

    On small data a pass costs its calls more than its arithmetic, and
    float32's precision far from the mixture mean (per-component moments
    and distances, owner groups) takes more calls than float64's one shift.
    Measured on the CPU (EM time of ``GaussianMixture(K).fit`` from k-means
    on separated clusters, medians of 3; float32 as it was / float32 with
    float64 passes / float64, ms): ``full`` 23 / 15 / 15 at 20 000 x 8 x 4
    (work 3.6M), 45 / 25 / 27 at 50 000 x 8 x 8 (18M), 68 / 49 / 56 at
    100 000 x 8 x 8 (36M), but 73 / 101 / 82 at 100 000 x 16 x 4 (61M) and
    84 / 80 / 78 at 50 000 x 16 x 16 (122M); ``diag`` and ``spherical``
    never slower with float64 passes.  Per EM iteration from bench.py's fixed
    start, ``full`` float32 took 1.4-2.0x float64's time at 1 000 x 5 x 3
    and 1.7-2.3x at 5 000 x 8 x 4; with float64 passes, 1.06x.  Below
    :data:`SMALL_PASS_WORK` the passes run on the parameters in float64 (the
    float32 data are exact in float64): as exact as a float64 fit of the
    same data.  The fit's parameters stay float32.

    Parameters
    ----------
    n_samples, n_components, n_features : int
    dtype : torch.dtype
        The fit's dtype.
    device : torch.device

    Returns
    -------
    bool
    """
    return (dtype == torch.float32 and torch.device(device).type == "cpu"
            and n_samples * n_components * PackedFull.feature_width(n_features) < SMALL_PASS_WORK)


def pass_params(params: GMMParams, small: bool = False) -> GMMParams:
    """The parameters an EM pass runs on: ``params``, or the same in float64.

    float64 for a float32 fit with float64 passes (``small``:
    :func:`float64_passes`), and for a float32 pass on the CPU of a type
    whose distances far from the mixture mean take float64 GEMMs anyway
    (``direct_below_float64``: diag, spherical), with some component more
    than ``sqrt(FAR_IN_FLOAT32)`` and every one less than
    ``sqrt(FAR_IN_FLOAT64)`` of its standard deviations from the mixture
    mean: the float64 pass of one shift then costs less than float32's
    per-component moments around the same float64 GEMMs.  Measured at
    100 000 x 16 x 16 on separated clusters (float32 / float64 time, EM time
    of whole fits from k-means): ``diag`` 0.91x, ``spherical`` 0.78x before.

    Parameters
    ----------
    params : GMMParams
        The fit's current parameters.
    small : bool
        Whether the fit runs float64 passes.

    Returns
    -------
    GMMParams
    """
    if params.means.dtype != torch.float32:
        return params
    if small or (params.cov.direct_below_float64 and params.means.device.type == "cpu"
                 and moment_shift(params).dim() == 2 and _farthest(params) <= FAR_IN_FLOAT64):
        return params.to(dtype=torch.float64)
    return params


def _farthest(params: GMMParams) -> float:
    """Largest squared Mahalanobis distance from the mixture mean to a
    component's mean (once per parameter bundle: a pass asks more than once)."""
    found = params.__dict__.get("_farthest")
    if found is None:
        means_c = params.means - params.shift
        origin = torch.zeros(1, params.n_features, dtype=means_c.dtype, device=means_c.device)
        found = float(params.cov.mahalanobis(origin, means_c, params.precisions_cholesky).amax())
        object.__setattr__(params, "_farthest", found)
    return found


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
    return params.means if _farthest(params) > FAR_IN_FLOAT32 else params.shift


_LOG2_E = 1.0 / math.log(2.0)
_LN_2 = math.log(2.0)


def _exp_floor(dtype: torch.dtype) -> float:
    """A log-responsibility floor whose exp, divided by up to 1000 components,
    is still a normal number of ``dtype``."""
    return 0.9 * math.log(torch.finfo(dtype).tiny)


class _Pass:
    """What every chunk of one pass shares, computed once per pass.

    ``const[k] = log w_k + log det U_k - D/2 log(2 pi)``, so that the weighted
    log-probabilities of a chunk are ``const - maha / 2`` (one fused op, or,
    for a component-major type, part of the distance GEMM itself).
    ``axis`` is where the components are in the chunk's log-probabilities:
    1 for (B, K), 0 for a component-major type's (K, B).
    """

    __slots__ = ("cov", "shift", "prep", "const", "offsets", "direct", "entropy", "raw", "axis",
                 "bits", "cache", "_feats", "_wlp")

    def __init__(self, params: GMMParams, moments_at: torch.Tensor | None = None,
                 entropy: bool = False, cache=None):
        cov = params.cov
        d = params.n_features
        self.cov = cov
        self.shift = params.shift
        if moments_at is None:
            moments_at = moment_shift(params)
        self.offsets = None if moments_at.dim() == 1 else moments_at - self.shift
        self.direct = None
        if cov.direct_below_float64 and self.offsets is not None:
            if _farthest(params) <= FAR_IN_FLOAT64:
                # float32, components far from the shift: the float64 GEMMs of one
                # shift are exact enough, and the moments move to each component's
                # mean once per pass (moments_from_raw).
                params = params.to(dtype=torch.float64)
                self.shift = params.shift
                self.offsets = moments_at.double() - self.shift
            else:
                # Farther still: distances per component, in float32, and on the
                # data as given: x - mu_k is then exact near mu_k, where a shift
                # first would round x - shift to eps32 * |x - shift|.
                self.shift = torch.zeros_like(self.shift)
                self.offsets = moments_at
                self.direct = (params.means, params.precisions_cholesky)
        self.cache = None
        if cache is not None and self.direct is None:
            form = cov.pass_form(params.n_components, d, params.means.device)
            # float32 far from the mixture mean on CUDA keeps its float32
            # per-component path: the kept form would run float64 GEMMs of
            # D(D+1)/2 columns, at 1/32-1/64 of the float32 rate on consumer
            # GPUs (on one H200 it measured 2.8x faster at 4M x 64 x 64;
            # docs/PERFORMANCE.md).
            if form.keeps_features and (self.offsets is None or (
                    params.means.device.type == "cpu" and _farthest(params) <= FAR_IN_FLOAT64)):
                if self.offsets is not None:
                    # float32 with components far from the mixture mean (moments
                    # around each component's mean): the kept form in float64,
                    # on float64 features, is as exact and faster.
                    params = params.to(dtype=torch.float64)
                    moments_at = moments_at.double()
                # Features kept from pass to pass (the type's cheaper form
                # where it has one), of X - centre; the moments are taken
                # around the centre and moved to this pass's shift (or to
                # each component's mean).
                cov = self.cov = form
                centre = cache.centre_for(cov, params.means.dtype)
                self.offsets = (moments_at - centre).expand(params.n_components, d)
                self.shift = centre
                self.cache = cache
        log_det = cov.log_det(params.precisions_cholesky, d)
        self.const = params.log_weight_terms() + (log_det - 0.5 * d * _LOG_2PI)
        self.axis = 0 if cov.component_major else 1
        # The component-major GEMM gives log-probabilities in bits (its
        # coefficients times log2(e)): exp2 takes 20-40% less time than exp.
        self.bits = cov.component_major and self.direct is None
        if cov.component_major:
            self.prep = cov.prepare(params.means - self.shift, params.precisions_cholesky,
                                    self.const)
            if self.bits:
                self.prep = self.prep * _LOG2_E
        else:
            self.prep = cov.prepare(params.means - self.shift, params.precisions_cholesky)
        self.entropy = entropy
        self.raw = None  # summed raw_moments (or raw_moments_around) of the pass's chunks
        # Component-major chunks reuse two buffers (flat, sized by the first
        # chunk): no allocation, and the features' constant columns stay set.
        self._feats = self._wlp = None

    def weighted_log_prob(self, X: torch.Tensor) -> tuple:
        """Log-probabilities laid out along ``axis`` (in bits where ``bits``),
        ``X - shift`` and the features."""
        if self.direct is not None:
            xc = X - self.shift
            maha = self.cov.mahalanobis(xc, *self.direct)
            if self.axis == 0:
                maha = maha.t()
            return torch.add(self.const.unsqueeze(1 - self.axis), maha, alpha=-0.5), xc, xc
        if self.axis == 0:
            return self._log_prob_major(X)
        xc, feats = self.cov.features(X, self.shift)
        maha = self.cov.mahalanobis_prepared(feats, self.prep)
        return torch.add(self.const, maha, alpha=-0.5), xc, feats

    def _log_prob_major(self, X: torch.Tensor) -> tuple:
        """(K, B) log-probabilities from the distance GEMM, into the pass's buffers."""
        b = X.shape[0]
        k = self.prep.shape[0]
        if self.cache is not None:
            xc, feats = self.cache.features(X, lambda: self.cov.features(X, self.shift))
        elif self._feats is None or self._feats.shape[0] < b:
            xc, feats = self.cov.features(X, self.shift)
            self._feats = feats
        else:
            xc, feats = self.cov.features(X, self.shift, self._feats[:b])
        if self._wlp is None or self._wlp.numel() < k * b:
            self._wlp = torch.empty(k * b, dtype=feats.dtype, device=feats.device)
        wlp = self.cov.log_prob_prepared(feats, self.prep, self._wlp[: k * b].view(k, b))
        return wlp, xc, feats


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
    ctx = _Pass(params)
    wlp = ctx.weighted_log_prob(X)[0]
    if ctx.bits:
        wlp = wlp * _LN_2
    return (wlp.t().contiguous() if ctx.axis == 0 else wlp).to(X.dtype)


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
    # Each row's largest term is exp(0) = 1: flooring the others keeps exp out
    # of the subnormal range (up to 60x slower on the CPU) and moves the sum
    # by less than K * 1e-277 (float64) or K * 1e-34 (float32).
    norm = log_resp.clamp(min=_exp_floor(log_resp.dtype)).exp_().sum(1, keepdim=True).log_()
    log_resp.sub_(norm)
    log_prob_norm = norm.add_(top).view(-1)
    lost = ~torch.isfinite(log_prob_norm)
    if bool(lost.any()):
        log_prob_norm[lost] = -math.inf
        log_resp[lost] = _nearest_log_resp(X[lost], params).to(log_resp.dtype)
    return log_resp, log_prob_norm


def sample_log_likelihood(X: torch.Tensor, params: GMMParams) -> torch.Tensor:
    """``log p(x_i)`` under the mixture, as :func:`e_step`'s second result,
    without the responsibilities (no transposed copy, no normalised rows).

    Parameters
    ----------
    X, params
        As :func:`estimate_weighted_log_prob` takes them.

    Returns
    -------
    Tensor (B,)
        ``-inf`` for a point whose density underflows in every component.
    """
    ctx = _Pass(params)
    wlp = ctx.weighted_log_prob(X)[0]
    top = wlp.amax(ctx.axis, keepdim=True)
    _, norm = _floored_exp(wlp, top, ctx)
    out = norm.log_().add_(top, alpha=_LN_2 if ctx.bits else 1.0).view(-1)
    return out.masked_fill_(~torch.isfinite(out), -math.inf).to(X.dtype)


def _floored_exp(wlp: torch.Tensor, top: torch.Tensor, ctx: _Pass) -> tuple:
    """``exp(wlp - top)`` in place (``exp2`` where the pass works in bits) and
    its sums over the components' axis (kept as a dimension): the log of the
    sums plus ``top`` (times ln 2 in bits) is each row's log-likelihood.

    The floor keeps exp out of the subnormal range, where it is up to 60x
    slower on the CPU (separated clusters put most entries there); the
    floored entries are below 1e-34 (float32) or 1e-280 (float64), too small
    to move a sum that holds the row's largest term, 1."""
    floor = _exp_floor(wlp.dtype)
    if ctx.bits:
        e = wlp.sub_(top).clamp_min_(floor * _LOG2_E).exp2_()
    else:
        e = wlp.sub_(top).clamp_min_(floor).exp_()
    return e, (row_sums(e).unsqueeze(1) if ctx.axis == 1 else e.sum(0, keepdim=True))


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
    comp = ctx.axis  # the components' axis of wlp; the rows are on the other
    # Normalise in place with a single exp: resp = exp(wlp - max) / sum, and
    # log p(x) = max + log(sum), the same numbers logsumexp gives.
    owner = None
    raw_gemm = comp == 0 and ctx.direct is None  # moments from raw_moments
    if ctx.offsets is None or raw_gemm:
        top = wlp.amax(comp, keepdim=True)
    else:
        # Per-component moments want each row's most likely component too.
        top, owner = wlp.max(comp, keepdim=True)
    resp, norm = _floored_exp(wlp, top, ctx)
    resp.div_(norm)
    log_prob_norm = norm.log_().add_(top, alpha=_LN_2 if ctx.bits else 1.0).view(-1)
    if ctx.entropy:
        # sum_k r_ik log r_ik, before the sample weights scale the responsibilities.
        neg_entropy = torch.special.xlogy(resp, resp).sum(comp, dtype=torch.float64)
        w = None if sample_weight is None else sample_weight.double()
        total.entropy.add_(neg_entropy.sum() if w is None else neg_entropy @ w)
    if sample_weight is not None:
        resp.mul_(sample_weight.unsqueeze(comp))
        total.log_likelihood.add_(log_prob_norm.double() @ sample_weight.double())
    else:
        total.log_likelihood.add_(log_prob_norm.sum(dtype=torch.float64))
    if raw_gemm:
        # Additive; turned into (nk, s1, s2) once, at the end of the pass.
        ctx.raw = ctx.cov.raw_moments(xc, resp, feats, ctx.raw)
        if ctx.raw.dtype != torch.float64:
            ctx.raw = ctx.raw.double()
        return
    if ctx.offsets is None:
        nk, s1, s2 = ctx.cov.moments(xc, resp, feats)
    else:
        # The per-component forms take (B, K) responsibilities and (B,) owners.
        if comp == 0:
            resp, owner = resp.t(), owner.view(-1)
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
               entropy: bool = False, cache=None, workers: int = 1) -> SuffStats:
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
    cache : FeatureCache, optional
        The fit's :class:`~gaussmix.feature_cache.FeatureCache`: only for
        chunks that are views of one in-memory tensor, the same on every pass.
    workers : int
        Worker threads that share the chunks (:mod:`gaussmix.chunk_workers`;
        only for in-memory chunks on the CPU, which are listed first).  Worker
        ``w`` sums chunks ``w, w + workers, ...``; the workers' totals are
        added in their order.
    """
    if moments_at is None:
        moments_at = moment_shift(params)
    if cache is not None:
        # float32 far from the mixture mean: on owner groups, where they apply.
        from .owner_groups import grouped_stats

        chunks = list(chunks)
        stats = grouped_stats(chunks, params, moments_at, entropy, cache, workers)
        if stats is not None:
            return stats
    return in_workers(lambda part: _accumulate_chunks(part, params, moments_at, entropy, cache),
                      chunks, workers, add=lambda total, part: total.add_(part))


def _accumulate_chunks(chunks: Chunks, params: GMMParams, moments_at: torch.Tensor,
                       entropy: bool, cache) -> SuffStats:
    """:func:`accumulate`'s loop over the chunks, on the calling thread."""
    total = _zeros(params, entropy)
    ctx = _Pass(params, moments_at, entropy, cache)
    with kernels.matmul_precision(params.means.device):
        _add_chunks(total, ((xb, wb, ctx) for xb, wb in chunks))
    if ctx.raw is not None:
        if ctx.offsets is None:
            _add_moments(total, *ctx.cov.split_moments(ctx.raw, params.n_features))
        else:
            _add_moments(total, *ctx.cov.moments_from_raw(ctx.raw, ctx.offsets))
    return total


def _add_chunks(total: SuffStats, items) -> None:
    """:func:`_add_chunk` of every ``(X, weights, pass)`` item, then the
    totals' row count and weight."""
    rows = unweighted_rows = 0
    weight_sums = []
    for xb, wb, ctx in items:
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


def _check_finite_stats(stats: SuffStats) -> None:
    if not bool(torch.isfinite(stats.flatten()).all()):
        raise ValueError(
            "EM produced non-finite sufficient statistics (an overflow: the data's squared "
            "distances exceed the range of its dtype, or the parameters are degenerate). "
            "Scale the input data (e.g. sklearn.preprocessing.StandardScaler), fit in "
            "float64 (dtype='float64'), or increase reg_covar."
        )
