"""The M-step: new parameters from the summed statistics (float64), with the
re-seeding of emptied components and the count floor."""

from __future__ import annotations

import math

import torch

from .covariance import get_covariance_type
from .expectation import _check_finite_stats
from .params import GMMParams
from .reseed import empty_components
from .stats import SuffStats


def count_floor(stats: SuffStats, eps: float) -> torch.Tensor:
    """What the M-step adds to every effective count: ``10 * eps`` samples.

    scikit-learn adds ``10 * eps`` so that an emptied component divides by a
    tiny number rather than zero.  Here it is ``10 * eps`` times the weight of
    one average sample (``stats.weight / stats.count``), so that only the
    relative sample weights matter: weights ``c * w`` give the fit of ``w``
    for any ``c > 0``, and unit weights give scikit-learn's ``10 * eps``.
    """
    # Statistics without a row count (built from responsibilities alone) count
    # one unit of weight as a sample.
    one_sample = torch.where(stats.count > 0, stats.weight / stats.count.clamp_min(1e-300), 1.0)
    return 10.0 * eps * one_sample


def split_points(stats: SuffStats, shift: torch.Tensor, covariance_type: str, reg_covar: float,
                 eps: float, n_points: int) -> torch.Tensor:
    """Re-seed points from the statistics alone (no extra pass, no collective).

    The component with the largest spread mass (count times mean variance)
    is split: the points lie one standard deviation from its mean, along its
    most variable feature, alternately on either side.  Every rank of a
    distributed fit computes the same points from the all-reduced totals.

    Returns
    -------
    Tensor (n_points, D) in float64, original coordinates.
    """
    cov = get_covariance_type(covariance_type)
    nk = stats.nk + count_floor(stats, eps)
    means_c = stats.s1 / nk.unsqueeze(1)
    mats = cov._matrix_view(cov.covariances_from_stats(nk, means_c, stats.s2, reg_covar))
    var = torch.diagonal(mats, dim1=-2, dim2=-1) if mats.dim() == 3 else mats
    var = var.expand(nk.shape[0], means_c.shape[1]).clamp_min(0.0)
    mass = torch.where(empty_components(stats), -math.inf, stats.nk * var.mean(1))
    k = int(torch.argmax(mass))
    axis = int(torch.argmax(var[k]))
    step = torch.zeros_like(means_c[k])
    step[axis] = torch.sqrt(var[k, axis])
    signs = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(n_points)],
                         dtype=step.dtype, device=step.device)
    return means_c[k] + shift.double().expand_as(means_c)[k] + signs[:, None] * step


def _reseed(cov, nk, means_c, covariances, stats, empty, points, shift):
    """Put each empty component on one of ``points`` (original coordinates), with the
    count of one average sample and the count-weighted mean covariance of
    the other components."""
    nk, means_c = nk.clone(), means_c.clone()
    idx = torch.nonzero(empty).flatten()
    take = torch.arange(idx.numel(), device=idx.device) % points.shape[0]
    means_c[idx] = points[take] - shift.expand_as(means_c)[idx]
    nk[idx] = stats.weight / stats.count.clamp_min(1.0)
    mats = cov._matrix_view(covariances)
    if mats.shape[0] == nk.shape[0]:  # one covariance per component (not tied)
        keep = ~empty
        w = stats.nk[keep]
        pooled = (w.reshape(-1, *[1] * (mats.dim() - 1)) * mats[keep]).sum(0) / w.sum()
        mats = mats.clone()
        mats[idx] = pooled
        covariances = mats.reshape(covariances.shape)
    return nk, means_c, covariances


def m_step(
    stats: SuffStats,
    shift: torch.Tensor,
    covariance_type: str,
    reg_covar: float,
    eps: float,
    *,
    reseed: tuple[torch.Tensor, torch.Tensor] | None = None,
    events: list | None = None,
    prior=None,
    prior_variant: str = "me",
) -> GMMParams:
    """New parameters from summed statistics, computed in float64.

    Parameters
    ----------
    stats : SuffStats
    shift : Tensor (D,) or (K, D)
        Where the moments were taken: one shift, or one per component (see
        :func:`moment_shift`).
    covariance_type : str
    reg_covar : float
        Non-negative amount added to every covariance diagonal (absolute, in
        the data's squared units).
    eps : float
        Machine epsilon of the data's dtype.  ``10 * eps`` average samples
        are added to the effective counts (:func:`count_floor`; scikit-learn
        adds ``10 * eps``) so that an emptied component divides by a tiny
        number, not by zero; it also sets the scale of the extra
        regularisation of :meth:`CovarianceType.factorize`.
    reseed : (Tensor (K,) of bool, Tensor (M, D)), optional
        Empty components and the points (original coordinates, M >= 1) to
        put them on; see :func:`empty_components` and :func:`worst_explained`.
        Each re-seeded component gets the weight of one average sample and
        the count-weighted mean covariance of the other components.
    events : list, optional
        Receives a record of every extra regularisation.
    prior : PriorParams, optional
        mclust's conjugate prior (:mod:`gaussmix.prior`): the means and
        covariances are then the posterior mode, by the strategy's
        :meth:`~gaussmix.covariance.conjugate.ConjugateMStep.map_covariances`
        and ``map_means`` (``reg_covar`` is added to the data's scatter, per
        sample); the weights stay ``n_k / n``.
    prior_variant : {"me", "mstep"}, default="me"
        Which of mclust's two M-steps under a prior: the one inside its EM
        (``me``, what ``Mclust`` and its BIC use) or its stand-alone ``mstep``;
        they differ in a few constants (:mod:`gaussmix.covariance.conjugate`).

    Returns
    -------
    GMMParams
        In float64 on the statistics' device.

    Raises
    ------
    ValueError
        If the statistics are not finite.
    CovarianceError
        If a covariance cannot be factorised even after the retries of
        :meth:`CovarianceType.factorize`.
    """
    _check_finite_stats(stats)
    return _m_step(stats, shift, covariance_type, reg_covar, eps, reseed=reseed, events=events,
                   prior=prior, prior_variant=prior_variant)


def _m_step(stats, shift, covariance_type, reg_covar, eps, *, reseed=None, events=None,
            prior=None, prior_variant="me") -> GMMParams:
    """:func:`m_step` on statistics already checked to be finite (the EM
    loop checks them before its re-seeding)."""
    cov = get_covariance_type(covariance_type)
    nk = stats.nk + count_floor(stats, eps)
    means_c = stats.s1 / nk.unsqueeze(1)
    shift64 = shift.double()
    if prior is None:
        covariances = cov.covariances_from_stats(nk, means_c, stats.s2, reg_covar)
    else:
        diff = means_c - (prior.mean.to(means_c) - shift64)
        covariances = cov.map_covariances(nk, means_c, stats.s2, diff, prior, reg_covar,
                                          prior_variant)
        means_c = cov.map_means(nk, means_c, diff, prior, prior_variant)
    if reseed is not None and bool(reseed[0].any()) and reseed[1].shape[0] > 0:
        empty, points = reseed
        nk, means_c, covariances = _reseed(
            cov, nk, means_c, covariances, stats, empty, points.double(), shift64
        )
    # Scale of the raw second moments that were centred: their rounding error
    # (eps times it) bounds what extra regularisation may be needed.
    raw = cov._diagonal_scale(stats.s2)
    raw = raw / (nk if raw.shape[0] == nk.shape[0] else nk.sum())
    prec_chol, covariances = cov.factorize(covariances, reg_covar, eps, events, scale=raw)
    return GMMParams(
        weights=nk / nk.sum(),
        means=means_c + shift64,
        precisions_cholesky=prec_chol,
        covariance_type=covariance_type,
        covariances=covariances,
    )
