"""Small real data sets: the per-fit fixed cost against scikit-learn.

Issue 13's small-data item: a K = 1..9 x four covariance types grid on a few
hundred rows, and single small fits, side by side with scikit-learn in one
run.  For each data set of ``tests/reference/mclust_reference.json`` (the
CSVs written by ``tests/reference/make_mclust_reference.R``; R is not needed
here) it times, interleaved in ``--reps`` rounds:

* the grid: gaussmix ``select_model(X, range(1, 10), four types,
  starts="estimator", random_state=0)`` (each candidate as
  ``GaussianMixture(K, covariance_type=..., random_state=0).fit(X)``,
  scikit-learn's defaults) against the same 36 scikit-learn
  ``GaussianMixture`` fits and their BIC in a loop (scikit-learn has no
  model selection of its own);
* single fits ``GaussianMixture(3, covariance_type=...)`` for ``full`` and
  ``diag``, in both libraries.

Times are wall-clock medians of the rounds; ratios are medians of the
rounds' ratios (above 1: gaussmix faster).  Writes the table into
docs/PERFORMANCE.md (section ``small``) and prints it.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_small.py [--reps 7] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see docs/PERFORMANCE.md

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

import torch  # noqa: E402
from sklearn.mixture import GaussianMixture as SKGaussianMixture  # noqa: E402

from bench import machine, write_doc  # noqa: E402
from gaussmix import GaussianMixture, select_model  # noqa: E402
from selection_vs_mclust import KS, TYPES, load_data, load_reference  # noqa: E402

SMALL_SETS = ("iris", "wine", "faithful", "diabetes", "thyroid", "banknote")
SINGLE_TYPES = ("full", "diag")
SINGLE_K = 3
GRID_GOAL_S = 0.15


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _ours_grid(X):
    return select_model(X, KS, TYPES, starts="estimator", random_state=0)


def _sklearn_grid(X):
    return [SKGaussianMixture(k, covariance_type=t, random_state=0).fit(X).bic(X)
            for t in TYPES for k in KS]


def measure(X, reps: int) -> dict:
    """Medians over ``reps`` interleaved rounds: grid and single-fit times of
    both libraries, and the median per-round ratios (scikit-learn / gaussmix)."""
    jobs = {"grid": (lambda: _ours_grid(X), lambda: _sklearn_grid(X))}
    for t in SINGLE_TYPES:
        jobs[t] = (lambda t=t: GaussianMixture(SINGLE_K, covariance_type=t, random_state=0).fit(X),
                   lambda t=t: SKGaussianMixture(SINGLE_K, covariance_type=t,
                                                 random_state=0).fit(X))
    for ours, theirs in jobs.values():  # warm-up: imports, thread pools, caches
        ours()
        theirs()
    times = {name: ([], []) for name in jobs}
    for r in range(reps):
        for name, (ours, theirs) in jobs.items():
            # Alternate which library goes first, so that neither always
            # follows the other's cache and thread state.
            if r % 2 == 0:
                a, b = _timed(ours), _timed(theirs)
            else:
                b, a = _timed(theirs), _timed(ours)
            times[name][0].append(a)
            times[name][1].append(b)
    med = statistics.median
    return {name: (med(a), med(b), med([y / x for x, y in zip(a, b)]))
            for name, (a, b) in times.items()}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=7, help="interleaved rounds (default 7)")
    ap.add_argument("--sets", default=",".join(SMALL_SETS), help="data sets (comma-separated)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # convergence and degenerate-fit notes of the grid
    ref = load_reference()
    head = (f"| data set | n x d | grid, gaussmix [s] | grid, scikit-learn [s] | ratio | "
            f"goal <= {GRID_GOAL_S} s | "
            + " | ".join(f"K = {SINGLE_K} {t}: gaussmix / scikit-learn [ms] (ratio)"
                         for t in SINGLE_TYPES) + " |")
    lines = [
        f"Machine: {machine('cpu', torch.get_num_threads())}",
        f"K = 1..9 x {', '.join(TYPES)} (gaussmix: select_model(..., starts='estimator'); "
        f"scikit-learn: the 36 GaussianMixture fits and their BIC in a loop), and single "
        f"GaussianMixture({SINGLE_K}) fits; random_state=0, scikit-learn's defaults; wall time, "
        f"medians of {args.reps} interleaved rounds; ratio: median of the rounds' "
        f"scikit-learn / gaussmix (above 1: gaussmix faster).",
        "",
        head,
        "|---|---|---|---|---|---|" + "---|" * len(SINGLE_TYPES),
    ]
    print("\n".join(lines), flush=True)
    for name in args.sets.split(","):
        X = load_data(ref["datasets"][name])
        m = measure(X, args.reps)
        g_ours, g_sk, g_ratio = m["grid"]
        singles = " | ".join(f"{m[t][0] * 1e3:.1f} / {m[t][1] * 1e3:.1f} ({m[t][2]:.2f})"
                             for t in SINGLE_TYPES)
        row = (f"| {name} | {X.shape[0]} x {X.shape[1]} | {g_ours:.3f} | {g_sk:.3f} | "
               f"{g_ratio:.2f} | {'yes' if g_ours <= GRID_GOAL_S else 'no'} | {singles} |")
        lines.append(row)
        print(row, flush=True)
    table = "\n".join(lines)
    if not args.no_write:
        write_doc(table, "small")
    return table


if __name__ == "__main__":
    main()
