"""Initial statistics of a hard partition (gaussmix.init)."""

import numpy as np
import pytest
import torch

import gaussmix.init as init
from gaussmix import GaussianMixture
from gaussmix.covariance import get_covariance_type


def _one_hot_stats(X, w, rows_idx, labels, k, cov, shift):
    """Independent truth: the one-hot pass over every row (rows outside
    ``rows_idx`` have no responsibility)."""
    n = X.shape[0]
    pos = torch.full((n,), -1, dtype=torch.long)
    pos[torch.arange(n) if rows_idx is None else rows_idx] = labels
    return init._stats_from_resp(X, w, lambda a, b: init.one_hot(pos[a:b], k), k, cov, shift, 700)


@pytest.mark.parametrize("kind", ["full", "tied", "diag", "spherical", "VEV"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("subset", [False, True])
def test_statistics_by_label_equal_the_one_hot_pass(kind, weighted, subset):
    rng = np.random.default_rng(0)
    n, d, k = 3000, 5, 7
    X = torch.as_tensor(rng.normal(size=(n, d)) * 3.0 + 100.0)
    w = torch.as_tensor(rng.uniform(0.2, 3.0, n)) if weighted else None
    rows_idx = torch.as_tensor(rng.choice(n, 900, replace=False)) if subset else None
    labels = torch.as_tensor(rng.integers(0, k, 900 if subset else n))
    labels[:k] = torch.arange(k)  # every cluster present
    cov = get_covariance_type(kind)
    shift = X.mean(0)
    # Pieces of 200 rows: clusters span several.
    got = init._stats_from_labels(X, w, rows_idx, labels, k, cov, shift, 200)
    ref = _one_hot_stats(X, w, rows_idx, labels, k, cov, shift)
    for a, b in ((got.nk, ref.nk), (got.s1, ref.s1), (got.s2, ref.s2)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-9 * float(b.abs().max()))


def test_an_empty_cluster_has_zero_statistics():
    X = torch.arange(40.0, dtype=torch.float64).reshape(20, 2)
    labels = torch.tensor([0, 2] * 10)
    got = init._stats_from_labels(X, None, None, labels, 3, get_covariance_type("full"),
                                  X.mean(0), 8)
    assert float(got.nk[1]) == 0.0 and float(got.s2[1].abs().sum()) == 0.0
    assert float(got.nk.sum()) == 20.0


def test_which_partitions_go_by_label():
    full, diag, tied = (get_covariance_type(t) for t in ("full", "diag", "tied"))
    assert init._by_label(100_000, 16, 16, full)
    assert not init._by_label(100_000, 4, 16, full)  # few components: one-hot is cheaper
    assert not init._by_label(100_000, 16, 4, full)  # small second moments
    assert not init._by_label(5_000, 16, 16, full)  # small data
    assert not init._by_label(100_000, 16, 16, diag)
    assert not init._by_label(100_000, 16, 16, tied)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "hc"])
def test_a_fit_starts_where_the_one_hot_pass_puts_it(init_params, monkeypatch):
    # The same initial parameters either way, on data where the rule picks
    # the statistics by label.
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 6, (8, 8))
    X = centres[rng.integers(0, 8, 12_000)] + rng.normal(size=(12_000, 8))
    assert init._by_label(12_000, 8, 8, get_covariance_type("full"))
    kw = dict(init_params=init_params, random_state=0, max_iter=0)
    by_label = GaussianMixture(8, **kw).fit(X)
    monkeypatch.setattr(init, "LABEL_STATS_MIN_ROWS", 10 ** 9)
    one_hot = GaussianMixture(8, **kw).fit(X)
    np.testing.assert_allclose(by_label.means_, one_hot.means_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(by_label.covariances_, one_hot.covariances_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(by_label.weights_, one_hot.weights_, rtol=1e-12)
