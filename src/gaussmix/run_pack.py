"""Many mixtures' parameters in one padded layout: the state of the joint EM
engine's batch (:mod:`gaussmix.joint`), its M-step and its over-relaxed steps.
"""

from __future__ import annotations

import functools

import torch

from .covariance import get_covariance_type
from .covariance.base import _LOG_2PI, CovarianceType
from .em import EMPTY_FRACTION
from .rivals import SOUND_COUNT_FACTOR, SOUND_MIN_PIVOT
from .joint_run import StoredRows
from .quadratic import _n_features, _pairs, _unpack

__all__: list = []

#: Fewest features for which each type factorises its own structure
#: (diagonal, shared) instead of one batched Cholesky of every matrix: below
#: it the per-matrix LAPACK calls are cheap and the extra calls per type cost
#: more (measured: 13 features 12% faster, 2-4 features 1-6% slower).
STRUCTURED_MIN_FEATURES = 8

#: The least pivot itself (``SOUND_MIN_PIVOT`` bounds its square).
_SOUND_PIVOT = SOUND_MIN_PIVOT ** 0.5

#: Fewest runs stored by one batch that a new batch gathers as whole rows;
#: runs from smaller groups are sliced one by one (cheaper than an indexed
#: copy per parameter for one or two rows).
_GATHER_MIN_ROWS = 8


class _Pack:
    """The active runs' parameters padded to one (G, K_max) layout; ``blocks``
    (strategy, first, end, scale) are the stretches of consecutive runs of one
    type, each constrained by one call in the M-step (``scale``: the outer
    product ``u u^T`` of the type's units ``u``, or None)."""

    def __init__(self, runs: list, d: int, device, reg_covar: float):
        self.runs = runs
        g, kmax = len(runs), max(r.k for r in runs)
        self.kmax = kmax
        f64 = torch.float64
        eye = torch.eye(d, dtype=f64, device=device)
        self.weights = torch.zeros(g, kmax, dtype=f64, device=device)
        self.means = torch.zeros(g, kmax, d, dtype=f64, device=device)
        self.covs = eye.repeat(g, kmax, 1, 1)
        ks = torch.tensor([r.k for r in runs], device=device)
        mask = torch.arange(kmax, device=device) < ks.unsqueeze(1)
        self.chol = None
        have = [i for i, r in enumerate(runs) if r.has_params]
        if have:
            self._gather(runs, have, mask)
        self.blocks = []
        for i, r in enumerate(runs):
            if not self.blocks or self.blocks[-1][0].name != r.cov_name:
                scale = None if r.units is None else r.units.unsqueeze(1) * r.units.unsqueeze(0)
                self.blocks.append([get_covariance_type(r.cov_name), i, i + 1, scale])
            else:
                self.blocks[-1][2] = i + 1
        # What :meth:`sound` compares with: each run's least sound count per
        # component, its units (a Cholesky factor's row i scales by u_i), and
        # infinity on padding slots.
        self.need = SOUND_COUNT_FACTOR * torch.tensor(
            [get_covariance_type(r.cov_name).min_count(d) for r in runs], dtype=f64, device=device)
        self.units = torch.ones(g, 1, d, dtype=f64, device=device)
        for _, a, b, scale in self.blocks:
            if scale is not None:
                self.units[a:b] = torch.diagonal(scale).sqrt()
        self._set_slots(mask)
        # To the scatter, before the type's constraint, the M-step adds the
        # regularisation in the type's units (on the diagonal only: the
        # scale's diagonal is u_i^2).
        reg = torch.zeros(g, kmax, d, dtype=f64, device=device)
        for _, a, b, scale in self.blocks:
            reg[a:b] = reg_covar if scale is None else reg_covar / torch.diagonal(scale)
        self.reg = reg * self.real.unsqueeze(-1)
        self.eye = eye
        # Over-relaxation (:meth:`extrapolate`): each run's step factor,
        # whether its current parameters are an extrapolated point, and the
        # plain EM point it falls back to.
        # Kept as Python lists: a handful of runs' scalars cost less there
        # than a kernel call each per pass.
        self.affine = [get_covariance_type(r.cov_name).affine_closed for r in runs]
        self.eta = [1.0] * g
        self.jumped = [False] * g
        self.safe = None

    def _set_slots(self, mask: torch.Tensor) -> None:
        """The forms of the real-slot mask (G, K_max) that the steps use:
        ``slots`` (G, K_max, 1, 1; the M-step puts the identity elsewhere),
        ``real`` (1.0 on real slots), ``pad_one`` (1.0 on padding, which lifts
        a padding weight of 0 out of a minimum), ``pad_inf`` (infinity on
        padding, for :meth:`sound`'s pivots) and ``count_pad`` (added to the
        counts: 10 eps, and 1 on padding, which then never looks empty)."""
        f64 = torch.float64
        self.slots = mask[..., None, None]
        self.real = mask.to(f64)
        self.pad_one = 1.0 - self.real
        self.pad_inf = torch.where(mask, 0.0, torch.inf).to(f64)
        self.count_pad = torch.where(mask, 10.0 * torch.finfo(f64).eps, 1.0)

    def _gather(self, runs: list, have: list, mask: torch.Tensor) -> None:
        """Place the parameters of the runs at positions ``have`` into the
        batch: whole rows of the batches that stored many of them (one
        indexed copy per parameter and source, Cholesky factors included),
        the others' own slices by one indexed copy over their real slots."""
        g, kmax = len(runs), self.kmax
        device = self.weights.device
        own, groups = [], {}
        for i in have:
            slot = runs[i].slot
            if slot is None:
                own.append(i)
            else:
                _, at, rows = groups.setdefault(id(slot[0]), (slot[0], [], []))
                at.append(i)
                rows.append(slot[1])
        for key in [key for key, (_, at, _) in groups.items() if len(at) < _GATHER_MIN_ROWS]:
            own += groups.pop(key)[1]
        own.sort()
        # Factors come along only if every run brings them.
        with_chol = not own and len(have) == g and all(src.chol is not None
                                                       for src, _, _ in groups.values())
        if with_chol:
            self.chol = self.covs.clone()
        names = ("weights", "means", "covs") + (("chol",) if with_chol else ())
        for src, at, rows in groups.values():
            idx = torch.tensor(rows, device=device)
            whole = at == list(range(g))
            pos = slice(None) if whole else torch.tensor(at, device=device)
            for name in names:
                part = getattr(src, name).index_select(0, idx)
                width = part.shape[1]
                if width > kmax:
                    part = part[:, :kmax]
                if whole and width >= kmax:
                    setattr(self, name, part.contiguous())
                else:
                    getattr(self, name)[pos, :min(width, kmax)] = part
        if own:
            # Their components go to flat slots i * K_max + j, j < K_i.
            sub = mask if len(own) == g else mask[torch.tensor(own, device=device)]
            rows, cols = sub.nonzero(as_tuple=True)  # row-major: the runs' own order
            at = (rows if len(own) == g else torch.tensor(own, device=device)[rows]) * kmax + cols
            d = self.means.shape[-1]
            self.weights.view(-1)[at] = torch.cat([runs[i].weights for i in own])
            self.means.view(-1, d)[at] = torch.cat([runs[i].means for i in own])
            self.covs.view(-1, d, d)[at] = torch.cat([runs[i].covariances for i in own])

    def _by_block(self, method: str, mats: torch.Tensor):
        """Each block's strategy ``method`` (:meth:`~gaussmix.covariance.CovarianceType.full_form_cholesky`
        or ``full_form_precisions``) applied to its runs' rows of ``mats``,
        the results joined: a type with structure skips the per-matrix LAPACK
        calls that dominate small data."""
        if mats.shape[-1] < STRUCTURED_MIN_FEATURES:
            # Small matrices: one batched call (the general form, right for
            # every type) costs less than one per block.
            return getattr(CovarianceType, method)(self.blocks[0][0], mats)
        if len(self.blocks) == 1:
            return getattr(self.blocks[0][0], method)(mats)
        parts = [getattr(s, method)(mats[a:b]) for s, a, b, _ in self.blocks]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(p) for p in zip(*parts))
        return torch.cat(parts)

    def factor(self, covs: torch.Tensor) -> tuple:
        """Lower Cholesky factors of ``covs`` (G, K_max, D, D) and ``info``
        (G, K_max), 0 where factorised."""
        return self._by_block("full_form_cholesky", covs)

    def keep(self, rows: list) -> None:
        """Keep the listed runs (positions, in order) only, and only as many
        component slots as the largest of them has."""
        idx = torch.tensor(rows, device=self.weights.device)
        self.runs = [self.runs[i] for i in rows]
        self.kmax = max(r.k for r in self.runs)
        self._set_slots(take_runs(self.slots[:, :, 0, 0], idx, self.kmax))
        for name in ("weights", "means", "covs", "chol", "reg"):
            setattr(self, name, take_runs(getattr(self, name), idx, self.kmax))
        for name in ("need", "units"):
            setattr(self, name, getattr(self, name).index_select(0, idx))
        for name in ("affine", "eta", "jumped"):
            old = getattr(self, name)
            setattr(self, name, [old[i] for i in rows])
        if self.safe is not None:
            self.safe = tuple(take_runs(t, idx, self.kmax) for t in self.safe)
        blocks, pos = [], {old: new for new, old in enumerate(rows)}
        for strategy, a, b, scale in self.blocks:
            inside = [pos[i] for i in range(a, b) if i in pos]
            if inside:
                blocks.append([strategy, inside[0], inside[-1] + 1, scale])
        self.blocks = blocks

    def store(self, rows: list) -> None:
        """Hand the listed runs (positions) their current parameters: each
        keeps a reference to its row of the batch's current tensors
        (:class:`~gaussmix.joint_run.StoredRows`), sliced only when read."""
        if not rows:
            return
        stored = StoredRows(self.weights, self.means, self.covs, self.chol)
        for i in rows:
            self.runs[i].keep_in(stored, i)

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
        if all(rejected):
            self.weights, self.means, self.covs, self.chol = self.safe
        else:
            self._set(torch.tensor(rejected, device=self.weights.device), self.safe)
        self.eta = [1.0 if r else e for r, e in zip(rejected, self.eta)]
        self.jumped = [j and not r for r, j in zip(rejected, self.jumped)]

    def extrapolate(self, before: tuple, accepted: list, growth: float, eta_max: float) -> None:
        """Over-relaxed EM (Salakhutdinov & Roweis 2003): move each accepted
        run from ``before`` (the parameters its E-step used) past its new EM
        point, ``before + eta (EM - before)``, with ``eta`` grown by
        ``growth`` (> 1) at each accepted step up to ``eta_max``.  A run whose
        extrapolated point is not a valid mixture (a weight <= 0, a
        covariance that cannot be factorised), or whose type is not
        :attr:`~gaussmix.covariance.CovarianceType.affine_closed`, stays at
        its EM point with factor 1.  The EM point is kept for
        :meth:`fall_back`."""
        # Python floats: the same IEEE products as a float64 tensor's.
        eta = [min(e * growth, eta_max) if a and f else 1.0
               for e, a, f in zip(self.eta, accepted, self.affine)]
        self.safe = self.params()
        if all(e == 1.0 for e in eta):
            # No run moves past its EM point (lerp(a, b, 1) = b exactly).
            self.eta, self.jumped = eta, [False] * len(eta)
            return
        e = torch.tensor(eta, dtype=self.weights.dtype, device=self.weights.device).view(-1, 1)
        # One kernel per parameter: lerp(a, b, eta) = a + eta (b - a).
        w = torch.lerp(before[0], self.weights, e)
        m = torch.lerp(before[1], self.means, e.unsqueeze(-1))
        c = torch.lerp(before[2], self.covs, e.view(-1, 1, 1, 1))
        chol, info = self.factor(c)
        # Padding weights are 0 before and after: lifted by 1.  (NaN is not > 0.)
        least = (w + self.pad_one).amin(1).masked_fill_(info.any(1), -1.0).tolist()
        invalid = [not v > 0 for v in least]
        # (A run with a factor above 1 was accepted: growth > 1.)
        jump = [x > 1.0 and not v for x, v in zip(eta, invalid)]
        if any(invalid):
            # Rare: a point that is not a mixture; its run stays at its EM point.
            mask = torch.tensor(jump, device=self.weights.device)
            if bool(info.any()):
                chol = _refactor(chol, c, mask)
            self._set(mask, (w, m, c, chol))
        else:
            # No selection needed: a run with factor 1 is at its EM point
            # exactly (lerp(a, b, 1) = b), with the same factors.
            self.weights, self.means, self.covs, self.chol = w, m, c, chol
        self.eta = [x if j else 1.0 for x, j in zip(eta, jump)]
        self.jumped = jump

    def sound(self, n_samples: int) -> list:
        """Per run, whether its current parameters are clear of collapse (see
        :data:`gaussmix.rivals.SOUND_COUNT_FACTOR`; a component's count is its
        weight times ``n_samples``; pivots in the type's units): a collapsing
        run's log-likelihood grows without bound, and it must not make other
        runs look hopeless."""
        # Padding weighs 0 (lifted to 1 here, above any real least weight) and
        # its pivots are pushed to infinity.
        least = (self.weights + self.pad_one).amin(1) * n_samples >= self.need
        pivots = (torch.diagonal(self.chol, dim1=-2, dim2=-1) * self.units).amin(-1)
        return (least & ((pivots + self.pad_inf).amin(1) >= _SOUND_PIVOT)).tolist()

    def coefficients(self) -> torch.Tensor:
        """``W`` (P, K_max * G): ``phi @ W`` is every component's
        weighted log-density (``-inf`` on padding), slot-major: column
        ``j * G + i`` is component ``j`` of run ``i``, so that the per-run
        reductions of :func:`_totals` run over the leading axis of
        contiguous rows (a reduction over a trailing axis of length K_max is
        several times slower)."""
        g, kmax, d = self.means.shape
        prec = self._by_block("full_form_precisions", self.chol)
        pm = torch.bmm(prec.reshape(-1, d, d), self.means.view(-1, d, 1)).view(g, kmax, d)
        half_log_det = torch.log(torch.diagonal(self.chol, dim1=-2, dim2=-1)).sum(-1)
        const = (torch.log(self.weights) - half_log_det - 0.5 * d * _LOG_2PI
                 - 0.5 * (self.means * pm).sum(-1))
        quad = prec.reshape(g, kmax, d * d).index_select(-1, _pairs(d, prec.device)[2])
        quad *= _minus_half_weights(d, prec.device)
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
        # One division for the means and the second moments.
        t = t / nk.unsqueeze(-1)
        means = t[..., 1:1 + d].contiguous()
        scatter = _unpack(t[..., 1 + d:], d) - means.unsqueeze(-1) * means.unsqueeze(-2)
        w = nk * self.real  # padding counts nothing
        # Regularised before the constraint, so that a model whose M-step
        # divides by a determinant stays defined on a degenerate scatter.
        scatter.diagonal(dim1=-2, dim2=-1).add_(self.reg)
        parts = []
        for strategy, a, b, uu in self.blocks:
            # The current covariances are where an iterative M-step starts
            # (a fresh run: its components' own scatter).
            start = None
            if strategy.warm_starts:
                start = scatter[a:b] if fresh else self.covs[a:b]
                start = start if uu is None else start * uu
            if uu is None:
                parts.append(strategy.full_form(w[a:b], scatter[a:b], start=start))
            else:
                parts.append(strategy.full_form(w[a:b], scatter[a:b] * uu, start=start) / uu)
        # Padding holds the identity, whatever the type's constraint made of
        # it (a tied mixture's shared matrix): its value then never depends
        # on the run's history, and an over-relaxed step of it stays valid.
        covs = torch.where(self.slots, parts[0] if len(parts) == 1 else torch.cat(parts), self.eye)
        chol, info = self.factor(covs)
        bad = ((nk < EMPTY_FRACTION) | (info > 0)).any(1).tolist()
        if any(bad) and bool(info.any()):
            chol = _refactor(chol, covs, info.eq(0).all(1))
        self.weights = w / w.sum(1, keepdim=True)
        self.means, self.covs, self.chol = means, covs, chol
        return bad


def _refactor(chol: torch.Tensor, covs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``chol`` with the runs in ``rows`` (G,) factorised again on their own:
    a failed factorisation may spoil others of the same call."""
    chol = chol.clone()
    chol[rows] = torch.linalg.cholesky_ex(covs[rows])[0]
    return chol


def take_runs(t: torch.Tensor, idx: torch.Tensor, kmax: int) -> torch.Tensor:
    """Rows ``idx`` of a (G, K_max, ...) parameter, its first ``kmax`` slots, contiguous."""
    t = t.index_select(0, idx)
    return t if t.shape[1] == kmax else t[:, :kmax].contiguous()


@functools.lru_cache(maxsize=None)
def _minus_half_weights(d: int, device) -> torch.Tensor:
    """``-A / 2`` in packed form: each packed entry's weight in ``x^T A x``, times -1/2."""
    return -0.5 * _pairs(d, device)[4]


def _factored_pack(phi: torch.Tensor, runs: list, reg_covar: float = 0.0) -> "_Pack":
    """The runs' current parameters packed, with their covariances factorised."""
    pack = _Pack(runs, _n_features(phi), phi.device, reg_covar)
    if pack.chol is not None:
        # Every run came with its factors.
        return pack
    pack.chol, info = pack.factor(pack.covs)
    if bool(info.any()):
        # Stored runs were factorised before: this raises torch's own error.
        torch.linalg.cholesky(pack.covs)
    return pack
