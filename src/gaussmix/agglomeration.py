"""The merge engine of :mod:`gaussmix.hc`: which pair of clusters merges next.

``C`` holds an entry for every pair of clusters: its cost, or a lower bound
of it (:mod:`gaussmix.hc_costs`).  After each merge the merged cluster's
pairs get their bounds, vectorised over all other clusters, and a pair's
cost replaces its bound only when that bound is the least of all entries:
then the pair either is the merge to take, or its cost sorts it among the
rest.  In practice about one determinant per merge is computed rather than
one per pair, and a merge step on small data is a few dozen numpy calls on
short vectors.

A per-column minimum spares each step a scan of all pairs.  A column whose
minimum grew is rescanned only when its old minimum, a lower bound of the
new one, is the least of all columns.  Slots, tie-breaking and labels follow
mclust's Fortran ``hcvvv`` (see :mod:`gaussmix.hc`).  :mod:`gaussmix.hc`
holds the public API (transform, initial partition, the merge tree and its
cuts).
"""

from __future__ import annotations

import numpy as np

from .hc_costs import _Clusters, _singleton_costs


def _rescan(C: np.ndarray, k: int, colmin: np.ndarray, colarg: np.ndarray) -> None:
    """Set ``colmin[k]``, ``colarg[k]`` (``k >= 1``) to the least entry
    ``C[i, k]``, ``i < k``, of column ``k`` and the last ``i`` attaining it.

    ``C`` is symmetric, so column ``k`` above the diagonal is read as the
    contiguous ``C[k, :k]``; argmin over it reversed finds the last minimum.
    """
    i = k - 1 - int(C[k, k - 1::-1].argmin())
    colmin[k] = C[k, i]
    colarg[k] = i


def _take_row(C: np.ndarray, colmin: np.ndarray, colarg: np.ndarray, dirty: np.ndarray,
              r: int, m: int) -> None:
    """Update the minima of the columns right of row ``r`` (``r < m - 1``),
    whose entries in that row changed.

    A column whose minimum sat in row ``r`` and grew keeps its old minimum,
    now a lower bound of its least entry, and is marked ``dirty`` until a
    rescan.
    """
    v = C[r, r + 1:m]
    cm, ca, dt = colmin[r + 1:m], colarg[r + 1:m], dirty[r + 1:m]
    better = v < cm
    tie = v == cm
    if np.count_nonzero(tie):
        # Of equal entries the later row wins; a dirty column's tie waits
        # for its rescan.
        tie &= ca <= r
        tie &= ~dt
        better |= tie
    # Minima in row r are lost unless row r's new entry is still the least.
    np.putmask(dt, ca == r, True)
    np.putmask(dt, better, False)
    np.putmask(cm, better, v)
    np.putmask(ca, better, r)


class _Merger:
    """The agglomeration one merge at a time.

    ``C`` holds for every pair of slots (symmetric, ``inf`` on the diagonal)
    its cost, or a lower bound of it until :meth:`_Clusters.settle` computed
    the cost; ``label[k]`` is the label of the cluster in slot ``k``.
    ``colmin[k]``, ``colarg[k]`` are the least entry in column ``k`` above
    the diagonal and the last row attaining it, so that choosing a merge
    scans ``m`` values rather than ``m^2 / 2``.  Between merges the least
    entry (the last of them in hcvvv's order) is a cost, not a bound, and so
    the least cost of all pairs: any other pair's cost is at least its entry.
    """

    def __init__(self, Z: np.ndarray, part: np.ndarray, alpha: float, beta: float = 1.0,
                 mclust: bool = True):
        g = int(part.max()) + 1
        self.state = state = _Clusters(Z, part, alpha, beta, mclust)
        if np.all(state.cnt == 1.0):
            C = _singleton_costs(Z[np.argsort(part, kind="stable")], alpha, beta)
        else:
            C = np.full((g, g), np.inf)
            for j in range(1, g):
                row = state.bounds(j, j)
                C[j, :j] = row
                C[:j, j] = row
        self.C, self.m = C, g
        self.label = list(range(1, g + 1))
        colmin = np.full(g, np.inf)
        colarg = np.full(g, -1, dtype=np.int64)
        # Column k above the diagonal is row k left of it (C is symmetric);
        # row blocks keep the temporaries small and in cache.
        step_rows = max(1, min(64, (1 << 18) // g))
        for s in range(1, g, step_rows):
            e = min(s + step_rows, g)
            rows = np.arange(s, e)
            low = np.where(np.arange(e)[None, :] < rows[:, None], C[s:e, :e], np.inf)
            colarg[s:e] = e - 1 - np.argmin(low[:, ::-1], axis=1)
            colmin[s:e] = low[np.arange(e - s), colarg[s:e]]
        self._colmin, self._colarg = colmin, colarg
        self._dirty = np.zeros(g, dtype=bool)
        self._resolve()

    @property
    def colmin(self) -> np.ndarray:
        """Least entry of each column above the diagonal (``inf`` for column 0)."""
        self._clean()
        return self._colmin

    @property
    def colarg(self) -> np.ndarray:
        """Last row attaining each column's least entry."""
        self._clean()
        return self._colarg

    def _clean(self) -> None:
        """Rescan the columns whose minimum is only a lower bound."""
        for k in np.flatnonzero(self._dirty[:self.m]).tolist():
            _rescan(self.C, k, self._colmin, self._colarg)
        self._dirty[:] = False

    def _resolve(self) -> None:
        """Rescan columns and replace bounds by costs until the least entry is a
        cost; that entry is the next merge, ``(row, column)`` in ``next``."""
        C, colmin, colarg, dirty, m = self.C, self._colmin, self._colarg, self._dirty, self.m
        while m > 1:
            b = m - 1 - int(colmin[m - 1::-1].argmin())  # last column holding the minimum
            if dirty[b]:
                _rescan(C, b, colmin, colarg)
                dirty[b] = False
                continue
            a = int(colarg[b])
            cost = self.state.settle(a, b)
            if cost is None:
                self.next = (a, b)
                return
            # max: the cost is never below its bound, even by a rounding.
            C[a, b] = C[b, a] = max(cost, float(C[b, a]))
            _rescan(C, b, colmin, colarg)

    def pair_cost(self, la: int, lb: int) -> float:
        """Current cost of merging the clusters labelled ``la`` and ``lb``."""
        live = self.label[:self.m]
        sa, sb = live.index(la), live.index(lb)
        cost = self.state.cost(sa, sb)
        return float(self.C[sa, sb]) if cost is None else max(cost, float(self.C[sa, sb]))

    def step(self) -> tuple[int, int, float]:
        """Carry out the next merge; returns its labels ``(a, b)``, ``a < b``,
        and its cost."""
        C, colmin, colarg, dirty = self.C, self._colmin, self._colarg, self._dirty
        label, state = self.label, self.state
        a, b = self.next
        cost = float(colmin[b])
        la, lb = label[a], label[b]
        if lb < la:
            la, lb = lb, la
        label[a] = la
        state.merge(a, b, cost)
        m = self.m = self.m - 1
        if b != m:
            # The last slot moves into b.
            state.move(m, b)
            label[b] = label[m]
            C[b, :m] = C[m, :m]
            C[:m, b] = C[:m, m]
            C[b, b] = np.inf
        if m > 1:
            row = state.bounds(a, m)
            C[a, :m] = row
            C[:m, a] = row
            # Rows a and b changed, and columns a and b, which are rescanned.
            _take_row(C, colmin, colarg, dirty, a, m)
            if b < m - 1:
                _take_row(C, colmin, colarg, dirty, b, m)
            if a:
                _rescan(C, a, colmin, colarg)
            dirty[a] = False
            if b < m:
                _rescan(C, b, colmin, colarg)
                dirty[b] = False
            self._resolve()
        return la, lb, cost
