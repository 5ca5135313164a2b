"""The fast E-step path equals the per-component reference path, on many shapes.

The reference (:mod:`gaussmix.kernels.reference`) centres each point on each
component's mean before any product and loops over components; the fast path
folds the means into one GEMM per chunk.  They must agree on every shape,
including D = 1, K = 1, D and K not multiples of 16, and N not a multiple of
the chunk size.  A scipy check anchors the reference itself.
"""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from gaussmix.covariance import (
    COVARIANCE_TYPES,
    get_covariance_type,
    second_moment_outer,
    second_moment_weighted,
)
from gaussmix.data import chunk_rows, iter_chunks
from gaussmix.em import accumulate, chunk_stats, e_step, estimate_weighted_log_prob, moment_shift
from gaussmix.params import GMMParams
from gaussmix.stats import SuffStats
from gaussmix.kernels import allow_tf32, matmul_precision, reference, set_allow_tf32

SHAPES = [(1, 1, 1), (7, 1, 3), (50, 2, 1), (33, 3, 5), (64, 17, 3), (40, 5, 19), (129, 16, 16), (25, 33, 2)]
FIELDS = ("nk", "s1", "s2", "log_likelihood", "weight", "count")


def random_params(covariance_type, k, d, gen, dtype=torch.float64):
    return reference.random_params(covariance_type, k, d, gen).to(dtype=dtype)


def relerr(a, b):
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("covariance_type", sorted(COVARIANCE_TYPES))
@pytest.mark.parametrize("n,d,k", SHAPES)
def test_log_gaussian_matches_reference(covariance_type, n, d, k):
    gen = torch.Generator().manual_seed(n * 1000 + d * 10 + k)
    p = random_params(covariance_type, k, d, gen)
    X = 2.0 * torch.randn(n, d, generator=gen, dtype=torch.float64) + 1.0
    shift = p.shift
    xc, means_c = X - shift, p.means - shift
    strat = p.cov
    fast = strat.log_gaussian(xc, means_c, p.precisions_cholesky)
    ref = reference.log_gaussian(covariance_type, xc, means_c, p.precisions_cholesky)
    assert fast.shape == (n, k)
    assert relerr(fast, ref) < 1e-12
    maha = strat.mahalanobis(xc, means_c, p.precisions_cholesky)
    assert relerr(maha, reference.mahalanobis(covariance_type, xc, means_c, p.precisions_cholesky)) < 1e-11
    assert bool((maha >= 0).all())


@pytest.mark.parametrize("covariance_type", sorted(COVARIANCE_TYPES))
@pytest.mark.parametrize("n,d,k", SHAPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_chunk_stats_match_reference(covariance_type, n, d, k, weighted):
    gen = torch.Generator().manual_seed(7 * n + 3 * d + k)
    p = random_params(covariance_type, k, d, gen)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64) * 2.0 - 0.5
    w = torch.rand(n, generator=gen, dtype=torch.float64) * 3.0 if weighted else None
    fast = chunk_stats(X, p, w)
    ref = reference.chunk_stats(X, p, w)
    for f in FIELDS:
        got = getattr(fast, f)
        assert got.dtype == torch.float64
        assert tuple(got.shape) == tuple(ref[f].shape), f
        assert relerr(got, ref[f]) < 1e-11, f
    log_resp, lpn = e_step(X, p)
    assert relerr(log_resp.exp(), ref["log_resp"].exp()) < 1e-11
    assert torch.allclose(log_resp.exp().sum(1), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-12)
    wlp = estimate_weighted_log_prob(X, p)
    assert relerr(torch.logsumexp(wlp, 1), lpn) < 1e-13


@pytest.mark.parametrize("n,d,k", SHAPES)
def test_both_full_second_moment_formulations(n, d, k):
    gen = torch.Generator().manual_seed(n + 31 * d + 7 * k)
    xc = torch.randn(n, d, generator=gen, dtype=torch.float64)
    resp = torch.rand(n, k, generator=gen, dtype=torch.float64)
    ref = reference.second_moment("full", xc, resp)
    assert relerr(second_moment_weighted(xc, resp), ref) < 1e-12
    assert relerr(second_moment_outer(xc, resp), ref) < 1e-12
    assert relerr(get_covariance_type("full").second_moment(xc, resp), ref) < 1e-12


@pytest.mark.parametrize("covariance_type", sorted(COVARIANCE_TYPES))
def test_accumulate_over_uneven_chunks_equals_reference(covariance_type):
    """N not a multiple of the chunk, a last chunk of one row, mixed weights."""
    n, d, k = 1001, 6, 4
    gen = torch.Generator().manual_seed(5)
    p = random_params(covariance_type, k, d, gen)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    w = torch.rand(n, generator=gen, dtype=torch.float64)
    ref = reference.chunk_stats(X, p, w)
    for rows in (1000, 333, 128, n):
        total = accumulate(iter_chunks(X, w, rows), p)
        for f in FIELDS:
            assert relerr(getattr(total, f), ref[f]) < 1e-11, (rows, f)
    # Unweighted chunks count as weight one next to weighted ones.
    mixed = accumulate([(X[:500], w[:500]), (X[500:], None)], p)
    w_mixed = torch.cat([w[:500], torch.ones(n - 500, dtype=torch.float64)])
    ref_mixed = reference.chunk_stats(X, p, w_mixed)
    for f in FIELDS:
        assert relerr(getattr(mixed, f), ref_mixed[f]) < 1e-11, f


@pytest.mark.parametrize("covariance_type", sorted(COVARIANCE_TYPES))
def test_float32_fast_path_close_to_float64_reference(covariance_type):
    """Float32 data and matmuls, float64 totals: close to the float64 truth."""
    n, d, k = 2000, 9, 5
    gen = torch.Generator().manual_seed(11)
    p64 = random_params(covariance_type, k, d, gen)
    X64 = torch.randn(n, d, generator=gen, dtype=torch.float64) * 2.0
    p32 = p64.to(dtype=torch.float32)
    at = moment_shift(p32)
    # float32 moments of full/diag/spherical are per component when a mean is far
    # (in its own units) from the mixture mean, as with these spread-out means.
    assert at.dim() == (1 if covariance_type == "tied" else 2)
    ref = reference.chunk_stats(X64, p64, None, centres=None if at.dim() == 1 else at.double())
    got = accumulate(iter_chunks(X64.float(), None, 300), p32)
    assert got.s2.dtype == torch.float64
    for f in FIELDS:
        assert relerr(getattr(got, f), ref[f]) < 1e-4, f


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_per_component_moments_give_the_same_m_step(covariance_type):
    """Moments around each component's mean, or around the mixture mean: the
    same M-step (float64), whatever the chunking."""
    from gaussmix.em import m_step

    n, d, k = 900, 4, 3
    gen = torch.Generator().manual_seed(5)
    p = random_params(covariance_type, k, d, gen)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64) * 3.0
    glob = reference.chunk_stats(X, p)
    per = reference.chunk_stats(X, p, centres=p.means)
    eps = float(torch.finfo(torch.float64).eps)

    def step(st, at):
        stats = SuffStats(**{f: st[f] for f in FIELDS})
        return m_step(stats, at, covariance_type, 1e-6, eps)

    a, b = step(glob, p.shift), step(per, p.means)
    assert relerr(b.means, a.means) < 1e-12
    assert relerr(b.covariances, a.covariances) < 1e-12


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_float32_close_components_keep_the_one_gemm_path(covariance_type):
    """Means within a few of their standard deviations of the mixture mean: one
    shift is accurate enough in float32, and the pass stays on the GEMM path."""
    gen = torch.Generator().manual_seed(2)
    p = random_params(covariance_type, 3, 4, gen, dtype=torch.float32)
    p = GMMParams(p.weights, p.means * 0.05, p.precisions_cholesky, covariance_type)
    assert moment_shift(p).dim() == 1
    far = GMMParams(p.weights, p.means * 400.0, p.precisions_cholesky, covariance_type)
    assert moment_shift(far).dim() == 2
    assert moment_shift(far.to(dtype=torch.float64)).dim() == 1


def test_reference_matches_scipy():
    """The reference itself, against scipy's multivariate normal density."""
    gen = torch.Generator().manual_seed(2)
    d, k = 4, 3
    X = torch.randn(20, d, generator=gen, dtype=torch.float64)
    for covariance_type in sorted(COVARIANCE_TYPES):
        p = random_params(covariance_type, k, d, gen)
        cov = p.get_covariances()
        got = reference.log_gaussian(covariance_type, X, p.means, p.precisions_cholesky)
        for j in range(k):
            if covariance_type == "full":
                c = cov[j]
            elif covariance_type == "tied":
                c = cov
            elif covariance_type == "diag":
                c = torch.diag(cov[j])
            else:
                c = cov[j] * torch.eye(d, dtype=torch.float64)
            want = multivariate_normal(p.means[j].numpy(), c.numpy()).logpdf(X.numpy())
            np.testing.assert_allclose(got[:, j].numpy(), want, rtol=1e-10)


def test_far_points_do_not_underflow():
    """Points far from every component keep valid responsibilities."""
    gen = torch.Generator().manual_seed(3)
    p = random_params("full", 3, 2, gen)
    X = torch.tensor([[1e3, -1e3], [0.0, 0.0], [-5e2, 2e2]], dtype=torch.float64)
    fast = chunk_stats(X, p)
    ref = reference.chunk_stats(X, p)
    assert bool(torch.isfinite(fast.log_likelihood))
    assert relerr(fast.nk, ref["nk"]) < 1e-10
    assert relerr(fast.log_likelihood, ref["log_likelihood"]) < 1e-12


def test_chunk_rows_bounds():
    assert chunk_rows(10, 3, 2) == 10
    assert 1 <= chunk_rows(100_000, 16, 16) <= 100_000
    old = torch.get_num_threads()
    try:
        # A chunk's intermediates (B, K*D) plus (B, K) and (B, D) ones stay
        # within the cache-sized budget: 2**20 float64 values on one thread,
        # 12 MiB of either dtype on several.
        per_row = 16 * 16 + 4 * 16 + 2 * 16
        torch.set_num_threads(1)
        rows = chunk_rows(10**7, 16, 16)
        assert rows * per_row <= 1 << 20 < (rows + 1) * per_row
        assert chunk_rows(10**7, 16, 16, dtype=torch.float32) == rows
        torch.set_num_threads(2)
        for dtype, size in ((torch.float64, 8), (torch.float32, 4)):
            rows = chunk_rows(10**7, 16, 16, dtype=dtype)
            assert rows * per_row * size <= 12 << 20 < (rows + 1) * per_row * size
    finally:
        torch.set_num_threads(old)
    assert chunk_rows(10**7, 1000, 100) >= 256
    assert chunk_rows(10**7, 4, 4, batch_size=77) == 77


def test_tf32_switch(monkeypatch):
    monkeypatch.delenv("GAUSSMIX_ALLOW_TF32", raising=False)
    set_allow_tf32(None)
    assert allow_tf32() is False
    monkeypatch.setenv("GAUSSMIX_ALLOW_TF32", "1")
    assert allow_tf32() is True
    set_allow_tf32(False)
    try:
        assert allow_tf32() is False
    finally:
        set_allow_tf32(None)
    # On the CPU the switch changes nothing: torch's global TF32 flag is untouched.
    before = torch.backends.cuda.matmul.allow_tf32
    set_allow_tf32(True)
    try:
        with matmul_precision("cpu"):
            assert torch.backends.cuda.matmul.allow_tf32 == before
    finally:
        set_allow_tf32(None)


@pytest.mark.parametrize("cols", [1, 2, 31, 32, 33, 100])
def test_row_sums_both_branches(cols):
    from gaussmix.covariance import row_sums

    a = torch.randn(57, cols, dtype=torch.float64, generator=torch.Generator().manual_seed(cols))
    np.testing.assert_allclose(row_sums(a).numpy(), a.numpy().sum(1), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("weighted", [False, True])
def test_lloyd_pass_and_kmeans(weighted):
    """The vectorised Lloyd pass equals a direct computation, and k-means
    recovers well-separated clusters."""
    from sklearn.metrics import adjusted_rand_score

    from gaussmix.kmeans import _lloyd_pass, kmeans

    gen = torch.Generator().manual_seed(4)
    k, d = 4, 3
    centers = 10.0 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    truth = torch.arange(600) % k
    X = centers[truth] + 0.3 * torch.randn(600, d, generator=gen, dtype=torch.float64)
    w = torch.rand(600, generator=gen, dtype=torch.float64) + 0.5 if weighted else None
    guess = X[:k].clone()
    labels, counts, sums = _lloyd_pass(X, w, guess, 250, True)
    want = torch.cdist(X, guess).argmin(1)
    assert torch.equal(labels, want)
    ww = torch.ones(600, dtype=torch.float64) if w is None else w
    for j in range(k):
        sel = want == j
        assert float(counts[j]) == pytest.approx(float(ww[sel].sum()), rel=1e-12)
        np.testing.assert_allclose(sums[j].numpy(), (X[sel] * ww[sel, None]).sum(0).numpy(), rtol=1e-10, atol=1e-9)
    got = kmeans(X + 1e6, k, torch.Generator().manual_seed(0), w, rows=128)
    assert adjusted_rand_score(truth.numpy(), got.numpy()) == 1.0


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kmeans_plusplus_in_blocks_and_on_separated_clusters(weighted, dtype, monkeypatch):
    """Seeding in column blocks picks the rows one block picks; on clusters
    far apart, the greedy D^2 seeding puts one seed in each cluster."""
    import gaussmix.kmeans as km

    gen = torch.Generator().manual_seed(7)
    k, d, n = 6, 4, 3000
    centers = 100.0 * torch.randn(k, d, generator=gen, dtype=torch.float64)
    truth = torch.arange(n) % k
    X = (centers[truth] + torch.randn(n, d, generator=gen, dtype=torch.float64) + 1e3).to(dtype)
    w = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5 if weighted else None
    _, whole = km.kmeans_plusplus(X, k, torch.Generator().manual_seed(1), w, 256)
    monkeypatch.setattr(km, "_SEED_BLOCK_ELEMENTS", 1)  # blocks of 256 rows
    seeds, blocks = km.kmeans_plusplus(X, k, torch.Generator().manual_seed(1), w, 256)
    assert torch.equal(whole, blocks)
    assert torch.equal(seeds, X[blocks])
    assert sorted(truth[blocks].tolist()) == list(range(k))


def test_params_to_keeps_the_bundle_when_nothing_moves():
    f64 = dict(dtype=torch.float64)
    p = GMMParams(torch.full((2,), 0.5, **f64), torch.zeros(2, 3, **f64), torch.ones(2, 3, **f64),
                  "diag", covariances=torch.ones(2, 3, **f64))
    assert p.to() is p
    assert p.to(dtype=torch.float64, device=torch.device("cpu")) is p
    q = p.to(dtype=torch.float32)
    assert q is not p and all(t.dtype == torch.float32
                              for t in (q.weights, q.means, q.precisions_cholesky, q.covariances))
    # A device given by name takes the general path; the tensors stay the same.
    r = p.to(device="cpu")
    assert r.means is p.means and r.covariances is p.covariances


def test_shared_partitions_return_what_a_separate_kmeans_returns():
    # Inside _shared_partitions a repeated k-means (same data, K, generator
    # state) is computed once; the labels and the generator's state after
    # the call must equal an uncached call's, and anything else that differs
    # (K, the generator's state, the data) must be computed afresh.
    from gaussmix.kmeans import _shared_partitions, kmeans
    X = torch.from_numpy(np.random.default_rng(0).normal(size=(300, 3)))

    def run(k, seed, data=X):
        gen = torch.Generator().manual_seed(seed)
        labels = kmeans(data, k, gen)
        return labels, torch.rand(3, generator=gen)  # the generator's next draws

    other = X.flip(0)  # the same rows in reverse: other labels, same multiset of values
    plain = {(k, s): run(k, s) for k in (3, 4) for s in (0, 1)}
    plain_other = run(3, 0, other)[0]
    assert not torch.equal(plain_other, plain[(3, 0)][0])
    with _shared_partitions():
        for _ in range(2):
            for (k, s), (labels, after) in plain.items():
                got, got_after = run(k, s)
                assert torch.equal(got, labels) and torch.equal(got_after, after)
            assert torch.equal(run(3, 0, other)[0], plain_other)
    import gaussmix.kmeans as kmeans_mod
    assert kmeans_mod._SHARED.get() is None
