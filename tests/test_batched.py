"""Batched EM over a model-selection grid equals the fits one after another."""

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture as SkGM

from gaussmix import GaussianMixture, load, select_model
from gaussmix.covariance import get_covariance_type
from gaussmix.batched import fit_batched
from gaussmix.grid_fit import batch_applies, fit_candidates
from gaussmix.params import GMMParams
from gaussmix.selection import DegenerateFitWarning, concurrent_applies

from _collapse import collapse_case

TYPES = ("full", "tied", "diag", "spherical")
RTOL = 1e-9


def _data(seed=0, n=400, d=3):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0] * d, [4.0] * d, [0.0, 5.0] + [1.0] * (d - 2)])
    lab = rng.integers(0, 3, n)
    scale = np.array([1.0, 0.6, 1.4])[lab][:, None]
    return centres[lab] + scale * rng.normal(size=(n, d))


def _close(a, b, rtol=RTOL, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def _same_fit(batched, sequential, rtol=RTOL):
    assert batched.n_iter_ == sequential.n_iter_
    assert batched.converged_ == sequential.converged_
    _close(batched.lower_bound_, sequential.lower_bound_, rtol)
    _close(batched.lower_bounds_, sequential.lower_bounds_, rtol)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        _close(getattr(batched, attr), getattr(sequential, attr), rtol)


# ---------------------------------------------- against scikit-learn directly
def _sk_start(X, k, kind, seed):
    """scikit-learn's own k-means start, as explicit initial parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = SkGM(k, covariance_type=kind, max_iter=0, random_state=seed).fit(X)
    return sk.weights_, sk.means_, sk.precisions_


@pytest.mark.parametrize("kind", TYPES)
def test_batch_equals_sklearn_from_the_same_start(kind):
    """Independent truth: scikit-learn float64 EM from identical starts, with
    different K in one batch and both stopping rules."""
    X = _data(1)
    Xt = torch.as_tensor(X)
    ks = (1, 2, 4)
    starts = [_sk_start(X, k, kind, seed=k) for k in ks]
    for tol, max_iter in ((0.0, 15), (1e-4, 200)):
        strategy = get_covariance_type(kind)
        inits = [GMMParams(torch.as_tensor(w), torch.as_tensor(m),
                           strategy.precisions_cholesky_from_precisions(torch.as_tensor(p)), kind)
                 for w, m, p in starts]
        results = fit_batched(Xt, inits, reg_covar=1e-6, tol=tol, max_iter=max_iter)
        for (w, m, p), res, k in zip(starts, results, ks):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sk = SkGM(k, covariance_type=kind, tol=tol, max_iter=max_iter, weights_init=w,
                          means_init=m, precisions_init=p).fit(X)
            assert res.n_iter == sk.n_iter_
            assert res.converged == sk.converged_
            _close(res.lower_bound, sk.lower_bound_)
            _close(res.params.weights, sk.weights_)
            _close(res.params.means, sk.means_)
            _close(res.params.get_covariances(), sk.covariances_)
        if tol > 0:  # the stopping rule really differs between members of the batch
            assert len({r.n_iter for r in results}) > 1


# -------------------------------------------- against the sequential estimator
@pytest.mark.parametrize("kind", TYPES)
@pytest.mark.parametrize("tol", [0.0, 1e-3])
def test_candidates_equal_their_separate_fits(kind, tol):
    X = _data(2)
    cands = [(kind, k) for k in (1, 2, 3, 5)]
    fits = fit_candidates(X, cands, seed=3, tol=tol, max_iter=30)
    for (_, k), f in zip(cands, fits):
        assert f.batched and f.error == ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seq = GaussianMixture(k, covariance_type=kind, random_state=3, tol=tol,
                                  max_iter=30).fit(X)
        _same_fit(f.estimator, seq)


def _sorted_means(est):
    m = np.asarray(est.means_)
    return m[np.lexsort(m.T[::-1])]


def test_restarts_are_batched_and_the_best_is_kept():
    X = _data(3)
    fits = fit_candidates(X, [("diag", 2), ("diag", 4)], seed=5, n_init=3, max_iter=50)
    for f, k in zip(fits, (2, 4)):
        seq = GaussianMixture(k, covariance_type="diag", random_state=5, n_init=3,
                              max_iter=50).fit(X)
        _close(f.estimator.lower_bound_, seq.lower_bound_)
        # Restarts that reach the same optimum (permuted) tie up to rounding.
        _close(_sorted_means(f.estimator), _sorted_means(seq), 1e-7)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tol=0 runs to max_iter
def test_float32_tensor_input():
    X = torch.as_tensor(_data(4), dtype=torch.float32)
    fits = fit_candidates(X, [("full", 2), ("full", 3)], seed=0, max_iter=20, tol=0.0)
    for f, k in zip(fits, (2, 3)):
        seq = GaussianMixture(k, random_state=0, max_iter=20, tol=0.0).fit(X)
        assert isinstance(f.estimator.means_, torch.Tensor)
        assert f.estimator.means_.dtype == torch.float32
        torch.testing.assert_close(f.estimator.means_, seq.means_, rtol=1e-4, atol=1e-4)
        assert f.estimator.n_iter_ == seq.n_iter_


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tol=0 runs to max_iter
@pytest.mark.parametrize("kind", ["full", "diag", "spherical"])
def test_float32_far_apart_clusters_in_a_batch(kind):
    """float32 batches take each component's moments around its own mean, as the
    sequential fit does: clusters 1e3 standard deviations apart keep their
    covariances (checked against the float64 fit of the same values)."""
    rng = np.random.default_rng(3)
    X = np.r_[rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + 1e3]
    X32 = torch.as_tensor(X, dtype=torch.float32)
    # K=3 is left out on purpose: splitting one cluster between two components
    # is decided by float32 E-step rounding, which differs with the GEMM shapes.
    fits = fit_candidates(X32, [(kind, 2), (kind, 1)], seed=0, max_iter=8, tol=0.0)
    for f, k in zip(fits, (2, 1)):
        seq = GaussianMixture(k, covariance_type=kind, random_state=0, max_iter=8, tol=0.0).fit(X32)
        torch.testing.assert_close(f.estimator.covariances_, seq.covariances_, rtol=1e-4, atol=1e-4)
    # Two components, one per cluster: the float64 fit of the same values agrees.
    ref = GaussianMixture(2, covariance_type=kind, random_state=0, max_iter=8, tol=0.0,
                          dtype="float64").fit(X32)
    np.testing.assert_allclose(fits[0].estimator.covariances_.double().numpy(), ref.covariances_,
                               rtol=1e-3, atol=1e-4)


def test_grid_validated_once_keeps_what_validation_records():
    """The grid's data are validated once; each candidate still records what
    its own fit would: feature names of a DataFrame, numpy outputs for
    array-like input, and equal parameters."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(_data(6, d=2), columns=["u", "v"])
    fits = fit_candidates(df, [("full", 2), ("diag", 3)], seed=1, max_iter=30)
    for f, (kind, k) in zip(fits, [("full", 2), ("diag", 3)]):
        seq = GaussianMixture(k, covariance_type=kind, random_state=1, max_iter=30).fit(df)
        assert f.batched
        assert list(f.estimator.feature_names_in_) == ["u", "v"]
        assert f.estimator.n_features_in_ == 2
        assert isinstance(f.estimator.means_, np.ndarray)
        _same_fit(f.estimator, seq)
        assert f.estimator.predict(df).shape == (len(df),)


def test_grid_with_invalid_data_reports_each_candidates_error():
    X = _data(7)
    X[3, 1] = np.nan
    fits = fit_candidates(X, [("full", 2), ("diag", 1)], seed=0)
    for f in fits:
        assert f.estimator is None and not f.batched
        assert "NaN" in f.error or "nan" in f.error.lower()


# ---------------------------------------------------- what the batch hands off
def test_emptied_component_leaves_the_batch():
    X = torch.as_tensor(_data(5))
    good = GMMParams(torch.tensor([0.5, 0.5], dtype=torch.float64),
                     torch.tensor([[0.0, 0.0, 0.0], [4.0, 4.0, 4.0]], dtype=torch.float64),
                     torch.ones(2, 3, dtype=torch.float64), "diag")
    # A component a thousand standard deviations away receives no point.
    far = GMMParams(torch.tensor([0.5, 0.5], dtype=torch.float64),
                    torch.tensor([[0.0, 0.0, 0.0], [1e3, 1e3, 1e3]], dtype=torch.float64),
                    torch.ones(2, 3, dtype=torch.float64), "diag")
    res = fit_batched(X, [good, far], reg_covar=1e-6, tol=1e-3, max_iter=50)
    assert res[0] is not None and res[0].converged
    assert res[1] is None


def test_candidate_the_batch_cannot_fit_gets_the_sequential_error():
    X = _data(6, n=5)
    fits = fit_candidates(X, [("full", 1), ("full", 7)], seed=0)
    assert fits[0].batched and fits[0].estimator is not None
    assert not fits[1].batched and fits[1].estimator is None
    with pytest.raises(ValueError) as exc:
        GaussianMixture(7, random_state=0).fit(X)
    assert fits[1].error == str(exc.value)


def test_mixed_types_are_refused():
    X = torch.as_tensor(_data(0))
    a = GMMParams(torch.ones(1, dtype=torch.float64), X[:1], torch.ones(1, 3, dtype=torch.float64),
                  "diag")
    b = GMMParams(torch.ones(1, dtype=torch.float64), X[:1], torch.ones(1, dtype=torch.float64),
                  "spherical")
    with pytest.raises(ValueError, match="one covariance type"):
        fit_batched(X, [a, b], reg_covar=1e-6, tol=1e-3, max_iter=5)


# --------------------------------------------------------- select_model
_COMPARED = ("log_likelihood", "bic", "aic", "icl")
_EXACT = ("n_components", "covariance_type", "n_parameters", "converged", "n_iter", "guard",
          "n_collapsed", "n_attempts", "selected")


def _same_selection(a, b):
    for col in _COMPARED:
        _close(a.results_[col], b.results_[col])
    for col in _EXACT:
        assert a.results_[col] == b.results_[col], col
    assert a.best_params_ == b.best_params_ and a.best_index_ == b.best_index_
    _same_fit(a.best_estimator_, b.best_estimator_)


def test_select_model_concurrent_equals_sequential():
    X = _data(7, n=500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seq = select_model(X, range(1, 5), TYPES, random_state=0, concurrent=False,
                           starts="estimator")
        con = select_model(X, range(1, 5), TYPES, random_state=0, concurrent=True,
                           starts="estimator")
    _same_selection(con, seq)
    assert con.best_params_["n_components"] == 3  # the three clusters of _data


def test_guard_works_on_batched_results():
    """Integer-valued feature: collapsed candidates are re-seeded or excluded
    the same way whether their first attempt was batched or not."""
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 2, 400)
    X = np.c_[rng.normal(np.where(lab == 0, -2.5, 2.5), 1.0), rng.poisson(1.0, 400)]
    out = {}
    for conc in (False, True):
        with pytest.warns(DegenerateFitWarning):
            out[conc] = select_model(X, [2, 6], "diag", random_state=0, concurrent=conc,
                                     starts="estimator")
    _same_selection(out[True], out[False])
    assert set(out[True].results_["guard"]) - {"ok"}  # the guard did act


def test_best_estimator_is_a_usable_fitted_model(tmp_path):
    X = _data(8)
    sel = select_model(X, [2, 3], ["full", "diag"], random_state=1, concurrent=True,
                       starts="estimator")
    best = sel.best_estimator_
    seq = GaussianMixture(sel.best_params_["n_components"],
                          covariance_type=sel.best_params_["covariance_type"],
                          random_state=1).fit(X)
    np.testing.assert_array_equal(best.predict(X), seq.predict(X))
    _close(best.score_samples(X), seq.score_samples(X))
    _close(best.bic(X), seq.bic(X))
    assert best.sample(5)[0].shape == (5, 3)
    best.save(tmp_path / "m.npz")
    again = load(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.means_, best.means_)
    np.testing.assert_array_equal(again.predict(X), best.predict(X))


def test_fit_time_is_recorded():
    X = _data(9)
    sel = select_model(X, [1, 2], "diag", random_state=0, concurrent=True,
                           starts="estimator")
    assert all(t > 0 and math.isfinite(t) for t in sel.results_["fit_time"])


def test_when_batching_applies():
    X = _data(0)
    assert batch_applies({}) and concurrent_applies(X)
    assert not batch_applies({"verbose": 1})
    assert not batch_applies({"max_iter": 0})
    assert not concurrent_applies(np.zeros((10**6, 4)))  # large data on the CPU
    with pytest.raises(ValueError, match="concurrent"):
        select_model(X, [1], "diag", concurrent="yes", starts="estimator")


def test_candidate_leaving_the_batch_gets_exactly_the_sequential_fit(monkeypatch):
    """A candidate the batch hands off (here: told its M-step failed) is
    refitted on its own; the others stay batched."""
    import gaussmix.batched as batched

    real = batched._grouped_update

    def three_fail(nk, s1, s2, sizes, *args, **kwargs):
        *out, bad = real(nk, s1, s2, sizes, *args, **kwargs)
        return (*out, [b or k == 3 for b, k in zip(bad, sizes)])

    monkeypatch.setattr(batched, "_grouped_update", three_fail)
    X = _data(10)
    fits = fit_candidates(X, [("full", 2), ("full", 3)], seed=4)
    assert fits[0].batched and not fits[1].batched
    seq = GaussianMixture(3, random_state=4).fit(X)
    np.testing.assert_array_equal(fits[1].estimator.means_, seq.means_)
    assert fits[1].estimator.n_iter_ == seq.n_iter_


def test_a_failing_group_does_not_spoil_the_others():
    """One group's singular covariance leaves the other groups' M-step exact."""
    import gaussmix.batched as batched
    from gaussmix.em import m_step
    from gaussmix.stats import SuffStats

    rng = np.random.default_rng(0)
    d = 3
    x = torch.from_numpy(rng.normal(size=(40, d)))
    resp_good = torch.from_numpy(rng.dirichlet([1, 1], size=40))
    # A component on one point: without reg_covar its covariance is zero,
    # which no Cholesky factorisation accepts.
    resp_bad = torch.zeros(40, 2, dtype=torch.float64)
    resp_bad[0, 0] = 1.0
    resp_bad[1:, 1] = 1.0
    resp = torch.cat([resp_good, resp_bad], 1)
    owner = batched._owner([2, 2], x.device)
    shift = torch.zeros(d, dtype=torch.float64)
    nk, s1, s2 = batched.chunk_moments(x, resp, owner, 2, get_covariance_type("full"))
    groups = [SimpleNamespace(n_components=2)] * 2
    out = batched.grouped_m_step(nk, s1, s2, groups, shift, "full", 0.0, 2.2e-16)
    assert out[1] is None and out[0] is not None
    st = SuffStats(nk=nk[:2], s1=s1[:2], s2=s2[:2], log_likelihood=torch.tensor(0.0),
                   weight=torch.tensor(40.0), count=torch.tensor(40.0))
    ref = m_step(st, shift, "full", 0.0, 2.2e-16)
    torch.testing.assert_close(out[0].precisions_cholesky, ref.precisions_cholesky)


def test_a_collapsing_rival_does_not_stop_a_sound_mixture():
    # As on the joint engine (test_joint): a sound mixture is stopped as
    # hopeless only in favour of a sound rival, so a collapsing start far
    # above it does not cut short what may end as the K's only clean fit.
    from gaussmix.search import Start, _initial_params
    Xz, far, split = collapse_case()
    inits = _initial_params(Xz, [Start("kmeans", labels=far), Start("split", labels=split)],
                            [3, 3], "full", 1e-8, len(Xz))
    collapsing, sound = fit_batched(Xz, inits, reg_covar=1e-8, tol=1e-5, tol_type="relative",
                                    max_iter=300, rivals=[3, 3])
    assert (collapsing.lower_bound - sound.lower_bound) * len(Xz) > 100.0
    assert sound.converged


@pytest.mark.parametrize("kind", ["full", "tied", "diag", "spherical"])
def test_both_engines_judge_soundness_alike(kind):
    # The per-type engine's test of collapse (native parameters) and the
    # joint engine's (full-form matrices) agree on the same mixtures: one
    # clean, one with a component of 1 point's weight, one with a variance
    # at the regularisation.
    from gaussmix.batched import _Batch
    from gaussmix.rivals import sound_groups
    from gaussmix.joint import JointRun
    from gaussmix.run_pack import _Pack
    cov = get_covariance_type(kind)
    d, n = 3, 200
    rng = np.random.default_rng(1)
    means = torch.from_numpy(rng.normal(size=(3, d)))
    native = {"full": torch.eye(d).repeat(3, 1, 1) * 0.5, "tied": torch.eye(d) * 0.5,
              "diag": torch.full((3, d), 0.5), "spherical": torch.full((3,), 0.5)}[kind].double()
    pinned = native.clone()
    pinned.view(-1)[0] = 1e-8
    mixtures = [(torch.tensor([0.4, 0.3, 0.3]), native), (torch.tensor([0.595, 0.4, 0.005]), native),
                (torch.tensor([0.4, 0.3, 0.3]), pinned)]
    params = [GMMParams(w.double(), means, cov.precisions_cholesky(c), kind, c)
              for w, c in mixtures]
    per_type = sound_groups(_Batch.of(params), float(n), d)
    runs = [JointRun(kind, 3, None, p.weights, p.means,
                     cov.matrices(p.covariances, d).expand(3, d, d).contiguous())
            for p in params]
    pack = _Pack(runs, d, torch.device("cpu"), 0.0)
    pack.chol = torch.linalg.cholesky(pack.covs)
    assert per_type == pack.sound(n) == [True, False, False]


@pytest.mark.parametrize("kind", ["full", "tied", "diag", "spherical"])
def test_batched_scores_equal_each_mixtures_criteria(kind):
    # One pass for several fitted mixtures of one type (different K, so the
    # groups are padded) gives each one's log-likelihood and entropy, as the
    # per-mixture criteria compute them (to rounding).
    from gaussmix.batched import batched_scores
    from gaussmix.selection import information_criteria
    X = _data(8)
    fits = [GaussianMixture(k, covariance_type=kind, random_state=0).fit(X) for k in (1, 2, 4)]
    scores = batched_scores(torch.from_numpy(X), [f._params for f in fits])
    for f, (ll, entropy) in zip(fits, scores):
        crit = information_criteria(f, X)
        assert ll == pytest.approx(crit["log_likelihood"], rel=1e-12)
        assert entropy == pytest.approx(crit["entropy"], rel=1e-9, abs=1e-9)
        assert ll == pytest.approx(f.score(X) * len(X), rel=1e-12)


def test_grid_criteria_equal_each_estimators_own():
    # starts="estimator": the criteria of the batched candidates come from
    # one pass per type; each equals its estimator's own bic / aic.
    X = _data(9)
    sel = select_model(X, [1, 2, 3], ["full", "diag"], random_state=0, starts="estimator",
                       concurrent=True)
    for i, est in enumerate(sel.estimators_):
        assert sel.results_["bic"][i] == pytest.approx(est.bic(X), rel=1e-12)
        assert sel.results_["aic"][i] == pytest.approx(est.aic(X), rel=1e-12)


@pytest.mark.parametrize("kind", ["full", "VEV"])
def test_packed_batch_equals_scikit_learn_and_the_plain_form(monkeypatch, kind):
    """From 2000 rows a full-shaped batch runs on packed features built once
    (gaussmix.batched_packed): scikit-learn's fits from the same starts (full)
    and the plain form's (any full-shaped model) are where it ends."""
    import gaussmix.batched as batched_module

    X = _data(2, n=2500, d=4)
    Xt = torch.as_tensor(X)
    ks = (2, 3, 5)
    starts = [_sk_start(X, k, "full", seed=k) for k in ks]
    strategy = get_covariance_type(kind)
    full = get_covariance_type("full")
    inits = [GMMParams(torch.as_tensor(w), torch.as_tensor(m),
                       full.precisions_cholesky_from_precisions(torch.as_tensor(p)), kind)
             for w, m, p in starts]
    used = []
    original = batched_module.packed_features

    def spy(*args):
        out = original(*args)
        used.append(out is not None)
        return out

    monkeypatch.setattr(batched_module, "packed_features", spy)
    packed = fit_batched(Xt, inits, reg_covar=1e-6, tol=1e-6, max_iter=100)
    assert used == [True]
    monkeypatch.setattr(batched_module, "packed_features", lambda *args: None)
    plain = fit_batched(Xt, inits, reg_covar=1e-6, tol=1e-6, max_iter=100)
    for a, b in zip(packed, plain):
        assert a.n_iter == b.n_iter and a.converged == b.converged
        _close(a.lower_bound, b.lower_bound, 1e-10)
        _close(a.params.means, b.params.means, 1e-8, 1e-10)
        _close(strategy.covariances(a.params.precisions_cholesky) if kind == "full"
               else a.params.get_covariances(), b.params.get_covariances(), 1e-7, 1e-10)
    if kind == "full":
        for (w, m, p), res, k in zip(starts, packed, ks):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sk = SkGM(k, tol=1e-6, max_iter=100, weights_init=w, means_init=m,
                          precisions_init=p).fit(X)
            assert res.n_iter == sk.n_iter_
            _close(res.lower_bound, sk.lower_bound_, 1e-10)
            _close(res.params.means, sk.means_, 1e-8, 1e-10)
