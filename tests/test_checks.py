"""Tests for optimc/_checks.py, the value checks optimizers, schedulers and the toolkit share.

Each check returns a plain Python value or raises TypeError (wrong kind) or ValueError
(out of range) with a message that starts with the field's name and says what was expected.
"""

import math
from fractions import Fraction

import numpy as np
import pytest

from optimc import _checks as C


@pytest.mark.parametrize("call,expected", [
    (lambda: C.real("x", 3), 3.0),
    (lambda: C.real("x", np.float32(0.5)), 0.5),
    (lambda: C.real("x", Fraction(1, 4)), 0.25),
    (lambda: C.real("x", 0.0, lo=0.0), 0.0),
    (lambda: C.real("x", 1.0, 0.0, 1.0), 1.0),
    (lambda: C.real("x", -math.inf, finite=False), -math.inf),
    (lambda: C.positive("x", 1e-300), 1e-300),
    (lambda: C.nonneg("x", 0), 0.0),
    (lambda: C.integer("x", np.int64(7), 0), 7),
    (lambda: C.integer("x", 2**63 - 1), 2**63 - 1),
    (lambda: C.count("x", 1), 1),
    (lambda: C.flag("x", np.bool_(True)), True),
    (lambda: C.choice("x", "cos", ("cos", "linear")), "cos"),
    (lambda: C.sorted_ints("x", (1, 1, 4), strict=False), [1, 1, 4]),
    (lambda: C.sorted_ints("x", np.array([1, 2]), strict=True), [1, 2]),
    (lambda: C.betas("x", [0.9, 0.999]), (0.9, 0.999)),
    (lambda: C.lr("x", 0.1), 0.1),
])
def test_accepted_values_come_back_as_plain_python(call, expected):
    value = call()
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("call,exc,message", [
    (lambda: C.real("lr", "0.1"), TypeError, "lr: expected a real number, got '0.1'"),
    (lambda: C.real("lr", True), TypeError, "lr: expected a real number, got True"),
    (lambda: C.real("lr", np.bool_(False)), TypeError, "lr: expected a real number"),
    (lambda: C.real("lr", np.ones(2)), TypeError, "lr: expected a real number"),
    (lambda: C.real("lr", -0.1, lo=0.0), ValueError, "lr: expected a finite value in [0.0, inf], got -0.1"),
    (lambda: C.real("lr", math.nan, lo=0.0), ValueError, "lr: expected a finite value in [0.0, inf], got nan"),
    (lambda: C.real("lr", math.inf, lo=0.0), ValueError, "lr: expected a finite value"),
    (lambda: C.real("lr", 10**400, lo=0.0), ValueError, "lr: expected a finite value"),    # not OverflowError
    (lambda: C.real("b", 1.0, 0.0, 1.0, hi_open=True), ValueError, "b: expected a finite value in [0.0, 1.0), got 1.0"),
    (lambda: C.real("f", 0.0, 0.0, 1.0, lo_open=True), ValueError, "f: expected a finite value in (0.0, 1.0]"),
    (lambda: C.real("m", math.nan, finite=False), ValueError, "m: expected a value (not NaN)"),
    (lambda: C.positive("gamma", 0), ValueError, "gamma: expected a finite value in (0.0, inf]"),
    (lambda: C.integer("step", 2.0), TypeError, "step: expected an int, got 2.0"),
    (lambda: C.integer("step", False), TypeError, "step: expected an int, got False"),
    (lambda: C.integer("step", -1, 0), ValueError, "step: expected an int >= 0, got -1"),
    (lambda: C.integer("step", 2**63), ValueError, "step: expected an int <= 2**63 - 1"),
    (lambda: C.integer("k", 5, 0, 3), ValueError, "k: expected an int in [0, 3], got 5"),
    (lambda: C.count("step_size", 0), ValueError, "step_size: expected an int >= 1, got 0"),
    (lambda: C.flag("amsgrad", np.array([True])), TypeError, "amsgrad: expected True or False"),
    (lambda: C.flag("amsgrad", 1), TypeError, "amsgrad: expected True or False, got 1"),
    (lambda: C.choice("mode", "up", ("min", "max")), ValueError, "mode: expected one of 'min', 'max', got 'up'"),
    (lambda: C.choice("mode", None, ("min", "max")), ValueError, "mode: expected one of"),
    (lambda: C.function("lr_lambda", 0.5), TypeError, "lr_lambda: expected a callable"),
    (lambda: C.sorted_ints("milestones", 10, strict=False), TypeError, "milestones: expected a list of ints"),
    (lambda: C.sorted_ints("milestones", [3, 1], strict=False), ValueError, "milestones: expected increasing"),
    (lambda: C.sorted_ints("b", [1, 1], strict=True), ValueError, "b: expected strictly increasing"),
    (lambda: C.sorted_ints("milestones", [1, -2], strict=False), ValueError, r"milestones[1]: expected an int >= 0"),
    (lambda: C.betas("betas", 0.9), TypeError, "betas: expected a pair (beta1, beta2)"),
    (lambda: C.betas("betas", (0.9, 1.0)), ValueError, "betas[1]: expected a finite value in [0.0, 1.0)"),
])
def test_refusals_name_the_field_and_what_was_expected(call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert str(info.value).startswith(message), str(info.value)


def test_optimizers_and_toolkit_use_the_shared_checks():
    """The same refusal for the same kind of value, wherever it is given."""
    optimc = pytest.importorskip("optimc")
    from optimc import schedules

    for call, field in [(lambda: optimc.Adam([np.zeros(2)], lr=10**400), "lr"),
                        (lambda: optimc.clip_grad_norm([np.zeros(2)], 10**400), "max_norm"),
                        (lambda: schedules.StepLR(optimc.SGD([np.zeros(2)], lr=0.1), 3, gamma=10**400), "gamma")]:
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == f"{field}: expected a finite value in {'[0.0' if field != 'gamma' else '(0.0'}, inf], got {10**400!r}"
