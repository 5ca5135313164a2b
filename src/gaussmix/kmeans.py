"""k-means on the device: k-means++ seeding (Arthur & Vassilvitskii 2007,
scikit-learn's greedy variant) and Lloyd's iterations, for one clustering
(:func:`kmeans`, the ``init_params="kmeans"`` start) or many at once
(:func:`kmeans_many`, the k-means starts of a model search).
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math

import torch

from .data import iter_chunks

__all__ = ["kmeans", "kmeans_many", "kmeans_plusplus"]

#: Partitions already computed inside :func:`_shared_partitions` (None outside).
_SHARED: contextvars.ContextVar = contextvars.ContextVar("gaussmix_kmeans_shared", default=None)

#: Rows of the data that key a shared partition (:func:`_data_key`).
_KEY_ROWS = 4096


@contextlib.contextmanager
def _shared_partitions():
    """Within the block, :func:`kmeans` computes each partition once.

    For fits of one data set only (the grid of
    :func:`gaussmix.grid_fit.fit_candidates`, where every covariance type
    of one ``K`` starts from the same seed, hence from the same partition):
    a later call with the same number of clusters and generator state
    returns the first one's labels and leaves the generator in the state the
    computation would have left it in, so every result is exactly what a
    separate fit gives.  The data are recognised by their shape, dtype,
    device and up to ``_KEY_ROWS`` evenly spaced rows, which costs nothing
    next to a k-means on large data; labels are kept as int16 where K allows.
    """
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


def _data_key(t: torch.Tensor | None):
    """Key of a data tensor inside :func:`_shared_partitions` (None for None)."""
    if t is None:
        return None
    step = max(1, t.shape[0] // _KEY_ROWS)
    rows = t[::step].detach().contiguous().cpu().numpy().tobytes()
    return (tuple(t.shape), str(t.dtype), str(t.device), hashlib.sha1(rows).digest())


# Elements of the (rows, n_clusters) distance block of one k-means chunk.
_KMEANS_ELEMENTS = 1 << 20


#: Most elements of one block of k-means++'s candidate distances.
_SEED_BLOCK_ELEMENTS = 1 << 24


def _uniform(gen: torch.Generator, n: int, device, dtype) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device, dtype=torch.float64).to(device, dtype)


def kmeans_plusplus(
    X: torch.Tensor,
    n_clusters: int,
    gen: torch.Generator,
    sample_weight: torch.Tensor | None = None,
    rows: int = 1 << 16,
    centred: tuple | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii; scikit-learn's variant).

    Parameters
    ----------
    X : Tensor (N, D)
    n_clusters : int
    gen : torch.Generator
    sample_weight : Tensor (N,), optional
    rows : int
        Chunk size for distance computations.
    centred : tuple, optional
        ``(X - X.mean(0), its rows' squared norms)`` when the caller has them
        (:func:`_centred`).

    Returns
    -------
    centers : Tensor (n_clusters, D)
    indices : Tensor (n_clusters,)
        Row index of each chosen center.
    """
    n, _ = X.shape
    device = X.device
    w = None if sample_weight is None else sample_weight.double()
    n_trials = 2 + int(math.log(n_clusters))
    # Centred once on the data's mean (as scikit-learn's KMeans does), with
    # the rows' squared norms computed once: each step is then one GEMM, and
    # the expanded distances stay free of cancellation for data with a large
    # offset (float32 around 1e6).
    Xc, x_sq = _centred(X)[:2] if centred is None else centred
    # The candidates' distances are (candidates, N), each candidate's row
    # contiguous: the minimum, the potentials and the chosen row then read
    # memory in order, and the whole step is a few passes over it (measured,
    # the whole seeding: 100 000 x 16, 16 clusters, 107 ms with (N,
    # candidates) chunks of ``rows`` -> 41 ms, scikit-learn 38 ms; 1M x 8, 4
    # clusters, 328 -> 214 ms, scikit-learn 98 ms).  Data whose distances
    # would outgrow the block budget go in column blocks of ``rows`` rows.
    block = n if n * (n_trials + 1) <= _SEED_BLOCK_ELEMENTS else rows

    def sq_dist(idx):
        c = Xc[idx]
        c_sq = (c * c).sum(1, keepdim=True)
        parts = [torch.addmm(x_sq[a:a + block].unsqueeze(0), c, Xc[a:a + block].T, alpha=-2.0)
                 .add_(c_sq).clamp_min_(0.0) for a in range(0, n, block)]
        out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return out.double()

    def potentials(dist):
        return dist.sum(1) if w is None else dist @ w

    first = torch.multinomial((torch.ones(n, dtype=torch.float64, device=device) if w is None else w)
                              .to(gen.device), 1, generator=gen).to(device)
    indices = [first]
    closest = sq_dist(first)[0]
    pot = potentials(closest.unsqueeze(0))[0]
    for _ in range(1, n_clusters):
        cum = torch.cumsum(closest if w is None else w * closest, 0)
        r = _uniform(gen, n_trials, device, torch.float64) * pot
        cand = torch.searchsorted(cum, r).clamp_max(n - 1)
        dist = sq_dist(cand)
        torch.minimum(dist, closest.unsqueeze(0), out=dist)
        pots = potentials(dist)
        best = int(torch.argmin(pots))
        closest = dist[best]
        pot = pots[best]
        indices.append(cand[best : best + 1])
    idx = torch.cat(indices)
    return X[idx].clone(), idx


def _centred(X: torch.Tensor) -> tuple:
    """``X`` centred on its mean, the centred rows' squared norms, and the mean."""
    origin = X.mean(0)
    Xc = X - origin
    return Xc, (Xc * Xc).sum(1), origin


def _lloyd_pass(Xc, sample_weight, centers, rows, want_labels):
    """One pass over the data: nearest center of every row, and the
    per-center weighted counts and sums (float64) for the next centers.

    The distance ``||x||^2 - 2 x.c + ||c||^2`` drops ``||x||^2`` (it does not
    change the argmin), so a chunk costs one GEMM, one argmin and one scatter.
    """
    k, d = centers.shape
    c = centers.to(Xc.dtype)
    c_sq = (c * c).sum(1)
    counts = torch.zeros(k, dtype=torch.float64, device=Xc.device)
    sums = torch.zeros(k, d, dtype=torch.float64, device=Xc.device)
    labels = []
    for xb, wb in iter_chunks(Xc, sample_weight, rows):
        lab = torch.addmm(c_sq, xb, c.T, alpha=-2.0).argmin(1)
        if want_labels:
            labels.append(lab)
        if wb is None:
            counts += torch.bincount(lab, minlength=k).to(torch.float64)
            part = torch.zeros(k, d, dtype=Xc.dtype, device=Xc.device).index_add_(0, lab, xb)
        else:
            counts.index_add_(0, lab, wb.to(torch.float64))
            part = torch.zeros(k, d, dtype=Xc.dtype, device=Xc.device).index_add_(
                0, lab, xb * wb.unsqueeze(1)
            )
        sums += part.to(torch.float64)
    return (torch.cat(labels) if want_labels else None), counts, sums


def kmeans(
    X: torch.Tensor,
    n_clusters: int,
    gen: torch.Generator,
    sample_weight: torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-4,
    rows: int = 1 << 16,
) -> torch.Tensor:
    """Lloyd's k-means from k-means++ seeds, vectorised on the device.

    Parameters
    ----------
    X : Tensor (N, D)
    n_clusters : int
    gen : torch.Generator
    sample_weight : Tensor (N,), optional
    max_iter : int
        Bound on the number of Lloyd steps, so that initialisation never
        dominates the fit.
    tol : float
        Stop when the squared center shift is below ``tol`` times the mean
        feature variance (scikit-learn's rule).
    rows : int
        Chunk size.

    Returns
    -------
    labels : Tensor (N,) of int64
    """
    # The widest intermediate here is (rows, n_clusters), far narrower than the
    # EM chunk's (rows, K*D): longer chunks cut the per-chunk overhead.
    rows = max(rows, _KMEANS_ELEMENTS // max(n_clusters, 1))
    shared = _SHARED.get()
    if shared is None:
        return _kmeans(X, n_clusters, gen, sample_weight, max_iter, tol, rows)
    # Everything the result depends on, the chunking as far as it splits X.
    key = (_data_key(X), n_clusters, _data_key(sample_weight), max_iter, tol,
           min(rows, X.shape[0]), gen.get_state().numpy().tobytes(), str(gen.device))
    if key not in shared:
        labels = _kmeans(X, n_clusters, gen, sample_weight, max_iter, tol, rows)
        small = labels.to(torch.int16) if n_clusters <= torch.iinfo(torch.int16).max else labels
        shared[key] = (small, gen.get_state())
        return labels
    labels, state = shared[key]
    gen.set_state(state)
    return labels.to(torch.int64)


def _kmeans(X, n_clusters, gen, sample_weight, max_iter, tol, rows):
    # Centring once keeps the expanded distances free of cancellation for
    # data with a large offset (float32 around 1e6); the seeding and the
    # Lloyd steps share it, and the mean variance of the stopping rule is
    # the centred rows' mean squared norm per feature (a separate variance
    # pass over the data took 6 ms of a 100 ms initialisation at
    # 100 000 x 16).
    Xc, x_sq, origin = _centred(X)
    centers, _ = kmeans_plusplus(X, n_clusters, gen, sample_weight, rows, centred=(Xc, x_sq))
    threshold = tol * float(x_sq.double().sum()) / X.numel()
    centers = centers.double() - origin.double()
    for _ in range(max_iter):
        _, counts, sums = _lloyd_pass(Xc, sample_weight, centers, rows, False)
        # An emptied cluster keeps its previous center.
        new = torch.where(counts.unsqueeze(1) > 0, sums / counts.clamp_min(1e-300).unsqueeze(1), centers)
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if shift <= threshold:
            break
    # Labels of the final centers, as scikit-learn's last assignment step.
    labels, _, _ = _lloyd_pass(Xc, sample_weight, centers, rows, True)
    return labels


#: Elements of the largest intermediate of :func:`kmeans_many` (the seeding's
#: (runs, trials, rows) distances); bigger problems run one clustering at a time.
_MANY_ELEMENTS = 1 << 23


def kmeans_many(X: torch.Tensor, n_clusters: list, gen: torch.Generator,
                max_iter: int = 10, tol: float = 1e-4) -> list:
    """Several k-means clusterings of the same data at once.

    The clusterings (any numbers of clusters, or restarts of one) advance
    together: k-means++ seeding picks the ``j``-th center of every clustering
    in one step, and each Lloyd step assigns the rows of all of them with one
    batched GEMM, their centers padded to the largest number of clusters.
    Each clustering is what :func:`kmeans` computes, from its own random
    draws.  On large data (see ``_MANY_ELEMENTS``) they run one after the other.

    Parameters
    ----------
    X : Tensor (N, D)
    n_clusters : list of int
        Clusters of each clustering (each at most N).
    gen : torch.Generator
    max_iter : int
        Lloyd steps at most.
    tol : float
        Stop when every clustering's squared center shift is below ``tol``
        times the mean feature variance (scikit-learn's rule).

    Returns
    -------
    list of Tensor (N,) of int64
        Labels of each clustering.
    """
    n, d = X.shape
    b, kmax = len(n_clusters), max(n_clusters)
    trials = [2 + int(math.log(k)) for k in n_clusters]
    if b * max(trials) * n > _MANY_ELEMENTS:
        return [kmeans(X, k, gen, max_iter=max_iter, tol=tol) for k in n_clusters]
    device = X.device
    x = X.double()
    x = x - x.mean(0)  # centred: no cancellation in the expanded distances
    x_sq = (x * x).sum(1)
    ks = torch.tensor(n_clusters, device=device)
    runs = torch.arange(b, device=device)

    def sq_dist(c):  # (..., M, D) centers -> (..., M, N)
        return (x_sq - 2.0 * (c @ x.T) + (c * c).sum(-1, keepdim=True)).clamp_min_(0.0)

    # k-means++: the first center uniformly, then per step the best of each
    # clustering's trial candidates drawn in proportion to the squared distance.
    centers = torch.zeros(b, kmax, d, dtype=torch.float64, device=device)
    first = torch.randint(0, n, (b,), generator=gen, device=gen.device).to(device)
    centers[:, 0] = x[first]
    closest = sq_dist(centers[:, :1]).squeeze(1)
    n_trials = max(trials)
    unused = torch.arange(n_trials, device=device) >= torch.tensor(trials, device=device)[:, None]
    for j in range(1, kmax):
        cum = closest.cumsum(1)
        r = torch.rand(b, n_trials, generator=gen, device=gen.device, dtype=torch.float64)
        cand = torch.searchsorted(cum, r.to(device) * cum[:, -1:]).clamp_max_(n - 1)
        cx = x[cand]
        dist = torch.minimum(sq_dist(cx), closest.unsqueeze(1))
        best = dist.sum(2).masked_fill_(unused, math.inf).argmin(1)
        grows = (ks > j).unsqueeze(1)
        closest = torch.where(grows, dist[runs, best], closest)
        centers[:, j] = torch.where(grows, cx[runs, best], centers[:, j])
    # Lloyd: padding centers sit at infinite distance.
    pad = torch.arange(kmax, device=device) >= ks.unsqueeze(1)
    threshold = tol * float(x.var(0, unbiased=False).mean()) if n > 1 else 0.0
    offsets = (runs * kmax).unsqueeze(1)
    x_all = x.expand(b, n, d).reshape(-1, d)
    for step in range(max_iter + 1):
        c_sq = (centers * centers).sum(-1).masked_fill_(pad, math.inf)
        labels = (c_sq.unsqueeze(1) - 2.0 * (x @ centers.transpose(1, 2))).argmin(2)
        if step == max_iter:
            break
        flat = (labels + offsets).flatten()
        counts = torch.bincount(flat, minlength=b * kmax).view(b, kmax, 1).double()
        sums = torch.zeros(b * kmax, d, dtype=torch.float64, device=device).index_add_(
            0, flat, x_all).view(b, kmax, d)
        # An emptied cluster keeps its previous center.
        new = torch.where(counts > 0, sums / counts.clamp_min(1.0), centers)
        shift = ((new - centers) ** 2).sum((1, 2))
        centers = new
        if bool((shift <= threshold).all()):
            max_iter = step + 1  # one more assignment, then stop
    return list(labels.unbind(0))
