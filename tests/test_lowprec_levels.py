"""Compressed state (state_dtype="bfloat16"/"8bit") gives the same bits at every
SIMD level: 8-bit state goes through the block wrapper (csrc/lowprec_impl.h),
bfloat16 state through the rules' own loops in 64-value tiles
(csrc/rules/common.h, OPTIMC_EACH), each decoding and encoding with 512-bit,
256-bit or scalar code (csrc/quantize.h), and each must equal the others on
awkward data — NaN, infinities, subnormals, blocks of zeros and a tail shorter
than a block. At the avx512 level two CPU features change the code where the
CPU has them — the 8-bit codecs read the map from registers with AVX-512 VBMI,
bfloat16 is rounded with AVX512_BF16's instruction — and each is checked on
and off (_core.set_cpu_feature)."""
import numpy as np
import pytest

import optimc
from optimc import _core
from test_lowprec_quantize import ref_bf16

KINDS = {name: dict(zip(d["state"], d["state_kind"])) for name, d in _core.algorithms().items()}
RICH = {"SGD": {"momentum": 0.9}, "RMSprop": {"momentum": 0.5, "centered": True}, "Adam": {"amsgrad": True},
        "AdamW": {"amsgrad": True}, "Adagrad": {"initial_accumulator_value": 0.1}}
COMPRESSIBLE = [c for c in optimc.ALL if all(k != "exact" for k in KINDS[c._kernel].values())]
ORDER = ["baseline", "avx2", "avx512"]
N = 4 * 256 + 37          # whole blocks and a partial one


def _levels():
    top = optimc.show_config(False)["cpu_simd"]
    return ORDER[:ORDER.index(top) + 1]


FEATURES = ("vbmi", "avx512bf16")      # used at the avx512 level only


def _configs():
    """(level, feature switched off or None) for every level the CPU has, with
    everything on; at avx512 also each feature the CPU has, switched off."""
    has = {f: _core.set_cpu_feature(f, True) for f in FEATURES}
    top = [("avx512", f) for f in FEATURES if has[f]] if "avx512" in _levels() else []
    return [(lv, None) for lv in _levels()] + top


def _why_not(level, off):
    if level not in _levels():
        return f"the CPU has no {level}"
    if level != "avx512":
        return f"{off} is only used at the avx512 level"
    return f"the CPU has no {off}"


def _at(level, off, fn):
    cfg = optimc.show_config(False)
    try:
        optimc.set_simd(level)
        for f in FEATURES:
            _core.set_cpu_feature(f, f != off)
        return fn()
    finally:
        optimc.set_simd(cfg["simd"])
        for f in FEATURES:
            _core.set_cpu_feature(f, True)


def _awkward(rng, dtype, step):
    g = rng.standard_normal(N).astype(dtype)
    g[5::97] = np.finfo(np.float32).tiny / 3         # subnormal in float32
    g[7::131] *= 1e-38
    g[600:620] *= 1e30
    g[256:512] = 0                                   # a block that stays zero
    if step == 2:
        g[11] = np.nan                               # one NaN and infinities, late
        g[13], g[900] = np.inf, -np.inf
    return g


def _run(cls, form, dtype, level, hyper, off=None):
    rng = np.random.default_rng(3)
    p = rng.standard_normal(N).astype(dtype)
    p[17::53] = np.float32(1e-42)

    def steps():
        opt = cls([p], lr=1e-2, state_dtype=form, min_8bit_size=0, **hyper)
        for step in range(4):
            opt.step([_awkward(rng, dtype, step)])
        return opt

    opt = _at(level, off, steps)
    state = {k: np.array(v, copy=True) for k, v in opt.state[0].items() if isinstance(v, np.ndarray)}
    return p, state


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("form", ["8bit", "bfloat16"])
@pytest.mark.parametrize("cls", COMPRESSIBLE, ids=lambda c: c.__name__)
def test_every_level_gives_the_same_bits(cls, form, dtype):
    configs = _configs()
    if len(configs) < 2:
        pytest.skip("the CPU has only the baseline level")
    hyper = RICH.get(cls.__name__, {})
    p0, s0 = _run(cls, form, dtype, "baseline", hyper)
    assert s0, "the optimizer has state to compare"
    for level, off in configs[1:]:
        p, s = _run(cls, form, dtype, level, hyper, off)
        assert p.tobytes() == p0.tobytes(), (level, off)
        assert s.keys() == s0.keys()
        for k in s0:
            assert s[k].tobytes() == s0[k].tobytes(), (level, off, k)


@pytest.mark.parametrize("off", [None, "vbmi"], ids=["all", "no-vbmi"])
@pytest.mark.parametrize("level", ORDER)
def test_quantize_blocks_at_every_level(level, off):
    """8-bit Adam through one level: state equals the baseline quantizer's
    encoding of float32 Adam's state, on data with zero blocks and a short tail."""
    if (level, off) not in _configs():
        pytest.skip(_why_not(level, off))
    rng = np.random.default_rng(5)
    p = rng.standard_normal(N).astype(np.float32)
    q = p.copy()
    g = _awkward(rng, np.float32, 0)

    def step():
        low = optimc.Adam([p], state_dtype="8bit", min_8bit_size=0)
        ref = optimc.Adam([q])
        low.step([g])
        ref.step([g])
        return low, ref

    low, ref = _at(level, off, step)
    assert p.tobytes() == q.tobytes()
    for name, signed in [("exp_avg", True), ("exp_avg_sq", False)]:
        codes, scales = _core.quantize_blockwise(ref.state[0][name], signed)
        assert np.array_equal(low.state[0][name], codes), name
        assert scales.tobytes() == low.state[0][name + "_absmax"].tobytes(), name
    assert not np.any(low.state[0]["exp_avg"][256:512]) and low.state[0]["exp_avg_absmax"][1] == 0


@pytest.mark.parametrize("tail", [1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, 200, 255, 256])
def test_8bit_tails_and_tiny_blocks_in_every_config(tail):
    """The 8-bit codecs step 16, 32 or 64 values at a time (masked at the end
    of a block): every tail length, a block whose absmax is subnormal (its
    reciprocal overflows to inf), one with an infinite absmax and one of
    NaNs and zeros give the baseline's bits in every configuration; the
    SGD momentum buffer after one step is its grad (signed map), Adagrad's
    sum its square (unsigned map)."""
    n = 3 * 256 + tail
    rng = np.random.default_rng(tail)
    g = (rng.standard_normal(n) * np.exp(rng.standard_normal(n) * 4)).astype(np.float32)
    g[:256] = g[:256] / np.abs(g[:256]).max() * np.float32(1e-39)   # absmax subnormal: 1/absmax is inf
    g[256:512:7] = np.nan
    g[257:512:5] = 0
    g[512 + tail // 2] = np.inf                       # an infinite absmax (in the last block when tail < 256)
    g[512:512 + tail:3] *= np.float32(1e-30)

    def run():
        sgd = optimc.SGD([np.zeros(n, np.float32)], lr=0.0, momentum=0.9, state_dtype="8bit", min_8bit_size=0)
        ada = optimc.Adagrad([np.zeros(n, np.float32)], lr=0.0, state_dtype="8bit", min_8bit_size=0)
        with np.errstate(all="ignore"):
            sgd.step([g])
            ada.step([g])
        return [np.array(v, copy=True) for o in (sgd, ada) for v in o.state[0].values() if isinstance(v, np.ndarray)]

    ref = _at("baseline", None, run)
    assert any(np.any(a) for a in ref)
    for level, off in _configs()[1:]:
        got = _at(level, off, run)
        for a, b in zip(ref, got):
            assert a.tobytes() == b.tobytes(), (level, off)


@pytest.mark.parametrize("off", [None, "avx512bf16"], ids=["all", "no-avx512bf16"])
@pytest.mark.parametrize("level", ORDER)
def test_bfloat16_state_rounds_to_nearest_even(level, off):
    """SGD's first momentum buffer is the grad itself, so stored in bfloat16 it
    is the grad rounded to nearest even (NumPy reference: ref_bf16) — on ties,
    NaN, infinities, -0 and subnormals that sit in some 32-value groups and not
    others (AVX512_BF16's instruction reads a subnormal as zero; a group holding
    one is rounded the integer way), in whole 64-value tiles and a short tail."""
    if (level, off) not in _configs():
        pytest.skip(_why_not(level, off))
    rng = np.random.default_rng(11)
    n = 4 * 64 + 45
    g = (rng.standard_normal(n) * 1e3).astype(np.float32)
    g[3:130:9] = (np.arange(1, 16, dtype=np.uint32) << 16 | 0x8000).view(np.float32)   # ties
    g[40] = np.finfo(np.float32).tiny / 3                     # subnormal: group 32..63 only
    g[200:203] = np.float32(1e-41), -np.float32(3e-39), np.float32(1e-45)
    g[100], g[101], g[102], g[103] = np.nan, np.inf, -np.inf, -0.0

    def step():
        opt = optimc.SGD([np.zeros(n, np.float32)], lr=0.1, momentum=0.9, state_dtype="bfloat16")
        opt.step([g])
        return opt

    opt = _at(level, off, step)
    assert np.array_equal(opt.state[0]["momentum_buffer"], ref_bf16(g))
