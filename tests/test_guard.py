"""The in-step guard: max_grad_norm=, clip_value=, skip_nonfinite=True (and
last_grad_norm, skipped_steps, step_count), each against a twin optimizer fed
what the option should amount to."""
import math
import pickle
import copy
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _toolkit import *  # noqa: E402,F401,F403  (data, references, comparisons)
from _toolkit import report_diffs, restore_threads  # noqa: E402,F401  (fixtures)

import optimc  # noqa: E402


# ===========================================================================
# the optimizer options: max_grad_norm=, skip_nonfinite=True
# ===========================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("case", OPT_CASES, ids=case_id)
def test_max_grad_norm_equals_clipping_first(case, dtype):
    name, kw = case
    max_norm = 1.0
    # grad norms ~ 0.4, 370, 37, 3700, 3.7: steps 1 and 5 straddle the threshold
    steps = grad_seq(dtype, 5, scales=[0.01, 10.0, 1.0, 100.0, 0.1])
    p_opt, p_ref, p_own = arrays(dtype), arrays(dtype), arrays(dtype)
    opt = make_opt(name, p_opt, max_grad_norm=max_norm, **kw)
    ref = make_opt(name, p_ref, **kw)          # fed NumPy-clipped grads
    own = make_opt(name, p_own, **kw)          # fed grads clipped by optimc.clip_grad_norm
    assert opt.max_grad_norm == max_norm and opt.skip_nonfinite is False
    for grads in steps:
        before = copies(grads)
        opt.step(grads)
        assert_bitwise(grads, before, "the user's grads")               # read scaled, not modified
        clipped, total = ref_clip_norm(grads, max_norm)
        assert_close(opt.last_grad_norm, total, 1e-13, "last_grad_norm")
        ref.step(clipped)
        g = copies(grads)
        optimc.clip_grad_norm(g, max_norm)
        own.step(g)
    assert opt.step_count == ref.step_count == 5 and opt.skipped_steps == 0
    assert_close(p_opt, p_ref, ulp_rtol(dtype, 16), "params vs NumPy-clipped twin")
    for k in opt.state:
        for buf, v in opt.state[k].items():
            assert_close(v, ref.state[k][buf], ulp_rtol(dtype, 16), f"state[{k}][{buf!r}]")
    # clipping inside the step and clip_grad_norm before it are the same computation
    assert_bitwise(p_opt, p_own, "params vs clip_grad_norm twin")


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("with_norm", [False, True], ids=["value", "norm+value"])
@pytest.mark.parametrize("case", OPT_CASES, ids=case_id)
def test_clip_value_equals_clamping_first(case, with_norm, dtype):
    """clip_value= (Keras' clipvalue) clamps the grads as read, after the norm scaling
    of max_grad_norm= (Keras' order): the same as clip_grad_norm then clip_grad_value
    on a copy, bit for bit, and as NumPy's clip within rounding."""
    name, kw = case
    guard = dict(clip_value=0.5, max_grad_norm=20.0 if with_norm else None)
    steps = grad_seq(dtype, 5, scales=[0.01, 10.0, 1.0, 100.0, 0.1])
    p_opt, p_own, p_ref = arrays(dtype), arrays(dtype), arrays(dtype)
    opt = make_opt(name, p_opt, **guard, **kw)
    own = make_opt(name, p_own, **kw)          # fed grads clipped by optimc's functions
    ref = make_opt(name, p_ref, **kw)          # fed NumPy-clipped grads
    assert opt.clip_value == 0.5
    for grads in steps:
        before = copies(grads)
        opt.step(grads)
        assert_bitwise(grads, before, "the user's grads")
        g = copies(grads)
        if with_norm:
            optimc.clip_grad_norm(g, guard["max_grad_norm"])
        optimc.clip_grad_value(g, 0.5)
        own.step(g)
        r = ref_clip_norm(grads, guard["max_grad_norm"])[0] if with_norm else copies(grads)
        ref.step(ref_clip_value(r, 0.5))
    assert_bitwise(p_opt, p_own, "params vs clip-first twin")
    assert_close(p_opt, p_ref, ulp_rtol(dtype, 16), "params vs NumPy-clipped twin")


def test_clip_value_is_live_and_pickled():
    p = arrays(np.float64)
    opt = optimc.SGD(p, lr=1.0)
    opt.clip_value = 1e-3
    g = [np.full_like(a, 5.0) for a in p]
    before = copies(p)
    opt.step(g)
    for a, b in zip(p, before):
        assert np.array_equal(a, b - 1e-3)
    clone = pickle.loads(pickle.dumps(opt))
    assert clone.clip_value == 1e-3 and "clip_value=0.001" in repr(clone)
    opt.clip_value = None
    assert opt.clip_value is None


def test_max_grad_norm_is_global_over_groups_and_dict_params():
    dtype = np.float64
    a, b = arrays(dtype, 20), arrays(dtype, 21, shapes=[(3, 4), (9,)])
    params = {f"a{i}": x for i, x in enumerate(a)}
    extra = {"w": b[0], "v": b[1]}
    opt = optimc.Adam([{"params": params}, {"params": extra, "lr": 0.1}], lr=0.01, max_grad_norm=0.5)
    ref = optimc.Adam([{"params": copies(params)}, {"params": copies(extra), "lr": 0.1}], lr=0.01)
    for k in range(3):
        g = {**{f"a{i}": x for i, x in enumerate(arrays(dtype, 30 + k))},
             **dict(zip(["w", "v"], arrays(dtype, 40 + k, shapes=[(3, 4), (9,)])))}
        before = copies(g)
        opt.step(g)
        assert_bitwise(g, before, "grads")
        clipped, total = ref_clip_norm(g, 0.5)
        assert_close(opt.last_grad_norm, total, 1e-13, "last_grad_norm")
        ref.step(clipped)
    assert_close(opt._params(), ref._params(), ulp_rtol(dtype, 16), "params")


def _poison(grads, where, value):
    g = copies(grads)
    g[NONEMPTY[where]].flat[-1] = value
    return g


BAD_VALUES = [("nan", np.nan, 0), ("inf", np.inf, -1), ("-inf", -np.inf, 3)]


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("bad", BAD_VALUES, ids=lambda b: f"{b[0]}-in-tensor{b[2]}")
@pytest.mark.parametrize("case", OPT_CASES, ids=case_id)
def test_skip_nonfinite(case, bad, dtype):
    name, kw = case
    _, value, where = bad
    steps = grad_seq(dtype, 5)
    opt = make_opt(name, arrays(dtype), skip_nonfinite=True, **kw)
    twin = make_opt(name, arrays(dtype), **kw)           # never sees the bad step
    assert opt.skip_nonfinite is True and opt.max_grad_norm is None
    for k, grads in enumerate(steps):
        if k == 2:
            snap = state_snapshot(opt)
            bad_grads = _poison(grads, where, value)
            before = copies(bad_grads)
            opt.step(bad_grads)                          # skipped: no exception
            assert_bitwise(bad_grads, before, "the user's grads")
            assert opt.skipped_steps == 1 and opt.step_count == 2
            assert not math.isfinite(opt.last_grad_norm)
            snap["skipped_steps"] = 1
            snap["state_dict"]["skipped_steps"] = 1
            assert_opt_unchanged(opt, snap)              # params, state views, state_dict
        opt.step(grads)
        twin.step(grads)
        assert_close(opt.last_grad_norm, ref_norm(grads, 2), 1e-13, "last_grad_norm")
    assert opt.step_count == twin.step_count == 5 and opt.skipped_steps == 1
    assert twin.skipped_steps == 0
    sd, tsd = opt.state_dict(), twin.state_dict()
    assert sd.pop("skipped_steps") == 1 and tsd.pop("skipped_steps") == 0
    assert_tree_equal(sd, tsd, "state_dict vs twin")          # as if the bad step never happened
    assert_bitwise(opt._params(), twin._params(), "params vs twin")


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.01))])
def test_without_the_guard_nonfinite_grads_go_through(name, kw):
    params = arrays(np.float64)
    opt = make_opt(name, params, **kw)
    opt.step(_poison(grad_seq(np.float64, 1)[0], 0, np.nan))
    assert np.isnan(params[NONEMPTY[0]]).any() and opt.step_count == 1 and opt.skipped_steps == 0
    assert opt.last_grad_norm is None


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("case", [OPT_CASES[1], OPT_CASES[7], OPT_CASES[10], OPT_CASES[12]], ids=case_id)
def test_max_grad_norm_and_skip_nonfinite_together(case, dtype):
    name, kw = case
    lrs = []

    def lr_fn(step):                                      # a callable lr sees 0-based step counts
        lrs.append(step)
        return 0.01 * 0.9 ** step

    steps = grad_seq(dtype, 6, scales=[0.01, 10.0, 1.0, 100.0, 0.1, 3.0])
    opt = make_opt(name, arrays(dtype), max_grad_norm=2.0, skip_nonfinite=True, **{**kw, "lr": lr_fn})
    twin = make_opt(name, arrays(dtype), **{**kw, "lr": lambda s: 0.01 * 0.9 ** s})
    for k, grads in enumerate(steps):
        if k in (1, 4):
            snap = state_snapshot(opt)
            opt.step(_poison(grads, k % len(NONEMPTY), np.nan if k == 1 else -np.inf))
            snap["skipped_steps"] += 1
            snap["state_dict"]["skipped_steps"] += 1
            assert_opt_unchanged(opt, snap)
        opt.step(grads)
        clipped, total = ref_clip_norm(grads, 2.0)
        assert_close(opt.last_grad_norm, total, 1e-13, "last_grad_norm")
        twin.step(clipped)
    assert opt.skipped_steps == 2 and opt.step_count == twin.step_count == 6
    assert sorted(set(lrs)) == list(range(6))             # no step count was used up by a skip
    assert_close(opt._params(), twin._params(), ulp_rtol(dtype, 16), "params vs clipped twin")
    for k in opt.state:
        for buf, v in opt.state[k].items():
            assert_close(v, twin.state[k][buf], ulp_rtol(dtype, 16), f"state[{k}][{buf!r}]")


def test_guard_settings_live_and_pickled():
    params = arrays(np.float64)
    opt = optimc.SGD(params, lr=0.1)
    assert opt.max_grad_norm is None and opt.skip_nonfinite is False and opt.last_grad_norm is None
    opt.set_guard(max_grad_norm=0.5, skip_nonfinite=True)
    opt.step(grad_seq(np.float64, 1)[0])
    opt.step(_poison(grad_seq(np.float64, 1)[0], 1, np.inf))
    assert (opt.step_count, opt.skipped_steps) == (1, 1)
    sd = opt.state_dict()
    assert (sd["step_count"], sd["skipped_steps"]) == (1, 1)
    for clone in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert (clone.max_grad_norm, clone.skip_nonfinite) == (0.5, True)
        assert (clone.step_count, clone.skipped_steps) == (1, 1)
    fresh = optimc.SGD(arrays(np.float64), lr=0.1)
    fresh.load_state_dict(sd)
    assert (fresh.step_count, fresh.skipped_steps) == (1, 1)
    opt.set_guard()                                           # both off again
    assert opt.max_grad_norm is None and opt.skip_nonfinite is False
    before = copies(params)
    opt.step(_poison(grad_seq(np.float64, 1)[0], 1, np.inf))
    assert opt.skipped_steps == 1 and opt.step_count == 2
    assert not np.array_equal(params[NONEMPTY[1]], before[NONEMPTY[1]], equal_nan=True)


BAD_GUARDS = [
    (dict(max_grad_norm=0.0), ValueError), (dict(max_grad_norm=-1.0), ValueError),
    (dict(max_grad_norm=float("nan")), ValueError), (dict(max_grad_norm=float("inf")), ValueError),
    (dict(max_grad_norm="1"), TypeError), (dict(max_grad_norm=True), TypeError),
    (dict(skip_nonfinite=1), TypeError), (dict(skip_nonfinite="yes"), TypeError),
    (dict(clip_value=0.0), ValueError), (dict(clip_value=-0.5), ValueError),
    (dict(clip_value=float("nan")), ValueError), (dict(clip_value="0.5"), TypeError),
]


@pytest.mark.parametrize("kw,exc", BAD_GUARDS,
                         ids=["{}={!r}".format(*next(iter(kw.items()))) for kw, _ in BAD_GUARDS])
def test_bad_guard_options(kw, exc):
    with pytest.raises(exc, match=next(iter(kw))):
        optimc.Adam(arrays(np.float64), **kw)
    opt = optimc.Adam(arrays(np.float64), max_grad_norm=1.0)
    with pytest.raises(exc, match=next(iter(kw))):
        opt.set_guard(**{"max_grad_norm": 1.0, **kw})
    assert opt.max_grad_norm == 1.0 and opt.skip_nonfinite is False   # unchanged
