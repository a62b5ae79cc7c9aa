"""Compressed state (state_dtype="bfloat16"/"8bit") gives the same bits at every
SIMD level: the block wrapper (csrc/lowprec_impl.h) decodes and encodes each
block with 512-bit, 256-bit or scalar code (csrc/quantize.h), and each must
equal the others on awkward data — NaN, infinities, subnormals, blocks of
zeros and a tail shorter than a block."""
import numpy as np
import pytest

import optimc
from optimc import _core

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


def _run(cls, form, dtype, level, hyper):
    rng = np.random.default_rng(3)
    p = rng.standard_normal(N).astype(dtype)
    p[17::53] = np.float32(1e-42)
    cfg = optimc.show_config(False)
    try:
        optimc.set_simd(level)
        opt = cls([p], lr=1e-2, state_dtype=form, min_8bit_size=0, **hyper)
        for step in range(4):
            opt.step([_awkward(rng, dtype, step)])
    finally:
        optimc.set_simd(cfg["simd"])
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
    for level in levels[1:]:
        p, s = _run(cls, form, dtype, level, hyper)
        assert p.tobytes() == p0.tobytes(), level
        assert s.keys() == s0.keys()
        for k in s0:
            assert s[k].tobytes() == s0[k].tobytes(), (level, k)


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
