"""The demo: optimc's optimizers on built-in problems (``python -m optimc``).

- :mod:`optimc.demo.problems` -- the problems (public name ``optimc.problems``);
- :mod:`optimc.demo.rates` -- the learning rate of every optimizer class on every problem;
- :mod:`optimc.demo.runner` -- running them, recording losses, paths and step times;
- :mod:`optimc.demo.table`, :mod:`optimc.demo.figure` -- the comparison table and figure;
- :mod:`optimc.demo.cli` -- the command line.

Only the problems are imported with :mod:`optimc`; the rest loads when the demo runs.
"""
