"""Readers of numeric tables from data files (CSV/TSV text, ``.npy``, Parquet).

:func:`read_data` reads CSV/TSV text (with header detection), ``.npy`` and,
with ``pyarrow`` installed, Parquet into a float64 array; every problem is a
:class:`DataError` naming the file, line and column at fault.
"""

from __future__ import annotations

import csv
import io
import math
import os

import numpy as np

from .safe_npy import NpyHeaderError, npy_header

__all__ = ["DataError", "read_data"]


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
        rdr = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
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
                shape, _, dtype = npy_header(fh)
            except NpyHeaderError as exc:
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
