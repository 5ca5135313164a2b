"""Matrix kernels the covariance strategies share: precision factors, the
symmetric-positive-definite check, and the second moments of a chunk."""

from __future__ import annotations

import torch


def _cholesky_upper_inverse(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper-triangular U with U U^T = cov^{-1}, batched over leading dims, and
    the flat mask of matrices whose Cholesky factorisation failed."""
    chol, info = torch.linalg.cholesky_ex(cov)
    bad = (info != 0).reshape(-1)
    if bool(bad.any()):
        return cov, bad
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device).expand_as(cov)
    inv_lower = torch.linalg.solve_triangular(chol, eye, upper=False)
    return inv_lower.transpose(-1, -2), bad


def _check_symmetric_pd(mats: torch.Tensor, name: str) -> None:
    scale = mats.abs().amax(dim=(-1, -2), keepdim=True).clamp_min(torch.finfo(mats.dtype).tiny)
    asym = (mats - mats.transpose(-1, -2)).abs() / scale
    if bool((asym > 1e-8).any()):
        raise ValueError(f"'{name}' should be symmetric, positive-definite: it is not symmetric; "
                         f"make it symmetric, e.g. (A + A.T) / 2.")
    _, info = torch.linalg.cholesky_ex(mats)
    if bool((info != 0).any()):
        raise ValueError(
            f"'{name}' should be symmetric, positive-definite: at least one matrix has a "
            f"non-positive eigenvalue. Add a small multiple of the identity to it."
        )


def row_sums(a: torch.Tensor) -> torch.Tensor:
    """Sums over the last axis of a 2-D tensor.

    A matrix-vector product with ones when rows are short: torch's reduction
    kernels are slow over an inner axis of a few elements (measured 15x for
    2 columns, 1.5x for 16), a GEMV is not.
    """
    if a.shape[1] > 32:
        return a.sum(1)
    return a @ torch.ones(a.shape[1], dtype=a.dtype, device=a.device)


def second_moment_weighted(xc: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
    """Full second moments (K, D, D) as ``xc^T @ W`` with W (B, K*D).

    ``W[b, k*D + j] = resp[b, k] * xc[b, j]``: one GEMM with the chunk as its
    inner dimension, for all components at once.
    """
    b, d = xc.shape
    k = resp.shape[1]
    weighted = (resp.unsqueeze(2) * xc.unsqueeze(1)).view(b, k * d)
    return (xc.T @ weighted).view(d, k, d).transpose(0, 1).contiguous()


def second_moment_outer(xc: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
    """Full second moments (K, D, D) as ``resp^T @ O`` with the outer products O (B, D*D)."""
    b, d = xc.shape
    k = resp.shape[1]
    outer = (xc.unsqueeze(2) * xc.unsqueeze(1)).view(b, d * d)
    return (resp.T @ outer).view(k, d, d)
