"""``EEV``: one volume and one shape, variable orientations, ``Sigma_k = lambda D_k A D_k^T``."""

from __future__ import annotations

from .conjugate import full_shrinkage, indicator
from .constrained import Constrained, eig_desc, scatter_sums, total, zero_padding


class EEV(Constrained):
    """Equal volume and shape, variable orientation.

    With the eigen-decompositions ``W_k = L_k Omega_k L_k^T`` (eigenvalues in
    decreasing order): ``D_k = L_k`` and ``lambda A = sum_k Omega_k / n``
    (Celeux & Govaert 1995), a closed form.
    """

    name = "EEV"
    per_feature_scaling = False
    supports_prior = True

    def n_cov_parameters(self, n_components, n_features):
        d = n_features
        return d + n_components * d * (d - 1) // 2

    def full_form(self, nk, scatter, start=None):
        return zero_padding(nk, _common_shape(scatter_sums(nk, scatter), total(nk).squeeze(-1)))

    def map_shrinks_means(self, variant):
        return variant == "me"  # mclust's mseevp sets the shrinkage to 0

    def _map_covariances(self, nk, w, diff, prior, variant):
        # S_k = Lambda + W_k (+ M_k in me); lambda A = sum_k eig(S_k) / den with
        # den = nu + D + 1 + n (+ [k>0] in me).
        d = diff.shape[1]
        den = prior.dof + d + 1 + nk.sum()
        sums = prior.scale + w
        if variant == "me":
            sums = sums + full_shrinkage(nk, diff, prior)
            den = den + indicator(prior)
        return _common_shape(sums, den)


def _common_shape(sums, den):
    """``D_k (sum_k Omega_k / den) D_k^T`` from the eigen-decompositions of
    ``sums`` (..., K, D, D) = ``D_k Omega_k D_k^T``."""
    vals, vecs = eig_desc(sums)
    shape = vals.sum(-2, keepdim=True) / den  # lambda A, (..., 1, D)
    return (vecs * shape.unsqueeze(-2)) @ vecs.transpose(-1, -2)
