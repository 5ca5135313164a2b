"""The ``full`` covariance's E-step and moments on packed quadratic features.

One pass of the plain form (:class:`~gaussmix.covariance.full.Full`) spends
``2 B K D^2`` flops on the distances ``(x - mu_k) U_k`` (a (B, K*D)
intermediate that is then squared and summed) and as many on the second
moments (a (B, K*D) responsibility-weighted copy of the data).  Written on the
features ``[x_i x_j (i <= j), x, 1]`` of each row, ``P = (D+1)(D+2)/2``
columns, both halves are one GEMM with the K components on the short axis:

- distances: ``-maha_k / 2 + const_k = W_k . feats`` with ``W_k`` holding
  ``-P_k / 2`` (off-diagonal entries doubled), ``P_k mu_k`` and
  ``const_k - mu_k^T P_k mu_k / 2``;
- moments: ``resp @ feats`` gives every component's ``sum r x_i x_j``,
  ``sum r x`` and ``sum r`` at once.

That is ``2 B K P`` flops each way, about half of the plain form's, with no
(B, K*D) intermediate, and no squaring or row sums.  The expanded quadratic
form adds terms of size ``|x - centre|^2 / sigma^2``, so it runs in float64,
and in float32 only while every component lies near the mixture mean
(:func:`gaussmix.expectation.moment_shift`); a float32 pass with components
farther away runs it in float64.  The features take as long to build as the
GEMMs take to read them, so the form runs where a fit keeps them
(:mod:`gaussmix.feature_cache`, :mod:`gaussmix.batched_packed`).
"""

from __future__ import annotations

import functools

import torch

from .full import Full

__all__ = ["PackedFull", "packed_applies"]


def packed_applies(n_components: int, n_features: int) -> bool:
    """Whether the packed form is the faster one: its features are at most
    twice as wide as the plain form's (B, K*D) intermediate.

    Measured per EM iteration on the CPU (2 threads, features kept), plain /
    packed: D x K = 2 x 3 1.56x, 4 x 2 2.3x, 8 x 4 1.26x, 8 x 8 2.1x,
    16 x 8 2.2x, 16 x 16 2.2x, 32 x 16 1.46x (width ratios 1-1.9); 16 x 6
    1.04x (1.6); 16 x 4 0.96x (2.4), 32 x 8 0.84x (2.2), 64 x 8 0.23x (4.2).
    """
    d = n_features
    return d >= 2 and (d + 1) * (d + 2) // 2 <= 2 * n_components * d


@functools.lru_cache(maxsize=None)
def _upper(d: int, device) -> tuple:
    """Row and column of each packed entry (the upper triangle, row by row)
    and its weight in ``x^T A x`` (2 off the diagonal)."""
    rows, cols = torch.triu_indices(d, d, device=device)
    weight = torch.where(rows == cols, 1.0, 2.0).to(torch.float64)
    return rows, cols, weight


class PackedFull(Full):
    """``full`` with component-major GEMMs on packed quadratic features
    (module docstring).  Parameters, M-step and results are ``full``'s; only
    the arithmetic of a pass differs."""

    component_major = True
    keeps_features = True
    per_component_moments = False

    @staticmethod
    def feature_width(d: int) -> int:
        return d * (d + 1) // 2 + d + 1

    def features(self, X, shift, reuse=None):
        """``X - shift`` (B, D) and the features ``[x_i x_j (i <= j), x, 1]``
        (B, D(D+1)/2 + D + 1), written into ``reuse`` when given (an earlier
        result of as many rows: its ones column is already set).

        The features are the transpose of a row-major (columns, B) buffer:
        each product below then writes contiguous memory, and both GEMMs read
        it as an ordinary BLAS operand.
        """
        b, d = X.shape
        q = d * (d + 1) // 2
        feats = reuse
        if feats is None:
            dtype = torch.promote_types(X.dtype, shift.dtype)
            feats = torch.empty(self.feature_width(d), b, dtype=dtype, device=X.device).T
            feats[:, -1].fill_(1.0)
        xc = feats[:, q : q + d]
        torch.sub(X, shift, out=xc)
        # Row i of the upper triangle, x_i * x_{i..D-1}: D products written in
        # place (a gather of both factors costs twice the memory traffic).
        at = 0
        for i in range(d):
            torch.mul(xc[:, i:], xc[:, i : i + 1], out=feats[:, at : at + d - i])
            at += d - i
        return xc, feats

    def prepare(self, means_c, prec_chol, const=None):
        """Coefficients (K, D(D+1)/2 + D + 1) of ``const_k - maha_k / 2`` on
        the features."""
        rows, cols, weight = _upper(means_c.shape[1], means_c.device)
        prec = self.precisions(prec_chol)
        quad = prec[:, rows, cols] * (-0.5 * weight).to(prec.dtype)
        lin = (prec @ means_c.unsqueeze(-1)).squeeze(-1)
        bias = -0.5 * (means_c * lin).sum(1)
        if const is not None:
            bias = bias + const
        return torch.cat([quad, lin, bias.unsqueeze(1)], dim=1)

    def log_prob_prepared(self, feats, prep, out=None):
        """``const_k - maha_k / 2`` (K, B) as one GEMM ``prep @ feats^T``."""
        return torch.mm(prep, feats.T, out=out)

    def raw_moments(self, xc, resp, feats, into=None):
        """The chunk's additive moments ``resp @ feats`` (K, D(D+1)/2 + D + 1),
        added into ``into`` (a running total) when given."""
        if into is None:
            return resp @ feats
        if into.dtype == resp.dtype:
            return into.addmm_(resp, feats)
        return into.add_(resp @ feats)

    def split_moments(self, raw, n_features):
        """``(nk, s1, s2)`` from (summed) :meth:`raw_moments`; ``s2`` (K, D, D)."""
        d = n_features
        q = d * (d + 1) // 2
        rows, cols, _ = _upper(d, raw.device)
        s2 = raw.new_empty(raw.shape[0], d, d)
        s2[:, rows, cols] = raw[:, :q]
        s2[:, cols, rows] = raw[:, :q]
        return raw[:, -1], raw[:, q : q + d], s2

    def moments_from_raw(self, raw, offsets):
        """``(nk, s1, s2)`` around ``offsets`` (K, D) from (summed)
        :meth:`raw_moments` taken around the pass's shift, in float64:
        ``sum r (x - o)(x - o)^T = S - s1 o^T - o s1^T + nk o o^T``."""
        nk, s1, s2 = self.split_moments(raw.double(), offsets.shape[1])
        o = offsets.double()
        outer = s1.unsqueeze(2) * o.unsqueeze(1)
        s2 = s2 - outer - outer.transpose(1, 2) + nk[:, None, None] * (o.unsqueeze(2) * o.unsqueeze(1))
        return nk, s1 - nk.unsqueeze(1) * o, s2

    def moments(self, xc, resp, feats=None):
        """``(nk, s1, s2)`` from responsibilities ``resp`` (K, B)."""
        if feats is None:
            feats = self.features(xc, torch.zeros((), dtype=xc.dtype, device=xc.device))[1]
        return self.split_moments(self.raw_moments(xc, resp, feats), xc.shape[1])

    def mahalanobis_prepared(self, feats, prep):
        raise NotImplementedError("PackedFull's passes are component-major: log_prob_prepared")


#: The one instance :meth:`Full.pass_form` hands out.
PACKED_FULL = PackedFull()
