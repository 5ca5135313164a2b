"""The container of a model file: a zip archive in NumPy's ``.npz`` layout.

One ``.npy`` member per array plus a ``metadata.json`` member.  Reading
checks the archive before it trusts anything in it: magic bytes, the zip
directory, member sizes (zip bombs), each array's header (shape, dtype, no
Python objects) before its data, and finite values.  Arrays are read with
``allow_pickle=False`` and metadata with :func:`json.loads`, so a model file
can never unpickle an object or run code.  What the arrays and metadata mean
is :mod:`gaussmix.model_files`' business.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from .safe_npy import NpyHeaderError, npy_header

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "bad_file", "write_archive", "open_archive",
           "read_metadata", "read_arrays"]

FORMAT_NAME = "gaussmix-model"
#: The newest format this version reads.  Format 1 holds a GaussianMixture
#: (and is still written for one, so older gaussmix versions read it);
#: format 2 adds the variational posterior of a BayesianGaussianMixture,
#: which format-1 readers must refuse rather than load as a GaussianMixture.
FORMAT_VERSION = 2
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


def version() -> str:
    """This gaussmix's version (written into, and quoted about, model files)."""
    from . import __version__

    return __version__


def bad_file(path, why: str) -> ValueError:
    """The error for a file that is not a valid model file, saying ``why``."""
    return ValueError(
        f"{os.fspath(path)} is not a valid gaussmix model file: {why}. Model files are written "
        f"by GaussianMixture.save(), BayesianGaussianMixture.save() or `gaussmix fit --output`; "
        f"re-create it from the original."
    )


def write_archive(path, arrays: dict, meta: dict) -> None:
    """Write ``arrays`` (name -> ndarray) and ``meta`` (JSON) to ``path`` atomically.

    Parameters
    ----------
    path : str or path-like
    arrays : dict of str to ndarray
        Plain numeric arrays; each becomes the member ``<name>.npy``.
    meta : dict
        JSON-serialisable metadata, written as ``metadata.json``.

    Raises
    ------
    FileNotFoundError
        If the destination folder does not exist.
    """
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
                buf = io.BytesIO()
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


def open_archive(path) -> dict:
    """Check the magic bytes and the zip directory; return the member infos by name."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] != b"PK":
        kind = "a pickle" if head[:1] == b"\x80" else "not a zip/.npz archive"
        raise bad_file(path, f"it is {kind} (first bytes {head!r})")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
    except _ZIP_ERRORS as exc:
        raise bad_file(path, f"the archive is damaged or truncated ({exc})") from None
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
    infos = open_archive(path)
    if _META not in infos:
        raise bad_file(path, f"it has no {_META} member (members: {sorted(infos)[:6]})")
    if infos[_META].file_size > _MAX_META_BYTES:
        raise bad_file(path, f"its {_META} is implausibly large")
    try:
        with zipfile.ZipFile(path) as zf:
            raw = zf.read(_META)
        meta = json.loads(raw.decode("utf-8"))
    except _ZIP_ERRORS as exc:
        raise bad_file(path, f"the metadata cannot be read ({exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_file(path, f"the metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise bad_file(path, "its metadata does not identify a gaussmix model")
    fmt = meta.get("format_version")
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise bad_file(path, f"format_version {fmt!r} is not an integer")
    if fmt > FORMAT_VERSION:
        raise ValueError(
            f"{os.fspath(path)} uses model format {fmt}, newer than this gaussmix "
            f"({version()}) reads (format {FORMAT_VERSION}). Upgrade gaussmix to load it."
        )
    return meta


def read_arrays(path, infos: dict, specs: dict) -> dict:
    """Read the arrays ``specs`` names, each checked against its shape and dtype.

    Parameters
    ----------
    path : str or path-like
    infos : dict
        Member infos from :func:`open_archive`.
    specs : dict of str to (shape, numpy dtype)
        The arrays to read and what each must be.

    Returns
    -------
    dict of str to ndarray
        Finite arrays of exactly the given shapes and dtypes.

    Raises
    ------
    ValueError
        Naming the file and the array: missing, too large, of another shape
        or dtype, not a plain numeric ``.npy`` array, or not finite.
    """
    for name, (shape, dtype) in specs.items():
        member = name + ".npy"
        if member not in infos:
            raise bad_file(path, f"the array {member} is missing")
        # Bound what a member may inflate to before reading it (zip bombs).
        limit = math.prod(shape) * dtype.itemsize + 4096
        if infos[member].file_size > limit:
            raise bad_file(path, f"{member} is larger than a ({', '.join(map(str, shape))}) array")
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name, (shape, dtype) in specs.items():
                buf = io.BytesIO(zf.read(name + ".npy"))
                # Check the header before reading, so that a lying header can
                # neither allocate a huge array nor smuggle in an object array.
                hdr_shape, _, hdr_dtype = npy_header(buf)
                if hdr_dtype != dtype or tuple(hdr_shape) != tuple(shape):
                    raise bad_file(
                        path,
                        f"{name} has shape {tuple(hdr_shape)} and dtype {hdr_dtype}, expected "
                        f"{tuple(shape)} and {dtype}",
                    )
                buf.seek(0)
                out[name] = np.lib.format.read_array(buf, allow_pickle=False)
    except _ZIP_ERRORS as exc:
        raise bad_file(path, f"an array cannot be read ({exc})") from None
    except NpyHeaderError as exc:
        raise bad_file(path, f"an array is not a plain numeric .npy array ({exc})") from None
    except ValueError as exc:
        if str(exc).startswith(os.fspath(path)):
            raise
        raise bad_file(path, f"an array is not a plain numeric array ({exc})") from None
    for name, (shape, dtype) in specs.items():
        a = out[name]
        if a.dtype != dtype or tuple(a.shape) != tuple(shape):
            raise bad_file(
                path,
                f"{name} has shape {a.shape} and dtype {a.dtype}, expected {shape} and {dtype}",
            )
        if not np.isfinite(a).all():
            raise bad_file(path, f"{name} contains NaN or infinity")
    return out
