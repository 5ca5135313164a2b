"""The covariance strategy interface, and the helpers every strategy shares.

A strategy (:class:`CovarianceType`) knows, for one covariance structure, how
many free parameters it has, how a chunk of data adds to its second-moment
statistic, how statistics become covariances and precision Cholesky factors,
and how to evaluate the Gaussian log-density from those factors.
"""

from __future__ import annotations

import math
import warnings

import torch

from .conjugate import ConjugateMStep

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
    # scikit-learn's sentence unchanged (code matches on it), then the cause.
    return (
        "Fitting the mixture model failed because some components have ill-defined "
        "empirical covariance (for instance caused by singleton or collapsed samples). "
        "Try to decrease the number of components, increase reg_covar, or scale the "
        f"input data. Cause: {what}."
    )


_FLOAT64_HINT = (
    " The numerical accuracy can also be improved by fitting in float64 "
    "(dtype='float64') instead of float32."
)


class CovarianceType(ConjugateMStep):
    """Interface of a covariance strategy.

    The M-step under mclust's conjugate prior is the part inherited from
    :class:`~gaussmix.covariance.conjugate.ConjugateMStep`.

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

    #: Whether every affine combination of two of the model's covariance
    #: sets that stays positive definite is again one of the model's (full,
    #: tied, diagonal, spherical: their constraints are linear).  The joint
    #: engine's over-relaxed steps extrapolate only such models.
    affine_closed = False

    #: Whether :meth:`full_form` is iterative and starts from the current
    #: covariances (``start``); the closed forms ignore it, and the joint
    #: engine then does not prepare it.
    warm_starts = False

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

    def grouped_covariances_from_stats(self, nk, means_c, s2, reg_covar, owner, n_groups,
                                       start=None):
        """:meth:`covariances_from_stats` for several mixtures at once.

        The components of ``n_groups`` mixtures are concatenated; ``owner``
        gives each component's mixture.  For per-component covariances this
        is the ordinary computation over all components; a shared covariance
        is pooled within each mixture (``s2`` then has one entry per mixture).
        ``start``: the current covariances, where an iterative M-step may
        start (see :meth:`full_form`).

        Returns
        -------
        Tensor
            One covariance per component, or per mixture when :attr:`shared`.
        """
        return self.covariances_from_stats(nk, means_c, s2, reg_covar)

    # -- full form (the joint engine, gaussmix.joint) -------------------------
    def full_form(self, nk: torch.Tensor, scatter: torch.Tensor,
                  start: torch.Tensor | None = None) -> torch.Tensor:
        """The maximum-likelihood covariances of this type, as full matrices,
        from each component's weighted scatter.

        Parameters
        ----------
        nk : Tensor (G, K)
            Effective counts of the components of ``G`` mixtures.
        scatter : Tensor (G, K, D, D)
            ``sum_i r_ik (x_i - mu_k)(x_i - mu_k)^T / n_k``.
        start : Tensor (G, K, D, D), optional
            The current covariances (of this type), where an iterative M-step
            may start (EM's next M-step is then a few iterations away); the
            closed forms ignore it.

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

    def full_form_cholesky(self, covariances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower Cholesky factors of full-form covariances (..., D, D) of this
        type and, per matrix, ``info`` as :func:`torch.linalg.cholesky_ex`
        gives it (0 where factorised).  A type whose matrices have structure
        (diagonal, shared) factorises only what it needs."""
        return torch.linalg.cholesky_ex(covariances)

    def full_form_precisions(self, chol: torch.Tensor) -> torch.Tensor:
        """Inverses (..., D, D) of the full-form covariances whose
        :meth:`full_form_cholesky` factors are ``chol``."""
        return torch.cholesky_inverse(chol)

    def min_count(self, n_features: int) -> int:
        """Smallest effective count of a component for which its own
        covariance parameters are defined (see :mod:`gaussmix.guard`)."""
        raise NotImplementedError

    def matrices(self, covariances: torch.Tensor, n_features: int) -> torch.Tensor:
        """The distinct covariance matrices (M, D, D) of this type's parameter:
        one per component, or one for a shared covariance."""
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
    #: Whether the E-step's log-probabilities and responsibilities are (K, B) (diag).
    component_major = False

    #: Whether a fit builds this form's :meth:`features` once and reads them on
    #: every pass (:mod:`gaussmix.feature_cache`): packed full.  diag's and
    #: spherical's cost too little to build to gain from it (measured: 0.93-1.10x).
    keeps_features = False

    def pass_form(self, n_components: int, n_features: int, device=None) -> "CovarianceType":
        """The strategy whose arithmetic runs a one-shift pass of this type in
        a fit that keeps its chunks' features (:mod:`gaussmix.feature_cache`):
        ``self``, or an equivalent form that costs less at this shape and on
        this device (full covariances on the CPU: :mod:`.full_packed`), whose
        :meth:`features` are built once per fit.  Parameters and statistics
        keep this type's shapes either way."""
        return self

    def moments_around(self, xc: torch.Tensor, resp: torch.Tensor, offsets: torch.Tensor,
                       owner: torch.Tensor | None = None) -> tuple:
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
        owner : Tensor (B,) or (B, 1) of int, optional
            Each row's most likely component (``resp.argmax(1)`` when not
            given; the E-step has it for free).  Only the precision depends
            on it, not the result's value.

        Returns
        -------
        nk : Tensor (K,)
        s1 : Tensor (K, D)
            ``sum_i resp_ik (xc_i - offsets_k)``.
        s2 : Tensor
            Second moments of ``xc_i - offsets_k``, per component.
        """
        raise NotImplementedError

    def raw_moments_around(self, xc: torch.Tensor, resp: torch.Tensor, offsets: torch.Tensor,
                           owner: torch.Tensor | None = None) -> torch.Tensor | None:
        """Additive per-chunk totals that :meth:`moments_from_raw` turns into
        :meth:`moments_around`'s result, or None where a type has none.

        Summing these over the chunks of a pass and converting once lets the
        per-pass part of the arithmetic run once instead of once per chunk.
        """
        return None

    def moments_from_raw(self, raw: torch.Tensor, offsets: torch.Tensor) -> tuple:
        """``(nk, s1, s2)`` in float64 from summed :meth:`raw_moments_around`."""
        raise NotImplementedError

    # -- the variational posterior (gaussmix.variational) ---------------------
    def covariance_prior_shape(self, n_features: int) -> tuple:
        """Shape of the Wishart prior's covariance parameter (scikit-learn's
        ``covariance_prior``): (D, D), (D,) or ()."""
        raise NotImplementedError

    def prior_covariance(self, data_covariance: torch.Tensor) -> torch.Tensor:
        """The default ``covariance_prior`` from the data's covariance (D, D)."""
        raise NotImplementedError

    def check_covariance_prior(self, prior: torch.Tensor, name: str) -> None:
        """Raise ValueError unless ``prior`` (of :meth:`covariance_prior_shape`)
        is a valid covariance of this type."""
        self.check_spd(prior, name)

    def wishart_degrees_of_freedom(self, prior: float, nk: torch.Tensor) -> torch.Tensor:
        """Posterior degrees of freedom of the Wishart: ``prior + n_k``, one per
        covariance."""
        return prior + nk

    def wishart_covariances(self, nk: torch.Tensor, sk: torch.Tensor, diff: torch.Tensor,
                            mean_precision_prior: float, mean_precision: torch.Tensor,
                            covariance_prior: torch.Tensor, dof: torch.Tensor) -> torch.Tensor:
        """The posterior Wishart's scale matrix divided by its degrees of freedom.

        ``(W0 + n_k S_k + n_k beta_0 / beta_k (x_k - m_0)(x_k - m_0)^T) / nu_k``
        in this type's shape (Bishop, eq. 10.62, with the normalisation
        scikit-learn reports as ``covariances_``).

        Parameters
        ----------
        nk : Tensor (K,)
            Effective counts.
        sk : Tensor
            Regularised maximum-likelihood covariances
            (:meth:`covariances_from_stats`).
        diff : Tensor (K, D)
            Component data means minus the prior mean ``m_0``.
        mean_precision_prior : float
            ``beta_0``.
        mean_precision : Tensor (K,)
            ``beta_k = beta_0 + n_k``.
        covariance_prior : Tensor
            ``W0``, of :meth:`covariance_prior_shape`.
        dof : Tensor
            :meth:`wishart_degrees_of_freedom`.
        """
        raise NotImplementedError

    def expected_param_shape(self, n_components: int, n_features: int) -> tuple:
        """Shape of covariances / precisions for this type."""
        return self.stat_shape(n_components, n_features)

    def check_spd(self, mats: torch.Tensor, name: str) -> None:
        """Raise ValueError unless ``mats`` are valid (symmetric) positive definite."""
        raise NotImplementedError

    # -- checks of parameters read from files ----------------------------
    def factor_problem(self, prec_chol: torch.Tensor) -> str | None:
        """Why ``prec_chol`` is not a valid precision factor, or None.

        A valid factor is upper-triangular with a positive diagonal (then
        ``U U^T`` is positive definite and ``log det U`` is defined).
        """
        mats = self._matrix_view(prec_chol)
        if bool((torch.tril(mats, -1) != 0).any()):
            return "is not upper-triangular"
        if not bool((torch.diagonal(mats, dim1=-2, dim2=-1) > 0).all()):
            return "has a diagonal entry <= 0 (a Cholesky factor's diagonal is positive)"
        return None

    def factor_mismatch(self, covariances: torch.Tensor, prec_chol: torch.Tensor) -> float:
        """Largest entry of ``|U^T Sigma U - I|``, each matrix's divided by
        the rounding its conditioning allows (``100 eps cond(Sigma)`` where
        that exceeds 1): zero when the covariances are the inverses of the
        precisions ``U U^T``, and at most of order 1e-2 for a consistent pair
        of any conditioning (a nearly singular float32 covariance and its
        factor disagree by ``eps32 * cond``, which can exceed 1)."""
        mats = self._matrix_view(covariances).double()
        u = self._matrix_view(prec_chol).double()
        eye = torch.eye(mats.shape[-1], dtype=mats.dtype, device=mats.device)
        gap = (u.transpose(-1, -2) @ mats @ u - eye).abs().amax((-1, -2))
        eig = torch.linalg.eigvalsh(mats)
        cond = torch.where(eig[..., 0] > 0, eig[..., -1] / eig[..., 0], torch.inf)
        allowed = (100.0 * torch.finfo(prec_chol.dtype).eps * cond).clamp(min=1.0)
        return float((gap / allowed).max())
