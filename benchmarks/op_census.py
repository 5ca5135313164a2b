"""Count the torch operations a call dispatches, by the gaussmix line that issued them.

On small data a fit's or a search's time is mostly the fixed cost of each
torch call (a few microseconds on the CPU), so the number of calls is a
deterministic measure of that cost where wall times on a shared machine
move by 10-30% from run to run.  This script runs one call once to warm up,
then again under a ``TorchDispatchMode`` that attributes every dispatched
operation (views included) to the innermost ``gaussmix`` frame that issued
it, and prints the total and the largest sources.

Examples::

    python benchmarks/op_census.py --data diabetes                 # select_model, the search
    python benchmarks/op_census.py --data wine --call estimator    # starts="estimator"
    python benchmarks/op_census.py --data iris --call fit --type diag --k 3 --by line
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from gaussmix import GaussianMixture, select_model  # noqa: E402
from selection_vs_mclust import KS, TYPES, load_data, load_reference  # noqa: E402


class Census(TorchDispatchMode):
    """Counts dispatched operations by gaussmix function (``by="function"``)
    or source line (``by="line"``)."""

    def __init__(self, by: str = "function"):
        super().__init__()
        self.by = by
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        frame = sys._getframe(1)
        while frame is not None and "gaussmix" not in frame.f_code.co_filename:
            frame = frame.f_back
        if frame is None:
            key = "(outside gaussmix)"
        else:
            key = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_code.co_name}"
            if self.by == "line":
                key += f":{frame.f_lineno}"
        self.counts[key] += 1
        return func(*args, **(kwargs or {}))


def main(argv=None) -> collections.Counter:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="diabetes",
                    help="a data set of tests/reference/mclust_reference.json (default diabetes)")
    ap.add_argument("--call", default="search", choices=["search", "estimator", "fit"],
                    help="select_model's search, select_model(starts='estimator'), or one fit")
    ap.add_argument("--type", default="full", help="covariance type of --call fit")
    ap.add_argument("--k", type=int, default=3, help="components of --call fit")
    ap.add_argument("--by", default="function", choices=["function", "line"])
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    X = load_data(load_reference()["datasets"][args.data])
    calls = {
        "search": lambda: select_model(X, KS, TYPES, random_state=0),
        "estimator": lambda: select_model(X, KS, TYPES, starts="estimator", random_state=0),
        "fit": lambda: GaussianMixture(args.k, covariance_type=args.type, random_state=0).fit(X),
    }
    call = calls[args.call]
    call()  # warm-up: lazily built tables and caches would count otherwise
    census = Census(args.by)
    with census:
        call()
    print(f"{args.call} on {args.data} {X.shape[0]} x {X.shape[1]}: "
          f"{sum(census.counts.values())} dispatched torch operations")
    for key, n in census.counts.most_common(args.top):
        print(f"{n:8d}  {key}")
    return census.counts


if __name__ == "__main__":
    main()
