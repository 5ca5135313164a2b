"""One mixture of the joint EM engine (:mod:`gaussmix.joint`) and where its
parameters are kept.

The engine advances hundreds of runs in one padded batch
(:mod:`gaussmix.run_pack`) and hands each run back its parameters when it
stops.  Slicing every run's rows out of the batch, and later joining them
into the next batch, cost a few kernel calls per run; so a stopped run holds
a reference to its row of the batch it stopped in (:class:`StoredRows`), its
parameters are sliced only when read, and the next batch gathers whole rows
with one indexed copy per parameter.
"""

from __future__ import annotations

import math

import torch

from .covariance import get_covariance_type
from .covariance.base import _LOG_2PI
from .em import EMResult
from .params import GMMParams

__all__ = ["JointRun", "StoredRows"]


class StoredRows:
    """The padded parameters (G, K_max, ...) of a batch at the moment some of
    its runs stopped; never modified afterwards (the batch replaces its
    tensors at every step rather than writing into them).

    Attributes
    ----------
    weights : Tensor (G, K_max)
    means : Tensor (G, K_max, D)
    covs : Tensor (G, K_max, D, D)
    chol : Tensor (G, K_max, D, D) or None
        Lower Cholesky factors of ``covs``.
    """

    __slots__ = ("weights", "means", "covs", "chol")

    def __init__(self, weights, means, covs, chol):
        self.weights, self.means, self.covs, self.chol = weights, means, covs, chol


class JointRun:
    """One mixture of the joint engine, in full form and the data's coordinates.

    Parameters
    ----------
    cov_name : str
    k : int
    units : Tensor (D,) or None
        The type's units per feature (``x_type = x * units``); None for the
        data's own.
    weights, means, covariances : Tensor, optional
        Initial parameters (K,), (K, D), (K, D, D); covariances regularised,
        in the data's coordinates.

    Attributes
    ----------
    weights, means, covariances : Tensor or None
        The current parameters (None before any).
    n_iter : int
        EM iterations run.
    history : list of float
        Mean log-likelihood per sample of every iteration's E-step.
    converged, failed : bool
        ``failed``: a step needed what the engine does not do (an emptied
        component, non-finite totals, a covariance that cannot be factorised).
    """

    def __init__(self, cov_name: str, k: int, units: torch.Tensor | None = None,
                 weights: torch.Tensor | None = None, means: torch.Tensor | None = None,
                 covariances: torch.Tensor | None = None):
        self.cov_name, self.k, self.units = cov_name, k, units
        self._own = (weights, means, covariances)
        # (StoredRows, row) once a batch has stored the run; else None.
        self.slot: tuple | None = None
        self.n_iter = 0
        self.history: list = []
        self.converged = False
        self.failed = False

    def __repr__(self) -> str:
        return (f"JointRun({self.cov_name!r}, k={self.k}, n_iter={self.n_iter}, "
                f"converged={self.converged}, failed={self.failed})")

    def keep_in(self, rows: StoredRows, row: int) -> None:
        """Make row ``row`` of ``rows`` (its first ``k`` slots) the run's parameters."""
        self.slot = (rows, row)
        self._own = (None, None, None)

    @property
    def has_params(self) -> bool:
        """Whether the run has parameters."""
        return self.slot is not None or self._own[0] is not None

    def _param(self, i: int, name: str):
        if self.slot is None:
            return self._own[i]
        rows, row = self.slot
        return getattr(rows, name)[row, :self.k]

    @property
    def weights(self) -> torch.Tensor | None:
        return self._param(0, "weights")

    @property
    def means(self) -> torch.Tensor | None:
        return self._param(1, "means")

    @property
    def covariances(self) -> torch.Tensor | None:
        return self._param(2, "covs")

    @property
    def lower_bound(self) -> float:
        """The last mean log-likelihood per sample (``-inf`` before any)."""
        return self.history[-1] if self.history else -math.inf

    def log_prob(self, X: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(x | mu_k, Sigma_k)`` (N, K) in the data's coordinates."""
        chol = torch.linalg.cholesky(self.covariances)
        z = torch.linalg.solve_triangular(
            chol, (X.double().unsqueeze(0) - self.means.unsqueeze(1)).transpose(1, 2), upper=False)
        maha = (z * z).sum(1).T
        half_logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        d = X.shape[1]
        return torch.log(self.weights) - half_logdet - 0.5 * (d * _LOG_2PI + maha)

    def log_jacobian(self) -> float:
        """Log-density per sample in the type's units minus that in the data's."""
        return 0.0 if self.units is None else -float(torch.log(self.units).sum())

    def result(self, dtype=torch.float64) -> EMResult:
        """The run as an :class:`~gaussmix.em.EMResult` in the type's units and
        native parameter shapes (log-likelihoods shifted by the Jacobian)."""
        cov = get_covariance_type(self.cov_name)
        means, full = self.means, self.covariances
        shift = self.log_jacobian()
        if self.units is not None:
            u = self.units
            means, full = means * u, full * (u.unsqueeze(1) * u.unsqueeze(0))
        native = cov.from_full_form(full)
        params = GMMParams(self.weights, means, cov.precisions_cholesky(native), self.cov_name,
                           covariances=native).to(dtype=dtype)
        return EMResult(params, self.converged, self.n_iter, self.lower_bound + shift,
                        [v + shift for v in self.history], [])
