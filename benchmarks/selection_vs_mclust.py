"""Model selection on real data, side by side with R mclust.

For every data set of ``tests/reference/mclust_reference.json`` (written by
``tests/reference/make_mclust_reference.R``), runs
``select_model(X, range(1, 10), ("full", "tied", "diag", "spherical"))`` and
compares it with mclust's ``Mclust(X, G = 1:9, modelNames = c("VVV", "EEE",
"VVI", "VII"))`` (the same four models):

* the chosen model's BIC against mclust's best (mclust's sign: higher is
  better; ours must be at least mclust's minus 0.5);
* per (type, K) cell that our degenerate-fit guard keeps, whether our
  log-likelihood reaches mclust's minus 0.1;
* the time of the whole grid.  With ``--with-r`` (and ``Rscript`` with mclust
  installed) mclust is timed in the same run, on the same CSV, right after
  ours; otherwise the times stored in the JSON (measured when it was
  generated, on the machine that generated it) are shown and marked so.

Writes the quality table into ``docs/SELECTION.md`` and the timing table
into ``docs/PERFORMANCE.md`` (between marker comments), and prints both.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/selection_vs_mclust.py [--with-r] [--repeat 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gaussmix import select_model  # noqa: E402

REFERENCE = ROOT / "tests" / "reference" / "mclust_reference.json"
MCLUST_NAME = {"full": "VVV", "tied": "EEE", "diag": "VVI", "spherical": "VII"}
TYPES = tuple(MCLUST_NAME)
KS = range(1, 10)
BIC_SLACK = 0.5
LL_SLACK = 0.1

R_TIMER = r"""
suppressMessages(library(mclust))
args <- commandArgs(trailingOnly = TRUE)
X <- as.matrix(read.csv(args[1]))
reps <- as.integer(args[2])
t <- vapply(seq_len(reps), function(i) system.time(
  Mclust(X, G = 1:9, modelNames = c("VVV", "EEE", "VVI", "VII"), verbose = FALSE))[["elapsed"]], 0)
cat(median(t), "\n")
"""


SYNTHETIC_SIZES = (400, 1000, 3000)


def synthetic(n: int) -> np.ndarray:
    """Six Gaussian clusters in 5-D with random covariances, fixed seed."""
    rng = np.random.default_rng(0)
    parts = []
    for k in range(6):
        a = rng.normal(size=(5, 5)) * 0.5
        parts.append(rng.normal(size=(n // 6 + (k < n % 6), 5)) @ a + rng.normal(0, 4, 5))
    return np.concatenate(parts)


def load_reference():
    with open(REFERENCE) as fh:
        return json.load(fh)


def load_data(entry) -> np.ndarray:
    return np.loadtxt(REFERENCE.parent / entry["csv"], delimiter=",", skiprows=1, ndmin=2)


#: The search restricted to mclust's own start: the hierarchical clustering
#: cut at each K, continued to convergence, no k-means starts and no splits.
#: Timed beside the default to show what the default's extra starts cost.
MCLUST_START_ONLY = {"n_kmeans": 0, "split": False, "n_keep": 0}


def run_ours(X, repeat: int, search_params: dict | None = None):
    times = []
    sel = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sel = select_model(X, KS, TYPES, random_state=0, search_params=search_params)
        times.append(time.perf_counter() - t0)
    return sel, statistics.median(times)


def side_by_side(X, csv_path, args):
    """Our selections (the default search and :data:`MCLUST_START_ONLY`) and
    their times, mclust's time and the ratios (mclust / ours), timed in
    ``args.rounds`` alternating rounds of ``args.repeat`` runs each (mclust
    only with ``args.with_r``): a load that drifts during the run then
    weighs on all sides.  Returns ``(selections, times, mclust time, ratios)``,
    the first two and the last keyed ``"default"`` and ``"start only"``."""
    variants = {"default": None, "start only": MCLUST_START_ONLY}
    ours = {v: [] for v in variants}
    ratios = {v: [] for v in variants}
    theirs = []
    sels = {}
    for _ in range(args.rounds if args.with_r else 1):
        times = {}
        for v, params in variants.items():
            sels[v], times[v] = run_ours(X, args.repeat, params)
            ours[v].append(times[v])
        t_r = time_mclust(csv_path, args.repeat) if args.with_r else None
        if t_r is not None:
            theirs.append(t_r)
            for v in variants:
                ratios[v].append(t_r / times[v])
    med = statistics.median
    return (sels, {v: med(t) for v, t in ours.items()}, med(theirs) if theirs else None,
            {v: (med(r) if r else None) for v, r in ratios.items()})


def compare(sel, entry) -> dict:
    """Acceptance numbers of one data set (mclust's BIC sign)."""
    r = sel.results_
    best_bic = -r["bic"][sel.best_index_]
    kept = reached = 0
    short, mclust_failed = [], []
    for t, k, ll, guard in zip(r["covariance_type"], r["n_components"], r["log_likelihood"],
                               r["guard"]):
        cell = entry["cells"][MCLUST_NAME[t]][k - 1]
        ref = cell["loglik"]
        if ref is None:
            mclust_failed.append(f"{MCLUST_NAME[t]},{k}")
            continue
        if guard == "excluded":
            continue
        kept += 1
        if ll >= ref - LL_SLACK:
            reached += 1
        else:
            short.append((MCLUST_NAME[t], k, ll - ref))
    return {
        "ours": (MCLUST_NAME[r["covariance_type"][sel.best_index_]],
                 r["n_components"][sel.best_index_], best_bic),
        "mclust": (entry["best"]["model"], entry["best"]["G"], entry["best"]["bic"]),
        "bic_ok": best_bic >= entry["best"]["bic"] - BIC_SLACK,
        "kept": kept, "reached": reached, "short": short, "mclust_failed": mclust_failed,
    }


def time_mclust(csv_path, repeat: int):
    if shutil.which("Rscript") is None:
        return None
    out = subprocess.run(["Rscript", "-e", R_TIMER, str(csv_path), str(repeat)],
                         capture_output=True, text=True, check=False)
    try:
        return float(out.stdout.split()[-1])
    except (IndexError, ValueError):
        return None


def replace_block(path: Path, tag: str, text: str) -> None:
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    body = path.read_text()
    block = f"{start}\n{text}\n{end}"
    if start in body:
        head, rest = body.split(start, 1)
        body = head + block + rest.split(end, 1)[1]
    else:
        body = body.rstrip() + "\n\n" + block + "\n"
    path.write_text(body)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--with-r", action="store_true", help="time mclust in the same run")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per data set (median)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternations of gaussmix and mclust per data set (with --with-r): "
                         "the ratio is the median of the rounds' ratios, robust to load drift")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    ref = load_reference()
    sets = ref["datasets"]
    select_model(np.random.default_rng(0).normal(size=(50, 2)), [1, 2], "diag", random_state=0)

    quality, timing = [], []
    total_kept = total_reached = 0
    for name, entry in sets.items():
        X = load_data(entry)
        sels, t_ours, t_r, ratio = side_by_side(X, REFERENCE.parent / entry["csv"], args)
        c = compare(sels["default"], entry)
        total_kept += c["kept"]
        total_reached += c["reached"]
        quality.append((name, entry, c))
        lean = compare(sels["start only"], entry)
        stored = (entry.get("timing") or {}).get("mclust_4_models", {}).get("median_s")
        timing.append((name, entry, t_ours, t_r, ratio, stored, lean))
        print(f"{name}: ours {c['ours']} vs mclust {c['mclust']}; cells {c['reached']}/{c['kept']} "
              f"(start only: {lean['reached']}/{lean['kept']}); {t_ours['default']:.3f} s "
              f"(start only {t_ours['start only']:.3f} s)"
              + (f" vs mclust {t_r:.3f} s" if t_r is not None else ""), flush=True)

    # Larger synthetic data (timing only): six well-separated 5-D clusters.
    for n in SYNTHETIC_SIZES:
        X = synthetic(n)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "synthetic.csv"
            np.savetxt(path, X, delimiter=",", header=",".join(f"x{j}" for j in range(5)),
                       comments="", fmt="%.17g")
            _, t_ours, t_r, ratio = side_by_side(X, path, args)
        timing.append((f"synthetic {n}", {"n": n, "d": X.shape[1]}, t_ours, t_r, ratio, None,
                       None))
        print(f"synthetic {n}: {t_ours['default']:.3f} s (start only "
              f"{t_ours['start only']:.3f} s)" + (f" vs mclust {t_r:.3f} s" if t_r else ""),
              flush=True)

    lines = [
        "| data set | n x d | mclust best (BIC) | gaussmix choice (BIC) | BIC >= mclust - 0.5 "
        "| cells reaching mclust's log-lik - 0.1 | cells short (gap) | mclust fails |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry, c in quality:
        m, o = c["mclust"], c["ours"]
        short = ", ".join(f"{t},{k} ({g:+.2f})" for t, k, g in c["short"]) or "-"
        lines.append(
            f"| {name} | {entry['n']} x {entry['d']} | {m[0]},{m[1]} ({m[2]:.2f}) | "
            f"{o[0]},{o[1]} ({o[2]:.2f}) | {'yes' if c['bic_ok'] else 'NO'} | "
            f"{c['reached']}/{c['kept']} | {short} | {len(c['mclust_failed'])} |")
    share = total_reached / max(total_kept, 1)
    lines.append("")
    lines.append(f"All data sets: {total_reached} of {total_kept} kept cells "
                 f"({100 * share:.1f}%) reach mclust's log-likelihood minus {LL_SLACK}; "
                 f"{sum(c['bic_ok'] for *_, c in quality)} of {len(quality)} choices are at least "
                 f"mclust's best BIC minus {BIC_SLACK}.  mclust {ref.get('mclust_version', '')}, "
                 f"gaussmix `select_model(X, range(1, 10), random_state=0)` with its defaults; "
                 f"torch {torch.__version__}.")
    quality_md = "\n".join(lines)

    rows = ["| data set | n x d | gaussmix [s] | mclust, same run [s] | ratio (mclust / gaussmix) "
            "| mclust, stored [s] | gaussmix, mclust's start only [s] | its ratio "
            "| its cells, choice |", "|---|---|---|---|---|---|---|---|---|"]

    def fmt(x, spec):
        return "-" if x is None else format(x, spec)

    for name, entry, t_o, t_r, ratio, stored, lean in timing:
        cells = "-" if lean is None else (f"{lean['reached']}/{lean['kept']}, "
                                          f"{'yes' if lean['bic_ok'] else 'NO'}")
        rows.append(f"| {name} | {entry['n']} x {entry['d']} | {t_o['default']:.3f} | "
                    f"{fmt(t_r, '.3f')} | {fmt(ratio['default'], '.2f')} | {fmt(stored, '.3f')} | "
                    f"{t_o['start only']:.3f} | {fmt(ratio['start only'], '.2f')} | {cells} |")
    rows.append("")
    rounds = f"median of {args.repeat} runs"
    if args.rounds > 1 and args.with_r:
        rounds = (f"{args.rounds} alternating rounds of {args.repeat} runs each (times: the "
                  f"median of the rounds' medians; ratio: the median of the rounds' ratios)")
    rows.append(f"K = 1..9, four covariance types (mclust: VVV, EEE, VVI, VII), {rounds}, "
                f"{torch.get_num_threads()} threads (the search itself runs on "
                f"one up to 10 000 samples), "
                f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}.  A ratio above 1 "
                f"means gaussmix is faster.  'mclust's start only': `search_params="
                f"{MCLUST_START_ONLY}` (the hierarchical start of each cell continued to "
                f"convergence, as mclust fits it), timed in the same rounds; its cells reach "
                f"mclust's log-likelihood minus {LL_SLACK} and its choice is at least mclust's "
                f"best BIC minus {BIC_SLACK} as counted for the default in SELECTION.md.  "
                f"'stored' is the time in "
                f"tests/reference/mclust_reference.json, from another run: compare only the "
                f"same-run columns.")
    timing_md = "\n".join(rows)
    print()
    print(quality_md)
    print()
    print(timing_md)
    if not args.no_write:
        replace_block(ROOT / "docs" / "SELECTION.md", "mclust-comparison", quality_md)
        replace_block(ROOT / "docs" / "PERFORMANCE.md", "selection-timing", timing_md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
