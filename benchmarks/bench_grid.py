"""Model-selection grid: fits one after another vs batched (concurrent) EM.

Times ``select_model(..., concurrent=False)`` against ``concurrent=True`` on
the same data and seed (K = 1..8 x four covariance types by default), the two
interleaved, best of ``--reps``.  It also times the EM iterations alone
(initialisation, which both run one candidate at a time, left out): the sum
over candidates of ``GaussianMixture.fit`` minus its ``_init_time_``, against
the batched EM time of :func:`gaussmix.candidates.fit_candidates`.  Both give the same ``results_``; the script
checks it (criteria to 1e-6 relative, same n_iter and chosen model) so that a
fast wrong answer cannot pass as a speed-up.

    python benchmarks/bench_grid.py [--reps 3] [--shapes 2000x2,20000x8] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see docs/PERFORMANCE.md

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gaussmix import GaussianMixture, select_model  # noqa: E402
from gaussmix.candidates import fit_candidates  # noqa: E402

TYPES = ("full", "tied", "diag", "spherical")


def make_data(n, d, seed=0):
    """Four well separated Gaussian clusters in ``d`` dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, (4, d))
    labels = rng.integers(0, 4, n)
    return centres[labels] + rng.normal(0.0, 1.0, (n, d))


def run(X, concurrent, args):
    t0 = time.perf_counter()
    sel = select_model(
        X, n_components=range(1, args.kmax + 1), random_state=0, concurrent=concurrent,
        starts="estimator", device=args.device, max_iter=args.max_iter, tol=args.tol,
        dtype=args.dtype,
    )
    if args.device and args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, sel


def em_only(X, concurrent, args):
    """Seconds of EM iterations alone over the grid."""
    grid = [(t, k) for t in TYPES for k in range(1, args.kmax + 1)]
    kw = dict(max_iter=args.max_iter, tol=args.tol, dtype=args.dtype)
    sync = torch.cuda.synchronize if args.device and args.device.startswith("cuda") else (lambda: None)
    if not concurrent:
        total = 0.0
        for t, k in grid:
            t0 = time.perf_counter()
            est = GaussianMixture(k, covariance_type=t, random_state=0, device=args.device, **kw).fit(X)
            sync()
            total += time.perf_counter() - t0 - est._init_time_
        return total
    fits = fit_candidates(X, grid, seed=0, device=args.device, **kw)
    sync()
    return sum(f.fit_time - f.init_time for f in fits)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shapes", default="2000x2,2000x8,20000x2,20000x8")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--kmax", type=int, default=8)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # convergence and degenerate-fit notes of the grid
    torch.set_num_threads(args.threads)
    print("| data (n x d) | sum of n_iter | select_model sequential (s) | batched (s) | speed-up "
          "| EM only sequential (s) | batched (s) | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for shape in args.shapes.split(","):
        n, d = (int(v) for v in shape.split("x"))
        X = make_data(n, d)
        best = {False: np.inf, True: np.inf}
        em = {False: np.inf, True: np.inf}
        sels = {}
        for _ in range(args.reps):
            for conc in (False, True):
                t, sels[conc] = run(X, conc, args)
                best[conc] = min(best[conc], t)
                em[conc] = min(em[conc], em_only(X, conc, args))
        a, b = sels[False].results_, sels[True].results_
        assert a["n_iter"] == b["n_iter"], (a["n_iter"], b["n_iter"])
        assert np.allclose(a["bic"], b["bic"], rtol=1e-6), "batched BIC differs"
        assert sels[False].best_index_ == sels[True].best_index_
        print(f"| {n} x {d} | {sum(a['n_iter'])} | {best[False]:.2f} | {best[True]:.2f} | "
              f"{best[False] / best[True]:.2f}x | {em[False]:.2f} | {em[True]:.2f} | "
              f"{em[False] / em[True]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
