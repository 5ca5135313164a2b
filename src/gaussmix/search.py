"""Multi-start EM over a grid of numbers of components: the engine of model selection.

EM finds a local optimum near where it starts, and a single k-means start
often lands in a poor one.  For every covariance type and every ``K`` of a
grid, :func:`search` runs:

1. **Starts**, from :func:`starting_partitions` (computed once for all
   covariance types): the model-based hierarchical clustering cut at ``K``
   (one merge tree for the whole grid, :mod:`gaussmix.hc`; R mclust's start),
   ``n_kmeans`` k-means partitions from k-means++ seeds (all clusterings at
   once, :func:`gaussmix.kmeans.kmeans_many`), and ``n_random`` random soft
   partitions (none by default: on the reference data of
   ``docs/SELECTION.md`` they never won a cell).
2. **Screening** ("em-EM", Biernacki, Celeux & Govaert 2003): ``screen_iter``
   EM iterations from every start of every ``K``, batched.
3. **Splits**: for every ``K >= 2``, each component of the best screened
   ``K - 1`` run is split in two along its principal axis (points on either
   side of its mean); the splits are screened the same way.
4. **Continuation**: per ``K`` the hierarchical start and the best
   ``n_keep`` other screened runs (k-means, random or split starts) continue
   to convergence, in one batch; a run whose extrapolated final
   log-likelihood is clearly below the best run of its ``K`` stops early (the
   ``rivals`` of the engines).

The engine: on small data with few features
(:func:`gaussmix.joint.joint_applies`) every run of every type advances in
one loop on the joint engine (:mod:`gaussmix.joint`); otherwise each type
runs on the per-type batched engine (:func:`gaussmix.batched.fit_batched`),
on the data in its own units.  Both compute the same EM (tested against each
other); the joint engine saves the per-call overhead that dominates small
data.

Every run that needs a step the engines do not take (an emptied component, a
covariance that cannot be factorised) is dropped: it is a failed start, not a
failed candidate.  The random stream is one ``torch.Generator``, so the same
seed gives the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import torch

from .batched import _owner, chunk_moments, grouped_m_step, fit_batched
from .covariance import get_covariance_type
from .data import chunk_rows, iter_chunks
from .em import EMResult, e_step
from .init import HC_SUBSET, hc_partition, one_hot
from .kmeans import kmeans_many
from .joint import (JointRun, component_moments, fit_joint, hard_labels, joint_applies,
                    quadratic_features, score_runs, start_runs)

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


@dataclass(eq=False)
class Run:
    """One EM run of :func:`search`.

    Attributes
    ----------
    k : int
    start : str
        The name of its :class:`Start`.
    result : EMResult or None
        In the type's units; None while it has not been run, or when it failed.
        A finished run of the joint engine makes it from its state when first
        read (see :meth:`finish`).
    cov_name : str
    state : JointRun or None
        Its state while the joint engine (:mod:`gaussmix.joint`) runs it.
    score : tuple of float or None
        Total log-likelihood (type's units) and entropy of the responsibilities
        at the final parameters, where the engine computed them.
    """

    k: int
    start: str
    _result: EMResult | None = field(default=None, repr=False)
    cov_name: str = ""
    state: JointRun | None = None
    score: tuple | None = None
    # The dtype of the result a finished joint run owes (see finish); None once made.
    _pending: torch.dtype | None = field(default=None, repr=False)

    @property
    def result(self) -> EMResult | None:
        if self._pending is not None:
            self._result, self._pending = self.state.result(self._pending), None
        return self._result

    @result.setter
    def result(self, value: EMResult | None) -> None:
        self._result, self._pending = value, None

    def ended(self, max_iter: int) -> bool:
        """Whether it is a finished fit: converged or out of iterations (a run
        stopped as hopeless is neither), read from its state while its result
        is not made."""
        done = self.state if self._pending is not None else self._result
        return done is not None and (done.converged or done.n_iter >= max_iter)

    def finish(self, dtype: torch.dtype) -> None:
        """Mark a joint run as finished: its :attr:`result` (in ``dtype``) is
        made from its state when first read.  Most finished runs are never
        read (model selection examines the best of each cell), and making one
        costs a factorisation of its covariances."""
        self._pending = dtype

    @property
    def alive(self) -> bool:
        """Whether it has run and not failed."""
        if self.state is not None:
            return not self.state.failed and self.state.has_params
        return self.result is not None

    @property
    def lower_bound(self) -> float:
        if not self.alive:
            return -float("inf")
        if self._pending is not None:
            # What its result will report, without making it.
            return self.state.lower_bound + self.state.log_jacobian()
        # The joint engine's state is in the data's coordinates, the result in
        # the type's units; they differ by a constant within a type.
        return self._result.lower_bound if self._result is not None else self.state.lower_bound


@dataclass
class CellRuns:
    """Every finished run of one ``K``, best first, and how many were started."""

    k: int
    runs: list = field(default_factory=list)
    n_starts: int = 0


def starting_partitions(X: torch.Tensor, ks, gen: torch.Generator, *, n_kmeans: int = 3,
                        n_random: int = 0, hc_subset: int = HC_SUBSET) -> dict:
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
    fits = [k for k in multi if k <= n for _ in range(n_kmeans)]
    for k, labels in zip(fits, kmeans_many(X, fits, gen, max_iter=KMEANS_STEPS) if fits else []):
        out[k].append(Start("kmeans", labels=labels))
    for k in multi:
        if k > n:
            continue
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


def _split_starts(X, labels, k):
    """One start per component of a ``K = k`` fit with hard labels ``labels``:
    its points divided by the sign of their projection on the component's
    principal axis, the other components unchanged."""
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


def _joint_splits(phi, X, parents, units):
    """:func:`_split_starts` of many fitted runs at once on the joint engine:
    ``(parent index, Start)`` pairs, in the order of the parents and their
    components.  ``units``: per parent, the units (D,) of its type or None;
    the principal axis is the one of the type's units, as in
    :func:`_split_starts`."""
    if not parents:
        return []
    labels = hard_labels(phi, parents)
    kmax = max(p.k for p in parents)
    counts, means, scatter = component_moments(phi, labels, kmax)
    u = torch.stack([torch.ones_like(means[0, 0]) if v is None else v.double() for v in units])
    uu = u[:, None, :, None] * u[:, None, None, :]
    axes = torch.linalg.eigh(scatter * uu).eigenvectors[..., -1] * u[:, None, :]
    g = len(parents)
    pick = torch.arange(g, device=labels.device) * kmax + labels
    centre = means.reshape(g * kmax, -1)[pick]
    side = ((X.double().unsqueeze(1) - centre) * axes.reshape(g * kmax, -1)[pick]).sum(-1) > 0
    on_side = torch.bincount(pick[side], minlength=g * kmax).view(g, kmax)
    ok = (counts >= 2) & (on_side > 0) & (on_side < counts)
    pairs = torch.nonzero(ok).tolist()
    if not pairs:
        return []
    ps = torch.tensor([p for p, _ in pairs], device=labels.device)
    js = torch.tensor([j for _, j in pairs], device=labels.device)
    ks = torch.tensor([parents[p].k for p, _ in pairs], device=labels.device)
    old = labels[:, ps]
    new = torch.where((old == js) & side[:, ps], ks, old)
    return [(p, Start("split", labels=new[:, c])) for c, (p, _) in enumerate(pairs)]


def _best(runs, k):
    """The best live run with ``k`` components, or None."""
    mine = [r for r in runs if r.k == k and r.alive]
    return max(mine, key=lambda r: r.lower_bound) if mine else None


def _continuing(runs, split_runs, ks, n_keep):
    """Per K, the runs that continue to convergence: the hierarchical (or
    single) start and the best ``n_keep`` other screened runs, k-means,
    random and split starts alike."""
    keep = []
    for k in ks:
        mine = [r for r in runs if r.k == k and r.alive]
        hc = [r for r in mine if r.start in ("hc", "single")]
        others = [r for r in mine if r not in hc] + [r for r in split_runs
                                                     if r.k == k and r.alive]
        keep.extend(hc + sorted(others, key=lambda r: -r.lower_bound)[:n_keep])
    return keep


def search(X: torch.Tensor, cov_names, partitions: dict, *, reg_covar: float, tol: float,
           units: dict | None = None, tol_type: str = "relative", max_iter: int = 1000,
           screen_iter: int = 5, n_keep: int = 2, split: bool = True) -> dict:
    """Multi-start EM of every covariance type for every ``K`` of a grid.

    Parameters
    ----------
    X : Tensor (N, D)
        The data, centred and standardised.
    cov_names : iterable of str
        Covariance types.
    partitions : dict
        ``K -> list of Start`` from :func:`starting_partitions`.
    reg_covar, tol, tol_type, max_iter
        EM settings (``max_iter`` counts screening iterations too;
        ``reg_covar`` is in each type's units).
    units : dict, optional
        ``cov_name -> Tensor (D,)``: a type fitted in other units than ``X``'s,
        on ``X * units`` (a spherical covariance, on a common scale).
    screen_iter : int
        EM iterations of the screening stage.
    n_keep : int
        Screened runs per ``K`` (k-means, random or split starts) that
        continue to convergence besides the hierarchical start.
    split : bool
        Also try the splits of the best screened ``K - 1`` run.

    Returns
    -------
    dict
        ``cov_name -> {K -> CellRuns}``, each cell's finished runs sorted by
        final mean log-likelihood, best first, with results in the type's units.

    Notes
    -----
    Small data with few features (:func:`gaussmix.joint.joint_applies`) run
    every type at once on the joint engine; otherwise each type runs on the
    per-type batched engine, on data in its own units.
    """
    units = dict(units or {})
    cov_names = list(cov_names)
    settings = dict(reg_covar=reg_covar, tol=tol, tol_type=tol_type, max_iter=max_iter,
                    screen=min(screen_iter, max_iter), n_keep=n_keep, split=split)
    if joint_applies(*X.shape):
        return _search_joint(X, cov_names, partitions, units, **settings)
    out = {}
    for name in cov_names:
        u = units.get(name)
        out[name] = _search_type(X if u is None else (X.double() * u).to(X.dtype), name,
                                 partitions, **settings)
    return out


def _cells(partitions, ks):
    return {k: CellRuns(k, n_starts=len(partitions[k])) for k in ks}


def _finish(keep, cells_of, max_iter):
    """File the continued runs into their cells.  A run stopped as hopeless
    (not converged before ``max_iter``) is left out: a better run of its K
    exists, and it is not a finished fit."""
    for r in keep:
        if r.ended(max_iter):
            cells_of(r).runs.append(r)


#: Screening batches on data with at least ``BANDED_MIN_FEATURES`` features:
#: runs with K up to ``SCREEN_BAND``, and the others.  There the work per
#: component slot (D x D factors, ``P`` GEMM columns) outweighs one more
#: batch's call overhead (measured on wine, 13 features: 10% faster; on 2-4
#: features one batch is faster).
SCREEN_BAND = 5
BANDED_MIN_FEATURES = 8


def _k_bands(ks, n_features):
    """Positions of ``ks`` split into the screening batches."""
    if n_features < BANDED_MIN_FEATURES:
        return [list(range(len(ks)))]
    low = [i for i, k in enumerate(ks) if k <= SCREEN_BAND]
    high = [i for i, k in enumerate(ks) if k > SCREEN_BAND]
    return [b for b in (low, high) if b]


def _search_joint(X, cov_names, partitions, units, *, reg_covar, tol, tol_type, max_iter, screen,
                  n_keep, split):
    phi = quadratic_features(X)
    ks = sorted(partitions)
    em = dict(reg_covar=reg_covar, tol=tol, tol_type=tol_type)
    cells = {name: _cells(partitions, ks) for name in cov_names}

    def begin(runs, starts):
        # Screened runs do not interact: batches of similar K waste fewer
        # padding slots than one batch padded to the largest K.
        for band in _k_bands([r.k for r in runs], X.shape[1]):
            rs, sts = [runs[i] for i in band], [starts[i] for i in band]
            states = [r.state for r in rs]
            start_runs(phi, states, lambda i, a, b: sts[i].chunk(a, b, rs[i].k),
                       reg_covar=reg_covar, labels=[st.labels for st in sts])
            fit_joint(phi, states, max_iter=screen, **em)

    # 1-2: every start of every type, a few iterations each.
    runs, starts = [], []
    for name in cov_names:
        for k in ks:
            for st in partitions[k]:
                runs.append(Run(k, st.name, cov_name=name, state=JointRun(name, k, units.get(name))))
                starts.append(st)
    begin(runs, starts)
    # 3: splits of the best screened K-1 run of each type.
    split_runs, starts = [], []
    parents = []
    for name in cov_names if split else ():
        mine = [r for r in runs if r.cov_name == name]
        parents += [(name, k, best) for k in ks
                    if k >= 2 and (best := _best(mine, k - 1)) is not None]
    for i, st in _joint_splits(phi, X, [best.state for *_, best in parents],
                               [units.get(name) for name, *_ in parents]):
        name, k, _ = parents[i]
        split_runs.append(Run(k, "split", cov_name=name, state=JointRun(name, k, units.get(name))))
        starts.append(st)
        cells[name][k].n_starts += 1
    if split_runs:
        begin(split_runs, starts)
    # 4: continuation of every type's chosen runs, in one batch.
    keep = []
    for name in cov_names:
        keep += _continuing([r for r in runs if r.cov_name == name],
                            [r for r in split_runs if r.cov_name == name], ks, n_keep)
    fit_joint(phi, [r.state for r in keep], max_iter=max_iter,
              rivals=[(r.cov_name, r.k) for r in keep],
              protected=[_protected(r) for r in keep], accelerate=True, **em)
    # The criteria of every finished run, in one pass.
    live = [r for r in keep if not r.state.failed]
    for r, score in zip(live, score_runs(phi, [r.state for r in live])):
        r.score = score
        r.finish(X.dtype)
    _finish(live, lambda r: cells[r.cov_name][r.k], max_iter)
    for by_k in cells.values():
        for c in by_k.values():
            c.runs.sort(key=lambda r: -r.lower_bound)
    return cells


def _search_type(X, cov_name, partitions, *, reg_covar, tol, tol_type, max_iter, screen, n_keep,
                 split):
    """:func:`search` of one type on the per-type batched engine; ``X`` in the
    type's units."""
    n, d = X.shape
    ks = sorted(partitions)
    rows = chunk_rows(n, max(ks) * 8, d, X.device, X.dtype, None)
    common = dict(reg_covar=reg_covar, tol=tol, tol_type=tol_type, rows=rows)
    cells = _cells(partitions, ks)
    # 1-2: every start, a few iterations each.
    runs, starts = [], []
    for k in ks:
        for st in partitions[k]:
            runs.append(Run(k, st.name, cov_name=cov_name))
            starts.append(st)
    _run_batch(X, runs, starts, cov_name, max_iter=screen, **common)
    # 3: splits of the best screened K-1 run, screened the same way.
    split_runs = []
    if split:
        starts = []
        for k in ks:
            best = _best(runs, k - 1)
            if k < 2 or best is None:
                continue
            params = best.result.params
            labels = torch.cat([e_step(xb, params)[0].argmax(1)
                                for xb, _ in iter_chunks(X, None, rows)])
            for st in _split_starts(X, labels, k - 1):
                split_runs.append(Run(k, "split", cov_name=cov_name))
                starts.append(st)
                cells[k].n_starts += 1
        if split_runs:
            _run_batch(X, split_runs, starts, cov_name, max_iter=screen, **common)
    # 4: per K the hierarchical start and the best screened others continue
    # to convergence, in one batch.
    keep = _continuing(runs, split_runs, ks, n_keep)
    _run_batch(X, keep, [None] * len(keep), cov_name, max_iter=max_iter, prune=True, **common)
    _finish(keep, lambda r: cells[r.k], max_iter)
    for c in cells.values():
        c.runs.sort(key=lambda r: -r.lower_bound)
    return cells
