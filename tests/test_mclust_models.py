"""mclust's fourteen covariance models against R mclust's own numbers.

tests/reference/mclust_models.json is written by
tests/reference/make_mclust_models.R: from one fixed soft partition z per data
set, mclust's mstep, estep and me for every model, and the free-parameter
counts.  Here the same z goes through gaussmix's M-step (the strategies'
covariances_from_stats), E-step and EM loop.
"""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gaussmix.covariance import MCLUST_MODELS, get_covariance_type
from gaussmix.em import EMResult, e_step, run_em
from gaussmix.params import GMMParams

REF_DIR = Path(__file__).parent / "reference"
REF = json.loads((REF_DIR / "mclust_models.json").read_text())
SETS = ("iris", "faithful", "thyroid", "banknote", "eruptions")
# In one dimension mclust has two models: equal (E) or variable (V) variance.
ONE_D = {m: m[0] for m in MCLUST_MODELS}


def _data(name):
    file = "faithful" if name == "eruptions" else name
    X = np.loadtxt(REF_DIR / "data" / f"{file}.csv", delimiter=",", skiprows=1)
    return X[:, :1] if name == "eruptions" else X


def _cases():
    for s in SETS:
        for m in MCLUST_MODELS:
            yield s, m


def _ref(dataset, model):
    entry = REF["datasets"][dataset]
    return entry["models"][ONE_D[model] if entry["d"] == 1 else model]


def _full(cov, native, k, d):
    """Native covariances as (K, D, D) matrices."""
    c = torch.as_tensor(native)
    if c.dim() == 3:
        return c
    if c.dim() == 2 and c.shape == (d, d) and cov.shared:
        return c.expand(k, d, d)
    if c.dim() == 2:
        return torch.diag_embed(c)
    return c[:, None, None] * torch.eye(d, dtype=c.dtype)


def m_step_from(X, z, model, reg=0.0):
    """gaussmix's M-step from responsibilities z, as GMMParams."""
    cov = get_covariance_type(model)
    x = torch.from_numpy(X)
    r = torch.from_numpy(z)
    shift = x.mean(0)
    xc = x - shift
    nk = r.sum(0)
    means_c = (r.T @ xc) / nk[:, None]
    covs = cov.covariances_from_stats(nk, means_c, cov.second_moment(xc, r), reg)
    return GMMParams(nk / nk.sum(), means_c + shift, cov.precisions_cholesky(covs), model,
                     covariances=covs)


@pytest.mark.parametrize("dataset,model", list(_cases()))
def test_mstep_and_estep_equal_mclust(dataset, model):
    ref = _ref(dataset, model)
    X = _data(dataset)
    z = np.asarray(REF["datasets"][dataset]["z"], dtype=np.float64)
    k, d = z.shape[1], X.shape[1]
    params = m_step_from(X, z, model)
    ms = ref["mstep"]
    np.testing.assert_allclose(params.weights.numpy(), ms["pro"], rtol=1e-12)
    np.testing.assert_allclose(params.means.numpy(), np.asarray(ms["mean"]), rtol=1e-12)
    ours = _full(params.cov, params.covariances, k, d).numpy()
    theirs = np.asarray(ms["sigma"], dtype=np.float64)
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-8 * scale)
    # E-step of those parameters: the total log-likelihood.
    ll = float(e_step(torch.from_numpy(X), params)[1].sum())
    assert ll == pytest.approx(ref["estep_loglik"], rel=1e-8)


@pytest.mark.parametrize("dataset,model", list(_cases()))
def test_em_from_the_same_z_reaches_mclusts_loglik(dataset, model):
    ref = _ref(dataset, model)["me"]
    X = _data(dataset)
    z = np.asarray(REF["datasets"][dataset]["z"], dtype=np.float64)
    x = torch.from_numpy(X)
    res = run_em(lambda: [(x, None)], m_step_from(X, z, model), reg_covar=0.0, tol=1e-5,
                 tol_type="relative", max_iter=10_000)
    assert isinstance(res, EMResult) and res.converged
    total = res.lower_bound * X.shape[0]
    assert total >= ref["loglik"] - 1e-6 * abs(ref["loglik"])
    if model != "VVE":
        assert total == pytest.approx(ref["loglik"], rel=1e-6)
    # VVE: mclust's M-step is not the exact maximiser (its orientation steps
    # leave out the volumes), so where it ends depends on its start; mclust
    # carries the orientation over from one EM iteration to the next, gaussmix
    # starts each M-step from the identity, and ends higher on these data.


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_parameter_counts_equal_mclusts(model):
    for dataset in SETS:
        entry = REF["datasets"][dataset]
        d, k = entry["d"], REF["G"]
        if d == 1:
            continue
        cov = get_covariance_type(model)
        assert cov.n_cov_parameters(k, d) == entry["models"][model]["n_var_params"]


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ValueError, match="EII") as info:
        get_covariance_type("XYZ")
    assert "spherical" in str(info.value)


def test_select_all_fourteen_on_iris_chooses_mclusts_model():
    # mclust: VEV with 2 components, BIC -561.73 (mclust's sign).
    from gaussmix import select_model
    best = REF["iris_selection"]
    X = _data("iris")
    with pytest.warns(UserWarning):  # some cells collapse and are re-seeded
        sel = select_model(X, range(1, 10), "all", random_state=0)
    assert sel.best_params_ == {"n_components": best["best_G"],
                                "covariance_type": best["best_model"]}
    r = sel.results_
    i = [j for j, (t, k) in enumerate(zip(r["covariance_type"], r["n_components"]))
         if t == "VEV" and k == 2][0]
    assert -r["bic"][i] == pytest.approx(best["best_bic"], rel=1e-4)
    assert set(r["covariance_type"]) == set(MCLUST_MODELS)


@pytest.mark.parametrize("model", ["EII", "VEI", "EVE", "VVE", "EEV", "VEV", "EVV"])
def test_estimator_path_chunked_equals_whole_and_file_round_trip(model, tmp_path):
    from gaussmix import GaussianMixture
    from gaussmix.io import load, save_model
    X = _data("iris")
    whole = GaussianMixture(3, covariance_type=model, random_state=0, tol=1e-8).fit(X)
    chunked = GaussianMixture(3, covariance_type=model, random_state=0, tol=1e-8,
                              batch_size=17).fit(X)
    assert whole.covariances_.shape == (3, 4, 4)
    np.testing.assert_allclose(chunked.means_, whole.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(chunked.covariances_, whole.covariances_, rtol=1e-9, atol=1e-12)
    path = tmp_path / "m.gmm"
    save_model(whole, path)
    back = load(path)
    np.testing.assert_array_equal(back.score_samples(X), whole.score_samples(X))
    # Draws follow the fitted covariances.
    draws, labels = whole.sample(100_000)
    k = int(np.argmax(whole.weights_))
    emp = np.cov(draws[labels == k].T)
    assert np.abs(emp - whole.covariances_[k]).max() < 0.05 * np.abs(whole.covariances_[k]).max()


def test_cli_accepts_mclust_names_in_any_case_and_all():
    from gaussmix.cli import UsageError, _parse_types
    assert _parse_types(["vev,EEE", "full"]) == ["VEV", "EEE", "full"]
    assert _parse_types(["all"]) == list(MCLUST_MODELS)
    assert _parse_types(None) == ["full", "tied", "diag", "spherical"]
    with pytest.raises(UsageError, match="VEV"):
        _parse_types(["XYZ"])


def _start(model):
    """A fixed start on iris: three rows as means, unit precisions."""
    X = _data("iris")
    return X, dict(weights_init=np.full(3, 1 / 3), means_init=X[[0, 60, 120]],
                   precisions_init=np.stack([np.eye(4)] * 3))


@pytest.mark.parametrize("model", ["EII", "VEI", "EEV", "VEV", "EVE", "VVE", "EVV"])
def test_partial_fit_first_step_is_the_em_step(model):
    # learning_decay=1, learning_offset=0: the first batch's step is a full EM
    # iteration from the initial parameters (E-step, then the model's M-step).
    from gaussmix import GaussianMixture
    X, init = _start(model)
    gm = GaussianMixture(3, covariance_type=model, learning_decay=1.0, learning_offset=0.0,
                         reg_covar=0.0, **init)
    gm.partial_fit(X)
    start = GMMParams(torch.from_numpy(init["weights_init"]), torch.from_numpy(init["means_init"]),
                      torch.stack([torch.eye(4, dtype=torch.float64)] * 3), "full")
    z = torch.exp(e_step(torch.from_numpy(X), start)[0]).numpy()
    expected = m_step_from(X, z, model)
    np.testing.assert_allclose(gm.means_, expected.means.numpy(), rtol=1e-10)
    # EVE and VVE stop their MM iterations on the relative change of the
    # objective (1.5e-8, mclust's rule), which is flat at its optimum: the
    # orientation is determined to about its square root, and totals that
    # differ in the last bits can stop it an iteration apart.
    rtol = 5e-3 if model in ("EVE", "VVE") else 1e-8
    np.testing.assert_allclose(gm.covariances_, expected.covariances.numpy(), rtol=rtol,
                               atol=rtol * 1e-4)


@pytest.mark.parametrize("model", ["VEV", "EVE"])
def test_float32_fit_keeps_float64_accuracy(model):
    X, init = _start(model)
    float32_keeps_float64_accuracy(X, dict(covariance_type=model, tol=1e-10, max_iter=30, **init))


def float32_keeps_float64_accuracy(X, kw):
    """A float32 fit of three components ends within float32's accuracy of float64's."""
    from gaussmix import GaussianMixture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f64 = GaussianMixture(3, **kw).fit(X)
        f32 = GaussianMixture(3, dtype="float32", **kw).fit(X)
    np.testing.assert_allclose(f32.means_, f64.means_, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(f32.covariances_, f64.covariances_, rtol=1e-3, atol=1e-4)


def test_interrupted_fit_of_a_constrained_model_resumes_identically(tmp_path, monkeypatch):
    from gaussmix import GaussianMixture
    from gaussmix.checkpoint import FitCheckpoint
    X, init = _start("VEV")
    kw = dict(covariance_type="VEV", tol=1e-8, max_iter=40, **init)
    reference = GaussianMixture(3, **kw).fit(X)
    original, calls = FitCheckpoint.save, [0]

    class Stop(BaseException):
        pass

    def save_then_stop(self, *args):
        original(self, *args)
        calls[0] += 1
        if calls[0] == 5:
            raise Stop

    path = tmp_path / "fit.npz"
    monkeypatch.setattr(FitCheckpoint, "save", save_then_stop)
    with pytest.raises(Stop):
        GaussianMixture(3, **kw).fit(X, checkpoint=path)
    monkeypatch.undo()
    resumed = GaussianMixture(3, **kw).fit(X, checkpoint=path)
    assert resumed._resumed_from_ is not None
    np.testing.assert_array_equal(resumed.means_, reference.means_)
    np.testing.assert_array_equal(resumed.covariances_, reference.covariances_)


def test_every_model_is_fitted_on_data_with_a_constant_feature():
    # reg_covar enters each component's scatter before the model's constraint,
    # so models whose M-step divides by a determinant stay defined.
    from gaussmix import select_model
    X = _data("iris")
    X = np.c_[X, np.full(len(X), 2.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sel = select_model(X, [1, 2, 3], "all", random_state=0)
    ll = np.asarray(sel.results_["log_likelihood"], dtype=float)
    assert np.isfinite(ll).all()
