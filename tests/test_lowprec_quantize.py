"""The 8-bit blockwise quantizer and bfloat16 rounding (csrc/quantize.c):
against an independent NumPy reference of the format, and code for code
against bitsandbytes' CPU quantize_blockwise/dequantize_blockwise (skipped when
bitsandbytes is not installed)."""
import numpy as np
import pytest

from optimc import _core

F32 = np.float32


# ---- the NumPy reference (written from the format's definition) ----

def _linspace32(n):
    """torch.linspace(0.1, 1, n) in float32: float step, one rounding per point."""
    start, end = F32(0.1), F32(1.0)
    step = F32((end - start) / F32(n - 1))
    i = np.arange(n, dtype=np.float64)
    first = np.float64(start) + np.float64(step) * i
    second = np.float64(end) - np.float64(step) * (n - 1 - i)
    return np.where(np.arange(n) < n // 2, first, second).astype(F32)


def ref_map(signed):
    vals = []
    for i in range(7):
        n = 2 ** i + 1 if signed else 2 ** (i + 1) + 1
        b = _linspace32(n)
        means = (b[:-1] + b[1:]) / F32(2)
        scale = F32(10.0 ** (i - 6))
        vals.append(scale * means)
        if signed:
            vals.append(-scale * means)
    vals.append(np.array([0, 1], F32))
    return np.sort(np.concatenate(vals))


def ref_lut(code):
    mid = (code[:-1] + code[1:]) * F32(0.5)
    cells = np.arange(65536)
    centre = (F32(2) * cells.astype(F32)) / F32(65535) - F32(1)
    # the number of midpoints strictly below each centre
    return np.searchsorted(mid, centre, side="left").astype(np.uint8)


def ref_quantize(x, signed):
    code = ref_map(signed)
    lut = ref_lut(code)
    n = x.size
    nb = -(-n // 256)
    codes = np.zeros(n, np.uint8)
    absmax = np.zeros(nb, F32)
    for b in range(nb):
        blk = x[b * 256:(b + 1) * 256]
        a = np.abs(blk)
        a = a[~np.isnan(a)]
        m = F32(a.max()) if a.size else F32(0)
        m = max(m, F32(0))
        absmax[b] = m
        if m == 0:
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            v = blk * (F32(1) / m)
            v = np.where(v < -1, F32(-1), np.where(v > 1, F32(1), v)).astype(F32)
            t = (v + F32(1)) * F32(0.5)
            r = (t.astype(np.float64) * 65535.0 + 0.5).astype(F32)   # one rounding, like an FMA
        cell = np.where(np.isnan(r), 0, np.nan_to_num(r)).astype(np.int64)
        codes[b * 256:(b + 1) * 256] = lut[cell]
    return codes, absmax


def ref_dequantize(codes, absmax, signed):
    code = ref_map(signed)
    return code[codes] * np.repeat(absmax, 256)[:codes.size]


def ref_bf16(x):
    b = x.view(np.uint32).astype(np.uint64)
    rounded = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF
    nan = np.isnan(x)
    return np.where(nan, (b >> 16) | 0x40, rounded).astype(np.uint16)


def _data(rng, n, signed):
    x = rng.standard_normal(n).astype(F32) * np.exp(rng.standard_normal(n) * 3).astype(F32)
    if not signed:
        x = np.abs(x)
    x[:256] = 0                      # a block of zeros
    x[300] = np.nan                  # NaN is ignored by absmax and takes code 0
    x[600] = np.inf                  # an infinite absmax
    x[1000:1256] = F32(3.5)          # a constant block
    x[-7:] = F32(1e-30)              # a partial last block of tiny values
    return x


# ---- tests ----

@pytest.mark.parametrize("signed", [True, False])
def test_maps_match_the_reference(signed):
    got = _core.dynamic_map(signed)
    assert got.dtype == F32 and got.shape == (256,)
    assert np.array_equal(got.view(np.uint32), ref_map(signed).view(np.uint32))
    assert np.all(np.diff(got) > 0) and got[-1] == 1


@pytest.mark.parametrize("signed", [True, False])
def test_quantize_matches_the_reference(signed):
    x = _data(np.random.default_rng(1), 256 * 40 + 57, signed)
    codes, absmax = _core.quantize_blockwise(x, signed)
    rcodes, rabsmax = ref_quantize(x, signed)
    assert np.array_equal(absmax.view(np.uint32), rabsmax.view(np.uint32))
    assert np.array_equal(codes, rcodes)
    with np.errstate(invalid="ignore"):
        back = _core.dequantize_blockwise(codes, absmax, signed)
        rback = ref_dequantize(rcodes, rabsmax, signed)
    assert np.array_equal(back.view(np.uint32), rback.astype(F32).view(np.uint32))


@pytest.mark.parametrize("signed", [True, False])
def test_grid_cell_edges(signed):
    # values right at and around every grid boundary between two codes
    code = ref_map(signed)
    mid = (code[:-1] + code[1:]) / 2
    x = np.concatenate([mid, np.nextafter(mid, F32(2)), np.nextafter(mid, F32(-2)), code])
    x = x[(x >= 0) | signed].astype(F32)
    x = np.concatenate([x, np.ones(256 - x.size % 256, F32)])   # absmax 1 in every block
    x = x.reshape(-1, 256)
    x[:, -1] = 1
    x = x.ravel()
    assert np.array_equal(_core.quantize_blockwise(x, signed)[0], ref_quantize(x, signed)[0])


def _every_cell():
    """Blocks of absmax 1 whose values land once on each of the 65536 grid
    cells (each cell's centre; the reference computes which cell it is)."""
    cells = np.arange(65536)
    centre = (F32(2) * cells.astype(F32)) / F32(65535) - F32(1)
    rows = -(-65536 // 255)
    body = np.ones(rows * 255, F32)
    body[:65536] = centre
    blocks = np.ones((rows, 256), F32)                    # the last value of each block is 1
    blocks[:, :255] = body.reshape(rows, 255)
    return blocks.ravel()


@pytest.mark.parametrize("signed", [True, False])
def test_every_grid_cell_takes_the_reference_code(signed):
    """The encoder's small bucket table (quantize.h) is the reference's
    65536-entry table, cell for cell, at the baseline level (whole arrays)."""
    x = _every_cell()
    v = x.reshape(-1, 256)
    t = ((v + F32(1)) * F32(0.5)).astype(np.float64) * 65535.0 + 0.5
    cell = t.astype(F32).astype(np.int64)[:, :255].ravel()
    assert np.array_equal(np.sort(cell[:65536]), np.arange(65536))   # every cell, once
    assert np.array_equal(_core.quantize_blockwise(x, signed)[0], ref_quantize(x, signed)[0])


@pytest.mark.parametrize("vbmi", [False, True], ids=["plain", "vbmi"])
@pytest.mark.parametrize("level", ["baseline", "avx2", "avx512"])
def test_every_grid_cell_in_the_step_kernels(level, vbmi):
    """The same, through the block wrapper of each SIMD level the CPU has
    (and at avx512 both 8-bit codecs: VBMI's search tree and the bucket
    table): one step of SGD with momentum stores exactly its grad (signed
    map), one step of Adagrad stores exactly its squared grad (unsigned map)."""
    import optimc
    order = ["baseline", "avx2", "avx512"]
    cfg = optimc.show_config(False)
    if order.index(level) > order.index(cfg["cpu_simd"]):
        pytest.skip(f"the CPU has no {level}")
    if vbmi and (level != "avx512" or not _core.set_cpu_feature("vbmi", True)):
        pytest.skip("the VBMI codecs run at the avx512 level of a CPU with VBMI")
    x = _every_cell()
    sq = np.sqrt(np.abs(x)).astype(F32)                 # squares land on (or next to) every cell >= 0
    try:
        optimc.set_simd(level)
        assert _core.set_cpu_feature("vbmi", vbmi) == vbmi
        sgd = optimc.SGD([np.zeros_like(x)], lr=0.0, momentum=0.9, state_dtype="8bit", min_8bit_size=0)
        sgd.step([x])
        ada = optimc.Adagrad([np.zeros_like(sq)], lr=0.0, state_dtype="8bit", min_8bit_size=0)
        ada.step([sq])
    finally:
        optimc.set_simd(cfg["simd"])
        _core.set_cpu_feature("vbmi", True)
    assert np.array_equal(sgd.state[0]["momentum_buffer"], ref_quantize(x, True)[0])
    assert np.array_equal(ada.state[0]["sum"], ref_quantize(sq * sq, False)[0])


def test_roundtrip_error_is_bounded():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(256 * 64).astype(F32)
    codes, absmax = _core.quantize_blockwise(x, True)
    back = _core.dequantize_blockwise(codes, absmax, True)
    scale = np.repeat(absmax, 256)
    # the largest gap of the signed map is 0.0141 (near ±1): half of it, plus the grid cell
    assert np.max(np.abs(back - x) / scale) < 0.0141 / 2 + 3.1e-5


def test_bf16_round_to_nearest_even():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(10000).astype(F32) * F32(1e3)
    # ties: exactly half-way between two bfloat16 values, both parities
    ties = (np.arange(1, 200, dtype=np.uint32) << 16 | 0x8000).view(F32)
    special = np.array([0, -0.0, np.inf, -np.inf, np.nan, 3.3895314e38, 1e-40], F32)
    x = np.concatenate([x, ties, special])
    h = _core.bf16_encode(x)
    assert np.array_equal(h, ref_bf16(x))
    back = _core.bf16_decode(h)
    assert np.array_equal(np.isnan(back), np.isnan(x))
    ok = ~np.isnan(x)
    assert np.array_equal(back[ok], (h[ok].astype(np.uint32) << 16).view(F32))


def test_bf16_matches_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.random.default_rng(4).standard_normal(5000).astype(F32)
    ties = (np.arange(1, 200, dtype=np.uint32) << 16 | 0x8000).view(F32)
    x = np.concatenate([x, ties])
    assert np.array_equal(_core.bf16_encode(x), x.astype(ml_dtypes.bfloat16).view(np.uint16))


def test_bad_arrays_are_refused():
    with pytest.raises(TypeError, match="x: expected a C-contiguous"):
        _core.quantize_blockwise(np.zeros(4), True)
    with pytest.raises(ValueError, match="absmax: expected 2 block scales"):
        _core.dequantize_blockwise(np.zeros(300, np.uint8), np.zeros(1, F32), True)


# ---- bitsandbytes, code for code ----

@pytest.mark.parametrize("signed", [True, False])
def test_code_for_code_with_bitsandbytes(signed):
    torch = pytest.importorskip("torch")
    try:
        import bitsandbytes.functional as bnbf
    except Exception:   # missing, or installed without a usable native library
        pytest.skip("bitsandbytes is not available")
    bmap = bnbf.create_dynamic_map(signed=signed)
    assert np.array_equal(_core.dynamic_map(signed).view(np.uint32), bmap.numpy().view(np.uint32))
    x = _data(np.random.default_rng(5), 256 * 200 + 13, signed)
    x = x[np.isfinite(x) | (np.arange(x.size) == 300) | (np.arange(x.size) == 600)]
    codes, absmax = _core.quantize_blockwise(x, signed)
    bq, state = bnbf.quantize_blockwise(torch.from_numpy(x.copy()), code=bmap.clone(), blocksize=256)
    assert np.array_equal(absmax.view(np.uint32), state.absmax.numpy().view(np.uint32))
    assert np.array_equal(codes, bq.numpy())
    ok = np.isfinite(np.repeat(absmax, 256)[:x.size])
    back = _core.dequantize_blockwise(codes, absmax, signed)
    bback = bnbf.dequantize_blockwise(bq, state).numpy()
    assert np.array_equal(back[ok], bback[ok])
