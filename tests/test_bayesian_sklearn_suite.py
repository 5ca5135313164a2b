"""scikit-learn's own BayesianGaussianMixture tests, run against ours.

Each test function of ``sklearn/mixture/tests/test_bayesian_mixture.py`` is
collected here with the module's ``BayesianGaussianMixture`` replaced by
:class:`gaussmix.BayesianGaussianMixture`.
"""

import pytest

sk_tests = pytest.importorskip("sklearn.mixture.tests.test_bayesian_mixture")

from _sklearn_suite import collect  # noqa: E402

from gaussmix import BayesianGaussianMixture  # noqa: E402

#: Tests of scikit-learn's private helpers, which have no counterpart here.
PRIVATE = {
    "test_log_dirichlet_norm": "tests sklearn's private _log_dirichlet_norm",
    "test_log_wishart_norm": "tests sklearn's private _log_wishart_norm",
    "test_compare_covar_type": "calls sklearn's private _check_parameters and _initialize_parameters",
}


@pytest.fixture(autouse=True)
def _ours(monkeypatch):
    monkeypatch.setattr(sk_tests, "BayesianGaussianMixture", BayesianGaussianMixture)


globals().update(collect(sk_tests, PRIVATE))
