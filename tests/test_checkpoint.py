"""Checkpoints: safe atomic format, exact resume (in-process interruption and a
SIGKILLed subprocess), and refusal of a checkpoint of another configuration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

from gaussmix import GaussianMixture
from gaussmix.checkpoint import FitCheckpoint, load_checkpoint, save_checkpoint

pytestmark = [
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.usefixtures("single_thread"),
]

DATA_CODE = """
import numpy as np
rng = np.random.default_rng(11)
X = np.concatenate([rng.normal(size=(3000, 4)) + c for c in (0.0, 3.0, 6.0, 9.0)])
"""


def _data():
    ns = {}
    exec(DATA_CODE, ns)
    return ns["X"]



def _model(**kw):
    args = dict(n_components=4, tol=0.0, max_iter=60, random_state=0, n_init=2)
    args.update(kw)
    return GaussianMixture(**args)


def _assert_identical(a, b):
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.n_iter_ == b.n_iter_ and a.converged_ == b.converged_
    assert a.lower_bounds_ == b.lower_bounds_


def test_format_is_safe_and_atomic(tmp_path):
    path = tmp_path / "state.npz"
    save_checkpoint(path, {"a": np.arange(3.0)}, {"x": 1, "inf": -np.inf})
    save_checkpoint(path, {"a": np.arange(4.0)}, {"x": 2, "inf": -np.inf})
    arrays, meta = load_checkpoint(path)  # np.load(allow_pickle=False) inside
    np.testing.assert_array_equal(arrays["a"], np.arange(4.0))
    assert meta["x"] == 2 and meta["inf"] == -np.inf
    assert os.listdir(tmp_path) == ["state.npz"]  # no temporary file left behind
    with zipfile.ZipFile(path) as z:  # plain .npy members, no pickles
        assert sorted(z.namelist()) == ["__meta__.npy", "a.npy"]
    with pytest.raises(ValueError, match="object"):
        save_checkpoint(path, {"bad": np.array([None], dtype=object)}, {})
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable gaussmix checkpoint"):
        load_checkpoint(tmp_path / "junk.npz")


def test_atomic_write_leaves_old_checkpoint_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "state.npz"
    save_checkpoint(path, {"a": np.zeros(2)}, {"v": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"a": np.ones(2)}, {"v": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)[1]["v"] == 1
    assert os.listdir(tmp_path) == ["state.npz"]


class _Interrupt(BaseException):
    pass


@pytest.mark.parametrize("stop_after", [3, 70])  # in the first / the second initialisation
def test_interrupted_fit_resumes_to_the_same_parameters(tmp_path, monkeypatch, stop_after):
    X = _data()
    reference = _model().fit(X)
    resumed = _interrupted_then_resumed(X, _model, tmp_path / "fit.npz", stop_after, monkeypatch)
    assert resumed._resumed_from_ is not None
    _assert_identical(resumed, reference)


def _interrupted_then_resumed(X, model, path, stop_after, monkeypatch):
    original = FitCheckpoint.save
    calls = [0]

    def save_then_stop(self, *args):
        original(self, *args)
        calls[0] += 1
        if calls[0] == stop_after:
            raise _Interrupt

    monkeypatch.setattr(FitCheckpoint, "save", save_then_stop)
    with pytest.raises(_Interrupt):
        model().fit(X, checkpoint=path, checkpoint_every=1)
    monkeypatch.undo()
    return model().fit(X, checkpoint=path, checkpoint_every=1)


@pytest.mark.parametrize("stop_after", [2, 5, 9, 30])  # the last in the second init
def test_float32_fit_on_owner_groups_resumes_bit_for_bit(tmp_path, monkeypatch, stop_after):
    # float32, clusters tens of standard deviations apart, enough rows: the
    # passes run on owner groups (gaussmix.owner_groups), whose centres the
    # checkpoint carries, so a resumed fit rounds as the uninterrupted one
    # (the lower bounds, float64 sums of float32 terms, would show it).
    import gaussmix.owner_groups as owner_groups_mod

    rng = np.random.default_rng(11)
    X = np.concatenate([rng.normal(size=(1500, 4)) * s + c
                        for c, s in ((0.0, 1.0), (40.0, 0.5), (80.0, 2.0), (120.0, 1.0))])
    X = X.astype(np.float32)

    def model():
        return GaussianMixture(4, tol=0.0, max_iter=20, random_state=0, n_init=2, dtype="float32")

    import gaussmix.expectation as expectation

    builds = []
    original = owner_groups_mod.OwnerGroups.build.__func__
    # float32 passes of their own, not float64 ones (expectation.float64_passes),
    # for the whole test (the helper undoes `monkeypatch`).
    with pytest.MonkeyPatch.context() as own:
        own.setattr(expectation, "SMALL_PASS_WORK", 0)
        monkeypatch.setattr(owner_groups_mod.OwnerGroups, "build",
                            classmethod(lambda cls, *a, **k: builds.append(1) or original(cls, *a, **k)))
        reference = model().fit(X)
        assert builds
        monkeypatch.undo()
        resumed = _interrupted_then_resumed(X, model, tmp_path / "fit.npz", stop_after, monkeypatch)
    assert resumed._resumed_from_ is not None
    _assert_identical(resumed, reference)


def test_converged_fit_resumes_without_an_extra_iteration(tmp_path):
    X = _data()
    path = tmp_path / "fit.npz"
    a = _model(tol=1e-3, n_init=1).fit(X, checkpoint=path, checkpoint_every=1)
    assert a.converged_
    b = _model(tol=1e-3, n_init=1).fit(X, checkpoint=path, checkpoint_every=1)
    assert b._resumed_from_ == (0, a.n_iter_)
    _assert_identical(a, b)


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    X = _data()
    path = tmp_path / "fit.npz"
    _model(max_iter=3, n_init=1).fit(X, checkpoint=path)
    with pytest.raises(ValueError, match="covariance_type: checkpoint 'full' vs now 'diag'"):
        _model(max_iter=3, n_init=1, covariance_type="diag").fit(X, checkpoint=path)
    with pytest.raises(ValueError, match="other data"):
        _model(max_iter=3, n_init=1).fit(X * 1.01, checkpoint=path)
    with pytest.raises(ValueError, match="n_samples"):
        _model(max_iter=3, n_init=1).fit(X[:-1], checkpoint=path)
    with pytest.raises(ValueError, match="does not exist"):
        _model(max_iter=3, n_init=1).fit(X, checkpoint=tmp_path / "nodir" / "fit.npz")
    with pytest.raises(ValueError, match="checkpoint_every"):
        _model().fit(X, checkpoint=path, checkpoint_every=0)


def test_checkpoint_with_a_source(tmp_path):
    X = _data()
    batches = [X[i : i + 1000] for i in range(0, len(X), 1000)]
    path = tmp_path / "fit.npz"
    a = _model(n_init=1, max_iter=5).fit(batches, checkpoint=path, checkpoint_every=2)
    b = _model(n_init=1, max_iter=5).fit(batches, checkpoint=path, checkpoint_every=2)
    assert b._resumed_from_ == (0, 5)
    _assert_identical(a, b)


def test_killed_fit_resumes_to_the_same_parameters(tmp_path):
    path = tmp_path / "fit.npz"
    script = tmp_path / "run_fit.py"
    script.write_text(DATA_CODE + textwrap.dedent("""
        import sys, warnings
        import torch
        torch.set_num_threads(1)
        warnings.simplefilter("ignore")
        from gaussmix import GaussianMixture
        GaussianMixture(4, tol=0.0, max_iter=60, random_state=0, n_init=2).fit(
            X, checkpoint=sys.argv[1], checkpoint_every=1)
    """))
    proc = subprocess.Popen([sys.executable, str(script), str(path)])
    try:
        deadline = time.monotonic() + 90
        n_iter = 0
        while n_iter < 5:
            assert proc.poll() is None, "the fit ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
            if path.exists():
                _, meta = load_checkpoint(path)
                n_iter = meta["current"]["n_iter"]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    _, meta = load_checkpoint(path)
    killed_at = (meta["init_index"], meta["current"]["n_iter"])
    assert killed_at < (1, 60)  # killed before the end
    X = _data()
    resumed = _model().fit(X, checkpoint=path, checkpoint_every=1)
    assert resumed._resumed_from_ == killed_at
    _assert_identical(resumed, _model().fit(X))


def test_resume_after_a_reseed_iteration_equals_the_uninterrupted_fit(tmp_path, monkeypatch):
    # A warm start on data without the third cluster: its component empties in
    # iteration 1 and is re-seeded there.  With a large tol the change of that
    # iteration is below tol, yet a re-seed iteration never stops EM; a
    # checkpoint written there must not be marked finished.
    import copy
    import warnings

    rng = np.random.default_rng(0)
    D1 = np.concatenate([rng.normal(size=(100, 2)) + c for c in (0.0, 8.0, -8.0)])
    D2 = np.concatenate([rng.normal(size=(100, 2)) + c for c in (0.0, 8.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm = GaussianMixture(3, random_state=0, warm_start=True, tol=1e3).fit(D1)
        reference = copy.deepcopy(warm).fit(D2)
    reseeds = [e["iteration"] for e in reference.fit_events_ if e["kind"] == "reseed"]
    assert reseeds == [1] and reference.n_iter_ == 2  # the precondition of this test
    assert abs(reference.lower_bounds_[0] - warm.lower_bound_) < 1e3

    path = tmp_path / "fit.npz"
    original = FitCheckpoint.save

    def save_then_stop(self, init_index, gen_state, current, finished, best, *owner):
        original(self, init_index, gen_state, current, finished, best, *owner)
        if current.n_iter == 1:
            raise _Interrupt

    monkeypatch.setattr(FitCheckpoint, "save", save_then_stop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(_Interrupt):
            copy.deepcopy(warm).fit(D2, checkpoint=path)
        monkeypatch.undo()
        arrays, meta = load_checkpoint(path)
        assert meta["current"]["n_iter"] == 1 and meta["finished"] is False
        resumed = copy.deepcopy(warm).fit(D2, checkpoint=path)
    assert resumed._resumed_from_ == (0, 1)
    _assert_identical(resumed, reference)
