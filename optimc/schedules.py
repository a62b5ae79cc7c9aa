"""Learning-rate schedules for optimc optimizers.

Two interfaces:

* **Scheduler objects** with PyTorch's names, arguments and semantics
  (``torch.optim.lr_scheduler``): they are attached to an optimizer, write
  ``optimizer.param_groups[i]["lr"]`` (and, for :class:`CyclicLR` and
  :class:`OneCycleLR`, the momentum or ``betas[0]``) and are advanced with
  ``scheduler.step()`` after each ``optimizer.step(grads)``; ``select(opt, i, ...)``
  attaches one to some param groups only::

      opt = optimc.SGD([W, b], lr=0.1, momentum=0.9)
      sched = optimc.schedules.CosineAnnealingLR(opt, T_max=100)
      for epoch in range(100):
          opt.step(grads(W, b))
          sched.step()

  Every scheduler has ``get_last_lr()``, ``state_dict()`` and
  ``load_state_dict()``; the state is plain Python data (lists, numbers,
  strings, dicts). As in PyTorch, the functions given to :class:`LambdaLR`,
  :class:`MultiplicativeLR` and :class:`CyclicLR` (``scale_fn``) are not
  saved; only the ``__dict__`` of callable *objects* is. Schedulers store a
  few extra keys in the param groups ("initial_lr", and for the cyclic ones
  "max_lr", "min_lr", "max_momentum", "base_momentum"), as PyTorch does.

* **Functional schedules** for Optax-style code: :func:`constant`,
  :func:`step_decay`, :func:`exponential_decay`, :func:`cosine_decay`,
  :func:`linear_warmup`, :func:`warmup_cosine` and :func:`piecewise_constant`
  return a picklable :class:`Schedule`, a callable ``f(step) -> lr`` of the
  0-based step count, which optimc optimizers accept as ``lr=`` and evaluate
  before each step::

      opt = optimc.Adam([W], lr=optimc.schedules.warmup_cosine(1e-3, 100, 10_000))
"""

from __future__ import annotations

import copy
import math
import numbers
import types
import warnings
from bisect import bisect_right
from collections.abc import Mapping

import numpy as np

__all__ = [
    "LRScheduler", "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR",
    "ConstantLR", "LinearLR", "ExponentialLR", "PolynomialLR",
    "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "CyclicLR",
    "OneCycleLR", "SequentialLR", "ChainedScheduler", "ReduceLROnPlateau",
    "ParamGroupSelection", "select", "Schedule", "constant", "step_decay", "exponential_decay", "cosine_decay",
    "linear_warmup", "warmup_cosine", "piecewise_constant",
]


# --------------------------------------------------------------------------
# argument checking
# --------------------------------------------------------------------------

def _int(name, value, lo):
    """Return ``value`` as a Python int, checking that it is an integer >= lo."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return int(value)


def _real(name, value, lo=-math.inf, hi=math.inf, lo_open=False, hi_open=False):
    """Return ``value`` as a Python float, checking it lies in the given interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if math.isnan(v) or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        if hi == math.inf:
            want = f"{'>' if lo_open else '>='} {lo:g}"
        else:
            want = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name} must be {want}, got {value}")
    return v


def _positive(name, value):
    return _real(name, value, 0.0, lo_open=True)


def _nonneg(name, value):
    return _real(name, value, 0.0)


def _sorted_ints(name, values, strict):
    """A list of non-negative ints in increasing (strict) or non-decreasing order."""
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"{name} must be a list of ints, got {type(values).__name__}") from None
    values = [_int(f"{name}[{i}]", v, 0) for i, v in enumerate(values)]
    for i in range(1, len(values)):
        if values[i] < values[i - 1] or (strict and values[i] == values[i - 1]):
            raise ValueError(f"{name} must be {'strictly ' if strict else ''}increasing, got {values}")
    return values


def _param_groups(optimizer):
    """The optimizer's param groups, checked to hold numeric learning rates."""
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        raise TypeError(f"{type(optimizer).__name__} is not an optimc optimizer: it has no param_groups")
    if isinstance(groups, Mapping) or not hasattr(groups, "__len__"):
        raise TypeError(f"optimizer.param_groups must be a list of groups, got {type(groups).__name__}")
    if len(groups) == 0:
        raise ValueError("optimizer.param_groups is empty")
    for i, group in enumerate(groups):
        try:
            lr = group["lr"]
        except (TypeError, KeyError, IndexError):
            raise TypeError(f"optimizer.param_groups[{i}] is not a param group with an 'lr'") from None
        if callable(lr):
            raise TypeError(
                f"optimizer.param_groups[{i}]['lr'] is a callable schedule ({lr!r}); a scheduler "
                "object needs a numeric lr to drive: use either lr=<schedule> or a scheduler, not both")
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
            raise TypeError(f"optimizer.param_groups[{i}]['lr'] must be a number, got {type(lr).__name__}")
    return groups


def _per_group(name, value, groups, check=None):
    """One value per param group: a list/tuple of the groups' length, or one value for all."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(groups):
            raise ValueError(f"{name} must be one value or a list with one value per param group: "
                             f"got {len(value)} values for {len(groups)} param groups")
        names = [f"{name}[{i}]" for i in range(len(value))]
        values = list(value)
    else:
        names, values = [name] * len(groups), [value] * len(groups)
    return [check(n, v) if check else v for n, v in zip(names, values)]


def _callable(name, fn):
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    return fn


def _momentum_uses_betas(optimizer, groups):
    """True to cycle ``betas[0]``, False to cycle ``momentum`` (betas preferred, as torch)."""
    for key, use_beta1 in (("betas", True), ("momentum", False)):
        if all(key in g for g in groups):
            return use_beta1
    raise ValueError(f"cycle_momentum=True needs an optimizer whose param groups have 'momentum' or "
                     f"'betas'; {type(optimizer).__name__} has neither (pass cycle_momentum=False)")


def _callable_state(fn):
    """What torch saves of a user callable: nothing for functions, ``__dict__`` of objects."""
    if fn is None or not hasattr(fn, "__dict__") or isinstance(fn, (types.FunctionType, types.MethodType)):
        return None
    return copy.deepcopy(fn.__dict__)


# State-dict lists whose length the optimizer (one entry per param group) or the
# scheduler's construction fixes; load_state_dict checks them.
_SIZED_KEYS = {"base_lrs", "_last_lr", "min_lrs", "max_lrs", "base_momentums",
               "max_momentums", "lr_lambdas", "_schedulers"}

_EPOCH_DEPRECATION = ("passing epoch to step() is deprecated (as in torch.optim.lr_scheduler): "
                      "call step() without arguments; the closed form is used where available")


# --------------------------------------------------------------------------
# scheduler objects
# --------------------------------------------------------------------------

class ParamGroupSelection:
    """Some of an optimizer's param groups, so that a scheduler drives only
    those (made by :func:`select`). Schedulers treat it as an optimizer whose
    ``param_groups`` are the selected groups, in the order given."""

    def __init__(self, optimizer, indices):
        groups = _param_groups(optimizer)
        if not indices:
            raise ValueError("groups: select at least one param group")
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, numbers.Integral):
                raise TypeError(f"groups: a param group index must be an int, got {i!r}")
            if not 0 <= i < len(groups):
                raise ValueError(f"groups: param group {i} does not exist "
                                 f"(the optimizer has {len(groups)}: 0..{len(groups) - 1})")
        if len(set(indices)) != len(indices):
            raise ValueError(f"groups: an index is given twice in {list(indices)}")
        self.optimizer = optimizer
        self.indices = tuple(int(i) for i in indices)

    @property
    def param_groups(self):
        groups = self.optimizer.param_groups
        return [groups[i] for i in self.indices]

    def __repr__(self):
        return f"select({type(self.optimizer).__name__}, groups {list(self.indices)})"


def select(optimizer, *indices):
    """Attach a scheduler to some param groups only::

        sched = StepLR(select(opt, 1), step_size=30)   # group 1's lr; the others untouched
    """
    return ParamGroupSelection(optimizer, indices)


class LRScheduler:
    """Base class: attaches to an optimizer and does the bookkeeping.

    Subclasses give the rule in :meth:`get_lr` (the lrs for ``self.last_epoch``,
    read from ``base_lrs`` for closed forms or from the groups' current lrs
    for chainable ones) and optionally :meth:`_closed_form_lr`, used when an
    epoch is passed explicitly (and by :class:`SequentialLR` at milestones).

    Args:
        optimizer: an optimc optimizer (anything with ``param_groups``, a list of
            dict-like groups holding a numeric ``"lr"``).
        last_epoch: index of the last epoch; ``-1`` starts a new schedule. Any
            other value resumes and needs ``"initial_lr"`` in every group.
    """

    _is_initial = False   # True while the constructor performs the first step

    def __init__(self, optimizer, last_epoch=-1):
        groups = _param_groups(optimizer)
        self.optimizer = optimizer
        last_epoch = _int("last_epoch", last_epoch, -1)
        for i, group in enumerate(groups):
            if "initial_lr" not in group:
                if last_epoch != -1:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when "
                                   "resuming a scheduler with last_epoch >= 0")
                group["initial_lr"] = group["lr"]
        self.base_lrs = [g["initial_lr"] for g in groups]
        self.last_epoch = last_epoch
        self._initial_step()

    # -- the rule -----------------------------------------------------------
    def get_lr(self):
        """The learning rates for ``self.last_epoch``, one per param group. Each rule
        defines it; schedulers built from others (SequentialLR, ChainedScheduler,
        ReduceLROnPlateau) override ``step`` instead and never call it."""
        raise NotImplementedError(f"{type(self).__name__} defines no get_lr")

    def _closed_form_lr(self):
        """Closed-form lrs at ``self.last_epoch``, or None where there is none."""
        return None

    # -- bookkeeping --------------------------------------------------------
    def _initial_step(self):
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            del self._is_initial

    def step(self, epoch=None):
        """Advance the schedule by one epoch/batch (call after ``optimizer.step``)."""
        self._step_count += 1
        if epoch is not None:
            warnings.warn(_EPOCH_DEPRECATION, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch=None):
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            values = self._closed_form_lr()
            if values is None:
                values = self.get_lr()
        self._apply(values)

    def _groups(self):
        return self.optimizer.param_groups

    def _lrs(self):
        return [g["lr"] for g in self._groups()]

    def _apply(self, lrs):
        """Write one lr per group, then record what the groups hold."""
        groups = self._groups()
        if len(lrs) != len(groups):
            raise ValueError(f"the optimizer has {len(groups)} param groups but {type(self).__name__} "
                             f"was built for {len(lrs)}; create schedulers after add_param_group")
        for group, lr in zip(groups, lrs):
            group["lr"] = lr
        self._last_lr = self._lrs()

    def _set_momentum(self, values):
        """Write momentum (or beta1, keeping the rest of ``betas``) into each group."""
        for group, m in zip(self._groups(), values):
            if self.use_beta1:
                group["betas"] = (m, *tuple(group["betas"])[1:])
            else:
                group["momentum"] = m

    def _setup_momentum(self, groups, cycle_momentum, base_momentum, max_momentum, last_epoch):
        """Shared by CyclicLR and OneCycleLR: validate and initialise momentum cycling."""
        self.cycle_momentum = bool(cycle_momentum)
        if not self.cycle_momentum:
            return None, None
        self.use_beta1 = _momentum_uses_betas(self.optimizer, groups)
        maxs = _per_group("max_momentum", max_momentum, groups, lambda n, v: _real(n, v, 0.0, 1.0))
        bases = _per_group("base_momentum", base_momentum, groups, lambda n, v: _real(n, v, 0.0, 1.0))
        if last_epoch == -1:
            try:
                self._set_momentum(maxs)
            except (ValueError, TypeError) as e:
                key = "betas" if self.use_beta1 else "momentum"
                raise type(e)(f"{type(self).__name__}(cycle_momentum=True) cannot set the param groups' "
                              f"{key!r}: {e} (pass cycle_momentum=False, or create the optimizer "
                              f"so that it can take them, e.g. with momentum > 0)") from e
            for group, m, b in zip(groups, maxs, bases):
                group["max_momentum"] = m
                group["base_momentum"] = b
        return bases, maxs

    def get_last_lr(self):
        """The learning rates most recently set by this scheduler (a new list)."""
        return list(self._last_lr)

    # -- state --------------------------------------------------------------
    def state_dict(self):
        """The scheduler's state as plain data (a new dict; the optimizer is not included).

        User functions (``lr_lambda``, ``scale_fn``) are saved as ``None``,
        callable objects as a copy of their ``__dict__``; the schedulers wrapped
        by SequentialLR/ChainedScheduler as their own state dicts.
        """
        state = {}
        for key, value in self.__dict__.items():
            if key == "optimizer":
                continue
            if key == "lr_lambdas":
                value = [_callable_state(f) for f in value]
            elif key == "_scale_fn_custom":
                value = _callable_state(value)
            elif key == "_schedulers":
                value = [s.state_dict() for s in value]
            else:
                value = copy.deepcopy(value)
            state[key] = value
        return state

    def load_state_dict(self, state_dict):
        """Load a state made by :meth:`state_dict` of a scheduler of the same kind.

        The whole state (with those of wrapped schedulers) is checked before
        anything is taken: same keys, per-group lists of the right length.
        Restore the optimizer's param groups too (their lrs and the extra keys
        schedulers store there), as with torch.
        """
        self._check_state(state_dict)
        self._take_state(state_dict)

    def _check_state(self, state_dict):
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        mine = self.state_dict()
        missing, unknown = set(mine) - set(state_dict), set(state_dict) - set(mine)
        if missing or unknown:
            raise ValueError(f"state_dict does not fit {type(self).__name__} (is it from another "
                             f"scheduler or configuration?): missing keys {sorted(missing)}, "
                             f"unexpected keys {sorted(unknown)}")
        for key in _SIZED_KEYS & set(mine):
            if isinstance(mine[key], list) and (not isinstance(state_dict[key], (list, tuple))
                                                or len(state_dict[key]) != len(mine[key])):
                raise ValueError(f"state_dict[{key!r}] must be a list of {len(mine[key])} entries, "
                                 f"got {state_dict[key]!r}")
        for scheduler, saved in zip(getattr(self, "_schedulers", ()), state_dict.get("_schedulers", ())):
            scheduler._check_state(saved)

    def _take_state(self, state_dict):
        for key, value in state_dict.items():
            if key == "lr_lambdas":
                for fn, saved in zip(self.lr_lambdas, value):
                    if saved is not None:
                        fn.__dict__.update(copy.deepcopy(saved))
            elif key == "_scale_fn_custom":
                if value is not None and self._scale_fn_custom is not None:
                    self._scale_fn_custom.__dict__.update(copy.deepcopy(value))
            elif key == "_schedulers":
                for scheduler, saved in zip(self._schedulers, value):
                    scheduler._take_state(saved)
            else:
                setattr(self, key, copy.deepcopy(value))

    def __repr__(self):
        return f"{type(self).__name__}(last_epoch={self.last_epoch}, last_lr={getattr(self, '_last_lr', None)})"


class _ChainableLR(LRScheduler):
    """A chainable rule lr_t = lr_{t-1} * f_t applied to the groups' current lrs.

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

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.lr_lambdas = _per_group("lr_lambda", lr_lambda, _param_groups(optimizer), _callable)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * fn(self.last_epoch) for fn, base in zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(_ChainableLR):
    """lr_t = lr_{t-1} * lr_lambda(t) for t >= 1; one function, or one per group."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.lr_lambdas = _per_group("lr_lambda", lr_lambda, _param_groups(optimizer), _callable)
        super().__init__(optimizer, last_epoch)

    def _factor(self):
        return None if self._is_initial else [fn(self.last_epoch) for fn in self.lr_lambdas]


class StepLR(_ChainableLR):
    """lr_t = base_lr * gamma ** floor(t / step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _int("step_size", step_size, 1)
        self.gamma = _positive("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _factor(self):
        return None if self.last_epoch == 0 or self.last_epoch % self.step_size else self.gamma

    def _closed_factor(self):
        return self.gamma ** (self.last_epoch // self.step_size)


class MultiStepLR(_ChainableLR):
    """lr_t = base_lr * gamma ** (number of milestones <= t).

    ``milestones`` must be sorted; a milestone listed n times decays by gamma**n (as torch).
    """

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = _sorted_ints("milestones", milestones, strict=False)
        self.gamma = _positive("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _factor(self):
        n = self.milestones.count(self.last_epoch)
        return self.gamma ** n if n else None

    def _closed_factor(self):
        return self.gamma ** bisect_right(self.milestones, self.last_epoch)


class ConstantLR(_ChainableLR):
    """lr_t = base_lr * factor for t < total_iters, base_lr afterwards."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        self.factor = _real("factor", factor, 0.0, 1.0, lo_open=True)
        self.total_iters = _int("total_iters", total_iters, 1)
        super().__init__(optimizer, last_epoch)

    def _factor(self):
        if self.last_epoch == 0:
            return self.factor
        return 1.0 / self.factor if self.last_epoch == self.total_iters else None

    def _closed_factor(self):
        return self.factor + (self.last_epoch >= self.total_iters) * (1 - self.factor)


class LinearLR(_ChainableLR):
    """lr_t = base_lr * (s + (e - s) * min(t, total_iters) / total_iters), s/e = start/end_factor."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        self.start_factor = _real("start_factor", start_factor, 0.0, 1.0, lo_open=True)
        self.end_factor = _real("end_factor", end_factor, 0.0, 1.0)
        self.total_iters = _int("total_iters", total_iters, 1)
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

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = _positive("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _factor(self):
        return None if self._is_initial else self.gamma

    def _closed_factor(self):
        return self.gamma ** self.last_epoch


class PolynomialLR(_ChainableLR):
    """lr_t = base_lr * (1 - min(t, total_iters) / total_iters) ** power."""

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        self.total_iters = _int("total_iters", total_iters, 1)
        self.power = _nonneg("power", power)
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

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _positive("T_max", T_max)
        if isinstance(T_max, numbers.Integral):
            self.T_max = int(T_max)
        self.eta_min = _nonneg("eta_min", eta_min)
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
    next one T_mult times longer. ``step(epoch)`` accepts fractional epochs.
    """

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        self.T_0 = self.T_i = _int("T_0", T_0, 1)
        self.T_mult = _int("T_mult", T_mult, 1)
        self.eta_min = _nonneg("eta_min", eta_min)
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        lo = self.eta_min
        return [lo + (base - lo) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
                for base in self.base_lrs]

    def step(self, epoch=None):
        """Advance by one epoch, or jump to ``epoch`` (a float allowed, e.g. ``e + i / iters``)."""
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            _real("epoch", epoch, 0.0)
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
        self._apply(self.get_lr())


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

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None,
                 mode="triangular", gamma=1.0, scale_fn=None, scale_mode="cycle",
                 cycle_momentum=True, base_momentum=0.8, max_momentum=0.9, last_epoch=-1):
        groups = _param_groups(optimizer)
        self.optimizer = optimizer
        last_epoch = _int("last_epoch", last_epoch, -1)
        base_lrs = _per_group("base_lr", base_lr, groups, _nonneg)
        self.max_lrs = _per_group("max_lr", max_lr, groups, _nonneg)
        up = _positive("step_size_up", step_size_up)
        down = up if step_size_down is None else _positive("step_size_down", step_size_down)
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        if scale_fn is None and mode not in ("triangular", "triangular2", "exp_range"):
            raise ValueError(f"mode must be 'triangular', 'triangular2' or 'exp_range' (or give "
                             f"scale_fn), got {mode!r}")
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}")
        self.mode = mode
        self.gamma = _positive("gamma", gamma)
        self._scale_fn_custom = None if scale_fn is None else _callable("scale_fn", scale_fn)
        self.scale_mode = scale_mode if scale_fn is not None else (
            "iterations" if mode == "exp_range" else "cycle")
        bases, maxs = self._setup_momentum(groups, cycle_momentum, base_momentum, max_momentum, last_epoch)
        if self.cycle_momentum:
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
            return 1 / (2.0 ** (x - 1))
        return self.gamma ** x

    def get_lr(self):
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        s = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        if self.cycle_momentum:
            self._set_momentum([hi - (hi - lo) * s * scale
                                for lo, hi in zip(self.base_momentums, self.max_momentums)])
        return [lo + (hi - lo) * s * scale for lo, hi in zip(self.base_lrs, self.max_lrs)]


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

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 last_epoch=-1):
        groups = _param_groups(optimizer)
        self.optimizer = optimizer
        last_epoch = _int("last_epoch", last_epoch, -1)
        if total_steps is not None:
            self.total_steps = _int("total_steps", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = _int("epochs", epochs, 1) * _int("steps_per_epoch", steps_per_epoch, 1)
        else:
            raise ValueError("OneCycleLR needs total_steps, or both epochs and steps_per_epoch")
        pct_start = _real("pct_start", pct_start, 0.0, 1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self._anneal_func_type = anneal_strategy
        div_factor = _positive("div_factor", div_factor)
        final_div_factor = _positive("final_div_factor", final_div_factor)
        end1 = float(pct_start * self.total_steps) - 1
        phases = [(end1, "initial_lr", "max_lr", "max_momentum", "base_momentum")]
        if three_phase:
            phases += [(float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr",
                        "base_momentum", "max_momentum"),
                       (self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            phases += [(self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        keys = ("end_step", "start_lr", "end_lr", "start_momentum", "end_momentum")
        self._schedule_phases = [dict(zip(keys, p)) for p in phases]
        max_lrs = _per_group("max_lr", max_lr, groups, _nonneg)
        self._setup_momentum(groups, cycle_momentum, base_momentum, max_momentum, last_epoch)
        if last_epoch == -1:
            for group, m in zip(groups, max_lrs):
                group["initial_lr"] = m / div_factor
                group["max_lr"] = m
                group["min_lr"] = group["initial_lr"] / final_div_factor
        super().__init__(optimizer, last_epoch)

    def _anneal(self, start, end, pct):
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self):
        t = self.last_epoch
        if t > self.total_steps:
            raise ValueError(f"Tried to step {t} times. The specified number of total steps is "
                             f"{self.total_steps}")
        lrs, momenta = [], []
        for group in self._groups():
            start = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end = phase["end_step"]
                if t <= end or i == len(self._schedule_phases) - 1:
                    # torch extrapolates past the last phase (a negative lr with "linear"
                    # at t == total_steps) and divides by zero on an empty phase: hold the end.
                    pct = min((t - start) / (end - start), 1.0) if end != start else 1.0
                    lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct))
                    if self.cycle_momentum:
                        momenta.append(self._anneal(group[phase["start_momentum"]],
                                                    group[phase["end_momentum"]], pct))
                    break
                start = end
        if self.cycle_momentum:
            self._set_momentum(momenta)
        return lrs


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
    return list(schedulers)


class SequentialLR(LRScheduler):
    """Runs ``schedulers[i]`` for milestones[i-1] <= t < milestones[i].

    At a milestone the next scheduler starts from its closed form at epoch 0
    (as torch). ``len(milestones) == len(schedulers) - 1``; milestones sorted.
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        groups = _param_groups(optimizer)
        self._schedulers = _check_schedulers("SequentialLR", schedulers, optimizer)
        milestones = _sorted_ints("milestones", milestones, strict=False)
        if len(milestones) != len(self._schedulers) - 1:
            raise ValueError(f"SequentialLR expects one milestone fewer than schedulers, got "
                             f"{len(self._schedulers)} schedulers and {len(milestones)} milestones")
        self._milestones = milestones
        self.last_epoch = _int("last_epoch", last_epoch, -1) + 1
        self.optimizer = optimizer
        for group in groups:                 # back to the initial lrs ...
            group["lr"] = group["initial_lr"]
        self._undo(self)                     # ... and undo the sub-schedulers' initial steps
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = self._schedulers[idx].get_last_lr()

    @staticmethod
    def _undo(scheduler):
        if hasattr(scheduler, "_schedulers"):
            for s in scheduler._schedulers:
                SequentialLR._undo(s)
        else:
            scheduler.last_epoch -= 1

    def step(self):
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(LRScheduler):
    """Steps every scheduler in ``schedulers`` on each ``step()``; their chainable rules compose."""

    def __init__(self, schedulers, optimizer=None):
        if optimizer is None and isinstance(schedulers, (list, tuple)) and schedulers:
            optimizer = getattr(schedulers[0], "optimizer", None)
        self._schedulers = _check_schedulers("ChainedScheduler", schedulers, optimizer)
        self.optimizer = optimizer
        self._last_lr = self._lrs()

    def step(self):
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = self._lrs()


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lrs by ``factor`` when a metric stops improving.

    ``step(metric)``: the metric improves if it is below best * (1 - threshold)
    ("min", "rel"), below best - threshold ("min", "abs"), above
    best * (1 + threshold) ("max", "rel") or above best + threshold ("max",
    "abs"). After more than ``patience`` epochs without improvement each lr
    becomes max(lr * factor, min_lr) (unless that changes it by <= eps), and
    ``cooldown`` epochs are ignored.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        groups = _param_groups(optimizer)
        self.factor = _real("factor", factor, 0.0, 1.0, hi_open=True)
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            self.default_min_lr = None
            self.min_lrs = _per_group("min_lr", min_lr, groups, _nonneg)
        else:
            self.default_min_lr = _nonneg("min_lr", min_lr)
            self.min_lrs = [self.default_min_lr] * len(groups)
        self.patience = _int("patience", patience, 0)
        self.cooldown = _int("cooldown", cooldown, 0)
        self.eps = _nonneg("eps", eps)
        self.last_epoch = 0
        self._last_lr = self._lrs()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.mode, self.threshold_mode = mode, threshold_mode
        self.threshold = _nonneg("threshold", threshold)
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
        """Record one value of the monitored metric (call once per epoch)."""
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(_EPOCH_DEPRECATION, UserWarning, stacklevel=2)
        self.last_epoch = epoch
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self._lrs()

    def _reduce_lr(self):
        groups = self._groups()
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(f"the optimizer now has {len(groups)} param groups but "
                                   f"ReduceLROnPlateau was built with {len(self.min_lrs)} min_lrs")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs):
            old = float(group["lr"])
            new = max(old * self.factor, min_lr)
            if old - new > self.eps:
                group["lr"] = new


# --------------------------------------------------------------------------
# functional schedules: f(step) -> lr, step = 0, 1, 2, ... (0-based)
# --------------------------------------------------------------------------

class Schedule:
    """A learning rate as a function of the 0-based step count: ``lr = schedule(step)``.

    Made by the schedule functions of this module; picklable and comparable.
    ``schedule(step)`` takes a non-negative int and returns a float; given an
    array or list of steps it returns a float64 NumPy array (handy for plots).
    """

    __slots__ = ("_rule", "_args")

    def __init__(self, rule, **args):
        self._rule, self._args = rule, args

    def __call__(self, step):
        if isinstance(step, (np.ndarray, list, tuple, range)):
            steps = np.asarray(step)
            return np.array([self(s.item()) for s in steps.ravel()], dtype=np.float64).reshape(steps.shape)
        return float(self._rule(_int("step", step, 0), **self._args))

    def __getstate__(self):
        return (self._rule, self._args)

    def __setstate__(self, state):
        self._rule, self._args = state

    def __eq__(self, other):
        return isinstance(other, Schedule) and (self._rule, self._args) == (other._rule, other._args)

    def __hash__(self):
        return hash((self._rule, tuple(self._args)))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._args.items())
        return f"{self._rule.__name__.lstrip('_')}({args})"


def _constant(t, lr):
    return lr


def _step_decay(t, lr, step_size, gamma):
    return lr * gamma ** (t // step_size)


def _exponential_decay(t, lr, gamma, decay_steps, staircase):
    return lr * gamma ** ((t // decay_steps) if staircase else (t / decay_steps))


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


def constant(lr):
    """A constant learning rate: ``lr(t) = lr``."""
    return Schedule(_constant, lr=_nonneg("lr", lr))


def step_decay(lr, step_size, gamma=0.1):
    """Decay by ``gamma`` every ``step_size`` steps (torch's StepLR):

    ``lr(t) = lr * gamma ** floor(t / step_size)``.
    """
    return Schedule(_step_decay, lr=_nonneg("lr", lr), step_size=_int("step_size", step_size, 1),
                    gamma=_positive("gamma", gamma))


def exponential_decay(lr, gamma, decay_steps=1, staircase=False):
    """Exponential decay by ``gamma`` per ``decay_steps`` steps:

    ``lr(t) = lr * gamma ** (t / decay_steps)``, or ``gamma ** floor(t / decay_steps)``
    with ``staircase=True``. With ``decay_steps=1`` this is torch's ExponentialLR.
    """
    return Schedule(_exponential_decay, lr=_nonneg("lr", lr), gamma=_positive("gamma", gamma),
                    decay_steps=_int("decay_steps", decay_steps, 1), staircase=bool(staircase))


def cosine_decay(lr, decay_steps, end_lr=0.0):
    """Cosine decay from ``lr`` to ``end_lr`` over ``decay_steps`` steps, then constant:

    ``lr(t) = end_lr + (lr - end_lr) * (1 + cos(pi * min(t, T) / T)) / 2`` with T = decay_steps.
    For t <= T this is torch's CosineAnnealingLR(T_max=T, eta_min=end_lr).
    """
    return Schedule(_cosine_decay, lr=_nonneg("lr", lr), decay_steps=_int("decay_steps", decay_steps, 1),
                    end_lr=_nonneg("end_lr", end_lr))


def linear_warmup(lr, warmup_steps, start_lr=0.0):
    """Linear ramp from ``start_lr`` to ``lr`` over ``warmup_steps`` steps, then constant:

    ``lr(t) = start_lr + (lr - start_lr) * t / W`` for t < W = warmup_steps, ``lr`` after.
    With the default ``start_lr=0`` the very first step (t = 0) has lr 0.
    """
    return Schedule(_linear_warmup, lr=_nonneg("lr", lr),
                    warmup_steps=_int("warmup_steps", warmup_steps, 0), start_lr=_nonneg("start_lr", start_lr))


def warmup_cosine(peak_lr, warmup_steps, total_steps, end_lr=0.0, start_lr=0.0):
    """Linear warm-up to ``peak_lr``, then cosine decay to ``end_lr`` at ``total_steps``:

    with W = warmup_steps and T = total_steps,
    ``lr(t) = start_lr + (peak_lr - start_lr) * t / W`` for t < W, and
    ``lr(t) = end_lr + (peak_lr - end_lr) * (1 + cos(pi * min(t - W, T - W) / (T - W))) / 2`` for t >= W
    (so ``lr(T) = end_lr``, held afterwards). Like Optax's warmup_cosine_decay_schedule.
    """
    peak_lr = _nonneg("peak_lr", peak_lr)
    warmup_steps = _int("warmup_steps", warmup_steps, 0)
    total_steps = _int("total_steps", total_steps, 1)
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps must be > warmup_steps, got total_steps={total_steps}, "
                         f"warmup_steps={warmup_steps}")
    return Schedule(_warmup_cosine, peak_lr=peak_lr, warmup_steps=warmup_steps, total_steps=total_steps,
                    end_lr=_nonneg("end_lr", end_lr), start_lr=_nonneg("start_lr", start_lr))


def piecewise_constant(boundaries, values):
    """Piecewise-constant lr: ``values[i]`` for ``boundaries[i-1] <= t < boundaries[i]``:

    ``lr(t) = values[k]`` where k = number of boundaries <= t; boundaries strictly
    increasing, ``len(values) == len(boundaries) + 1``. E.g.
    ``piecewise_constant([100, 200], [0.1, 0.01, 0.001])`` is torch's
    MultiStepLR(milestones=[100, 200], gamma=0.1) from lr 0.1.
    """
    boundaries = _sorted_ints("boundaries", boundaries, strict=True)
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"values must be a list of learning rates, got {type(values).__name__}")
    if len(values) != len(boundaries) + 1:
        raise ValueError(f"values must have len(boundaries) + 1 = {len(boundaries) + 1} entries, "
                         f"got {len(values)}")
    return Schedule(_piecewise_constant, boundaries=tuple(boundaries),
                    values=tuple(_nonneg(f"values[{i}]", v) for i, v in enumerate(values)))
