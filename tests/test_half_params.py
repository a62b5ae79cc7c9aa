"""bfloat16 and float16 params (issue 14): stepped through float32 by the rule's
own kernel, written back rounded to nearest even, from a float32 master copy
(master_weights=True) or stochastically (stochastic_rounding=True).

The oracles: optimc's float32 step on the decoded values followed by
ml_dtypes'/NumPy's rounding (bit for bit), the NumPy reference rules
(tests/reference.py), and for stochastic rounding the exact probabilities of
the two neighbouring values computed in float64."""
import copy
import json
import pickle

import numpy as np
import pytest

import optimc
from optimc import _core

import reference

try:
    import ml_dtypes
except ImportError:   # bfloat16 cases skip; float16 ones still run
    ml_dtypes = None

needs_bf16 = pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes is not installed")
FORMATS = [pytest.param("bfloat16", marks=needs_bf16), "float16"]

# Where half params are refused, and why (docs/guide.md §18 lists them).
# the non-element-wise rules (per-tensor sums or state not shaped like the param)
REFUSED = {c.__name__ for c in optimc.ALL if not getattr(c, "elementwise", True)}
HALF = [c for c in optimc.ALL if c.__name__ not in REFUSED]
SHAPES = [(300,), (7, 5), ()]   # two blocks of 256 (one partial), a matrix, a 0-d param


def half_dtype(fmt):
    return ml_dtypes.bfloat16 if fmt == "bfloat16" else np.float16


def bits(a):
    return np.ascontiguousarray(a).view(np.uint16 if a.dtype.itemsize == 2 else np.uint32 if
                                        a.dtype.itemsize == 4 else np.uint64)


def half_params(fmt, seed=0, shapes=SHAPES, scale=1.0):
    rng = np.random.default_rng(seed)
    return [np.array((scale * rng.standard_normal(s)).astype(np.float32), dtype=half_dtype(fmt)).reshape(s)
            for s in shapes]


def float_grads(steps, seed=1, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [[np.array(rng.standard_normal(s), dtype=np.float32).reshape(s) for s in shapes] for _ in range(steps)]


def state_arrays(opt):
    return [{k: np.array(v) for k, v in opt.state[i].items()} for i in range(len(opt.state))]


def assert_same_state(a, b):
    for sa, sb in zip(a, b):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert np.array_equal(bits(np.asarray(sa[k])), bits(np.asarray(sb[k]))), k


# ---- conversions, at every SIMD level, with F16C and without ----

def engine_configs():
    """(SIMD level, F16C on) for every level this CPU has, F16C both ways where
    it has it (off: the software conversion, as on an AVX2 CPU without F16C)."""
    cfg = optimc.show_config(print_it=False)
    levels = ["baseline", "avx2", "avx512"]
    levels = levels[:levels.index(cfg["cpu_simd"]) + 1]
    f16c = _core.set_cpu_feature("f16c", True)
    return [(lv, on) for lv in levels for on in ([False, True] if f16c else [False])]


def in_each_config(fn):
    """fn() under every engine configuration: {config: result}."""
    cfg = optimc.show_config(print_it=False)
    out = {}
    try:
        for level, f16c in engine_configs():
            optimc.set_simd(level)
            assert _core.set_cpu_feature("f16c", f16c) == f16c
            out[(level, f16c)] = fn()
    finally:
        optimc.set_simd(cfg["simd"])
        _core.set_cpu_feature("f16c", True)
    return out


def f16_encode_edges():
    """float32 values for the float16 encoders: every finite float16 value, the
    midpoints between neighbours (ties) and their float32 neighbours, random
    values over the whole range (float32 subnormals included), overflow, the
    largest finite half-way point, signed zeros, infinities, and NaNs with
    payloads (quiet and signalling, both signs)."""
    codes = np.arange(65536, dtype=np.uint16)
    vals = codes.view(np.float16).astype(np.float32)
    finite = np.unique(vals[np.isfinite(vals)])
    mid = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)
    rng = np.random.default_rng(0)
    up, down = np.float32(np.inf), np.float32(-np.inf)
    rand = (rng.standard_normal(60000) * 10.0 ** rng.integers(-12, 7, 60000)).astype(np.float32)
    raw = rng.integers(0, 2 ** 32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32)   # any bits
    nan_bits = np.uint32([0x7F800001, 0x7F801FFF, 0x7F802000, 0x7FA00000, 0x7FBFFFFF, 0x7FC00000, 0x7FC00001,
                          0x7FFFE000, 0x7FFFFFFF, 0xFF800001, 0xFFC01234, 0xFFFFFFFF])
    edges = np.float32([65504, 65519.99, 65520, 65520.004, 65535.99, 65536, 1e30, 3.4e38, np.inf, -np.inf,
                        2 ** -14, np.nextafter(np.float32(2 ** -14), 0), 2 ** -24, 2 ** -25,
                        np.nextafter(np.float32(2 ** -25), 0), np.nextafter(np.float32(2 ** -25), 1), 3 * 2 ** -25,
                        2 ** -26, 1e-45, 1.17e-38, 0.0, -0.0, -65520, -2 ** -25])
    return np.concatenate([finite, mid, np.nextafter(mid, up), np.nextafter(mid, down), rand, raw,
                           nan_bits.view(np.float32), edges])


def f16_nan_reference(x):
    """What every optimc level makes of a float32 NaN: a quiet float16 NaN with
    the top 10 bits of the payload (as vcvtps2ph)."""
    b = x.view(np.uint32)
    return (((b >> 16) & 0x8000) | 0x7E00 | ((b >> 13) & 0x3FF)).astype(np.uint16)


def test_f16_decode_every_code_at_every_level():
    codes = np.arange(65536, dtype=np.uint16)
    want = codes.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    # a NaN keeps its payload, quieted (as vcvtph2ps)
    c = codes[nan].astype(np.uint32)
    want_nan = ((c & 0x8000) << 16) | 0x7FC00000 | ((c & 0x3FF) << 13)
    runs = in_each_config(lambda: _core.f16_decode(codes))
    for config, got in runs.items():
        assert np.array_equal(bits(got[~nan]), bits(want[~nan])), config
        assert np.array_equal(bits(got[nan]), want_nan), config
    # odd lengths and offsets: the vector bodies and the scalar tails agree
    for n in (1, 7, 15, 17, 255, 257):
        part = in_each_config(lambda: _core.f16_decode(codes[3:3 + n].copy()))
        assert all(np.array_equal(bits(v), bits(runs[k][3:3 + n])) for k, v in part.items())


def test_f16_encode_is_numpys_round_to_nearest_even_at_every_level():
    x = f16_encode_edges()
    nan = np.isnan(x)
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    runs = in_each_config(lambda: _core.f16_encode(x))
    for config, got in runs.items():
        assert np.array_equal(got[~nan], want[~nan]), config
        assert np.array_equal(got[nan], f16_nan_reference(x[nan])), config
    for n in (1, 9, 16, 23, 300):
        part = in_each_config(lambda: _core.f16_encode(x[5:5 + n].copy()))
        assert all(np.array_equal(v, runs[k][5:5 + n]) for k, v in part.items())


@needs_bf16
def test_bf16_conversions_agree_at_every_level():
    x = f16_encode_edges()
    nan = np.isnan(x)
    runs = in_each_config(lambda: _core.half_encode(x, "bfloat16"))
    with np.errstate(invalid="ignore"):
        want = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    for config, got in runs.items():
        assert np.array_equal(got[~nan], want[~nan]), config
        assert np.array_equal(got[nan], (x[nan].view(np.uint32) >> 16 | 0x40).astype(np.uint16)), config


# ---- stochastic rounding: the generator and the rounding against NumPy ----

M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15


def mix64(z):
    """SplitMix64's finaliser on uint64 arrays (NumPy wraps modulo 2^64)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sr_step_key(seed, index, step):
    """The documented keying (csrc/halfparam.h): a param's key from the seed
    and its index, the stream of a step from that key and the step."""
    param_key = int(mix64((int(mix64(seed)) + (index + 1) * GAMMA) & M64))
    return int(mix64(param_key ^ int(mix64((step * 0xD1B54A32D192ED03) & M64))))


def sr_bits_reference(step_key, n):
    """16 random bits of elements 0..n-1: SplitMix64's output number j+1 of the
    stream step_key gives elements 4j..4j+3, its bits 0-15, 16-31, 32-47, 48-63."""
    j = np.arange(1, (n + 3) // 4 + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = mix64(np.uint64(step_key) + j * np.uint64(GAMMA))
    words = np.stack([(z >> np.uint64(16 * k)) & np.uint64(0xFFFF) for k in range(4)], axis=1).reshape(-1)
    return words[:n].astype(np.uint32)


def sr_reference(x, r, fmt):
    """Stochastic rounding of float32 x with 16-bit random numbers r, computed
    in float64: away from zero when the dropped fraction of a step, in 16-bit
    fixed point (truncated), exceeds r; NaN rounds to nearest."""
    x = np.asarray(x, np.float32)
    x64 = np.abs(x.astype(np.float64))
    dt = half_dtype(fmt)
    finite = np.isfinite(x)
    with np.errstate(over="ignore", invalid="ignore"):
        near = np.abs(x).astype(dt)
        low = np.where(near.astype(np.float64) > x64, np.nextafter(near, dt(0)), near).astype(dt)
        mant_bits = 8 if fmt == "bfloat16" else 11
        e = np.frexp(np.where(finite & (x64 > 0), x64, 1.0))[1]
        step = 2.0 ** (e - mant_bits)
        step = np.maximum(step, 2.0 ** (-24 if fmt == "float16" else -133))   # the subnormal step
        frac16 = np.floor((x64 - low.astype(np.float64)) / step * 2.0 ** 16)
        away = np.nextafter(low, dt(np.inf))
        mag = np.where(finite & (frac16 > r.astype(np.float64)), away, low).astype(dt)
        if fmt == "float16":
            mag = np.where(x64 >= 65536, dt(np.inf), mag).astype(dt)
        mag = np.where(np.isinf(x), dt(np.inf), mag).astype(dt)
    out = mag.view(np.uint16) | ((x.view(np.uint32) >> 16) & 0x8000).astype(np.uint16)
    nan = np.isnan(x)
    b = x[nan].view(np.uint32)
    out[nan] = (b >> 16 | 0x40).astype(np.uint16) if fmt == "bfloat16" else f16_nan_reference(x[nan])
    return out


def sr_values(fmt, n=3000):
    rng = np.random.default_rng(3)
    tiny = 6e-5 if fmt == "float16" else 1e-37
    x = np.concatenate([rng.standard_normal(n) * 10.0 ** rng.integers(-4, 4, n),
                        rng.uniform(-1, 1, 400) * tiny, rng.uniform(-1, 1, 50) * tiny * 2.0 ** -20,
                        [65504, 65535.9, 65536, 1e6, -1e6, 2 ** -14, 2 ** -24, 2 ** -25, 2 ** -40, 2 ** -57,
                         2 ** -58, 1e-45, 0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 3.3e38]]).astype(np.float32)
    return x if fmt == "float16" else x[np.abs(x) < 3e38]


@pytest.mark.parametrize("fmt", FORMATS)
def test_stochastic_rounding_equals_the_numpy_reference_at_every_level(fmt):
    x = sr_values(fmt)
    key = sr_step_key(seed=12345, index=3, step=7)
    want = sr_reference(x, sr_bits_reference(key, x.size), fmt)
    runs = in_each_config(lambda: _core.half_encode(x, fmt, key))
    for config, got in runs.items():
        assert np.array_equal(got, want), (config, np.flatnonzero(got != want)[:10])
    # the bits come from the element's position alone: a suffix of the stream
    # through a shorter array is another stream, not a shifted one
    assert not np.array_equal(_core.half_encode(x[256:].copy(), fmt, key), want[256:])


@pytest.mark.parametrize("fmt", FORMATS)
def test_stochastic_rounding_follows_the_documented_keying(fmt):
    """An SGD step with lr=1 from 0 writes the float32 -grad exactly, rounded
    with the stream keyed by (seed, param index, step)."""
    rng = np.random.default_rng(9)
    xs = [(rng.standard_normal(n) * 0.01).astype(np.float32) for n in (700, 33)]
    seed = 2024
    ps = [np.zeros(x.size, half_dtype(fmt)) for x in xs]
    opt = optimc.SGD(ps, lr=1.0, stochastic_rounding=True, seed=seed)
    opt.step([-x for x in xs])
    for index, (p, x) in enumerate(zip(ps, xs)):
        want = sr_reference(x, sr_bits_reference(sr_step_key(seed, index, 1), x.size), fmt)
        assert np.array_equal(bits(p), want)
    # step 2, from those values: the float32 sum, rounded with the stream of step 2
    ys = [(rng.standard_normal(x.size) * 0.01).astype(np.float32) for x in xs]
    sums = [p.astype(np.float32) - (-y) for p, y in zip(ps, ys)]
    opt.step([-y for y in ys])
    for index, (p, q) in enumerate(zip(ps, sums)):
        assert np.array_equal(bits(p), sr_reference(q, sr_bits_reference(sr_step_key(seed, index, 2), q.size), fmt))


def test_half_encode_checks_its_arguments():
    x = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="format: expected 'bfloat16' or 'float16', got 'int8'"):
        _core.half_encode(x, "int8")
    with pytest.raises(ValueError, match=r"step_key: expected an int in \[0, 2\*\*64\)"):
        _core.half_encode(x, "float16", -1)
    with pytest.raises(TypeError, match="step_key: expected an int or None"):
        _core.half_encode(x, "float16", 1.5)
    with pytest.raises(TypeError, match="x: expected a C-contiguous float32 array"):
        _core.half_encode(x.astype(np.float64), "float16")


# ---- master weights: the float32 step, then round to nearest even ----

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("half_grads", [False, True], ids=["f32grads", "halfgrads"])
@pytest.mark.parametrize("cls", HALF, ids=lambda c: c.__name__)
def test_master_weights_equal_float32_then_rounding(cls, fmt, half_grads):
    hyper = reference.ALGORITHMS[cls.__name__].rich
    ps = half_params(fmt)
    p32 = [p.astype(np.float32) for p in ps]
    opt = cls(ps, master_weights=True, **hyper)
    ref = cls(p32, **hyper)
    for grads in float_grads(5):
        if half_grads:
            grads = [g.astype(half_dtype(fmt)) for g in grads]
        opt.step(grads)
        ref.step([g.astype(np.float32) for g in grads])
        for i, (p, q) in enumerate(zip(ps, p32)):
            assert np.array_equal(bits(opt.state[i]["master"]), bits(q))
            assert np.array_equal(bits(p), bits(q.astype(half_dtype(fmt))))
    mine = [{k: v for k, v in st.items() if k != "master"} for st in state_arrays(opt)]
    assert_same_state(mine, state_arrays(ref))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("state_dtype", ["bfloat16", "8bit"])
def test_master_weights_combine_with_compressed_state(fmt, state_dtype):
    ps = half_params(fmt, shapes=[(700,), (3, 4)])
    p32 = [p.astype(np.float32) for p in ps]
    kw = dict(lr=1e-2, weight_decay=0.01, state_dtype=state_dtype, min_8bit_size=0)
    opt = optimc.AdamW(ps, master_weights=True, **kw)
    ref = optimc.AdamW(p32, **kw)
    for grads in float_grads(6, shapes=[(700,), (3, 4)]):
        opt.step(grads)
        ref.step(grads)
    for i, (p, q) in enumerate(zip(ps, p32)):
        assert np.array_equal(bits(opt.state[i]["master"]), bits(q))
        assert np.array_equal(bits(p), bits(q.astype(half_dtype(fmt))))
    assert opt.state[0]["exp_avg"].dtype == ref.state[0]["exp_avg"].dtype != np.float32


@pytest.mark.parametrize("fmt", FORMATS)
def test_master_weights_match_the_numpy_reference(fmt):
    hyper = reference.ALGORITHMS["Adam"].rich
    ps = half_params(fmt)
    opt = optimc.Adam(ps, master_weights=True, **hyper)
    ref = reference.Reference("Adam", [p.astype(np.float32) for p in ps], **hyper)
    for grads in float_grads(20):
        opt.step(grads)
        ref.step(grads)
    for i, q in enumerate(ref.params):
        np.testing.assert_allclose(opt.state[i]["master"], q, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["SGDScheduleFree", "AdamWScheduleFree"])
def test_schedule_free_eval_and_train_move_the_master(name, fmt):
    ps = half_params(fmt)
    p32 = [p.astype(np.float32) for p in ps]
    opt = getattr(optimc, name)(ps, master_weights=True)
    ref = getattr(optimc, name)(p32)
    for k, grads in enumerate(float_grads(6)):
        opt.step(grads)
        ref.step(grads)
        if k in (2, 5):
            opt.eval()
            ref.eval()
            assert all(np.array_equal(bits(p), bits(q.astype(half_dtype(fmt)))) for p, q in zip(ps, p32))
            opt.train()
            ref.train()
    for i, (p, q) in enumerate(zip(ps, p32)):
        assert np.array_equal(bits(opt.state[i]["master"]), bits(q))
        assert np.array_equal(bits(p), bits(q.astype(half_dtype(fmt))))
    # without master weights: the float32 value of the param, rounded
    plain = half_params(fmt)
    opt = getattr(optimc, name)(plain)
    opt.step(float_grads(1)[0])
    y = [p.astype(np.float32) for p in plain]
    z = [np.array(opt.state[i]["z"]) for i in range(len(plain))]
    beta = 0.9
    opt.eval()
    for p, yi, zi in zip(plain, y, z):
        x = yi.copy()
        optimc._core.ema([x], [zi], 1.0 - 1.0 / beta)
        assert np.array_equal(bits(p), bits(x.astype(half_dtype(fmt))))


# ---- round to nearest without master weights (allowed; it stalls) ----

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["SGD", "Adam", "Rprop"])
def test_nearest_rounds_the_reference_step_of_the_decoded_param(fmt, name):
    """Each step: the NumPy reference rule on the decoded param, rounded."""
    hyper = reference.ALGORITHMS[name].rich
    ps = half_params(fmt)
    opt = getattr(optimc, name)(ps, **hyper)
    h = {**reference.DEFAULTS[name], **hyper}
    states = [{"step": 0} for _ in ps]
    dt = half_dtype(fmt)
    for grads in float_grads(8):
        want = []
        for p, g, st in zip(ps, grads, states):
            q = p.astype(np.float32)
            st["step"] += 1
            reference.RULES[name](q, g, st, h)
            want.append(q)
        opt.step(grads)
        for p, q in zip(ps, want):
            # the nearest 16-bit value; optimc's float32 result may differ from
            # NumPy's by a few float32 ulps, which matters only next to a tie
            q64 = q.astype(np.float64)
            step = 2.0 ** (np.frexp(q64)[1] - (8 if fmt == "bfloat16" else 11))
            if fmt == "float16":
                step = np.maximum(step, 2.0 ** -24)
            err = np.abs(p.astype(np.float64) - q64)
            assert np.all(err <= step / 2 + 8 * np.spacing(np.abs(q))), np.max(err / step)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_stall_and_its_two_cures(fmt):
    """A 16-bit param of 1.0 with Adam at lr 1e-4: every update (about 1e-4) is
    below half a step of the format at 1.0, so rounding to nearest loses it."""
    runs = {}
    for kw in ({}, {"master_weights": True}, {"stochastic_rounding": True}):
        p = np.ones(1024, half_dtype(fmt))
        opt = optimc.Adam([p], lr=1e-4, **kw)
        for _ in range(100):
            opt.step([np.ones(1024, np.float32)])
        runs[next(iter(kw), "nearest")] = p.astype(np.float64)
    assert np.all(runs["nearest"] == 1.0)
    assert np.all(runs["master_weights"] < 1.0)
    # float32 Adam moves it by 100 * 1e-4: stochastic rounding on average too
    assert abs(runs["stochastic_rounding"].mean() - (1 - 100e-4)) < 1e-3


# ---- stochastic rounding ----

def neighbours(x, fmt):
    """The 16-bit values below and above each float32 x (toward and away from zero)."""
    dt = half_dtype(fmt)
    if fmt == "bfloat16":
        b = x.view(np.uint32)
        low = (b >> 16).astype(np.uint16)
        return low.view(dt), (low + 1).astype(np.uint16).view(dt)
    near = x.astype(dt)
    low = np.where(np.abs(near.astype(np.float64)) > np.abs(x.astype(np.float64)),
                   np.nextafter(near, np.float16(0)), near).astype(dt)
    away = np.where(low.astype(np.float64) == x, low,
                    np.nextafter(low, np.copysign(np.float16(np.inf), x.astype(np.float16)))).astype(dt)
    return low, away


@pytest.mark.parametrize("fmt", FORMATS)
def test_stochastic_rounding_is_unbiased(fmt):
    """SGD with lr=1 from 0 writes -grad exactly in float32; each value is
    rounded to one of its two neighbours, up with probability equal to its
    distance from the lower one, so the mean over many seeds is the value."""
    rng = np.random.default_rng(5)
    # normal numbers of both signs over many binades, and float16 subnormals
    x = np.concatenate([rng.standard_normal(24) * 10.0 ** rng.integers(-3, 3, 24),
                        rng.uniform(-1, 1, 4) * 6e-5 if fmt == "float16" else rng.uniform(-1, 1, 4) * 1e-38,
                        [1.0 + 2.0 ** -10, -(1.0 + 2.0 ** -12), 1e-4]]).astype(np.float32)
    seeds = 400
    outs = np.empty((seeds, x.size))
    for s in range(seeds):
        p = np.zeros(x.size, half_dtype(fmt))
        optimc.SGD([p], lr=1.0, stochastic_rounding=True, seed=s).step([-x])
        outs[s] = p.astype(np.float64)
    low, away = (v.astype(np.float64) for v in neighbours(x, fmt))
    assert np.all((outs == low) | (outs == away))
    width = away - low
    prob = np.where(width != 0, (x - low) / np.where(width != 0, width, 1), 0.0)
    se = np.abs(width) * np.sqrt(prob * (1 - prob) / seeds)
    mean = outs.mean(axis=0)
    assert np.all(np.abs(mean - x) <= 5 * se + 1e-300), np.max(np.abs(mean - x) / np.maximum(se, 1e-300))
    assert np.any(outs != outs[0])   # some values were really rounded both ways


@pytest.mark.parametrize("fmt", FORMATS)
def test_stochastic_rounding_repeats_exactly_per_seed(fmt):
    def run(seed):
        ps = half_params(fmt)
        opt = optimc.Adam(ps, lr=1e-3, stochastic_rounding=True, seed=seed)
        for grads in float_grads(10):
            opt.step(grads)
        return [bits(p) for p in ps]
    a, b, c = run(7), run(7), run(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    default = optimc.Adam(half_params(fmt), stochastic_rounding=True)
    assert default.seed is None and "seed" not in repr(default)   # seed None means 0


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", ["master_weights", "stochastic_rounding", "nearest"])
def test_threads_and_simd_levels_give_the_same_bits(fmt, mode):
    cfg = optimc.show_config(print_it=False)
    levels = ["baseline", "avx2", "avx512"][:["baseline", "avx2", "avx512"].index(cfg["cpu_simd"]) + 1]
    shapes = [(5000,), (1200,), (33,)]
    grads = float_grads(3, shapes=shapes)
    kw = {} if mode == "nearest" else {mode: True}
    results = []
    try:
        optimc._core.set_thread_threshold(0)
        for threads, level, f16c in [(1, levels[-1], True), (2, levels[-1], True), (3, levels[-1], True)] + [
                (2, lv, on) for lv in levels for on in (True, False)]:
            optimc.set_num_threads(threads)
            optimc.set_simd(level)
            _core.set_cpu_feature("f16c", f16c)
            ps = half_params(fmt, shapes=shapes)
            opt = optimc.Adam(ps, lr=1e-3, max_grad_norm=1.0, **kw)
            for g in grads:
                opt.step([x.astype(half_dtype(fmt)) for x in g])
            results.append([bits(p) for p in ps])
    finally:
        optimc.set_num_threads(cfg["num_threads"])
        optimc.set_simd(cfg["cpu_simd"])
        _core.set_cpu_feature("f16c", True)
        optimc._core.set_thread_threshold(cfg["thread_threshold"])
    for r in results[1:]:
        assert all(np.array_equal(x, y) for x, y in zip(results[0], r))


# ---- the guard with 16-bit grads ----

@pytest.mark.parametrize("fmt", FORMATS)
def test_guard_reads_16_bit_grads(fmt):
    dt = half_dtype(fmt)
    ps = half_params(fmt, shapes=[(200,)])
    p32 = [p.astype(np.float32) for p in ps]
    opt = optimc.SGD(ps, lr=0.1, master_weights=True, max_grad_norm=0.5, skip_nonfinite=True)
    ref = optimc.SGD(p32, lr=0.1, max_grad_norm=0.5, skip_nonfinite=True)
    g = float_grads(1, shapes=[(200,)])[0][0].astype(dt)
    opt.step([g])
    ref.step([g.astype(np.float32)])   # one block: the same sum of squares
    assert opt.last_grad_norm == ref.last_grad_norm
    assert np.array_equal(bits(opt.state[0]["master"]), bits(p32[0]))
    bad = g.copy()
    bad[17] = np.inf
    before = bits(ps[0]).copy()
    opt.step([bad])
    assert opt.skipped_steps == 1 and np.array_equal(bits(ps[0]), before)


# ---- checkpoints ----

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", ["master_weights", "stochastic_rounding"])
def test_checkpoints_resume_bit_identically(fmt, mode):
    grads = float_grads(12)
    kw = {mode: True, "lr": 1e-2}
    if mode == "stochastic_rounding":
        kw["seed"] = 11
    ps = half_params(fmt)
    whole = optimc.NAdam(ps, **kw)
    for g in grads:
        whole.step(g)
    ps2 = half_params(fmt)
    first = optimc.NAdam(ps2, **kw)
    for g in grads[:6]:
        first.step(g)
    sd = first.state_dict()
    if mode == "master_weights":
        assert sd["state"][0]["master"].dtype == np.float32
        assert first.state_bytes == optimc.NAdam(half_params(fmt), lr=1e-2).state_bytes + 4 * sum(
            p.size for p in ps2)
    blob = pickle.dumps((ps2, first))
    resumed = []
    copies = [p.copy() for p in ps2]
    fresh = optimc.NAdam(copies, **kw)
    fresh.load_state_dict(sd)
    resumed.append((copies, fresh))
    resumed.append(pickle.loads(blob))
    resumed.append(copy.deepcopy((ps2, first)))
    for params, opt in resumed:
        for g in grads[6:]:
            opt.step(g)
        assert all(np.array_equal(bits(p), bits(q)) for p, q in zip(params, ps))
        assert_same_state(state_arrays(opt), state_arrays(whole))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", ["master_weights", "stochastic_rounding", "nearest"])
def test_optimc_save_and_load_resume_bit_identically(fmt, mode, tmp_path):
    """optimc.save/load (npz, no pickle) with 16-bit params: .npy files cannot name
    ml_dtypes' bfloat16 (NumPy writes raw void bytes, which load refused), so its
    bits are saved as uint16 and viewed back; float16 is a NumPy type."""
    grads = float_grads(8)
    kw = {} if mode == "nearest" else {mode: True}
    whole = optimc.Adam(half_params(fmt), lr=1e-2, **kw)
    for g in grads:
        whole.step(g)
    first = optimc.Adam(half_params(fmt), lr=1e-2, **kw)
    for g in grads[:4]:
        first.step(g)
    optimc.save(tmp_path / "c.npz", first, metadata={"epoch": 4})
    for g in grads[4:]:   # the params move on after the save: load puts them back
        first.step(g)
    other = half_params(fmt, seed=5)
    resumed = optimc.Adam(other, lr=1e-2, **kw)
    assert optimc.load(tmp_path / "c.npz", resumed) == {"epoch": 4}
    for g in grads[4:]:
        resumed.step(g)
    assert all(np.array_equal(bits(p), bits(q)) for p, q in zip(other, whole.param_groups[0]["params"]))
    assert_same_state(state_arrays(resumed), state_arrays(whole))
    if fmt == "bfloat16":   # a bfloat16 entry that is not uint16 bits is refused, nothing changed
        with np.load(tmp_path / "c.npz") as z:
            entries = {k: z[k] for k in z.files}
        doc = json.loads(entries["optimc_json"].tobytes())
        key = doc["params"][0]["key"]
        assert doc["params"][0]["__optimc__"] == "bfloat16"
        entries[key] = entries[key].astype(np.int32)
        np.savez(tmp_path / "bad.npz", **entries)
        before = [bits(p).copy() for p in other]
        with pytest.raises(ValueError, match="bfloat16 bits must be a uint16 array"):
            optimc.load(tmp_path / "bad.npz", resumed)
        assert all(np.array_equal(bits(p), b) for p, b in zip(other, before))


@pytest.mark.parametrize("fmt", FORMATS)
def test_load_checks_the_master_weights(fmt):
    ps = half_params(fmt)
    opt = optimc.Adam(ps, lr=1e-3, master_weights=True)
    opt.step(float_grads(1)[0])
    before = state_arrays(opt)
    sd = opt.state_dict()
    bad = copy.deepcopy(sd)
    bad["state"][1]["master"] = bad["state"][1]["master"].astype(np.float64)
    with pytest.raises(ValueError, match=r"state_dict\['state'\]\[1\]\['master'\]: expected a float32 array"):
        opt.load_state_dict(bad)
    plain = optimc.Adam(half_params(fmt), lr=1e-3)
    plain.step(float_grads(1)[0])
    with pytest.raises(ValueError, match=r"missing \['master'\]"):
        opt.load_state_dict(plain.state_dict())
    assert_same_state(state_arrays(opt), before)
    with pytest.raises(ValueError, match="unexpected \\['master'\\]"):
        plain.load_state_dict(sd)


@pytest.mark.parametrize("fmt", FORMATS)
def test_state_saved_in_float32_loads_into_compressed_state(fmt):
    ps = half_params(fmt, shapes=[(300,)])
    full = optimc.Adam(ps, lr=1e-3, master_weights=True)
    full.step(float_grads(1, shapes=[(300,)])[0])
    small = optimc.Adam([p.copy() for p in ps], lr=1e-3, master_weights=True, state_dtype="bfloat16")
    small.load_state_dict(full.state_dict())
    assert np.array_equal(small.state[0]["exp_avg"], _core.bf16_encode(np.array(full.state[0]["exp_avg"])))
    assert np.array_equal(bits(small.state[0]["master"]), bits(full.state[0]["master"]))


# ---- bad input: refused with nothing changed ----

def snapshot(opt, ps):
    return [bits(p).copy() for p in ps], state_arrays(opt), opt.step_count


def assert_unchanged(opt, ps, snap):
    params, state, count = snap
    assert all(np.array_equal(bits(p), q) for p, q in zip(ps, params))
    assert_same_state(state_arrays(opt), state)
    assert opt.step_count == count


def test_wrong_grad_dtypes_are_refused_with_nothing_changed():
    ps = half_params("float16", shapes=[(4,), (3,)])
    opt = optimc.Adam(ps, lr=1e-3, master_weights=True)
    opt.step([np.ones(4, np.float32), np.ones(3, np.float16)])
    snap = snapshot(opt, ps)
    for bad, got in [(np.ones(3), "float64"), (np.ones(3, np.int16), "int16")] + (
            [(np.ones(3, ml_dtypes.bfloat16), "bfloat16")] if ml_dtypes else []):
        with pytest.raises(TypeError, match=rf"grads\[1\]: expected dtype float16 \(the param's\) or float32, "
                                            rf"got {got}"):
            opt.step([np.ones(4, np.float32), bad])
        assert_unchanged(opt, ps, snap)
    with pytest.raises(ValueError, match=r"grads\[1\]: expected shape \(3,\)"):
        opt.step([np.ones(4, np.float32), np.ones(4, np.float16)])
    with pytest.raises(ValueError, match=r"grads\[1\]: must be C-contiguous"):
        opt.step([np.ones(4, np.float32), np.ones(6, np.float16)[::2]])
    with pytest.raises(ValueError, match=r"grads\[0\]: shares memory with params\[0\]"):
        opt.step([ps[0], np.ones(3, np.float16)])
    assert_unchanged(opt, ps, snap)


def test_options_are_checked():
    ps = half_params("float16", shapes=[(4,)])
    with pytest.raises(ValueError, match="master_weights and stochastic_rounding: choose one"):
        optimc.Adam(ps, master_weights=True, stochastic_rounding=True)
    with pytest.raises(ValueError, match="seed: only stochastic_rounding=True uses a seed"):
        optimc.Adam(ps, seed=3)
    with pytest.raises(ValueError, match=r"seed: expected an int in \[0, "):
        optimc.Adam(ps, stochastic_rounding=True, seed=-1)
    with pytest.raises(TypeError, match="master_weights: expected"):
        optimc.Adam(ps, master_weights="yes")
    for name in ("master_weights", "stochastic_rounding"):
        with pytest.raises(ValueError, match=rf"{name}=True: no param is bfloat16 or float16 \(got float32\)"):
            optimc.Adam([np.ones(3, np.float32)], **{name: True})
    # mixed params: the option concerns the 16-bit ones; float32 params step as always
    w, b = np.ones(4, np.float16), np.ones(3, np.float32)
    opt = optimc.Adam({"w": w, "b": b}, lr=0.1, master_weights=True)
    opt.step({"w": np.ones(4, np.float32), "b": np.ones(3, np.float32)})
    assert set(opt.state["w"]) > {"master"} and "master" not in opt.state["b"]
    assert np.allclose(b, 0.9) and np.allclose(w, np.float16(0.9), atol=1e-3)
    assert "master_weights=True" in repr(opt)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refusing_algorithms_say_why(name):
    ps = half_params("float16", shapes=[(4, 4)])
    with pytest.raises(TypeError, match=r"params\[0\]: .*float16.*float32 or float64 params only"):
        getattr(optimc, name)(ps)
    assert ps[0].dtype == np.float16


def test_sparse_grads_are_refused_next_to_16_bit_params():
    table, w = np.zeros((6, 3), np.float32), np.ones(4, np.float16)
    opt = optimc.SGD([table, w], lr=0.1)
    snap = snapshot(opt, [table, w])
    with pytest.raises(TypeError, match=r"grads\[0\]: a SparseGrad cannot be used in an optimizer with float16 "
                                        r"params \(params\[1\] is\)"):
        opt.step([optimc.SparseGrad(np.array([1]), np.ones((1, 3), np.float32)), np.ones(4, np.float32)])
    assert_unchanged(opt, [table, w], snap)
