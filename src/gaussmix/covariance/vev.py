"""``VEV``: one shape, variable volumes and orientations, ``Sigma_k = lambda_k D_k A D_k^T``."""

from __future__ import annotations

from .conjugate import full_shrinkage
from .constrained import (
    INNER_MAX_ITER,
    INNER_TOL,
    Constrained,
    eig_desc,
    geometric_mean,
    inner_cap_reached,
    on_real,
    relative_change,
    scatter_sums,
    total,
    zero_padding,
)


class VEV(Constrained):
    """Variable volume, equal shape, variable orientation.

    With ``W_k = L_k Omega_k L_k^T`` (eigenvalues in decreasing order),
    ``D_k = L_k``; volumes and the shape alternate (Celeux & Govaert 1995, as
    mclust's ``msvev``) from ``A = sum_k Omega_k`` rescaled to determinant 1:
    ``lambda_k = tr(Omega_k A^-1) / (D n_k)``, then ``A = sum_k Omega_k /
    lambda_k`` rescaled, until the largest relative change is below
    :data:`~gaussmix.covariance.constrained.INNER_TOL`.
    """

    name = "VEV"
    per_feature_scaling = False
    supports_prior = True

    def n_cov_parameters(self, n_components, n_features):
        d = n_features
        return n_components + d - 1 + n_components * d * (d - 1) // 2

    def full_form(self, nk, scatter, start=None):
        d = scatter.shape[-1]
        omega, vecs = eig_desc(scatter_sums(nk, scatter))  # (G, K, D), (G, K, D, D)
        omega = omega.clamp_min(0.0)
        summed = omega.sum(-2, keepdim=True)
        shape = summed / geometric_mean(summed).unsqueeze(-1)
        # mclust's first comparison value for the volumes.
        lam = on_real(nk, geometric_mean(summed) / (nk * total(nk)[..., 0, 0]), 1.0)
        for _ in range(INNER_MAX_ITER):
            new_lam = on_real(nk, (omega / shape).sum(-1) / (d * nk), 1.0)
            new_shape = (omega / new_lam.unsqueeze(-1)).sum(-2, keepdim=True)
            new_shape = new_shape / geometric_mean(new_shape).unsqueeze(-1)
            err = max(relative_change(shape, new_shape), relative_change(lam, new_lam))
            lam, shape = new_lam, new_shape
            if err < INNER_TOL:
                break
        else:
            inner_cap_reached(self.name, err)
        values = lam.unsqueeze(-1) * shape  # (G, K, D)
        cov = (vecs * values.unsqueeze(-2)) @ vecs.transpose(-1, -2)
        return zero_padding(nk, cov)

    def _map_covariances(self, nk, w, diff, prior, variant):
        # mclust's msvevp: the prior-free iteration on S_k = Lambda + W_k + M_k
        # (nu is not used).
        sums = prior.scale + w + full_shrinkage(nk, diff, prior)
        return self.full_form(nk[None], (sums / nk[:, None, None])[None])[0]
