"""Value checks shared by the optimizers, the schedulers and the toolkit.

Each check takes the name of the field it checks (as the user knows it, e.g.
``"betas[1]"`` or ``"state_dict['gamma']"``) and the value; it returns the
value converted to a plain Python type, or raises ``TypeError`` (wrong kind
of value) or ``ValueError`` (right kind, out of range) with a message that
names the field and says what was expected. Checks never change anything, so
callers run all of them before their first write.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

# The largest count a counter (step, epoch, size) may hold: what a C int64 holds,
# so that a counter saved here always loads and never wraps.
MAX_COUNT = 2**63 - 1


def _span(lo, hi, lo_open, hi_open):
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    return f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{right}"


def real(name, value, lo=None, hi=None, lo_open=False, hi_open=False, finite=True):
    """A real number (not a bool) in the interval given by ``lo``/``hi`` (None: unbounded).

    ``finite=False`` also admits ±inf (never NaN); the bounds still apply.
    """
    if type(value) is float:    # the common case, without the slower ABC checks
        x = value
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    else:
        try:
            x = float(value)
        except OverflowError:   # an int beyond the float range
            x = math.inf if value > 0 else -math.inf
    ok = math.isfinite(x) if finite else not math.isnan(x)
    if lo is not None:
        ok = ok and (x > lo if lo_open else x >= lo)
    if hi is not None:
        ok = ok and (x < hi if hi_open else x <= hi)
    if not ok:
        kind = "a finite value" if finite else "a value (not NaN)"
        raise ValueError(f"{name}: expected {kind} in {_span(lo, hi, lo_open, hi_open)}, got {value!r}")
    return x


def positive(name, value):
    """A finite real number > 0."""
    return real(name, value, lo=0.0, lo_open=True)


def nonneg(name, value):
    """A finite real number >= 0."""
    return real(name, value, lo=0.0)


def integer(name, value, lo=None, hi=MAX_COUNT):
    """An int (Python or NumPy, not a bool) in [lo, hi]."""
    if type(value) is not int and (isinstance(value, (bool, np.bool_))
                                   or not isinstance(value, numbers.Integral)):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    n = int(value)
    if lo is not None and n < lo:
        want = f">= {lo}" if hi in (None, MAX_COUNT) else f"in [{lo}, {hi}]"
    elif hi is not None and n > hi:
        want = "<= 2**63 - 1" if hi == MAX_COUNT else f"<= {hi}" if lo is None else f"in [{lo}, {hi}]"
    else:
        return n
    raise ValueError(f"{name}: expected an int {want}, got {value!r}")


def count(name, value):
    """An int >= 1 (a size, a period, a number of steps)."""
    return integer(name, value, lo=1)


def flag(name, value):
    """True or False (a NumPy bool too; not 0/1, not an array)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def choice(name, value, options):
    """One of ``options`` (strings)."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def function(name, value):
    """A callable."""
    if not callable(value):
        raise TypeError(f"{name}: expected a callable, got {type(value).__name__} {value!r}")
    return value


def sorted_ints(name, values, strict, lo=0):
    """A list of ints >= lo in increasing (``strict``) or non-decreasing order."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name}: expected a list of ints, got {type(values).__name__} {values!r}")
    values = [integer(f"{name}[{i}]", v, lo) for i, v in enumerate(values)]
    for i in range(1, len(values)):
        if values[i] < values[i - 1] or (strict and values[i] == values[i - 1]):
            raise ValueError(f"{name}: expected {'strictly ' if strict else ''}increasing ints, got {values}")
    return values


def lr(name, value):
    """A learning rate: a finite number >= 0, or a callable ``f(step) -> lr``."""
    if callable(value):
        return value
    return real(name, value, lo=0.0)


def betas(name, value):
    """A pair (beta1, beta2), each in [0, 1)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name}: expected a pair (beta1, beta2), got {value!r}")
    return tuple(real(f"{name}[{k}]", b, 0.0, 1.0, hi_open=True) for k, b in enumerate(value))


def pair(name, value, check):
    """A pair (a, b), each checked by ``check(name[k], v)``; as a tuple."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name}: expected a pair (a, b), got {value!r}")
    return tuple(check(f"{name}[{k}]", v) for k, v in enumerate(value))
