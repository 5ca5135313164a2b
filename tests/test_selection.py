"""Model selection: criteria against scikit-learn and their definitions, the
grid on data of known structure, and the degenerate-fit guard."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal
from sklearn.mixture import GaussianMixture as SkGM

import gaussmix.candidates as candidates
from gaussmix import GaussianMixture, select_model
from gaussmix.guard import VARIANCE_RTOL, DataScale
from gaussmix.selection import (
    DegenerateFitWarning,
    collapsed_components,
    information_criteria,
    min_component_count,
)

TYPES = ("full", "tied", "diag", "spherical")


def _blobs(seed=0, n=300):
    rng = np.random.default_rng(seed)
    return np.r_[
        rng.normal([0, 0, 0], [1.0, 0.5, 0.8], (n, 3)),
        rng.normal([4, 4, 0], [0.7, 1.2, 0.6], (n, 3)),
    ]


def _sklearn_with(est):
    """A scikit-learn mixture carrying our fitted parameters."""
    sk = SkGM(n_components=est.n_components, covariance_type=est.covariance_type)
    sk.weights_ = est.weights_
    sk.means_ = est.means_
    sk.covariances_ = est.covariances_
    sk.precisions_cholesky_ = est.precisions_cholesky_
    sk.precisions_ = est.precisions_
    sk.n_features_in_ = est.n_features_in_
    sk.converged_ = True
    return sk


def _full_covs(cov, kind, k, d):
    if kind == "full":
        return cov
    if kind == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if kind == "diag":
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(d)


@pytest.mark.parametrize("kind", TYPES)
def test_criteria_equal_sklearn_for_same_parameters(kind):
    X = _blobs()
    est = GaussianMixture(3, covariance_type=kind, random_state=0).fit(X)
    crit = information_criteria(est, X)
    sk = _sklearn_with(est)
    assert crit["bic"] == pytest.approx(sk.bic(X), rel=1e-11)
    assert crit["aic"] == pytest.approx(sk.aic(X), rel=1e-11)
    assert crit["n_parameters"] == sk._n_parameters()
    assert crit["bic"] == pytest.approx(est.bic(X), rel=1e-12)
    assert crit["aic"] == pytest.approx(est.aic(X), rel=1e-12)


@pytest.mark.parametrize("kind", TYPES)
def test_icl_is_bic_plus_twice_entropy_of_responsibilities(kind):
    X = _blobs(seed=1)[::3]
    k = 3
    est = GaussianMixture(k, covariance_type=kind, random_state=1).fit(X)
    # Responsibilities from scipy densities, independently of gaussmix.
    covs = _full_covs(est.covariances_, kind, k, X.shape[1])
    dens = np.column_stack([
        est.weights_[j] * multivariate_normal(est.means_[j], covs[j]).pdf(X) for j in range(k)
    ])
    total = dens.sum(1)
    resp = dens / total[:, None]
    ent = -np.sum(np.where(resp > 0, resp * np.log(np.where(resp > 0, resp, 1.0)), 0.0))
    ll = np.log(total).sum()
    p = SkGM(k, covariance_type=kind)
    p.means_ = est.means_
    bic = -2 * ll + p._n_parameters() * math.log(X.shape[0])
    crit = information_criteria(est, X)
    assert crit["log_likelihood"] == pytest.approx(ll, rel=1e-10)
    assert crit["entropy"] == pytest.approx(ent, rel=1e-7, abs=1e-9)
    assert crit["icl"] == pytest.approx(bic + 2 * ent, rel=1e-10)
    assert crit["icl"] >= crit["bic"]


@pytest.mark.filterwarnings("ignore::gaussmix.selection.DegenerateFitWarning")
@pytest.mark.parametrize("kind", TYPES)
def test_parameter_counts_match_sklearn(kind):
    X = _blobs()[:40, :2]
    sel = select_model(X, [1, 2, 4], kind, random_state=0)
    for k, p in zip(sel.results_["n_components"], sel.results_["n_parameters"]):
        sk = SkGM(k, covariance_type=kind)
        sk.means_ = np.zeros((k, 2))
        assert p == sk._n_parameters()


def test_grid_recovers_known_spherical_structure():
    # Four round clusters of different sizes: spherical with K=4 is the truth
    # and the most parsimonious correct model.
    rng = np.random.default_rng(3)
    centres = np.array([[0, 0, 0], [7, 0, 0], [0, 7, 0], [0, 0, 7]], dtype=float)
    sds = [0.6, 1.0, 1.4, 0.8]
    X = np.concatenate([rng.normal(c, s, (150, 3)) for c, s in zip(centres, sds)])
    sel = select_model(X, range(2, 6), TYPES, random_state=0)
    assert sel.best_params_ == {"n_components": 4, "covariance_type": "spherical"}
    res = sel.results_
    assert res["selected"].count(True) == 1 and res["selected"][sel.best_index_]
    # The chosen row has the lowest BIC among admissible rows.
    ok = [i for i, g in enumerate(res["guard"]) if g != "excluded"]
    assert min(res["bic"][i] for i in ok) == res["bic"][sel.best_index_]
    # ...and the chosen estimator is the one fitted for that row.
    assert sel.best_estimator_.n_components == 4
    assert sel.best_estimator_.bic(X) == pytest.approx(res["bic"][sel.best_index_], rel=1e-12)


def test_grid_recovers_known_full_structure_and_criteria_columns():
    from gaussmix._demo import DEMO_TRUTH, make_demo_data

    X, _ = make_demo_data(n_samples=600, random_state=4)
    for crit in ("bic", "icl"):
        sel = select_model(X, range(1, 6), ("full", "diag"), criterion=crit, random_state=0)
        assert sel.best_params_ == {"n_components": DEMO_TRUTH["n_components"],
                                    "covariance_type": DEMO_TRUTH["covariance_type"]}
    df = pd.DataFrame(sel.results_)
    assert len(df) == 10
    for col in ("n_components", "covariance_type", "log_likelihood", "n_parameters", "bic", "aic",
                "icl", "converged", "n_iter", "fit_time", "guard", "n_collapsed", "selected"):
        assert col in df.columns
    assert (df["aic"] == -2 * df["log_likelihood"] + 2 * df["n_parameters"]).all()


# ----------------------------------------------------------- degenerate guard
def _integer_feature_data(seed=1, n=400):
    """Two clusters in a continuous feature; a Poisson count as second feature."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 2, n)
    x1 = rng.normal(np.where(lab == 0, -2.5, 2.5), 1.0)
    x2 = rng.poisson(1.0, n).astype(float)
    return np.c_[x1, x2]


def _min_variance(cov, kind):
    if kind == "full":
        return min(np.linalg.eigvalsh(c).min() for c in cov)
    if kind == "tied":
        return np.linalg.eigvalsh(cov).min()
    return float(np.min(cov))


@pytest.fixture(scope="module")
def sklearn_collapsed_winner():
    """scikit-learn's BIC choice over the same grid, fitted with its defaults."""
    X = _integer_feature_data()
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for kind in ("full", "diag"):
            for k in range(1, 7):
                try:
                    sk = SkGM(k, covariance_type=kind, random_state=0).fit(X)
                except ValueError:
                    continue
                if best is None or sk.bic(X) < best.bic(X):
                    best = sk
    return X, best


def test_sklearn_lets_a_collapsed_component_win_and_we_do_not(sklearn_collapsed_winner):
    X, sk = sklearn_collapsed_winner
    # The premise: scikit-learn's winner has a variance at its reg_covar floor.
    assert _min_variance(sk.covariances_, sk.covariance_type) <= 1.001 * sk.reg_covar
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sel = select_model(X, range(1, 7), ("full", "diag"), random_state=0)
    best = sel.best_estimator_
    res = sel.results_
    assert res["guard"][sel.best_index_] in ("ok", "reseeded")
    # Our choice is a proper model: no variance anywhere near the floor...
    assert _min_variance(best.covariances_, best.covariance_type) > 1e-2
    # ...although the collapsed fit has the better BIC, so it would have won.
    assert sk.bic(X) < res["bic"][sel.best_index_] - 100
    # Every candidate the guard touched is recorded and warned about.
    touched = [i for i, g in enumerate(res["guard"]) if g != "ok"]
    for i in touched:
        assert res["guard_detail"][i]
    if touched:
        assert any(issubclass(w.category, DegenerateFitWarning) for w in caught)


def test_guard_detects_the_sklearn_collapse(sklearn_collapsed_winner):
    X, sk = sklearn_collapsed_winner
    # Our estimator started at scikit-learn's solution stays on it (a fixed point of EM).
    ours = GaussianMixture(
        sk.n_components, covariance_type=sk.covariance_type, weights_init=sk.weights_,
        means_init=sk.means_, precisions_init=sk.precisions_, max_iter=0,
    ).fit(X)
    found = collapsed_components(ours, X)
    var = sk.covariances_ if sk.covariance_type == "diag" else np.stack(
        [np.diag(c) for c in sk.covariances_])
    expected = sorted(int(k) for k in np.flatnonzero((var[:, 1] <= 1.001e-6)))
    assert expected and set(expected) <= set(found["components"])
    assert "reg_covar" in found["detail"]


def _collapsed_init(sk):
    return dict(weights_init=sk.weights_, means_init=sk.means_, precisions_init=sk.precisions_)


def test_policies_exclude_flag_and_reseed(sklearn_collapsed_winner):
    X, sk = sklearn_collapsed_winner
    grid = dict(n_components=[sk.n_components], covariance_types=[sk.covariance_type])
    init = _collapsed_init(sk)
    # The same start every attempt: it collapses every time.
    for policy in ("exclude", "reseed"):
        with pytest.warns(DegenerateFitWarning), pytest.raises(ValueError, match="No admissible"):
            select_model(X, **grid, degenerate=policy, random_state=0, starts="estimator", **init)
    with pytest.warns(DegenerateFitWarning, match="flagged"):
        sel = select_model(X, **grid, degenerate="flag", random_state=0, starts="estimator",
                           **init)
    assert sel.results_["guard"] == ["flagged"]
    assert sel.results_["n_collapsed"][0] >= 1


def test_reseed_replaces_a_collapsed_first_attempt(sklearn_collapsed_winner, monkeypatch):
    X, sk = sklearn_collapsed_winner
    real = candidates._fit_once
    calls = []

    def first_collapses(X_, k, kind, seed, n_init, device, params):
        calls.append(seed)
        if len(calls) == 1:  # the first attempt starts at the collapsed solution
            params = dict(params, **_collapsed_init(sk))
        return real(X_, k, kind, seed, n_init, device, params)

    monkeypatch.setattr(candidates, "_fit_once", first_collapses)
    with pytest.warns(DegenerateFitWarning, match="reseeded"):
        # Sequential: every attempt, the first included, goes through _fit_once.
        sel = select_model(X, [sk.n_components], [sk.covariance_type], random_state=0, n_reseed=3,
                           concurrent=False, starts="estimator")
    res = sel.results_
    assert len(calls) == res["n_attempts"][0] >= 2
    assert len(set(calls)) == len(calls)  # every attempt used a new seed
    assert res["guard"][0] == "reseeded"
    assert res["n_collapsed"][0] == 0
    assert collapsed_components(sel.best_estimator_, X)["components"] == []
    assert "attempt 1 collapsed" in res["guard_detail"][0]


def test_excluded_candidate_cannot_win(sklearn_collapsed_winner):
    X, sk = sklearn_collapsed_winner
    real = candidates._fit_once

    def collapse_big_k(X_, k, kind, seed, n_init, device, params):
        if k == sk.n_components:
            params = dict(params, **_collapsed_init(sk))
        return real(X_, k, kind, seed, n_init, device, params)

    import unittest.mock as um

    with um.patch.object(candidates, "_fit_once", collapse_big_k):
        with pytest.warns(DegenerateFitWarning):
            sel = select_model(X, [2, sk.n_components], [sk.covariance_type],
                               degenerate="exclude", random_state=0, starts="estimator")
    res = sel.results_
    i_big = res["n_components"].index(sk.n_components)
    assert res["guard"][i_big] == "excluded"
    assert res["bic"][i_big] < res["bic"][1 - i_big]  # it had the better BIC...
    assert sel.best_params_["n_components"] == 2  # ...and still lost


def test_too_few_points_rule():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (60, 3)), [[30.0, 30.0, 30.0], [30.5, 29.0, 31.0]]]
    # Two far points get their own full-covariance component: 2 < D + 1 = 4 points.
    est = GaussianMixture(
        2, covariance_type="full", means_init=[[0, 0, 0], [30.2, 29.5, 30.5]], reg_covar=1e-3,
    ).fit(X)
    found = collapsed_components(est, X)
    assert found["too_few"] == [1]
    assert "fewer than 4 effective points" in found["detail"]


def _pinned_by_the_rule(est, X, reg):
    """The documented rule written out in NumPy: per covariance matrix, the
    smallest eigenvalue of (covariance - reg) standardised by the varying
    features' deviations (per feature, or their mean variance for spherical)."""
    n, d = X.shape
    var = X.var(0)
    idx = np.flatnonzero((var > (1e-7 * np.abs(X).max(0)) ** 2) & (var > 0))
    reg = np.broadcast_to(np.asarray(est.reg_covar if reg is None else reg, float), (d,))
    c = np.asarray(est.covariances_)
    mats = {"full": lambda: c, "tied": lambda: c[None], "diag": lambda: np.stack(
        [np.diag(v) for v in c]), "spherical": lambda: c[:, None, None] * np.eye(d)}[
        est.covariance_type]()
    per_feature = est.covariance_type != "spherical"
    s = np.sqrt(var[idx] if per_feature else np.full(idx.size, var[idx].mean()))
    net = reg[idx] if per_feature else np.full(idx.size, reg.mean())
    std = (mats[:, idx][:, :, idx] - np.diag(net)) / np.outer(s, s)
    bad = ~(np.linalg.eigvalsh(std).min(1) > VARIANCE_RTOL)
    if est.covariance_type == "tied":
        return list(range(est.n_components)) if bad[0] else []
    return [int(k) for k in np.flatnonzero(bad)]


def test_guard_on_data_scale_follows_the_rule(sklearn_collapsed_winner):
    # DataScale: the data's part of the test computed once; every answer is
    # the documented rule's, on a sub-matrix too (a constant feature).
    rng = np.random.default_rng(1)
    # Features on different scales (spherical is standardised by their mean
    # variance, the others per feature) and a constant one (a sub-matrix).
    X = np.c_[_blobs() * [1.0, 20.0, 0.05], np.full(600, 2.0)]
    scale = DataScale(X)
    for cov_type in TYPES:
        for k in (1, 3, 6):
            est = GaussianMixture(k, covariance_type=cov_type, random_state=0).fit(X)
            # A regularisation as large as some components' own variances
            # pins them: the rule must catch those and only those.
            for reg in (None, 1e-3, rng.uniform(1e-8, 1e-6, X.shape[1]), 0.05 * X.var(0),
                        0.3 * X.var(0)):
                found = collapsed_components(est, scale, reg)
                assert found["pinned"] == _pinned_by_the_rule(est, X, reg)
                assert found == collapsed_components(est, X, reg)
    Xc, sk = sklearn_collapsed_winner
    ours = GaussianMixture(sk.n_components, covariance_type=sk.covariance_type,
                           random_state=0).fit(Xc)
    found = collapsed_components(ours, DataScale(Xc))
    assert found["pinned"] and found == collapsed_components(ours, Xc)


def test_min_component_count_per_type():
    assert [min_component_count(t, 3) for t in TYPES] == [4, 1, 2, 2]


def test_constant_feature_does_not_flag_everything():
    rng = np.random.default_rng(0)
    X = np.c_[np.r_[rng.normal(0, 1, 100), rng.normal(6, 1, 100)], np.full(200, 3.0)]
    sel = select_model(X, [1, 2], "diag", random_state=0)
    assert sel.results_["guard"] == ["ok", "ok"]
    assert sel.best_params_["n_components"] == 2


def test_failed_fit_is_recorded_not_raised():
    X = np.random.default_rng(0).normal(size=(5, 2))
    with pytest.warns(DegenerateFitWarning):
        sel = select_model(X, [1, 8], "spherical", random_state=0, n_reseed=0)
    res = sel.results_
    assert res["guard"] == ["ok", "excluded"]
    assert "n_samples" in res["guard_detail"][1]
    assert math.isnan(res["bic"][1]) and sel.estimators_[1] is None
    assert sel.best_params_["n_components"] == 1


def test_winner_is_the_plain_fit_with_the_same_seed():
    X = _blobs(seed=6)[::2]
    # Bitwise: the sequential grid runs the very same fit (the batched grid
    # equals it up to rounding; see tests/test_batched.py).
    sel = select_model(X, [1, 2, 3], ("diag", "full"), random_state=11, concurrent=False,
                       starts="estimator")
    b = sel.best_params_
    plain = GaussianMixture(b["n_components"], covariance_type=b["covariance_type"],
                            random_state=11).fit(X)
    assert np.array_equal(plain.means_, sel.best_estimator_.means_)
    assert np.array_equal(plain.covariances_, sel.best_estimator_.covariances_)


@pytest.mark.parametrize("mode", [dict(), dict(starts="estimator", n_init=2)])
def test_reproducible_with_seed(mode):
    X = _blobs(seed=5)[::2]
    a = select_model(X, [2, 3], "diag", random_state=7, **mode)
    b = select_model(X, [2, 3], "diag", random_state=7, **mode)
    assert a.results_["bic"] == b.results_["bic"]
    assert a.results_["start"] == b.results_["start"]
    assert np.array_equal(a.best_estimator_.means_, b.best_estimator_.means_)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_components=[]), "empty"),
        (dict(n_components=[0, 1]), "Invalid number of components"),
        (dict(n_components="3"), "Invalid number of components"),
        (dict(covariance_types=["ful"]), "covariance_type"),
        (dict(criterion="bicc"), "criterion"),
        (dict(degenerate="ignore"), "degenerate"),
        (dict(n_reseed=-1), "n_reseed"),
        (dict(covariance_type="full"), "select_model directly"),
        (dict(max_iter=-1), "max_iter"),
        (dict(n_init=0), "n_init"),
        (dict(dtype="float16"), "dtype"),
        (dict(device="nonsense"), "device"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_model(np.zeros((10, 2)), **kwargs)


def test_bad_data_is_reported_once_not_per_candidate():
    X = np.array([[0.0, 1.0], [np.nan, 2.0], [3.0, 4.0]])
    with pytest.raises(ValueError, match="NaN"):
        select_model(X, [1, 2])
    with pytest.raises(ValueError, match="2D"):
        select_model(np.arange(5.0), [1])


def test_unknown_estimator_parameter():
    with pytest.raises(TypeError, match="bogus.*valid ones"):
        select_model(np.zeros((10, 2)), bogus=1)
