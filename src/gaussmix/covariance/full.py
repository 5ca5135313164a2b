"""The ``full`` covariance: each component has its own general covariance matrix."""

from __future__ import annotations

import torch

from .base import CovarianceType
from .conjugate import full_mode, indicator
from .matrices import (
    _check_symmetric_pd,
    _cholesky_upper_inverse,
    row_sums,
    second_moment_outer,
    second_moment_weighted,
)


class Full(CovarianceType):
    """Each component has its own general covariance matrix."""

    name = "full"
    mclust_name = "VVV"
    supports_prior = True
    affine_closed = True

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

    def moments_around(self, xc, resp, offsets, owner=None):
        return self.moments_from_raw(self.raw_moments_around(xc, resp, offsets, owner), offsets)

    def raw_moments_around(self, xc, resp, offsets, owner=None):
        # Each row is centred on the component that holds most of it, z_i =
        # x_i - a_h(i) (a subtraction of nearby numbers, exact in float32), so
        # every float32 product is of a component's own spread.  Then
        #   S2_k = sum_i r_ik (z_i + a_h(i) - a_k)(z_i + a_h(i) - a_k)^T
        # is one GEMM [z, onehot(h)]^T @ [r (x) z, r] (the moments of z and,
        # per owning component h, sum r_ik z_i and sum r_ik) plus a float64
        # correction in the between-component gaps a_h - a_k, applied once
        # per pass by moments_from_raw (the GEMM's result is additive).
        b, d = xc.shape
        k = resp.shape[1]
        if owner is None:
            owner = resp.argmax(1)
        owner = owner.reshape(-1)
        left = torch.zeros(b, d + k, dtype=xc.dtype, device=xc.device)
        z = left[:, :d]
        torch.sub(xc, offsets.index_select(0, owner), out=z)
        left[:, d:].scatter_(1, owner.unsqueeze(1), 1.0)
        right = torch.empty(b, k * d + k, dtype=xc.dtype, device=xc.device)
        torch.mul(resp.unsqueeze(2), z.unsqueeze(1), out=right[:, :k * d].view(b, k, d))
        right[:, k * d:] = resp
        return left.T @ right

    def moments_from_raw(self, raw, offsets):
        k, d = offsets.shape
        raw = raw.double()
        g = raw[:d, :k * d].reshape(d, k, d).transpose(0, 1)
        s1z = raw[:d, k * d:].T
        t = raw[d:, :k * d].reshape(k, k, d)  # [h, k]: sum over rows owned by h of r_ik z_i
        n = raw[d:, k * d:]  # [h, k]: sum over rows owned by h of r_ik
        off = offsets.double()
        gap = off.unsqueeze(1) - off.unsqueeze(0)  # [h, k]: a_h - a_k
        # sum_h (t_hk + n_hk gap_hk / 2) gap_hk^T, symmetrised, is the whole correction.
        half = torch.einsum("hki,hkj->kij", t + 0.5 * n.unsqueeze(2) * gap, gap)
        s2 = g + half + half.transpose(1, 2)
        s1 = s1z + torch.einsum("hk,hki->ki", n, gap)
        return n.sum(0), s1, s2

    def covariances_from_stats(self, nk, means_c, s2, reg_covar):
        d = means_c.shape[1]
        cov = s2 / nk[:, None, None] - means_c.unsqueeze(2) * means_c.unsqueeze(1)
        cov = 0.5 * (cov + cov.transpose(1, 2))
        idx = torch.arange(d, device=cov.device)
        cov[:, idx, idx] += reg_covar
        return cov

    def full_form(self, nk, scatter, start=None):
        return scatter

    def _map_scatter(self, nk, means_c, s2, reg_covar):
        return nk[:, None, None] * Full.covariances_from_stats(self, nk, means_c, s2, reg_covar)

    def _map_covariances(self, nk, w, diff, prior, variant):
        # mclust's mstepVVV adds [k>0] to the denominator, meVVV always 1.
        return full_mode(nk, w, diff, prior, indicator(prior) if variant == "mstep" else 1.0)

    def from_full_form(self, covariances):
        return covariances

    def pass_form(self, n_components, n_features, device=None):
        # Imported here: the packed form is a subclass of this one.
        from .full_packed import PACKED_FULL, packed_applies

        # The same rule on every device: on one H200 the packed form took
        # 0.43-0.48x the plain one's time per iteration at 1M x 32 x 32 and
        # 0.40x at 4M x 64 x 64, and 0.89-1.08x at 30k-300k rows, where
        # kernel launches dominate (docs/PERFORMANCE.md).
        return PACKED_FULL if packed_applies(n_components, n_features) else self

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
