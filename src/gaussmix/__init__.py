"""gaussmix: Gaussian mixture models fitted by EM on PyTorch."""

from .bayesian import BayesianGaussianMixture
from .covariance import COVARIANCE_TYPES, CovarianceError, CovarianceWarning
from .em import EmptyComponentWarning
from .estep import gmm_e_step
from .estimator import GaussianMixture
from .io import load
from .params import GMMParams
from .selection import select_model

__version__ = "0.1.0"

__all__ = [
    "BayesianGaussianMixture",
    "COVARIANCE_TYPES",
    "CovarianceError",
    "CovarianceWarning",
    "EmptyComponentWarning",
    "GMMParams",
    "GaussianMixture",
    "gmm_e_step",
    "load",
    "select_model",
    "__version__",
]
