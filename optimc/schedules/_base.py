"""The bookkeeping every scheduler shares: :class:`LRScheduler`, :func:`select`.

Every scheduler describes its state once, in ``_fields``: for each attribute
that ``state_dict()`` holds, the check its value must pass. The constructor
checks its arguments with those checks, ``load_state_dict`` checks every
field of a state with them before it takes any, and each ``step()`` checks the
counters it moved, so that a scheduler never reaches a state it would refuse
to load. A step computes and checks every new value first and writes the
param groups last; a refused step (or constructor) changes nothing.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import html
import inspect
import math
import numbers
import types
import warnings
from collections.abc import Mapping

import numpy as np

from .. import _checks


# --------------------------------------------------------------------------
# kinds of state fields and their checks (shared by constructors and load_state_dict)
# --------------------------------------------------------------------------

_epoch = functools.partial(_checks.integer, lo=-1)            # -1: not started


_counter = functools.partial(_checks.integer, lo=0)


# momentum or beta1: the range the optimizers accept for them
_momentum = functools.partial(_checks.real, lo=0.0, hi=1.0, hi_open=True)           # [0, 1)


class _PerGroup:
    """A field holding one value per param group, each passing ``check``."""

    def __init__(self, check):
        self.check = check


class _Fixed:
    """A field the optimizer decides (e.g. whether beta1 or momentum is cycled):
    a loaded state must pass ``check`` and agree with this scheduler's value."""

    def __init__(self, check):
        self.check = check


class _CallableStates:
    """What is saved of user callables: ``None`` for functions, the ``__dict__`` of
    callable objects (as torch); one entry per group or, if not ``per_group``, one."""

    def __init__(self, per_group):
        self.per_group = per_group


_SCHEDULERS = object()   # the field holding wrapped schedulers' states


def _check_like(name, value, mine):
    """A field a subclass did not declare in ``_fields``: the same kind of value as now."""
    if isinstance(mine, (bool, np.bool_)):
        return _checks.flag(name, value)
    if isinstance(mine, numbers.Integral):
        return _checks.integer(name, value, hi=None)
    if isinstance(mine, numbers.Real):
        return _checks.real(name, value, finite=math.isfinite(mine))
    if isinstance(mine, str) and not isinstance(value, str):
        raise TypeError(f"{name}: expected a string, got {value!r}")
    if isinstance(mine, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(mine):
            raise ValueError(f"{name}: expected a list of {len(mine)} entries, got {value!r}")
        return type(mine)(_check_like(f"{name}[{i}]", v, m) for i, (v, m) in enumerate(zip(value, mine)))
    return copy.deepcopy(value)


def _callable_state(fn):
    """What torch saves of a user callable: nothing for functions, ``__dict__`` of objects."""
    if fn is None or not hasattr(fn, "__dict__") or isinstance(fn, (types.FunctionType, types.MethodType)):
        return None
    return copy.deepcopy(fn.__dict__)


def _check_callable_state(name, value, mine):
    if mine is None:
        if value is not None:
            raise ValueError(f"{name}: expected None (this scheduler's callable is a function, which "
                             f"saves no state), got {type(value).__name__} {value!r}")
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"{name}: expected a dict of the callable object's attributes, got {value!r}")
    return copy.deepcopy(dict(value))

# --------------------------------------------------------------------------
# the optimizer's param groups
# --------------------------------------------------------------------------

def _param_groups(optimizer):
    """The optimizer's param groups, checked to hold learning rates (finite numbers >= 0)."""
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        raise TypeError(f"{type(optimizer).__name__} is not an optimc optimizer: it has no param_groups")
    if isinstance(groups, Mapping) or not hasattr(groups, "__len__"):
        raise TypeError(f"optimizer.param_groups: expected a list of groups, got {type(groups).__name__}")
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
        _checks.nonneg(f"optimizer.param_groups[{i}]['lr']", lr)
    return groups


def _group_value(groups, i, key, check=_checks.nonneg):
    """A value a scheduler keeps in ``groups[i][key]`` (OneCycleLR's "max_lr" ...), checked."""
    try:
        value = groups[i][key]
    except KeyError:
        raise KeyError(f"param_groups[{i}] has no {key!r}, which this scheduler stores there: restore "
                       "the optimizer's state_dict too (it holds these keys), or build the scheduler anew") from None
    return check(f"param_groups[{i}][{key!r}]", value)


def _per_group(name, value, groups, check):
    """One value per param group: a list/tuple of the groups' length, or one value for all."""
    if isinstance(value, (list, tuple)):
        if len(value) != len(groups):
            raise ValueError(f"{name}: expected one value or a list with one value per param group: "
                             f"got {len(value)} values for {len(groups)} param groups")
        return [check(f"{name}[{i}]", v) for i, v in enumerate(value)]
    value = check(name, value)
    return [value] * len(groups)


def _restore_groups(groups, before):
    """Put every group back as in ``before`` (copies of the groups): keys added since
    are removed, changed ones written back."""
    for group, old in zip(groups, before):
        for key in [k for k in group if k not in old]:
            del group[key]
        for key, value in old.items():
            if key not in group or group[key] is not value:
                group[key] = value


@contextlib.contextmanager
def _all_or_nothing(groups):
    """Undo every change to the param groups if the block raises."""
    before = [dict(g) for g in groups]
    try:
        yield
    except BaseException:
        _restore_groups(groups, before)
        raise

# --------------------------------------------------------------------------
# messages and display
# --------------------------------------------------------------------------

_EPOCH_DEPRECATION = ("passing epoch to step() is deprecated (as in torch.optim.lr_scheduler): "
                      "call step() without arguments; the closed form is used where available")


_ORDER_WARNING = ("{name}.step() was called before the optimizer's first step(): call "
                  "optimizer.step(grads) first and scheduler.step() after it, else the schedule's first "
                  "learning rate is never used (torch.optim.lr_scheduler warns the same)")


def _fmt(value):
    """A value as the repr of a scheduler shows it."""
    if isinstance(value, LRScheduler):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_fmt, value)) + "]"
    if callable(value):
        return getattr(value, "__name__", None) or type(value).__name__
    return repr(value)


def _tidy(x):
    """A derived float without its rounding noise (20.000000000000004 -> 20.0), for display."""
    return float(f"{x:.12g}")


def _one_or_list(values):
    """A per-group list shown as one value when every group has the same."""
    return values[0] if all(v is values[0] or v == values[0] for v in values) else list(values)


_MISSING = object()   # an argument a repr does not show


# --------------------------------------------------------------------------
# the base class, and schedulers for some param groups
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
            if isinstance(i, (bool, np.bool_)) or not isinstance(i, numbers.Integral):
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
        return f"select({type(self.optimizer).__name__}, {', '.join(map(str, self.indices))})"


def select(optimizer, *indices):
    """Attach a scheduler to some param groups only::

        sched = StepLR(select(opt, 1), step_size=30)   # group 1's lr; the others untouched
    """
    return ParamGroupSelection(optimizer, indices)


class LRScheduler:
    """Base class: attaches to an optimizer and does the bookkeeping.

    Subclasses give the rule in :meth:`get_lr` (the lrs for ``self.last_epoch``,
    read from ``base_lrs`` for closed forms or from :meth:`_lrs` for chainable
    ones) and optionally :meth:`_closed_form_lr`, used when an epoch is passed
    explicitly (and by :class:`SequentialLR` at milestones); rules that also set
    momentum give :meth:`_rule` instead. ``_fields`` names the check of each
    attribute the state holds (merged along the class hierarchy); an attribute
    a subclass does not declare there must keep the kind of value it has
    (int, float, string, list of the same length) when a state is loaded.

    Args:
        optimizer: an optimc optimizer (anything with ``param_groups``, a list of
            dict-like groups holding a numeric ``"lr"``), or :func:`select` of one.
        last_epoch: index of the last epoch; ``-1`` starts a new schedule. Any
            other value resumes and needs ``"initial_lr"`` in every group.
    """

    _fields = {
        "base_lrs": _PerGroup(_checks.nonneg),
        "last_epoch": _epoch,
        "_step_count": _counter,
        "_last_lr": _PerGroup(_checks.nonneg),
    }
    _counters = ("last_epoch", "_step_count")   # what a step moves: checked after each step
    _epoch_deprecated = True                    # step(epoch) warns (CosineAnnealingWarmRestarts: no)
    _is_initial = False                         # True while the constructor performs the first step
    _input_lrs = None                           # the lrs a rule builds on, while it computes

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._field_specs = {**cls._field_specs, **cls.__dict__.get("_fields", {})}

    def __init__(self, optimizer, last_epoch=-1):
        groups = _param_groups(optimizer)
        self.optimizer = optimizer
        last_epoch = self._arg("last_epoch", last_epoch)
        missing = [i for i, g in enumerate(groups) if "initial_lr" not in g]
        if missing and last_epoch != -1:
            raise KeyError(f"param 'initial_lr' is not specified in param_groups[{missing[0]}] when "
                           "resuming a scheduler with last_epoch >= 0")
        with _all_or_nothing(groups):
            for i in missing:
                groups[i]["initial_lr"] = groups[i]["lr"]
            self.base_lrs = [_group_value(groups, i, "initial_lr") for i in range(len(groups))]
            self.last_epoch = last_epoch
            self._initial_step()

    def _arg(self, key, value, name=None, groups=None):
        """A constructor argument, checked as its state field ``key`` is on load."""
        spec = self._field_specs[key]
        if isinstance(spec, _PerGroup):
            return _per_group(name or key, value, groups, spec.check)
        if isinstance(spec, _Fixed):
            spec = spec.check
        return spec(name or key, value)

    # -- the rule -----------------------------------------------------------
    def get_lr(self):
        """The learning rates for ``self.last_epoch``, one per param group. Each rule
        defines it; schedulers built from others (SequentialLR, ChainedScheduler,
        ReduceLROnPlateau) step differently and never call it."""
        raise NotImplementedError(f"{type(self).__name__} defines no get_lr")

    def _rule(self):
        """(lrs, momenta) for ``self.last_epoch``; momenta is None or ("momentum" or
        "betas", one value per group) for rules that cycle momentum."""
        return self.get_lr(), None

    def _closed_form_lr(self):
        """Closed-form lrs at ``self.last_epoch``, or None where there is none."""
        return None

    def _lrs(self):
        """The lrs a chainable rule builds on: the groups' current ones, or inside a
        ChainedScheduler step those the schedulers before this one computed."""
        if self._input_lrs is not None:
            return list(self._input_lrs)
        return [g["lr"] for g in self._groups()]

    # -- stepping -----------------------------------------------------------
    def step(self, epoch=None):
        """Advance the schedule by one epoch/batch (call after ``optimizer.step``).

        Every new value is computed and checked before the first is written: a
        step that raises leaves the param groups and the scheduler as they were.
        """
        self._warn_if_optimizer_not_stepped()
        if epoch is not None and self._epoch_deprecated:
            warnings.warn(_EPOCH_DEPRECATION, UserWarning, stacklevel=2)
        self._step_all_or_nothing(epoch)

    def _initial_step(self):
        self._step_count = 0
        self._is_initial = True
        try:
            self._step_all_or_nothing(None)
        finally:
            del self._is_initial

    def _step_all_or_nothing(self, epoch):
        saved = self._attrs()
        try:
            groups = _param_groups(self.optimizer)
            try:
                lrs, momenta = self._advance(epoch, [g["lr"] for g in groups])
            except (ZeroDivisionError, OverflowError) as e:
                raise ValueError(f"{type(self).__name__}: cannot compute the next learning rates: {e}") from e
            self._check_counters()
            self._write(groups, lrs, momenta)
        except BaseException:
            self._restore_attrs(saved)
            raise

    def _advance(self, epoch, lrs):
        """One ``step()``: count it and move to the next (or the given) epoch."""
        self._step_count += 1
        return self._move(epoch, lrs)

    def _move(self, epoch, lrs):
        """Move to the next epoch (or to ``epoch``) and compute the values there, from
        ``lrs`` where the rule is chainable. Changes only this scheduler's counters."""
        self._input_lrs = lrs
        try:
            if epoch is None:
                self.last_epoch += 1
                return self._rule()
            self.last_epoch = _checks.integer("epoch", epoch, 0)
            closed = self._closed_form_lr()
            return (closed, None) if closed is not None else self._rule()
        finally:
            del self._input_lrs

    def _check_values(self, lrs, momenta, n_groups):
        """The computed values as floats, each checked; nothing is written yet."""
        name = type(self).__name__
        if len(lrs) != n_groups:
            raise ValueError(f"the optimizer has {n_groups} param groups but {name} was built for "
                             f"{len(lrs)}; create schedulers after add_param_group")
        lrs = [_checks.nonneg(f"{name}: the lr computed for param group {i}", v) for i, v in enumerate(lrs)]
        if momenta is not None:
            key, values = momenta
            momenta = key, [_momentum(f"{name}: the {key} computed for param group {i}", v)
                            for i, v in enumerate(values)]
        return lrs, momenta

    def _write(self, groups, lrs, momenta):
        """Check every value, then write them all (all or nothing)."""
        lrs, momenta = self._check_values(lrs, momenta, len(groups))
        with _all_or_nothing(groups):
            for group, lr in zip(groups, lrs):
                group["lr"] = lr
            if momenta is not None:
                key, values = momenta
                for group, m in zip(groups, values):
                    group[key] = (m, *tuple(group["betas"])[1:]) if key == "betas" else m
        self._last_lr = [g["lr"] for g in groups]

    def _check_counters(self):
        """The counters a step moved pass their load checks: a scheduler never reaches a
        state it would refuse (a count past 2**63 - 1, say)."""
        for key in self._counters:
            self._field_specs[key](f"{type(self).__name__}.{key}", getattr(self, key))
        for scheduler in self.__dict__.get("_schedulers", ()):
            scheduler._check_counters()

    def _attrs(self):
        """A snapshot of this scheduler (and wrapped ones) to undo a refused step. Steps
        rebind attributes, never change their values in place, so a shallow copy does."""
        return dict(self.__dict__), [s._attrs() for s in self.__dict__.get("_schedulers", ())]

    def _restore_attrs(self, saved):
        attrs, wrapped = saved
        self.__dict__.clear()
        self.__dict__.update(attrs)
        for scheduler, state in zip(self.__dict__.get("_schedulers", ()), wrapped):
            scheduler._restore_attrs(state)

    def _warn_if_optimizer_not_stepped(self):
        """On the first step() only: warn when the optimizer has never stepped (nor
        skipped a step), the order PyTorch warns about too."""
        if self.__dict__.get("_order_checked"):
            return
        self._order_checked = True
        optimizer = self.optimizer
        if isinstance(optimizer, ParamGroupSelection):
            optimizer = optimizer.optimizer
        steps = getattr(optimizer, "step_count", None), getattr(optimizer, "skipped_steps", None)
        if steps == (0, 0):
            warnings.warn(_ORDER_WARNING.format(name=type(self).__name__), UserWarning, stacklevel=3)

    def _groups(self):
        return self.optimizer.param_groups

    def get_last_lr(self):
        """The learning rates most recently set by this scheduler (a new list)."""
        return list(self._last_lr)

    # -- state --------------------------------------------------------------
    _NOT_STATE = ("optimizer", "_order_checked")

    def state_dict(self):
        """The scheduler's state as plain data (a new dict; the optimizer is not included).

        As in PyTorch, the functions given to :class:`LambdaLR`, :class:`MultiplicativeLR`
        and :class:`CyclicLR` (``scale_fn``) are not saved; only the ``__dict__`` of
        callable *objects* is.
        """
        state = {}
        for key, value in self.__dict__.items():
            if key in self._NOT_STATE:
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

        Every field (and those of wrapped schedulers) is checked before any is taken,
        with the checks the constructor runs on its arguments: same keys, types,
        ranges, per-group lists of the right length. On any mismatch it raises and
        changes nothing. Restore the optimizer's param groups too (their lrs and the
        extra keys schedulers store there), as with torch.
        """
        self._take_state(self._check_state(state_dict))

    def _check_state(self, state, name="state_dict"):
        """The state's fields, checked and converted (new objects), or an error naming the field."""
        if not isinstance(state, Mapping):
            raise TypeError(f"{name}: expected a dict, got {type(state).__name__}")
        mine = self.state_dict()
        missing = [k for k in mine if k not in state]
        unknown = [k for k in state if k not in mine]
        if missing or unknown:
            raise ValueError(f"{name} does not fit {type(self).__name__} (is it from another scheduler "
                             f"or configuration?): missing keys {sorted(map(repr, missing))}, "
                             f"unexpected keys {sorted(map(repr, unknown))}")
        checked = {key: self._check_field(key, f"{name}[{key!r}]", state[key], mine[key]) for key in mine}
        self._check_together(checked, name)
        return checked

    def _check_field(self, key, name, value, mine):
        if key not in self._field_specs and key != "_schedulers":
            return _check_like(name, value, mine)
        spec = self._field_specs[key] if key != "_schedulers" else _SCHEDULERS
        if isinstance(spec, _CallableStates) and not spec.per_group:
            return _check_callable_state(name, value, mine)
        if isinstance(spec, (_PerGroup, _CallableStates)) or spec is _SCHEDULERS:
            if not isinstance(value, (list, tuple)) or len(value) != len(mine):
                what = "one per param group" if spec is not _SCHEDULERS else "one per wrapped scheduler"
                raise ValueError(f"{name}: expected a list of {len(mine)} entries ({what}), got {value!r}")
            if spec is _SCHEDULERS:
                return [s._check_state(v, f"{name}[{i}]") for i, (s, v) in enumerate(zip(self._schedulers, value))]
            if isinstance(spec, _CallableStates):
                return [_check_callable_state(f"{name}[{i}]", v, m) for i, (v, m) in enumerate(zip(value, mine))]
            return [spec.check(f"{name}[{i}]", v) for i, v in enumerate(value)]
        if isinstance(spec, _Fixed):
            checked = spec.check(name, value)
            if checked != mine:
                raise ValueError(f"{name}: expected {mine!r} (fixed by the optimizer this scheduler drives), "
                                 f"got {value!r}")
            return checked
        return spec(name, value)

    def _check_together(self, state, name):
        """Rules that tie fields together (a subclass's); the fields are checked already."""

    def _take_state(self, state):
        for key, value in state.items():
            if key == "lr_lambdas":
                for fn, saved in zip(self.lr_lambdas, value):
                    if saved is not None:
                        fn.__dict__.update(saved)
            elif key == "_scale_fn_custom":
                if value is not None:
                    self._scale_fn_custom.__dict__.update(value)
            elif key == "_schedulers":
                for scheduler, saved in zip(self._schedulers, value):
                    scheduler._take_state(saved)
            else:
                setattr(self, key, value)

    # -- display ------------------------------------------------------------
    def _repr_value(self, param):
        """The current value of constructor argument ``param`` (subclasses map the
        arguments they do not keep under the same name)."""
        if param == "lr_lambda":
            return _one_or_list(self.lr_lambdas)
        return getattr(self, param, _MISSING)

    def _repr_args(self):
        """(name, value) of the constructor's arguments as they are now (but those that
        play no part, e.g. CyclicLR's gamma outside "exp_range"), then the counter ``last_epoch``."""
        shown = []
        for param in list(inspect.signature(type(self).__init__).parameters)[1:]:
            if param in ("optimizer", "last_epoch"):
                continue
            try:
                value = self._repr_value(param)
            except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
                value = _MISSING       # e.g. a group key OneCycleLR stores was removed
            if value is not _MISSING:
                shown.append((param, value))
        if "last_epoch" in self.__dict__:
            shown.append(("last_epoch", self.last_epoch))
        return shown

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={_fmt(v)}' for k, v in self._repr_args())})"

    def _repr_html_(self):
        lrs = getattr(self, "_last_lr", [])
        indices = getattr(self.optimizer, "indices", range(len(lrs)))
        rows = "".join(f"<tr><td>{i}</td><td>{lr:.6g}</td></tr>" for i, lr in zip(indices, lrs))
        return (f"<div><code>{html.escape(repr(self))}</code><table><tr><th>param group</th>"
                f"<th>last lr</th></tr>{rows}</table></div>")


LRScheduler._field_specs = dict(LRScheduler._fields)
