"""Check the estimators end to end on a device against the same fits on the CPU.

``scripts/check_kernels_gpu.py`` checks one pass's statistics; this script
checks whole fits.  The random stream of ``random_state`` is the device's own
generator (docs/DESIGN.md, "Initialisation"), so k-means starts differ between
the CPU and CUDA; the exact comparisons therefore start from the deterministic
hierarchical partition (``init_params="hc"``), computed on each device.

- Exact: each estimator is fitted on the CPU in float64 (the reference) and on
  ``--device`` in float64.  Both must end at the same mixture: the same number
  of iterations, per-sample mean log-likelihood within ``--tol64`` (1e-9
  relative) and the same labels.  The same fit in float32 on the device must
  reach the reference log-likelihood within ``--tol32`` (1e-4 relative).
  Cases: the four scikit-learn covariance types (in memory and out of core,
  ``batch_size``), mclust's fourteen models, the variational estimator.
- k-means starts: float64 and float32 on the device from the same
  ``random_state`` (the same stream) must reach the same log-likelihood
  within ``--tol32``.
- ``select_model`` on the device and on the CPU must choose the same model;
  cells whose criteria differ (other k-means starts) are counted and shown.

Usage::

    python scripts/check_estimators_gpu.py                 # CUDA (default)
    python scripts/check_estimators_gpu.py --device cpu    # the same checks, CPU against CPU

Exits with status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_iris, load_wine

from gaussmix import BayesianGaussianMixture, GaussianMixture, select_model

MCLUST_MODELS = ("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE", "EVE", "VVE",
                 "EEV", "VEV", "EVV", "VVV")


def blobs(n, d, k, seed=0):
    """K separated clusters with random per-feature scales."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(k, d))
    labels = rng.integers(0, k, size=n)
    return centres[labels] + rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, size=(k, d))[labels]


def fits(device):
    """(name, X, estimator factory) for every case."""
    iris = load_iris().data
    wine = load_wine().data
    small = blobs(2000, 8, 5)  # hc_subset covers every row: the start is deterministic
    for kind in ("full", "tied", "diag", "spherical"):
        yield f"GaussianMixture {kind} K=3 wine", wine, lambda dev, dt, kind=kind: GaussianMixture(
            3, covariance_type=kind, init_params="hc", device=dev, dtype=dt)
        yield f"GaussianMixture {kind} K=5 2000x8", small, lambda dev, dt, kind=kind: GaussianMixture(
            5, covariance_type=kind, init_params="hc", device=dev, dtype=dt)
        yield (f"GaussianMixture {kind} K=5 2000x8 batch_size=300", small,
               lambda dev, dt, kind=kind: GaussianMixture(
                   5, covariance_type=kind, init_params="hc", device=dev, dtype=dt, batch_size=300))
    for model in MCLUST_MODELS:
        yield f"GaussianMixture {model} K=3 iris", iris, lambda dev, dt, model=model: GaussianMixture(
            3, covariance_type=model, init_params="hc", device=dev, dtype=dt)
    for kind in ("full", "diag"):
        yield f"BayesianGaussianMixture {kind} K=4 wine", wine, lambda dev, dt, kind=kind: (
            BayesianGaussianMixture(n_components=4, covariance_type=kind, init_params="hc",
                                    max_iter=200, device=dev, dtype=dt))


def mean_ll(est, X):
    return float(np.mean(est.score_samples(X)))


def check(device, tol64, tol32):
    failures = 0
    print(f"device {device}: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    print("| case | n_iter cpu/dev64/dev32 | mean LL cpu float64 | rel. diff dev float64 | "
          "rel. diff dev float32 | labels equal (float64) | s cpu / dev64 |")
    print("|---|---|---|---|---|---|---|")
    for name, X, make in fits(device):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            ref = make("cpu", torch.float64).fit(X)
            t_cpu = time.perf_counter() - t
            t = time.perf_counter()
            d64 = make(device, torch.float64).fit(X)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t_dev = time.perf_counter() - t
            d32 = make(device, torch.float32).fit(X)
        ll, ll64, ll32 = mean_ll(ref, X), mean_ll(d64, X), mean_ll(d32, X)
        e64 = abs(ll64 - ll) / abs(ll)
        e32 = abs(ll32 - ll) / abs(ll)
        same = bool(np.array_equal(ref.predict(X), d64.predict(X)))
        ok = e64 <= tol64 and e32 <= tol32 and same and ref.n_iter_ == d64.n_iter_
        failures += not ok
        print(f"| {name} | {ref.n_iter_}/{d64.n_iter_}/{d32.n_iter_} | {ll:.6f} | {e64:.1e} | "
              f"{e32:.1e} | {same} | {t_cpu:.2f} / {t_dev:.2f} |{'' if ok else ' FAIL'}", flush=True)
    big = blobs(20_000, 8, 5)
    for data_name, X, kind in (("wine", load_wine().data, "full"), ("20000x8", big, "full"),
                               ("20000x8", big, "diag")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = GaussianMixture(5, covariance_type=kind, random_state=0, device=device,
                                dtype=torch.float64).fit(X)
            b = GaussianMixture(5, covariance_type=kind, random_state=0, device=device,
                                dtype=torch.float32).fit(X)
        e = abs(mean_ll(a, X) - mean_ll(b, X)) / abs(mean_ll(a, X))
        ok = e <= tol32
        failures += not ok
        print(f"k-means start, {kind} K=5 {data_name}: device float32 against float64 rel. diff "
              f"{e:.1e}{'' if ok else ' FAIL'}", flush=True)
    for data_name, X in (("iris", load_iris().data), ("wine", load_wine().data)):
        types = "all" if data_name == "iris" else ("full", "tied", "diag", "spherical")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = time.perf_counter()
            ref = select_model(X, covariance_types=types, random_state=0, device="cpu")
            t_cpu = time.perf_counter() - t
            t = time.perf_counter()
            dev = select_model(X, covariance_types=types, random_state=0, device=device)
            t_dev = time.perf_counter() - t
        a = np.asarray(ref.results_["bic"], dtype=float)
        b = np.asarray(dev.results_["bic"], dtype=float)
        both = np.isfinite(a) & np.isfinite(b)
        differ = int(np.sum(np.abs(a - b)[both] > 1e-6 * np.abs(a[both])))
        ok = ref.best_params_ == dev.best_params_
        failures += not ok
        print(f"select_model {data_name}: cpu {ref.best_params_} ({t_cpu:.1f} s), device "
              f"{dev.best_params_} ({t_dev:.1f} s); {differ} of {len(a)} cells' BIC differ, "
              f"{int(np.sum(np.isfinite(a) != np.isfinite(b)))} kept on one side only"
              f"{'' if ok else ' FAIL'}", flush=True)
    return failures


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tol64", type=float, default=1e-9)
    ap.add_argument("--tol32", type=float, default=1e-4)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but CUDA is not available here.")
    failures = check(device, args.tol64, args.tol32)
    print("all checks passed" if not failures else f"{failures} check(s) FAILED")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
