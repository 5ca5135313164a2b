"""Values read from model files and checkpoints are checked before use.

Each test damages one field of a file written by gaussmix and expects a
ValueError naming the file and the field; intact files (float32 and float64,
every covariance type, ill-conditioned covariances) still load.
"""

import io as _io
import os
import zipfile

import numpy as np
import pytest

from gaussmix import GaussianMixture, load
from gaussmix.checkpoint import load_checkpoint, save_checkpoint
from gaussmix.cli import main

TYPES = ["full", "tied", "diag", "spherical"]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(size=(80, 2)), rng.normal(size=(80, 2)) * [2.0, 0.5] + 6]


def _rewrite_member(path, name, array):
    """Replace one ``.npy`` member of a model file, keeping the others."""
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    buf = _io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    members[name + ".npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)


def _read_member(path, name):
    with zipfile.ZipFile(path) as zf:
        return np.lib.format.read_array(_io.BytesIO(zf.read(name + ".npy")))


@pytest.fixture
def model_file(tmp_path):
    def make(covariance_type="full", dtype="float64"):
        gm = GaussianMixture(2, covariance_type=covariance_type, dtype=dtype, random_state=0)
        path = tmp_path / f"{covariance_type}-{dtype}.npz"
        gm.fit(_data()).save(path)
        return path
    return make


def _negate_first_factor_diagonal(u):
    u = u.copy()
    if u.ndim == 3:
        u[0, 0, 0] = -u[0, 0, 0]
    elif u.ndim == 2 and u.shape[0] == u.shape[1] and np.allclose(np.tril(u, -1), 0):
        u[0, 0] = -u[0, 0]
    else:
        u.flat[0] = -u.flat[0]
    return u


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_intact_model_files_load(model_file, covariance_type, dtype):
    path = model_file(covariance_type, dtype)
    gm = load(path)
    assert np.isfinite(gm.score_samples(_data(1))).all()


@pytest.mark.parametrize("covariance_type", TYPES)
def test_negative_factor_diagonal_is_refused(model_file, covariance_type):
    path = model_file(covariance_type)
    u = _read_member(path, "precisions_cholesky")
    # The precisions U U^T do not change (for full/tied only the sign of a
    # column flips in U U^T's factor), yet log det U would be NaN.
    _rewrite_member(path, "precisions_cholesky", _negate_first_factor_diagonal(u))
    with pytest.raises(ValueError, match=r"precisions_cholesky.*diagonal|precisions_cholesky.*<= 0") as e:
        load(path)
    assert os.fspath(path) in str(e.value)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_covariances_that_disagree_with_the_precisions_are_refused(model_file, covariance_type):
    path = model_file(covariance_type)
    _rewrite_member(path, "covariances", _read_member(path, "covariances") * 4.0)
    with pytest.raises(ValueError, match="'covariances' disagree with precisions_cholesky") as e:
        load(path)
    assert os.fspath(path) in str(e.value)


def test_precisions_that_disagree_with_the_factors_are_refused(model_file):
    path = model_file("full")
    _rewrite_member(path, "precisions", _read_member(path, "precisions") * 0.5)
    with pytest.raises(ValueError, match="'precisions' disagree"):
        load(path)


def test_lower_triangular_entries_in_a_full_factor_are_refused(model_file):
    path = model_file("full")
    u = _read_member(path, "precisions_cholesky")
    u[0, 1, 0] = 0.3
    _rewrite_member(path, "precisions_cholesky", u)
    with pytest.raises(ValueError, match="not upper-triangular"):
        load(path)


@pytest.mark.parametrize("weights", [[2.0, -1.0], [0.3, 0.3]])
def test_weights_that_are_not_a_distribution_are_refused(model_file, weights):
    path = model_file("diag")
    _rewrite_member(path, "weights", np.array(weights))
    with pytest.raises(ValueError, match="weights"):
        load(path)


def test_ill_conditioned_valid_model_loads(tmp_path):
    # A feature with a spread 1e-5 of the other's: covariances with condition
    # number ~1e10 still pass the consistency check.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 2)) * [1e2, 1e-3]
    for dtype in ("float64", "float32"):
        path = tmp_path / f"ill-{dtype}.npz"
        GaussianMixture(2, dtype=dtype, reg_covar=1e-9, random_state=0).fit(X).save(path)
        assert np.isfinite(load(path).score_samples(X)).all()


def test_cli_score_refuses_a_damaged_model(model_file, tmp_path, capsys):
    path = model_file("full")
    _rewrite_member(path, "precisions_cholesky",
                    _negate_first_factor_diagonal(_read_member(path, "precisions_cholesky")))
    data = tmp_path / "d.csv"
    np.savetxt(data, _data(2), delimiter=",")
    assert main(["score", str(path), str(data)]) == 2
    err = capsys.readouterr().err
    assert "precisions_cholesky" in err and "nan" not in err.lower()


# ------------------------------------------------------------------ checkpoints
@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "fit.npz"
    GaussianMixture(2, random_state=0, max_iter=3, n_init=2).fit(_data(), checkpoint=path)
    return path


def _resume(path):
    return GaussianMixture(2, random_state=0, max_iter=3, n_init=2).fit(_data(), checkpoint=path)


def _tamper(path, edit):
    arrays, meta = load_checkpoint(path)
    edit(arrays, meta)
    meta.pop("format_version", None)
    save_checkpoint(path, arrays, meta)


@pytest.mark.parametrize("field,edit", [
    ("current_means", lambda a, m: a["current_means"].__setitem__((0, 0), np.nan)),
    ("best_weights", lambda a, m: a.__setitem__("best_weights", np.array([2.0, -1.0]))),
    ("current_precisions_cholesky",
     lambda a, m: a.__setitem__("current_precisions_cholesky",
                                _negate_first_factor_diagonal(a["current_precisions_cholesky"]))),
    ("current_covariances", lambda a, m: a["current_covariances"].__imul__(3.0)),
    ("current_weights", lambda a, m: a.pop("current_weights")),
    ("current_means", lambda a, m: a.__setitem__("current_means", a["current_means"][:, :1])),
    ("current_n_iter", lambda a, m: m["current"].__setitem__("n_iter", -3)),
    ("init_index", lambda a, m: m.__setitem__("init_index", 7)),
    ("current_lower_bound", lambda a, m: m["current"].__setitem__("lower_bound", float("nan"))),
])
def test_damaged_checkpoint_values_are_refused(checkpoint, field, edit):
    _tamper(checkpoint, edit)
    with pytest.raises(ValueError, match=f"'{field}'") as e:
        _resume(checkpoint)
    assert os.fspath(checkpoint) in str(e.value) and "delete it" in str(e.value)


def test_truncated_and_bit_flipped_checkpoints_are_refused(checkpoint):
    raw = checkpoint.read_bytes()
    checkpoint.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated or damaged.*Delete it"):
        _resume(checkpoint)
    rng = np.random.default_rng(0)
    refused = 0
    for _ in range(40):
        flipped = bytearray(raw)
        i = int(rng.integers(len(raw)))
        flipped[i] ^= 1 << int(rng.integers(8))
        checkpoint.write_bytes(bytes(flipped))
        try:
            gm = _resume(checkpoint)
        except ValueError:
            refused += 1
            continue
        # A flip that is not refused must be harmless: a valid model.
        assert np.isfinite(gm.means_).all() and np.isclose(gm.weights_.sum(), 1.0)
    assert refused > 0


def test_checkpoint_in_an_unwritable_folder_names_the_checkpoint(tmp_path, monkeypatch):
    # Permissions do not bind root, so the folder's refusal is simulated where
    # the temporary file is created.
    import gaussmix.checkpoint as ckpt

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", os.fspath(tmp_path / "fit.npz.abc.tmp"))

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", refuse)
    path = tmp_path / "fit.npz"
    with pytest.raises(OSError, match="Cannot write checkpoint .*fit.npz.*not writable") as e:
        GaussianMixture(2, random_state=0).fit(_data(), checkpoint=path)
    assert ".tmp" not in str(e.value)


def test_save_keeps_a_user_file_named_like_a_temporary(tmp_path):
    path = tmp_path / "m.npz"
    keep = tmp_path / "m.npz.tmp"
    keep.write_text("mine")
    GaussianMixture(2, random_state=0).fit(_data()).save(path)
    assert keep.read_text() == "mine"
    assert load(path).n_components == 2
