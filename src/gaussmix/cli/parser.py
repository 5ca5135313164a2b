"""The command line's grammar: sub-commands, options, and their checks."""

from __future__ import annotations

import argparse

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
    from ..covariance import MCLUST_MODELS  # imports torch: only when types are given

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
    from .commands import _cmd_demo, _cmd_fit, _cmd_info, _cmd_predict, _cmd_sample, _cmd_score

    from .. import __version__

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
                   help="search: hierarchical, k-means and split starts per candidate, "
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
    p.add_argument("--prior", action="store_true",
                   help="mclust's default conjugate prior (priorControl()): posterior-mode fits "
                   "from one hierarchical start each, BIC at the posterior mode; models without "
                   "a prior (VEE, EVE, VVE, EVV) are left out")
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
