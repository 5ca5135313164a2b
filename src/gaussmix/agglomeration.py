"""The merge engine of :mod:`gaussmix.hc`: the VVV merge criterion over all
pairs of clusters, updated merge by merge.

After each merge only the merged cluster's pair costs are recomputed,
vectorised over all other clusters (batched scatter matrices, and
log-determinants only where a merged cluster has more points than
dimensions); a per-column minimum spares each step a scan of all pairs.
:mod:`gaussmix.hc` holds the public API (transform, initial partition, the
merge tree and its cuts).
"""

from __future__ import annotations

import numpy as np

# mclust's constant for the pair of two singletons: v = (x_i - x_j) * 1/sqrt(2).
_RTHALF = 0.7071067811865476


def _first_row_scatter(W: np.ndarray, rows: int) -> np.ndarray:
    """The scatter matrix that mclust's hcvvv reads back for a cluster whose
    triangular factor ``R`` (``R^T R = W``) it stored: each of the ``rows``
    stored rows is a copy of ``R``'s first row, read from its diagonal on.

    Row ``i`` read back is ``(0, .., 0, R[0, i:])``, so entry ``(a, b)`` of the
    result is ``min(a, b, rows - 1) + 1`` times ``R[0, a] R[0, b]``, and
    ``R[0] = W[0] / sqrt(W[0, 0])``.
    """
    p = W.shape[0]
    if not W[0, 0] > 0.0:
        # No spread along the first axis: in practice a cluster of exact
        # duplicates, whose scatter and factor are zero.
        return np.zeros_like(W)
    r1 = W[0] / np.sqrt(W[0, 0])
    idx = np.arange(p)
    mult = np.minimum(np.minimum.outer(idx, idx), rows - 1) + 1
    return mult * np.outer(r1, r1)


def _logdets(W: np.ndarray) -> np.ndarray:
    """log det of each (PSD) matrix in ``W``; ``-inf`` for a singular one,
    whose determinant counts as 0 (hcvvv's trace-only term)."""
    try:
        # Cholesky is the faster factorisation; it fails only for a matrix
        # that is singular to working precision.
        ch = np.linalg.cholesky(W)
        return 2.0 * np.log(np.diagonal(ch, axis1=-2, axis2=-1)).sum(axis=-1)
    except np.linalg.LinAlgError:
        sign, ld = np.linalg.slogdet(W)
        return np.where(sign > 0, ld, -np.inf)


class _Agglomeration:
    """Mutable state of the VVV agglomeration: one slot per live cluster.

    ``S[k]`` is the scatter matrix that a merge with cluster ``k`` adds, and
    ``reg`` the scatter of the cluster merged last (slot ``iold``), which
    its next merge starts from.  With ``mclust=False`` both are the true
    scatter matrices.  With ``mclust=True`` they follow mclust's hcvvv: it
    keeps the last merged cluster's factor in working storage but stores
    every other merged cluster's factor as copies of its first row (see
    :func:`_first_row_scatter`), and scores a merge from those.
    """

    def __init__(self, Z: np.ndarray, part: np.ndarray, alpha: float, beta: float, mclust: bool):
        g = int(part.max()) + 1
        p = Z.shape[1]
        self.p, self.alpha, self.beta, self.mclust = p, alpha, beta, mclust
        self.ablog = np.log(beta * alpha)
        cnt = np.bincount(part, minlength=g).astype(np.float64)
        order = np.argsort(part, kind="stable")
        starts = np.concatenate(([0], np.cumsum(cnt[:-1]).astype(np.int64)))
        mean = np.add.reduceat(Z[order], starts, axis=0) / cnt[:, None]
        S = np.zeros((g, p, p))
        big = np.flatnonzero(cnt > 1)
        if big.size:
            rows = np.flatnonzero(cnt[part] > 1)
            dev = Z[rows] - mean[part[rows]]
            for k, i in zip(part[rows].tolist(), range(rows.size)):
                S[k] += np.outer(dev[i], dev[i])
        # The initial clusters' factors are stored exactly (hcvvv too).
        self.cnt, self.mean, self.S = cnt, mean, S
        self.tr = np.einsum("kii->k", S)
        self.term = np.full(g, self.ablog)
        if big.size:
            ld = np.full(big.size, -np.inf)
            need = (cnt[big] > p) & (self.tr[big] != 0.0)
            if need.any():
                ld[need] = _logdets(S[big[need]])
            self.term[big] = self._terms(cnt[big], self.tr[big], ld)
        self.iold = -1
        self.reg = None

    def _terms(self, nij, tr, logdet):
        """``term`` of clusters of sizes ``nij`` and traces ``tr`` whose scatter
        matrices have log-determinants ``logdet`` (``-inf`` where the
        determinant does not count)."""
        base = np.log(self.beta * (tr + self.alpha) / nij)
        return nij * np.logaddexp(logdet - self.p * np.log(nij), base)

    def _left(self, a: int) -> np.ndarray:
        return self.reg if a == self.iold else self.S[a]

    def _pair_logdets(self, a: int, ks: np.ndarray, d: np.ndarray, c: np.ndarray) -> np.ndarray:
        """log det(L + S[k] + c_k d_k d_k^T) for each k in ``ks``, ``L`` being
        slot ``a``'s scatter."""
        L = self._left(a)
        out = np.empty(ks.size)
        todo = np.ones(ks.size, dtype=bool)
        one = self.cnt[ks] == 1.0
        if self.cnt[a] > self.p and np.count_nonzero(one) > 1:
            # Merging a single point adds a rank-one term: with a
            # well-conditioned L, det(L + c d d^T) = det(L) (1 + c d^T L^-1 d)
            # for all of them from one Cholesky factor, no p x p matrix each.
            try:
                ch = np.linalg.cholesky(L)
            except np.linalg.LinAlgError:
                ch = None
            if ch is not None:
                dg = np.diagonal(ch)
                if dg.min() > 1e-3 * dg.max():
                    # One small inverse and a matrix product beat a solve
                    # with many right-hand sides; the guard keeps it accurate.
                    y = np.linalg.inv(ch) @ d[one].T
                    q = np.einsum("ks,ks->s", y, y)
                    out[one] = 2.0 * np.log(dg).sum() + np.log1p(c[one] * q)
                    todo[one] = False
        rest = np.flatnonzero(todo)
        if rest.size:
            dr = d[rest]
            W = self.S[ks[rest]] + L
            W += c[rest, None, None] * dr[:, :, None] * dr[:, None, :]
            out[rest] = _logdets(W)
        return out

    def merge_costs(self, a: int, m: int) -> np.ndarray:
        """Cost of merging slot ``a`` with each of the slots ``0..m-1``
        (``inf`` for ``a`` itself), vectorised over them."""
        na, nk = self.cnt[a], self.cnt[:m]
        nij = na + nk
        diff = self.mean[:m] - self.mean[a]
        c = na * nk / nij
        tr = (self.tr[a] + self.tr[:m]) + c * np.einsum("kp,kp->k", diff, diff)
        # hcvvv scores a pair of single points by the trace alone for any p.
        need = (nij > self.p) & (tr != 0.0)
        if na == 1.0:
            need &= nk != 1.0
        if a < m:
            need[a] = False
        sel = np.flatnonzero(need)
        if sel.size == 0:
            terms = nij * np.log(self.beta * (tr + self.alpha) / nij)
        else:
            logdet = np.full(m, -np.inf)
            logdet[sel] = self._pair_logdets(a, sel, diff[sel], c[sel])
            terms = self._terms(nij, tr, logdet)
        terms -= self.term[a] + self.term[:m]  # hcvvv: trmij - (termi + termj)
        if a < m:
            terms[a] = np.inf
        return terms

    def merge(self, a: int, b: int, cost: float) -> None:
        """Put the union of slots ``a`` and ``b`` (merge cost ``cost``) into slot ``a``."""
        na, nb = self.cnt[a], self.cnt[b]
        n = na + nb
        diff = self.mean[b] - self.mean[a]
        c = na * nb / n
        W = self._left(a) + self._left(b) + c * np.outer(diff, diff)
        self.tr[a] = (self.tr[a] + self.tr[b]) + c * float(diff @ diff)
        # hcvvv's term of the union: the one its cost was computed with.
        self.term[a] = cost + (self.term[a] + self.term[b])
        self.mean[a] = (na * self.mean[a] + nb * self.mean[b]) / n
        self.cnt[a] = n
        self.reg, self.iold = W, a
        self.S[a] = _first_row_scatter(W, int(min(n - 1, self.p))) if self.mclust else W

    def move(self, src: int, dst: int) -> None:
        for arr in (self.cnt, self.mean, self.S, self.tr, self.term):
            arr[dst] = arr[src]
        if self.iold == src:
            self.iold = dst


def _singleton_costs(Z: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Costs of merging every pair of single points (all ``g`` clusters
    singletons), as hcvvv computes them: ``t = ||(z_i - z_j) / sqrt(2)||^2``
    summed coordinate by coordinate, cost
    ``2 log(beta (t + alpha) / 2) - 2 log(alpha beta)``."""
    g, p = Z.shape
    ablog2 = 2.0 * np.log(beta * alpha)
    C = np.empty((g, g))
    # Blocks of rows against the columns up to the block's end (the lower
    # triangle), small enough to stay in cache; differences rather than the
    # Gram expansion keep the small distances, which decide, exact.
    rows = max(1, (1 << 16) // g)
    Zt = np.ascontiguousarray(Z.T)
    for s in range(0, g, rows):
        e = min(s + rows, g)
        t = np.zeros((e - s, e))
        buf = np.empty((e - s, e))
        for q in range(p):
            np.subtract(Zt[q, s:e, None], Zt[q, None, :e], out=buf)
            buf *= _RTHALF
            buf *= buf
            t += buf
        t += alpha
        t *= beta / 2.0
        np.log(t, out=t)
        t *= 2.0
        t -= ablog2
        C[s:e, :e] = t
        C[:s, s:e] = t[:, :s].T
    np.fill_diagonal(C, np.inf)
    return C


def _column_minima(C: np.ndarray, cols: np.ndarray):
    """For each column ``k`` in ``cols`` (all ``k >= 1``): the least cost
    ``C[i, k]``, ``i < k``, and the last ``i`` attaining it.

    ``C`` is symmetric, so column ``k`` above the diagonal is read as the
    contiguous ``C[k, :k]``; argmin over it reversed finds the last minimum.
    """
    if cols.size <= 8:
        val, arg = [], []
        for k in cols.tolist():
            row = C[k, :k]
            i = k - 1 - int(row[::-1].argmin())
            val.append(row[i])
            arg.append(i)
        return val, arg
    hi = int(cols.max())
    sub = C[cols, :hi]
    sub[np.arange(hi)[None, :] >= cols[:, None]] = np.inf
    arg = hi - 1 - np.argmin(sub[:, ::-1], axis=1)
    return sub[np.arange(cols.size), arg], arg


class _Merger:
    """The agglomeration one merge at a time.

    ``C`` holds the cost of every pair of slots (symmetric, ``inf`` on the
    diagonal), ``label[k]`` the label of the cluster in slot ``k``, and
    ``colmin[k]``, ``colarg[k]`` the least cost in column ``k`` above the
    diagonal and the last row attaining it, so that choosing a merge scans
    ``m`` values rather than ``m^2 / 2``.
    """

    def __init__(self, Z: np.ndarray, part: np.ndarray, alpha: float, beta: float = 1.0,
                 mclust: bool = True):
        g = int(part.max()) + 1
        self.state = state = _Agglomeration(Z, part, alpha, beta, mclust)
        if np.all(state.cnt == 1.0):
            C = _singleton_costs(Z[np.argsort(part, kind="stable")], alpha, beta)
        else:
            C = np.full((g, g), np.inf)
            for j in range(1, g):
                row = state.merge_costs(j, j)
                C[j, :j] = row
                C[:j, j] = row
        self.C, self.m = C, g
        self.label = np.arange(1, g + 1)
        colmin = np.full(g, np.inf)
        colarg = np.full(g, -1, dtype=np.int64)
        # Column k above the diagonal is row k left of it (C is symmetric);
        # row blocks keep the temporaries small.
        step_rows = max(1, (1 << 18) // g)
        for s in range(1, g, step_rows):
            e = min(s + step_rows, g)
            rows = np.arange(s, e)
            low = np.where(np.arange(e)[None, :] < rows[:, None], C[s:e, :e], np.inf)
            colarg[s:e] = e - 1 - np.argmin(low[:, ::-1], axis=1)
            colmin[s:e] = low[np.arange(e - s), colarg[s:e]]
        self.colmin, self.colarg = colmin, colarg

    def pair_cost(self, la: int, lb: int) -> float:
        """Current cost of merging the clusters labelled ``la`` and ``lb``."""
        sa = int(np.flatnonzero(self.label[:self.m] == la)[0])
        sb = int(np.flatnonzero(self.label[:self.m] == lb)[0])
        return float(self.C[sa, sb])

    def step(self) -> tuple[int, int, float]:
        """Carry out the next merge; returns its labels ``(a, b)``, ``a < b``,
        and its cost."""
        C, colmin, colarg, label, state = self.C, self.colmin, self.colarg, self.label, self.state
        m = self.m
        b = m - 1 - int(colmin[:m][::-1].argmin())  # last column holding the minimum
        a = int(colarg[b])
        cost = float(colmin[b])
        la, lb = int(label[a]), int(label[b])
        label[a] = min(la, lb)
        state.merge(a, b, cost)
        last = m - 1
        if b != last:
            state.move(last, b)
            label[b] = label[last]
            C[b, :last] = C[last, :last]
            C[:last, b] = C[:last, last]
            C[b, b] = np.inf
        self.m = m = last
        if m > 1:
            row = state.merge_costs(a, m)
            C[a, :m] = row
            C[:m, a] = row
            # Only rows a and b of the columns right of them changed.  A
            # column keeps its minimum unless that sat in the changed row and
            # grew; then it is rescanned, as are column a and the moved
            # column b.
            stale = np.zeros(m, dtype=bool)
            stale[a] = True
            if b < m:
                stale[b] = True
            for r in (a, b):
                if r < m - 1:
                    v = C[r, r + 1:m]
                    cm, ca = colmin[r + 1:m], colarg[r + 1:m]
                    stale[r + 1:m] |= (ca == r) & (v > cm)
                    # Of equal costs the later row wins.
                    better = (v < cm) | ((v == cm) & (r > ca))
                    cm[better] = v[better]
                    ca[better] = r
            stale[0] = False
            sidx = np.flatnonzero(stale)
            if sidx.size:
                colmin[sidx], colarg[sidx] = _column_minima(C, sidx)
        return min(la, lb), max(la, lb), cost
