"""The Python face: params and groups, refused input with nothing written,
state views, checkpoints, pickling, threads, refcounts and memory."""
import copy
import gc
import pickle
import sys
import threading

import numpy as np
import pytest

import optimc

RNG = np.random.default_rng(1234)


def make(dtype=np.float32, shapes=((3, 4), (4,), ())):
    return [RNG.standard_normal(s).astype(dtype) for s in shapes]


def grads_like(params, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def snapshot(opt, params):
    """Copies of every param and every state entry."""
    state = [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in opt.state[k].items()}
             for k in opt.state]
    return [p.copy() for p in params], state, opt.step_count


def assert_same(before, after):
    (p0, s0, n0), (p1, s1, n1) = before, after
    assert n0 == n1
    for a, b in zip(p0, p1):
        assert np.array_equal(a, b, equal_nan=True)
    for a, b in zip(s0, s1):
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k], equal_nan=True), k


# every class with options that allocate all its state buffers
ALL_FULL = [
    (optimc.SGD, dict(momentum=0.9)), (optimc.Momentum, {}), (optimc.NAG, {}),
    (optimc.Adagrad, dict(initial_accumulator_value=0.1)),
    (optimc.RMSprop, dict(momentum=0.5, centered=True)), (optimc.Adadelta, {}),
    (optimc.Adam, dict(amsgrad=True)), (optimc.AdamW, {}), (optimc.Adamax, {}), (optimc.NAdam, {}),
    (optimc.RAdam, {}), (optimc.Lion, {}),
]


@pytest.mark.parametrize("cls,kw", ALL_FULL, ids=[c.__name__ for c, _ in ALL_FULL])
def test_step_updates_in_place(cls, kw):
    params = make()
    ids = [id(p) for p in params]
    before = [p.copy() for p in params]
    opt = cls(params, **kw)
    opt.step(grads_like(params))
    assert [id(p) for p in opt.param_groups[0]["params"]] == ids
    assert all(not np.array_equal(a, b) for a, b in zip(before, params))
    assert opt.step_count == 1 and all(opt.state[i]["step"] == 1 for i in opt.state)


# ---- bad input is refused and nothing is written ------------------------

def _bad_grads(params):
    g = grads_like(params)
    yield "wrong count", TypeError, g[:2] if False else None
    yield "too few", ValueError, g[:-1]
    yield "too many", ValueError, g + [g[0]]
    yield "dtype", TypeError, [g[0].astype(np.float64)] + g[1:]
    yield "int dtype", TypeError, [g[0].astype(np.int32)] + g[1:]
    yield "complex", TypeError, [g[0].astype(np.complex64)] + g[1:]
    yield "float16", TypeError, [g[0].astype(np.float16)] + g[1:]
    yield "byteswapped", TypeError, [g[0].astype(g[0].dtype.newbyteorder())] + g[1:]
    yield "shape", ValueError, [g[0].T.copy()] + g[1:]
    yield "0-d vs 1-d", ValueError, g[:2] + [g[2].reshape(1)]
    yield "not an array", TypeError, [g[0].tolist()] + g[1:]
    yield "None", TypeError, g[:1] + [None] + g[2:]
    yield "non-contiguous", ValueError, [np.asfortranarray(g[0])] + g[1:]
    yield "a generator", TypeError, (x for x in g)
    yield "a single array", TypeError, g[0]
    yield "a dict for positional params", TypeError, {0: g[0], 1: g[1], 2: g[2]}


BAD = [(name, exc, n) for n, (name, exc, _) in enumerate(_bad_grads(make())) if _ is not None]


@pytest.mark.parametrize("cls,kw", ALL_FULL, ids=[c.__name__ for c, _ in ALL_FULL])
@pytest.mark.parametrize("case", range(len(BAD)), ids=[b[0] for b in BAD])
def test_bad_grads_change_nothing(cls, kw, case):
    params = make()
    opt = cls(params, **kw)
    good = grads_like(params, seed=5)
    opt.step(good)
    twin = cls([p.copy() for p in params], **kw)
    twin.load_state_dict(opt.state_dict())
    name, exc, _ = BAD[case]
    bad = [b for b in _bad_grads(params) if b[2] is not None][case][2]
    before = snapshot(opt, params)
    with pytest.raises(exc) as info:
        opt.step(bad)
    assert_same(before, snapshot(opt, params))
    assert "grads" in str(info.value)
    # the next good step behaves as if the bad one never happened
    opt.step(good)
    twin.step(good)
    for a, b in zip(params, twin.param_groups[0]["params"]):
        assert np.array_equal(a, b)


def test_error_names_the_array():
    params = make()
    opt = optimc.Adam(params)
    g = grads_like(params)
    with pytest.raises(TypeError, match=r"grads\[1\].*float32.*float64"):
        opt.step([g[0], g[1].astype(np.float64), g[2]])
    with pytest.raises(ValueError, match=r"grads\[0\].*\(3, 4\).*\(4, 3\)"):
        opt.step([g[0].T.copy(), g[1], g[2]])
    named = optimc.Adam({"W": params[0], "b": params[1]})
    with pytest.raises(ValueError, match=r"grads\['b'\]: missing"):
        named.step({"W": g[0]})
    with pytest.raises(ValueError, match=r"grads\['c'\]: no param"):
        named.step({"W": g[0], "b": g[1], "c": g[1]})
    with pytest.raises(TypeError, match=r"grads\['W'\]"):
        named.step({"W": g[0].astype(np.float64), "b": g[1]})
    with pytest.raises(TypeError, match="dict"):
        named.step([g[0], g[1]])


def test_bad_grad_late_in_list_writes_nothing():
    params = make(shapes=[(100,)] * 10)
    opt = optimc.SGD(params, lr=0.1, momentum=0.9)
    g = grads_like(params)
    g[9] = g[9].astype(np.float64)
    before = snapshot(opt, params)
    with pytest.raises(TypeError, match=r"grads\[9\]"):
        opt.step(g)
    assert_same(before, snapshot(opt, params))


def test_grad_aliasing_param_or_state_refused():
    params = make()
    opt = optimc.Adam(params)
    g = grads_like(params)
    with pytest.raises(ValueError, match="shares memory"):
        opt.step([params[0], g[1], g[2]])
    with pytest.raises(ValueError, match="shares memory"):
        opt.step([opt.state[0]["exp_avg"], g[1], g[2]])


@pytest.mark.parametrize("bad,exc,match", [
    (lambda: np.arange(6, dtype=np.int64), TypeError, "float32 or float64"),
    (lambda: np.zeros(3, ">f2"), TypeError, "float32 or float64"),   # float16 params: test_half_params.py
    (lambda: np.zeros(3, np.complex128), TypeError, "float32 or float64"),
    (lambda: np.zeros((4, 4), np.float32)[:, 1], ValueError, "C-contiguous"),
    (lambda: np.asfortranarray(np.zeros((3, 4))), ValueError, "C-contiguous"),
    (lambda: [1.0, 2.0], TypeError, "ndarray"),
])
def test_bad_params_refused(bad, exc, match):
    with pytest.raises(exc, match=r"params\[1\]: .*" + match):
        optimc.Adam([np.zeros(2, np.float32), bad()])


def test_readonly_and_duplicate_params_refused():
    a = np.zeros(3)
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[1\].*read-only"):
        optimc.SGD([a, ro])
    with pytest.raises(ValueError, match=r"params\[1\].*shares memory with params\[0\]"):
        optimc.SGD([a, a])
    big = np.zeros(10)
    with pytest.raises(ValueError, match=r"params\[1\].*shares memory with params\[0\]"):
        optimc.SGD([big[:5], big[4:]])
    with pytest.raises(ValueError, match="shares memory"):
        optimc.SGD([{"params": [a]}, {"params": [a]}])
    with pytest.raises(TypeError, match="single ndarray"):
        optimc.SGD(a)
    with pytest.raises(ValueError, match="at least one array"):
        optimc.SGD([])


def test_param_made_readonly_later_is_refused():
    a = np.zeros(3)
    opt = optimc.SGD([a], lr=0.1)
    a.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\].*read-only"):
        opt.step([np.ones(3)])
    assert opt.step_count == 0


@pytest.mark.parametrize("cls,kw,match", [
    (optimc.Adam, dict(lr=-1.0), "lr"),
    (optimc.Adam, dict(lr=float("nan")), "lr"),
    (optimc.Adam, dict(betas=(0.9, 1.0)), r"betas\[1\]"),
    (optimc.Adam, dict(betas=(-0.1, 0.9)), r"betas\[0\]"),
    (optimc.Adam, dict(eps=0.0), "eps"),
    (optimc.Adam, dict(weight_decay=-1e-4), "weight_decay"),
    (optimc.SGD, dict(nesterov=True), "nesterov"),
    (optimc.SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), "nesterov"),
    (optimc.SGD, dict(momentum=1.5), "momentum"),
    (optimc.RMSprop, dict(alpha=1.0), "alpha"),
    (optimc.Adadelta, dict(rho=-0.5), "rho"),
    (optimc.Adagrad, dict(lr_decay=-1), "lr_decay"),
    (optimc.Adagrad, dict(initial_accumulator_value=-1), "initial_accumulator_value"),
    (optimc.NAdam, dict(momentum_decay=-1), "momentum_decay"),
    (optimc.NAG, dict(momentum=0.0), "momentum"),
])
def test_bad_hyperparameters(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls([np.zeros(2)], **kw)


def test_hyperparameter_types():
    with pytest.raises(TypeError, match="amsgrad"):
        optimc.Adam([np.zeros(2)], amsgrad="yes")
    with pytest.raises(TypeError, match="lr"):
        optimc.Adam([np.zeros(2)], lr="0.1")
    with pytest.raises(TypeError, match="betas"):
        optimc.Adam([np.zeros(2)], betas=0.9)
    with pytest.raises(TypeError):
        optimc.Adam([np.zeros(2)], momentum=0.9)  # not an Adam option


def test_live_hyperparameters_checked_on_assignment():
    p = np.zeros(3)
    opt = optimc.SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1
    with pytest.raises(ValueError, match="nesterov"):
        opt.momentum = 0.0
    with pytest.raises(ValueError, match="lr"):
        opt.param_groups[0]["lr"] = -3
    assert opt.lr == 0.1 and opt.momentum == 0.9
    opt.lr = 0.5
    assert opt.param_groups[0]["lr"] == 0.5
    opt.step([np.ones(3)])
    np.testing.assert_array_equal(p, -0.5 * (1 + 0.9) * np.ones(3))


def test_structural_options_are_fixed():
    opt = optimc.Adam([np.zeros(3)])
    with pytest.raises(ValueError, match="amsgrad.*fixed"):
        opt.amsgrad = True
    sgd = optimc.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(ValueError, match="momentum_buffer"):
        sgd.momentum = 0.9
    assert sgd.momentum == 0.0 and "momentum_buffer" not in sgd.state[0]


def test_param_groups_and_lr_change():
    a, b = np.zeros(2), np.zeros(2)
    opt = optimc.SGD([{"params": [a], "lr": 1.0}, {"params": [b]}], lr=0.1)
    opt.step([np.ones(2), np.ones(2)])
    np.testing.assert_array_equal(a, [-1, -1])
    np.testing.assert_array_equal(b, [-0.1, -0.1])
    with pytest.raises(AttributeError, match="differ"):
        opt.lr
    opt.param_groups[1]["lr"] = 2.0
    opt.step([np.zeros(2), np.ones(2)])
    np.testing.assert_array_equal(b, [-2.1, -2.1])
    c = np.zeros(1)
    opt.add_param_group({"params": [c], "lr": 3.0, "note": "extra keys are kept"})
    opt.step([np.zeros(2), np.zeros(2), np.ones(1)])
    assert c[0] == -3.0 and opt.param_groups[2]["note"] == "extra keys are kept"


def test_dict_params_and_state_by_name():
    W, b = np.ones((2, 2), np.float32), np.zeros(2, np.float32)
    opt = optimc.Adam({"W": W, "b": b}, lr=0.1)
    opt.step({"b": np.ones(2, np.float32), "W": np.ones((2, 2), np.float32)})
    assert set(opt.state) == {"W", "b"}
    assert opt.state["W"]["exp_avg"].shape == (2, 2)
    assert opt.state["b"]["step"] == 1


def test_zero_d_and_empty_params():
    s, e = np.array(2.0), np.zeros((0, 3), np.float32)
    opt = optimc.Adam([s, e], lr=0.5)
    opt.step([np.array(1.0), np.zeros((0, 3), np.float32)])
    assert s.shape == () and s < 2.0
    assert opt.state[1]["exp_avg"].shape == (0, 3)


def test_mixed_dtypes_in_one_optimizer():
    a, b = np.ones(4, np.float32), np.ones(4, np.float64)
    opt = optimc.SGD([a, b], lr=0.5)
    opt.step([np.ones(4, np.float32), np.ones(4, np.float64)])
    assert a.dtype == np.float32 and np.all(a == 0.5) and np.all(b == 0.5)
    assert "float32/float64" in repr(opt)


def test_repr_and_html():
    opt = optimc.Adam([np.zeros((3, 4), np.float32)], lr=3e-4)
    r = repr(opt)
    assert r.startswith("Adam(lr=0.0003") and "1 param " in r and "12 elements" in r and "step 0" in r
    h = opt._repr_html_()
    assert "<table>" in h and "exp" not in h and "96 bytes" in h


# ---- state views ---------------------------------------------------------

def test_state_views_alias_c_buffers_and_outlive_optimizer():
    p = np.ones(5)
    opt = optimc.Adam([p])
    view = opt.state[0]["exp_avg"]
    assert view.flags.c_contiguous and view.ctypes.data % 64 == 0
    opt.step([np.ones(5)])
    assert np.all(view > 0)          # the view sees the step: it aliases the C buffer
    del opt
    gc.collect()
    assert np.all(view > 0) and view.sum() > 0   # still valid after the optimizer is gone
    assert view.base is not None


# ---- checkpoints, pickle, deepcopy -------------------------------------

@pytest.mark.parametrize("cls,kw", ALL_FULL, ids=[c.__name__ for c, _ in ALL_FULL])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resume_is_bit_identical(cls, kw, dtype):
    gs = [grads_like(make(dtype), seed=s) for s in range(12)]
    straight = make(dtype)
    resumed = [p.copy() for p in straight]
    opt = cls(straight, **kw)
    for g in gs:
        opt.step(g)
    first = cls(resumed, **kw)
    for g in gs[:5]:
        first.step(g)
    sd = first.state_dict()
    again = cls(resumed, **kw)
    again.load_state_dict(sd)
    for g in gs[5:]:
        again.step(g)
    for a, b in zip(straight, resumed):
        assert np.array_equal(a, b)
    assert again.step_count == opt.step_count


def test_state_dict_is_plain_copies():
    p = np.ones(3)
    opt = optimc.Adam([p])
    opt.step([np.ones(3)])
    sd = opt.state_dict()
    sd["state"][0]["exp_avg"][:] = 99
    assert not np.any(opt.state[0]["exp_avg"] == 99)
    assert sd["version"] == 1 and sd["param_groups"][0]["params"] == [0]


@pytest.mark.parametrize("mutate,match", [
    (lambda sd: sd.update(version=99), "version"),
    (lambda sd: sd.update(optimizer="SGD"), "SGD"),
    (lambda sd: sd["state"][1].pop("exp_avg"), "expected"),
    (lambda sd: sd["state"][1].update(extra=np.zeros(4)), "expected"),
    (lambda sd: sd["state"][1].update(exp_avg=np.zeros(5, np.float32)), "shape"),
    (lambda sd: sd["state"][1].update(exp_avg=np.zeros(4, np.float64)), "float32"),
    (lambda sd: sd["state"][0].update(step=-1), "step"),
    (lambda sd: sd["param_groups"][0].update(lr=-1.0), "lr"),
    (lambda sd: sd["param_groups"][0].update(amsgrad=True), "amsgrad"),
    (lambda sd: sd["param_groups"].append({}), "groups"),
    (lambda sd: sd["state"].pop(1), "state"),
])
def test_load_state_dict_checks_everything_first(mutate, match):
    params = [np.ones((2, 3), np.float32), np.ones(4, np.float32)]
    opt = optimc.Adam(params, lr=0.1)
    opt.step(grads_like(params))
    sd = opt.state_dict()
    opt.step(grads_like(params, 1))
    sd["state"][1]["exp_avg"] = sd["state"][1]["exp_avg"] + 1   # would change state if taken
    sd["param_groups"][0]["lr"] = 0.5
    mutate(sd)
    before = snapshot(opt, params)
    with pytest.raises((ValueError, TypeError), match=match):
        opt.load_state_dict(sd)
    assert_same(before, snapshot(opt, params))
    assert opt.lr == 0.1


@pytest.mark.parametrize("cls,kw", ALL_FULL, ids=[c.__name__ for c, _ in ALL_FULL])
def test_pickle_params_and_optimizer_together(cls, kw):
    params = make()
    opt = cls(params, lr=0.01, **kw)
    opt.step(grads_like(params))
    params2, opt2 = pickle.loads(pickle.dumps((params, opt)))
    assert type(opt2) is cls and opt2.step_count == 1
    assert all(a is b for a, b in zip(params2, opt2.param_groups[0]["params"]))
    g = grads_like(params, 7)
    opt.step(g)
    opt2.step(g)
    for a, b in zip(params, params2):
        assert np.array_equal(a, b)


def test_deepcopy_and_named_pickle():
    W = np.ones((2, 2))
    opt = optimc.RMSprop({"W": W}, momentum=0.9, centered=True, max_grad_norm=1.0)
    opt.step({"W": np.ones((2, 2))})
    opt2 = copy.deepcopy(opt)
    W2 = opt2.param_groups[0]["params"][0]
    assert W2 is not W and np.array_equal(W2, W) and opt2.max_grad_norm == 1.0
    opt2.step({"W": np.ones((2, 2))})
    assert not np.array_equal(W2, W)
    opt3 = pickle.loads(pickle.dumps(opt))
    assert list(opt3.state) == ["W"]


# ---- threads, locking, refcounts, memory --------------------------------

def test_concurrent_steps_are_serialised():
    p = np.zeros(200_000)
    opt = optimc.SGD([p], lr=1.0)
    g = np.ones_like(p)

    def work():
        for _ in range(50):
            opt.step([g])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert opt.step_count == 200 and np.all(p == -200.0)


def test_reentrant_lr_callable_refused():
    p = np.zeros(2)
    holder = {}

    def lr(step):
        holder["opt"].step([np.ones(2)])
        return 0.1

    holder["opt"] = optimc.SGD([p], lr=lr)
    with pytest.raises(RuntimeError, match="re-entrant"):
        holder["opt"].step([np.ones(2)])
    assert np.all(p == 0)


@pytest.mark.skipif(not hasattr(sys, "getrefcount"), reason="CPython refcounts")
def test_refcounts_unchanged():
    params = make()
    grads = grads_like(params)
    before = [sys.getrefcount(x) for x in params + grads]
    for _ in range(3):
        opt = optimc.Adam(params)
        for _ in range(10):
            opt.step(grads)
        try:
            opt.step(grads[:1])
        except ValueError:
            pass
        _ = opt.state[0]["exp_avg"]
        del opt, _
    gc.collect()
    assert [sys.getrefcount(x) for x in params + grads] == before


def test_memory_does_not_grow():
    tracemalloc = pytest.importorskip("tracemalloc")
    params = make(shapes=[(1000,)] * 4)
    grads = grads_like(params)

    def cycle():
        opt = optimc.AdamW(params, amsgrad=True)
        for _ in range(5):
            opt.step(grads)
        opt.state_dict()
        del opt

    for _ in range(20):
        cycle()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(200):
        cycle()
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert grown < 64 * 1024, grown


def test_step_allocates_nothing_proportional():
    tracemalloc = pytest.importorskip("tracemalloc")
    p = np.zeros(1_000_000, np.float32)
    g = np.ones_like(p)
    opt = optimc.Adam([p])
    opt.step([g])
    tracemalloc.start()
    for _ in range(5):
        opt.step([g])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10_000, peak   # 4 MB would show if a step copied the param


def test_results_do_not_depend_on_threads_or_simd():
    levels = ["baseline"] + (["avx2"] if optimc.show_config(False)["cpu_simd"] in ("avx2", "avx512") else []) \
        + (["avx512"] if optimc.show_config(False)["cpu_simd"] == "avx512" else [])
    cfg = optimc.show_config(False)
    results = []
    try:
        optimc._core.set_thread_threshold(0)
        for level in levels:
            for threads in (1, 2, 3):
                optimc.set_simd(level)
                optimc.set_num_threads(threads)
                params = [np.linspace(-1, 1, n, dtype=np.float32) for n in (1, 1001, 50_003)]
                opt = optimc.Adam(params, weight_decay=0.01, amsgrad=True)
                for s in range(3):
                    opt.step(grads_like(params, s))
                results.append(np.concatenate(params))
    finally:
        optimc.set_simd(cfg["cpu_simd"])
        optimc.set_num_threads(cfg["num_threads"])
        optimc._core.set_thread_threshold(cfg["thread_threshold"])
    for r in results[1:]:
        assert np.array_equal(r, results[0])
