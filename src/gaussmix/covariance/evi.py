"""``EVI``: axis-aligned covariances of one volume, ``Sigma_k = lambda B_k``."""

from __future__ import annotations

import torch

from .conjugate import diagonal_shrinkage, diagonals
from .constrained import Constrained, diag_matrix, geometric_mean, scatter_sums, zero_padding
from .eei import map_volume_denominator
from .diagonal_form import DiagonalFullForm


class EVI(DiagonalFullForm, Constrained):
    """Equal volume, variable shape, axis-aligned.

    With ``w_k = diag(W_k)``: ``B_k = w_k / |w_k|^(1/D)`` and ``lambda =
    sum_k |w_k|^(1/D) / n`` (Celeux & Govaert 1995), a closed form.
    """

    name = "EVI"
    supports_prior = True

    def n_cov_parameters(self, n_components, n_features):
        return 1 + n_components * (n_features - 1)

    def full_form(self, nk, scatter, start=None):
        w = torch.diagonal(scatter_sums(nk, scatter), dim1=-2, dim2=-1)
        root = torch.exp(torch.log(w).mean(-1))  # |diag W_k|^(1/D); 0 on padding
        lam = root.sum(-1, keepdim=True) / nk.sum(-1, keepdim=True)
        return zero_padding(nk, diag_matrix(w * (lam / root).unsqueeze(-1)))

    def _map_covariances(self, nk, w, diff, prior, variant):
        # b_k = Lambda + diag(W_k + M_k), lambda = sum_k |b_k|^(1/D) / den (as EEI's).
        b = prior.scale + diagonals(w) + diagonal_shrinkage(nk, diff, prior)
        root = geometric_mean(b)
        lam = root.sum() / map_volume_denominator(nk, prior, variant)
        return diag_matrix(b * (lam / root)[:, None])
