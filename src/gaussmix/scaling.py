"""The affine map between the user's units and the units a fit runs in.

Model selection fits every covariance type on centred, rescaled data and maps
the parameters back, so that

* ``reg_covar`` is relative to each feature's variance: it regularises a
  feature measured in micrometres as much as the same feature in metres;
* shifting the data, or scaling a feature, changes neither the starts nor
  the fits, hence not the choice (only the log-likelihood, by the Jacobian
  ``-n * sum(log scale)``).

A type that is closed under per-feature scaling (full, tied, diag) is fitted
on standardised features; a spherical covariance only under one common
scale, so it is fitted on data divided by the root mean feature variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .params import GMMParams

__all__ = ["Scaling", "feature_scaling"]


@dataclass(frozen=True)
class Scaling:
    """``x_fit = (x - center) / scale``.

    Attributes
    ----------
    center : Tensor (D,)
    scale : Tensor (D,)
        Positive; all entries equal for a uniform scaling.
    """

    center: torch.Tensor
    scale: torch.Tensor

    def to_fit(self, X: torch.Tensor) -> torch.Tensor:
        """Data in the fitting units (same dtype and device as ``X``)."""
        return ((X.double() - self.center) / self.scale).to(X.dtype)

    def to_user(self, params: GMMParams) -> GMMParams:
        """Parameters fitted in the fitting units, in the user's units (float64)."""
        p = params.to(dtype=torch.float64)
        covs, prec = p.cov.rescaled(p.get_covariances(), p.precisions_cholesky, self.scale)
        return GMMParams(
            weights=p.weights,
            means=p.means * self.scale + self.center,
            precisions_cholesky=prec,
            covariance_type=p.covariance_type,
            covariances=covs,
        )

    def log_jacobian(self, n_samples: int) -> float:
        """``log L_user - log L_fit`` for ``n_samples`` points."""
        return -n_samples * float(torch.log(self.scale).sum())


def feature_scaling(X: torch.Tensor, per_feature: bool) -> Scaling:
    """The centring and scaling of :mod:`gaussmix.scaling` for ``X``.

    Parameters
    ----------
    X : Tensor (N, D)
    per_feature : bool
        Standardise each feature (else one common scale, the root mean
        feature variance).

    Returns
    -------
    Scaling
        A feature without spread (constant up to rounding) keeps scale 1.
    """
    x = X.double()
    center = x.mean(0)
    var = ((x - center) ** 2).mean(0)
    mag = x.abs().amax(0)
    # Spread below rounding of the magnitude: a constant feature.
    varying = var > (1e-12 * mag.clamp_min(1e-300)) ** 2
    varying &= var > 0
    if per_feature:
        scale = torch.where(varying, torch.sqrt(var), torch.ones_like(var))
    else:
        common = float(var[varying].mean()) if bool(varying.any()) else 1.0
        scale = torch.full_like(var, math.sqrt(common))
    return Scaling(center, scale)
