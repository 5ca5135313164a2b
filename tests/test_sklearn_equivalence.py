"""Fits equal scikit-learn's GaussianMixture from the same initial parameters (float64)."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGM

from gaussmix import GaussianMixture

COV_TYPES = ["full", "tied", "diag", "spherical"]


def _initial(X, k, cov_type, seed=1):
    """Initial parameters from a short independent scikit-learn run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SkGM(k, covariance_type=cov_type, max_iter=2, random_state=seed).fit(X)
    return dict(weights_init=sk.weights_, means_init=sk.means_, precisions_init=sk.precisions_)


def _rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_same_fit_as_sklearn(blobs, cov_type):
    X = blobs
    init = _initial(X, 3, cov_type)
    kw = dict(n_components=3, covariance_type=cov_type, tol=0, max_iter=25, **init)
    sk = SkGM(**kw).fit(X)
    gm = GaussianMixture(**kw).fit(X)
    for attr in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        assert _rel(getattr(gm, attr), getattr(sk, attr)) < 1e-8, attr
    assert gm.n_iter_ == sk.n_iter_ == 25
    assert abs(gm.lower_bound_ - sk.lower_bound_) <= 1e-8 * abs(sk.lower_bound_)
    np.testing.assert_allclose(gm.lower_bounds_, sk.lower_bounds_, rtol=1e-8)
    assert abs(gm.score(X) - sk.score(X)) <= 1e-8 * abs(sk.score(X))
    assert abs(gm.bic(X) - sk.bic(X)) <= 1e-8 * abs(sk.bic(X))
    assert abs(gm.aic(X) - sk.aic(X)) <= 1e-8 * abs(sk.aic(X))
    np.testing.assert_allclose(gm.score_samples(X), sk.score_samples(X), rtol=1e-8)
    np.testing.assert_allclose(gm.predict_proba(X), sk.predict_proba(X), atol=1e-8)
    np.testing.assert_array_equal(gm.predict(X), sk.predict(X))
    assert gm._n_parameters() == sk._n_parameters()


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_converges_like_sklearn(blobs, cov_type):
    """With a tolerance, both stop at the same iteration."""
    init = _initial(blobs, 3, cov_type)
    kw = dict(n_components=3, covariance_type=cov_type, tol=1e-6, max_iter=500, **init)
    sk = SkGM(**kw).fit(blobs)
    gm = GaussianMixture(**kw).fit(blobs)
    assert gm.converged_ and sk.converged_
    assert gm.n_iter_ == sk.n_iter_
    assert _rel(gm.means_, sk.means_) < 1e-8


@pytest.mark.parametrize("cov_type", COV_TYPES)
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random_from_data"])
def test_every_init_reaches_a_sklearn_quality_fit(blobs, cov_type, init_params):
    """Different random streams, same quality: the log-likelihood is as good as scikit-learn's."""
    gm = GaussianMixture(3, covariance_type=cov_type, init_params=init_params, n_init=3,
                         random_state=0, max_iter=1000, tol=1e-7).fit(blobs)
    sk = SkGM(3, covariance_type=cov_type, init_params=init_params, n_init=3,
              random_state=0, max_iter=1000, tol=1e-7).fit(blobs)
    assert gm.score(blobs) >= sk.score(blobs) - 1e-3


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_random_init_starts_near_the_data_mean(blobs):
    """'random' responsibilities are uniform draws, so each initial mean is a
    random convex average of all points: close to the data mean, weights near 1/K."""
    gm = GaussianMixture(4, init_params="random", max_iter=0, random_state=0).fit(blobs)
    spread = blobs.std(0) / np.sqrt(len(blobs))
    assert np.all(np.abs(gm.means_ - blobs.mean(0)) < 6 * spread)
    np.testing.assert_allclose(gm.weights_, 0.25, atol=0.05)
    assert gm.n_iter_ == 0


def test_n_parameters_counts():
    """Closed forms: full K*D*(D+1)/2, tied D*(D+1)/2, diag K*D, spherical K covariance parameters."""
    X = np.random.default_rng(0).normal(size=(60, 4))
    k, d = 3, 4
    expected_cov = {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d, "spherical": k}
    for ct, n_cov in expected_cov.items():
        gm = GaussianMixture(k, covariance_type=ct, random_state=0).fit(X)
        assert gm._n_parameters() == n_cov + k * d + k - 1
