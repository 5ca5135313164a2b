"""Model-based agglomerative hierarchical clustering (mclust's ``hc()``).

The default of R's mclust: the unconstrained ("VVV") Gaussian criterion of
Banfield & Raftery (1993) and Fraley (1998) on SVD-transformed data.  Each
cluster ``k`` with ``n_k`` points, scatter matrix ``W_k`` (sum of the outer
products of the deviations from its mean) and ``t_k = tr(W_k)`` contributes

    term_k = n_k * log(det(W_k / n_k) * [n_k > p] + beta * (t_k + alpha) / n_k)

(a singleton contributes ``log(alpha * beta)``), with ``beta = 1`` and
``alpha = max(traceW(Z) / (n p), eps)``.  Every step merges the pair whose
merge increases the sum of the terms least.  As in hcvvv, two single points
merge at their trace term even where ``2 > p`` (``p = 1``), and a merged
cluster keeps the term it was merged at.  Slots, tie-breaking and labels
follow mclust's Fortran ``hcvvv`` so that the merge pairs compare directly
with those of R's ``hc()``:

* clusters live in slots ``0..m-1``; after merging slots ``i < j`` the merged
  cluster stays in slot ``i`` and the cluster of the last slot moves to ``j``;
* among exactly equal costs the pair last in the order ``(j, i)``
  (``i < j``) wins, i.e. the largest ``j``, then the largest ``i``;
* a cluster is labelled by the smallest initial label among its members, and
  each merge is reported as the pair of labels ``(a, b)``, ``a < b``;
* by default the determinants are those hcvvv computes from the triangular
  factors it stores, which differ from the true ones in one respect (see
  ``criterion`` of :func:`hierarchical_merges`).

Time is O(m^2) cost evaluations in all (each O(p^3) once a merged cluster has
more than ``p`` points); memory is O(m^2) for the pair costs plus O(m p^2) for
the scatter matrices, ``m`` being the number of initial clusters.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

__all__ = ["HCTree", "hc_transform", "hierarchical_merges", "duplicate_partition"]

HC_USES = ("SVD", "STD", "VARS")

_EPS = float(np.finfo(np.float64).eps)
# mclust's constant for the pair of two singletons: v = (x_i - x_j) * 1/sqrt(2).
_RTHALF = 0.7071067811865476


def _one_blas_thread():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _as_data(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"hc needs a 2-D array (rows x features), got {X.ndim} dimensions.")
    if X.shape[0] < 2:
        raise ValueError(f"hc needs at least 2 rows, got {X.shape[0]}.")
    if X.shape[1] < 1:
        raise ValueError("hc needs at least 1 feature, got 0.")
    if not np.all(np.isfinite(X)):
        raise ValueError(
            "hc needs finite data: X contains NaN or infinite values; "
            "remove or impute those rows first."
        )
    # Adding zero turns -0.0 into 0.0, so that duplicates are found by value.
    return X + 0.0


def _standardise(X: np.ndarray) -> np.ndarray:
    """Centre and scale each column (sample standard deviation, n - 1) and drop
    the constant columns (R's ``scale`` followed by mclust's ``dropCols``)."""
    n = X.shape[0]
    # A constant column scales to 0/0 in R and is dropped there; testing for it
    # exactly avoids keeping a column whose rounded mean leaves a tiny spread.
    keep = np.ptp(X, axis=0) > 0
    Xc = X[:, keep] - X[:, keep].mean(axis=0)
    sd = np.sqrt((Xc * Xc).sum(axis=0) / max(n - 1, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        Xs = Xc / sd
    return Xs[:, np.all(np.isfinite(Xs), axis=0)]


def hc_transform(X, use: str = "SVD") -> np.ndarray:
    """The data that mclust's ``hc(X, use=use)`` clusters.

    Parameters
    ----------
    X : array-like (n, D)
        Finite data.
    use : {"SVD", "STD", "VARS"}, default="SVD"
        ``"VARS"``: the data as given.  ``"STD"``: each column centred and
        divided by its sample standard deviation (n - 1); constant columns
        are dropped.  ``"SVD"`` (mclust's default ``hcUse``): the standardised
        data ``X_s = U diag(d) V^T`` rotated and scaled to
        ``X_s V diag(1 / sqrt(d)) = U diag(sqrt(d))``, with ``min(n, D)``
        columns.  Column signs are arbitrary (as for any SVD); they do not
        change the clustering.

    Returns
    -------
    Z : ndarray (n, p) of float64

    Raises
    ------
    ValueError
        For non-finite data, fewer than 2 rows, an unknown ``use``, or (for
        ``"STD"`` and ``"SVD"``) data whose columns are all constant.
    """
    X = _as_data(X)
    use = str(use).upper()
    if use not in HC_USES:
        raise ValueError(f"use must be one of {HC_USES}, got {use!r}.")
    if use == "VARS":
        return X.copy()
    Xs = _standardise(X)
    if Xs.shape[1] == 0:
        raise ValueError(
            "hc has nothing to cluster: every column of X is constant (all rows "
            "are identical)."
        )
    if use == "STD":
        return Xs
    U, d, Vt = np.linalg.svd(Xs, full_matrices=False)
    # mclust's X_s V / sqrt(d); a (numerically) zero singular value, where
    # that formula divides 0 by 0, gives the column U sqrt(d) ~ 0 instead.
    ok = d > d[0] * max(Xs.shape) * _EPS
    Z = U * np.sqrt(d)
    Z[:, ok] = (Xs @ Vt[ok].T) / np.sqrt(d[ok])
    return Z


def duplicate_partition(X) -> np.ndarray:
    """Initial partition in which exactly duplicated rows share a cluster.

    Parameters
    ----------
    X : array-like (n, D)

    Returns
    -------
    partition : ndarray (n,) of int64
        Labels ``1..g`` numbered by first appearance in row order (mclust's
        ``dupPartition``).
    """
    X = _as_data(X)
    _, first, inverse = np.unique(X, axis=0, return_index=True, return_inverse=True)
    return _consecutive(first[inverse.reshape(-1)]) + 1


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """0-based labels numbered by first appearance (R's ``partconv``)."""
    labels = np.asarray(labels).reshape(-1)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse.reshape(-1)]


@dataclass(frozen=True, eq=False)
class HCTree:
    """The merge sequence of a hierarchical clustering.

    Attributes
    ----------
    pairs : ndarray (g - 1, 2) of int64
        Merge ``s`` joins the clusters labelled ``pairs[s, 0] < pairs[s, 1]``;
        labels are 1-based, a cluster carrying the smallest initial label of
        its members (mclust's ``hc`` output, transposed).
    initial_partition : ndarray (n,) of int64
        The initial clusters, labels ``1..g`` by first appearance.
    costs : ndarray (g - 1,) of float64
        The increase of the criterion at each merge.
    """

    pairs: np.ndarray
    initial_partition: np.ndarray
    costs: np.ndarray

    @property
    def n_initial(self) -> int:
        """Number ``g`` of initial clusters."""
        return int(self.pairs.shape[0]) + 1

    def labels(self, k: int) -> np.ndarray:
        """Labels of the cut with ``k`` clusters.

        Parameters
        ----------
        k : int
            Number of clusters, ``1 <= k <= n_initial``.

        Returns
        -------
        labels : ndarray (n,) of int64
            Labels ``0..k-1`` numbered by first appearance in row order (R's
            ``hclass(h, k)`` minus one).
        """
        return self.cut([k])[int(k)]

    def cut(self, ks) -> dict:
        """Labels of the cuts at several numbers of clusters, in one replay.

        Parameters
        ----------
        ks : int or iterable of int
            Numbers of clusters, each ``1 <= k <= n_initial``.

        Returns
        -------
        cuts : dict
            ``k -> ndarray (n,)`` of labels ``0..k-1`` numbered by first
            appearance in row order.

        Raises
        ------
        ValueError
            For ``k < 1`` or ``k`` greater than the number of initial clusters.
        """
        ks = [int(ks)] if np.isscalar(ks) else [int(k) for k in ks]
        g = self.n_initial
        n = self.initial_partition.shape[0]
        for k in ks:
            if k < 1:
                raise ValueError(f"the number of clusters must be at least 1, got {k}.")
            if k > g:
                what = "distinct rows" if g < n else "rows"
                raise ValueError(
                    f"hc needs at least {k} {what} (initial clusters) to form {k} "
                    f"clusters, got {g}; ask for at most {g} clusters."
                )
        # current[l] is the label that initial label l carries after the merges.
        current = np.arange(g + 1)
        out = {}
        todo = sorted(set(ks), reverse=True)
        done = 0
        for k in todo:
            while done < g - k:
                a, b = self.pairs[done]
                current[current == b] = a
                done += 1
            out[k] = _consecutive(current[self.initial_partition])
        return out


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


def _prepare(X, use: str, partition):
    """Validated data, transformed data ``Z``, 0-based consecutive initial
    partition and ``alpha`` of :func:`hierarchical_merges`."""
    X = _as_data(X)
    n = X.shape[0]
    if partition is None:
        part = duplicate_partition(X) - 1
    else:
        partition = np.asarray(partition).reshape(-1)
        if partition.shape[0] != n:
            raise ValueError(
                f"partition must assign a cluster to each of the {n} rows, "
                f"got {partition.shape[0]} labels."
            )
        part = _consecutive(partition)
    if part.max() < 1:
        raise ValueError(
            "hc has nothing to cluster: "
            + ("all rows of X are identical" if partition is None else "the partition has one cluster")
            + "; it needs at least 2 distinct rows (initial clusters)."
        )
    Z = hc_transform(X, use)
    p = Z.shape[1]
    # mclust: alpha = traceW(Z / sqrt(n p)), floored at machine epsilon.
    dev = Z - Z.mean(axis=0)
    alpha = max(float(np.einsum("ij,ij->", dev, dev)) / (n * p), _EPS)
    return Z, part, alpha


def hierarchical_merges(X, use: str = "SVD", *, partition=None, criterion: str = "mclust") -> HCTree:
    """Model-based agglomerative hierarchical clustering, mclust's default.

    The unconstrained Gaussian ("VVV") criterion of mclust's ``hc()`` on the
    data transformed by :func:`hc_transform`; the merge pairs compare
    directly with the columns of R's ``hc(X, use=use, partition=...)``.

    Parameters
    ----------
    X : array-like (n, D)
        Finite data.
    use : {"SVD", "STD", "VARS"}, default="SVD"
        Transformation of the data (see :func:`hc_transform`).
    partition : array-like (n,), optional
        Initial clusters (any labels, renumbered by first appearance).  By
        default exactly duplicated rows start in one cluster and every other
        row on its own (:func:`duplicate_partition`).  R's ``hc()`` called
        without ``partition`` (as ``Mclust`` calls it) starts from single
        rows instead: pass ``partition=np.arange(n)`` to reproduce that.
    criterion : {"mclust", "exact"}, default="mclust"
        ``"mclust"`` scores merges exactly as mclust's Fortran (``hcvvv``,
        mclust 6.0) does and reproduces its merges; ``"exact"`` uses the true
        scatter matrices.  hcvvv stores the triangular factor of a merged
        cluster with every row a copy of the factor's first row, so for
        ``p >= 2`` the determinant of a merge is off where a cluster of three
        or more points enters it through that stored factor: as the partner
        of the cluster merged last, or in a merge that does not involve the
        cluster merged last.  The two agree until the first such merge
        changes the order.

    Returns
    -------
    HCTree

    Raises
    ------
    ValueError
        For non-finite data, a partition of the wrong length, fewer than two
        initial clusters (all rows identical), or an unknown ``use`` or
        ``criterion``.

    Notes
    -----
    Memory is O(g^2) for the pair costs (8 g^2 bytes: 32 MB for g = 2000
    initial clusters) plus O(g p^2) for the scatter matrices, ``p`` being the
    number of transformed columns.  After each merge only the merged
    cluster's costs are recomputed, vectorised over the other clusters, with a
    log-determinant only where the merged pair has more than ``p`` points.
    """
    if criterion not in ("mclust", "exact"):
        raise ValueError(f"criterion must be 'mclust' or 'exact', got {criterion!r}.")
    # The work is thousands of small matrix operations: BLAS threads only
    # contend (a 569 x 30 SVD can stall for 0.2 s on a busy machine).
    with _one_blas_thread():
        Z, part, alpha = _prepare(X, use, partition)
        merger = _Merger(Z, part, alpha, mclust=criterion == "mclust")
        g = merger.m
        pairs = np.empty((g - 1, 2), dtype=np.int64)
        costs = np.empty(g - 1)
        for s in range(g - 1):
            pairs[s, 0], pairs[s, 1], costs[s] = merger.step()
    initial = part + 1
    for arr in (pairs, initial, costs):
        arr.flags.writeable = False
    return HCTree(pairs=pairs, initial_partition=initial, costs=costs)
