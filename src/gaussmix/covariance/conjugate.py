"""The M-step under mclust's conjugate prior: posterior-mode covariances.

With the prior of :mod:`gaussmix.prior` (shrinkage ``kappa``, mean ``mu_p``,
degrees of freedom ``nu``, scale ``Lambda``) the M-step gives the posterior
mode (Fraley & Raftery 2007).  Its formulas are R mclust 6.0.0's, model by
model (its Fortran ``ms*p``, ``me*p`` and ``mn*p`` routines).  With ``n_k``
the counts, ``xbar_k`` the plain weighted means, ``W_k`` the scatter around
them, ``d_k = xbar_k - mu_p``, ``c_k = kappa n_k / (kappa + n_k)``, ``M_k =
c_k d_k d_k^T`` and ``[k>0]`` one when ``kappa > 0``:

- the means are ``(n_k xbar_k + kappa mu_p) / (n_k + kappa)`` (not for EEI,
  nor for EEV in the ``"mstep"`` variant); the mixing proportions are
  ``n_k / n`` (no prior on them);
- the covariances are the model's, from the prior-augmented scatter; for
  example VVV: ``(Lambda + W_k + M_k) / (nu + n_k + D + 1 + [k>0])``.  Each
  strategy's ``_map_covariances`` holds its model's formula.

mclust has two variants, and both are here (``variant=``): ``"mstep"`` is
its ``mstep(..., prior=)``, ``"me"`` the M-step inside its EM (``me``,
which ``Mclust`` and its BIC use; EM in gaussmix uses it).  With shrinkage
they differ for EII, EEI, EVI and EEV, without for EII, EEI, EVI, VVV and
(one dimension) E and V: in the constants of the denominators, in whether
EEV shrinks its means, and in whether EII's residuals are about the shrunk
means.  With one component mclust fits ``mvn``
(models XII, XXI, XXX by orientation), and in one dimension it has only E
and V; the template :meth:`ConjugateMStep.map_covariances` does the same.

mclust has no prior for VEE, EVE, VVE and EVV (``supports_prior`` is False).
"""

from __future__ import annotations

import torch

#: The two M-step variants of mclust (see the module's description).
VARIANTS = ("me", "mstep")


def indicator(prior) -> float:
    """``[k>0]``: 1 when the prior shrinks the means, else 0."""
    return 1.0 if prior.shrinkage > 0 else 0.0


def shrink_weights(nk: torch.Tensor, prior) -> torch.Tensor:
    """``c_k = kappa n_k / (kappa + n_k)`` (K,)."""
    kappa = prior.shrinkage
    return kappa * nk / (kappa + nk)


def diagonals(w: torch.Tensor) -> torch.Tensor:
    """The diagonals (K, D) of scatter matrices (K, D, D); diagonals stay."""
    return w if w.dim() == 2 else torch.diagonal(w, dim1=-2, dim2=-1)


def diagonal_shrinkage(nk, diff, prior) -> torch.Tensor:
    """The diagonals of ``M_k`` (K, D)."""
    return shrink_weights(nk, prior)[:, None] * diff * diff


def full_shrinkage(nk, diff, prior) -> torch.Tensor:
    """``M_k = c_k d_k d_k^T`` (K, D, D)."""
    return shrink_weights(nk, prior)[:, None, None] * diff.unsqueeze(2) * diff.unsqueeze(1)


def spherical_mode(nk, w, diff, prior) -> torch.Tensor:
    """VII (and mvn's XII): ``(Lambda + tr W_k + c_k |d_k|^2) / (nu + D n_k + 2 + D [k>0])`` (K,)."""
    d = diff.shape[1]
    num = prior.scale + diagonals(w).sum(1) + diagonal_shrinkage(nk, diff, prior).sum(1)
    return num / (prior.dof + d * nk + 2 + d * indicator(prior))


def diagonal_mode(nk, w, diff, prior) -> torch.Tensor:
    """VVI (and mvn's XXI): ``(Lambda + diag(W_k + M_k)) / (nu + n_k + 2 + [k>0])`` (K, D)."""
    num = prior.scale + diagonals(w) + diagonal_shrinkage(nk, diff, prior)
    return num / (prior.dof + nk + 2 + indicator(prior))[:, None]


def full_mode(nk, w, diff, prior, extra: float) -> torch.Tensor:
    """VVV (and mvn's XXX): ``(Lambda + W_k + M_k) / (nu + n_k + D + 1 + extra)`` (K, D, D)."""
    d = diff.shape[1]
    num = prior.scale + w + full_shrinkage(nk, diff, prior)
    return num / (prior.dof + nk + d + 1 + extra)[:, None, None]


def one_component_mode(name: str, nk, w, diff, prior) -> torch.Tensor:
    """mclust's ``mvn`` for one component, by the model's orientation and shape
    letters: XII (spherical), XXI (diagonal) or XXX (general); (1, D, D)."""
    if name[2] != "I":
        return full_mode(nk, w, diff, prior, indicator(prior))
    if name[1] == "I":
        var = spherical_mode(nk, w, diff, prior)[:, None].expand(diff.shape)
    else:
        var = diagonal_mode(nk, w, diff, prior)
    return torch.diag_embed(var)


def one_dimensional_mode(equal: bool, nk, w, diff, prior, variant: str) -> torch.Tensor:
    """mclust's one-dimensional models E (``equal``) and V: variances (K,).

    ``w`` holds each component's scatter (K,), or their sum (1,) for E.
    """
    k = nk.shape[0]
    scale = prior.scale.reshape(())
    w = w.reshape(-1)
    shrunk = diagonal_shrinkage(nk, diff, prior)[:, 0]
    flag = indicator(prior)
    if equal:
        extra = k * flag if variant == "mstep" else k
        return ((scale + w.sum() + shrunk.sum()) / (prior.dof + nk.sum() + 2 + extra)).expand(k)
    extra = flag if variant == "mstep" else 1.0
    return (scale + w + shrunk) / (prior.dof + nk + 2 + extra)


class ConjugateMStep:
    """The conjugate-prior part of a covariance strategy's interface.

    :meth:`map_covariances` is a template: it handles what is the same for
    every model (one component, one dimension) and leaves the rest to the
    strategy's ``_map_scatter`` and ``_map_covariances``.
    """

    #: Whether mclust has a conjugate prior for this model.
    supports_prior = False

    @property
    def mclust_name(self) -> str:
        """The model's name in mclust (``full`` is VVV, ``tied`` EEE...)."""
        return self.name

    def prior_scale_shape(self, n_features: int) -> tuple:
        """Shape of the prior's scale: ``()`` for the spherical and diagonal
        models (orientation I), ``(D, D)`` for the others."""
        return () if self.mclust_name[2] == "I" else (n_features, n_features)

    def map_shrinks_means(self, variant: str) -> bool:
        """Whether the M-step shrinks the means toward the prior mean (with
        several components and features; one of either always does)."""
        return True

    def map_means(self, nk, means_c, diff, prior, variant: str = "me") -> torch.Tensor:
        """Posterior-mode means ``(n_k xbar_k + kappa mu_p) / (n_k + kappa)``, or
        the plain means where mclust does not shrink them.

        Parameters
        ----------
        nk : Tensor (K,)
        means_c : Tensor (K, D)
            Plain weighted means, minus the shift of the pass.
        diff : Tensor (K, D)
            ``xbar_k - mu_p``.
        prior : PriorParams
        variant : {"me", "mstep"}
        """
        k, d = means_c.shape
        if k == 1 or d == 1 or self.map_shrinks_means(variant):
            return means_c - (prior.shrinkage / (nk + prior.shrinkage))[:, None] * diff
        return means_c

    def map_covariances(self, nk, means_c, s2, diff, prior, reg_covar: float,
                        variant: str = "me") -> torch.Tensor:
        """Posterior-mode covariances from the totals, in this type's shape.

        Parameters
        ----------
        nk : Tensor (K,)
            Effective counts.
        means_c : Tensor (K, D)
            Plain weighted means minus the shift of the pass.
        s2 : Tensor
            Summed second moments around the shift.
        diff : Tensor (K, D)
            ``xbar_k - mu_p``.
        prior : PriorParams
        reg_covar : float
            Added to the data's scatter per sample (``n_k * reg_covar`` on each
            component's diagonal) before the prior's terms and the model's
            constraint; mclust has no such term (0 gives its numbers).
        variant : {"me", "mstep"}
            mclust's M-step inside EM (``me``) or its ``mstep``.

        Raises
        ------
        ValueError
            If mclust has no prior for this model, or for an unknown variant.
        """
        if not self.supports_prior:
            from . import PRIOR_MODELS  # the registry knows the supported names
            raise ValueError(
                f"mclust has no conjugate prior for the {self.mclust_name} model; a prior is "
                f"available for {list(PRIOR_MODELS)} (and scikit-learn's full, tied, diag, "
                f"spherical, which are VVV, EEE, VVI, VII)."
            )
        if variant not in VARIANTS:
            raise ValueError(f"Invalid M-step variant {variant!r}: use one of {list(VARIANTS)}.")
        w = self._map_scatter(nk, means_c, s2, reg_covar)
        k, d = means_c.shape
        if k == 1:
            return self.from_full_form(one_component_mode(self.mclust_name, nk, w, diff, prior))
        if d == 1:
            var = one_dimensional_mode(self.mclust_name[0] == "E", nk, diagonals(w), diff, prior,
                                       variant)
            return self.from_full_form(var[:, None, None])
        return self._map_covariances(nk, w, diff, prior, variant)

    def _map_scatter(self, nk, means_c, s2, reg_covar) -> torch.Tensor:
        """The data's scatter around the plain means, plus ``n_k reg_covar`` on
        the diagonal: (K, D, D), (K, D) diagonals, or (1, D, D) summed over
        components (a shared covariance)."""
        raise NotImplementedError

    def _map_covariances(self, nk, w, diff, prior, variant) -> torch.Tensor:
        """The model's posterior-mode covariances (several components and
        features) from :meth:`_map_scatter`'s ``w``."""
        raise NotImplementedError
