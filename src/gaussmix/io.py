"""Safe model files and data-file readers.

Model files
-----------
A model file is a zip archive in NumPy's ``.npz`` layout: one ``.npy`` member
per parameter array plus a ``metadata.json`` member.  Loading reads the
arrays with ``allow_pickle=False`` and the metadata with :func:`json.loads`,
so a model file can never unpickle an object or run code.  Anything that is
not a well-formed gaussmix model (a pickle renamed to ``.npz``, a truncated
download, a foreign zip, arrays of the wrong shape) is refused with a
:class:`ValueError` that says so.

Data files
----------
:func:`read_data` reads CSV/TSV text (with header detection), ``.npy`` and,
with ``pyarrow`` installed, Parquet into a float64 array; every problem is a
:class:`DataError` naming the file, line and column at fault.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
import struct
import tempfile
import zipfile
import zlib

import numpy as np
import torch

from .covariance import MODELS, get_covariance_type
from .em import EMResult
from .estimator import GaussianMixture
from .params import GMMParams, find_problem

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DataError",
    "save_model",
    "load",
    "read_metadata",
    "read_data",
]

FORMAT_NAME = "gaussmix-model"
FORMAT_VERSION = 1
# Everything zipfile/zlib may raise on a damaged archive (NotImplementedError,
# a RuntimeError, for nonsense version or compression fields).
_ZIP_ERRORS = (
    zipfile.BadZipFile, EOFError, OSError, zlib.error, RuntimeError, struct.error, KeyError,
    IndexError, OverflowError, MemoryError,
)
_META = "metadata.json"
# Metadata is small; refuse to inflate more than this from a member.
_MAX_META_BYTES = 1 << 20
# Fixed timestamp so that the same model always gives the same bytes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# Estimator parameters stored in the metadata (JSON scalars only; the
# *_init arrays are starting points, not part of the fitted model).
_SCALAR_PARAMS = (
    "n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init", "init_params",
    "random_state", "warm_start", "verbose", "verbose_interval", "device", "dtype", "batch_size",
    "tol_type", "hc_subset",
)


class _NpyHeaderError(ValueError):
    pass


def _npy_header(fh) -> tuple[tuple, bool, np.dtype]:
    """Shape, Fortran order and dtype from a ``.npy`` header, refusing object dtypes."""
    try:
        major, _ = np.lib.format.read_magic(fh)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif major in (2, 3):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise _NpyHeaderError(f"unsupported .npy version {major}")
    except _NpyHeaderError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy's header parser (literal_eval,
        # tokenize) raises many types on hostile bytes; all mean "not a .npy header".
        raise _NpyHeaderError(f"bad .npy header: {type(exc).__name__}: {exc}") from None
    if dtype.hasobject:
        raise _NpyHeaderError("it holds Python objects (pickled data), which are never loaded")
    return tuple(shape), bool(fortran), dtype


def _version() -> str:
    from . import __version__

    return __version__


def _bad(path, why: str) -> ValueError:
    return ValueError(
        f"{os.fspath(path)} is not a valid gaussmix model file: {why}. Model files are written "
        f"by GaussianMixture.save() or `gaussmix fit --output`; re-create it from the original."
    )


def _json_safe(value):
    """A JSON scalar for a stored estimator parameter, or None to skip it."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value).replace("torch.", "")
    return None


# --------------------------------------------------------------- model files
def save_model(estimator: GaussianMixture, path, feature_names=None) -> None:
    """Write a fitted mixture to ``path`` (``.npz`` layout plus JSON metadata).

    Parameters
    ----------
    estimator : GaussianMixture
        A fitted mixture.
    path : str or path-like
        Destination; ``.npz`` is the conventional extension.
    feature_names : sequence of str, optional
        Names of the input columns (default: ``feature_names_in_`` when the
        estimator was fitted on a DataFrame).

    Raises
    ------
    ValueError
        If the estimator is not fitted or the names do not match the
        number of features.
    """
    if not hasattr(estimator, "_params"):
        raise ValueError("This GaussianMixture is not fitted yet; call fit() before save().")
    p = estimator._params
    fitted_names = getattr(estimator, "feature_names_in_", None)
    if feature_names is None and fitted_names is not None:
        feature_names = list(fitted_names)
    if feature_names is not None:
        feature_names = [str(n) for n in feature_names]
        if len(feature_names) != p.n_features:
            raise ValueError(
                f"{len(feature_names)} feature names given for a model with {p.n_features} "
                f"features; give one name per feature."
            )
    arrays = {
        "weights": p.weights,
        "means": p.means,
        "covariances": p.get_covariances(),
        "precisions_cholesky": p.precisions_cholesky,
        "precisions": p.get_precisions(),
    }
    arrays = {k: v.detach().cpu().contiguous().numpy() for k, v in arrays.items()}
    params = estimator.get_params(deep=False)
    stored = {}
    for name in _SCALAR_PARAMS:
        if name in params:
            v = _json_safe(params[name])
            if v is not None or params[name] is None:
                stored[name] = v
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "gaussmix_version": _version(),
        "covariance_type": p.covariance_type,
        "n_components": p.n_components,
        "n_features": p.n_features,
        "dtype": str(arrays["means"].dtype),
        "feature_names": feature_names,
        "feature_names_in": None if fitted_names is None else [str(n) for n in fitted_names],
        "estimator_params": stored,
        "fit": {
            "converged": bool(estimator.converged_),
            "n_iter": int(estimator.n_iter_),
            "lower_bound": float(estimator.lower_bound_),
            "lower_bounds": [float(v) for v in estimator.lower_bounds_],
        },
        "arrays": {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()},
    }
    folder = os.path.dirname(os.fspath(path)) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {os.fspath(path)}: the folder {folder} does not exist")
    # A unique temporary name: a user's own "<path>.tmp" is never touched.
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(os.fspath(path)) + ".", suffix=".tmp",
                               dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the model unreadable to others
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, a in arrays.items():
                buf = _io.BytesIO()
                np.lib.format.write_array(buf, a, allow_pickle=False)
                zf.writestr(_member(name + ".npy"), buf.getvalue())
            text = json.dumps(meta, indent=2, sort_keys=True)
            zf.writestr(_member(_META), text.encode("utf-8"))
        # Write-then-rename: an interrupted save never leaves a half file.
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, _ZIP_TIME)
    info.external_attr = 0o644 << 16  # a plain readable file when unzipped
    return info


def _open_archive(path):
    """Check the magic bytes and the zip directory; return member infos."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] != b"PK":
        kind = "a pickle" if head[:1] == b"\x80" else "not a zip/.npz archive"
        raise _bad(path, f"it is {kind} (first bytes {head!r})")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
    except _ZIP_ERRORS as exc:
        raise _bad(path, f"the archive is damaged or truncated ({exc})") from None
    return infos


def read_metadata(path) -> dict:
    """The JSON metadata of a model file, checked for format and version.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a gaussmix model file of a supported version.
    """
    infos = _open_archive(path)
    if _META not in infos:
        raise _bad(path, f"it has no {_META} member (members: {sorted(infos)[:6]})")
    if infos[_META].file_size > _MAX_META_BYTES:
        raise _bad(path, f"its {_META} is implausibly large")
    try:
        with zipfile.ZipFile(path) as zf:
            raw = zf.read(_META)
        meta = json.loads(raw.decode("utf-8"))
    except _ZIP_ERRORS as exc:
        raise _bad(path, f"the metadata cannot be read ({exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(path, f"the metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise _bad(path, "its metadata does not identify a gaussmix model")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _bad(path, f"format_version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)} uses model format {version}, newer than this gaussmix "
            f"({_version()}) reads (format {FORMAT_VERSION}). Upgrade gaussmix to load it."
        )
    return meta


def _check_meta(path, meta) -> tuple[str, int, int, np.dtype]:
    kind = meta.get("covariance_type")
    if kind not in MODELS:
        raise _bad(path, f"unknown covariance_type {kind!r}")
    k, d = meta.get("n_components"), meta.get("n_features")
    for name, v in (("n_components", k), ("n_features", d)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise _bad(path, f"{name} {v!r} is not a positive integer")
    if meta.get("dtype") not in ("float32", "float64"):
        raise _bad(path, f"dtype {meta.get('dtype')!r} is not float32 or float64")
    for key in ("feature_names", "feature_names_in"):
        v = meta.get(key)
        if v is not None and (
            not isinstance(v, list) or len(v) != d or not all(isinstance(s, str) for s in v)
        ):
            raise _bad(path, f"{key} is not a list of {d} strings")
    return kind, k, d, np.dtype(meta["dtype"])


def _expected_shapes(kind: str, k: int, d: int) -> dict:
    cov = get_covariance_type(kind).expected_param_shape(k, d)
    return {
        "weights": (k,),
        "means": (k, d),
        "covariances": cov,
        "precisions_cholesky": cov,
        "precisions": cov,
    }


def _read_arrays(path, infos, kind, k, d, dtype) -> dict:
    shapes = _expected_shapes(kind, k, d)
    out = {}
    for name, shape in shapes.items():
        member = name + ".npy"
        if member not in infos:
            raise _bad(path, f"the array {member} is missing")
        # Bound what a member may inflate to before reading it (zip bombs).
        limit = math.prod(shape) * dtype.itemsize + 4096
        if infos[member].file_size > limit:
            raise _bad(path, f"{member} is larger than a ({', '.join(map(str, shape))}) array")
    try:
        with zipfile.ZipFile(path) as zf:
            for name, shape in shapes.items():
                buf = _io.BytesIO(zf.read(name + ".npy"))
                # Check the header before reading, so that a lying header can
                # neither allocate a huge array nor smuggle in an object array.
                hdr_shape, _, hdr_dtype = _npy_header(buf)
                if hdr_dtype != dtype or tuple(hdr_shape) != tuple(shape):
                    raise _bad(
                        path,
                        f"{name} has shape {tuple(hdr_shape)} and dtype {hdr_dtype}, expected "
                        f"{tuple(shape)} and {dtype}",
                    )
                buf.seek(0)
                out[name] = np.lib.format.read_array(buf, allow_pickle=False)
    except _ZIP_ERRORS as exc:
        raise _bad(path, f"an array cannot be read ({exc})") from None
    except _NpyHeaderError as exc:
        raise _bad(path, f"an array is not a plain numeric .npy array ({exc})") from None
    except ValueError as exc:
        if str(exc).startswith(os.fspath(path)):
            raise
        raise _bad(path, f"an array is not a plain numeric array ({exc})") from None
    for name, shape in shapes.items():
        a = out[name]
        if a.dtype != dtype or tuple(a.shape) != tuple(shape):
            raise _bad(
                path,
                f"{name} has shape {a.shape} and dtype {a.dtype}, expected {shape} and {dtype}",
            )
        if not np.isfinite(a).all():
            raise _bad(path, f"{name} contains NaN or infinity")
    w = out["weights"]
    if (w < 0).any() or abs(float(w.astype(np.float64).sum()) - 1.0) > 1e-4:
        raise _bad(path, "the weights are not a probability vector")
    return out


def _check_params(path, stored: dict) -> dict:
    defaults = GaussianMixture().get_params(deep=False)
    if not isinstance(stored, dict):
        raise _bad(path, "estimator_params is not a mapping")
    params = {}
    for name, v in stored.items():
        # Parameters unknown to this version are skipped (forward compatible).
        if name not in defaults or name not in _SCALAR_PARAMS:
            continue
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise _bad(path, f"estimator parameter {name!r} has a non-scalar value")
        params[name] = v
    return params


def load(path, device=None) -> GaussianMixture:
    """Load a model written by :meth:`GaussianMixture.save`.

    Never unpickles and never executes code: arrays are read with
    ``allow_pickle=False`` and metadata with :func:`json.loads`.

    Parameters
    ----------
    path : str or path-like
    device : str or torch.device, optional
        Where the loaded model computes (default: the CPU); it also becomes
        the model's ``device`` parameter (the device the model was fitted on
        is not restored, as it may not exist on this machine).

    Returns
    -------
    GaussianMixture
        Fitted, with parameters bitwise equal to those saved; it predicts
        without refitting.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the file is not a valid gaussmix model file (corrupted, truncated,
        a pickle, a foreign archive), needs a newer gaussmix, or holds values
        that cannot be a fitted mixture (see :func:`gaussmix.params.find_problem`:
        finite values, weights that are a distribution, precision factors with
        a positive diagonal, covariances consistent with the precisions); the
        message names the file and the field.
    """
    from ._validation import resolve_device

    meta = read_metadata(path)
    kind, k, d, dtype = _check_meta(path, meta)
    infos = _open_archive(path)
    arrays = _read_arrays(path, infos, kind, k, d, dtype)
    params = _check_params(path, meta.get("estimator_params", {}))
    # The fitting device of the saver's machine need not exist here.
    params.update(n_components=k, covariance_type=kind, device=device)
    est = GaussianMixture(**params)
    try:
        est._check_hyperparameters()
    except ValueError as exc:
        raise _bad(path, f"a stored estimator parameter is invalid ({exc})") from None
    fit = meta.get("fit", {})
    if not isinstance(fit, dict):
        raise _bad(path, "the fit record is not a mapping")
    try:
        converged = bool(fit.get("converged", False))
        n_iter = int(fit.get("n_iter", 0))
        lower_bound = float(fit.get("lower_bound", math.nan))
        lower_bounds = [float(v) for v in fit.get("lower_bounds", [])]
    except (TypeError, ValueError):
        raise _bad(path, "the fit record has non-numeric values") from None

    dev = resolve_device(device)

    def tensor(name):
        return torch.from_numpy(np.ascontiguousarray(arrays[name]))

    params_t = GMMParams(
        weights=tensor("weights"),
        means=tensor("means"),
        precisions_cholesky=tensor("precisions_cholesky"),
        covariance_type=kind,
        covariances=tensor("covariances"),
    )
    problem = find_problem(params_t, precisions=tensor("precisions"))
    if problem is not None:
        raise _bad(path, f"the field {problem[0]!r} {problem[1]}")
    est._device = dev
    est._dtype = torch.float32 if dtype == np.float32 else torch.float64
    est._tensor_io = False
    params_t = params_t.to(device=dev)
    est._set_result(EMResult(params_t, converged, n_iter, lower_bound, lower_bounds))
    est.n_features_in_ = d
    if meta.get("feature_names_in") is not None:
        est.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
    return est


# ---------------------------------------------------------------- data files
class DataError(ValueError):
    """A data file could not be read as a numeric table; the message names
    the file, line and column at fault."""


_NUMPY_SUFFIXES = (".npy",)
_PARQUET_SUFFIXES = (".parquet", ".pq")


def _printable(name: str) -> str:
    """A column name as it can appear in a one-line message."""
    return name if name.isprintable() else repr(name)


def _parse_float(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def _select_columns(names: list[str], columns, where: str, prefer=None) -> list[int]:
    """Indices of the requested columns: names, or 1-based positions.

    Without ``columns``, ``prefer`` (a model's feature names) picks those
    columns by name when all of them are present; otherwise all columns.
    """
    if columns is None:
        if prefer and all(p in names for p in prefer):
            return [names.index(p) for p in prefer]
        return list(range(len(names)))
    if isinstance(columns, str):
        columns = [c.strip() for c in columns.split(",") if c.strip()]
    out = []
    for c in columns:
        c = str(c)
        if c in names:
            out.append(names.index(c))
        elif c.isdigit() and 1 <= int(c) <= len(names):
            out.append(int(c) - 1)
        else:
            shown = ", ".join(_printable(n) for n in names[:12]) + (", ..." if len(names) > 12 else "")
            raise DataError(
                f"{where}: column {c!r} not found (columns: {shown}); give names from the "
                f"header or 1-based positions."
            )
    if not out:
        raise DataError(f"{where}: --columns selects no column; name at least one.")
    return out


def _detect_delimiter(line: str, path: str) -> str:
    if path.lower().endswith((".tsv", ".tab")):
        return "\t"
    counts = {sep: line.count(sep) for sep in (",", "\t", ";")}
    best = max(counts, key=counts.get)
    if counts[best] == 0:
        # One column, or columns separated by blanks.
        return " " if line.strip().count(" ") else ","
    return best


def _read_text(path: str, columns, header, delimiter, prefer) -> tuple[np.ndarray, list[str]]:
    with open(path, "rb") as fh:
        raw = fh.read()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; it needs a header and/or numeric rows.")
    if b"\x00" in raw:
        raise DataError(f"{path}: the file contains NUL bytes; it is binary, not CSV/TSV text.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: bytes that are not UTF-8 text; save the file as UTF-8 CSV."
        ) from None
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), None)
    if first is None:
        raise DataError(f"{path}: no data rows (only blank or comment lines).")
    sep = delimiter or _detect_delimiter(first, path)
    rows, nums = [], []  # kept rows and their line numbers (for messages)
    if sep == " ":
        for i, ln in enumerate(lines):
            row = ln.split()
            if row and not row[0].startswith("#"):
                rows.append(row)
                nums.append(i + 1)
    else:
        rdr = csv.reader(_io.StringIO(text, newline=""), delimiter=sep, strict=True)
        try:
            for row in rdr:
                # Skip blank lines, all-empty rows and comments.
                if row and "".join(row).strip() and not row[0].lstrip().startswith("#"):
                    rows.append(row)
                    nums.append(rdr.line_num)
        except csv.Error as exc:
            raise DataError(f"{path}: line {rdr.line_num}: malformed CSV ({exc}).") from None
    if not rows:
        raise DataError(f"{path}: no data rows.")
    first_no, first_row = nums[0], [f.strip() for f in rows[0]]
    if header is None:
        header = any(_parse_float(f) is None for f in first_row)
    if header:
        names = [f if f else f"column{j + 1}" for j, f in enumerate(first_row)]
        body, body_nums = rows[1:], nums[1:]
    else:
        names = [f"x{j + 1}" for j in range(len(first_row))]
        body, body_nums = rows, nums
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(
            f"{path}: line {first_no}: column name {dup!r} appears twice; rename it."
        )
    if not body:
        raise DataError(f"{path}: a header but no data rows.")
    width = len(names)
    idx = _select_columns(names, columns, path, prefer)
    if any(len(row) != width for row in body):
        i = next(i for i, row in enumerate(body) if len(row) != width)
        raise DataError(
            f"{path}: line {body_nums[i]}: {len(body[i])} field(s), expected {width} "
            f"(as in line {first_no}); every row needs the same number of "
            f"{'tab' if sep == chr(9) else repr(sep)}-separated fields."
        )
    # Fast path: numpy parses the whole table in C; the field-by-field loop
    # below only runs to name the first bad value.
    try:
        out = np.array(body, dtype=str)[:, idx].astype(np.float64)
        if np.isfinite(out).all():
            return out, [names[j] for j in idx]
    except (ValueError, OverflowError):
        pass
    for line_no, row in zip(body_nums, body):
        for j in idx:
            v = _parse_float(row[j])
            if v is None or not math.isfinite(v):
                what = "is not a number" if v is None else "is not a finite number"
                f = row[j].strip()
                shown = f if len(f) <= 40 else f[:37] + "..."
                raise DataError(
                    f"{path}: line {line_no}, column {names[j]!r} (#{j + 1}): "
                    f"{shown!r} {what}; fix or drop that value, or leave the column out with "
                    f"--columns."
                )
    raise DataError(  # numpy and Python disagree on some spelling of a number
        f"{path}: some values could not be read as numbers; write them in plain decimal notation."
    )


def _read_npy(path: str, columns) -> tuple[np.ndarray, list[str]]:
    with open(path, "rb") as fh:
        head = fh.read(6)
        if head == b"\x93NUMPY":
            fh.seek(0)
            try:
                shape, _, dtype = _npy_header(fh)
            except _NpyHeaderError as exc:
                raise DataError(f"{path}: not a plain numeric .npy array ({exc}).") from None
            if dtype.kind not in "fiub":
                raise DataError(f"{path}: array of dtype {dtype} is not real numeric data.")
            need = math.prod(shape) * dtype.itemsize
            have = os.path.getsize(path) - fh.tell()
            if have < need:
                raise DataError(
                    f"{path}: truncated .npy file: its header promises {need} bytes of data "
                    f"but only {have} follow."
                )
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path}: not a plain numeric .npy array ({exc}).") from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: any failure means "not .npy"
        raise DataError(f"{path}: cannot read it as a .npy array ({type(exc).__name__}: {exc}).") from None
    if isinstance(a, np.lib.npyio.NpzFile):
        a.close()
        raise DataError(f"{path}: a .npz archive, not a .npy array; save one array with numpy.save.")
    if a.dtype.kind not in "fiub":
        raise DataError(f"{path}: array of dtype {a.dtype} is not real numeric data.")
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{path}: expected a non-empty 2-D array (samples x features), got shape {a.shape}.")
    a = a.astype(np.float64)
    names = [f"x{j + 1}" for j in range(a.shape[1])]
    idx = _select_columns(names, columns, path)
    a = a[:, idx]
    bad = np.argwhere(~np.isfinite(a))
    if bad.size:
        r, c = bad[0]
        raise DataError(f"{path}: row {r + 1}, column {c + 1}: NaN or infinity; remove or impute it.")
    return a, [names[j] for j in idx]


def _read_parquet(path: str, columns, prefer) -> tuple[np.ndarray, list[str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow: pip install 'gaussmix[parquet]'."
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for bad files
        raise DataError(f"{path}: cannot read it as Parquet ({type(exc).__name__}: {exc}).") from None
    names = [str(n) for n in table.column_names]
    idx = _select_columns(names, columns, path, prefer)
    cols = []
    for j in idx:
        col = table.column(j)
        try:
            values = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(
                f"{path}: column {names[j]!r} has type {col.type}, not numeric; leave it out "
                f"with --columns."
            ) from None
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise DataError(
                f"{path}: row {bad[0] + 1}, column {names[j]!r}: missing, NaN or infinite value; "
                f"remove or impute it."
            )
        cols.append(values)
    if not cols or cols[0].size == 0:
        raise DataError(f"{path}: no data rows.")
    return np.column_stack(cols), [names[j] for j in idx]


def read_data(path, columns=None, header=None, delimiter=None, prefer=None) -> tuple[np.ndarray, list[str]]:
    """Read a numeric table from CSV/TSV text, ``.npy`` or Parquet.

    Parameters
    ----------
    path : str or path-like
    columns : str or sequence of str, optional
        Columns to keep, by header name or 1-based position (a string is
        split on commas).  Default: all.
    header : bool, optional
        Whether the first row of a text file is a header.  Default: detected
        (a header is a first row with a non-numeric field).
    delimiter : str, optional
        Field separator of a text file.  Default: tab for ``.tsv``, else the
        most frequent of ``,``, tab and ``;`` in the first row.
    prefer : sequence of str, optional
        Without ``columns``: names to select, in this order, when the header
        has all of them (how a saved model finds its features); otherwise
        every column is read.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float64
        Finite values.
    names : list of str
        Column names (``x1, x2, ...`` when there is no header).

    Raises
    ------
    DataError
        A ValueError naming the file, line and column at fault.
    FileNotFoundError
        If the file does not exist.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory; give a data file.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file.")
    low = path.lower()
    if low.endswith(_NUMPY_SUFFIXES):
        return _read_npy(path, columns)
    if low.endswith(_PARQUET_SUFFIXES):
        return _read_parquet(path, columns, prefer)
    return _read_text(path, columns, header, delimiter, prefer)
