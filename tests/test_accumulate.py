"""optimc.MultiSteps: gradient accumulation over k calls, one inner step per k.

* Against a NumPy reference (the inner optimizer's twin fed sum/k computed by
  NumPy): bit-identical, every class in optimc.ALL, float32 and float64, sum and mean.
* The guard (max_grad_norm, skip_nonfinite), the step count and schedulers see one
  step per k; a callable lr is called once per inner step with the inner step count.
* Bad grads are refused as the optimizer refuses them, with nothing changed.
* state_dict round trip mid-accumulation is bit-identical; no per-step allocation.
* Against optax.MultiSteps (float64) where optax and jax are installed.
"""
from __future__ import annotations

import copy
import math
import pickle
import tracemalloc

import numpy as np
import pytest

import optimc
from optimc import schedules

DTYPES = [np.float32, np.float64]
SHAPES = {"W": (4, 3), "b": (3,), "s": (), "e": (0,)}


def dt_id(d):
    return np.dtype(d).name


def params_of(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {n: np.array(rng.standard_normal(s), dtype=dtype) for n, s in SHAPES.items()}


def micro_grads(dtype, k, seed=100):
    rng = np.random.default_rng(seed + k)
    return {n: np.array(rng.standard_normal(s), dtype=dtype) for n, s in SHAPES.items()}


def numpy_accumulate(grad_list, average):
    """The reference: NumPy sum in call order, then / k for the mean."""
    out = {n: np.zeros(s, grad_list[0][n].dtype) for n, s in SHAPES.items()}
    for g in grad_list:
        for n in out:
            out[n] = np.asarray(out[n] + g[n])
    if average:
        out = {n: np.asarray(v / np.asarray(len(grad_list), v.dtype)) for n, v in out.items()}
    return out


def same_bits(a, b):
    return all(a[n].dtype == b[n].dtype and a[n].tobytes() == b[n].tobytes() for n in a)


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("average", [True, False], ids=["mean", "sum"])
@pytest.mark.parametrize("cls", optimc.ALL, ids=lambda c: c.__name__)
def test_matches_numpy_reference(cls, average, dtype):
    k = 3
    p, q = params_of(dtype), params_of(dtype)
    ms = optimc.MultiSteps(cls(p), every_k=k, average=average)
    twin = cls(q)
    for outer in range(4):
        batch = [micro_grads(dtype, outer * k + j) for j in range(k)]
        for j, g in enumerate(batch):
            stepped = ms.step(g)
            assert stepped == (j == k - 1)
            assert ms.mini_step == (j + 1) % k
        twin.step(numpy_accumulate(batch, average))
        assert same_bits(p, q), f"params differ after inner step {outer + 1}"
    assert ms.optimizer.step_count == twin.step_count == 4


@pytest.mark.parametrize("k", [1, 2, 5])
def test_every_k_and_tuple_grads(k):
    p = [np.zeros(3), np.zeros(2)]
    opt = optimc.SGD(p, lr=1.0)
    ms = optimc.MultiSteps(opt, every_k=k, average=False)
    results = [ms.step((np.ones(3), np.ones(2))) for _ in range(3 * k)]
    assert results == ([False] * (k - 1) + [True]) * 3
    assert opt.step_count == 3
    np.testing.assert_array_equal(p[0], -3.0 * k)


def test_guard_and_schedulers_see_one_step_per_k():
    p = params_of(np.float64)
    opt = optimc.Adam(p, lr=0.1, max_grad_norm=0.5, skip_nonfinite=True)
    sched = schedules.StepLR(opt, step_size=1, gamma=0.5)
    ms = optimc.MultiSteps(opt, every_k=2)
    twin_p = params_of(np.float64)
    twin = optimc.Adam(twin_p, lr=0.1, max_grad_norm=0.5, skip_nonfinite=True)
    twin_sched = schedules.StepLR(twin, step_size=1, gamma=0.5)
    for outer in range(3):
        batch = [micro_grads(np.float64, 2 * outer + j) for j in range(2)]
        if outer == 1:
            batch[0]["W"][1, 1] = np.nan            # one bad micro-batch spoils its whole step
        for g in batch:
            if ms.step(g):
                sched.step()
        twin.step(numpy_accumulate(batch, True))
        twin_sched.step()
        assert opt.last_grad_norm == twin.last_grad_norm or (
            math.isnan(opt.last_grad_norm) and math.isnan(twin.last_grad_norm))
    assert opt.skipped_steps == twin.skipped_steps == 1
    assert opt.step_count == twin.step_count == 2
    assert sched.get_last_lr() == twin_sched.get_last_lr()
    assert same_bits(p, twin_p)
    assert ms.mini_step == 0


def test_callable_lr_sees_inner_step_count():
    seen = []

    def lr(step):
        seen.append(step)
        return 0.1

    opt = optimc.SGD([np.zeros(2)], lr=lr)
    ms = optimc.MultiSteps(opt, every_k=3)
    for _ in range(9):
        ms.step([np.ones(2)])
    # checked once before the k-th grads are added, then used by the step itself
    assert seen == [0, 0, 1, 1, 2, 2]


def _bad_cases(p):
    good = {n: np.ones_like(v) for n, v in p.items()}
    W_f32 = good["W"].astype(np.float32)
    return {
        "list-for-named": [good[n] for n in p],
        "missing": {n: v for n, v in good.items() if n != "b"},
        "extra": {**good, "z": np.ones(1)},
        "not-array": {**good, "b": [1.0, 1.0, 1.0]},
        "dtype": {**good, "W": W_f32},
        "byteorder": {**good, "b": good["b"].astype(">f8")},
        "shape": {**good, "b": np.ones(4)},
        "non-contiguous": {**good, "W": np.ones((3, 4)).T},
        "alias-param": {**good, "W": p["W"]},
    }


@pytest.mark.parametrize("case", list(_bad_cases(params_of(np.float64))))
@pytest.mark.parametrize("at", ["first", "kth"])
def test_bad_grads_refused_like_the_optimizer_and_nothing_changes(case, at):
    p = params_of(np.float64)
    opt = optimc.Adam(p, lr=0.1)
    ms = optimc.MultiSteps(opt, every_k=3)
    if at == "kth":
        ms.step(micro_grads(np.float64, 0))
        ms.step(micro_grads(np.float64, 1))
    bad = _bad_cases(p)[case]
    before = (copy.deepcopy(ms.state_dict()), {n: v.copy() for n, v in p.items()})
    with pytest.raises((TypeError, ValueError)) as ours:
        ms.step(bad)
    with pytest.raises((TypeError, ValueError)) as inner:
        opt.step(bad)
    assert type(ours.value) is type(inner.value)
    assert str(ours.value).split(":")[0] == str(inner.value).split(":")[0]     # names the same array
    after = ms.state_dict()
    assert after["mini_step"] == before[0]["mini_step"]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(after["buffers"], before[0]["buffers"]))
    assert same_bits(p, before[1]) and opt.step_count == 0


def test_alias_of_buffer_refused():
    p = [np.zeros(3)]
    ms = optimc.MultiSteps(optimc.SGD(p), every_k=2)
    buf = ms.state_dict()["buffers"][0]       # a copy: fine
    ms.step([buf])
    with pytest.raises(ValueError, match=r"grads\[0\].*shares memory"):
        ms.step([ms._buffers[0]])


def test_bad_lr_on_kth_call_changes_nothing():
    def lr(step):
        return float("nan") if step == 1 else 0.1

    p = [np.zeros(2)]
    opt = optimc.SGD(p, lr=lr)
    ms = optimc.MultiSteps(opt, every_k=2)
    ms.step([np.ones(2)])
    ms.step([np.ones(2)])                 # inner step 0: lr 0.1
    ms.step([np.full(2, 3.0)])
    sd = ms.state_dict()
    with pytest.raises(ValueError, match="lr: the callable lr of param group 0 returned nan"):
        ms.step([np.ones(2)])
    assert ms.mini_step == 1 and opt.step_count == 1
    assert ms.state_dict()["buffers"][0].tobytes() == sd["buffers"][0].tobytes()
    np.testing.assert_array_equal(p[0], -0.1)


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
def test_state_dict_round_trip_mid_accumulation(dtype):
    p = params_of(dtype)
    ms = optimc.MultiSteps(optimc.NAdam(p, lr=1e-2), every_k=4)
    for k in range(6):
        ms.step(micro_grads(dtype, k))
    sd = ms.state_dict()
    sd_pickled = pickle.loads(pickle.dumps(sd))
    for k in range(6, 15):
        ms.step(micro_grads(dtype, k))
    # a fresh MultiSteps whose params are where they were at the checkpoint
    p3 = params_of(dtype)
    ms3 = optimc.MultiSteps(optimc.NAdam(p3, lr=1e-2), every_k=4)
    for k in range(4):
        ms3.step(micro_grads(dtype, k))       # same params as at the checkpoint, other state
    ms3.step(micro_grads(dtype, 50))
    ms3.load_state_dict(sd_pickled)
    assert ms3.mini_step == 2
    for k in range(6, 15):
        ms3.step(micro_grads(dtype, k))
    assert same_bits(p3, p)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(ms3.state_dict()["buffers"],
                                                          ms.state_dict()["buffers"]))
    copied = copy.deepcopy(ms)
    assert copied.mini_step == ms.mini_step and copied.optimizer is not ms.optimizer


@pytest.mark.parametrize("bad", ["every_k", "average", "mini_step", "buffers-len", "buffer-dtype",
                                 "optimizer", "not-dict"])
def test_bad_state_dict_changes_nothing(bad):
    p = params_of(np.float64)
    ms = optimc.MultiSteps(optimc.Adam(p), every_k=3)
    for k in range(4):
        ms.step(micro_grads(np.float64, k))
    sd = ms.state_dict()
    sd["buffers"] = [b + 1.0 for b in sd["buffers"]]
    sd["mini_step"] = 2
    if bad == "every_k":
        sd["every_k"] = 2
    elif bad == "average":
        sd["average"] = False
    elif bad == "mini_step":
        sd["mini_step"] = 3
    elif bad == "buffers-len":
        sd["buffers"] = sd["buffers"][:-1]
    elif bad == "buffer-dtype":
        sd["buffers"][0] = sd["buffers"][0].astype(np.float32)
    elif bad == "optimizer":
        sd["optimizer"]["optimizer"] = "SGD"
    else:
        sd = [sd]
    before = ms.state_dict()
    with pytest.raises((TypeError, ValueError)):
        ms.load_state_dict(sd)
    after = ms.state_dict()
    assert after["mini_step"] == before["mini_step"] == 1
    assert all(a.tobytes() == b.tobytes() for a, b in zip(after["buffers"], before["buffers"]))
    assert after["optimizer"]["step_count"] == before["optimizer"]["step_count"]


def test_no_allocation_proportional_to_params():
    p = [np.zeros(1_000_000, np.float32), np.zeros(1000, np.float32)]
    ms = optimc.MultiSteps(optimc.Adam(p), every_k=2)
    g = [np.ones_like(x) for x in p]
    ms.step(g)
    ms.step(g)                      # warm up (first inner step)
    tracemalloc.start()
    try:
        for _ in range(4):
            ms.step(g)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"a step allocated {peak} bytes"


def test_constructor_checks_and_repr():
    opt = optimc.SGD([np.zeros(2)])
    for k in (0, -1, 2.0, True, "4"):
        with pytest.raises(ValueError, match="every_k"):
            optimc.MultiSteps(opt, every_k=k)
    with pytest.raises(TypeError, match="average"):
        optimc.MultiSteps(opt, average="yes")
    with pytest.raises(TypeError, match="opt"):
        optimc.MultiSteps([np.zeros(2)])
    ms = optimc.MultiSteps(opt, every_k=4)
    ms.step([np.ones(2)])
    assert repr(ms) == "MultiSteps(SGD, every_k=4, average=True; 1/4 accumulated, step 0)"
    assert ms.param_groups is opt.param_groups
    ms.reset()
    assert ms.mini_step == 0 and not ms.state_dict()["buffers"][0].any()


# ---- optax -------------------------------------------------------------------------

@pytest.mark.parametrize("average", [True, False], ids=["mean", "sum"])
@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_vs_optax_multisteps(name, average):
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    k, lr = 3, 0.05
    p = params_of(np.float64)
    mine = optimc.MultiSteps(getattr(optimc, name)(p, lr=lr), every_k=k, average=average)
    inner = optax.sgd(lr) if name == "SGD" else optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
    tx = optax.MultiSteps(inner, every_k_schedule=k, use_grad_mean=average,
                          accumulator_dtype=jnp.float64)
    jp = {n: jnp.asarray(v.copy()) for n, v in params_of(np.float64).items()}
    state = tx.init(jp)
    update = jax.jit(tx.update)               # one compilation instead of op-by-op dispatch
    worst = 0.0
    for i in range(4 * k):
        g = micro_grads(np.float64, i)
        stepped = mine.step(g)
        updates, state = update({n: jnp.asarray(v) for n, v in g.items()}, state, jp)
        jp = optax.apply_updates(jp, updates)
        assert stepped == bool(tx.has_updated(state))
        for n in p:
            ref = np.asarray(jp[n])
            if ref.size:
                worst = max(worst, float(np.max(np.abs(p[n] - ref) / (np.abs(ref) + 1e-3))))
    # optax averages with a running mean (acc + (g - acc)/(n + 1)), optimc as sum / k
    assert worst < 1e-12, worst


def test_buffers_are_c_allocated_once_and_never_alias_the_params():
    params = [np.zeros((3, 5), np.float32), np.zeros(7)]
    ms = optimc.MultiSteps(optimc.Adam(params), every_k=3)
    bufs = list(ms._buffers)
    for p, b in zip(params, bufs):
        assert type(b.base).__name__ == "PyCapsule"          # memory from optimc's C side
        assert b.ctypes.data % 64 == 0 and b.shape == p.shape and b.dtype == p.dtype
        assert not np.shares_memory(b, p)
    for _ in range(7):
        ms.step([np.ones((3, 5), np.float32), np.ones(7)])
    assert all(a is b for a, b in zip(ms._buffers, bufs))     # no buffer made again
