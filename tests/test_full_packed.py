"""The full covariance's packed pass (covariance/full_packed.py) and the fit's
feature cache (feature_cache.py) against the per-component reference.

The reference (:mod:`gaussmix.kernels.reference`) centres each point on each
component's mean before any product; the packed form expands the quadratic
form on the features ``[x_i x_j, x, 1]``.  Both must give the same statistics,
with and without the cache, whatever the shift of the pass.
"""

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SKGaussianMixture

import gaussmix.covariance.full_packed as fp
import gaussmix.expectation as expectation
import gaussmix.owner_groups as owner_groups_mod
from gaussmix import GaussianMixture
from gaussmix.covariance import get_covariance_type
from gaussmix.data import iter_chunks
from gaussmix.em import accumulate, run_em
from gaussmix.feature_cache import FeatureCache
from gaussmix.kernels import reference

FIELDS = ("nk", "s1", "s2", "log_likelihood", "weight", "count")


def relerr(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def test_pass_form_chooses_packed_only_where_it_is_narrower():
    full = get_covariance_type("full")
    assert isinstance(full.pass_form(16, 16), fp.PackedFull)  # 153 columns <= 256
    assert isinstance(get_covariance_type("VEV").pass_form(16, 16), fp.PackedFull)
    assert full.pass_form(4, 16) is full  # 153 > 2 * 64
    assert full.pass_form(5, 1) is full  # D = 1: nothing to pack
    # The same rule on every device (timed on one H200: docs/PERFORMANCE.md).
    assert isinstance(full.pass_form(16, 16, "cuda"), fp.PackedFull)
    assert isinstance(full.pass_form(16, 16, torch.device("cpu")), fp.PackedFull)
    for kind in ("tied", "diag", "spherical"):
        strat = get_covariance_type(kind)
        assert strat.pass_form(16, 16) is strat


@pytest.fixture
def always_packed(monkeypatch):
    """The packed form at every shape, so that D = 2 and D > K are checked too."""
    monkeypatch.setattr(fp, "packed_applies", lambda k, d: d >= 2)


@pytest.mark.parametrize("n,d,k", [(50, 2, 1), (33, 3, 5), (64, 17, 3), (129, 16, 16), (25, 33, 2)])
@pytest.mark.parametrize("weighted", [False, True])
def test_packed_statistics_match_reference(always_packed, n, d, k, weighted):
    gen = torch.Generator().manual_seed(3 * n + d + k)
    p = reference.random_params("full", k, d, gen)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64) * 2.0 - 0.5
    w = torch.rand(n, generator=gen, dtype=torch.float64) * 3.0 if weighted else None
    ref = reference.chunk_stats(X, p, w)
    for rows in (n, max(1, n // 3)):
        cache = FeatureCache(X.mean(0))
        for _ in range(2):  # features built, then read
            fast = accumulate(iter_chunks(X, w, rows), p, cache=cache)
            for f in FIELDS:
                assert relerr(getattr(fast, f), ref[f]) < 1e-11, (rows, f)
        assert len(cache._store) == -(-n // rows)  # the packed form ran


@pytest.mark.parametrize("offset", [0.0, 40.0])
@pytest.mark.parametrize("centre", ["mean", "origin"])
def test_cached_passes_match_reference_as_the_shift_moves(always_packed, offset, centre):
    """The cache's features are of X - centre, the centre fixed for the fit;
    passes with other parameters (another mixture mean each) move the
    moments to their own shift.  Data far from the origin, and a centre far
    from the data, too."""
    n, d, k = 1001, 6, 4
    gen = torch.Generator().manual_seed(9)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64) * 3.0 + offset
    w = torch.rand(n, generator=gen, dtype=torch.float64)
    cache = FeatureCache(X.mean(0) if centre == "mean" else torch.zeros(d, dtype=torch.float64))
    for step in range(4):
        p = reference.random_params("full", k, d, gen)
        p = type(p)(p.weights, p.means + offset + step, p.precisions_cholesky, "full")
        ref = reference.chunk_stats(X, p, w)
        got = accumulate(iter_chunks(X, w, 300), p, cache=cache)
        for f in FIELDS:
            assert relerr(getattr(got, f), ref[f]) < 1e-10, (step, f)
    assert cache.centre is not None
    assert len(cache._store) == 4  # 300 + 300 + 300 + 101 rows, built once


def test_cache_limit_keeps_what_fits_and_gives_the_same_statistics(always_packed):
    n, d, k = 1000, 5, 4
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    p = reference.random_params("full", k, d, gen)
    one_chunk = 250 * (d * (d + 1) // 2 + d + 1) * 8
    small = FeatureCache(X.mean(0), limit=2 * one_chunk)
    full = FeatureCache(X.mean(0))
    for _ in range(2):
        a = accumulate(iter_chunks(X, None, 250), p, cache=small)
        b = accumulate(iter_chunks(X, None, 250), p, cache=full)
        c = accumulate(iter_chunks(X, None, 250), p)
        for f in FIELDS:
            assert relerr(getattr(a, f), getattr(c, f)) < 1e-12
            assert relerr(getattr(b, f), getattr(c, f)) < 1e-12
    assert len(small._store) == 2 and len(full._store) == 4


def test_em_with_cache_equals_em_without():
    """Twenty iterations at a shape where the packed form applies: the same
    path with and without kept features."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0.0, 5.0, (6, 8))
    X = torch.from_numpy(centres[rng.integers(0, 6, 3000)] + rng.normal(size=(3000, 8)))
    gen = torch.Generator().manual_seed(1)
    p = reference.random_params("full", 6, 8, gen, spread=5.0)

    def plain():
        return iter_chunks(X, None, 700)

    def kept():
        return iter_chunks(X, None, 700)

    kept.feature_cache = FeatureCache(X.mean(0))
    a = run_em(plain, p, reg_covar=1e-6, tol=0.0, max_iter=20)
    b = run_em(kept, p, reg_covar=1e-6, tol=0.0, max_iter=20)
    assert a.n_iter == b.n_iter == 20
    assert len(kept.feature_cache._store) == 5  # the features were kept and read
    # Rounding differs (moments around the first pass's centre, then moved).
    np.testing.assert_allclose(b.lower_bounds, a.lower_bounds, rtol=1e-10)
    np.testing.assert_allclose(b.params.means.numpy(), a.params.means.numpy(), rtol=1e-9, atol=1e-10)


def test_fits_keep_features_only_where_it_pays(monkeypatch):
    """In memory, at least MIN_ROWS rows and no batch_size: the fit's chunks
    carry a cache; smaller data, a batch_size or a source do not."""
    from gaussmix import feature_cache
    from gaussmix.fitting import FitEngine

    seen = []
    original = FitEngine._fit_data

    def spy(self, *args, **kwargs):
        data = original(self, *args, **kwargs)
        seen.append(getattr(data.chunks, "feature_cache", None))
        return data

    monkeypatch.setattr(FitEngine, "_fit_data", spy)
    X = np.random.default_rng(0).normal(size=(feature_cache.MIN_ROWS, 3))
    GaussianMixture(2, max_iter=2).fit(X)
    GaussianMixture(2, max_iter=2).fit(X[:-1])
    GaussianMixture(2, max_iter=2, batch_size=500).fit(X)
    GaussianMixture(2, max_iter=2).fit([X[:1000], X[1000:]])
    assert isinstance(seen[0], FeatureCache)
    assert seen[1:] == [None, None, None]


def test_fit_with_kept_features_matches_scikit_learn():
    """GaussianMixture keeps the features of in-memory data; from the same
    start it ends where scikit-learn does (K = 16, D = 16: the packed form)."""
    rng = np.random.default_rng(4)
    centres = rng.normal(0.0, 5.0, (16, 16))
    X = centres[rng.integers(0, 16, 4000)] + rng.normal(size=(4000, 16))
    init = SKGaussianMixture(16, max_iter=1, random_state=0).fit(X)
    kw = dict(n_components=16, max_iter=30, tol=1e-6, weights_init=init.weights_,
              means_init=init.means_, precisions_init=init.precisions_)
    sk = SKGaussianMixture(**kw).fit(X)
    gm = GaussianMixture(**kw, dtype="float64").fit(X)
    assert gm.n_iter_ == sk.n_iter_
    np.testing.assert_allclose(gm.lower_bound_, sk.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(gm.means_, sk.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(gm.covariances_, sk.covariances_, rtol=1e-7, atol=1e-9)


def test_products_representable_refuses_spans_whose_squares_leave_the_dtype():
    from gaussmix.feature_cache import products_representable

    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.normal(size=(500, 3)))
    for dtype, ok, bad in ((torch.float64, (1.0, 1e120, 1e-140), (1e160, 1e-160)),
                           (torch.float32, (1.0, 1e15, 1e-13), (1e17, 1e-17))):
        for scale in ok:
            Xs = (X * scale).to(dtype)
            assert products_representable(Xs, Xs.double().mean(0)), (dtype, scale)
        for scale in bad:
            Xs = (X * scale).to(dtype)
            assert not products_representable(Xs, Xs.double().mean(0)), (dtype, scale)
    # One constant feature does not matter; all constant: nothing to square.
    Xc = X.clone()
    Xc[:, 1] = 3.0
    assert products_representable(Xc, Xc.mean(0))
    assert not products_representable(torch.ones(10, 2, dtype=torch.float64), torch.ones(2))


@pytest.mark.parametrize("scale", [1e120, 1e-140])
def test_full_fit_scale_invariant_at_extreme_scales(scale):
    """Kept features at 1e120 (and the plain form where they would not be
    representable): the fit of scaled data is the scaled fit."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0.0, 5.0, (4, 6))
    X = centres[rng.integers(0, 4, 3000)] + rng.normal(size=(3000, 6))
    a = GaussianMixture(4, random_state=0, max_iter=30, tol=0.0).fit(X)
    b = GaussianMixture(4, random_state=0, max_iter=30, tol=0.0, reg_covar=1e-6 * scale**2).fit(X * scale)
    np.testing.assert_allclose(b.lower_bound_ + 6 * np.log(scale), a.lower_bound_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(b.means_ / scale, a.means_, rtol=1e-9, atol=1e-9)


def test_float32_far_from_the_mean_runs_on_owner_groups(monkeypatch):
    """float32 data whose components lie far from the mixture mean (the
    moments go to each component's mean): the passes run the packed form in
    float32 on features centred on each row's component
    (gaussmix.owner_groups), within float32's rounding of the float64 fit."""
    rng = np.random.default_rng(3)
    centres = rng.normal(0.0, 30.0, (5, 6))  # tens of standard deviations apart
    X = centres[rng.integers(0, 5, 4000)] + rng.normal(size=(4000, 6)) * rng.uniform(0.5, 2.0, 6)
    # float32 passes of their own, not float64 ones (expectation.float64_passes).
    monkeypatch.setattr(expectation, "SMALL_PASS_WORK", 0)
    builds = []
    original = owner_groups_mod.OwnerGroups.build.__func__

    def spy(cls, *args):
        builds.append(args[2].means.dtype)
        return original(cls, *args)

    monkeypatch.setattr(owner_groups_mod.OwnerGroups, "build", classmethod(spy))
    init = dict(means_init=centres + 0.5, random_state=0, max_iter=40, tol=0.0)
    g64 = GaussianMixture(5, dtype="float64", **init).fit(X)
    assert builds == []
    g32 = GaussianMixture(5, dtype="float32", **init).fit(X.astype(np.float32))
    assert builds and set(builds) == {torch.float32}
    np.testing.assert_allclose(g32.lower_bound_, g64.lower_bound_, rtol=1e-7)
    np.testing.assert_allclose(np.asarray(g32.covariances_, np.float64), g64.covariances_,
                               rtol=1e-5, atol=1e-6)
