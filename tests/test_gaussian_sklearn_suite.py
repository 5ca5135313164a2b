"""scikit-learn's own GaussianMixture tests, run against ours.

Each test function of ``sklearn/mixture/tests/test_gaussian_mixture.py`` is
collected here with the module's ``GaussianMixture`` replaced by
:class:`gaussmix.GaussianMixture`. Tests of scikit-learn's private helpers or
private attributes are skipped, each with its reason; the last two tests here
check, through public parameters, what two of the skipped ones check.
"""

import numpy as np
import pytest

sk_tests = pytest.importorskip("sklearn.mixture.tests.test_gaussian_mixture")

from _sklearn_suite import collect  # noqa: E402

from gaussmix import GaussianMixture  # noqa: E402

_HELPER = "tests sklearn's private {} only (never builds a GaussianMixture)"

#: Tests of scikit-learn's private helpers or private attributes.
PRIVATE = {
    "test_compute_log_det_cholesky": _HELPER.format("_compute_log_det_cholesky"),
    "test_gaussian_mixture_log_probabilities": _HELPER.format("_estimate_log_gaussian_prob"),
    "test_gaussian_suffstat_sk_spherical": _HELPER.format("_estimate_gaussian_covariances_*"),
    "test_suffstat_sk_diag": _HELPER.format("_estimate_gaussian_covariances_*"),
    "test_suffstat_sk_full": _HELPER.format("_estimate_gaussian_covariances_*"),
    "test_suffstat_sk_tied": _HELPER.format("_estimate_gaussian_covariances_*"),
    "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters":
        "mocks sklearn's private _estimate_gaussian_parameters",
    "test_gaussian_mixture_precisions_init":
        "calls sklearn's private _initialize(X, resp); see test_precisions_init_is_used below",
    "test_gaussian_mixture_precisions_init_diag":
        "builds precisions_init from sklearn's KMeans labels and private "
        "_estimate_gaussian_parameters, so it assumes sklearn's component order; "
        "see test_precisions_init_of_the_own_start_changes_nothing below",
}

#: Single parametrisations skipped, with the reason (scikit-learn itself runs
#: its float32 cases only behind SKLEARN_RUN_FLOAT32_TESTS).
CASES = {
    "test_score[float32]": "score() averages the float32 log-densities in float64; "
                           "scikit-learn averages in float32, so the two differ by "
                           "float32 rounding (~3e-7)",
}

#: Real drop-in gaps not fixed yet (strict: passing makes this module fail).
GAPS = {
    "test_regularisation": "with reg_covar=0 on collapsed data scikit-learn raises; gaussmix "
                           "adds the smallest regularisation that factorises the covariance "
                           "and warns (CovarianceWarning, docs/RELIABILITY.md)",
}


@pytest.fixture(autouse=True)
def _ours(monkeypatch, request):
    if request.node.name in CASES:
        pytest.skip(CASES[request.node.name])
    monkeypatch.setattr(sk_tests, "GaussianMixture", GaussianMixture)


# scikit-learn's conftest provides these two fixtures; its defaults are seed 42
# and float64 (float32 behind an environment variable); both dtypes run here.
@pytest.fixture
def global_random_seed():
    return 42


@pytest.fixture(params=[np.float32, np.float64])
def global_dtype(request):
    return request.param


globals().update(collect(sk_tests, PRIVATE, GAPS))


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_precisions_init_is_used(covariance_type, monkeypatch):
    """precisions_init becomes precisions_cholesky_ as sklearn's test helper computes it."""
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    # the helper needs scikit-learn's own estimator (it calls _set_parameters)
    monkeypatch.setattr(sk_tests, "GaussianMixture", SkGaussianMixture)
    X, resp = sk_tests._generate_data(seed=42, n_samples=100, n_features=3, n_components=4)
    precisions, want = sk_tests._calculate_precisions(X, resp, covariance_type)
    gm = GaussianMixture(4, covariance_type=covariance_type, precisions_init=precisions,
                         max_iter=0).fit(X)
    np.testing.assert_allclose(gm.precisions_cholesky_, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_precisions_init_of_the_own_start_changes_nothing(covariance_type):
    """Giving the start's own precisions as precisions_init gives the same fit."""
    X, _ = sk_tests._generate_data(seed=42, n_samples=100, n_features=3, n_components=4)
    kw = dict(n_components=4, covariance_type=covariance_type, random_state=0)
    start = GaussianMixture(max_iter=0, **kw).fit(X)
    plain = GaussianMixture(**kw).fit(X)
    given = GaussianMixture(precisions_init=start.precisions_, **kw).fit(X)
    assert given.n_iter_ == plain.n_iter_
    np.testing.assert_allclose(given.precisions_cholesky_, plain.precisions_cholesky_,
                               rtol=1e-9, atol=1e-12)
