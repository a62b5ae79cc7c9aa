"""LAMB and LARS: against optax (jax CPU, float64 enabled) where it is installed, their
masks, and the per-tensor reductions behind their trust ratios (chunked sums that do
not depend on the thread count or SIMD level)."""
import itertools

import numpy as np
import pytest

import optimc

STEPS, SWITCH = 120, 60          # lr changes after SWITCH steps
SHAPES = [(7, 5), (5,), (4,), ()]  # the (4,) param starts at zero: a zero norm (ratio 1)


def _start(dtype):
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    params[2][...] = 0
    return params


def _grads(params, t):
    """A noisy quadratic pull towards 0.5, from each side's own params."""
    rng = np.random.default_rng(100 + t)
    out = []
    for p in params:
        p = np.asarray(p)
        out.append(np.asarray((p - 0.5) + 0.3 * rng.standard_normal(p.shape).astype(p.dtype), p.dtype))
    return out


def _matrices(params):
    return [np.ndim(p) > 1 for p in params]


# float64 runs every case (the exact comparison); float32 the richest of each
LAMB_CASES = [
    dict(),
    dict(weight_decay=0.1, mask=_matrices, b1=0.5, b2=0.9),
    dict(eps=1e-3, eps_root=1e-8, maximize=True),
    dict(weight_decay=0.05, mask=False, eps_root=1e-10),
]
LARS_CASES = [
    dict(),
    dict(weight_decay=1e-3, weight_decay_mask=_matrices, trust_ratio_mask=_matrices, eps=1e-6, nesterov=True),
    dict(momentum=0.0, trust_coefficient=0.02, maximize=True),
    dict(weight_decay=1e-2, trust_ratio_mask=False, momentum=0.5, nesterov=True),
    dict(weight_decay=1e-2, weight_decay_mask=False, trust_coefficient=0.1, eps=1e-3),
]
FLOAT32_CASES = {("LAMB", 1), ("LAMB", 2), ("LARS", 1), ("LARS", 4)}
CASES = [pytest.param(name, options, dtype, id=f"{name}{i}-{dtype.__name__}")
         for name, cases in (("LAMB", LAMB_CASES), ("LARS", LARS_CASES))
         for i, options in enumerate(cases)
         for dtype in (np.float64, np.float32)
         if dtype == np.float64 or (name, i) in FLOAT32_CASES]
LRS = {"LAMB": (0.02, 0.005), "LARS": (2.0, 0.5)}


def _optax_tx(optax, jnp, name, options):
    lr1, lr2 = LRS[name]
    kw = {k: v for k, v in options.items() if k != "maximize"}

    def schedule(count):
        return jnp.where(count < SWITCH, lr1, lr2)
    return (optax.lamb if name == "LAMB" else optax.lars)(schedule, **kw)


@pytest.mark.parametrize("name,options,dtype", CASES)
def test_matches_optax(name, options, dtype):
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    lr1, lr2 = LRS[name]
    params = _start(dtype)
    opt = getattr(optimc, name)(params, lr=lr1, **options)
    tx = _optax_tx(optax, jnp, name, options)
    jp = [jnp.asarray(p) for p in _start(dtype)]
    state = tx.init(jp)

    @jax.jit
    def step(g, state, jp):     # one compiled call per step instead of op-by-op dispatch
        updates, state = tx.update(g, state, jp)
        return optax.apply_updates(jp, updates), state

    sign = -1.0 if options.get("maximize") else 1.0
    for t in range(STEPS):
        if t == SWITCH:
            opt.lr = lr2
        opt.step(_grads(params, t))
        jp, state = step([sign * x for x in _grads(jp, t)], state, jp)
    # the state optax keeps under the same names
    leaves = {}
    for s in jax.tree_util.tree_leaves(state, is_leaf=lambda x: hasattr(x, "_fields")):
        if hasattr(s, "_fields"):
            leaves.update({f: getattr(s, f) for f in s._fields if f in ("mu", "nu", "trace")})
    assert leaves, "optax state has no mu/nu/trace"
    rtol = 1e-12 if dtype == np.float64 else 2e-4
    for i, p in enumerate(params):
        ref = np.asarray(jp[i])
        assert ref.dtype == p.dtype
        scale = float(np.max(np.abs(ref))) or 1.0
        assert np.max(np.abs(p - ref)) <= rtol * scale, (i, np.max(np.abs(p - ref)) / scale)
        for key, tree in leaves.items():
            want = np.asarray(tree[i])
            got = opt.state[i][key]
            s = float(np.max(np.abs(want))) or 1.0
            assert np.max(np.abs(got - want)) <= rtol * s, (key, i, np.max(np.abs(got - want)) / s)
    assert opt.state[0]["step"] == STEPS


# ---- masks -------------------------------------------------------------------------

def _run(opt, params, steps=5):
    for t in range(steps):
        opt.step(_grads(params, t))
    return [p.copy() for p in params]


@pytest.mark.parametrize("name,masks", [
    ("LAMB", {"mask": None}),
    ("LARS", {"weight_decay_mask": None, "trust_ratio_mask": None}),
])
def test_per_param_mask_equals_groups_written_by_hand(name, masks):
    cls = getattr(optimc, name)
    hyper = dict(lr=0.01, weight_decay=0.1)
    flags = [True, False, False, True]
    by_hand = [{"params": [p], **{m: f for m in masks}} for p, f in zip(_start(np.float64), flags)]
    ref = _start(np.float64)
    ref_opt = cls([g for g in by_hand], **hyper)
    want = _run(ref_opt, [g["params"][0] for g in by_hand])
    for mask in (lambda ps: list(flags), flags, np.array(flags)):
        params = _start(np.float64)
        opt = cls(params, **hyper, **{m: mask for m in masks})
        # consecutive equal flags share a group: [T], [F, F], [T]
        assert [len(g["params"]) for g in opt.param_groups] == [1, 2, 1]
        got = _run(opt, params)
        for a, b in zip(got, want):
            assert np.array_equal(a, b)
    # a dict of params takes a dict mask, and a callable gets the dict
    names = ["W", "b", "z", "s"]
    params = dict(zip(names, _start(np.float64)))
    seen = []
    opt = cls(params, **hyper, **{m: (lambda ps: (seen.append(type(ps)), dict(zip(names, flags)))[1])
                                  for m in masks})
    assert seen and all(t is dict for t in seen)
    assert [g["param_names"] for g in opt.param_groups] == [("W",), ("b", "z"), ("s",)]
    for t in range(5):
        opt.step(dict(zip(names, _grads(list(params.values()), t))))
    for a, b in zip(params.values(), want):
        assert np.array_equal(a, b)
    del ref


def test_mask_callable_per_group():
    params = _start(np.float64)
    groups = [{"params": params[:2], "lr": 0.02}, {"params": params[2:]}]
    opt = optimc.LARS(groups, weight_decay=0.1, trust_ratio_mask=_matrices)
    assert [(len(g["params"]), g["trust_ratio_mask"], g["lr"]) for g in opt.param_groups] == \
        [(1, True, 0.02), (1, False, 0.02), (2, False, 1.0)]


@pytest.mark.parametrize("bad,match", [
    ([True, False], "expected a list of 4"),
    ([True, False, 1, True], r"mask\[2\]: expected True or False"),
    (lambda ps: [p.ndim for p in ps], r"mask\[0\]: expected True or False"),
    ({"W": True}, "expected a list of 4"),
    ("yes", "expected True or False"),
])
def test_bad_masks_refused(bad, match):
    with pytest.raises(TypeError, match=match):
        optimc.LAMB(_start(np.float64), mask=bad)


def test_per_param_mask_later_refused_and_nothing_changes():
    params = _start(np.float64)
    opt = optimc.LAMB(params[:2], weight_decay=0.1)
    before = opt.state_dict()
    with pytest.raises(TypeError, match="constructor only"):
        opt.add_param_group({"params": params[2:], "mask": [True, False]})
    with pytest.raises(TypeError, match="constructor only"):
        opt.param_groups[0]["mask"] = [True, True]
    with pytest.raises(TypeError, match="with param groups"):
        optimc.LAMB([{"params": params[:2]}], mask=[True, False])
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["mask"] is True
    after = opt.state_dict()
    assert before["param_groups"] == after["param_groups"]
    opt.param_groups[0]["mask"] = False                      # a group's flag is live
    assert opt.mask is False


# ---- the reductions ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["LAMB", "LARS"])
def test_norms_independent_of_threads_and_simd(name):
    """Tensors of many chunks (up to 16 of >= 4096 elements) split over 1-3 threads at
    every SIMD level give the same bits."""
    cfg = optimc.show_config(False)
    cpu = cfg["cpu_simd"]
    levels = ["baseline"] + (["avx2"] if cpu in ("avx2", "avx512") else []) + (["avx512"] if cpu == "avx512" else [])
    results = []
    try:
        optimc._core.set_thread_threshold(0)
        for level, threads in itertools.product(levels, (1, 2, 3)):
            optimc.set_simd(level)
            optimc.set_num_threads(threads)
            params = [np.linspace(-1, 1, n, dtype=np.float32) for n in (1, 4095, 4097, 70_001)]
            opt = getattr(optimc, name)(params, weight_decay=0.01)
            for s in range(3):
                opt.step([np.cos(np.arange(p.size, dtype=np.float32) * (0.3 + s)).reshape(p.shape)
                          for p in params])
            results.append(np.concatenate(params))
    finally:
        optimc.set_simd(cfg["cpu_simd"])
        optimc.set_num_threads(cfg["num_threads"])
        optimc._core.set_thread_threshold(cfg["thread_threshold"])
    for r in results[1:]:
        assert np.array_equal(r, results[0])


def test_trust_ratio_is_per_tensor():
    """LARS with c = 1, no momentum: each tensor moves by lr·‖θ‖ along -g/‖g‖, whatever
    the scale of its grad."""
    a, b = np.full(10_000, 2.0), np.full(3, 1.0)
    opt = optimc.LARS([a, b], lr=0.1, trust_coefficient=1.0, momentum=0.0)
    opt.step([np.full(10_000, 1e-6), np.full(3, 1e6)])
    assert np.allclose(a, 2.0 * 0.9, rtol=1e-14) and np.allclose(b, 0.9, rtol=1e-14)


@pytest.mark.parametrize("name", ["LAMB", "LARS"])
def test_zero_redundancy_refuses_trust_ratios(name):
    """A ZeRO-1 rank holds a shard of a tensor, not its whole norm."""
    from optimc.distributed.zero import ZeroRedundancyOptimizer
    with pytest.raises(ValueError, match="not element-wise"):
        ZeroRedundancyOptimizer([np.zeros(3)], getattr(optimc, name))
