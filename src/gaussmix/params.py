"""Mixture parameters as an immutable bundle of tensors."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .covariance import CovarianceType, get_covariance_type

__all__ = ["GMMParams"]


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
        """
        return self.weights.to(self.means.dtype) @ self.means

    def to(self, device=None, dtype=None) -> "GMMParams":
        """Move every tensor to ``device`` and/or ``dtype``."""

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

    def get_precisions(self) -> torch.Tensor:
        """Precision matrices (or vectors / scalars for diag / spherical)."""
        return self.cov.precisions(self.precisions_cholesky)

    def n_parameters(self) -> int:
        """Number of free parameters."""
        return self.cov.n_parameters(self.n_components, self.n_features)
