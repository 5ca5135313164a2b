"""The diag and spherical passes: component-major GEMMs, padded moment GEMMs,
and the three float32 regimes (one shift in float32, one shift in float64
far from the mixture mean, per-component differences farther still)."""

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SKGaussianMixture

from gaussmix import GaussianMixture
from gaussmix.data import iter_chunks
from gaussmix.em import FAR_IN_FLOAT32, accumulate, e_step, moment_shift
from gaussmix.expectation import FAR_IN_FLOAT64, _farthest, _Pass
from gaussmix.kernels import reference
from gaussmix.params import GMMParams

FIELDS = ("nk", "s1", "s2", "log_likelihood", "weight", "count")
TYPES = ["diag", "spherical"]


def relerr(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("d", [1, 5, 6, 8, 12, 16])
def test_padded_moment_gemm_matches_reference(covariance_type, dtype, d):
    """Every width of the padded moment GEMM (counts from the GEMM's column
    of ones, or summed apart where the padding ends before it) gives the
    reference's statistics; float32 on the one-shift path to its rounding."""
    gen = torch.Generator().manual_seed(d)
    p = reference.random_params(covariance_type, 4, d, gen, spread=0.3)
    X = torch.randn(700, d, generator=gen, dtype=torch.float64)
    w = torch.rand(700, generator=gen, dtype=torch.float64) + 0.5
    pd = p.to(dtype=dtype)
    assert moment_shift(pd).dim() == 1
    ref = reference.chunk_stats(X.to(dtype).double(), pd.to(dtype=torch.float64), w.to(dtype).double())
    got = accumulate(iter_chunks(X.to(dtype), w.to(dtype), 256), pd)
    tol = 1e-11 if dtype == torch.float64 else 1e-5
    for f in FIELDS:
        assert relerr(getattr(got, f), ref[f]) < tol, f


def _far_params(covariance_type, spread, dtype):
    gen = torch.Generator().manual_seed(7)
    p = reference.random_params(covariance_type, 3, 4, gen)
    means = p.means * spread
    return GMMParams(p.weights, means, p.precisions_cholesky, covariance_type).to(dtype=dtype), gen


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("spread, direct", [(30.0, False), (1e3, False), (3e5, True)])
def test_float32_far_from_the_mixture_mean(covariance_type, spread, direct):
    """Components tens to 1e5 standard deviations from the mixture mean:
    float32 statistics around each component's mean equal the float64
    reference on the same float32 values, by float64 one-shift GEMMs up to
    FAR_IN_FLOAT64 and per-component differences beyond."""
    p32, gen = _far_params(covariance_type, spread, torch.float32)
    far = _farthest(p32)
    assert far > FAR_IN_FLOAT32 and (far > FAR_IN_FLOAT64) == direct
    owner = torch.randint(0, 3, (900,), generator=gen)
    X32 = (p32.means.double()[owner] + torch.randn(900, 4, generator=gen, dtype=torch.float64)).float()
    at = moment_shift(p32)
    assert at.dim() == 2
    assert (_Pass(p32, at).direct is not None) == direct
    ref = reference.chunk_stats(X32.double(), p32.to(dtype=torch.float64), None, centres=at.double())
    got = accumulate(iter_chunks(X32, None, 256), p32)
    for f in FIELDS:
        assert relerr(getattr(got, f), ref[f]) < 1e-5, f
    log_resp, log_prob = e_step(X32, p32)
    assert log_resp.dtype == torch.float32 and log_prob.dtype == torch.float32
    np.testing.assert_allclose(log_resp.exp().double().numpy(), ref["log_resp"].exp().numpy(),
                               atol=1e-5)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", TYPES)
def test_separated_blobs_equal_scikit_learn(covariance_type):
    """Well-separated blobs (most responsibilities at the exp floor) from the same
    start: float64 equals scikit-learn to 1e-8, float32 follows float64."""
    rng = np.random.default_rng(0)
    k, d = 6, 5
    centres = rng.normal(scale=6.0, size=(k, d))
    X = centres[rng.integers(0, k, 3000)] + rng.normal(size=(3000, d)) * rng.uniform(0.5, 1.5, d)
    init = dict(weights_init=np.full(k, 1.0 / k), means_init=X[rng.choice(3000, k, replace=False)])
    init["precisions_init"] = np.full((k, d) if covariance_type == "diag" else k, 1.0 / X.var(0).mean())
    kw = dict(n_components=k, covariance_type=covariance_type, max_iter=15, tol=0.0, **init)
    sk = SKGaussianMixture(**kw).fit(X)
    gm = GaussianMixture(**kw, dtype="float64").fit(X)
    np.testing.assert_allclose(gm.means_, sk.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(gm.covariances_, sk.covariances_, rtol=1e-8)
    np.testing.assert_allclose(gm.lower_bound_, sk.lower_bound_, rtol=1e-10)
    gm32 = GaussianMixture(**kw, dtype="float32").fit(X.astype(np.float32))
    np.testing.assert_allclose(np.asarray(gm32.covariances_, dtype=np.float64), gm.covariances_,
                               rtol=1e-4)
    assert abs(gm32.lower_bound_ - gm.lower_bound_) < 1e-5 * abs(gm.lower_bound_)


def test_longer_cpu_chunks_for_diag_and_spherical():
    """No (B, K*D) intermediate on their one-shift path: longer CPU chunks,
    and for full where a fit keeps features and the packed form applies;
    tied's sizes unchanged, and full's where the packed features would be
    more than twice as wide as K*D."""
    from gaussmix.data import chunk_rows

    base = chunk_rows(10**6, 16, 16)
    assert chunk_rows(10**6, 16, 16, covariance_type="tied", kept_features=True) == base
    assert (chunk_rows(10**6, 4, 16, covariance_type="full", kept_features=True)
            == chunk_rows(10**6, 4, 16))
    assert chunk_rows(10**6, 16, 16, covariance_type="full") == base  # features not kept
    for kind in TYPES:
        assert chunk_rows(10**6, 16, 16, covariance_type=kind) > 2 * base
    for kind in TYPES + ["full", "VVV", "EEV"]:
        assert chunk_rows(10**6, 16, 16, covariance_type=kind, kept_features=True) > 2 * base
        assert chunk_rows(100, 16, 16, covariance_type=kind) == 100
        assert chunk_rows(10**6, 16, 16, batch_size=500, covariance_type=kind) == 500
