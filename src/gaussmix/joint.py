"""Joint EM: many mixtures of any covariance types fitted together on small data.

A model search (:mod:`gaussmix.search`) runs hundreds of EM runs on the same
data: every start of every ``K`` of every covariance type.  On small data an
iteration of the per-type batched engine (:mod:`gaussmix.batched`) costs
mostly the overhead of its kernel calls, not arithmetic, and each covariance
type pays it again.  This engine makes one iteration of every run, of every
type, a handful of calls:

* each run's components are held in full form, a mean and a D x D covariance
  each whatever the type, in a (runs, K_max) layout padded with components of
  weight 0 (:class:`JointRun`, :class:`_Pack`);
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

import functools
import math
from dataclasses import dataclass, field

import torch

from .batched import _hopeless
from .covariance import get_covariance_type
from .em import EMPTY_FRACTION, EMResult
from .params import GMMParams
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

_LOG_2PI = math.log(2.0 * math.pi)


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


@functools.lru_cache(maxsize=None)
def _pairs(d: int, device: torch.device):
    """Index maps of the packed upper triangle (``M = D (D + 1) / 2`` entries,
    row-major) of a D x D matrix: its positions in the flattened matrix (M,),
    the packed entry of every flattened position (D * D,), and the weight of
    each packed entry in a quadratic form ``x^T A x`` (1 on the diagonal, 2
    off it: ``x_i x_j`` appears twice)."""
    rows, cols = torch.triu_indices(d, d, device=device)
    flat = rows * d + cols
    packed = torch.empty(d * d, dtype=torch.long, device=device)
    packed[flat] = torch.arange(flat.numel(), device=device)
    packed[cols * d + rows] = torch.arange(flat.numel(), device=device)
    twice = torch.where(rows == cols, 1.0, 2.0).to(torch.float64)
    return rows, cols, flat, packed, twice


def _unpack(v: torch.Tensor, d: int) -> torch.Tensor:
    """Symmetric D x D matrices from their packed upper triangles (..., M)."""
    return v[..., _pairs(d, v.device)[3]].unflatten(-1, (d, d))


def quadratic_features(X: torch.Tensor) -> torch.Tensor:
    """``[1, x, vech(x x^T)]`` of every row, float64 (``vech``: the upper
    triangle, row-major).

    Parameters
    ----------
    X : Tensor (N, D)

    Returns
    -------
    Tensor (N, 1 + D + D (D + 1) / 2)
    """
    x = X.double()
    n, d = x.shape
    rows, cols = _pairs(d, x.device)[:2]
    out = torch.empty(n, 1 + d + rows.numel(), dtype=torch.float64, device=x.device)
    out[:, 0] = 1.0
    out[:, 1:1 + d] = x
    torch.mul(x[:, rows], x[:, cols], out=out[:, 1 + d:])
    return out


@dataclass(eq=False)
class JointRun:
    """One mixture of the joint engine, in full form and the data's coordinates.

    Attributes
    ----------
    cov_name : str
    k : int
    units : Tensor (D,) or None
        The type's units per feature (``x_type = x * units``); None for the
        data's own.
    weights : Tensor (K,)
    means : Tensor (K, D)
    covariances : Tensor (K, D, D)
        Regularised, in the data's coordinates.
    n_iter : int
        EM iterations run.
    history : list of float
        Mean log-likelihood per sample of every iteration's E-step.
    converged, failed : bool
        ``failed``: a step needed what the engine does not do (an emptied
        component, non-finite totals, a covariance that cannot be factorised).
    """

    cov_name: str
    k: int
    units: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    means: torch.Tensor | None = None
    covariances: torch.Tensor | None = None
    n_iter: int = 0
    history: list = field(default_factory=list)
    converged: bool = False
    failed: bool = False

    @property
    def lower_bound(self) -> float:
        """The last mean log-likelihood per sample (``-inf`` before any)."""
        return self.history[-1] if self.history else -math.inf

    def log_prob(self, X: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(x | mu_k, Sigma_k)`` (N, K) in the data's coordinates."""
        chol = torch.linalg.cholesky(self.covariances)
        z = torch.linalg.solve_triangular(
            chol, (X.double().unsqueeze(0) - self.means.unsqueeze(1)).transpose(1, 2), upper=False)
        maha = (z * z).sum(1).T
        half_logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        d = X.shape[1]
        return torch.log(self.weights) - half_logdet - 0.5 * (d * _LOG_2PI + maha)

    def log_jacobian(self) -> float:
        """Log-density per sample in the type's units minus that in the data's."""
        return 0.0 if self.units is None else -float(torch.log(self.units).sum())

    def result(self, dtype=torch.float64) -> EMResult:
        """The run as an :class:`~gaussmix.em.EMResult` in the type's units and
        native parameter shapes (log-likelihoods shifted by the Jacobian)."""
        cov = get_covariance_type(self.cov_name)
        means, full = self.means, self.covariances
        shift = self.log_jacobian()
        if self.units is not None:
            u = self.units
            means, full = means * u, full * (u.unsqueeze(1) * u.unsqueeze(0))
        native = cov.from_full_form(full)
        params = GMMParams(self.weights, means, cov.precisions_cholesky(native), self.cov_name,
                           covariances=native).to(dtype=dtype)
        return EMResult(params, self.converged, self.n_iter, self.lower_bound + shift,
                        [v + shift for v in self.history], [])


class _Pack:
    """The active runs' parameters padded to one (G, K_max) layout; ``blocks``
    (strategy, first, end, units) are the stretches of consecutive runs of one
    type, each constrained by one call in the M-step."""

    def __init__(self, runs: list, d: int, device, reg_covar: float):
        self.runs = runs
        g, kmax = len(runs), max(r.k for r in runs)
        self.kmax = kmax
        f64 = torch.float64
        eye = torch.eye(d, dtype=f64, device=device)
        self.weights = torch.zeros(g, kmax, dtype=f64, device=device)
        self.means = torch.zeros(g, kmax, d, dtype=f64, device=device)
        self.covs = eye.repeat(g, kmax, 1, 1)
        # Each run's components go to flat slots i * K_max + j: one indexed
        # copy per parameter for all runs.
        slots = [i * kmax + j for i, r in enumerate(runs) for j in range(r.k)]
        mask = torch.zeros(g * kmax, dtype=torch.bool, device=device)
        mask[torch.tensor(slots, device=device)] = True
        mask = mask.view(g, kmax)
        have = [i for i, r in enumerate(runs) if r.weights is not None]
        if have:
            at = torch.tensor([i * kmax + j for i in have for j in range(runs[i].k)],
                              device=device)
            self.weights.view(-1)[at] = torch.cat([runs[i].weights for i in have])
            self.means.view(-1, d)[at] = torch.cat([runs[i].means for i in have])
            self.covs.view(-1, d, d)[at] = torch.cat([runs[i].covariances for i in have])
        self.blocks = []
        for i, r in enumerate(runs):
            if not self.blocks or self.blocks[-1][0].name != r.cov_name:
                self.blocks.append([get_covariance_type(r.cov_name), i, i + 1, r.units])
            else:
                self.blocks[-1][2] = i + 1
        # Per component, what the M-step adds: to the counts 10 eps (1 on
        # padding, which then never looks empty); to the scatter, before the
        # type's constraint, the regularisation in the type's units; to the
        # padding's covariances the identity.
        self.real = mask.to(f64)
        self.count_pad = torch.where(mask, 10.0 * torch.finfo(f64).eps, 1.0)
        reg = torch.zeros(g, kmax, d, d, dtype=f64, device=device)
        for _, a, b, units in self.blocks:
            r = reg_covar * eye
            if units is not None:
                r = r / (units.unsqueeze(1) * units.unsqueeze(0))
            reg[a:b] = r
        zero = torch.zeros((), dtype=f64, device=device)
        self.reg = torch.where(mask[..., None, None], reg, zero)
        self.pad_eye = torch.where(mask[..., None, None], zero, eye)
        self.chol = None
        # Over-relaxation (:meth:`extrapolate`): each run's step factor,
        # whether its current parameters are an extrapolated point, and the
        # plain EM point it falls back to.
        self.affine = torch.tensor([get_covariance_type(r.cov_name).affine_closed for r in runs],
                                   device=device)
        self.eta = torch.ones(g, dtype=f64, device=device)
        self.jumped = torch.zeros(g, dtype=torch.bool, device=device)
        self.safe = None

    def keep(self, rows: list) -> None:
        """Keep the listed runs (positions, in order) only, and only as many
        component slots as the largest of them has."""
        idx = torch.tensor(rows, device=self.weights.device)
        self.runs = [self.runs[i] for i in rows]
        self.kmax = max(r.k for r in self.runs)
        for name in ("weights", "means", "covs", "chol", "real", "count_pad", "reg", "pad_eye"):
            setattr(self, name, getattr(self, name)[idx, :self.kmax].contiguous())
        for name in ("affine", "eta", "jumped"):
            setattr(self, name, getattr(self, name)[idx])
        if self.safe is not None:
            self.safe = tuple(t[idx, :self.kmax].contiguous() for t in self.safe)
        blocks, pos = [], {old: new for new, old in enumerate(rows)}
        for strategy, a, b, units in self.blocks:
            inside = [pos[i] for i in range(a, b) if i in pos]
            if inside:
                blocks.append([strategy, inside[0], inside[-1] + 1, units])
        self.blocks = blocks

    def store(self, rows: list) -> None:
        """Copy the current parameters of the listed runs (positions) into
        their :class:`JointRun` (one gather per parameter)."""
        if not rows:
            return
        idx = torch.tensor(rows, device=self.weights.device)
        w, m, c = self.weights[idx], self.means[idx], self.covs[idx]
        for j, i in enumerate(rows):
            r = self.runs[i]
            r.weights, r.means, r.covariances = w[j, :r.k], m[j, :r.k], c[j, :r.k]

    def params(self) -> tuple:
        """The current (weights, means, covariances, Cholesky factors)."""
        return self.weights, self.means, self.covs, self.chol

    def _set(self, mask: torch.Tensor, params: tuple) -> None:
        """Replace the current parameters of the runs in ``mask`` (G,) by ``params``."""
        cur = self.params()
        new = [torch.where(mask.view(-1, *([1] * (c.dim() - 1))), p, c) for c, p in zip(cur, params)]
        self.weights, self.means, self.covs, self.chol = new

    def fall_back(self, rejected: list) -> None:
        """Return the listed runs (G bools) from their extrapolated point to
        the plain EM point it was extrapolated from, with step factor 1."""
        mask = torch.tensor(rejected, device=self.eta.device)
        self._set(mask, self.safe)
        self.eta = torch.where(mask, 1.0, self.eta)
        self.jumped = self.jumped & ~mask

    def extrapolate(self, before: tuple, accepted: list, growth: float, eta_max: float) -> None:
        """Over-relaxed EM (Salakhutdinov & Roweis 2003): move each accepted
        run from ``before`` (the parameters its E-step used) past its new EM
        point, ``before + eta (EM - before)``, with ``eta`` grown by
        ``growth`` at each accepted step up to ``eta_max``.  A run whose
        extrapolated point is not a valid mixture (a weight <= 0, a
        covariance that cannot be factorised), or whose type is not
        :attr:`~gaussmix.covariance.CovarianceType.affine_closed`, stays at
        its EM point with factor 1.  The EM point is kept for
        :meth:`fall_back`."""
        acc = torch.tensor(accepted, device=self.eta.device) & self.affine
        eta = torch.where(acc, (self.eta * growth).clamp_(max=eta_max), 1.0)
        self.safe = self.params()
        e = eta.view(-1, 1)
        # One kernel per parameter: lerp(a, b, eta) = a + eta (b - a).
        w = torch.lerp(before[0], self.weights, e)
        m = torch.lerp(before[1], self.means, e.unsqueeze(-1))
        c = torch.lerp(before[2], self.covs, e.unsqueeze(-1).unsqueeze(-1))
        chol, info = torch.linalg.cholesky_ex(c)
        # Padding weights are 0 before and after: 1 - real lifts them.
        positive = (w + (1.0 - self.real)).amin(1) > 0
        jump = acc & (eta > 1) & (info.amax(1) == 0) & positive
        if bool(info.any()):
            # A failed factorisation may spoil others of the same call.
            chol = chol.clone()
            chol[jump] = torch.linalg.cholesky_ex(c[jump])[0]
        self._set(jump, (w, m, c, chol))
        self.eta = torch.where(jump, eta, 1.0)
        self.jumped = jump

    def coefficients(self) -> torch.Tensor:
        """``W`` (P, K_max * G): ``phi @ W`` is every component's
        weighted log-density (``-inf`` on padding), slot-major: column
        ``j * G + i`` is component ``j`` of run ``i``, so that the per-run
        reductions of :func:`_totals` run over the leading axis of
        contiguous rows (a reduction over a trailing axis of length K_max is
        several times slower)."""
        g, kmax, d = self.means.shape
        prec = torch.cholesky_inverse(self.chol)
        pm = torch.bmm(prec.view(-1, d, d), self.means.view(-1, d, 1)).view(g, kmax, d)
        half_log_det = torch.log(torch.diagonal(self.chol, dim1=-2, dim2=-1)).sum(-1)
        const = (torch.log(self.weights) - half_log_det - 0.5 * d * _LOG_2PI
                 - 0.5 * (self.means * pm).sum(-1))
        flat, twice = _pairs(d, prec.device)[2::2]
        quad = prec.reshape(g, kmax, d * d)[..., flat] * (-0.5 * twice)
        w = torch.cat([const.unsqueeze(-1), pm, quad], dim=-1)
        return w.transpose(0, 1).reshape(kmax * g, -1).T

    def m_step(self, totals: torch.Tensor, fresh: bool = False) -> list:
        """New parameters from the totals (G, K_max, P) of every component;
        returns, per run, whether it failed (an emptied component or a
        covariance that cannot be factorised; its parameters are then junk).
        ``fresh``: the runs have no parameters yet, and an iterative M-step
        starts from the components' own scatter matrices.
        Non-finite totals show as a non-finite log-likelihood at the next pass."""
        g, kmax, d = self.means.shape
        t = totals
        nk = t[..., 0] + self.count_pad
        means = t[..., 1:1 + d] / nk.unsqueeze(-1)
        scatter = (_unpack(t[..., 1 + d:], d) / nk[..., None, None]
                   - means.unsqueeze(-1) * means.unsqueeze(-2))
        w = nk * self.real  # padding counts nothing
        # Regularised before the constraint, so that a model whose M-step
        # divides by a determinant stays defined on a degenerate scatter.
        scatter = scatter + self.reg
        parts = []
        for strategy, a, b, units in self.blocks:
            # The current covariances are where an iterative M-step starts
            # (a fresh run: its components' own scatter).
            start = scatter[a:b] if fresh else self.covs[a:b]
            if units is None:
                parts.append(strategy.full_form(w[a:b], scatter[a:b], start=start))
            else:
                uu = units.unsqueeze(1) * units.unsqueeze(0)
                parts.append(strategy.full_form(w[a:b], scatter[a:b] * uu, start=start * uu) / uu)
        covs = (parts[0] if len(parts) == 1 else torch.cat(parts)) + self.pad_eye
        chol, info = torch.linalg.cholesky_ex(covs)
        bad = ((nk < EMPTY_FRACTION) | (info > 0)).any(1).tolist()
        if any(bad) and bool(info.any()):
            # A failed factorisation may spoil others of the same call.
            good = info.eq(0).all(1)
            chol = chol.clone()
            chol[good] = torch.linalg.cholesky_ex(covs[good])[0]
        self.weights = w / w.sum(1, keepdim=True)
        self.means, self.covs, self.chol = means, covs, chol
        return bad


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
        e = grid.sub_(top).exp_()
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


def _factored_pack(phi: torch.Tensor, runs: list, reg_covar: float = 0.0) -> "_Pack":
    """The runs' current parameters packed, with their covariances factorised."""
    pack = _Pack(runs, _n_features(phi), phi.device, reg_covar)
    pack.chol = torch.linalg.cholesky(pack.covs)
    return pack


def _by_component(totals: torch.Tensor, g: int, kmax: int) -> torch.Tensor:
    """(G, K_max, P) of slot-major totals (P, K_max * G), contiguous for the
    M-step's views."""
    return totals.view(-1, kmax, g).permute(2, 1, 0).contiguous()


def _resp_totals(phi: torch.Tensor, runs: list, resp_of, labels=None) -> torch.Tensor:
    """Totals (G, K_max, P) of the runs' starting responsibilities: hard
    ``labels[i]`` (N,) where given (``-1``: the row counts for no component),
    else ``resp_of(i, a, b)``."""
    n = phi.shape[0]
    g, kmax = len(runs), max(r.k for r in runs)
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
            view[:, :runs[i].k, i] = resp_of(i, a, b)
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
    runs = [JointRun("full", k) for _ in range(g)]
    t = _resp_totals(phi, runs, None, list(labels.T))
    counts = t[..., 0]
    safe = counts.clamp(min=1.0).unsqueeze(-1)
    means = t[..., 1:1 + d] / safe
    scatter = (_unpack(t[..., 1 + d:], d)
               - counts[..., None, None] * means.unsqueeze(-1) * means.unsqueeze(-2))
    return counts, means, scatter


def _n_features(phi: torch.Tensor) -> int:
    """D from the width ``1 + D + D (D + 1) / 2`` of the quadratic features."""
    return int(round((math.sqrt(1 + 8 * phi.shape[1]) - 3) / 2))


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
    bad = pack.m_step(_resp_totals(phi, runs, resp_of, labels), fresh=True)
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
    label = {id(r): (rivals[i] if rivals is not None else None) for i, r in enumerate(runs)}
    guarded = {id(r) for i, r in enumerate(runs) if protected and protected[i]}
    active = _by_type([r for r in runs if not (r.converged or r.failed or r.n_iter >= max_iter)])
    if not active:
        return
    pack = _factored_pack(phi, active, reg_covar)
    moving = {id(r) for r in active}
    # The best finished run of each label (stopped runs never change).
    done = {}

    def finished(r):
        done[label[id(r)]] = max(done.get(label[id(r)], -math.inf), r.lower_bound)

    for r in runs:
        if not r.failed and id(r) not in moving:
            finished(r)
    while pack.runs:
        g = len(pack.runs)
        ll, totals = _totals(phi, pack.coefficients(), g, pack.kmax)
        before = pack.params()
        bad = pack.m_step(totals)
        lls = (ll / n).tolist()
        undone = [False] * g
        if accelerate:
            undone = [j and not lb >= r.lower_bound
                      for j, lb, r in zip(pack.jumped.tolist(), lls, pack.runs)]
            if any(undone):
                pack.fall_back(undone)
        lead = dict(done)
        labs = [label[id(r)] for r in pack.runs]
        if rivals is not None:
            for lab, lb, u in zip(labs, lls, undone):
                if not u and lb > lead.get(lab, -math.inf):
                    lead[lab] = lb
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
                    and _hopeless(r.history, lead[labs[i]], float(n)))):
                keep.append(i)
                continue
            stopped.append(i)
        pack.store(stopped)
        for i in stopped:
            finished(pack.runs[i])
        if len(keep) < g:
            if not keep:
                break
            pack.keep(keep)
            idx = torch.tensor(keep, device=phi.device)
            before = tuple(t[idx, :pack.kmax] for t in before)
            undone = [undone[i] for i in keep]
        if accelerate:
            pack.extrapolate(before, [not u for u in undone], OVERRELAX_GROWTH, OVERRELAX_MAX)
