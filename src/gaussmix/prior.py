"""mclust's conjugate prior: its settings and its hyper-parameters.

Fraley & Raftery (2007, "Bayesian regularization for normal mixture
estimation and model-based clustering") give every component a conjugate
prior: given the covariance ``Sigma_k``, the mean is normal around ``mean``
with covariance ``Sigma_k / shrinkage``, and the covariance is inverse
Wishart (inverse gamma for the variances of the spherical and diagonal
models) with ``dof`` degrees of freedom and scale ``scale``.  EM then
converges to the posterior mode (MAP estimate) instead of the maximum of the
likelihood, which keeps covariances from collapsing onto few points.

Two objects:

- :class:`ConjugatePrior`, the user's settings (R mclust's ``priorControl()``):
  each of ``shrinkage``, ``mean``, ``dof`` and ``scale`` either given or left
  to mclust's default;
- :class:`PriorParams`, the hyper-parameters of one fit, resolved from those
  settings, the data's mean and covariance, the number of components and the
  model (mclust's ``defaultPrior``).

The M-step that uses them is each covariance strategy's
(:mod:`gaussmix.covariance.conjugate`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from .covariance import PRIOR_MODELS, get_covariance_type

__all__ = ["ConjugatePrior", "PriorParams", "DEFAULT_SHRINKAGE", "check_prior", "prior_to_json",
           "prior_from_json"]

#: mclust's default ``shrinkage`` (``defaultPrior``).
DEFAULT_SHRINKAGE = 0.01

_FIELDS = ("shrinkage", "mean", "dof", "scale")


def _array(value, name: str) -> torch.Tensor:
    """A finite float64 tensor from a number, array or tensor."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(f"The prior's {name} must be numeric, got {value!r}.") from None
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"The prior's {name} contains NaN or infinity; pass finite values.")
    return t


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"The prior's {name} must be a finite number, got {value!r}.")
    return float(value)


@dataclass(frozen=True, eq=False)
class ConjugatePrior:
    """Settings of mclust's conjugate prior (R mclust's ``priorControl()``).

    Each field left at None takes mclust's default (``defaultPrior``), computed
    from the data when a model is fitted.

    Parameters
    ----------
    shrinkage : float, optional
        ``kappa >= 0``, the prior's weight on ``mean`` in units of samples
        (default 0.01).  With 0 the means are not shrunk.
    mean : array-like of shape (n_features,), optional
        The prior mean (default: the data's mean).
    dof : float, optional
        Degrees of freedom ``nu > n_features - 1`` (default ``n_features +
        2``).  mclust ignores a ``dof`` given to ``priorControl``; here it is
        used.
    scale : float or array-like of shape (n_features, n_features), optional
        The inverse-Wishart scale: a positive number for the spherical and
        diagonal models (EII, VII, EEI, VEI, EVI, VVI), a symmetric
        positive-definite matrix for the others.  Default, with ``G``
        components and ``D`` features: ``G**(-2/D)`` times the data's mean
        variance (a number) or times the data's covariance matrix (``n - 1``
        denominator; its diagonal when ``n <= D``).

    Examples
    --------
    >>> from gaussmix import GaussianMixture
    >>> from gaussmix.prior import ConjugatePrior
    >>> gm = GaussianMixture(2, covariance_type="VEV", prior=ConjugatePrior(shrinkage=0.1))
    """

    shrinkage: float | None = None
    mean: object = None
    dof: float | None = None
    scale: object = None

    def __post_init__(self):
        if self.shrinkage is not None and _real(self.shrinkage, "shrinkage") < 0:
            raise ValueError(
                f"The prior's shrinkage must be >= 0 (0: means not shrunk), got {self.shrinkage!r}."
            )
        if self.dof is not None and _real(self.dof, "dof") <= 0:
            raise ValueError(
                f"The prior's dof must be positive (and > n_features - 1), got {self.dof!r}."
            )
        if self.mean is not None and _array(self.mean, "mean").dim() != 1:
            raise ValueError("The prior's mean must be a vector of shape (n_features,).")
        if self.scale is not None:
            _array(self.scale, "scale")

    @classmethod
    def from_param(cls, value) -> "ConjugatePrior | None":
        """The settings an estimator's ``prior`` parameter stands for.

        Parameters
        ----------
        value : None, bool, "default", mapping or ConjugatePrior
            None or False: no prior.  True or ``"default"``: mclust's
            defaults.  A mapping with some of the keys ``shrinkage``,
            ``mean``, ``dof``, ``scale``: those settings, defaults for the
            rest.

        Returns
        -------
        ConjugatePrior or None

        Raises
        ------
        ValueError
            For any other value, an unknown key or an invalid setting.
        """
        if value is None or value is False:
            return None
        if value is True or (isinstance(value, str) and value == "default"):
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(_FIELDS))
            if unknown:
                raise ValueError(
                    f"Unknown prior setting(s) {unknown}; valid ones are {list(_FIELDS)} (as in "
                    f"mclust's priorControl)."
                )
            return cls(**value)
        raise ValueError(
            f"Invalid value for 'prior': {value!r}. Use None, 'default' (or True) for mclust's "
            f"defaultPrior, a mapping with keys among {list(_FIELDS)}, or a ConjugatePrior."
        )

    def resolve(self, data_mean: torch.Tensor, data_cov: torch.Tensor, n_samples: float,
                n_components: int, scale_shape: tuple) -> "PriorParams":
        """The hyper-parameters of one fit (mclust's ``defaultPrior``).

        Parameters
        ----------
        data_mean : Tensor (D,)
            The data's (weighted) mean.
        data_cov : Tensor (D, D)
            The data's covariance, ``n - 1`` denominator.
        n_samples : float
            Number (total weight) of samples.
        n_components : int
            ``G``: the default scale is ``G**(-2/D)`` times the data's.
        scale_shape : tuple
            ``()`` for a model with a scalar scale, ``(D, D)`` for a matrix
            (:meth:`~gaussmix.covariance.conjugate.ConjugateMStep.prior_scale_shape`).

        Returns
        -------
        PriorParams

        Raises
        ------
        ValueError
            If a given setting has the wrong shape, ``dof <= D - 1``, or the
            scale is not positive (definite).
        """
        d = int(data_mean.shape[0])
        self.check(d, scale_shape)
        mean64, cov64 = data_mean.detach().double().cpu(), data_cov.detach().double().cpu()
        shrinkage = DEFAULT_SHRINKAGE if self.shrinkage is None else float(self.shrinkage)
        mean = mean64 if self.mean is None else _array(self.mean, "mean")
        dof = float(d + 2) if self.dof is None else float(self.dof)
        if self.scale is None:
            factor = float(n_components) ** (-2.0 / d)
            if scale_shape == ():
                scale = factor * torch.diagonal(cov64).sum() / d
            elif n_samples > d:
                scale = factor * cov64
            else:  # the sample covariance is singular
                scale = factor * torch.diag(torch.diagonal(cov64))
            _check_default_scale(scale)
        else:
            scale = _check_scale(_array(self.scale, "scale"), scale_shape, d)
        return PriorParams(shrinkage, mean, dof, scale)

    def check(self, n_features: int, scale_shape: tuple) -> None:
        """Raise a ValueError unless the given settings fit ``n_features`` and
        a model whose scale has ``scale_shape`` (see :meth:`resolve`)."""
        d = n_features
        if self.mean is not None and tuple(_array(self.mean, "mean").shape) != (d,):
            raise ValueError(
                f"The prior's mean has shape {tuple(_array(self.mean, 'mean').shape)}; the data "
                f"have {d} features, so it must have shape ({d},)."
            )
        if self.dof is not None and not self.dof > d - 1:
            raise ValueError(
                f"The prior's dof must be > n_features - 1 = {d - 1} for a proper inverse-Wishart "
                f"prior, got {self.dof:g} (mclust's default: n_features + 2 = {d + 2})."
            )
        if self.scale is not None:
            _check_scale(_array(self.scale, "scale"), scale_shape, d)

    def to_json(self) -> dict:
        """The settings as JSON values (None for defaults, lists for arrays)."""
        def plain(v):
            if v is None or isinstance(v, (int, float)):
                return v
            return _array(v, "value").tolist()

        return {f: plain(getattr(self, f)) for f in _FIELDS}


def check_prior(value, covariance_type: str) -> "ConjugatePrior | None":
    """The settings an estimator's ``prior`` stands for, checked against its model.

    Parameters
    ----------
    value : None, bool, "default", mapping or ConjugatePrior
        See :meth:`ConjugatePrior.from_param`, which raises for an invalid one.
    covariance_type : str
        A model mclust has no prior for (VEE, EVE, VVE, EVV) raises a
        ValueError that names the models that have one.

    Returns
    -------
    ConjugatePrior or None
        None when ``value`` asks for no prior.
    """
    spec = ConjugatePrior.from_param(value)
    if spec is not None and not get_covariance_type(covariance_type).supports_prior:
        raise ValueError(
            f"mclust has no conjugate prior for covariance_type={covariance_type!r}; use "
            f"prior=None, or one of {list(PRIOR_MODELS)} (or scikit-learn's full, tied, diag, "
            f"spherical)."
        )
    return spec


def _check_default_scale(scale: torch.Tensor) -> None:
    """mclust's default scale must be positive (definite) for the prior to be
    proper; mclust itself stops in ``chol`` otherwise."""
    if scale.dim() == 0:
        if not float(scale) > 0:
            raise ValueError(
                "mclust's default prior scale (the data's mean variance) is 0: every feature is "
                "constant. Pass a positive scale in the prior, or fit data that vary."
            )
        return
    if int(torch.linalg.cholesky_ex(scale)[1]) != 0:
        raise ValueError(
            "mclust's default prior scale (the data's covariance times n_components**(-2/D)) is "
            "not positive definite: a feature is constant or the features are collinear. Drop "
            "or combine those features, or pass a positive-definite scale in the prior."
        )


def _check_scale(scale: torch.Tensor, shape: tuple, d: int) -> torch.Tensor:
    if shape == ():
        if scale.numel() != 1:
            raise ValueError(
                f"The prior's scale must be one positive number for this model (a spherical or "
                f"diagonal model), got shape {tuple(scale.shape)}."
            )
        scale = scale.reshape(())
        if not float(scale) > 0:
            raise ValueError(f"The prior's scale must be positive, got {float(scale):g}.")
        return scale
    if d == 1 and scale.numel() == 1:
        scale = scale.reshape(1, 1)
    if tuple(scale.shape) != (d, d):
        raise ValueError(
            f"The prior's scale must be a ({d}, {d}) symmetric positive-definite matrix for this "
            f"model, got shape {tuple(scale.shape)}."
        )
    if not bool(torch.allclose(scale, scale.T, rtol=1e-10, atol=0.0)):
        raise ValueError("The prior's scale is not symmetric; pass (A + A.T) / 2.")
    if int(torch.linalg.cholesky_ex(scale)[1]) != 0:
        raise ValueError(
            "The prior's scale is not positive definite: pass a symmetric matrix with positive "
            "eigenvalues (e.g. a multiple of the data's covariance)."
        )
    return scale


@dataclass(frozen=True, eq=False)
class PriorParams:
    """The conjugate prior's hyper-parameters for one fit (float64).

    Attributes
    ----------
    shrinkage : float
        ``kappa``.
    mean : Tensor (D,)
        ``mu_p``.
    dof : float
        ``nu``.
    scale : Tensor () or (D, D)
        ``Lambda``: a number for the spherical and diagonal models, a matrix
        for the others.
    """

    shrinkage: float
    mean: torch.Tensor
    dof: float
    scale: torch.Tensor

    def to(self, device) -> "PriorParams":
        """The same hyper-parameters with their tensors on ``device``."""
        return PriorParams(self.shrinkage, self.mean.to(device), self.dof, self.scale.to(device))

    def to_json(self) -> dict:
        """JSON values: numbers and (nested) lists."""
        return {"shrinkage": self.shrinkage, "mean": self.mean.cpu().tolist(), "dof": self.dof,
                "scale": self.scale.cpu().tolist()}

    @classmethod
    def from_json(cls, record: dict) -> "PriorParams":
        """Inverse of :meth:`to_json`."""
        return cls(float(record["shrinkage"]), torch.tensor(record["mean"], dtype=torch.float64),
                   float(record["dof"]), torch.tensor(record["scale"], dtype=torch.float64))


def prior_to_json(value):
    """An estimator's ``prior`` parameter as JSON (model files, checkpoints).

    None, booleans and strings stay; a mapping becomes ``{"mapping": ...}``
    and a :class:`ConjugatePrior` ``{"ConjugatePrior": ...}``, arrays as lists.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    spec = ConjugatePrior.from_param(value)
    key = "ConjugatePrior" if isinstance(value, ConjugatePrior) else "mapping"
    record = spec.to_json()
    if key == "mapping":
        record = {k: v for k, v in record.items() if k in value}
    return {key: record}


def prior_from_json(record):
    """Inverse of :func:`prior_to_json` (arrays come back as lists)."""
    if record is None or isinstance(record, (bool, str)):
        return record
    if isinstance(record, dict) and len(record) == 1:
        (key, value), = record.items()
        if key == "mapping" and isinstance(value, dict):
            return dict(value)
        if key == "ConjugatePrior" and isinstance(value, dict):
            return ConjugatePrior(**value)
    raise ValueError(f"not a stored prior setting: {record!r}")
