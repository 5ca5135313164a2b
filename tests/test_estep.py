"""The seed function gmm_e_step against scipy, and its input checks."""

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from gaussmix import gmm_e_step


def _reference(X, weights, means, covs):
    logp = np.column_stack([
        np.log(w) + multivariate_normal(m, c).logpdf(X) for w, m, c in zip(weights, means, covs)
    ])
    return np.exp(logp - logsumexp(logp, axis=1, keepdims=True))


def _random_problem(rng, n, d, k):
    X = rng.normal(size=(n, d)) * 2
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(size=(k, d)) * 2
    A = rng.normal(size=(k, d, d))
    covs = A @ A.transpose(0, 2, 1) + 0.5 * np.eye(d)
    return X, weights, means, covs


@pytest.mark.parametrize("n,d,k", [(1, 1, 1), (50, 2, 3), (200, 5, 4), (30, 8, 7)])
def test_matches_scipy(n, d, k):
    rng = np.random.default_rng(n + d + k)
    X, w, m, c = _random_problem(rng, n, d, k)
    r = gmm_e_step(X, w, m, c)
    assert isinstance(r, np.ndarray) and r.shape == (n, k)
    np.testing.assert_allclose(r, _reference(X, w, m, c), atol=1e-6, rtol=0)
    np.testing.assert_allclose(r.sum(1), 1.0, atol=1e-12)
    assert np.all(r >= 0)


def test_seed_example_and_lists():
    r = gmm_e_step([[0, 0], [5, 5]], [0.5, 0.5], [[0, 0], [5, 5]], [np.eye(2).tolist()] * 2)
    np.testing.assert_allclose(r, [[1, 0], [0, 1]], atol=1e-6)


def test_point_at_mean_goes_to_that_component():
    means = np.array([[0.0, 0.0], [3.0, 3.0], [-4.0, 2.0]])
    r = gmm_e_step(means, np.ones(3) / 3, means, np.stack([np.eye(2) * 0.2] * 3))
    assert np.all(np.diag(r) > 0.999)


def test_equidistant_point_splits_evenly():
    r = gmm_e_step([[0.0, 0.0]], [0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [np.eye(2)] * 2)
    np.testing.assert_allclose(r, [[0.5, 0.5]], atol=1e-12)


def test_higher_weight_attracts_responsibility():
    args = ([[0.0, 0.0]], [[-1.0, 0.0], [1.0, 0.0]], [np.eye(2)] * 2)
    r = gmm_e_step(args[0], [0.8, 0.2], args[1], args[2])
    assert r[0, 0] > 0.5 > r[0, 1]
    np.testing.assert_allclose(r[0, 0], 0.8, atol=1e-12)  # equal densities: posterior = prior


def test_far_point_is_valid_not_nan():
    # 1e3 standard deviations from every mean: densities underflow, log space does not.
    X = np.array([[1e3, -1e3], [-2e3, 5e2]])
    w = np.array([0.3, 0.7])
    m = np.array([[0.0, 0.0], [1.0, 1.0]])
    c = np.stack([np.eye(2), np.eye(2) * 2.0])
    r = gmm_e_step(X, w, m, c)
    assert np.all(np.isfinite(r))
    np.testing.assert_allclose(r.sum(1), 1.0)
    np.testing.assert_allclose(r, _reference(X, w, m, c), atol=1e-6)


def test_zero_weight_component_gets_nothing():
    r = gmm_e_step([[0.0], [1.0]], [1.0, 0.0], [[0.0], [1.0]], [[[1.0]], [[1.0]]])
    np.testing.assert_array_equal(r[:, 1], 0.0)
    np.testing.assert_allclose(r[:, 0], 1.0)


_GOOD = dict(X=np.zeros((2, 2)), weights=[0.5, 0.5], means=np.zeros((2, 2)), covariances=np.stack([np.eye(2)] * 2))


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(X=np.zeros(4)), "'X' must be 2-dimensional"),
        (dict(X=[[np.nan, 0.0]]), "'X' contains NaN"),
        (dict(means=np.zeros((3, 2))), "'means' must have shape"),
        (dict(means=np.zeros((2, 3))), "'means' must have shape"),
        (dict(covariances=np.stack([np.eye(3)] * 2)), "'covariances' must have shape"),
        (dict(weights=[1.5, -0.5]), "'weights' must be non-negative"),
        (dict(weights=[0.5, 0.4]), "'weights' must sum to 1"),
        (dict(weights=[0.5, np.inf]), "'weights' contains NaN or infinity"),
        (dict(covariances=np.stack([np.eye(2), [[1.0, 2.0], [0.0, 1.0]]])), "'covariances' should be symmetric, positive-definite: it is not symmetric"),
        (dict(covariances=np.stack([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])), "'covariances' should be symmetric, positive-definite"),
        (dict(X=[["a", "b"]]), "'X' must be a numeric"),
    ],
)
def test_invalid_input(change, match):
    args = {**_GOOD, **change}
    with pytest.raises(ValueError, match=match):
        gmm_e_step(**args)
