"""torch.distributed glue: one EM loop on every rank, one all-reduce per iteration.

Each rank holds its own shard of the data.  Because the sufficient statistics
are sums (:class:`gaussmix.stats.SuffStats`), the statistics of the whole data
are the all-reduced (``SUM``) statistics of the shards; every rank then runs
the same M-step on the same totals and so holds the same parameters.

Failures must not leave ranks blocked in a collective.  Every collective here
therefore carries a status: a rank that fails while validating its shard,
initialising, or reading a batch still takes part in the next collective
with its failure flag set, every rank sees the flag, the error messages are
exchanged, and every rank raises.  In the EM loop the flags ride in the same
buffer as the statistics, so an iteration still costs exactly one
all-reduce.

The collectives are device-agnostic: buffers travel on the GPU of the rank
for NCCL and on the CPU for other backends (gloo).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .stats import SuffStats

__all__ = ["Communicator", "DistributedError"]


class DistributedError(ValueError):
    """Another rank of the process group failed; this rank stops with it."""


def _dist():
    import torch.distributed as dist

    return dist


def _group_timeout(group) -> timedelta | None:
    """The timeout the process group was created with (torch keeps it only on the
    backend's options), or ``None`` (torch's default) where that is not exposed."""
    dist = _dist()
    pg = group if group is not None else dist.group.WORLD
    try:
        timeout = pg._get_backend(torch.device("cpu")).options._timeout
    except (AttributeError, RuntimeError):
        return None
    return timeout if isinstance(timeout, timedelta) else None


class Communicator:
    """Collectives for a fit, or their single-process no-ops.

    Parameters
    ----------
    enabled : bool
        ``False`` gives a single-process communicator whose methods run
        locally (rank 0 of 1).
    group : ProcessGroup, optional
        Defaults to the world group.
    """

    def __init__(self, enabled: bool = False, group=None):
        self.enabled = bool(enabled)
        self.group = group
        if self.enabled:
            dist = _dist()
            self.rank = dist.get_rank(group)
            self.world_size = dist.get_world_size(group)
            self.backend = str(dist.get_backend(group))
        else:
            self.rank, self.world_size, self.backend = 0, 1, None
        self._pending: BaseException | None = None

    @classmethod
    def create(cls, distributed: bool) -> "Communicator":
        """A communicator for ``GaussianMixture(distributed=...)``.

        Raises
        ------
        ValueError
            ``distributed=True`` without an initialised process group.
        """
        if not distributed:
            return cls(False)
        dist = _dist()
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "distributed=True needs an initialised torch.distributed process group: launch "
                "with torchrun and call torch.distributed.init_process_group('nccl' on GPUs or "
                "'gloo' on CPUs) before fit, or use distributed=False."
            )
        comm = cls(True)
        comm.handshake()
        return comm

    def handshake(self) -> None:
        """Check that every rank has entered the distributed fit (gloo only).

        A rank that fits with ``distributed=False`` joins no collective, so the
        others would wait in their first collective until the process group's
        timeout and fail with a transport error, or worse, meet an unrelated
        collective of that rank.  gloo's monitored barrier waits as long as the
        group's own timeout and names the missing ranks; NCCL has no
        counterpart, so there the ranks still wait for the group's timeout.

        Raises
        ------
        DistributedError
            If a rank did not reach the barrier within the group's timeout.
        """
        if self.backend != "gloo":
            return
        dist = _dist()
        timeout = _group_timeout(self.group)
        try:
            dist.monitored_barrier(group=self.group, timeout=timeout, wait_all_ranks=True)
        except RuntimeError as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise DistributedError(
                f"Rank {self.rank}: not every rank entered the distributed fit within the process "
                f"group's timeout ({timeout}) [{first_line}]. Every rank must call fit with "
                f"distributed=True at the same point of the program: a rank that passes "
                f"distributed=False fits its own shard alone and joins no collective."
            ) from None

    @property
    def is_root(self) -> bool:
        """Whether this is rank 0 (which initialises and writes checkpoints)."""
        return self.rank == 0

    # ---------------------------------------------------------------- helpers
    def comm_device(self) -> torch.device:
        """Where collective buffers live: the rank's GPU for NCCL, else the CPU."""
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _raise_failure(self, failed: list[int], own: BaseException | None, what: str):
        """Every rank learns every failing rank's message, then raises."""
        msg = None if own is None else f"{type(own).__name__}: {own}"
        messages: list[Any] = [None] * self.world_size
        _dist().all_gather_object(messages, msg, group=self.group)
        detail = "; ".join(f"rank {r}: {messages[r]}" for r in failed)
        if own is not None:
            raise DistributedError(f"Rank {self.rank} failed while {what}. {detail}") from own
        raise DistributedError(
            f"Rank(s) {failed} failed while {what}, so rank {self.rank} stops too. {detail}"
        )

    def _flags(self, failed: bool) -> torch.Tensor:
        flags = torch.zeros(self.world_size, dtype=torch.float64)
        flags[self.rank] = 1.0 if failed else 0.0
        return flags

    # ------------------------------------------------------------- collectives
    def run(self, fn: Callable[[], Any], what: str) -> Any:
        """Run ``fn`` on every rank; if it fails on any rank, raise on every rank.

        Parameters
        ----------
        fn : callable
            Local work (validation, reading a shard).
        what : str
            Words for the error message ("validating the data").
        """
        if not self.enabled:
            return fn()
        err, out = None, None
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - reported to every rank below
            err = exc
        flags = self._flags(err is not None).to(self.comm_device())
        _dist().all_reduce(flags, group=self.group)
        failed = [r for r, f in enumerate(flags.cpu().tolist()) if f > 0]
        if failed:
            self._raise_failure(failed, err, what)
        return out

    def gather(self, values: Iterable[float]) -> np.ndarray:
        """Every rank's row of ``values`` as a (world_size, m) float64 array.

        All ranks must pass the same number of values.
        """
        row = torch.as_tensor(list(values), dtype=torch.float64)
        if not self.enabled:
            return row.numpy()[None, :]
        table = torch.zeros(self.world_size, row.shape[0], dtype=torch.float64)
        table[self.rank] = row
        table = table.to(self.comm_device())
        _dist().all_reduce(table, group=self.group)
        return table.cpu().numpy()

    def from_root(self, fn: Callable[[], Any], what: str) -> Any:
        """Run ``fn`` on rank 0 and give its result (or its failure) to every rank.

        The result is sent with ``broadcast_object_list``; tensors in it should
        be on the CPU so that they can be moved to each rank's device.
        """
        if not self.enabled:
            return fn()
        payload: list[Any] = [None]
        err = None
        if self.is_root:
            try:
                payload = [("ok", fn())]
            except Exception as exc:  # noqa: BLE001 - reported to every rank below
                err = exc
                payload = [("error", f"{type(exc).__name__}: {exc}")]
        kw = {"device": self.comm_device()} if self.backend == "nccl" else {}
        _dist().broadcast_object_list(payload, src=0, group=self.group, **kw)
        status, value = payload[0]
        if status == "error":
            if err is not None:
                raise err
            raise DistributedError(f"Rank 0 failed while {what}, so rank {self.rank} stops too. {value}")
        return value

    def guard(self, chunks: Callable[[], Iterable]) -> Callable[[], Iterable]:
        """Wrap a chunk source so that a failure ends the pass instead of raising.

        The failure is kept and reported by the next :meth:`reduce_stats`
        (which every rank reaches), so the other ranks are not left waiting in
        the all-reduce.
        """
        if not self.enabled:
            return chunks

        def guarded():
            try:
                yield from chunks()
            except Exception as exc:  # noqa: BLE001 - reported by reduce_stats
                self._pending = exc

        return guarded

    def fail_later(self, exc: BaseException) -> None:
        """Record a local failure to report at the next collective."""
        if not self.enabled:
            raise exc
        self._pending = exc

    def reduce_stats(self, stats: SuffStats) -> SuffStats:
        """Sum the statistics of all ranks with one all-reduce (plus status flags)."""
        if not self.enabled:
            return stats
        flat = stats.flatten()
        n = flat.shape[0]
        buf = torch.cat([flat.to(self.comm_device()), self._flags(self._pending is not None).to(self.comm_device())])
        _dist().all_reduce(buf, group=self.group)
        failed = [r for r, f in enumerate(buf[n:].cpu().tolist()) if f > 0]
        if failed:
            err, self._pending = self._pending, None
            self._raise_failure(failed, err, "passing over the data")
        return stats.load_flat_(buf[:n].to(flat.device))

    def check_pending(self, what: str) -> None:
        """One all-reduce of the status flags: if any rank has a pending
        failure (a batch that raised inside :meth:`guard`), every rank raises."""
        if not self.enabled:
            return
        flags = self._flags(self._pending is not None).to(self.comm_device())
        _dist().all_reduce(flags, group=self.group)
        failed = [r for r, f in enumerate(flags.cpu().tolist()) if f > 0]
        if failed:
            err, self._pending = self._pending, None
            self._raise_failure(failed, err, what)

    def all_gather_cat(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate equally shaped tensors of all ranks along dim 0, in rank order.

        The status flags go first (:meth:`check_pending`): a rank whose pass
        failed raises its own error on every rank instead of gathering a
        partial result.
        """
        if not self.enabled:
            return tensor
        self.check_pending("passing over the data")
        dist = _dist()
        local = tensor.contiguous().to(self.comm_device())
        parts = [torch.empty_like(local) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(parts, local, group=self.group)
        return torch.cat(parts).to(tensor.device)

    def finish(self, what: str = "finishing the fit") -> None:
        """Report any failure recorded after the last all-reduce."""
        if not self.enabled:
            return
        err, self._pending = self._pending, None

        def check():
            if err is not None:
                raise err

        self.run(check, what)
