"""float32 passes on features centred on each row's component (gaussmix.owner_groups)."""

import math
import warnings

import numpy as np

import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

import gaussmix.expectation as expectation
import gaussmix.owner_groups as og
from gaussmix import GaussianMixture
from gaussmix.covariance import get_covariance_type
from gaussmix.data import iter_chunks
from gaussmix.em import accumulate, moment_shift
from gaussmix.feature_cache import FeatureCache
from gaussmix.params import GMMParams


def _clusters(n, d, k, separation, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, separation, (k, d))
    labels = rng.integers(0, k, n)
    scales = rng.uniform(0.5, 2.0, (k, d))
    return centres, centres[labels] + rng.normal(size=(n, d)) * scales[labels]


def _params(centres, X, kind="full", shrink=1.0):
    """Parameters near the truth: each cluster's own moments (labels by nearest centre)."""
    k, d = centres.shape
    lab = np.argmin(((X[:, None, :] - centres[None]) ** 2).sum(-1), 1)
    means = np.stack([X[lab == j].mean(0) for j in range(k)])
    covs = np.stack([np.cov(X[lab == j].T) * shrink + 1e-3 * np.eye(d) for j in range(k)])
    w = np.bincount(lab, minlength=k) / len(X)
    cov = get_covariance_type(kind)
    prec = torch.linalg.inv(torch.as_tensor(covs))
    return GMMParams(torch.as_tensor(w), torch.as_tensor(means),
                     cov.precisions_cholesky_from_precisions(prec), kind)


@pytest.mark.parametrize("kind", ["full", "VVV", "EEV"])
@pytest.mark.parametrize("workers", [1, 3])
def test_a_grouped_pass_equals_the_float64_pass(kind, workers, monkeypatch):
    # Independent truth: the float64 pass of the same float32 values under the
    # same parameters.  Clusters 40 standard deviations apart; the rows'
    # sample weights go with them into their groups.
    centres, X = _clusters(6000, 5, 6, 40.0)
    X32 = torch.as_tensor(X, dtype=torch.float32)
    w = torch.as_tensor(np.random.default_rng(1).uniform(0.5, 2.0, len(X)), dtype=torch.float32)
    p64 = _params(centres, X, kind)
    p32 = p64.to(dtype=torch.float32)
    at = moment_shift(p32)
    assert at.dim() == 2  # far from the mixture mean: moments per component
    built = []
    original = og.OwnerGroups.build.__func__
    monkeypatch.setattr(og.OwnerGroups, "build",
                        classmethod(lambda cls, *a: built.append(1) or original(cls, *a)))
    for weights in (None, w):
        cache = FeatureCache(X32.mean(0, dtype=torch.float64))
        # The first pass has no earlier means to tell settled ones: float64.
        accumulate(iter_chunks(X32, weights, 800), p32, at, cache=cache, workers=workers)
        assert cache.owner_groups is None
        got = accumulate(iter_chunks(X32, weights, 800), p32, at, cache=cache, workers=workers)
        ref = accumulate(iter_chunks(X32.double(), None if weights is None else weights.double(), 800),
                         p64, at.double())
        assert cache.owner_groups is not None
        assert cache._bytes == 0 and not cache._store  # the float64 features went
        np.testing.assert_allclose(got.nk.numpy(), ref.nk.numpy(), rtol=1e-6)
        np.testing.assert_allclose(got.s2.numpy(), ref.s2.numpy(), rtol=2e-6,
                                   atol=2e-6 * float(ref.s2.abs().max()))
        # s1, around each component's own mean, is a sum that cancels to
        # nearly zero: its rounding is relative to nk times a deviation.
        spread = float((ref.s2.diagonal(dim1=-2, dim2=-1) / ref.nk.unsqueeze(1)).max().sqrt())
        np.testing.assert_allclose(got.s1.numpy(), ref.s1.numpy(),
                                   atol=1e-6 * float(ref.nk.max()) * spread)
        assert float(got.log_likelihood) == pytest.approx(float(ref.log_likelihood), rel=1e-7)
        assert float(got.weight) == pytest.approx(float(ref.weight), rel=1e-7)
    assert len(built) == 2


@pytest.mark.parametrize("separation", [100.0, 1e3])
@pytest.mark.parametrize("own_passes", [True, False])
def test_far_apart_clusters_keep_their_covariance(separation, own_passes, monkeypatch):
    # Clusters hundreds to a thousand standard deviations apart, enough rows
    # for the kept features: float32 follows the float64 fit of the same
    # float32 values from the same start, with float32 passes of its own
    # and with float64 passes (gaussmix.expectation.float64_passes).
    if own_passes:
        monkeypatch.setattr(expectation, "SMALL_PASS_WORK", 0)
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(1500, 3)), rng.normal(size=(1500, 3)) * 0.5 + separation]
    X = X.astype(np.float32)
    kw = dict(n_components=2, tol=0, max_iter=15, weights_init=[0.5, 0.5],
              means_init=[[0.1] * 3, [separation + 0.1] * 3],
              precisions_init=np.stack([np.eye(3)] * 2) * 0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm32 = GaussianMixture(**kw).fit(X)
        gm64 = GaussianMixture(**kw, dtype="float64").fit(X)
    assert gm32.fit_events_ == []
    np.testing.assert_allclose(gm32.covariances_, gm64.covariances_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gm32.means_, gm64.means_, rtol=1e-6, atol=1e-5)


def _grouping_case(n, d, k, rows):
    """float32 parameters near the truth of clusters 30 sd apart, their packed
    form, the data's chunks and the data."""
    centres, X = _clusters(n, d, k, 30.0)
    p = _params(centres, X).to(dtype=torch.float32)
    form = p.cov.pass_form(k, d, p.means.device)
    return p, form, list(iter_chunks(torch.as_tensor(X, dtype=torch.float32), None, rows)), X


def test_groups_go_stale_when_a_mean_moves_far():
    p, form, chunks, _ = _grouping_case(3000, 3, 4, 1000)
    groups = og.OwnerGroups.build(form, chunks, p, 1000)
    # Every row sits in the group of its nearest mean, features around it.
    assert sum(f.shape[0] for _, f, _ in groups.segments) == 3000
    assert not groups.stale(p)
    # Move component 2 by 2 and by 4 of its standard deviations along its
    # first principal axis.
    cov = p.get_covariances()[2].double()
    vals, vecs = torch.linalg.eigh(cov)
    for steps, stale in ((2.0, False), (4.0, True)):
        moved = p.means.clone()
        moved[2] += (steps * vals[-1].sqrt() * vecs[:, -1]).float()
        q = GMMParams(p.weights, moved, p.precisions_cholesky, "full")
        assert groups.stale(q) == stale


def test_groups_wait_while_the_means_move():
    # Stale groups are rebuilt only once the means have settled: a pass while
    # they still move runs the kept form in float64 (owner_groups -> None).
    p, form, chunks, X = _grouping_case(3000, 3, 4, 1000)
    cache = FeatureCache(torch.as_tensor(X).mean(0))
    assert og.owner_groups(cache, form, chunks, p, 1000) is None  # nothing to compare with
    first = og.owner_groups(cache, form, chunks, p, 1000, workers=2)  # settled
    assert first is not None and og.owner_groups(cache, form, chunks, p, 1000) is first
    sd = p.get_covariances()[0].double().diagonal().sqrt().max()
    moved = p.means.clone()
    moved[0, 0] += float(50 * sd)
    q = GMMParams(p.weights, moved, p.precisions_cholesky, "full")
    assert og.owner_groups(cache, form, chunks, q, 1000) is None  # moved in the last pass
    rebuilt = og.owner_groups(cache, form, chunks, q, 1000)  # settled: new groups
    assert rebuilt is not None and rebuilt is not first and not rebuilt.stale(q)


def test_stale_groups_are_rebuilt_at_a_moderate_pace():
    # Groups that went stale are rebuilt while the means move less than
    # REBUILD_FRACTION of the staleness distance per pass (more than the
    # SETTLED_FRACTION that a first build waits for); a faster move goes back
    # to the float64 form.
    p, form, chunks, X = _grouping_case(3000, 3, 4, 1000)
    cache = FeatureCache(torch.as_tensor(X).mean(0))
    assert og.owner_groups(cache, form, chunks, p, 1000) is None
    first = og.owner_groups(cache, form, chunks, p, 1000)
    assert first is not None
    limit = og.FAR_IN_FLOAT32 ** 0.5  # the staleness distance, in sd
    pace = 0.5 * (og.SETTLED_FRACTION + og.REBUILD_FRACTION) * limit
    vals, vecs = torch.linalg.eigh(p.get_covariances()[1].double())
    step = (pace * vals[-1].sqrt() * vecs[:, -1]).float()
    q, passes = p, 0
    while True:  # component 1 drifts at that pace until the groups go stale
        moved = q.means.clone()
        moved[1] += step
        q = GMMParams(p.weights, moved, p.precisions_cholesky, "full")
        passes += 1
        groups = og.owner_groups(cache, form, chunks, q, 1000)
        if groups is not first:
            break
    assert passes == math.ceil(limit / pace + 1e-9)
    assert groups is not None and not groups.stale(q)
    # A faster move once these are stale: back to the float64 form.
    moved = q.means.clone()
    moved[1] += step * (limit + 0.1) / pace
    fast = GMMParams(p.weights, moved, p.precisions_cholesky, "full")
    assert groups.stale(fast)
    assert og.owner_groups(cache, form, chunks, fast, 1000) is None


@pytest.mark.parametrize("init_params, first_grouped", [("kmeans", True), ("k-means++", False)])
def test_a_fit_from_kmeans_groups_its_first_pass(init_params, first_grouped, monkeypatch):
    # k-means' centres count as settled, so the first float32 pass of such a
    # fit already runs on owner groups; other starts wait for a second pass.
    centres, X = _clusters(4000, 3, 4, 30.0)
    monkeypatch.setattr(expectation, "SMALL_PASS_WORK", 0)  # float32 passes of its own
    calls = []
    real = og.owner_groups

    def spy(*args, **kwargs):
        groups = real(*args, **kwargs)
        calls.append(groups is not None)
        return groups

    monkeypatch.setattr(og, "owner_groups", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm32 = GaussianMixture(4, init_params=init_params, random_state=0, max_iter=3,
                               tol=0.0).fit(X.astype(np.float32))
    assert calls and calls[0] is first_grouped
    # The same fit in float64 (no groups) ends at the same mixture.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm64 = GaussianMixture(4, init_params=init_params, random_state=0, max_iter=3,
                               tol=0.0).fit(X)
    np.testing.assert_allclose(gm32.means_, gm64.means_, rtol=1e-5, atol=1e-4)
    assert abs(gm32.lower_bound_ - gm64.lower_bound_) < 1e-5 * abs(gm64.lower_bound_)


def test_groups_too_large_for_the_cache_run_in_float64():
    p, form, chunks, X = _grouping_case(3000, 3, 4, 1000)
    cache = FeatureCache(torch.as_tensor(X).mean(0), limit=3000 * form.feature_width(3) * 4 - 1)
    for _ in range(2):
        assert og.owner_groups(cache, form, chunks, p, 1000) is None
    assert cache.owner_groups is None


def test_groups_built_by_workers_equal_one_thread():
    p, form, chunks, _ = _grouping_case(5000, 4, 5, 700)
    one = og.OwnerGroups.build(form, chunks, p, 700)
    three = og.OwnerGroups.build(form, chunks, p, 700, workers=3)
    assert [g for g, _, _ in one.segments] == [g for g, _, _ in three.segments]
    assert all(torch.equal(a, b) for (_, a, _), (_, b, _) in zip(one.segments, three.segments))
    assert one.n_bytes == three.n_bytes


@pytest.mark.parametrize("separation", [8.0, 40.0])
def test_left_out_components_are_provably_negligible(separation):
    # The bound behind the skipped GEMM columns, checked row by row: a
    # component inactive in a group is at least SKIP_NATS below the row's
    # best component, for every row of the group (float64 log-densities).
    from gaussmix.covariance.base import _LOG_2PI
    from gaussmix.expectation import estimate_weighted_log_prob

    centres, X = _clusters(4000, 4, 6, separation, seed=2)
    p64 = _params(centres, X)
    p = p64.to(dtype=torch.float32)
    form = p.cov.pass_form(6, 4, p.means.device)
    X32 = torch.as_tensor(X, dtype=torch.float32)
    groups = og.OwnerGroups.build(form, list(iter_chunks(X32, None, 1000)), p, 1000)
    const = p.log_weight_terms() + (p.cov.log_det(p.precisions_cholesky, 4) - 0.5 * 4 * _LOG_2PI)
    active = groups.active(p, const)
    # Rows as the features hold them: c_g + (x - c_g) rounded, per group.
    origin = groups.centres.mean(0)
    c = (groups.centres - origin).float()
    owner = torch.addmm((c * c).sum(1), X32 - origin.float(), c.T, alpha=-2.0).argmin(1)
    logp = estimate_weighted_log_prob(X32.double(), p64)
    skipped = 0
    for g in range(6):
        rows = logp[owner == g]
        out = ~active[g]
        if rows.shape[0] and bool(out.any()):
            gap = rows.amax(1, keepdim=True) - rows[:, out]
            assert float(gap.min()) >= og.SKIP_NATS
            skipped += int(out.sum())
    if separation >= 40:
        assert skipped > 0  # the separated case does skip
