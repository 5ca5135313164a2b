"""Model files (exact round trip, refusal of anything unsafe or damaged) and
the data-file readers."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gaussmix
from gaussmix import GaussianMixture
from gaussmix.io import DataError, read_data, read_metadata, save_model

TYPES = ("full", "tied", "diag", "spherical")
FITTED = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")


def _data(seed=0, n=200, d=3):
    rng = np.random.default_rng(seed)
    return np.r_[rng.normal(0, 1, (n, d)), rng.normal(4, 0.5, (n, d))]


def _assert_same_model(a, b, X):
    for name in FITTED:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y), name  # bitwise: no tolerance
    for name in ("converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_"):
        assert getattr(a, name) == getattr(b, name), name
    assert np.array_equal(a.predict(X), b.predict(X))
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert np.array_equal(a.score_samples(X), b.score_samples(X))
    assert a.score(X) == b.score(X)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", TYPES)
def test_round_trip_is_exact(tmp_path, kind, dtype):
    X = _data()
    a = GaussianMixture(3, covariance_type=kind, dtype=dtype, random_state=0).fit(X)
    path = tmp_path / "m.npz"
    a.save(path)
    b = gaussmix.load(path)
    _assert_same_model(a, b, X)
    assert b.get_params() == a.get_params()
    a.random_state = b.random_state = 5
    xa, ya = a.sample(20)
    xb, yb = b.sample(20)
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)


def test_loaded_model_predicts_without_refitting(tmp_path, monkeypatch):
    X = _data()
    a = GaussianMixture(2, random_state=0).fit(X)
    a.save(tmp_path / "m.npz")

    def no_fit(*args, **kwargs):
        raise AssertionError("fit must not be called")

    monkeypatch.setattr(GaussianMixture, "fit", no_fit)
    monkeypatch.setattr(GaussianMixture, "_fit", no_fit)
    b = gaussmix.load(tmp_path / "m.npz")
    assert np.array_equal(b.predict(X), a.predict(X))


def test_feature_names_and_metadata(tmp_path):
    pd = pytest.importorskip("pandas", reason="pandas gives the named-column input")
    X = _data(d=2)
    df = pd.DataFrame(X, columns=["height", "width"])
    a = GaussianMixture(2, random_state=0).fit(df)
    a.save(tmp_path / "m.npz")
    b = gaussmix.load(tmp_path / "m.npz")
    assert list(b.feature_names_in_) == ["height", "width"]
    assert np.array_equal(b.predict(df), a.predict(df))
    meta = read_metadata(tmp_path / "m.npz")
    assert meta["format"] == "gaussmix-model" and meta["format_version"] == 1
    assert meta["gaussmix_version"] == gaussmix.__version__
    assert meta["covariance_type"] == "full" and meta["dtype"] == "float64"
    assert meta["feature_names"] == ["height", "width"]
    # The metadata is plain JSON inside a plain zip (readable by any tool).
    with zipfile.ZipFile(tmp_path / "m.npz") as zf:
        assert json.loads(zf.read("metadata.json"))["n_components"] == 2


def test_same_model_same_bytes(tmp_path):
    a = GaussianMixture(2, random_state=0).fit(_data())
    a.save(tmp_path / "1.npz")
    a.save(tmp_path / "2.npz")
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()


def test_unfitted_model_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match="not fitted"):
        GaussianMixture().save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(TYPES),
    dtype=st.sampled_from(["float32", "float64"]),
    k=st.integers(1, 4),
    d=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(tmp_path, kind, dtype, k, d, seed):
    X = np.random.default_rng(seed).normal(size=(30, d)) * 10.0 ** np.random.default_rng(seed).integers(-3, 4)
    a = GaussianMixture(k, covariance_type=kind, dtype=dtype, max_iter=5, random_state=seed,
                        reg_covar=1e-3).fit(X)
    path = tmp_path / f"p{seed}.npz"
    a.save(path)
    _assert_same_model(a, gaussmix.load(path), X)


def test_round_trip_of_a_nearly_singular_float32_component(tmp_path):
    # Found by the property test: a float32 component with cond(Sigma) ~ 1e10,
    # whose stored covariance and factor can only agree to eps32 * cond.
    seed = 287
    X = np.random.default_rng(seed).normal(size=(30, 4)) * 1000.0
    a = GaussianMixture(3, covariance_type="full", dtype="float32", max_iter=5, random_state=seed,
                        reg_covar=1e-3).fit(X)
    a.save(tmp_path / "m.npz")
    _assert_same_model(a, gaussmix.load(tmp_path / "m.npz"), X)


# ------------------------------------------------------------------ security
class _Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    # The payload is live: unpickling it does create a marker file.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof))).close()
    assert proof.exists()

    evil = tmp_path / "model.npz"
    evil.write_bytes(payload)
    with pytest.raises(ValueError, match="not a valid gaussmix model file.*pickle"):
        gaussmix.load(evil)
    assert not marker.exists()


def test_pickled_object_array_inside_a_model_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    good = tmp_path / "good.npz"
    GaussianMixture(2, random_state=0).fit(_data()).save(good)
    evil = tmp_path / "evil.npz"
    obj = np.empty(2, dtype=object)
    obj[:] = [_Payload(marker), 1.0]
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "weights.npy":
                buf = io.BytesIO()
                np.lib.format.write_array(buf, obj, allow_pickle=True)
                data = buf.getvalue()
            dst.writestr(info.filename, data)
    with pytest.raises(ValueError, match="never loaded|not a plain"):
        gaussmix.load(evil)
    assert not marker.exists()


def test_truncated_files_are_refused(tmp_path):
    good = tmp_path / "good.npz"
    GaussianMixture(2, covariance_type="diag", random_state=0).fit(_data()).save(good)
    raw = good.read_bytes()
    bad = tmp_path / "cut.npz"
    for cut in range(0, len(raw) - 1, max(1, len(raw) // 40)):
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="not a valid gaussmix model file"):
            gaussmix.load(bad)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_bytes_are_refused_or_harmless(tmp_path, data):
    good = tmp_path / "good.npz"
    if not good.exists():
        GaussianMixture(2, covariance_type="full", random_state=0).fit(_data()).save(good)
    raw = bytearray(good.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(raw))
    try:
        model = gaussmix.load(bad)
    except ValueError as exc:
        assert "gaussmix model" in str(exc) or "format" in str(exc)
        return
    # A flip in a byte nobody reads (e.g. a zip timestamp) leaves the model intact.
    ref = gaussmix.load(good)
    for name in FITTED:
        assert np.array_equal(getattr(model, name), getattr(ref, name))


def test_foreign_and_inconsistent_files(tmp_path):
    X = _data()
    # A plain numpy .npz without metadata.
    p = tmp_path / "plain.npz"
    np.savez(p, weights=np.ones(2) / 2)
    with pytest.raises(ValueError, match="no metadata.json"):
        gaussmix.load(p)
    # Not a zip at all.
    p = tmp_path / "text.npz"
    p.write_text("hello")
    with pytest.raises(ValueError, match="not a zip"):
        gaussmix.load(p)

    good = tmp_path / "good.npz"
    GaussianMixture(2, random_state=0).fit(X).save(good)

    def rewrite(name, meta_change=None, drop=None):
        out = tmp_path / name
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                if info.filename == drop:
                    continue
                data = src.read(info)
                if info.filename == "metadata.json" and meta_change:
                    meta = json.loads(data)
                    meta_change(meta)
                    data = json.dumps(meta).encode()
                dst.writestr(info.filename, data)
        return out

    cases = [
        (rewrite("newer.npz", lambda m: m.update(format_version=99)), "newer"),
        (rewrite("other.npz", lambda m: m.update(format="something")), "does not identify"),
        (rewrite("k.npz", lambda m: m.update(n_components=3)), "shape"),
        (rewrite("type.npz", lambda m: m.update(covariance_type="banana")), "covariance_type"),
        (rewrite("dtype.npz", lambda m: m.update(dtype="float16")), "dtype"),
        (rewrite("names.npz", lambda m: m.update(feature_names=["a"])), "feature_names"),
        (rewrite("param.npz", lambda m: m["estimator_params"].update(tol=-1)), "parameter"),
        (rewrite("nomeans.npz", drop="means.npy"), "missing"),
    ]
    for path, match in cases:
        with pytest.raises(ValueError, match=match):
            gaussmix.load(path)
    with pytest.raises(FileNotFoundError):
        gaussmix.load(tmp_path / "absent.npz")


# ------------------------------------------------------------------- readers
def _write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if mode == "w":
        p.write_text(text, encoding="utf-8")
    else:
        p.write_bytes(text)
    return p


def test_read_csv_with_header_and_columns(tmp_path):
    p = _write(tmp_path, "d.csv", "# comment\na,b,label\n1,2,x\n3.5,-4e2,y\n\n5,6,z\n")
    X, names = read_data(p, columns="a,b")
    assert names == ["a", "b"]
    assert np.array_equal(X, [[1, 2], [3.5, -400], [5, 6]])
    X, names = read_data(p, columns=["2", "a"])
    assert names == ["b", "a"] and np.array_equal(X[:, 0], [2, -400, 6])


def test_read_text_variants(tmp_path):
    expected = np.array([[1.0, 2.0], [3.0, 4.0]])
    variants = {
        "plain.csv": "1,2\n3,4\n",
        "tabs.tsv": "x\ty\n1\t2\n3\t4\n",
        "semi.txt": "x;y\n1;2\n3;4\n",
        "space.txt": "1 2\n3   4\n",
        "quoted.csv": '"x","y"\n"1","2"\n3,4\n',
        "bom.csv": "\ufeffx,y\r\n1,2\r\n3,4\r\n",
    }
    for name, text in variants.items():
        X, names = read_data(_write(tmp_path, name, text))
        assert np.array_equal(X, expected), name
        assert len(names) == 2
    X, names = read_data(_write(tmp_path, "h.csv", "1,2\n3,4\n"), header=True)
    assert names == ["1", "2"] and X.shape == (1, 2)


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("   \n\n", "empty"),
        ("a,b\n", "no data rows"),
        ("# only\n", "no data rows"),
        ("a,b\n1,2\n3\n", "line 3: 1 field"),
        ("a,b\n1,2\n3,4,5\n", "line 3: 3 field"),
        ("a,b\n1,2\n3,oops\n", "line 3, column 'b' \\(#2\\): 'oops' is not a number"),
        ("a,b\n1,nan\n", "column 'b'.*not a finite number"),
        ("a,b\n1,1e999\n", "not a finite number"),
        ("a,a\n1,2\n", "appears twice"),
        ('a,b\n1,"2\n', "malformed|field"),
    ],
)
def test_read_errors_name_the_problem(tmp_path, text, match):
    p = _write(tmp_path, "bad.csv", text)
    with pytest.raises(DataError, match=match) as info:
        read_data(p)
    assert "bad.csv" in str(info.value)


def test_read_errors_columns_binary_missing(tmp_path):
    p = _write(tmp_path, "d.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match="column 'c' not found.*a, b"):
        read_data(p, columns="c")
    with pytest.raises(DataError, match="not UTF-8"):
        read_data(_write(tmp_path, "latin.csv", "a,b\n1,\xe9\n".encode("latin-1"), mode="b"))
    with pytest.raises(DataError, match="NUL"):
        read_data(_write(tmp_path, "nul.csv", b"a\x00b", mode="b"))
    with pytest.raises(FileNotFoundError):
        read_data(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="directory"):
        read_data(tmp_path)


def test_read_npy(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "a.npy", a)
    X, names = read_data(tmp_path / "a.npy", columns="1,3")
    assert X.dtype == np.float64 and np.array_equal(X, a[:, [0, 2]]) and names == ["x1", "x3"]
    np.save(tmp_path / "v.npy", np.arange(5))
    assert read_data(tmp_path / "v.npy")[0].shape == (5, 1)
    # Damaged or unsafe arrays.
    marker = tmp_path / "pwned"
    obj = np.empty(1, dtype=object)
    obj[0] = _Payload(marker)
    np.save(tmp_path / "obj.npy", obj, allow_pickle=True)
    with pytest.raises(DataError, match="pickled|Python objects"):
        read_data(tmp_path / "obj.npy")
    assert not marker.exists()
    raw = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_data(tmp_path / "cut.npy")
    # A header promising an enormous array must not allocate it.
    (tmp_path / "huge.npy").write_bytes(raw.replace(b"(4, 3)", b"(99999999999, 3)"))
    with pytest.raises(DataError, match="truncated"):
        read_data(tmp_path / "huge.npy")
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    with pytest.raises(DataError, match="row 1, column 2"):
        read_data(tmp_path / "nan.npy")
    np.save(tmp_path / "str.npy", np.array(["a", "b"]))
    with pytest.raises(DataError, match="not real numeric"):
        read_data(tmp_path / "str.npy")


def test_read_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet support is the optional 'parquet' extra")
    import pyarrow.parquet as pq

    t = pa.table({"a": [1.0, 2.0, 3.0], "b": [4, 5, 6], "s": ["x", "y", "z"]})
    pq.write_table(t, tmp_path / "d.parquet")
    X, names = read_data(tmp_path / "d.parquet", columns="a,b")
    assert names == ["a", "b"] and np.array_equal(X, [[1, 4], [2, 5], [3, 6]])
    with pytest.raises(DataError, match="column 's'.*not numeric"):
        read_data(tmp_path / "d.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(DataError, match="Parquet"):
        read_data(tmp_path / "bad.parquet")


def test_save_model_checks_feature_names(tmp_path):
    a = GaussianMixture(2, random_state=0).fit(_data(d=2))
    with pytest.raises(ValueError, match="one name per feature"):
        save_model(a, tmp_path / "m.npz", feature_names=["only-one"])
    save_model(a, tmp_path / "m.npz", feature_names=["u", "v"])
    assert read_metadata(tmp_path / "m.npz")["feature_names"] == ["u", "v"]
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind
