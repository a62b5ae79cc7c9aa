"""A callable lr (and optimc.schedules.warmup_cosine) against NumPy loops and
setting lr before each step; bad results refused with nothing written."""
import math
import pickle
import copy
import inspect
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _toolkit import *  # noqa: E402,F401,F403  (data, references, comparisons)
from _toolkit import report_diffs, restore_threads  # noqa: E402,F401  (fixtures)

import optimc  # noqa: E402


# ===========================================================================
# callable lr
# ===========================================================================

def halving(step):
    """A module-level (hence picklable) lr function."""
    return 0.1 * 0.5 ** step


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_callable_lr_sgd_numpy_loop(dtype, momentum):
    calls = []

    def lr(step):
        calls.append(step)
        return 0.1 * 0.5 ** step

    params = arrays(dtype, 70)
    opt = optimc.SGD(params, lr=lr, momentum=momentum)
    assert opt.lr is lr and opt.param_groups[0]["lr"] is lr
    ref = copies(params)
    buf = None
    for k, grads in enumerate(grad_seq(dtype, 6, seed=71)):
        opt.step(grads)
        eta = dtype(0.1 * 0.5 ** k)
        if momentum:
            buf = copies(grads) if buf is None else [dtype(momentum) * b + g for b, g in zip(buf, grads)]
            d = buf
        else:
            d = grads
        ref = [p - eta * x for p, x in zip(ref, d)]
        assert_close(params, ref, ulp_rtol(dtype, 4), f"params after step {k}")
    assert calls == list(range(6))


@pytest.mark.parametrize("case", OPT_CASES, ids=case_id)
def test_callable_lr_equals_setting_lr_before_each_step(case):
    name, kw = case
    base = kw.get("lr", 0.01)
    fn = lambda step: base * (1.0 + step) / (1.0 + 0.5 * step ** 2)  # noqa: E731
    a, b = arrays(np.float64, 72), arrays(np.float64, 72)
    opt = make_opt(name, a, **{**kw, "lr": fn})
    twin = make_opt(name, b, **kw)
    for k, grads in enumerate(grad_seq(np.float64, 5, seed=73)):
        opt.step(grads)
        twin.lr = fn(k)
        twin.step(grads)
    assert_bitwise(a, b, "params")


BAD_LR_RESULTS = [
    ("negative", lambda s: -0.1, ValueError), ("nan", lambda s: float("nan"), ValueError),
    ("inf", lambda s: float("inf"), ValueError), ("string", lambda s: "0.1", TypeError),
    ("none", lambda s: None, TypeError), ("list", lambda s: [0.1], TypeError),
    ("late-negative", lambda s: 0.1 if s < 2 else -1e-3, ValueError),
]


@pytest.mark.parametrize("bad", BAD_LR_RESULTS, ids=lambda b: b[0])
def test_callable_lr_bad_result_writes_nothing(bad):
    _, fn, exc = bad
    params = arrays(np.float64, 74)
    opt = optimc.Adam(params, lr=fn)
    steps = grad_seq(np.float64, 3, seed=75)
    k = 0
    if bad[0] == "late-negative":
        for k in range(2):
            opt.step(steps[k])
        k = 2
    snap = state_snapshot(opt)
    with pytest.raises(exc, match="lr"):
        opt.step(steps[k])
    assert_opt_unchanged(opt, snap)
    opt.lr = 0.01                                    # a good lr: stepping works again
    opt.step(steps[k])
    assert opt.step_count == k + 1


def test_callable_lr_exception_and_bad_group_write_nothing():
    a, b = arrays(np.float64, 76), arrays(np.float64, 77, shapes=[(3,)])

    def boom(step):
        raise ZeroDivisionError("from the lr function")

    opt = optimc.SGD([{"params": a, "lr": halving}, {"params": b, "lr": boom}], momentum=0.9)
    snap = state_snapshot(opt)
    with pytest.raises(ZeroDivisionError):
        opt.step(grad_seq(np.float64, 1)[0] + [np.ones(3)])
    assert_opt_unchanged(opt, snap)                   # group 0's callable was fine; nothing written
    opt.param_groups[1]["lr"] = lambda s: -1.0
    snap = state_snapshot(opt)
    with pytest.raises(ValueError, match="group 1"):
        opt.step(grad_seq(np.float64, 1)[0] + [np.ones(3)])
    assert_opt_unchanged(opt, snap)


@pytest.mark.parametrize("via", ["state_dict", "pickle", "deepcopy"])
def test_callable_lr_checkpoint_round_trip(via):
    steps = grad_seq(np.float64, 6, seed=78)
    params = arrays(np.float64, 79)
    opt = optimc.Adam(params, lr=halving, max_grad_norm=5.0)
    for g in steps[:3]:
        opt.step(g)
    if via == "state_dict":
        sd = opt.state_dict()
        assert sd["param_groups"][0]["lr"] is halving
        other_params = copies(params)
        resumed = optimc.Adam(other_params, lr=0.5, max_grad_norm=5.0)
        resumed.load_state_dict(sd)
        assert resumed.lr is halving
    else:
        resumed = pickle.loads(pickle.dumps(opt)) if via == "pickle" else copy.deepcopy(opt)
        other_params = resumed._params()
        assert resumed.lr is halving                  # by reference, as pickle does functions
    assert resumed.step_count == 3
    for g in steps[3:]:
        opt.step(g)
        resumed.step(g)
    assert_bitwise(other_params, params, "resumed vs uninterrupted")


def _warmup_cosine_ref(t, peak, warmup, total, end, start):
    """The schedule from its docstring, written independently."""
    if t < warmup:
        return start + (peak - start) * t / warmup
    frac = min(t - warmup, total - warmup) / (total - warmup)
    return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * frac))


def test_lr_from_schedules_warmup_cosine():
    schedules = pytest.importorskip("optimc.schedules")
    if not hasattr(schedules, "warmup_cosine"):
        pytest.skip("optimc.schedules.warmup_cosine not available")
    sig = inspect.signature(schedules.warmup_cosine)
    assert list(sig.parameters)[:3] == ["peak_lr", "warmup_steps", "total_steps"]
    args = dict(peak_lr=0.2, warmup_steps=3, total_steps=10, end_lr=0.01, start_lr=0.02)
    sched = schedules.warmup_cosine(**args)
    dtype = np.float64
    params = arrays(dtype, 80)
    opt = optimc.SGD(params, lr=sched)
    ref = copies(params)
    for k, grads in enumerate(grad_seq(dtype, 13, seed=81)):   # past total_steps: held at end_lr
        eta = _warmup_cosine_ref(k, *args.values())
        assert sched(k) == pytest.approx(eta, rel=1e-14)
        opt.step(grads)
        ref = [p - dtype(eta) * g for p, g in zip(ref, grads)]
    assert_close(params, ref, ulp_rtol(dtype, 4), "params under warmup_cosine")
    clone = pickle.loads(pickle.dumps(opt))              # a Schedule pickles by value
    assert clone.lr == sched and clone.step_count == 13


# ---- non-finite and overflowing norms, naming, odd lr values -------------

def test_nan_norm_makes_grads_nan_like_torch():
    g = [np.array([1.0, np.nan]), np.array([2.0])]
    total = optimc.clip_grad_norm(g, 1.0)
    assert np.isnan(total) and np.all(np.isnan(g[0])) and np.all(np.isnan(g[1]))
    torch = pytest.importorskip("torch")
    t = [torch.tensor([1.0, float("nan")], dtype=torch.float64, requires_grad=True),
         torch.tensor([2.0], dtype=torch.float64, requires_grad=True)]
    for x in t:
        x.grad = x.detach().clone()
    torch.nn.utils.clip_grad_norm_(t, 1.0)
    assert all(torch.isnan(x.grad).all() for x in t)


def test_overflowing_norm_is_nonfinite():
    g = [np.array([1e200, 1e200])]
    with pytest.raises(ValueError, match="grads: the total norm is inf"):
        optimc.clip_grad_norm(g, 1.0, error_if_nonfinite=True)
    assert np.all(g[0] == 1e200)
    w = np.zeros(2)
    opt = optimc.Adam([w], max_grad_norm=1.0, skip_nonfinite=True)
    opt.step([np.array([1e200, 1e200])])
    assert opt.skipped_steps == 1 and opt.step_count == 0 and np.all(w == 0)
    assert opt.last_grad_norm == np.inf


def test_clip_names_dict_entries_by_key():
    with pytest.raises(TypeError, match=r"grads\['b'\]: expected a float32 or float64 array.*got int64"):
        optimc.clip_grad_norm({"a": np.ones(2), "b": np.ones(2, np.int64)}, 1.0)
    with pytest.raises(TypeError, match="error_if_nonfinite"):
        optimc.clip_grad_norm([np.ones(2)], 1.0, error_if_nonfinite="no")


def test_last_grad_norm_none_until_measured():
    opt = optimc.SGD([np.zeros(2)], skip_nonfinite=True)
    assert opt.last_grad_norm is None
    opt.step([np.array([3.0, 4.0])])
    assert opt.last_grad_norm == 5.0


def test_lr_callable_returning_bool_is_a_type_error():
    w = np.zeros(2)
    opt = optimc.SGD([w], lr=lambda step: True)
    with pytest.raises(TypeError, match="lr"):
        opt.step([np.ones(2)])
    assert np.all(w == 0) and opt.step_count == 0


def test_last_lr_reports_the_callable_lr_used():
    w = np.zeros(2)
    opt = optimc.SGD([{"params": [w], "lr": lambda step: 0.5 ** step}, {"params": [np.zeros(1)], "lr": 0.3}])
    for k in range(3):
        opt.step([np.ones(2), np.ones(1)])
        assert opt.last_lr == [0.5 ** k, 0.3]
