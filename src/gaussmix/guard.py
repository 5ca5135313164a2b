"""The degenerate-fit guard of model selection: components that collapsed.

A component that sits on repeated values (or on too few points) has a
variance pinned at the regularisation floor, which makes its likelihood, and
so BIC, look excellent.  Model selection re-seeds, excludes or flags such fits
(:func:`gaussmix.select_model`'s ``degenerate``); see ``docs/SELECTION.md``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .covariance import get_covariance_type

__all__ = ["VARIANCE_RTOL", "DegenerateFitWarning", "RegularizationWarning", "collapsed_components",
           "min_component_count", "warn_if_reg_covar_dominates"]

# Relative size, against the data's own variance along the same direction, below
# which a component's variance (net of reg_covar) counts as collapsed.  A
# component that sits on repeated values has an empirical variance of zero up to
# rounding (~1e-16 relative); a genuine cluster would need a standard deviation
# a thousand times smaller than the data's to be caught.
VARIANCE_RTOL = 1e-6


class DegenerateFitWarning(UserWarning):
    """A candidate's fit had collapsed components and was re-seeded, excluded
    or flagged during model selection."""


class RegularizationWarning(UserWarning):
    """``reg_covar`` is larger than the data's variance: it, not the data, set
    every fitted covariance."""


def warn_if_reg_covar_dominates(params, reg_covar: float) -> None:
    """Warn when every fitted variance is ``reg_covar`` to within 1 %.

    Data whose variance is far below ``reg_covar`` (``X * 1e-8`` with the
    default 1e-6) give components blurred to ``reg_covar * I``: a valid but
    uninformative model.
    """
    if not reg_covar > 0:
        return
    cov = params.cov
    scale = cov._diagonal_scale(params.get_covariances().double())
    if bool((scale < 1.01 * reg_covar).all()):
        warnings.warn(
            f"reg_covar={reg_covar:g} dominates the fitted covariances: the data's variance is far "
            f"below it, so every component is blurred to about reg_covar * I. Scale the data "
            f"(e.g. sklearn.preprocessing.StandardScaler) or lower reg_covar below the data's "
            f"variance (e.g. 1e-6 times it).",
            RegularizationWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------- degeneracy guard
def min_component_count(covariance_type: str, n_features: int) -> int:
    """Smallest effective count for which a component's covariance is defined.

    A full covariance estimated from fewer than ``D + 1`` points is singular;
    a variance needs two points; the tied covariance is pooled over all
    components, so each component only needs one point for its mean.
    """
    return get_covariance_type(covariance_type).min_count(n_features)


def _feature_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature variance and a mask of the non-constant features.

    A feature whose spread is below 1e-7 of its magnitude carries no
    information that float32 could even represent; it is left out of the
    collapse test (every component would look collapsed along it).
    """
    var = X.var(axis=0)
    mag = np.abs(X).max(axis=0)
    varying = var > (1e-7 * mag) ** 2
    varying &= var > 0
    return var, varying


def collapsed_components(estimator, X, reg_covar=None) -> dict:
    """Find components that collapsed during the fit.

    A component is collapsed when

    * its effective count ``n * weight_k`` is below
      :func:`min_component_count` (too few points to define its covariance), or
    * its covariance, net of ``reg_covar``, is pinned at the regularisation
      floor: along some direction its variance is at most ``VARIANCE_RTOL``
      times the data's variance along that direction (features are
      standardised by the data's standard deviation; full and tied
      covariances are tested on their smallest eigenvalue).

    Parameters
    ----------
    estimator : GaussianMixture
        A fitted mixture.
    X : array-like or Tensor of shape (n_samples, n_features)
        The data it was fitted on.
    reg_covar : float or array of shape (n_features,), optional
        Regularisation used in the fit (default: the estimator's); one value
        per feature when the fit regularised relative to each feature's
        scale (:func:`gaussmix.select_model`).

    Returns
    -------
    dict
        ``components`` (sorted list of collapsed component indices),
        ``too_few`` and ``pinned`` (the indices caught by each rule) and
        ``detail`` (a short human-readable reason, empty when none).
    """
    params = estimator._params
    reg_arg = estimator.reg_covar if reg_covar is None else reg_covar
    Xn = X.detach().double().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X, dtype=np.float64)
    n, d = Xn.shape
    reg = np.broadcast_to(np.asarray(reg_arg, dtype=np.float64), (d,))
    weights = params.weights.detach().double().cpu().numpy()
    cov = params.get_covariances().detach().double().cpu().numpy()
    counts = weights * n
    need = params.cov.min_count(d)
    too_few = [int(k) for k in np.flatnonzero(~(counts >= need))]

    var, varying = _feature_scale(Xn)
    pinned: list[int] = []
    if varying.any():
        idx = np.flatnonzero(varying)
        strategy = params.cov
        # Variances are measured against the data's own: per feature for a
        # model closed under per-feature scaling, else on one common scale
        # (the mean variance); the test is the smallest eigenvalue of each
        # standardised covariance net of the regularisation.
        s = np.sqrt(var[idx] if strategy.per_feature_scaling
                    else np.full(idx.size, var[idx].mean()))
        net = reg[idx] if strategy.per_feature_scaling else np.full(idx.size, reg.mean())
        mats = strategy.matrices(torch.as_tensor(cov), d).numpy()
        sub = mats[:, idx[:, None], idx[None, :]] - np.diag(net)
        std = sub / (s[:, None] * s[None, :])
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(std).all(axis=(1, 2))
        low = np.full(std.shape[0], -np.inf)
        if finite.any():
            low[finite] = np.linalg.eigvalsh(std[finite]).min(axis=1)
        bad = ~(low > VARIANCE_RTOL)
        if strategy.shared:
            pinned = list(range(params.n_components)) if bad[0] else []
        else:
            pinned = [int(k) for k in np.flatnonzero(bad)]
    components = sorted(set(too_few) | set(pinned))
    parts = []
    if too_few:
        parts.append(
            f"component(s) {too_few} hold fewer than {need} effective points"
        )
    if pinned:
        shown = f"{reg[0]:g}" if np.all(reg == reg[0]) else f"{reg.min():g}..{reg.max():g}"
        parts.append(f"component(s) {pinned} have a variance pinned at reg_covar={shown}")
    return {
        "components": components,
        "too_few": too_few,
        "pinned": pinned,
        "detail": "; ".join(parts),
    }


