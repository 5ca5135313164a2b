"""``EVI``: axis-aligned covariances of one volume, ``Sigma_k = lambda B_k``."""

from __future__ import annotations

import torch

from .constrained import Constrained, diag_matrix, scatter_sums, zero_padding


class EVI(Constrained):
    """Equal volume, variable shape, axis-aligned.

    With ``w_k = diag(W_k)``: ``B_k = w_k / |w_k|^(1/D)`` and ``lambda =
    sum_k |w_k|^(1/D) / n`` (Celeux & Govaert 1995), a closed form.
    """

    name = "EVI"

    def n_cov_parameters(self, n_components, n_features):
        return 1 + n_components * (n_features - 1)

    def full_form(self, nk, scatter, start=None):
        w = torch.diagonal(scatter_sums(nk, scatter), dim1=-2, dim2=-1)
        root = torch.exp(torch.log(w).mean(-1))  # |diag W_k|^(1/D); 0 on padding
        lam = root.sum(-1, keepdim=True) / nk.sum(-1, keepdim=True)
        return zero_padding(nk, diag_matrix(w * (lam / root).unsqueeze(-1)))
