#!/usr/bin/env python3
"""optimc's speed benchmark from a source checkout: the same as ``python -m optimc bench``.

    python benchmarks/run.py [--quick] [--optimizers adam,sgd] [--dtypes float32] [--sizes 1e6,1e7]
                             [--threads N] [--out DIR] [--plot] ...

See benchmarks/README.md and ``python benchmarks/run.py --help``.
"""
import sys

from optimc.bench.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="python benchmarks/run.py"))
