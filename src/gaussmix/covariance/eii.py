"""``EII``: one spherical covariance for all components, ``Sigma_k = lambda I``."""

from __future__ import annotations

import torch

from .constrained import Constrained, scatter_sums, zero_padding


class EII(Constrained):
    """Equal volume, spherical: ``lambda = tr(sum_k W_k) / (n D)``."""

    name = "EII"
    per_feature_scaling = False

    def n_cov_parameters(self, n_components, n_features):
        return 1

    def full_form(self, nk, scatter, start=None):
        d = scatter.shape[-1]
        w = scatter_sums(nk, scatter)
        lam = torch.diagonal(w, dim1=-2, dim2=-1).sum((-1, -2)) / (nk.sum(-1) * d)
        eye = torch.eye(d, dtype=scatter.dtype, device=scatter.device)
        return zero_padding(nk, lam[:, None, None, None] * eye.expand_as(scatter))
