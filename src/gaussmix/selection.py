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
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from ._validation import as_tensor_2d, resolve_device, resolve_dtype
from .candidates import (
    SEARCH_DEFAULTS,
    SEARCH_PARAMS,
    STARTS,
    check_search,
    estimator_plans,
    search_plans,
    worth_reseeding,
)
from .covariance import MCLUST_MODELS, get_covariance_type
from .data import check_in_memory, chunk_rows, iter_chunks
from .em import e_step
from .estimator import GaussianMixture
from .examination import examine_grid
from .grid_fit import CPU_BATCH_MAX_SAMPLES, concurrent_applies
from .guard import (
    VARIANCE_RTOL,
    DataScale,
    DegenerateFitWarning,
    collapsed_components,
    min_component_count,
)
from .prior import ConjugatePrior
from .prior_selection import check_prior_search, prior_plans, types_with_prior
from .threads import threads_for, torch_threads

__all__ = [
    "CPU_BATCH_MAX_SAMPLES",
    "CRITERIA",
    "DEGENERATE_POLICIES",
    "DegenerateFitWarning",
    "ModelSelection",
    "collapsed_components",
    "concurrent_applies",
    "information_criteria",
    "min_component_count",
    "SEARCH_DEFAULTS",
    "SEARCH_PARAMS",
    "STARTS",
    "VARIANCE_RTOL",
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
    return _criteria(estimator, estimator._predict_input(X))


def _criteria(estimator: GaussianMixture, Xt: torch.Tensor) -> dict:
    """:func:`information_criteria` on data already validated for ``estimator``."""
    params = estimator._params
    n, d = Xt.shape
    ll = 0.0
    entropy = 0.0
    # Small data on the CPU: one torch thread (gaussmix.threads).
    with torch_threads(threads_for(n, Xt.device)):
        rows = chunk_rows(n, params.n_components, d, Xt.device, Xt.dtype, estimator.batch_size)
        for xb, _ in iter_chunks(Xt, None, rows):
            log_resp, log_prob = e_step(xb, params)
            log_resp = log_resp.double()
            resp = torch.exp(log_resp)
            # 0 * log 0 is 0 in the entropy; exp underflow gives resp == 0 exactly.
            plogp = torch.where(resp > 0, resp * log_resp, torch.zeros_like(resp))
            ll += float(log_prob.double().sum())
            entropy -= float(plogp.sum())
    return _criteria_from(ll, entropy, params.n_parameters(), n)


def _criteria_from(ll: float, entropy: float, p: int, n: int) -> dict:
    """The criteria of a model with total log-likelihood ``ll``, entropy of the
    responsibilities ``entropy`` and ``p`` free parameters on ``n`` samples."""
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
        covariance_types = list(MCLUST_MODELS) if covariance_types == "all" else [covariance_types]
    types = list(covariance_types)
    if not types:
        raise ValueError("covariance_types is empty: give at least one of full, tied, diag, "
                         "spherical, mclust's model names, or 'all'.")
    # One name per model: 'full' and 'VVV' (etc.) are the same model.
    seen = {}
    for t in types:
        seen.setdefault(id(get_covariance_type(t)), t)
    types = list(seen.values())
    if criterion not in CRITERIA:
        raise ValueError(f"Invalid criterion {criterion!r}: choose one of {list(CRITERIA)}.")
    if degenerate not in DEGENERATE_POLICIES:
        raise ValueError(
            f"Invalid degenerate policy {degenerate!r}: choose one of {list(DEGENERATE_POLICIES)}."
        )
    if isinstance(n_reseed, bool) or not isinstance(n_reseed, numbers.Integral) or n_reseed < 0:
        raise ValueError(f"Invalid n_reseed {n_reseed!r}: use an integer >= 0.")
    # Keep the user's order but drop repeats.
    return list(dict.fromkeys(int(k) for k in ks)), types


def _check_initial_parameters(ks, types, n_features, estimator_params) -> None:
    """Raise the shape (or value) error of weights_init / means_init /
    precisions_init for the first candidate they do not fit; a candidate's
    fit would only report it as a failed (collapsed) candidate."""
    if all(estimator_params.get(f"{p}_init") is None for p in ("weights", "means", "precisions")):
        return
    for cov_type in types:
        for k in ks:
            est = GaussianMixture(n_components=k, covariance_type=cov_type, **estimator_params)
            try:
                est._check_initial_parameters(n_features, torch.device("cpu"), torch.float64)
            except ValueError as exc:
                hint = (": initial parameters fix the number of components and the covariance "
                        "type, so pass one K and one type with them") if "shape" in str(exc) else ""
                raise ValueError(f"{exc} (select_model candidate {cov_type} K={k}{hint})") from None


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
    partitions (and random ones on request), and splits of the best
    ``K - 1`` fit, screened by a few EM iterations and continued to
    convergence in batches
    (:mod:`gaussmix.search`).  EM stops on mclust's rule (relative change of
    the total log-likelihood below ``tol=1e-5``) and ``reg_covar`` (default
    1e-8) is relative to each feature's variance, so that shifting the data
    or scaling a feature changes neither the fits nor the choice (a
    spherical covariance is only invariant under one common scale).  See
    ``docs/SELECTION.md``.

    With ``starts="estimator"`` every candidate is
    ``GaussianMixture(K, covariance_type=..., random_state=seed, **params).fit(X)``,
    scikit-learn's defaults and weaknesses included.

    With a ``prior`` (R mclust's conjugate prior, see
    :class:`GaussianMixture`), selection is mclust's ``Mclust(prior=)``: the
    models without a prior (VEE, EVE, VVE, EVV) are left out of the grid, and
    ``starts="search"`` fits every candidate from mclust's one hierarchical
    start, ``GaussianMixture(K, ..., prior=prior, init_params="hc")``, with
    mclust's stopping rule and ``reg_covar=0`` (the batched search engines
    have no prior; ``search_params`` do not apply).  BIC is then the data's
    log-likelihood at the posterior mode with the usual parameter count, as
    mclust's.

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
        default 3), ``n_random`` (random soft starts, 0: on the reference
        data they never won a cell), ``screen_iter`` (EM
        iterations of the screening, 5), ``n_keep`` (screened starts,
        k-means, random or splits, that continue besides the hierarchical
        one, 2) and ``split`` (try splits
        of the best ``K - 1`` fit, True).
    n_init : int, default=1
        Initialisations per candidate (``starts="estimator"`` only).
    random_state : int, RandomState or Generator instance, or None, default=None
        Seed of the search's random starts (a RandomState or Generator is
        drawn from once for it).  With ``starts="estimator"``, the
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
        the CPU for small data (see :func:`concurrent_applies`).  The
        degenerate-fit guard's re-seeded attempts are batched the same way
        (with a seeded ``random_state``): the second attempt of every
        candidate that needs one together, then the third.
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
    prior = ConjugatePrior.from_param(estimator_params.get("prior"))
    if prior is not None:
        types = types_with_prior(types, covariance_types, prior, _n_features(X))
    if starts == "search":
        if n_init != 1:
            raise ValueError(
                "n_init applies to starts='estimator'; the search sets its number of starts "
                "with search_params (n_kmeans, n_random)."
            )
        if prior is not None:
            estimator_params = check_prior_search(search_params, estimator_params)
        else:
            search_params = check_search(search_params, estimator_params)
            estimator_params = {**SEARCH_DEFAULTS, **estimator_params}
    elif search_params is not None:
        raise ValueError("search_params applies to starts='search' only.")
    for name in ("n_components", "covariance_type", "random_state", "n_init", "device"):
        if name in estimator_params:
            raise ValueError(f"Pass {name!r} to select_model directly, not as an estimator parameter.")
    # Data and settings errors are the caller's, not a candidate's: raise them now.
    check_in_memory(X, "select_model", "Load the data into an array "
                    "(np.load(path, mmap_mode='r') for a .npy file) and pass that.")
    n_features = as_tensor_2d(X if isinstance(X, torch.Tensor) else np.asarray(X)).shape[1]
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
    _check_initial_parameters(ks, types, n_features, estimator_params)
    # An int seed is used as it is, so the winner equals
    # GaussianMixture(..., random_state=seed).fit(X) for its K and type.
    if random_state is None or (isinstance(random_state, numbers.Integral)
                                and not isinstance(random_state, bool)):
        base_seed = random_state
    elif isinstance(random_state, np.random.Generator):
        # One draw, as from a RandomState: the same generator state gives the same result.
        base_seed = int(random_state.integers(np.iinfo(np.int32).max))
    else:
        base_seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    grid = [(t, k) for t in types for k in ks]
    rows = {c: [] for c in _COLUMNS}
    estimators: list = []
    events = []
    if starts == "search" and prior is not None:
        plans = prior_plans(X, grid, base_seed, device, n_reseed, estimator_params)
    elif starts == "search":
        plans = search_plans(X, ks, types, base_seed, device, search_params, estimator_params)
    else:
        plans = estimator_plans(X, grid, base_seed, n_init, device, concurrent, n_reseed,
                                estimator_params)
    # The data, validated once per device and dtype, and the guard's view of
    # them (feature variances) computed once: every candidate is examined on
    # the same data.
    checked = {}
    data_scale = DataScale(X)

    def examine(est, reg, score=None):
        if score is not None:
            # The search scored its runs in one batched pass.
            crit = _criteria_from(*score, est._params.n_parameters(), data_scale.n_samples)
        else:
            key = (est._device, est._dtype)
            if key not in checked:
                checked[key] = est._predict_input(X)
            crit = _criteria(est, checked[key])
        return crit, collapsed_components(est, data_scale, reg)

    counts = {"not_converged": 0}

    def report(i, exam):
        cov_type, k = grid[i]
        plan = plans[(cov_type, k)]
        first, chosen, used = exam.first, exam.chosen, exam.used
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
            "fit_time": exam.seconds + plan.fit_time,
            "guard": guard,
            "guard_detail": detail,
            "n_collapsed": len(collapse["components"]) if collapse else 0,
            "n_attempts": used,
            "start": (exam.chosen_info if chosen is not None else exam.first_info).get("start", ""),
            "n_starts": plan.n_starts,
            "selected": False,
        }
        if est is not None and not est.converged_:
            counts["not_converged"] += 1
        for c in _COLUMNS:
            rows[c].append(row[c])
        estimators.append(est)
        if callback is not None:
            callback(i, len(grid), row)

    examine_grid(grid, plans, degenerate == "reseed", examine, worth_reseeding, report)
    not_converged = counts["not_converged"]

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


def _n_features(X) -> int:
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) == 2:
        return int(shape[1])
    return int(np.asarray(X).shape[1])
