"""How long a ``starts="estimator"`` grid would take on the joint engine.

``select_model(X, range(1, 10), starts="estimator")`` fits 36 candidates,
each exactly ``GaussianMixture(K, covariance_type=..., random_state=seed).fit(X)``:
per-candidate k-means initialisations, then one batched EM per covariance
type (:mod:`gaussmix.batched`).  On data of a few hundred rows that costs
the fixed price of every torch call, four times over (one engine per type).
The search's joint engine (:mod:`gaussmix.joint`) advances runs of every
type in one loop.  This script times the same grid shape on it: one k-means
start per K (all clusterings at once, :func:`gaussmix.kmeans.kmeans_many`),
one initial M-step for every run, EM with scikit-learn's stopping rule
(``tol=1e-3`` on the mean log-likelihood, ``max_iter=100``), on the
standardised data with ``reg_covar=1e-6`` there; against the estimator grid
in the same process.

The joint side leaves out what the estimator grid also does (its 36
estimators, the degenerate-fit guard, the criteria: 12-26 ms on these sets),
and its fits are not the estimator grid's: other k-means seeds, the
regularisation relative to each feature's scale, and the expanded quadratic
form's rounding.  It measures the engine's cost, not a drop-in replacement.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/joint_grid_probe.py [--data iris wine ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from gaussmix import select_model  # noqa: E402
from gaussmix.joint import JointRun, fit_joint, quadratic_features, start_runs  # noqa: E402
from gaussmix.kmeans import kmeans_many  # noqa: E402
from gaussmix.scaling import feature_scaling  # noqa: E402
from gaussmix.search import Start  # noqa: E402
from selection_vs_mclust import KS, TYPES, load_data, load_reference  # noqa: E402


def joint_grid(X) -> tuple:
    """The grid's k-means starts and EM on the joint engine; returns the
    total and the largest number of EM iterations of its runs."""
    Xt = torch.from_numpy(X)
    Z = feature_scaling(Xt, True).to_fit(Xt)
    n = Z.shape[0]
    multi = [k for k in KS if k > 1]
    labels = kmeans_many(Z, multi, torch.Generator().manual_seed(0), max_iter=100)
    starts = {1: Start("single", labels=torch.zeros(n, dtype=torch.long))}
    starts.update({k: Start("kmeans", labels=lab) for k, lab in zip(multi, labels)})
    phi = quadratic_features(Z)
    runs = [JointRun(t, k, None) for t in TYPES for k in KS]
    sts = [starts[r.k] for r in runs]
    start_runs(phi, runs, lambda i, a, b: sts[i].chunk(a, b, runs[i].k), reg_covar=1e-6,
               labels=[s.labels for s in sts])
    live = [r for r in runs if not r.failed]
    fit_joint(phi, live, reg_covar=1e-6, tol=1e-3, tol_type="absolute", max_iter=100)
    return sum(r.n_iter for r in live), max(r.n_iter for r in live)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+",
                    default=["iris", "faithful", "banknote", "diabetes", "thyroid", "wine"])
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    sets = load_reference()["datasets"]
    print("| data | n x d | joint engine: k-means and EM [ms] | EM iterations (all runs / "
          "longest) | starts='estimator' grid [ms] |")
    print("|---|---|---|---|---|")
    for name in args.data:
        X = load_data(sets[name])
        joint_grid(X)
        select_model(X, KS, TYPES, random_state=0, starts="estimator")
        tj, te = [], []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            total, longest = joint_grid(X)
            tj.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            select_model(X, KS, TYPES, random_state=0, starts="estimator")
            te.append(time.perf_counter() - t0)
        med = statistics.median
        print(f"| {name} | {X.shape[0]} x {X.shape[1]} | {med(tj) * 1e3:.0f} | {total} / {longest} "
              f"| {med(te) * 1e3:.0f} |", flush=True)
    print(f"\nOne torch thread, medians of {args.reps} alternating repetitions.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
