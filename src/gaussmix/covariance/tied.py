"""The ``tied`` covariance: all components share one general covariance matrix."""

from __future__ import annotations

import torch

from .base import CovarianceType
from .conjugate import full_shrinkage, indicator
from .matrices import _check_symmetric_pd, row_sums
from .full import Full


class Tied(CovarianceType):
    """All components share one general covariance matrix."""

    name = "tied"
    mclust_name = "EEE"
    supports_prior = True
    affine_closed = True

    def n_cov_parameters(self, n_components, n_features):
        return n_features * (n_features + 1) // 2

    def stat_shape(self, n_components, n_features):
        return (n_features, n_features)

    def second_moment(self, xc, resp):
        w = resp.sum(1, keepdim=True)
        return (xc * w).T @ xc

    def covariances_from_stats(self, nk, means_c, s2, reg_covar):
        d = means_c.shape[1]
        cov = (s2 - (nk[:, None] * means_c).T @ means_c) / nk.sum()
        cov = 0.5 * (cov + cov.T)
        idx = torch.arange(d, device=cov.device)
        cov[idx, idx] += reg_covar
        return cov

    shared = True

    def grouped_covariances_from_stats(self, nk, means_c, s2, reg_covar, owner, n_groups,
                                       start=None):
        d = means_c.shape[1]
        outer = (nk[:, None] * means_c).unsqueeze(2) * means_c.unsqueeze(1)
        between = torch.zeros_like(s2).index_add_(0, owner, outer)
        total = torch.zeros(n_groups, dtype=nk.dtype, device=nk.device).index_add_(0, owner, nk)
        cov = (s2 - between) / total[:, None, None]
        cov = 0.5 * (cov + cov.transpose(1, 2))
        idx = torch.arange(d, device=cov.device)
        cov[:, idx, idx] += reg_covar
        return cov

    def full_form(self, nk, scatter, start=None):
        w = (nk / nk.sum(-1, keepdim=True))[..., None, None]
        return (w * scatter).sum(-3, keepdim=True).expand_as(scatter)

    def from_full_form(self, covariances):
        return covariances[0]

    # In full form every real component holds the one shared matrix (the
    # first is always real): factorise it once per mixture.
    def full_form_cholesky(self, covariances):
        chol, info = torch.linalg.cholesky_ex(covariances[..., :1, :, :])
        return chol.expand_as(covariances), info.expand(covariances.shape[:-2])

    def full_form_precisions(self, chol):
        return torch.cholesky_inverse(chol[..., :1, :, :]).expand_as(chol)

    def _map_scatter(self, nk, means_c, s2, reg_covar):
        # The statistics hold only the pooled scatter: one entry.
        return nk.sum() * Tied.covariances_from_stats(self, nk, means_c, s2, reg_covar)[None]

    def _map_covariances(self, nk, w, diff, prior, variant):
        # mclust's mseeep/meeeep: (Lambda + sum_k W_k + M_k) / (nu + n + D + 1 + G [k>0]).
        k, d = diff.shape
        num = prior.scale + w[0] + full_shrinkage(nk, diff, prior).sum(0)
        return num / (prior.dof + nk.sum() + d + 1 + k * indicator(prior))

    def min_count(self, n_features):
        return 1  # pooled over components: each only needs its mean

    def matrices(self, covariances, n_features):
        return covariances.unsqueeze(0)

    _what = "the tied covariance is not positive definite"
    _try_factor = Full._try_factor
    rescaled = Full.rescaled
    _matrix_view = Full._matrix_view
    _add_to_diagonal = Full._add_to_diagonal
    _diagonal_scale = Full._diagonal_scale

    precisions_cholesky_from_precisions = Full.precisions_cholesky_from_precisions
    precisions = Full.precisions
    covariances = Full.covariances

    def log_det(self, prec_chol, n_features):
        return torch.log(torch.diagonal(prec_chol)).sum()

    def mahalanobis(self, xc, means_c, prec_chol):
        return self.mahalanobis_prepared(xc, self.prepare(means_c, prec_chol))

    def prepare(self, means_c, prec_chol):
        m = means_c @ prec_chol
        return prec_chol, -2.0 * m.T, (m * m).sum(1)

    def mahalanobis_prepared(self, xc, prep):
        factor, cross, mean_sq = prep
        # ||y||^2 - 2 y.m_k + ||m_k||^2 with y = x U: one (B, D) @ (D, K) GEMM
        # whatever K.
        y = xc @ factor
        maha = torch.addmm(mean_sq, y, cross)
        maha.add_(row_sums(y.square_()).unsqueeze(1))
        return maha.clamp_min_(0.0)

    def check_spd(self, mats, name):
        _check_symmetric_pd(mats, name)

    covariance_prior_shape = Full.covariance_prior_shape
    prior_covariance = Full.prior_covariance

    def wishart_degrees_of_freedom(self, prior, nk):
        # One Wishart for all components, seeing each component's average count.
        return prior + nk.sum() / nk.shape[0]

    def wishart_covariances(self, nk, sk, diff, mean_precision_prior, mean_precision,
                            covariance_prior, dof):
        k = nk.shape[0]
        between = ((nk / mean_precision) * diff.T) @ diff
        cov = covariance_prior + sk * (nk.sum() / k) + mean_precision_prior / k * between
        return cov / dof
