"""The guard's walk over a grid's attempts: each cell keeps its first clean fit.

:func:`gaussmix.select_model` has, for every cell (covariance type, K) of its
grid, a :class:`~gaussmix.candidates.Plan` whose attempts come best first; the
degenerate-fit guard examines them in order and keeps the first one whose
components do not collapse (:mod:`gaussmix.guard`).  Where the plans can fit
one attempt of many cells at once (``Plan.prefetch``: re-seeded fits of
``starts="estimator"``), the walk goes in rounds: every cell's first attempt,
then the second attempt of every cell that needs one, fitted together, and so
on.  Otherwise each cell is finished before the next.  Either way the cells
are reported in the grid's order, each as soon as it and every cell before it
are done.
"""

from __future__ import annotations

import time
from typing import Callable

__all__ = ["CellExamination", "examine_grid"]


class CellExamination:
    """The attempts of one cell examined so far.

    Attributes
    ----------
    first, chosen : tuple or None
        ``(estimator, criteria, collapse, error)`` of the first attempt and of
        the clean attempt kept (None while there is none).
    first_info, chosen_info : dict
        The plans' notes on those attempts (``start``, ...).
    used : int
        Attempts examined.
    seconds : float
        Time spent on this cell's attempts (examination, fits made on demand,
        its share of batched fits).
    """

    def __init__(self, plan, limit: int):
        self._attempts = plan.attempts()
        self.limit = limit
        self.first = self.chosen = None
        self.first_info = self.chosen_info = {}
        self.used = 0
        self.seconds = 0.0
        self.done = False

    def step(self, examine: Callable, worth_reseeding: Callable) -> bool:
        """Examine the next attempt; whether another one is wanted."""
        t0 = time.perf_counter()
        try:
            est, err, info = next(self._attempts)
        except StopIteration:
            self.done = True
            return False
        self.used += 1
        if est is None:
            outcome = (None, None, None, err)
        else:
            reg = info.get("reg", est.reg_covar)
            outcome = (est, *examine(est, reg, info.get("score")), "")
        if self.first is None:
            self.first, self.first_info = outcome, info
        self.seconds += time.perf_counter() - t0 + info.get("fit_time", 0.0)
        if est is not None and not outcome[2]["components"]:
            self.chosen, self.chosen_info = outcome, info
            self.done = True
        elif self.used >= self.limit or (est is None and not worth_reseeding(err)):
            self.done = True
        return not self.done


def examine_grid(grid: list, plans: dict, reseed: bool, examine: Callable, worth_reseeding: Callable,
                 report: Callable[[int, CellExamination], None]) -> None:
    """Examine every cell's attempts; ``report(i, exam)`` each finished cell
    in grid order.

    Parameters
    ----------
    grid : list of (covariance_type, K)
    plans : dict
        ``(covariance_type, K) -> Plan``.
    reseed : bool
        Whether a cell whose attempt collapsed goes on to its next attempt
        (up to the plan's ``n_attempts``); otherwise its first attempt is kept.
    examine : callable
        ``examine(estimator, reg_covar, score) -> (criteria, collapse)``.
    worth_reseeding : callable
        ``worth_reseeding(error) -> bool``: whether a failed fit may succeed
        from another start.
    report : callable
    """
    exams = [CellExamination(plans[cell], plans[cell].n_attempts if reseed else 1) for cell in grid]
    reported = 0

    def report_ready():
        nonlocal reported
        while reported < len(exams) and exams[reported].done:
            report(reported, exams[reported])
            reported += 1

    prefetch = next((p.prefetch for p in plans.values() if p.prefetch is not None), None)
    if prefetch is None:
        for exam in exams:
            while exam.step(examine, worth_reseeding):
                pass
            report_ready()
        return
    wanted, attempt = list(range(len(grid))), 0
    while wanted:
        if attempt > 0:
            prefetch(attempt, wanted)
        still = []
        for i in wanted:
            if exams[i].step(examine, worth_reseeding):
                still.append(i)
            report_ready()
        wanted, attempt = still, attempt + 1
    report_ready()
