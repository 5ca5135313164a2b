"""Covariance types as small strategy objects.

Each strategy knows, for one covariance structure, how many free parameters it
has, how a chunk of data adds to its second-moment statistic, how statistics
become covariances and precision Cholesky factors, and how to evaluate the
Gaussian log-density from those factors.  A registry maps the scikit-learn
names (``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``) to the strategies;
nothing else in the package branches on the covariance type.

Shapes follow scikit-learn (K components, D features):

=========== ============== ==================
type        covariances    precisions_cholesky
=========== ============== ==================
full        (K, D, D)      (K, D, D) upper
tied        (D, D)         (D, D) upper
diag        (K, D)         (K, D)
spherical   (K,)           (K,)
=========== ============== ==================
"""

from __future__ import annotations

import math
import warnings

import torch

__all__ = [
    "row_sums",
    "second_moment_outer",
    "second_moment_weighted",
    "CovarianceType",
    "COVARIANCE_TYPES",
    "get_covariance_type",
    "CovarianceError",
    "CovarianceWarning",
    "CHOLESKY_RETRIES",
    "RETRY_FACTOR",
]

_LOG_2PI = math.log(2.0 * math.pi)

#: How many times a covariance that cannot be factorised is retried with more
#: regularisation before :class:`CovarianceError` is raised.
CHOLESKY_RETRIES = 4
#: Factor by which the regularisation grows at each retry.
RETRY_FACTOR = 10.0


class CovarianceError(ValueError):
    """A covariance matrix could not be factorised (not positive definite)."""


class CovarianceWarning(UserWarning):
    """A covariance needed more regularisation than ``reg_covar`` to be factorised."""


def _ill_defined_message(what: str) -> str:
    return (
        f"Fitting the mixture model failed because some components have ill-defined "
        f"empirical covariance ({what}; for instance caused by singleton or collapsed "
        f"samples). Try to decrease the number of components, increase reg_covar, or "
        f"scale the input data."
    )


_FLOAT64_HINT = (
    " The numerical accuracy can also be improved by fitting in float64 "
    "(dtype='float64') instead of float32."
)


class CovarianceType:
    """Interface of a covariance strategy.

    Attributes
    ----------
    name : str
        The scikit-learn name of the covariance type.
    """

    name: str = ""

    # -- counting -----------------------------------------------------------
    def n_cov_parameters(self, n_components: int, n_features: int) -> int:
        """Number of free covariance parameters."""
        raise NotImplementedError

    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Total number of free parameters of the mixture.

        Covariance parameters, plus ``K * D`` means, plus ``K - 1`` weights.
        """
        k, d = n_components, n_features
        return self.n_cov_parameters(k, d) + k * d + k - 1

    # -- sufficient statistics ---------------------------------------------
    def second_moment(self, xc: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
        """Second-moment statistic of one chunk.

        Parameters
        ----------
        xc : Tensor of shape (B, D)
            Data shifted by the fixed shift of the pass.
        resp : Tensor of shape (B, K)
            Responsibilities multiplied by the sample weights.
        """
        raise NotImplementedError

    def stat_shape(self, n_components: int, n_features: int) -> tuple:
        """Shape of :meth:`second_moment`'s result."""
        raise NotImplementedError

    def covariances_from_stats(
        self, nk: torch.Tensor, means_c: torch.Tensor, s2: torch.Tensor, reg_covar: float
    ) -> torch.Tensor:
        """Regularised covariances from the totals.

        Parameters
        ----------
        nk : Tensor (K,)
            Effective counts.
        means_c : Tensor (K, D)
            New means minus the shift of the pass.
        s2 : Tensor
            Summed second moments around the shift.
        reg_covar : float
            Added to the diagonal (absolute, in the data's squared units).
        """
        raise NotImplementedError

    #: Whether the components share one covariance (one matrix per mixture).
    shared = False

    #: Whether the model stays the same model when each feature is scaled on
    #: its own (``x_j -> a_j x_j``).  False for a spherical covariance, which
    #: is only closed under one common scale.
    per_feature_scaling = True

    def rescaled(self, covariances: torch.Tensor, prec_chol: torch.Tensor,
                 scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Covariances and precision factors of the data multiplied by ``scale``.

        Parameters
        ----------
        covariances, prec_chol : Tensor
            In this type's shapes.
        scale : Tensor (D,)
            Per-feature factors (all equal unless :attr:`per_feature_scaling`).

        Returns
        -------
        covariances, prec_chol : Tensor
            ``S Sigma S`` and ``S^-1 U`` with ``S = diag(scale)``.
        """
        raise NotImplementedError

    def grouped_covariances_from_stats(self, nk, means_c, s2, reg_covar, owner, n_groups):
        """:meth:`covariances_from_stats` for several mixtures at once.

        The components of ``n_groups`` mixtures are concatenated; ``owner``
        gives each component's mixture.  For per-component covariances this
        is the ordinary computation over all components; a shared covariance
        is pooled within each mixture (``s2`` then has one entry per mixture).

        Returns
        -------
        Tensor
            One covariance per component, or per mixture when :attr:`shared`.
        """
        return self.covariances_from_stats(nk, means_c, s2, reg_covar)

    # -- full form (the joint engine, gaussmix.joint) -------------------------
    def full_form(self, nk: torch.Tensor, scatter: torch.Tensor) -> torch.Tensor:
        """The maximum-likelihood covariances of this type, as full matrices,
        from each component's weighted scatter.

        Parameters
        ----------
        nk : Tensor (G, K)
            Effective counts of the components of ``G`` mixtures.
        scatter : Tensor (G, K, D, D)
            ``sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T / n_k``.

        Returns
        -------
        Tensor (G, K, D, D)
            Unregularised.
        """
        raise NotImplementedError

    def from_full_form(self, covariances: torch.Tensor) -> torch.Tensor:
        """This type's covariance parameter from full matrices (K, D, D) that
        satisfy its constraint."""
        raise NotImplementedError

    # -- factors ------------------------------------------------------------
    #: What a failed factorisation is called in error messages.
    _what = "a covariance matrix is not positive definite"

    def _try_factor(self, covariances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Precision Cholesky factors and a boolean mask (one entry per matrix)
        of the matrices that could not be factorised (their factors are junk)."""
        raise NotImplementedError

    def _matrix_view(self, covariances: torch.Tensor) -> torch.Tensor:
        """``covariances`` with one leading entry per matrix (K, or 1 for tied)."""
        return covariances

    def _add_to_diagonal(self, covariances: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
        """A copy of ``covariances`` with ``amount`` (one value per matrix) added
        to each matrix's diagonal."""
        raise NotImplementedError

    def _diagonal_scale(self, covariances: torch.Tensor) -> torch.Tensor:
        """Mean absolute diagonal entry of each matrix (its variance scale)."""
        raise NotImplementedError

    def precisions_cholesky(self, covariances: torch.Tensor) -> torch.Tensor:
        """Cholesky factor of the precision from covariances.

        Raises
        ------
        CovarianceError
            With an actionable message when a covariance is not positive
            definite (no retry; see :meth:`factorize` for the retrying form).
        """
        prec_chol, bad = self._try_factor(covariances)
        if bool(bad.any()):
            raise CovarianceError(_ill_defined_message(self._what))
        return prec_chol

    def factorize(
        self,
        covariances: torch.Tensor,
        reg_covar: float,
        eps: float,
        events: list | None = None,
        scale: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Precision Cholesky factors, retrying failed matrices with more regularisation.

        A covariance that is not positive definite (after ``reg_covar`` was
        added by :meth:`covariances_from_stats`) is retried with its diagonal
        regularisation raised to ``b * RETRY_FACTOR**i`` for
        ``i = 1 .. CHOLESKY_RETRIES``, where ``b = max(reg_covar, eps * s)``
        and ``s`` is the scale of the second moments the covariance was
        computed from (``scale``; by default the mean absolute diagonal entry
        of the matrix; ``b = eps`` if everything is zero).  ``eps * s`` is the
        rounding error of that computation, so the extra regularisation stays
        within a few orders of magnitude of the noise.  Only the failing
        matrices change; each retry that succeeds emits a
        :class:`CovarianceWarning` saying what was added.

        Parameters
        ----------
        covariances : Tensor
            Regularised covariances (float64), as from
            :meth:`covariances_from_stats`.
        reg_covar : float
            The regularisation already in ``covariances``.
        eps : float
            Machine epsilon of the data's dtype.
        events : list, optional
            Receives one ``dict(kind="regularization", components=[...],
            reg_covar=[...], retries=i)`` per successful retry.
        scale : Tensor, optional
            One non-negative value per matrix (K, or 1 for tied): the mean
            diagonal second moment that was centred to give the covariance.

        Returns
        -------
        prec_chol : Tensor
        covariances : Tensor
            The covariances actually factorised (with any extra regularisation).

        Raises
        ------
        CovarianceError
            If a covariance is not finite, or still fails after the last retry.
        """
        prec_chol, bad = self._try_factor(covariances)
        if not bool(bad.any()):
            return prec_chol, covariances
        hint = _FLOAT64_HINT if eps > 1e-10 else ""
        mats = self._matrix_view(covariances)
        finite = torch.isfinite(mats.reshape(mats.shape[0], -1)).all(1)
        if not bool(finite.all()):
            raise CovarianceError(
                _ill_defined_message(self._what + ", with non-finite entries") + hint
            )
        if scale is None:
            scale = self._diagonal_scale(covariances)
        base = torch.clamp(scale.to(mats.dtype) * eps, min=reg_covar)
        base = torch.where(base > 0, base, torch.full_like(base, eps))
        failed = bad
        for i in range(1, CHOLESKY_RETRIES + 1):
            reg_i = base * RETRY_FACTOR**i
            extra = torch.where(failed, reg_i - reg_covar, torch.zeros_like(reg_i))
            trial = self._add_to_diagonal(covariances, extra)
            prec_chol, still = self._try_factor(trial)
            if not bool(still.any()):
                comps = torch.nonzero(failed).flatten().tolist()
                regs = [float(r) for r in reg_i[failed]]
                what = "The tied covariance" if self.name == "tied" else (
                    f"The covariance of component(s) {comps}")
                warnings.warn(
                    f"{what} was not positive definite "
                    f"with reg_covar={reg_covar:g}; its diagonal regularisation was raised "
                    f"to {max(regs):.3g} (retry {i} of at most {CHOLESKY_RETRIES}). "
                    f"Increase reg_covar, scale the input data, or remove constant or "
                    f"duplicated features to avoid this." + hint,
                    CovarianceWarning,
                    stacklevel=3,
                )
                if events is not None:
                    events.append(
                        dict(kind="regularization", components=comps, reg_covar=regs, retries=i)
                    )
                return prec_chol, trial
        limit = float((base * RETRY_FACTOR**CHOLESKY_RETRIES).max())
        raise CovarianceError(
            _ill_defined_message(self._what)
            + f" Retrying with the regularisation raised up to {limit:.3g} "
            f"({CHOLESKY_RETRIES} retries) did not help." + hint
        )

    def precisions_cholesky_from_precisions(self, precisions: torch.Tensor) -> torch.Tensor:
        """Cholesky factor of the precision from precisions."""
        raise NotImplementedError

    def precisions(self, prec_chol: torch.Tensor) -> torch.Tensor:
        """Precision matrices from their Cholesky factors."""
        raise NotImplementedError

    def covariances(self, prec_chol: torch.Tensor) -> torch.Tensor:
        """Covariances from the precision Cholesky factors."""
        raise NotImplementedError

    def log_det(self, prec_chol: torch.Tensor, n_features: int) -> torch.Tensor:
        """log det of the precision Cholesky factor, per component: (K,) or scalar."""
        raise NotImplementedError

    def mahalanobis(
        self, xc: torch.Tensor, means_c: torch.Tensor, prec_chol: torch.Tensor
    ) -> torch.Tensor:
        """Squared Mahalanobis distances (B, K) of shifted data to shifted means."""
        raise NotImplementedError

    def log_gaussian(
        self, xc: torch.Tensor, means_c: torch.Tensor, prec_chol: torch.Tensor
    ) -> torch.Tensor:
        """Log density (B, K) of each point under each component."""
        d = xc.shape[1]
        maha = self.mahalanobis(xc, means_c, prec_chol)
        return torch.add(self.log_det(prec_chol, d) - 0.5 * d * _LOG_2PI, maha, alpha=-0.5)

    # -- the E-step hot path -----------------------------------------------
    # The per-pass constants (reshaped factors, projected means) are computed
    # once per pass by ``prepare`` instead of once per chunk, and the chunk's
    # Mahalanobis distances then cost one GEMM plus one reduction.
    def prepare(self, means_c: torch.Tensor, prec_chol: torch.Tensor) -> tuple:
        """Per-pass constants for :meth:`mahalanobis_prepared`.

        Parameters
        ----------
        means_c : Tensor (K, D)
            Means minus the shift of the pass.
        prec_chol : Tensor
            Precision Cholesky factors.

        Returns
        -------
        tuple of Tensor
            Opaque; only :meth:`mahalanobis_prepared` reads it.
        """
        raise NotImplementedError

    def features(self, X: torch.Tensor, shift: torch.Tensor) -> tuple:
        """Shifted data and the per-row features both halves of the E-step read.

        Returns
        -------
        xc : Tensor (B, D)
            ``X - shift``.
        feats : Tensor
            What :meth:`mahalanobis_prepared` and :meth:`moments` take
            (``xc`` itself unless a type needs more, e.g. ``[x*x, x]``).
        """
        xc = X - shift
        return xc, xc

    def mahalanobis_prepared(self, feats: torch.Tensor, prep: tuple) -> torch.Tensor:
        """Squared Mahalanobis distances (B, K) from :meth:`features` and
        :meth:`prepare`'s constants.

        The result is a fresh tensor that the caller may overwrite.
        """
        raise NotImplementedError

    def moments(self, xc: torch.Tensor, resp: torch.Tensor, feats: torch.Tensor | None = None) -> tuple:
        """All per-chunk statistics ``(nk, s1, s2)`` in the chunk's dtype.

        Parameters
        ----------
        xc : Tensor (B, D)
            Shifted data.
        resp : Tensor (B, K)
            Responsibilities multiplied by the sample weights.
        feats : Tensor, optional
            :meth:`features`' second result, reused when given.

        Returns
        -------
        nk : Tensor (K,)
            ``resp.sum(0)``.
        s1 : Tensor (K, D)
            ``resp.T @ xc``.
        s2 : Tensor
            :meth:`second_moment`.
        """
        return resp.sum(0), resp.T @ xc, self.second_moment(xc, resp)

    #: Whether :meth:`moments_around` exists (one second moment per component).
    per_component_moments = False
    #: Whether :meth:`mahalanobis` can take per-component differences directly
    #: (``direct=True``) instead of the prepared one-GEMM path.
    direct_below_float64 = False

    def moments_around(self, xc: torch.Tensor, resp: torch.Tensor, offsets: torch.Tensor) -> tuple:
        """Per-chunk statistics with each component's moments around its own point.

        Parameters
        ----------
        xc : Tensor (B, D)
            Shifted data.
        resp : Tensor (B, K)
            Responsibilities multiplied by the sample weights.
        offsets : Tensor (K, D)
            Per-component centres, in the coordinates of ``xc`` (the current
            means minus the shift).

        Returns
        -------
        nk : Tensor (K,)
        s1 : Tensor (K, D)
            ``sum_i resp_ik (xc_i - offsets_k)``.
        s2 : Tensor
            Second moments of ``xc_i - offsets_k``, per component.
        """
        raise NotImplementedError

    def expected_param_shape(self, n_components: int, n_features: int) -> tuple:
        """Shape of covariances / precisions for this type."""
        return self.stat_shape(n_components, n_features)

    def check_spd(self, mats: torch.Tensor, name: str) -> None:
        """Raise ValueError unless ``mats`` are valid (symmetric) positive definite."""
        raise NotImplementedError


def _cholesky_upper_inverse(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper-triangular U with U U^T = cov^{-1}, batched over leading dims, and
    the flat mask of matrices whose Cholesky factorisation failed."""
    chol, info = torch.linalg.cholesky_ex(cov)
    bad = (info != 0).reshape(-1)
    if bool(bad.any()):
        return cov, bad
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device).expand_as(cov)
    inv_lower = torch.linalg.solve_triangular(chol, eye, upper=False)
    return inv_lower.transpose(-1, -2), bad


def _check_symmetric_pd(mats: torch.Tensor, name: str) -> None:
    scale = mats.abs().amax(dim=(-1, -2), keepdim=True).clamp_min(torch.finfo(mats.dtype).tiny)
    asym = (mats - mats.transpose(-1, -2)).abs() / scale
    if bool((asym > 1e-8).any()):
        raise ValueError(f"'{name}' must be symmetric; make it symmetric, e.g. (A + A.T) / 2.")
    _, info = torch.linalg.cholesky_ex(mats)
    if bool((info != 0).any()):
        raise ValueError(
            f"'{name}' must be positive definite; at least one matrix has a non-positive "
            f"eigenvalue. Add a small multiple of the identity to it."
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

    def full_form(self, nk, scatter):
        return scatter

    def from_full_form(self, covariances):
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


class Tied(CovarianceType):
    """All components share one general covariance matrix."""

    name = "tied"

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

    def grouped_covariances_from_stats(self, nk, means_c, s2, reg_covar, owner, n_groups):
        d = means_c.shape[1]
        outer = (nk[:, None] * means_c).unsqueeze(2) * means_c.unsqueeze(1)
        between = torch.zeros_like(s2).index_add_(0, owner, outer)
        total = torch.zeros(n_groups, dtype=nk.dtype, device=nk.device).index_add_(0, owner, nk)
        cov = (s2 - between) / total[:, None, None]
        cov = 0.5 * (cov + cov.transpose(1, 2))
        idx = torch.arange(d, device=cov.device)
        cov[:, idx, idx] += reg_covar
        return cov

    def full_form(self, nk, scatter):
        w = (nk / nk.sum(-1, keepdim=True))[..., None, None]
        return (w * scatter).sum(-3, keepdim=True).expand_as(scatter)

    def from_full_form(self, covariances):
        return covariances[0]

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


class Diag(CovarianceType):
    """Each component has its own diagonal covariance matrix."""

    name = "diag"

    def n_cov_parameters(self, n_components, n_features):
        return n_components * n_features

    def stat_shape(self, n_components, n_features):
        return (n_components, n_features)

    def second_moment(self, xc, resp):
        return resp.T @ (xc * xc)

    def features(self, X, shift):
        # [x*x, x] written once into one buffer: the E-step's GEMM and the
        # M-step's GEMM both read it (no torch.cat, no second copy).
        b, d = X.shape
        feats = torch.empty(b, 2 * d, dtype=X.dtype, device=X.device)
        xc = feats[:, d:]
        torch.sub(X, shift, out=xc)
        torch.mul(xc, xc, out=feats[:, :d])
        return xc, feats

    def moments(self, xc, resp, feats=None):
        # s2 and s1 from one GEMM: resp^T @ [x*x, x].
        d = xc.shape[1]
        if feats is None:
            feats = self.features(xc, torch.zeros((), dtype=xc.dtype, device=xc.device))[1]
        both = resp.T @ feats
        return resp.sum(0), both[:, d:], both[:, :d]

    per_component_moments = True

    def moments_around(self, xc, resp, offsets):
        z = xc.unsqueeze(1) - offsets.unsqueeze(0)
        w = resp.unsqueeze(2) * z
        return resp.sum(0), w.sum(0), (w * z).sum(0)

    def covariances_from_stats(self, nk, means_c, s2, reg_covar):
        return s2 / nk[:, None] - means_c * means_c + reg_covar

    def full_form(self, nk, scatter):
        return torch.diag_embed(torch.diagonal(scatter, dim1=-2, dim2=-1))

    def from_full_form(self, covariances):
        return torch.diagonal(covariances, dim1=-2, dim2=-1).clone()

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
        return self.mahalanobis_prepared(feats, self.prepare(means_c, prec_chol))

    def prepare(self, means_c, prec_chol):
        p2 = prec_chol * prec_chol
        coef = torch.cat([p2.T, -2.0 * (means_c * p2).T], dim=0)
        return coef, (means_c * means_c * p2).sum(1)

    def mahalanobis_prepared(self, feats, prep):
        coef, mean_sq = prep
        # sum_d p_kd (x_d^2 - 2 x_d mu_kd) + sum_d p_kd mu_kd^2 as one GEMM
        # [x*x, x] (B, 2D) @ (2D, K).
        return torch.addmm(mean_sq, feats, coef).clamp_min_(0.0)

    def check_spd(self, mats, name):
        if bool((mats <= 0).any()):
            raise ValueError(
                f"'{name}' must be positive; found a non-positive entry. Pass precisions "
                f"(inverse variances) > 0."
            )


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

    def full_form(self, nk, scatter):
        var = torch.diagonal(scatter, dim1=-2, dim2=-1).mean(-1)
        eye = torch.eye(scatter.shape[-1], dtype=scatter.dtype, device=scatter.device)
        return var[..., None, None] * eye

    def from_full_form(self, covariances):
        return torch.diagonal(covariances, dim1=-2, dim2=-1).mean(-1)

    def log_det(self, prec_chol, n_features):
        return n_features * torch.log(prec_chol)

    def prepare(self, means_c, prec_chol):
        # Diag's features [x*x, x] with p_k repeated over the x*x block: the
        # same buffer then serves the E-step and the (K, D) second moments.
        d = means_c.shape[1]
        p2 = prec_chol * prec_chol
        coef = torch.cat([p2.expand(d, -1), -2.0 * means_c.T * p2], dim=0)
        return coef, (means_c * means_c).sum(1) * p2


def row_sums(a: torch.Tensor) -> torch.Tensor:
    """Sums over the last axis of a 2-D tensor.

    A matrix-vector product with ones when rows are short: torch's reduction
    kernels are slow over an inner axis of a few elements (measured 15x for
    2 columns, 1.5x for 16), a GEMV is not.
    """
    if a.shape[1] > 32:
        return a.sum(1)
    return a @ torch.ones(a.shape[1], dtype=a.dtype, device=a.device)


def second_moment_weighted(xc: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
    """Full second moments (K, D, D) as ``xc^T @ W`` with W (B, K*D).

    ``W[b, k*D + j] = resp[b, k] * xc[b, j]``: one GEMM with the chunk as its
    inner dimension, for all components at once.
    """
    b, d = xc.shape
    k = resp.shape[1]
    weighted = (resp.unsqueeze(2) * xc.unsqueeze(1)).view(b, k * d)
    return (xc.T @ weighted).view(d, k, d).transpose(0, 1).contiguous()


def second_moment_outer(xc: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
    """Full second moments (K, D, D) as ``resp^T @ O`` with the outer products O (B, D*D)."""
    b, d = xc.shape
    k = resp.shape[1]
    outer = (xc.unsqueeze(2) * xc.unsqueeze(1)).view(b, d * d)
    return (resp.T @ outer).view(k, d, d)


COVARIANCE_TYPES: dict[str, CovarianceType] = {
    cls.name: cls() for cls in (Full, Tied, Diag, Spherical)
}


def get_covariance_type(name: str) -> CovarianceType:
    """Return the strategy for a covariance type name.

    Parameters
    ----------
    name : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    CovarianceType

    Raises
    ------
    ValueError
        If the name is unknown.
    """
    try:
        return COVARIANCE_TYPES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Invalid covariance_type {name!r}: choose one of {sorted(COVARIANCE_TYPES)}."
        ) from None
