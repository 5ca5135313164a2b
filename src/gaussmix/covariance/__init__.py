"""Covariance types as small strategy objects.

Each strategy knows, for one covariance structure, how many free parameters it
has, how a chunk of data adds to its second-moment statistic, how statistics
become covariances and precision Cholesky factors, and how to evaluate the
Gaussian log-density from those factors.  A registry maps the scikit-learn
names (``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``) and the names of
mclust's fourteen models (``"EII"`` ... ``"VVV"``, :mod:`.constrained`) to the
strategies; nothing else in the package branches on the covariance type.

Shapes follow scikit-learn (K components, D features):

=========== ============== ==================
type        covariances    precisions_cholesky
=========== ============== ==================
full        (K, D, D)      (K, D, D) upper
tied        (D, D)         (D, D) upper
diag        (K, D)         (K, D)
spherical   (K,)           (K,)
=========== ============== ==================

mclust's ``VII``, ``VVI``, ``EEE`` and ``VVV`` are the strategies of
spherical, diag, tied and full (their shapes); the other ten models have
``full``'s shapes.

Under mclust's conjugate prior (:mod:`gaussmix.prior`) the M-step is each
strategy's posterior mode (:mod:`.conjugate`), for the models of
:data:`PRIOR_MODELS`.
"""

from __future__ import annotations

from .base import (
    CHOLESKY_RETRIES,
    RETRY_FACTOR,
    CovarianceError,
    CovarianceType,
    CovarianceWarning,
)
from .diag import Diag
from .eei import EEI
from .eev import EEV
from .eii import EII
from .eve import EVE, VVE
from .evi import EVI
from .evv import EVV
from .vee import VEE
from .vei import VEI
from .vev import VEV
from .full import Full
from .matrices import row_sums, second_moment_outer, second_moment_weighted
from .spherical import Spherical
from .tied import Tied

__all__ = [
    "row_sums",
    "second_moment_outer",
    "second_moment_weighted",
    "CovarianceType",
    "COVARIANCE_TYPES",
    "MCLUST_MODELS",
    "PRIOR_MODELS",
    "MODELS",
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

#: scikit-learn's four covariance types.
COVARIANCE_TYPES: dict[str, CovarianceType] = {
    cls.name: cls() for cls in (Full, Tied, Diag, Spherical)
}

#: mclust's fourteen model names, in mclust's order.
MCLUST_MODELS = ("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE",
                 "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV")

_SAME = {"VII": "spherical", "VVI": "diag", "EEE": "tied", "VVV": "full"}

#: Every accepted name: scikit-learn's four, then mclust's fourteen (the four
#: scikit-learn models under their mclust names are the same strategies).
MODELS: dict[str, CovarianceType] = dict(COVARIANCE_TYPES)
for _cls in (EII, EEI, VEI, EVI, VEE, EVE, VVE, EEV, VEV, EVV):
    MODELS[_cls.name] = _cls()
for _name, _same in _SAME.items():
    MODELS[_name] = COVARIANCE_TYPES[_same]

#: mclust's models with its conjugate prior (:mod:`.conjugate`), in mclust's
#: order: all but VEE, EVE, VVE and EVV.
PRIOR_MODELS = tuple(m for m in MCLUST_MODELS if MODELS[m].supports_prior)


def get_covariance_type(name: str) -> CovarianceType:
    """Return the strategy for a covariance type name.

    Parameters
    ----------
    name : str
        One of scikit-learn's ``"full"``, ``"tied"``, ``"diag"``,
        ``"spherical"`` or mclust's model names (:data:`MCLUST_MODELS`).

    Returns
    -------
    CovarianceType

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Invalid covariance_type {name!r}: choose one of {sorted(COVARIANCE_TYPES)} "
            f"(scikit-learn's names) or {list(MCLUST_MODELS)} (mclust's)."
        ) from None
