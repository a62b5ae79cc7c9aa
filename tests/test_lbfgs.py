"""LBFGS: torch.optim.LBFGS's results with the same closure (both line-search
settings), checkpoints, and the all-or-nothing step."""
import copy
import pickle

import numpy as np
import pytest

import optimc


# ---- problems: f and its gradient in float64 NumPy, at a param list ----

def rosenbrock(params):
    (x,) = params
    x = x.astype(np.float64)
    r, s = x[1:] - x[:-1] ** 2, 1 - x[:-1]
    g = np.zeros_like(x)
    g[:-1] += -400 * x[:-1] * r - 2 * s
    g[1:] += 200 * r
    return float(np.sum(100 * r ** 2 + s ** 2)), [g]


def _least_squares():
    rng = np.random.default_rng(3)
    A, b = rng.standard_normal((40, 12)), rng.standard_normal(40)

    def f(params):
        (x,) = params
        r = A @ x.astype(np.float64) - b
        return float(0.5 * r @ r), [A.T @ r]
    return f


def _logistic():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((60, 5))
    y = (X @ rng.standard_normal(5) + 0.5 * rng.standard_normal(60) > 0).astype(np.float64)

    def f(params):
        w, b = (p.astype(np.float64) for p in params)
        z = X @ w + b
        loss = np.mean(np.logaddexp(0, z) - y * z) + 0.01 * w @ w
        r = (1 / (1 + np.exp(-z)) - y) / len(y)
        return float(loss), [X.T @ r + 0.02 * w, np.array(r.sum())]
    return f


PROBLEMS = {
    "rosenbrock": (rosenbrock, lambda rng: [rng.standard_normal(6)], 0.02),   # fixed-step lr
    "least_squares": (_least_squares(), lambda rng: [rng.standard_normal(12)], 0.1),
    "logistic": (_logistic(), lambda rng: [rng.standard_normal(5), np.array(0.3)], 1.0),
}


def closure_for(fn, params, dtype):
    def closure():
        loss, grads = fn(params)
        return loss, [g.astype(dtype) for g in grads]
    return closure


def run_torch(torch, fn, x0, dtype, steps, **hyper):
    tps = [torch.tensor(p.astype(dtype), requires_grad=True) for p in x0]
    opt = torch.optim.LBFGS(tps, **hyper)

    def closure():
        loss, grads = fn([t.detach().numpy() for t in tps])
        for t, g in zip(tps, grads):
            t.grad = torch.tensor(g.astype(dtype))
        return torch.tensor(loss, dtype=torch.float64)
    for _ in range(steps):
        opt.step(closure)
    return [t.detach().numpy() for t in tps], opt.state[tps[0]]


def run_optimc(fn, x0, dtype, steps, **hyper):
    params = [p.astype(dtype) for p in x0]
    opt = optimc.LBFGS(params, **hyper)
    closure = closure_for(fn, params, dtype)
    for _ in range(steps):
        opt.step(closure)
    return params, opt


def rel(a, b):
    a, b = np.concatenate([x.ravel() for x in a]), np.concatenate([x.ravel() for x in b])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# Steps compared with torch per problem and dtype. torch's dot is its BLAS's
# (another summation order) and its vectorised add may fuse a multiply-add, so
# the runs differ in the last bits from the first dot product on; Rosenbrock's
# curved valley amplifies that about tenfold per step once the line search
# takes long steps (float64: 2e-16, 6e-14, 8e-13, 1e-12, 3e-11 after steps
# 1..5), so it is compared over its first 3 steps (21 iterations), 1 in float32.
STEPS = {("rosenbrock", np.float64): 3, ("rosenbrock", np.float32): 1}


def run_both(name, line_search_fn, dtype, steps):
    """The problem's function and start, then (params, optimizer) of optimc and of
    torch after `steps` steps (or STEPS' number), with the same hyperparameters."""
    torch = pytest.importorskip("torch")
    steps = STEPS.get((name, dtype), steps)
    fn, init, lr = PROBLEMS[name]
    x0 = init(np.random.default_rng(0))
    hyper = dict(lr=1.0 if line_search_fn else lr, history_size=4, max_iter=7, line_search_fn=line_search_fn)
    return fn, x0, run_optimc(fn, x0, dtype, steps, **hyper), run_torch(torch, fn, x0, dtype, steps, **hyper)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_float64_matches_torch(name, line_search_fn):
    fn, x0, (ours, opt), (theirs, tstate) = run_both(name, line_search_fn, np.float64, 6)
    assert rel(ours, theirs) <= 1e-12
    assert opt.state["func_evals"] == tstate["func_evals"] and opt.state["n_iter"] == tstate["n_iter"]
    assert len(opt.state["old_dirs"]) == len(tstate["old_dirs"])
    for a, b in zip(opt.state["old_stps"], tstate["old_stps"]):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-9, atol=1e-12 * np.abs(b.numpy()).max())
    assert opt.state["t"] == pytest.approx(float(tstate["t"]), rel=1e-10)
    assert np.isfinite(fn(ours)[0]) and fn(ours)[0] < fn(x0)[0]


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_float32_matches_torch_within_rounding(name, line_search_fn):
    """torch keeps its scalars (t, gtd, ys, ...) as float32 tensors and sums in
    its own order; both runs round differently from the first dot product on,
    and L-BFGS carries that through its history: a few float32 ulps per
    iteration, checked over the first two steps (one for Rosenbrock: STEPS)."""
    _, _, (ours, _), (theirs, _) = run_both(name, line_search_fn, np.float32, 2)
    assert all(p.dtype == np.float32 for p in ours)
    assert rel(ours, theirs) <= 2e-5


def test_named_params_take_a_dict_of_grads_and_defaults_are_torchs():
    fn = PROBLEMS["logistic"][0]
    w, b = np.zeros(5), np.array(0.0)
    opt = optimc.LBFGS({"w": w, "b": b})
    assert {k: opt.param_groups[0][k] for k in ("lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change",
                                                 "history_size", "line_search_fn")} == dict(
        lr=1, max_iter=20, max_eval=25, tolerance_grad=1e-7, tolerance_change=1e-9, history_size=100,
        line_search_fn=None)

    def closure():
        loss, (gw, gb) = fn([w, b])
        return loss, {"b": gb, "w": gw}
    first = opt.step(closure)
    assert first == pytest.approx(np.log(2))
    assert fn([w, b])[0] < first


def _snapshot(opt, params):
    return pickle.dumps((opt.state_dict(), [p.copy() for p in params]))


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_state_dict_and_pickle_resume_bit_identical(line_search_fn):
    fn, init, _ = PROBLEMS["rosenbrock"]
    x0 = init(np.random.default_rng(1))
    hyper = dict(lr=0.02 if line_search_fn is None else 1.0, history_size=3, max_iter=5, line_search_fn=line_search_fn)
    straight, _ = run_optimc(fn, x0, np.float64, 6, **hyper)

    params, opt = run_optimc(fn, x0, np.float64, 3, **hyper)
    sd = opt.state_dict()
    fresh = [p.copy() for p in params]
    resumed = optimc.LBFGS(fresh, **hyper)
    resumed.load_state_dict(sd)
    clone = pickle.loads(pickle.dumps(opt))
    deep = copy.deepcopy(opt)
    for o in (resumed, clone, deep):
        ps = o.param_groups[0]["params"]
        for _ in range(3):
            o.step(closure_for(fn, ps, np.float64))
        assert all(np.array_equal(a, b) for a, b in zip(ps, straight))
    assert opt.state_dict()["state"][0]["n_iter"] == sd["state"][0]["n_iter"]


def _bad_closures(fn, params):
    good = closure_for(fn, params, np.float64)
    calls = {"n": 0}

    def nth(k, make):
        def closure():
            calls["n"] += 1
            loss, grads = good()
            return make(loss, grads) if calls["n"] >= k else (loss, grads)
        return closure
    return calls, {
        "not a pair": (lambda: 1.0, TypeError, "closure: must return a pair"),
        "wrong shape": (nth(1, lambda l, g: (l, [g[0][:-1]])), ValueError, r"closure's grads\[0\]: expected shape"),
        "wrong dtype": (nth(1, lambda l, g: (l, [g[0].astype(np.float32)])), TypeError, "expected float64"),
        "too many grads": (nth(1, lambda l, g: (l, g + g)), ValueError, "expected 1 arrays, got 2"),
        "loss not a number": (nth(1, lambda l, g: ("x", g)), TypeError, "closure's loss"),
        "nan loss later": (nth(3, lambda l, g: (float("nan"), g)), ValueError, "closure's loss: is nan"),
        "inf grad later": (nth(4, lambda l, g: (l, [np.where(np.arange(g[0].size) == 2, np.inf, g[0])])),
                           ValueError, r"closure's grads\[0\]: holds NaN"),
        "closure raises later": (nth(2, lambda l, g: 1 / 0), ZeroDivisionError, "division"),
    }


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_bad_closure_output_refused_with_nothing_changed(line_search_fn):
    fn, init, _ = PROBLEMS["rosenbrock"]
    params = init(np.random.default_rng(2))
    opt = optimc.LBFGS(params, lr=0.02 if line_search_fn is None else 1.0, history_size=3,
                       line_search_fn=line_search_fn)
    for _ in range(2):
        opt.step(closure_for(fn, params, np.float64))
    calls, cases = _bad_closures(fn, params)
    for label, (closure, exc, match) in cases.items():
        before = _snapshot(opt, params)
        calls["n"] = 0
        with pytest.raises(exc, match=match):
            opt.step(closure)
        assert _snapshot(opt, params) == before, label
    opt.step(closure_for(fn, params, np.float64))   # and it still steps


def test_bad_construction_and_hyperparameters():
    x = np.zeros(3)
    with pytest.raises(ValueError, match="one param group"):
        optimc.LBFGS([{"params": [x]}, {"params": [np.zeros(2)]}])
    with pytest.raises(TypeError, match=r"params\[1\]: is float32 but params\[0\] is float64"):
        optimc.LBFGS([x, np.zeros(2, np.float32)])
    with pytest.raises(ValueError, match="line_search_fn: expected one of 'strong_wolfe'"):
        optimc.LBFGS([x], line_search_fn="armijo")
    with pytest.raises(ValueError, match="history_size"):
        optimc.LBFGS([x], history_size=0)
    with pytest.raises(ValueError, match=r"params\[1\]: shares memory with params\[0\]"):
        optimc.LBFGS([x, x[1:]])
    opt = optimc.LBFGS([x])
    with pytest.raises(TypeError, match="closure: expected a callable"):
        opt.step([np.zeros(3)])
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.step(lambda: (0.0, [np.ones(3)]))
    assert opt.state["func_evals"] == 0 and not x.any()


def test_bad_state_dict_refused_with_nothing_changed():
    fn, init, _ = PROBLEMS["least_squares"]
    params, opt = run_optimc(fn, init(np.random.default_rng(0)), np.float64, 2, history_size=3, max_iter=4)
    good = opt.state_dict()
    before = pickle.dumps(good)
    bad = []
    for change in ("d", "old_dirs", "n_iter", "ro", "extra"):
        sd = copy.deepcopy(good)
        st = sd["state"][0]
        if change == "d":
            st["d"] = st["d"][:-1]
        elif change == "old_dirs":
            st["old_dirs"] = st["old_dirs"][:-1]
        elif change == "n_iter":
            st["n_iter"] = -1
        elif change == "ro":
            st["ro"] = ["x"] * len(st["ro"])
        else:
            st["al"] = []
        bad.append(sd)
    sd = copy.deepcopy(good)
    sd["param_groups"][0]["history_size"] = 1
    bad.append(sd)
    for sd in bad:
        with pytest.raises((TypeError, ValueError)):
            opt.load_state_dict(sd)
        assert pickle.dumps(opt.state_dict()) == before


def numpy_two_loop(g, dirs, stps, ro, h_diag):
    """The two-loop recursion as torch writes it, in the arrays' dtype."""
    t = g.dtype.type
    q = -g
    al = [None] * len(dirs)
    for i in range(len(dirs) - 1, -1, -1):
        al[i] = t(np.dot(stps[i].astype(np.float64), q.astype(np.float64))) * t(ro[i])
        q = q + (-al[i]) * dirs[i]
    d = q * t(h_diag)
    for i in range(len(dirs)):
        be = t(np.dot(dirs[i].astype(np.float64), d.astype(np.float64))) * t(ro[i])
        d = d + (al[i] - be) * stps[i]
    return d, al


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_c_two_loop_equals_numpy(dtype):
    from optimc import _core
    rng = np.random.default_rng(9)
    n, m = 1037, 5
    g = rng.standard_normal(n).astype(dtype)
    dirs = [rng.standard_normal(n).astype(dtype) for _ in range(m)]
    stps = [(y + 0.1 * rng.standard_normal(n)).astype(dtype) for y in dirs]
    ro = [float(dtype(1.0) / dtype(np.dot(y.astype(np.float64), s.astype(np.float64)))) for y, s in zip(dirs, stps)]
    d = np.zeros(n, dtype)
    al = _core.lbfgs_direction(g, dirs, stps, ro, 0.7, d)
    want, want_al = numpy_two_loop(g, dirs, stps, ro, 0.7)
    # the dots sum in another order (NumPy's pairwise float64 sum): each differs by
    # ~1e-16 relative before its rounding to the dtype
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(d, want, rtol=tol, atol=tol * np.abs(want).max())
    np.testing.assert_allclose(al, [float(a) for a in want_al], rtol=tol)
    y, s = np.zeros(n, dtype), np.zeros(n, dtype)
    ys, yy = _core.lbfgs_pair(g, dirs[0], d, 0.5, y, s)
    assert np.array_equal(y, g - dirs[0]) and np.array_equal(s, d * dtype(0.5))
    assert ys == pytest.approx(float(np.dot(y.astype(np.float64), s)), rel=tol)
    assert yy == pytest.approx(float(np.dot(y.astype(np.float64), y)), rel=tol)
    with pytest.raises(TypeError, match=r"old_dirs\[1\]: expected"):
        _core.lbfgs_direction(g, [dirs[0], dirs[1].astype(np.float32 if dtype == np.float64 else np.float64)],
                              stps[:2], ro[:2], 1.0, d)
    with pytest.raises(ValueError, match="d is g"):
        _core.lbfgs_direction(g, [], [], [], 1.0, g)
