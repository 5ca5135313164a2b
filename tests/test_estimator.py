"""Estimator behaviour: weights, chunking, monotonicity, reproducibility, I/O types."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from gaussmix import GaussianMixture
from gaussmix.em import accumulate
from gaussmix.data import iter_chunks

COV_TYPES = ["full", "tied", "diag", "spherical"]
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _init_kw(X, k, cov_type):
    g = GaussianMixture(k, covariance_type=cov_type, max_iter=1, random_state=3).fit(X)
    return dict(weights_init=g.weights_, means_init=g.means_, precisions_init=g.precisions_)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_integer_sample_weights_equal_repeated_rows(blobs, cov_type):
    rng = np.random.default_rng(1)
    w = rng.integers(0, 4, size=len(blobs))
    X_rep = np.repeat(blobs, w, axis=0)
    kw = dict(n_components=3, covariance_type=cov_type, tol=0, max_iter=15, **_init_kw(blobs, 3, cov_type))
    a = GaussianMixture(**kw).fit(blobs, sample_weight=w)
    b = GaussianMixture(**kw).fit(X_rep)
    for attr in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(a, attr), getattr(b, attr), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-10)


def test_kmeans_init_with_weights_matches_repetition_on_separated_data(blobs):
    """Weighted k-means init finds the same clusters as k-means on repeated rows."""
    w = np.full(len(blobs), 2)
    a = GaussianMixture(3, random_state=0).fit(blobs, sample_weight=w)
    b = GaussianMixture(3, random_state=0).fit(np.repeat(blobs, 2, axis=0))
    order_a, order_b = np.argsort(a.means_[:, 0]), np.argsort(b.means_[:, 0])
    np.testing.assert_allclose(a.means_[order_a], b.means_[order_b], atol=1e-6)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_chunking_does_not_change_anything(blobs, cov_type):
    kw = dict(n_components=3, covariance_type=cov_type, tol=0, max_iter=10, **_init_kw(blobs, 3, cov_type))
    one = GaussianMixture(**kw).fit(blobs)
    many = GaussianMixture(**kw, batch_size=37).fit(blobs)
    np.testing.assert_allclose(many.means_, one.means_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(many.covariances_, one.covariances_, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(many.predict_proba(blobs), one.predict_proba(blobs), atol=1e-12)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_chunk_statistics_add_up(blobs, cov_type):
    gm = GaussianMixture(3, covariance_type=cov_type, max_iter=2, random_state=0).fit(blobs)
    X = torch.from_numpy(blobs)
    whole = accumulate(iter_chunks(X, None, len(X)), gm.params_)
    parts = accumulate(iter_chunks(X, None, 11), gm.params_)
    for a, b in zip(whole.flatten(), parts.flatten()):
        assert torch.isclose(a, b, rtol=1e-12, atol=1e-10)
    assert float(whole.count) == len(blobs)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_log_likelihood_never_decreases(blobs, cov_type):
    gm = GaussianMixture(4, covariance_type=cov_type, warm_start=True, max_iter=1,
                         init_params="random", random_state=0, reg_covar=1e-6)
    lls = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(100):
            gm.fit(blobs)
            lls.append(gm.lower_bound_)
    lls = np.array(lls)
    drops = lls[:-1] - lls[1:]
    assert np.all(drops <= 1e-12 * np.abs(lls[1:])), drops.max()
    assert lls[-1] > lls[0]


def test_random_state_reproducible(blobs):
    a = GaussianMixture(3, n_init=3, init_params="k-means++", random_state=7).fit(blobs)
    b = GaussianMixture(3, n_init=3, init_params="k-means++", random_state=7).fit(blobs)
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.sample(50)[0], b.sample(50)[0])


def test_fit_predict_equals_predict(blobs):
    gm = GaussianMixture(3, random_state=0)
    labels = gm.fit_predict(blobs)
    np.testing.assert_array_equal(labels, gm.predict(blobs))


def test_score_samples_matches_scipy(blobs):
    gm = GaussianMixture(3, random_state=0).fit(blobs)
    dens = sum(w * multivariate_normal(m, c).pdf(blobs) for w, m, c in zip(gm.weights_, gm.means_, gm.covariances_))
    np.testing.assert_allclose(gm.score_samples(blobs), np.log(dens), rtol=1e-10)


def test_tensor_in_tensor_out(blobs):
    X = torch.from_numpy(blobs).float()
    gm = GaussianMixture(3, random_state=0).fit(X)
    assert isinstance(gm.means_, torch.Tensor) and gm.means_.dtype == torch.float32
    for out in (gm.predict(X), gm.predict_proba(X), gm.score_samples(X), gm.sample(5)[0]):
        assert isinstance(out, torch.Tensor) and out.device == X.device
    # numpy in -> numpy out even from a tensor-fitted model
    assert isinstance(gm.predict(blobs), np.ndarray)
    ref = GaussianMixture(3, random_state=0).fit(blobs)
    assert abs(gm.score(blobs) - ref.score(blobs)) < 1e-3 * abs(ref.score(blobs))


def test_dtype_parameter(blobs):
    gm = GaussianMixture(2, dtype="float32", random_state=0).fit(blobs)
    assert gm.means_.dtype == np.float32
    gm = GaussianMixture(2, random_state=0).fit(blobs.astype(np.float32))
    assert gm.means_.dtype == np.float32
    gm = GaussianMixture(2, random_state=0).fit(blobs.astype(np.int64))
    assert gm.means_.dtype == np.float64


def test_float32_close_to_float64(blobs):
    kw = dict(n_components=3, tol=0, max_iter=30, **_init_kw(blobs, 3, "full"))
    a = GaussianMixture(**kw).fit(blobs)
    b = GaussianMixture(**kw, dtype="float32").fit(blobs)
    assert abs(a.lower_bound_ - b.lower_bound_) < 1e-6 * abs(a.lower_bound_)


def test_pandas_feature_names(blobs):
    df = pd.DataFrame(blobs, columns=["a", "b", "c"])
    gm = GaussianMixture(3, random_state=0).fit(df)
    np.testing.assert_array_equal(gm.feature_names_in_, ["a", "b", "c"])
    assert gm.predict(df).shape == (len(df),)


def test_sample_statistics(blobs):
    gm = GaussianMixture(3, random_state=0).fit(blobs)
    X, y = gm.sample(20000)
    assert X.shape == (20000, 3) and np.all(np.diff(y) >= 0)
    for k in range(3):
        assert abs(np.mean(y == k) - gm.weights_[k]) < 0.02
        np.testing.assert_allclose(X[y == k].mean(0), gm.means_[k], atol=0.1)
        np.testing.assert_allclose(np.cov(X[y == k].T), gm.covariances_[k], atol=0.15)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_torch_distribution(blobs, cov_type):
    gm = GaussianMixture(3, covariance_type=cov_type, random_state=0).fit(blobs)
    dist = gm.to_torch_distribution()
    lp = dist.log_prob(torch.from_numpy(blobs)).numpy()
    np.testing.assert_allclose(lp, gm.score_samples(blobs), rtol=1e-9)


def test_warm_start_continues(blobs):
    gm = GaussianMixture(3, warm_start=True, max_iter=2, tol=0, random_state=0).fit(blobs)
    first = gm.lower_bounds_[-1]
    gm.fit(blobs)
    assert gm.lower_bounds_[0] >= first - 1e-12


def test_not_fitted():
    with pytest.raises(NotFittedError):
        GaussianMixture().predict(np.zeros((3, 2)))


def test_bic_aic_closed_form(blobs):
    gm = GaussianMixture(2, covariance_type="diag", random_state=0).fit(blobs)
    n, d = blobs.shape
    p = 2 * d + 2 * d + 1
    ll = gm.score(blobs) * n
    assert np.isclose(gm.bic(blobs), -2 * ll + p * np.log(n))
    assert np.isclose(gm.aic(blobs), -2 * ll + 2 * p)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(n_components=0), "n_components"),
        (dict(covariance_type="banana"), "covariance_type"),
        (dict(tol=-1), "tol"),
        (dict(reg_covar=-1e-3), "reg_covar"),
        (dict(max_iter=-1), "max_iter"),
        (dict(n_init=0), "n_init"),
        (dict(init_params="nope"), "init_params"),
        (dict(dtype="float16"), "float32 or float64"),
        (dict(device="cuda"), "CUDA is not available"),
    ],
)
def test_bad_hyperparameters(blobs, kwargs, match):
    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA exists on this machine, so device='cuda' is valid")
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**kwargs).fit(blobs)


@pytest.mark.parametrize(
    "X,match",
    [
        (np.zeros(5), "2D array"),
        (np.array([[1.0, np.nan], [0.0, 1.0], [2.0, 2.0]]), "NaN"),
        (np.array([[1.0, np.inf], [0.0, 1.0], [2.0, 2.0]]), "infinity"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "NaN"),
        (np.zeros((2, 2)), "n_samples >= n_components"),
    ],
)
def test_bad_data(X, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(3).fit(X)


def test_bad_sample_weight(blobs):
    with pytest.raises(ValueError, match="Negative"):
        GaussianMixture(2).fit(blobs, sample_weight=-np.ones(len(blobs)))
    with pytest.raises(ValueError, match="sums to zero"):
        GaussianMixture(2).fit(blobs, sample_weight=np.zeros(len(blobs)))
    with pytest.raises(ValueError, match="expected"):
        GaussianMixture(2).fit(blobs, sample_weight=np.ones(3))


def test_feature_mismatch_at_predict(blobs):
    gm = GaussianMixture(2, random_state=0).fit(blobs)
    with pytest.raises(ValueError, match="features"):
        gm.predict(blobs[:, :2])
    with pytest.raises(ValueError, match="features"):
        gm.predict(torch.from_numpy(blobs[:, :2]))


def test_collapsed_covariance_is_rescued_with_a_warning():
    """Three repeated points with reg_covar=0: scikit-learn raises; we regularise, warn, and stay finite."""
    from gaussmix.covariance import CovarianceWarning

    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]), 10, axis=0)
    with pytest.warns(CovarianceWarning, match="reg"):
        gm = GaussianMixture(3, reg_covar=0, random_state=0).fit(X)
    assert np.all(np.isfinite(gm.covariances_)) and np.isfinite(gm.score(X))
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]), [0.0, 1.0, 5.0], atol=1e-9)
