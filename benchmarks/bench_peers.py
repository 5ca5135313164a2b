"""gaussmix and the other mixture libraries, float32 `full`, from small to large data.

For each shape, gaussmix and every installed peer (``benchmarks/peers.py``:
pomegranate, gmmx, torchgmm) run the same EM iterations from the same start
(``bench.fixed_init``) on the same data (``bench.make_data``), alternating,
twice; the best time per iteration of each is kept.  gaussmix runs its EM loop
as ``GaussianMixture.fit`` does, with the library's thread rule (one torch
thread up to 10 000 samples on the CPU).  Prints a table and writes it to
docs/PERFORMANCE.md (section ``peers-<device>``).

Usage::

    pip install pomegranate gmmx torchgmm      # in an environment of its own
    python benchmarks/bench_peers.py                   # CPU shapes
    python benchmarks/bench_peers.py --device cuda     # GPU shapes
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from peers import OWN_START, PEERS, TIMERS, installed_peers  # noqa: E402

from gaussmix.threads import threads_for, torch_threads  # noqa: E402

#: (N, D, K, EM iterations timed)
CPU_SHAPES = [(1_000, 5, 3, 20), (10_000, 2, 3, 20), (20_000, 8, 4, 10), (100_000, 8, 4, 5),
              (100_000, 16, 16, 3)]
GPU_SHAPES = [(100_000, 16, 16, 10), (1_000_000, 32, 32, 5)]


def run(device: str, threads: int) -> str:
    """Time gaussmix and the installed peers; the table as markdown.

    Parameters
    ----------
    device : str
        "cpu" or "cuda".
    threads : int
        Torch threads for the large shapes (the library's rule picks one
        thread for the small ones).

    Returns
    -------
    str
    """
    torch.set_num_threads(threads)
    names = installed_peers()
    on_gpu = device.startswith("cuda")
    lines = [
        f"Machine: {bench.machine(device, threads)}",
        "float32, full covariances, ms per EM iteration from the same start, best of 2 "
        "alternating repetitions; in brackets the peer's time over gaussmix's and its final "
        "log-likelihood's relative difference from gaussmix's ('own start': the peer takes "
        "the start's means only). Peers: " + (", ".join(names) if names else
                                               f"none of {', '.join(PEERS)} installed"),
        "",
        "| N x D x K | gaussmix | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    print("\n".join(lines), flush=True)
    for n, d, k, n_iter in GPU_SHAPES if on_gpu else CPU_SHAPES:
        X = bench.make_data(n, d, k)
        init = bench.fixed_init(X, k, "full")
        Xt = torch.from_numpy(X).to(device=device, dtype=torch.float32)
        best, lls = {}, {}
        for _ in range(2):
            with torch_threads(threads_for(n, Xt.device)):
                t, lls["gaussmix"] = bench.time_gaussmix(Xt, k, "full", init, n_iter)
            best["gaussmix"] = min(t, best.get("gaussmix", t))
            for name in names:
                try:
                    got = TIMERS[name](X, k, "full", init, n_iter, device)
                except Exception as exc:  # a peer that fails at a shape is reported, not fatal
                    print(f"  {name} failed at {n:,} x {d} x {k}: {type(exc).__name__}: "
                          f"{str(exc)[:200]}", flush=True)
                    continue
                best[name] = min(got[0], best.get(name, got[0]))
                lls[name] = got[1]
        g = best["gaussmix"]
        cells = []
        for name in names:
            if name not in best:
                cells.append("failed")
                continue
            diff = abs(lls[name] - lls["gaussmix"]) / abs(lls["gaussmix"])
            cells.append(f"{best[name] * 1e3:.2f} ({best[name] / g:.1f}x; {diff:.0e}"
                         f"{', own start' if name in OWN_START else ''})")
        row = f"| {n:,} x {d} x {k} | {g * 1e3:.2f} | " + " | ".join(cells) + " |"
        lines.append(row)
        print(row, flush=True)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = ap.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = run(args.device, args.threads)
    if not args.no_write:
        bench.write_doc(table, f"peers-{torch.device(args.device).type}")


if __name__ == "__main__":
    main()
