"""Model selection under mclust's conjugate prior (``select_model(prior=...)``).

mclust's ``Mclust(prior = priorControl())`` leaves out the models without a
prior and fits every candidate from its one hierarchical start.  The batched
search engines (:mod:`gaussmix.search`) carry no prior, so with a prior
``starts="search"`` takes this path instead: each candidate is
``GaussianMixture(K, covariance_type=..., prior=..., init_params="hc")``
through the estimator plans of :mod:`gaussmix.candidates`, one by one.
"""

from __future__ import annotations

import warnings

from .candidates import check_search, estimator_plans
from .covariance import PRIOR_MODELS, get_covariance_type
from .estimator import GaussianMixture

__all__ = ["PRIOR_SEARCH_DEFAULTS", "check_prior_search", "prior_plans", "types_with_prior"]

#: Estimator settings of ``starts="search"`` with a conjugate prior, unless
#: the caller passes others: mclust's one hierarchical start per candidate,
#: its stopping rule, and no regularisation besides the prior (mclust's).
PRIOR_SEARCH_DEFAULTS = {"init_params": "hc", "tol": 1e-5, "tol_type": "relative",
                         "max_iter": 1000, "reg_covar": 0.0}


def check_prior_search(search_params, estimator_params) -> dict:
    """Estimator settings of ``starts="search"`` under a prior (see
    :func:`prior_plans`); raises for settings it cannot honour."""
    if search_params is not None:
        raise ValueError(
            "search_params applies to the search without a prior; with a prior every candidate "
            "is fitted from mclust's hierarchical start (pass starts='estimator' to choose the "
            "start with init_params)."
        )
    check_search(None, estimator_params)  # the same refusal of start parameters
    return {**PRIOR_SEARCH_DEFAULTS, **estimator_params}


def prior_plans(X, grid, base_seed, device, n_reseed, estimator_params):
    """Plans of ``starts="search"`` with a conjugate prior: mclust's way,
    ``GaussianMixture(K, covariance_type=..., prior=..., init_params="hc")``
    per candidate, one by one (the batched search engines carry no prior).
    ``estimator_params`` come from :func:`check_prior_search`.  On data of at
    most ``hc_subset`` rows the hierarchical start does not depend on the
    seed, so the guard gets no re-seeded attempts (they would repeat the fit).
    """
    n = X.shape[0] if hasattr(X, "shape") else len(X)
    if n <= GaussianMixture(**estimator_params).hc_subset:
        n_reseed = 0
    return estimator_plans(X, grid, base_seed, 1, device, False, n_reseed, estimator_params)


def types_with_prior(types, covariance_types, spec, n_features) -> list:
    """The grid's types that have mclust's conjugate prior.

    As mclust's ``mclustBIC(prior=)``, the models without one (VEE, EVE, VVE,
    EVV) are dropped; a warning names them unless they came from ``"all"``.
    Raises when none is left, or when a given scale does not fit a type.
    """
    kept = [t for t in types if get_covariance_type(t).supports_prior]
    dropped = [t for t in types if t not in kept]
    if not kept:
        raise ValueError(
            f"mclust has no conjugate prior for {dropped}; with a prior choose covariance types "
            f"among {list(PRIOR_MODELS)} (or scikit-learn's full, tied, diag, spherical)."
        )
    if dropped and not (isinstance(covariance_types, str) and covariance_types == "all"):
        warnings.warn(
            f"mclust has no conjugate prior for {dropped}: left out of the grid, as mclust's "
            f"mclustBIC does with a prior.", UserWarning, stacklevel=3)
    for t in kept:
        try:
            spec.check(n_features, get_covariance_type(t).prior_scale_shape(n_features))
        except ValueError as exc:
            raise ValueError(f"{exc} (select_model candidate type {t})") from None
    return kept
