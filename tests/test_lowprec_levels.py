"""Compressed state (state_dtype="bfloat16"/"8bit") gives the same bits at every
SIMD level: 8-bit state goes through the block wrapper (csrc/lowprec_impl.h),
bfloat16 state through the rules' own loops in 64-value tiles
(csrc/rules/common.h, OPTIMC_EACH), each decoding and encoding with 512-bit,
256-bit or scalar code (csrc/quantize.h) — and bfloat16 rounding at avx512
with AVX512_BF16's instruction where the CPU has it, or without — and each
must equal the others on awkward data: NaN, infinities, subnormals, blocks of
zeros and a tail shorter than a block."""
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


def _configs():
    """(level, AVX512_BF16 on) for every level past the baseline, avx512 both
    ways where the CPU has the instruction."""
    has_bf16 = _core.set_avx512bf16(True)
    return [(lv, on) for lv in _levels()[1:] for on in ([True, False] if lv == "avx512" and has_bf16 else [False])]


def _run(cls, form, dtype, level, hyper, avx512bf16=False):
    rng = np.random.default_rng(3)
    p = rng.standard_normal(N).astype(dtype)
    p[17::53] = np.float32(1e-42)
    cfg = optimc.show_config(False)
    try:
        optimc.set_simd(level)
        _core.set_avx512bf16(avx512bf16)
        opt = cls([p], lr=1e-2, state_dtype=form, min_8bit_size=0, **hyper)
        for step in range(4):
            opt.step([_awkward(rng, dtype, step)])
    finally:
        optimc.set_simd(cfg["simd"])
        _core.set_avx512bf16(True)
    state = {k: np.array(v, copy=True) for k, v in opt.state[0].items() if isinstance(v, np.ndarray)}
    return p, state


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("form", ["8bit", "bfloat16"])
@pytest.mark.parametrize("cls", COMPRESSIBLE, ids=lambda c: c.__name__)
def test_every_level_gives_the_same_bits(cls, form, dtype):
    levels = _levels()
    if len(levels) < 2:
        pytest.skip("the CPU has only the baseline level")
    hyper = RICH.get(cls.__name__, {})
    p0, s0 = _run(cls, form, dtype, "baseline", hyper)
    assert s0, "the optimizer has state to compare"
    for level, avx512bf16 in _configs():
        p, s = _run(cls, form, dtype, level, hyper, avx512bf16)
        assert p.tobytes() == p0.tobytes(), (level, avx512bf16)
        assert s.keys() == s0.keys()
        for k in s0:
            assert s[k].tobytes() == s0[k].tobytes(), (level, avx512bf16, k)


@pytest.mark.parametrize("level", ORDER)
def test_quantize_blocks_at_every_level(level):
    """8-bit Adam through one level: state equals the baseline quantizer's
    encoding of float32 Adam's state, on data with zero blocks and a short tail."""
    if level not in _levels():
        pytest.skip(f"the CPU has no {level}")
    rng = np.random.default_rng(5)
    p, q = rng.standard_normal(N).astype(np.float32), None
    q = p.copy()
    cfg = optimc.show_config(False)
    try:
        optimc.set_simd(level)
        low = optimc.Adam([p], state_dtype="8bit", min_8bit_size=0)
        ref = optimc.Adam([q])
        g = _awkward(rng, np.float32, 0)
        low.step([g])
        ref.step([g])
    finally:
        optimc.set_simd(cfg["simd"])
    assert p.tobytes() == q.tobytes()
    codes, scales = _core.quantize_blockwise(ref.state[0]["exp_avg"], True)
    assert np.array_equal(low.state[0]["exp_avg"], codes)
    assert scales.tobytes() == low.state[0]["exp_avg_absmax"].tobytes()
    assert not np.any(low.state[0]["exp_avg"][256:512]) and low.state[0]["exp_avg_absmax"][1] == 0


@pytest.mark.parametrize("avx512bf16", [True, False], ids=["avx512bf16", "integer"])
@pytest.mark.parametrize("level", ORDER)
def test_bfloat16_state_rounds_to_nearest_even(level, avx512bf16):
    """SGD's first momentum buffer is the grad itself, so stored in bfloat16 it
    is the grad rounded to nearest even (NumPy reference: ref_bf16) — on ties,
    NaN, infinities, -0 and subnormals that sit in some 32-value groups and not
    others (AVX512_BF16's instruction reads a subnormal as zero; a group holding
    one is rounded the integer way), in whole 64-value tiles and a short tail."""
    if level not in _levels():
        pytest.skip(f"the CPU has no {level}")
    if avx512bf16 and (level != "avx512" or not _core.set_avx512bf16(True)):
        pytest.skip("AVX512_BF16 rounding is used at the avx512 level of CPUs that have it")
    rng = np.random.default_rng(11)
    n = 4 * 64 + 45
    g = (rng.standard_normal(n) * 1e3).astype(np.float32)
    g[3:130:9] = (np.arange(1, 16, dtype=np.uint32) << 16 | 0x8000).view(np.float32)   # ties
    g[40] = np.finfo(np.float32).tiny / 3                     # subnormal: group 32..63 only
    g[200:203] = np.float32(1e-41), -np.float32(3e-39), np.float32(1e-45)
    g[100], g[101], g[102], g[103] = np.nan, np.inf, -np.inf, -0.0
    cfg = optimc.show_config(False)
    try:
        optimc.set_simd(level)
        _core.set_avx512bf16(avx512bf16)
        opt = optimc.SGD([np.zeros(n, np.float32)], lr=0.1, momentum=0.9, state_dtype="bfloat16")
        opt.step([g])
    finally:
        optimc.set_simd(cfg["simd"])
        _core.set_avx512bf16(True)
    assert np.array_equal(opt.state[0]["momentum_buffer"], ref_bf16(g))
