"""Rival runs: which run of a batch may stop early because another will win.

A model search continues several starts of the same candidate (its
"rivals") and needs only the best.  Both batched engines
(:func:`gaussmix.joint.fit_joint`, :func:`gaussmix.batched.fit_batched`)
stop a run whose predicted final log-likelihood (:func:`hopeless`) falls
clearly below the best of its rivals (:class:`Leads`).

A run whose component collapses (a handful of points, a variance at the
regularisation) climbs in log-likelihood without bound, and the model
selection's guard (:mod:`gaussmix.guard`) will exclude it; compared with it,
the run that ends as the candidate's clean fit would be stopped.  So a run
that looks sound (clear of collapse: :func:`sound_groups` and
:meth:`gaussmix.run_pack._Pack.sound`) is compared with the best sound rival
only.
"""

from __future__ import annotations

import math

import torch

__all__ = ["PRUNE_AFTER", "SOUND_COUNT_FACTOR", "SOUND_MIN_PIVOT", "Leads", "hopeless",
           "prune_margin", "sound_groups"]

#: Iterations a run makes before it may be stopped as hopeless.
PRUNE_AFTER = 10

#: A mixture looks sound while every component holds at least
#: ``SOUND_COUNT_FACTOR`` times the points its covariance needs
#: (:meth:`~gaussmix.covariance.CovarianceType.min_count`) and every pivot of
#: its covariances' Cholesky factors, squared, on standardised data, is at
#: least ``SOUND_MIN_PIVOT`` (a collapsed component sits at the
#: regularisation, 1e-8 relative).  The margins above the guard's own
#: thresholds (1 x the count, an eigenvalue of
#: :data:`gaussmix.guard.VARIANCE_RTOL`) catch a collapse on its way.  A pivot
#: is never below the smallest eigenvalue but may be far above it (a matrix
#: pinned at eigenvalue ``e`` along a diagonal direction has a least pivot
#: near ``sqrt(e * largest)``): such a mixture looks sound, and is compared as
#: every run was before this test existed.
SOUND_COUNT_FACTOR = 1.5
SOUND_MIN_PIVOT = 1e-4


def prune_margin(total_log_likelihood: float) -> float:
    """How far (total log-likelihood) below its best rival a run's predicted
    end must be to stop it: one unit, or 1e-4 relative on large totals."""
    return max(1.0, 1e-4 * abs(total_log_likelihood))


def hopeless(history: list, lead: float, count: float) -> bool:
    """Whether a run predicted to end well below ``lead`` should stop.

    EM's log-likelihood converges about linearly; with ratio ``a`` of its last
    two increments, Aitken's extrapolation ``l + d a / (1 - a)`` estimates its
    limit.  Without a usable ratio (increments not shrinking) nothing is
    predicted and the run goes on.

    Parameters
    ----------
    history : list of float
        The run's mean log-likelihood per sample, one entry per iteration.
    lead : float
        The best mean log-likelihood of its rivals (``-inf``: none).
    count : float
        Number (total weight) of samples.

    Returns
    -------
    bool
    """
    if len(history) < PRUNE_AFTER:
        return False
    d0 = history[-2] - history[-3]
    d1 = history[-1] - history[-2]
    if not (d0 > 0 and 0 <= d1 < d0):
        return False
    a = d1 / d0
    limit = history[-1] + d1 * a / (1 - a)
    return count * (lead - limit) > prune_margin(count * lead)


class Leads:
    """The best mean log-likelihood of each label's runs: of all of them, and
    of those that look sound.  A sound run is compared with the second."""

    __slots__ = ("_best",)

    def __init__(self):
        self._best = {False: {}, True: {}}

    def add(self, label, value: float, sound: bool) -> None:
        """Count a run of ``label`` at ``value``."""
        for key in ((False, True) if sound else (False,)):
            best = self._best[key]
            best[label] = max(best.get(label, -math.inf), value)

    def of(self, label, sound: bool) -> float:
        """What a run of ``label`` (``sound`` or not) is compared with."""
        return self._best[bool(sound)].get(label, -math.inf)

    def copy(self) -> "Leads":
        """An independent copy (a pass adds its active runs to a copy of the
        finished ones)."""
        out = Leads()
        out._best = {key: dict(best) for key, best in self._best.items()}
        return out


def sound_groups(batch, n_samples: float, n_features: int) -> list:
    """Per mixture of a per-type batch (:class:`gaussmix.batched._Batch`,
    covariances stored), whether it looks clear of collapse: counts
    ``n_samples * weight`` and the squared pivots of each covariance matrix's
    Cholesky factor, in the units of the data the batch is fitted on.

    Returns
    -------
    list of bool
    """
    cov = batch.cov
    mats = batch.covs if cov.shared else cov.matrices(batch.covs, n_features)
    pivots = torch.linalg.cholesky_ex(mats.double())[0].diagonal(dim1=-2, dim2=-1)
    low = pivots.square().amin(-1)
    n_groups = len(batch.sizes)
    inf = torch.full((n_groups,), math.inf, dtype=torch.float64, device=low.device)
    if not cov.shared:
        low = inf.scatter_reduce(0, batch.owner, low, "amin")
    least = inf.scatter_reduce(0, batch.owner, batch.weights.double() * n_samples, "amin")
    need = SOUND_COUNT_FACTOR * cov.min_count(n_features)
    return ((least >= need) & (low >= SOUND_MIN_PIVOT)).tolist()
