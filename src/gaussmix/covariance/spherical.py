"""The ``spherical`` covariance: each component has its own single variance."""

from __future__ import annotations

import torch

from .conjugate import spherical_mode
from .diag import Diag


class Spherical(Diag):
    """Each component has its own single variance."""

    name = "spherical"
    mclust_name = "VII"

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

    def _map_covariances(self, nk, w, diff, prior, variant):
        return spherical_mode(nk, w, diff, prior)

    def from_full_form(self, covariances):
        return torch.diagonal(covariances, dim1=-2, dim2=-1).mean(-1)

    def matrices(self, covariances, n_features):
        return covariances[:, None, None] * torch.eye(n_features, dtype=covariances.dtype,
                                                      device=covariances.device)

    def log_det(self, prec_chol, n_features):
        return n_features * torch.log(prec_chol)

    _extra_columns = 1

    def features(self, X, shift, reuse=None):
        # Diag's [x*x, x, 1] (the (K, D) moments read them) and |x|^2: the
        # distances then need [x, 1, |x|^2] only, D + 2 columns instead of 2D + 1.
        xc, feats = Diag.features(self, X, shift, reuse)
        d = X.shape[1]
        ones = torch.ones(d, dtype=feats.dtype, device=X.device)
        torch.mv(feats[:, :d], ones, out=feats[:, 2 * d + 1])
        return xc, feats

    def prepare(self, means_c, prec_chol, const=None):
        """Coefficients (K, D + 2) of ``const_k - maha_k / 2`` on the features
        ``[x, 1, |x|^2]``: ``p_k mu_k``, ``const_k - p_k |mu_k|^2 / 2`` and
        ``-p_k / 2``, with ``p = prec_chol^2``."""
        p2 = (prec_chol * prec_chol).unsqueeze(1)
        weighted = means_c * p2
        bias = -0.5 * (weighted * means_c).sum(1, keepdim=True)
        if const is not None:
            bias = bias + const.unsqueeze(1)
        return torch.cat([weighted, bias, -0.5 * p2], dim=1)

    def log_prob_prepared(self, feats, prep, out=None):
        d = prep.shape[1] - 2
        return torch.mm(prep, feats[:, d : 2 * d + 2].T, out=out)

    def covariance_prior_shape(self, n_features):
        return ()

    def prior_covariance(self, data_covariance):
        return torch.diagonal(data_covariance).mean()

    def wishart_covariances(self, nk, sk, diff, mean_precision_prior, mean_precision,
                            covariance_prior, dof):
        shrink = mean_precision_prior / mean_precision
        return (covariance_prior + nk * (sk + shrink * (diff * diff).mean(1))) / dof
