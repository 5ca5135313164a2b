"""Every bad input gets a ValueError that names the problem and says what to do."""

import numpy as np
import pytest
import torch
from _checks import check_error
from sklearn.exceptions import NotFittedError

from gaussmix import GaussianMixture

RNG = np.random.default_rng(0)
X = RNG.normal(size=(30, 2))


def _with(value, i=0, j=0):
    a = X.copy()
    a[i, j] = value
    return a


# (id, callable, regex for the problem, regex for the remedy)
FIT_CASES = [
    ("nan", lambda: GaussianMixture().fit(_with(np.nan)), r"NaN", r"[Rr]emove or impute"),
    ("inf", lambda: GaussianMixture().fit(_with(np.inf)), r"infinity", r"[Rr]emove or impute"),
    ("nan-tensor", lambda: GaussianMixture().fit(torch.tensor(_with(np.nan))), r"NaN", r"impute"),
    ("-inf-tensor", lambda: GaussianMixture().fit(torch.tensor(_with(-np.inf))), r"infinity", r"impute"),
    ("1d", lambda: GaussianMixture().fit(X[:, 0]), r"2D array, got 1D", r"[Rr]eshape"),
    ("3d", lambda: GaussianMixture().fit(X[None]), r"dim 3", r"2D array of shape"),
    ("3d-tensor", lambda: GaussianMixture().fit(torch.tensor(X[None])), r"3D array", r"reshape"),
    ("one-sample", lambda: GaussianMixture().fit(X[:1]), r"1 sample", r"at least 2 samples"),
    ("no-sample", lambda: GaussianMixture().fit(X[:0]), r"0 sample", r"at least 2 samples"),
    ("no-feature", lambda: GaussianMixture().fit(np.zeros((5, 0))), r"0 feature", r"at least one feature"),
    ("fewer-samples-than-components", lambda: GaussianMixture(5).fit(X[:3]),
     r"n_samples >= n_components.*n_components = 5, n_samples = 3", r"fewer components or more data"),
    ("strings", lambda: GaussianMixture().fit([["a", "b"], ["c", "d"]]), r"must be numeric",
     r"Convert or drop"),
    ("complex", lambda: GaussianMixture().fit(X + 1j), r"Complex data", r"real values"),
    ("covariance-type", lambda: GaussianMixture(covariance_type="fool").fit(X),
     r"covariance_type 'fool'", r"choose one of \['diag', 'full', 'spherical', 'tied'\]"),
    ("init-params", lambda: GaussianMixture(init_params="bogus").fit(X), r"init_params 'bogus'",
     r"choose one of"),
]

HYPER = [
    ("n_components", 0), ("n_components", -1), ("n_components", 1.5), ("n_components", True),
    ("tol", -1.0), ("tol", float("nan")), ("tol", "small"),
    ("reg_covar", -1e-6), ("reg_covar", float("inf")),
    ("max_iter", -1), ("max_iter", 2.5),
    ("n_init", 0), ("n_init", 2.0),
    ("verbose", -1), ("verbose_interval", 0),
    ("batch_size", 0), ("batch_size", 1.5),
    ("warm_start", "yes"), ("random_state", "seed"), ("random_state", -3),
]

SAMPLE_WEIGHT = [
    ("negative", -np.ones(30), r"Negative values in sample_weight", r"weights >= 0"),
    ("all-zero", np.zeros(30), r"sums to zero", r"weight > 0"),
    ("wrong-length", np.ones(3), r"sample_weight.shape == \(3,\)", r"one weight per sample"),
    ("nan", np.full(30, np.nan), r"NaN or infinity", r"finite weight"),
    ("strings", np.array(["a"] * 30), r"must be numeric", r"non-negative numbers"),
]

INIT = [
    ("weights-sum", dict(weights_init=[0.3, 0.3]), r"should be normalized", r"Divide weights_init by its sum"),
    ("weights-shape", dict(weights_init=[1.0]), r"shape of \(2,\)", r"shape"),
    ("weights-range", dict(weights_init=[-0.5, 1.5]), r"range \[0, 1\]", r"range"),
    ("weights-nan", dict(weights_init=[np.nan, 1.0]), r"'weights' contains NaN", r"finite real"),
    ("weights-strings", dict(weights_init=["a", "b"]), r"'weights' must be an array of numbers",
     r"numeric array of shape \(2,\)"),
    ("means-shape", dict(means_init=np.zeros((3, 2))), r"'means' should have the shape of \(2, 2\)",
     r"shape"),
    ("means-nan", dict(means_init=np.full((2, 2), np.nan)), r"means contains NaN", r"[Rr]emove"),
    ("precisions-not-pd", dict(precisions_init=np.array([np.eye(2), -np.eye(2)])),
     r"'full precision' should be symmetric, positive-definite", r"Add a small multiple of the identity"),
    ("precisions-asymmetric", dict(precisions_init=np.array([np.eye(2), [[1, 0.5], [0, 1]]])),
     r"'full precision' should be symmetric, positive-definite: it is not symmetric", r"\(A \+ A.T\) / 2"),
    ("precisions-shape", dict(precisions_init=np.ones((2, 3, 3))),
     r"'full precision' should have the shape of \(2, 2, 2\)", r"shape"),
    ("precisions-diag-negative", dict(covariance_type="diag", precisions_init=-np.ones((2, 2))),
     r"'diag precision' should be positive", r"> 0"),
    ("precisions-spherical-nan", dict(covariance_type="spherical", precisions_init=[np.nan, 1.0]),
     r"'spherical precision' contains NaN", r"finite real"),
]


_check = check_error


@pytest.mark.parametrize("case", FIT_CASES, ids=[c[0] for c in FIT_CASES])
def test_bad_fit_input(case):
    _, fn, problem, remedy = case
    _check(fn, problem, remedy)


@pytest.mark.parametrize("name,value", HYPER, ids=[f"{n}={v!r}" for n, v in HYPER])
def test_bad_hyperparameter(name, value):
    # The message names the parameter and the value, and gives the valid ones.
    _check(lambda: GaussianMixture(**{name: value}).fit(X), rf"Invalid value for '{name}'",
           r"must be|Use ")


@pytest.mark.parametrize("case", SAMPLE_WEIGHT, ids=[c[0] for c in SAMPLE_WEIGHT])
def test_bad_sample_weight(case):
    _, w, problem, remedy = case
    _check(lambda: GaussianMixture().fit(X, sample_weight=w), problem, remedy)


# torch has no string tensors, so the numeric cases only.
@pytest.mark.parametrize("case", SAMPLE_WEIGHT[:4], ids=[c[0] for c in SAMPLE_WEIGHT[:4]])
def test_bad_sample_weight_tensor(case):
    _, w, problem, remedy = case
    _check(lambda: GaussianMixture().fit(torch.tensor(X), sample_weight=torch.tensor(w)),
           problem, remedy)


@pytest.mark.parametrize("case", INIT, ids=[c[0] for c in INIT])
def test_bad_initial_parameters(case):
    _, kw, problem, remedy = case
    _check(lambda: GaussianMixture(2, **kw).fit(X), problem, remedy)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_mismatched_features_at_predict(as_tensor):
    conv = torch.tensor if as_tensor else np.asarray
    gm = GaussianMixture(2, random_state=0).fit(conv(X))
    bad = conv(np.ones((4, 3)))
    for method in (gm.predict, gm.predict_proba, gm.score_samples, gm.score, gm.bic, gm.aic):
        _check(lambda: method(bad), r"X has 3 features, but GaussianMixture is expecting 2",
               r"same .*columns as at fit time")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_at_predict(value):
    gm = GaussianMixture(2, random_state=0).fit(X)
    for method in (gm.predict, gm.predict_proba, gm.score_samples):
        _check(lambda: method(_with(value)), r"NaN or infinity", r"impute")


def test_cuda_requested_without_cuda(monkeypatch):
    # Forced off so the test means the same thing on machines with a GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1", torch.device("cuda")):
        _check(lambda: GaussianMixture(device=device).fit(X), r"CUDA is not available",
               r"device='cpu'")


def test_unknown_device():
    _check(lambda: GaussianMixture(device="abacus").fit(X), r"Invalid device 'abacus'",
           r"use 'cpu', 'cuda'")


@pytest.mark.parametrize("dtype", ["float16", torch.float16, torch.bfloat16, torch.int64,
                                   "int32", np.float16, "double-ish"])
def test_unsupported_dtype(dtype):
    _check(lambda: GaussianMixture(dtype=dtype).fit(X), r"Invalid dtype",
           r"dtype='float32' or dtype='float64'")


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score", "bic",
                                    "aic"])
def test_not_fitted(method):
    with pytest.raises(NotFittedError, match="not fitted yet.*Call 'fit'"):
        getattr(GaussianMixture(), method)(X)


def test_not_fitted_sample_and_distribution():
    for call in (lambda: GaussianMixture().sample(3),
                 lambda: GaussianMixture().to_torch_distribution()):
        with pytest.raises(NotFittedError, match="Call 'fit'"):
            call()


@pytest.mark.parametrize("n", [0, -2, 1.5])
def test_bad_sample_count(n):
    gm = GaussianMixture(2, random_state=0).fit(X)
    _check(lambda: gm.sample(n), r"Invalid value for 'n_samples'", r"at least one sample")


def test_valid_inputs_are_accepted():
    # The checks above must not reject what they should accept.
    GaussianMixture(2, random_state=np.random.RandomState(0), warm_start=np.bool_(False),
                    dtype="float32", device="cpu", batch_size=7, verbose=0).fit(
        X.tolist(), sample_weight=np.r_[np.zeros(10), np.ones(20)])
    GaussianMixture(2, weights_init=[0.5, 0.5], means_init=X[:2], random_state=0).fit(
        torch.tensor(X, dtype=torch.float32))


SKLEARN_MESSAGES = [
    dict(weights_init=[[0.5], [0.5]]),
    dict(weights_init=[-0.5, 1.5]),
    dict(weights_init=[0.3, 0.3]),
    dict(means_init=np.zeros((3, 2))),
    dict(precisions_init=np.ones((2, 3, 3))),
    dict(precisions_init=np.array([np.eye(2), -np.eye(2)])),
    dict(covariance_type="tied", precisions_init=-np.eye(2)),
    dict(covariance_type="diag", precisions_init=-np.ones((2, 2))),
    dict(covariance_type="spherical", precisions_init=[-1.0, 1.0]),
    dict(covariance_type="spherical", precisions_init=np.ones(3)),
]


@pytest.mark.parametrize("params", SKLEARN_MESSAGES)
def test_initial_parameter_messages_start_with_scikit_learns(params):
    # Code that matches scikit-learn's messages keeps working: ours are its
    # exact text, followed by a remedy.
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    X = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(ValueError) as sk:
        SkGaussianMixture(2, **params).fit(X)
    with pytest.raises(ValueError) as ours:
        GaussianMixture(2, **params).fit(X)
    expected = str(sk.value).split(":")[0] if "precision' should be" in str(sk.value) else str(sk.value)
    assert str(ours.value).startswith(expected), (str(ours.value), str(sk.value))


def test_convergence_warning_is_scikit_learns():
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    X = np.random.default_rng(0).normal(size=(60, 2))
    texts = []
    for cls in (SkGaussianMixture, GaussianMixture):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cls(2, max_iter=1, random_state=0).fit(X)
        texts.append([str(w.message) for w in caught if w.category is ConvergenceWarning])
    assert texts[0] and texts[1] == texts[0]


def test_verbose_true_is_accepted(capsys):
    X = np.random.default_rng(0).normal(size=(40, 2))
    GaussianMixture(2, verbose=True, verbose_interval=1, max_iter=2, random_state=0).fit(X)
    assert "Iteration 1" in capsys.readouterr().out


# --------------------------------------------------------- silent foot-guns
def test_requires_grad_input_builds_no_graph():
    X = torch.as_tensor(np.random.default_rng(0).normal(size=(60, 2))).requires_grad_(True)
    gm = GaussianMixture(2, random_state=0).fit(X)
    assert not gm.means_.requires_grad and gm.means_.grad_fn is None
    assert not gm.predict_proba(X).requires_grad
    ref = GaussianMixture(2, random_state=0).fit(X.detach())
    torch.testing.assert_close(gm.means_, ref.means_, rtol=0, atol=0)


@pytest.mark.parametrize("bad,words", [
    (np.ma.masked_array(np.ones((10, 2)), mask=np.eye(10, 2, dtype=bool)), "masked array"),
    ([[1.0, 2.0], [3.0]] * 5, "ragged"),
    (np.zeros(10, dtype=[("a", float), ("b", float)]), "structured"),
    (np.array(["2020-01-01"] * 20, dtype="datetime64[D]").reshape(10, 2), "dates or times"),
    (np.ones((10, 2)) * (1 + 1j), "Complex"),
])
def test_input_numpy_would_misread_is_refused_with_a_remedy(bad, words):
    with pytest.raises(ValueError, match=words):
        GaussianMixture(2).fit(bad)


def test_ragged_sample_weight_is_refused():
    X = np.random.default_rng(0).normal(size=(4, 2))
    with pytest.raises(ValueError, match="ragged"):
        GaussianMixture(2).fit(X, sample_weight=[[1.0, 2.0], [1.0]])


def test_datetime_dataframe_column_is_refused():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"t": pd.date_range("2020", periods=10), "x": np.arange(10.0)})
    with pytest.raises(ValueError, match="date or time columns"):
        GaussianMixture(2).fit(df)


def test_warm_start_after_set_params_fits_afresh():
    X = np.random.default_rng(0).normal(size=(90, 2))
    gm = GaussianMixture(2, warm_start=True, random_state=0).fit(X)
    with pytest.warns(UserWarning, match="fitting afresh"):
        gm.set_params(n_components=3).fit(X)
    assert gm.means_.shape == (3, 2)
    fresh = GaussianMixture(3, random_state=0).fit(X)
    np.testing.assert_allclose(gm.means_, fresh.means_)
    with pytest.warns(UserWarning, match="fitting afresh"):
        gm.set_params(covariance_type="diag").fit(X)
    assert gm.covariances_.shape == (3, 2)


def test_max_iter_zero_keeps_the_initial_parameters_like_scikit_learn():
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    X = np.random.default_rng(0).normal(size=(60, 2))
    init = dict(means_init=[[0.0, 0.0], [1.0, 1.0]], weights_init=[0.5, 0.5])
    sk = SkGaussianMixture(2, max_iter=0, **init).fit(X)
    gm = GaussianMixture(2, max_iter=0, **init).fit(X)
    np.testing.assert_array_equal(gm.means_, sk.means_)
    assert gm.lower_bound_ == sk.lower_bound_ == -np.inf and gm.converged_ == sk.converged_


def test_reg_covar_dominating_the_data_warns_with_the_remedy():
    from gaussmix.guard import RegularizationWarning

    X = np.random.default_rng(0).normal(size=(200, 2)) * 1e-8
    with pytest.warns(RegularizationWarning, match="Scale the data .*lower reg_covar"):
        GaussianMixture(2, random_state=0).fit(X)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RegularizationWarning)
        GaussianMixture(2, random_state=0, reg_covar=1e-22).fit(X)  # scaled: no warning
        GaussianMixture(2, random_state=0).fit(X * 1e8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_pass_check_finds_every_non_finite_value_and_the_largest_magnitude(dtype):
    # The data check is one aminmax pass: it must see a NaN or infinity at
    # any position (first, last, inside a vectorised block) and report the
    # largest |value| exactly as numpy does.
    from gaussmix._validation import _largest_magnitude

    rng = np.random.default_rng(1)
    base = rng.normal(size=(1037, 5)) * 3.0
    for bad in (np.nan, np.inf, -np.inf):
        for i, j in [(0, 0), (1036, 4), (517, 2), (8, 3)]:
            a = base.copy()
            a[i, j] = bad
            assert not np.isfinite(_largest_magnitude(torch.tensor(a, dtype=dtype)))
    t = torch.tensor(base, dtype=dtype)
    assert _largest_magnitude(t) == float(np.abs(t.numpy()).max())
    assert _largest_magnitude(-t) == float(np.abs(t.numpy()).max())
    # An empty shard (a distributed rank without rows) passes the check.
    assert _largest_magnitude(torch.zeros(0, 5, dtype=dtype)) == 0.0
