"""The multi-start search of select_model: invariance under shifts and scalings,
the stopping rule, the hierarchical start, reproducibility and bad input."""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.mixture import GaussianMixture as SkGM

from gaussmix import GaussianMixture, select_model
from gaussmix.stopping import has_converged
from gaussmix.scaling import feature_scaling
from gaussmix.search import search, starting_partitions

TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(scope="module")
def iris():
    return load_iris().data


def _grid(X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return select_model(X, range(1, 5), TYPES, random_state=0, **kw)


@pytest.fixture(scope="module")
def iris_grid(iris):
    return _grid(iris)


def _cells(sel):
    r = sel.results_
    return {(t, k): ll for t, k, ll, g in zip(r["covariance_type"], r["n_components"],
                                            r["log_likelihood"], r["guard"]) if g != "excluded"}


@pytest.mark.parametrize("name, transform, types", [
    ("one feature x 1e3", lambda X: X * np.array([1e3, 1, 1, 1]), ("full", "tied", "diag")),
    ("one feature x 1e-3", lambda X: X * np.array([1, 1, 1e-3, 1]), ("full", "tied", "diag")),
    ("all features x 1e3", lambda X: X * 1e3, TYPES),
    ("all features x 1e-3", lambda X: X * 1e-3, TYPES),
    ("shift by 1e6", lambda X: X + 1e6, TYPES),
])
def test_rescaling_or_shifting_changes_neither_fits_nor_choice(iris, iris_grid, name, transform, types):
    X2 = transform(iris)
    sel2 = _grid(X2)
    n = iris.shape[0]
    # Jacobian of x -> A x + b with A diagonal: log L' = log L - n * sum(log |a_j|).
    a = np.diag(np.atleast_2d(transform(np.eye(4)) - transform(np.zeros((1, 4)))))
    jac = -n * np.log(np.abs(a)).sum()
    before, after = _cells(iris_grid), _cells(sel2)
    compared = 0
    for key, ll in before.items():
        if key[0] not in types:
            continue
        assert key in after, f"{name}: cell {key} was excluded after the transformation"
        assert after[key] == pytest.approx(ll + jac, rel=1e-7, abs=1e-6), (name, key)
        compared += 1
    assert compared >= 4 * len(types) - 2
    if set(types) == set(TYPES):
        assert sel2.best_params_ == iris_grid.best_params_
    # The winner's parameters are the same model in the new units.
    if sel2.best_params_ == iris_grid.best_params_ and sel2.best_params_["covariance_type"] in types:
        np.testing.assert_allclose(sel2.best_estimator_.means_,
                                   transform(iris_grid.best_estimator_.means_), rtol=1e-6)


def test_a_spherical_covariance_is_not_rescaled_per_feature(iris):
    # A spherical model is not closed under per-feature scaling: the search
    # must fit it in the user's units (up to one common scale), not on
    # standardised features.
    sel = _grid(iris)
    r = sel.results_
    i = [j for j, (t, k) in enumerate(zip(r["covariance_type"], r["n_components"]))
         if t == "spherical" and k == 1][0]
    n, d = iris.shape
    var = iris.var(0).mean()  # MLE of one variance
    expected = -0.5 * n * d * (math.log(2 * math.pi * var) + 1)
    assert r["log_likelihood"][i] == pytest.approx(expected, rel=1e-8)


def test_single_component_equals_closed_form(iris):
    sel = _grid(iris)
    r = sel.results_
    n, d = iris.shape
    cov = np.cov(iris.T, bias=True)
    for t in ("full", "tied"):
        i = [j for j, (tt, k) in enumerate(zip(r["covariance_type"], r["n_components"]))
             if tt == t and k == 1][0]
        expected = -0.5 * n * (d * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1] + d)
        # Relative regularisation 1e-8 moves it by far less than 1e-6.
        assert r["log_likelihood"][i] == pytest.approx(expected, abs=1e-4)


def test_results_say_which_start_won_and_how_many_ran(iris_grid):
    r = iris_grid.results_
    assert set(r["start"]) <= {"single", "hc", "kmeans", "random", "split"}
    for k, s, n in zip(r["n_components"], r["start"], r["n_starts"]):
        if k == 1:
            assert s == "single" and n == 1
        else:
            assert n >= 4  # hc + 3 k-means at least (+ the splits)
    assert all(it >= 1 for it in r["n_iter"])


def test_random_starts_on_request(iris):
    # Off by default; each one asked for is one more screened start per K >= 2,
    # a soft partition whose rows sum to one.
    X = torch.from_numpy(iris)
    parts = starting_partitions(X, [1, 2, 3], torch.Generator().manual_seed(0), n_random=2)
    for k in (2, 3):
        rand = [s for s in parts[k] if s.name == "random"]
        assert len(rand) == 2
        for s in rand:
            assert s.resp.shape == (X.shape[0], k) and bool((s.resp >= 0).all())
            torch.testing.assert_close(s.resp.sum(1), torch.ones(X.shape[0], dtype=torch.float64))
    assert [s.name for s in parts[1]] == ["single"]
    base = select_model(iris, [2, 3], "full", random_state=0).results_["n_starts"]
    more = select_model(iris, [2, 3], "full", random_state=0,
                        search_params={"n_random": 2}).results_["n_starts"]
    assert [m - b for b, m in zip(base, more)] == [2, 2]


def test_best_run_is_at_least_as_good_as_its_hierarchical_start(iris):
    # The hierarchical start alone (mclust's) never beats the search.
    Xs = torch.from_numpy(iris)
    sc = feature_scaling(Xs, True)
    gen = torch.Generator().manual_seed(0)
    parts = starting_partitions(sc.to_fit(Xs), [2, 3, 4], gen)
    only_hc = {k: [s for s in v if s.name == "hc"] for k, v in parts.items()}
    full = search(sc.to_fit(Xs), ["full"], parts, reg_covar=1e-8, tol=1e-5)["full"]
    hc = search(sc.to_fit(Xs), ["full"], only_hc, reg_covar=1e-8, tol=1e-5, split=False)["full"]
    for k in (2, 3, 4):
        assert full[k].runs[0].lower_bound >= hc[k].runs[0].lower_bound - 1e-9


def test_lean_search_is_mclusts_path(iris):
    # search_params without k-means starts, splits or kept screened runs:
    # every cell is fitted from its hierarchical start alone (as mclust's
    # Mclust does), so it reaches mclust's log-likelihood (fixture from R),
    # and the default search is never worse in any cell.
    ref = json.loads((Path(__file__).parent / "reference" / "mclust_reference.json").read_text())
    cells = ref["datasets"]["iris"]["cells"]
    X = np.loadtxt(Path(__file__).parent / "reference" / "data" / "iris.csv", delimiter=",",
                   skiprows=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lean = select_model(X, range(1, 6), TYPES, random_state=0,
                            search_params={"n_kmeans": 0, "split": False, "n_keep": 0})
        full = select_model(X, range(1, 6), TYPES, random_state=0)
    r = lean.results_
    assert set(r["n_starts"]) == {1}
    assert {s for s in r["start"] if s} <= {"hc", "single"}
    name = {"full": "VVV", "tied": "EEE", "diag": "VVI", "spherical": "VII"}
    compared = 0
    for t, k, ll, g in zip(r["covariance_type"], r["n_components"], r["log_likelihood"],
                           r["guard"]):
        mclust = cells[name[t]][k - 1]["loglik"]
        if g == "excluded" or mclust is None:
            continue
        assert ll >= mclust - 0.1, (t, k, ll, mclust)
        compared += 1
    assert compared >= 15
    default = _cells(full)
    for key, ll in _cells(lean).items():
        if key in default:
            assert default[key] >= ll - 1e-6, key


def test_same_seed_same_answer(iris):
    a = _grid(iris[::2])
    b = _grid(iris[::2])
    assert a.results_["log_likelihood"] == b.results_["log_likelihood"]
    assert a.results_["start"] == b.results_["start"]


def test_guard_still_excludes_collapsed_fits():
    # A feature with few repeated values: the search must not let a component
    # collapse onto them win (every cell it keeps is clean).
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(0, 1, 300), rng.poisson(2, 300).astype(float)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sel = select_model(X, range(1, 7), ("full", "diag"), random_state=0)
    best = sel.best_estimator_
    var = best.covariances_ if best.covariance_type == "diag" else np.stack(
        [np.diag(c) for c in best.covariances_])
    assert var.min() > 1e-3
    for g, nc in zip(sel.results_["guard"], sel.results_["n_collapsed"]):
        assert g == "excluded" or nc == 0


# ------------------------------------------------------------- stopping rule
def test_relative_rule_is_mclusts():
    # |L - L_prev| / (1 + |L|) with L = n * mean.
    assert has_converged(-2.0, -2.0 + 1e-6, 1e-5, "relative", 1000.0)      # 1e-3 / 2001
    assert not has_converged(-2.0, -1.9, 1e-5, "relative", 1000.0)          # 100 / 1901
    assert has_converged(-2.0, -2.0005, 1e-3, "absolute")
    assert not has_converged(-math.inf, -2.0, 1e-5, "relative", 10.0)


def test_gaussian_mixture_keeps_sklearn_stopping_and_accepts_mclusts(iris):
    init = dict(n_components=3, covariance_type="tied", random_state=0, max_iter=1000)
    ours = GaussianMixture(**init).fit(iris)
    # Default: scikit-learn's rule, hence scikit-learn's iteration count from the same start.
    start = dict(weights_init=ours.weights_, means_init=ours.means_,
                 precisions_init=ours.precisions_)
    sk = SkGM(**init, **start).fit(iris)
    mine = GaussianMixture(**init, **start).fit(iris)
    assert mine.n_iter_ == sk.n_iter_ and GaussianMixture().tol_type == "absolute"
    strict = GaussianMixture(**init, tol=1e-5, tol_type="relative").fit(iris)
    assert strict.n_iter_ >= ours.n_iter_
    assert strict.score(iris) >= ours.score(iris) - 1e-12
    with pytest.raises(ValueError, match="tol_type"):
        GaussianMixture(tol_type="rel").fit(iris)


# ---------------------------------------------------------- hierarchical start
def test_hc_init_starts_from_mclusts_classes(iris):
    # With one-hot responsibilities the initial means are the class means of
    # the cut; mclust's hclass(hc(X), 3) gives the classes (fixture from R).
    ref = json.loads((Path(__file__).parent / "reference" / "mclust_reference.json").read_text())
    classes = np.asarray(ref["datasets"]["iris"]["hc"]["classes"]["3"])
    X = np.loadtxt(Path(__file__).parent / "reference" / "data" / "iris.csv", delimiter=",",
                   skiprows=1)
    a = GaussianMixture(3, init_params="hc", max_iter=0, random_state=1).fit(X)
    b = GaussianMixture(3, init_params="hc", max_iter=0, random_state=2).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)  # no randomness below hc_subset rows
    expected = np.stack([X[classes == c].mean(0) for c in (1, 2, 3)])
    order = [int(np.argmin(np.abs(expected - m).sum(1))) for m in a.means_]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(a.means_, expected[order], rtol=1e-12)


@pytest.mark.parametrize("X, k, match", [
    (np.r_[np.zeros((5, 2)), np.ones((5, 2))], 3, "only 2 are distinct"),
    (np.zeros((10, 2)), 2, "all rows are identical"),
])
def test_hc_init_bad_input(X, k, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(k, init_params="hc").fit(X)


def test_hc_subset_below_k_is_refused():
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match="hc_subset"):
        GaussianMixture(4, init_params="hc", hc_subset=3).fit(X)
    with pytest.raises(ValueError, match="hc_subset"):
        GaussianMixture(2, init_params="hc", hc_subset=1).fit(X)


def test_hc_on_a_subset_of_large_data():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 1, (3000, 2)), rng.normal(8, 1, (3000, 2))]
    gm = GaussianMixture(2, init_params="hc", hc_subset=500, random_state=0).fit(X)
    assert sorted(np.round(gm.means_[:, 0]).tolist()) == [0.0, 8.0]


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(starts="fast"), "starts"),
    (dict(init_params="kmeans"), "starts='estimator'"),
    (dict(means_init=[[0, 0]]), "starts='estimator'"),
    (dict(n_init=3), "n_init"),
    (dict(search_params={"n_kmean": 2}), "Unknown search parameter"),
    (dict(search_params={"screen_iter": 0}), "screen_iter"),
    (dict(search_params={"split": 1}), "split"),
    (dict(starts="estimator", search_params={"n_kmeans": 2}), "search_params"),
])
def test_search_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_model(np.random.default_rng(0).normal(size=(20, 2)), [1, 2], **kwargs)


def test_more_components_than_rows_is_excluded_not_raised():
    X = np.random.default_rng(0).normal(size=(6, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sel = select_model(X, [1, 8], "diag", random_state=0)
    assert sel.results_["guard"] == ["ok", "excluded"]
    assert "n_samples" in sel.results_["guard_detail"][1]


def test_tensor_and_dataframe_input_round_trip(iris):
    import pandas as pd

    df = pd.DataFrame(iris, columns=list("abcd"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sel = select_model(df, [2], "full", random_state=0)
        selt = select_model(torch.from_numpy(iris), [2], "full", random_state=0)
    assert list(sel.best_estimator_.feature_names_in_) == list("abcd")
    assert isinstance(selt.best_estimator_.means_, torch.Tensor)
    np.testing.assert_allclose(selt.best_estimator_.means_.numpy(), sel.best_estimator_.means_)
    assert sel.best_estimator_.predict(df).shape == (150,)


def test_small_cpu_search_restores_the_thread_count(iris, monkeypatch):
    import gaussmix.candidates as candidates

    before = torch.get_num_threads()
    seen = []
    real = candidates.search

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(candidates, "search", spy)
    _grid(iris[:60])
    assert seen and all(n == 1 for n in seen)
    assert torch.get_num_threads() == before


def _same_partition(a, b):
    """Whether two labellings group the rows identically (up to renaming)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("units", [None, torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)])
def test_batched_splits_equal_the_per_run_splits(iris, units):
    # The joint engine splits every parent run at once; each split must be
    # the one _split_starts makes from the same run's MAP labels.
    from gaussmix.joint import JointRun, fit_joint, hard_labels, quadratic_features, start_runs
    from gaussmix.search import _joint_splits, _split_starts
    X = torch.from_numpy(iris)
    X = (X - X.mean(0)) / X.std(0)
    phi = quadratic_features(X)
    gen = torch.Generator().manual_seed(0)
    parts = starting_partitions(X, [2, 3, 4], gen)
    starts = [parts[k][1] for k in (2, 3, 4)]
    runs = [JointRun("full", k, units) for k in (2, 3, 4)]
    start_runs(phi, runs, None, reg_covar=1e-8, labels=[s.labels for s in starts])
    fit_joint(phi, runs, reg_covar=1e-8, tol=1e-5, max_iter=5)
    got = _joint_splits(phi, X, runs, [units] * 3)
    labels = hard_labels(phi, runs)
    for i, r in enumerate(runs):
        assert torch.equal(labels[:, i], r.log_prob(X).argmax(1))
    X_t = X if units is None else X * units
    expected = [(i, st) for i, r in enumerate(runs) for st in _split_starts(X_t, labels[:, i], r.k)]
    assert len(got) == len(expected) > 3
    for (i, a), (j, b) in zip(got, expected):
        assert i == j
        assert _same_partition(a.labels, b.labels)


def test_every_cells_criteria_are_its_estimators(iris_grid, iris):
    # The search scores its runs in one batched pass; each row must equal the
    # criteria recomputed from the returned estimator on the user's data.
    from gaussmix.selection import information_criteria
    r = iris_grid.results_
    for i, est in enumerate(iris_grid.estimators_):
        crit = information_criteria(est, iris)
        for name in ("log_likelihood", "bic", "aic", "icl"):
            assert r[name][i] == pytest.approx(crit[name], rel=1e-10, abs=1e-8), (i, name)
