"""optimc against the independent NumPy reference (tests/reference.py).

Every optimizer class and option, 60 steps over params of shapes (), (0,), (1,),
(7,), (33,), (1031,), (5, 13) in float64 (rtol 1e-10) and float32 (rtol 1e-5,
atol 1e-6), with params, state buffers and step counts compared after every
step; plus param groups, dict params, lr edits, callable lr, add_param_group,
state_dict resume (bit-identical) and a hand-worked Lion example."""
import copy
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _util as U  # noqa: E402
from reference import Reference  # noqa: E402

import optimc  # noqa: E402

STEPS = 60
REC = U.Recorder()


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    REC.emit("optimc vs NumPy reference: max relative difference "
             "(|a-b| / (|b| + atol_eff/rtol)) over params and state")


def make(name, params, h):
    """optimc optimizer over ``params`` (which it updates in place)."""
    return getattr(optimc, name)(params, **h)


def compare(opt, ref, name, h, dtype, keys, at, hyper_per_param=None):
    """params, state entries (the exact set of names the reference keeps) and step counts."""
    for i, k in enumerate(keys):
        what = f"{name} {U.dtype_id(dtype)} step {at}: "
        p_opt = opt_param(opt, i)
        U.check_close(p_opt, ref.params[i], dtype, what + f"param[{k!r}] {ref.params[i].shape}",
                      recorder=REC, name=name)
        assert p_opt.dtype == np.dtype(dtype)
        st = opt.state[k]
        expected = {b for b in ref.state[i] if b != "step"}
        got = {b for b in st if b != "step"}
        assert got == expected, what + f"state[{k!r}] has {sorted(got)}, expected {sorted(expected)}"
        assert int(st["step"]) == ref.state[i]["step"], what + f"state[{k!r}]['step']"
        for buf in expected:
            theirs = ref.state[i][buf]
            if not isinstance(theirs, np.ndarray):   # scalar state, kept in double
                tol = 1e-12 if np.dtype(dtype) == np.float64 else 1e-6
                assert abs(float(st[buf]) - theirs) <= tol * abs(theirs), \
                    what + f"state[{k!r}][{buf!r}] {st[buf]!r} vs {theirs!r}"
                continue
            arr = np.asarray(st[buf])
            assert arr.shape == theirs.shape and arr.dtype == np.dtype(dtype), what + buf
            U.check_close(arr, theirs, dtype, what + f"state[{k!r}][{buf!r}]", recorder=REC, name=name)


_PARAMS = {}


def opt_param(opt, i):
    """The i-th param array (flat over groups) that optimc updates in place."""
    return _PARAMS[id(opt)][i]


def start(name, params, h, groups=None):
    """optimc optimizer over fresh copies of ``params`` (flat list) and the reference."""
    mine = [p.copy() for p in params]
    if groups is None:
        opt, ref = make(name, mine, h), Reference(name, params, **h)
    else:
        spans, gdicts, rdicts, i = groups, [], [], 0
        for n, over in spans:
            gdicts.append({"params": mine[i:i + n], **over})
            rdicts.append({"params": params[i:i + n], **over})
            i += n
        opt, ref = make(name, gdicts, h), Reference(name, rdicts, **h)
    _PARAMS[id(opt)] = mine
    return opt, ref


# ---------------------------------------------------------------------------
# every class and option, both dtypes, all shapes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", U.DTYPES, ids=U.dtype_id)
@pytest.mark.parametrize("case", U.all_cases(), ids=U.case_id)
def test_matches_reference(case, dtype):
    name, h = case
    params, grads = U.problem(dtype, STEPS)
    opt, ref = start(name, params, h)
    keys = list(range(len(params)))
    for t, g in enumerate(grads, 1):
        opt.step([x.copy() for x in g])
        ref.step(g)
        compare(opt, ref, name, h, dtype, keys, t)
    assert any(not np.array_equal(a, b) for a, b in zip(params, ref.params) if a.size)


# ---------------------------------------------------------------------------
# param groups with different hyperparameters; add_param_group mid-run
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", U.DTYPES, ids=U.dtype_id)
@pytest.mark.parametrize("name", U.ALL_NAMES)
def test_param_groups(name, dtype):
    h = U.rich(name)
    params, grads = U.problem(dtype, STEPS, seed=3)
    over = U.second_group(name)
    opt, ref = start(name, params, h, groups=[(3, {}), (len(params) - 3, over)])
    assert len(opt.param_groups) == 2
    assert opt.param_groups[1]["lr"] == over["lr"]
    per_param = [h] * 3 + [{**h, **over}] * (len(params) - 3)
    for t, g in enumerate(grads, 1):
        opt.step(g)
        ref.step(g)
        compare(opt, ref, name, h, dtype, range(len(params)), t, per_param)


@pytest.mark.parametrize("name", U.ALL_NAMES)
def test_add_param_group_mid_run(name):
    dtype = np.float64
    h = U.rich(name)
    params, grads = U.problem(dtype, STEPS, seed=4)
    opt, ref = start(name, params[:4], h)
    late = [p.copy() for p in params[4:]]
    for t, g in enumerate(grads, 1):
        if t == 21:
            over = U.second_group(name)
            opt.add_param_group({"params": late, **over})
            ref.add_param_group({"params": params[4:], **over})
            _PARAMS[id(opt)] += late
        n = len(ref.params)
        opt.step(g[:n])
        ref.step(g[:n])
        per_param = [h] * 4 + [{**h, **U.second_group(name)}] * (n - 4)
        compare(opt, ref, name, h, dtype, range(n), t, per_param)
    assert opt.state[4]["step"] == STEPS - 20 and opt.state[0]["step"] == STEPS


# ---------------------------------------------------------------------------
# dict params
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", U.DTYPES, ids=U.dtype_id)
@pytest.mark.parametrize("name", U.ALL_NAMES)
def test_dict_params(name, dtype):
    h = U.rich(name)
    names = ["W", "b", "scale", "empty", "odd"]
    shapes = [(5, 13), (13,), (), (0,), (33,)]
    params = U.make_params(shapes, dtype, seed=7)
    grads = U.make_grads(shapes, dtype, STEPS, seed=8)
    mine = {k: p.copy() for k, p in zip(names, params)}
    opt = make(name, mine, h)
    _PARAMS[id(opt)] = [mine[k] for k in names]
    ref = Reference(name, params, **h)
    for t, g in enumerate(grads, 1):
        # keys in a different order than the params: matched by name, not position
        opt.step({k: x for k, x in reversed(list(zip(names, g)))})
        ref.step(g)
        compare(opt, ref, name, h, dtype, names, t)


# ---------------------------------------------------------------------------
# lr edited between steps; callable lr
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["attribute", "param_group"])
@pytest.mark.parametrize("dtype", U.DTYPES, ids=U.dtype_id)
@pytest.mark.parametrize("name", U.ALL_NAMES)
def test_lr_changed_mid_run(name, dtype, how):
    h = U.rich(name)
    params, grads = U.problem(dtype, STEPS, seed=9)
    opt, ref = start(name, params, h, groups=[(3, {}), (len(params) - 3, {"lr": h["lr"] * 0.5})])
    for t, g in enumerate(grads, 1):
        if t in (21, 41):
            new = h["lr"] * (3.0 if t == 21 else 0.25)
            if how == "attribute":
                opt.lr = new                      # every group
                for grp in ref.param_groups:
                    grp["lr"] = new
                assert all(grp["lr"] == new for grp in opt.param_groups)
            else:
                opt.param_groups[0]["lr"] = new   # group 0 only
                ref.param_groups[0]["lr"] = new
                assert opt.param_groups[1]["lr"] != new
        opt.step(g)
        ref.step(g)
        compare(opt, ref, name, h, dtype, range(len(params)), t)


@pytest.mark.parametrize("name", U.ALL_NAMES)
def test_callable_lr(name):
    """lr given as a function of the 0-based step count, evaluated before each step."""
    dtype = np.float64
    h = U.rich(name)
    base = h["lr"]
    h = {**h, "lr": lambda k: base * (1.0 + 0.5 * np.cos(0.3 * k))}
    params, grads = U.problem(dtype, 30, seed=10)
    opt, ref = start(name, params, h)
    for t, g in enumerate(grads, 1):
        opt.step(g)
        ref.step(g)
        compare(opt, ref, name, h, dtype, range(len(params)), t)


# ---------------------------------------------------------------------------
# resume from state_dict: bit-identical to the uninterrupted run
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", U.DTYPES, ids=U.dtype_id)
@pytest.mark.parametrize("name", U.ALL_NAMES)
def test_resume_from_state_dict_is_bit_identical(name, dtype):
    h = U.rich(name)
    params, grads = U.problem(dtype, STEPS, seed=11)
    groups = [(3, {}), (len(params) - 3, U.second_group(name))]
    new_lr = h["lr"] * 0.7

    def run(opt, gs):
        for t, g in enumerate(gs, 1):
            if t == 10:  # an lr edited before the checkpoint travels in the state_dict
                opt.param_groups[1]["lr"] = new_lr
            opt.step(g)

    full, _ = start(name, params, h, groups)
    run(full, grads)
    first, _ = start(name, params, h, groups)
    run(first, grads[:25])
    sd = first.state_dict()
    sd_snapshot = copy.deepcopy(sd)
    ckpt_params = [p.copy() for p in _PARAMS[id(first)]]
    # the checkpoint must be a copy: stepping the old optimizer must not change it
    first.step(grads[25])

    for which, state in (("state_dict()", sd), ("deepcopy(state_dict())", sd_snapshot)):
        resumed = [p.copy() for p in ckpt_params]
        i, gdicts = 0, []
        for n, over in groups:
            gdicts.append({"params": resumed[i:i + n], **over})
            i += n
        fresh = make(name, gdicts, h)
        fresh.load_state_dict(state)
        assert fresh.param_groups[1]["lr"] == new_lr, f"{name}: group lr not restored"
        for g in grads[25:]:
            fresh.step(g)
        what = f"{name} {U.dtype_id(dtype)} resumed from {which}"
        for k, (a, b) in enumerate(zip(resumed, _PARAMS[id(full)])):
            assert np.array_equal(a, b), f"{what}: param[{k}] differs from the uninterrupted run"
            sa, sb = fresh.state[k], full.state[k]
            assert set(sa) == set(sb), what
            for buf in sb:
                assert np.array_equal(np.asarray(sa[buf]), np.asarray(sb[buf])), \
                    f"{what}: state[{k}][{buf!r}] differs from the uninterrupted run"


# ---------------------------------------------------------------------------
# Lion, worked by hand
# ---------------------------------------------------------------------------
def test_lion_hand_worked():
    """lr = 0.1, betas = (0.9, 0.99), weight_decay = 0.5; p0 = [1, -2, 0.5], m0 = 0.
    Each step: p <- p * (1 - 0.1*0.5) = 0.95 p; c = 0.9 m + 0.1 g; p <- p - 0.1 sign(c);
    m <- 0.99 m + 0.01 g.

    step 1, g = [0.5, -1, 0]:
        0.95 p = [0.95, -1.9, 0.475]; c = [0.05, -0.1, 0] -> sign [1, -1, 0]
        p = [0.85, -1.8, 0.475]           (sign(0) = 0: only the decay acts)
        m = [0.005, -0.01, 0]
    step 2, g = [-1, -1, 2]:
        0.95 p = [0.8075, -1.71, 0.45125]
        c = [0.0045 - 0.1, -0.009 - 0.1, 0 + 0.2] = [-0.0955, -0.109, 0.2] -> [-1, -1, 1]
        p = [0.9075, -1.61, 0.35125]
        m = [0.00495 - 0.01, -0.0099 - 0.01, 0 + 0.02] = [-0.00505, -0.0199, 0.02]
    step 3, g = [0.04, 0.1, -0.1]  (every sign(c) is opposite to sign(g): m dominates)
        0.95 p = [0.862125, -1.5295, 0.3336875]
        c = [-0.004545 + 0.004, -0.01791 + 0.01, 0.018 - 0.01]
          = [-0.000545, -0.00791, 0.008] -> [-1, -1, 1]
        p = [0.962125, -1.4295, 0.2336875]
        m = [-0.0049995 + 0.0004, -0.019701 + 0.001, 0.0198 - 0.001]
          = [-0.0045995, -0.018701, 0.0188]
    """
    grads = [[0.5, -1.0, 0.0], [-1.0, -1.0, 2.0], [0.04, 0.1, -0.1]]
    expected_p = [[0.85, -1.8, 0.475], [0.9075, -1.61, 0.35125], [0.962125, -1.4295, 0.2336875]]
    expected_m = [[0.005, -0.01, 0.0], [-0.00505, -0.0199, 0.02],
                  [-0.0045995, -0.018701, 0.0188]]
    hyper = dict(lr=0.1, betas=(0.9, 0.99), weight_decay=0.5, maximize=False)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-6)):
        p = np.array([1.0, -2.0, 0.5], dtype=dtype)
        opt = optimc.Lion([p], **hyper)
        ref = Reference("Lion", [p], **hyper)
        for g, ep, em in zip(grads, expected_p, expected_m):
            g = np.array(g, dtype=dtype)
            opt.step([g])
            ref.step([g])
            np.testing.assert_allclose(p, ep, rtol=tol, atol=tol)
            np.testing.assert_allclose(opt.state[0]["exp_avg"], em, rtol=tol, atol=tol)
            np.testing.assert_allclose(ref.params[0], ep, rtol=tol, atol=tol)
            np.testing.assert_allclose(ref.state[0]["exp_avg"], em, rtol=tol, atol=tol)
        assert opt.state[0]["step"] == 3

    # maximize with negated grads: g <- -g restores the grads above, so p and m are as above
    p = np.array([1.0, -2.0, 0.5])
    opt = optimc.Lion([p], **{**hyper, "maximize": True})
    for g in grads:
        opt.step([-np.array(g)])
    np.testing.assert_allclose(p, expected_p[-1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(opt.state[0]["exp_avg"], expected_m[-1],
                               rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# arrays large enough for optimc's multi-threaded path
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", U.ALL_NAMES)
def test_large_arrays(name):
    dtype = np.float32
    h = U.rich(name)
    shapes = [(300_007,), (3, 100_003)]
    params = U.make_params(shapes, dtype, seed=12)
    grads = U.make_grads(shapes, dtype, 8, seed=13)
    opt, ref = start(name, params, h)
    for t, g in enumerate(grads, 1):
        opt.step(g)
        ref.step(g)
    compare(opt, ref, name, h, dtype, range(len(params)), len(grads))
