"""The ``full`` covariance: each component has its own general covariance matrix."""

from __future__ import annotations

import torch

from .base import (
    CovarianceType,
    _check_symmetric_pd,
    _cholesky_upper_inverse,
    row_sums,
    second_moment_outer,
    second_moment_weighted,
)


class Full(CovarianceType):
    """Each component has its own general covariance matrix."""

    name = "full"

    def n_cov_parameters(self, n_components, n_features):
        return n_components * n_features * (n_features + 1) // 2

    def stat_shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def second_moment(self, xc, resp):
        # Both formulations do 2 B K D^2 flops in one GEMM; the smaller
        # intermediate wins: (B, D*D) outer products when D < K, else the
        # (B, K*D) responsibility-weighted data.
        if xc.shape[1] < resp.shape[1]:
            return second_moment_outer(xc, resp)
        return second_moment_weighted(xc, resp)

    per_component_moments = True

    def moments_around(self, xc, resp, offsets):
        # (B, K, D) differences to each component's centre: every product is of
        # the component's own spread, so float32 loses nothing to the distance
        # between components. One batched GEMM over components.
        z = xc.unsqueeze(1) - offsets.unsqueeze(0)
        w = resp.unsqueeze(2) * z
        s2 = torch.bmm(w.permute(1, 2, 0), z.transpose(0, 1))
        return resp.sum(0), w.sum(0), s2

    def covariances_from_stats(self, nk, means_c, s2, reg_covar):
        d = means_c.shape[1]
        cov = s2 / nk[:, None, None] - means_c.unsqueeze(2) * means_c.unsqueeze(1)
        cov = 0.5 * (cov + cov.transpose(1, 2))
        idx = torch.arange(d, device=cov.device)
        cov[:, idx, idx] += reg_covar
        return cov

    def full_form(self, nk, scatter, start=None):
        return scatter

    def from_full_form(self, covariances):
        return covariances

    def min_count(self, n_features):
        return n_features + 1  # fewer points give a singular covariance

    def matrices(self, covariances, n_features):
        return covariances

    def _try_factor(self, covariances):
        return _cholesky_upper_inverse(covariances)

    def rescaled(self, covariances, prec_chol, scale):
        return covariances * scale[:, None] * scale[None, :], prec_chol / scale[:, None]

    def _matrix_view(self, covariances):
        return covariances.reshape(-1, *covariances.shape[-2:])

    def _add_to_diagonal(self, covariances, amount):
        mats = self._matrix_view(covariances).clone()
        idx = torch.arange(mats.shape[-1], device=mats.device)
        mats[:, idx, idx] += amount.to(mats.dtype).unsqueeze(1)
        return mats.reshape(covariances.shape)

    def _diagonal_scale(self, covariances):
        return torch.diagonal(self._matrix_view(covariances), dim1=-2, dim2=-1).abs().mean(-1)

    def precisions_cholesky_from_precisions(self, precisions):
        # U = flip(chol(flip(P))) gives an upper-triangular U with U U^T = P.
        flipped = torch.flip(precisions, dims=(-2, -1))
        chol = torch.linalg.cholesky(flipped)
        return torch.flip(chol, dims=(-2, -1))

    def precisions(self, prec_chol):
        return prec_chol @ prec_chol.transpose(-1, -2)

    def covariances(self, prec_chol):
        eye = torch.eye(prec_chol.shape[-1], dtype=prec_chol.dtype, device=prec_chol.device)
        inv = torch.linalg.solve_triangular(prec_chol, eye.expand_as(prec_chol), upper=True)
        return inv.transpose(-1, -2) @ inv

    def log_det(self, prec_chol, n_features):
        return torch.log(torch.diagonal(prec_chol, dim1=-2, dim2=-1)).sum(-1)

    def mahalanobis(self, xc, means_c, prec_chol):
        return self.mahalanobis_prepared(xc, self.prepare(means_c, prec_chol))

    def prepare(self, means_c, prec_chol):
        k, d = means_c.shape
        factors = prec_chol.permute(1, 0, 2).reshape(d, k * d)
        offset = -(means_c.unsqueeze(1) @ prec_chol).reshape(k * d)
        return factors, offset

    def mahalanobis_prepared(self, xc, prep):
        factors, offset = prep
        b, d = xc.shape
        # (x - mu_k) U_k for all k in one GEMM (B, D) @ (D, K*D), the mean term
        # folded in as the GEMM's bias; then squares summed per component.
        y = torch.addmm(offset, xc, factors)
        return row_sums(y.square_().view(-1, d)).view(b, -1)

    def check_spd(self, mats, name):
        _check_symmetric_pd(mats, name)

    def covariance_prior_shape(self, n_features):
        return (n_features, n_features)

    def prior_covariance(self, data_covariance):
        return data_covariance

    def wishart_covariances(self, nk, sk, diff, mean_precision_prior, mean_precision,
                            covariance_prior, dof):
        outer = diff.unsqueeze(2) * diff.unsqueeze(1)
        shrink = nk * mean_precision_prior / mean_precision
        scatter = nk[:, None, None] * sk + shrink[:, None, None] * outer
        return (covariance_prior + scatter) / dof[:, None, None]
