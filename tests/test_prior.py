"""mclust's conjugate prior (priorControl / defaultPrior) against R mclust's own numbers.

tests/reference/mclust_models.json (tests/reference/make_mclust_models.R)
holds, per data set, mclust's defaultPrior hyper-parameters and, per model,
its mstep, estep and me with ``prior = priorControl()`` from the data set's
fixed soft partition z; and Mclust(iris, prior = priorControl())'s BIC table.
tests/reference/mclust_prior.json (tests/reference/make_mclust_prior.R) has
the same for other settings: no shrinkage, and a given shrinkage, mean and
scale.
"""

import json
import warnings

import numpy as np
import pytest
import torch

from gaussmix import GaussianMixture, select_model
from gaussmix.covariance import MCLUST_MODELS, PRIOR_MODELS, get_covariance_type
from gaussmix.em import EMResult, e_step, run_em
from gaussmix.maximization import m_step
from gaussmix.prior import ConjugatePrior
from gaussmix.stats import SuffStats
from gaussmix.variational import data_moments
from test_mclust_models import (
    ONE_D, REF, REF_DIR, SETS, _data, _full, _ref, float32_keeps_float64_accuracy,
)

UNSUPPORTED = ("VEE", "EVE", "VVE", "EVV")
SETTINGS = json.loads((REF_DIR / "mclust_prior.json").read_text())


def _cases():
    for s in SETS:
        for m in PRIOR_MODELS:
            yield s, m


def _z(dataset):
    return np.asarray(REF["datasets"][dataset]["z"], dtype=np.float64)


def _prior(X, k, model, settings=None):
    """Our hyper-parameters (defaultPrior with ``settings``) for the data,
    ``k`` components and the model."""
    x = torch.from_numpy(X)
    mean, cov = data_moments([(x, None)], x.mean(0))
    shape = get_covariance_type(model).prior_scale_shape(X.shape[1])
    return ConjugatePrior(**(settings or {})).resolve(mean, cov, len(X), k, shape)


def map_step_from(X, z, model, prior, variant):
    """gaussmix's M-step under ``prior`` from responsibilities z."""
    cov = get_covariance_type(model)
    x, r = torch.from_numpy(X), torch.from_numpy(z)
    shift = x.mean(0)
    xc = x - shift
    n = torch.tensor(float(len(X)), dtype=torch.float64)
    stats = SuffStats(r.sum(0), r.T @ xc, cov.second_moment(xc, r),
                      torch.zeros((), dtype=torch.float64), n, n)
    return m_step(stats, shift, model, 0.0, torch.finfo(torch.float64).eps, prior=prior,
                  prior_variant=variant)


def _relative(ours, theirs):
    theirs = np.asarray(theirs, dtype=np.float64)
    return float(np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max())


# ------------------------------------------------------------- defaultPrior
@pytest.mark.parametrize("dataset", SETS)
def test_default_prior_equals_mclusts(dataset):
    ref = REF["datasets"][dataset]["default_prior"]
    X = _data(dataset)
    k, d = _z(dataset).shape[1], X.shape[1]
    for model in PRIOR_MODELS:
        # Through the estimator: the data pass of fit (max_iter=0 runs no EM).
        gm = GaussianMixture(k, covariance_type=model, prior="default", max_iter=0,
                             batch_size=41)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm.fit(X)
        p = gm.prior_
        assert p.shrinkage == ref["shrinkage"] == 0.01
        assert p.dof == ref["dof"] == d + 2
        np.testing.assert_allclose(p.mean.numpy(), ref["mean"], rtol=1e-13)
        # mclust: a number (mean variance) for the spherical and diagonal
        # models, the covariance for the others, both times G^(-2/d).
        spherical = get_covariance_type(model).mclust_name[2] == "I"
        want = np.asarray(ref["scale_spherical"] if spherical else ref["scale"])
        assert p.scale.shape == (() if spherical else (d, d))
        np.testing.assert_allclose(p.scale.numpy(), want.reshape(p.scale.shape), rtol=1e-12)
        # The scale's dependence on G: G^(-2/d) times the data's.
        for g in (1, 2, 5):
            scaled = _prior(X, g, model).scale.numpy()
            np.testing.assert_allclose(scaled, want.reshape(p.scale.shape) * (k / g) ** (2 / d),
                                       rtol=1e-12)


# ------------------------------------------------- one M-step and one E-step
@pytest.mark.parametrize("dataset,model", list(_cases()))
def test_map_mstep_and_estep_equal_mclust(dataset, model):
    ref = _ref(dataset, model)["prior"]
    X, z = _data(dataset), _z(dataset)
    k, d = z.shape[1], X.shape[1]
    params = map_step_from(X, z, model, _prior(X, k, model), "mstep")
    ms = ref["mstep"]
    assert _relative(params.weights.numpy(), ms["pro"]) < 1e-8
    assert _relative(params.means.numpy(), ms["mean"]) < 1e-8
    assert _relative(_full(params.cov, params.covariances, k, d).numpy(), ms["sigma"]) < 1e-8
    ll = float(e_step(torch.from_numpy(X), params)[1].sum())
    assert ll == pytest.approx(ref["estep_loglik"], rel=1e-8)


@pytest.mark.parametrize("dataset,model", list(_cases()))
def test_map_em_from_the_same_z_reaches_mclusts_loglik(dataset, model):
    ref = _ref(dataset, model)["prior"]["me"]
    X, z = _data(dataset), _z(dataset)
    prior = _prior(X, z.shape[1], model)
    x = torch.from_numpy(X)
    # mclust's me: its M-step from z, then EM under its stopping rule.
    res = run_em(lambda: [(x, None)], map_step_from(X, z, model, prior, "me"), reg_covar=0.0,
                 tol=1e-5, tol_type="relative", max_iter=10_000, prior=prior)
    assert isinstance(res, EMResult) and res.converged
    assert res.lower_bound * X.shape[0] == pytest.approx(ref["loglik"], rel=1e-6)
    assert res.n_iter == ref["iterations"][0]


def _setting_cases():
    for s, entry in SETTINGS["datasets"].items():
        for name in entry["settings"]:
            for m in PRIOR_MODELS:
                yield s, name, m


def _settings(dataset, name, model):
    entry = SETTINGS["datasets"][dataset]
    if name == "no_shrinkage":
        return {"shrinkage": 0.0}
    given = entry["given"]
    d = entry["d"]
    spherical = get_covariance_type(model).prior_scale_shape(d) == ()
    scale = given["scale"] if spherical else given["scale"] * np.eye(d)
    return {"shrinkage": given["shrinkage"], "mean": given["mean"], "scale": scale}


@pytest.mark.parametrize("dataset,setting,model", list(_setting_cases()))
def test_other_settings_equal_mclust(dataset, setting, model):
    entry = SETTINGS["datasets"][dataset]
    d = entry["d"]
    ref = entry["settings"][setting][ONE_D[model] if d == 1 else model]
    X, z = _data(dataset), np.asarray(entry["z"], dtype=np.float64)
    prior = _prior(X, z.shape[1], model, _settings(dataset, setting, model))
    params = map_step_from(X, z, model, prior, "mstep")
    ms = ref["mstep"]
    assert _relative(params.weights.numpy(), ms["pro"]) < 1e-8
    assert _relative(params.means.numpy(), ms["mean"]) < 1e-8
    assert _relative(_full(params.cov, params.covariances, 3, d).numpy(), ms["sigma"]) < 1e-8
    ll = float(e_step(torch.from_numpy(X), params)[1].sum())
    assert ll == pytest.approx(ref["estep_loglik"], rel=1e-8)
    x = torch.from_numpy(X)
    res = run_em(lambda: [(x, None)], map_step_from(X, z, model, prior, "me"), reg_covar=0.0,
                 tol=1e-5, tol_type="relative", max_iter=10_000, prior=prior)
    assert res.lower_bound * X.shape[0] == pytest.approx(ref["me"]["loglik"], rel=1e-6)
    assert res.n_iter == ref["me"]["iterations"][0]


def test_the_mstep_and_me_variants_differ_where_mclusts_do():
    X, z = _data("iris"), _z("iris")
    for model in PRIOR_MODELS:
        prior = _prior(X, 3, model)
        a = map_step_from(X, z, model, prior, "mstep").covariances
        b = map_step_from(X, z, model, prior, "me").covariances
        differ = not torch.allclose(a, b, rtol=1e-10, atol=0)
        # With mclust's default shrinkage > 0: EEI and EVI (denominators), EEV
        # (shrunk means in me) and EII (residuals about the shrunk means).
        assert differ == (model in ("EII", "EEI", "EVI", "EEV")), model


# ------------------------------------------------------------ model choice
def test_select_model_with_the_prior_on_iris_is_mclusts():
    ref = REF["iris_selection_prior"]
    X = _data("iris")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collapsed cells at large K
        sel = select_model(X, range(1, 10), "all", random_state=0, prior="default")
    r = sel.results_
    # mclust's Mclust(prior=) leaves out the four models without a prior.
    assert set(r["covariance_type"]) == set(PRIOR_MODELS) == set(ref["bic"])
    assert sel.best_params_ == {"n_components": ref["best_G"],
                                "covariance_type": ref["best_model"]} == {
        "n_components": 2, "covariance_type": "VEV"}
    # Our BIC is lower-is-better: minus mclust's.
    best = -r["bic"][sel.best_index_]
    assert best == pytest.approx(ref["best_bic"], rel=1e-4)
    assert abs(best - (-580.8136)) < 1e-4
    assert set(r["start"]) == {"hc"}
    # Every model with K <= 3 (K = 1 is mclust's mvn: XII, XXI or XXX).
    for t, k, b in zip(r["covariance_type"], r["n_components"], r["bic"]):
        if k <= 3:
            assert -b == pytest.approx(ref["bic"][t][k - 1], rel=1e-4), (t, k)


def test_select_model_with_a_prior_drops_named_models_with_a_warning():
    X = _data("faithful")
    with pytest.warns(UserWarning, match="no conjugate prior for \\['EVE'\\]"):
        sel = select_model(X, [1, 2], ["VVV", "EVE"], random_state=0, prior="default")
    assert set(sel.results_["covariance_type"]) == {"VVV"}
    with pytest.raises(ValueError, match="EII"):
        select_model(X, [1, 2], ["VEE", "EVV"], prior="default")
    with pytest.raises(ValueError, match="search_params"):
        select_model(X, [1, 2], "VVV", prior="default", search_params={"n_kmeans": 1})
    # The scale must suit every remaining type.
    with pytest.raises(ValueError, match="VVV"):
        select_model(X, [1, 2], ["VII", "VVV"], prior={"scale": 0.5})


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("model", UNSUPPORTED)
def test_a_prior_on_a_model_mclust_has_none_for_is_refused(model):
    X = _data("iris")
    with pytest.raises(ValueError, match="VEV") as info:
        GaussianMixture(2, covariance_type=model, prior="default").fit(X)
    assert model in str(info.value) and "EII" in str(info.value)
    prior = _prior(X, 3, "VVV")
    with pytest.raises(ValueError, match="no conjugate prior"):
        map_step_from(X, _z("iris"), model, prior, "me")


@pytest.mark.parametrize("prior,match", [
    ({"shrinkage": -0.1}, "shrinkage must be >= 0"),
    ({"shrinkage": float("nan")}, "finite number"),
    ({"dof": np.array([6.0, 6.0])}, "dof must be a finite number"),
    ({"dof": 2.5}, "dof must be > n_features - 1"),
    ({"scale": np.eye(3)}, r"\(4, 4\)"),
    ({"scale": 0.5}, r"\(4, 4\) symmetric positive-definite"),
    ({"scale": -np.eye(4)}, "not positive definite"),
    ({"scale": np.triu(np.ones((4, 4)))}, "not symmetric"),
    ({"mean": np.zeros(3)}, r"shape \(4,\)"),
    ({"mean": [np.nan] * 4}, "NaN"),
    ({"shrink": 0.1}, "Unknown prior setting"),
    ("mclust", "Invalid value for 'prior'"),
])
def test_bad_prior_settings_are_refused(prior, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(2, covariance_type="VVV", prior=prior).fit(_data("iris"))


def test_a_scalar_scale_for_a_spherical_model():
    X = _data("iris")
    gm = GaussianMixture(2, covariance_type="VII", prior={"scale": 0.3}, random_state=0).fit(X)
    assert float(gm.prior_.scale) == 0.3
    with pytest.raises(ValueError, match="one positive number"):
        GaussianMixture(2, covariance_type="VII", prior={"scale": np.eye(4)}).fit(X)
    with pytest.raises(ValueError, match="must be positive"):
        GaussianMixture(2, covariance_type="VII", prior={"scale": 0.0}).fit(X)


def test_a_singular_default_scale_is_a_clear_error_never_nan():
    X = np.c_[_data("iris"), np.full(150, 2.0)]  # a constant feature
    with pytest.raises(ValueError, match="constant"):
        GaussianMixture(3, covariance_type="VEV", prior="default").fit(X)
    # The spherical and diagonal models' scale is the mean variance: defined.
    for model in ("EII", "VII", "EEI", "VEI", "EVI", "VVI"):
        gm = GaussianMixture(3, covariance_type=model, prior="default", reg_covar=0.0,
                             init_params="hc").fit(X)
        assert np.isfinite(gm.covariances_).all() and np.isfinite(gm.lower_bound_)


def test_partial_fit_with_a_prior_is_refused():
    with pytest.raises(ValueError, match="partial_fit does not support a prior"):
        GaussianMixture(2, prior="default").partial_fit(_data("iris"))


# --------------------------------------------------------- estimator paths
def test_prior_none_and_false_are_maximum_likelihood():
    X = _data("faithful")
    a = GaussianMixture(2, random_state=0).fit(X)
    b = GaussianMixture(2, random_state=0, prior=False).fit(X)
    np.testing.assert_array_equal(a.covariances_, b.covariances_)
    assert a.prior_ is None


@pytest.mark.parametrize("model", ["EII", "VEI", "EEV", "VEV", "full"])
def test_chunked_equals_whole_with_a_prior(model):
    X = _data("iris")
    kw = dict(covariance_type=model, prior="default", random_state=0, tol=1e-8)
    whole = GaussianMixture(3, **kw).fit(X)
    chunked = GaussianMixture(3, batch_size=17, **kw).fit(X)
    np.testing.assert_allclose(chunked.means_, whole.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(chunked.covariances_, whole.covariances_, rtol=1e-10, atol=1e-12)
    assert chunked.lower_bound_ == pytest.approx(whole.lower_bound_, rel=1e-10)


def test_integer_sample_weights_count_as_copies_under_a_prior():
    X = _data("faithful")
    w = np.tile([1.0, 2.0, 3.0], len(X) // 3 + 1)[:len(X)]
    kw = dict(covariance_type="VVV", prior="default", init_params="hc", tol=1e-10)
    weighted = GaussianMixture(2, **kw).fit(X, sample_weight=w)
    copies = GaussianMixture(2, **kw).fit(np.repeat(X, w.astype(int), axis=0))
    np.testing.assert_allclose(weighted.prior_.scale.numpy(), copies.prior_.scale.numpy(),
                               rtol=1e-10)
    np.testing.assert_allclose(weighted.covariances_, copies.covariances_, rtol=1e-6)


def test_the_prior_survives_model_files_and_get_params(tmp_path):
    from gaussmix.io import load, save_model
    X = _data("iris")
    for prior in ("default", {"shrinkage": 0.1, "scale": 0.3},
                  ConjugatePrior(mean=np.zeros(4), dof=7.0)):
        gm = GaussianMixture(2, covariance_type="VII", prior=prior, random_state=0).fit(X)
        save_model(gm, tmp_path / "m.npz")
        back = load(tmp_path / "m.npz")
        np.testing.assert_array_equal(back.score_samples(X), gm.score_samples(X))
        np.testing.assert_array_equal(back.prior_.scale.numpy(), gm.prior_.scale.numpy())
        again = back.fit(X)  # refits with the same prior
        np.testing.assert_array_equal(again.means_, gm.means_)
    assert back.get_params()["prior"].dof == 7.0


def test_float32_fit_with_a_prior_keeps_float64_accuracy():
    float32_keeps_float64_accuracy(_data("iris"), dict(
        covariance_type="VEV", prior="default", init_params="hc", tol=1e-10, max_iter=30))


def test_cli_fit_with_prior(tmp_path, capsys):
    from gaussmix.cli import main
    path = tmp_path / "iris.csv"
    np.savetxt(path, _data("iris"), delimiter=",", header="a,b,c,d", comments="")
    assert main(["fit", str(path), "-k", "2", "-t", "VEV,VVV", "--prior", "-q", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["best_params"] == {"n_components": 2, "covariance_type": "VEV"}
    assert -min(out["results"]["bic"]) == pytest.approx(-580.8136, rel=1e-6)


def test_every_supported_model_is_listed():
    assert set(PRIOR_MODELS) == set(MCLUST_MODELS) - set(UNSUPPORTED)


def test_a_checkpoint_resumes_only_the_same_prior(tmp_path):
    X = _data("iris")
    path = tmp_path / "fit.npz"
    kw = dict(covariance_type="VEV", random_state=0)
    first = GaussianMixture(3, prior="default", **kw).fit(X, checkpoint=path)
    again = GaussianMixture(3, prior="default", **kw).fit(X, checkpoint=path)
    assert again._resumed_from_ is not None
    np.testing.assert_array_equal(again.means_, first.means_)
    with pytest.raises(ValueError, match="prior"):
        GaussianMixture(3, prior={"shrinkage": 0.5}, **kw).fit(X, checkpoint=path)
