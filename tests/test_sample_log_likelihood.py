"""expectation.sample_log_likelihood: log p(x) without the responsibilities."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from gaussmix.expectation import e_step, sample_log_likelihood
from gaussmix.kernels import reference

TYPES = ["full", "tied", "diag", "spherical"]


def _scipy_log_likelihood(X, params):
    cov = params.get_covariances().double().numpy()
    k, d = params.means.shape
    full = {"full": lambda j: cov[j], "tied": lambda j: cov, "diag": lambda j: np.diag(cov[j]),
            "spherical": lambda j: np.eye(d) * cov[j]}[params.covariance_type]
    terms = [np.log(float(params.weights[j])) + multivariate_normal(params.means[j].double().numpy(),
                                                                    full(j)).logpdf(X)
             for j in range(k)]
    return logsumexp(np.stack(terms, 1), axis=1)


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_equals_scipy_and_e_step(covariance_type, dtype):
    gen = torch.Generator().manual_seed(3)
    p = reference.random_params(covariance_type, 5, 4, gen)
    X = torch.randn(300, 4, generator=gen, dtype=torch.float64) * 3.0
    got = sample_log_likelihood(X.to(dtype), p.to(dtype=dtype))
    assert got.dtype == dtype and got.shape == (300,)
    want = _scipy_log_likelihood(X.to(dtype).double().numpy(), p)
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    np.testing.assert_allclose(got.double().numpy(), want, rtol=tol, atol=tol)
    np.testing.assert_allclose(got.double().numpy(),
                               e_step(X.to(dtype), p.to(dtype=dtype))[1].double().numpy(),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_points_beyond_every_density_are_minus_infinity(covariance_type):
    """A point whose density underflows in every component: -inf, as e_step."""
    gen = torch.Generator().manual_seed(4)
    p = reference.random_params(covariance_type, 3, 2, gen)
    X = torch.tensor([[0.0, 0.0], [1e200, -1e200], [1.0, 2.0]], dtype=torch.float64)
    got = sample_log_likelihood(X, p)
    assert got[1] == -np.inf and bool(torch.isfinite(got[[0, 2]]).all())
    assert torch.equal(torch.isinf(got), torch.isinf(e_step(X, p)[1]))
