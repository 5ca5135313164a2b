"""Figures: files are valid PNGs and show what they claim (chosen model
marked, ellipses of the right size, principal-component projection)."""

import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="plots need the optional 'plot' extra (matplotlib)")
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

from gaussmix import GaussianMixture, select_model  # noqa: E402
from gaussmix.plotting import plot_clusters, plot_criterion  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_ok(path):
    raw = path.read_bytes()
    assert raw[:8] == PNG_MAGIC
    assert len(raw) < 200_000


def _blobs(d, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    return np.r_[rng.normal(0, 1, (150, d)) @ A, rng.normal(0, 1, (150, d)) @ A + 6]


def test_criterion_plot_marks_the_chosen_model(tmp_path):
    X = _blobs(2)
    sel = select_model(X, [1, 2, 3], ("full", "diag"), random_state=0)
    fig = plot_criterion(sel, path=tmp_path / "c.png")
    _png_ok(tmp_path / "c.png")
    ax = fig.axes[0]
    stars = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert len(stars) == 1
    b = sel.best_index_
    assert stars[0].get_xdata()[0] == sel.results_["n_components"][b]
    assert stars[0].get_ydata()[0] == sel.results_["bic"][b]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "full" in labels and "diag" in labels
    # Another criterion from the same results.
    fig = plot_criterion(sel.results_, criterion="aic", path=tmp_path / "a.png")
    assert "AIC" in fig.axes[0].get_ylabel()
    _png_ok(tmp_path / "a.png")


def test_criterion_plot_shows_excluded_candidates(tmp_path):
    results = {
        "n_components": [1, 2, 3],
        "covariance_type": ["diag"] * 3,
        "bic": [10.0, 8.0, 2.0],
        "guard": ["ok", "ok", "excluded"],
        "selected": [False, True, False],
    }
    fig = plot_criterion(results, path=tmp_path / "x.png")
    ax = fig.axes[0]
    crosses = [ln for ln in ax.get_lines() if ln.get_marker() == "x" and len(ln.get_xdata())]
    assert [list(c.get_xdata()) for c in crosses] == [[3]]
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "diag")
    assert list(line.get_xdata()) == [1, 2]  # the excluded point is not on the curve
    with pytest.raises(ValueError, match="criterion"):
        plot_criterion(results, criterion="xyz")


def _ellipses(fig):
    return [p for p in fig.axes[0].patches if isinstance(p, Ellipse)]


@pytest.mark.parametrize("kind", ["full", "tied", "diag", "spherical"])
def test_cluster_plot_2d_ellipses_match_covariances(tmp_path, kind):
    X = _blobs(2, seed=1)
    gm = GaussianMixture(2, covariance_type=kind, random_state=0).fit(X)
    fig = plot_clusters(gm, X, path=tmp_path / "k.png")
    _png_ok(tmp_path / "k.png")
    ells = _ellipses(fig)
    assert len(ells) == 4  # 1 and 2 sigma per component
    cov = {
        "full": lambda: gm.covariances_,
        "tied": lambda: np.stack([gm.covariances_] * 2),
        "diag": lambda: np.stack([np.diag(c) for c in gm.covariances_]),
        "spherical": lambda: np.stack([c * np.eye(2) for c in gm.covariances_]),
    }[kind]()
    for k in range(2):
        sd = np.sqrt(np.linalg.eigvalsh(cov[k]))[::-1]
        for n_sigma, e in zip((1, 2), ells[2 * k: 2 * k + 2]):
            assert np.allclose(e.center, gm.means_[k])
            assert np.allclose([e.width, e.height], 2 * n_sigma * sd)


def test_cluster_plot_projects_on_principal_components(tmp_path):
    from sklearn.decomposition import PCA

    X = _blobs(5, seed=2)
    gm = GaussianMixture(2, random_state=0).fit(X)
    fig = plot_clusters(gm, X, path=tmp_path / "p.png")
    _png_ok(tmp_path / "p.png")
    assert fig.axes[0].get_xlabel().startswith("PC1")
    pca = PCA(2).fit(X)
    expected = pca.transform(gm.means_)
    centers = np.array([e.center for e in _ellipses(fig)[::2]])
    # Principal axes are defined up to sign.
    assert np.allclose(np.abs(centers), np.abs(expected), atol=1e-8)


def test_cluster_plot_one_feature_and_subsampling(tmp_path):
    rng = np.random.default_rng(3)
    X = np.r_[rng.normal(0, 1, (4000, 1)), rng.normal(5, 1, (4000, 1))]
    gm = GaussianMixture(2, random_state=0).fit(X)
    fig = plot_clusters(gm, X, path=tmp_path / "h.png", max_points=1000)
    _png_ok(tmp_path / "h.png")
    assert len([ln for ln in fig.axes[0].get_lines() if isinstance(ln, Line2D)]) == 2


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install 'gaussmix\[plot\]'"):
        plot_criterion({"n_components": [1], "covariance_type": ["full"], "bic": [1.0]})
