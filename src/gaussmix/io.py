"""Safe model files and data-file readers, under one import path.

Model files
-----------
A model file is a zip archive in NumPy's ``.npz`` layout: one ``.npy`` member
per parameter array plus a ``metadata.json`` member.  Loading reads the
arrays with ``allow_pickle=False`` and the metadata with :func:`json.loads`,
so a model file can never unpickle an object or run code.  Anything that is
not a well-formed gaussmix model (a pickle renamed to ``.npz``, a truncated
download, a foreign zip, arrays of the wrong shape) is refused with a
:class:`ValueError` that says so.  The container is
:mod:`gaussmix.model_archive`; what a ``GaussianMixture`` or
``BayesianGaussianMixture`` stores in it is :mod:`gaussmix.model_files`
(and :mod:`gaussmix.posterior_file` for the variational posterior).

Data files
----------
:func:`read_data` (:mod:`gaussmix.data_files`) reads CSV/TSV text (with
header detection), ``.npy`` and, with ``pyarrow`` installed, Parquet into a
float64 array; every problem is a :class:`DataError` naming the file, line
and column at fault.
"""

from __future__ import annotations

from .data_files import DataError, read_data
from .model_archive import FORMAT_NAME, FORMAT_VERSION, read_metadata
from .model_files import load, save_model

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "DataError",
    "save_model",
    "load",
    "read_metadata",
    "read_data",
]
