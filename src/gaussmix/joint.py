"""Joint EM: many mixtures of any covariance types fitted together on small data.

A model search (:mod:`gaussmix.search`) runs hundreds of EM runs on the same
data: every start of every ``K`` of every covariance type.  On small data an
iteration of the per-type batched engine (:mod:`gaussmix.batched`) costs
mostly the overhead of its kernel calls, not arithmetic, and each covariance
type pays it again.  This engine makes one iteration of every run, of every
type, a handful of calls:

* each run's components are held in full form, a mean and a D x D covariance
  each whatever the type, in a (runs, K_max) layout padded with components of
  weight 0 (:class:`~gaussmix.joint_run.JointRun`; the padded batch is
  :mod:`gaussmix.run_pack`);
* with the quadratic features ``phi(x) = [1, x, vech(x x^T)]`` of the data
  (:func:`quadratic_features`, computed once; ``vech`` keeps the upper
  triangle, ``P = 1 + D + D (D + 1) / 2`` columns), the weighted
  log-density of every component is one GEMM ``phi @ W`` (``W`` holds each
  component's constant, ``A mu`` and the packed ``-A / 2``, its off-diagonal
  entries doubled; ``A`` its precision), and every component's totals
  ``(n_k, sum r x, sum r x x^T)`` are one GEMM ``phi^T R`` of the
  responsibilities;
* the M-step applies each type's constraint to the components' scatter
  matrices (:meth:`gaussmix.covariance.CovarianceType.full_form`), then one
  batched Cholesky factorises every covariance.

Every run keeps its own stopping rule, as in :func:`gaussmix.batched.fit_batched`.

Precision: the expanded quadratic form loses about ``|x|^2 * lambda_max(A) * eps``
of absolute precision in a Mahalanobis distance, against the centred form.
The search runs on centred, standardised data with a regularisation of 1e-8
relative to each feature's variance, so ``lambda_max(A) <= 1e8`` and the loss
stays below ``1e-8 * n_samples * n_features``.  The cost, ``P`` GEMM
columns per component, restricts the engine to few features
(:func:`joint_applies`).

Coordinates: all runs share the data's coordinates (standardised features);
a type that is not closed under per-feature scaling (spherical) is fitted in
its own units ``x * units`` and its constraint is applied there.
"""

from __future__ import annotations

import math

import torch

from .expectation import _exp_floor
from .joint_run import JointRun
from .quadratic import _n_features, _unpack, quadratic_features
from .rivals import Leads, hopeless
from .run_pack import _factored_pack, _Pack, take_runs
from .stopping import has_converged

__all__ = ["JOINT_MAX_FEATURES", "JOINT_MAX_SAMPLES", "JointRun", "fit_joint", "joint_applies",
           "component_moments", "hard_labels", "quadratic_features", "score_runs",
           "start_runs"]

#: Largest number of features the joint engine serves: its GEMMs have
#: ``P = 1 + D + D (D + 1) / 2`` columns per component, against ``D`` to
#: ``D^2`` for the per-type engine, a price that only the saved call overhead
#: repays (measured on 300 rows: the two break even at 13-16 features, and the
#: joint engine takes 1.2x longer at 20; docs/PERFORMANCE.md).
JOINT_MAX_FEATURES = 16

#: Largest number of samples the joint engine serves: beyond it the kernels are
#: large enough for the per-type engine's cheaper arithmetic to win.
JOINT_MAX_SAMPLES = 10_000

#: Elements of one chunk's (rows, components) matrices.
_CHUNK_ELEMENTS = 1 << 21

#: The floor of the E-step's log-responsibilities (see :func:`_totals`).
_EXP_FLOOR = _exp_floor(torch.float64)



def joint_applies(n_samples: int, n_features: int) -> bool:
    """Whether a search on data of this shape runs on the joint engine.

    Parameters
    ----------
    n_samples, n_features : int

    Returns
    -------
    bool
    """
    return n_features <= JOINT_MAX_FEATURES and n_samples <= JOINT_MAX_SAMPLES


def _totals(phi: torch.Tensor, W: torch.Tensor, g: int, kmax: int, entropy: bool = False):
    """E-step and moments of one pass: per-run total log-likelihood (G,) and
    every component's totals (G, K_max, P); ``W`` slot-major as
    :meth:`_Pack.coefficients` makes it.  With ``entropy``, the second result
    is each run's entropy of the responsibilities (G,), ``-sum r log r``,
    instead of the totals."""
    n = phi.shape[0]
    rows = max(1, min(n, _CHUNK_ELEMENTS // (g * kmax)))
    ll = totals = None
    for a in range(0, n, rows):
        ph = phi[a:a + rows]
        b = ph.shape[0]
        grid = (ph @ W).view(b, kmax, g)
        top = grid.amax(1, keepdim=True)
        # Floored before exp: the padding's -inf and far components' large
        # negative values take exp's slow path (measured 1.8x and 3x the time
        # of normal values); exp(floor) is a normal number too small to move
        # any sum that holds the row's largest term, exp(0) = 1.
        e = grid.sub_(top).clamp_min_(_EXP_FLOOR).exp_()
        norm = e.sum(1, keepdim=True)
        e.div_(norm)
        part_ll = norm.log_().add_(top).sum(0).view(g)
        if entropy:
            part = -torch.xlogy(e, e).sum((0, 1))
        else:
            # phi^T R rather than R^T phi: the long axis is the contraction.
            part = ph.T @ e.view(b, -1)
        ll, totals = (part_ll, part) if ll is None else (ll + part_ll, totals + part)
    return ll, (totals if entropy else _by_component(totals, g, kmax))


def score_runs(phi: torch.Tensor, runs: list) -> list:
    """Total log-likelihood and entropy of the responsibilities of every run at
    its current parameters: what a model's information criteria need.

    Parameters
    ----------
    phi : Tensor (N, P)
        :func:`quadratic_features` of the data.
    runs : list of JointRun
        With parameters.

    Returns
    -------
    list of (float, float)
        Per run, the total log-likelihood in the type's units (as
        :meth:`JointRun.result` reports it) and ``-sum r log r``.
    """
    if not runs:
        return []
    pack = _factored_pack(phi, runs)
    ll, ent = _totals(phi, pack.coefficients(), len(runs), pack.kmax, entropy=True)
    n = phi.shape[0]
    return [(v + n * r.log_jacobian(), h) for r, v, h in zip(runs, ll.tolist(), ent.tolist())]


def _by_component(totals: torch.Tensor, g: int, kmax: int) -> torch.Tensor:
    """(G, K_max, P) of slot-major totals (P, K_max * G), contiguous for the
    M-step's views."""
    return totals.view(-1, kmax, g).permute(2, 1, 0).contiguous()


def _resp_totals(phi: torch.Tensor, ks: list, resp_of, labels=None) -> torch.Tensor:
    """Totals (G, K_max, P) of G runs' starting responsibilities (``ks``: their
    numbers of components): hard ``labels[i]`` (N,) where given (``-1``: the
    row counts for no component), else ``resp_of(i, a, b)``."""
    n = phi.shape[0]
    g, kmax = len(ks), max(ks)
    hard = [i for i in range(g) if labels is not None and labels[i] is not None]
    soft = [i for i in range(g) if i not in set(hard)]
    if hard:
        # Every hard start is one column index per row of the slot-major
        # layout, so one scatter places them all.
        lab = torch.stack([labels[i] for i in hard], 1)
        cols = lab.clamp(min=0) * g + torch.tensor(hard, device=phi.device)
        ones = lab.ge(0).to(torch.float64)
    rows = max(1, min(n, _CHUNK_ELEMENTS // (g * kmax)))
    totals = None
    for a in range(0, n, rows):
        b = min(a + rows, n)
        resp = torch.zeros(b - a, kmax * g, dtype=torch.float64, device=phi.device)
        if hard:
            resp.scatter_(1, cols[a:b], ones[a:b])
        view = resp.view(b - a, kmax, g)
        for i in soft:
            view[:, :ks[i], i] = resp_of(i, a, b)
        part = phi[a:b].T @ resp
        totals = part if totals is None else totals + part
    return _by_component(totals, g, kmax)


def hard_labels(phi: torch.Tensor, runs: list) -> torch.Tensor:
    """Each run's most probable component of every row, (N, G) int64.

    Parameters
    ----------
    phi : Tensor (N, P)
        :func:`quadratic_features` of the data.
    runs : list of JointRun
        With parameters.

    Returns
    -------
    Tensor (N, G)
    """
    pack = _factored_pack(phi, runs)
    g, kmax = len(runs), pack.kmax
    return (phi @ pack.coefficients()).view(-1, kmax, g).argmax(1)


def component_moments(phi: torch.Tensor, labels: torch.Tensor, k: int):
    """Count, mean and scatter (sum of outer products of the centred rows) of
    every labelled group, for many labellings at once.

    Parameters
    ----------
    phi : Tensor (N, P)
        :func:`quadratic_features` of the data.
    labels : Tensor (N, G) of int64
        ``G`` labellings with values in ``0..k-1``.
    k : int

    Returns
    -------
    counts : Tensor (G, k)
    means : Tensor (G, k, D)
    scatter : Tensor (G, k, D, D)
    """
    d = _n_features(phi)
    g = labels.shape[1]
    t = _resp_totals(phi, [k] * g, None, list(labels.T))
    counts = t[..., 0]
    safe = counts.clamp(min=1.0).unsqueeze(-1)
    means = t[..., 1:1 + d] / safe
    scatter = (_unpack(t[..., 1 + d:], d)
               - counts[..., None, None] * means.unsqueeze(-1) * means.unsqueeze(-2))
    return counts, means, scatter


def _by_type(runs: list) -> list:
    """The runs with each covariance type's runs contiguous (first-seen order)."""
    order = {}
    for r in runs:
        order.setdefault(r.cov_name, len(order))
    return sorted(runs, key=lambda r: order[r.cov_name])


def start_runs(phi: torch.Tensor, runs: list, resp_of, *, reg_covar: float,
               labels: list | None = None) -> None:
    """Initial parameters of ``runs`` from starting responsibilities: one M-step.

    Parameters
    ----------
    phi : Tensor (N, P)
        :func:`quadratic_features` of the data.
    runs : list of JointRun
        Without parameters; they get them, or ``failed=True``.
    resp_of : callable
        ``resp_of(i, a, b)``: responsibilities (rows ``a:b``, ``K_i``) of run ``i``.
    reg_covar : float
        Added to each covariance's diagonal, in the type's units.
    labels : list, optional
        Per run, hard labels (N,) in ``0..K_i-1`` (``-1``: a row left out)
        or None; a run with labels does not call ``resp_of``.
    """
    if not runs:
        return
    pack = _Pack(runs, _n_features(phi), phi.device, reg_covar)
    bad = pack.m_step(_resp_totals(phi, [r.k for r in runs], resp_of, labels), fresh=True)
    for i, r in enumerate(runs):
        r.failed = bad[i]
    pack.store([i for i in range(len(runs)) if not bad[i]])


#: Over-relaxed EM (:meth:`_Pack.extrapolate`): the step factor's growth per
#: accepted step, and its cap.
OVERRELAX_GROWTH = 1.3
OVERRELAX_MAX = 64.0


def fit_joint(phi: torch.Tensor, runs: list, *, reg_covar: float, tol: float, max_iter: int,
              tol_type: str = "relative", rivals: list | None = None,
              protected: list | None = None, accelerate: bool = False) -> None:
    """Run EM on every run until each stops (in place).

    Parameters
    ----------
    phi : Tensor (N, P)
        :func:`quadratic_features` of the data (unweighted samples).
    runs : list of JointRun
        With parameters (:func:`start_runs` or an earlier call); runs that
        converged, failed or reached ``max_iter`` are left as they are.
    reg_covar, tol, max_iter, tol_type
        As in :func:`gaussmix.batched.fit_batched` (``max_iter`` counts the
        iterations of earlier calls).
    rivals : list, optional
        A label per run: runs with the same label compete, and one whose
        Aitken-extrapolated end falls clearly below the best of its rivals
        stops early, not converged (:func:`gaussmix.batched.fit_batched`).
        A run that looks clear of collapse (:meth:`_Pack.sound`) is compared
        with the best such rival only: a collapsing run's log-likelihood
        grows without bound, and the run it would stop may end as the
        label's only clean fit.
    protected : list of bool, optional
        Runs never stopped early.
    accelerate : bool
        Over-relaxed EM for the types that allow it (:meth:`_Pack.extrapolate`):
        each step goes ``eta`` times as far as EM's, ``eta`` growing while the
        log-likelihood rises; a step that lowers it is undone (the pass is
        spent, not counted in the history) and ``eta`` restarts at 1.  The
        history then holds only log-likelihoods that rose, and the stopping
        rule compares consecutive ones.
    """
    n = phi.shape[0]
    # A growth of 1 keeps every step at EM's: plain EM.
    accelerate = accelerate and OVERRELAX_GROWTH > 1.0
    label = {id(r): (rivals[i] if rivals is not None else None) for i, r in enumerate(runs)}
    guarded = {id(r) for i, r in enumerate(runs) if protected and protected[i]}
    active = _by_type([r for r in runs if not (r.converged or r.failed or r.n_iter >= max_iter)])
    if not active:
        return
    pack = _factored_pack(phi, active, reg_covar)
    moving = {id(r) for r in active}
    # The best finished runs of each label (stopped runs never change); only
    # a sound run may stop a sound one (gaussmix.rivals).
    done = Leads()
    if rivals is not None:
        before_call = [r for r in runs if not r.failed and r.has_params and id(r) not in moving]
        if before_call:
            for r, ok in zip(before_call, _factored_pack(phi, before_call).sound(n)):
                done.add(label[id(r)], r.lower_bound, ok)
    while pack.runs:
        g = len(pack.runs)
        ll, totals = _totals(phi, pack.coefficients(), g, pack.kmax)
        before = pack.params()
        bad = pack.m_step(totals)
        lls = (ll / n).tolist()
        sound = pack.sound(n) if rivals is not None else [False] * g
        undone = [False] * g
        if accelerate:
            undone = [j and not lb >= r.lower_bound
                      for j, lb, r in zip(pack.jumped, lls, pack.runs)]
            if any(undone):
                pack.fall_back(undone)
        lead = done.copy()
        labs = [label[id(r)] for r in pack.runs]
        if rivals is not None:
            for lab, lb, u, ok in zip(labs, lls, undone, sound):
                if not u:
                    lead.add(lab, lb, ok)
        keep, stopped = [], []
        for i, (r, lb) in enumerate(zip(pack.runs, lls)):
            if undone[i]:
                # Its extrapolated point was worse: back at its last EM point.
                r.n_iter += 1
                if r.n_iter < max_iter:
                    keep.append(i)
                    continue
                stopped.append(i)
                continue
            if bad[i] or not math.isfinite(lb):
                r.failed = True
                continue
            prev = r.history[-1] if r.history else -math.inf
            r.n_iter += 1
            r.history.append(lb)
            if has_converged(prev, lb, tol, tol_type, float(n)):
                r.converged = True
            elif not (r.n_iter >= max_iter or (
                    rivals is not None and id(r) not in guarded
                    and hopeless(r.history, lead.of(labs[i], sound[i]), float(n)))):
                keep.append(i)
                continue
            stopped.append(i)
        pack.store(stopped)
        if rivals is not None:
            for i in stopped:
                done.add(label[id(pack.runs[i])], pack.runs[i].lower_bound, sound[i])
        if len(keep) < g:
            if not keep:
                break
            pack.keep(keep)
            idx = torch.tensor(keep, device=phi.device)
            before = tuple(take_runs(t, idx, pack.kmax) for t in before)
            undone = [undone[i] for i in keep]
        if accelerate:
            pack.extrapolate(before, [not u for u in undone], OVERRELAX_GROWTH, OVERRELAX_MAX)
