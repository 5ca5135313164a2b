"""The EM loop (:func:`run_em`) and its result (:class:`EMResult`).

The pieces it iterates are modules of their own: the E-step and the
sufficient statistics of a pass (:mod:`gaussmix.expectation`), the M-step
(:mod:`gaussmix.maximization`) and the re-seeding of emptied components
(:mod:`gaussmix.reseed`); their public names are importable from here too.

One EM iteration is one pass over the data: for every chunk, the E-step under
the current parameters gives responsibilities, whose sufficient statistics
are added to a float64 running total; then one M-step turns the total into new
parameters.  In-memory, out-of-core and distributed fits differ only in where
the chunks come from and in the ``reduce`` applied to the totals.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

# The E-step, the M-step and re-seeding live in their own modules
# (expectation, maximization, reseed); their public names are reachable here.
from .expectation import (
    FAR_IN_FLOAT32,
    Chunks,
    _check_finite_stats,
    accumulate,
    chunk_stats,
    e_step,
    estimate_weighted_log_prob,
    moment_shift,
    pass_params,
)
from .maximization import _m_step, count_floor, m_step, split_points
from .params import GMMParams
from .reseed import EMPTY_FRACTION, EmptyComponentWarning, empty_components, worst_explained
from .stats import SuffStats
from .stopping import has_converged

__all__ = [
    "estimate_weighted_log_prob",
    "e_step",
    "chunk_stats",
    "accumulate",
    "m_step",
    "empty_components",
    "count_floor",
    "moment_shift",
    "FAR_IN_FLOAT32",
    "worst_explained",
    "split_points",
    "EMResult",
    "run_em",
    "EmptyComponentWarning",
    "EMPTY_FRACTION",
]


@dataclass
class EMResult:
    """Outcome of :func:`run_em`.

    Attributes
    ----------
    params : GMMParams
        Parameters after the last M-step.
    converged : bool
    n_iter : int
        Number of EM iterations run.
    lower_bound : float
        Mean log-likelihood per sample from the last E-step (of the parameters
        before the last M-step, as scikit-learn reports it).
    lower_bounds : list of float
        Its history, one value per iteration.
    events : list of dict
        Numerical interventions, in order: ``{"kind": "reseed", "iteration",
        "components"}`` for re-seeded empty components and ``{"kind":
        "regularization", "iteration", "components", "reg_covar", "retries"}``
        for covariances that needed extra regularisation.
    """

    params: GMMParams
    converged: bool
    n_iter: int
    lower_bound: float
    lower_bounds: list = field(default_factory=list)
    events: list = field(default_factory=list)


def run_em(
    chunks: Callable[[], Chunks],
    params: GMMParams,
    *,
    reg_covar: float,
    tol: float,
    max_iter: int,
    lower_bound: float = -math.inf,
    reduce: Callable[[SuffStats], SuffStats] | None = None,
    callback: Callable[[int, float, GMMParams, bool], None] | None = None,
    start_iter: int = 0,
    lower_bounds: list | None = None,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    tol_type: str = "absolute",
    update=None,
    prior=None,
) -> EMResult:
    """The EM loop, shared by every way of feeding data.

    Parameters
    ----------
    chunks : callable
        Returns a fresh iterable of ``(X_chunk, weight_chunk)`` pairs, one
        pass over the data, each time it is called.  Its attribute
        ``feature_cache`` (a :class:`~gaussmix.feature_cache.FeatureCache`),
        where set, keeps features from pass to pass: only for views of one
        in-memory tensor.  Its attribute ``workers``, where set, deals each
        pass's chunks out to that many threads
        (:mod:`gaussmix.chunk_workers`): only for in-memory chunks on the CPU.
        Its attribute ``float64_passes``, where true, runs each pass of a
        float32 fit on its parameters in float64
        (:func:`gaussmix.expectation.float64_passes`); the loop's parameters
        stay in the data's dtype.
    params : GMMParams
        Initial parameters, in the data's dtype and on its device.
    reg_covar, tol, max_iter : float, float, int
        As in :class:`gaussmix.GaussianMixture`; iteration stops when
        :func:`gaussmix.stopping.has_converged` says so.
    lower_bound : float
        Value to measure the first change against (``-inf`` for a fresh fit).
    reduce : callable, optional
        Applied to each pass's totals before the M-step (an all-reduce in
        distributed fits).
    callback : callable, optional
        Called as ``callback(n_iter, lower_bound, params, converged)`` after
        each M-step; ``converged`` says whether the loop stops there.
    start_iter, lower_bounds : int, list, optional
        Resume state (from a checkpoint).
    gather : callable, optional
        Concatenates a tensor across ranks (an all-gather), so that a re-seed
        uses the worst-explained samples of all ranks (see
        :func:`worst_explained`).  When ``reduce`` is given without
        ``gather``, re-seeding uses :func:`split_points` instead, which needs
        no communication.
    tol_type : {"absolute", "relative"}
        The stopping rule (see :func:`gaussmix.stopping.has_converged`).
    update : object, optional
        Replaces the M-step by a variational update (a
        :class:`gaussmix.variational.VariationalUpdate`): ``update.params(stats,
        shift, eps, events)`` gives the new parameters from the same totals,
        ``update.lower_bound(stats, params)`` the value the stopping rule
        watches.  Components are then never re-seeded: the posterior switching
        components off is the point of the variational fit.
    prior : PriorParams, optional
        mclust's conjugate prior: each M-step is the posterior mode (mclust's
        ``me`` variant, see :func:`m_step`).  The stopping rule still watches
        the data's log-likelihood, as mclust's does; the log prior is not
        part of it.

    Returns
    -------
    EMResult

    Notes
    -----
    A component that loses all its points (:func:`empty_components`) is
    re-seeded on the worst-explained sample of the pass (one extra E-step
    pass, only in that iteration), with an :class:`EmptyComponentWarning`
    and a ``"reseed"`` event.  An iteration with a re-seed never counts as
    converged, and its log-likelihood may be lower than the previous one.

    Raises
    ------
    ValueError
        If a pass yields non-finite statistics (overflow).
    CovarianceError
        If a covariance cannot be factorised even with extra regularisation.
    """
    dtype = params.means.dtype
    small = getattr(chunks, "float64_passes", False)
    history = list(lower_bounds or [])
    events: list = []
    converged = False
    n_iter = start_iter
    for n_iter in range(start_iter + 1, max_iter + 1):
        prev = lower_bound
        at = params if update is not None else pass_params(params, small)
        # A float64 pass takes the float64 M-step too (its count floor of 10
        # eps would otherwise, through one-shift moments far from the mixture
        # mean, cost float32's eps times the squared distance).
        eps = torch.finfo(at.means.dtype).eps
        shift = moment_shift(at)
        stats = accumulate(chunks(), at, shift, entropy=update is not None,
                           cache=getattr(chunks, "feature_cache", None),
                           workers=getattr(chunks, "workers", 1))
        if reduce is not None:
            stats = reduce(stats)
        _check_finite_stats(stats)
        empty = empty_components(stats)
        reseed = None
        if update is None and bool(empty.any()):
            # Rare: one more E-step pass under the same parameters finds the
            # samples the current model explains worst.
            if reduce is not None and gather is None:
                # Distributed without a gather: a choice every rank agrees on.
                points = split_points(stats, shift, params.covariance_type, reg_covar, eps,
                                      int(empty.sum()))
            else:
                points = worst_explained(chunks(), at, int(empty.sum()), gather)
            reseed = (empty, points)
            comps = torch.nonzero(empty).flatten().tolist()
            warnings.warn(
                f"Component(s) {comps} lost all their points at EM iteration {n_iter} and "
                f"were re-seeded on the worst-explained samples. Consider fewer components "
                f"(n_components={params.n_components}) or check the data for duplicates.",
                EmptyComponentWarning,
                stacklevel=2,
            )
            events.append(dict(kind="reseed", iteration=n_iter, components=comps))
        step_events: list = []
        if update is None:
            # The statistics were checked above.
            new = _m_step(
                stats, shift, params.covariance_type, reg_covar, eps,
                reseed=reseed, events=step_events, prior=prior,
            )
            lower_bound = stats.mean_log_likelihood
        else:
            new = update.params(stats, shift, eps, step_events)
            lower_bound = update.lower_bound(stats, new)
        events.extend(dict(e, iteration=n_iter) for e in step_events)
        params = new.to(dtype=dtype)
        history.append(lower_bound)
        # An iteration that re-seeded never stops the loop, whatever the change.
        converged = reseed is None and has_converged(prev, lower_bound, tol, tol_type,
                                                     float(stats.weight))
        if callback is not None:
            callback(n_iter, lower_bound, params, converged)
        if converged:
            break
    return EMResult(params, converged, n_iter, lower_bound, history, events)
