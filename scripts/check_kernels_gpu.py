"""Check the fast E-step path against the reference path on a device.

For many random shapes (D and K not multiples of 16, D = 1, K = 1, N not a
multiple of the chunk size, with and without sample weights) and every
covariance type, the per-pass statistics and the log-densities of the fast
path (:func:`gaussmix.em.accumulate`, the covariance strategies) are compared
with :mod:`gaussmix.kernels.reference` (one component at a time, centred
first), both in float32 on the device.  The relative error (max-abs error over
max-abs value, per output) must be below ``--tol`` (1e-5).  The error of
each float32 output against the float64 reference is printed alongside.

Usage::

    python scripts/check_kernels_gpu.py                 # CUDA (default)
    python scripts/check_kernels_gpu.py --device cpu    # the same checks on the CPU

Exits with status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import torch

from gaussmix.covariance import COVARIANCE_TYPES
from gaussmix.data import iter_chunks
from gaussmix.em import accumulate, moment_shift
from gaussmix.kernels import reference

FIELDS = ("nk", "s1", "s2", "log_likelihood", "weight", "count")
SHAPES = [
    # (N, D, K, rows per chunk)
    (1, 1, 1, 1),
    (1000, 1, 1, 300),
    (1000, 1, 7, 1000),
    (4097, 2, 3, 1024),
    (3001, 5, 17, 512),
    (5000, 17, 5, 999),
    (2048, 16, 16, 2048),
    (10_000, 33, 10, 4096),
    (7777, 64, 8, 2000),
    (4000, 3, 64, 1500),
    (20_000, 31, 1, 8191),
]


def relerr(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def check(device, tol, verbose):
    failures = 0
    worst = 0.0
    for (n, d, k, rows), kind, weighted in itertools.product(SHAPES, sorted(COVARIANCE_TYPES), (False, True)):
        gen = torch.Generator().manual_seed(n + 10 * d + 100 * k)
        p64 = reference.random_params(kind, k, d, gen)
        X64 = 2.0 * torch.randn(n, d, generator=gen, dtype=torch.float64) + 0.5
        w64 = torch.rand(n, generator=gen, dtype=torch.float64) + 0.1 if weighted else None
        X32 = X64.to(device=device, dtype=torch.float32)
        w32 = None if w64 is None else w64.to(device=device, dtype=torch.float32)
        p32 = p64.to(device=device, dtype=torch.float32)

        fast = accumulate(iter_chunks(X32, w32, rows), p32)
        at = moment_shift(p32)
        centres = None if at.dim() == 1 else at
        ref32 = reference.chunk_stats(X32, p32, w32, centres=centres)
        ref64 = reference.chunk_stats(X64, p64, w64, centres=None if centres is None else centres.double().cpu())
        shift = p32.shift
        lg_fast = p32.cov.log_gaussian(X32 - shift, p32.means - shift, p32.precisions_cholesky)
        lg_ref = reference.log_gaussian(kind, X32 - shift, p32.means - shift, p32.precisions_cholesky)

        errs = {f: relerr(getattr(fast, f), ref32[f]) for f in FIELDS}
        errs["log_gaussian"] = relerr(lg_fast, lg_ref)
        errs64 = {f: relerr(getattr(fast, f), ref64[f]) for f in FIELDS}
        bad = {f: e for f, e in errs.items() if not e <= tol}
        worst = max(worst, max(errs.values()))
        label = f"N={n} D={d} K={k} rows={rows} {kind:9s} weights={'yes' if weighted else 'no '}"
        if bad:
            failures += 1
            print(f"FAIL {label}: " + ", ".join(f"{f}={e:.2e}" for f, e in bad.items()))
        elif verbose:
            print(
                f"ok   {label}: max vs ref32 {max(errs.values()):.1e}, "
                f"vs ref64 {max(errs64.values()):.1e}"
            )
    return failures, worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available on this machine; run with --device cpu, or on a GPU machine.")
        return 2
    failures, worst = check(args.device, args.tol, not args.quiet)
    total = len(SHAPES) * len(COVARIANCE_TYPES) * 2
    print(f"{total - failures}/{total} checks passed on {args.device}; worst relative error {worst:.2e} "
          f"(tolerance {args.tol:g})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
