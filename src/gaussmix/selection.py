"""Model selection: information criteria over a grid of candidates, with a
guard that keeps degenerate (collapsed) fits from winning.

Criteria follow scikit-learn's sign convention (lower is better)::

    BIC = -2 log L + p log n
    AIC = -2 log L + 2 p
    ICL = BIC + 2 * sum_i sum_k -r_ik log r_ik

R's mclust reports ``2 log L - p log n`` (higher is better), i.e. minus our
BIC; its EEE / VVV / VVI / VII models are our tied / full / diag / spherical.
See ``docs/SELECTION.md`` for the degenerate-fit rule and its reason.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from ._validation import as_tensor_2d, resolve_device, resolve_dtype
from .covariance import get_covariance_type
from .batched import batch_applies, fit_candidates
from .data import chunk_rows, iter_chunks
from .em import EMResult, e_step
from .scaling import feature_scaling
from .search import search, starting_partitions
from .estimator import GaussianMixture
from .guard import (
    VARIANCE_RTOL,
    DegenerateFitWarning,
    collapsed_components,
    min_component_count,
)

__all__ = [
    "CRITERIA",
    "DEGENERATE_POLICIES",
    "DegenerateFitWarning",
    "ModelSelection",
    "collapsed_components",
    "concurrent_applies",
    "information_criteria",
    "min_component_count",
    "select_model",
]

CRITERIA = ("bic", "aic", "icl")
DEGENERATE_POLICIES = ("reseed", "exclude", "flag")

# ---------------------------------------------------------------- criteria
def information_criteria(estimator: GaussianMixture, X) -> dict:
    """Log-likelihood, BIC, AIC and ICL of a fitted mixture on ``X``.

    One chunked pass over the data computes the total log-likelihood and the
    entropy of the responsibilities.

    Parameters
    ----------
    estimator : GaussianMixture
        A fitted mixture.
    X : array-like or Tensor of shape (n_samples, n_features)

    Returns
    -------
    dict
        ``log_likelihood`` (total over samples), ``n_parameters``, ``entropy``
        (``-sum r log r``), ``bic``, ``aic`` and ``icl``; all lower-is-better
        as in scikit-learn's :meth:`GaussianMixture.bic`.
    """
    Xt = estimator._predict_input(X)
    params = estimator._params
    n, d = Xt.shape
    rows = chunk_rows(n, params.n_components, d, Xt.device, Xt.dtype, estimator.batch_size)
    ll = 0.0
    entropy = 0.0
    for xb, _ in iter_chunks(Xt, None, rows):
        log_resp, log_prob = e_step(xb, params)
        log_resp = log_resp.double()
        resp = torch.exp(log_resp)
        # 0 * log 0 is 0 in the entropy; exp underflow gives resp == 0 exactly.
        plogp = torch.where(resp > 0, resp * log_resp, torch.zeros_like(resp))
        ll += float(log_prob.double().sum())
        entropy -= float(plogp.sum())
    p = params.n_parameters()
    bic = -2.0 * ll + p * math.log(n)
    return {
        "log_likelihood": ll,
        "n_parameters": int(p),
        "entropy": entropy,
        "bic": bic,
        "aic": -2.0 * ll + 2.0 * p,
        "icl": bic + 2.0 * entropy,
    }


# ------------------------------------------------------------------ results
@dataclass
class ModelSelection:
    """Outcome of :func:`select_model`.

    Attributes
    ----------
    best_estimator_ : GaussianMixture
        The candidate with the lowest criterion among the admissible ones.
    best_params_ : dict
        Its ``n_components`` and ``covariance_type``.
    best_index_ : int
        Its row in ``results_``.
    results_ : dict of lists
        One row per candidate (``pandas.DataFrame(results_)`` works):
        ``n_components``, ``covariance_type``, ``log_likelihood`` (total),
        ``n_parameters``, ``bic``, ``aic``, ``icl`` (lower is better),
        ``converged``, ``n_iter`` (EM iterations of the reported fit, its
        screening included), ``fit_time`` (seconds, all attempts),
        ``guard`` (``"ok"``, ``"reseeded"``, ``"flagged"`` or ``"excluded"``),
        ``guard_detail`` (why), ``n_collapsed`` (collapsed components in the
        reported fit), ``n_attempts`` (fits the guard examined), ``start``
        (the start of the reported fit: ``"hc"``, ``"kmeans"``, ``"random"``,
        ``"split"``, ``"single"`` for ``K = 1``; with ``starts="estimator"``
        the ``init_params``), ``n_starts`` (starts run for the candidate) and
        ``selected``.
    estimators_ : list of GaussianMixture or None
        The fitted candidate of each row (None where every attempt failed).
    criterion : str
        The criterion that chose the best candidate.
    """

    best_estimator_: GaussianMixture
    best_params_: dict
    best_index_: int
    results_: dict
    estimators_: list = field(repr=False)
    criterion: str = "bic"

    def __repr__(self) -> str:
        return (
            f"ModelSelection(criterion={self.criterion!r}, best_params_={self.best_params_!r}, "
            f"n_candidates={len(self.estimators_)})"
        )


_COLUMNS = (
    "n_components", "covariance_type", "log_likelihood", "n_parameters", "bic", "aic", "icl",
    "converged", "n_iter", "fit_time", "guard", "guard_detail", "n_collapsed", "n_attempts",
    "start", "n_starts", "selected",
)


def _check_grid(n_components, covariance_types, criterion, degenerate, n_reseed):
    if isinstance(n_components, numbers.Integral) and not isinstance(n_components, bool):
        n_components = [n_components]
    try:
        ks = list(n_components)
    except TypeError:
        raise ValueError(
            f"n_components must be an int or an iterable of ints (e.g. range(1, 10)); "
            f"got {n_components!r}."
        ) from None
    if not ks:
        raise ValueError("n_components is empty: give at least one number of components.")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(
                f"Invalid number of components {k!r} in n_components: use integers >= 1."
            )
    if isinstance(covariance_types, str):
        covariance_types = [covariance_types]
    types = list(covariance_types)
    if not types:
        raise ValueError("covariance_types is empty: give at least one of full, tied, diag, spherical.")
    for t in types:
        get_covariance_type(t)
    if criterion not in CRITERIA:
        raise ValueError(f"Invalid criterion {criterion!r}: choose one of {list(CRITERIA)}.")
    if degenerate not in DEGENERATE_POLICIES:
        raise ValueError(
            f"Invalid degenerate policy {degenerate!r}: choose one of {list(DEGENERATE_POLICIES)}."
        )
    if isinstance(n_reseed, bool) or not isinstance(n_reseed, numbers.Integral) or n_reseed < 0:
        raise ValueError(f"Invalid n_reseed {n_reseed!r}: use an integer >= 0.")
    # Keep the user's order but drop repeats.
    return list(dict.fromkeys(int(k) for k in ks)), list(dict.fromkeys(types))


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
SEARCH_PARAMS = {"n_kmeans": 3, "n_random": 1, "screen_iter": 5, "n_keep": 1, "split": True}

# Estimator parameters that choose one start; the search chooses its own.
_START_PARAMS = ("init_params", "weights_init", "means_init", "precisions_init", "warm_start")


def _check_search(search_params, estimator_params) -> dict:
    given = [p for p in _START_PARAMS if p in estimator_params]
    if given:
        raise ValueError(
            f"{given} choose the start of every fit, but starts='search' chooses its own "
            f"(hierarchical, k-means, random and split starts). Pass starts='estimator' to fit "
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


class _Plan:
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


def _estimator_grid(X, grid, base_seed, n_init, device, concurrent, n_reseed, estimator_params):
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
                if a == 0 and prefit is not None:
                    est, err = prefit[i].estimator, prefit[i].error
                else:
                    est, err = _fit_once(X, k, cov_type, seed, n_init, device, estimator_params)
                yield est, err, {"start": start}

        plans[(cov_type, k)] = _Plan(attempts, 1 + n_reseed, n_init,
                                     prefit[i].fit_time if prefit is not None else 0.0,
                                     "re-seeded fit")
    return plans


def _search_grid(X, ks, types, base_seed, device, search_params, estimator_params):
    """Plans of ``starts="search"``: every type's grid fitted by the multi-start
    search on rescaled data; attempts are its runs, best first, in the user's units."""
    probe = GaussianMixture(random_state=base_seed, device=device, **estimator_params)
    Xt = probe._fit_validate(X, reset=True, min_samples=2)
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
    init_share = (time.perf_counter() - t_start) / max(len(types) * len(ks), 1)
    plans = {}
    for cov_type in types:
        t0 = time.perf_counter()
        cov = get_covariance_type(cov_type)
        scaling = standard if cov.per_feature_scaling else feature_scaling(Xt, per_feature=False)
        Xf = Xs if scaling is standard else scaling.to_fit(Xt)
        cells = search(
            Xf, cov_type, {k: v for k, v in partitions.items()}, reg_covar=r, tol=probe.tol,
            tol_type=probe.tol_type, max_iter=probe.max_iter,
            screen_iter=search_params["screen_iter"], n_keep=search_params["n_keep"],
            split=search_params["split"],
        ) if partitions else {}
        share = (time.perf_counter() - t0) / max(len(ks), 1) + init_share
        reg = (r * scaling.scale ** 2).cpu().numpy()
        for k in ks:
            cell = cells.get(k)

            def attempts(k=k, cell=cell, cov_type=cov_type, scaling=scaling, reg=reg):
                if cell is None or not cell.runs:
                    why = (f"n_samples={n} is smaller than n_components={k}" if k > n else
                           "every start failed (emptied components or covariances that cannot "
                           "be factorised)")
                    yield None, why, {}
                    return
                for run in cell.runs:
                    est = _search_estimator(probe, k, cov_type, run, scaling, n, tensor_io)
                    yield est, "", {"start": run.start, "reg": reg}

            plans[(cov_type, k)] = _Plan(
                attempts, len(cell.runs) if cell is not None and cell.runs else 1,
                cell.n_starts if cell is not None else 0, share, "the next best start")
    return plans


def _search_estimator(probe, k, cov_type, run, scaling, n, tensor_io):
    """A fitted GaussianMixture in the user's units from one run of the search."""
    params = dict(probe.get_params(), n_components=k, covariance_type=cov_type)
    # An absolute regularisation no larger than the search used on any feature.
    params["reg_covar"] = float(probe.reg_covar * float((scaling.scale ** 2).min()))
    est = GaussianMixture(**params)
    est._device, est._dtype, est._tensor_io = probe._device, probe._dtype, tensor_io
    est.n_features_in_ = probe.n_features_in_
    if hasattr(probe, "feature_names_in_"):
        est.feature_names_in_ = probe.feature_names_in_
    est._online = None
    est._resumed_from_ = None
    est._init_time_ = 0.0
    res = run.result
    shift = scaling.log_jacobian(n) / n
    est._set_result(EMResult(scaling.to_user(res.params), res.converged, res.n_iter,
                             res.lower_bound + shift, [v + shift for v in res.lower_bounds],
                             list(res.events)))
    return est


def select_model(
    X,
    n_components=range(1, 10),
    covariance_types=("full", "tied", "diag", "spherical"),
    criterion="bic",
    *,
    starts="search",
    search_params: dict | None = None,
    n_init=1,
    random_state=None,
    device=None,
    degenerate="reseed",
    n_reseed=2,
    concurrent="auto",
    callback: Callable[[int, int, dict], None] | None = None,
    **estimator_params,
) -> ModelSelection:
    """Fit a grid of mixtures and choose one by BIC, AIC or ICL.

    By default (``starts="search"``) every candidate is fitted from several
    starts and the best is kept: the model-based hierarchical clustering cut
    at ``K`` (R mclust's start, one merge tree for the whole grid), k-means
    and random partitions, and splits of the best ``K - 1`` fit, screened by
    a few EM iterations and continued to convergence in batches
    (:mod:`gaussmix.search`).  EM stops on mclust's rule (relative change of
    the total log-likelihood below ``tol=1e-5``) and ``reg_covar`` (default
    1e-8) is relative to each feature's variance, so that shifting the data
    or scaling a feature changes neither the fits nor the choice (a
    spherical covariance is only invariant under one common scale).  See
    ``docs/SELECTION.md``.

    With ``starts="estimator"`` every candidate is
    ``GaussianMixture(K, covariance_type=..., random_state=seed, **params).fit(X)``,
    scikit-learn's defaults and weaknesses included.

    A candidate whose fit has collapsed components is handled according to
    ``degenerate`` so that it cannot win on a spuriously high likelihood.

    Parameters
    ----------
    X : array-like or Tensor of shape (n_samples, n_features)
    n_components : int or iterable of int, default=range(1, 10)
        Numbers of components to try.
    covariance_types : str or iterable of str, default=("full", "tied", "diag", "spherical")
    criterion : {"bic", "aic", "icl"}, default="bic"
        Lower is better (scikit-learn's convention; R mclust's BIC is minus
        ours).
    starts : {"search", "estimator"}, default="search"
        How candidates are started (see above).
    search_params : dict, optional
        Settings of the search: ``n_kmeans`` (k-means starts per ``K``,
        default 3), ``n_random`` (random starts, 1), ``screen_iter`` (EM
        iterations of the screening, 5), ``n_keep`` (screened starts that
        continue besides the hierarchical one, 1) and ``split`` (try splits
        of the best ``K - 1`` fit, True).
    n_init : int, default=1
        Initialisations per candidate (``starts="estimator"`` only).
    random_state : int, RandomState instance or None, default=None
        Seed of the search's random starts.  With ``starts="estimator"``, the
        seed shared by all candidates, so that the winner is the model
        ``GaussianMixture(K, covariance_type=..., random_state=seed).fit(X)``;
        re-seeding attempts derive their own seeds from it.
    device : str or torch.device, optional
        Where to fit.
    degenerate : {"reseed", "exclude", "flag"}, default="reseed"
        What to do with a candidate whose fit collapsed (see
        :func:`collapsed_components`): ``"reseed"`` takes the best of the
        search's other runs that did not collapse (``starts="estimator"``:
        refits it from up to ``n_reseed`` new seeds) and excludes it if every
        attempt collapses;
        ``"exclude"`` excludes it at once; ``"flag"`` keeps it eligible.
        Every case is recorded in ``results_["guard"]`` and warned about with
        :class:`DegenerateFitWarning`.  A candidate whose fit raises a
        ``ValueError`` (e.g. an ill-defined covariance) is handled the same way.
    n_reseed : int, default=2
        Extra attempts per collapsed candidate under ``degenerate="reseed"``
        (``starts="estimator"`` only).
    concurrent : {"auto", True, False}, default="auto"
        Fit the first attempt of all candidates of one covariance type (and
        their ``n_init`` restarts) together in one batched EM
        (:mod:`gaussmix.batched`); each equals its separate fit up to
        rounding.  ``"auto"`` batches where it is faster: on CUDA, and on
        the CPU for small data (see :func:`concurrent_applies`).  Re-seeding
        attempts of the degenerate-fit guard always run one by one.
        With batching, ``fit_time`` is the candidate's initialisation plus an
        even share of its batch's EM time.  (``starts="estimator"`` only:
        the search always batches.)
    callback : callable, optional
        Called as ``callback(i, n_candidates, row)`` after each candidate,
        with ``row`` its dict of results (used for progress display).
    **estimator_params
        Passed to every :class:`GaussianMixture` (``max_iter``, ``tol``,
        ``tol_type``, ``reg_covar``, ``dtype``, ``hc_subset``...; with
        ``starts="estimator"`` also ``init_params`` and initial parameters).

    Returns
    -------
    ModelSelection
        With ``best_estimator_``, ``best_params_`` and ``results_``.

    Raises
    ------
    ValueError
        For an invalid grid, or when no candidate is admissible.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussmix import select_model
    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2))]
    >>> sel = select_model(X, n_components=range(1, 5), random_state=0)
    >>> sel.best_params_["n_components"]
    2
    """
    ks, types = _check_grid(n_components, covariance_types, criterion, degenerate, n_reseed)
    if starts not in STARTS:
        raise ValueError(f"Invalid starts {starts!r}: choose one of {list(STARTS)}.")
    if starts == "search":
        if n_init != 1:
            raise ValueError(
                "n_init applies to starts='estimator'; the search sets its number of starts "
                "with search_params (n_kmeans, n_random)."
            )
        search_params = _check_search(search_params, estimator_params)
        estimator_params = {**SEARCH_DEFAULTS, **estimator_params}
    elif search_params is not None:
        raise ValueError("search_params applies to starts='search' only.")
    for name in ("n_components", "covariance_type", "random_state", "n_init", "device"):
        if name in estimator_params:
            raise ValueError(f"Pass {name!r} to select_model directly, not as an estimator parameter.")
    # Data and settings errors are the caller's, not a candidate's: raise them now.
    as_tensor_2d(X if isinstance(X, torch.Tensor) else np.asarray(X))
    resolve_device(device)
    unknown = set(estimator_params) - set(GaussianMixture().get_params())
    if unknown:
        raise TypeError(
            f"Unknown GaussianMixture parameter(s) {sorted(unknown)}; valid ones are "
            f"{sorted(GaussianMixture().get_params())}."
        )
    probe = GaussianMixture(n_components=ks[0], covariance_type=types[0], n_init=n_init,
                            device=device, **estimator_params)
    probe._check_hyperparameters()
    resolve_dtype(probe.dtype)
    # An int seed is used as it is, so the winner equals
    # GaussianMixture(..., random_state=seed).fit(X) for its K and type.
    if random_state is None or (isinstance(random_state, numbers.Integral)
                                and not isinstance(random_state, bool)):
        base_seed = random_state
    else:
        base_seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    grid = [(t, k) for t in types for k in ks]
    rows = {c: [] for c in _COLUMNS}
    estimators: list = []
    events = []
    not_converged = 0
    if starts == "search":
        plans = _search_grid(X, ks, types, base_seed, device, search_params, estimator_params)
    else:
        plans = _estimator_grid(X, grid, base_seed, n_init, device, concurrent, n_reseed,
                                estimator_params)
    for i, (cov_type, k) in enumerate(grid):
        t0 = time.perf_counter()
        plan = plans[(cov_type, k)]
        limit = plan.n_attempts if degenerate == "reseed" else 1
        first = None  # (est, crit, collapse, error) of the first attempt
        chosen = None
        used = 0
        first_info = chosen_info = {}
        for est, err, info in plan.attempts():
            used += 1
            if est is None:
                outcome = (None, None, None, err)
            else:
                reg = info.get("reg", est.reg_covar)
                outcome = (est, information_criteria(est, X), collapsed_components(est, X, reg), "")
            if first is None:
                first, first_info = outcome, info
            if est is not None and not outcome[2]["components"]:
                chosen, chosen_info = outcome, info
                break
            if used >= limit or (est is None and not _worth_reseeding(err)):
                break
        fit_time = time.perf_counter() - t0 + plan.fit_time
        if chosen is not None:
            guard = "ok" if used == 1 else "reseeded"
            detail = "" if used == 1 else (
                f"attempt 1 collapsed ({first[3] or first[2]['detail']}); {plan.next_word} is clean")
            est, crit, collapse, _ = chosen
        else:
            est, crit, collapse, err = first
            if degenerate == "flag" and est is not None:
                guard = "flagged"
            else:
                guard = "excluded"
            detail = err or collapse["detail"]
            if used > 1:
                detail += f" (in all {used} attempts)"
        if guard != "ok":
            events.append((cov_type, k, guard, detail))
        row = {
            "n_components": k,
            "covariance_type": cov_type,
            "log_likelihood": crit["log_likelihood"] if crit else math.nan,
            "n_parameters": get_covariance_type(cov_type).n_parameters(k, _n_features(X)),
            "bic": crit["bic"] if crit else math.nan,
            "aic": crit["aic"] if crit else math.nan,
            "icl": crit["icl"] if crit else math.nan,
            "converged": bool(est.converged_) if est is not None else False,
            "n_iter": int(est.n_iter_) if est is not None else 0,
            "fit_time": fit_time,
            "guard": guard,
            "guard_detail": detail,
            "n_collapsed": len(collapse["components"]) if collapse else 0,
            "n_attempts": used,
            "start": (chosen_info if chosen is not None else first_info).get("start", ""),
            "n_starts": plan.n_starts,
            "selected": False,
        }
        if est is not None and not est.converged_:
            not_converged += 1
        for c in _COLUMNS:
            rows[c].append(row[c])
        estimators.append(est)
        if callback is not None:
            callback(i, len(grid), row)

    if events:
        lines = "; ".join(f"{t} K={k}: {g} ({d})" for t, k, g, d in events)
        warnings.warn(
            f"{len(events)} of {len(grid)} candidate fit(s) had collapsed components "
            f"(degenerate='{degenerate}'): {lines}. Components collapse onto repeated or "
            f"integer values, or onto too few points; consider fewer components, a larger "
            f"reg_covar, or jittering discrete features.",
            DegenerateFitWarning,
            stacklevel=2,
        )
    if not_converged:
        warnings.warn(
            f"{not_converged} of {len(grid)} candidate fit(s) did not converge; see "
            f"results_['converged']. Increase max_iter or tol.",
            ConvergenceWarning,
            stacklevel=2,
        )
    values = np.array(rows[criterion], dtype=np.float64)
    eligible = np.array([g != "excluded" for g in rows["guard"]]) & np.isfinite(values)
    if not eligible.any():
        t, k, _, why = events[0] if events else (types[0], ks[0], "", "non-finite criterion")
        raise ValueError(
            f"No admissible candidate: every fit in the grid collapsed or failed (first: "
            f"{t} K={k}: {why}). Use fewer components, increase reg_covar, scale the data, "
            f"or pass degenerate='flag' to keep collapsed fits."
        )
    best = int(np.flatnonzero(eligible)[np.argmin(values[eligible])])
    rows["selected"][best] = True
    return ModelSelection(
        best_estimator_=estimators[best],
        best_params_={
            "n_components": rows["n_components"][best],
            "covariance_type": rows["covariance_type"][best],
        },
        best_index_=best,
        results_=rows,
        estimators_=estimators,
        criterion=criterion,
    )


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


def _worth_reseeding(error: str) -> bool:
    """Only numerical failures may go away with another start; a problem of
    the data's size (fewer samples than components) will not."""
    return "n_samples" not in error and "minimum of" not in error


def _n_features(X) -> int:
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) == 2:
        return int(shape[1])
    return int(np.asarray(X).shape[1])
