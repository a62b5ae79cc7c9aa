"""``python -m optimc``: every optimizer on the built-in problems (see :mod:`optimc._cli`).

``python -m optimc bench`` runs the benchmark instead.
"""

import sys

from optimc._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
