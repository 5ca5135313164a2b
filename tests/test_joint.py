"""The joint EM engine of the model search and the batched k-means starts.

The engine is checked against scikit-learn in float64 from the same initial
parameters (every covariance type, a spherical one in its own units), and the
whole search on it against the same search on the per-type batched engine.
"""

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGM

import gaussmix.joint as joint_mod
import gaussmix.search as search_mod
from gaussmix.covariance import get_covariance_type
from gaussmix.joint import JointRun, fit_joint, quadratic_features, start_runs
from gaussmix.run_pack import _factored_pack
from gaussmix.kmeans import kmeans_many
from gaussmix.scaling import feature_scaling
from gaussmix.search import search, starting_partitions

from _collapse import collapse_case

TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(scope="module")
def iris_z():
    X = torch.from_numpy(load_iris().data)
    return feature_scaling(X, per_feature=True).to_fit(X)


def _sk_init(cov_name, weights, means, cov_t):
    """scikit-learn's precisions_init from full covariances in the type's units."""
    prec = torch.linalg.inv(cov_t)
    if cov_name == "full":
        return prec.numpy()
    if cov_name == "tied":
        return prec[0].numpy()
    if cov_name == "diag":
        return torch.diagonal(prec, dim1=-2, dim2=-1).numpy()
    return prec[:, 0, 0].numpy()


@pytest.mark.parametrize("cov_name", TYPES)
@pytest.mark.parametrize("n_iter", [1, 7])
def test_iterations_equal_sklearn_from_the_same_start(iris_z, cov_name, n_iter):
    X = iris_z
    d = X.shape[1]
    rng = np.random.default_rng(3)
    k = 3
    # Spherical runs in its own units (a per-feature factor), like the search.
    units = torch.tensor([1.0, 0.5, 2.0, 1.5], dtype=torch.float64) if cov_name == "spherical" else None
    Xt = X if units is None else X * units
    labels = torch.from_numpy(rng.integers(0, k, X.shape[0]))
    cov = get_covariance_type(cov_name)
    weights = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    means = Xt[torch.tensor([0, 60, 120])]
    # Initial covariances of the type, in its units, from a labelled split.
    nk = torch.stack([(labels == j).sum() for j in range(k)]).double()
    scatter = torch.stack([torch.cov(Xt[labels == j].T, correction=0) for j in range(k)])
    cov_t = cov.full_form(nk.unsqueeze(0), scatter.unsqueeze(0))[0] + 1e-3 * torch.eye(d)
    reg = 1e-6
    sk = SkGM(k, covariance_type=cov_name, max_iter=n_iter, tol=0.0, reg_covar=reg,
              weights_init=weights.numpy(), means_init=means.numpy(),
              precisions_init=_sk_init(cov_name, weights, means, cov_t))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(Xt.numpy())
    uu = 1.0 if units is None else units.unsqueeze(1) * units.unsqueeze(0)
    run = JointRun(cov_name, k, units, weights.clone(), means / (1.0 if units is None else units),
                   cov_t / uu)
    fit_joint(quadratic_features(X), [run], reg_covar=reg, tol=0.0, max_iter=n_iter)
    res = run.result()
    assert res.n_iter == n_iter and not res.converged
    assert res.lower_bound == pytest.approx(sk.lower_bound_, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(res.params.weights.numpy(), sk.weights_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.params.means.numpy(), sk.means_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res.params.get_covariances().numpy(), sk.covariances_,
                               rtol=1e-8, atol=1e-10)


def test_start_from_responsibilities_is_sklearns_m_step(iris_z):
    # One M-step from hard labels: the covariances are the labelled groups'
    # own (ML) covariances plus the regularisation.
    X = iris_z
    labels = torch.from_numpy(load_iris().target)
    runs = [JointRun(t, 3) for t in TYPES]
    start_runs(quadratic_features(X), runs,
               lambda i, a, b: torch.nn.functional.one_hot(labels[a:b], 3).double(),
               reg_covar=1e-6)
    groups = [X[labels == j] for j in range(3)]
    covs = torch.stack([torch.cov(g.T, correction=0) for g in groups])
    nk = torch.tensor([len(g) for g in groups], dtype=torch.float64)
    expected = {
        "full": covs,
        "tied": (nk[:, None, None] * covs).sum(0).expand(3, 4, 4) / nk.sum(),
        "diag": torch.diag_embed(torch.diagonal(covs, dim1=-2, dim2=-1)),
        "spherical": torch.diagonal(covs, dim1=-2, dim2=-1).mean(1)[:, None, None] * torch.eye(4),
    }
    for run in runs:
        assert not run.failed
        np.testing.assert_allclose(run.weights.numpy(), (nk / nk.sum()).numpy(), rtol=1e-12)
        np.testing.assert_allclose(run.means.numpy(), torch.stack([g.mean(0) for g in groups]),
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(run.covariances.numpy(),
                                   (expected[run.cov_name] + 1e-6 * torch.eye(4)).numpy(),
                                   rtol=1e-10, atol=1e-12)


def test_emptied_component_fails_the_run_only(iris_z):
    X = iris_z
    labels = torch.from_numpy(load_iris().target)
    good, empty = JointRun("full", 3), JointRun("diag", 4)
    start_runs(quadratic_features(X), [good, empty],
               lambda i, a, b: torch.nn.functional.one_hot(labels[a:b], 3 + i).double(),
               reg_covar=1e-6)
    assert empty.failed and not good.failed


def test_search_on_joint_engine_equals_per_type_engine(iris_z, monkeypatch):
    gen = torch.Generator().manual_seed(0)
    parts = starting_partitions(iris_z, [1, 2, 3, 4], gen)
    units = {"spherical": torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)}
    settings = dict(reg_covar=1e-8, tol=1e-5, units=units)
    # Plain EM on both engines (the joint engine's over-relaxation off).
    monkeypatch.setattr(joint_mod, "OVERRELAX_GROWTH", 1.0)
    joint = search(iris_z, TYPES, parts, **settings)
    monkeypatch.setattr(search_mod, "joint_applies", lambda n, d: False)
    per_type = search(iris_z, TYPES, parts, **settings)
    # The hierarchical run and each cell's best run reach the same optima;
    # where a run stops can move by an iteration (rounding at the stopping
    # boundary), so within the tolerance.  (Which other screened runs
    # continue can differ where two of them tie after the screening.)
    for t in TYPES:
        for k in (1, 2, 3, 4):
            a, b = joint[t][k].runs, per_type[t][k].runs
            assert a[0].lower_bound == pytest.approx(b[0].lower_bound, rel=1e-5)
            first = "single" if k == 1 else "hc"
            hc_a = [r.lower_bound for r in a if r.start == first]
            hc_b = [r.lower_bound for r in b if r.start == first]
            assert len(hc_a) == len(hc_b) == 1
            assert hc_a[0] == pytest.approx(hc_b[0], rel=1e-5)


def test_finished_runs_make_their_results_when_read(iris_z):
    # The joint search's finished runs make their EMResult on first read; the
    # cell order, by the lower bound each result will report, is the same.
    gen = torch.Generator().manual_seed(0)
    parts = starting_partitions(iris_z, [1, 2, 3], gen)
    units = {"spherical": torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)}
    cells = search(iris_z, TYPES, parts, reg_covar=1e-8, tol=1e-5, units=units)
    for t in TYPES:
        for k in (1, 2, 3):
            runs = cells[t][k].runs
            before = [r.lower_bound for r in runs]
            results = [r.result for r in runs]
            assert before == [res.lower_bound for res in results] == sorted(before, reverse=True)
            assert [r.lower_bound for r in runs] == before
            for r, res in zip(runs, results):
                assert r.result is res  # made once
                again = r.state.result(iris_z.dtype)
                assert torch.equal(res.params.precisions_cholesky,
                                   again.params.precisions_cholesky)
                assert res.lower_bounds == again.lower_bounds
                assert res.converged == r.state.converged and res.n_iter == r.state.n_iter


@pytest.mark.parametrize("cov_name", TYPES + ("VEV",))
def test_overrelaxed_em_reaches_plain_ems_optimum_in_fewer_passes(iris_z, cov_name):
    # From the same starts, over-relaxed EM ends where plain EM ends (the
    # same local optimum, within the stopping tolerance), never with a lower
    # log-likelihood history step, and in fewer passes where it applies.
    gen = torch.Generator().manual_seed(0)
    parts = starting_partitions(iris_z, [2, 3, 4, 5], gen)
    phi = quadratic_features(iris_z)
    outcome = {}
    for accelerate in (False, True):
        runs = [JointRun(cov_name, k) for k in (2, 3, 4, 5)]
        start_runs(phi, runs, None, reg_covar=1e-8,
                   labels=[parts[k][0].labels for k in (2, 3, 4, 5)])
        fit_joint(phi, runs, reg_covar=1e-8, tol=1e-8, max_iter=3000, accelerate=accelerate)
        outcome[accelerate] = runs
    for plain, fast in zip(outcome[False], outcome[True]):
        assert plain.converged and fast.converged
        assert fast.lower_bound == pytest.approx(plain.lower_bound, abs=1e-5)
        assert all(b >= a for a, b in zip(fast.history, fast.history[1:]))
    plain_iter = sum(r.n_iter for r in outcome[False])
    fast_iter = sum(r.n_iter for r in outcome[True])
    if get_covariance_type(cov_name).affine_closed:
        assert fast_iter < 0.8 * plain_iter
    else:
        assert fast_iter == plain_iter


def _inertia(X, labels, k):
    return sum(float(((X[labels == j] - X[labels == j].mean(0)) ** 2).sum())
               for j in range(k) if bool((labels == j).any()))


def test_kmeans_many_reaches_lloyd_fixed_points(iris_z):
    X = iris_z
    ks = [2, 3, 3, 5, 9]
    out = kmeans_many(X, ks, torch.Generator().manual_seed(1), max_iter=300)
    for k, labels in zip(ks, out):
        assert labels.shape == (X.shape[0],) and int(labels.min()) >= 0 and int(labels.max()) < k
        # A fixed point: every row is nearest to the mean of its own cluster.
        centers = torch.stack([X[labels == j].mean(0) if bool((labels == j).any())
                               else torch.full((4,), math.inf, dtype=X.dtype) for j in range(k)])
        nearest = torch.cdist(X, centers.nan_to_num(posinf=1e300)).argmin(1)
        assert torch.equal(nearest, labels)
        # And no worse than scikit-learn's k-means from one k-means++ seed by much.
        from sklearn.cluster import KMeans
        sk = KMeans(k, n_init=1, random_state=0).fit(X.numpy())
        assert _inertia(X, labels, k) <= 1.5 * sk.inertia_


def test_kmeans_many_same_generator_same_labels(iris_z):
    a = kmeans_many(iris_z, [3, 4], torch.Generator().manual_seed(5))
    b = kmeans_many(iris_z, [3, 4], torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_structured_factors_equal_one_batched_cholesky(iris_z, monkeypatch):
    # Diagonal and tied types factorise their own structure in the joint
    # engine (from STRUCTURED_MIN_FEATURES features); forced on at D = 4,
    # every run must follow the same EM path as with one batched Cholesky of
    # every matrix, a spherical type in its own units included.
    import gaussmix.run_pack as run_pack_mod
    gen = torch.Generator().manual_seed(0)
    parts = starting_partitions(iris_z, [1, 3, 5], gen)
    phi = quadratic_features(iris_z)
    names = ("full", "tied", "diag", "spherical", "EII", "EEI", "VEI", "EVI")
    units = {"spherical": torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64)}
    outcome = {}
    for threshold in (100, 1):
        monkeypatch.setattr(run_pack_mod, "STRUCTURED_MIN_FEATURES", threshold)
        runs = [JointRun(name, k, units.get(name)) for name in names for k in (1, 3, 5)]
        start_runs(phi, runs, None, reg_covar=1e-8,
                   labels=[parts[r.k][0].labels for r in runs])
        fit_joint(phi, runs, reg_covar=1e-8, tol=1e-10, max_iter=40, accelerate=True)
        outcome[threshold] = runs
    for a, b in zip(outcome[100], outcome[1]):
        assert not a.failed and not b.failed
        assert a.n_iter == b.n_iter
        assert b.lower_bound == pytest.approx(a.lower_bound, rel=1e-12, abs=1e-12)
        torch.testing.assert_close(b.covariances, a.covariances, rtol=1e-9, atol=1e-12)


def test_screening_in_k_bands_changes_nothing(iris_z, monkeypatch):
    # Screened runs do not interact, so batching them by K (done from
    # BANDED_MIN_FEATURES features) must leave every run where one batch does.
    gen = torch.Generator().manual_seed(0)
    parts = starting_partitions(iris_z, range(1, 8), gen)
    out = {}
    for threshold in (100, 1):
        monkeypatch.setattr(search_mod, "BANDED_MIN_FEATURES", threshold)
        out[threshold] = search(iris_z, TYPES, parts, reg_covar=1e-8, tol=1e-5)
    for t in TYPES:
        for k in range(1, 8):
            a = [(r.start, r.state.n_iter, r.lower_bound) for r in out[100][t][k].runs]
            b = [(r.start, r.state.n_iter, r.lower_bound) for r in out[1][t][k].runs]
            assert [x[:2] for x in a] == [x[:2] for x in b]
            for x, y in zip(a, b):
                assert y[2] == pytest.approx(x[2], rel=1e-12)


def test_totals_equal_a_direct_softmax_with_padding_and_far_components():
    # The E-step floors log-responsibilities before exp (the slow path of -inf
    # and of underflowing values); against logsumexp and softmax over each
    # run's real components, with padding slots and components hundreds of
    # nats away, the log-likelihoods and totals must not move.
    gen = torch.Generator().manual_seed(1)
    n, g, kmax, p = 40, 3, 4, 6
    phi = torch.randn(n, p, generator=gen, dtype=torch.float64)
    phi[:, 0] = 1.0  # the constant feature, which carries log(weight) = -inf on padding
    W = torch.randn(p, kmax * g, generator=gen, dtype=torch.float64)
    W[0, 1 * g + 2] -= 900.0  # component 1 of run 2: far below the rest
    ks = [4, 2, 3]
    for i, k in enumerate(ks):
        for j in range(k, kmax):
            W[0, j * g + i] = -math.inf  # padding
    ll, totals = joint_mod._totals(phi, W, g, kmax)
    grid = (phi @ W).view(n, kmax, g)
    for i, k in enumerate(ks):
        lp = grid[:, :k, i]
        assert float(ll[i]) == pytest.approx(float(torch.logsumexp(lp, 1).sum()), rel=1e-14)
        resp = torch.softmax(lp, 1)
        # The far component's totals: exp(floor) ~ 1e-277 per row instead of 0.
        torch.testing.assert_close(totals[i, :k], resp.T @ phi, rtol=1e-13, atol=1e-250)


def _screened(iris_z, names, ks, max_iter=5):
    parts = starting_partitions(iris_z, ks, torch.Generator().manual_seed(0))
    phi = quadratic_features(iris_z)
    runs = [JointRun(name, k) for name in names for k in ks]
    start_runs(phi, runs, None, reg_covar=1e-8, labels=[parts[r.k][0].labels for r in runs])
    fit_joint(phi, runs, reg_covar=1e-8, tol=1e-10, max_iter=max_iter)
    return phi, runs


def _copy(run):
    """The run with its parameters as its own tensors, its counters as they are."""
    c = JointRun(run.cov_name, run.k, run.units, run.weights.clone(), run.means.clone(),
                 run.covariances.clone())
    c.n_iter, c.history = run.n_iter, list(run.history)
    c.converged, c.failed = run.converged, run.failed
    return c


def test_a_run_follows_the_same_path_alone_and_beside_larger_runs(iris_z):
    # Padding slots (a run with fewer components than the batch's largest)
    # must never steer a run: over-relaxed EM of a tied mixture alone and in
    # a batch with 7-component runs takes the same steps.
    phi, runs = _screened(iris_z, TYPES, (3, 7))
    for run in [r for r in runs if r.k == 3]:
        alone, beside = _copy(run), _copy(run)
        others = [_copy(r) for r in runs if r.k == 7]
        fit_joint(phi, [alone], reg_covar=1e-8, tol=1e-10, max_iter=40, accelerate=True)
        fit_joint(phi, [beside] + others, reg_covar=1e-8, tol=1e-10, max_iter=40, accelerate=True)
        assert beside.n_iter == alone.n_iter
        assert beside.history == pytest.approx(alone.history, rel=1e-12, abs=0)


def test_runs_continue_from_stored_rows_as_from_their_own_parameters(iris_z):
    # A stopped run keeps a reference to its row of the batch it stopped in;
    # the next batch gathers those rows (factors included).  Continuing from
    # there must equal continuing from copies of the parameters.
    phi, runs = _screened(iris_z, TYPES, (1, 3, 5, 7))
    assert all(r.slot is not None for r in runs)
    copies = [_copy(r) for r in runs]
    fit_joint(phi, runs, reg_covar=1e-8, tol=1e-10, max_iter=40, accelerate=True)
    fit_joint(phi, copies, reg_covar=1e-8, tol=1e-10, max_iter=40, accelerate=True)
    for a, b in zip(runs, copies):
        assert a.n_iter == b.n_iter and a.converged == b.converged
        assert a.history == pytest.approx(b.history, rel=1e-12, abs=0)
        torch.testing.assert_close(a.covariances, b.covariances, rtol=1e-10, atol=1e-12)


def _pack_of(runs, d):
    from gaussmix.run_pack import _Pack
    pack = _Pack(runs, d, torch.device("cpu"), 0.0)
    pack.chol = torch.linalg.cholesky(pack.covs)
    return pack


def test_sound_flags_too_few_points_and_pinned_variances():
    # A run is sound while each component holds at least 1.5x the points its
    # covariance needs and every Cholesky pivot (squared, type's units) is
    # at least 1e-4: the definition, on hand-made parameters.
    from gaussmix.rivals import SOUND_COUNT_FACTOR, SOUND_MIN_PIVOT
    d, n = 2, 100
    eye = torch.eye(d, dtype=torch.float64)
    zero = torch.zeros(2, d, dtype=torch.float64)
    need = get_covariance_type("full").min_count(d)  # d + 1 points
    thin = SOUND_COUNT_FACTOR * need / n * 0.9
    flat = torch.tensor([[1.0, 0.0], [0.0, SOUND_MIN_PIVOT * 0.5]], dtype=torch.float64)
    # Pinned along (1, 1) / sqrt(2): no diagonal entry is small, the second pivot is.
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    tilted = rot @ torch.diag(torch.tensor([2.0, 1e-8], dtype=torch.float64)) @ rot.T
    runs = [
        JointRun("full", 2, None, torch.tensor([0.5, 0.5], dtype=torch.float64), zero,
                 torch.stack([eye, eye])),
        JointRun("full", 2, None, torch.tensor([1 - thin, thin], dtype=torch.float64), zero,
                 torch.stack([eye, eye])),
        JointRun("full", 2, None, torch.tensor([0.5, 0.5], dtype=torch.float64), zero,
                 torch.stack([eye, flat])),
        JointRun("full", 2, None, torch.tensor([0.5, 0.5], dtype=torch.float64), zero,
                 torch.stack([eye, tilted])),
        # Spherical in its own units u: a variance of 1e-5 in the data's
        # coordinates is 1e-5 * u^2 = 0.1 in the type's.
        JointRun("spherical", 1, torch.full((d,), 100.0, dtype=torch.float64),
                 torch.ones(1, dtype=torch.float64), zero[:1], (1e-5 * eye)[None]),
    ]
    assert _pack_of(runs, d).sound(n) == [True, False, False, False, True]


def test_a_collapsing_rival_does_not_stop_a_sound_run():
    # The collapsing start's log-likelihood soon exceeds the sound one's by
    # far; the sound run is not stopped as hopeless: it may end as the K's
    # only clean fit, the guard's fallback.  (Compared with any rival, as
    # before the soundness test, it stopped.)
    Xz, far, split = collapse_case()
    phi = quadratic_features(Xz)
    collapsing = JointRun("full", 3)
    sound = JointRun("full", 3)
    start_runs(phi, [collapsing, sound], None, reg_covar=1e-8, labels=[far, split])
    fit_joint(phi, [collapsing, sound], reg_covar=1e-8, tol=1e-5, max_iter=300,
              rivals=[3, 3], accelerate=True)
    assert (collapsing.lower_bound - sound.lower_bound) * len(Xz) > 100.0
    assert _factored_pack(phi, [collapsing, sound]).sound(len(Xz)) == [False, True]
    assert sound.converged
