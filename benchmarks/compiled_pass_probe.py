"""What a compiled EM pass would buy the search on small data.

The joint engine (:mod:`gaussmix.joint`) advances every run of a model search
by one EM iteration per pass: an E-step GEMM on the quadratic features, the
components' totals, an M-step and a batched Cholesky factorisation.  On data
of a few hundred rows a narrow pass costs about the same whatever its width,
the fixed cost of its torch calls.  This script times that pass (the
coefficients, ``_totals`` and the M-step; not the pass's bookkeeping:
over-relaxation, soundness, rivals) against a plain loop compiled by numba
that does the same arithmetic for ``full`` covariances (E-step, totals,
M-step, Cholesky factor, precision), on the same runs: the screened ``full``
runs of a search's first stage on a reference data set, all of them and
narrower subsets (the continuation's tail is a few runs wide).

numba is not a dependency of gaussmix; install it to run this
(``pip install numba``).  The first call compiles the kernel (seconds), and
the timings are of later calls.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/compiled_pass_probe.py [--data diabetes wine ...]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from gaussmix.joint import JointRun, _totals, fit_joint, quadratic_features, start_runs  # noqa: E402
from gaussmix.run_pack import _factored_pack  # noqa: E402
from gaussmix.search import starting_partitions  # noqa: E402
from selection_vs_mclust import KS, load_data, load_reference  # noqa: E402

#: The search's relative regularisation, on standardised data.
REG = 1e-8


def _kernel():
    import numba

    @numba.njit(cache=False)
    def em_pass(X, ks, w, mu, prec, half_logdet, reg):
        """One EM iteration of G ``full`` runs padded to K slots, in place;
        returns each run's total log-likelihood at the incoming parameters."""
        n, d = X.shape
        G, K = w.shape
        ll = np.zeros(G)
        nk = np.zeros((G, K))
        s1 = np.zeros((G, K, d))
        s2 = np.zeros((G, K, d, d))
        lp = np.empty(K)
        diff = np.empty(d)
        c = -0.5 * d * math.log(2 * math.pi)
        for g in range(G):
            kg = ks[g]
            for i in range(n):
                top = -np.inf
                for k in range(kg):
                    for a in range(d):
                        diff[a] = X[i, a] - mu[g, k, a]
                    q = 0.0
                    for a in range(d):
                        t = 0.0
                        for b in range(d):
                            t += prec[g, k, a, b] * diff[b]
                        q += diff[a] * t
                    v = math.log(w[g, k]) - half_logdet[g, k] + c - 0.5 * q
                    lp[k] = v
                    if v > top:
                        top = v
                s = 0.0
                for k in range(kg):
                    lp[k] = math.exp(lp[k] - top)
                    s += lp[k]
                ll[g] += top + math.log(s)
                for k in range(kg):
                    r = lp[k] / s
                    nk[g, k] += r
                    for a in range(d):
                        ra = r * X[i, a]
                        s1[g, k, a] += ra
                        for b in range(a, d):
                            s2[g, k, a, b] += ra * X[i, b]
        L = np.zeros((d, d))
        Li = np.zeros((d, d))
        C = np.empty((d, d))
        for g in range(G):
            for k in range(ks[g]):
                m = nk[g, k]
                w[g, k] = m / n
                for a in range(d):
                    mu[g, k, a] = s1[g, k, a] / m
                for a in range(d):
                    for b in range(a, d):
                        C[a, b] = s2[g, k, a, b] / m - mu[g, k, a] * mu[g, k, b]
                        C[b, a] = C[a, b]
                    C[a, a] += reg
                ld = 0.0
                for j in range(d):
                    v = C[j, j]
                    for p in range(j):
                        v -= L[j, p] * L[j, p]
                    L[j, j] = math.sqrt(v)
                    ld += math.log(L[j, j])
                    for i2 in range(j + 1, d):
                        v = C[i2, j]
                        for p in range(j):
                            v -= L[i2, p] * L[j, p]
                        L[i2, j] = v / L[j, j]
                half_logdet[g, k] = ld
                for j in range(d):
                    for i2 in range(d):
                        Li[i2, j] = 0.0
                    Li[j, j] = 1.0 / L[j, j]
                    for i2 in range(j + 1, d):
                        v = 0.0
                        for p in range(j, i2):
                            v -= L[i2, p] * Li[p, j]
                        Li[i2, j] = v / L[i2, i2]
                for a in range(d):
                    for b in range(d):
                        v = 0.0
                        for p in range(max(a, b), d):
                            v += Li[p, a] * Li[p, b]
                        prec[g, k, a, b] = v
        return ll

    return em_pass


def _screened_runs(X):
    """The ``full`` runs of a search's first stage after 3 EM iterations."""
    phi = quadratic_features(X)
    parts = starting_partitions(X, KS, torch.Generator().manual_seed(0))
    runs, starts = [], []
    for k in KS:
        for st in parts[k]:
            runs.append(JointRun("full", k, None))
            starts.append(st)
    start_runs(phi, runs, lambda i, a, b: starts[i].chunk(a, b, runs[i].k), reg_covar=REG,
               labels=[st.labels for st in starts])
    runs = [r for r in runs if not r.failed]
    fit_joint(phi, runs, max_iter=3, reg_covar=REG, tol=0.0)
    return phi, sorted(runs, key=lambda r: -r.k)


def probe(name: str, em_pass, reps: int) -> list:
    raw = load_data(load_reference()["datasets"][name])
    Xn = (raw - raw.mean(0)) / raw.std(0)
    phi, runs = _screened_runs(torch.tensor(Xn))
    rows = []
    for width in (len(runs), 9, 3):
        sub = runs[:width]

        def torch_pass():
            pack = _factored_pack(phi, sub, REG)
            t0 = time.perf_counter()
            ll, totals = _totals(phi, pack.coefficients(), len(pack.runs), pack.kmax)
            pack.m_step(totals)
            return time.perf_counter() - t0, ll

        pack = _factored_pack(phi, sub, REG)
        ks = np.array([r.k for r in pack.runs])
        state = (pack.weights.numpy().copy(), pack.means.numpy().copy(),
                 torch.cholesky_inverse(pack.chol).numpy().copy(),
                 torch.log(torch.diagonal(pack.chol, dim1=-2, dim2=-1)).sum(-1).numpy().copy())

        def compiled_pass():
            w, mu, prec, hld = (a.copy() for a in state)
            t0 = time.perf_counter()
            ll = em_pass(Xn, ks, w, mu, prec, hld, REG)
            return time.perf_counter() - t0, ll

        compiled_pass()
        tt, tc = [], []
        for _ in range(reps):
            t, ll_t = torch_pass()
            tt.append(t)
            t, ll_c = compiled_pass()
            tc.append(t)
        gap = float(np.abs(ll_t.numpy() - ll_c).max())
        rows.append((name, f"{Xn.shape[0]} x {Xn.shape[1]}", len(ks), int(ks.sum()),
                     statistics.median(tt) * 1e3, statistics.median(tc) * 1e3, gap))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=["diabetes", "faithful", "iris", "wine"])
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args(argv)
    try:
        em_pass = _kernel()
    except ImportError:
        print("numba is not installed: pip install numba")
        return 0
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    print("| data | n x d | runs | components | torch pass [ms] | compiled [ms] | ratio "
          "| max log-lik difference |")
    print("|---|---|---|---|---|---|---|---|")
    with torch.inference_mode():
        for name in args.data:
            for row in probe(name, em_pass, args.reps):
                print(f"| {row[0]} | {row[1]} | {row[2]} | {row[3]} | {row[4]:.3f} | "
                      f"{row[5]:.3f} | {row[4] / row[5]:.1f}x | {row[6]:.1e} |", flush=True)
    print(f"\nOne thread, medians of {args.reps} alternating repetitions; 'torch pass': the joint "
          "engine's coefficients, E-step and totals, M-step and factorisation of the runs; "
          "'compiled': the same iteration as one numba loop.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
