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

Time is O(m^2 p) for lower bounds of the pair costs (the cost without its
determinant), plus O(p^3) for each determinant computed, about one per
merge (see :mod:`gaussmix.agglomeration`); memory is O(m^2) for the pair
costs plus O(m p^2) for the scatter matrices, ``m`` being the number of
initial clusters.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import numpy as np

from .agglomeration import _Merger

__all__ = ["HCTree", "hc_transform", "hierarchical_merges", "duplicate_partition"]

HC_USES = ("SVD", "STD", "VARS")

_EPS = float(np.finfo(np.float64).eps)


def _one_blas_thread():
    controller = _blas_controller()
    if controller is None:  # pragma: no cover - installed with scikit-learn
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


@functools.lru_cache(maxsize=None)
def _blas_controller():
    # threadpool_limits() looks up the loaded libraries on every call (a
    # millisecond or more, a tenth of a small run); one controller, made once
    # numpy's BLAS is loaded, serves every later call.
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return None
    return ThreadpoolController()


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
        # Merge s puts label b = pairs[s, 1] under a = pairs[s, 0]; after the
        # first g - k merges a label's cluster carries the label at the top
        # of its chain of such links, found by pointer doubling.
        merged_at = np.full(g + 1, g, dtype=np.int64)
        merged_at[self.pairs[:, 1]] = np.arange(g - 1)
        parent = np.arange(g + 1)
        parent[self.pairs[:, 1]] = self.pairs[:, 0]
        out = {}
        for k in set(ks):
            top = np.where(merged_at < g - k, parent, np.arange(g + 1))
            while True:
                up = top[top]
                if np.array_equal(up, top):
                    break
                top = up
            out[k] = _consecutive(top[self.initial_partition])
        return out


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
    cluster's costs are recomputed, vectorised over the other clusters and
    first without their determinants, a lower bound; a pair's determinant
    is computed only when its bound is the least of all, about once per
    merge.
    """
    if criterion not in ("mclust", "exact"):
        raise ValueError(f"criterion must be 'mclust' or 'exact', got {criterion!r}.")
    # The work is thousands of small matrix operations: BLAS threads only
    # contend (a 569 x 30 SVD can stall for 0.2 s on a busy machine).
    with _one_blas_thread():
        Z, part, alpha = _prepare(X, use, partition)
        merger = _Merger(Z, part, alpha, mclust=criterion == "mclust")
        steps = [merger.step() for _ in range(merger.m - 1)]
    pairs = np.array([s[:2] for s in steps], dtype=np.int64).reshape(-1, 2)
    costs = np.array([s[2] for s in steps], dtype=np.float64)
    initial = part + 1
    for arr in (pairs, initial, costs):
        arr.flags.writeable = False
    return HCTree(pairs=pairs, initial_partition=initial, costs=costs)
