"""Per-chunk features of in-memory data, computed once per fit.

A covariance form whose E-step reads features of the data that take as long
to build as the GEMMs that read them (packed quadratic features,
:mod:`gaussmix.covariance.full_packed`) builds them on the first pass and
reads them on every later one.  The features are of ``X - centre`` with one
centre fixed for the whole fit (the data's mean); each pass then takes its
moments around that centre and moves them to its own shift once, in float64
(:meth:`~gaussmix.covariance.full_packed.PackedFull.moments_from_raw`).

Only a fit on in-memory data of at least :data:`MIN_ROWS` rows, chunked
without ``batch_size``, has a cache: its chunks are views of one tensor that
outlives the fit, so a view's address and length name its rows.  Out-of-core
chunks are fresh tensors on every pass.
"""

from __future__ import annotations

import threading

import torch

__all__ = ["FeatureCache", "CACHE_BYTES", "MIN_ROWS", "keeps_features", "products_representable"]

#: Most bytes of features one fit keeps (chunks past it are rebuilt on each
#: pass).  100 000 x 16 float64 data take 122 MB of packed features.
CACHE_BYTES = 1 << 30

#: Fewest rows for which a fit keeps features: on smaller data the cheaper
#: forms' per-pass set-up costs more than their GEMMs save (full, per EM
#: iteration, plain / packed: 0.88-0.94x at 300 rows, 0.97-1.02x at 1000,
#: 1.02-1.15x at 2000, 1.03-1.19x at 5000, for D x K = 4 x 3, 13 x 5, 8 x 8).
MIN_ROWS = 2000


def keeps_features(X: torch.Tensor, centre: torch.Tensor, batch_size=None) -> bool:
    """Whether a fit on the in-memory data ``X`` keeps features of
    ``X - centre``: at least :data:`MIN_ROWS` rows, no ``batch_size`` (it asks
    for bounded memory instead), and :func:`products_representable`."""
    return batch_size is None and X.shape[0] >= MIN_ROWS and products_representable(X, centre)


def products_representable(X: torch.Tensor, centre: torch.Tensor) -> bool:
    """Whether products of two features of ``X - centre`` keep their
    relative precision in ``X``'s dtype: no overflow for the widest
    feature, no subnormal result for the narrowest (its span squared at
    least ``tiny / eps``).  Data outside that range (values near 1e20 in
    float32, say) keep the plain form, which never squares a coordinate."""
    info = torch.finfo(X.dtype)
    c = centre.to(X.dtype)
    span = torch.maximum((X.amax(0) - c).abs(), (X.amin(0) - c).abs()).double()
    span = span[span > 0]
    if span.numel() == 0:
        return False
    widest, narrowest = float(span.max()), float(span.min())
    return widest * widest < info.max / 1e6 and narrowest * narrowest > info.tiny / info.eps


class FeatureCache:
    """Features of the chunks of one in-memory data set.

    Parameters
    ----------
    centre : Tensor (D,)
        Where the features are taken: any point near the data (the fit passes
        the data's mean).  It depends on the data alone, so that a fit resumed
        from a checkpoint rounds exactly as the uninterrupted one.
    limit : int
        Bytes of features kept at most.
    """

    def __init__(self, centre: torch.Tensor, limit: int = CACHE_BYTES):
        self.limit = limit
        self._centre = centre
        self.centre: torch.Tensor | None = None
        self._form = None
        self._store: dict = {}
        self._bytes = 0
        #: float32 features grouped by owner (:mod:`gaussmix.owner_groups`),
        #: kept apart from the per-chunk ones, and the means of their last pass.
        self.owner_groups = None
        self.owner_means = None
        # Chunk workers (gaussmix.chunk_workers) start their passes and build
        # their chunks' features side by side: the form and the byte count
        # change under a lock.
        self._lock = threading.Lock()

    def centre_for(self, form, dtype: torch.dtype) -> torch.Tensor:
        """The centre of ``form``'s features in ``dtype`` (another form or
        dtype than the cached features' empties the cache)."""
        with self._lock:
            if form is not self._form or self.centre is None or self.centre.dtype != dtype:
                self._form, self.centre = form, self._centre.to(dtype)
                self._store.clear()
                self._bytes = 0
            return self.centre

    def owner_state(self) -> tuple:
        """``(centres, means)``: the current owner groups' centres and the
        means of the last pass that asked for them (each None when absent),
        what a checkpoint keeps so that a resumed fit decides and rounds as
        the uninterrupted one (:mod:`gaussmix.owner_groups`)."""
        groups = self.owner_groups
        return (None if groups is None else groups.centres), self.owner_means

    def restore_owner(self, centres, means) -> None:
        """Take the state of :meth:`owner_state` back: groups around
        ``centres`` are built again when a pass first needs them."""
        from .owner_groups import PendingGroups

        self.owner_groups = None if centres is None else PendingGroups(centres)
        self.owner_means = means

    def release(self) -> None:
        """Drop the kept per-chunk features (rebuilt on demand if read again)."""
        with self._lock:
            self._store.clear()
            self._bytes = 0

    def features(self, X: torch.Tensor, build) -> tuple:
        """``(xc, feats)`` of chunk ``X`` as the form's ``features`` gives
        them: cached, or ``build()``'s result (kept while the limit allows;
        ``xc`` is a view of ``feats``)."""
        key = (X.data_ptr(), X.shape[0], X.dtype, X.device)
        found = self._store.get(key)
        if found is None:
            found = build()
            size = found[1].numel() * found[1].element_size()
            with self._lock:
                if self._bytes + size <= self.limit:
                    self._store[key] = found
                    self._bytes += size
        return found
