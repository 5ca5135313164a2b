"""Batched EM: several independent mixtures on the same data in one pass.

Mixtures of one covariance type (different numbers of components, restarts,
starts of a search) are fitted together by concatenating their components
(:class:`_Batch`): each EM iteration runs one E-step over all ``sum(K_c)``
components (one big matmul per chunk), a normalisation within each mixture's
group of components (groups padded to the largest K with ``-inf``), the
sufficient statistics of every component at once, and then one M-step for all
mixtures (:func:`grouped_m_step`, the arithmetic of
:func:`gaussmix.em.m_step` on each mixture's slice of the statistics).  Every
mixture keeps its own stopping rule (:func:`gaussmix.stopping.has_converged`); a
converged mixture leaves the batch, exactly as a separate fit would stop.  A
mixture that needs what the batch does not do (re-seeding an emptied
component, extra regularisation) is reported as failed, for the caller to fit
on its own (:func:`gaussmix.grid_fit.fit_candidates`) or to drop
(:mod:`gaussmix.search`).

On a GPU the batch replaces many small kernels per iteration (one set per
mixture) by a few large ones; on a CPU the work is the same and the gain is
the saved per-call overhead, which matters only for small data (see
``docs/PERFORMANCE.md``).
"""

from __future__ import annotations

import math

import torch

from .covariance import get_covariance_type
from .batched_packed import packed_features, packed_totals
from .chunk_workers import in_workers, workers_for
from .data import chunk_rows, iter_chunks
from .em import EMPTY_FRACTION, EMResult, moment_shift
from .expectation import _exp_floor
from .rivals import Leads, hopeless, sound_groups
from .stopping import has_converged
from .params import GMMParams

__all__ = ["batched_log_prob", "batched_scores", "chunk_moments", "fit_batched", "grouped_m_step"]


# ------------------------------------------------------------------ state
class _Batch:
    """The parameters of several mixtures of one covariance type, concatenated.

    ``weights`` (T,), ``means`` (T, D) and the factors (per component, or per
    group for a shared covariance) of all ``T = sum K`` components; ``owner``
    maps each component to its group.  EM iterates on these tensors
    directly, so the cost of an iteration does not grow with the number of
    groups in Python objects.
    """

    __slots__ = ("cov", "sizes", "owner", "slot", "weights", "means", "prec", "covs")

    def __init__(self, cov, sizes, weights, means, prec, covs, layout=None):
        self.cov, self.sizes = cov, list(sizes)
        self.weights, self.means, self.prec, self.covs = weights, means, prec, covs
        if layout is None:
            device = means.device
            kmax = max(self.sizes)
            owner = _owner(self.sizes, device)
            pos = torch.tensor([j for k in self.sizes for j in range(k)], device=device,
                               dtype=torch.long)
            # Column j of the concatenation sits at slot owner*kmax + position
            # in the padded (B, C, Kmax) layout; None when no padding is needed.
            slot = None if kmax * len(self.sizes) == len(pos) else owner * kmax + pos
            layout = (owner, slot)
        self.owner, self.slot = layout

    def updated(self, weights, means, prec, covs) -> "_Batch":
        """The same groups with new parameters."""
        return _Batch(self.cov, self.sizes, weights, means, prec, covs, (self.owner, self.slot))

    @classmethod
    def of(cls, groups: list) -> "_Batch":
        cov = groups[0].cov
        cat = torch.stack if cov.shared else torch.cat
        covs = [g.covariances for g in groups]
        return cls(cov, [g.n_components for g in groups],
                   torch.cat([g.weights for g in groups]), torch.cat([g.means for g in groups]),
                   cat([g.precisions_cholesky for g in groups]),
                   None if any(c is None for c in covs) else cat(covs))

    def group(self, c: int) -> GMMParams:
        """Group ``c`` as a :class:`GMMParams`."""
        start = sum(self.sizes[:c])
        sl = slice(start, start + self.sizes[c])
        own = c if self.cov.shared else sl
        return GMMParams(self.weights[sl], self.means[sl], self.prec[own], self.cov.name,
                         None if self.covs is None else self.covs[own])

    def keep(self, groups: list) -> "_Batch":
        """The batch of the listed groups only (in that order)."""
        starts = [0]
        for k in self.sizes:
            starts.append(starts[-1] + k)
        comp = torch.cat([torch.arange(starts[c], starts[c + 1]) for c in groups]).to(self.means.device)
        own = torch.tensor(groups, device=self.means.device) if self.cov.shared else comp
        return _Batch(self.cov, [self.sizes[c] for c in groups], self.weights[comp],
                      self.means[comp], self.prec[own], None if self.covs is None else self.covs[own])



# ------------------------------------------------------------------ E-step
def batched_log_prob(xc: torch.Tensor, groups, shift: torch.Tensor,
                     cov_name: str) -> torch.Tensor:
    """``log w_k + log N(x | mu_k, Sigma_k)`` for the components of all groups.

    Parameters
    ----------
    xc : Tensor (B, D)
        Data minus ``shift``.
    groups : list of GMMParams
        Mixtures of the same covariance type, in the data's dtype.
    shift : Tensor (D,)
    cov_name : str

    Returns
    -------
    Tensor (B, sum K)
        Columns in group order.
    """
    batch = groups if isinstance(groups, _Batch) else _Batch.of(groups)
    return _log_prob(xc, batch, shift)


def _log_prob(xc, batch: _Batch, shift) -> torch.Tensor:
    cov = batch.cov
    means_c = batch.means - shift
    log_w = torch.log(batch.weights)
    if not cov.shared:
        # Per-component factors concatenate into one mixture of sum(K) components.
        return cov.log_gaussian(xc, means_c, batch.prec) + log_w
    # Shared: one factor per group.  All groups' projections in one matmul;
    # the cross term of the Mahalanobis expansion, each group's projections
    # against its own components' projected means, as one batched matmul over
    # groups in the layout padded to the largest K.
    b, d = xc.shape
    owner = batch.owner
    prec = batch.prec  # (C, D, D)
    n_groups = prec.shape[0]
    kmax = max(batch.sizes)
    y = (xc @ prec.permute(1, 0, 2).reshape(d, -1)).reshape(b, n_groups, d)
    m = torch.einsum("kd,kde->ke", means_c, prec[owner])  # (sum K, D)
    if batch.slot is None:
        m_pad = m
    else:
        m_pad = m.new_zeros(n_groups * kmax, d).index_copy_(0, batch.slot, m)
    cross = torch.bmm(y.transpose(0, 1), m_pad.view(n_groups, kmax, d).transpose(1, 2))
    cross = cross.transpose(0, 1).reshape(b, n_groups * kmax)
    if batch.slot is not None:
        cross = cross.index_select(1, batch.slot)
    maha = ((y * y).sum(-1)[:, owner] - 2.0 * cross + (m * m).sum(1)).clamp_min(0.0)
    log_det = torch.log(torch.diagonal(prec, dim1=-2, dim2=-1)).sum(-1)[owner]
    return -0.5 * (d * math.log(2 * math.pi) + maha) + log_det + log_w


def _owner(sizes, device) -> torch.Tensor:
    """Group index of each concatenated component."""
    return torch.tensor([c for c, k in enumerate(sizes) for _ in range(k)], device=device,
                        dtype=torch.long)


def _per_component(batch: _Batch) -> bool:
    """Whether this pass takes moments around each component's mean (float32
    only, when some component is far from its mixture's mean; see
    :func:`gaussmix.em.moment_shift`)."""
    if batch.means.dtype == torch.float64 or not batch.cov.per_component_moments:
        return False
    return any(moment_shift(batch.group(c)).dim() == 2 for c in range(len(batch.sizes)))


def chunk_moments(xc, resp, owner, n_groups, cov, offsets=None, shared_s2=True):
    """Float64 moments of one chunk for concatenated components.

    Parameters
    ----------
    xc : Tensor (B, D)
        The chunk minus the pass's shift.
    resp : Tensor (B, sum K)
        Responsibilities of every component of every group.
    owner : Tensor (sum K,)
        Group of each component.
    n_groups : int
    cov : CovarianceType
    offsets : Tensor (sum K, D), optional
        Per-component centres of the second moments (float32 far-apart case).
    shared_s2 : bool
        Compute the second moment of a shared covariance (otherwise ``s2``
        is None: the caller knows it, see :func:`_batched_totals`).

    Returns
    -------
    nk, s1, s2 : Tensor
        ``s2`` per component, or per group for a shared covariance.
    """
    if offsets is not None:
        nk, s1, s2 = cov.moments_around(xc, resp, offsets)
        return nk.double(), s1.double(), s2.double()
    if cov.shared and not shared_s2:
        s2 = None
    elif cov.shared:
        # Each group's responsibilities summed over its components, then the
        # shared second moment of all groups in one GEMM.
        one_hot = torch.nn.functional.one_hot(owner, n_groups).to(resp.dtype)
        w = resp @ one_hot
        b, d = xc.shape
        s2 = ((w.unsqueeze(2) * xc.unsqueeze(1)).reshape(b, -1).T @ xc).reshape(n_groups, d, d)
    else:
        s2 = cov.second_moment(xc, resp)
    return resp.sum(0).double(), (resp.T @ xc).double(), None if s2 is None else s2.double()


def batched_scores(X: torch.Tensor, groups: list) -> list:
    """Total log-likelihood and entropy of the responsibilities of several
    mixtures of one covariance type on the same data, in one pass: what a
    model's information criteria need (:func:`gaussmix.selection.information_criteria`
    computes the same per mixture).

    Parameters
    ----------
    X : Tensor (N, D)
    groups : list of GMMParams
        Mixtures of the same covariance type, in X's dtype and device.

    Returns
    -------
    list of (float, float)
        Per mixture, ``sum log p(x)`` and ``-sum r log r`` (float64 sums).
    """
    batch = _Batch.of(groups)
    n, d = X.shape
    n_groups, kmax = len(batch.sizes), max(batch.sizes)
    device = X.device
    shift = X.double().mean(0).to(X.dtype)
    rows = chunk_rows(n, sum(batch.sizes), d, device, X.dtype, None)
    ll = torch.zeros(n_groups, dtype=torch.float64, device=device)
    plogp = torch.zeros(sum(batch.sizes), dtype=torch.float64, device=device)
    for xb, _ in iter_chunks(X, None, rows):
        wlp = _log_prob(xb - shift, batch, shift)
        resp, lpn = _normalise(wlp, batch.slot, n_groups, kmax)
        log_resp = (wlp - lpn.index_select(1, batch.owner)).double()
        resp = resp.double()
        # 0 log 0 is 0; a floored exp leaves a term far below rounding.
        plogp += torch.where(resp > 0, resp * log_resp, 0.0).sum(0)
        ll += lpn.double().sum(0)
    entropy = -torch.zeros(n_groups, dtype=torch.float64, device=device).index_add_(
        0, batch.owner, plogp)
    return list(zip(ll.tolist(), entropy.tolist()))


def _normalise(wlp, slot, n_groups, kmax):
    """Responsibilities (B, sum K) and per-group log-likelihoods (B, C) from
    the weighted log-densities, normalised within each group.

    The groups are laid out padded to ``kmax`` columns with ``-inf`` (which
    adds exactly zero), so every step is a contiguous operation; ``exp`` is
    taken once (it dominates the cost on the CPU), on values floored as in
    :func:`gaussmix.expectation.e_step`: ``-inf`` and values that underflow
    take ``exp``'s slow path, and ``exp`` of the floor cannot move a sum that
    holds the row's largest term, 1.
    """
    b = wlp.shape[0]
    if slot is None:
        padded = wlp.clone()
    else:
        padded = wlp.new_full((b, n_groups * kmax), -math.inf)
        padded.index_copy_(1, slot, wlp)
    grid = padded.view(b, n_groups, kmax)
    top = grid.amax(2, keepdim=True)
    e = grid.sub_(top).clamp_min_(_exp_floor(grid.dtype)).exp_()
    norm = e.sum(2, keepdim=True)
    e.div_(norm)
    resp = e.view(b, -1) if slot is None else e.view(b, -1).index_select(1, slot)
    return resp, norm.log_().add_(top).squeeze(2)


def _batched_totals(chunks, batch: _Batch, shift, offsets, scatter=None, workers: int = 1):
    """One pass: the float64 totals of every component of every group.

    ``scatter``, when given, is the data's own second moment around ``shift``
    (D, D): a shared covariance's second moment is then that, for every group,
    because each group's responsibilities sum to one on every row.
    ``workers``: threads that share the (in-memory) chunks, as
    :func:`gaussmix.expectation.accumulate`'s.

    Returns
    -------
    nk : Tensor (sum K,)
    s1 : Tensor (sum K, D)
    s2 : Tensor
        Per component, or per group for a shared (tied) covariance.
    ll : Tensor (n_groups,)
        Each group's total log-likelihood.
    count : int
        Rows seen.
    """
    def totals(part):
        return _chunk_totals(part, batch, shift, offsets, shared_s2=scatter is None)

    nk, s1, s2, ll, count = in_workers(totals, chunks, workers)
    if scatter is not None:
        s2 = scatter.expand(len(batch.sizes), *scatter.shape)
    return nk, s1, s2, ll, count


def _chunk_totals(chunks, batch: _Batch, shift, offsets, shared_s2: bool):
    """:func:`_batched_totals` of ``chunks`` on the calling thread (``s2`` None
    for a shared covariance unless ``shared_s2``)."""
    sizes = batch.sizes
    n_groups, kmax = len(sizes), max(sizes)
    device = batch.means.device
    owner, slot = batch.owner, batch.slot
    nk = s1 = s2 = None
    ll = torch.zeros(n_groups, dtype=torch.float64, device=device)
    count = 0
    for xb, _ in chunks:
        xc = xb - shift
        wlp = _log_prob(xc, batch, shift)
        resp, lpn = _normalise(wlp, slot, n_groups, kmax)
        part = chunk_moments(xc, resp, owner, n_groups, batch.cov, offsets, shared_s2=shared_s2)
        if nk is None:
            nk, s1, s2 = part
        else:
            nk, s1 = nk + part[0], s1 + part[1]
            s2 = None if part[2] is None else s2 + part[2]
        ll += lpn.double().sum(0)
        count += xb.shape[0]
    return nk, s1, s2, ll, count


def _grouped_update(nk, s1, s2, sizes, owner, at, cov, reg_covar, eps, start=None):
    """New concatenated parameters (float64) and the groups that failed;
    ``start``: the current covariances, where an iterative M-step may start."""
    device = nk.device
    n_groups = len(sizes)
    bad = torch.zeros(n_groups, dtype=torch.bool, device=device)
    # Unweighted data: one sample weighs 1, and a component below
    # EMPTY_FRACTION of it has emptied (em.empty_components).
    bad.index_fill_(0, owner[nk < EMPTY_FRACTION], True)
    finite = torch.isfinite(nk) & torch.isfinite(s1).all(1)
    bad.index_fill_(0, owner[~finite], True)
    nk_e = nk + 10.0 * eps
    means_c = s1 / nk_e.unsqueeze(1)
    covs = cov.grouped_covariances_from_stats(nk_e, means_c, s2, reg_covar, owner, n_groups,
                                              start=start)
    prec, failed = cov._try_factor(covs)
    if bool(failed.any()):
        # A failed factorisation may spoil the factors of the whole call:
        # factor the good matrices again on their own.
        good = ~failed
        prec = covs.clone()  # placeholders for the failed groups, never used
        if bool(good.any()):
            prec[good] = cov._try_factor(covs[good])[0]
    factor_owner = torch.arange(n_groups, device=device) if cov.shared else owner
    bad.index_fill_(0, factor_owner[failed], True)
    totals = torch.zeros(n_groups, dtype=torch.float64, device=device).index_add_(0, owner, nk_e)
    weights = nk_e / totals[owner]
    means = means_c + at.double()
    return weights, means, prec, covs, bad.tolist()


def grouped_m_step(nk, s1, s2, groups, at, cov_name, reg_covar, eps):
    """The M-step of every group at once, from their concatenated totals.

    The same arithmetic as :func:`gaussmix.em.m_step` on each group's slice,
    but one set of tensor operations for all components (one batched
    Cholesky), so the cost per iteration does not grow with the number of
    groups in Python calls.  No extra regularisation and no re-seed: a
    group that needs either is reported as failed.

    Parameters
    ----------
    nk, s1, s2 : Tensor
        Float64 totals of the concatenated components (``s2`` per group for a
        shared covariance), from unweighted rows.
    groups : list
        One entry per group with its ``n_components``.
    at : Tensor (D,) or (sum K, D)
        Where the moments were taken.
    cov_name : str
    reg_covar, eps : float

    Returns
    -------
    list
        Per group, the new :class:`GMMParams` (float64) or None when the
        group has an empty component, non-finite statistics or a covariance
        that cannot be factorised.
    """
    cov = get_covariance_type(cov_name)
    sizes = [g.n_components for g in groups]
    owner = _owner(sizes, nk.device)
    weights, means, prec, covs, bad = _grouped_update(nk, s1, s2, sizes, owner, at, cov,
                                                      reg_covar, eps)
    batch = _Batch(cov, sizes, weights, means, prec, covs)
    return [None if bad[c] else batch.group(c) for c in range(len(sizes))]


# ------------------------------------------------------------------ EM loop
def fit_batched(X: torch.Tensor, inits: list, *, reg_covar: float, tol: float,
                max_iter: int, batch_size: int | None = None, tol_type: str = "absolute",
                rivals: list | None = None, protected: list | None = None) -> list:
    """Run EM for several mixtures of one covariance type on the same data.

    Each mixture follows :func:`gaussmix.em.run_em`'s rule: it stops when
    :func:`gaussmix.stopping.has_converged` says so, or after ``max_iter``
    iterations in all; the batch ends when every mixture has stopped.

    Parameters
    ----------
    X : Tensor (N, D)
        The data, in the dtype and on the device of the parameters.
    inits : list of GMMParams or EMResult
        Initial parameters, all of the same covariance type (any K); an
        :class:`~gaussmix.em.EMResult` continues that run (its iterations
        count towards ``max_iter`` and its last log-likelihood is what the
        first new one is compared with).
    reg_covar, tol, max_iter : float, float, int
        As in :class:`gaussmix.GaussianMixture`.
    batch_size : int, optional
        Rows per chunk (default: sized for all the batch's components).
    tol_type : {"absolute", "relative"}
        The stopping rule.
    rivals : list, optional
        A label per mixture; mixtures with the same label compete for one
        answer (restarts of one candidate).  A mixture whose predicted final
        log-likelihood (Aitken's extrapolation of its last three values) is
        more than :func:`gaussmix.rivals.prune_margin` below the current best
        of its rivals stops early, as not converged: it cannot win.  A
        mixture that looks clear of collapse is compared with its sound
        rivals only (:mod:`gaussmix.rivals`).
    protected : list of bool, optional
        Mixtures that are never stopped early (they still lead their rivals).

    Returns
    -------
    list
        Per mixture, an :class:`gaussmix.em.EMResult`, or None where the
        mixture needs a step the batch does not take (an emptied component
        to re-seed, non-finite statistics, a covariance that cannot be
        factorised): fit those on their own.
    """
    if not inits:
        return []
    runs = [r if isinstance(r, EMResult) else EMResult(r, False, 0, -math.inf, []) for r in inits]
    cov_name = runs[0].params.covariance_type
    if any(r.params.covariance_type != cov_name for r in runs):
        raise ValueError("fit_batched needs mixtures of one covariance type; group them by type.")
    cov = get_covariance_type(cov_name)
    n, d = X.shape
    dtype, device = X.dtype, X.device
    eps = torch.finfo(dtype).eps
    # One shift for every group: the data mean, which is also every
    # candidate's own shift (weights @ means) after its first M-step.
    shift = X.double().mean(0).to(dtype)
    total_k = sum(r.params.n_components for r in runs)
    workers = workers_for(n, device)
    rows = chunk_rows(n, total_k, d, device, dtype, batch_size, workers=workers)

    bounds = [r.lower_bound for r in runs]
    history = [list(r.lower_bounds) for r in runs]
    done_iter = [r.n_iter for r in runs]
    results: list = [None] * len(runs)
    active = []
    for i, r in enumerate(runs):
        if r.converged or r.n_iter >= max_iter:
            results[i] = r
        else:
            active.append(i)
    if not active:
        return results
    # Whether each finished mixture looked clear of collapse when it stopped.
    sound_at_end = [False] * len(runs)
    ended = [i for i, r in enumerate(results) if r is not None]
    if rivals is not None and ended:
        ended_batch = _Batch.of([results[i].params.to(dtype=torch.float64).with_covariances()
                                 for i in ended])
        for i, ok in zip(ended, sound_groups(ended_batch, float(n), d)):
            sound_at_end[i] = ok
    batch = _Batch.of([runs[i].params.to(dtype=dtype) for i in active])
    scatter = None
    if cov.shared:
        # The data's second moment around the fixed shift, once for the fit.
        scatter = torch.zeros(d, d, dtype=torch.float64, device=device)
        for xb, _ in iter_chunks(X, None, rows):
            xc = xb - shift
            scatter += (xc.T @ xc).double()
    # Full-shaped types: features built once for every pass (gaussmix.batched_packed).
    packed = packed_features(X, shift, cov, total_k, workers) if batch_size is None else None
    while active:
        offsets = at = None
        if _per_component(batch):
            at = batch.means
            offsets = batch.means - shift
        if packed is not None and offsets is None:
            nk, s1, s2, ll, count = packed_totals(packed, batch, shift, _normalise, workers)
        else:
            nk, s1, s2, ll, count = _batched_totals(iter_chunks(X, None, rows), batch, shift,
                                                    offsets, scatter if offsets is None else None,
                                                    workers)
        weights, means, prec, covs, bad = _grouped_update(
            nk, s1, s2, batch.sizes, batch.owner, shift if at is None else at, cov,
            reg_covar, eps, start=batch.covs)
        batch = batch.updated(weights.to(dtype), means.to(dtype), prec.to(dtype), covs)
        lls = (ll / count).tolist()
        # Only a sound mixture may stop a sound one (gaussmix.rivals).
        lead = Leads()
        sound = [False] * len(active)
        if rivals is not None:
            sound = sound_groups(batch, float(count), d)
            for i, lb, ok in zip(active, lls, sound):
                lead.add(rivals[i], lb, ok)
            for i, r in enumerate(results):
                if r is not None:
                    lead.add(rivals[i], r.lower_bound, sound_at_end[i])
        still, keep = [], []
        for c, (i, lb) in enumerate(zip(active, lls)):
            if bad[c]:
                continue  # results[i] stays None: fitted on its own
            prev = bounds[i]
            done_iter[i] += 1
            bounds[i] = lb
            history[i].append(lb)
            if has_converged(prev, lb, tol, tol_type, float(count)):
                results[i] = EMResult(batch.group(c), True, done_iter[i], lb, history[i],
                                      list(runs[i].events))
            elif done_iter[i] >= max_iter or (
                    rivals is not None and not (protected and protected[i])
                    and hopeless(history[i], lead.of(rivals[i], sound[c]), float(count))):
                results[i] = EMResult(batch.group(c), False, done_iter[i], lb, history[i],
                                      list(runs[i].events))
            else:
                still.append(i)
                keep.append(c)
            if results[i] is not None:
                sound_at_end[i] = sound[c]
        if still and len(still) < len(active):
            batch = batch.keep(keep)
        active = still
    return results
