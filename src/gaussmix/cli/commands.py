"""The sub-commands of the command line: ``fit``, ``demo``, ``predict``,
``score``, ``sample`` and ``info``."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings

import numpy as np

from .output import (
    _fmt,
    _jsonable,
    _make_plots,
    _model_summary,
    _num,
    _progress_callback,
    _report_warnings,
    _write_csv,
    format_table,
)
from .parser import ALL_TYPES, EXIT_OK, UsageError, _parse_types, parse_components


def _read(args, path, prefer=None):
    from ..io import read_data

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
    from ..io import load, read_metadata

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


def _run_selection(X, ks, types, criterion, seed, device, progress, **kw):
    from ..selection import select_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sel = select_model(
            X, n_components=ks, covariance_types=types, criterion=criterion,
            random_state=seed, device=device, callback=_progress_callback(progress), **kw,
        )
    return sel, caught


# ----------------------------------------------------------------- commands
def _cmd_fit(args) -> int:
    from .._validation import resolve_device
    from ..io import save_model

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
            **({"prior": "default"} if args.prior else {}),
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
    from .._demo import DEMO_TRUTH, make_demo_data
    from ..io import save_model

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
    from ..selection import information_criteria

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
    from ..bayesian import BayesianGaussianMixture

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
