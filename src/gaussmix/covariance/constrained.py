"""Covariance models that constrain components jointly: the base of mclust's family.

Banfield & Raftery (1993) and Celeux & Govaert (1995) write each component's
covariance as ``Sigma_k = lambda_k D_k A_k D_k^T``: a volume ``lambda_k =
|Sigma_k|^(1/D)``, a shape ``A_k`` (diagonal, determinant 1) and an
orientation ``D_k`` (orthogonal).  Each of the three is equal across
components (E), variable (V) or the identity (I), and the model's
three-letter name says which, in that order: ``VEV`` has variable volumes, one
shape and variable orientations.  Fourteen models result; R's mclust fits
all of them.  scikit-learn's four are ``VII`` (spherical), ``VVI`` (diag),
``EEE`` (tied) and ``VVV`` (full), registered under both names.

The other ten are :class:`Constrained` strategies: their parameters are full
matrices (K, D, D), as for ``full``, and their M-step is the maximum-likelihood
constrained covariance from the components' scatter matrices (the
:meth:`~gaussmix.covariance.base.CovarianceType.full_form` of each model), to
which ``reg_covar`` is added.  The M-steps need only the per-component totals,
so chunking, out-of-core data and distributed sums stay exact.
"""

from __future__ import annotations

import math
import warnings

import torch

from .base import CovarianceWarning
from .full import Full

#: Convergence tolerance of the iterative M-steps (VEI, VEE, VEV, EVE, VVE):
#: mclust's default ``emControl()$tol[2]``, the square root of float64's eps.
INNER_TOL = math.sqrt(torch.finfo(torch.float64).eps)

#: Iteration cap of those M-steps (mclust has none by default); reaching it
#: warns and keeps the last iterate.
INNER_MAX_ITER = 1000


class Constrained(Full):
    """A covariance model of mclust's family beyond scikit-learn's four.

    Parameters and attributes have ``full``'s shapes, (K, D, D).  A subclass
    gives :meth:`full_form` (the constrained maximum-likelihood covariances
    from each component's count and scatter) and the number of free
    covariance parameters (mclust's ``nVarParams``).
    """

    # The constraints (equal volumes, shapes or orientations) are not linear.
    affine_closed = False

    # A subclass with mclust's conjugate prior sets this and ``_map_covariances``.
    supports_prior = False

    @property
    def mclust_name(self):
        return self.name

    def min_count(self, n_features):
        # A component's own orientation needs a full-rank scatter; its own
        # volume or shape, two points; a model of equal parts only its mean.
        volume, shape, orientation = self.name
        if orientation == "V":
            return n_features + 1
        return 2 if "V" in (volume, shape) else 1

    def covariances_from_stats(self, nk, means_c, s2, reg_covar):
        # reg_covar is added to each component's scatter before the model's
        # constraint (for scikit-learn's four models the same as adding it
        # after), so that a model whose M-step divides by a determinant or a
        # variance stays defined on a degenerate scatter.
        scatter = s2 / nk[:, None, None] - means_c.unsqueeze(2) * means_c.unsqueeze(1)
        scatter = 0.5 * (scatter + scatter.transpose(1, 2))
        idx = torch.arange(scatter.shape[-1], device=scatter.device)
        scatter[:, idx, idx] += reg_covar
        return self.full_form(nk.unsqueeze(0), scatter.unsqueeze(0))[0]

    def grouped_covariances_from_stats(self, nk, means_c, s2, reg_covar, owner, n_groups,
                                       start=None):
        # The groups' components laid out (groups, K_max), padding with zero
        # counts, so that the constraint couples each group's own components.
        d = means_c.shape[1]
        sizes = torch.bincount(owner, minlength=n_groups)
        first = torch.cumsum(sizes, 0) - sizes
        pos = torch.arange(owner.shape[0], device=owner.device) - first[owner]
        kmax = int(sizes.max())
        scatter = s2 / nk[:, None, None] - means_c.unsqueeze(2) * means_c.unsqueeze(1)
        scatter = 0.5 * (scatter + scatter.transpose(1, 2))
        idx = torch.arange(d, device=scatter.device)
        scatter[:, idx, idx] += reg_covar  # before the constraint, as above
        counts = nk.new_zeros(n_groups, kmax)
        counts[owner, pos] = nk
        padded = scatter.new_zeros(n_groups, kmax, d, d)
        padded[owner, pos] = scatter
        # Iterative M-steps start from the groups' current covariances (fresh
        # groups: from their components' own scatter), padded with the identity.
        begin = torch.eye(d, dtype=scatter.dtype, device=scatter.device).repeat(n_groups, kmax, 1, 1)
        begin[owner, pos] = scatter if start is None else start.to(scatter.dtype)
        return self.full_form(counts, padded, start=begin)[owner, pos]


def inner_cap_reached(model: str, error: float) -> None:
    """Warn that an iterative M-step stopped at :data:`INNER_MAX_ITER`."""
    warnings.warn(
        f"The {model} M-step stopped after {INNER_MAX_ITER} inner iterations with a relative "
        f"change of {error:.3g} (tolerance {INNER_TOL:.3g}); its last iterate is used. A model "
        f"with fewer shared parts (e.g. VVV) may suit these data better.",
        CovarianceWarning, stacklevel=3)


# ----------------------------------------------------------------- helpers
# Every helper takes counts (G, K) and scatter matrices (G, K, D, D) of G
# mixtures; a component with count 0 is padding: it weighs nothing in what the
# components share, and its own result is zero.

def present(nk: torch.Tensor) -> torch.Tensor:
    """(G, K, 1, 1) mask of the real components."""
    return (nk > 0)[..., None, None]


def scatter_sums(nk, scatter):
    """The unnormalised scatter matrices ``W_k = n_k S_k``."""
    return nk[..., None, None] * scatter


def total(nk):
    """Each mixture's total count (G, 1, 1, 1)."""
    return nk.sum(-1)[..., None, None, None]


def det_root(mats):
    """``|M|^(1/D)`` of symmetric positive semi-definite matrices (0 when singular)."""
    d = mats.shape[-1]
    sign, logdet = torch.linalg.slogdet(mats)
    return torch.where(sign > 0, torch.exp(logdet / d), torch.zeros_like(logdet))


def eig_desc(mats):
    """Eigenvalues (descending) and eigenvectors (columns, in that order)."""
    vals, vecs = torch.linalg.eigh(mats)
    return vals.flip(-1), vecs.flip(-1)


def relative_change(old, new) -> float:
    """Largest ``|old - new| / (1 + |new|)``, ignoring NaN (a mixture whose
    M-step failed must not keep the others iterating)."""
    change = (old - new).abs() / (1 + new.abs())
    return float(torch.nan_to_num(change, nan=0.0).max())


def geometric_mean(values):
    """``exp(mean(log v))`` over the last axis (0 when an entry is 0)."""
    return torch.exp(torch.log(values).mean(-1))


def on_real(nk, values, fill):
    """``values`` (G, K, ...) with the padding components' entries set to ``fill``."""
    mask = (nk > 0).reshape(nk.shape + (1,) * (values.dim() - nk.dim()))
    return torch.where(mask, values, torch.full((), fill, dtype=values.dtype,
                                                device=values.device))


def diag_matrix(values):
    """Diagonal matrices from their diagonals (..., D)."""
    return torch.diag_embed(values)


def zero_padding(nk, mats):
    """``mats`` with the padding components set to zero (and no NaN from them)."""
    return torch.where(present(nk), mats, torch.zeros((), dtype=mats.dtype, device=mats.device))
