"""The ``diag`` covariance: each component has its own diagonal covariance matrix."""

from __future__ import annotations

import torch

from .base import CovarianceType
from .conjugate import diagonal_mode
from .diagonal_form import DiagonalFullForm


class Diag(DiagonalFullForm, CovarianceType):
    """Each component has its own diagonal covariance matrix."""

    name = "diag"
    mclust_name = "VVI"
    supports_prior = True
    affine_closed = True

    def n_cov_parameters(self, n_components, n_features):
        return n_components * n_features

    def stat_shape(self, n_components, n_features):
        return (n_components, n_features)

    def second_moment(self, xc, resp):
        return resp.T @ (xc * xc)

    #: The E-step's log-probabilities and responsibilities are (K, B): the
    #: softmax then reduces over the outer axis (vectorised along the rows),
    #: and both GEMMs below put the long chunk axis where BLAS is fastest.
    component_major = True

    #: Columns after [x*x, x, 1] in the features (spherical adds |x|^2).
    _extra_columns = 0

    @staticmethod
    def _moment_columns(n_features, dtype):
        """Columns of the features the moment GEMM reads: [x*x, x], padded.

        MKL's kernels on AVX2 run ``(K, B) @ (B, n)`` fastest when n is a
        multiple of 12 (double) or 16 (single): measured at K = 16, n = 36
        takes 60% of the time of n = 33 in double precision, and n = 32 60%
        of n = 33 in single.  The padding columns' results are not read.
        """
        step = 12 if dtype == torch.float64 else 16
        return -(-2 * n_features // step) * step

    def features(self, X, shift, reuse=None):
        """``X - shift`` (B, D) and the features ``[x*x, x, 1]`` (B, >= 2D + 1).

        ``reuse``, an earlier result of as many rows, is overwritten instead
        of allocating (its constant columns are already in place).
        """
        # [x*x, x, 1] written once into one row-major buffer: the E-step's GEMM
        # and the M-step's GEMM both read it; the column of ones carries the
        # per-component constants into the first and, where the second's
        # padding reaches it, the counts out of the second.
        b, d = X.shape
        feats = reuse
        if feats is None:
            # float64 when the shift is: float32 data far from it
            # (expectation.FAR_IN_FLOAT64).
            dtype = torch.promote_types(X.dtype, shift.dtype)
            used = 2 * d + 1 + self._extra_columns
            width = max(used, self._moment_columns(d, dtype))
            feats = torch.empty(b, width, dtype=dtype, device=X.device)
            feats[:, 2 * d].fill_(1.0)
            feats[:, used:].zero_()
        xc = feats[:, d : 2 * d]
        torch.sub(X, shift, out=xc)
        torch.mul(xc, xc, out=feats[:, :d])
        return xc, feats

    def raw_moments(self, xc, resp, feats, into=None):
        """The chunk's additive moments ``resp @ [x*x, x, 1]``.

        Parameters
        ----------
        xc : Tensor (B, D)
        resp : Tensor (K, B)
            Responsibilities times the sample weights.
        feats : Tensor
            :meth:`features`' second result.
        into : Tensor, optional
            An earlier result (a running total, in any dtype) that this
            chunk's moments are added into, in place.

        Returns
        -------
        Tensor (K, C)
            Columns ``[s2, s1, nk]`` and padding (:meth:`split_moments`).
        """
        d = xc.shape[1]
        n = self._moment_columns(d, resp.dtype)
        cols = feats[:, :n]
        if into is None:
            into = torch.empty(resp.shape[0], max(n, 2 * d + 1), dtype=resp.dtype,
                               device=resp.device)
            torch.mm(resp, cols, out=into[:, :n])
            if n == 2 * d:  # the ones column is past the padding
                torch.sum(resp, 1, out=into[:, n])
            return into
        if into.dtype == resp.dtype:
            into[:, :n].addmm_(resp, cols)
        else:
            into[:, :n].add_(resp @ cols)
        if n == 2 * d:
            into[:, n].add_(resp.sum(1))
        return into

    def split_moments(self, raw, n_features):
        """``(nk, s1, s2)`` from (summed) :meth:`raw_moments`."""
        d = n_features
        return raw[:, 2 * d], raw[:, d : 2 * d], raw[:, :d]

    def moments_from_raw(self, raw, offsets):
        """``(nk, s1, s2)`` around ``offsets`` (K, D) from (summed) one-shift
        :meth:`raw_moments`, in float64: moving from the shift costs about
        ``eps64 * |offset|^2 / sigma^2`` of the second moments' accuracy."""
        nk, s1, s2 = self.split_moments(raw, offsets.shape[1])
        o = offsets.to(raw.dtype)
        # sum_i r (x - o)^2 = s2 - 2 o s1 + nk o^2
        return nk, s1 - nk.unsqueeze(1) * o, s2 - (2.0 * s1 - nk.unsqueeze(1) * o) * o

    def moments(self, xc, resp, feats=None):
        """``(nk, s1, s2)`` from responsibilities ``resp`` (K, B)."""
        if feats is None:
            feats = self.features(xc, torch.zeros((), dtype=xc.dtype, device=xc.device))[1]
        return self.split_moments(self.raw_moments(xc, resp, feats), xc.shape[1])

    per_component_moments = True

    def moments_around(self, xc, resp, offsets, owner=None):
        z = xc.unsqueeze(1) - offsets.unsqueeze(0)
        w = resp.unsqueeze(2) * z
        return resp.sum(0), w.sum(0), (w * z).sum(0)

    def covariances_from_stats(self, nk, means_c, s2, reg_covar):
        return s2 / nk[:, None] - means_c * means_c + reg_covar

    def full_form(self, nk, scatter, start=None):
        return torch.diag_embed(torch.diagonal(scatter, dim1=-2, dim2=-1))

    def _map_scatter(self, nk, means_c, s2, reg_covar):
        return nk[:, None] * Diag.covariances_from_stats(self, nk, means_c, s2, reg_covar)

    def _map_covariances(self, nk, w, diff, prior, variant):
        return diagonal_mode(nk, w, diff, prior)

    def from_full_form(self, covariances):
        return torch.diagonal(covariances, dim1=-2, dim2=-1).clone()

    def min_count(self, n_features):
        return 2  # a variance needs two points

    def matrices(self, covariances, n_features):
        return torch.diag_embed(covariances)

    _what = "a variance is not positive"

    def rescaled(self, covariances, prec_chol, scale):
        return covariances * scale * scale, prec_chol / scale

    def _try_factor(self, covariances):
        mats = self._matrix_view(covariances)
        bad = ((mats <= 0.0) | ~torch.isfinite(mats)).any(1)
        return torch.rsqrt(covariances), bad

    def _matrix_view(self, covariances):
        # One row of variances per component (spherical: a single variance).
        return covariances.reshape(covariances.shape[0], -1)

    def _add_to_diagonal(self, covariances, amount):
        mats = self._matrix_view(covariances) + amount.to(covariances.dtype).unsqueeze(1)
        return mats.reshape(covariances.shape)

    def _diagonal_scale(self, covariances):
        return self._matrix_view(covariances).abs().mean(1)

    def factor_problem(self, prec_chol):
        if not bool((prec_chol > 0).all()):
            return "has an entry <= 0 (square roots of precisions are positive)"
        return None

    def factor_mismatch(self, covariances, prec_chol):
        u = prec_chol.double()
        return float((covariances.double() * u * u - 1.0).abs().max())

    def precisions_cholesky_from_precisions(self, precisions):
        return torch.sqrt(precisions)

    def precisions(self, prec_chol):
        return prec_chol * prec_chol

    def covariances(self, prec_chol):
        return 1.0 / (prec_chol * prec_chol)

    def log_det(self, prec_chol, n_features):
        return torch.log(prec_chol).sum(-1)

    #: float32 distances are taken directly, per component (see mahalanobis).
    direct_below_float64 = True

    def mahalanobis(self, xc, means_c, prec_chol, direct=None):
        if direct or (direct is None and xc.dtype != torch.float64):
            # Direct (B, K, D) differences: the one-GEMM expansion below loses
            # eps32 * (distance to the shift / sigma)^2 to cancellation.
            p = prec_chol if prec_chol.dim() == 2 else prec_chol.unsqueeze(1)
            z = (xc.unsqueeze(1) - means_c.unsqueeze(0)) * p.unsqueeze(0)
            return z.square_().sum(-1)
        feats = self.features(xc, torch.zeros((), dtype=xc.dtype, device=xc.device))[1]
        half = self.log_prob_prepared(feats, self.prepare(means_c, prec_chol))
        return half.t().mul(-2.0).clamp_min_(0.0)

    def prepare(self, means_c, prec_chol, const=None):
        """Coefficients (K, 2D + 1) of ``const_k - maha_k / 2`` on the features
        ``[x*x, x, 1]``: ``-p_kd / 2``, ``p_kd mu_kd`` and
        ``const_k - sum_d p_kd mu_kd^2 / 2``, with ``p = prec_chol^2``."""
        p2 = prec_chol * prec_chol
        weighted = means_c * p2
        bias = -0.5 * (weighted * means_c).sum(1)
        if const is not None:
            bias = bias + const
        return torch.cat([-0.5 * p2, weighted, bias.unsqueeze(1)], dim=1)

    def log_prob_prepared(self, feats, prep, out=None):
        """``const_k - maha_k / 2`` (K, B) as one GEMM ``prep @ feats^T``
        (into ``out`` when given)."""
        return torch.mm(prep, feats[:, : prep.shape[1]].T, out=out)

    def check_spd(self, mats, name):
        if bool((mats <= 0).any()):
            raise ValueError(
                f"'{name}' should be positive: found a non-positive entry. Pass precisions "
                f"(inverse variances) > 0."
            )

    def covariance_prior_shape(self, n_features):
        return (n_features,)

    def prior_covariance(self, data_covariance):
        return torch.diagonal(data_covariance).clone()

    def check_covariance_prior(self, prior, name):
        if bool((prior <= 0).any()):
            raise ValueError(
                f"'{name}' must be positive (variances of the prior); found a non-positive "
                f"entry. Pass values > 0, e.g. the data's variances."
            )

    def wishart_covariances(self, nk, sk, diff, mean_precision_prior, mean_precision,
                            covariance_prior, dof):
        shrink = (mean_precision_prior / mean_precision)[:, None]
        return (covariance_prior + nk[:, None] * (sk + shrink * diff * diff)) / dof[:, None]
