"""The ``spherical`` covariance: each component has its own single variance."""

from __future__ import annotations

import torch

from .diag import Diag


class Spherical(Diag):
    """Each component has its own single variance."""

    name = "spherical"

    def n_cov_parameters(self, n_components, n_features):
        return n_components

    def stat_shape(self, n_components, n_features):
        return (n_components, n_features)

    def expected_param_shape(self, n_components, n_features):
        return (n_components,)

    per_feature_scaling = False

    def rescaled(self, covariances, prec_chol, scale):
        c = scale[0]
        if not bool((scale == c).all()):
            raise ValueError("A spherical covariance can only be rescaled by one common factor.")
        return covariances * c * c, prec_chol / c

    def covariances_from_stats(self, nk, means_c, s2, reg_covar):
        return Diag.covariances_from_stats(self, nk, means_c, s2, reg_covar).mean(1)

    def full_form(self, nk, scatter, start=None):
        var = torch.diagonal(scatter, dim1=-2, dim2=-1).mean(-1)
        eye = torch.eye(scatter.shape[-1], dtype=scatter.dtype, device=scatter.device)
        return var[..., None, None] * eye

    def from_full_form(self, covariances):
        return torch.diagonal(covariances, dim1=-2, dim2=-1).mean(-1)

    def matrices(self, covariances, n_features):
        return covariances[:, None, None] * torch.eye(n_features, dtype=covariances.dtype,
                                                      device=covariances.device)

    def log_det(self, prec_chol, n_features):
        return n_features * torch.log(prec_chol)

    def _precisions_per_feature(self, p2, n_features):
        # Diag's coefficients with p_k repeated over the features: the same
        # [x*x, 1, x] buffer then serves the E-step and the (K, D) moments.
        return p2.unsqueeze(1).expand(-1, n_features)

    def covariance_prior_shape(self, n_features):
        return ()

    def prior_covariance(self, data_covariance):
        return torch.diagonal(data_covariance).mean()

    def wishart_covariances(self, nk, sk, diff, mean_precision_prior, mean_precision,
                            covariance_prior, dof):
        shrink = mean_precision_prior / mean_precision
        return (covariance_prior + nk * (sk + shrink * (diff * diff).mean(1))) / dof
