"""Chunk-level parallelism of an EM pass over in-memory data on the CPU.

A pass is a loop over chunks of a few thousand rows, each a dozen small
kernels (one or two GEMMs, elementwise passes over the (K, B)
log-probabilities).  Spread over torch's intra-op threads, every one of those
kernels is a parallel region whose threads must wake up (tens to hundreds of
microseconds under ``OMP_WAIT_POLICY=PASSIVE``, more on a shared machine),
and the GEMMs' skinny shapes gain little from a second thread.  Dealt out
whole to worker threads instead, each running torch on one thread, the
chunks run side by side: torch's kernels release the GIL, and a chunk's
Python is a few percent of its time.

Measured per pass at 100 000 x 16 x 16 on the 2-core machine, float64 (two
torch threads / two workers of one thread): ``full`` 84-95 -> 51-54 ms,
``diag`` 50-55 -> 20-21 ms, ``spherical`` 47-55 -> 13-17 ms
(docs/PERFORMANCE.md).

Each worker sums its own chunks (every ``W``-th, from its index) and the
workers' totals are added in worker order: a fit is deterministic for a given
number of workers; with another number its sums round differently.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import torch

from .threads import threads_for

__all__ = ["MAX_WORKERS", "workers_for", "balanced_rows", "map_workers", "in_workers", "map_chunks"]

#: Most worker threads of one pass.  A chunk's Python (~20 torch calls) holds
#: the GIL for a few percent of the chunk's time, so more workers than this
#: would queue on it; torch's remaining threads go to each worker's kernels.
MAX_WORKERS = 16

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    # A forked child has the pool object but not its threads: work submitted
    # there would wait forever.  It starts a pool of its own.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def workers_for(n_samples: int, device) -> int:
    """Worker threads for the passes of a fit on in-memory data.

    Parameters
    ----------
    n_samples : int
        Rows of the data.
    device : torch.device

    Returns
    -------
    int
        The fit's torch threads on the CPU (:func:`~gaussmix.threads.threads_for`:
        one up to :data:`~gaussmix.threads.SINGLE_THREAD_MAX_SAMPLES` rows), at
        most :data:`MAX_WORKERS`; 1 on other devices.
    """
    if torch.device(device).type != "cpu":
        return 1
    return max(1, min(threads_for(n_samples, device), MAX_WORKERS))


def balanced_rows(n_samples: int, rows: int, workers: int) -> int:
    """Rows per chunk for ``workers`` workers.

    Parameters
    ----------
    n_samples : int
        Rows of the data.
    rows : int
        The longest chunk wanted.
    workers : int

    Returns
    -------
    int
        At most ``rows``, such that the chunks come in a multiple of
        ``workers`` (each worker as many, of about equal length); ``rows``
        itself for one worker.
    """
    if workers <= 1 or n_samples <= 0:
        return rows
    per_worker = -(-n_samples // (rows * workers))
    return -(-n_samples // (per_worker * workers))


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="gaussmix-chunks")
        return _pool


def map_workers(fn, parts: list) -> list:
    """``[fn(part) for part in parts]``, each call on its own worker thread.

    Parameters
    ----------
    fn : callable
        Called once per part, with torch on ``max(1, T // len(parts))``
        threads (``T``: the caller's setting) and under the caller's grad and
        inference modes (both are per-thread in torch).
    parts : list

    Returns
    -------
    list
        The results, in the order of ``parts``.

    Raises
    ------
    Exception
        The first exception a call raised, once every call has ended.  The
        caller's thread setting is restored in every case.
    """
    threads = torch.get_num_threads()
    each = max(1, threads // len(parts))
    grad = torch.is_grad_enabled()
    inference = torch.is_inference_mode_enabled()

    def call(part):
        # The setting is global to torch and to its BLAS; OpenMP keeps one per
        # thread, set here for this worker.
        torch.set_num_threads(each)
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(part)

    torch.set_num_threads(each)
    try:
        futures = [_get_pool().submit(call, part) for part in parts]
        wait(futures)  # every call ends before the setting is restored
        return [f.result() for f in futures]
    finally:
        torch.set_num_threads(threads)


def in_workers(fn, chunks, workers: int, add=None):
    """``fn(chunks)`` with the chunks shared among ``workers`` threads.

    Parameters
    ----------
    fn : callable
        Takes an iterable of chunks and returns their totals: a tuple
        (tensors, numbers or None), or an object that ``add`` adds.
    chunks : iterable
        In-memory chunks (listed first when ``workers > 1``).
    workers : int
        Worker ``w`` takes chunks ``w, w + workers, ...`` (fewer workers
        when there are fewer chunks; 1 runs ``fn`` on the calling thread).
    add : callable, optional
        ``add(total, part)``, the workers' totals summed in worker order;
        default: element by element over the tuples (None stays None).

    Returns
    -------
    What ``fn`` returns, summed over the workers.
    """
    if workers > 1:
        chunks = list(chunks)
        workers = min(workers, len(chunks))
    if workers <= 1:
        return fn(chunks)
    parts = map_workers(lambda i: fn(chunks[i::workers]), list(range(workers)))
    total = parts[0]
    for part in parts[1:]:
        total = add(total, part) if add is not None else tuple(map(_add, total, part))
    return total


def _add(a, b):
    return None if a is None or b is None else a + b


def map_chunks(fn, chunks, workers: int) -> list:
    """``[fn(chunk) for chunk in chunks]``, the chunks shared among threads.

    Parameters
    ----------
    fn : callable
        Per-chunk work whose result does not depend on how the chunks are
        shared (per-row results).
    chunks : iterable
        In-memory chunks (listed first).
    workers : int
        As in :func:`in_workers`.

    Returns
    -------
    list
        The results in the chunks' order.
    """
    chunks = list(chunks)
    workers = max(1, min(workers, len(chunks)))
    if workers == 1:
        return [fn(c) for c in chunks]
    parts = map_workers(lambda part: [fn(c) for c in part],
                        [chunks[i::workers] for i in range(workers)])
    return [parts[i % workers][i // workers] for i in range(len(chunks))]
