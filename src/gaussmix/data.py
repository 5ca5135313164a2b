"""Where the chunks of an EM pass come from.

In-memory tensors are cut into row chunks (:func:`iter_chunks`) so that no
(N, K, D) tensor is ever formed.  Out-of-core data (a ``.npy`` path opened
with ``mmap_mode='r'``, a numpy memmap, a DataLoader, or any re-iterable of
batches) is wrapped in a :class:`DataSource`, which validates each batch and
yields the same kind of chunks; one call of the source is one pass over the
data, so an EM iteration reads the data exactly once.
"""

from __future__ import annotations

import collections.abc
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .chunk_workers import balanced_rows

__all__ = [
    "chunk_rows",
    "iter_chunks",
    "DataSource",
    "is_source",
    "as_source",
    "reservoir_sample",
    "SourceSummary",
    "RESERVOIR_SIZE",
]

# Bytes of the largest per-chunk intermediate (B x K*D) on the CPU with one
# thread: 8 MiB (2**20 float64 values; float32 chunks as long), so that a
# chunk's intermediates stay in the L3 cache between the GEMM that writes them
# and the reduction that reads them, while chunks stay long enough that the
# per-chunk overhead (~15 small ops) stays small.
# Measured per pass on a 2-core EPYC at 100k x 16 x 16 full, float64, idle
# machine: 256 rows 318 ms, 1024 116 ms, 2048 98 ms, 4096 78 ms, 8192 126 ms;
# under load (average ~5) 1024-4096 rows were all within 105-111 ms.
_CPU_BUDGET_BYTES = 8 << 20
# The budget when torch runs on several threads, where every elementwise op
# of a chunk is a parallel region whose wake-up (OMP_WAIT_POLICY=PASSIVE)
# costs the same whatever the chunk's length.  Measured on the shared 2-core
# machine, 2 threads, separated clusters, medians of 11 (docs/PERFORMANCE.md):
# full float64 2978 rows 252 ms, 4468 208, 5957 192; full float32 2978 rows
# 152 ms, 5957 116, 11914 94; diag float64 8192 rows 53 ms, 12288 44, 16384 43.
# (An idle machine had full float64 at 4096 rows 78 ms, 8192 126: 12 MiB
# keeps float64 below that.)
_CPU_PARALLEL_BUDGET_BYTES = 12 << 20
# Never fewer rows than this on the CPU: below it the per-chunk overhead wins.
_CPU_MIN_ROWS = 256
# On CUDA the floor of a chunk's budget (elements), before free memory is asked.
_CUDA_BUDGET = 1 << 22


def _component_major(covariance_type: str, k: int, d: int, kept_features: bool) -> bool:
    """Whether a one-shift pass of this type and shape holds (K, B)
    log-probabilities and no (B, K*D) intermediate."""
    from .covariance import get_covariance_type  # the strategies import nothing from here

    strategy = get_covariance_type(covariance_type)
    return (strategy.pass_form(k, d) if kept_features else strategy).component_major


def chunk_rows(n_samples: int, n_components: int, n_features: int, device=None,
               dtype=torch.float64, batch_size: int | None = None,
               covariance_type: str | None = None, kept_features: bool = False,
               workers: int = 1) -> int:
    """Rows per chunk.

    Parameters
    ----------
    n_samples, n_components, n_features : int
        Problem size.
    device : torch.device, optional
        On CUDA the chunk is sized from the free memory (a quarter of it), so
        running out of memory is avoided by construction.
    dtype : torch.dtype
        Element type of the data (on the CPU with several torch threads the
        budget is in bytes: float32 chunks hold twice float64's rows).
    batch_size : int, optional
        Explicit user choice; wins when given.
    covariance_type : str, optional
        On the CPU, types whose passes hold no (B, K*D) intermediate (diag,
        spherical; full in its packed form) get longer chunks.
    kept_features : bool
        Whether the fit keeps its chunks' features
        (:mod:`gaussmix.feature_cache`), so that the type's ``pass_form`` runs.
    workers : int
        Chunk workers of the passes (:mod:`gaussmix.chunk_workers`): each
        runs torch on one thread, so chunks are sized for one thread, and
        their number is a multiple of ``workers`` (each worker as many).

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
    elem = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 8
    major = covariance_type is not None and _component_major(covariance_type, k, d, kept_features)
    if dev.type != "cuda" and major:
        # diag, spherical and packed full (covariance.full_packed): features
        # and (K, B) log-probabilities, no (B, K*D) intermediate; the
        # per-component (B, K, D) form of float32 data very far from the
        # mixture mean still fits the CPU budget's purpose (cache, not
        # memory).  Measured per pass at 100k x 16 x 16, float64, 1 thread:
        # 2978 rows 19.0 ms, 8192 16.7, 16384 16.5; 2 threads 25.7 / 20.1 / 19.1.
        per_row = 4 * (k + d)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        # Several intermediates of per_row size live at once: stay within 1/4 of free.
        budget = max(_CUDA_BUDGET, free // (4 * 3 * elem))
        rows = max(1, budget // per_row)
    else:
        # Several threads: a larger budget in bytes, so that chunks carry
        # fewer parallel regions per unit of work, float32 ones (whose
        # arithmetic takes half the time) as few as float64's.  One thread (no
        # parallel regions): in float64 elements, and smaller float32 chunks
        # stay in faster caches.
        if torch.get_num_threads() > 1 and workers <= 1:
            rows = _CPU_PARALLEL_BUDGET_BYTES // (per_row * elem)
        else:
            rows = _CPU_BUDGET_BYTES // (per_row * 8)
        rows = balanced_rows(n_samples, max(_CPU_MIN_ROWS, rows), workers)
    return max(1, min(rows, max(n_samples, 1)))


def iter_chunks(
    X: torch.Tensor, sample_weight: torch.Tensor | None, rows: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield ``(X_chunk, weight_chunk)`` views of at most ``rows`` rows."""
    n = X.shape[0]
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        yield X[start:stop], (None if sample_weight is None else sample_weight[start:stop])


# --------------------------------------------------------------------------
# Re-iterable sources of batches (out-of-core data)
# --------------------------------------------------------------------------

#: Rows kept by :func:`reservoir_sample` for the initialisation of a fit on a
#: source (at least ``20 * n_components`` when that is larger).
RESERVOIR_SIZE = 20_000


def _is_2d_block(obj) -> bool:
    return isinstance(obj, (np.ndarray, torch.Tensor)) and obj.ndim == 2


def is_source(X) -> bool:
    """Whether ``X`` is a source of batches rather than one in-memory array.

    Sources are: a path to a ``.npy`` file, a :class:`numpy.memmap`, a
    :class:`torch.utils.data.DataLoader`, a list or tuple of 2-D arrays /
    tensors (or of ``(X, sample_weight)`` pairs), and any other iterable
    object that is not array-like (no ``__array__`` or ``shape``: not a
    tensor, a DataFrame or a sparse matrix).  Everything else is treated as one in-memory array.
    """
    if isinstance(X, (str, os.PathLike)):
        return True
    if isinstance(X, np.memmap):
        return True
    if isinstance(X, (np.ndarray, torch.Tensor)):
        return False
    if isinstance(X, (list, tuple)):
        if len(X) == 0:
            return False
        first = X[0]
        if isinstance(first, (list, tuple)) and len(first) > 0:
            first = first[0]
        return _is_2d_block(first)
    if hasattr(X, "__array__") or hasattr(X, "iloc") or hasattr(X, "shape"):
        # Array-likes, DataFrames and sparse matrices are in-memory data.
        return False
    return hasattr(X, "__iter__")


@dataclass
class SourceSummary:
    """What one pass over a source found.

    Attributes
    ----------
    n_samples : int
        Rows seen.
    n_features : int
        Columns of every batch.
    weight_sum : float
        Sum of the sample weights (``n_samples`` when unweighted).
    feature_sumsq : ndarray (D,)
        Weighted column sums of squares, float64 (a cheap fingerprint of the
        data; positive terms, so it compares well with a relative tolerance).
    sample : Tensor (M, D)
        Reservoir sample of at most ``size`` rows, drawn with probability
        proportional to the sample weights, without replacement.
    """

    n_samples: int
    n_features: int
    weight_sum: float
    feature_sumsq: np.ndarray
    sample: torch.Tensor | None


_SAVE_NUMERIC = "Save the data as a numeric array: np.save(path, np.asarray(X, dtype=np.float64))."


def _open_npy(path: str) -> np.memmap:
    """``path`` memory-mapped, after checking its header against the file.

    numpy's own errors for an object array or a truncated file ("mmap length
    is greater than file size") name no remedy, so both are checked first.
    """
    from .safe_npy import NpyHeaderError, npy_header

    try:
        with open(path, "rb") as fh:
            shape, _, dtype = npy_header(fh)
            have = os.path.getsize(path) - fh.tell()
        if dtype.kind not in "fiub":
            raise NpyHeaderError(f"it holds dtype {dtype}, not real numbers")
        need = int(np.prod(shape)) * dtype.itemsize
        if have < need:
            raise NpyHeaderError(
                f"it is truncated: its header promises {need} bytes of data but only {have} "
                f"follow (an interrupted save or copy?)"
            )
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except NpyHeaderError as exc:
        raise ValueError(f"Cannot use {path!r} as a data source: {exc}. {_SAVE_NUMERIC}") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"Cannot open {path!r} as a .npy array: {exc}") from None


_SINGLE_USE = (
    "The data source yielded data on an earlier pass but no rows on this one: it is single-use "
    "(its __iter__ returns the same, exhausted iterator). fit passes over the data once per EM "
    "iteration, so the source must be re-iterable: a list of arrays, a DataLoader, a memmap, "
    "or an object whose __iter__ calls a function that returns a fresh iterator each time."
)


def check_in_memory(X, caller: str, remedy: str) -> None:
    """Refuse a source of batches where ``caller`` needs in-memory data.

    Parameters
    ----------
    X : object
        The caller's input; a memmap counts as in-memory (it is an array).
    caller : str
        The entry point, as the user called it.
    remedy : str
        What to do instead.

    Raises
    ------
    ValueError
        If ``X`` is a path or a non-array iterable of batches.
    """
    if isinstance(X, np.memmap) or not is_source(X):
        return
    what = (f"the path {os.fspath(X)!r}" if isinstance(X, (str, os.PathLike))
            else f"a source of batches ({type(X).__name__})")
    raise ValueError(
        f"{caller}: expected in-memory data (an array, tensor or DataFrame), got {what}. Only "
        f"fit reads sources (.npy paths, memmaps, DataLoaders, re-iterables of batches). {remedy}"
    )


class DataSource:
    """A re-iterable source of ``(X_chunk, weight_chunk)`` tensors.

    Calling the source starts one pass over the data.  Every batch is checked
    (2-D, numeric, finite, same width as the first batch, non-negative
    weights), converted to the compute device and dtype, and split into
    chunks of at most ``rows`` rows so that memory stays bounded whatever
    the batch size.

    Parameters
    ----------
    data : path, memmap, DataLoader or re-iterable
        See :func:`is_source`.  Batches are arrays or tensors ``X``, or
        ``(X,)`` / ``(X, sample_weight)`` pairs (so a DataLoader over a
        ``TensorDataset(X)`` or ``TensorDataset(X, w)`` works as is).
        The second element is always read as sample weights, never labels.
    rows : int, optional
        Chunk size; set later with :meth:`set_rows` when unknown.
    """

    def __init__(self, data, rows: int | None = None):
        self._kind = "iterable"
        if isinstance(data, (str, os.PathLike)):
            path = os.fspath(data)
            if not path.endswith(".npy"):
                raise ValueError(
                    f"Cannot read {path!r}: a path given to fit must name a .npy file "
                    f"(np.save(path, X)); load other formats yourself and pass an array "
                    f"or an iterable of batches."
                )
            data = _open_npy(path)
            self._kind = "memmap"
        elif isinstance(data, np.memmap):
            self._kind = "memmap"
        elif isinstance(data, collections.abc.Iterator):
            raise ValueError(
                "fit passes over the data once per EM iteration, so it needs a re-iterable "
                "source (a list of arrays, a DataLoader, a memmap, or an object whose "
                "__iter__ returns a fresh iterator), not a one-shot iterator or generator. "
                "Wrap the generator in a class whose __iter__ creates it."
            )
        if self._kind == "memmap" and data.ndim != 2:
            raise ValueError(
                f"Expected a 2D array in the memmap/.npy file, got shape {data.shape}. "
                f"Save the data as an (n_samples, n_features) array."
            )
        self.data = data
        self.rows = rows
        self.device = None
        self.dtype = None
        self.n_features: int | None = None
        self.n_samples: int | None = None
        self._had_batches = False  # a later pass with no rows means a single-use source

    def set_rows(self, rows: int) -> None:
        """Set the number of rows per chunk."""
        self.rows = int(rows)

    def _raw_batches(self):
        if self._kind == "memmap":
            n = self.data.shape[0]
            step = self.rows or RESERVOIR_SIZE
            for start in range(0, n, step):
                yield np.asarray(self.data[start : start + step]), None
            return
        for batch in self.data:
            if isinstance(batch, (list, tuple)):
                if len(batch) == 1:
                    yield batch[0], None
                elif len(batch) == 2:
                    yield batch[0], batch[1]
                else:
                    raise ValueError(
                        f"A batch of the source has {len(batch)} elements; expected X, (X,) or "
                        f"(X, sample_weight). Drop labels or other fields from the dataset."
                    )
            else:
                yield batch, None

    def first_batch(self):
        """The first raw ``X`` batch (to choose device and dtype from)."""
        for xb, _ in self._raw_batches():
            self._had_batches = True
            return xb
        raise ValueError("The data source yielded no batches; pass a non-empty source.")

    def _check_batch(self, i: int, xb, wb):
        from ._validation import as_tensor_2d, check_sample_weight

        t = as_tensor_2d(xb, name=f"batch {i} of the source", device=self.device, dtype=self.dtype)
        if self.n_features is None:
            self.n_features = int(t.shape[1])
        elif t.shape[1] != self.n_features:
            raise ValueError(
                f"Batch {i} of the source has {t.shape[1]} columns but the first batch has "
                f"{self.n_features}: every batch must have the same number of features."
            )
        w = None
        if wb is not None:
            try:
                w = check_sample_weight(wb, int(t.shape[0]), self.device, self.dtype, rescale=False)
            except ValueError as exc:
                raise ValueError(f"Batch {i} of the source: {exc}") from None
        return t, w

    def batches(self):
        """One pass: validated ``(X_batch, weight_batch)`` tensors, not re-chunked."""
        seen = 0
        for i, (xb, wb) in enumerate(self._raw_batches()):
            t, w = self._check_batch(i, xb, wb)
            seen += int(t.shape[0])
            yield t, w
        if seen == 0 and (self.n_samples or self._had_batches):
            raise ValueError(_SINGLE_USE)
        if self.n_samples is not None and seen != self.n_samples:
            raise ValueError(
                f"The data source yielded {seen} rows in this pass but {self.n_samples} in the "
                f"first one: it must yield the same data on every pass (is it a one-shot "
                f"iterator, or does it drop or add rows?)."
            )
        self.n_samples = seen

    def __call__(self):
        """Start one pass: ``(X_chunk, weight_chunk)`` pairs of at most ``rows`` rows."""
        for t, w in self.batches():
            if self.rows is None or t.shape[0] <= self.rows:
                yield t, w
            else:
                yield from iter_chunks(t, w, self.rows)


def as_source(X) -> DataSource | None:
    """``X`` as a :class:`DataSource`, or ``None`` when it is in-memory data."""
    return DataSource(X) if is_source(X) else None


def reservoir_sample(source: DataSource, size: int, gen: torch.Generator | None) -> SourceSummary:
    """One validating pass over ``source`` that also draws a reservoir sample.

    Weighted sampling without replacement (Efraimidis & Spirakis, algorithm
    A-Res): each row gets the key ``log(u) / w`` with ``u`` uniform, and the
    ``size`` largest keys are kept, chunk by chunk.  With unit weights this is
    a uniform sample.  Rows of weight zero are never drawn.

    Parameters
    ----------
    source : DataSource
    size : int
        Rows to keep.
    gen : torch.Generator or None
        Random numbers; ``None`` skips the sample (validation pass only).

    Returns
    -------
    SourceSummary
    """
    keys = sample = None
    n = 0
    wsum = 0.0
    fsum = None
    for xb, wb in source():
        b = xb.shape[0]
        n += b
        wd = torch.ones(b, dtype=torch.float64, device=xb.device) if wb is None else wb.double()
        wsum += float(wd.sum())
        part = (wd.unsqueeze(1) * xb.double().square()).sum(0)
        fsum = part if fsum is None else fsum + part
        if gen is None or b == 0:
            continue
        u = torch.rand(b, generator=gen, device=gen.device, dtype=torch.float64).to(xb.device)
        k = torch.log(u.clamp_min(1e-300)) / wd
        if sample is None:
            sample, keys = xb[:0], k[:0]
        keys = torch.cat([keys, k])
        sample = torch.cat([sample, xb])
        if keys.shape[0] > size:
            keys, idx = torch.topk(keys, size)
            sample = sample[idx]
    if n == 0 or source.n_features is None:
        raise ValueError("The data source yielded no rows; pass a source with at least one sample.")
    if sample is not None:
        sample = sample[torch.isfinite(keys)]
    return SourceSummary(n, int(source.n_features), wsum, fsum.cpu().numpy(), sample)
