"""Stepwise (online) EM through partial_fit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from gaussmix import GaussianMixture
from gaussmix.online import step_size

pytestmark = pytest.mark.usefixtures("single_thread")

MEANS = np.array([[0.0, 0.0], [3.0, 1.0], [0.0, 4.0]])
WEIGHTS = np.array([0.5, 0.3, 0.2])
COVS = np.array([[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 0.8]], [[1.5, -0.3], [-0.3, 0.6]]])



def _draw(rng, n):
    z = rng.choice(3, size=n, p=WEIGHTS)
    return MEANS[z] + np.einsum("nij,nj->ni", np.linalg.cholesky(COVS)[z], rng.normal(size=(n, 2)))


def _true_mean_loglik(X):
    dens = sum(w * multivariate_normal(m, c).pdf(X) for w, m, c in zip(WEIGHTS, MEANS, COVS))
    return float(np.log(dens).mean())


def test_stream_approaches_the_batch_fit():
    rng = np.random.default_rng(5)
    batches = [_draw(rng, 200) for _ in range(200)]
    test = _draw(rng, 20000)
    batch_fit = GaussianMixture(3, random_state=0).fit(np.concatenate(batches))
    target = batch_fit.score(test)
    # The batch fit itself is close to the truth (scipy densities of the true mixture).
    assert abs(target - _true_mean_loglik(test)) < 0.005
    online = GaussianMixture(3, random_state=0)
    gaps = []
    for i, b in enumerate(batches):
        online.partial_fit(b)
        if i in (0, len(batches) - 1):
            gaps.append(target - online.score(test))
    assert gaps[0] > 0.03  # after one batch the model is clearly worse...
    assert abs(gaps[1]) < 0.005  # ...after the stream it is within 0.005 nats per sample
    assert online.n_iter_ == len(batches) and not online.converged_
    order = np.argsort(online.means_[:, 0] + 10 * online.means_[:, 1])
    np.testing.assert_allclose(online.means_[order], MEANS[np.argsort(MEANS[:, 0] + 10 * MEANS[:, 1])], atol=0.1)


def _sk_one_step(X, weights, means, precisions, cov_type="full"):
    sk = SkGaussianMixture(
        len(weights), covariance_type=cov_type, max_iter=1, weights_init=weights,
        means_init=means, precisions_init=precisions,
    )
    with pytest.warns(Warning):  # one iteration does not converge
        sk.fit(X)
    return sk


@pytest.mark.parametrize("cov_type", ["full", "tied", "diag", "spherical"])
def test_first_batches_are_em_steps(cov_type):
    rng = np.random.default_rng(1)
    X1, X2 = _draw(rng, 300), _draw(rng, 250)
    prec = {"full": np.stack([np.eye(2)] * 3), "tied": np.eye(2), "diag": np.ones((3, 2)),
            "spherical": np.ones(3)}[cov_type]
    init = dict(weights_init=np.full(3, 1 / 3), means_init=MEANS + 0.5, precisions_init=prec)
    # learning_offset=0, learning_decay=1: eta_1 = 1, so the second batch replaces the first.
    gm = GaussianMixture(3, covariance_type=cov_type, learning_decay=1.0, learning_offset=0.0, **init)
    gm.partial_fit(X1)
    sk = _sk_one_step(X1, init["weights_init"], init["means_init"], prec, cov_type)
    np.testing.assert_allclose(gm.means_, sk.means_, rtol=1e-10)
    np.testing.assert_allclose(gm.covariances_, sk.covariances_, rtol=1e-10)
    gm.partial_fit(X2)
    sk2 = _sk_one_step(X2, sk.weights_, sk.means_, sk.precisions_, cov_type)
    np.testing.assert_allclose(gm.weights_, sk2.weights_, rtol=1e-10)
    np.testing.assert_allclose(gm.means_, sk2.means_, rtol=1e-10)
    np.testing.assert_allclose(gm.covariances_, sk2.covariances_, rtol=1e-10)


def test_step_blends_statistics():
    # eta = 1/2 with equal batches: the running statistics are the average of the two
    # batches' statistics, i.e. those of their union when both E-steps use the same
    # parameters.  With a single component every E-step is the same (resp = 1).
    rng = np.random.default_rng(2)
    X1, X2 = rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) * 2 + 1
    gm = GaussianMixture(1, learning_decay=1.0, learning_offset=1.0, reg_covar=0.0)
    gm.partial_fit(X1).partial_fit(X2)
    both = np.concatenate([X1, X2])
    np.testing.assert_allclose(gm.means_[0], both.mean(0), rtol=1e-12)
    np.testing.assert_allclose(gm.covariances_[0], np.cov(both.T, bias=True), rtol=1e-10)


def test_partial_fit_after_fit_and_weights():
    rng = np.random.default_rng(3)
    X = _draw(rng, 2000)
    gm = GaussianMixture(3, random_state=0).fit(X)
    before = gm.means_.copy()
    gm.partial_fit(_draw(rng, 500), sample_weight=rng.uniform(0.5, 1.5, 500))
    assert gm.n_iter_ == 1
    assert np.abs(gm.means_ - before).max() < 0.3  # continued from the fitted model
    # A weight of 2 counts as two copies.
    Y = _draw(rng, 50)
    init = dict(weights_init=[0.5, 0.5], means_init=MEANS[:2], precisions_init=np.stack([np.eye(2)] * 2))
    a = GaussianMixture(2, **init).partial_fit(Y, sample_weight=np.full(50, 2.0))
    b = GaussianMixture(2, **init).partial_fit(np.concatenate([Y, Y]))
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-10)


def test_step_size_schedule_and_bad_parameters():
    assert step_size(1, 0.6, 2.0) == pytest.approx(3.0**-0.6)
    etas = np.array([step_size(t, 0.6, 2.0) for t in range(1, 10_000)])
    assert np.all(np.diff(etas) < 0) and np.all((0 < etas) & (etas <= 1))
    X = np.random.default_rng(0).normal(size=(50, 2))
    for bad in (0.5, 1.5, 0.0):
        with pytest.raises(ValueError, match="learning_decay"):
            GaussianMixture(2, learning_decay=bad).partial_fit(X)
    with pytest.raises(ValueError, match="learning_offset"):
        GaussianMixture(2, learning_offset=-1.0).partial_fit(X)
    with pytest.raises(ValueError, match="first batch"):
        GaussianMixture(5).partial_fit(X[:3])
    gm = GaussianMixture(2, random_state=0).partial_fit(X)
    with pytest.raises(ValueError, match="features"):
        gm.partial_fit(X[:, :1])
