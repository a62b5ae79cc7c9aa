"""Optax-style schedules: ``lr = schedule(step)`` of the 0-based step count.

Each public function checks its arguments and returns a :class:`Schedule`,
which optimc optimizers accept as ``lr=`` and evaluate before each step.
"""
from __future__ import annotations

import inspect
import math
from bisect import bisect_right

import numpy as np

from .. import _checks

__all__ = ["Schedule", "constant", "step_decay", "exponential_decay", "cosine_decay",
           "linear_warmup", "warmup_cosine", "piecewise_constant"]


def power(base, exponent):
    """``base ** exponent`` for a base > 0, inf where the float overflows (Python raises)."""
    try:
        return base ** exponent
    except OverflowError:
        return math.inf


class Schedule:
    """A learning rate as a function of the 0-based step count: ``lr = schedule(step)``.

    Made by the schedule functions of this module; picklable and comparable.
    ``schedule(step)`` takes an int >= 0 and returns a float; given an
    array or list of steps it returns a float64 NumPy array (handy for plots).
    """

    __slots__ = ("_rule", "_args")

    def __init__(self, rule, **args):
        self._rule, self._args = rule, args

    def __call__(self, step):
        if isinstance(step, (np.ndarray, list, tuple, range)):
            steps = np.asarray(step)
            return np.array([self(s.item()) for s in steps.ravel()], dtype=np.float64).reshape(steps.shape)
        return float(self._rule(_checks.integer("step", step, 0), **self._args))

    def __getstate__(self):
        return (self._rule, self._args)

    def __setstate__(self, state):
        self._rule, self._args = state

    def __eq__(self, other):
        return isinstance(other, Schedule) and (self._rule, self._args) == (other._rule, other._args)

    def __hash__(self):
        return hash((self._rule, tuple(self._args)))

    @property
    def name(self):
        """The function that made it (``"warmup_cosine"`` ...)."""
        return self._rule.__name__.lstrip("_")

    def __repr__(self):
        # the call that makes it: required arguments, and the others where not at their default
        params = inspect.signature(globals()[self.name]).parameters
        args = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v!r}" for k, v in self._args.items()
                         if k not in params or params[k].default is inspect.Parameter.empty
                         or v != params[k].default)
        return f"{self.name}({args})"


# ---- the rules: t is the checked step count, the rest the checked arguments ----

def _constant(t, lr):
    return lr


def _step_decay(t, lr, step_size, gamma):
    return lr * power(gamma, t // step_size)


def _exponential_decay(t, lr, gamma, decay_steps, staircase):
    return lr * power(gamma, (t // decay_steps) if staircase else (t / decay_steps))


def _cosine(t, lr, steps, end_lr):
    return end_lr + (lr - end_lr) * (1.0 + math.cos(math.pi * min(t, steps) / steps)) / 2.0


def _cosine_decay(t, lr, decay_steps, end_lr):
    return _cosine(t, lr, decay_steps, end_lr)


def _linear_warmup(t, lr, warmup_steps, start_lr):
    return lr if t >= warmup_steps else start_lr + (lr - start_lr) * t / warmup_steps


def _warmup_cosine(t, peak_lr, warmup_steps, total_steps, end_lr, start_lr):
    if t < warmup_steps:
        return _linear_warmup(t, peak_lr, warmup_steps, start_lr)
    return _cosine(t - warmup_steps, peak_lr, total_steps - warmup_steps, end_lr)


def _piecewise_constant(t, boundaries, values):
    return values[bisect_right(boundaries, t)]


# ---- the public functions -------------------------------------------------

def constant(lr):
    """A constant learning rate: ``lr(t) = lr``."""
    return Schedule(_constant, lr=_checks.nonneg("lr", lr))


def step_decay(lr, step_size, gamma=0.1):
    """Decay by ``gamma`` every ``step_size`` steps (torch's StepLR):

    ``lr(t) = lr * gamma ** floor(t / step_size)``.
    """
    return Schedule(_step_decay, lr=_checks.nonneg("lr", lr), step_size=_checks.count("step_size", step_size),
                    gamma=_checks.positive("gamma", gamma))


def exponential_decay(lr, gamma, decay_steps=1, staircase=False):
    """Exponential decay by ``gamma`` per ``decay_steps`` steps:

    ``lr(t) = lr * gamma ** (t / decay_steps)``, or ``gamma ** floor(t / decay_steps)``
    with ``staircase=True``. With ``decay_steps=1`` this is torch's ExponentialLR.
    """
    return Schedule(_exponential_decay, lr=_checks.nonneg("lr", lr), gamma=_checks.positive("gamma", gamma),
                    decay_steps=_checks.count("decay_steps", decay_steps),
                    staircase=_checks.flag("staircase", staircase))


def cosine_decay(lr, decay_steps, end_lr=0.0):
    """Cosine decay from ``lr`` to ``end_lr`` over ``decay_steps`` steps, then constant:

    ``lr(t) = end_lr + (lr - end_lr) * (1 + cos(pi * min(t, T) / T)) / 2`` with T = decay_steps.
    For t <= T this is torch's CosineAnnealingLR(T_max=T, eta_min=end_lr).
    """
    return Schedule(_cosine_decay, lr=_checks.nonneg("lr", lr),
                    decay_steps=_checks.count("decay_steps", decay_steps),
                    end_lr=_checks.nonneg("end_lr", end_lr))


def linear_warmup(lr, warmup_steps, start_lr=0.0):
    """Linear ramp from ``start_lr`` to ``lr`` over ``warmup_steps`` steps, then constant:

    ``lr(t) = start_lr + (lr - start_lr) * t / W`` for t < W = warmup_steps, ``lr`` after.
    With the default ``start_lr=0`` the very first step (t = 0) has lr 0.
    """
    return Schedule(_linear_warmup, lr=_checks.nonneg("lr", lr),
                    warmup_steps=_checks.integer("warmup_steps", warmup_steps, 0),
                    start_lr=_checks.nonneg("start_lr", start_lr))


def warmup_cosine(peak_lr, warmup_steps, total_steps, end_lr=0.0, start_lr=0.0):
    """Linear warm-up to ``peak_lr``, then cosine decay to ``end_lr`` at ``total_steps``:

    with W = warmup_steps and T = total_steps,
    ``lr(t) = start_lr + (peak_lr - start_lr) * t / W`` for t < W, and
    ``lr(t) = end_lr + (peak_lr - end_lr) * (1 + cos(pi * min(t - W, T - W) / (T - W))) / 2`` for t >= W
    (so ``lr(T) = end_lr``, held afterwards). Like Optax's warmup_cosine_decay_schedule.
    """
    peak_lr = _checks.nonneg("peak_lr", peak_lr)
    warmup_steps = _checks.integer("warmup_steps", warmup_steps, 0)
    total_steps = _checks.count("total_steps", total_steps)
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps: expected more than warmup_steps={warmup_steps}, got {total_steps}")
    return Schedule(_warmup_cosine, peak_lr=peak_lr, warmup_steps=warmup_steps, total_steps=total_steps,
                    end_lr=_checks.nonneg("end_lr", end_lr), start_lr=_checks.nonneg("start_lr", start_lr))


def piecewise_constant(boundaries, values):
    """Piecewise-constant lr: ``values[i]`` for ``boundaries[i-1] <= t < boundaries[i]``:

    ``lr(t) = values[k]`` where k = number of boundaries <= t; boundaries strictly
    increasing, ``len(values) == len(boundaries) + 1``. E.g.
    ``piecewise_constant([100, 200], [0.1, 0.01, 0.001])`` is torch's
    MultiStepLR(milestones=[100, 200], gamma=0.1) from lr 0.1.
    """
    boundaries = _checks.sorted_ints("boundaries", boundaries, strict=True)
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"values: expected a list of learning rates, got {type(values).__name__}")
    if len(values) != len(boundaries) + 1:
        raise ValueError(f"values: expected len(boundaries) + 1 = {len(boundaries) + 1} entries, "
                         f"got {len(values)}")
    return Schedule(_piecewise_constant, boundaries=tuple(boundaries),
                    values=tuple(_checks.nonneg(f"values[{i}]", v) for i, v in enumerate(values)))
