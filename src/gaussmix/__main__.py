"""``python -m gaussmix``: the same as the ``gaussmix`` command."""

import sys

from .cli import main

sys.exit(main())
