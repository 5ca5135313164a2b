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
  (:func:`gaussmix.grid_fit.fit_candidates`), re-seeded attempts one by one.
"""

from __future__ import annotations

import numbers
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from .covariance import get_covariance_type
from .em import EMResult
from .estimator import GaussianMixture
from .grid_fit import batch_applies, concurrent_applies, fit_candidates
from .scaling import feature_scaling
from .search import search, starting_partitions
from .threads import threads_for, torch_threads

__all__ = ["Plan", "SEARCH_DEFAULTS", "SEARCH_PARAMS", "STARTS", "check_search", "estimator_plans",
           "search_plans", "worth_reseeding"]


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
    stops at the first clean one (or after ``n_attempts``).  ``prefetch``,
    where set, is shared by the plans of one grid: ``prefetch(a, cells)``
    fits attempt ``a`` of the listed cells (positions in the grid) at once,
    before their generators ask for it.
    """

    def __init__(self, attempts, n_attempts, n_starts, fit_time, next_word, prefetch=None):
        self.attempts = attempts
        self.n_attempts = n_attempts
        self.n_starts = n_starts
        self.fit_time = fit_time
        self.next_word = next_word
        self.prefetch = prefetch


class _Reseeds:
    """Re-seeded attempts of many candidates, fitted together.

    Attempt ``a >= 1`` of a candidate is ``GaussianMixture(random_state=seeds[a - 1])``;
    :func:`~gaussmix.grid_fit.fit_candidates` fits that attempt of every
    candidate that needs it in one batched call per covariance type (each
    result exactly its separate fit), instead of one fit at a time.
    """

    def __init__(self, X, grid, seeds, n_init, device, estimator_params):
        self.X, self.grid, self.seeds = X, grid, seeds
        self.n_init, self.device, self.params = n_init, device, estimator_params
        self._done: dict = {}

    def prefetch(self, attempt: int, cells) -> None:
        todo = [i for i in cells if (attempt, i) not in self._done]
        if not todo:
            return
        seed = self.seeds[attempt - 1]
        fits = fit_candidates(
            self.X, [self.grid[i] for i in todo], seed=seed, n_init=self.n_init,
            device=self.device,
            fit_one=lambda k, t: _fit_once(self.X, k, t, seed, self.n_init, self.device, self.params),
            **self.params,
        )
        for i, fit in zip(todo, fits):
            self._done[(attempt, i)] = fit

    def take(self, attempt: int, cell: int):
        """The prefetched fit of ``attempt`` of ``cell`` (a BatchedFit), or None."""
        return self._done.pop((attempt, cell), None)


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
    # Re-seeded attempts are batched like the first ones (a seeded grid only:
    # random_state=None leaves every fit its own random start).
    batch = None
    if prefit is not None and base_seed is not None and n_reseed > 0:
        batch = _Reseeds(X, grid, [int(r) for r in reseeds], n_init, device, estimator_params)
    start = str(estimator_params.get("init_params", "kmeans"))
    plans = {}
    for i, (cov_type, k) in enumerate(grid):
        def attempts(i=i, k=k, cov_type=cov_type):
            for a in range(1 + n_reseed):
                seed = base_seed if a == 0 else (
                    int(reseeds[a - 1]) if base_seed is not None else None)
                info = {"start": start}
                fit = prefit[i] if a == 0 and prefit is not None else (
                    batch.take(a, i) if a > 0 and batch is not None else None)
                if fit is not None:
                    est, err = fit.estimator, fit.error
                    if fit.score is not None:
                        info["score"] = fit.score
                    if a > 0:
                        info["fit_time"] = fit.fit_time
                else:
                    est, err = _fit_once(X, k, cov_type, seed, n_init, device, estimator_params)
                yield est, err, info

        plans[(cov_type, k)] = Plan(attempts, 1 + n_reseed, n_init,
                                     prefit[i].fit_time if prefit is not None else 0.0,
                                     "re-seeded fit", batch.prefetch if batch is not None else None)
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
