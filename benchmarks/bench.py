"""gaussmix and scikit-learn side by side: milliseconds per EM iteration.

Both libraries start from the same fixed initial parameters and run a fixed
number of EM iterations with ``tol=0``; the time per iteration excludes the
initialisation, which is timed separately (gaussmix's k-means init against
scikit-learn's).  The final mean log-likelihoods are compared, so a fast
wrong answer shows.  Achieved GFLOP/s use the flop model of each covariance
type against the matmul rate measured at the start.

Usage::

    python benchmarks/bench.py                 # CPU grid, writes docs/PERFORMANCE.md
    python benchmarks/bench.py --quick         # acceptance shapes only, 1 repetition
    python benchmarks/bench.py --device cuda --dtype float32   # GPU rows (no scikit-learn)
    python benchmarks/bench.py --clusters      # issue 13's table: separated and overlapping
                                               # clusters, float64 and float32, one run

With ``--clusters``, the peers of ``benchmarks/peers.py`` that are installed
(``pip install pomegranate gmmx torchgmm``; none is a dependency) are timed
in the same repetitions, in a second table.

Timings on a machine shared with other work are noisy: every number is the
best of ``--reps`` interleaved repetitions, and the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

# Waiting OpenMP threads sleep instead of spinning: on a machine with as many
# busy processes as cores, spinning threads steal the time slices their
# partners need (measured: 2-10x slower small ops).  Set before torch loads;
# --omp-wait active restores OpenMP's default.
_OMP_WAIT = "PASSIVE"
for _i, _a in enumerate(sys.argv):
    if _a == "--omp-wait" and _i + 1 < len(sys.argv):
        _OMP_WAIT = sys.argv[_i + 1].upper()
os.environ.setdefault("OMP_WAIT_POLICY", _OMP_WAIT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gaussmix.covariance import get_covariance_type  # noqa: E402
from gaussmix.chunk_workers import workers_for  # noqa: E402
from gaussmix.data import chunk_rows, iter_chunks  # noqa: E402
from gaussmix.em import run_em  # noqa: E402
from gaussmix.expectation import float64_passes  # noqa: E402
from gaussmix.feature_cache import FeatureCache, keeps_features  # noqa: E402
from gaussmix.init import initial_params  # noqa: E402
from gaussmix.params import GMMParams  # noqa: E402
from gaussmix.threads import threads_for, torch_threads  # noqa: E402
from peers import OWN_START, PEERS, TIMERS, installed_peers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "PERFORMANCE.md")

# (N, D, K, covariance types, EM iterations timed)
CPU_GRID = [
    (10_000, 2, 3, ("full", "tied", "diag", "spherical"), 20),
    (100_000, 16, 16, ("full", "tied", "diag", "spherical"), 3),
    (100_000, 64, 8, ("full", "diag"), 2),
    (1_000_000, 8, 4, ("full",), 2),
]
CPU_QUICK = [
    (10_000, 2, 3, ("full",), 10),
    (100_000, 16, 16, ("full",), 2),
    (100_000, 64, 8, ("full",), 1),
]
GPU_GRID = [
    (100_000, 16, 16, ("full",), 20),
    (1_000_000, 32, 32, ("full",), 10),
    (4_000_000, 64, 64, ("full",), 5),
]


def flops_per_iter(kind: str, n: int, d: int, k: int) -> float:
    """Multiply-adds x 2 of the GEMMs of one EM iteration (the flop model)."""
    if kind == "full":
        # E: (B, D) @ (D, K*D); M: second moments (D, B) @ (B, K*D) and s1 (K, B) @ (B, D).
        return 2.0 * n * k * d * d * 2 + 2.0 * n * k * d
    if kind == "tied":
        # E: x @ U (D^2) and the cross term (D K); M: (D, B) @ (B, D) and s1.
        return 2.0 * n * (d * d + d * k) + 2.0 * n * (d * d + k * d)
    if kind == "diag":
        # E: [x*x, x] (B, 2D) @ (2D, K); M: resp^T @ [x, x*x].
        return 2.0 * n * 2 * d * k * 2
    # spherical: E: (B, D+1) @ (D+1, K); M: resp^T @ [x, x*x].
    return 2.0 * n * (d + 1) * k + 2.0 * n * 2 * d * k


def min_bytes_per_iter(n: int, d: int, itemsize: int) -> float:
    """Least memory traffic of one iteration: the data read once."""
    return float(n * d * itemsize)


def matmul_gflops(dtype, device, size=2048, reps=3) -> float:
    """Measured dense matmul rate, best of ``reps``."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    best = float("inf")
    for _ in range(reps + 1):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2.0 * size**3 / best / 1e9


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def make_data(n, d, k, seed=0):
    """K well-separated Gaussian blobs with random covariances."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(k, d))
    labels = rng.integers(0, k, size=n)
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    return centers[labels] + rng.normal(size=(n, d)) * scales[labels]


def fixed_init(X, k, kind, seed=0):
    """Initial parameters both libraries start from: means at random rows,
    unit-scale covariances, equal weights."""
    rng = np.random.default_rng(seed + 1)
    n, d = X.shape
    means = X[rng.choice(n, size=k, replace=False)]
    var = X.var(0).mean()
    weights = np.full(k, 1.0 / k)
    if kind == "full":
        precisions = np.broadcast_to(np.eye(d) / var, (k, d, d)).copy()
    elif kind == "tied":
        precisions = np.eye(d) / var
    elif kind == "diag":
        precisions = np.full((k, d), 1.0 / var)
    else:
        precisions = np.full(k, 1.0 / var)
    return weights, means, precisions


def time_sklearn(X, k, kind, init, n_iter, threads):
    """Seconds per iteration of scikit-learn's EM loop body (E-step + M-step)."""
    from sklearn.mixture import GaussianMixture as SK
    from threadpoolctl import threadpool_limits

    weights, means, precisions = init
    with threadpool_limits(limits=threads):
        gm = SK(k, covariance_type=kind, weights_init=weights, means_init=means,
                precisions_init=precisions, max_iter=1, tol=0.0)
        gm._initialize_parameters(X, np.random.RandomState(0))
        t = time.perf_counter()
        for _ in range(n_iter):
            lb, log_resp = gm._e_step(X)
            gm._m_step(X, log_resp)
        dt = (time.perf_counter() - t) / n_iter
        lb, _ = gm._e_step(X)
    return dt, float(lb)


def time_sklearn_init(X, k, kind, threads):
    from sklearn.mixture import GaussianMixture as SK
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        gm = SK(k, covariance_type=kind, max_iter=1)
        t = time.perf_counter()
        gm._initialize_parameters(X, np.random.RandomState(0))
        return time.perf_counter() - t


def time_gaussmix(Xt, k, kind, init, n_iter, warm=0):
    """Seconds per iteration of gaussmix's EM loop (run_em), and the mean
    log-likelihood after ``n_iter`` iterations; with ``warm``, those
    iterations are timed after ``warm`` untimed ones on the same chunks
    (the steady state: means settled, kept features built)."""
    weights, means, precisions = init
    dev, dtype = Xt.device, Xt.dtype
    cov = get_covariance_type(kind)
    p = GMMParams(
        torch.as_tensor(weights, dtype=torch.float64),
        torch.as_tensor(means, dtype=torch.float64),
        cov.precisions_cholesky_from_precisions(torch.as_tensor(precisions, dtype=torch.float64)),
        kind,
    ).to(device=dev, dtype=dtype)
    n, d = Xt.shape
    # As GaussianMixture.fit on in-memory data: features that a covariance
    # form builds from the data are built in the first timed iteration and
    # kept for the others (gaussmix.feature_cache).
    # As fit too, each pass deals its chunks out to worker threads on the
    # CPU (gaussmix.chunk_workers).
    centre = Xt.mean(0, dtype=torch.float64)
    kept = keeps_features(Xt, centre)
    workers = workers_for(n, dev)
    rows = chunk_rows(n, k, d, dev, dtype, covariance_type=kind, kept_features=kept,
                      workers=workers)

    def chunks():
        return iter_chunks(Xt, None, rows)

    if kept:
        chunks.feature_cache = FeatureCache(centre)
    chunks.workers = workers
    chunks.float64_passes = float64_passes(n, k, d, dtype, dev)
    if warm:
        p = run_em(chunks, p, reg_covar=1e-6, tol=0.0, max_iter=warm).params
    _sync(dev)
    t = time.perf_counter()
    res = run_em(chunks, p, reg_covar=1e-6, tol=0.0, max_iter=n_iter)
    _sync(dev)
    dt = (time.perf_counter() - t) / n_iter
    # One more pass gives the log-likelihood of the final parameters, as
    # scikit-learn's extra E-step above.
    final = run_em(chunks, res.params, reg_covar=1e-6, tol=0.0, max_iter=1)
    return dt, final.lower_bound


def time_whole_fits(X, k, kind, reps):
    """EM seconds (initialisation left out) of ``GaussianMixture(k,
    random_state=0).fit`` in float64 and in float32, alternating: medians
    of ``reps``, and the float64 fit's iteration count."""
    from gaussmix import GaussianMixture

    out = {np.float64: [], np.float32: []}
    data = {dtype: X.astype(dtype) for dtype in out}  # converted outside the timing
    n_iter = 0
    for _ in range(reps):
        for dtype in out:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                gm = GaussianMixture(k, covariance_type=kind, random_state=0).fit(data[dtype])
                out[dtype].append(time.perf_counter() - t - gm._init_time_)
            if dtype is np.float64:
                n_iter = gm.n_iter_
    return float(np.median(out[np.float64])), float(np.median(out[np.float32])), n_iter


def time_settled_pass(X, k, kind, reps):
    """Seconds of one EM pass (E-step and statistics) at parameters settled
    from a k-means start (5 float64 EM iterations of ``GaussianMixture``),
    float64 and float32, each after two untimed passes on the same chunks
    (kept features and owner groups built): medians of ``reps``."""
    from gaussmix import GaussianMixture
    from gaussmix.em import accumulate, moment_shift

    n, d = X.shape
    params = GaussianMixture(k, covariance_type=kind, random_state=0, max_iter=5,
                             tol=0.0).fit(X)._params.to(dtype=torch.float64)
    out = []
    for dtype in (torch.float64, torch.float32):
        Xt = torch.from_numpy(X).to(dtype)
        p = params.to(dtype=dtype)
        centre = Xt.mean(0, dtype=torch.float64)
        kept = keeps_features(Xt, centre)
        workers = workers_for(n, Xt.device)
        rows = chunk_rows(n, k, d, Xt.device, dtype, covariance_type=kind, kept_features=kept,
                          workers=workers)
        cache = FeatureCache(centre) if kept else None
        at = moment_shift(p)

        def one_pass():
            accumulate(iter_chunks(Xt, None, rows), p, at, cache=cache, workers=workers)

        one_pass()
        one_pass()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            one_pass()
            times.append(time.perf_counter() - t)
        out.append(float(np.median(times)))
    return out


def time_gaussmix_init(Xt, k, kind):
    gen = torch.Generator(device=Xt.device if Xt.device.type == "cuda" else "cpu").manual_seed(0)
    rows = chunk_rows(Xt.shape[0], k, Xt.shape[1], Xt.device, Xt.dtype, covariance_type=kind)
    _sync(Xt.device)
    t = time.perf_counter()
    initial_params(Xt, k, kind, "kmeans", 1e-6, gen, None, rows)
    _sync(Xt.device)
    return time.perf_counter() - t


def machine(device, threads) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [
        f"CPU: {cpu}, {os.cpu_count()} logical cores, {threads} threads used",
        f"torch {torch.__version__}",
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
    ]
    try:
        import sklearn

        parts.append(f"scikit-learn {sklearn.__version__}")
    except ImportError:
        pass
    if torch.device(device).type == "cuda":
        parts.append(f"GPU: {torch.cuda.get_device_name(device)}")
    try:
        parts.append("load average before: " + " ".join(f"{v:.1f}" for v in os.getloadavg()))
    except OSError:
        pass
    return "; ".join(parts)


def run(args) -> str:
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(args.threads)
    on_gpu = device.type == "cuda"
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but CUDA is not available here.")
    grid = GPU_GRID if on_gpu else (CPU_QUICK if args.quick else CPU_GRID)
    reps = 1 if args.quick else args.reps
    header = machine(device, args.threads)
    rate = matmul_gflops(dtype, device)
    lines = [
        f"Machine: {header}",
        f"Measured matmul rate ({args.dtype}, 2048^2, {device.type}): {rate:.1f} GFLOP/s",
        f"Per-iteration times are the best of {reps} interleaved repetition(s); "
        f"init excluded; dtype {args.dtype}; gaussmix with its thread rule (one torch "
        "thread up to 10 000 rows on the CPU, as GaussianMixture.fit).",
        "",
        "| N x D x K | type | GFLOP/iter | MB/iter (X once) | scikit-learn ms/iter | "
        "gaussmix ms/iter | speed-up | gaussmix GFLOP/s | % of matmul | "
        "init ms (sklearn / gaussmix) | final LL rel. diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for n, d, k, kinds, n_iter in grid:
        X = make_data(n, d, k)
        Xt = torch.from_numpy(X).to(device=device, dtype=dtype)
        for kind in kinds:
            init = fixed_init(X, k, kind)
            with_sk = (not on_gpu) and not args.no_sklearn
            sk_best = gm_best = float("inf")
            sk_lb = gm_lb = float("nan")
            for _ in range(reps):
                if with_sk:
                    t, sk_lb = time_sklearn(X, k, kind, init, n_iter, args.threads)
                    sk_best = min(sk_best, t)
                # As GaussianMixture.fit runs: the library's thread rule
                # (one torch thread on small data).
                with torch_threads(threads_for(n, device)):
                    t, gm_lb = time_gaussmix(Xt, k, kind, init, n_iter)
                gm_best = min(gm_best, t)
            with torch_threads(threads_for(n, device)):
                gm_init = time_gaussmix_init(Xt, k, kind)
            sk_init = time_sklearn_init(X, k, kind, args.threads) if with_sk else float("nan")
            if not with_sk:
                # Reference for the accuracy column: float64 from the same start.
                _, sk_lb = time_gaussmix(torch.from_numpy(X).to(device), k, kind, init, n_iter)
            fl = flops_per_iter(kind, n, d, k)
            gfs = fl / gm_best / 1e9
            row = (
                f"| {n:,} x {d} x {k} | {kind} | {fl / 1e9:.3g} | "
                f"{min_bytes_per_iter(n, d, Xt.element_size()) / 1e6:.3g} | "
                f"{sk_best * 1e3:.1f} | {gm_best * 1e3:.2f} | {sk_best / gm_best:.1f}x | "
                f"{gfs:.1f} | {100 * gfs / rate:.0f}% | "
                f"{f'{sk_init * 1e3:.0f}' if with_sk else '-'} / {gm_init * 1e3:.0f} | "
                f"{abs(gm_lb - sk_lb) / abs(sk_lb):.1e} |"
            )
            if not with_sk:
                row = row.replace(f"| {sk_best * 1e3:.1f} |", "| - |", 1).replace(
                    f"| {sk_best / gm_best:.1f}x |", "| - |", 1
                )
            lines.append(row)
            print(row, flush=True)
    return "\n".join(lines)


CLUSTER_SHAPE = (100_000, 16, 16)
# Centre spread of the two data sets: unit-variance clusters whose centres are
# drawn with this standard deviation (5: tens of standard deviations apart;
# 0.5: overlapping, every mean within a few of its standard deviations of the
# mixture mean, so float32 keeps the one-shift path).
CLUSTER_SPREADS = (("separated", 5.0), ("overlapping", 0.5))


def cluster_data(n, d, k, spread, seed=0):
    """Unit-variance Gaussian clusters with centres drawn with ``spread``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=spread, size=(k, d))
    return centres[rng.integers(0, k, size=n)] + rng.normal(size=(n, d))


def _params_after(Xt, k, kind, init, n_iter):
    """gaussmix's parameters after ``n_iter`` EM iterations from ``init``."""
    weights, means, precisions = init
    cov = get_covariance_type(kind)
    p = GMMParams(
        torch.as_tensor(weights, dtype=torch.float64), torch.as_tensor(means, dtype=torch.float64),
        cov.precisions_cholesky_from_precisions(torch.as_tensor(precisions, dtype=torch.float64)),
        kind,
    ).to(dtype=Xt.dtype)
    rows = chunk_rows(Xt.shape[0], k, Xt.shape[1], Xt.device, Xt.dtype, covariance_type=kind)
    return run_em(lambda: iter_chunks(Xt, None, rows), p, reg_covar=1e-6, tol=0.0,
                  max_iter=n_iter).params


#: Untimed EM iterations before the steady-state columns of ``--clusters``.
WARM_ITERATIONS = 10


def run_clusters(args) -> str:
    """Issue 13's table: ratios measured side by side in one run.

    For each data set and covariance type, every repetition times scikit-learn
    (float64), gaussmix float64 and gaussmix float32 one after the other from
    the same initial parameters; the ratios are of the medians.
    """
    torch.set_num_threads(args.threads)
    n, d, k = CLUSTER_SHAPE
    n_iter = 3
    reps = args.reps
    peers = installed_peers()
    header = machine("cpu", args.threads)
    lines = [
        f"Machine: {header}",
        f"{n:,} x {d} x {k}, {n_iter} EM iterations from the same fixed start, medians of {reps} "
        "interleaved repetitions; ratios only (a shared CPU: absolute times move with the load; "
        "the float64 ms are for reading the ratios). 'After' columns: the same "
        f"{n_iter} iterations timed after {WARM_ITERATIONS} untimed ones (means settled, "
        "kept features built). 'One pass settled from k-means': an E-step pass at the "
        "parameters of 5 EM iterations from GaussianMixture's k-means start, after two untimed "
        "passes (owner groups built for float32), medians of at least 5. 'Whole fits': "
        "GaussianMixture(16, random_state=0).fit in float64 and float32, the time without "
        "the initialisation, medians of the repetitions (the float64 fit's iteration count "
        "in brackets).",
        "Peers: " + (", ".join(peers) + " (float32, timed in the same repetitions: the "
                     "second table)" if peers else
                     f"none of {', '.join(PEERS)} is installed here"),
        "",
        f"| clusters | type | gaussmix float64 vs scikit-learn | gaussmix float32 vs float64 | "
        f"float32 vs float64 after {WARM_ITERATIONS} iterations | float64 ms/iter (from start / after) | "
        "float32 vs float64, one pass settled from k-means | "
        "float32 vs float64, whole fits from k-means (EM iterations) | "
        "float32 moments after the timed iterations | LL rel. diff float64 vs scikit-learn | float32 vs float64 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    from gaussmix.em import moment_shift

    peer_rows = []
    for label, spread in CLUSTER_SPREADS:
        X = cluster_data(n, d, k, spread)
        X64 = torch.from_numpy(X)
        X32 = X64.float()
        for kind in args.kinds.split(","):
            init = fixed_init(X, k, kind)
            sk, g64, g32, s64, s32 = [], [], [], [], []
            peer_t, peer_lb = {name: [] for name in peers}, {}
            for _ in range(reps):
                if not args.no_sklearn:
                    t, sk_lb = time_sklearn(X, k, kind, init, n_iter, args.threads)
                    sk.append(t)
                t, lb64 = time_gaussmix(X64, k, kind, init, n_iter)
                g64.append(t)
                t, lb32 = time_gaussmix(X32, k, kind, init, n_iter)
                g32.append(t)
                s64.append(time_gaussmix(X64, k, kind, init, n_iter, warm=WARM_ITERATIONS)[0])
                s32.append(time_gaussmix(X32, k, kind, init, n_iter, warm=WARM_ITERATIONS)[0])
                for name in peers:
                    got = TIMERS[name](X, k, kind, init, n_iter)
                    if got is not None:
                        peer_t[name].append(got[0])
                        peer_lb[name] = got[1]
            m64, m32 = float(np.median(g64)), float(np.median(g32))
            w64, w32 = float(np.median(s64)), float(np.median(s32))
            p64, p32 = time_settled_pass(X, k, kind, max(reps, 5))
            f64, f32, fit_iter = time_whole_fits(X, k, kind, reps)
            path = "per component" if moment_shift(_params_after(X32, k, kind, init, n_iter)).dim() == 2 \
                else "one shift"
            vs_sk = f"{float(np.median(sk)) / m64:.1f}x" if sk else "-"
            sk_diff = f"{abs(lb64 - sk_lb) / abs(sk_lb):.1e}" if sk else "-"
            row = (f"| {label} | {kind} | {vs_sk} | {m64 / m32:.2f}x | {w64 / w32:.2f}x | "
                   f"{m64 * 1e3:.0f} / {w64 * 1e3:.0f} | {p64 / p32:.2f}x | "
                   f"{f64 / f32:.2f}x ({fit_iter}) | {path} | "
                   f"{sk_diff} | {abs(lb32 - lb64) / abs(lb64):.1e} |")
            lines.append(row)
            print(row, flush=True)
            if peers:
                cells = []
                for name in peers:
                    if not peer_t[name]:
                        cells.append("-")
                        continue
                    t = float(np.median(peer_t[name]))
                    diff = abs(peer_lb[name] - lb64) / abs(lb64)
                    cells.append(f"{t * 1e3:.0f} ({t / m32:.1f}x; {diff:.0e}"
                                 f"{', own start' if name in OWN_START else ''})")
                peer_rows.append(f"| {label} | {kind} | {m32 * 1e3:.0f} | " + " | ".join(cells) + " |")
    if peers:
        extra = [
            "",
            f"Peers, float32, ms per EM iteration over the same {n_iter} iterations from the same "
            "start, in the same repetitions (medians); in brackets: the peer's time over "
            "gaussmix float32's, and its final log-likelihood's relative difference from "
            "gaussmix float64's ('own start': the peer takes the start's means only).",
            "",
            "| clusters | type | gaussmix float32 | " + " | ".join(peers) + " |",
            "|---|---|---|" + "---|" * len(peers),
        ] + peer_rows
        lines += extra
        print("\n".join(extra), flush=True)
    return "\n".join(lines)


def write_doc(table: str, section: str) -> None:
    begin, end = f"<!-- bench:{section}:begin -->", f"<!-- bench:{section}:end -->"
    block = f"{begin}\n{table}\n{end}"
    text = open(DOC).read() if os.path.exists(DOC) else "# Performance\n"
    if begin in text and end in text:
        a, b = text.index(begin), text.index(end) + len(end)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w") as f:
        f.write(text)
    print(f"\nwritten to {DOC} (section '{section}')")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="acceptance shapes only, one repetition")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=2, help="torch and BLAS threads (default 2)")
    ap.add_argument("--reps", type=int, default=2, help="repetitions; the best is kept")
    ap.add_argument("--no-sklearn", action="store_true", help="time gaussmix only")
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    ap.add_argument("--omp-wait", default="passive", help="OMP_WAIT_POLICY (passive or active)")
    ap.add_argument("--clusters", action="store_true",
                    help="issue 13's table: separated and overlapping clusters, float64 and "
                         "float32, against scikit-learn, in one run (writes section 'clusters')")
    ap.add_argument("--kinds", default="full,diag,spherical",
                    help="covariance types of --clusters (comma-separated)")
    args = ap.parse_args(argv)
    if args.clusters:
        args.reps = max(args.reps, 3)
        table = run_clusters(args)
        if not args.no_write:
            write_doc(table, "clusters")
        return
    table = run(args)
    if not args.no_write:
        section = f"{torch.device(args.device).type}-{args.dtype}" + ("-quick" if args.quick else "")
        write_doc(table, section)


if __name__ == "__main__":
    main()
