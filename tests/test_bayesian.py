"""BayesianGaussianMixture against scikit-learn's from the same start, and its properties."""

import numpy as np
import pytest
import torch
from sklearn.mixture import BayesianGaussianMixture as SkBGM
from sklearn.utils.estimator_checks import parametrize_with_checks

from gaussmix import BayesianGaussianMixture

TYPES = ["full", "tied", "diag", "spherical"]
PRIORS = ["dirichlet_distribution", "dirichlet_process"]


def _three_clusters(seed=0, n=(100, 120, 80)):
    """Clusters so far apart that every k-means start finds them."""
    rng = np.random.RandomState(seed)
    centres = np.array([[0.0, 0.0, 0.0], [30.0, 0.0, 5.0], [0.0, 40.0, -5.0]])
    scales = [1.0, 0.5, 1.5]
    X = np.concatenate([rng.randn(m, 3) * s + c for m, s, c in zip(n, scales, centres)])
    return X, np.repeat(np.arange(3), n)


def _sklearn_from(resp, **params):
    """scikit-learn's estimator started from the given responsibilities."""

    class FromResp(SkBGM):
        def _initialize_parameters(self, X, random_state, xp=None):
            self._initialize(X, resp)

    return FromResp(**params)


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("covariance_type", TYPES)
def test_equals_sklearn_from_the_same_start(covariance_type, prior):
    # Our k-means start gives the partition; scikit-learn starts from the same
    # one-hot responsibilities in our component order, so the stick-breaking
    # prior sees the components in the same order too.
    X, _ = _three_clusters()
    params = dict(n_components=3, covariance_type=covariance_type,
                  weight_concentration_prior_type=prior, tol=1e-10, max_iter=300)
    ours = BayesianGaussianMixture(random_state=0, **params).fit(X)
    start = BayesianGaussianMixture(random_state=0, max_iter=0, **{
        k: v for k, v in params.items() if k != "max_iter"}).fit(X)
    resp = np.eye(3)[start.predict(X)]
    ref = _sklearn_from(resp, **params).fit(X)
    assert ours.converged_ and ref.converged_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "mean_precision_",
                 "degrees_of_freedom_"):
        assert _rel(getattr(ours, name), getattr(ref, name)) < 1e-6, name
    assert _rel(ours.lower_bound_, np.ravel(ref.lower_bound_)[0]) < 1e-6
    assert ours.n_iter_ == ref.n_iter_
    conc_ours, conc_ref = ours.weight_concentration_, ref.weight_concentration_
    assert _rel(np.asarray(conc_ours), np.asarray(conc_ref)) < 1e-6


@pytest.mark.parametrize("covariance_type", TYPES)
def test_dirichlet_distribution_equals_sklearn_kmeans_start_sorted(covariance_type):
    # Each library's own k-means start; the partitions agree up to the labels,
    # which the exchangeable Dirichlet prior does not see.
    X, _ = _three_clusters(seed=1)
    params = dict(n_components=3, covariance_type=covariance_type, random_state=0,
                  weight_concentration_prior_type="dirichlet_distribution", tol=1e-10, max_iter=300)
    ours = BayesianGaussianMixture(**params).fit(X)
    ref = SkBGM(**params).fit(X)
    a, b = np.argsort(ours.means_[:, 0] + ours.means_[:, 1]), np.argsort(ref.means_[:, 0] + ref.means_[:, 1])
    assert _rel(ours.weights_[a], ref.weights_[b]) < 1e-6
    assert _rel(ours.means_[a], ref.means_[b]) < 1e-6
    cov_o = ours.covariances_ if covariance_type == "tied" else ours.covariances_[a]
    cov_r = ref.covariances_ if covariance_type == "tied" else ref.covariances_[b]
    assert _rel(cov_o, cov_r) < 1e-6
    assert _rel(ours.lower_bound_, np.ravel(ref.lower_bound_)[0]) < 1e-6


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("covariance_type", TYPES)
def test_lower_bound_never_decreases(covariance_type, prior):
    rng = np.random.RandomState(3)
    X = np.concatenate([rng.randn(150, 2), rng.randn(150, 2) * 2 + [3, 1]])
    bgm = BayesianGaussianMixture(
        n_components=6, covariance_type=covariance_type, weight_concentration_prior_type=prior,
        init_params="random", random_state=0, tol=1e-9, max_iter=400,
    ).fit(X)
    lbs = np.array(bgm.lower_bounds_)
    assert len(lbs) > 10
    assert np.all(np.diff(lbs) >= -1e-10 * np.abs(lbs[1:]))


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("covariance_type", TYPES)
def test_chunked_equals_whole(covariance_type, prior):
    X, _ = _three_clusters(seed=2)
    params = dict(n_components=4, covariance_type=covariance_type, weight_concentration_prior_type=prior,
                  random_state=0, tol=1e-8, max_iter=50)
    whole = BayesianGaussianMixture(**params).fit(X)
    chunked = BayesianGaussianMixture(batch_size=7, **params).fit(X)
    for name in ("weights_", "means_", "covariances_", "lower_bounds_"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(whole, name), rtol=1e-10, atol=0)


def test_dirichlet_process_switches_off_unneeded_components():
    X, _ = _three_clusters(seed=4)
    bgm = BayesianGaussianMixture(n_components=10, random_state=0, max_iter=500).fit(X)
    assert int((bgm.weights_ > 0.01).sum()) <= 3


def test_integer_sample_weights_equal_repeated_rows():
    X, _ = _three_clusters(seed=5, n=(40, 50, 30))
    w = np.random.RandomState(0).randint(1, 4, size=X.shape[0])
    params = dict(n_components=3, weight_concentration_prior_type="dirichlet_distribution",
                  random_state=0, tol=1e-10, max_iter=300)
    weighted = BayesianGaussianMixture(**params).fit(X, sample_weight=w)
    repeated = BayesianGaussianMixture(**params).fit(np.repeat(X, w, axis=0))
    a, b = np.argsort(weighted.means_[:, 0] + weighted.means_[:, 1]), np.argsort(
        repeated.means_[:, 0] + repeated.means_[:, 1])
    np.testing.assert_allclose(weighted.means_[a], repeated.means_[b], rtol=1e-9)
    np.testing.assert_allclose(weighted.weights_[a], repeated.weights_[b], rtol=1e-9)
    np.testing.assert_allclose(weighted.covariance_prior_, np.cov(np.repeat(X, w, axis=0).T), rtol=1e-9)


def test_tensor_input_gives_tensors_equal_to_numpy_fit():
    X, _ = _three_clusters(seed=6)
    params = dict(n_components=3, random_state=0, tol=1e-8)
    from_numpy = BayesianGaussianMixture(**params).fit(X)
    from_torch = BayesianGaussianMixture(**params).fit(torch.from_numpy(X))
    assert isinstance(from_torch.means_, torch.Tensor)
    assert isinstance(from_torch.weight_concentration_[0], torch.Tensor)
    np.testing.assert_allclose(from_torch.means_.numpy(), from_numpy.means_, rtol=1e-12)
    labels = from_torch.predict(torch.from_numpy(X))
    assert isinstance(labels, torch.Tensor)
    np.testing.assert_array_equal(labels.numpy(), from_numpy.predict(X))


def test_float32_fit_close_to_float64():
    X, _ = _three_clusters(seed=7)
    params = dict(n_components=3, random_state=0, tol=1e-6,
                  weight_concentration_prior_type="dirichlet_distribution")
    f64 = BayesianGaussianMixture(**params).fit(X)
    f32 = BayesianGaussianMixture(dtype="float32", **params).fit(X.astype(np.float32))
    assert f32.means_.dtype == np.float32
    a, b = np.argsort(f64.means_[:, 0] + f64.means_[:, 1]), np.argsort(f32.means_[:, 0] + f32.means_[:, 1])
    np.testing.assert_allclose(f32.means_[b], f64.means_[a], rtol=1e-4, atol=1e-4)


def test_score_samples_is_logsumexp_of_variational_terms():
    # scikit-learn's definition: logsumexp over components of E[log pi_k] plus
    # the variational log-density, from the same start.
    X, _ = _three_clusters(seed=8)
    params = dict(n_components=3, tol=1e-10, max_iter=300)
    ours = BayesianGaussianMixture(random_state=0, **params).fit(X)
    start = BayesianGaussianMixture(random_state=0, max_iter=0, n_components=3).fit(X)
    ref = _sklearn_from(np.eye(3)[start.predict(X)], **params).fit(X)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-8)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-8)


@pytest.mark.parametrize(
    "params, names",
    [
        (dict(weight_concentration_prior=0.0), ["weight_concentration_prior", "> 0"]),
        (dict(weight_concentration_prior=-1.0), ["weight_concentration_prior", "> 0"]),
        (dict(mean_precision_prior=0), ["mean_precision_prior", "> 0"]),
        (dict(mean_precision_prior=float("nan")), ["mean_precision_prior", "> 0"]),
        (dict(degrees_of_freedom_prior=1.0), ["degrees_of_freedom_prior", "greater than 1"]),
        (dict(degrees_of_freedom_prior=-3.0), ["degrees_of_freedom_prior", "> 0"]),
        (dict(mean_prior=[0.0, 1.0, 2.0]), ["mean_prior", "(2,)"]),
        (dict(mean_prior=[0.0, np.nan]), ["mean_prior", "finite"]),
        (dict(covariance_prior=np.eye(3)), ["covariance_prior", "(2, 2)"]),
        (dict(covariance_prior=-np.eye(2)), ["covariance_prior", "positive-definite"]),
        (dict(covariance_prior=np.array([[1.0, 2.0], [0.0, 1.0]])), ["covariance_prior", "symmetric"]),
        (dict(covariance_type="diag", covariance_prior=[1.0, -1.0]), ["covariance_prior", "positive"]),
        (dict(covariance_type="diag", covariance_prior=np.eye(2)), ["covariance_prior", "(2,)"]),
        (dict(covariance_type="spherical", covariance_prior=0.0), ["covariance_prior", "positive"]),
        (dict(weight_concentration_prior_type="dirichlet"), ["weight_concentration_prior_type"]),
    ],
)
def test_bad_priors_name_the_parameter_and_range(params, names):
    X = np.random.RandomState(0).randn(20, 2)
    with pytest.raises(ValueError) as err:
        BayesianGaussianMixture(n_components=2, **params).fit(X)
    for part in names:
        assert part in str(err.value)


EXPECTED_FAILURES = {
    # As for GaussianMixture: weighted k-means++ seeding draws from a different
    # random stream than the repeated-rows data set, so equally good fits can
    # come out with the labels permuted. Weights equal repeated rows from the
    # same partition: test_integer_sample_weights_equal_repeated_rows.
    "check_sample_weight_equivalence_on_dense_data": "random init stream depends on row layout",
}


@parametrize_with_checks(
    [BayesianGaussianMixture(n_components=2, max_iter=20, random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILURES,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("covariance_type", TYPES)
def test_core_equals_sklearn_from_random_responsibilities(covariance_type, prior):
    # Overlapping clusters and a random soft start: many iterations of the
    # update, each compared through the end result.
    from gaussmix.covariance import get_covariance_type
    from gaussmix.data import iter_chunks
    from gaussmix.em import run_em
    from gaussmix.stats import SuffStats
    from gaussmix.variational import Priors, VariationalUpdate, data_moments

    rng = np.random.RandomState(11)
    X = np.concatenate([rng.randn(120, 2), rng.randn(100, 2) * [2.0, 0.5] + [2.5, 1.0]])
    k = 4
    resp = rng.dirichlet(np.ones(k), size=X.shape[0])
    ref = _sklearn_from(resp, n_components=k, covariance_type=covariance_type, tol=1e-6,
                        max_iter=1000, weight_concentration_prior_type=prior).fit(X)

    Xt = torch.from_numpy(X)

    def chunks():
        return iter_chunks(Xt, None, 29)

    cov = get_covariance_type(covariance_type)
    mean, data_cov = data_moments(chunks(), Xt[:5].mean(0))
    priors = Priors(1.0 / k, 1.0, mean, 2.0, cov.prior_covariance(data_cov))
    update = VariationalUpdate(covariance_type, prior, priors, 1e-6)
    shift = Xt.mean(0)
    r = torch.from_numpy(resp)
    xc = Xt - shift
    stats = SuffStats(nk=r.sum(0), s1=r.T @ xc, s2=cov.second_moment(xc, r),
                      log_likelihood=torch.zeros((), dtype=torch.float64),
                      weight=torch.tensor(float(len(X)), dtype=torch.float64),
                      count=torch.tensor(float(len(X)), dtype=torch.float64))
    start = update.params(stats, shift, np.finfo(np.float64).eps)
    result = run_em(chunks, start, reg_covar=1e-6, tol=1e-6, max_iter=1000, update=update)
    assert result.n_iter == ref.n_iter_ and result.n_iter > 10, (result.n_iter, ref.n_iter_)
    p = result.params
    assert _rel(p.weights, ref.weights_) < 1e-6
    assert _rel(p.means, ref.means_) < 1e-6
    assert _rel(p.covariances, ref.covariances_) < 1e-6
    assert _rel(result.lower_bound, np.ravel(ref.lower_bound_)[0]) < 1e-6


def test_source_of_batches_equals_in_memory_fit(tmp_path):
    X, _ = _three_clusters(seed=9)
    path = tmp_path / "x.npy"
    np.save(path, X)
    params = dict(n_components=3, weight_concentration_prior_type="dirichlet_distribution",
                  random_state=0, tol=1e-10, max_iter=300)
    memory = BayesianGaussianMixture(**params).fit(X)
    for source in (str(path), [X[:100], X[100:250], X[250:]]):
        streamed = BayesianGaussianMixture(**params).fit(source)
        a = np.argsort(streamed.means_[:, 0] + streamed.means_[:, 1])
        b = np.argsort(memory.means_[:, 0] + memory.means_[:, 1])
        np.testing.assert_allclose(streamed.means_[a], memory.means_[b], rtol=1e-9)
        np.testing.assert_allclose(streamed.covariances_[a], memory.covariances_[b], rtol=1e-9)
        np.testing.assert_allclose(streamed.lower_bound_, memory.lower_bound_, rtol=1e-10)
        np.testing.assert_allclose(streamed.covariance_prior_, np.cov(X.T), rtol=1e-10)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_sample_follows_the_fitted_components(covariance_type):
    X, _ = _three_clusters(seed=10)
    bgm = BayesianGaussianMixture(n_components=3, covariance_type=covariance_type, random_state=0).fit(X)
    Xs, ys = bgm.sample(3000)
    assert Xs.shape == (3000, 3) and ys.shape == (3000,)
    for k in range(3):
        np.testing.assert_allclose(Xs[ys == k].mean(0), bgm.means_[k], atol=0.25)
    np.testing.assert_allclose(np.bincount(ys, minlength=3) / 3000, bgm.weights_, atol=0.03)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("prior", PRIORS)
def test_interrupted_fit_resumes_to_the_same_posterior(tmp_path, monkeypatch, prior):
    from gaussmix.checkpoint import FitCheckpoint

    rng = np.random.RandomState(12)
    X = np.concatenate([rng.randn(200, 2), rng.randn(200, 2) * 1.5 + [3, 0]])
    params = dict(n_components=5, weight_concentration_prior_type=prior, tol=0.0, max_iter=40,
                  random_state=0, n_init=2)
    reference = BayesianGaussianMixture(**params).fit(X)
    path = tmp_path / "fit.npz"
    original = FitCheckpoint.save
    calls = [0]

    def save_then_stop(self, *args):
        original(self, *args)
        calls[0] += 1
        if calls[0] == 50:  # in the second initialisation
            raise _Interrupt

    monkeypatch.setattr(FitCheckpoint, "save", save_then_stop)
    with pytest.raises(_Interrupt):
        BayesianGaussianMixture(**params).fit(X, checkpoint=path)
    monkeypatch.undo()
    resumed = BayesianGaussianMixture(**params).fit(X, checkpoint=path)
    assert resumed._resumed_from_ is not None
    for name in ("weights_", "means_", "covariances_", "mean_precision_", "degrees_of_freedom_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(reference, name), err_msg=name)
    np.testing.assert_array_equal(np.asarray(resumed.weight_concentration_),
                                  np.asarray(reference.weight_concentration_))
    assert resumed.lower_bounds_ == reference.lower_bounds_
    # A GaussianMixture is refused this checkpoint (another configuration).
    from gaussmix import GaussianMixture

    with pytest.raises(ValueError, match="checkpoint"):
        GaussianMixture(n_components=5, random_state=0).fit(X, checkpoint=path)


def test_mclust_model_names_are_refused_with_the_valid_ones():
    from gaussmix import BayesianGaussianMixture
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match="scikit-learn's four"):
        BayesianGaussianMixture(n_components=2, covariance_type="VEV").fit(X)
