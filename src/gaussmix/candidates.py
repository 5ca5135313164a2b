"""How the candidates of a model-selection grid are fitted.

:func:`gaussmix.select_model` examines, for every (covariance type, K) of its
grid, a sequence of fitted attempts, best first, and keeps the first one its
degenerate-fit guard accepts.  This module produces those attempts, in one of
two ways (``starts=``):

* ``"search"``: the multi-start search of :mod:`gaussmix.search`, on data
  rescaled per covariance type (:mod:`gaussmix.scaling`); the attempts are the
  search's finished runs, mapped back to the user's units;
* ``"estimator"``: ``GaussianMixture(**params).fit(X)`` per candidate, the
  first attempt of every candidate of one type batched where that is faster
  (:func:`fit_candidates`), re-seeded attempts one by one.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from .batched import batched_scores, fit_batched
from .covariance import get_covariance_type
from .distributed import Communicator
from .em import EMResult
from .estimator import GaussianMixture
from ._validation import resolve_device
from .scaling import feature_scaling
from .kmeans import _shared_partitions
from .search import search, starting_partitions
from .threads import threads_for, threads_for_input, torch_threads

__all__ = [
    "BatchedFit", "CPU_BATCH_MAX_SAMPLES", "Plan", "SEARCH_DEFAULTS", "SEARCH_PARAMS", "STARTS",
    "batch_applies", "check_search", "concurrent_applies", "estimator_plans", "fit_candidates",
    "search_plans", "worth_reseeding",
]


def _fit_once(X, k, cov_type, seed, n_init, device, estimator_params):
    """One fit; returns (estimator, "") or (None, error message)."""
    est = GaussianMixture(
        n_components=k, covariance_type=cov_type, n_init=n_init, random_state=seed,
        device=device, **estimator_params,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            est.fit(X)
        except ValueError as exc:  # ill-defined covariance, too few samples, non-finite EM
            return None, str(exc).split(". ")[0]
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return est, ""


#: How the candidates of the grid are started (see :func:`select_model`).
STARTS = ("search", "estimator")

#: Estimator settings of ``starts="search"`` unless the caller passes others:
#: mclust's stopping rule, and a regularisation relative to each feature's
#: variance (the fit runs on standardised features).
SEARCH_DEFAULTS = {"tol": 1e-5, "tol_type": "relative", "max_iter": 1000, "reg_covar": 1e-8}

#: Settings of the multi-start search (:func:`gaussmix.search.search`).
SEARCH_PARAMS = {"n_kmeans": 3, "n_random": 0, "screen_iter": 5, "n_keep": 2, "split": True}

# Estimator parameters that choose one start; the search chooses its own.
_START_PARAMS = ("init_params", "weights_init", "means_init", "precisions_init", "warm_start")


def check_search(search_params, estimator_params) -> dict:
    given = [p for p in _START_PARAMS if p in estimator_params]
    if given:
        raise ValueError(
            f"{given} choose the start of every fit, but starts='search' chooses its own "
            f"(hierarchical, k-means and split starts). Pass starts='estimator' to fit "
            f"every candidate as GaussianMixture(**params)."
        )
    if estimator_params.get("distributed") is True:
        raise ValueError("select_model's search runs in one process; pass distributed=False.")
    merged = dict(SEARCH_PARAMS)
    for key, value in (search_params or {}).items():
        if key not in SEARCH_PARAMS:
            raise ValueError(
                f"Unknown search parameter {key!r}; valid ones are {sorted(SEARCH_PARAMS)}."
            )
        if key == "split":
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"search_params['split'] must be True or False, got {value!r}.")
        elif isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < (
                1 if key == "screen_iter" else 0):
            raise ValueError(
                f"search_params[{key!r}] must be an integer >= {1 if key == 'screen_iter' else 0}, "
                f"got {value!r}."
            )
        merged[key] = value
    return merged


class Plan:
    """How one candidate's attempts are produced, for the guard to examine in order.

    ``attempts()`` yields ``(estimator or None, error, info)``; the guard
    stops at the first clean one (or after ``n_attempts``).
    """

    def __init__(self, attempts, n_attempts, n_starts, fit_time, next_word):
        self.attempts = attempts
        self.n_attempts = n_attempts
        self.n_starts = n_starts
        self.fit_time = fit_time
        self.next_word = next_word


def estimator_plans(X, grid, base_seed, n_init, device, concurrent, n_reseed, estimator_params):
    """Plans of ``starts="estimator"``: each attempt is ``GaussianMixture(**params).fit(X)``,
    re-seeded attempts with seeds derived from ``base_seed``."""
    reseeds = np.random.RandomState(base_seed).randint(np.iinfo(np.int32).max, size=max(n_reseed, 1))
    prefit = None
    if _resolve_concurrent(concurrent, X, device, estimator_params):
        prefit = fit_candidates(
            X, grid, seed=base_seed, n_init=n_init, device=device,
            fit_one=lambda k, t: _fit_once(X, k, t, base_seed, n_init, device, estimator_params),
            **estimator_params,
        )
    start = str(estimator_params.get("init_params", "kmeans"))
    plans = {}
    for i, (cov_type, k) in enumerate(grid):
        def attempts(i=i, k=k, cov_type=cov_type):
            for a in range(1 + n_reseed):
                seed = base_seed if a == 0 else (
                    int(reseeds[a - 1]) if base_seed is not None else None)
                info = {"start": start}
                if a == 0 and prefit is not None:
                    est, err = prefit[i].estimator, prefit[i].error
                    if prefit[i].score is not None:
                        info["score"] = prefit[i].score
                else:
                    est, err = _fit_once(X, k, cov_type, seed, n_init, device, estimator_params)
                yield est, err, info

        plans[(cov_type, k)] = Plan(attempts, 1 + n_reseed, n_init,
                                     prefit[i].fit_time if prefit is not None else 0.0,
                                     "re-seeded fit")
    return plans


def search_plans(X, ks, types, base_seed, device, search_params, estimator_params):
    """Plans of ``starts="search"``: every type's grid fitted by the multi-start
    search on rescaled data; attempts are its runs, best first, in the user's units.

    On the CPU with at most :data:`gaussmix.threads.SINGLE_THREAD_MAX_SAMPLES`
    samples the search runs torch on one thread: its kernels are small, and
    splitting each over threads cost twice the time on a shared 2-core
    machine (``docs/PERFORMANCE.md``).
    """
    probe = GaussianMixture(random_state=base_seed, device=device, **estimator_params)
    Xt = probe._fit_validate(X, reset=True, min_samples=2)
    threads = threads_for(Xt.shape[0], Xt.device)
    # Inference mode: the search needs no autograd bookkeeping, which on small
    # data is a large part of each kernel call (docs/PERFORMANCE.md); the
    # estimators it yields get ordinary tensors (_search_estimator).
    with torch_threads(threads), torch.inference_mode():
        plans = _search_plans(probe, X, Xt, ks, types, search_params, threads)
    return plans


def _search_plans(probe, X, Xt, ks, types, search_params, threads):
    probe._device, probe._dtype = Xt.device, Xt.dtype
    tensor_io = isinstance(X, torch.Tensor)
    n = Xt.shape[0]
    gen = probe._make_generator(Xt.device)
    r = float(probe.reg_covar)
    t_start = time.perf_counter()
    standard = feature_scaling(Xt, per_feature=True)
    Xs = standard.to_fit(Xt)
    partitions = starting_partitions(
        Xs, [k for k in ks if k <= n], gen, n_kmeans=search_params["n_kmeans"],
        n_random=search_params["n_random"], hc_subset=probe.hc_subset,
    )
    scalings = {}
    for cov_type in types:
        per_feature = get_covariance_type(cov_type).per_feature_scaling
        scalings[cov_type] = standard if per_feature else feature_scaling(Xt, per_feature=False)
    # A type fitted on its own scale sees the standardised data times these.
    units = {t: (standard.scale / sc.scale) for t, sc in scalings.items() if sc is not standard}
    results = search(
        Xs, types, partitions, reg_covar=r, tol=probe.tol, units=units,
        tol_type=probe.tol_type, max_iter=probe.max_iter,
        screen_iter=search_params["screen_iter"], n_keep=search_params["n_keep"],
        split=search_params["split"],
    ) if partitions else {}
    share = (time.perf_counter() - t_start) / max(len(types) * len(ks), 1)
    plans = {}
    probe_params = probe.get_params()
    for cov_type in types:
        scaling = scalings[cov_type]
        cells = results.get(cov_type, {})
        reg = (r * scaling.scale ** 2).cpu().numpy()
        jacobian = scaling.log_jacobian(n)
        # An absolute regularisation no larger than the search used on any feature.
        params = dict(probe_params, covariance_type=cov_type,
                      reg_covar=float(probe.reg_covar * float((scaling.scale ** 2).min())))
        for k in ks:
            cell = cells.get(k)

            def attempts(k=k, cell=cell, params=params, scaling=scaling, reg=reg,
                         jacobian=jacobian):
                if cell is None or not cell.runs:
                    why = (f"n_samples={n} is smaller than n_components={k}" if k > n else
                           "every start failed (emptied components or covariances that cannot "
                           "be factorised)")
                    yield None, why, {}
                    return
                for run in cell.runs:
                    est = _search_estimator(probe, dict(params, n_components=k), run, scaling,
                                            jacobian / n, tensor_io, threads)
                    info = {"start": run.start, "reg": reg}
                    if run.score is not None:
                        info["score"] = (run.score[0] + jacobian, run.score[1])
                    yield est, "", info

            plans[(cov_type, k)] = Plan(
                attempts, len(cell.runs) if cell is not None and cell.runs else 1,
                cell.n_starts if cell is not None else 0, share, "the next best start")
    return plans


def _search_estimator(probe, params, run, scaling, shift, tensor_io, threads):
    """A fitted GaussianMixture (``params``) in the user's units from one run of the
    search (``shift``: log-Jacobian per sample of ``scaling``; ``threads``: the search's)."""
    est = GaussianMixture(**params)
    est._device, est._dtype, est._tensor_io = probe._device, probe._dtype, tensor_io
    est.n_features_in_ = probe.n_features_in_
    if hasattr(probe, "feature_names_in_"):
        est.feature_names_in_ = probe.feature_names_in_
    est._online = None
    est._resumed_from_ = None
    est._init_time_ = 0.0
    # The search's threads and inference mode: the run's result, made on first
    # read, factorises small matrices (1.3-1.8x as long on two threads); clone()
    # outside inference mode makes the estimator's tensors ordinary ones.
    with torch_threads(threads):
        with torch.inference_mode():
            res = run.result
            user = scaling.to_user(res.params)
        est._set_result(EMResult(user.clone(), res.converged, res.n_iter, res.lower_bound + shift,
                                 [v + shift for v in res.lower_bounds], list(res.events)))
    return est


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
    score : tuple of float or None
        Total log-likelihood and entropy of the responsibilities at the fitted
        parameters, computed with the other candidates of its type in one
        pass (float64 fits; None otherwise).
    """

    __slots__ = ("estimator", "error", "fit_time", "init_time", "batched", "score")

    def __init__(self, estimator, error, fit_time, init_time, batched, score=None):
        self.estimator, self.error, self.fit_time = estimator, error, fit_time
        self.init_time, self.batched, self.score = init_time, batched, score


def batch_applies(estimator_params: dict) -> bool:
    """Whether fits with these :class:`GaussianMixture` parameters can be batched.

    Verbose output, distributed fits and ``max_iter=0`` take the sequential
    path (they are about one fit's progress, ranks, or no EM at all), and so
    do fits with a ``prior`` (the batched engine has none).
    """
    p = GaussianMixture(**estimator_params).get_params()
    return (not p["verbose"] and p["distributed"] is not True and p["max_iter"] > 0
            and p["prior"] is None)  # the batched engine has no prior


# On the CPU a batch does the same arithmetic as the loop it replaces; it
# wins only where the per-call overhead of many small kernels dominates, i.e.
# for few samples (measured in docs/PERFORMANCE.md: 1.5-1.8x faster EM
# up to 10000 samples, about equal from 20000 on).
CPU_BATCH_MAX_SAMPLES = 10_000


def concurrent_applies(X, device=None, **estimator_params) -> bool:
    """Whether ``concurrent="auto"`` batches the grid's fits.

    Batching applies when the estimator parameters allow it (no verbose
    output, not distributed, ``max_iter > 0``) and either the fits run on
    CUDA, or on the CPU the data have at most ``CPU_BATCH_MAX_SAMPLES``
    samples.

    Parameters
    ----------
    X : array-like or Tensor of shape (n_samples, n_features)
    device : str or torch.device, optional
    **estimator_params
        The :class:`GaussianMixture` parameters of the grid.

    Returns
    -------
    bool
    """
    if not batch_applies(estimator_params):
        return False
    dev = resolve_device(device, X if isinstance(X, torch.Tensor) else None)
    if dev.type == "cuda":
        return True
    n = X.shape[0] if hasattr(X, "shape") else len(X)
    return n <= CPU_BATCH_MAX_SAMPLES


def _resolve_concurrent(concurrent, X, device, estimator_params) -> bool:
    if isinstance(concurrent, str) and concurrent == "auto":
        return concurrent_applies(X, device, **estimator_params)
    if isinstance(concurrent, (bool, np.bool_)):
        return bool(concurrent) and batch_applies(estimator_params)
    raise ValueError(f"Invalid concurrent {concurrent!r}: use 'auto', True or False.")


def worth_reseeding(error: str) -> bool:
    """Only numerical failures may go away with another start; a problem of
    the data's size (fewer samples than components) will not."""
    return "n_samples" not in error and "minimum of" not in error


# ------------------------------------------------------------ grid driver
class _Validated:
    """The grid's data validated once, as :meth:`GaussianMixture.fit` would for
    any of its candidates (they differ only in ``K`` and the covariance
    type): the tensor on the fit's device and dtype, and what validation
    records on an estimator (feature names, the input's kind)."""

    __slots__ = ("Xt", "n_features_in_", "feature_names_in_", "tensor_io")

    def __init__(self, X, device, estimator_params):
        probe = GaussianMixture(device=device, **estimator_params)
        self.Xt = probe._fit_validate(X, reset=True, min_samples=2)
        self.n_features_in_ = probe.n_features_in_
        self.feature_names_in_ = getattr(probe, "feature_names_in_", None)
        self.tensor_io = isinstance(X, torch.Tensor)

    def apply(self, est) -> None:
        """Record on ``est`` what validating the original input would have."""
        est._tensor_io = self.tensor_io
        est.n_features_in_ = self.n_features_in_
        if self.feature_names_in_ is not None:
            est.feature_names_in_ = self.feature_names_in_


def _prepare(X, k, cov_type, seed, n_init, device, estimator_params):
    """A fresh estimator with the fit's validated data and its ``n_init``
    initial parameters, drawn exactly as :meth:`GaussianMixture.fit` draws them.
    ``X`` may be a :class:`_Validated`: the data checked once for the grid."""
    est = GaussianMixture(n_components=k, covariance_type=cov_type, n_init=n_init,
                          random_state=seed, device=device, **estimator_params)
    est._check_hyperparameters()
    comm = Communicator.create(False)
    checked = X if isinstance(X, _Validated) else None
    data = est._fit_data(X if checked is None else checked.Xt, None, True, comm)
    est._device, est._dtype, est._tensor_io = data.device, data.dtype, data.tensor_io
    if checked is not None:
        checked.apply(est)
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
    if estimator_params.get("prior") is not None:
        return _fit_each(candidates, fit_one)
    by_type: dict = {}
    for i, (cov_type, _) in enumerate(candidates):
        by_type.setdefault(cov_type, []).append(i)
    # Every type of one K starts from the same seed, so from one k-means partition.
    with torch_threads(threads_for_input(X, device)), _shared_partitions():
        try:
            # Validated once for every candidate (about 0.3 ms each on small data).
            data = _Validated(X, device, estimator_params)
        except ValueError:
            data = X  # each candidate's own fit reports the problem
        for cov_type, idx in by_type.items():
            _fit_type(data, candidates, cov_type, idx, out, seed, n_init, device, fit_one,
                      estimator_params)
    return out


def _fit_type(X, candidates, cov_type, idx, out, seed, n_init, device, fit_one, estimator_params):
    """:func:`fit_candidates` for the candidates ``idx`` of one covariance type
    (results into ``out``)."""
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
                              tol=est0.tol, max_iter=est0.max_iter, batch_size=est0.batch_size,
                              tol_type=est0.tol_type)
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
    # The criteria's E-step of every batched candidate, in one pass (float64:
    # equal to each candidate's own to rounding).
    scored = [i for i in ready if out[i] is not None]
    if scored and prepared[scored[0]][1].dtype == torch.float64:
        Xt = prepared[scored[0]][1]
        scores = batched_scores(Xt, [out[i].estimator._params for i in scored])
        for i, score in zip(scored, scores):
            out[i].score = score
    for i in idx:
        if out[i] is None:
            t0 = time.perf_counter()
            est, err = fit_one(candidates[i][1], cov_type)
            out[i] = BatchedFit(est, err, time.perf_counter() - t0, 0.0, False)


def _fit_each(candidates, fit_one) -> list:
    """:func:`fit_candidates` one candidate after the other (a fit the batched
    engine cannot run, e.g. with a conjugate prior)."""
    out = []
    for cov_type, k in candidates:
        t0 = time.perf_counter()
        est, err = fit_one(k, cov_type)
        out.append(BatchedFit(est, err, time.perf_counter() - t0, 0.0, False))
    return out

