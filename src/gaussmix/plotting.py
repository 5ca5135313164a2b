"""Figures: the model-selection curve and the fitted clusters.

matplotlib is an optional dependency (``pip install 'gaussmix[plot]'``).  The
figures are built with :class:`matplotlib.figure.Figure` directly, without
pyplot, so no global state or interactive backend is touched.
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_criterion", "plot_clusters", "PLOT_INSTALL_HINT"]

PLOT_INSTALL_HINT = "pip install 'gaussmix[plot]'"

_TYPE_STYLE = {
    "full": ("tab:blue", "o"),
    "tied": ("tab:orange", "s"),
    "diag": ("tab:green", "^"),
    "spherical": ("tab:red", "D"),
}


def _require_matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f"Plotting needs matplotlib: {PLOT_INSTALL_HINT}") from None
    return Figure


def _finish(fig, path, dpi):
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def plot_criterion(selection, criterion=None, path=None, dpi=100):
    """Criterion against the number of components, one line per covariance type.

    Parameters
    ----------
    selection : ModelSelection or dict
        The result of :func:`gaussmix.select_model`, or its ``results_``.
    criterion : {"bic", "aic", "icl"}, optional
        Default: the criterion the selection used (``"bic"`` for a dict).
    path : str or path-like, optional
        Where to save the figure (PNG by extension).
    dpi : int, default=100

    Returns
    -------
    matplotlib.figure.Figure
        Excluded candidates are drawn as crosses; the selected one as a star.
    """
    Figure = _require_matplotlib()
    results = getattr(selection, "results_", selection)
    if criterion is None:
        criterion = getattr(selection, "criterion", "bic")
    if criterion not in ("bic", "aic", "icl"):
        raise ValueError(f"Invalid criterion {criterion!r}: choose 'bic', 'aic' or 'icl'.")
    ks = np.asarray(results["n_components"])
    types = list(results["covariance_type"])
    vals = np.asarray(results[criterion], dtype=float)
    guard = list(results.get("guard", ["ok"] * len(ks)))
    selected = list(results.get("selected", [False] * len(ks)))
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for t in dict.fromkeys(types):
        color, marker = _TYPE_STYLE.get(t, ("black", "o"))
        idx = [i for i, u in enumerate(types) if u == t]
        idx.sort(key=lambda i: ks[i])
        ok = [i for i in idx if guard[i] != "excluded"]
        ax.plot(ks[ok], vals[ok], marker=marker, color=color, label=t, ms=5, lw=1.5)
        bad = [i for i in idx if guard[i] == "excluded" and np.isfinite(vals[i])]
        if bad:
            ax.plot(ks[bad], vals[bad], ls="none", marker="x", color=color, ms=7)
    if any(selected):
        b = selected.index(True)
        ax.plot([ks[b]], [vals[b]], marker="*", ms=18, color="gold", mec="black", ls="none",
                label=f"chosen: K={ks[b]}, {types[b]}", zorder=5)
    if any(g == "excluded" for g in guard):
        ax.plot([], [], ls="none", marker="x", color="gray", label="excluded (collapsed)")
    ax.set_xlabel("number of components K")
    ax.set_ylabel(f"{criterion.upper()} (lower is better)")
    ax.set_xticks(sorted(set(int(k) for k in ks)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Model selection by {criterion.upper()}")
    fig.tight_layout()
    return _finish(fig, path, dpi)


def _full_covariances(model) -> np.ndarray:
    """(K, D, D) covariances whatever the covariance type."""
    p = model.params_
    k, d = p.n_components, p.n_features
    mats = p.cov.matrices(p.get_covariances().detach().double().cpu(), d)
    return np.broadcast_to(mats.numpy(), (k, d, d)).copy()


def _ellipse(ax, mean, cov, n_sigma, color):
    from matplotlib.patches import Ellipse

    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None)
    angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
    w, h = 2.0 * n_sigma * np.sqrt(vals[::-1])
    ax.add_patch(Ellipse(mean, w, h, angle=angle, fill=False, color=color,
                         lw=1.6 if n_sigma == 1 else 1.0, ls="-" if n_sigma == 1 else "--"))


def plot_clusters(model, X, path=None, dpi=100, max_points=5000, random_state=0):
    """Points coloured by cluster, with each component's 1- and 2-sigma ellipses.

    Two-feature data are drawn as they are; more features are projected on
    the data's first two principal components (the components' means and
    covariances are projected with them); one feature gives a histogram with
    the component densities.

    Parameters
    ----------
    model : GaussianMixture
        A fitted mixture.
    X : array-like of shape (n_samples, n_features)
    path : str or path-like, optional
        Where to save the figure.
    dpi : int, default=100
    max_points : int, default=5000
        At most this many points are drawn (a random subset), to keep files small.
    random_state : int, default=0
        Seed of that subset.

    Returns
    -------
    matplotlib.figure.Figure
    """
    Figure = _require_matplotlib()
    import torch

    X = X.detach().double().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X, dtype=np.float64)
    labels = np.asarray(model.predict(X))
    p = model.params_
    means = p.means.detach().double().cpu().numpy()
    covs = _full_covariances(model)
    if X.shape[0] > max_points:
        keep = np.random.default_rng(random_state).choice(X.shape[0], max_points, replace=False)
        X, labels = X[keep], labels[keep]
    fig = Figure(figsize=(6.0, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    colors = [f"C{k % 10}" for k in range(p.n_components)]
    d = X.shape[1]
    if d == 1:
        ax.hist(X[:, 0], bins=60, density=True, color="0.8")
        grid = np.linspace(X.min(), X.max(), 400)
        w = p.weights.detach().double().cpu().numpy()
        for k in range(p.n_components):
            s2 = covs[k, 0, 0]
            dens = w[k] * np.exp(-0.5 * (grid - means[k, 0]) ** 2 / s2) / np.sqrt(2 * np.pi * s2)
            ax.plot(grid, dens, color=colors[k], label=f"component {k}")
        ax.set_xlabel("x1")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    else:
        if d == 2:
            proj = np.eye(2)
            center = np.zeros(2)
            xlabel, ylabel = "x1", "x2"
        else:
            center = X.mean(axis=0)
            _, s, vt = np.linalg.svd(X - center, full_matrices=False)
            proj = vt[:2].T
            share = s**2 / np.sum(s**2)
            xlabel = f"PC1 ({100 * share[0]:.0f}% of variance)"
            ylabel = f"PC2 ({100 * share[1]:.0f}% of variance)"
        Y = (X - center) @ proj
        ax.scatter(Y[:, 0], Y[:, 1], c=[colors[i] for i in labels], s=6, alpha=0.6, lw=0)
        for k in range(p.n_components):
            m = (means[k] - center) @ proj
            c = proj.T @ covs[k] @ proj
            _ellipse(ax, m, c, 1, colors[k])
            _ellipse(ax, m, c, 2, colors[k])
            ax.plot(*m, marker="+", color="black", ms=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(
        f"{p.n_components} component(s), {p.covariance_type} covariance "
        f"(ellipses: 1 and 2 sigma)"
    )
    fig.tight_layout()
    return _finish(fig, path, dpi)
