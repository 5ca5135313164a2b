"""Reading ``.npy`` headers from untrusted bytes without unpickling anything.

Both the model files (:mod:`gaussmix.model_archive`) and the data readers
(:mod:`gaussmix.data_files`) look at an array's header before its data, so
that a lying header can neither allocate a huge array nor smuggle in an
object (pickled) array.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NpyHeaderError", "npy_header"]


class NpyHeaderError(ValueError):
    """A ``.npy`` header that is malformed or describes an object array."""


def npy_header(fh) -> tuple[tuple, bool, np.dtype]:
    """Shape, Fortran order and dtype from a ``.npy`` header, refusing object dtypes."""
    try:
        major, _ = np.lib.format.read_magic(fh)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif major in (2, 3):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise NpyHeaderError(f"unsupported .npy version {major}")
    except NpyHeaderError:
        raise
    except Exception as exc:  # noqa: BLE001 - numpy's header parser (literal_eval,
        # tokenize) raises many types on hostile bytes; all mean "not a .npy header".
        raise NpyHeaderError(f"bad .npy header: {type(exc).__name__}: {exc}") from None
    if dtype.hasobject:
        raise NpyHeaderError("it holds Python objects (pickled data), which are never loaded")
    return tuple(shape), bool(fortran), dtype
