"""optimc.EMA / optimc.SWA against NumPy, torch.optim.swa_utils.AveragedModel
and optax, with their options, checkpoints and reprs."""
import pickle
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _toolkit import *  # noqa: E402,F401,F403  (data, references, comparisons)
from _toolkit import report_diffs, restore_threads  # noqa: E402,F401  (fixtures)

import optimc  # noqa: E402


# ===========================================================================
# EMA and SWA
# ===========================================================================

def _walk(params, dtype, steps, seed=50):
    """Move the params in place `steps` times; yields after each move."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for p in params:
            p += rng.standard_normal(p.shape).astype(dtype)
        yield


def _make_averager(kind, params, decay=0.9):
    return optimc.EMA(params, decay=decay) if kind == "ema" else optimc.SWA(params)


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("decay", [0.0, 0.3, 0.9, 0.999, 1.0])
def test_ema_matches_numpy(dtype, decay):
    params = arrays(dtype, 60)
    ema = optimc.EMA(params, decay=decay)
    assert ema.num_updates == 0
    assert_bitwise(ema.averages, params, "averages before any update")    # a copy of the params
    history = []
    for _ in _walk(params, dtype, 12):
        ema.update()
        history.append(copies(params))
        assert_close(ema.averages, ref_average(history, "ema", decay), ulp_rtol(dtype, 2), "EMA")
    assert ema.num_updates == 12
    if decay == 1.0:
        assert_bitwise(ema.averages, history[0], "decay 1 keeps the first params")
    if decay == 0.0:
        assert_bitwise(ema.averages, params, "decay 0 follows the params")


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
def test_swa_is_the_mean(dtype):
    params = arrays(dtype, 61)
    swa = optimc.SWA(params)
    history = []
    for _ in _walk(params, dtype, 15):
        swa.update()
        history.append(copies(params))
        assert_close(swa.averages, ref_average(history, "swa"), ulp_rtol(dtype, 2), "SWA recurrence")
        mean = [np.mean(np.stack([h[i].astype(np.float64) for h in history]), axis=0)
                for i in range(len(params))]
        assert_close(swa.averages, mean, 1e-5 if dtype == np.float32 else 1e-13, "SWA vs the mean")


def _torch_averaged(torch, kind, params, decay):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    module = torch.nn.ParameterList([torch.nn.Parameter(torch.from_numpy(np.array(p, copy=True)))
                                     for p in params])
    if kind == "ema":
        avg = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
    else:
        avg = AveragedModel(module, use_buffers=False)
    return module, avg


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("kind,decay", [("ema", 0.9), ("ema", 0.999), ("ema", 0.3), ("swa", None)])
def test_averager_vs_torch(kind, decay, dtype):
    torch = pytest.importorskip("torch")
    params = arrays(dtype, 62)
    module, tavg = _torch_averaged(torch, kind, params, decay)
    avg = _make_averager(kind, params, decay)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for _ in _walk(params, dtype, 25):
        with torch.no_grad():
            for tp, p in zip(module, params):
                tp.copy_(torch.from_numpy(p))
        tavg.update_parameters(module)
        avg.update()
        key = f"{'EMA decay=' + str(decay) if kind == 'ema' else 'SWA'} {dt_id(dtype)}"
        assert_close(avg.averages, [t.detach().numpy() for t in tavg.module], rtol,
                     kind.upper(), record=key)
    assert avg.num_updates == int(tavg.n_averaged) == 25


@pytest.mark.parametrize("kind", ["ema", "swa"])
def test_averager_copy_to_and_swap(kind):
    dtype = np.float64
    params = {f"p{i}": p for i, p in enumerate(arrays(dtype, 63))}
    avg = _make_averager(kind, params)
    for _ in _walk(list(params.values()), dtype, 4):
        avg.update()
    averages = avg.averages
    assert isinstance(averages, dict) and list(averages) == list(params)   # named like the params
    saved_avg, saved_params = copies(averages), copies(params)
    # swap exchanges, twice restores (bitwise)
    avg.swap()
    assert_bitwise(params, saved_avg, "params after swap")
    assert_bitwise(avg.averages, saved_params, "averages after swap")
    avg.swap()
    assert_bitwise(params, saved_params, "params after two swaps")
    assert_bitwise(avg.averages, saved_avg, "averages after two swaps")
    # copy_to another set of arrays (list or dict), then into the tracked params
    other = [np.zeros_like(p) for p in params.values()]
    avg.copy_to(other)
    assert_bitwise(other, saved_avg, "copy_to(other)")
    assert_bitwise(params, saved_params, "params untouched by copy_to(other)")
    other_d = {k: np.zeros_like(p) for k, p in params.items()}
    avg.copy_to(other_d)
    assert_bitwise(other_d, saved_avg, "copy_to(dict)")
    avg.copy_to()
    assert_bitwise(params, saved_avg, "copy_to()")
    assert_bitwise(avg.averages, saved_avg, "averages untouched by copy_to")


@pytest.mark.parametrize("kind", ["ema", "swa"])
@pytest.mark.parametrize("target", ["too-few", "wrong-shape", "wrong-dtype", "not-array"])
def test_averager_copy_to_refuses_and_writes_nothing(kind, target):
    params = arrays(np.float64, 64)
    avg = _make_averager(kind, params)
    avg.update()
    others = [np.full_like(p, 7.0) for p in params]
    if target == "too-few":
        others = others[:-1]
    elif target == "wrong-shape":
        others[-1] = np.full(5, 7.0)
    elif target == "wrong-dtype":
        others[-1] = others[-1].astype(np.float32)
    else:
        others[-1] = [7.0] * 4
    before = copies(arrays_in(others))
    with pytest.raises(ValueError, match="params"):
        avg.copy_to(others)
    assert_bitwise(arrays_in(others), before, "targets")


@pytest.mark.parametrize("method", ["swap", "copy_to"])
def test_averager_read_only_param_writes_nothing(method):
    a, b = np.ones(3), np.ones(3)
    ema = optimc.EMA([a, b], decay=0.5)
    ema.update()
    a += 1.0
    b += 1.0
    ema.update()
    b.flags.writeable = False
    before_p, before_a = copies([a, b]), copies(ema.averages)
    with pytest.raises(ValueError, match=r"params\[1\]"):
        getattr(ema, method)()
    assert_bitwise([a, b], before_p, "params")
    assert_bitwise(ema.averages, before_a, "averages")


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("kind", ["ema", "swa"])
@pytest.mark.parametrize("via", ["state_dict", "pickle"])
def test_averager_state_dict_round_trip(kind, dtype, via):
    params = arrays(dtype, 65)
    avg = _make_averager(kind, params)
    walk = _walk(params, dtype, 10)
    for _ in range(5):
        next(walk)
        avg.update()
    sd = avg.state_dict()
    if via == "pickle":
        sd = pickle.loads(pickle.dumps(sd))
    assert sd["num_updates"] == 5 and isinstance(sd["averages"], list)
    resumed = _make_averager(kind, params)
    resumed.load_state_dict(sd)
    assert resumed.num_updates == 5
    assert_bitwise(resumed.averages, avg.averages, "loaded averages")
    sd["averages"][0][...] = 123.0                   # the state dict holds copies
    assert not np.any(avg.averages[0] == 123.0)
    for _ in walk:
        avg.update()
        resumed.update()
    assert_bitwise(resumed.averages, avg.averages, "resumed vs uninterrupted")
    assert resumed.num_updates == avg.num_updates == 10


@pytest.mark.parametrize("kind", ["ema", "swa"])
@pytest.mark.parametrize("bad", ["not-a-dict", "too-few", "wrong-dtype", "wrong-shape", "list-entry",
                                 "negative-count", "float-count", "no-count"])
def test_averager_load_bad_state_dict_changes_nothing(kind, bad):
    params = arrays(np.float64, 66)
    avg = _make_averager(kind, params)
    for _ in _walk(params, np.float64, 3):
        avg.update()
    sd = avg.state_dict()
    sd["averages"] = [a + 1.0 for a in sd["averages"]]
    if bad == "not-a-dict":
        sd = [sd]
    elif bad == "too-few":
        sd["averages"] = sd["averages"][:-1]
    elif bad == "wrong-dtype":
        sd["averages"][-1] = sd["averages"][-1].astype(np.float32)
    elif bad == "wrong-shape":
        sd["averages"][-1] = np.zeros(3)
    elif bad == "list-entry":
        sd["averages"][-1] = sd["averages"][-1].tolist()
    elif bad == "negative-count":
        sd["num_updates"] = -1
    elif bad == "float-count":
        sd["num_updates"] = 2.5
    else:
        del sd["num_updates"]
    before, n = copies(avg.averages), avg.num_updates
    with pytest.raises(ValueError, match="state_dict"):
        avg.load_state_dict(sd)
    assert_bitwise(avg.averages, before, "averages")
    assert avg.num_updates == n


@pytest.mark.parametrize("kind", ["ema", "swa"])
def test_averager_bad_params(kind):
    make = (lambda p: optimc.EMA(p, 0.9)) if kind == "ema" else optimc.SWA
    cases = [
        ([], ValueError, "params"), ({}, ValueError, "params"),
        (np.ones(3), TypeError, "params"), (None, TypeError, "params"),
        ([np.ones(2), np.arange(3)], TypeError, r"params\[1\]"),
        ([np.ones(2), np.ones(3, np.float16)], TypeError, r"params\[1\]"),
        ([np.ones(2), [1.0, 2.0]], TypeError, r"params\[1\]"),
        ([np.ones(2), np.ones((4, 4))[:, ::2]], ValueError, r"params\[1\]"),
    ]
    for params, exc, text in cases:
        with pytest.raises(exc, match=text):
            make(params)
    if kind == "ema":
        for decay, exc in ((1.5, ValueError), (-0.1, ValueError), (float("nan"), ValueError),
                           ("0.9", TypeError)):
            with pytest.raises(exc, match="decay"):
                optimc.EMA([np.ones(2)], decay=decay)


def test_ema_of_an_optimizer_for_evaluation():
    """EMA(opt) follows the optimizer's params across groups; swap to evaluate."""
    rng = np.random.default_rng(67)
    W, b = rng.standard_normal((4, 3)), np.zeros(3)
    opt = optimc.SGD([{"params": [W]}, {"params": [b], "lr": 0.05}], lr=0.1, momentum=0.9)
    ema = optimc.EMA(opt, decay=0.8)
    history = []
    for k in range(6):
        opt.step([rng.standard_normal((4, 3)), rng.standard_normal(3)])
        ema.update()
        history.append(copies([W, b]))
    expected = ref_average(history, "ema", 0.8)
    assert_close(ema.averages, expected, ulp_rtol(np.float64, 2), "EMA of opt params")
    trained = copies([W, b])
    ema.swap()
    assert_close([W, b], expected, ulp_rtol(np.float64, 2), "evaluating with the averages")
    ema.swap()
    assert_bitwise([W, b], trained, "training params back")


def ref_ema_options(history, init, decay, debias=False, warmup=None, gamma=1.0, power=2 / 3):
    """EMA with optax's bias correction or a warm-up, in float64, written from the
    sources' formulas: optax ema(debias=True) keeps m (from 0) and reports
    m / (1 - decay^t); TensorFlow's ExponentialMovingAverage(num_updates=n) decays
    by min(decay, (1 + n) / (10 + n)); timm's ModelEmaV3(use_warmup=True) by
    1 - (1 + s / gamma)^-power with s = step - 1 (0 on the first update)."""
    if debias:
        m = [np.zeros(x.shape) for x in init]
        for ps in history:
            m = [decay * a + (1 - decay) * p.astype(np.float64) for a, p in zip(m, ps)]
        return [a / (1 - decay ** len(history)) for a in m]
    avg = [x.astype(np.float64) for x in init]
    for n, ps in enumerate(history):          # n updates done before this one
        if warmup == "count":
            d = min(decay, (1 + n) / (10 + n))
        else:
            s = n                               # timm: max(0, step - 1) with step = n + 1
            d = 0.0 if s <= 0 else min(decay, 1 - (1 + s / gamma) ** -power)
        avg = [d * a + (1 - d) * p.astype(np.float64) for a, p in zip(avg, ps)]
    return avg


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("options", [{"debias": True}, {"warmup": "count"}, {"warmup": "power"},
                                     {"warmup": "power", "warmup_gamma": 4.0, "warmup_power": 0.75}],
                         ids=["debias", "count", "power", "power-g4-p075"])
@pytest.mark.parametrize("decay", [0.5, 0.9, 0.999])
def test_ema_options_match_numpy(dtype, decay, options):
    params = arrays(dtype, 70)
    init = copies(params)
    ema = optimc.EMA(params, decay=decay, **options)
    history = []
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for _ in _walk(params, dtype, 30):
        ema.update()
        history.append(copies(params))
        ref = ref_ema_options(history, init, decay, options.get("debias", False), options.get("warmup"),
                              options.get("warmup_gamma", 1.0), options.get("warmup_power", 2 / 3))
        assert_close(ema.averages, ref, rtol, f"EMA {options}")
    assert ema.num_updates == 30


def test_ema_current_decay():
    d = 0.99
    for options, first in (({}, 0.0), ({"debias": True}, 0.0), ({"warmup": "count"}, 0.1),
                           ({"warmup": "power"}, 0.0)):
        ema = optimc.EMA([np.zeros(2)], decay=d, **options)
        decays = []
        for _ in range(2000):
            decays.append(ema.current_decay())
            ema.update()
        assert decays[0] == pytest.approx(first, abs=1e-15), options
        assert all(a <= b + 1e-15 for a, b in zip(decays, decays[1:])), f"{options}: not increasing"
        assert decays[-1] == pytest.approx(d, rel=1e-9 if options.get("warmup") != "power" else 1e-2)
    assert optimc.EMA([np.zeros(2)], decay=0.9, warmup="count").current_decay() == pytest.approx(0.1)
    ema = optimc.EMA([np.zeros(2)], decay=0.9, warmup="count")
    for _ in range(100):
        ema.update()
    assert ema.current_decay() == 0.9           # min(0.9, 101/110) = 0.9


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("decay", [0.9, 0.999])
def test_ema_debias_vs_optax(dtype, decay):
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    params = arrays(dtype, 71)
    ema = optimc.EMA(params, decay=decay, debias=True)
    tx = optax.ema(decay, debias=True)
    state = tx.init([jax.numpy.asarray(p) for p in params])
    update = jax.jit(tx.update)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for _ in _walk(params, dtype, 25):
        ema.update()
        out, state = update([jax.numpy.asarray(p) for p in params], state)
        assert_close(ema.averages, [np.asarray(o) for o in out], rtol, "EMA debias vs optax",
                     record=f"EMA debias decay={decay} {dt_id(dtype)} (optax)")


def test_ema_option_checks():
    p = [np.zeros(2)]
    cases = [
        (dict(warmup="linear"), ValueError, "warmup"),
        (dict(debias=True, warmup="count"), ValueError, "debias"),
        (dict(warmup="count", warmup_gamma=2.0), ValueError, "warmup_gamma"),
        (dict(warmup_power=0.5), ValueError, "warmup_power"),
        (dict(warmup="power", warmup_gamma=0.0), ValueError, "warmup_gamma"),
        (dict(warmup="power", warmup_power=-1.0), ValueError, "warmup_power"),
        (dict(debias="yes"), TypeError, "debias"),
    ]
    for kwargs, exc, text in cases:
        with pytest.raises(exc, match=text):
            optimc.EMA(p, 0.9, **kwargs)


def test_ema_options_survive_pickle_and_state_dict():
    params = arrays(np.float64, 72)
    ema = optimc.EMA(params, decay=0.95, warmup="power", warmup_gamma=3.0, warmup_power=0.5)
    for _ in _walk(params, np.float64, 3):
        ema.update()
    clone = pickle.loads(pickle.dumps(ema))
    assert (clone.warmup, clone.warmup_gamma, clone.warmup_power) == ("power", 3.0, 0.5)
    assert clone.current_decay() == ema.current_decay()
    resumed = optimc.EMA(params, decay=0.95, warmup="power", warmup_gamma=3.0, warmup_power=0.5)
    resumed.load_state_dict(ema.state_dict())
    assert resumed.current_decay() == ema.current_decay()


def test_averager_reprs():
    params = {"W": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}
    ema = optimc.EMA(params, decay=0.99)
    ema.update()
    assert repr(ema) == "EMA(decay=0.99; 2 arrays (float32, 9 elements), 1 updates)"
    assert repr(optimc.EMA([np.zeros(2)], decay=0.9, debias=True)) == \
        "EMA(decay=0.9, debias=True; 1 array (float64, 2 elements), 0 updates)"
    assert repr(optimc.EMA([np.zeros(2)], 0.9, warmup="power", warmup_power=0.75)) == \
        "EMA(decay=0.9, warmup='power', warmup_gamma=1.0, warmup_power=0.75; 1 array (float64, 2 elements), 0 updates)"
    assert repr(optimc.SWA([np.zeros(2), np.zeros(1, np.float32)])) == \
        "SWA(2 arrays (float32/float64, 3 elements), 0 updates)"
