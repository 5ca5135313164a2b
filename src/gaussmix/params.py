"""Mixture parameters as an immutable bundle of tensors."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .covariance import CovarianceType, get_covariance_type

__all__ = ["GMMParams", "find_problem"]


@dataclass(frozen=True)
class GMMParams:
    """Parameters of a Gaussian mixture.

    Parameters
    ----------
    weights : Tensor of shape (K,)
        Mixing weights, summing to one.
    means : Tensor of shape (K, D)
        Component means.
    precisions_cholesky : Tensor
        Cholesky factors of the precisions, in the shape the covariance type
        dictates (see :mod:`gaussmix.covariance`).
    covariance_type : str
        One of ``"full"``, ``"tied"``, ``"diag"``, ``"spherical"``.
    covariances : Tensor or None
        The covariances these factors came from, when known (kept so that the
        exact M-step values are reported rather than re-derived).
    """

    weights: torch.Tensor
    means: torch.Tensor
    precisions_cholesky: torch.Tensor
    covariance_type: str
    covariances: torch.Tensor | None = None

    @property
    def cov(self) -> CovarianceType:
        """The covariance strategy."""
        return get_covariance_type(self.covariance_type)

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return int(self.means.shape[0])

    @property
    def n_features(self) -> int:
        """Number of features D."""
        return int(self.means.shape[1])

    @property
    def shift(self) -> torch.Tensor:
        """Mixture mean ``weights @ means``.

        Data are centred on it before any matmul, so that large offsets (data
        around 1e6 with unit spread) cost no precision in float32.  It is a
        function of the parameters alone, so every rank and every chunk agree.
        Computed once per bundle (an EM iteration reads it several times);
        any shift gives the same mixture, it only sets the rounding.
        """
        cached = self.__dict__.get("_shift")
        if cached is None:
            cached = self.weights.to(self.means.dtype) @ self.means
            object.__setattr__(self, "_shift", cached)
        return cached

    def to(self, device=None, dtype=None) -> "GMMParams":
        """Move every tensor to ``device`` and/or ``dtype`` (``self`` when they
        are there already: the same tensors, without the copy of the bundle)."""
        held = [t for t in (self.weights, self.means, self.precisions_cholesky, self.covariances)
                if t is not None]
        if ((dtype is None or all(t.dtype == dtype for t in held))
                and (device is None or (isinstance(device, torch.device)
                                        and all(t.device == device for t in held)))):
            return self

        def mv(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return replace(
            self,
            weights=mv(self.weights),
            means=mv(self.means),
            precisions_cholesky=mv(self.precisions_cholesky),
            covariances=mv(self.covariances),
        )

    def clone(self) -> "GMMParams":
        """A copy with tensors of its own (ordinary tensors even when these were
        made under ``torch.inference_mode``)."""

        def cp(t):
            return None if t is None else t.clone()

        return replace(self, weights=cp(self.weights), means=cp(self.means),
                       precisions_cholesky=cp(self.precisions_cholesky),
                       covariances=cp(self.covariances))

    def log_weight_terms(self) -> torch.Tensor:
        """The E-step's per-component constant besides the Gaussian's own
        normalisation: ``log w_k`` (a variational posterior puts its expected
        log-weights and precision terms here, see :mod:`gaussmix.variational`)."""
        return torch.log(self.weights)

    def get_covariances(self) -> torch.Tensor:
        """Covariances, derived from the precision factors if not stored."""
        if self.covariances is not None:
            return self.covariances
        return self.cov.covariances(self.precisions_cholesky)

    def with_covariances(self) -> "GMMParams":
        """``self`` with its covariances stored (derived from the precision
        factors when not known)."""
        if self.covariances is not None:
            return self
        return replace(self, covariances=self.get_covariances())

    def get_precisions(self) -> torch.Tensor:
        """Precision matrices (or vectors / scalars for diag / spherical)."""
        return self.cov.precisions(self.precisions_cholesky)

    def n_parameters(self) -> int:
        """Number of free parameters."""
        return self.cov.n_parameters(self.n_components, self.n_features)


def find_problem(params: GMMParams, precisions: torch.Tensor | None = None,
                 size: tuple[int, int] | None = None) -> tuple[str, str] | None:
    """The first field of ``params`` whose values cannot be a fitted mixture.

    Checked in order: shapes (from the means' ``(K, D)`` and the covariance
    type), finite values, weights that are a distribution (non-negative,
    summing to one within ``sqrt(eps)`` of the dtype), precision factors that
    are upper-triangular with a positive diagonal, and covariances (and
    ``precisions`` when given) consistent with the factors.

    Parameters
    ----------
    params : GMMParams
        Parameters read from a file (any dtype, on any device).
    precisions : Tensor, optional
        Stored precisions, checked against ``U U^T``.
    size : (n_components, n_features), optional
        The expected sizes; default: those of the means.

    Returns
    -------
    (field, problem) or None
        The field's name and a phrase saying what is wrong with it.
    """
    cov = params.cov
    if size is None:
        if params.means.dim() != 2:
            return "means", f"has shape {tuple(params.means.shape)}, expected (n_components, n_features)"
        size = tuple(params.means.shape)
    k, d = size
    shape = cov.expected_param_shape(k, d)
    fields = {"weights": (params.weights, (k,)), "means": (params.means, (k, d)),
              "precisions_cholesky": (params.precisions_cholesky, shape)}
    if params.covariances is not None:
        fields["covariances"] = (params.covariances, shape)
    if precisions is not None:
        fields["precisions"] = (precisions, shape)
    for name, (t, want) in fields.items():
        if tuple(t.shape) != tuple(want):
            return name, f"has shape {tuple(t.shape)}, expected {tuple(want)}"
        if not t.is_floating_point():
            return name, f"has dtype {t.dtype}, expected float32 or float64"
        if not bool(torch.isfinite(t).all()):
            return name, "contains NaN or infinity"
    w = params.weights.double()
    tol = torch.finfo(params.weights.dtype).eps ** 0.5
    if bool((w < 0).any()) or abs(float(w.sum()) - 1.0) > tol:
        return "weights", (f"is not a distribution (min {float(w.min()):.6g}, sum "
                           f"{float(w.sum()):.12g}; weights are >= 0 and sum to 1)")
    problem = cov.factor_problem(params.precisions_cholesky)
    if problem is not None:
        return "precisions_cholesky", problem
    # Rounding gives eps * cond(Sigma); a disagreement this large means the
    # arrays describe different models.
    limit = 1e-3 if params.precisions_cholesky.dtype == torch.float64 else 0.05
    if params.covariances is not None:
        gap = cov.factor_mismatch(params.covariances, params.precisions_cholesky)
        if not gap <= limit:
            return "covariances", (f"disagree with precisions_cholesky (|U^T Sigma U - I| up to "
                                   f"{gap:.3g}; they must be inverses of each other)")
    if precisions is not None:
        derived = cov.precisions(params.precisions_cholesky.double())
        gap = float((precisions.double() - derived).abs().max() / derived.abs().max())
        if not gap <= limit:
            return "precisions", (f"disagree with precisions_cholesky (relative difference "
                                  f"{gap:.3g}; precisions must equal U U^T)")
    return None
