"""Variational inference for a Bayesian Gaussian mixture, from EM's totals.

The mean-field posterior of Bishop (2006, sec. 10.2) and scikit-learn's
``BayesianGaussianMixture``: a Dirichlet distribution or a Dirichlet process
(stick-breaking) over the weights, and a Gaussian-Wishart over each component's
mean and precision.  Its update needs exactly the per-component totals of EM
(``n_k``, ``s1``, ``S2`` of :class:`gaussmix.stats.SuffStats`), so the
variational fit runs in :func:`gaussmix.em.run_em` unchanged: chunked,
streamed and distributed fits stay exact.  Only two things differ from EM:
the E-step's per-component constant (expected log-weight and precision
terms, :meth:`VariationalParams.log_weight_terms`) and the update
(:class:`VariationalUpdate`), whose lower bound (the ELBO, up to scikit-learn's
dropped constants) also needs the responsibilities' entropy
(:class:`gaussmix.stats.VariationalStats`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from .covariance import get_covariance_type
from .em import accumulate
from .params import GMMParams
from .stats import SuffStats

__all__ = [
    "Priors",
    "DirichletDistribution",
    "DirichletProcess",
    "WEIGHT_PRIORS",
    "VariationalParams",
    "VariationalUpdate",
    "estep_terms",
    "data_moments",
]

_LOG_2 = math.log(2.0)


class DirichletDistribution:
    """A finite Dirichlet prior over the weights (concentration per component)."""

    name = "dirichlet_distribution"

    def posterior(self, nk: torch.Tensor, prior: float) -> torch.Tensor:
        """Posterior concentrations (K,)."""
        return prior + nk

    def expected_log_weights(self, conc: torch.Tensor) -> torch.Tensor:
        """``E[log pi_k]`` (K,)."""
        return torch.digamma(conc) - torch.digamma(conc.sum())

    def weights(self, conc: torch.Tensor) -> torch.Tensor:
        """Posterior mean weights (K,)."""
        return conc / conc.sum()

    def log_norm(self, conc: torch.Tensor) -> torch.Tensor:
        """Log normalisation constant of the posterior Dirichlet."""
        return torch.lgamma(conc.sum()) - torch.lgamma(conc).sum()

    def output(self, conc: torch.Tensor, to_output):
        """scikit-learn's ``weight_concentration_``: one array."""
        return to_output(conc)


class DirichletProcess(DirichletDistribution):
    """A truncated stick-breaking (Dirichlet process) prior over the weights.

    The posterior concentration is a (2, K) tensor: the Beta parameters of
    each stick fraction.  Later components see only what earlier ones left,
    so the order of the components matters.
    """

    name = "dirichlet_process"

    def posterior(self, nk, prior):
        # b_k = prior + sum_{j > k} n_j
        after = torch.cat([nk.flip(0).cumsum(0).flip(0)[1:], nk.new_zeros(1)])
        return torch.stack([1.0 + nk, prior + after])

    def expected_log_weights(self, conc):
        a, b = conc
        digamma_sum = torch.digamma(a + b)
        log_stick = torch.digamma(b) - digamma_sum
        before = torch.cat([log_stick.new_zeros(1), torch.cumsum(log_stick, 0)[:-1]])
        return torch.digamma(a) - digamma_sum + before

    def weights(self, conc):
        a, b = conc
        left = torch.cat([a.new_ones(1), torch.cumprod(b / (a + b), 0)[:-1]])
        w = a / (a + b) * left
        return w / w.sum()

    def log_norm(self, conc):
        a, b = conc
        return -(torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)).sum()

    def output(self, conc, to_output):
        """scikit-learn's ``weight_concentration_``: a pair of arrays."""
        return to_output(conc[0]), to_output(conc[1])


WEIGHT_PRIORS = {cls.name: cls() for cls in (DirichletProcess, DirichletDistribution)}


@dataclass(frozen=True)
class Priors:
    """The prior's parameters, resolved against the data (float64).

    Parameters
    ----------
    weight_concentration : float
        ``gamma_0`` (Dirichlet process) or ``alpha_0`` (Dirichlet distribution).
    mean_precision : float
        ``beta_0``.
    mean : Tensor (D,)
        ``m_0``.
    degrees_of_freedom : float
        ``nu_0 > D - 1``.
    covariance : Tensor
        ``W0^{-1}``, in the shape of the covariance type's
        :meth:`~gaussmix.covariance.CovarianceType.covariance_prior_shape`.
    """

    weight_concentration: float
    mean_precision: float
    mean: torch.Tensor
    degrees_of_freedom: float
    covariance: torch.Tensor


@dataclass(frozen=True)
class VariationalParams(GMMParams):
    """A variational posterior, usable wherever :class:`GMMParams` are.

    ``weights``, ``means``, ``covariances`` and ``precisions_cholesky`` are
    scikit-learn's reported point estimates (posterior mean weights, posterior
    means, Wishart scale over degrees of freedom); the E-step under these
    parameters is the variational E-step because :meth:`log_weight_terms`
    returns the expected log-weights plus the Wishart's precision terms.  The
    posterior's own parameters stay float64 on every dtype.

    Parameters
    ----------
    weight_concentration : Tensor (K,) or (2, K)
    mean_precision : Tensor (K,)
    degrees_of_freedom : Tensor (K,) or () for tied
    estep_terms : Tensor (K,)
        ``E[log pi_k] + 1/2 (E[log |Lambda_k|] - D log nu_k - D / beta_k)``.
    """

    weight_concentration: torch.Tensor | None = None
    mean_precision: torch.Tensor | None = None
    degrees_of_freedom: torch.Tensor | None = None
    estep_terms: torch.Tensor | None = None

    def log_weight_terms(self) -> torch.Tensor:
        return self.estep_terms.to(self.means.dtype)

    def to(self, device=None, dtype=None) -> "VariationalParams":
        moved = super().to(device=device, dtype=dtype)
        return replace(
            moved,
            weight_concentration=self.weight_concentration.to(device=device),
            mean_precision=self.mean_precision.to(device=device),
            degrees_of_freedom=self.degrees_of_freedom.to(device=device),
            estep_terms=self.estep_terms.to(device=device),
        )

    def clone(self) -> "VariationalParams":
        return replace(
            super().clone(),
            weight_concentration=self.weight_concentration.clone(),
            mean_precision=self.mean_precision.clone(),
            degrees_of_freedom=self.degrees_of_freedom.clone(),
            estep_terms=self.estep_terms.clone(),
        )


def _digamma_sum(dof: torch.Tensor, n_features: int, fn) -> torch.Tensor:
    """``sum_{d < D} fn((nu - d) / 2)`` per degrees of freedom."""
    d = torch.arange(n_features, dtype=dof.dtype, device=dof.device)
    return fn(0.5 * (dof.unsqueeze(-1) - d)).sum(-1)


def estep_terms(weight_prior, weight_concentration: torch.Tensor, mean_precision: torch.Tensor,
                degrees_of_freedom: torch.Tensor, n_features: int) -> torch.Tensor:
    """The variational E-step's per-component constant (float64, shape (K,)).

    ``E[log pi_k] + 1/2 (E[log |Lambda_k|] - D log nu_k - D / beta_k)``: the
    expected log-weight plus the Wishart's precision terms that the
    normalised precision factors do not carry.

    Parameters
    ----------
    weight_prior : DirichletDistribution or DirichletProcess
    weight_concentration : Tensor (K,) or (2, K)
    mean_precision : Tensor (K,)
    degrees_of_freedom : Tensor (K,) or ()
    n_features : int
    """
    d, dof = n_features, degrees_of_freedom
    # E[log |Lambda_k|] less the D log nu_k that the normalised factors carry.
    log_lambda = d * _LOG_2 + _digamma_sum(dof, d, torch.digamma)
    return weight_prior.expected_log_weights(weight_concentration) + 0.5 * (
        log_lambda - d * torch.log(dof) - d / mean_precision
    )


class VariationalUpdate:
    """The variational update and lower bound for :func:`gaussmix.em.run_em`.

    Parameters
    ----------
    covariance_type : str
    weight_prior : {"dirichlet_process", "dirichlet_distribution"}
    priors : Priors
    reg_covar : float
        Added to the diagonal of each component's data covariance ``S_k``
        before the Wishart update, as scikit-learn does.
    """

    def __init__(self, covariance_type: str, weight_prior: str, priors: Priors, reg_covar: float):
        self.covariance_type = covariance_type
        self.cov = get_covariance_type(covariance_type)
        self.weight_prior = WEIGHT_PRIORS[weight_prior]
        self.priors = priors
        self.reg_covar = reg_covar

    def params(self, stats: SuffStats, shift: torch.Tensor, eps: float,
               events: list | None = None) -> VariationalParams:
        """The posterior given the totals of one pass, in float64.

        Parameters
        ----------
        stats : SuffStats
            Totals of the responsibilities (moments around ``shift``).
        shift : Tensor (D,) or (K, D)
            Where the moments were taken (see :func:`gaussmix.em.moment_shift`).
        eps : float
            Machine epsilon of the data's dtype (``10 * eps`` is added to the
            counts, as in EM).
        events : list, optional
            Receives a record of any extra regularisation of the factorisation.
        """
        cov, p = self.cov, self.priors
        nk = stats.nk + 10.0 * eps
        means_c = stats.s1 / nk.unsqueeze(1)
        sk = cov.covariances_from_stats(nk, means_c, stats.s2, self.reg_covar)
        xk = means_c + shift.double()
        mean = p.mean.to(xk.device)
        conc = self.weight_prior.posterior(nk, p.weight_concentration)
        beta = p.mean_precision + nk
        means = (p.mean_precision * mean + nk.unsqueeze(1) * xk) / beta.unsqueeze(1)
        dof = cov.wishart_degrees_of_freedom(p.degrees_of_freedom, nk)
        covariances = cov.wishart_covariances(
            nk, sk, xk - mean, p.mean_precision, beta, p.covariance.to(xk.device), dof
        )
        prec_chol, covariances = cov.factorize(covariances, self.reg_covar, eps, events)
        return VariationalParams(
            weights=self.weight_prior.weights(conc),
            means=means,
            precisions_cholesky=prec_chol,
            covariance_type=self.covariance_type,
            covariances=covariances,
            weight_concentration=conc,
            mean_precision=beta,
            degrees_of_freedom=dof,
            estep_terms=estep_terms(self.weight_prior, conc, beta, dof, means.shape[1]),
        )

    def lower_bound(self, stats, params: VariationalParams) -> float:
        """The evidence lower bound, without scikit-learn's dropped constants.

        Parameters
        ----------
        stats : VariationalStats
            Totals of the E-step that produced ``params``' update.
        params : VariationalParams
            The posterior after the update (float64).
        """
        d, k = params.n_features, params.n_components
        dof = params.degrees_of_freedom
        log_det = self.cov.log_det(params.precisions_cholesky.double(), d) - 0.5 * d * torch.log(dof)
        log_wishart_norm = -(dof * log_det + dof * d * 0.5 * _LOG_2
                             + _digamma_sum(dof, d, torch.lgamma))
        # A tied Wishart counts once per component (scikit-learn's convention).
        log_wishart = log_wishart_norm.expand(k).sum()
        value = (
            -stats.entropy
            - log_wishart
            - self.weight_prior.log_norm(params.weight_concentration)
            - 0.5 * d * torch.log(params.mean_precision).sum()
        )
        return float(value)


def data_moments(chunks, center: torch.Tensor, reduce=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and covariance of the data, in one pass (float64).

    The covariance divides by ``total weight - 1`` (``numpy.cov``'s unbiased
    estimate, a weight counting as that many copies of its row), or by the
    total weight when that is at most one.

    Parameters
    ----------
    chunks : iterable of (X_chunk, weight_chunk)
    center : Tensor (D,)
        A point near the data's mean, in the data's dtype: the moments are
        taken around it, so that offset data lose no precision.
    reduce : callable, optional
        Sums the totals across ranks.

    Returns
    -------
    mean : Tensor (D,)
    covariance : Tensor (D, D)
    """
    d = center.shape[0]
    one = GMMParams(
        weights=center.new_ones(1),
        means=center.unsqueeze(0),
        precisions_cholesky=torch.eye(d, dtype=center.dtype, device=center.device).unsqueeze(0),
        covariance_type="full",
    )
    # One component takes every row: its totals are the data's.
    stats = accumulate(chunks, one)
    if reduce is not None:
        stats = reduce(stats)
    total = stats.nk[0]
    offset = stats.s1[0] / total
    scatter = stats.s2[0] - total * torch.outer(offset, offset)
    denom = total - 1.0 if float(total) > 1.0 else total
    return offset + center.double(), 0.5 * (scatter + scatter.T) / denom
