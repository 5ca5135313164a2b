"""Export scikit-learn's bundled data sets (features only) as CSV for R mclust.

Values are written with ``repr`` (shortest round-trip representation), so R's
``read.csv`` and Python's ``float`` parse exactly the same doubles.

Usage (from the repository root)::

    python tests/reference/export_sklearn_data.py
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_iris, load_wine

DATA_DIR = Path(__file__).resolve().parent / "data"

LOADERS = {
    "iris": load_iris,
    "wine": load_wine,
    "breast_cancer": load_breast_cancer,
}


def simple_name(name: str) -> str:
    """Turn a feature name into a plain identifier (letters, digits, '_')."""
    name = re.sub(r"\(.*?\)", "", name)  # drop units such as "(cm)"
    name = re.sub(r"[^0-9A-Za-z]+", "_", name.strip()).strip("_").lower()
    return name


def write_csv(path: Path, columns: list[str], X: np.ndarray) -> None:
    X = np.asarray(X, dtype=np.float64)
    with path.open("w", newline="\n") as fh:
        fh.write(",".join(columns) + "\n")
        for row in X:
            fh.write(",".join(repr(float(v)) for v in row) + "\n")


def main() -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for name, loader in LOADERS.items():
        bunch = loader()
        columns = [simple_name(c) for c in bunch.feature_names]
        assert len(set(columns)) == len(columns), columns
        path = DATA_DIR / f"{name}.csv"
        write_csv(path, columns, bunch.data)
        # Round-trip check: re-read and compare bit for bit.
        back = np.loadtxt(path, delimiter=",", skiprows=1)
        assert np.array_equal(back, bunch.data), name
        print(f"wrote {path} ({bunch.data.shape[0]}x{bunch.data.shape[1]})")


if __name__ == "__main__":
    main()
