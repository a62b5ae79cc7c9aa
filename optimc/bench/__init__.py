"""The speed benchmark (``python -m optimc bench``), one module per job:

- :mod:`optimc.bench.cases` -- what runs: a case per class in ``optimc.ALL``, its
  hyperparameters and the bytes its step moves (from the state it allocates); sizes;
- :mod:`optimc.bench.numpy_steps` -- the NumPy competitors, keyed by class name;
- :mod:`optimc.bench.competitors` -- the roofline, torch.optim and the result checks;
- :mod:`optimc.bench.timing` -- round-robin sampling of runners;
- :mod:`optimc.bench.sections` -- the measurements: main table, fixed cost, threads;
- :mod:`optimc.bench.report` -- text tables, the files written, the plot;
- :mod:`optimc.bench.machine` -- where it ran;
- :mod:`optimc.bench.cli` -- the command line.
"""
