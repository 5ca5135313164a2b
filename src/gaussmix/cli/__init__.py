"""The ``gaussmix`` command line.

Sub-commands: ``demo``, ``fit``, ``predict``, ``score``, ``sample``, ``info``.
Exit status 0 on success, 2 on a usage or input error (one line on stderr
naming the file, line or column at fault, never a traceback), 1 on an
unexpected internal error.
"""

from __future__ import annotations

import os
import sys

from .output import _one_line
from .parser import (
    ALL_TYPES,  # noqa: F401
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    _build_parser,
    _parse_types,  # noqa: F401 - part of the package's tested surface
    parse_components,
)

__all__ = ["main", "parse_components", "UsageError"]


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
