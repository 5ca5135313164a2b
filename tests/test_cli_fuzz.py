"""Fuzzing of the data readers and the command line.

Whatever the bytes, a reader returns a finite float64 table or raises
:class:`DataError`; the command line exits with 0 or 2 and, on 2, prints one
line and no traceback.  Many examples run in-process; a small corpus of
nasty files goes through the real console script, with a timeout.
"""

import contextlib
import io
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaussmix import GaussianMixture
from gaussmix.cli import main
from gaussmix.io import DataError, read_data

def fuzz(n):
    """Bounded hypothesis settings: n examples, no deadline (process start-up varies)."""
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _check_reader(path, **kw):
    try:
        X, names = read_data(path, **kw)
    except DataError as exc:
        msg = str(exc)
        assert "\n" not in msg and "\r" not in msg  # one line, whatever the input
        assert os.path.basename(str(path)) in msg
        return None
    assert X.dtype == np.float64 and X.ndim == 2
    assert X.shape[0] >= 1 and X.shape[1] == len(names) >= 1
    assert np.isfinite(X).all()
    return X


@fuzz(250)
@given(raw=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".tsv", ".txt", ".npy"]))
def test_reader_random_bytes(raw, suffix):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"f{suffix}"
        p.write_bytes(raw)
        _check_reader(p)


_field = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e308", "-1e308", "1e999", "nan", "inf", "-", ".", "", " ", "0x10",
                     "1_000", "١٢", "1,5", '"3"', '"', "\u00a0", "1e-320"]),
    st.text(max_size=6),
)


@fuzz(150)
@given(
    header=st.one_of(st.none(), st.lists(st.text(min_size=0, max_size=8), min_size=1, max_size=4)),
    rows=st.lists(st.lists(_field, min_size=0, max_size=4), min_size=0, max_size=8),
    seps=st.lists(st.sampled_from([",", ";", "\t", " ", ", "]), min_size=1, max_size=3),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    columns=st.sampled_from([None, "1", "2,1", "a"]),
)
def test_reader_structured_text(header, rows, seps, newline, columns):
    lines = []
    if header is not None:
        lines.append(seps[0].join(header))
    for i, r in enumerate(rows):
        lines.append(seps[i % len(seps)].join(r))  # mixed delimiters between rows
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.csv"
        p.write_bytes(newline.join(lines).encode("utf-8", "surrogatepass"))
        _check_reader(p, columns=columns)


@fuzz(120)
@given(data=st.data())
def test_reader_damaged_npy(data):
    a = np.arange(12, dtype=data.draw(st.sampled_from([np.float32, np.float64, np.int16]))).reshape(3, 4)
    buf = io.BytesIO()
    np.save(buf, a)
    raw = bytearray(buf.getvalue())
    for _ in range(data.draw(st.integers(0, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))]
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "a.npy"
        p.write_bytes(bytes(raw))
        _check_reader(p)


def _run_main(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def _assert_clean_exit(code, err):
    assert code in (0, 2), (code, err)
    assert "Traceback" not in err
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip() and "warning:" not in ln]
        assert len(lines) == 1 and "error:" in lines[0], err


_numbers = st.one_of(
    st.floats(-1e3, 1e3, allow_nan=False),
    st.floats(-1e300, 1e300, allow_nan=False),
    st.sampled_from([0.0, 1.0, 1e-300, 1e150, -1e200, 3.0]),
)


@fuzz(30)
@given(
    kind=st.sampled_from(["numbers", "numbers", "numbers", "text", "bytes"]),
    values=st.lists(st.lists(_numbers, min_size=2, max_size=2), min_size=0, max_size=15),
    text=st.text(max_size=60),
    raw=st.binary(max_size=60),
)
def test_cli_fit_never_crashes(kind, values, text, raw):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "in.csv"
        if kind == "numbers":
            p.write_text("α,β\n" + "".join(f"{a!r},{b!r}\n" for a, b in values), encoding="utf-8")
        elif kind == "text":
            p.write_bytes(text.encode("utf-8", "surrogatepass"))
        else:
            p.write_bytes(raw)
        code, out, err = _run_main(["fit", p, "-k", "1-2", "-t", "diag,spherical", "-q",
                                    "--max-iter", "20"])
        _assert_clean_exit(code, err)
        if code == 0:
            assert "Chosen:" in out


@fuzz(40)
@given(cut=st.integers(0, 10_000), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
       command=st.sampled_from(["info", "predict", "score", "sample"]))
def test_cli_damaged_model_files(tmp_path_factory, cut, flips, command):
    d = tmp_path_factory.getbasetemp() / "fuzzmodel"
    d.mkdir(exist_ok=True)
    good = d / "good.npz"
    data = d / "data.csv"
    if not good.exists():
        X = np.random.default_rng(0).normal(size=(50, 2))
        GaussianMixture(2, random_state=0).fit(X).save(good)
        data.write_text("x1,x2\n" + "".join(f"{a!r},{b!r}\n" for a, b in X.tolist()))
    raw = bytearray(good.read_bytes())
    for pos, val in flips:
        raw[pos % len(raw)] = val
    raw = raw[: cut % (len(raw) + 1)]
    bad = d / "bad.npz"
    bad.write_bytes(bytes(raw))
    args = {"info": ["info", bad], "predict": ["predict", bad, data], "score": ["score", bad, data],
            "sample": ["sample", bad, "-n", "3"]}[command]
    code, out, err = _run_main(args)
    _assert_clean_exit(code, err)


def test_cli_unicode_mixed_delimiters_and_truncated_npy(tmp_path):
    cases = {
        "unicode-mixed.csv": "Größe;温度\tñ\n1;2\t3\n4,5,6\n".encode(),
        "truncated.npy": b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, "
                         b"'shape': (100, 3), }",
    }
    for name, raw in cases.items():
        (tmp_path / name).write_bytes(raw)
        code, out, err = _run_main(["fit", tmp_path / name, "-k", "1-2", "-q"])
        assert code == 2 and name in err
        _assert_clean_exit(code, err)


# ------------------------------------------------- the real script, briefly
def _script():
    near = Path(sys.executable).parent / "gaussmix"
    return str(near) if near.exists() else "gaussmix"


def test_console_script_on_a_nasty_corpus(tmp_path):
    rng = np.random.default_rng(123)
    corpus = {
        "random.csv": bytes(rng.integers(0, 256, 300, dtype=np.uint8)),
        "huge.csv": b"a,b\n1e308,1\n-1e308,2\n1e307,3\n5,4\n",
    }
    for name, raw in corpus.items():
        (tmp_path / name).write_bytes(raw)
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")

    def run(name):
        return subprocess.run([_script(), "fit", str(tmp_path / name), "-k", "1-2", "-q"],
                              capture_output=True, text=True, timeout=120, env=env)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(run, corpus))
    for name, p in zip(corpus, procs):
        assert p.returncode == 2, (name, p.returncode, p.stderr)
        _assert_clean_exit(p.returncode, p.stderr)
        assert name in p.stderr
