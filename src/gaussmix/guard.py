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

__all__ = ["VARIANCE_RTOL", "DataScale", "DegenerateFitWarning", "RegularizationWarning",
           "collapsed_components", "min_component_count", "warn_if_reg_covar_dominates"]

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


class DataScale:
    """What the collapse test needs of the data, computed once for every fit
    examined on the same data (model selection examines dozens).

    Parameters
    ----------
    X : array-like or Tensor of shape (n_samples, n_features)

    Attributes
    ----------
    n_samples, n_features : int
    """

    def __init__(self, X):
        Xn = (X.detach().double().cpu().numpy() if isinstance(X, torch.Tensor)
              else np.asarray(X, dtype=np.float64))
        self.n_samples, self.n_features = Xn.shape
        self._var, varying = _feature_scale(Xn)
        self._idx = np.flatnonzero(varying)
        # Every feature varies (the usual case): no sub-matrices to gather.
        self._every = self._idx.size == self.n_features
        self._cache = {}

    def _outer(self, per_feature: bool) -> np.ndarray:
        """``s s^T`` of the varying features' standard deviations: per feature,
        or one common scale (the mean variance)."""
        key = ("s", per_feature)
        if key not in self._cache:
            v = self._var[self._idx]
            s = np.sqrt(v if per_feature else np.full(self._idx.size, v.mean()))
            self._cache[key] = s[:, None] * s[None, :]
        return self._cache[key]

    def _net(self, reg: np.ndarray, per_feature: bool) -> np.ndarray:
        """``diag(reg)`` on the varying features (one common value, the mean,
        without per-feature scaling); cached per regularisation."""
        key = ("r", per_feature, reg.tobytes())
        if key not in self._cache:
            net = reg[self._idx] if per_feature else np.full(self._idx.size, reg.mean())
            self._cache[key] = np.diag(net)
        return self._cache[key]


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
    X : array-like or Tensor of shape (n_samples, n_features), or DataScale
        The data it was fitted on (a :class:`DataScale` of them, to test many
        fits on the same data).
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
    data = X if isinstance(X, DataScale) else DataScale(X)
    params = estimator._params
    n, d = data.n_samples, data.n_features
    reg_arg = estimator.reg_covar if reg_covar is None else reg_covar
    reg = np.asarray(reg_arg, dtype=np.float64)
    if reg.shape != (d,):
        reg = np.broadcast_to(reg, (d,))
    strategy = params.cov
    need = strategy.min_count(d)
    # Python floats: the same IEEE products as NumPy's, without its per-call cost.
    too_few = [k for k, w in enumerate(params.weights.detach().double().cpu().tolist())
               if not w * n >= need]

    pinned: list[int] = []
    if data._idx.size:
        # Variances are measured against the data's own: per feature for a
        # model closed under per-feature scaling, else on one common scale
        # (the mean variance); the test is the smallest eigenvalue of each
        # standardised covariance net of the regularisation.
        per_feature = strategy.per_feature_scaling
        cov = params.get_covariances().detach().double().cpu()
        mats = strategy.matrices(cov, d).numpy()
        if not data._every:
            idx = data._idx
            mats = mats[:, idx[:, None], idx[None, :]]
        std = (mats - data._net(reg, per_feature)) / data._outer(per_feature)
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(std).all(axis=(1, 2))
        if finite.all():
            low = np.linalg.eigvalsh(std).min(axis=1)
        else:
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
