"""Factors of diagonal covariances held as full matrices (the joint engine,
:mod:`gaussmix.joint`): closed forms instead of a batched LAPACK call per
matrix, which on small data costs more than the rest of an EM iteration."""

from __future__ import annotations

import torch

__all__ = ["DiagonalFullForm"]


class DiagonalFullForm:
    """Mixin of the covariance types whose matrices are diagonal (diag,
    spherical, EII, EEI, VEI, EVI): their full-form Cholesky factors and
    precisions are element-wise."""

    def full_form_cholesky(self, covariances):
        var = torch.diagonal(covariances, dim1=-2, dim2=-1)
        # ~(v > 0) also catches NaN, as LAPACK's failed pivot would.
        info = (~(var > 0)).any(-1).to(torch.int32)
        return torch.diag_embed(var.clamp(min=0).sqrt()), info

    def full_form_precisions(self, chol):
        return torch.diag_embed(torch.diagonal(chol, dim1=-2, dim2=-1).pow(-2))
