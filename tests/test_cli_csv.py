"""Every CSV the command line writes reads back, whatever the column names."""

import csv

import numpy as np
import pytest

from gaussmix import GaussianMixture, load
from gaussmix.cli import main
from gaussmix.io import read_data

NAMES = ["x,1", 'say "hi"', "plain"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("csv")
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(60, 3)), rng.normal(size=(60, 3)) + 5]
    path = tmp / "m.npz"
    from gaussmix.io import save_model

    save_model(GaussianMixture(2, random_state=0).fit(X), path, feature_names=NAMES)
    return path


def test_sample_round_trips_quoted_header(model_path, tmp_path):
    out = tmp_path / "s.csv"
    assert main(["sample", str(model_path), "-n", "25", "--seed", "3", "-o", str(out)]) == 0
    with open(out, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == NAMES + ["component"]
    assert all(len(r) == 4 for r in rows)
    X, names = read_data(out)
    assert names == NAMES + ["component"] and X.shape == (25, 4)
    # The values are those the model draws with the same seed.
    gm = load(model_path)
    gm.random_state = 3
    expect, comp = gm.sample(25)
    np.testing.assert_array_equal(X[:, :3], expect)
    np.testing.assert_array_equal(X[:, 3], comp)


def test_predict_output_reads_back_and_finds_features_by_quoted_name(model_path, tmp_path):
    data = tmp_path / "d.csv"
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 3))
    with open(data, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(NAMES)
        w.writerows(X.tolist())
    out = tmp_path / "p.csv"
    assert main(["predict", str(model_path), str(data), "--proba", "-o", str(out)]) == 0
    P, names = read_data(out)
    assert names == ["label", "prob_0", "prob_1"]
    gm = load(model_path)
    np.testing.assert_array_equal(P[:, 0], gm.predict(X))
    np.testing.assert_array_equal(P[:, 1:], gm.predict_proba(X))


def test_sample_streams_in_blocks(model_path, tmp_path, monkeypatch):
    import gaussmix.cli.commands as commands

    monkeypatch.setattr(commands, "SAMPLE_BLOCK", 7)
    out = tmp_path / "s.csv"
    assert main(["sample", str(model_path), "-n", "2e1", "--seed", "0", "-o", str(out)]) == 0
    X, _ = read_data(out)
    assert X.shape == (20, 4)
    gm = load(model_path)
    gm.random_state = 0
    first, _ = gm.sample(7)  # the first block is model.sample's draw
    np.testing.assert_array_equal(X[:7, :3], first)


@pytest.mark.parametrize("n", ["1e20", "0", "2.5", "many"])
def test_sample_count_errors(model_path, n, capsys):
    assert main(["sample", str(model_path), "-n", n]) == 2
    err = capsys.readouterr().err
    assert "-n/--n-samples" in err and "Traceback" not in err


def test_output_over_an_input_is_refused(model_path, tmp_path, capsys):
    data = tmp_path / "d.csv"
    np.savetxt(data, np.random.default_rng(2).normal(size=(30, 3)), delimiter=",")
    before = data.read_bytes()
    assert main(["fit", str(data), "-k", "1", "-o", str(data)]) == 2
    assert main(["predict", str(model_path), str(data), "-o", str(data)]) == 2
    assert main(["sample", str(model_path), "-n", "3", "-o", str(model_path)]) == 2
    assert data.read_bytes() == before
    assert "destroy the input" in capsys.readouterr().err
    assert load(model_path).n_components == 2


def test_multi_character_delimiter_is_a_usage_error(model_path, tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("a;;b\n1;;2\n3;;4\n")
    assert main(["fit", str(data), "-k", "1", "--delimiter", ";;"]) == 2
    err = capsys.readouterr().err
    assert "single character" in err and "TypeError" not in err
