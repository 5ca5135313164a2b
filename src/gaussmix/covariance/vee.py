"""``VEE``: one shape and orientation, variable volumes, ``Sigma_k = lambda_k C`` with ``|C| = 1``."""

from __future__ import annotations

import math

import torch

from .constrained import (
    INNER_MAX_ITER,
    INNER_TOL,
    Constrained,
    det_root,
    inner_cap_reached,
    on_real,
    relative_change,
    scatter_sums,
    zero_padding,
)


class VEE(Constrained):
    """Variable volume, equal shape and orientation.

    Alternates (mclust's ``msvee``) from ``lambda = 1``: ``C = sum_k W_k /
    lambda_k`` rescaled to determinant 1, then ``lambda_k = tr(W_k C^-1) / (D
    n_k)``, until the relative change of ``D sum n_k + D sum n_k log
    lambda_k`` (minus twice the log-likelihood, up to constants) is at most
    :data:`~gaussmix.covariance.constrained.INNER_TOL`.
    """

    name = "VEE"

    def n_cov_parameters(self, n_components, n_features):
        d = n_features
        return n_components + d - 1 + d * (d - 1) // 2

    def full_form(self, nk, scatter, start=None):
        d = scatter.shape[-1]
        w = scatter_sums(nk, scatter)
        lam = torch.ones_like(nk)
        previous = math.inf
        base = d * nk.sum(-1)
        for _ in range(INNER_MAX_ITER):
            common = (w / lam[..., None, None]).sum(-3)  # (G, D, D)
            common = common / det_root(common)[..., None, None]
            # A failed factorisation (a degenerate scatter) leaves NaN
            # covariances: a failed M-step, never an exception.
            chol, info = torch.linalg.cholesky_ex(common)
            chol = torch.where((info > 0)[:, None, None], torch.nan, chol)
            inverse = torch.cholesky_inverse(chol)
            lam = on_real(nk, torch.einsum("gkij,gji->gk", w, inverse) / (d * nk), 1.0)
            target = base + d * (nk * torch.log(lam)).sum(-1)
            err = relative_change(previous, target)
            previous = target
            if err <= INNER_TOL:
                break
        else:
            inner_cap_reached(self.name, err)
        return zero_padding(nk, lam[..., None, None] * common.unsqueeze(-3))
