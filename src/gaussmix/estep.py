"""The seed problem's E-step: responsibilities of a full-covariance mixture."""

from __future__ import annotations

import numpy as np
import torch

from ._validation import check_squares_representable
from .covariance import get_covariance_type
from .em import e_step
from .params import GMMParams

__all__ = ["gmm_e_step"]


def _array(value, name: str, ndim: int) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"'{name}' must be a numeric array-like.") from None
    if a.ndim != ndim:
        raise ValueError(f"'{name}' must be {ndim}-dimensional, got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"'{name}' contains NaN or infinity; pass finite values.")
    return a


def gmm_e_step(X, weights, means, covariances) -> np.ndarray:
    """Responsibilities of a Gaussian mixture with full covariances.

    ``gamma[i, k] = w_k N(x_i | mu_k, Sigma_k) / sum_j w_j N(x_i | mu_j, Sigma_j)``,
    computed in float64 and in log space through the Cholesky factor of each
    precision, so a point far from every mean still gets a valid row.

    Parameters
    ----------
    X : array-like of shape (N, D)
        Data points.
    weights : array-like of shape (K,)
        Mixing weights: non-negative, summing to 1 (within 1e-6).
    means : array-like of shape (K, D)
        Component means.
    covariances : array-like of shape (K, D, D)
        Symmetric positive-definite covariance matrices.

    Returns
    -------
    np.ndarray of shape (N, K)
        Each row is a probability distribution over the components.

    Raises
    ------
    ValueError
        On a shape mismatch, NaN or infinity, values whose squares overflow
        float64 (beyond 1.3e154), negative weights, weights not
        summing to 1, or a covariance that is not symmetric positive definite;
        the message names the argument.

    Examples
    --------
    >>> import numpy as np
    >>> r = gmm_e_step([[0, 0], [5, 5]], [0.5, 0.5], [[0, 0], [5, 5]], [np.eye(2)] * 2)
    >>> np.round(r, 6)
    array([[1., 0.],
           [0., 1.]])
    """
    X = _array(X, "X", 2)
    check_squares_representable(torch.from_numpy(X), "X")
    weights = _array(weights, "weights", 1)
    means = _array(means, "means", 2)
    covariances = _array(covariances, "covariances", 3)
    n, d = X.shape
    k = weights.shape[0]
    if k < 1:
        raise ValueError("'weights' must hold at least one component.")
    if means.shape != (k, d):
        raise ValueError(
            f"'means' must have shape (K, D) = ({k}, {d}) to match 'weights' and 'X', got {means.shape}."
        )
    if covariances.shape != (k, d, d):
        raise ValueError(
            f"'covariances' must have shape (K, D, D) = ({k}, {d}, {d}), got {covariances.shape}."
        )
    if np.any(weights < 0):
        raise ValueError("'weights' must be non-negative.")
    if abs(weights.sum() - 1.0) > 1e-6:
        raise ValueError(f"'weights' must sum to 1 (within 1e-6), got {weights.sum():.8g}.")
    full = get_covariance_type("full")
    cov_t = torch.from_numpy(covariances)
    full.check_spd(cov_t, "covariances")
    params = GMMParams(
        weights=torch.from_numpy(weights),
        means=torch.from_numpy(means),
        precisions_cholesky=full.precisions_cholesky(cov_t),
        covariance_type="full",
    )
    if n == 0:
        return np.zeros((0, k))
    # A zero weight gives log(0) = -inf, and its column exp(-inf) = 0, as it should.
    with np.errstate(divide="ignore"):
        log_resp, _ = e_step(torch.from_numpy(X), params)
    return torch.exp(log_resp).numpy()
