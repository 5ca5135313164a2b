"""Far-away finite points: responsibilities stay a distribution, never NaN.

Far from every mean a component's log-density is ``-maha / 2`` to leading
order, so as ``x = t * u`` goes to infinity along a direction ``u`` the
component with the smallest ``u' P_k u`` (its precision along ``u``) takes
the point.  That closed-form limit is the truth these tests compare with.
Values whose squares overflow the dtype are refused with a clear error.
"""

import numpy as np
import pytest
import torch

from gaussmix import GaussianMixture, gmm_e_step
from gaussmix.cli import main


def _two_elongated_clusters(seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(300, 2)) * [10.0, 1.0]
    b = rng.normal(size=(300, 2)) * [1.0, 10.0] + [60.0, 60.0]
    return np.r_[a, b]


def _precision_along(model, u):
    """``u' P_k u`` for every component, in float64 from the model's precisions."""
    prec = np.asarray(model.precisions_, dtype=np.float64)
    k, d = model.means_.shape
    kind = model.covariance_type
    if kind == "full":
        mats = prec
    elif kind == "tied":
        mats = np.broadcast_to(prec, (k, d, d))
    elif kind == "diag":
        mats = np.stack([np.diag(p) for p in prec])
    else:
        mats = np.stack([p * np.eye(d) for p in prec])
    return np.einsum("i,kij,j->k", u, mats, u)


DIRECTIONS = [np.array(u) / np.linalg.norm(u) for u in ([1.0, 0.0], [0.0, 1.0], [-1.0, 0.2],
                                                        [0.3, -1.0])]


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
@pytest.mark.parametrize("dtype,t", [("float64", 1e150), ("float64", 1e100), ("float32", 1e17)])
def test_far_point_goes_to_the_component_of_least_precision_along_it(covariance_type, dtype, t):
    X = _two_elongated_clusters()
    gm = GaussianMixture(2, covariance_type=covariance_type, dtype=dtype, random_state=0).fit(X)
    points = np.stack([t * u for u in DIRECTIONS])
    expect = np.array([np.argmin(_precision_along(gm, u)) for u in DIRECTIONS])
    margins = [np.ptp(_precision_along(gm, u)) / _precision_along(gm, u).max() for u in DIRECTIONS]
    assert min(margins) > 0.01  # the directions do separate the components
    resp = gm.predict_proba(points)
    assert np.isfinite(resp).all()
    np.testing.assert_array_equal(resp, np.eye(2)[expect])
    np.testing.assert_array_equal(gm.predict(points), expect)
    scores = gm.score_samples(points)
    assert not np.isnan(scores).any()
    # finite, or the documented -inf when every density underflows
    assert np.all(np.isfinite(scores) | (scores == -np.inf))


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("dtype,t", [("float64", 1e150), ("float32", 1e18)])
def test_far_point_rows_are_distributions_for_every_type(covariance_type, dtype, t):
    X = _two_elongated_clusters(1)
    gm = GaussianMixture(2, covariance_type=covariance_type, dtype=dtype, random_state=0).fit(X)
    points = np.stack([t * u for u in DIRECTIONS] + [[t, t], [-t, t]])
    resp = gm.predict_proba(points)
    assert np.isfinite(resp).all() and (resp >= 0).all()
    np.testing.assert_allclose(resp.sum(1), 1.0, rtol=0, atol=1e-6)
    assert not np.isnan(gm.score_samples(points)).any()


def test_tensor_input_far_points():
    X = torch.as_tensor(_two_elongated_clusters(2))
    gm = GaussianMixture(2, random_state=0).fit(X)
    resp = gm.predict_proba(torch.tensor([[1e150, 0.0], [0.0, -1e150]], dtype=torch.float64))
    assert torch.isfinite(resp).all()
    torch.testing.assert_close(resp.sum(1), torch.ones(2, dtype=torch.float64))


def test_gmm_e_step_far_point_matches_the_limit():
    # Component 0 is wide along x, component 1 along y.
    covs = np.array([np.diag([100.0, 1.0]), np.diag([1.0, 100.0])])
    r = gmm_e_step([[1e150, 0.0], [0.0, 1e150], [-1e120, 1e100]], [0.5, 0.5], [[0, 0], [1, 1]], covs)
    np.testing.assert_array_equal(r, [[1, 0], [0, 1], [1, 0]])
    # Narrow components: every density underflows in float64, the rule still holds.
    r = gmm_e_step([[1e152, 0.0], [0.0, -1e152]], [0.5, 0.5], [[0, 0], [1, 1]], covs * 1e-8)
    np.testing.assert_array_equal(r, [[1, 0], [0, 1]])


@pytest.mark.parametrize("value,dtype", [(1e200, "float64"), (1e155, "float64"), (1e20, "float32")])
def test_values_whose_squares_overflow_are_refused(value, dtype):
    X = _two_elongated_clusters(3)
    gm = GaussianMixture(2, dtype=dtype, random_state=0).fit(X)
    for method in (gm.predict, gm.predict_proba, gm.score_samples, gm.score):
        with pytest.raises(ValueError, match="squares overflow .*Scale the input data"):
            method([[value, 1.0]])
    with pytest.raises(ValueError, match="squares overflow"):
        GaussianMixture(2, dtype=dtype).fit(np.r_[X, [[value, 0.0]]])
    if dtype == "float64":
        with pytest.raises(ValueError, match="squares overflow"):
            gmm_e_step([[value, 0.0]], [1.0], [[0.0, 0.0]], [np.eye(2)])


def test_cli_predict_proba_far_point(tmp_path):
    X = _two_elongated_clusters(4)
    gm = GaussianMixture(2, covariance_type="diag", random_state=0).fit(X)
    model = tmp_path / "m.npz"
    gm.save(model)
    data = tmp_path / "far.csv"
    data.write_text("x1,x2\n1e150,0\n0,1e150\n")
    out = tmp_path / "p.csv"
    assert main(["predict", str(model), str(data), "--proba", "-o", str(out)]) == 0
    rows = np.loadtxt(out, delimiter=",", skiprows=1)
    expect = [np.argmin(_precision_along(gm, u)) for u in (np.array([1.0, 0]), np.array([0, 1.0]))]
    np.testing.assert_array_equal(rows[:, 0], expect)
    np.testing.assert_array_equal(rows[:, 1:], np.eye(2)[expect])
