"""Stepwise (online) EM, after Cappé & Moulines (2009).

The statistics of a mini-batch, normalised per unit of sample weight, are
blended into running statistics::

    s_t = (1 - eta_t) * s_{t-1} + eta_t * s_batch / W_batch,
    eta_t = (learning_offset + t) ** (-learning_decay),

and the parameters are the M-step of ``s_t``.  With ``learning_decay`` in
(0.5, 1] the steps satisfy ``sum eta_t = inf`` and ``sum eta_t**2 < inf``,
the Robbins-Monro conditions under which stepwise EM converges to a
stationary point of the expected log-likelihood.  The first batch seen (or a
prior :meth:`GaussianMixture.fit`) sets ``s_0`` to that batch's normalised
statistics under the starting parameters (one EM step on it).

Second moments are accumulated around a shift fixed at the first batch
(its weighted mean) so that statistics of different batches can be added.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .em import e_step, m_step
from .params import GMMParams
from .stats import SuffStats

__all__ = ["OnlineState", "batch_stats", "step_size", "online_step"]


@dataclass
class OnlineState:
    """Running state of stepwise EM.

    Attributes
    ----------
    stats : SuffStats
        Running statistics, normalised per unit of sample weight.
    shift : Tensor (D,)
        Fixed centre of the second moments.
    n_updates : int
        Batches blended in after the first (``t`` of the step-size schedule).
    """

    stats: SuffStats
    shift: torch.Tensor
    n_updates: int = 0


def batch_stats(
    X: torch.Tensor, params: GMMParams, shift: torch.Tensor, sample_weight: torch.Tensor | None = None
) -> SuffStats:
    """Statistics of one batch around ``shift``, divided by its total weight.

    Parameters
    ----------
    X : Tensor (B, D)
    params : GMMParams
        Parameters of the E-step.
    shift : Tensor (D,)
        Centre of the first and second moments.
    sample_weight : Tensor (B,), optional

    Returns
    -------
    SuffStats
        ``nk`` sums to one; ``log_likelihood / weight`` is the batch's mean
        log-likelihood under ``params``.
    """
    cov = params.cov
    log_resp, log_prob = e_step(X, params)
    resp = torch.exp(log_resp)
    if sample_weight is None:
        w = torch.ones(X.shape[0], dtype=X.dtype, device=X.device)
    else:
        w = sample_weight
    resp = resp * w.unsqueeze(1)
    xc = X - shift.to(X.dtype)
    total = w.double().sum()
    stats = SuffStats(
        nk=resp.sum(0).double(),
        s1=(resp.T @ xc).double(),
        s2=cov.second_moment(xc, resp).double(),
        log_likelihood=(log_prob.double() * w.double()).sum(),
        weight=total,
        count=torch.tensor(float(X.shape[0]), dtype=torch.float64, device=X.device),
    )
    # Per unit weight, but the row count stays a count: the M-step's count
    # floor (one average sample's weight, weight / count) then scales with
    # the normalised counts whatever the scale of the weights.
    scaled = stats.scaled(1.0 / float(total))
    scaled.count = stats.count
    return scaled


def step_size(t: int, learning_decay: float, learning_offset: float) -> float:
    """``eta_t = (learning_offset + t) ** (-learning_decay)`` for ``t >= 1``."""
    return float((learning_offset + t) ** (-learning_decay))


def online_step(
    state: OnlineState | None,
    X: torch.Tensor,
    sample_weight: torch.Tensor | None,
    params: GMMParams,
    *,
    reg_covar: float,
    learning_decay: float,
    learning_offset: float,
) -> tuple[OnlineState, GMMParams, float]:
    """One stepwise-EM update from a mini-batch.

    Parameters
    ----------
    state : OnlineState or None
        ``None`` starts the running statistics from this batch.
    X : Tensor (B, D)
    sample_weight : Tensor (B,), optional
    params : GMMParams
        Current parameters.
    reg_covar, learning_decay, learning_offset : float

    Returns
    -------
    state : OnlineState
    params : GMMParams
        New parameters, in ``params``' dtype.
    batch_log_likelihood : float
        Mean log-likelihood of the batch under the parameters before the update.
    """
    dtype = params.means.dtype
    if state is None:
        if sample_weight is None:
            shift = X.double().mean(0)
        else:
            w = sample_weight.double()
            shift = (w.unsqueeze(1) * X.double()).sum(0) / w.sum()
        s = batch_stats(X, params, shift, sample_weight)
        state = OnlineState(stats=s, shift=shift, n_updates=0)
    else:
        s_batch = batch_stats(X, params, state.shift, sample_weight)
        t = state.n_updates + 1
        eta = step_size(t, learning_decay, learning_offset)
        blended = state.stats.scaled(1.0 - eta).add_(s_batch.scaled(eta))
        state = OnlineState(stats=blended, shift=state.shift, n_updates=t)
        s = s_batch
    ll = float(s.log_likelihood / s.weight)
    eps = torch.finfo(dtype).eps
    new = m_step(state.stats, state.shift, params.covariance_type, reg_covar, eps).to(dtype=dtype)
    return state, new, ll
