"""Multi-start EM over a grid of numbers of components: the engine of model selection.

EM finds a local optimum near where it starts, and a single k-means start
often lands in a poor one.  For one covariance type and every ``K`` of a
grid at once, :func:`search` runs:

1. **Starts**, from :func:`starting_partitions` (computed once for all
   covariance types): the model-based hierarchical clustering cut at ``K``
   (one merge tree for the whole grid, :mod:`gaussmix.hc`; R mclust's start),
   ``n_kmeans`` k-means partitions from k-means++ seeds, and ``n_random``
   random soft partitions.
2. **Screening** ("em-EM", Biernacki, Celeux & Govaert 2003): ``screen_iter``
   EM iterations from every start of every ``K``, all in one batched EM
   (:func:`gaussmix.batched.fit_batched`).
3. **Continuation**: per ``K`` the hierarchical start and the best
   ``n_keep`` other screened runs continue to convergence, batched; a run
   whose extrapolated final log-likelihood is clearly below the best run of
   its ``K`` stops early (:func:`gaussmix.batched.fit_batched`'s ``rivals``).
4. **Splits**: for every ``K >= 2``, each component of the best screened
   ``K - 1`` run is split in two along its principal axis (points on either
   side of its mean); the splits are screened the same way and the best
   continues with the runs of step 3 (one batch for the whole grid).

Every run that needs a step the batched engine does not take (an emptied
component, a covariance that cannot be factorised) is dropped: it is a
failed start, not a failed candidate.  The random stream is one
``torch.Generator``, so the same seed gives the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

from .batched import _owner, chunk_moments, grouped_m_step, fit_batched
from .covariance import get_covariance_type
from .data import chunk_rows, iter_chunks
from .em import EMResult, e_step
from .init import HC_SUBSET, hc_partition, kmeans, one_hot

__all__ = ["Start", "Run", "starting_partitions", "search"]

#: Lloyd steps of a k-means start: EM refines the partition anyway.
KMEANS_STEPS = 10


@dataclass
class Start:
    """A starting partition for one number of components.

    Attributes
    ----------
    name : str
        ``"hc"``, ``"kmeans"``, ``"random"``, ``"split"`` or ``"single"``.
    labels : Tensor (N,) of int64 or None
        Hard labels in ``0..K-1``; ``-1`` for rows left out (the rows outside
        the hierarchical clustering's subset).
    resp : Tensor (N, K) or None
        Soft responsibilities (random starts).
    """

    name: str
    labels: torch.Tensor | None = None
    resp: torch.Tensor | None = None

    def chunk(self, a: int, b: int, k: int) -> torch.Tensor:
        """Responsibilities (float64) of rows ``a:b``."""
        if self.resp is not None:
            return self.resp[a:b]
        return one_hot(self.labels[a:b], k)


@dataclass
class Run:
    """One EM run of :func:`search`.

    Attributes
    ----------
    k : int
    start : str
        The name of its :class:`Start`.
    result : EMResult or None
        None while it has not been run, or when it failed.
    """

    k: int
    start: str
    result: EMResult | None = None

    @property
    def lower_bound(self) -> float:
        return self.result.lower_bound if self.result is not None else -float("inf")


@dataclass
class CellRuns:
    """Every finished run of one ``K``, best first, and how many were started."""

    k: int
    runs: list = field(default_factory=list)
    n_starts: int = 0


def starting_partitions(X: torch.Tensor, ks, gen: torch.Generator, *, n_kmeans: int = 3,
                        n_random: int = 1, hc_subset: int = HC_SUBSET) -> dict:
    """Starting partitions for every ``K`` of a grid.

    Parameters
    ----------
    X : Tensor (N, D)
        The data, ideally standardised (k-means is not scale invariant; the
        hierarchical clustering standardises by itself).
    ks : iterable of int
    gen : torch.Generator
    n_kmeans, n_random : int
        Number of k-means and random starts per ``K``.
    hc_subset : int
        Rows the hierarchical clustering runs on at most.

    Returns
    -------
    dict
        ``K -> list of Start``.  ``K = 1`` has the single trivial partition.
    """
    n = X.shape[0]
    device = X.device
    ks = sorted(set(int(k) for k in ks))
    out = {k: [] for k in ks}
    multi = [k for k in ks if k > 1]
    if 1 in out:
        out[1].append(Start("single", labels=torch.zeros(n, dtype=torch.long, device=device)))
    if multi:
        # Without enough distinct rows for some K, only the others are cut.
        rows, cuts = hc_partition(X, multi, gen, hc_subset, strict=False)
        for k, lab in cuts.items():
            full = torch.full((n,), -1, dtype=torch.long, device=device)
            full[rows] = lab
            out[k].append(Start("hc", labels=full))
    for k in multi:
        if k > n:
            continue
        for _ in range(n_kmeans):
            out[k].append(Start("kmeans", labels=kmeans(X, k, gen, max_iter=KMEANS_STEPS)))
        for _ in range(n_random):
            r = torch.rand(n, k, generator=gen, device=gen.device, dtype=torch.float64).to(device)
            out[k].append(Start("random", resp=r / r.sum(1, keepdim=True)))
    return out


def _initial_params(X, starts, ks, cov_name, reg_covar, rows):
    """Initial parameters of every start, from one pass over the data: the
    starts' responsibilities concatenated, their moments, one grouped M-step."""
    cov = get_covariance_type(cov_name)
    sizes = list(ks)
    device = X.device
    owner = _owner(sizes, device)
    shift = X.double().mean(0).to(X.dtype)
    nk = s1 = s2 = None
    n = X.shape[0]
    for a in range(0, n, rows):
        b = min(a + rows, n)
        xc = X[a:b] - shift
        resp = torch.cat([st.chunk(a, b, k) for st, k in zip(starts, sizes)], dim=1).to(X.dtype)
        part = chunk_moments(xc, resp, owner, len(sizes), cov)
        nk, s1, s2 = part if nk is None else (nk + part[0], s1 + part[1], s2 + part[2])
    eps = torch.finfo(X.dtype).eps
    groups = [SimpleNamespace(n_components=k) for k in sizes]
    return grouped_m_step(nk, s1, s2, groups, shift, cov_name, reg_covar, eps)


def _run_batch(X, runs, starts, cov_name, *, reg_covar, tol, tol_type, max_iter, rows,
               prune=False):
    """Initialise the runs that have no result yet from their starts, then
    run EM on all of them (batched) for at most ``max_iter`` iterations in
    all; failed runs get ``result=None``."""
    fresh = [i for i, r in enumerate(runs) if r.result is None]
    if fresh:
        inits = _initial_params(X, [starts[i] for i in fresh], [runs[i].k for i in fresh],
                                cov_name, reg_covar, rows)
        for i, p in zip(fresh, inits):
            if p is not None:
                runs[i].result = EMResult(p.to(dtype=X.dtype), False, 0, -float("inf"), [])
    todo = [i for i, r in enumerate(runs) if r.result is not None]
    results = fit_batched(X, [runs[i].result for i in todo], reg_covar=reg_covar, tol=tol,
                          max_iter=max_iter, tol_type=tol_type,
                          rivals=[runs[i].k for i in todo] if prune else None,
                          protected=[_protected(runs[i]) for i in todo] if prune else None)
    for i, res in zip(todo, results):
        runs[i].result = res


def _protected(run) -> bool:
    """Whether a run must not be stopped as hopeless (see
    :func:`gaussmix.batched.fit_batched`): the hierarchical run is mclust's own
    path, and the fallback when the leader of its K turns out to have
    collapsed."""
    return run.start in ("hc", "single")


def _split_starts(X, best, rows):
    """One start per component of ``best`` (a K-1 fit): its points (hard
    assignment) divided by the sign of their projection on the component's
    principal axis, the other components unchanged."""
    params = best.params
    k = params.n_components
    labels = torch.cat([e_step(xb, params)[0].argmax(1) for xb, _ in iter_chunks(X, None, rows)])
    out = []
    for j in range(k):
        mask = labels == j
        if int(mask.sum()) < 2:
            continue
        pts = X[mask].double()
        centred = pts - pts.mean(0)
        # Principal axis of the component's own points: the top eigenvector of
        # their D x D scatter (far cheaper than an SVD of the points).
        axis = torch.linalg.eigh(centred.T @ centred).eigenvectors[:, -1]
        side = (centred @ axis) > 0
        if bool(side.all()) or not bool(side.any()):
            continue
        new = labels.clone()
        idx = torch.nonzero(mask).flatten()
        new[idx[side]] = k
        out.append(Start("split", labels=new))
    return out


def search(X: torch.Tensor, cov_name: str, partitions: dict, *, reg_covar: float, tol: float,
           tol_type: str = "relative", max_iter: int = 1000, screen_iter: int = 5,
           n_keep: int = 1, split: bool = True) -> dict:
    """Multi-start EM of one covariance type for every ``K`` of a grid.

    Parameters
    ----------
    X : Tensor (N, D)
        The data, in the coordinates the covariance type is fitted in.
    cov_name : str
    partitions : dict
        ``K -> list of Start`` from :func:`starting_partitions`.
    reg_covar, tol, tol_type, max_iter
        EM settings (``max_iter`` counts screening iterations too).
    screen_iter : int
        EM iterations of the screening stage.
    n_keep : int
        Screened runs per ``K`` that continue to convergence besides the
        hierarchical start.
    split : bool
        Also try the splits of the best screened ``K - 1`` run.

    Returns
    -------
    dict
        ``K -> CellRuns`` with the finished runs sorted by final mean
        log-likelihood, best first.
    """
    n, d = X.shape
    ks = sorted(partitions)
    rows = chunk_rows(n, max(ks) * 8, d, X.device, X.dtype, None)
    common = dict(reg_covar=reg_covar, tol=tol, tol_type=tol_type, rows=rows)
    screen = min(screen_iter, max_iter)
    cells = {k: CellRuns(k, n_starts=len(partitions[k])) for k in ks}
    # 1-2: every start, a few iterations each.
    runs, starts = [], []
    for k in ks:
        for st in partitions[k]:
            runs.append(Run(k, st.name))
            starts.append(st)
    _run_batch(X, runs, starts, cov_name, max_iter=screen, **common)
    # 3: splits of the best screened K-1 run, screened the same way.
    split_runs = []
    if split:
        starts = []
        for k in ks:
            prev = [r for r in runs if r.k == k - 1 and r.result is not None]
            if k < 2 or not prev:
                continue
            best = max(prev, key=lambda r: r.lower_bound)
            for st in _split_starts(X, best.result, rows):
                split_runs.append(Run(k, "split"))
                starts.append(st)
                cells[k].n_starts += 1
        if split_runs:
            _run_batch(X, split_runs, starts, cov_name, max_iter=screen, **common)
    # 4: per K the hierarchical start, the best screened others and the best
    # split continue to convergence, in one batch.
    keep = []
    for k in ks:
        mine = [r for r in runs if r.k == k and r.result is not None]
        hc = [r for r in mine if r.start in ("hc", "single")]
        others = sorted((r for r in mine if r not in hc), key=lambda r: -r.lower_bound)
        splits = sorted((r for r in split_runs if r.k == k and r.result is not None),
                        key=lambda r: -r.lower_bound)
        keep.extend(hc + others[:n_keep] + splits[:1])
    _run_batch(X, keep, [None] * len(keep), cov_name, max_iter=max_iter, prune=True, **common)
    for r in keep:
        # A run stopped as hopeless (not converged before max_iter) is left
        # out: a better run of its K exists, and it is not a finished fit.
        if r.result is not None and (r.result.converged or r.result.n_iter >= max_iter):
            cells[r.k].runs.append(r)
    for c in cells.values():
        c.runs.sort(key=lambda r: -r.lower_bound)
    return cells
