"""Check that R and Python read bit-identical doubles from tests/reference/data/*.csv.

R's string->double parser is not correctly rounding for every input, so this
asks R to print what it read as hex floats ("%a") and compares them with
Python's (correctly rounded) parse of the same CSV.  Requires ``Rscript``.

Usage (from the repository root)::

    python tests/reference/check_csv_roundtrip.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"

R_CODE = r"""
args <- commandArgs(trailingOnly = TRUE)
X <- as.matrix(read.csv(args[1], colClasses = "numeric", check.names = FALSE))
cat(sprintf("%a", as.vector(t(X))), sep = "\n")
"""


def main() -> int:
    ok = True
    for path in sorted(DATA_DIR.glob("*.csv")):
        py = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        res = subprocess.run(
            ["Rscript", "-e", R_CODE, str(path)],
            check=True, capture_output=True, text=True,
        )
        r = np.array([float.fromhex(s) for s in res.stdout.split()]).reshape(py.shape)
        nbad = int(np.sum(r != py))
        ok &= nbad == 0
        print(f"{path.name}: {py.shape[0]}x{py.shape[1]}, mismatches: {nbad}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
