"""``VEI``: axis-aligned covariances of one shape, ``Sigma_k = lambda_k B``."""

from __future__ import annotations

import torch

from .conjugate import diagonal_shrinkage, diagonals, indicator
from .constrained import (
    INNER_MAX_ITER,
    INNER_TOL,
    Constrained,
    diag_matrix,
    geometric_mean,
    inner_cap_reached,
    on_real,
    relative_change,
    scatter_sums,
    zero_padding,
)
from .diagonal_form import DiagonalFullForm


class VEI(DiagonalFullForm, Constrained):
    """Variable volume, equal shape, axis-aligned.

    No closed form: with ``w_k = diag(W_k)``, alternate (Celeux & Govaert
    1995, as mclust's ``msvei``) from ``B = 1, lambda = 1``:
    ``lambda_k = sum_j (w_kj / B_j) / (D n_k)``, then ``B = sum_k w_k /
    lambda_k`` rescaled to determinant 1, until the largest relative change
    ``|old - new| / (1 + new)`` of any ``lambda_k`` or ``B_j`` is at most
    :data:`~gaussmix.covariance.constrained.INNER_TOL`.
    """

    name = "VEI"
    supports_prior = True

    def n_cov_parameters(self, n_components, n_features):
        return n_components + n_features - 1

    def full_form(self, nk, scatter, start=None):
        d = scatter.shape[-1]
        w = torch.diagonal(scatter_sums(nk, scatter), dim1=-2, dim2=-1)  # (G, K, D)
        return self._alternate(nk, w, d * nk)

    def _map_covariances(self, nk, w, diff, prior, variant):
        # mclust's msveip: the same iteration on w_k = Lambda + diag(W_k + M_k),
        # the volumes over nu + D n_k + 2 + [k>0] instead of D n_k.
        d = diff.shape[1]
        sums = prior.scale + diagonals(w) + diagonal_shrinkage(nk, diff, prior)
        den = prior.dof + d * nk + 2 + indicator(prior)
        return self._alternate(nk[None], sums[None], den[None])[0]

    def _alternate(self, nk, w, den):
        """Volumes and shape from the diagonals ``w`` (G, K, D), the volumes
        dividing by ``den`` (G, K)."""
        d = w.shape[-1]
        shape = torch.ones(w.shape[0], 1, d, dtype=w.dtype, device=w.device)
        lam = torch.ones_like(nk)
        for _ in range(INNER_MAX_ITER + 1):
            new_lam = on_real(nk, (w / shape).sum(-1) / den, 1.0)
            new_shape = (w / new_lam.unsqueeze(-1)).sum(-2, keepdim=True)
            new_shape = new_shape / geometric_mean(new_shape).unsqueeze(-1)
            err = max(relative_change(lam, new_lam), relative_change(shape, new_shape))
            lam, shape = new_lam, new_shape
            if err <= INNER_TOL:
                break
        else:
            inner_cap_reached(self.name, err)
        return zero_padding(nk, diag_matrix(lam.unsqueeze(-1) * shape))
