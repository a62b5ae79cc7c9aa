"""Scheduler objects with PyTorch's names, arguments and semantics
(``torch.optim.lr_scheduler``): the rules, each a subclass of
:class:`~optimc.schedules._base.LRScheduler`, which does the bookkeeping.

A scheduler is attached to an optimizer (or to some of its param groups, see
:func:`select`), writes ``param_groups[i]["lr"]`` (and, for :class:`CyclicLR`
and :class:`OneCycleLR`, the momentum or ``betas[0]``) and is advanced with
``scheduler.step()`` after each ``optimizer.step(grads)``. Each class lists in
``_fields`` the check of every attribute its state holds; its constructor
checks its arguments with the same checks.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from bisect import bisect_right
from collections.abc import Mapping

import numpy as np

from .. import _checks
from ._base import (_EPOCH_DEPRECATION, _MISSING, LRScheduler, ParamGroupSelection, _all_or_nothing, _CallableStates, _counter,
                    _Fixed, _group_value, _momentum, _one_or_list, _param_groups, _per_group, _PerGroup,
                    _tidy, select)
from .functional import power

__all__ = [
    "LRScheduler", "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR",
    "ConstantLR", "LinearLR", "ExponentialLR", "PolynomialLR",
    "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "CyclicLR",
    "OneCycleLR", "SequentialLR", "ChainedScheduler", "ReduceLROnPlateau",
    "ParamGroupSelection", "select",
]


# --------------------------------------------------------------------------
# checks of values some rules hold (the shared ones are in _base)
# --------------------------------------------------------------------------

_unit_open_left = functools.partial(_checks.real, lo=0.0, hi=1.0, lo_open=True)    # (0, 1]
_unit = functools.partial(_checks.real, lo=0.0, hi=1.0)                              # [0, 1]


def _position(name, value):
    """CosineAnnealingWarmRestarts' T_cur: a real >= -1 (-1 before the first step); an int stays an int."""
    x = _checks.real(name, value, lo=-1.0)
    return int(value) if isinstance(value, numbers.Integral) else x


def _period(name, value):
    """A length > 0 that may be fractional; an int stays an int (as torch keeps it)."""
    x = _checks.positive(name, value)
    return int(value) if isinstance(value, numbers.Integral) else x


# --------------------------------------------------------------------------
# the rules
# --------------------------------------------------------------------------

class _ChainableLR(LRScheduler):
    """A chainable rule lr_t = lr_{t-1} * f_t applied to the lrs it builds on.

    Subclasses give ``_factor()`` (None: leave the lrs unchanged; a number or a
    per-group list) and, where a closed form exists, ``_closed_factor()`` with
    lr_t = base_lr * c_t.
    """

    def _factor(self):
        """The factor from the previous step's lr to this one's (each subclass's rule)."""
        raise NotImplementedError(f"{type(self).__name__} defines no _factor")

    def _closed_factor(self):
        return None

    def get_lr(self):
        lrs, f = self._lrs(), self._factor()
        if f is None:
            return lrs
        fs = f if isinstance(f, list) else [f] * len(lrs)
        return [lr * x for lr, x in zip(lrs, fs)]

    def _closed_form_lr(self):
        c = self._closed_factor()
        return None if c is None else [base * c for base in self.base_lrs]


class LambdaLR(LRScheduler):
    """lr_t = base_lr * lr_lambda(t); one function, or a list of one per group."""

    _fields = {"lr_lambdas": _CallableStates(per_group=True)}

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.lr_lambdas = _per_group("lr_lambda", lr_lambda, _param_groups(optimizer), _checks.function)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * fn(self.last_epoch) for fn, base in zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(_ChainableLR):
    """lr_t = lr_{t-1} * lr_lambda(t) for t >= 1; one function, or one per group."""

    _fields = {"lr_lambdas": _CallableStates(per_group=True)}

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.lr_lambdas = _per_group("lr_lambda", lr_lambda, _param_groups(optimizer), _checks.function)
        super().__init__(optimizer, last_epoch)

    def _factor(self):
        return None if self._is_initial else [fn(self.last_epoch) for fn in self.lr_lambdas]


class StepLR(_ChainableLR):
    """lr_t = base_lr * gamma ** floor(t / step_size)."""

    _fields = {"step_size": _checks.count, "gamma": _checks.positive}

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = self._arg("step_size", step_size)
        self.gamma = self._arg("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _factor(self):
        return None if self.last_epoch == 0 or self.last_epoch % self.step_size else self.gamma

    def _closed_factor(self):
        return power(self.gamma, self.last_epoch // self.step_size)


class MultiStepLR(_ChainableLR):
    """lr_t = base_lr * gamma ** (number of milestones <= t).

    ``milestones`` must be sorted; a milestone listed n times decays by gamma**n (as torch).
    """

    _fields = {"milestones": functools.partial(_checks.sorted_ints, strict=False), "gamma": _checks.positive}

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = self._arg("milestones", milestones)
        self.gamma = self._arg("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _factor(self):
        n = self.milestones.count(self.last_epoch)
        return power(self.gamma, n) if n else None

    def _closed_factor(self):
        return power(self.gamma, bisect_right(self.milestones, self.last_epoch))


class ConstantLR(_ChainableLR):
    """lr_t = base_lr * factor for t < total_iters, base_lr afterwards."""

    _fields = {"factor": _unit_open_left, "total_iters": _checks.count}

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        self.factor = self._arg("factor", factor)
        self.total_iters = self._arg("total_iters", total_iters)
        super().__init__(optimizer, last_epoch)

    def _factor(self):
        if self.last_epoch == 0:
            return self.factor
        return 1.0 / self.factor if self.last_epoch == self.total_iters else None

    def _closed_factor(self):
        return self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor)


class LinearLR(_ChainableLR):
    """lr_t = base_lr * (s + (e - s) * min(t, total_iters) / total_iters), s/e = start/end_factor."""

    _fields = {"start_factor": _unit_open_left, "end_factor": _unit, "total_iters": _checks.count}

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        self.start_factor = self._arg("start_factor", start_factor)
        self.end_factor = self._arg("end_factor", end_factor)
        self.total_iters = self._arg("total_iters", total_iters)
        super().__init__(optimizer, last_epoch)

    def _factor(self):
        s, e, t = self.start_factor, self.end_factor, self.last_epoch
        if t == 0:
            return s
        if self._is_initial or t > self.total_iters:
            return None
        return 1.0 + (e - s) / (self.total_iters * s + (t - 1) * (e - s))

    def _closed_factor(self):
        s, e = self.start_factor, self.end_factor
        return s + (e - s) * min(self.total_iters, self.last_epoch) / self.total_iters


class ExponentialLR(_ChainableLR):
    """lr_t = base_lr * gamma ** t."""

    _fields = {"gamma": _checks.positive}

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = self._arg("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _factor(self):
        return None if self._is_initial else self.gamma

    def _closed_factor(self):
        return power(self.gamma, self.last_epoch)


class PolynomialLR(_ChainableLR):
    """lr_t = base_lr * (1 - min(t, total_iters) / total_iters) ** power."""

    _fields = {"total_iters": _checks.count, "power": _checks.nonneg}

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        self.total_iters = self._arg("total_iters", total_iters)
        self.power = self._arg("power", power)
        super().__init__(optimizer, last_epoch)

    def _factor(self):
        t, n = self.last_epoch, self.total_iters
        if self._is_initial or t > n:
            return None
        return ((1.0 - t / n) / (1.0 - (t - 1) / n)) ** self.power

    def _closed_factor(self):
        return (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power


class CosineAnnealingLR(LRScheduler):
    """lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2.

    Computed, as in torch, by the chainable recursion
    lr_t = eta_min + (lr_{t-1} - eta_min) * (1 + cos(pi t/T)) / (1 + cos(pi (t-1)/T)),
    so it composes with other schedulers; past T_max it rises again (period 2*T_max).
    """

    _fields = {"T_max": _period, "eta_min": _checks.nonneg}

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = self._arg("T_max", T_max)
        self.eta_min = self._arg("eta_min", eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._lrs()
        if self._step_count == 1 and t > 0:
            return [lo + (base - lo) * (1 + math.cos(t * math.pi / T)) / 2 for base in self.base_lrs]
        if (t - 1 - T) % (2 * T) == 0:
            return [lr + (base - lo) * (1 - math.cos(math.pi / T)) / 2
                    for base, lr in zip(self.base_lrs, self._lrs())]
        return [(1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T)) * (lr - lo) + lo
                for lr in self._lrs()]

    def _closed_form_lr(self):
        lo = self.eta_min
        return [lo + (base - lo) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2.

    T_cur counts epochs since the last restart; the first period is T_0 and each
    next one T_mult times longer. ``step(epoch)`` accepts fractional epochs
    (e.g. ``epoch + i / iters`` after batch i); that use is not deprecated.
    """

    _fields = {"T_0": _checks.count, "T_i": _checks.count, "T_mult": _checks.count,
               "eta_min": _checks.nonneg,
               "T_cur": _position}
    _counters = LRScheduler._counters + ("T_cur", "T_i")
    _epoch_deprecated = False

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        self.T_0 = self.T_i = self._arg("T_0", T_0)
        self.T_mult = self._arg("T_mult", T_mult)
        self.eta_min = self._arg("eta_min", eta_min)
        self.T_cur = self._arg("last_epoch", last_epoch)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        lo = self.eta_min
        return [lo + (base - lo) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
                for base in self.base_lrs]

    def _move(self, epoch, lrs):
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            _checks.real("epoch", epoch, 0.0)
            epoch = int(epoch) if isinstance(epoch, numbers.Integral) else float(epoch)
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log((epoch / self.T_0 * (self.T_mult - 1) + 1), self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult ** n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        return self._rule()


class CyclicLR(LRScheduler):
    """Cyclical learning rates (Smith 2017), one ``step()`` per batch.

    With c = floor(1 + t / (up + down)) and x = 1 + t / (up + down) - c, the
    position in the cycle is s = x / r while x <= r, else (x - 1) / (r - 1),
    where r = up / (up + down). Then

        lr_t = base_lr + (max_lr - base_lr) * s * scale
        momentum_t = max_momentum - (max_momentum - base_momentum) * s * scale

    with scale = 1 ("triangular"), 1 / 2**(c - 1) ("triangular2"),
    gamma**t ("exp_range") or ``scale_fn(c or t)`` per ``scale_mode``.
    With ``cycle_momentum`` (default) the groups' "momentum" is cycled, or
    ``betas[0]`` for optimizers with betas (Adam & co.).
    """

    _MODES = ("triangular", "triangular2", "exp_range")
    _fields = {
        "max_lrs": _PerGroup(_checks.nonneg),
        "total_size": _checks.positive,
        "step_ratio": _unit_open_left,
        "mode": functools.partial(_checks.choice, options=_MODES),
        "gamma": _checks.positive,
        "_scale_fn_custom": _CallableStates(per_group=False),
        "scale_mode": functools.partial(_checks.choice, options=("cycle", "iterations")),
        "cycle_momentum": _Fixed(_checks.flag),
        "use_beta1": _Fixed(_checks.flag),
        "base_momentums": _PerGroup(_momentum),
        "max_momentums": _PerGroup(_momentum),
    }

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None,
                 mode="triangular", gamma=1.0, scale_fn=None, scale_mode="cycle",
                 cycle_momentum=True, base_momentum=0.8, max_momentum=0.9, last_epoch=-1):
        groups = _param_groups(optimizer)
        self.optimizer = optimizer
        last_epoch = self._arg("last_epoch", last_epoch)
        base_lrs = self._arg("base_lrs", base_lr, "base_lr", groups)
        self.max_lrs = self._arg("max_lrs", max_lr, "max_lr", groups)
        up = _checks.positive("step_size_up", step_size_up)
        down = up if step_size_down is None else _checks.positive("step_size_down", step_size_down)
        self.total_size = self._arg("total_size", up + down, "step_size_up + step_size_down")
        self.step_ratio = self._arg("step_ratio", up / self.total_size, "step_size_up / (step_size_up + step_size_down)")
        self.mode = self._arg("mode", mode)
        self.gamma = self._arg("gamma", gamma)
        self._scale_fn_custom = None if scale_fn is None else _checks.function("scale_fn", scale_fn)
        if scale_fn is not None:
            self.scale_mode = self._arg("scale_mode", scale_mode)
        else:
            self.scale_mode = "iterations" if self.mode == "exp_range" else "cycle"
        self.cycle_momentum = self._arg("cycle_momentum", cycle_momentum)
        with _all_or_nothing(groups):
            if self.cycle_momentum:
                bases, maxs = _setup_momentum(self, groups, base_momentum, max_momentum, last_epoch)
                self.base_momentums, self.max_momentums = bases, maxs
            if last_epoch == -1:
                for group, lr in zip(groups, base_lrs):
                    group["lr"] = lr
            super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def scale_fn(self, x):
        """The amplitude scaling at cycle number or iteration ``x``."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return power(0.5, x - 1)       # torch's 1 / 2.0 ** (x - 1), without its overflow
        return power(self.gamma, x)

    def _rule(self):
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        s = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [lo + (hi - lo) * s * scale for lo, hi in zip(self.base_lrs, self.max_lrs)]
        if not self.cycle_momentum:
            return lrs, None
        return lrs, (self._momentum_key, [hi - (hi - lo) * s * scale
                                          for lo, hi in zip(self.base_momentums, self.max_momentums)])

    def get_lr(self):
        return self._rule()[0]

    @property
    def _momentum_key(self):
        return "betas" if self.use_beta1 else "momentum"

    def _repr_value(self, param):
        if param in ("base_lr", "max_lr", "base_momentum", "max_momentum"):
            key = {"base_lr": "base_lrs", "max_lr": "max_lrs"}.get(param, param + "s")
            return _one_or_list(getattr(self, key)) if key in self.__dict__ else _MISSING
        up = _tidy(self.total_size * self.step_ratio)
        if param == "step_size_up":
            return up
        if param == "step_size_down":
            down = _tidy(self.total_size - up)
            return _MISSING if down == up else down
        if param == "scale_fn":
            return _MISSING if self._scale_fn_custom is None else self._scale_fn_custom
        if param == "mode" and self._scale_fn_custom is not None:
            return _MISSING            # scale_fn replaces it
        if param == "scale_mode" and self._scale_fn_custom is None:
            return _MISSING            # set by mode
        if param == "gamma" and self.mode != "exp_range":
            return _MISSING            # used by exp_range only
        return super()._repr_value(param)


def _momentum_key(optimizer, groups):
    """"betas" to cycle ``betas[0]``, "momentum" to cycle ``momentum`` (betas preferred, as torch)."""
    for key in ("betas", "momentum"):
        if all(key in g for g in groups):
            return key
    raise ValueError(f"cycle_momentum=True needs an optimizer whose param groups have 'momentum' or "
                     f"'betas'; {type(optimizer).__name__} has neither (pass cycle_momentum=False)")


def _setup_momentum(scheduler, groups, base_momentum, max_momentum, last_epoch):
    """Shared by CyclicLR and OneCycleLR: check the momentum range and, for a new
    schedule, start each group at ``max_momentum`` (inside the caller's all-or-nothing)."""
    scheduler.use_beta1 = _momentum_key(scheduler.optimizer, groups) == "betas"
    maxs = _per_group("max_momentum", max_momentum, groups, _momentum)
    bases = _per_group("base_momentum", base_momentum, groups, _momentum)
    if last_epoch == -1:
        key = scheduler._momentum_key
        try:
            for group, m in zip(groups, maxs):
                group[key] = (m, *tuple(group["betas"])[1:]) if key == "betas" else m
        except (ValueError, TypeError) as e:
            raise type(e)(f"{type(scheduler).__name__}(cycle_momentum=True) cannot set the param groups' "
                          f"{key!r}: {e} (pass cycle_momentum=False, or create the optimizer "
                          f"so that it can take them, e.g. with momentum > 0)") from e
        for group, m, b in zip(groups, maxs, bases):
            group["max_momentum"] = m
            group["base_momentum"] = b
    return bases, maxs


# OneCycleLR's phases: which group keys each anneals between (lr, then momentum)
_PHASE_KEYS = ("end_step", "start_lr", "end_lr", "start_momentum", "end_momentum")
_PHASES = {
    2: [("initial_lr", "max_lr", "max_momentum", "base_momentum"),
        ("max_lr", "min_lr", "base_momentum", "max_momentum")],
    3: [("initial_lr", "max_lr", "max_momentum", "base_momentum"),
        ("max_lr", "initial_lr", "base_momentum", "max_momentum"),
        ("initial_lr", "min_lr", "max_momentum", "max_momentum")],
}


def _check_phases(name, value):
    """OneCycleLR's ``_schedule_phases``: 2 or 3 phases with the names above and finite end steps."""
    if not isinstance(value, (list, tuple)) or len(value) not in _PHASES:
        raise ValueError(f"{name}: expected a list of 2 or 3 phases, got {value!r}")
    phases = []
    for i, (phase, names) in enumerate(zip(value, _PHASES[len(value)])):
        if not isinstance(phase, Mapping) or set(phase) != set(_PHASE_KEYS):
            raise ValueError(f"{name}[{i}]: expected a dict with keys {list(_PHASE_KEYS)}, got {phase!r}")
        if tuple(phase[k] for k in _PHASE_KEYS[1:]) != names:
            raise ValueError(f"{name}[{i}]: expected the phase {dict(zip(_PHASE_KEYS[1:], names))}, got {phase!r}")
        end = phase["end_step"]
        end = _checks.integer if isinstance(end, numbers.Integral) else _checks.real
        phases.append(dict(zip(_PHASE_KEYS, (end(f"{name}[{i}]['end_step']", phase["end_step"]), *names))))
    return phases


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin 2018), one ``step()`` per batch.

    initial_lr = max_lr / div_factor, min_lr = initial_lr / final_div_factor.
    Phase 1 anneals initial_lr -> max_lr over the first pct_start * total_steps
    steps, phase 2 max_lr -> min_lr over the rest; with ``three_phase`` phase 2
    returns to initial_lr symmetrically and phase 3 anneals to min_lr. Annealing
    from a to b over fraction p of a phase is a + (b - a) * p ("linear") or
    b + (a - b) * (1 + cos(pi * p)) / 2 ("cos"). Momentum (or beta1) moves the
    opposite way between max_momentum and base_momentum.

    Identical to torch for steps 0 .. total_steps - 1. The value after the last
    step (t = total_steps, reached by stepping after every batch) is min_lr, where
    torch extrapolates the last phase (and gives a negative lr with "linear",
    which optimc optimizers refuse).
    """

    _fields = {
        "total_steps": _checks.count,
        "_anneal_func_type": functools.partial(_checks.choice, options=("cos", "linear")),
        "_schedule_phases": _check_phases,
        "cycle_momentum": _Fixed(_checks.flag),
        "use_beta1": _Fixed(_checks.flag),
    }

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 last_epoch=-1):
        groups = _param_groups(optimizer)
        self.optimizer = optimizer
        last_epoch = self._arg("last_epoch", last_epoch)
        if total_steps is not None:
            self.total_steps = self._arg("total_steps", total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = self._arg("total_steps", _checks.count("epochs", epochs) *
                                         _checks.count("steps_per_epoch", steps_per_epoch),
                                         "epochs * steps_per_epoch")
        else:
            raise ValueError("OneCycleLR needs total_steps, or both epochs and steps_per_epoch")
        pct_start = _checks.real("pct_start", pct_start, 0.0, 1.0)
        self._anneal_func_type = self._arg("_anneal_func_type", anneal_strategy, "anneal_strategy")
        div_factor = _checks.positive("div_factor", div_factor)
        final_div_factor = _checks.positive("final_div_factor", final_div_factor)
        three_phase = _checks.flag("three_phase", three_phase)
        ends = [float(pct_start * self.total_steps) - 1]
        if three_phase:
            ends.append(float(2 * pct_start * self.total_steps) - 2)
        ends.append(self.total_steps - 1)
        self._schedule_phases = [dict(zip(_PHASE_KEYS, (end, *names)))
                                 for end, names in zip(ends, _PHASES[len(ends)])]
        max_lrs = _per_group("max_lr", max_lr, groups, _checks.nonneg)
        initial_lrs = [_checks.nonneg(f"max_lr / div_factor for param group {i}", m / div_factor)
                       for i, m in enumerate(max_lrs)]
        self.cycle_momentum = self._arg("cycle_momentum", cycle_momentum)
        with _all_or_nothing(groups):
            if self.cycle_momentum:
                _setup_momentum(self, groups, base_momentum, max_momentum, last_epoch)
            if last_epoch == -1:
                for group, m, initial in zip(groups, max_lrs, initial_lrs):
                    group["initial_lr"] = initial
                    group["max_lr"] = m
                    group["min_lr"] = initial / final_div_factor
            super().__init__(optimizer, last_epoch)

    def _check_together(self, state, name):
        last = state["_schedule_phases"][-1]["end_step"]
        if last != state["total_steps"] - 1:
            raise ValueError(f"{name}['_schedule_phases']: the last phase must end at total_steps - 1 = "
                             f"{state['total_steps'] - 1}, got {last!r}")

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _rule(self):
        t = self.last_epoch
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {t} times; the specified number of total steps "
                             f"is {self.total_steps}")
        groups = self._groups()
        lrs, momenta = [], []
        for g in range(len(groups)):
            start = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end = phase["end_step"]
                if t <= end or i == len(self._schedule_phases) - 1:
                    # torch extrapolates past the last phase (a negative lr with "linear"
                    # at t == total_steps) and divides by zero on an empty phase: hold the end.
                    pct = min((t - start) / (end - start), 1.0) if end != start else 1.0
                    lrs.append(self._anneal(_group_value(groups, g, phase["start_lr"]),
                                            _group_value(groups, g, phase["end_lr"]), pct))
                    if self.cycle_momentum:
                        momenta.append(self._anneal(_group_value(groups, g, phase["start_momentum"], _momentum),
                                                    _group_value(groups, g, phase["end_momentum"], _momentum),
                                                    pct))
                    break
                start = end
        return lrs, ((self._momentum_key, momenta) if self.cycle_momentum else None)

    def get_lr(self):
        return self._rule()[0]

    _momentum_key = CyclicLR._momentum_key

    def _repr_value(self, param):
        groups = self._groups()
        per_group = lambda key: _one_or_list([g[key] for g in groups])  # noqa: E731
        if param == "max_lr":
            return per_group("max_lr")
        if param in ("epochs", "steps_per_epoch"):
            return _MISSING            # shown as total_steps
        if param == "pct_start":
            return _tidy((self._schedule_phases[0]["end_step"] + 1) / self.total_steps)
        if param == "anneal_strategy":
            return self._anneal_func_type
        if param == "three_phase":
            return len(self._schedule_phases) == 3
        if param == "div_factor":
            return _one_or_list([_tidy(g["max_lr"] / g["initial_lr"]) for g in groups])
        if param == "final_div_factor":
            return _one_or_list([_tidy(g["initial_lr"] / g["min_lr"]) for g in groups])
        if param in ("base_momentum", "max_momentum"):
            return per_group(param) if self.cycle_momentum else _MISSING
        return super()._repr_value(param)


def _check_schedulers(owner, schedulers, optimizer):
    """Sub-schedulers of SequentialLR/ChainedScheduler: non-empty, chainable, one optimizer."""
    if isinstance(schedulers, LRScheduler) or not isinstance(schedulers, (list, tuple)):
        raise TypeError(f"{owner} expects a list of schedulers, got {type(schedulers).__name__}")
    if not schedulers:
        raise ValueError(f"{owner} expects at least one scheduler, but got none")
    for i, s in enumerate(schedulers):
        if not isinstance(s, LRScheduler):
            raise TypeError(f"{owner}: schedulers[{i}] is a {type(s).__name__}, not an optimc scheduler")
        if isinstance(s, ReduceLROnPlateau):
            raise ValueError(f"{owner} does not support ReduceLROnPlateau (its step needs a metric), "
                             f"got one at index {i}")
        if s.optimizer is not optimizer:
            raise ValueError(f"{owner} expects all schedulers to belong to the same optimizer, but "
                             f"schedulers[{i}] ({type(s).__name__}) has a different one")
    if len({id(s) for s in schedulers}) != len(schedulers):
        raise ValueError(f"{owner}: a scheduler is listed twice")
    return list(schedulers)


class SequentialLR(LRScheduler):
    """Runs ``schedulers[i]`` for milestones[i-1] <= t < milestones[i].

    At a milestone the next scheduler starts from its closed form at epoch 0
    (as torch). ``len(milestones) == len(schedulers) - 1``; milestones sorted.
    """

    _fields = {"_milestones": functools.partial(_checks.sorted_ints, strict=False)}
    _counters = ("last_epoch",)

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        groups = _param_groups(optimizer)
        self._schedulers = _check_schedulers("SequentialLR", schedulers, optimizer)
        for i, s in enumerate(self._schedulers[1:], 1):
            if isinstance(s, (SequentialLR, ChainedScheduler)):
                raise ValueError(f"SequentialLR: schedulers[{i}] is a {type(s).__name__}; only the first "
                                 "scheduler may wrap others (a later one restarts at its milestone from its "
                                 "closed form at epoch 0, which a wrapper has not)")
        milestones = self._arg("_milestones", milestones, "milestones")
        if len(milestones) != len(self._schedulers) - 1:
            raise ValueError(f"SequentialLR expects one milestone fewer than schedulers, got "
                             f"{len(self._schedulers)} schedulers and {len(milestones)} milestones")
        self._milestones = milestones
        self.last_epoch = self._arg("last_epoch", last_epoch) + 1
        self.optimizer = optimizer
        wrapped = [s._attrs() for s in self._schedulers]
        idx = bisect_right(self._milestones, 0)
        try:
            with _all_or_nothing(groups):
                for i in range(len(groups)):     # back to the initial lrs ...
                    groups[i]["lr"] = _group_value(groups, i, "initial_lr")
                self._undo(self)                 # ... and undo the sub-schedulers' initial steps
                self._schedulers[idx]._initial_step()
        except BaseException:
            for s, saved in zip(self._schedulers, wrapped):
                s._restore_attrs(saved)
            raise
        self._last_lr = self._schedulers[idx].get_last_lr()

    @staticmethod
    def _undo(scheduler):
        if hasattr(scheduler, "_schedulers"):
            for s in scheduler._schedulers:
                SequentialLR._undo(s)
        else:
            scheduler.last_epoch -= 1

    def step(self):
        """Step the scheduler whose interval the next epoch falls in (see :meth:`LRScheduler.step`)."""
        self._warn_if_optimizer_not_stepped()
        self._step_all_or_nothing(None)

    def _advance(self, epoch, lrs):
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            values = scheduler._move(0, lrs)
        else:
            values = scheduler._advance(None, lrs)
        values = scheduler._check_values(*values, len(lrs))
        scheduler._last_lr = list(values[0])
        return values

    def _check_together(self, state, name):
        if len(state["_milestones"]) != len(self._schedulers) - 1:
            raise ValueError(f"{name}['_milestones']: expected {len(self._schedulers) - 1} milestones "
                             f"(one fewer than schedulers), got {state['_milestones']!r}")

    def _repr_value(self, param):
        if param == "schedulers":
            return self._schedulers
        if param == "milestones":
            return self._milestones
        return super()._repr_value(param)


class ChainedScheduler(LRScheduler):
    """Steps every scheduler in ``schedulers`` on each ``step()``; their chainable rules
    compose (each builds on the lrs the one before it computed)."""

    _counters = ()

    def __init__(self, schedulers, optimizer=None):
        if optimizer is None and isinstance(schedulers, (list, tuple)) and schedulers:
            optimizer = getattr(schedulers[0], "optimizer", None)
        self._schedulers = _check_schedulers("ChainedScheduler", schedulers, optimizer)
        self.optimizer = optimizer
        self._last_lr = [g["lr"] for g in _param_groups(optimizer)]

    def step(self):
        """Step every scheduler, in order (see :meth:`LRScheduler.step`)."""
        self._warn_if_optimizer_not_stepped()
        self._step_all_or_nothing(None)

    def _advance(self, epoch, lrs):
        momenta = None
        for scheduler in self._schedulers:
            lrs, m = scheduler._check_values(*scheduler._advance(None, lrs), len(lrs))
            scheduler._last_lr = list(lrs)
            momenta = m if m is not None else momenta
        return lrs, momenta

    def _repr_value(self, param):
        return self._schedulers if param == "schedulers" else _MISSING


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lrs by ``factor`` when a metric stops improving.

    ``step(metric)``: the metric improves if it is below best * (1 - threshold)
    ("min", "rel"), below best - threshold ("min", "abs"), above
    best * (1 + threshold) ("max", "rel") or above best + threshold ("max",
    "abs"). After more than ``patience`` epochs without improvement each lr
    becomes max(lr * factor, min_lr) (unless that changes it by <= eps), and
    ``cooldown`` epochs are ignored. A NaN metric never improves (as torch).
    """

    _fields = {
        "factor": functools.partial(_checks.real, lo=0.0, hi=1.0, hi_open=True),
        "default_min_lr": lambda name, value: None if value is None else _checks.nonneg(name, value),
        "min_lrs": _PerGroup(_checks.nonneg),
        "patience": _counter,
        "cooldown": _counter,
        "eps": _checks.nonneg,
        "last_epoch": _counter,
        "mode": functools.partial(_checks.choice, options=("min", "max")),
        "threshold_mode": functools.partial(_checks.choice, options=("rel", "abs")),
        "threshold": _checks.nonneg,
        "mode_worse": functools.partial(_checks.real, finite=False),
        "best": functools.partial(_checks.real, finite=False),
        "cooldown_counter": _counter,
        "num_bad_epochs": _counter,
    }
    _counters = ("last_epoch", "best", "cooldown_counter", "num_bad_epochs")

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        groups = _param_groups(optimizer)
        self.factor = self._arg("factor", factor)
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            self.default_min_lr = None
            self.min_lrs = self._arg("min_lrs", min_lr, "min_lr", groups)
        else:
            self.default_min_lr = self._arg("default_min_lr", min_lr, "min_lr")
            self.min_lrs = [self.default_min_lr] * len(groups)
        self.patience = self._arg("patience", patience)
        self.cooldown = self._arg("cooldown", cooldown)
        self.eps = self._arg("eps", eps)
        self.last_epoch = 0
        self._last_lr = [g["lr"] for g in groups]
        self.mode = self._arg("mode", mode)
        self.threshold_mode = self._arg("threshold_mode", threshold_mode)
        self.threshold = self._arg("threshold", threshold)
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def is_better(self, a, best):
        """Whether metric ``a`` improves on ``best`` by more than the threshold."""
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return a > (best * (self.threshold + 1.0) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metrics, epoch=None):
        """Record one value of the monitored metric (call once per epoch, after the
        optimizer's steps). A refused step changes nothing."""
        if isinstance(metrics, (bool, np.bool_, str, bytes)) or not hasattr(metrics, "__float__"):
            raise TypeError(f"metrics: expected a number, got {type(metrics).__name__} {metrics!r}")
        try:
            current = float(metrics)
        except (TypeError, ValueError):
            raise TypeError(f"metrics: expected a number (or a one-element array), got {metrics!r}") from None
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(_EPOCH_DEPRECATION, UserWarning, stacklevel=2)
            epoch = _counter("epoch", epoch)
        saved = self._attrs()
        try:
            groups = _param_groups(self.optimizer)
            self.last_epoch = epoch
            if self.is_better(current, self.best):
                self.best = current
                self.num_bad_epochs = 0
            else:
                self.num_bad_epochs += 1
            if self.in_cooldown:
                self.cooldown_counter -= 1
                self.num_bad_epochs = 0
            lrs = None
            if self.num_bad_epochs > self.patience:
                lrs = self._reduced_lrs(groups)
                self.cooldown_counter = self.cooldown
                self.num_bad_epochs = 0
            self._check_counters()
            if lrs is not None:
                self._write(groups, lrs, None)
            else:
                self._last_lr = [g["lr"] for g in groups]
        except BaseException:
            self._restore_attrs(saved)
            raise

    def _reduced_lrs(self, groups):
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise ValueError(f"the optimizer now has {len(groups)} param groups but "
                                 f"ReduceLROnPlateau was built with {len(self.min_lrs)} min_lrs")
            self.min_lrs = [self.default_min_lr] * len(groups)
        lrs = []
        for group, min_lr in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, min_lr)
            lrs.append(new if old - new > self.eps else old)
        return lrs

    def _check_together(self, state, name):
        worse = math.inf if state["mode"] == "min" else -math.inf
        if state["mode_worse"] != worse:
            raise ValueError(f"{name}['mode_worse']: expected {worse} for mode={state['mode']!r}, "
                             f"got {state['mode_worse']!r}")
        for key, bound in (("cooldown_counter", "cooldown"), ("num_bad_epochs", "patience")):
            if state[key] > state[bound]:
                raise ValueError(f"{name}[{key!r}]: expected at most {bound}={state[bound]}, got {state[key]}")
        if state["default_min_lr"] is not None and any(m != state["default_min_lr"] for m in state["min_lrs"]):
            raise ValueError(f"{name}['min_lrs']: expected every entry to be default_min_lr="
                             f"{state['default_min_lr']!r}, got {state['min_lrs']!r}")

    def _repr_value(self, param):
        if param == "min_lr":
            return self.default_min_lr if self.default_min_lr is not None else _one_or_list(self.min_lrs)
        return super()._repr_value(param)
