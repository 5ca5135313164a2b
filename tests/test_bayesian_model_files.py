"""Model files of BayesianGaussianMixture: an exact round trip of the
variational posterior, checked against scikit-learn's predictions from the
loaded posterior, warm starts from a loaded file, refusal of damaged fields,
and GaussianMixture files that are unchanged."""

import io
import json
import zipfile

import numpy as np
import pytest
import sklearn.mixture

import gaussmix
from gaussmix import BayesianGaussianMixture, GaussianMixture

TYPES = ("full", "tied", "diag", "spherical")
PRIORS = ("dirichlet_process", "dirichlet_distribution")
FITTED = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
          "mean_precision_", "degrees_of_freedom_", "mean_prior_", "covariance_prior_",
          "weight_concentration_prior_", "mean_precision_prior_", "degrees_of_freedom_prior_",
          "converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_")


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0, 1, (120, 3)), rng.normal(5, 0.7, (120, 3)), rng.normal(-5, 1.5, (80, 3))]


def _fit(covariance_type="full", prior="dirichlet_process", dtype="float64", **kw):
    return BayesianGaussianMixture(
        n_components=5, covariance_type=covariance_type, weight_concentration_prior_type=prior,
        dtype=dtype, random_state=0, **kw,
    ).fit(_data())


def _rewrite(path, out, arrays=None, meta_change=None):
    """Copy a model file, replacing some ``.npy`` members and/or editing the metadata."""
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    for name, a in (arrays or {}).items():
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
        members[name + ".npy"] = buf.getvalue()
    if meta_change is not None:
        meta = json.loads(members["metadata.json"])
        meta_change(meta)
        members["metadata.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out


def _member(path, name):
    with zipfile.ZipFile(path) as zf:
        return np.lib.format.read_array(io.BytesIO(zf.read(name + ".npy")))


def _assert_equal(x, y, name):
    if isinstance(x, tuple):
        assert isinstance(y, tuple) and len(x) == len(y), name
        for a, b in zip(x, y):
            _assert_equal(a, b, name)
    elif isinstance(x, np.ndarray):
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y), name  # bitwise
    else:
        assert type(x) is type(y) and x == y, name


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("covariance_type", TYPES)
def test_round_trip_is_exact(tmp_path, covariance_type, prior):
    X = _data(1)
    a = _fit(covariance_type, prior)
    a.save(tmp_path / "m.npz")
    b = gaussmix.load(tmp_path / "m.npz")
    assert type(b) is BayesianGaussianMixture
    assert b.get_params() == a.get_params()
    for name in FITTED + ("weight_concentration_",):
        _assert_equal(getattr(a, name), getattr(b, name), name)
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert np.array_equal(a.score_samples(X), b.score_samples(X))
    assert np.array_equal(a.predict(X), b.predict(X))
    a.random_state = b.random_state = 3
    xa, ya = a.sample(30)
    xb, yb = b.sample(30)
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)


def test_float32_round_trip_is_exact(tmp_path):
    X = _data(1).astype(np.float32)
    a = _fit("full", dtype="float32")
    a.save(tmp_path / "m.npz")
    b = gaussmix.load(tmp_path / "m.npz")
    assert b.means_.dtype == np.float32
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert np.array_equal(a.score_samples(X), b.score_samples(X))


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("covariance_type", TYPES)
def test_loaded_posterior_predicts_as_scikit_learn(tmp_path, covariance_type, prior):
    """scikit-learn's E-step, given the loaded posterior, agrees with ours."""
    X = _data(2)
    _fit(covariance_type, prior).save(tmp_path / "m.npz")
    b = gaussmix.load(tmp_path / "m.npz")
    ref = sklearn.mixture.BayesianGaussianMixture(
        n_components=5, covariance_type=covariance_type, weight_concentration_prior_type=prior)
    for name in ("weight_concentration_", "mean_precision_", "means_", "precisions_cholesky_",
                 "degrees_of_freedom_", "covariances_", "weights_", "n_features_in_"):
        setattr(ref, name, getattr(b, name))
    np.testing.assert_allclose(b.predict_proba(X), ref.predict_proba(X), rtol=1e-9, atol=1e-12)
    assert np.array_equal(b.predict(X), ref.predict(X))


def test_warm_start_from_a_loaded_file_continues_the_fit(tmp_path):
    X = _data(3)
    mean_prior, covariance_prior = np.array([0.5, -0.5, 0.0]), 2.0 * np.eye(3)
    a = _fit(mean_prior=mean_prior, covariance_prior=covariance_prior, max_iter=5)
    a.save(tmp_path / "m.npz")
    b = gaussmix.load(tmp_path / "m.npz")
    # The priors the user gave come back, so a refit uses them again.
    assert np.array_equal(b.mean_prior, mean_prior) and np.array_equal(b.covariance_prior, covariance_prior)
    for est in (a, b):
        est.set_params(warm_start=True, max_iter=7)
        est.fit(X)
    for name in ("weights_", "means_", "covariances_", "mean_precision_", "degrees_of_freedom_",
                 "mean_prior_", "covariance_prior_", "lower_bound_", "n_iter_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, err_msg=name)


def test_saved_loaded_saved_file_holds_the_same_arrays(tmp_path):
    _fit("tied").save(tmp_path / "a.npz")
    gaussmix.load(tmp_path / "a.npz").save(tmp_path / "b.npz")
    with zipfile.ZipFile(tmp_path / "a.npz") as za, zipfile.ZipFile(tmp_path / "b.npz") as zb:
        assert za.namelist() == zb.namelist()
        for name in za.namelist():
            assert za.read(name) == zb.read(name), name


def _corruptions(path, d):
    conc = _member(path, "weight_concentration")
    dof = _member(path, "degrees_of_freedom")
    return [
        ({"weight_concentration": -conc}, None, "weight_concentration.*<= 0"),
        ({"weight_concentration": conc[..., ::-1].copy()}, None, "weight_concentration.*disagrees"),
        ({"weight_concentration": conc[..., :-1].copy()}, None, "weight_concentration has shape"),
        ({"mean_precision": np.zeros(5)}, None, "mean_precision.*<= 0"),
        ({"degrees_of_freedom": np.full_like(dof, d - 1.5)}, None, "degrees_of_freedom.*n_features - 1"),
        ({"degrees_of_freedom": dof.astype(np.float32)}, None, "degrees_of_freedom has shape.*dtype"),
        ({"estep_terms": _member(path, "estep_terms") + 0.1}, None, "estep_terms.*disagree"),
        ({"mean_prior": np.array([0.0, np.nan, 0.0])}, None, "mean_prior contains NaN"),
        ({"covariance_prior": -np.eye(d)}, None, "covariance_prior.*valid prior covariance"),
        (None, lambda m: m["priors"].update(degrees_of_freedom_prior=1.0),
         "priors.degrees_of_freedom_prior"),
        (None, lambda m: m["priors"].update(weight_concentration_prior="1"),
         "priors.weight_concentration_prior"),
        (None, lambda m: m.pop("priors"), "priors record"),
        (None, lambda m: m["priors"].update(given=["means"]), "priors.given"),
        (None, lambda m: m["estimator_params"].update(weight_concentration_prior_type="x"),
         "weight_concentration_prior_type"),
        (None, lambda m: m.update(estimator="Pipeline"), "unknown estimator 'Pipeline'"),
        (None, lambda m: m.update(covariance_type="VVV"), "not one the variational mixture fits"),
    ]


def test_each_damaged_field_is_refused_by_name(tmp_path):
    good = tmp_path / "good.npz"
    _fit("full").save(good)
    for i, (arrays, meta_change, match) in enumerate(_corruptions(good, 3)):
        bad = _rewrite(good, tmp_path / f"bad{i}.npz", arrays, meta_change)
        with pytest.raises(ValueError, match=match) as info:
            gaussmix.load(bad)
        assert str(bad) in str(info.value)


def test_missing_posterior_array_is_refused(tmp_path):
    good = tmp_path / "good.npz"
    _fit("diag").save(good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "bad.npz", "w") as dst:
        for info in src.infolist():
            if info.filename != "mean_precision.npy":
                dst.writestr(info.filename, src.read(info))
    with pytest.raises(ValueError, match="mean_precision.npy is missing"):
        gaussmix.load(tmp_path / "bad.npz")


def test_gaussian_mixture_files_keep_format_one(tmp_path):
    X = _data()
    a = GaussianMixture(3, random_state=0).fit(X)
    a.save(tmp_path / "g.npz")
    meta = gaussmix.io.read_metadata(tmp_path / "g.npz")
    assert meta["format_version"] == 1 and "estimator" not in meta and "priors" not in meta
    with zipfile.ZipFile(tmp_path / "g.npz") as zf:
        assert sorted(zf.namelist()) == sorted(
            ["weights.npy", "means.npy", "covariances.npy", "precisions_cholesky.npy",
             "precisions.npy", "metadata.json"])
    b = gaussmix.load(tmp_path / "g.npz")
    assert type(b) is GaussianMixture
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    # Bayesian files need a reader of format 2, so older readers refuse them.
    _fit().save(tmp_path / "b.npz")
    assert gaussmix.io.read_metadata(tmp_path / "b.npz")["format_version"] == 2


def test_unfitted_bayesian_mixture_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="BayesianGaussianMixture is not fitted"):
        BayesianGaussianMixture().save(tmp_path / "m.npz")


def test_cli_info_describes_the_posterior(tmp_path, capsys):
    from gaussmix.cli import main

    model = _fit("diag", "dirichlet_distribution", weight_concentration_prior=0.01)
    model.save(tmp_path / "m.npz")
    capsys.readouterr()
    assert main(["info", str(tmp_path / "m.npz"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["estimator"] == "BayesianGaussianMixture"
    assert info["weight_concentration_prior_type"] == "dirichlet_distribution"
    assert info["weight_concentration_prior"] == 0.01
    assert info["components_above_1%"] == int((model.weights_ > 0.01).sum()) == 3
    assert info["degrees_of_freedom_prior"] == 3.0 and "n_parameters" not in info
    assert main(["info", str(tmp_path / "m.npz")]) == 0
    text = capsys.readouterr().out
    assert "BayesianGaussianMixture" in text and "components_above_1%: 3" in text
