"""Chunk workers (gaussmix.chunk_workers): a pass's chunks dealt out to threads."""

import numpy as np
import pytest
import torch

import gaussmix.chunk_workers as cw
import gaussmix.fitting as fitting_mod
import gaussmix.threads as threads_mod
from gaussmix import GaussianMixture
from gaussmix.covariance import get_covariance_type
from gaussmix.data import chunk_rows, iter_chunks
from gaussmix.expectation import accumulate
from gaussmix.feature_cache import FeatureCache
from gaussmix.params import GMMParams


def _params(X, kind, k=4, seed=0):
    rng = np.random.default_rng(seed)
    d = X.shape[1]
    means = torch.as_tensor(X[rng.choice(len(X), k, replace=False)])
    shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[kind]
    prec = {"full": np.stack([np.eye(d)] * k), "tied": np.eye(d), "diag": np.ones((k, d)),
            "spherical": np.ones(k)}[kind] * 0.5
    assert prec.shape == shape
    cov = get_covariance_type(kind)
    return GMMParams(torch.full((k,), 1.0 / k, dtype=torch.float64), means,
                     cov.precisions_cholesky_from_precisions(torch.as_tensor(prec)), kind)


def _blobs(n=6000, d=3, k=4, spread=6.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(k, d))
    return centres[rng.integers(0, k, size=n)] + rng.normal(size=(n, d))


@pytest.mark.parametrize("kind", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_workers_sum_the_same_statistics(kind, dtype):
    X = _blobs()
    Xt = torch.as_tensor(X, dtype=dtype)
    p = _params(X, kind).to(dtype=dtype)
    w = torch.as_tensor(np.random.default_rng(1).uniform(0.5, 2.0, len(X)), dtype=dtype)
    for weights in (None, w):
        one = accumulate(list(iter_chunks(Xt, weights, 700)), p)
        three = accumulate(iter_chunks(Xt, weights, 700), p, workers=3)
        again = accumulate(iter_chunks(Xt, weights, 700), p, workers=3)
        tol = 1e-12 if dtype == torch.float64 else 1e-6
        for name in ("nk", "s1", "s2", "log_likelihood"):
            a, b = getattr(one, name), getattr(three, name)
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=tol, atol=tol * float(a.abs().max()))
            # A fixed number of workers adds in a fixed order: bit for bit.
            assert torch.equal(getattr(again, name), b)
        assert float(three.weight) == pytest.approx(float(one.weight), rel=1e-12)
        assert float(three.count) == len(X)


def test_workers_share_a_feature_cache():
    # The packed full form keeps its features across passes; workers build
    # their own chunks' features side by side.
    X = _blobs(n=6000, d=4, k=6)
    Xt = torch.as_tensor(X)
    p = _params(X, "full", k=6)
    centre = Xt.mean(0, dtype=torch.float64)
    cache = FeatureCache(centre)
    plain = accumulate(iter_chunks(Xt, None, 500), p)
    first = accumulate(iter_chunks(Xt, None, 500), p, cache=cache, workers=2)
    assert len(cache._store) == 12
    assert cache._bytes == sum(f[1].numel() * 8 for f in cache._store.values())
    second = accumulate(iter_chunks(Xt, None, 500), p, cache=cache, workers=2)
    for name in ("nk", "s1", "s2", "log_likelihood"):
        np.testing.assert_allclose(getattr(first, name).numpy(), getattr(plain, name).numpy(),
                                   rtol=1e-10, atol=1e-8)
        assert torch.equal(getattr(second, name), getattr(first, name))


def test_more_workers_than_chunks():
    X = _blobs(n=500)
    Xt = torch.as_tensor(X)
    p = _params(X, "diag")
    one = accumulate(iter_chunks(Xt, None, 300), p)
    many = accumulate(iter_chunks(Xt, None, 300), p, workers=8)
    np.testing.assert_allclose(many.s2.numpy(), one.s2.numpy(), rtol=1e-12)


def test_map_workers_keeps_order_modes_and_the_thread_setting(two_threads):
    seen = []

    def probe(i):
        seen.append((torch.get_num_threads(), torch.is_inference_mode_enabled(),
                     torch.is_grad_enabled()))
        return i * i

    with torch.inference_mode():
        assert cw.map_workers(probe, [3, 1, 2]) == [9, 1, 4]
    assert set(seen) == {(1, True, False)}
    assert torch.get_num_threads() == 2
    seen.clear()
    with torch.no_grad():
        cw.map_workers(probe, [0])
    # One part: it has the caller's two threads.
    assert seen == [(2, False, False)]


def test_map_workers_raises_the_error_and_restores_the_setting(two_threads):
    def fail(i):
        if i == 1:
            raise ValueError("bad chunk")
        return i

    with pytest.raises(ValueError, match="bad chunk"):
        cw.map_workers(fail, [0, 1, 2])
    assert torch.get_num_threads() == 2


def test_workers_for(two_threads, monkeypatch):
    assert cw.workers_for(threads_mod.SINGLE_THREAD_MAX_SAMPLES, "cpu") == 1
    assert cw.workers_for(threads_mod.SINGLE_THREAD_MAX_SAMPLES + 1, "cpu") == 2
    assert cw.workers_for(10**6, "meta") == 1
    torch.set_num_threads(64)
    assert cw.workers_for(10**6, "cpu") == cw.MAX_WORKERS


@pytest.mark.parametrize("n", [10_001, 100_000, 1_234_567])
@pytest.mark.parametrize("workers", [2, 3, 16])
def test_chunk_rows_give_each_worker_as_many_chunks(n, workers):
    rows = chunk_rows(n, 16, 16, "cpu", torch.float64, covariance_type="diag", workers=workers)
    assert -(-n // rows) % workers == 0
    # Never longer than a chunk sized for one thread: each worker runs on one.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        budget = chunk_rows(n, 16, 16, "cpu", torch.float64, covariance_type="diag")
    finally:
        torch.set_num_threads(old)
    assert rows <= budget


@pytest.mark.parametrize("kind", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fits_with_workers_match_fits_without(kind, dtype, two_threads, monkeypatch):
    # Above the one-thread size a fit deals its chunks out; the answer is the
    # single-threaded fit's up to the order of the sums.
    X = _blobs(n=12_000, d=3, k=4)
    used = []
    real = fitting_mod.workers_for

    def spy(n, device):
        used.append(real(n, device))
        return used[-1]

    monkeypatch.setattr(fitting_mod, "workers_for", spy)
    # (float32's stopping rule is kept well above its rounding.)
    kw = dict(n_components=4, covariance_type=kind, random_state=0, dtype=dtype,
              tol=1e-6 if dtype == "float64" else 1e-3)
    parallel = GaussianMixture(**kw).fit(X)
    assert used == [2]
    monkeypatch.setattr(fitting_mod, "workers_for", lambda n, device: 1)
    serial = GaussianMixture(**kw).fit(X)
    assert parallel.n_iter_ == serial.n_iter_
    tol = 1e-9 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(parallel.means_, serial.means_, rtol=tol, atol=tol)
    np.testing.assert_allclose(parallel.covariances_, serial.covariances_, rtol=tol, atol=tol)
    assert parallel.lower_bound_ == pytest.approx(serial.lower_bound_, rel=tol)


@pytest.mark.parametrize("kind", ["full", "tied", "diag", "spherical", "VEV"])
def test_batched_fits_with_workers_match_fits_without(kind, monkeypatch):
    # The batched engine's passes (plain and packed) share their chunks too.
    import gaussmix.batched as batched_mod
    from gaussmix.batched import fit_batched

    X = _blobs(n=2500, d=3, k=3)
    Xt = torch.as_tensor(X)
    inits = [_params(X, kind if kind != "VEV" else "full", k=k, seed=k) for k in (2, 3, 5)]
    if kind == "VEV":
        inits = [GMMParams(p.weights, p.means, p.precisions_cholesky, "VEV") for p in inits]
    monkeypatch.setattr(batched_mod, "workers_for", lambda n, device: 3)
    parallel = fit_batched(Xt, inits, reg_covar=1e-6, tol=1e-8, max_iter=40)
    monkeypatch.setattr(batched_mod, "workers_for", lambda n, device: 1)
    serial = fit_batched(Xt, inits, reg_covar=1e-6, tol=1e-8, max_iter=40)
    for a, b in zip(parallel, serial):
        assert a.n_iter == b.n_iter and a.converged == b.converged
        assert a.lower_bound == pytest.approx(b.lower_bound, rel=1e-11)
        np.testing.assert_allclose(a.params.means.numpy(), b.params.means.numpy(), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(a.params.get_covariances().numpy(),
                                   b.params.get_covariances().numpy(), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("n, rows, workers", [(10, 3, 2), (100_000, 8192, 2), (99_999, 65536, 3),
                                              (5, 8, 4), (7, 100, 1)])
def test_balanced_rows(n, rows, workers):
    b = cw.balanced_rows(n, rows, workers)
    assert 1 <= b <= rows
    if workers > 1 and n >= workers * workers:
        assert -(-n // b) % workers == 0


def _child_pass(queue):
    X = torch.as_tensor(_blobs(n=3000))
    p = _params(X.numpy(), "diag")
    stats = accumulate(iter_chunks(X, None, 500), p, workers=2)
    queue.put(float(stats.log_likelihood))


def test_a_forked_child_gets_its_own_workers():
    # The parent's pool threads do not exist in a forked child: a pass there
    # must not wait on them forever.
    import multiprocessing as mp

    X = torch.as_tensor(_blobs(n=3000))
    p = _params(X.numpy(), "diag")
    parent = float(accumulate(iter_chunks(X, None, 500), p, workers=2).log_likelihood)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_pass, args=(queue,))
    child.start()
    child.join(60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0
    assert queue.get(timeout=5) == parent


def test_inference_with_workers_matches_one_thread(two_threads, monkeypatch):
    # predict, predict_proba and score_samples share their chunks among the
    # workers above the one-thread size; rows come back in order.
    import gaussmix.mixture as mixture_mod

    X = _blobs(n=12_000, d=3, k=4)
    gm = GaussianMixture(4, random_state=0).fit(X)
    used = []
    real = mixture_mod.workers_for
    monkeypatch.setattr(mixture_mod, "workers_for", lambda n, device: used.append(real(n, device)) or 3)
    labels, proba, score = gm.predict(X), gm.predict_proba(X), gm.score_samples(X)
    assert used and set(used) == {2}
    monkeypatch.setattr(mixture_mod, "workers_for", lambda n, device: 1)
    np.testing.assert_array_equal(labels, gm.predict(X))
    np.testing.assert_allclose(proba, gm.predict_proba(X), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(score, gm.score_samples(X), rtol=1e-12)


def test_map_chunks_keeps_the_order():
    assert cw.map_chunks(lambda c: c * 10, range(7), 3) == [0, 10, 20, 30, 40, 50, 60]
    assert cw.map_chunks(lambda c: c, [], 3) == []
