"""The guard's walk over a grid (examination.py): re-seeded attempts of
starts="estimator" are fitted together, with the same results as one by one."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_iris, load_wine

from gaussmix import candidates, select_model


def _results(sel):
    return {c: v for c, v in sel.results_.items() if c != "fit_time"}


def _same(a, b):
    for c in a:
        x, y = a[c], b[c]
        if isinstance(x[0], float):
            np.testing.assert_allclose(np.asarray(y, float), np.asarray(x, float), rtol=1e-9,
                                       err_msg=c)
        else:
            assert list(x) == list(y), c


@pytest.mark.parametrize("load,seed,n_reseed", [(load_iris, 1, 3), (load_wine, 0, 2)])
def test_batched_reseeds_equal_one_by_one(monkeypatch, load, seed, n_reseed):
    X = load().data
    fetched = []
    original = candidates._Reseeds.prefetch

    def spy(self, attempt, cells):
        fetched.append((attempt, list(cells)))
        return original(self, attempt, cells)

    monkeypatch.setattr(candidates._Reseeds, "prefetch", spy)
    orders = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batched = select_model(X, range(1, 10), random_state=seed, starts="estimator",
                               n_reseed=n_reseed, concurrent=True,
                               callback=lambda i, n, row: orders.append(i))
        assert fetched, "no re-seeded attempt was batched"
        one_by_one = select_model(X, range(1, 10), random_state=seed, starts="estimator",
                                  n_reseed=n_reseed, concurrent=False)
    res = batched.results_
    reseeded = [i for i, g in enumerate(res["guard"]) if g == "reseeded"]
    assert reseeded  # the data make some cells collapse
    assert set(reseeded) <= set(fetched[0][1])
    # Every cell of a later round was still wanted in the round before.
    for (a, cells), (b, later) in zip(fetched, fetched[1:]):
        assert b == a + 1 and set(later) <= set(cells)
    _same(_results(one_by_one), _results(batched))
    assert batched.best_params_ == one_by_one.best_params_
    # Progress is reported once per cell, in the grid's order.
    assert orders == list(range(len(res["guard"])))


def test_only_a_seeded_concurrent_grid_batches_its_reseeds():
    """random_state=None leaves every re-seeded fit its own random start, and
    a grid fitted one by one (concurrent=False) re-seeds one by one too."""
    X = load_iris().data
    grid = [(t, k) for t in ("full", "diag") for k in (1, 2, 3)]

    def plans(seed, concurrent, n_reseed=2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return candidates.estimator_plans(X, grid, seed, 1, None, concurrent, n_reseed, {})

    assert all(p.prefetch is not None for p in plans(0, True).values())
    assert all(p.prefetch is None for p in plans(None, True).values())
    assert all(p.prefetch is None for p in plans(0, False).values())
    assert all(p.prefetch is None for p in plans(0, True, n_reseed=0).values())
