"""Misuse that must be a clear error naming the remedy, not a crash inside torch
or numpy, nor a misleading diagnosis: devices we cannot compute on, damaged
.npy sources, single-use sources, sources given to the in-memory entry points,
and select_model's initial parameters and random generators."""

import re

import numpy as np
import pytest
import torch
from _checks import check_error

from gaussmix import GaussianMixture, select_model

X = np.random.default_rng(0).normal(size=(120, 2)) + np.repeat([[0.0, 0.0], [6.0, 6.0]], 60, axis=0)


_check = check_error


def test_meta_device_is_refused():
    for fit in (lambda: GaussianMixture(2, device="meta").fit(X),
                lambda: select_model(X, n_components=[1, 2], device=torch.device("meta"))):
        _check(fit, r"device='meta'|device=device\(type='meta'\)", r"Use device='cpu'")


@pytest.mark.parametrize("backend", ["mps", "xpu"])
def test_unavailable_backend_is_refused(backend, monkeypatch):
    # Forced off so the test means the same thing on machines that have one.
    if backend == "mps":
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    else:
        monkeypatch.setattr(torch.xpu, "is_available", lambda: False)
    _check(lambda: GaussianMixture(2, device=backend).fit(X),
           rf"'{backend}' backend is not available", r"Use device='cpu'")


@pytest.fixture
def npy_files(tmp_path):
    good = tmp_path / "x.npy"
    np.save(good, X)
    raw = good.read_bytes()
    (tmp_path / "truncated.npy").write_bytes(raw[: len(raw) // 2])
    np.save(tmp_path / "objects.npy", X.astype(object), allow_pickle=True)
    np.save(tmp_path / "text.npy", X.astype(str))
    return tmp_path


@pytest.mark.parametrize("name, problem", [
    ("truncated.npy", r"truncated: its header promises 1920 bytes of data but only \d+ follow"),
    ("objects.npy", r"holds Python objects"),
    ("text.npy", r"dtype <U\d+, not real numbers"),
])
def test_damaged_npy_source(npy_files, name, problem):
    _check(lambda: GaussianMixture(2).fit(str(npy_files / name)), problem,
           r"np\.save\(path, np\.asarray\(X, dtype=np\.float64\)\)")


class _SingleUse:
    """Iterable whose __iter__ hands out the same iterator every time."""

    def __init__(self, parts):
        self._it = iter(parts)

    def __iter__(self):
        return self._it


@pytest.mark.parametrize("n_parts", [1, 4])
def test_single_use_iterable_source(n_parts):
    parts = np.array_split(X, n_parts)
    _check(lambda: GaussianMixture(2).fit(_SingleUse(parts)), r"single-use",
           r"must be re-iterable: a list of arrays")
    # The same batches from a re-iterable source fit the in-memory data's model.
    a = GaussianMixture(2, random_state=0, means_init=[[0, 0], [6, 6]]).fit(parts)
    b = GaussianMixture(2, random_state=0, means_init=[[0, 0], [6, 6]]).fit(X)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10, atol=1e-12)


def test_sources_given_to_in_memory_entry_points(npy_files):
    path = str(npy_files / "x.npy")
    gm = GaussianMixture(2, random_state=0).fit(path)
    np.testing.assert_array_equal(gm.predict(np.load(path, mmap_mode="r")), gm.predict(X))
    for fn in (gm.predict, gm.predict_proba, gm.score, gm.score_samples, gm.bic):
        _check(lambda: fn(path), r"expected in-memory data .* got the path", r"Only fit reads sources")
    batches = [X[:60], X[60:]]
    _check(lambda: gm.score(batches), r"got a source of batches \(list\)", r"batch by batch")
    _check(lambda: select_model(path, n_components=[1, 2]), r"select_model: expected in-memory",
           r"np\.load\(path, mmap_mode='r'\)")
    _check(lambda: GaussianMixture(2).partial_fit(iter(batches)), r"partial_fit: expected in-memory",
           r"Call partial_fit once per batch")


def test_select_model_reports_the_shape_of_its_initial_parameters():
    kw = dict(covariance_types=["full"], starts="estimator")
    _check(lambda: select_model(X, n_components=[2], means_init=np.zeros((3, 2)), **kw),
           re.escape("The parameter 'means' should have the shape of (2, 2), but got (3, 2)."),
           r"pass one K and one type")
    _check(lambda: select_model(X, n_components=[2, 3], means_init=[[0, 0], [6, 6]], **kw),
           re.escape("should have the shape of (3, 2), but got (2, 2)") + ".*candidate full K=3",
           r"pass one K")
    _check(lambda: select_model(X, n_components=[2], precisions_init=np.ones((3, 2, 2)), **kw),
           re.escape("'full precision' should have the shape of (2, 2, 2)"), r"pass one K")
    # Initial parameters that fit every candidate are used, as GaussianMixture uses them.
    sel = select_model(X, n_components=[2], means_init=[[0, 0], [6, 6]], random_state=0, **kw)
    ref = GaussianMixture(2, means_init=[[0, 0], [6, 6]], random_state=0).fit(X)
    np.testing.assert_allclose(sel.best_estimator_.means_, ref.means_, rtol=1e-10)


def test_select_model_accepts_a_numpy_generator():
    kw = dict(n_components=[1, 2, 3], covariance_types=["full", "diag"])
    a = select_model(X, random_state=np.random.default_rng(7), **kw)
    b = select_model(X, random_state=np.random.default_rng(7), **kw)
    seed = int(np.random.default_rng(7).integers(np.iinfo(np.int32).max))
    c = select_model(X, random_state=seed, **kw)
    for other in (b, c):
        assert other.best_params_ == a.best_params_
        np.testing.assert_array_equal(other.results_["bic"], a.results_["bic"])
