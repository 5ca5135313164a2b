"""The installed ``gaussmix`` console script, run in subprocesses on
temporary files.

Starting the script costs an interpreter plus torch import, so independent
invocations run concurrently.
"""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import gaussmix
from gaussmix._demo import DEMO_TRUTH
from gaussmix.cli import UsageError, main, parse_components

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _script() -> str:
    near = Path(sys.executable).parent / "gaussmix"
    if near.exists():
        return str(near)
    found = shutil.which("gaussmix")
    if found is None:
        pytest.fail("the gaussmix console script is not installed (pip install -e .)")
    return found


def run(*args, cwd=None, timeout=180):
    """Run the console script; returns CompletedProcess (text)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run(
        [_script(), *map(str, args)], capture_output=True, text=True, timeout=timeout,
        cwd=cwd, env=env,
    )


def run_many(arg_lists, **kw):
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda a: run(*a, **kw), arg_lists))


def assert_usage_error(proc, *needles):
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" in lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def mixture_csv(tmp_path_factory):
    """Two well-separated diagonal clusters, with a header and a text column."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal([0, 0], [1.0, 0.3], (150, 2)), rng.normal([6, 3], [0.4, 1.2], (150, 2))]
    path = d / "data.csv"
    with open(path, "w") as fh:
        fh.write("height,width,note\n")
        for a, b in X:
            fh.write(f"{float(a)!r},{float(b)!r},ok\n")
    return d, path, X


@pytest.fixture(scope="module")
def fitted(mixture_csv):
    d, path, X = mixture_csv
    model = d / "model.npz"
    proc = run("fit", path, "--columns", "height,width", "-k", "1-3", "-t", "full",
               "--covariance-type", "diag", "--output", model, "--json", "--seed", "0",
               "--progress")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return d, path, X, model, proc


def test_demo_writes_table_model_and_plots(tmp_path):
    out = tmp_path / "demo-out"
    proc = run("demo", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    text = proc.stdout
    assert "BIC" in text and "guard" in text
    truth = f"K={DEMO_TRUTH['n_components']}, covariance_type={DEMO_TRUTH['covariance_type']}"
    assert f"Chosen: {truth}" in text
    for name in ("criterion.png", "clusters.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    model = gaussmix.load(out / "model.npz")
    X = np.loadtxt(out / "data.csv", delimiter=",", skiprows=1)
    assert X.shape == (900, 2) and model.n_components == DEMO_TRUTH["n_components"]


def test_fit_json_progress_and_model_file(fitted):
    d, path, X, model, proc = fitted
    out = json.loads(proc.stdout)
    assert out["features"] == ["height", "width"]
    assert out["n_samples"] == 300
    assert len(out["results"]["bic"]) == 6
    assert out["best_params"] == {"n_components": 2, "covariance_type": "diag"}
    assert "6/6 candidates" in proc.stderr  # progress on stderr, not in the JSON
    loaded = gaussmix.load(model)
    # The saved model is the chosen one, and its BIC is the reported one.
    assert loaded.bic(X) == pytest.approx(out["results"]["bic"][out["best_index"]], rel=1e-12)


def test_predict_score_sample_info_agree_with_the_library(fitted):
    d, path, X, model, _ = fitted
    lib = gaussmix.load(model)
    pred_csv = d / "pred.csv"
    procs = run_many([
        # The data file has an extra text column: the model's features are found by name.
        ("predict", model, path, "--proba", "--output", pred_csv),
        ("score", model, path, "--json"),
        ("sample", model, "-n", "40", "--seed", "3"),
    ])
    for p in procs:
        assert p.returncode == 0, p.stderr
        assert "Traceback" not in p.stderr
    proba_rows = np.loadtxt(pred_csv, delimiter=",", skiprows=1)
    assert np.array_equal(proba_rows[:, 0].astype(int), lib.predict(X))
    assert np.array_equal(proba_rows[:, 1:], lib.predict_proba(X))  # repr() round-trips floats
    score = json.loads(procs[1].stdout)
    assert score["n_samples"] == 300
    assert score["mean_log_likelihood"] == pytest.approx(lib.score(X), rel=1e-12)
    assert score["bic"] == pytest.approx(lib.bic(X), rel=1e-12)
    sample_lines = procs[2].stdout.splitlines()
    assert sample_lines[0] == "height,width,component" and len(sample_lines) == 41


def test_broken_inputs_exit_2_with_one_line(tmp_path, fitted):
    d, path, X, model, _ = fitted
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "text.csv").write_text("a,b\n1,2\n3,abc\n")
    (tmp_path / "ragged.csv").write_text("a,b,c\n1,2,3\n4,5\n")
    cases = [
        (("fit", tmp_path / "missing.csv"), ("missing.csv", "no such file")),
        (("fit", tmp_path / "empty.csv"), ("empty.csv", "empty")),
        (("fit", tmp_path / "text.csv"), ("text.csv", "line 3", "column 'b'", "'abc'")),
        (("fit", tmp_path / "ragged.csv"), ("ragged.csv", "line 3", "2 field(s), expected 3")),
    ]
    procs = run_many([a for a, _ in cases])
    for (args, needles), p in zip(cases, procs):
        assert_usage_error(p, *needles)


# ------------------------------------------------- in-process (same main())
def call(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_main_error(capsys, args, *needles):
    code, out, err = call(capsys, *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, (code, err)
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_usage_errors_in_process(capsys, tmp_path, fitted):
    d, path, X, model, _ = fitted
    three = tmp_path / "three.csv"
    three.write_text("p,q,r\n1,2,3\n4,5,6\n")
    assert_main_error(capsys, ("fit", path, "-k", "two"), "-k/--n-components", "'two'")
    assert_main_error(capsys, ("fit", path, "-k", "5-2"), "not a valid range")
    assert_main_error(capsys, ("fit", path, "--columns", "height,depth"), "'depth' not found")
    assert_main_error(capsys, ("fit", path, "-t", "round"), "'round'")
    assert_main_error(capsys, ("fit", path, "--n-init", "0", "--columns", "1,2"), "--n-init")
    assert_main_error(capsys, ("fit", path, "--criterion", "xyz"), "invalid choice")
    assert_main_error(capsys, ("predict", model, three), "three.csv", "3 column(s)", "expects 2")
    assert_main_error(capsys, ("sample", model, "-n", "0"), "at least 1")
    assert_main_error(capsys, ("info", tmp_path / "nope.npz"), "nope.npz", "no such file")
    (tmp_path / "fake.npz").write_bytes(b"\x80\x04K\x01.")  # a pickle
    assert_main_error(capsys, ("predict", tmp_path / "fake.npz", path), "fake.npz",
                      "not a valid gaussmix model")
    assert_main_error(capsys, ("nonsense",), "invalid choice")
    assert_main_error(capsys, (), "required")
    two = tmp_path / "two.csv"
    two.write_text("a\n1\n")
    assert_main_error(capsys, ("fit", two, "-k", "1"), "two.csv")


def test_info_json_in_process(capsys, fitted):
    d, path, X, model, _ = fitted
    code, out, err = call(capsys, "info", model, "--json")
    assert code == 0, err
    info = json.loads(out)
    lib = gaussmix.load(model)
    assert info["n_components"] == 2 and info["covariance_type"] == "diag"
    assert info["feature_names"] == ["height", "width"]
    assert info["weights"] == lib.weights_.tolist()


def test_parse_components():
    assert parse_components("3") == [3]
    assert parse_components("1-4") == [1, 2, 3, 4]
    assert parse_components("1-3,6, 2") == [1, 2, 3, 6]
    for bad in ("0", "a", "3-1", "1-", ""):
        with pytest.raises(UsageError):
            parse_components(bad)


def test_fit_table_and_plots_in_process(capsys, tmp_path, fitted):
    d, path, X, model, _ = fitted
    tsv = tmp_path / "data.tsv"
    tsv.write_text("\n".join("\t".join(map(repr, map(float, r))) for r in X) + "\n")
    code, out, err = call(capsys, "fit", tsv, "-k", "1-2", "-t", "spherical,diag", "--plots",
                          tmp_path / "plots", "-q", "--output", tmp_path / "m.npz")
    assert code == 0, err
    assert "Chosen: K=2" in out and "x1" in out
    starred = [ln.split() for ln in out.splitlines() if ln.startswith("*")]
    assert len(starred) == 1 and starred[0][1:3] == ["2", "diag"]
    for name in ("criterion.png", "clusters.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == PNG_MAGIC
    # The model's features are named x1, x2 (no header); info shows them.
    code, out, err = call(capsys, "info", tmp_path / "m.npz")
    assert code == 0 and "x1, x2" in out


def test_missing_matplotlib_gives_install_hint(capsys, tmp_path, monkeypatch, fitted):
    d, path, X, model, _ = fitted
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out, err = call(capsys, "fit", path, "--columns", "1,2", "-k", "1", "-t", "diag",
                          "--plots", tmp_path / "p", "-q")
    assert code == 0
    assert "pip install 'gaussmix[plot]'" in err
