"""ASGD against torch.optim.ASGD 2.13 (single-tensor path): every option
combination, 120 steps with the lr changed mid-run, float64 to 1e-12 and
float32 to float32 rounding; and the averaged params (opt.averaged)."""
import itertools
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util as U  # noqa: E402

import optimc  # noqa: E402

SHAPES = [(), (7,), (5, 3)]
STEPS = 120
OPTIONS = [dict(lambd=lambd, alpha=alpha, t0=t0, weight_decay=wd, maximize=mx)
           for (lambd, alpha), t0, wd, mx in itertools.product(
               [(1e-4, 0.75), (0.05, 0.5)], [1e6, 10.0, -3.0], [0.0, 0.05], [False, True])]
# float64: relative to the array's scale (elements that cancel near 0 carry its rounding)
TOL = {np.float64: 1e-12, np.float32: 2e-6}


def _close(actual, desired, dtype, what):
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    scale = max(1.0, float(np.max(np.abs(desired)))) if desired.size else 1.0
    err = float(np.max(np.abs(actual - desired))) / scale if desired.size else 0.0
    assert err <= TOL[dtype], f"{what}: relative difference {err:.3e} > {TOL[dtype]:g}"


# every combination in float64; a third of them (every value still appears) in float32
CASES = [(h, np.float64) for h in OPTIONS] + [(h, np.float32) for h in OPTIONS[::3]]


@pytest.mark.parametrize("h, dtype", CASES, ids=["-".join(f"{k}={v}" for k, v in h.items())
                                                 + f"-{np.dtype(dt).name}" for h, dt in CASES])
def test_matches_torch(h, dtype):
    torch = pytest.importorskip("torch")
    params, grads = U.problem(dtype, STEPS, SHAPES, seed=3)
    mine = [p.copy() for p in params]
    opt = optimc.ASGD(mine, lr=0.02, **h)
    with U.torch_default_dtype(dtype):   # torch keeps eta, mu, step in its default dtype
        tp = [torch.from_numpy(p.copy()) for p in params]
        ref = torch.optim.ASGD(tp, lr=0.02, foreach=False, **h)
        for t, gs in enumerate(grads):
            if t == 60:                  # acts on eta one step later, in both
                opt.lr = 0.05
                for grp in ref.param_groups:
                    grp["lr"] = 0.05
            opt.step(gs)
            for p, g in zip(tp, gs):
                p.grad = torch.from_numpy(g.copy())
            ref.step()
    for i, p in enumerate(tp):
        st = ref.state[p]
        _close(mine[i], p.numpy(), dtype, f"param {i}")
        _close(opt.state[i]["ax"], st["ax"].numpy(), dtype, f"ax {i}")
        _close(opt.averaged[i], st["ax"].numpy(), dtype, f"averaged {i}")
        assert opt.state[i]["step"] == int(st["step"]) == STEPS
        _close(opt.state[i]["eta"], float(st["eta"]), dtype, f"eta {i}")
        _close(opt.state[i]["mu"], float(st["mu"]), dtype, f"mu {i}")


def test_averaged_is_the_average_of_the_iterates_from_t0():
    """With lambd = 0 the step size stays lr and ax is the plain mean of the
    iterates from step t0 + 2 on (step t uses mu = 1/max(1, t - 1 - t0), as torch)."""
    p = np.zeros(4)
    opt = optimc.ASGD([p], lr=0.1, lambd=0.0, t0=3.0)
    assert opt.averaged[0] is p                 # no average before the first step
    rng = np.random.default_rng(0)
    iterates = []
    for _ in range(20):
        opt.step([rng.standard_normal(4)])
        iterates.append(p.copy())
    np.testing.assert_allclose(opt.averaged[0], np.mean(iterates[4:], axis=0), rtol=1e-13, atol=1e-15)
    assert np.shares_memory(opt.averaged[0], opt.state[0]["ax"])


def test_averaged_of_named_params_is_a_dict():
    params = {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}
    opt = optimc.ASGD(params, lr=0.1, t0=0.0)
    opt.step({"w": np.ones((2, 3), np.float32), "b": np.ones(3, np.float32)})
    avg = opt.averaged
    assert list(avg) == ["w", "b"]
    np.testing.assert_array_equal(avg["w"], opt.state["w"]["ax"])
    np.testing.assert_array_equal(avg["b"], params["b"])   # one iterate: its own average


@pytest.mark.parametrize("name, value, error", [
    ("lambd", -1e-4, ValueError), ("alpha", -0.5, ValueError), ("t0", float("nan"), ValueError),
    ("t0", "1e6", TypeError), ("lambd", True, TypeError)])
def test_bad_hyperparameters_are_refused(name, value, error):
    with pytest.raises(error, match=name):
        optimc.ASGD([np.zeros(3)], **{name: value})
