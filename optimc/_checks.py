"""Value checks shared by the optimizers, the schedulers and the toolkit.
Each returns the checked value (converted) or raises TypeError/ValueError
naming the field and what was expected."""
from __future__ import annotations

import math
import numbers

import numpy as np


def real(name, value, lo=None, hi=None, lo_open=False, hi_open=False):
    """A finite real number in the given interval, as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    try:
        x = float(value)
    except OverflowError:   # an int beyond the float range
        x = math.inf
    ok = math.isfinite(x)
    if lo is not None:
        ok = ok and (x > lo if lo_open else x >= lo)
    if hi is not None:
        ok = ok and (x < hi if hi_open else x <= hi)
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        span = f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}{right}"
        raise ValueError(f"{name}: expected a finite value in {span}, got {value!r}")
    return x


def flag(name, value):
    """True or False (NumPy booleans included), as a bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def integer(name, value, lo=None, hi=None):
    """An integer (not a bool) in [lo, hi], as an int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name}: expected an int in [{lo if lo is not None else '-inf'}, "
                         f"{hi if hi is not None else 'inf'}], got {value!r}")
    return v


def learning_rate(name, value):
    """A number >= 0, or a callable step -> lr evaluated before each step."""
    if callable(value):
        return value
    return real(name, value, lo=0.0)


def pair(name, value, check):
    """A pair (a, b), each checked by check(name[k], v); as a tuple."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name}: expected a pair (a, b), got {value!r}")
    return tuple(check(f"{name}[{k}]", v) for k, v in enumerate(value))
