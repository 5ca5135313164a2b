"""``EVE`` and ``VVE``: one orientation, variable shapes, ``Sigma_k = lambda(_k) D A_k D^T``."""

from __future__ import annotations

import math

import torch

from .constrained import (
    INNER_MAX_ITER,
    INNER_TOL,
    Constrained,
    geometric_mean,
    inner_cap_reached,
    on_real,
    relative_change,
    scatter_sums,
    total,
    zero_padding,
)


#: MM steps per M-step when started from the current covariances.
WARM_STEPS = 5


def common_orientation(nk, w, volumes_vary: bool, start=None):
    """mclust's MM algorithm (Browne & McNicholas 2014; ``mseve``, ``msvve``)
    for the orientation ``D`` shared by all components.

    From ``D = I`` and ``A_k = 1`` (or, given ``start``, the orientation and
    shapes of the current covariances), each iteration takes two
    majorisation-minimisation steps for ``D`` (an SVD each), then the shapes
    ``A_k = diag(D^T W_k D)``, normalised to determinant 1 (``EVE``) or, divided
    by ``n_k``, split into a volume and a shape (``VVE``), until the relative
    change of ``sum_k tr(A_k^-1 D^T W_k D)`` is at most ``INNER_TOL``.  As in
    mclust, the ``VVE`` steps weigh the components without their volumes.

    Returns
    -------
    orientation (G, D, D), shapes (G, K, D), volumes (G, K), target (G,)
    """
    g, k, d = w.shape[0], w.shape[1], w.shape[-1]
    if start is None:
        orient = torch.eye(d, dtype=w.dtype, device=w.device).repeat(g, 1, 1)
        shapes = torch.ones(g, k, d, dtype=w.dtype, device=w.device)
    else:
        # Every component shares D: the first one's eigenvectors give it.
        orient = torch.linalg.eigh(start[:, 0])[1]
        e = torch.diagonal(orient.transpose(-1, -2).unsqueeze(1) @ start @ orient.unsqueeze(1),
                           dim1=-2, dim2=-1)
        shapes = on_real(nk, e / geometric_mean(e).unsqueeze(-1), 1.0)
    largest = torch.linalg.eigvalsh(w)[..., -1]  # (G, K)
    # Warm-started (EM's next M-step), the MM continues from the last one for
    # a few steps only: each step raises the objective, so EM stays monotone
    # (a generalised EM) and the orientation converges along with EM.
    steps = INNER_MAX_ITER if start is None else WARM_STEPS
    previous = math.inf
    # Mixtures whose shapes degenerate (a component without spread along some
    # direction) get NaN covariances: a failed M-step, never an exception.
    broken = torch.zeros(g, dtype=torch.bool, device=w.device)
    eye = torch.eye(d, dtype=w.dtype, device=w.device)

    def svd(f):
        nonlocal broken
        bad = ~torch.isfinite(f).flatten(1).all(1)
        broken = broken | bad
        return torch.linalg.svd(torch.where(bad[:, None, None], eye, f))

    for _ in range(steps):
        inv = 1.0 / shapes
        # Step 1: F = sum_k A_k^-1 D^T (W_k - omega_k I); D <- R P^T.
        dt_w = orient.transpose(-1, -2).unsqueeze(1) @ w
        dt_w = dt_w - largest[..., None, None] * orient.transpose(-1, -2).unsqueeze(1)
        u, _, vh = svd((inv.unsqueeze(-1) * dt_w).sum(1))
        orient = vh.transpose(-1, -2) @ u.transpose(-1, -2)
        # Step 2: F = sum_k W_k D (A_k^-1 - max_j(1/a_kj) I); D <- P R^T.
        wd = w @ orient.unsqueeze(1)
        f = wd * (inv - inv.amax(-1, keepdim=True)).unsqueeze(-2)
        u, _, vh = svd(f.sum(1))
        orient = u @ vh
        # diag(D^T W_k D) with the new D.
        e = torch.diagonal(orient.transpose(-1, -2).unsqueeze(1) @ (w @ orient.unsqueeze(1)),
                           dim1=-2, dim2=-1)
        if volumes_vary:
            scaled = on_real(nk, e / nk.unsqueeze(-1), 1.0)
            volumes = geometric_mean(scaled)
            shapes = scaled / volumes.unsqueeze(-1)
        else:
            volumes = None
            shapes = on_real(nk, e / geometric_mean(e).unsqueeze(-1), 1.0)
        target = (e / shapes).sum((-1, -2))
        err = relative_change(previous, target)
        previous = target
        if err <= INNER_TOL:
            break
    else:
        if start is None:
            inner_cap_reached("VVE" if volumes_vary else "EVE", err)
    shapes = torch.where(broken[:, None, None], torch.nan, shapes)
    return orient, shapes, volumes, target


def _covariances(orient, values):
    """``D diag(values_k) D^T`` (G, K, D, D)."""
    d = orient.unsqueeze(1)
    return (d * values.unsqueeze(-2)) @ d.transpose(-1, -2)


class EVE(Constrained):
    """Equal volume and orientation, variable shape (no closed form; see
    :func:`common_orientation`); ``lambda = sum_k tr(A_k^-1 D^T W_k D) / (n D)``."""

    name = "EVE"
    per_feature_scaling = False
    warm_starts = True

    def n_cov_parameters(self, n_components, n_features):
        d = n_features
        return 1 + n_components * (d - 1) + d * (d - 1) // 2

    def full_form(self, nk, scatter, start=None):
        d = scatter.shape[-1]
        orient, shapes, _, target = common_orientation(nk, scatter_sums(nk, scatter), False,
                                                       start)
        lam = target / (total(nk)[:, 0, 0, 0] * d)
        return zero_padding(nk, _covariances(orient, lam[:, None, None] * shapes))


class VVE(Constrained):
    """Equal orientation, variable volume and shape (no closed form; see
    :func:`common_orientation`)."""

    name = "VVE"
    per_feature_scaling = False
    warm_starts = True

    def n_cov_parameters(self, n_components, n_features):
        d = n_features
        return n_components * d + d * (d - 1) // 2

    def full_form(self, nk, scatter, start=None):
        orient, shapes, volumes, _ = common_orientation(nk, scatter_sums(nk, scatter), True,
                                                        start)
        return zero_padding(nk, _covariances(orient, volumes.unsqueeze(-1) * shapes))
