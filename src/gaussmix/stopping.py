"""When EM stops: the stopping rules shared by every EM loop.

``run_em``, the batched engine and the checkpoint callback all ask
:func:`has_converged`, so they cannot disagree on when a fit is finished.
"""

from __future__ import annotations

__all__ = ["TOL_TYPES", "has_converged"]

#: Stopping rules: ``"absolute"`` is scikit-learn's (change of the mean
#: log-likelihood per sample), ``"relative"`` is mclust's (change of the total
#: log-likelihood relative to its size).
TOL_TYPES = ("absolute", "relative")


def has_converged(previous: float, current: float, tol: float, tol_type: str = "absolute",
                  total_weight: float = 1.0) -> bool:
    """Whether EM stops after an iteration whose mean log-likelihood per sample
    went from ``previous`` to ``current``.

    Parameters
    ----------
    previous, current : float
        Mean log-likelihood per sample (``-inf`` before the first iteration).
    tol : float
    tol_type : {"absolute", "relative"}
        ``"absolute"``: ``|current - previous| < tol`` (scikit-learn).
        ``"relative"``: ``|L - L_prev| / (1 + |L|) < tol`` with the total
        log-likelihood ``L = total_weight * current`` (mclust's ``me``, whose
        default is ``tol = 1e-5``).  The relative rule does not stop a slow
        climb on large data early: a change of 1e-3 per sample is a change of
        1e3 in ``L`` for a million samples.
    total_weight : float
        Total sample weight (the number of samples when unweighted).

    Returns
    -------
    bool
    """
    change = abs(current - previous)
    if tol_type == "relative":
        return total_weight * change / (1.0 + total_weight * abs(current)) < tol
    return change < tol
