"""float32 fits whose passes run in float64: on small data
(gaussmix.expectation.float64_passes) and, for diag and spherical, far from
the mixture mean (gaussmix.expectation.pass_params)."""

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SKGaussianMixture

import gaussmix.expectation as expectation
from gaussmix import GaussianMixture
from gaussmix.data import iter_chunks
from gaussmix.em import accumulate, run_em
from gaussmix.expectation import (FAR_IN_FLOAT32, FAR_IN_FLOAT64, SMALL_PASS_WORK, _farthest,
                                  float64_passes, pass_params)
from gaussmix.kernels import reference
from gaussmix.maximization import _m_step
from gaussmix.params import GMMParams

TYPES = ["full", "tied", "diag", "spherical"]


def _separated(n=600, d=3, k=3, seed=0, spread=40.0):
    """Clusters tens of standard deviations apart (float32 per-component
    arithmetic applies to them) and far from the origin."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, (k, d)) + 1e3
    X = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, d)
    return X, centres


def test_rule():
    """float32 on the CPU below SMALL_PASS_WORK; never float64 or CUDA data,
    nor more work than that."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert float64_passes(1000, 3, 5, torch.float32, cpu)
    assert float64_passes(20_000, 4, 8, torch.float32, "cpu")
    assert not float64_passes(1000, 3, 5, torch.float64, cpu)
    assert not float64_passes(1000, 3, 5, torch.float32, cuda)
    assert not float64_passes(100_000, 16, 16, torch.float32, cpu)
    d = 4
    width = d * (d + 1) // 2 + d + 1
    rows = SMALL_PASS_WORK // (2 * width)  # two components: the work just below or at the limit
    assert float64_passes(rows - 1, 2, d, torch.float32, cpu)
    assert not float64_passes(rows + 1, 2, d, torch.float32, cpu)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_iteration_is_the_float64_pass_rounded(covariance_type):
    """One iteration with float64 passes: the float64 pass's statistics of the
    same (exact) values and the float64 M-step, then rounded
    to float32, bit for bit; the reported log-likelihood is that pass's."""
    X, centres = _separated()
    X32 = torch.from_numpy(X).float()
    gm = GaussianMixture(3, covariance_type=covariance_type, means_init=centres, max_iter=2,
                         random_state=0).fit(X)
    p32 = gm._params.to(dtype=torch.float32)

    def chunks():
        return iter_chunks(X32, None, 256)

    chunks.float64_passes = True
    got = run_em(chunks, p32, reg_covar=1e-6, tol=0.0, max_iter=1)

    p64 = p32.to(dtype=torch.float64)
    stats = accumulate(iter_chunks(X32.double(), None, 256), p64, p64.shift)
    want = _m_step(stats, p64.shift, covariance_type, 1e-6, torch.finfo(torch.float64).eps)
    want = want.to(dtype=torch.float32)
    assert got.params.means.dtype == torch.float32
    assert got.lower_bound == stats.mean_log_likelihood
    for name in ("weights", "means", "precisions_cholesky"):
        assert torch.equal(getattr(got.params, name), getattr(want, name)), name


@pytest.mark.parametrize("covariance_type", TYPES)
def test_small_float32_fit_matches_float64(covariance_type, monkeypatch):
    """A float32 fit of small, separated data (per-component arithmetic in
    float32 otherwise) against scikit-learn in float64 from the same start:
    the same labels and iterations, parameters within float32's rounding,
    and no less exact than the float32 arithmetic it replaces."""
    X, centres = _separated(n=900, d=4, k=3, seed=1)
    X32 = X.astype(np.float32)
    init = dict(means_init=centres, max_iter=30, tol=1e-6, random_state=0)
    sk = SKGaussianMixture(3, covariance_type=covariance_type, **init).fit(X32.astype(np.float64))
    wide = GaussianMixture(3, covariance_type=covariance_type, dtype="float32", **init).fit(X32)
    monkeypatch.setattr(expectation, "SMALL_PASS_WORK", 0)
    native = GaussianMixture(3, covariance_type=covariance_type, dtype="float32", **init).fit(X32)
    assert wide.n_iter_ == sk.n_iter_
    assert np.array_equal(wide.predict(X32), sk.predict(X32))
    scale = np.abs(X).max()
    err = {}
    for name, gm in (("wide", wide), ("native", native)):
        err[name] = max(np.abs(gm.means_ - sk.means_).max() / scale,
                        np.abs(gm.weights_ - sk.weights_).max(),
                        abs(gm.lower_bound_ - sk.lower_bound_) / abs(sk.lower_bound_))
    assert err["wide"] < 1e-6
    assert err["wide"] <= 2 * err["native"] + 1e-7


def _spread_params(covariance_type, spread, dtype=torch.float32):
    gen = torch.Generator().manual_seed(7)
    p = reference.random_params(covariance_type, 3, 4, gen)
    return GMMParams(p.weights, p.means * spread, p.precisions_cholesky,
                     covariance_type).to(dtype=dtype)


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("spread", [0.01, 30.0, 1e6])
def test_pass_params(covariance_type, spread):
    """Which passes run on float64 parameters: every pass of a fit with float64
    passes; otherwise float32 diag and spherical passes whose components lie
    beyond sqrt(FAR_IN_FLOAT32) but within sqrt(FAR_IN_FLOAT64) of the
    mixture mean (where their float32 pass would take float64 GEMMs anyway);
    never float64 parameters, which pass as they are."""
    p32 = _spread_params(covariance_type, spread)
    far = _farthest(p32)
    p64 = p32.to(dtype=torch.float64)
    assert pass_params(p64) is p64 and pass_params(p64, small=True) is p64
    assert pass_params(p32, small=True).means.dtype == torch.float64
    wide = (covariance_type in ("diag", "spherical") and FAR_IN_FLOAT32 < far <= FAR_IN_FLOAT64)
    assert (pass_params(p32).means.dtype == torch.float64) == wide
    if spread == 30.0 and covariance_type in ("diag", "spherical"):
        assert wide  # the case the rule is for occurs here
    if wide:
        torch.testing.assert_close(pass_params(p32).means, p32.means.double(), rtol=0, atol=0)
