"""optimc.Lookahead: against optax.lookahead (float64, fast and slow weights at
every step, 120 steps, lr changed mid-run), against a NumPy reference (float32
and float64, groups, named params), checkpoints, pickling, bad input."""
import copy
import os
import pickle
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util as U  # noqa: E402
from reference import Reference  # noqa: E402

import optimc  # noqa: E402

SHAPES = [(), (7,), (5, 3)]
STEPS = 120
LR_AT = 50


def _flat(opt):
    return [p for g in opt.param_groups for p in g["params"]]


# ---- optax ------------------------------------------------------------------------

# (each case compiles its own jax update, seconds apiece: three cover k = 1, k > 1, momentum, Adam)
OPTAX_CASES = [("SGD", dict(momentum=0.0), 5, 0.5), ("SGD", dict(momentum=0.9), 1, 0.3),
               ("Adam", dict(), 3, 0.8)]


@pytest.mark.parametrize("name, kw, k, alpha", OPTAX_CASES,
                         ids=[f"{n}-{kw}-k={k}-alpha={a}" for n, kw, k, a in OPTAX_CASES])
def test_vs_optax_lookahead(name, kw, k, alpha):
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    lr = 0.03
    params, grads = U.problem(np.float64, STEPS, SHAPES, seed=11)
    mine = optimc.Lookahead(getattr(optimc, name)([p.copy() for p in params], lr=lr, **kw), k=k, alpha=alpha)
    if name == "SGD":
        inner = optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=kw["momentum"] or None)
    else:
        inner = optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=0.9, b2=0.999, eps=1e-8)
    tx = optax.lookahead(inner, sync_period=k, slow_step_size=alpha)
    lp = optax.LookaheadParams.init_synced([jnp.asarray(p) for p in params])
    state = tx.init(lp)
    update = jax.jit(tx.update)
    worst = 0.0
    for t, gs in enumerate(grads):
        if t == LR_AT:
            mine.optimizer.lr = lr * 0.5
            state.fast_state.hyperparams["learning_rate"] = jnp.asarray(lr * 0.5)
        synced = mine.step(gs)
        updates, state = update([jnp.asarray(g) for g in gs], state, lp)
        lp = optax.apply_updates(lp, updates)
        assert synced == (int(state.steps_since_sync) == 0)
        for fast, slow, ref_fast, ref_slow in zip(_flat(mine), mine.slow_weights, lp.fast, lp.slow):
            for a, b in ((fast, ref_fast), (slow, ref_slow)):
                b = np.asarray(b)
                if b.size:
                    worst = max(worst, float(np.max(np.abs(a - b))) / max(1.0, float(np.max(np.abs(b)))))
    # optax applies a sync as fast + (update - (1-alpha)*diff) and Adam's moments in its
    # own order: equal to optimc's up to float64 rounding
    assert worst < 1e-12, worst


# ---- NumPy reference ----------------------------------------------------------------

def _reference_run(name, groups, grads, k, alpha, lr_at=None):
    """Lookahead written out over tests/reference.py's optimizer: slow = params at the
    first step; after each k-th step slow += alpha*(fast - slow) in the params' dtype
    (torch.lerp's form), fast = slow."""
    ref = Reference(name, groups)
    slow = [p.copy() for p in ref.params]
    for t, gs in enumerate(grads):
        if t == lr_at:
            for g in ref.param_groups:
                g["lr"] *= 0.5
        ref.step(gs)
        if (t + 1) % k == 0:
            for s, p in zip(slow, ref.params):
                a = s.dtype.type(alpha)
                s[...] = s + a * (p - s) if alpha < 0.5 else p - (p - s) * (s.dtype.type(1) - a)
                p[...] = s
    return ref.params, slow


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name, k, alpha", [("Adam", 5, 0.5), ("RMSprop", 3, 0.2), ("ASGD", 7, 0.9)])
def test_vs_numpy_reference_two_groups(name, k, alpha, dtype):
    params, grads = U.problem(dtype, STEPS, SHAPES, seed=4)
    groups = [{"params": params[:1], "lr": 0.02}, {"params": params[1:], "lr": 0.005, "weight_decay": 0.01}]
    inner = getattr(optimc, name)([{**g, "params": [p.copy() for p in g["params"]]} for g in groups])
    mine = optimc.Lookahead(inner, k=k, alpha=alpha)
    for t, gs in enumerate(grads):
        if t == LR_AT:
            for g in inner.param_groups:
                g["lr"] *= 0.5
        mine.step(gs)
    fast, slow = _reference_run(name, groups, grads, k, alpha, LR_AT)
    for i, (a, b) in enumerate(zip(_flat(mine), fast)):
        U.check_close(a, b, dtype, f"fast {i}")
    for i, (a, b) in enumerate(zip(mine.slow_weights, slow)):
        U.check_close(a, b, dtype, f"slow {i}")


def test_named_params_and_slow_weights():
    params = {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}
    la = optimc.Lookahead(optimc.SGD(params, lr=0.1), k=2, alpha=0.5)
    assert la.slow_weights["w"] is params["w"]          # before the first step: the params
    g = {"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)}
    assert la.step(g) is False and la.step(g) is True
    # two steps of -0.1 from 1, then halfway back: 0.9
    np.testing.assert_allclose(params["w"], 0.9, rtol=1e-6)
    np.testing.assert_array_equal(la.slow_weights["w"], params["w"])
    assert type(la.slow_weights["b"].base).__name__ == "PyCapsule"   # C-allocated buffers


# ---- checkpoints, pickle, bad input ----------------------------------------------------

def _setup(seed=0):
    params, grads = U.problem(np.float64, 23, SHAPES, seed=seed)
    return optimc.Lookahead(optimc.Adam(params, lr=0.01), k=4, alpha=0.6), grads


def _snap(la):
    sd = la.state_dict()
    return [p.copy() for p in _flat(la)], sd


def _same(a, b):
    (pa, sa), (pb, sb) = a, b
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb))
    assert all(np.array_equal(x, y) for x, y in zip(sa["slow_weights"], sb["slow_weights"]))
    assert (sa["steps_since_sync"], sa["started"]) == (sb["steps_since_sync"], sb["started"])
    assert sa["optimizer"]["step_count"] == sb["optimizer"]["step_count"]
    for i in sa["optimizer"]["state"]:
        for key, v in sa["optimizer"]["state"][i].items():
            assert np.array_equal(v, sb["optimizer"]["state"][i][key])


@pytest.mark.parametrize("how", ["state_dict", "pickle", "deepcopy"])
def test_resume_is_bit_identical(how):
    la, grads = _setup()
    other, _ = _setup()
    for gs in grads[:10]:
        la.step(gs)
        other.step(gs)
    if how == "state_dict":
        fresh, _ = _setup(seed=9)
        for p, q in zip(_flat(fresh), _flat(la)):
            p[...] = q
        fresh.load_state_dict(la.state_dict())
    elif how == "pickle":
        fresh = pickle.loads(pickle.dumps(la))
    else:
        fresh = copy.deepcopy(la)
    _same(_snap(fresh), _snap(la))
    for gs in grads[10:]:
        other.step(gs)
        fresh.step(gs)
    _same(_snap(fresh), _snap(other))
    assert repr(fresh) == "Lookahead(Adam, k=4, alpha=0.6; 3/4 steps since the last sync, step 23)"


@pytest.mark.parametrize("first", [True, False], ids=["first-step", "later-step"])
def test_bad_grads_change_nothing(first):
    la, grads = _setup()
    if not first:
        for gs in grads[:6]:
            la.step(gs)
    before = _snap(la)
    bad = list(grads[7])
    bad[1] = bad[1].astype(np.float32)
    with pytest.raises(TypeError, match="dtype"):
        la.step(bad)
    _same(before, _snap(la))


def test_a_skipped_step_does_not_count():
    params = [np.zeros(3)]
    la = optimc.Lookahead(optimc.SGD(params, lr=0.1, skip_nonfinite=True), k=2)
    la.step([np.ones(3)])
    assert la.step([np.full(3, np.nan)]) is False and la.steps_since_sync == 1
    assert la.step([np.ones(3)]) is True


@pytest.mark.parametrize("change, error, match", [
    (lambda sd: sd.update(k=0), ValueError, "k"),
    (lambda sd: sd.update(alpha=1.5), ValueError, "alpha"),
    (lambda sd: sd.update(steps_since_sync=4), ValueError, "steps_since_sync"),
    (lambda sd: sd.update(started="yes"), TypeError, "started"),
    (lambda sd: sd["slow_weights"].pop(), ValueError, "slow_weights"),
    (lambda sd: sd["slow_weights"].__setitem__(1, np.zeros(7, np.float32)), ValueError, r"slow_weights'\]\[1\]"),
    (lambda sd: sd["optimizer"].update(step_count=-1), ValueError, "step_count"),
    (lambda sd: sd.update(format="x"), ValueError, "Lookahead")])
def test_bad_state_dict_changes_nothing(change, error, match):
    la, grads = _setup()
    for gs in grads[:6]:
        la.step(gs)
    sd = la.state_dict()
    sd["steps_since_sync"] = 0 if sd["steps_since_sync"] else 1
    change(sd)
    before = _snap(la)
    with pytest.raises(error, match=match):
        la.load_state_dict(sd)
    _same(before, _snap(la))


@pytest.mark.parametrize("kw, error", [(dict(k=0), ValueError), (dict(k=2.0), TypeError),
                                       (dict(alpha=-0.1), ValueError), (dict(alpha="0.5"), TypeError)])
def test_bad_arguments(kw, error):
    with pytest.raises(error, match=next(iter(kw))):
        optimc.Lookahead(optimc.SGD([np.zeros(2)]), **kw)
    with pytest.raises(TypeError, match="optimizer"):
        optimc.Lookahead([np.zeros(2)])
