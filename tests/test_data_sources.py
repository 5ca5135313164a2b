"""Out-of-core sources: DataLoader, re-iterables, memmaps and .npy paths fit exactly
like in-memory data; chunking does not change results; reservoir sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from torch.utils.data import DataLoader, TensorDataset

from gaussmix import GaussianMixture
from gaussmix.data import DataSource, is_source, reservoir_sample

COV_TYPES = ("full", "tied", "diag", "spherical")
pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.usefixtures("single_thread"),
]



@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    X = np.concatenate([
        rng.normal(size=(500, 3)) @ np.array([[1.0, 0.4, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.6]]),
        rng.normal(size=(400, 3)) * 0.5 + [3.0, 1.0, 0.0],
        rng.normal(size=(300, 3)) * 1.2 + [-1.0, 4.0, 2.0],
    ]) + 100.0  # an offset, so that the shift of the moments matters
    X = X[rng.permutation(len(X))]
    w = rng.uniform(0.1, 2.0, size=len(X))
    return X, w


def _init(cov_type, d=3):
    k = 3
    prec = {
        "full": np.stack([np.eye(d)] * k),
        "tied": np.eye(d),
        "diag": np.ones((k, d)),
        "spherical": np.ones(k),
    }[cov_type]
    means = np.array([[100.0, 100.0, 100.0], [102.5, 101.0, 100.0], [99.0, 103.0, 101.5]])
    return dict(weights_init=np.full(k, 1 / 3), means_init=means, precisions_init=prec)


def _fit(X, cov_type="full", sample_weight=None, **kw):
    return GaussianMixture(3, covariance_type=cov_type, tol=1e-10, max_iter=25, **_init(cov_type), **kw).fit(
        X, sample_weight=sample_weight
    )


def _assert_same(a, b, rtol=1e-10):
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        x = np.asarray(getattr(a, name), dtype=np.float64)
        y = np.asarray(getattr(b, name), dtype=np.float64)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.abs(y).max(), err_msg=name)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.lower_bound_, b.lower_bound_, rtol=rtol)


@pytest.fixture(scope="module")
def reference(data):
    X, w = data
    return {(ct, weighted): _fit(X, ct, w if weighted else None) for ct in COV_TYPES for weighted in (0, 1)}


def test_in_memory_fit_matches_scikit_learn(data, reference):
    # The reference itself against an independent implementation, same initial parameters.
    X, w = data
    for ct in COV_TYPES:
        sk = SkGaussianMixture(3, covariance_type=ct, tol=1e-10, max_iter=25, **_init(ct)).fit(X)
        np.testing.assert_allclose(reference[ct, 0].means_, sk.means_, rtol=1e-8)
        np.testing.assert_allclose(reference[ct, 0].covariances_, sk.covariances_, rtol=1e-6)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_dataloader_equals_in_memory(data, reference, cov_type):
    X, w = data
    loader = DataLoader(TensorDataset(torch.from_numpy(X)), batch_size=333)
    gm = _fit(loader, cov_type)
    assert isinstance(gm.means_, torch.Tensor)  # tensor batches give tensor attributes
    _assert_same(gm, reference[cov_type, 0])
    weighted = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(w)), batch_size=250, shuffle=True)
    _assert_same(_fit(weighted, cov_type), reference[cov_type, 1])


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_list_of_arrays_equals_in_memory(data, reference, cov_type):
    X, w = data
    cuts = [0, 17, 400, 401, 1000, len(X)]
    batches = [X[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    gm = _fit(batches, cov_type)
    assert isinstance(gm.means_, np.ndarray)
    _assert_same(gm, reference[cov_type, 0])
    pairs = [(X[a:b], w[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    _assert_same(_fit(pairs, cov_type), reference[cov_type, 1])


def test_memmap_and_npy_path_equal_in_memory(data, reference, tmp_path):
    X, _ = data
    path = tmp_path / "X.npy"
    np.save(path, X)
    raw = tmp_path / "X.f64"
    mm = np.memmap(raw, dtype=np.float64, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    ro = np.memmap(raw, dtype=np.float64, mode="r", shape=X.shape)
    for ct in COV_TYPES:
        _assert_same(_fit(str(path), ct, batch_size=256), reference[ct, 0])
        _assert_same(_fit(ro, ct, batch_size=100), reference[ct, 0])
    _assert_same(_fit(path, "full"), reference["full", 0])  # pathlib.Path


def test_custom_reiterable_and_float32(data):
    X, _ = data

    class Shards:
        def __iter__(self):
            for i in range(0, len(X), 200):
                yield torch.from_numpy(X[i : i + 200]).float()

    a = _fit(Shards(), "diag")
    b = _fit(torch.from_numpy(X).float(), "diag")
    assert a.means_.dtype == torch.float32
    # float32 E-steps with float64 statistics: same up to float32 rounding.
    np.testing.assert_allclose(a.means_.numpy(), b.means_.numpy(), rtol=1e-5)


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_batch_size_does_not_change_in_memory_results(data, reference, cov_type):
    X, w = data
    for bs in (1_000_000, 500, 37):
        _assert_same(_fit(X, cov_type, w, batch_size=bs), reference[cov_type, 1])


def test_default_initialisation_on_a_source(data):
    X, _ = data
    batches = [X[i : i + 100] for i in range(0, len(X), 100)]
    a = GaussianMixture(3, random_state=0).fit(batches)
    b = GaussianMixture(3, random_state=0).fit(X)
    # Different k-means starts (a reservoir permutation vs the array), the same optimum.
    order_a, order_b = np.argsort(a.means_[:, 0]), np.argsort(b.means_[:, 0])
    np.testing.assert_allclose(a.means_[order_a], b.means_[order_b], atol=1e-3)
    np.testing.assert_allclose(a.lower_bound_, b.lower_bound_, atol=1e-6)
    # Reproducible from random_state.
    np.testing.assert_array_equal(GaussianMixture(3, random_state=0).fit(batches).means_, a.means_)


def test_reservoir_sample_without_replacement(data):
    X, _ = data
    src = DataSource([X[i : i + 128] for i in range(0, len(X), 128)])
    src.device, src.dtype = torch.device("cpu"), torch.float64
    summary = reservoir_sample(src, 300, torch.Generator().manual_seed(0))
    assert summary.n_samples == len(X) and summary.n_features == 3
    np.testing.assert_allclose(summary.feature_sumsq, (X**2).sum(0), rtol=1e-12)
    rows = {tuple(r) for r in summary.sample.numpy()}
    assert len(rows) == 300 and rows <= {tuple(r) for r in X}
    full = reservoir_sample(src, 5000, torch.Generator().manual_seed(0)).sample.numpy()
    np.testing.assert_array_equal(np.sort(full, axis=0), np.sort(X, axis=0))


def test_weighted_reservoir_draws_proportionally_to_weights():
    # With one slot, A-Res picks row i with probability w_i / sum(w) exactly.
    w = np.arange(0.0, 10.0)  # row 0 has weight zero: never drawn
    X = np.arange(10.0).reshape(-1, 1)
    src = DataSource([(X[:4], w[:4]), (X[4:], w[4:])])
    src.device, src.dtype = torch.device("cpu"), torch.float64
    gen = torch.Generator().manual_seed(1)
    trials = 3000
    counts = np.zeros(10)
    for _ in range(trials):
        counts[int(reservoir_sample(src, 1, gen).sample[0, 0])] += 1
    expected = trials * w / w.sum()
    assert counts[0] == 0
    chi2 = ((counts[1:] - expected[1:]) ** 2 / expected[1:]).sum()
    assert chi2 < 27.9  # 99.9% quantile of chi-square with 8 degrees of freedom


def test_source_detection():
    X = np.zeros((4, 2))
    assert not is_source(X) and not is_source(torch.zeros(4, 2)) and not is_source([[1.0, 2.0], [3.0, 4.0]])
    assert is_source([X, X]) and is_source([(X, np.ones(4))]) and is_source("data.npy")
    assert is_source(DataLoader(TensorDataset(torch.zeros(4, 2))))


def test_bad_sources(data, tmp_path):
    X, w = data
    gm = GaussianMixture(2)
    with pytest.raises(ValueError, match="same number of features"):
        gm.fit([X[:100], X[100:, :2]])
    with pytest.raises(ValueError, match="re-iterable"):
        gm.fit(x for x in [X[:100], X[100:]])
    with pytest.raises(ValueError, match=r"\.npy"):
        gm.fit(str(tmp_path / "data.csv"))
    with pytest.raises(ValueError, match="Cannot open"):
        gm.fit(str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match="yield"):
        gm.fit([X[:100], X[100:]], sample_weight=w)
    bad = X[:100].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gm.fit([X[100:], bad])
    with pytest.raises(ValueError, match="negative|Negative"):
        gm.fit([(X[:100], -w[:100])])
    with pytest.raises(ValueError, match="fit_predict"):
        gm.fit_predict([X[:100], X[100:]])
    with pytest.raises(ValueError, match="3 elements"):
        gm.fit([(X[:100], w[:100], w[:100])])

    class Shrinking:
        """Yields fewer rows on every pass: not the same data each time."""

        def __init__(self):
            self.n = len(X)

        def __iter__(self):
            self.n -= 10
            yield X[: self.n]

    with pytest.raises(ValueError, match="same data on every pass"):
        gm.fit(Shrinking())
