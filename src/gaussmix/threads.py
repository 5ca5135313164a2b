"""How many torch threads a fit on the CPU runs on.

On small data every kernel of an EM iteration is small (a GEMM of a few
thousand rows, an elementwise pass over a (B, K) block), and splitting it
over threads costs more than it saves: each parallel region wakes the other
threads, tens to hundreds of microseconds with ``OMP_WAIT_POLICY=PASSIVE``
and more on a shared machine.  Measured on a 2-core machine, a
(150, 4) x (4, 12) GEMM takes 4.6 us on one thread and 112 us on two;
``GaussianMixture(3).fit`` on iris 22.6 ms against 54.6 ms, 10 000 x 2 x 3
41.7 against 65.1 ms (docs/PERFORMANCE.md).  So fits (``partial_fit``'s
batches included), inference calls, the model search and the batched
candidates run on one thread up to :data:`SINGLE_THREAD_MAX_SAMPLES`
samples, and on torch's own setting above it, where the passes over
in-memory data share their chunks among that many worker threads of one
torch thread each (:mod:`gaussmix.chunk_workers`).  The setting is the
process's (``torch.set_num_threads``); each call restores it when it returns.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["SINGLE_THREAD_MAX_SAMPLES", "threads_for", "threads_for_input", "torch_threads"]

#: Up to this many samples a fit on the CPU runs torch on one thread.
SINGLE_THREAD_MAX_SAMPLES = 10_000


def threads_for(n_samples: int | None, device) -> int:
    """Torch threads for a fit of ``n_samples`` rows on ``device``.

    Parameters
    ----------
    n_samples : int or None
        None when unknown (data read from a source): torch's setting.
    device : torch.device or str or None
        None means the CPU.

    Returns
    -------
    int
        1 on the CPU up to :data:`SINGLE_THREAD_MAX_SAMPLES` samples, else
        ``torch.get_num_threads()``.
    """
    try:
        cpu = device is None or torch.device(device).type == "cpu"
    except (RuntimeError, TypeError):
        cpu = False  # an invalid device: the fit's own validation says so
    if cpu and n_samples is not None and n_samples <= SINGLE_THREAD_MAX_SAMPLES:
        return 1
    return torch.get_num_threads()


def threads_for_input(X, device) -> int:
    """:func:`threads_for` of what a fit is given: in-memory data of shape
    (n_samples, n_features) (an array, a DataFrame, a Tensor, whose device
    counts when ``device`` is None), or anything else (a source of batches),
    whose size is not known in advance."""
    shape = getattr(X, "shape", None)
    n = int(shape[0]) if shape is not None and len(shape) == 2 else None
    if device is None and isinstance(X, torch.Tensor):
        device = X.device
    return threads_for(n, device)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)`` (only ever fewer
    threads than set), then restore the setting.

    Parameters
    ----------
    n : int
    """
    old = torch.get_num_threads()
    if n >= old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
