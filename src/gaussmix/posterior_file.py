"""The variational posterior and priors of a BayesianGaussianMixture in a model file.

Besides the point estimates every model file holds (:mod:`gaussmix.model_files`),
a ``BayesianGaussianMixture`` file holds, in float64:

- ``weight_concentration`` (K,) or, for the Dirichlet process, (2, K);
- ``mean_precision`` (K,) and ``degrees_of_freedom`` (K,) or () for ``tied``;
- ``estep_terms`` (K,), the E-step's per-component constant, stored so that
  predictions are bitwise those of the saved model, and checked against the
  value derived from the three arrays above;
- ``mean_prior`` (D,) and ``covariance_prior`` (the covariance type's prior
  shape), the resolved priors;

and in its metadata a ``priors`` record: the three scalar priors and which
array priors the user gave (so that a refit uses them again).  Loading checks
every value a posterior needs before use and names the file and the field.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .covariance import COVARIANCE_TYPES, get_covariance_type
from .model_archive import bad_file
from .variational import WEIGHT_PRIORS, Priors, VariationalParams, estep_terms

__all__ = ["posterior_record", "array_specs", "restore"]

_F64 = np.dtype(np.float64)
#: The array priors a user may give; stored resolved, given or not.
_ARRAY_PRIORS = ("mean_prior", "covariance_prior")
# Derived values may differ by rounding (another device's digamma); more than
# this means the arrays describe different posteriors.
_ESTEP_RTOL = 1e-6


def posterior_record(estimator) -> tuple[dict, dict]:
    """The posterior's arrays and the metadata ``priors`` record of a fitted estimator.

    Parameters
    ----------
    estimator : BayesianGaussianMixture
        Fitted.

    Returns
    -------
    arrays : dict of str to Tensor
        float64 tensors, saved as members of the file.
    record : dict
        JSON scalars: the resolved scalar priors and the names of the array
        priors the user gave.
    """
    p, priors = estimator._params, estimator._update.priors
    arrays = {
        "weight_concentration": p.weight_concentration,
        "mean_precision": p.mean_precision,
        "degrees_of_freedom": p.degrees_of_freedom,
        "estep_terms": p.estep_terms,
        "mean_prior": priors.mean,
        "covariance_prior": priors.covariance,
    }
    record = {
        "weight_concentration_prior": float(priors.weight_concentration),
        "mean_precision_prior": float(priors.mean_precision),
        "degrees_of_freedom_prior": float(priors.degrees_of_freedom),
        "given": [name for name in _ARRAY_PRIORS if getattr(estimator, name) is not None],
    }
    return {k: v.to(torch.float64) for k, v in arrays.items()}, record


def array_specs(path, meta: dict, covariance_type: str, k: int, d: int) -> dict:
    """The shapes and dtypes of the posterior's arrays in a file's ``meta``.

    Parameters
    ----------
    path : str or path-like
        The file (named in errors).
    meta : dict
        Its metadata (the weight prior's type decides a shape).
    covariance_type : str
    k, d : int
        Number of components and of features.

    Returns
    -------
    dict of str to (shape, numpy dtype)
    """
    if covariance_type not in COVARIANCE_TYPES:
        raise bad_file(path, f"covariance_type {covariance_type!r} is not one the variational "
                             f"mixture fits ({sorted(COVARIANCE_TYPES)})")
    stored = meta.get("estimator_params")
    prior_type = stored.get("weight_concentration_prior_type") if isinstance(stored, dict) else None
    if prior_type not in WEIGHT_PRIORS:
        raise bad_file(path, f"weight_concentration_prior_type {prior_type!r} is not one of "
                             f"{sorted(WEIGHT_PRIORS)}")
    cov = get_covariance_type(covariance_type)
    # The shapes an update gives, taken from the update itself (no per-type rules here).
    counts = torch.ones(k, dtype=torch.float64)
    return {
        "weight_concentration": (tuple(WEIGHT_PRIORS[prior_type].posterior(counts, 1.0).shape), _F64),
        "mean_precision": ((k,), _F64),
        "degrees_of_freedom": (tuple(cov.wishart_degrees_of_freedom(float(d), counts).shape), _F64),
        "estep_terms": ((k,), _F64),
        "mean_prior": ((d,), _F64),
        "covariance_prior": (tuple(cov.covariance_prior_shape(d)), _F64),
    }


def _scalar_priors(path, record, d: int) -> tuple[float, float, float]:
    if not isinstance(record, dict):
        raise bad_file(path, "its priors record is missing or not a mapping")
    bounds = (("weight_concentration_prior", 0.0), ("mean_precision_prior", 0.0),
              ("degrees_of_freedom_prior", d - 1.0))
    values = []
    for name, low in bounds:
        v = record.get(name)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= low:
            raise bad_file(path, f"the field 'priors.{name}' is {v!r}, expected a finite number > {low:g}")
        values.append(float(v))
    given = record.get("given", [])
    if not isinstance(given, list) or not set(given) <= set(_ARRAY_PRIORS):
        raise bad_file(path, f"the field 'priors.given' is {given!r}, expected a list drawn from "
                             f"{list(_ARRAY_PRIORS)}")
    return (*values,)


def restore(path, estimator, params, arrays: dict, record) -> VariationalParams:
    """Check a file's posterior and priors and give them to ``estimator``.

    Checked before use: positive concentrations that give the stored
    weights, positive mean precisions, degrees of freedom above
    ``n_features - 1``, a valid covariance prior (the covariance strategy's
    ``check_covariance_prior``), valid scalar priors, and E-step constants
    that agree with the posterior.

    Parameters
    ----------
    path : str or path-like
        The file (named in errors).
    estimator : BayesianGaussianMixture
        Unfitted, with the stored parameters; receives the priors (its
        ``*_prior_`` attributes, and ``mean_prior`` / ``covariance_prior``
        when the user had given them).
    params : GMMParams
        The file's checked point estimates (see
        :func:`gaussmix.params.find_problem`).
    arrays : dict of str to ndarray
        The posterior's arrays, read as :func:`array_specs` says.
    record : dict
        The metadata's ``priors`` record.

    Returns
    -------
    VariationalParams

    Raises
    ------
    ValueError
        Naming the file and the field at fault.
    """

    def refuse(field, why):
        raise bad_file(path, f"the field {field!r} {why}")

    d = params.n_features
    alpha0, beta0, nu0 = _scalar_priors(path, record, d)
    # np.array, not ascontiguousarray, which makes 0-d arrays (tied dof) 1-d.
    t = {name: torch.from_numpy(np.array(a, order="C")) for name, a in arrays.items()}
    conc, beta, dof = t["weight_concentration"], t["mean_precision"], t["degrees_of_freedom"]
    if not bool((conc > 0).all()):
        refuse("weight_concentration", "has an entry <= 0 (posterior concentrations are positive)")
    if not bool((beta > 0).all()):
        refuse("mean_precision", "has an entry <= 0 (posterior precisions are positive)")
    if not bool((dof > d - 1).all()):
        refuse("degrees_of_freedom", f"has an entry <= n_features - 1 = {d - 1} (the Wishart "
                                     f"needs more degrees of freedom)")
    try:
        get_covariance_type(params.covariance_type).check_covariance_prior(
            t["covariance_prior"], "covariance_prior")
    except ValueError as exc:
        refuse("covariance_prior", f"is not a valid prior covariance ({exc})")
    weight_prior = WEIGHT_PRIORS[estimator.weight_concentration_prior_type]
    # As in find_problem: rounding is far below this; more means another model.
    limit = 1e-3 if params.weights.dtype == torch.float64 else 0.05
    gap = float((weight_prior.weights(conc) - params.weights.double()).abs().max())
    if not gap <= limit:
        refuse("weight_concentration", f"disagrees with the weights (by up to {gap:.3g}; the "
                                       f"weights are the posterior mean of the concentrations)")
    derived = estep_terms(weight_prior, conc, beta, dof, d)
    gap = float((t["estep_terms"] - derived).abs().max() / derived.abs().max().clamp(min=1.0))
    if not gap <= _ESTEP_RTOL:
        refuse("estep_terms", f"disagree with the posterior (relative difference {gap:.3g}; they "
                              f"are derived from weight_concentration, mean_precision and "
                              f"degrees_of_freedom)")
    priors = Priors(alpha0, beta0, t["mean_prior"], nu0, t["covariance_prior"])
    for name in record.get("given", []):
        a = arrays[name]
        setattr(estimator, name, float(a) if a.ndim == 0 else a)
    estimator._set_priors(priors)
    return VariationalParams(**vars(params), weight_concentration=conc, mean_precision=beta,
                             degrees_of_freedom=dof, estep_terms=t["estep_terms"])
