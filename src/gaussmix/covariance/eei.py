"""``EEI``: one diagonal covariance for all components, ``Sigma_k = lambda B``."""

from __future__ import annotations

import torch

from .conjugate import diagonal_shrinkage, diagonals, indicator
from .constrained import Constrained, diag_matrix, scatter_sums, total, zero_padding
from .diagonal_form import DiagonalFullForm


class EEI(DiagonalFullForm, Constrained):
    """Equal volume and shape, axis-aligned: ``Sigma = diag(sum_k W_k) / n``."""

    name = "EEI"
    supports_prior = True

    def n_cov_parameters(self, n_components, n_features):
        return n_features

    def full_form(self, nk, scatter, start=None):
        pooled = scatter_sums(nk, scatter).sum(-3, keepdim=True) / total(nk)
        cov = diag_matrix(torch.diagonal(pooled, dim1=-2, dim2=-1))
        return zero_padding(nk, cov.expand_as(scatter))

    def map_shrinks_means(self, variant):
        return False  # mclust's mseeip and meeeip leave the means unshrunk

    def _map_covariances(self, nk, w, diff, prior, variant):
        # B = Lambda + sum_k diag(W_k + M_k); Sigma = lambda A = B / den, with
        # den = nu + n + 2 + G [k>0] (mstep) or nu + n + 1 + [k>0] (me).
        k, d = diff.shape
        b = prior.scale + diagonals(w).sum(0) + diagonal_shrinkage(nk, diff, prior).sum(0)
        return diag_matrix(b / map_volume_denominator(nk, prior, variant)).expand(k, d, d).clone()


def map_volume_denominator(nk, prior, variant):
    """The denominator of the common volume of EEI and EVI under the prior."""
    flag = indicator(prior)
    if variant == "mstep":
        return prior.dof + nk.sum() + 2 + nk.shape[0] * flag
    return prior.dof + nk.sum() + 1 + flag
