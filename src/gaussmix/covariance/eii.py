"""``EII``: one spherical covariance for all components, ``Sigma_k = lambda I``."""

from __future__ import annotations

import torch

from .conjugate import diagonal_shrinkage, diagonals, indicator
from .constrained import Constrained, scatter_sums, zero_padding
from .diagonal_form import DiagonalFullForm


class EII(DiagonalFullForm, Constrained):
    """Equal volume, spherical: ``lambda = tr(sum_k W_k) / (n D)``."""

    name = "EII"
    per_feature_scaling = False
    supports_prior = True

    def n_cov_parameters(self, n_components, n_features):
        return 1

    def full_form(self, nk, scatter, start=None):
        d = scatter.shape[-1]
        w = scatter_sums(nk, scatter)
        lam = torch.diagonal(w, dim1=-2, dim2=-1).sum((-1, -2)) / (nk.sum(-1) * d)
        eye = torch.eye(d, dtype=scatter.dtype, device=scatter.device)
        return zero_padding(nk, lam[:, None, None, None] * eye.expand_as(scatter))

    def _map_covariances(self, nk, w, diff, prior, variant):
        # mclust adds no Lambda here.  meeiip: sum_k [tr W_k + c_k |d_k|^2] /
        # (nu + (n + G) D + 2).  mseeiip takes the residuals about the shrunk
        # means (n_k |xbar_k - mu_k|^2 more) over nu + n D + 2 + G D [k>0].
        k, d = diff.shape
        n = nk.sum()
        num = diagonals(w).sum() + diagonal_shrinkage(nk, diff, prior).sum()
        if variant == "mstep":
            moved = (prior.shrinkage / (nk + prior.shrinkage)) ** 2 * nk
            num = num + (moved[:, None] * diff * diff).sum()
            den = prior.dof + d * n + 2 + k * d * indicator(prior)
        else:
            den = prior.dof + (n + k) * d + 2
        eye = torch.eye(d, dtype=w.dtype, device=w.device)
        return (num / den * eye).expand(k, d, d).clone()
