"""Adafactor: optimc against torch.optim.Adafactor (skipped without torch) and the
NumPy reference, on 0-D to 4-D params (torch factors the last two dims), in both
ways the C step cuts a factored tensor into chunks; thread and SIMD independence;
state size; empty params; refused options.

The generic suites (test_vs_torch, test_vs_reference, test_hardening, the fuzz and
checkpoint suites) also run Adafactor through its tests/reference.py entry."""
import itertools
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _util as U  # noqa: E402
from reference import Reference  # noqa: E402

import optimc  # noqa: E402

STEPS = 100
#: 0-D, 1-D, 2-D, 3-D and 4-D; (90, 100) is cut into runs of rows of one matrix
#: (3 chunks), (3, 50, 60) into whole matrices, (2, 100, 50) into one run per matrix
SHAPES = [(), (5,), (6, 7), (3, 4, 6), (2, 3, 4, 5), (90, 100), (3, 50, 60), (2, 100, 50)]
#: each option both ways (the generic suites run their full product, from the
#: describe() grid in tests/reference.py, on 0-D to 2-D params)
OPTIONS = [dict(eps=(None, 1e-3), weight_decay=0.0, maximize=False, d=1.0),
           dict(eps=(0.3, 1e-3), weight_decay=0.05, maximize=True, d=1.5),
           dict(eps=(None, 1e-3), weight_decay=0.05, maximize=True, d=1.0),
           dict(eps=(0.3, 1e-3), weight_decay=0.0, maximize=False, d=1.5)]
#: float64 ≤ 1e-12 relative (atol 1e-14 of the array's scale); float32 within its rounding
KIND = {np.dtype(np.float64): "selfcheck", np.dtype(np.float32): "optimc"}


def _problem(dtype, seed=0):
    return U.make_params(SHAPES, dtype, seed), U.make_grads(SHAPES, dtype, STEPS, seed + 1)


def _torch_adafactor(params, dtype, groups=None, **h):
    torch = pytest.importorskip("torch")
    with U.torch_default_dtype(dtype):
        tp = [torch.from_numpy(p.copy()) for p in params]
        spec = [dict(g, params=[tp[i] for i in g["params"]]) for g in groups] if groups else tp
        return tp, torch.optim.Adafactor(spec, foreach=False, **h)


def _torch_step(tp, topt, grads, dtype):
    import torch
    with U.torch_default_dtype(dtype):
        for p, g in zip(tp, grads):
            p.grad = torch.from_numpy(g.copy())
        topt.step()


def _compare_state(opt, tp, topt, dtype, what):
    for i, p in enumerate(tp):
        st = topt.state[p]
        assert sorted(k for k in opt.state[i] if k != "step") == sorted(k for k in st if k != "step")
        for k, v in st.items():
            if k == "step":
                assert int(opt.state[i]["step"]) == int(v)
            else:
                U.check_close(opt.state[i][k], v.numpy(), dtype, f"{what} state[{i}][{k!r}]", KIND[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", U.DTYPES, ids=U.dtype_id)
@pytest.mark.parametrize("h", OPTIONS, ids=lambda h: "-".join(f"{k}={v}" for k, v in h.items()))
def test_matches_torch_with_lr_changed_mid_run(h, dtype):
    params, grads = _problem(dtype)
    mine = [p.copy() for p in params]
    opt = optimc.Adafactor(mine, lr=0.12, **h)
    tp, topt = _torch_adafactor(params, dtype, lr=0.12, **h)
    for t, g in enumerate(grads, 1):
        if t in (31, 61):   # ρ = min(lr, 1/√t): 1/√t decides from t = 31, lr again from t = 61
            opt.lr = 0.24 if t == 31 else 0.036
            topt.param_groups[0]["lr"] = opt.lr
        opt.step(g)
        _torch_step(tp, topt, g, dtype)
        if t % 10 == 0 or t in (1, 2, 31, 61):
            for i, (a, b) in enumerate(zip(mine, tp)):
                U.check_close(a, b.numpy(), dtype, f"step {t} param[{i}] {a.shape}", KIND[np.dtype(dtype)])
    _compare_state(opt, tp, topt, dtype, f"step {STEPS}")
    assert all(not np.array_equal(a, b) for a, b in zip(mine, params))


@pytest.mark.parametrize("dtype", U.DTYPES, ids=U.dtype_id)
def test_param_groups_match_torch(dtype):
    params, grads = _problem(dtype, seed=7)
    groups = [{"params": [0, 2, 5, 6]},
              {"params": [1, 3, 4, 7], "lr": 0.03, "beta2_decay": -0.6, "eps": (1e-20, 1e-2),
               "d": 1.2, "weight_decay": 0.1, "maximize": True}]
    mine = [p.copy() for p in params]
    opt = optimc.Adafactor([dict(g, params=[mine[i] for i in g["params"]]) for g in groups])
    tp, topt = _torch_adafactor(params, dtype, groups)
    order = [i for g in groups for i in g["params"]]   # optimc's flat param order
    for g in grads:
        opt.step([g[i] for i in order])
        _torch_step(tp, topt, g, dtype)
    for i, (a, b) in enumerate(zip(mine, tp)):
        U.check_close(a, b.numpy(), dtype, f"param[{i}] {a.shape}", KIND[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", U.DTYPES, ids=U.dtype_id)
def test_matches_numpy_reference(dtype):
    params, grads = _problem(dtype, seed=3)
    h = dict(lr=0.05, beta2_decay=-0.7, eps=(None, 1e-2), d=1.3, weight_decay=0.02, maximize=True)
    mine = [p.copy() for p in params]
    opt = optimc.Adafactor(mine, **h)
    ref = Reference("Adafactor", params, **h)
    for g in grads:
        opt.step(g)
        ref.step(g)
    for i, (a, b) in enumerate(zip(mine, ref.params)):
        U.check_close(a, b, dtype, f"param[{i}] {a.shape}")
        for k in ref.state[i]:
            if k != "step":
                U.check_close(opt.state[i][k], ref.state[i][k], dtype, f"state[{i}][{k!r}]")


def test_independent_of_threads_and_simd():
    """Factored tensors in both chunk modes, split over 1-3 threads at every SIMD level."""
    cfg = optimc.show_config(False)
    cpu = cfg["cpu_simd"]
    levels = ["baseline"] + (["avx2"] if cpu in ("avx2", "avx512") else []) + (["avx512"] if cpu == "avx512" else [])
    shapes = [(300, 250), (40, 3, 1100), (2, 40000), (70_001,), ()]
    results = []
    try:
        optimc._core.set_thread_threshold(0)
        for level, threads in itertools.product(levels, (1, 2, 3)):
            optimc.set_simd(level)
            optimc.set_num_threads(threads)
            params = [np.sin(np.arange(int(np.prod(s)), dtype=np.float32)).reshape(s) for s in shapes]
            opt = optimc.Adafactor(params, weight_decay=0.01)
            for s in range(3):
                opt.step([np.cos(np.arange(p.size, dtype=np.float32) * (0.3 + s)).reshape(p.shape)
                          for p in params])
            state = [v for i in range(len(params)) for k, v in opt.state[i].items() if k != "step"]
            results.append(np.concatenate([a.ravel() for a in params + state]))
    finally:
        optimc.set_simd(cfg["cpu_simd"])
        optimc.set_num_threads(cfg["num_threads"])
        optimc._core.set_thread_threshold(cfg["thread_threshold"])
    for r in results[1:]:
        assert np.array_equal(r, results[0])


def test_state_of_a_matrix_is_its_rows_and_columns():
    W = np.zeros((1024, 1024), np.float32)
    opt = optimc.Adafactor([W, np.zeros(1024, np.float32)])
    assert {k: v.shape for k, v in opt.state[0].items() if k != "step"} == {"row_var": (1024, 1),
                                                                             "col_var": (1, 1024)}
    assert {k: v.shape for k, v in opt.state[1].items() if k != "step"} == {"variance": (1024,)}
    # the factors (2 x 1024 float32), the vector's variance, and 16 chunks' column sums (float64)
    assert opt.state_bytes == 2 * 1024 * 4 + 1024 * 4 + 16 * 1025 * 8
    assert optimc.Adafactor([W]).state_bytes / W.size < 0.14   # Adam: 8


def test_empty_params_are_left_as_they_are():
    params = [np.zeros((0,)), np.zeros((0, 5)), np.zeros((4, 0)), np.zeros((2, 0, 3)), np.ones((2, 3))]
    opt = optimc.Adafactor(params)
    for _ in range(2):
        opt.step([np.ones_like(p) for p in params])
    assert opt.state[3]["row_var"].shape == (2, 0, 1) and opt.state[2]["col_var"].shape == (1, 0)
    assert np.array_equal(opt.state[1]["col_var"], np.zeros((1, 5)))
    assert np.all(params[4] < 1) and all(int(opt.state[i]["step"]) == 2 for i in range(5))


@pytest.mark.parametrize("bad, error", [
    (dict(eps=(-1e-3, 1e-3)), ValueError), (dict(eps=(None, None)), TypeError), (dict(eps=1e-3), TypeError),
    (dict(d=0.5), ValueError), (dict(beta2_decay=0.1), ValueError), (dict(lr=-1.0), ValueError),
    (dict(state_dtype="8bit"), ValueError)])
def test_bad_options_refused(bad, error):
    with pytest.raises(error):
        optimc.Adafactor([np.zeros((3, 4))], **bad)
    if "state_dtype" in bad:
        return
    opt = optimc.Adafactor([np.zeros((3, 4))])
    (name, value), = bad.items()
    with pytest.raises(error):
        setattr(opt, name, value)
    assert opt.param_groups[0][name] == optimc.Adafactor([np.zeros(1)]).defaults[name]


def test_sparse_grads_refused():
    p = np.ones((3, 4))
    opt = optimc.Adafactor([p])
    with pytest.raises(TypeError, match="does not take a SparseGrad"):
        opt.step([optimc.SparseGrad(np.array([0]), np.ones((1, 4)))])
    assert np.array_equal(p, np.ones((3, 4))) and int(opt.state[0]["step"]) == 0
