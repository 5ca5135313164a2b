"""Chunking of data so that no (N, K, D) tensor is ever formed."""

from __future__ import annotations

from typing import Iterator

import torch

__all__ = ["chunk_rows", "iter_chunks"]

# Elements of the largest per-chunk intermediate (B x K*D) on the CPU: 2**20
# float64 values = 8 MiB, so that a chunk's intermediates stay in the L3
# cache between the GEMM that writes them and the reduction that reads them,
# while chunks stay long enough that the per-chunk overhead (~15 small ops,
# each a parallel region that both threads must reach) stays small.
# Measured per pass on a 2-core EPYC at 100k x 16 x 16 full, idle machine:
# 256 rows 318 ms, 1024 116 ms, 2048 98 ms, 4096 78 ms, 8192 126 ms; under
# load (average ~5) 1024-4096 rows were all within 105-111 ms.
_CPU_BUDGET = 1 << 20
# Never fewer rows than this on the CPU: below it the per-chunk overhead wins.
_CPU_MIN_ROWS = 256
# On CUDA the floor of a chunk's budget (elements), before free memory is asked.
_CUDA_BUDGET = 1 << 22


def chunk_rows(n_samples: int, n_components: int, n_features: int, device=None,
               dtype=torch.float64, batch_size: int | None = None) -> int:
    """Rows per chunk.

    Parameters
    ----------
    n_samples, n_components, n_features : int
        Problem size.
    device : torch.device, optional
        On CUDA the chunk is sized from the free memory (a quarter of it), so
        running out of memory is avoided by construction.
    dtype : torch.dtype
        Element type of the data.
    batch_size : int, optional
        Explicit user choice; wins when given.

    Returns
    -------
    int
        Number of rows per chunk, at least 1 and at most ``n_samples``.
    """
    if batch_size is not None:
        return max(1, min(int(batch_size), max(n_samples, 1)))
    k, d = n_components, n_features
    # The widest per-row intermediate: (B, K*D) distances / weighted data, or
    # (B, D*D) outer products (used only when D < K), plus (B, K) and (B, D) ones.
    per_row = max(k * d, d * d if d < k else 0) + 4 * k + 2 * d
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        elem = torch.finfo(dtype).bits // 8
        # Several intermediates of per_row size live at once: stay within 1/4 of free.
        budget = max(_CUDA_BUDGET, free // (4 * 3 * elem))
        rows = max(1, budget // per_row)
    else:
        rows = max(_CPU_MIN_ROWS, _CPU_BUDGET // per_row)
    return max(1, min(rows, max(n_samples, 1)))


def iter_chunks(
    X: torch.Tensor, sample_weight: torch.Tensor | None, rows: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(X_chunk, weight_chunk)`` views of at most ``rows`` rows."""
    n = X.shape[0]
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        yield X[start:stop], (None if sample_weight is None else sample_weight[start:stop])
