"""The ``gaussmix`` command line.

Sub-commands: ``demo``, ``fit``, ``predict``, ``score``, ``sample``, ``info``.
Exit status 0 on success, 2 on a usage or input error (one line on stderr
naming the file, line or column at fault, never a traceback), 1 on an
unexpected internal error.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
import warnings

import numpy as np

__all__ = ["main", "parse_components"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2

ALL_TYPES = ("full", "tied", "diag", "spherical")


class UsageError(Exception):
    """A problem with the command line or its inputs (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line instead of usage + exit."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ------------------------------------------------------------------ parsing
def parse_components(text: str) -> list[int]:
    """Numbers of components from ``"3"``, ``"1-8"`` or ``"1-4,6,8"``.

    Parameters
    ----------
    text : str

    Returns
    -------
    list of int
        Sorted, without repeats.

    Raises
    ------
    UsageError
        For anything else.
    """
    out: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise UsageError(
                f"-k/--n-components: {text!r} is not a number of components; use e.g. 3, 1-8 or 1-4,6"
            ) from None
        if a < 1 or b < a or b > 10_000:
            raise UsageError(
                f"-k/--n-components: {part!r} is not a valid range; use integers 1 <= low <= high"
            )
        out.update(range(a, b + 1))
    return sorted(out)


def _parse_types(values) -> list[str]:
    """scikit-learn's four by default; mclust's names in any case; 'all' is
    mclust's fourteen models."""
    if not values:
        return list(ALL_TYPES)
    from .covariance import MCLUST_MODELS  # imports torch: only when types are given

    names = {t.lower(): t for t in (*ALL_TYPES, *MCLUST_MODELS)}
    out = []
    for v in values:
        for t in v.split(","):
            t = t.strip().lower()
            if t == "all":
                out.extend(MCLUST_MODELS)
            elif t in names:
                out.append(names[t])
            else:
                raise UsageError(
                    f"--covariance-type: {t!r} is not one of {', '.join(ALL_TYPES)}, mclust's "
                    f"{', '.join(MCLUST_MODELS)}, or 'all' (mclust's fourteen)"
                )
    return list(dict.fromkeys(out))


def _add_data_args(p):
    p.add_argument("--columns", help="columns to use: header names or 1-based positions, comma separated")
    hdr = p.add_mutually_exclusive_group()
    hdr.add_argument("--header", dest="header", action="store_true", default=None,
                     help="the first row is a header (default: detected)")
    hdr.add_argument("--no-header", dest="header", action="store_false",
                     help="the first row is data")
    p.add_argument("--delimiter", help="field separator of a text file (default: detected)")


def _build_parser() -> _Parser:
    from . import __version__

    parser = _Parser(
        prog="gaussmix",
        description="Gaussian mixture models fitted by EM on PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"gaussmix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="fit built-in data with known structure; print the table; write plots",
                       description="Draw a built-in data set (3 full-covariance components), choose the "
                       "model by BIC, print the table and the chosen model, and write the data, the "
                       "model and the plots to --out.")
    p.add_argument("--out", default="gaussmix-demo", help="output folder (default: gaussmix-demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the fits (default: 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cpu)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("fit", help="choose and fit a mixture on a data file",
                       description="Fit mixtures over a grid of K and covariance types, pick one by "
                       "BIC/AIC/ICL, print the table; DATA is CSV/TSV text, .npy or Parquet.")
    p.add_argument("data", metavar="DATA")
    _add_data_args(p)
    p.add_argument("-k", "--n-components", default="1-8",
                   help="K or a K range: 3, 1-8, 1-4,6 (default: 1-8)")
    p.add_argument("-t", "--covariance-type", action="append",
                   help="full, tied, diag, spherical, mclust's model names (EII ... VVV) or all "
                        "(mclust's fourteen); repeat or comma-separate (default: the first four)")
    p.add_argument("--criterion", choices=("bic", "aic", "icl"), default="bic")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cpu)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--starts", choices=("search", "estimator"), default="search",
                   help="search: hierarchical, k-means, random and split starts per candidate, "
                   "mclust's stopping rule, regularisation relative to each feature's variance; "
                   "estimator: one scikit-learn-style k-means start per candidate (default: search)")
    p.add_argument("--n-init", type=int, default=None,
                   help="initialisations per candidate, --starts estimator only (default: 1)")
    p.add_argument("--max-iter", type=int, default=None,
                   help="EM iterations per fit (default: 1000 with search, 100 with estimator)")
    p.add_argument("--tol", type=float, default=None,
                   help="convergence tolerance (default: 1e-5 relative change of the total "
                   "log-likelihood with search; 1e-3 change of the mean with estimator)")
    p.add_argument("--reg-covar", type=float, default=None,
                   help="covariance regularisation (default: 1e-8 of each feature's variance with "
                   "search; 1e-6 absolute with estimator)")
    p.add_argument("--degenerate", choices=("reseed", "exclude", "flag"), default="reseed",
                   help="what to do with fits whose components collapse (default: reseed)")
    p.add_argument("-o", "--output", metavar="MODEL", help="write the chosen model to this file (.npz)")
    p.add_argument("--plots", metavar="DIR", help="write criterion.png and clusters.png to DIR")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="show progress on stderr (default: when stderr is a terminal)")
    prog.add_argument("-q", "--quiet", dest="progress", action="store_false", help="no progress")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("predict", help="cluster labels (and probabilities) of data under a model")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("data", metavar="DATA")
    _add_data_args(p)
    p.add_argument("--proba", action="store_true", help="also write each component's probability")
    p.add_argument("-o", "--output", help="CSV file to write (default: stdout)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("score", help="log-likelihood, BIC and AIC of data under a model")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("data", metavar="DATA")
    _add_data_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("sample", help="draw samples from a model")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("-n", "--n-samples", required=True,
                   help="number of samples (written in blocks, so any number fits in memory)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("-o", "--output", help="CSV file to write (default: stdout)")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("info", help="describe a model file")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)
    return parser


# ------------------------------------------------------------------ helpers
def _fmt(v, width=0, prec=6) -> str:
    if isinstance(v, bool):
        s = "yes" if v else "no"
    elif isinstance(v, float):
        s = "nan" if math.isnan(v) else f"{v:.{prec}g}"
    else:
        s = str(v)
    return s.rjust(width) if width else s


def format_table(results: dict, criterion: str) -> str:
    """The model-selection table as fixed-width text (chosen row starred)."""
    cols = [
        ("", None), ("K", "n_components"), ("type", "covariance_type"),
        ("log-lik", "log_likelihood"), ("params", "n_parameters"), ("BIC", "bic"),
        ("AIC", "aic"), ("ICL", "icl"), ("conv", "converged"), ("iter", "n_iter"),
        ("time[s]", "fit_time"), ("start", "start"), ("guard", "guard"),
    ]
    cols = [(h, key) for h, key in cols if key is None or key in results]
    n = len(results["n_components"])
    cells = []
    for i in range(n):
        row = []
        for head, key in cols:
            if key is None:
                row.append("*" if results["selected"][i] else "")
            elif key == "fit_time":
                row.append(f"{results[key][i]:.2f}")
            elif key in ("log_likelihood", "bic", "aic", "icl"):
                v = results[key][i]
                row.append("nan" if not math.isfinite(v) else f"{v:.1f}")
            else:
                row.append(_fmt(results[key][i]))
        cells.append(row)
    widths = [max(len(h), *(len(r[j]) for r in cells)) for j, (h, _) in enumerate(cols)]
    lines = ["  ".join(h.rjust(w) for (h, _), w in zip(cols, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.append(f"(* = chosen: lowest {criterion.upper()} among admissible fits; lower is better)")
    return "\n".join(lines)


def _model_summary(model, names) -> str:
    p = model.params_
    w = p.weights.detach().double().cpu().numpy()
    m = p.means.detach().double().cpu().numpy()
    shown = list(range(min(p.n_features, 6)))
    head = ["component", "weight"] + [names[j] if names else f"x{j + 1}" for j in shown]
    if p.n_features > len(shown):
        head.append("...")
    rows = []
    for k in range(p.n_components):
        r = [str(k), f"{w[k]:.4f}"] + [f"{m[k, j]:.4g}" for j in shown]
        if p.n_features > len(shown):
            r.append("...")
        rows.append(r)
    widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(head)]
    lines = ["  ".join(h.rjust(wd) for h, wd in zip(head, widths))]
    lines += ["  ".join(c.rjust(wd) for c, wd in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "tolist"):
        return _jsonable(v.tolist())
    return v


def _warn_line(msg: str) -> None:
    print(f"gaussmix: warning: {msg}", file=sys.stderr)


def _report_warnings(caught) -> None:
    from .selection import DegenerateFitWarning

    seen = set()
    for w in caught:
        if issubclass(w.category, DegenerateFitWarning):
            text = str(w.message).split(":")[0] + "; see the guard column"
        else:
            text = " ".join(str(w.message).split())
        if text not in seen:
            seen.add(text)
            _warn_line(text)


def _read(args, path, prefer=None):
    from .io import read_data

    delimiter = args.delimiter
    if delimiter in ("\\t", "tab"):
        delimiter = "\t"
    if delimiter is not None and len(delimiter) != 1:
        raise UsageError(
            f"--delimiter must be a single character such as ',' ';' or '\\t' (tab), got {delimiter!r}"
        )
    return read_data(path, columns=args.columns, header=args.header, delimiter=delimiter,
                     prefer=prefer)


def _load_model(path):
    from .io import load, read_metadata

    meta = read_metadata(path)
    return load(path), meta


def _model_data(args, model, meta):
    """The data file's columns for the model: its features by name when the
    header has them all, else every (or every --columns) column."""
    X, names = _read(args, args.data, prefer=meta.get("feature_names"))
    d = model.n_features_in_
    model_names = meta.get("feature_names")
    if X.shape[1] != d:
        expect = f" ({', '.join(model_names)})" if model_names else ""
        raise UsageError(
            f"{args.data}: {X.shape[1]} column(s) but the model expects {d} feature(s){expect}; "
            f"choose them with --columns"
        )
    return X.astype("float32") if meta["dtype"] == "float32" else X


def _write_csv(path, header, rows) -> None:
    """Write CSV rows (lists of strings) to ``path``, or stdout when None."""
    fh = sys.stdout if path is None else open(path, "w", newline="", encoding="utf-8")
    try:
        # A real CSV writer: fields holding commas, quotes or newlines are
        # quoted, so every file written here reads back (gaussmix, pandas).
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    finally:
        if path is not None:
            fh.close()


def _num(v: float) -> str:
    return repr(float(v))


def _make_plots(sel, model, X, out_dir) -> list[str]:
    """Write criterion.png and clusters.png; a hint instead when matplotlib is missing."""
    try:
        from .plotting import plot_clusters, plot_criterion
        import matplotlib  # noqa: F401
    except ImportError:
        _warn_line("plots skipped: matplotlib is not installed; pip install 'gaussmix[plot]'")
        return []
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, "criterion.png"), os.path.join(out_dir, "clusters.png")]
    plot_criterion(sel, path=paths[0])
    plot_clusters(model, X, path=paths[1])
    return paths


def _progress_callback(enabled: bool):
    if not enabled:
        return None
    tty = sys.stderr.isatty()
    start = time.perf_counter()

    def cb(i, n, row):
        done = i + 1
        bar = "#" * int(20 * done / n)
        msg = (f"[{bar:<20}] {done}/{n} candidates  K={row['n_components']} "
               f"{row['covariance_type']}  {time.perf_counter() - start:.1f}s")
        if tty:
            end = "\n" if done == n else ""
            print("\r" + msg.ljust(72), end=end, file=sys.stderr, flush=True)
        else:
            print(msg, file=sys.stderr, flush=True)

    return cb


def _run_selection(X, ks, types, criterion, seed, device, progress, **kw):
    from .selection import select_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sel = select_model(
            X, n_components=ks, covariance_types=types, criterion=criterion,
            random_state=seed, device=device, callback=_progress_callback(progress), **kw,
        )
    return sel, caught


# ----------------------------------------------------------------- commands
def _cmd_fit(args) -> int:
    from ._validation import resolve_device
    from .io import save_model

    # Cheap checks of the options first, then the (possibly large) data.
    ks = parse_components(args.n_components)
    types = _parse_types(args.covariance_type)
    if args.n_init is not None and args.n_init < 1:
        raise UsageError("--n-init must be an integer >= 1")
    if args.n_init is not None and args.starts == "search":
        raise UsageError("--n-init applies to --starts estimator; the search runs its own starts")
    if args.max_iter is not None and args.max_iter < 0:
        raise UsageError("--max-iter must be an integer >= 0")
    for name in ("tol", "reg_covar"):
        v = getattr(args, name)
        if v is not None and not (v >= 0 and math.isfinite(v)):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")
    resolve_device(args.device)
    _check_output(args, args.data)
    X, names = _read(args, args.data)
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    try:
        sel, caught = _run_selection(
            X, ks, types, args.criterion, args.seed, args.device, progress,
            degenerate=args.degenerate, dtype=args.dtype, starts=args.starts,
            **{name: getattr(args, name) for name in ("n_init", "max_iter", "tol", "reg_covar")
               if getattr(args, name) is not None},
        )
    except ValueError as exc:
        raise UsageError(f"{args.data}: {exc}") from None
    _report_warnings(caught)
    model = sel.best_estimator_
    if args.output:
        save_model(model, args.output, feature_names=names)
    plots = _make_plots(sel, model, X, args.plots) if args.plots else []
    if args.json:
        p = model.params_
        out = {
            "data": args.data,
            "n_samples": int(X.shape[0]),
            "features": names,
            "criterion": args.criterion,
            "best_params": sel.best_params_,
            "best_index": sel.best_index_,
            "results": sel.results_,
            "model": {
                "weights": p.weights.detach().double().cpu().numpy(),
                "means": p.means.detach().double().cpu().numpy(),
                "converged": model.converged_,
                "n_iter": model.n_iter_,
            },
            "output": args.output,
            "plots": plots,
        }
        print(json.dumps(_jsonable(out), indent=2))
        return EXIT_OK
    print(f"{args.data}: {X.shape[0]} samples x {X.shape[1]} features ({', '.join(names[:8])}"
          f"{', ...' if len(names) > 8 else ''})")
    print(format_table(sel.results_, args.criterion))
    b = sel.best_params_
    print(f"\nChosen: K={b['n_components']}, covariance_type={b['covariance_type']}")
    print(_model_summary(model, names))
    if args.output:
        print(f"model written to {args.output}")
    for path in plots:
        print(f"plot written to {path}")
    return EXIT_OK


def _cmd_demo(args) -> int:
    from ._demo import DEMO_TRUTH, make_demo_data
    from .io import save_model

    X, truth = make_demo_data(random_state=args.seed)
    os.makedirs(args.out, exist_ok=True)
    print(f"Demo data: {X.shape[0]} points in 2-D drawn from {DEMO_TRUTH['n_components']} Gaussian "
          f"components with {DEMO_TRUTH['covariance_type']} (rotated, unequal) covariances.")
    print("Choosing K in 1..6 and the covariance type by BIC (24 candidate fits)...\n")
    sel, caught = _run_selection(
        X, list(range(1, 7)), list(ALL_TYPES), "bic", args.seed, args.device,
        sys.stderr.isatty(),
    )
    _report_warnings(caught)
    print(format_table(sel.results_, "bic"))
    model = sel.best_estimator_
    b = sel.best_params_
    print(f"\nChosen: K={b['n_components']}, covariance_type={b['covariance_type']}  "
          f"(truth: K={DEMO_TRUTH['n_components']}, {DEMO_TRUTH['covariance_type']})")
    print(_model_summary(model, ["x1", "x2"]))
    from sklearn.metrics import adjusted_rand_score

    ari = adjusted_rand_score(truth, model.predict(X))
    print(f"Agreement with the true labels (adjusted Rand index, 1 = perfect): {ari:.3f}")
    data_path = os.path.join(args.out, "data.csv")
    _write_csv(data_path, ["x1", "x2"], ([_num(a), _num(b)] for a, b in X))
    model_path = os.path.join(args.out, "model.npz")
    save_model(model, model_path, feature_names=["x1", "x2"])
    written = [data_path, model_path] + _make_plots(sel, model, X, args.out)
    print("\nWrote: " + ", ".join(written))
    print(f"Next: gaussmix fit {data_path} -k 1-6   |   gaussmix predict {model_path} {data_path}")
    return EXIT_OK


def _cmd_predict(args) -> int:
    _check_output(args, args.model, args.data)
    model, meta = _load_model(args.model)
    Xm = _model_data(args, model, meta)
    try:
        labels = model.predict(Xm)
        proba = model.predict_proba(Xm) if args.proba else None
    except ValueError as exc:
        raise UsageError(f"{args.data}: {exc}") from None
    header = ["label"] + ([f"prob_{k}" for k in range(model.n_components)] if args.proba else [])
    if proba is None:
        rows = ([str(int(v))] for v in labels)
    else:
        rows = ([str(int(v))] + [_num(x) for x in p] for v, p in zip(labels, proba))
    _write_csv(args.output, header, rows)
    return EXIT_OK


def _cmd_score(args) -> int:
    from .selection import information_criteria

    model, meta = _load_model(args.model)
    Xm = _model_data(args, model, meta)
    try:
        crit = information_criteria(model, Xm)
    except ValueError as exc:
        raise UsageError(f"{args.data}: {exc}") from None
    n = Xm.shape[0]
    out = {
        "n_samples": n,
        "mean_log_likelihood": crit["log_likelihood"] / n,
        "log_likelihood": crit["log_likelihood"],
        "bic": crit["bic"],
        "aic": crit["aic"],
        "icl": crit["icl"],
    }
    if args.json:
        print(json.dumps(_jsonable(out), indent=2))
    else:
        for k, v in out.items():
            print(f"{k:>20}: {_fmt(v, prec=10)}")
    return EXIT_OK


#: Rows drawn per block by ``gaussmix sample``: memory stays bounded for any -n.
SAMPLE_BLOCK = 100_000
#: More rows than any disk holds as CSV (about 20 bytes per value).
MAX_SAMPLES = 10 ** 12


def _sample_count(text: str) -> int:
    """``-n``: an integer, also written as 1e6; at least 1."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"-n/--n-samples must be a whole number such as 1000 or 1e6, got {text!r}") from None
    if not math.isfinite(value) or value != int(value) or value < 1:
        raise UsageError(f"-n/--n-samples must be a whole number, at least 1; got {text!r}")
    if value > MAX_SAMPLES:
        raise UsageError(
            f"-n/--n-samples {text} is more than {MAX_SAMPLES:.0e} rows (about {value * 20 / 1e12:.3g} "
            f"TB of CSV per feature); ask for fewer samples"
        )
    return int(value)


def _cmd_sample(args) -> int:
    n = _sample_count(args.n_samples)
    _check_output(args, args.model)
    model, meta = _load_model(args.model)
    # One random stream for all blocks; the first block is what
    # model.sample(n) draws with random_state=seed.
    model.random_state = np.random.RandomState(args.seed)

    def rows():
        for start in range(0, n, SAMPLE_BLOCK):
            X, comp = model.sample(min(SAMPLE_BLOCK, n - start))
            for x, c in zip(X, comp):
                yield [_num(v) for v in x] + [str(int(c))]

    names = meta.get("feature_names") or [f"x{j + 1}" for j in range(model.n_features_in_)]
    _write_csv(args.output, list(names) + ["component"], rows())
    return EXIT_OK


def _check_output(args, *inputs) -> None:
    """Refuse an output path that is one of the command's input files."""
    out = getattr(args, "output", None)
    if not out or not os.path.exists(out):
        return
    for path in inputs:
        if path and os.path.exists(path) and os.path.samefile(out, path):
            raise UsageError(
                f"-o/--output {out} is the input file {path}; writing it would destroy the input. "
                f"Choose another output path"
            )


def _cmd_info(args) -> int:
    model, meta = _load_model(args.model)
    p = model.params_
    info = {
        "file": args.model,
        "format": f"{meta['format']} v{meta['format_version']}",
        "gaussmix_version": meta.get("gaussmix_version"),
        "estimator": type(model).__name__,
        "covariance_type": p.covariance_type,
        "n_components": p.n_components,
        "n_features": p.n_features,
        "n_parameters": p.n_parameters(),
        "dtype": meta["dtype"],
        "feature_names": meta.get("feature_names"),
        "converged": model.converged_,
        "n_iter": model.n_iter_,
        "lower_bound": model.lower_bound_,
        **_posterior_info(model),
        "weights": p.weights.detach().double().cpu().numpy(),
        "means": p.means.detach().double().cpu().numpy(),
    }
    if "weight_concentration_prior_type" in info:
        # A variational mixture has no parameter count in the BIC sense.
        del info["n_parameters"]
    if args.json:
        print(json.dumps(_jsonable(info), indent=2))
        return EXIT_OK
    shown = [k for k in info if k not in ("weights", "means")]
    width = max(17, *map(len, shown))
    for k in shown:
        v = info[k]
        if isinstance(v, list):
            v = ", ".join(v)
        print(f"{k:>{width}}: {_fmt(v)}")
    print(_model_summary(model, meta.get("feature_names")))
    return EXIT_OK


def _posterior_info(model) -> dict:
    """What ``info`` adds for a variational mixture: its priors and how many
    components it uses (the rest are switched off by the prior)."""
    from .bayesian import BayesianGaussianMixture

    if not isinstance(model, BayesianGaussianMixture):
        return {}
    weights = np.asarray(model.weights_, dtype=np.float64)
    return {
        "weight_concentration_prior_type": model.weight_concentration_prior_type,
        "components_above_1%": int((weights > 0.01).sum()),
        "weight_concentration_prior": model.weight_concentration_prior_,
        "mean_precision_prior": model.mean_precision_prior_,
        "degrees_of_freedom_prior": model.degrees_of_freedom_prior_,
    }


# --------------------------------------------------------------------- main
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, FileNotFoundError) and getattr(exc, "filename", None):
        text = f"{exc.filename}: no such file or directory"
    elif isinstance(exc, OSError) and getattr(exc, "filename", None):
        text = f"{exc.filename}: {exc.strerror or text}"
    return text or type(exc).__name__


def main(argv=None) -> int:
    """Run the command line; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on a usage or input error, 1 on an internal error.
    """
    cmd = "gaussmix"
    try:
        parser = _build_parser()
        args = parser.parse_args(argv)
        cmd = f"gaussmix {args.command}"
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except (UsageError, ValueError, OSError, ImportError) as exc:
        print(f"{cmd}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{cmd}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        print(f"{cmd}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              f"(please report it with the command line)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
