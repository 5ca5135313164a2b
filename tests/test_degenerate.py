"""Degenerate data: a valid model (compared with an independent truth) or a clear error.

References are computed at test time: scikit-learn's GaussianMixture in float64
from the same initial parameters, numpy/scipy closed forms, or equivariance
under scaling.  No expected number comes from gaussmix itself.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SKGaussianMixture

import gaussmix.expectation as expectation

from gaussmix import CovarianceError, GaussianMixture
from gaussmix.covariance import CHOLESKY_RETRIES, CovarianceWarning, RETRY_FACTOR
from gaussmix.data import iter_chunks
from gaussmix.em import EmptyComponentWarning, e_step, m_step, run_em, worst_explained
from gaussmix.params import GMMParams
from gaussmix.stats import SuffStats

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

COV_TYPES = ["full", "tied", "diag", "spherical"]


def _blobs(seed=0, n=150, d=3, sep=6.0):
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(size=(n, d)), 0.7 * rng.normal(size=(n, d)) + sep]


def _sk_init(X, k, ct, seed=0):
    """Initial parameters from scikit-learn (one EM step from its k-means)."""
    sk = SKGaussianMixture(k, covariance_type=ct, random_state=seed, max_iter=1, tol=0).fit(X)
    return dict(weights_init=sk.weights_, means_init=sk.means_, precisions_init=sk.precisions_)


def _fit_both(X, k, ct, init, max_iter=10, batch_size=None):
    common = dict(covariance_type=ct, tol=0, max_iter=max_iter, **init)
    sk = SKGaussianMixture(k, **common).fit(X)
    gm = GaussianMixture(k, batch_size=batch_size, **common).fit(X)
    return sk, gm


def _assert_same_fit(sk, gm, rtol=1e-8, atol=1e-10, scale=1.0):
    np.testing.assert_allclose(gm.weights_, sk.weights_, rtol=rtol, atol=atol)
    np.testing.assert_allclose(gm.means_ / scale, sk.means_, rtol=rtol, atol=atol)
    np.testing.assert_allclose(gm.covariances_ / scale**2, sk.covariances_, rtol=rtol, atol=atol)


def _assert_valid(gm, X):
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.isfinite(np.asarray(getattr(gm, name))).all(), name
    assert np.isfinite(gm.lower_bound_)
    proba = gm.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert np.isfinite(gm.score_samples(X)).all()


# ---------------------------------------------------------------- constant features
@pytest.mark.parametrize("ct", COV_TYPES)
def test_constant_feature_matches_sklearn(ct):
    X = _blobs()
    X[:, 1] = 3.0
    sk, gm = _fit_both(X, 2, ct, _sk_init(X, 2, ct))
    _assert_same_fit(sk, gm)
    assert gm.fit_events_ == []
    # Closed form: a constant feature has zero variance, so reg_covar alone.
    cov = np.asarray(gm.covariances_)
    var1 = {"full": lambda c: c[:, 1, 1], "tied": lambda c: c[1, 1],
            "diag": lambda c: c[:, 1], "spherical": lambda c: None}[ct](cov)
    if var1 is not None:
        np.testing.assert_allclose(var1, gm.reg_covar, rtol=1e-6)


@pytest.mark.parametrize("ct", ["full", "tied", "diag"])
def test_constant_feature_without_regularisation_is_retried(ct):
    X = _blobs()
    X[:, 1] = 3.0
    with pytest.warns(CovarianceWarning, match=r"raised to .*\(retry 1 of at most"):
        gm = GaussianMixture(2, covariance_type=ct, reg_covar=0.0, random_state=0).fit(X)
    _assert_valid(gm, X)
    regs = [e for e in gm.fit_events_ if e["kind"] == "regularization"]
    assert regs, gm.fit_events_
    for e in regs:
        assert 1 <= e["retries"] <= CHOLESKY_RETRIES
        # Documented limit: eps * (second-moment scale) * RETRY_FACTOR**CHOLESKY_RETRIES,
        # the moments being taken around a shift inside the data's range.
        raw = ((X - X.mean(0)) ** 2).mean(1).max() * 4
        bound = np.finfo(np.float64).eps * raw * RETRY_FACTOR**CHOLESKY_RETRIES
        assert all(0 < r <= bound for r in e["reg_covar"])
    # The constant feature's variance is exactly the extra regularisation.
    cov = np.asarray(gm.covariances_)
    var1 = {"full": lambda c: c[:, 1, 1], "tied": lambda c: np.array([c[1, 1]]),
            "diag": lambda c: c[:, 1]}[ct](cov)
    last = regs[-1]
    np.testing.assert_allclose(np.sort(var1[last["components"]]), np.sort(last["reg_covar"]), rtol=1e-6)


@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
def test_indefinite_covariance_raises_after_documented_retries(ct):
    # Statistics whose covariance has a variance of -1: no retry within the
    # documented limit can repair it, so the actionable error is raised.
    d = 2
    s2 = {"full": torch.diag(torch.tensor([10.0, -10.0], dtype=torch.float64))[None],
          "diag": torch.tensor([[10.0, -10.0]], dtype=torch.float64),
          "spherical": torch.tensor([[-10.0, -10.0]], dtype=torch.float64)}[ct]
    stats = SuffStats(
        nk=torch.tensor([10.0], dtype=torch.float64), s1=torch.zeros(1, d, dtype=torch.float64),
        s2=s2, log_likelihood=torch.tensor(0.0, dtype=torch.float64),
        weight=torch.tensor(10.0, dtype=torch.float64), count=torch.tensor(10.0, dtype=torch.float64),
    )
    eps32 = float(torch.finfo(torch.float32).eps)
    with pytest.raises(CovarianceError, match=r"increase reg_covar.*retries.*float64"):
        m_step(stats, torch.zeros(d), ct, 1e-6, eps32)


@pytest.mark.parametrize("ct", ["full", "diag", "spherical"])
@pytest.mark.parametrize("separation", [100.0, 1e4])
@pytest.mark.parametrize("own_passes", [True, False])
def test_float32_far_apart_clusters_keep_their_covariance(ct, separation, own_passes, monkeypatch):
    # Clusters hundreds to 1e4 standard deviations apart: in float32 each
    # component's moments are taken around its own mean, so its covariance is
    # as accurate as the data's float32 rounding allows, like the float64
    # fit of the same float32 values from the same start (the reference).
    # Both with float32 passes of its own and with float64 passes
    # (gaussmix.expectation.float64_passes, the default on data this small).
    if own_passes:
        monkeypatch.setattr(expectation, "SMALL_PASS_WORK", 0)
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(500, 3)), rng.normal(size=(500, 3)) + separation].astype(np.float32)
    pre = {"full": np.stack([np.eye(3)] * 2) * 0.8, "diag": np.ones((2, 3)) * 0.8,
           "spherical": np.ones(2) * 0.8}[ct]
    kw = dict(n_components=2, covariance_type=ct, tol=0, max_iter=10, weights_init=[0.5, 0.5],
              means_init=[[0.1] * 3, [separation + 0.1] * 3], precisions_init=pre)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("error", CovarianceWarning)  # no rescue needed
        gm32 = GaussianMixture(**kw).fit(X)
        gm64 = GaussianMixture(**kw, dtype="float64").fit(X)
    assert gm32.covariances_.dtype == np.float32 and gm32.fit_events_ == []
    # ulp(1e4) in float32 is 1e-3: variances of unit size are known to ~1e-4.
    np.testing.assert_allclose(gm32.covariances_, gm64.covariances_, atol=1e-4)
    np.testing.assert_allclose(gm32.means_, gm64.means_, atol=1e-3)


@pytest.mark.parametrize("ct, n", [("diag", 300), ("spherical", 300), ("full", 1500)])
@pytest.mark.parametrize("own_passes", [True, False])
def test_float32_soft_split_far_from_the_mixture_mean(ct, n, own_passes, monkeypatch):
    # Two components share a cluster 1e3 standard deviations from the mixture
    # mean: their responsibilities are soft, so log-density errors would show.
    # float32 distances are taken per component (diag, spherical) or on
    # features around each row's component (full, on 3000 rows: its kept
    # features in owner groups), so the fit follows float64; so do float64
    # passes (gaussmix.expectation.float64_passes).
    if own_passes:
        monkeypatch.setattr(expectation, "SMALL_PASS_WORK", 0)
    rng = np.random.default_rng(3)
    X = np.r_[rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + 1e3].astype(np.float32)
    pre = {"diag": np.ones((3, 2)), "spherical": np.ones(3), "full": np.stack([np.eye(2)] * 3)}[ct]
    kw = dict(n_components=3, covariance_type=ct, tol=0, max_iter=20, weights_init=[0.25, 0.25, 0.5],
              means_init=[[-0.5, 0.0], [0.5, 0.1], [1e3, 1e3]], precisions_init=pre)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm32 = GaussianMixture(**kw).fit(X)
        gm64 = GaussianMixture(**kw, dtype="float64").fit(X)
    np.testing.assert_allclose(gm32.covariances_, gm64.covariances_, atol=1e-4)
    assert abs(gm32.score(X) - gm64.score(X)) < 1e-5


# ---------------------------------------------------------------- duplicated points
def test_duplicated_points_collapse_to_regularised_component():
    rng = np.random.default_rng(1)
    X = np.r_[rng.normal(size=(100, 2)), np.tile([[5.0, 5.0]], (100, 1))]
    sk, gm = _fit_both(X, 2, "full", _sk_init(X, 2, "full"), max_iter=20)
    _assert_same_fit(sk, gm, rtol=1e-7)
    _assert_valid(gm, X)
    # One component sits on the duplicated point with covariance reg_covar * I.
    k = int(np.argmin(np.linalg.norm(gm.means_ - [5.0, 5.0], axis=1)))
    np.testing.assert_allclose(gm.means_[k], [5.0, 5.0], atol=1e-9)
    np.testing.assert_allclose(gm.covariances_[k], gm.reg_covar * np.eye(2), atol=1e-9)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_fewer_distinct_points_than_components(ct):
    rng = np.random.default_rng(2)
    pts = rng.normal(size=(3, 2)) * 5
    X = np.repeat(pts, 10, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyComponentWarning)
        gm = GaussianMixture(5, covariance_type=ct, random_state=0).fit(X)
    _assert_valid(gm, X)
    # Every distinct point carries a component mean (the only valid optimum).
    dist = np.linalg.norm(pts[:, None, :] - gm.means_[None], axis=2).min(1)
    assert (dist < 1e-6).all(), dist
    np.testing.assert_allclose(gm.weights_.sum(), 1.0)


def test_all_points_identical():
    X = np.full((40, 3), 2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyComponentWarning)
        gm = GaussianMixture(3, random_state=0).fit(X)
    _assert_valid(gm, X)
    np.testing.assert_allclose(gm.means_, 2.5, atol=1e-12)
    np.testing.assert_allclose(gm.covariances_, np.broadcast_to(gm.reg_covar * np.eye(3), (3, 3, 3)),
                               atol=1e-15)


# ------------------------------------------------------------ emptied components
def _far_init(X):
    """Three components, the third far from every point (it gets no points)."""
    means = np.r_[X[:1], X[-1:], [[1e3, 1e3, 1e3]]]
    return dict(weights_init=np.full(3, 1 / 3), means_init=means,
                precisions_init=np.broadcast_to(np.eye(3), (3, 3, 3)).copy())


def _worst_point(X, init):
    logp = np.stack([
        np.log(w) + multivariate_normal(m, np.linalg.inv(p)).logpdf(X)
        for w, m, p in zip(init["weights_init"], init["means_init"], init["precisions_init"])
    ], axis=1)
    return X[np.argmin(logsumexp(logp, axis=1))]


@pytest.mark.parametrize("batch_size", [None, 7])
def test_empty_component_is_reseeded_on_worst_explained_point(batch_size):
    X = _blobs()
    init = _far_init(X)
    with pytest.warns(EmptyComponentWarning, match=r"Component\(s\) \[2\].*re-seeded"):
        gm = GaussianMixture(3, tol=0, max_iter=1, batch_size=batch_size, **init).fit(X)
    assert gm.n_reseeds_ == 1
    assert gm.fit_events_ == [dict(kind="reseed", iteration=1, components=[2])]
    # The re-seeded mean is the point the initial model explains worst (scipy).
    np.testing.assert_allclose(gm.means_[2], _worst_point(X, init), rtol=1e-12)
    # The other components get the plain M-step (scikit-learn from the same init,
    # where the dead component takes no responsibility), and the re-seeded one
    # their count-weighted mean covariance and the weight of one sample.
    sk = SKGaussianMixture(3, tol=0, max_iter=1, **init).fit(X)
    n = X.shape[0]
    # (The far initial mean pulls the moments' shift ~300 away from the data,
    # which costs a few digits of float64 cancellation, hence atol=1e-8.)
    np.testing.assert_allclose(gm.means_[:2], sk.means_[:2], rtol=1e-10)
    np.testing.assert_allclose(gm.covariances_[:2], sk.covariances_[:2], rtol=1e-8, atol=1e-8)
    nk = sk.weights_[:2] * n
    pooled = np.tensordot(nk, sk.covariances_[:2], axes=1) / nk.sum()
    np.testing.assert_allclose(gm.covariances_[2], pooled, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(gm.weights_[2], 1.0 / (n + 1), rtol=1e-10)


def test_reseed_without_gather_in_a_reduced_fit_splits_the_widest_component():
    # With a reduce (distributed) but no gather, every rank must agree without
    # communication: the point is one standard deviation from the mean of the
    # component of largest spread mass, along its most variable feature.
    X = _blobs()
    init = _far_init(X)
    params = GMMParams(
        weights=torch.tensor(init["weights_init"]), means=torch.tensor(init["means_init"]),
        precisions_cholesky=torch.eye(3, dtype=torch.float64).expand(3, 3, 3).contiguous(),
        covariance_type="full",
    )
    Xt = torch.tensor(X)
    with pytest.warns(EmptyComponentWarning):
        result = run_em(lambda: iter_chunks(Xt, None, 50), params, reg_covar=1e-6, tol=0,
                        max_iter=1, reduce=lambda stats: stats)
    sk = SKGaussianMixture(3, tol=0, max_iter=1, **init).fit(X)
    var = np.diagonal(sk.covariances_[:2], axis1=1, axis2=2)
    k = int(np.argmax(sk.weights_[:2] * var.mean(1)))
    axis = int(np.argmax(var[k]))
    expected = sk.means_[k].copy()
    expected[axis] += np.sqrt(var[k, axis])
    np.testing.assert_allclose(result.params.means[2].numpy(), expected, rtol=1e-8, atol=1e-8)
    assert [e["kind"] for e in result.events] == ["reseed"]


def test_reseeded_fit_is_valid_and_uses_the_new_component():
    X = np.r_[_blobs(), np.random.default_rng(3).normal(size=(100, 3)) - 8]
    init = _far_init(X)
    with pytest.warns(EmptyComponentWarning):
        gm = GaussianMixture(3, max_iter=200, **init).fit(X)
    _assert_valid(gm, X)
    assert gm.converged_
    # After re-seeding, the three real clusters each get a component.
    assert sorted(np.bincount(gm.predict(X), minlength=3)) == [100, 150, 150]


def test_worst_explained_is_chunking_invariant_and_skips_zero_weights():
    rng = np.random.default_rng(4)
    X = torch.tensor(np.r_[rng.normal(size=(50, 2)), [[9.0, 9.0]] * 3, [[-7.0, 0.0]]])
    params = GMMParams(
        weights=torch.tensor([0.5, 0.5], dtype=torch.float64),
        means=torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64),
        precisions_cholesky=torch.eye(2, dtype=torch.float64).expand(2, 2, 2).contiguous(),
        covariance_type="full",
    )
    w = torch.ones(X.shape[0], dtype=torch.float64)
    w[50] = 0.0  # the first copy of the worst point weighs nothing
    logp = logsumexp(np.stack([np.log(0.5) + multivariate_normal(m, np.eye(2)).logpdf(X.numpy())
                               for m in ([0, 0], [1, 1])], 1), axis=1)
    logp[50] = np.inf
    expected = X.numpy()[np.argsort(logp, kind="stable")[:4]]
    for rows in (1, 5, 54):
        got = worst_explained(iter_chunks(X, w, rows), params, 4)
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=0)
    # Two shards joined by a gather (as an all-gather would) give the same answer.
    a, b = slice(0, 30), slice(30, None)
    vb = e_step(X[b], params)[1].masked_fill(w[b] <= 0, math.inf)
    order = torch.sort(vb, stable=True).indices[:4]
    vb, xb = vb[order], X[b][order]

    def gather(t):
        return torch.cat([t, vb if t.dim() == 1 else xb])

    got = worst_explained(iter_chunks(X[a], w[a], 7), params, 4, gather=gather)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=0)


def test_lowest_equals_a_stable_sort_with_ties():
    """The partial selection behind worst_explained: the same indices, in the
    same order, as a stable sort, with many ties at the cut and infinities."""
    from gaussmix.reseed import _lowest

    rng = np.random.default_rng(5)
    for trial in range(30):
        v = rng.integers(0, 6, size=int(rng.integers(1, 200))).astype(float)
        v[rng.random(v.size) < 0.1] = np.inf
        v[rng.random(v.size) < 0.05] = -np.inf
        for n in (1, 2, 3, 7, v.size, v.size + 2):
            got = _lowest(torch.from_numpy(v), n).numpy()
            np.testing.assert_array_equal(got, np.argsort(v, kind="stable")[:n])


# ------------------------------------------------------------ tiny shapes
@pytest.mark.parametrize("ct", COV_TYPES)
def test_single_feature_matches_sklearn(ct):
    X = _blobs(d=1)
    sk, gm = _fit_both(X, 2, ct, _sk_init(X, 2, ct))
    _assert_same_fit(sk, gm)


@pytest.mark.parametrize("offset", [0.0, 1e6])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ct", COV_TYPES)
def test_single_component_is_the_sample_moments(ct, dtype, offset):
    # With an offset of 1e6 in float32 this is the cancellation test: the
    # covariance must still match np.cov of the same (rounded) values.
    X = (_blobs(d=3) + offset).astype(dtype)
    gm = GaussianMixture(1, covariance_type=ct).fit(X)
    X64 = X.astype(np.float64)
    cov = np.cov(X64.T, bias=True)
    reg = gm.reg_covar
    expected = {"full": (cov + reg * np.eye(3))[None], "tied": cov + reg * np.eye(3),
                "diag": (np.diag(cov) + reg)[None], "spherical": np.array([np.diag(cov).mean() + reg])}[ct]
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(gm.weights_, [1.0])
    # float32 means near 1e6 are resolved to their ulp (0.0625).
    atol_mean = 0.07 if (offset and dtype == np.float32) else rtol
    np.testing.assert_allclose(gm.means_, X64.mean(0, keepdims=True), rtol=rtol, atol=atol_mean)
    np.testing.assert_allclose(gm.covariances_, expected, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_as_many_components_as_points(ct):
    X = np.random.default_rng(5).normal(size=(5, 2)) * 3
    gm = GaussianMixture(5, covariance_type=ct, random_state=0).fit(X)
    _assert_valid(gm, X)
    # Closed form: each point is its own component, weight 1/N.
    order = np.argsort(gm.predict(X))
    np.testing.assert_allclose(np.sort(gm.weights_), np.full(5, 0.2), rtol=1e-9)
    assert sorted(gm.predict(X)) == list(range(5))
    np.testing.assert_allclose(gm.means_[gm.predict(X)][order], X[order], atol=1e-9)


# ------------------------------------------------------------ scales and offsets
@pytest.mark.parametrize("scale", [1e-8, 1e8])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ct", COV_TYPES)
def test_extreme_scales_are_equivariant(ct, dtype, scale):
    # Scaling the data, the initial parameters and reg_covar together must
    # scale the fit: compared with scikit-learn on the unscaled float64 data.
    X = _blobs()
    init = _sk_init(X, 2, ct)
    sk = SKGaussianMixture(2, covariance_type=ct, tol=0, max_iter=10, **init).fit(X)
    scaled = dict(weights_init=init["weights_init"], means_init=init["means_init"] * scale,
                  precisions_init=init["precisions_init"] / scale**2)
    gm = GaussianMixture(2, covariance_type=ct, tol=0, max_iter=10, reg_covar=1e-6 * scale**2,
                         **scaled).fit((X * scale).astype(dtype))
    rtol = 1e-8 if dtype == np.float64 else 2e-4
    _assert_same_fit(sk, gm, rtol=rtol, atol=rtol, scale=scale)


@pytest.mark.parametrize("scale", [1e-8, 1e8])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_extreme_scales_with_default_settings_give_a_valid_model(dtype, scale):
    X = (_blobs() * scale).astype(dtype)
    gm = GaussianMixture(2, random_state=0).fit(X)
    _assert_valid(gm, X)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_large_offset_float32_keeps_the_covariance(ct):
    # Data around 1e6 with unit spread: the float32 fit must match a float64 fit
    # of the same (float32-rounded) values.  The reference is scikit-learn on
    # those values minus 1e6 (exact), since its own tied covariance cancels at
    # 1e6.  Cancellation would cost all digits; what remains (< 1%) comes from
    # float32 means, which resolve 1e6 to 0.0625.
    X32 = (_blobs() + 1e6).astype(np.float32)
    Xc = X32.astype(np.float64) - 1e6
    init = _sk_init(Xc, 2, ct)
    sk = SKGaussianMixture(2, covariance_type=ct, tol=0, max_iter=10, **init).fit(Xc)
    init32 = dict(init, means_init=init["means_init"] + 1e6)
    gm = GaussianMixture(2, covariance_type=ct, tol=0, max_iter=10, **init32).fit(X32)
    assert gm.covariances_.dtype == np.float32
    np.testing.assert_allclose(gm.weights_, sk.weights_, rtol=1e-3)
    np.testing.assert_allclose(gm.covariances_, sk.covariances_, rtol=1e-2, atol=2e-3)
    np.testing.assert_allclose(gm.means_.astype(np.float64) - 1e6, sk.means_, atol=0.07)


def test_large_offset_float32_default_fit_matches_float64():
    X32 = (_blobs() + 1e6).astype(np.float32)
    g32 = GaussianMixture(2, random_state=0).fit(X32)
    g64 = GaussianMixture(2, random_state=0).fit(X32.astype(np.float64))
    assert abs(g32.lower_bound_ - g64.lower_bound_) < 1e-3 * abs(g64.lower_bound_)
    np.testing.assert_allclose(np.sort(g32.weights_), np.sort(g64.weights_), atol=1e-3)


def test_float32_overflow_is_a_clear_error():
    X = (np.random.default_rng(6).normal(size=(500, 3)) * 1e19).astype(np.float32)
    with pytest.raises(ValueError, match="non-finite .*Scale the input data"):
        GaussianMixture(2, random_state=0).fit(X)


# ------------------------------------------------------------ high dimension
def test_512_features_full_covariance_matches_sklearn():
    rng = np.random.default_rng(7)
    d, n = 512, 550
    X = np.r_[rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 0.5]
    init = dict(weights_init=[0.5, 0.5], means_init=np.stack([X[:n].mean(0), X[n:].mean(0)]),
                precisions_init=np.broadcast_to(np.eye(d), (2, d, d)).copy())
    # Whole-data chunks keep the test fast (the default sizing makes ~15-row
    # chunks at D=512); chunking itself is covered by the property tests.
    sk, gm = _fit_both(X, 2, "full", init, max_iter=2, batch_size=2 * n)
    _assert_same_fit(sk, gm, rtol=1e-7, atol=1e-9)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.isfinite(getattr(gm, name)).all()
    assert gm.fit_events_ == []
