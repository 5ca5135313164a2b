"""``EVV``: general covariances of one volume, ``Sigma_k = lambda C_k`` with ``|C_k| = 1``."""

from __future__ import annotations

from .constrained import Constrained, det_root, scatter_sums, zero_padding


class EVV(Constrained):
    """Equal volume, variable shape and orientation.

    ``C_k = W_k / |W_k|^(1/D)`` and ``lambda = sum_k |W_k|^(1/D) / n``, a closed
    form.
    """

    name = "EVV"

    def n_cov_parameters(self, n_components, n_features):
        d = n_features
        return 1 + n_components * (d - 1) + n_components * d * (d - 1) // 2

    def full_form(self, nk, scatter, start=None):
        w = scatter_sums(nk, scatter)
        root = det_root(w)  # (G, K); 0 on padding
        lam = root.sum(-1, keepdim=True) / nk.sum(-1, keepdim=True)
        return zero_padding(nk, w * (lam / root)[..., None, None])
