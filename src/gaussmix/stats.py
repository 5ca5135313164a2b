"""Additive sufficient statistics of a Gaussian mixture.

Every quantity is a sum over samples, so statistics of chunks add up to the
statistics of the whole data, and statistics of ranks all-reduce with one
``SUM``.  Second moments are taken around a fixed ``shift`` (the mixture mean
of the parameters that produced the responsibilities), which keeps the
centred covariance free of cancellation without a second pass over the data.
All totals are float64 whatever the data's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

__all__ = ["SuffStats", "VariationalStats"]


@dataclass
class SuffStats:
    """Running totals of one EM pass.

    Parameters
    ----------
    nk : Tensor (K,)
        Sum of weighted responsibilities per component.
    s1 : Tensor (K, D)
        Sum of weighted responsibilities times shifted data.
    s2 : Tensor
        Second moments of the shifted data (shape set by the covariance type).
    log_likelihood : Tensor ()
        Sum of sample-weighted per-sample log-likelihoods.
    weight : Tensor ()
        Sum of sample weights (number of samples when unweighted).
    count : Tensor ()
        Number of rows seen (unweighted).
    """

    nk: torch.Tensor
    s1: torch.Tensor
    s2: torch.Tensor
    log_likelihood: torch.Tensor
    weight: torch.Tensor
    count: torch.Tensor

    @classmethod
    def zeros(cls, n_components: int, n_features: int, s2_shape: tuple, device=None) -> "SuffStats":
        """Empty totals on ``device``, in float64."""
        z = dict(dtype=torch.float64, device=device)
        return cls(
            nk=torch.zeros(n_components, **z),
            s1=torch.zeros(n_components, n_features, **z),
            s2=torch.zeros(s2_shape, **z),
            log_likelihood=torch.zeros((), **z),
            weight=torch.zeros((), **z),
            count=torch.zeros((), **z),
        )

    def add_(self, other: "SuffStats") -> "SuffStats":
        """Add ``other`` into ``self`` in place and return ``self``."""
        for f in fields(self):
            getattr(self, f.name).add_(getattr(other, f.name))
        return self

    def flatten(self) -> torch.Tensor:
        """All totals in one flat float64 buffer (for a single all-reduce)."""
        return torch.cat([getattr(self, f.name).reshape(-1) for f in fields(self)])

    def load_flat_(self, flat: torch.Tensor) -> "SuffStats":
        """Overwrite the totals from a buffer made by :meth:`flatten`."""
        offset = 0
        for f in fields(self):
            t = getattr(self, f.name)
            n = t.numel()
            t.copy_(flat[offset : offset + n].reshape(t.shape))
            offset += n
        return self

    def scaled(self, factor: float) -> "SuffStats":
        """A copy with every total multiplied by ``factor``."""
        return SuffStats(**{f.name: getattr(self, f.name) * factor for f in fields(self)})

    @property
    def mean_log_likelihood(self) -> float:
        """Weighted mean per-sample log-likelihood."""
        return float(self.log_likelihood / self.weight)


@dataclass
class VariationalStats(SuffStats):
    """:class:`SuffStats` plus the sum the variational lower bound needs.

    Parameters
    ----------
    entropy : Tensor ()
        ``sum_i w_i sum_k r_ik log r_ik`` (minus the responsibilities' entropy).
    """

    entropy: torch.Tensor

    @classmethod
    def zeros(cls, n_components: int, n_features: int, s2_shape: tuple, device=None) -> "VariationalStats":
        """Empty totals on ``device``, in float64."""
        base = SuffStats.zeros(n_components, n_features, s2_shape, device)
        return cls(**{f.name: getattr(base, f.name) for f in fields(base)},
                   entropy=torch.zeros((), dtype=torch.float64, device=device))
