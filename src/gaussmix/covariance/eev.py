"""``EEV``: one volume and one shape, variable orientations, ``Sigma_k = lambda D_k A D_k^T``."""

from __future__ import annotations

from .constrained import Constrained, eig_desc, scatter_sums, total, zero_padding


class EEV(Constrained):
    """Equal volume and shape, variable orientation.

    With the eigen-decompositions ``W_k = L_k Omega_k L_k^T`` (eigenvalues in
    decreasing order): ``D_k = L_k`` and ``lambda A = sum_k Omega_k / n``
    (Celeux & Govaert 1995), a closed form.
    """

    name = "EEV"
    per_feature_scaling = False

    def n_cov_parameters(self, n_components, n_features):
        d = n_features
        return d + n_components * d * (d - 1) // 2

    def full_form(self, nk, scatter, start=None):
        vals, vecs = eig_desc(scatter_sums(nk, scatter))
        shape = vals.sum(-2, keepdim=True) / total(nk).squeeze(-1)  # lambda A, (G, 1, D)
        cov = (vecs * shape.unsqueeze(-2)) @ vecs.transpose(-1, -2)
        return zero_padding(nk, cov)
