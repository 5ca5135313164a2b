"""Saving and loading fitted mixtures as safe model files.

A model file (see :mod:`gaussmix.model_archive` for the container) holds the
fitted parameters (``weights``, ``means``, ``covariances``,
``precisions_cholesky``, ``precisions``) in the model's dtype, and metadata:
the format, the covariance type and sizes, feature names, the estimator's
scalar parameters and the fit record.  A ``BayesianGaussianMixture`` file
also names its estimator and carries the variational posterior and the
priors (:mod:`gaussmix.posterior_file`); a file without an estimator name is
a ``GaussianMixture`` (format 1, unchanged since it was introduced).  A
``GaussianMixture`` fitted with mclust's conjugate prior adds a ``prior``
record: its ``prior`` parameter and the resolved hyper-parameters
(:mod:`gaussmix.prior`), as JSON numbers and lists.

Every loaded array is checked before use (:func:`gaussmix.params.find_problem`
and the covariance strategies' ``factor_problem``); a bad one is refused with
a ValueError naming the file and the field.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import posterior_file
from .bayesian import BayesianGaussianMixture
from .covariance import MODELS, get_covariance_type
from .em import EMResult
from .estimator import GaussianMixture
from .model_archive import (
    FORMAT_NAME, bad_file, open_archive, read_arrays, read_metadata, version, write_archive,
)
from .params import GMMParams, find_problem
from .prior import ConjugatePrior, PriorParams, prior_from_json, prior_to_json

__all__ = ["save_model", "load"]

#: Format of the files of each estimator (see ``FORMAT_VERSION``).
_FORMATS = {GaussianMixture: 1, BayesianGaussianMixture: 2}
_ESTIMATORS = {cls.__name__: cls for cls in _FORMATS}
# Estimator parameters stored in the metadata (JSON scalars only; the
# *_init arrays are starting points, not part of the fitted model, and the
# array priors are stored resolved, with the posterior).
_SCALAR_PARAMS = (
    "n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init", "init_params",
    "random_state", "warm_start", "verbose", "verbose_interval", "device", "dtype", "batch_size",
    "tol_type", "hc_subset", "weight_concentration_prior_type", "weight_concentration_prior",
    "mean_precision_prior", "degrees_of_freedom_prior",
)


def _json_safe(value):
    """A JSON scalar for a stored estimator parameter, or None to skip it."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value).replace("torch.", "")
    return None


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def save_model(estimator, path, feature_names=None) -> None:
    """Write a fitted mixture to ``path`` (``.npz`` layout plus JSON metadata).

    Parameters
    ----------
    estimator : GaussianMixture or BayesianGaussianMixture
        A fitted mixture.
    path : str or path-like
        Destination; ``.npz`` is the conventional extension.
    feature_names : sequence of str, optional
        Names of the input columns (default: ``feature_names_in_`` when the
        estimator was fitted on a DataFrame).

    Raises
    ------
    ValueError
        If the estimator is not fitted or the names do not match the
        number of features.
    """
    name = type(estimator).__name__
    if not hasattr(estimator, "_params"):
        raise ValueError(f"This {name} is not fitted yet; call fit() before save().")
    fmt = next((v for cls, v in _FORMATS.items() if isinstance(estimator, cls)), None)
    if fmt is None:
        raise TypeError(f"save_model() writes a GaussianMixture or BayesianGaussianMixture, not {name}.")
    p = estimator._params
    fitted_names = getattr(estimator, "feature_names_in_", None)
    if feature_names is None and fitted_names is not None:
        feature_names = list(fitted_names)
    if feature_names is not None:
        feature_names = [str(n) for n in feature_names]
        if len(feature_names) != p.n_features:
            raise ValueError(
                f"{len(feature_names)} feature names given for a model with {p.n_features} "
                f"features; give one name per feature."
            )
    arrays = {
        "weights": p.weights,
        "means": p.means,
        "covariances": p.get_covariances(),
        "precisions_cholesky": p.precisions_cholesky,
        "precisions": p.get_precisions(),
    }
    arrays = {k: _numpy(v) for k, v in arrays.items()}
    params = estimator.get_params(deep=False)
    stored = {}
    for key in _SCALAR_PARAMS:
        if key in params:
            v = _json_safe(params[key])
            if v is not None or params[key] is None:
                stored[key] = v
    meta = {
        "format": FORMAT_NAME,
        "format_version": fmt,
        "gaussmix_version": version(),
        "covariance_type": p.covariance_type,
        "n_components": p.n_components,
        "n_features": p.n_features,
        "dtype": str(arrays["means"].dtype),
        "feature_names": feature_names,
        "feature_names_in": None if fitted_names is None else [str(n) for n in fitted_names],
        "estimator_params": stored,
        "fit": {
            "converged": bool(estimator.converged_),
            "n_iter": int(estimator.n_iter_),
            "lower_bound": float(estimator.lower_bound_),
            "lower_bounds": [float(v) for v in estimator.lower_bounds_],
        },
    }
    if params.get("prior") is not None:
        meta["prior"] = prior_record(estimator)
    if isinstance(estimator, BayesianGaussianMixture):
        # Only these files name their estimator: format-1 files stay as they were.
        meta["estimator"] = name
        extra, meta["priors"] = posterior_file.posterior_record(estimator)
        arrays.update({k: _numpy(v) for k, v in extra.items()})
    meta["arrays"] = {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()}
    write_archive(path, arrays, meta)


def _check_meta(path, meta) -> tuple[str, int, int, np.dtype]:
    kind = meta.get("covariance_type")
    if kind not in MODELS:
        raise bad_file(path, f"unknown covariance_type {kind!r}")
    k, d = meta.get("n_components"), meta.get("n_features")
    for name, v in (("n_components", k), ("n_features", d)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise bad_file(path, f"{name} {v!r} is not a positive integer")
    if meta.get("dtype") not in ("float32", "float64"):
        raise bad_file(path, f"dtype {meta.get('dtype')!r} is not float32 or float64")
    for key in ("feature_names", "feature_names_in"):
        v = meta.get(key)
        if v is not None and (
            not isinstance(v, list) or len(v) != d or not all(isinstance(s, str) for s in v)
        ):
            raise bad_file(path, f"{key} is not a list of {d} strings")
    return kind, k, d, np.dtype(meta["dtype"])


def _estimator_class(path, meta):
    name = meta.get("estimator", "GaussianMixture")
    if name not in _ESTIMATORS:
        raise bad_file(path, f"unknown estimator {name!r} (known: {sorted(_ESTIMATORS)})")
    return _ESTIMATORS[name]


def _check_params(path, stored: dict, cls) -> dict:
    defaults = cls().get_params(deep=False)
    if not isinstance(stored, dict):
        raise bad_file(path, "estimator_params is not a mapping")
    params = {}
    for name, v in stored.items():
        # Parameters unknown to this version are skipped (forward compatible).
        if name not in defaults or name not in _SCALAR_PARAMS:
            continue
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise bad_file(path, f"estimator parameter {name!r} has a non-scalar value")
        params[name] = v
    return params


def _fit_record(path, meta) -> tuple[bool, int, float, list]:
    fit = meta.get("fit", {})
    if not isinstance(fit, dict):
        raise bad_file(path, "the fit record is not a mapping")
    try:
        converged = bool(fit.get("converged", False))
        n_iter = int(fit.get("n_iter", 0))
        lower_bound = float(fit.get("lower_bound", math.nan))
        lower_bounds = [float(v) for v in fit.get("lower_bounds", [])]
    except (TypeError, ValueError):
        raise bad_file(path, "the fit record has non-numeric values") from None
    return converged, n_iter, lower_bound, lower_bounds


def load(path, device=None):
    """Load a model written by ``GaussianMixture.save`` or ``BayesianGaussianMixture.save``.

    Never unpickles and never executes code: arrays are read with
    ``allow_pickle=False`` and metadata with :func:`json.loads`.

    Parameters
    ----------
    path : str or path-like
    device : str or torch.device, optional
        Where the loaded model computes (default: the CPU); it also becomes
        the model's ``device`` parameter (the device the model was fitted on
        is not restored, as it may not exist on this machine).

    Returns
    -------
    GaussianMixture or BayesianGaussianMixture
        The estimator that was saved, fitted, with parameters bitwise equal
        to those saved; it predicts without refitting and can warm-start.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a valid gaussmix model file (corrupted, truncated,
        a pickle, a foreign archive), needs a newer gaussmix, or holds values
        that cannot be a fitted mixture (see :func:`gaussmix.params.find_problem`:
        finite values, weights that are a distribution, precision factors with
        a positive diagonal, covariances consistent with the precisions; for a
        variational posterior, see :func:`gaussmix.posterior_file.restore`);
        the message names the file and the field.
    """
    from ._validation import resolve_device

    meta = read_metadata(path)
    kind, k, d, dtype = _check_meta(path, meta)
    cls = _estimator_class(path, meta)
    infos = open_archive(path)
    shape = get_covariance_type(kind).expected_param_shape(k, d)
    specs = {"weights": ((k,), dtype), "means": ((k, d), dtype), "covariances": (shape, dtype),
             "precisions_cholesky": (shape, dtype), "precisions": (shape, dtype)}
    if cls is BayesianGaussianMixture:
        specs.update(posterior_file.array_specs(path, meta, kind, k, d))
    arrays = read_arrays(path, infos, specs)
    w = arrays["weights"]
    if (w < 0).any() or abs(float(w.astype(np.float64).sum()) - 1.0) > 1e-4:
        raise bad_file(path, "the weights are not a probability vector")
    params = _check_params(path, meta.get("estimator_params", {}), cls)
    if "prior" in meta:
        params["prior"], resolved = restore_prior(path, meta["prior"])
    # The fitting device of the saver's machine need not exist here.
    params.update(n_components=k, covariance_type=kind, device=device)
    est = cls(**params)
    try:
        est._check_hyperparameters()
    except ValueError as exc:
        raise bad_file(path, f"a stored estimator parameter is invalid ({exc})") from None
    converged, n_iter, lower_bound, lower_bounds = _fit_record(path, meta)

    dev = resolve_device(device)

    def tensor(name):
        return torch.from_numpy(np.ascontiguousarray(arrays[name]))

    params_t = GMMParams(
        weights=tensor("weights"),
        means=tensor("means"),
        precisions_cholesky=tensor("precisions_cholesky"),
        covariance_type=kind,
        covariances=tensor("covariances"),
    )
    problem = find_problem(params_t, precisions=tensor("precisions"))
    if problem is not None:
        raise bad_file(path, f"the field {problem[0]!r} {problem[1]}")
    est._device = dev
    est._dtype = torch.float32 if dtype == np.float32 else torch.float64
    est._tensor_io = False
    if cls is BayesianGaussianMixture:
        params_t = posterior_file.restore(path, est, params_t, arrays, meta.get("priors"))
    params_t = params_t.to(device=dev)
    est._set_result(EMResult(params_t, converged, n_iter, lower_bound, lower_bounds))
    if cls is GaussianMixture:
        est.prior_ = resolved if "prior" in meta else None
    est.n_features_in_ = d
    if meta.get("feature_names_in") is not None:
        est.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
    return est


def prior_record(estimator) -> dict:
    """The metadata record of a fitted estimator's conjugate prior: its
    ``prior`` parameter and the hyper-parameters the fit resolved."""
    resolved = getattr(estimator, "prior_", None)
    return {"param": prior_to_json(estimator.prior),
            "resolved": None if resolved is None else resolved.to_json()}


def restore_prior(path, record) -> tuple:
    """``(prior parameter, PriorParams or None)`` from :func:`prior_record`'s record."""
    try:
        param = prior_from_json(record["param"])
        ConjugatePrior.from_param(param)
        resolved = record["resolved"]
        return param, None if resolved is None else PriorParams.from_json(resolved)
    except (KeyError, TypeError, ValueError) as exc:
        raise bad_file(path, f"the prior record is invalid ({exc})") from None
