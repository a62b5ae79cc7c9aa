"""The demo's entries for the optimizers outside ``optimc.ALL`` (``optimc.SPECIAL``),
each on the problems it is made for, stepped like every other optimizer: one gradient
evaluation per step, the one the runner computed.

``LBFGS``       ``optimc.LBFGS(params, lr=lr, max_iter=1)`` on the full-batch problems:
                one L-BFGS iteration per step at a fixed step length ``lr``, the closure
                handing it the runner's loss and gradient (L-BFGS's usual setting,
                20 iterations and a line search per ``step``, would call the problem
                many times per step and make the step counts incomparable).
``Muon+AdamW``  on the MLP: ``optimc.Muon`` on its weight matrices (W1, W2) at ``lr``,
                ``optimc.AdamW`` on the biases at AdamW's own rate for the problem —
                the split Muon's authors recommend (Muon takes only 2-D params).

Their learning rates (each entry's ``rates``) come from the rule every rate of the demo
comes from (:func:`optimc.problems.sweep_learning_rate` with the entry as the class, see
:mod:`optimc.demo.problems`).
"""
from __future__ import annotations

from typing import Dict, Tuple

import optimc

from .rates import LEARNING_RATES

__all__ = ["LBFGSEntry", "MuonAdamWEntry", "ENTRIES", "applies", "step_with_loss"]


def step_with_loss(opt, loss, grads):
    """One optimizer step: ``opt.step_with_loss(loss, grads)`` where it has one (a
    closure-driven optimizer needs the loss), else ``opt.step(grads)``."""
    if hasattr(opt, "step_with_loss"):
        opt.step_with_loss(loss, grads)
    else:
        opt.step(grads)


def applies(cls, problem) -> bool:
    """Whether the demo runs optimizer (entry) ``cls`` on ``problem``."""
    problems = getattr(cls, "problems", None)
    return problems is None or problem.name in problems


class LBFGSEntry:
    """L-BFGS, one iteration per step (see the module's docstring)."""
    problems: Tuple[str, ...] = ("rosenbrock", "saddle", "quadratic")
    rates: Dict[str, float] = {"rosenbrock": 1.0, "saddle": 1.0, "quadratic": 0.03}

    def __init__(self, params, lr=1.0):
        self._opt = optimc.LBFGS(params, lr=lr, max_iter=1)

    @property
    def lr(self):
        return self._opt.param_groups[0]["lr"]

    def step_with_loss(self, loss, grads):
        self._opt.step(lambda: (loss, grads))

    def step(self, grads):
        raise TypeError("LBFGS needs the loss too: call step_with_loss(loss, grads)")


LBFGSEntry.__name__ = LBFGSEntry.__qualname__ = "LBFGS"


class MuonAdamWEntry:
    """Muon on the MLP's weight matrices, AdamW on the rest (see the module's docstring)."""
    problems: Tuple[str, ...] = ("spiral_mlp",)
    rates: Dict[str, float] = {"spiral_mlp": 0.01}

    def __init__(self, params, lr=1e-3):
        self._matrices = [i for i, p in enumerate(params) if p.ndim == 2]
        self._rest = [i for i, p in enumerate(params) if p.ndim != 2]
        self._muon = optimc.Muon([params[i] for i in self._matrices], lr=lr)
        self._adamw = optimc.AdamW([params[i] for i in self._rest], lr=LEARNING_RATES["spiral_mlp"]["AdamW"])

    @property
    def lr(self):
        return self._muon.param_groups[0]["lr"]

    def step(self, grads):
        self._muon.step([grads[i] for i in self._matrices])
        self._adamw.step([grads[i] for i in self._rest])


MuonAdamWEntry.__name__ = MuonAdamWEntry.__qualname__ = "Muon+AdamW"

#: the demo's entries beside optimc.ALL, in table order
ENTRIES = (LBFGSEntry, MuonAdamWEntry)
