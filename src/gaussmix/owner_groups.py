"""float32 passes of the packed full form, exact far from the mixture mean.

The packed form (:mod:`gaussmix.covariance.full_packed`) expands each
Mahalanobis distance around one centre, so a float32 pass loses
``eps32 * d^2`` of it for a row ``d`` of the component's standard deviations
from that centre: on clustered data, whose components lie tens of standard
deviations from the mixture mean, that is most of float32's precision.  Such
passes therefore ran the packed form in float64.

Here the rows are grouped by the component they belonged to when the
features were built (the nearest mean), and each group's features are
taken around that component's mean ``c_g``: every product is then of a
row's distance to its own component, which float32 holds to ``eps32``.
The distance of group ``g``'s rows to component ``k`` reads the same
features with coefficients of ``mu_k - c_g``, so each group is one float32
GEMM each way, and each group's moments, taken around ``c_g``, move to the
components' means once per pass in float64 (``moments_from_raw``).  A
component far from a group's centre has rows of that group only at
negligible responsibility, whose distances are then as relatively exact as
the distance itself.

The groups are kept from pass to pass (a fit's
:class:`~gaussmix.feature_cache.FeatureCache`) and rebuilt when some
component's mean has moved more than ``sqrt(FAR_IN_FLOAT32)`` of its own
standard deviations from its group's centre, once the means have settled
(:data:`SETTLED_FRACTION`, :data:`REBUILD_FRACTION`; a fit from k-means
counts its start as settled, :func:`start_settled`); until then a pass runs
the kept form in float64.
A component provably :data:`SKIP_NATS` below every row's best in a group is
left out of that group's GEMMs (:meth:`OwnerGroups.active`).  The groups'
state depends on the fit's history, so checkpoints carry it
(:meth:`~gaussmix.feature_cache.FeatureCache.owner_state`).
"""

from __future__ import annotations

import math

import torch

from .chunk_workers import in_workers, map_chunks
from .covariance.base import _LOG_2PI
from .covariance.full_packed import _upper
from .expectation import FAR_IN_FLOAT32, FAR_IN_FLOAT64, _add_chunks, _add_moments, _farthest, _zeros
from .params import GMMParams
from .stats import SuffStats

__all__ = ["OwnerGroups", "PendingGroups", "owner_groups", "grouped_stats", "start_settled"]

_LOG2_E = 1.0 / math.log(2.0)


class OwnerGroups:
    """Float32 packed features of in-memory data, grouped by owner.

    Parameters
    ----------
    form : CovarianceType
        The packed form (``features``, ``raw_moments``, ``moments_from_raw``).
    centres : Tensor (K, D), float64
        Each group's centre: its component's mean when the groups were built.
    segments : list of (int, Tensor, Tensor or None)
        ``(group, features (B, P), sample weights (B,) or None)``, the rows
        of one group in pieces of at most a chunk.
    n_bytes : int
        Memory the features take.
    radius : Tensor (K,), optional
        Each group's largest distance from a row to its centre (what
        :meth:`active` bounds with); without it every component is active.
    """

    def __init__(self, form, centres, segments, n_bytes, radius=None):
        self.form = form
        self.centres = centres
        self.segments = segments
        self.n_bytes = n_bytes
        self.radius = radius

    @classmethod
    def build(cls, form, chunks: list, params, rows: int, workers: int = 1,
              centres=None) -> "OwnerGroups":
        """Group the rows of ``chunks`` ((X, w) pairs) by their nearest
        component mean under ``params`` (float32), or nearest of ``centres``
        (K, D) when given, and build each row's features around it; the
        groups go in pieces of at most ``rows`` rows, built by ``workers``
        threads (:mod:`gaussmix.chunk_workers`)."""
        X = torch.cat([xb for xb, _ in chunks]) if len(chunks) > 1 else chunks[0][0]
        weights = [wb for _, wb in chunks]
        w = None if weights[0] is None else torch.cat(weights)
        centres = params.means.double() if centres is None else centres.double()
        # Nearest mean (one GEMM; the owners only choose each row's centre, so
        # they need not be the most likely component), on data centred on
        # the means' mean, free of cancellation for data with an offset.
        origin = centres.mean(0)
        c = (centres - origin).to(X.dtype)
        owner = torch.addmm((c * c).sum(1), X - origin.to(X.dtype), c.T, alpha=-2.0).argmin(1)
        order = torch.argsort(owner, stable=True)
        counts = torch.bincount(owner, minlength=params.n_components).tolist()
        pieces, start = [], 0
        for g, count in enumerate(counts):
            pieces += [(g, a, min(a + rows, start + count)) for a in range(start, start + count, rows)]
            start += count
        zero = torch.zeros((), dtype=X.dtype, device=X.device)

        def build_piece(piece):
            g, a, b = piece
            idx = order[a:b]
            # x - c_g in float64, then rounded once: exact near c_g.
            xc = (X.index_select(0, idx).double() - centres[g]).to(X.dtype)
            return (g, form.features(xc, zero)[1], None if w is None else w.index_select(0, idx),
                    float(xc.double().norm(dim=1).max()))

        built = map_chunks(build_piece, pieces, workers)
        # Each group's radius: its rows' largest distance to its centre, of
        # the rounded rows the features hold.
        radius = torch.zeros(params.n_components, dtype=torch.float64)
        for g, _, _, r in built:
            radius[g] = max(float(radius[g]), r)
        segments = [(g, f, wb) for g, f, wb, _ in built]
        n_bytes = sum(f.numel() * f.element_size() for _, f, _ in segments)
        return cls(form, centres, segments, n_bytes, radius.to(centres.device))

    def stale(self, params) -> bool:
        """Whether some component's mean has moved more than
        ``sqrt(FAR_IN_FLOAT32)`` of its own standard deviations from its
        group's centre (its rows are then that far from their centre)."""
        return _moved_far(self.centres, params)

    def coefficients(self, params, const) -> torch.Tensor:
        """(K groups, K, P) float32 coefficients, in bits: group ``g``'s
        ``const_k - maha_k / 2`` on its features, for every component ``k``."""
        d = params.n_features
        rows, cols, weight = _upper(d, params.means.device)
        prec = self.form.precisions(params.precisions_cholesky.double())
        quad = prec[:, rows, cols] * (-0.5 * weight)
        mc = params.means.double().unsqueeze(0) - self.centres.unsqueeze(1)  # (G, K, D)
        lin = torch.einsum("kij,gkj->gki", prec, mc)
        bias = const.double().unsqueeze(0) - 0.5 * (mc * lin).sum(-1)
        g = self.centres.shape[0]
        coef = torch.cat([quad.expand(g, *quad.shape), lin, bias.unsqueeze(-1)], dim=-1)
        return (coef * _LOG2_E).to(params.means.dtype)

    def active(self, params, const) -> torch.Tensor:
        """(K groups, K) bool: the components that may matter to each group.

        For a row ``x`` within ``r_g`` of its group's centre ``c_g``, with
        ``a_k = const_k`` and ``P_k``'s extreme eigenvalues
        ``l_k <= L_k``, ``log p_k(x) <= a_k - l_k (|mu_k - c_g| - r_g)_+^2 / 2``
        and ``log p_j(x) >= a_j - L_j (|mu_j - c_g| + r_g)^2 / 2``.  Component
        ``k`` is inactive in group ``g`` when its upper bound lies
        :data:`SKIP_NATS` below the best lower bound of any ``j``.
        """
        k = params.n_components
        if self.radius is None:
            return torch.ones(k, k, dtype=torch.bool)
        prec = self.form.precisions(params.precisions_cholesky.double())
        eig = torch.linalg.eigvalsh(prec)
        low, high = eig[:, 0].clamp_min(0.0), eig[:, -1]
        dist = torch.cdist(self.centres, params.means.double())  # (G, K)
        r = self.radius.unsqueeze(1)
        a = const.double().unsqueeze(0)
        upper = a - 0.5 * low * (dist - r).clamp_min(0.0) ** 2
        lower = (a - 0.5 * high * (dist + r) ** 2).amax(1, keepdim=True)
        return upper >= lower - SKIP_NATS


class PendingGroups:
    """Owner groups known by their centres only (restored from a
    checkpoint): :func:`owner_groups` builds them again around those centres
    when a pass first uses them, so the resumed fit rounds as the
    uninterrupted one."""

    form = None

    def __init__(self, centres: torch.Tensor):
        self.centres = centres

    def stale(self, params) -> bool:
        return _moved_far(self.centres, params)


#: A component whose log-density is provably this many nats below the best
#: component's, for every row of a group, is left out of that group's GEMMs:
#: its responsibilities there are below exp(-100) = 4e-44, below float64's
#: rounding of any sum that holds the row's largest term (and below the
#: floor both dtypes' E-steps already put under log-responsibilities).
SKIP_NATS = 100.0


#: New groups are built only when no mean moved more than a quarter of the
#: staleness distance in the last iteration: at that pace they last at least
#: four iterations, which pays for their build (about one and a half passes
#: at 100 000 x 16 x 16; a float32 pass on them costs about half a float64 one).
SETTLED_FRACTION = 0.25

#: Stale groups are rebuilt at twice that pace: their build released the
#: float64 features, so going back to the float64 form would build those
#: again (about a float64 pass) before passing in float64, while new groups
#: that last two float32 passes (about half a float64 pass each) cost less.
#: Measured (30 float32 EM iterations at 100 000 x 16 x 16 from bench.py's
#: fixed start, 3 alternating repetitions): 1.27-1.59 s with 0.25, 1.19-1.35
#: s with 0.5 on one data set; the same decisions on another.
REBUILD_FRACTION = 0.5


def _moved_far(means: torch.Tensor, params, fraction: float = 1.0) -> bool:
    """Whether some component's mean lies more than ``fraction *
    sqrt(FAR_IN_FLOAT32)`` of its own standard deviations from ``means`` (K, D)."""
    moved = params.means.double() - means
    # (mu_k - m_k) U_k for every k: its squared norm is the distance.
    z = torch.einsum("kd,kde->ke", moved, params.precisions_cholesky.double())
    return bool(((z * z).sum(1) > FAR_IN_FLOAT32 * fraction ** 2).any())


def start_settled(cache, params) -> None:
    """Count a fit's starting means as settled: its first float32 pass may
    build owner groups rather than run on float64 features.

    For starts that are already a fixed point of a clustering (k-means'
    centres), which EM's first steps move little.  The means are recorded
    as those of a previous pass (``cache.owner_means``), so the usual rules
    decide (:data:`SETTLED_FRACTION`, :data:`REBUILD_FRACTION`), and a
    checkpoint carries them.  Measured (``GaussianMixture(16)`` on
    100 000 x 16 float32, k-means start, EM time without the
    initialisation, medians of 3): 0.165 -> 0.118 s at centre spread 5,
    0.200 -> 0.118 s at 10, 0.181 -> 0.162 s at 3, 0.346 -> 0.289 s at 1.5,
    against 0.15 / 0.15 / 0.15 / 0.34 s in float64.

    Parameters
    ----------
    cache : FeatureCache
        The fit's cache.
    params : GMMParams
        The starting parameters.
    """
    cache.owner_means = params.means.double()


def owner_groups(cache, form, chunks: list, params, rows: int, workers: int = 1):
    """The fit's owner groups for a float32 pass, built or rebuilt as needed.

    Parameters
    ----------
    cache : FeatureCache
        The fit's cache, which keeps the groups and their state.
    form : CovarianceType
        The packed form.
    chunks : list of (Tensor, Tensor or None)
        The pass's chunks (views of the in-memory data).
    params : GMMParams
        The pass's parameters (float32).
    rows : int
        The longest piece of a group.
    workers : int
        Threads that build new groups (:mod:`gaussmix.chunk_workers`).

    Returns
    -------
    OwnerGroups or None
        None where the pass runs the kept form in float64 instead: the
        features would not fit in the cache's memory, or there are no current
        groups and the means are still on the move (see
        :data:`SETTLED_FRACTION`; the first pass has nothing to compare
        with), where new groups would not last.
    """
    n = sum(xb.shape[0] for xb, _ in chunks)
    if n * form.feature_width(params.n_features) * params.means.element_size() > cache.limit:
        return None
    groups, last = cache.owner_groups, cache.owner_means
    cache.owner_means = params.means.double()
    if groups is not None and groups.form in (form, None) and not groups.stale(params):
        if groups.form is None:  # pending (a resumed fit): built again around its centres
            groups = cache.owner_groups = OwnerGroups.build(form, chunks, params, rows, workers,
                                                            centres=groups.centres)
            cache.release()
        return groups
    fraction = SETTLED_FRACTION if groups is None else REBUILD_FRACTION
    if last is None or _moved_far(last, params, fraction):
        return None
    cache.owner_groups = None  # the old features go before the new are built
    groups = cache.owner_groups = OwnerGroups.build(form, chunks, params, rows, workers)
    # The float64 features of the earlier passes are not read while the
    # groups last.
    cache.release()
    return groups


def grouped_stats(chunks: list, params: GMMParams, moments_at: torch.Tensor, entropy: bool,
                  cache, workers: int) -> SuffStats | None:
    """The statistics of one pass on the fit's owner groups.

    Parameters
    ----------
    chunks, params, moments_at, entropy, cache, workers
        As :func:`gaussmix.expectation.accumulate` has them (``chunks``
        listed).

    Returns
    -------
    SuffStats or None
        None where the pass does not run on owner groups: not float32 far
        from the mixture mean on the CPU, no kept-feature form, or
        :func:`owner_groups` says no.
    """
    if not _groups_apply(params, moments_at):
        return None
    form = params.cov.pass_form(params.n_components, params.n_features, params.means.device)
    groups = owner_groups(cache, form, chunks, params, chunks[0][0].shape[0], workers)
    if groups is None:
        return None
    log_det = params.cov.log_det(params.precisions_cholesky, params.n_features)
    const = params.log_weight_terms() + (log_det - 0.5 * params.n_features * _LOG_2PI)
    coef = groups.coefficients(params, const)
    # Per group, the components that may matter to it, and their rows of coef.
    active = [torch.nonzero(row).view(-1) for row in groups.active(params, const)]
    coef = [coef[g].index_select(0, idx) for g, idx in enumerate(active)]
    return in_workers(lambda part: _accumulate_groups(part, params, moments_at, entropy,
                                                      groups, coef, active),
                      groups.segments, workers, add=lambda total, part: total.add_(part))


def _groups_apply(params: GMMParams, moments_at: torch.Tensor) -> bool:
    """Whether a pass with kept features runs on owner groups
    (:mod:`gaussmix.owner_groups`): float32 on the CPU, moments around each
    component's mean (some component far from the mixture mean), a form
    that keeps features, and components within ``FAR_IN_FLOAT64``."""
    if params.means.dtype != torch.float32 or moments_at.dim() != 2:
        return False
    device = params.means.device
    if device.type != "cpu":
        return False
    form = params.cov.pass_form(params.n_components, params.n_features, device)
    return form.keeps_features and _farthest(params) <= FAR_IN_FLOAT64


class _GroupPass:
    """One owner group's share of a pass: what
    :func:`gaussmix.expectation._add_chunk` reads of a pass's shared state,
    with the group's coefficients (bits)."""

    __slots__ = ("cov", "prep", "axis", "bits", "direct", "offsets", "entropy", "raw", "_wlp")

    def __init__(self, form, prep: torch.Tensor, entropy: bool):
        self.cov, self.prep, self.entropy = form, prep, entropy
        self.axis, self.bits, self.direct, self.offsets, self.raw = 0, True, None, None, None
        self._wlp = None

    def weighted_log_prob(self, feats: torch.Tensor) -> tuple:
        b, k = feats.shape[0], self.prep.shape[0]
        if self._wlp is None or self._wlp.numel() < k * b:
            self._wlp = torch.empty(k * b, dtype=feats.dtype, device=feats.device)
        return self.cov.log_prob_prepared(feats, self.prep, self._wlp[: k * b].view(k, b)), None, feats


def _accumulate_groups(segments: list, params: GMMParams, moments_at: torch.Tensor,
                       entropy: bool, groups, coef: list, active: list) -> SuffStats:
    """:func:`gaussmix.expectation.accumulate` over owner-group segments ``(group, features,
    weights)`` on the calling thread, each group with its active components
    only (``active[g]``, their coefficients ``coef[g]``; the others' share is
    zero); each group's moments, taken around its centre, move to
    ``moments_at`` (K, D) at the end."""
    total = _zeros(params, entropy)
    passes: dict = {}

    def group_pass(g):
        if g not in passes:
            passes[g] = _GroupPass(groups.form, coef[g], entropy)
        return passes[g]

    _add_chunks(total, ((feats, wb, group_pass(g)) for g, feats, wb in segments))
    at = moments_at.double()
    for g, ctx in passes.items():
        raw = ctx.raw
        if raw.shape[0] != params.n_components:
            raw = raw.new_zeros(params.n_components, raw.shape[1]).index_copy_(0, active[g], raw)
        _add_moments(total, *groups.form.moments_from_raw(raw, at - groups.centres[g]))
    return total
