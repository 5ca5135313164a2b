"""Only relative sample weights matter: ``c * w`` fits like ``w``.

The truth is the fit with ``w`` itself (a property, not a stored value); the
unit-weight fit is in turn tested equal to scikit-learn elsewhere.
"""

import numpy as np
import pytest
import torch

from gaussmix import GaussianMixture
from gaussmix.em import accumulate, m_step
from gaussmix.params import GMMParams

SCALES = [2.0 ** -1000, 1e-300, 1e-20, 1e-12, 3.0, 1e20, 1e300]
ATTRS = ("weights_", "means_", "covariances_")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(150, 2)), rng.normal(size=(150, 2)) * 0.5 + 4]
    w = rng.uniform(0.1, 2.0, size=len(X))
    return X, w


def _close(a, b, rtol=1e-10, atol=1e-12):
    for name in ATTRS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=atol,
                                   err_msg=name)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random"])
def test_fit_is_invariant_to_the_scale_of_the_weights(data, covariance_type, init_params):
    X, w = data
    kw = dict(covariance_type=covariance_type, init_params=init_params, random_state=0)
    ref = GaussianMixture(2, **kw).fit(X, sample_weight=w)
    for c in SCALES:
        _close(GaussianMixture(2, **kw).fit(X, sample_weight=c * w), ref)


@pytest.mark.parametrize("c", [2.0 ** -1000, 2.0 ** -60, 2.0 ** 900])
def test_powers_of_two_give_bit_identical_fits(data, c):
    X, w = data
    ref = GaussianMixture(2, random_state=0).fit(X, sample_weight=w)
    got = GaussianMixture(2, random_state=0).fit(X, sample_weight=c * w)
    for name in ATTRS:
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))


@pytest.mark.parametrize("c", [1e-300, 1e-20, 1e-12, 1e20])
def test_uniform_weights_equal_the_unweighted_fit(data, c):
    X, _ = data
    ref = GaussianMixture(2, random_state=0).fit(X)
    got = GaussianMixture(2, random_state=0).fit(X, sample_weight=np.full(len(X), c))
    _close(got, ref)


def test_float32_data_with_tiny_weights(data):
    X, w = data
    X32 = X.astype(np.float32)
    ref = GaussianMixture(2, random_state=0).fit(X32, sample_weight=w)
    got = GaussianMixture(2, random_state=0).fit(X32, sample_weight=1e-200 * w)
    _close(got, ref, rtol=1e-5, atol=1e-6)


def test_tensor_weights(data):
    X, w = data
    Xt, wt = torch.as_tensor(X), torch.as_tensor(w)
    ref = GaussianMixture(2, random_state=0).fit(Xt, sample_weight=wt)
    got = GaussianMixture(2, random_state=0).fit(Xt, sample_weight=wt * 1e-30)
    for name in ATTRS:
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("c", [1e-300, 1e-20, 1e20, 1e300])
def test_partial_fit_is_invariant_to_the_scale_of_the_weights(data, c):
    X, w = data
    ref = GaussianMixture(2, random_state=0)
    got = GaussianMixture(2, random_state=0)
    for part in np.array_split(np.arange(len(X)), 3):
        ref.partial_fit(X[part], sample_weight=w[part])
        got.partial_fit(X[part], sample_weight=c * w[part])
    _close(got, ref)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("c", [1e-200, 1e-20, 1e150])
def test_m_step_count_floor_is_relative(data, covariance_type, c):
    # The M-step itself (what sources of weighted batches reach unnormalised):
    # statistics of weights c * w give the parameters of w.
    X, w = data
    Xt, wt = torch.as_tensor(X), torch.as_tensor(w)
    from gaussmix.covariance import get_covariance_type

    eye = torch.eye(2, dtype=torch.float64)
    precisions = {"full": eye.expand(2, 2, 2).clone(), "tied": eye,
                  "diag": torch.ones(2, 2, dtype=torch.float64),
                  "spherical": torch.ones(2, dtype=torch.float64)}[covariance_type]
    params = GMMParams(
        weights=torch.tensor([0.5, 0.5], dtype=torch.float64),
        means=torch.tensor([[0.0, 0.0], [4.0, 4.0]], dtype=torch.float64),
        precisions_cholesky=get_covariance_type(covariance_type).precisions_cholesky_from_precisions(
            precisions),
        covariance_type=covariance_type,
    )
    eps = torch.finfo(torch.float64).eps
    ref = m_step(accumulate([(Xt, wt)], params), params.shift, covariance_type, 1e-6, eps)
    got = m_step(accumulate([(Xt, wt * c)], params), params.shift, covariance_type, 1e-6, eps)
    for name in ("weights", "means", "covariances"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-12, atol=1e-14)


def test_source_of_weighted_batches_with_tiny_weights(data):
    X, w = data
    batches = [(X[i:i + 100], w[i:i + 100]) for i in range(0, len(X), 100)]
    tiny = [(xb, wb * 1e-20) for xb, wb in batches]
    ref = GaussianMixture(2, random_state=0).fit(batches)
    got = GaussianMixture(2, random_state=0).fit(tiny)
    _close(got, ref)
