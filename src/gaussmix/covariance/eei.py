"""``EEI``: one diagonal covariance for all components, ``Sigma_k = lambda B``."""

from __future__ import annotations

import torch

from .constrained import Constrained, diag_matrix, scatter_sums, total, zero_padding


class EEI(Constrained):
    """Equal volume and shape, axis-aligned: ``Sigma = diag(sum_k W_k) / n``."""

    name = "EEI"

    def n_cov_parameters(self, n_components, n_features):
        return n_features

    def full_form(self, nk, scatter, start=None):
        pooled = scatter_sums(nk, scatter).sum(-3, keepdim=True) / total(nk)
        cov = diag_matrix(torch.diagonal(pooled, dim1=-2, dim2=-1))
        return zero_padding(nk, cov.expand_as(scatter))
