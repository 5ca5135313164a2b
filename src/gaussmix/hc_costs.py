"""The VVV merge criterion of :mod:`gaussmix.hc`: the state of the clusters
and the cost of merging two of them.

A pair's cost is ``term(i + j) - term(i) - term(j)`` with
``term = n log(det(W / n) [n > p] + beta (tr W + alpha) / n)``, ``W`` the
scatter matrix of the ``n`` points.  Dropping the determinant leaves a lower
bound that needs only the pair's sizes, means and traces, O(p) per pair
(:meth:`_Clusters.bounds`, vectorised over all partners of one cluster); the
determinant, O(p^3), counts only where the union has more than ``p`` points,
and :meth:`_Clusters.cost` computes it for one pair.  A pair's cost reads
only state that does not change until one of the two clusters merges, so it
is the same whenever it is computed.
"""

from __future__ import annotations

import math
import operator

import numpy as np

# mclust's constant for the pair of two singletons: v = (x_i - x_j) * 1/sqrt(2).
_RTHALF = 0.7071067811865476


def _row_multiplicities(p: int) -> list:
    """``mult[rows]``: entry ``(a, b)`` is ``min(a, b, rows - 1) + 1``, the number
    of stored rows of hcvvv's factor that hold ``R[0, a] R[0, b]``
    (``rows = 1..p``; see :func:`_first_row_scatter`)."""
    idx = np.arange(p)
    low = np.minimum.outer(idx, idx)
    return [None] + [(np.minimum(low, rows - 1) + 1).astype(np.float64) for rows in range(1, p + 1)]


def _first_row_scatter(W: np.ndarray, mult: np.ndarray) -> np.ndarray:
    """The scatter matrix that mclust's hcvvv reads back for a cluster whose
    triangular factor ``R`` (``R^T R = W``) it stored: each of its ``rows``
    stored rows is a copy of ``R``'s first row, read from its diagonal on.

    Row ``i`` read back is ``(0, .., 0, R[0, i:])``, so entry ``(a, b)`` of the
    result is ``min(a, b, rows - 1) + 1`` times ``R[0, a] R[0, b]`` (``mult``,
    from :func:`_row_multiplicities`), and ``R[0] = W[0] / sqrt(W[0, 0])``.
    """
    r1 = W[0]
    w00 = float(r1[0])
    if not w00 > 0.0:
        # No spread along the first axis: in practice a cluster of exact
        # duplicates, whose scatter and factor are zero.
        return np.zeros_like(W)
    r1 = r1 / math.sqrt(w00)
    out = np.multiply.outer(r1, r1)
    out *= mult
    return out


def _logdets(W: np.ndarray) -> np.ndarray:
    """log det of each (PSD) matrix in ``W``; ``-inf`` for a singular one,
    whose determinant counts as 0 (hcvvv's trace-only term)."""
    try:
        # Cholesky is the faster factorisation; it fails only for a matrix
        # that is singular to working precision.
        ch = np.linalg.cholesky(W)
        return 2.0 * np.log(np.diagonal(ch, axis1=-2, axis2=-1)).sum(axis=-1)
    except np.linalg.LinAlgError:
        if W.ndim > 2:
            # Each matrix on its own, so that its value does not depend on
            # which others shared the batch.
            return np.array([_logdets(w) for w in W])
        sign, ld = np.linalg.slogdet(W)
        return ld if sign > 0 else -np.inf


# Up to this dimension a pair's matrix is formed and factorised in plain
# Python: a numpy call costs a microsecond or more of overhead, more than
# the arithmetic on a few numbers.
_SMALL_P = 6


def _logdet_small(W: list) -> float:
    """log det of one PSD matrix given as a list of rows, ``-inf`` if
    singular (as :func:`_logdets`), by the Cholesky factor ``W = L L^T``."""
    L = []
    ld = 0.0
    for j, Wj in enumerate(W):
        row = []
        for Li in L:
            i = len(row)
            row.append((Wj[i] - sum(map(operator.mul, row, Li))) / Li[i])
        s = Wj[j] - sum(map(operator.mul, row, row))
        if not s > 0.0:
            # Not positive definite to working precision: as where numpy's
            # Cholesky fails, the LU determinant decides.
            return float(_logdets(np.array(W)))
        row.append(math.sqrt(s))
        ld += math.log(s)
        L.append(row)
    return ld


class _Clusters:
    """Mutable state of the VVV agglomeration: one slot per live cluster.

    ``R[k]`` is the scatter matrix of cluster ``k`` as its merge formed it.
    With ``mclust=False`` that is the true scatter matrix and every merge
    reads it.  With ``mclust=True`` the state follows mclust's hcvvv: it
    keeps the factor of the cluster merged last (slot ``iold``) in working
    storage but stores every other merged cluster's factor as copies of its
    first row (:func:`_first_row_scatter`, :meth:`stored`), and scores a
    merge from those.  hcvvv computes a pair's cost when the later of its
    two clusters is formed (``born``), from that cluster's ``R`` and the
    other's stored matrix; neither changes until one of them merges, so
    :meth:`cost` reads the same whenever it is called.
    """

    def __init__(self, Z: np.ndarray, part: np.ndarray, alpha: float, beta: float, mclust: bool):
        g = int(part.max()) + 1
        p = Z.shape[1]
        self.p, self.alpha, self.beta, self.mclust = p, alpha, beta, mclust
        self.ablog = np.log(beta * alpha)
        self.mult = _row_multiplicities(p) if mclust else None
        self.mult_rows = [None] + [x.tolist() for x in self.mult[1:]] if mclust else None
        cnt = np.bincount(part, minlength=g).astype(np.float64)
        order = np.argsort(part, kind="stable")
        starts = np.concatenate(([0], np.cumsum(cnt[:-1]).astype(np.int64)))
        mean = np.add.reduceat(Z[order], starts, axis=0) / cnt[:, None]
        R = np.zeros((g, p, p))
        big = np.flatnonzero(cnt > 1)
        if big.size:
            rows = np.flatnonzero(cnt[part] > 1)
            dev = Z[rows] - mean[part[rows]]
            for k, i in zip(part[rows].tolist(), range(rows.size)):
                R[k] += np.outer(dev[i], dev[i])
        # The initial clusters' factors are stored exactly (hcvvv too).
        self.cnt, self.R = cnt, R
        # Coordinates first: a row of all clusters' means is contiguous.
        self.meanT = np.ascontiguousarray(mean.T)
        self.tr = np.einsum("kii->k", R)
        self.term = np.full(g, self.ablog)
        if big.size:
            ld = np.full(big.size, -np.inf)
            need = (cnt[big] > p) & (self.tr[big] != 0.0)
            if need.any():
                ld[need] = _logdets(R[big[need]])
            base = self._log_trace_terms(cnt[big], self.tr[big])
            self.term[big] = cnt[big] * np.logaddexp(ld - p * np.log(cnt[big]), base)
        self.born = [-1] * g  # merge that formed the cluster; -1: initial
        self.merges = 0
        self.iold = -1
        # A name per cluster (slots are reused), and the pairs of names whose
        # exact cost has been computed.
        self.name = list(range(g))
        self.settled = set()

    def _log_trace_terms(self, nij, tr):
        """``log(beta (tr + alpha) / nij)``, the trace part of a term."""
        t = tr + self.alpha
        if self.beta != 1.0:
            t *= self.beta
        t /= nij
        return np.log(t, out=t)

    def stored(self, k: int) -> np.ndarray:
        """The scatter matrix that hcvvv reads for slot ``k`` when ``k`` is not
        the cluster merged last."""
        if not self.mclust or self.born[k] < 0:
            return self.R[k]
        return _first_row_scatter(self.R[k], self.mult[self._rows(k)])

    def _rows(self, k: int) -> int:
        """Rows of hcvvv's stored factor of slot ``k``: ``min(n_k - 1, p)``."""
        rows = int(self.cnt[k]) - 1
        return rows if rows < self.p else self.p

    def bounds(self, a: int, m: int):
        """Lower bounds of the costs of merging slot ``a`` with each of the slots
        ``0..m-1`` (``inf`` for ``a`` itself), vectorised over them; where no
        determinant counts the bound is the cost.

        The bound is the cost without the determinant, which is
        ``nij log(beta (t + alpha) / nij)`` for the union's size ``nij`` and
        trace ``t``; adding ``det(W / nij) >= 0`` inside the logarithm can only
        raise it.  The determinant counts only for ``nij > p``.
        """
        cnt, tr, term = self.cnt, self.tr, self.term
        nk = cnt[:m]
        na = float(cnt[a])
        nij = na + nk
        diff = self.meanT[:, :m] - self.meanT[:, a:a + 1]
        t = na * nk
        t /= nij
        diff *= diff
        t *= np.add.reduce(diff, axis=0)  # coordinate by coordinate, as cost()
        t += tr[a] + tr[:m]
        lb = self._log_trace_terms(nij, t)
        lb *= nij
        lb -= term[a] + term[:m]  # hcvvv: trmij - (termi + termj)
        if a < m:
            lb[a] = np.inf
        return lb

    def settle(self, i: int, j: int):
        """The cost of merging slots ``i`` and ``j`` the first time their entry
        is asked for while a determinant may count; ``None`` otherwise (the
        entry, bound or cost, is then the cost)."""
        if self.cnt[i] + self.cnt[j] <= self.p:
            return None
        ni, nj = self.name[i], self.name[j]
        key = (ni, nj) if ni < nj else (nj, ni)
        if key in self.settled:
            return None
        self.settled.add(key)
        return self.cost(i, j)

    def cost(self, i: int, j: int):
        """The cost of merging slots ``i`` and ``j``, from the state as of the
        later one's merge; ``None`` where no determinant counts, and the
        bound is the cost."""
        a, k = (i, j) if self.born[i] >= self.born[j] else (j, i)
        p = self.p
        na, nk = float(self.cnt[a]), float(self.cnt[k])
        nij = na + nk
        # hcvvv scores a pair of single points by the trace alone for any p.
        if not nij > p or na == nk == 1.0:
            return None
        d = (self.meanT[:, k] - self.meanT[:, a]).tolist()
        c = na * nk / nij
        dd = 0.0
        for x in d:
            dd += x * x
        # The trace and the trace part below are those of bounds(), operation
        # for operation, so that the cost is not below the bound.
        tr = c * dd + (float(self.tr[a]) + float(self.tr[k]))
        if tr == 0.0:
            return None
        if p > _SMALL_P:
            W = self.R[a] + self.stored(k)
            W += c * np.multiply.outer(d, d)
            ld = float(_logdets(W))
        else:
            ld = _logdet_small(self._pair_rows(a, k, c, d))
        ld -= p * math.log(nij)
        base = math.log(self.beta * (tr + self.alpha) / nij)
        hi, lo = (ld, base) if ld > base else (base, ld)
        term = nij * (hi + math.log1p(math.exp(lo - hi)))  # nij logaddexp(ld, base)
        return term - (float(self.term[a]) + float(self.term[k]))

    def _pair_rows(self, a: int, k: int, c: float, d: list) -> list:
        """``R[a] + stored(k) + c d d^T`` as a list of rows, formed in plain
        Python with the same operations as in numpy."""
        A = self.R[a].tolist()
        if self.mclust and self.born[k] >= 0:
            r = self.R[k, 0].tolist()
            if r[0] > 0.0:
                s = math.sqrt(r[0])
                r = [x / s for x in r]  # as _first_row_scatter
                mult = self.mult_rows[self._rows(k)]
                return [[x + u * (ri * y) + c * (di * v) for x, u, y, v in zip(Ar, mu, r, d)]
                        for Ar, mu, ri, di in zip(A, mult, r, d)]
            return [[x + c * (di * v) for x, v in zip(Ar, d)] for Ar, di in zip(A, d)]
        B = self.R[k].tolist()
        return [[x + y + c * (di * v) for x, y, v in zip(Ar, Br, d)] for Ar, Br, di in zip(A, B, d)]

    def merge(self, a: int, b: int, cost: float) -> None:
        """Put the union of slots ``a`` and ``b`` (merge cost ``cost``) into slot ``a``."""
        cnt, meanT, tr, term, R = self.cnt, self.meanT, self.tr, self.term, self.R
        na, nb = float(cnt[a]), float(cnt[b])
        n = na + nb
        ma, mb = meanT[:, a], meanT[:, b]
        diff = mb - ma
        c = na * nb / n
        iold = self.iold
        W = R[a]
        if a != iold:
            W[...] = self.stored(a)
        W += R[b] if b == iold else self.stored(b)
        W += c * np.multiply.outer(diff, diff)
        tr[a] = (tr[a] + tr[b]) + c * float(diff @ diff)
        # hcvvv's term of the union: the one its cost was computed with.
        term[a] = cost + (term[a] + term[b])
        mb = nb * mb
        ma *= na
        ma += mb
        ma /= n  # (na ma + nb mb) / n, in place
        cnt[a] = n
        self.born[a] = self.merges
        self.name[a] = len(self.name) + self.merges
        self.merges += 1
        self.iold = a

    def move(self, src: int, dst: int) -> None:
        """Move the cluster in slot ``src`` into slot ``dst``."""
        self.cnt[dst] = self.cnt[src]
        self.R[dst] = self.R[src]
        self.tr[dst] = self.tr[src]
        self.term[dst] = self.term[src]
        self.meanT[:, dst] = self.meanT[:, src]
        self.born[dst] = self.born[src]
        self.name[dst] = self.name[src]
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
    # triangle, so that about half the logarithms are taken), small enough
    # to stay in cache; differences rather than the Gram expansion keep the
    # small distances, which decide, exact.
    rows = max(1, min(32, (1 << 16) // g))
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
