"""The demo's learning rates: one table, a row per optimizer class, a column per problem.

How they were chosen (the same mechanical rule for every optimizer and problem, not
tuned to make any optimizer look good) is in :mod:`optimc.demo.problems`;
:func:`optimc.problems.sweep_learning_rate` reproduces every entry. A new optimizer
class in ``optimc.ALL`` needs a row here: ``tests/test_problems.py`` fails, naming the
class and problem, until it has one (:func:`missing_rates`).

``NOTES`` explains results that a reader of the demo's table would otherwise take for a
defect; the table prints them as footnotes and the figure as its caption.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Tuple

__all__ = ["COLUMNS", "LEARNING_RATES", "NOTES", "learning_rates_for", "missing_rates"]

#: The problems the table's columns belong to, in column order.
COLUMNS: Tuple[str, ...] = ("rosenbrock", "saddle", "quadratic", "sparse_logistic", "spiral_mlp")

_ROWS: Dict[str, Tuple[float, ...]] = {
    # class        rosenbrock  saddle  quadratic  sparse_logistic  spiral_mlp
    "SGD":        (1e-3,       0.3,    0.1,       0.3,             3.0),
    "Momentum":   (3e-3,       0.3,    0.3,       3e-2,            0.3),
    "NAG":        (1e-3,       0.3,    0.1,       3e-2,            0.3),
    "Adagrad":    (1.0,        1.0,    1.0,       0.1,             3.0),
    "RMSprop":    (3e-3,       3e-3,   3e-3,      3e-3,            3e-2),
    "Adadelta":   (0.3,        3.0,    1.0,       3.0,             3.0),
    "Adam":       (0.1,        0.3,    0.1,       3e-3,            3e-2),
    "AdamW":      (0.1,        0.3,    0.1,       3e-3,            3e-2),
    "Adamax":     (1.0,        1.0,    1.0,       1e-2,            0.3),
    "NAdam":      (3e-2,       1.0,    3e-2,      3e-3,            0.1),
    "RAdam":      (3e-3,       0.3,    0.3,       3e-3,            0.1),
    "Lion":       (3e-3,       3e-3,   3e-3,      1e-3,            3e-3),
    "Rprop":      (3e-2,       1e-5,   0.3,       0.3,             1.0),
    "LAMB":       (3e-2,       3e-3,   3e-3,      3e-3,            3e-3),
    "LARS":       (1.0,        1.0,    0.3,       1.0,             1.0),
    "ASGD":       (1e-3,       1.0,    0.1,       0.3,             1.0),
    "SGDScheduleFree": (3e-3,  1.0,    1.0,       1.0,             3.0),
    "AdamWScheduleFree": (0.1, 1.0,    0.1,       1e-2,            0.3),
    "SparseAdam": (0.1,        0.3,    0.1,       3e-3,            3e-2),
    "RowWiseAdagrad": (1.0,    1.0,    1.0,       0.1,             3.0),
    "Adafactor":  (1.0,        1.0,    1e-2,      1e-2,            3e-2),
}

#: problem name -> {optimizer class name: learning rate}
LEARNING_RATES: Mapping[str, Mapping[str, float]] = {
    problem: {name: row[j] for name, row in _ROWS.items()} for j, problem in enumerate(COLUMNS)
}

#: (problem, optimizer class name) -> why its result looks the way it does
NOTES: Mapping[Tuple[str, str], str] = {
    ("rosenbrock", "RAdam"):
        "RAdam's first 5 steps are not adapted: each moves lr x the gradient (bias-"
        "corrected momentum), and the gradient at the start is ~220, so every rate above "
        "3e-3 diverged in the sweep. At 3e-3 those steps throw it onto the valley's wall, "
        "and its adapted steps, about lr x a rectification factor that grows from 0.03 "
        "to 0.8 over the run, are too short to walk the valley in 2000 steps.",
    ("rosenbrock", "LBFGS"):
        "L-BFGS runs one iteration per step (max_iter=1) at a fixed step length lr, so "
        "that each step costs one gradient, as for every other optimizer; its usual setting "
        "(20 iterations and a strong-Wolfe line search per step) would evaluate the problem "
        "many times per step. The same holds on the saddle and the quadratic.",
    ("spiral_mlp", "Muon+AdamW"):
        "Muon updates the weight matrices W1 and W2 at lr; AdamW updates the biases at its "
        "own rate for this problem (Muon takes only 2-D params; its authors pair it with AdamW).",
}


def learning_rates_for(problem_name: str) -> Dict[str, float]:
    """The table's column for one problem (empty if the problem has none)."""
    return dict(LEARNING_RATES.get(problem_name, {}))


def missing_rates(class_names: Iterable[str], problem_names: Optional[Iterable[str]] = None
                  ) -> List[str]:
    """``"<class> on <problem>"`` for every optimizer class without a rate for a problem."""
    problems = list(COLUMNS if problem_names is None else problem_names)
    return [f"{name} on {problem}" for name in class_names for problem in problems
            if name not in LEARNING_RATES.get(problem, {})]
