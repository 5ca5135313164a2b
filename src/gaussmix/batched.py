"""Batched EM: several independent mixtures on the same data in one pass.

Candidates of one covariance type (different numbers of components, and the
restarts of each) are fitted together by concatenating their components:
each EM iteration runs one E-step over all ``sum(K_c)`` components (one big
matmul per chunk), a log-sum-exp within each candidate's group of components
(groups padded to the largest K with ``-inf``), the sufficient statistics of
every component at once, and then the ordinary M-step
(:func:`gaussmix.em.m_step`) of each candidate on its own slice of the
statistics.  Every candidate keeps its own stopping rule (the change of its
own mean log-likelihood against ``tol``); a converged candidate leaves the
batch, exactly as a separate fit would stop.

Initialisation is the estimator's own (same code, same ``random_state``
handling), so a batched candidate equals ``GaussianMixture(...).fit(X)`` up to
the rounding of differently ordered sums.  A candidate that needs what the
batch does not do -- re-seeding an emptied component, or a fit that raises --
is refitted on its own with :class:`~gaussmix.GaussianMixture`, so its result
is the sequential one by construction.

On a GPU the batch replaces many small kernels per iteration (one set per
candidate) by a few large ones; on a CPU the work is the same and the gain is
the saved per-call overhead, which matters only for small data (see
``docs/PERFORMANCE.md``).
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from sklearn.exceptions import ConvergenceWarning

from .covariance import get_covariance_type
from .data import chunk_rows, iter_chunks
from .distributed import Communicator
from .em import EMResult, empty_components, m_step, moment_shift
from .estimator import GaussianMixture
from .params import GMMParams
from .stats import SuffStats

__all__ = ["BatchedFit", "batch_applies", "batched_log_prob", "fit_batched", "fit_candidates"]


class _NeedsSequential(Exception):
    """A group needs a step the batch does not take (re-seed, failure)."""


class BatchedFit:
    """Outcome of one candidate in :func:`fit_candidates`.

    Attributes
    ----------
    estimator : GaussianMixture or None
        The fitted estimator (None when the fit raised).
    error : str
        The fit's error message (empty on success).
    fit_time : float
        Seconds: the candidate's initialisation plus its share of the batch's
        EM time (the batch time split evenly), or its own time when it was
        fitted on its own.
    init_time : float
        Seconds spent drawing its initial parameters (0 when it was fitted
        on its own).
    batched : bool
        False when the candidate was fitted on its own (re-seed or failure).
    """

    __slots__ = ("estimator", "error", "fit_time", "init_time", "batched")

    def __init__(self, estimator, error, fit_time, init_time, batched):
        self.estimator, self.error, self.fit_time = estimator, error, fit_time
        self.init_time, self.batched = init_time, batched


def batch_applies(estimator_params: dict) -> bool:
    """Whether fits with these :class:`GaussianMixture` parameters can be batched.

    Verbose output, distributed fits and ``max_iter=0`` take the sequential
    path (they are about one fit's progress, ranks, or no EM at all).
    """
    p = GaussianMixture(**estimator_params).get_params()
    return not p["verbose"] and p["distributed"] is not True and p["max_iter"] > 0


# ------------------------------------------------------------------ E-step
def batched_log_prob(xc: torch.Tensor, groups: list[GMMParams], shift: torch.Tensor,
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
    cov = get_covariance_type(cov_name)
    means_c = torch.cat([g.means for g in groups]) - shift
    log_w = torch.log(torch.cat([g.weights for g in groups]))
    if cov_name != "tied":
        # Per-component factors concatenate into one mixture of sum(K) components.
        prec = torch.cat([g.precisions_cholesky for g in groups])
        return cov.log_gaussian(xc, means_c, prec) + log_w
    # Tied: one factor per group.  All groups' projections in one matmul, and
    # the cross term of Tied.mahalanobis's expansion as one matmul against a
    # block matrix holding each component's projected mean in its group's rows.
    b, d = xc.shape
    n_groups = len(groups)
    owner = _owner([g.n_components for g in groups], xc.device)
    prec = torch.stack([g.precisions_cholesky for g in groups])  # (C, D, D)
    y = (xc @ prec.permute(1, 0, 2).reshape(d, -1)).reshape(b, n_groups, d)
    m = torch.einsum("kd,kde->ke", means_c, prec[owner])  # (sum K, D)
    block = m.new_zeros(n_groups, d, m.shape[0])
    block[owner, :, torch.arange(m.shape[0], device=xc.device)] = m
    cross = y.reshape(b, -1) @ block.reshape(n_groups * d, -1)
    maha = ((y * y).sum(-1)[:, owner] - 2.0 * cross + (m * m).sum(1)).clamp_min(0.0)
    log_det = torch.log(torch.diagonal(prec, dim1=-2, dim2=-1)).sum(-1)[owner]
    return -0.5 * (d * math.log(2 * math.pi) + maha) + log_det + log_w


def _owner(sizes, device) -> torch.Tensor:
    """Group index of each concatenated component."""
    return torch.repeat_interleave(torch.arange(len(sizes), device=device),
                                   torch.tensor(sizes, device=device))


def _per_component(params: GMMParams) -> bool:
    """Whether this pass takes moments around each component's mean."""
    return moment_shift(params).dim() == 2


def _batched_stats(chunks, groups, shift, cov_name, n_features, device):
    """One pass: the :class:`SuffStats` of every group (float64)."""
    cov = get_covariance_type(cov_name)
    sizes = [g.n_components for g in groups]
    n_groups, kmax, total = len(groups), max(sizes), sum(sizes)
    # Column j of the concatenation sits at slot owner*kmax + position in the
    # padded (B, C, Kmax) layout, so a log-sum-exp over the last axis is the
    # per-group normaliser (padding is -inf and adds exactly zero).
    owner = _owner(sizes, device)
    pos = torch.cat([torch.arange(k, device=device) for k in sizes])
    slot = owner * kmax + pos
    z = dict(dtype=torch.float64, device=device)
    nk = torch.zeros(total, **z)
    s1 = torch.zeros(total, n_features, **z)
    s2 = None
    ll = torch.zeros(n_groups, **z)
    count = 0
    one_hot = None
    # float32: moments around each component's own mean, as em.moment_shift says.
    offsets = None
    if _per_component(groups[0]):
        offsets = torch.cat([g.means for g in groups]) - shift
    for xb, _ in chunks:
        xc = xb - shift
        wlp = batched_log_prob(xc, groups, shift, cov_name)
        padded = wlp.new_full((xb.shape[0], n_groups * kmax), -math.inf)
        padded[:, slot] = wlp
        lpn = torch.logsumexp(padded.reshape(xb.shape[0], n_groups, kmax), dim=2)  # (B, C)
        resp = torch.exp(wlp - lpn[:, owner])
        if offsets is not None:
            part_nk, part_s1, part = cov.moments_around(xc, resp, offsets)
            nk += part_nk.double()
            s1 += part_s1.double()
            s2 = part.double() if s2 is None else s2 + part.double()
            ll += lpn.double().sum(0)
            count += xb.shape[0]
            continue
        nk += resp.sum(0).double()
        s1 += (resp.T @ xc).double()
        if cov_name == "tied":
            # Each group's responsibilities summed over its components, then
            # Tied.second_moment for all groups in one GEMM.
            if one_hot is None:
                one_hot = torch.nn.functional.one_hot(owner, n_groups).to(resp.dtype)
            w = resp @ one_hot
            b, d = xc.shape
            part = ((w.unsqueeze(2) * xc.unsqueeze(1)).reshape(b, -1).T @ xc).reshape(n_groups, d, d)
        else:
            part = cov.second_moment(xc, resp)
        s2 = part.double() if s2 is None else s2 + part.double()
        ll += lpn.double().sum(0)
        count += xb.shape[0]
    n = torch.tensor(float(count), **z)
    out, start = [], 0
    for c, k in enumerate(sizes):
        sl = slice(start, start + k)
        out.append(SuffStats(
            nk=nk[sl], s1=s1[sl], s2=s2[c] if cov_name == "tied" else s2[sl],
            log_likelihood=ll[c], weight=n, count=n,
        ))
        start += k
    return out


# ------------------------------------------------------------------ EM loop
def fit_batched(X: torch.Tensor, inits: list[GMMParams], *, reg_covar: float, tol: float,
                max_iter: int, batch_size: int | None = None) -> list:
    """Run EM for several mixtures of one covariance type on the same data.

    Each mixture follows :func:`gaussmix.em.run_em`'s rule: it stops when its
    own mean log-likelihood changes by less than ``tol``, or after
    ``max_iter`` iterations; the batch ends when every mixture has stopped.

    Parameters
    ----------
    X : Tensor (N, D)
        The data, in the dtype and on the device of the parameters.
    inits : list of GMMParams
        Initial parameters, all of the same covariance type (any K).
    reg_covar, tol, max_iter : float, float, int
        As in :class:`gaussmix.GaussianMixture`.
    batch_size : int, optional
        Rows per chunk (default: sized for all the batch's components).

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
    cov_name = inits[0].covariance_type
    if any(p.covariance_type != cov_name for p in inits):
        raise ValueError("fit_batched needs mixtures of one covariance type; group them by type.")
    n, d = X.shape
    dtype, device = X.dtype, X.device
    eps = torch.finfo(dtype).eps
    # One shift for every group: the data mean, which is also every
    # candidate's own shift (weights @ means) after its first M-step.
    shift = X.double().mean(0).to(dtype)
    total_k = sum(p.n_components for p in inits)
    rows = chunk_rows(n, total_k, d, device, dtype, batch_size)

    params = list(inits)
    bounds = [-math.inf] * len(inits)
    history: list[list] = [[] for _ in inits]
    events: list[list] = [[] for _ in inits]
    results: list = [None] * len(inits)
    active = list(range(len(inits)))
    for n_iter in range(1, max_iter + 1):
        stats = _batched_stats(iter_chunks(X, None, rows), [params[i] for i in active],
                               shift, cov_name, d, device)
        still = []
        for i, st in zip(active, stats):
            prev = bounds[i]
            try:
                if bool(empty_components(st).any()):
                    raise _NeedsSequential
                step_events: list = []
                at = params[i].means if _per_component(params[i]) else shift
                new = m_step(st, at, cov_name, reg_covar, eps, events=step_events)
            except (_NeedsSequential, ValueError):  # CovarianceError is a ValueError
                continue  # results[i] stays None: fitted on its own
            events[i].extend(dict(e, iteration=n_iter) for e in step_events)
            params[i] = new.to(dtype=dtype)
            bounds[i] = st.mean_log_likelihood
            history[i].append(bounds[i])
            if abs(bounds[i] - prev) < tol:
                results[i] = EMResult(params[i], True, n_iter, bounds[i], history[i], events[i])
            elif n_iter == max_iter:
                results[i] = EMResult(params[i], False, n_iter, bounds[i], history[i], events[i])
            else:
                still.append(i)
        active = still
        if not active:
            break
    return results


# ------------------------------------------------------------ grid driver
def _prepare(X, k, cov_type, seed, n_init, device, estimator_params):
    """A fresh estimator with the fit's validated data and its ``n_init``
    initial parameters, drawn exactly as :meth:`GaussianMixture.fit` draws them."""
    est = GaussianMixture(n_components=k, covariance_type=cov_type, n_init=n_init,
                          random_state=seed, device=device, **estimator_params)
    est._check_hyperparameters()
    comm = Communicator.create(False)
    data = est._fit_data(X, None, True, comm)
    est._device, est._dtype, est._tensor_io = data.device, data.dtype, data.tensor_io
    est._online = None
    est._resumed_from_ = None
    user = est._check_initial_parameters(data.n_features, data.device, data.dtype)
    gen = est._make_generator(data.device)
    inits = []
    for _ in range(n_init):
        t0 = time.perf_counter()
        inits.append(est._initialize_root(data, gen, data.rows, user))
        est._init_time_ = time.perf_counter() - t0  # the last start's, as fit reports it
    return est, data.Xt, inits


def _finish(est, results) -> None:
    """The estimator's own choice among its restarts, and its fitted state."""
    best, best_lb = None, -math.inf
    for r in results:
        if best is None or r.lower_bound > best_lb:
            best, best_lb = r, r.lower_bound
    if not math.isfinite(best.lower_bound):
        raise ValueError(
            "EM produced a non-finite log-likelihood. Scale the input data or increase reg_covar."
        )
    if not best.converged:
        warnings.warn(
            f"Best performing initialization did not converge in {est.max_iter} "
            f"iterations. Try different init parameters, or increase max_iter, tol, "
            f"or check for degenerate data.",
            ConvergenceWarning,
        )
    est._set_result(best)


def fit_candidates(X, candidates, *, seed=None, n_init: int = 1, device=None,
                   fit_one=None, **estimator_params) -> list:
    """Fit a grid of candidates, batching those of one covariance type.

    Parameters
    ----------
    X : array-like or Tensor of shape (n_samples, n_features)
    candidates : list of (covariance_type, n_components)
    seed : int or None
        ``random_state`` of every candidate (as in a separate fit).
    n_init : int, default=1
        Restarts per candidate; all restarts of all candidates of one type
        form one batch.
    device : str or torch.device, optional
    fit_one : callable, optional
        ``fit_one(k, covariance_type) -> (estimator or None, error)``: the
        sequential fit used for candidates the batch cannot finish (default:
        ``GaussianMixture(...).fit`` with its ``ValueError`` caught).
    **estimator_params
        Further :class:`GaussianMixture` parameters.

    Returns
    -------
    list of BatchedFit
        In the order of ``candidates``.  A batched candidate that did not
        converge gives no :class:`~sklearn.exceptions.ConvergenceWarning`;
        its ``converged_`` is False.
    """
    if fit_one is None:
        def fit_one(k, cov_type):
            est = GaussianMixture(n_components=k, covariance_type=cov_type, n_init=n_init,
                                  random_state=seed, device=device, **estimator_params)
            try:
                return est.fit(X), ""
            except ValueError as exc:
                return None, str(exc)

    out: list = [None] * len(candidates)
    by_type: dict = {}
    for i, (cov_type, _) in enumerate(candidates):
        by_type.setdefault(cov_type, []).append(i)
    for cov_type, idx in by_type.items():
        prepared = {}
        for i in idx:
            t0 = time.perf_counter()
            try:
                est, Xt, inits = _prepare(X, candidates[i][1], cov_type, seed, n_init, device,
                                          estimator_params)
            except ValueError:
                prepared[i] = None  # its own fit reports the error
            else:
                prepared[i] = (est, Xt, inits, time.perf_counter() - t0)
        ready = [i for i in idx if prepared[i] is not None]
        flat = [p for i in ready for p in prepared[i][2]]
        t0 = time.perf_counter()
        results = []
        if ready:
            est0 = prepared[ready[0]][0]
            results = fit_batched(prepared[ready[0]][1], flat, reg_covar=est0.reg_covar,
                                  tol=est0.tol, max_iter=est0.max_iter, batch_size=est0.batch_size)
        share = (time.perf_counter() - t0) / max(len(ready), 1)
        pos = 0
        for i in ready:
            est, _, inits, init_time = prepared[i]
            mine = results[pos:pos + len(inits)]
            pos += len(inits)
            if any(r is None for r in mine):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    _finish(est, mine)
            except ValueError:
                continue
            out[i] = BatchedFit(est, "", init_time + share, init_time, True)
        for i in idx:
            if out[i] is None:
                t0 = time.perf_counter()
                est, err = fit_one(candidates[i][1], cov_type)
                out[i] = BatchedFit(est, err, time.perf_counter() - t0, 0.0, False)
    return out
