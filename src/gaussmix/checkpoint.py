"""Checkpoints of an EM fit: safe format, atomic writes.

A checkpoint is a ``.npz`` archive of plain numeric arrays plus one JSON
document (stored as bytes in the array ``__meta__``).  Nothing is pickled,
so loading a checkpoint never runs code (``np.load(..., allow_pickle=False)``).

Writes are atomic: the archive is written to a temporary file in the same
directory, flushed to disk, and renamed over the target with
:func:`os.replace`.  A process killed at any moment leaves either the previous
checkpoint or the new one, never a torn file.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import zipfile
import zlib

import numpy as np

__all__ = ["save_checkpoint", "load_checkpoint", "check_config", "FitCheckpoint", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_META = "__meta__"
# What numpy's zip reading raises on a truncated or bit-flipped archive.
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError,
                RuntimeError, NotImplementedError, struct.error, OverflowError, IndexError)


def save_checkpoint(path, arrays: dict, meta: dict) -> None:
    """Write ``arrays`` and ``meta`` to ``path`` atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Target file (conventionally ending in ``.npz``).
    arrays : dict of str to ndarray
        Numeric arrays (no object arrays).
    meta : dict
        JSON-serialisable metadata.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    body = dict(meta, format_version=FORMAT_VERSION)
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in payload.items():
        if v.dtype == object:
            raise ValueError(f"Checkpoint array {k!r} has dtype object; only numeric arrays are stored.")
    payload[_META] = np.frombuffer(json.dumps(body, allow_nan=True).encode("utf-8"), dtype=np.uint8)
    try:
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OSError(
            f"Cannot write checkpoint {path!r}: the folder {directory!r} is not writable "
            f"({exc.strerror}). Pass a checkpoint path in a writable folder."
        ) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OSError(f"Cannot write checkpoint {path!r}: {exc.strerror or exc}. Free disk space "
                      f"or pass a checkpoint path in a writable folder.") from exc
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable where the platform allows it
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_checkpoint(path) -> tuple[dict, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns
    -------
    arrays : dict of str to ndarray
    meta : dict

    Raises
    ------
    ValueError
        When the file is not a gaussmix checkpoint or has an unknown format.
    """
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except _READ_ERRORS as exc:
        raise ValueError(
            f"{path!r} is not a readable gaussmix checkpoint: it is truncated or damaged "
            f"({type(exc).__name__}: {exc}). Delete it to start afresh, or pass another "
            f"checkpoint path."
        ) from None
    if _META not in arrays:
        raise ValueError(
            f"{path!r} is not a gaussmix checkpoint (no metadata). Delete it or pass another "
            f"checkpoint path."
        )
    try:
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(
            f"Checkpoint {path!r} has damaged metadata ({exc}). Delete it to start afresh."
        ) from None
    if not isinstance(meta, dict):
        raise ValueError(f"Checkpoint {path!r} has damaged metadata. Delete it to start afresh.")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"Checkpoint {path!r} has format version {meta.get('format_version')!r}; this version "
            f"of gaussmix reads version {FORMAT_VERSION}. Delete it to start afresh."
        )
    return arrays, meta


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        try:
            a, b = float(a), float(b)
        except (TypeError, ValueError):
            return False
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def check_config(path, saved: dict, current: dict) -> None:
    """Raise a ValueError naming every entry where ``saved`` and ``current`` differ.

    Floats are compared with a relative tolerance of 1e-9 (data fingerprints
    are sums, whose rounding depends on the chunking).
    """
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
        for k in sorted(set(saved) | set(current))
        if not _same(saved.get(k), current.get(k))
    ]
    if diffs:
        shown = "; ".join(d if len(d) < 200 else d[:200] + "..." for d in diffs)
        raise ValueError(
            f"Checkpoint {os.fspath(path)!r} was written by a fit with another configuration "
            f"or other data ({shown}). Resume with the same estimator parameters and data, or "
            f"delete the file / pass another checkpoint path to start afresh."
        )


# ---------------------------------------------------------------------------
# EM state <-> checkpoint
# ---------------------------------------------------------------------------

_PARAM_FIELDS = ("weights", "means", "precisions_cholesky", "covariances")
#: What a variational posterior holds besides (:class:`~gaussmix.variational.VariationalParams`).
_POSTERIOR_FIELDS = ("weight_concentration", "mean_precision", "degrees_of_freedom", "estep_terms")


def _result_to_arrays(prefix: str, result) -> tuple[dict, dict]:
    """Arrays and metadata of an :class:`~gaussmix.em.EMResult`."""
    arrays = {}
    for name in _PARAM_FIELDS + _POSTERIOR_FIELDS:
        t = getattr(result.params, name, None)
        if t is not None:
            arrays[prefix + name] = t.detach().cpu().numpy()
    meta = {
        "converged": bool(result.converged),
        "n_iter": int(result.n_iter),
        "lower_bound": float(result.lower_bound),
        "lower_bounds": [float(v) for v in result.lower_bounds],
    }
    return arrays, meta


def _damaged(path, field: str, problem: str) -> ValueError:
    return ValueError(
        f"Checkpoint {os.fspath(path)!r}: the field {field!r} {problem}. The file is damaged or "
        f"was not written by gaussmix; delete it to start afresh."
    )


def _owner_array(path, name: str, value, size):
    """A (K, D) float64 owner-group array of a checkpoint, or None."""
    if value is None:
        return None
    import torch

    if value.dtype != np.float64 or value.shape != size or not np.isfinite(value).all():
        raise _damaged(path, name, f"is not a finite float64 array of shape {size}")
    return torch.from_numpy(np.array(value))


def _result_from_arrays(path, prefix: str, arrays: dict, meta, covariance_type: str, size):
    """An :class:`~gaussmix.em.EMResult` from a checkpoint, every value checked."""
    import torch

    from .em import EMResult
    from .params import GMMParams, find_problem

    def get(name, required=True):
        a = arrays.get(prefix + name)
        if a is None:
            if required:
                raise _damaged(path, prefix + name, "is missing")
            return None
        if a.dtype.kind != "f":
            raise _damaged(path, prefix + name, f"has dtype {a.dtype}, expected floating point")
        return torch.from_numpy(np.array(a))

    params = GMMParams(
        weights=get("weights"),
        means=get("means"),
        precisions_cholesky=get("precisions_cholesky"),
        covariance_type=covariance_type,
        covariances=get("covariances", required=False),
    )
    if prefix + _POSTERIOR_FIELDS[0] in arrays:
        from .variational import VariationalParams

        params = VariationalParams(**vars(params), **{name: get(name) for name in _POSTERIOR_FIELDS})
    problem = find_problem(params, size=size)
    if problem is not None:
        raise _damaged(path, prefix + problem[0], problem[1])
    try:
        n_iter = meta["n_iter"]
        lower_bound = float(meta["lower_bound"])
        history = [float(v) for v in meta["lower_bounds"]]
        converged = meta["converged"]
    except (KeyError, TypeError, ValueError) as exc:
        raise _damaged(path, prefix + "metadata", f"is incomplete or not numeric ({exc!r})") from None
    if not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < 0:
        raise _damaged(path, prefix + "n_iter", f"is {n_iter!r}, not an integer >= 0")
    if not isinstance(converged, bool):
        raise _damaged(path, prefix + "converged", f"is {converged!r}, not true or false")
    if math.isnan(lower_bound) or lower_bound == math.inf or any(
            math.isnan(v) or v == math.inf for v in history):
        raise _damaged(path, prefix + "lower_bound", "is NaN or +infinity")
    return EMResult(params, converged, n_iter, lower_bound, history)


class FitCheckpoint:
    """The EM state of a :meth:`GaussianMixture.fit` (or of a variational
    :meth:`BayesianGaussianMixture.fit`), saved and restored.

    The state is: the index of the current initialisation, the random
    generator's state right after that initialisation, the current EM result
    (parameters, iteration, lower bound and its history, whether this
    initialisation has finished), and the best finished result so far.
    Resuming from it repeats exactly the computation an uninterrupted fit
    would have done.

    Parameters
    ----------
    path : str or os.PathLike
    config : dict
        Estimator parameters and a fingerprint of the data; a checkpoint
        whose configuration differs is refused.
    covariance_type : str
    """

    def __init__(self, path, config: dict, covariance_type: str):
        self.path = os.fspath(path)
        self.config = config
        self.covariance_type = covariance_type

    def check_writable(self) -> None:
        """Fail early (before any EM work) if the directory does not exist."""
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise ValueError(
                f"Cannot write checkpoint {self.path!r}: directory {directory!r} does not exist. "
                f"Create it or pass another path."
            )

    def load(self) -> dict | None:
        """The saved state, or ``None`` when there is no checkpoint yet.

        Raises
        ------
        ValueError
            For an unreadable file, a checkpoint of another configuration, or
            one whose values cannot be an EM state (checked as model files
            are, see :func:`gaussmix.params.find_problem`); the message names
            the file and the field.
        """
        self.check_writable()
        if not os.path.exists(self.path):
            return None
        arrays, meta = load_checkpoint(self.path)
        if meta.get("kind") != "gaussmix.GaussianMixture.fit":
            raise ValueError(
                f"{self.path!r} is not a GaussianMixture fit checkpoint. Delete it or pass another path."
            )
        for key in ("config", "init_index", "finished", "current", "best"):
            if key not in meta:
                raise _damaged(self.path, key, "is missing")
        if not isinstance(meta["config"], dict):
            raise _damaged(self.path, "config", "is not a mapping")
        check_config(self.path, meta["config"], self.config)
        import torch

        init_index = meta["init_index"]
        n_init = int(self.config.get("n_init", 1))
        if not isinstance(init_index, int) or isinstance(init_index, bool) or not 0 <= init_index < n_init:
            raise _damaged(self.path, "init_index", f"is {init_index!r}, not an integer in [0, {n_init})")
        if not isinstance(meta["finished"], bool):
            raise _damaged(self.path, "finished", f"is {meta['finished']!r}, not true or false")
        size = (int(self.config["n_components"]), int(self.config["n_features"]))
        gen_state = arrays.get("generator_state")
        if gen_state is not None and (gen_state.dtype != np.uint8 or gen_state.ndim != 1):
            raise _damaged(self.path, "generator_state", "is not a byte vector")
        owner = tuple(_owner_array(self.path, name, arrays.get(name), size)
                      for name in ("owner_centres", "owner_means"))
        return {
            "init_index": init_index,
            "finished": meta["finished"],
            "owner": owner,
            "generator_state": None if gen_state is None else torch.from_numpy(np.array(gen_state)),
            "current": _result_from_arrays(self.path, "current_", arrays, meta["current"],
                                           self.covariance_type, size),
            "best": None if meta["best"] is None
            else _result_from_arrays(self.path, "best_", arrays, meta["best"], self.covariance_type,
                                     size),
        }

    def save(self, init_index: int, generator_state, current, finished: bool, best,
             owner: tuple = (None, None)) -> None:
        """Write the state atomically (see :func:`save_checkpoint`); ``owner``:
        the fit's owner-group state, ``(centres, means)`` (K, D) or None each
        (:meth:`gaussmix.feature_cache.FeatureCache.owner_state`)."""
        arrays, cur_meta = _result_to_arrays("current_", current)
        for name, t in zip(("owner_centres", "owner_means"), owner):
            if t is not None:
                arrays[name] = t.detach().double().cpu().numpy()
        best_meta = None
        if best is not None:
            best_arrays, best_meta = _result_to_arrays("best_", best)
            arrays.update(best_arrays)
        if generator_state is not None:
            arrays["generator_state"] = generator_state.cpu().numpy()
        meta = {
            "kind": "gaussmix.GaussianMixture.fit",
            "config": self.config,
            "init_index": int(init_index),
            "finished": bool(finished),
            "current": cur_meta,
            "best": best_meta,
        }
        save_checkpoint(self.path, arrays, meta)
