"""What the command line prints and writes: tables, summaries, warnings, CSV
files and plots."""

from __future__ import annotations

import csv
import math
import os
import sys
import time


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
    from ..selection import DegenerateFitWarning

    seen = set()
    for w in caught:
        if issubclass(w.category, DegenerateFitWarning):
            text = str(w.message).split(":")[0] + "; see the guard column"
        else:
            text = " ".join(str(w.message).split())
        if text not in seen:
            seen.add(text)
            _warn_line(text)


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
        from ..plotting import plot_clusters, plot_criterion
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


# --------------------------------------------------------------------- main
def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, FileNotFoundError) and getattr(exc, "filename", None):
        text = f"{exc.filename}: no such file or directory"
    elif isinstance(exc, OSError) and getattr(exc, "filename", None):
        text = f"{exc.filename}: {exc.strerror or text}"
    return text or type(exc).__name__
