"""Tests for the functional schedules of optimc.schedules (optimc/schedules/functional.py).

Each schedule is checked against its closed form written in NumPy, against the
torch scheduler it equals where there is one, and as the ``lr=`` of optimc optimizers.
"""

import copy
import math
import pickle

import numpy as np
import pytest

from optimc import schedules as S

RTOL = 1e-12
T = np.arange(600)

FUNCTIONAL = [
    ("constant", S.constant(0.05), np.full(T.shape, 0.05)),
    ("step_decay", S.step_decay(0.1, 30, 0.5), 0.1 * 0.5 ** np.floor(T / 30)),
    ("exponential_decay", S.exponential_decay(0.1, 0.99), 0.1 * 0.99 ** T),
    ("exponential_decay-10", S.exponential_decay(0.1, 0.9, decay_steps=10), 0.1 * 0.9 ** (T / 10)),
    ("exponential_decay-staircase", S.exponential_decay(0.1, 0.9, decay_steps=10, staircase=True),
     0.1 * 0.9 ** np.floor(T / 10)),
    ("cosine_decay", S.cosine_decay(0.1, 200, end_lr=1e-3),
     np.where(T < 200, 1e-3 + (0.1 - 1e-3) * 0.5 * (1 + np.cos(np.pi * T / 200)), 1e-3)),
    ("linear_warmup", S.linear_warmup(0.1, 50, start_lr=0.01), np.where(T < 50, 0.01 + 0.09 * T / 50, 0.1)),
    ("linear_warmup-0", S.linear_warmup(0.1, 0), np.full(T.shape, 0.1)),
    ("warmup_cosine", S.warmup_cosine(0.1, 50, 500, end_lr=1e-4),
     np.where(T < 50, 0.1 * T / 50,
              1e-4 + (0.1 - 1e-4) * 0.5 * (1 + np.cos(np.pi * np.clip(T - 50, 0, 450) / 450)))),
    ("warmup_cosine-no-warmup", S.warmup_cosine(0.1, 0, 300), np.where(
        T < 300, 0.05 * (1 + np.cos(np.pi * T / 300)), 0.0)),
    ("piecewise_constant", S.piecewise_constant([100, 250], [0.1, 0.03, 0.001]),
     np.select([T < 100, T < 250], [0.1, 0.03], 0.001)),
]


@pytest.mark.parametrize("name,sched,expected", FUNCTIONAL, ids=[f[0] for f in FUNCTIONAL])
def test_functional_matches_closed_form(name, sched, expected):
    values = np.array([sched(int(t)) for t in T])
    assert all(type(sched(int(t))) is float for t in T[:3])
    # atol in units of the schedule's peak: near the end of a cosine that ends at
    # 0, 1 + cos(πt/T) cancels, so an ULP of difference between libm's cos (the
    # schedule's math.cos) and NumPy's (its own SIMD cos on some CPUs, e.g. with
    # AVX-512) is a large relative error of a tiny value, not a wrong schedule
    np.testing.assert_allclose(values, expected, rtol=RTOL, atol=1e-15 * np.max(np.abs(expected)))
    np.testing.assert_array_equal(sched(T), values)                      # arrays of steps, for plots
    np.testing.assert_array_equal(sched(np.int64(7)), values[7])
    clone = pickle.loads(pickle.dumps(sched))
    assert clone == sched and clone(123) == sched(123) and copy.deepcopy(sched) == sched
    assert repr(sched).startswith(name.split("-")[0] + "(")


def test_functional_agrees_with_torch_schedulers():
    torch = pytest.importorskip("torch")
    import torch.optim.lr_scheduler as TL

    cases = [
        (S.step_decay(0.1, 30, 0.5), lambda o: TL.StepLR(o, 30, 0.5), 300),
        (S.exponential_decay(0.1, 0.99), lambda o: TL.ExponentialLR(o, 0.99), 300),
        (S.cosine_decay(0.1, 200, 1e-3), lambda o: TL.CosineAnnealingLR(o, 200, 1e-3), 200),
        (S.piecewise_constant([100, 250], [0.1, 0.01, 0.001]), lambda o: TL.MultiStepLR(o, [100, 250]), 300),
    ]
    for f, make, n in cases:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = make(opt)
        for t in range(n):
            np.testing.assert_allclose(f(t), sched.get_last_lr()[0], rtol=1e-10)
            opt.step()
            sched.step()


@pytest.mark.parametrize("make,exc,match", [
    (lambda: S.constant(-0.1), ValueError, "lr"),
    (lambda: S.constant("0.1"), TypeError, "lr"),
    (lambda: S.constant(math.inf), ValueError, "lr"),
    (lambda: S.step_decay(0.1, 0), ValueError, "step_size"),
    (lambda: S.step_decay(0.1, 10, gamma=0), ValueError, "gamma"),
    (lambda: S.step_decay(0.1, 10, gamma=math.nan), ValueError, "gamma"),
    (lambda: S.exponential_decay(0.1, -0.9), ValueError, "gamma"),
    (lambda: S.exponential_decay(0.1, 0.9, decay_steps=0), ValueError, "decay_steps"),
    (lambda: S.exponential_decay(0.1, 0.9, staircase=1), TypeError, "staircase"),
    (lambda: S.cosine_decay(0.1, 0), ValueError, "decay_steps"),
    (lambda: S.cosine_decay(0.1, 10, end_lr=-1), ValueError, "end_lr"),
    (lambda: S.linear_warmup(0.1, -5), ValueError, "warmup_steps"),
    (lambda: S.warmup_cosine(0.1, 100, 100), ValueError, "total_steps"),
    (lambda: S.warmup_cosine(0.1, 10, 0), ValueError, "total_steps"),
    (lambda: S.warmup_cosine(0.1, 10, 2**64), ValueError, "total_steps"),
    (lambda: S.piecewise_constant([10, 10], [0.1, 0.2, 0.3]), ValueError, "boundaries"),
    (lambda: S.piecewise_constant([20, 10], [0.1, 0.2, 0.3]), ValueError, "boundaries"),
    (lambda: S.piecewise_constant([10.5], [0.1, 0.2]), TypeError, r"boundaries\[0\]"),
    (lambda: S.piecewise_constant("10", [0.1, 0.2]), TypeError, "boundaries"),
    (lambda: S.piecewise_constant([10], [0.1]), ValueError, "values"),
    (lambda: S.piecewise_constant([10], 0.1), TypeError, "values"),
    (lambda: S.constant(0.1)(-1), ValueError, "step"),
    (lambda: S.constant(0.1)(1.5), TypeError, "step"),
])
def test_functional_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_repr_is_the_call_with_the_arguments_not_at_their_default():
    assert repr(S.warmup_cosine(1e-3, 100, 10_000)) == "warmup_cosine(peak_lr=0.001, warmup_steps=100, total_steps=10000)"
    assert repr(S.warmup_cosine(1e-3, 100, 10_000, end_lr=1e-5)) == \
        "warmup_cosine(peak_lr=0.001, warmup_steps=100, total_steps=10000, end_lr=1e-05)"
    assert repr(S.exponential_decay(0.1, 0.9, staircase=True)) == "exponential_decay(lr=0.1, gamma=0.9, staircase=True)"
    sched = S.piecewise_constant([100, 250], [0.1, 0.03, 0.001])
    assert repr(sched) == "piecewise_constant(boundaries=[100, 250], values=[0.1, 0.03, 0.001])"
    assert eval(repr(sched), vars(S)) == sched


def test_growth_past_the_float_range_gives_inf_not_overflow_error():
    """gamma > 1 is allowed; far out the power overflows: the schedule says inf (which an
    optimizer refuses with a clear message) where Python's ** raises OverflowError."""
    assert S.step_decay(0.1, 1, gamma=2.0)(2000) == math.inf
    assert S.exponential_decay(0.1, 2.0)(2000) == math.inf
    assert S.exponential_decay(0.1, 0.5)(10**6) == 0.0
    optimc = pytest.importorskip("optimc")
    w = np.zeros(2)
    opt = optimc.SGD([w], lr=S.step_decay(1e-300, 1, gamma=1e300))    # 1e-300, 1.0, inf
    opt.step([np.ones(2)])
    opt.step([np.ones(2)])
    before = w.copy()
    with pytest.raises(ValueError, match="lr"):
        opt.step([np.ones(2)])
    np.testing.assert_array_equal(w, before)
    assert opt.step_count == 2


# A warmup_cosine and a piecewise_constant pickled by optimc before the schedules became a
# package (optimc/schedules.py): checkpoints holding them as a callable lr must still load.
OLD_PICKLES = [
    (b'\x80\x02coptimc.schedules\nSchedule\nq\x00)\x81q\x01coptimc.schedules\n_warmup_cosine\nq\x02}q\x03(X'
     b'\x07\x00\x00\x00peak_lrq\x04G?\xb9\x99\x99\x99\x99\x99\x9aX\x0c\x00\x00\x00warmup_stepsq\x05K\nX\x0b'
     b'\x00\x00\x00total_stepsq\x06KdX\x06\x00\x00\x00end_lrq\x07G?PbM\xd2\xf1\xa9\xfcX\x08\x00\x00\x00start_'
     b'lrq\x08G\x00\x00\x00\x00\x00\x00\x00\x00u\x86q\tb.',
     S.warmup_cosine(0.1, 10, 100, end_lr=1e-3)),
    (b'\x80\x02coptimc.schedules\nSchedule\nq\x00)\x81q\x01coptimc.schedules\n_piecewise_constant\nq\x02}q'
     b'\x03(X\n\x00\x00\x00boundariesq\x04K\x05K\t\x86q\x05X\x06\x00\x00\x00valuesq\x06G?\xb9\x99\x99\x99\x99'
     b'\x99\x9aG?\x84z\xe1G\xae\x14{G?PbM\xd2\xf1\xa9\xfc\x87q\x07u\x86q\x08b.',
     S.piecewise_constant([5, 9], [0.1, 0.01, 0.001])),
]


@pytest.mark.parametrize("data,expected", OLD_PICKLES, ids=["warmup_cosine", "piecewise_constant"])
def test_schedules_pickled_by_the_single_module_version_still_load(data, expected):
    sched = pickle.loads(data)
    assert sched == expected
    assert [sched(t) for t in range(120)] == [expected(t) for t in range(120)]


def test_functional_schedule_as_optimc_lr():
    optimc = pytest.importorskip("optimc")
    if not hasattr(optimc, "SGD"):
        pytest.skip("optimc not built")
    f = S.warmup_cosine(0.1, 3, 12)
    w = np.zeros(2)
    opt = optimc.SGD([w], lr=f)
    for _ in range(15):
        opt.step([np.ones(2)])
    np.testing.assert_allclose(w, -sum(f(t) for t in range(15)) * np.ones(2), rtol=1e-14)
    with pytest.raises(TypeError, match="callable"):
        S.StepLR(opt, 3)


def test_import_paths():
    """The package keeps every public name at optimc.schedules.X, and each in its module."""
    import optimc.schedules.functional as F
    import optimc.schedules.schedulers as SC

    for name in F.__all__:
        assert getattr(S, name) is getattr(F, name)
    for name in SC.__all__:
        assert getattr(S, name) is getattr(SC, name)
    assert sorted(S.__all__) == sorted(F.__all__ + SC.__all__)
