"""Reference E-step: one component at a time, centred first, as written on paper.

These functions are slow and simple on purpose.  They are what the fast
path in :mod:`gaussmix.covariance` and :mod:`gaussmix.em` is tested against
(``tests/test_kernels.py`` on the CPU, ``scripts/check_kernels_gpu.py`` on a
GPU): every distance is ``||(x - mu_k) U_k||^2`` with the data centred on the
component's mean before any product, and every second moment is a plain
weighted sum.
"""

from __future__ import annotations

import math

import torch

__all__ = ["mahalanobis", "log_gaussian", "second_moment", "chunk_stats", "random_params"]


def _factor(covariance_type: str, prec_chol: torch.Tensor, k: int, d: int) -> torch.Tensor:
    """Component k's precision Cholesky factor as a (D, D) matrix."""
    dtype, device = prec_chol.dtype, prec_chol.device
    if covariance_type == "full":
        return prec_chol[k]
    if covariance_type == "tied":
        return prec_chol
    if covariance_type == "diag":
        return torch.diag(prec_chol[k])
    if covariance_type == "spherical":
        return prec_chol[k] * torch.eye(d, dtype=dtype, device=device)
    raise ValueError(f"Unknown covariance_type {covariance_type!r}.")


def mahalanobis(covariance_type, xc, means_c, prec_chol):
    """Squared Mahalanobis distances (B, K), one component at a time."""
    k, d = means_c.shape
    cols = []
    for j in range(k):
        y = (xc - means_c[j]) @ _factor(covariance_type, prec_chol, j, d)
        cols.append((y * y).sum(1))
    return torch.stack(cols, 1)


def log_gaussian(covariance_type, xc, means_c, prec_chol):
    """Log densities (B, K) from the log-determinant of each factor."""
    k, d = means_c.shape
    log_det = torch.stack(
        [torch.log(torch.diagonal(_factor(covariance_type, prec_chol, j, d))).sum() for j in range(k)]
    )
    maha = mahalanobis(covariance_type, xc, means_c, prec_chol)
    return -0.5 * (d * math.log(2.0 * math.pi) + maha) + log_det


def second_moment(covariance_type, xc, resp):
    """Second-moment statistic in the covariance type's shape."""
    k = resp.shape[1]
    if covariance_type == "full":
        return torch.stack([(resp[:, j : j + 1] * xc).T @ xc for j in range(k)])
    if covariance_type == "tied":
        return sum((resp[:, j : j + 1] * xc).T @ xc for j in range(k))
    if covariance_type in ("diag", "spherical"):
        return torch.stack([(resp[:, j : j + 1] * xc * xc).sum(0) for j in range(k)])
    raise ValueError(f"Unknown covariance_type {covariance_type!r}.")


def chunk_stats(X, params, sample_weight=None, centres=None) -> dict:
    """Statistics of one chunk as a dict of float64 tensors.

    Keys: ``nk``, ``s1``, ``s2``, ``log_likelihood``, ``weight``, ``count``
    (the fields of :class:`gaussmix.stats.SuffStats`), and ``log_resp``.
    Moments are taken around the mixture mean, or, when ``centres`` (K, D)
    is given, around each component's own centre (one component at a time).
    """
    shift = params.weights @ params.means
    xc = X - shift
    means_c = params.means - shift
    kind = params.covariance_type
    wlp = log_gaussian(kind, xc, means_c, params.precisions_cholesky) + torch.log(params.weights)
    log_prob_norm = torch.logsumexp(wlp, dim=1)
    log_resp = wlp - log_prob_norm.unsqueeze(1)
    resp = torch.exp(log_resp)
    w = torch.ones(X.shape[0], dtype=X.dtype, device=X.device) if sample_weight is None else sample_weight
    resp = resp * w.unsqueeze(1)
    if centres is None:
        s1, s2 = resp.T @ xc, second_moment(kind, xc, resp)
    else:
        parts = [(X - centres[j].to(X.dtype), resp[:, j : j + 1]) for j in range(resp.shape[1])]
        s1 = torch.cat([r.T @ z for z, r in parts])
        s2 = torch.cat([second_moment(kind, z, r) for z, r in parts])
    return dict(
        nk=resp.sum(0).double(),
        s1=s1.double(),
        s2=s2.double(),
        log_likelihood=(log_prob_norm.double() * w.double()).sum(),
        weight=w.double().sum(),
        count=torch.tensor(float(X.shape[0]), dtype=torch.float64),
        log_resp=log_resp,
    )


def random_params(covariance_type, n_components, n_features, gen, spread=3.0):
    """Random well-conditioned float64 parameters, for checking the fast path.

    Means are ``spread`` times standard normal; covariances are
    ``A A^T / D + I / 2`` (full, tied) or uniform in [0.5, 1.5) (diag,
    spherical); weights are positive and sum to one.

    Parameters
    ----------
    covariance_type : str
    n_components, n_features : int
    gen : torch.Generator
    spread : float

    Returns
    -------
    GMMParams
    """
    from ..covariance import get_covariance_type
    from ..params import GMMParams

    k, d = n_components, n_features
    o = dict(dtype=torch.float64)
    weights = torch.rand(k, generator=gen, **o) + 0.1
    weights /= weights.sum()
    means = spread * torch.randn(k, d, generator=gen, **o)
    if covariance_type == "full":
        a = torch.randn(k, d, d, generator=gen, **o)
        cov = a @ a.transpose(1, 2) / d + 0.5 * torch.eye(d, **o)
    elif covariance_type == "tied":
        a = torch.randn(d, d, generator=gen, **o)
        cov = a @ a.T / d + 0.5 * torch.eye(d, **o)
    elif covariance_type == "diag":
        cov = torch.rand(k, d, generator=gen, **o) + 0.5
    else:
        cov = torch.rand(k, generator=gen, **o) + 0.5
    strat = get_covariance_type(covariance_type)
    return GMMParams(weights, means, strat.precisions_cholesky(cov), covariance_type, cov)
