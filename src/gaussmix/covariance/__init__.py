"""Covariance types as small strategy objects.

Each strategy knows, for one covariance structure, how many free parameters it
has, how a chunk of data adds to its second-moment statistic, how statistics
become covariances and precision Cholesky factors, and how to evaluate the
Gaussian log-density from those factors.  A registry maps the scikit-learn
names (``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``) to the strategies;
nothing else in the package branches on the covariance type.

Shapes follow scikit-learn (K components, D features):

=========== ============== ==================
type        covariances    precisions_cholesky
=========== ============== ==================
full        (K, D, D)      (K, D, D) upper
tied        (D, D)         (D, D) upper
diag        (K, D)         (K, D)
spherical   (K,)           (K,)
=========== ============== ==================
"""

from __future__ import annotations

from .base import (
    CHOLESKY_RETRIES,
    RETRY_FACTOR,
    CovarianceError,
    CovarianceType,
    CovarianceWarning,
    row_sums,
    second_moment_outer,
    second_moment_weighted,
)
from .diag import Diag
from .full import Full
from .spherical import Spherical
from .tied import Tied

__all__ = [
    "row_sums",
    "second_moment_outer",
    "second_moment_weighted",
    "CovarianceType",
    "COVARIANCE_TYPES",
    "get_covariance_type",
    "CovarianceError",
    "CovarianceWarning",
    "CHOLESKY_RETRIES",
    "RETRY_FACTOR",
    "Full",
    "Tied",
    "Diag",
    "Spherical",
]

COVARIANCE_TYPES: dict[str, CovarianceType] = {
    cls.name: cls() for cls in (Full, Tied, Diag, Spherical)
}


def get_covariance_type(name: str) -> CovarianceType:
    """Return the strategy for a covariance type name.

    Parameters
    ----------
    name : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    CovarianceType

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    try:
        return COVARIANCE_TYPES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Invalid covariance_type {name!r}: choose one of {sorted(COVARIANCE_TYPES)}."
        ) from None
