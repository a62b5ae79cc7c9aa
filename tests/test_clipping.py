"""optimc.clip_grad_norm / clip_grad_value / grad_norm against an independent
NumPy reference and torch.nn.utils; thread-count independence; bad input refused
with nothing changed."""
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _toolkit import *  # noqa: E402,F401,F403  (data, references, comparisons)
from _toolkit import report_diffs, restore_threads  # noqa: E402,F401  (fixtures)

import optimc  # noqa: E402


# ===========================================================================
# grad_norm / clip_grad_norm / clip_grad_value
# ===========================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=str)
def test_grad_norm_matches_numpy(dtype, norm_type):
    grads = arrays(dtype, seed=1)
    before = copies(grads)
    got = optimc.grad_norm(grads, norm_type)
    assert isinstance(got, float)
    assert_close(got, ref_norm(grads, norm_type), 1e-13, "grad_norm")
    assert_bitwise(grads, before, "grads")                     # read only
    # every container gives the same number; read-only arrays are fine for a norm
    ro = copies(grads)
    for g in ro:
        g.flags.writeable = False
    assert optimc.grad_norm(tuple(ro), norm_type) == got
    assert optimc.grad_norm({f"g{i}": g for i, g in enumerate(ro)}, norm_type) == got


def test_grad_norm_default_is_l2_and_mixed_dtypes():
    grads = arrays(np.float32, seed=2)[:4] + arrays(np.float64, seed=3)[4:]
    assert optimc.grad_norm(grads) == optimc.grad_norm(grads, 2.0)
    assert_close(optimc.grad_norm(grads), ref_norm(grads, 2), 1e-13, "mixed float32/float64")
    assert optimc.grad_norm([np.zeros(0)]) == 0.0
    assert optimc.grad_norm([np.zeros(0), np.array(-3.0)], "inf") == 3.0


@pytest.mark.parametrize("container", ["list", "tuple", "dict"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=str)
@pytest.mark.parametrize("factor", [0.0, 0.3, 2.0], ids=["max0", "clips", "noclip"])
def test_clip_grad_norm_matches_numpy(container, dtype, norm_type, factor):
    base = arrays(dtype, seed=4)
    max_norm = factor * ref_norm(base, norm_type)
    expected, total = ref_clip_norm(base, max_norm, norm_type)
    grads = copies(base)
    arg = {"list": list, "tuple": tuple, "dict": lambda g: {f"p{i}": x for i, x in enumerate(g)}}[container](grads)
    got = optimc.clip_grad_norm(arg, max_norm, norm_type)
    assert_close(got, total, 1e-13, "total norm")
    assert_close(grads, expected, ulp_rtol(dtype), "clipped grads")     # in place
    if factor == 2.0:
        assert_bitwise(grads, base, "unclipped grads")
    else:
        assert optimc.grad_norm(grads, norm_type) <= max_norm * (1 + ulp_rtol(dtype)) + 1e-30


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("clip_value", [0.0, 0.25, 1.0, 10.0])
def test_clip_grad_value_matches_numpy(dtype, clip_value):
    grads = arrays(dtype, seed=5)
    expected = ref_clip_value(grads, clip_value)
    assert optimc.clip_grad_value(grads, clip_value) is None
    assert_bitwise(grads, expected, "clamped grads")
    d = {"a": np.array([-3.0, 0.5, 3.0], dtype), "b": np.array(-7.0, dtype)}
    optimc.clip_grad_value(d, 1.0)
    assert_bitwise(list(d.values()), [np.array([-1.0, 0.5, 1.0], dtype), np.array(-1.0, dtype)], "dict")


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
def test_clip_grad_value_signed_zero_and_nan(dtype):
    """The documented -0.0 rule: an element inside [-v, v] is left exactly as it
    is, so -0.0 stays -0.0 (also with v = 0); an element below -v becomes -v,
    which is -0.0 when v = 0; NaN stays NaN. As torch.clamp and NumPy >= 2.1."""
    g = np.array([-0.0, 0.0, np.nan, -3.0, 3.0, -1e-30], dtype)
    optimc.clip_grad_value([g], 0.0)
    assert np.signbit(g).tolist() == [True, False, False, True, False, True]
    assert np.isnan(g[2]) and not np.any(g[~np.isnan(g)])
    g = np.array([-0.0, 0.5, -2.0], dtype)
    optimc.clip_grad_value([g], 1.0)
    assert np.signbit(g).tolist() == [True, False, True] and g.tolist() == [0.0, 0.5, -1.0]
    torch = _torch_or_none()
    if torch is not None:
        t = torch.tensor([-0.0, 0.0, float("nan"), -3.0, 3.0, -1e-30], dtype=getattr(torch, dt_id(dtype)))
        ours = np.array([-0.0, 0.0, np.nan, -3.0, 3.0, -1e-30], dtype)
        optimc.clip_grad_value([ours], 0.0)
        assert_bitwise([ours], [t.clamp(-0.0, 0.0).numpy()], "vs torch.clamp")


def _torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def test_clip_grad_norm_nonfinite():
    # error_if_nonfinite=True: refuses, changes nothing
    for bad in (np.nan, np.inf, -np.inf):
        grads = [np.array([3.0, 4.0]), np.array([1.0, bad, 2.0], np.float32)]
        before = copies(grads)
        with pytest.raises(ValueError, match="grads"):
            optimc.clip_grad_norm(grads, 1.0, error_if_nonfinite=True)
        assert_bitwise(grads, before, "grads after refusal")
    # without it: an Inf makes the total Inf, so the factor is 0 (as torch: Inf·0 = NaN)
    grads = [np.array([3.0, 4.0]), np.array([1.0, np.inf, -2.0])]
    assert optimc.clip_grad_norm(grads, 1.0) == math.inf
    assert_bitwise(grads, [np.array([0.0, 0.0]), np.array([0.0, np.nan, -0.0])], "inf-clipped grads")
    assert math.isnan(optimc.grad_norm([np.array([1.0, np.nan])]))
    assert math.isnan(optimc.grad_norm([np.array([1.0, np.nan, 5.0])], "inf"))


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, "inf"], ids=str)
def test_norm_independent_of_threads(norm_type, restore_threads):
    rng = np.random.default_rng(7)
    grads = [rng.standard_normal(1_000_003).astype(np.float32), rng.standard_normal((700, 1001)),
             np.array(2.5), np.zeros(0), rng.standard_normal(17)]
    results = set()
    clipped = []
    for n in (1, 2, 3, 8):
        optimc.set_num_threads(n)
        results.add(optimc.grad_norm(grads, norm_type).hex())
        g = copies(grads)
        results.add(optimc.clip_grad_norm(g, 1.0, norm_type).hex())
        clipped.append(g)
    assert len(results) == 1, f"total norm depends on the thread count: {results}"
    for g in clipped[1:]:
        assert_bitwise(g, clipped[0], "clipped grads across thread counts")


@pytest.mark.parametrize("name,kw", [("Adam", dict(lr=0.01)), ("SGD", dict(lr=0.1, momentum=0.9))])
def test_guarded_step_independent_of_threads(name, kw, restore_threads):
    rng = np.random.default_rng(8)
    shapes = [(600_001,), (300, 1001), (5,)]
    grads = [[np.asarray(rng.standard_normal(s)) for s in shapes] for _ in range(3)]
    runs = []
    for n in (1, 2, 5):
        optimc.set_num_threads(n)
        params = arrays(np.float64, seed=9, shapes=shapes)
        opt = make_opt(name, params, max_grad_norm=10.0, skip_nonfinite=True, **kw)
        norms = []
        for g in grads:
            opt.step(g)
            norms.append(opt.last_grad_norm.hex())
        runs.append((params, norms))
    for params, norms in runs[1:]:
        assert norms == runs[0][1]
        assert_bitwise(params, runs[0][0], "params across thread counts")


# ---- bad input ------------------------------------------------------------------

def _good():
    """A grad with norm 5: clip_grad_norm(…, 1.0) would scale it, clip_grad_value(…, 1.0)
    would clamp it, so "unchanged" means the call wrote nothing."""
    return np.array([3.0, -4.0])


BAD_GRADS = {
    # id: (build, exception, text the message must hold)
    "empty-list": (lambda: [], ValueError, "grads"),
    "empty-tuple": (lambda: (), ValueError, "grads"),
    "empty-dict": (lambda: {}, ValueError, "grads"),
    "int64": (lambda: [_good(), np.arange(3)], TypeError, "grads[1]"),
    "int32-0d": (lambda: [_good(), np.array(1, np.int32)], TypeError, "grads[1]"),
    "float16": (lambda: [_good(), np.ones(3, np.float16)], TypeError, "grads[1]"),
    "complex": (lambda: [_good(), np.ones(3, np.complex128)], TypeError, "grads[1]"),
    "bool": (lambda: [_good(), np.ones(3, bool)], TypeError, "grads[1]"),
    "big-endian": (lambda: [_good(), np.ones(3, ">f8")], TypeError, "grads[1]"),
    "strided": (lambda: [_good(), np.ones((4, 6))[:, ::2]], ValueError, "grads[1]"),
    "fortran": (lambda: [_good(), np.asfortranarray(np.ones((3, 4)))], ValueError, "grads[1]"),
    "list-element": (lambda: [_good(), [1.0, 2.0]], TypeError, "grads[1]"),
    "none-element": (lambda: [_good(), None], TypeError, "grads[1]"),
    "bad-dict-value": (lambda: {"W": _good(), "b": np.arange(2)}, TypeError, "grads"),
    "single-ndarray": (lambda: _good(), TypeError, "grads"),
    "none": (lambda: None, TypeError, "grads"),
    "number": (lambda: 3.0, TypeError, "grads"),
    "string": (lambda: "grads", TypeError, "grads"),
}

TOOL_CALLS = {
    "clip_grad_norm": lambda g: optimc.clip_grad_norm(g, 1.0),
    "clip_grad_value": lambda g: optimc.clip_grad_value(g, 1.0),
    "grad_norm": lambda g: optimc.grad_norm(g),
}



@pytest.mark.parametrize("tool", list(TOOL_CALLS))
@pytest.mark.parametrize("case", list(BAD_GRADS))
def test_bad_grads_refused_and_untouched(tool, case):
    build, exc, text = BAD_GRADS[case]
    grads = build()
    inside = arrays_in(grads)
    before = copies(inside)
    with pytest.raises(exc) as info:
        TOOL_CALLS[tool](grads)
    assert text in str(info.value), f"message {str(info.value)!r} does not name {text!r}"
    assert_bitwise(inside, before, "arrays after a refused call")


@pytest.mark.parametrize("tool", ["clip_grad_norm", "clip_grad_value"])
def test_clip_refuses_read_only(tool):
    ro = np.array([1.0, 2.0])
    ro.flags.writeable = False
    grads = [_good(), ro]
    before = copies(grads)
    with pytest.raises(ValueError, match=r"grads\[1\].*read-only"):
        TOOL_CALLS[tool](grads)
    assert_bitwise(grads, before, "grads")


def test_clip_grad_norm_refuses_read_only_even_when_no_clip_needed():
    ro = np.array([0.1, 0.2])
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        optimc.clip_grad_norm([ro], 100.0)


BAD_SCALARS = {
    # id: (call, exception, argument the message must name)
    "max_norm=-1": (lambda g: optimc.clip_grad_norm(g, -1.0), ValueError, "max_norm"),
    "max_norm=nan": (lambda g: optimc.clip_grad_norm(g, float("nan")), ValueError, "max_norm"),
    "max_norm='1'": (lambda g: optimc.clip_grad_norm(g, "1"), TypeError, "max_norm"),
    "max_norm=None": (lambda g: optimc.clip_grad_norm(g, None), TypeError, "max_norm"),
    "max_norm=True": (lambda g: optimc.clip_grad_norm(g, True), TypeError, "max_norm"),
    "norm_type=0": (lambda g: optimc.clip_grad_norm(g, 1.0, norm_type=0), ValueError, "norm_type"),
    "norm_type=-2": (lambda g: optimc.clip_grad_norm(g, 1.0, norm_type=-2.0), ValueError, "norm_type"),
    "norm_type=-inf": (lambda g: optimc.clip_grad_norm(g, 1.0, norm_type=-math.inf), ValueError, "norm_type"),
    "norm_type=nan": (lambda g: optimc.clip_grad_norm(g, 1.0, norm_type=float("nan")), ValueError, "norm_type"),
    "norm_type='l2'": (lambda g: optimc.clip_grad_norm(g, 1.0, norm_type="l2"), TypeError, "norm_type"),
    "norm_type=None": (lambda g: optimc.clip_grad_norm(g, 1.0, norm_type=None), TypeError, "norm_type"),
    "grad_norm-norm_type='fro'": (lambda g: optimc.grad_norm(g, norm_type="fro"), TypeError, "norm_type"),
    "grad_norm-norm_type=0": (lambda g: optimc.grad_norm(g, norm_type=0.0), ValueError, "norm_type"),
    "clip_value=-0.5": (lambda g: optimc.clip_grad_value(g, -0.5), ValueError, "clip_value"),
    "clip_value=inf": (lambda g: optimc.clip_grad_value(g, float("inf")), ValueError, "clip_value"),
    "clip_value='0.5'": (lambda g: optimc.clip_grad_value(g, "0.5"), TypeError, "clip_value"),
}


@pytest.mark.parametrize("case", list(BAD_SCALARS))
def test_bad_scalar_arguments(case):
    call, exc, text = BAD_SCALARS[case]
    grads = [_good(), np.array(7.0)]
    before = copies(grads)
    with pytest.raises(exc, match=text):
        call(grads)
    assert_bitwise(grads, before, "grads")


# ---- against torch -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("norm_type", NORM_TYPES, ids=str)
@pytest.mark.parametrize("factor", [0.0, 0.3, 2.0], ids=["max0", "clips", "noclip"])
def test_clip_grad_norm_vs_torch(dtype, norm_type, factor):
    torch = pytest.importorskip("torch")
    shapes = SHAPES if norm_type not in (math.inf, "inf") else [s for s in SHAPES if np.prod(s) > 0]
    # (torch cannot take the inf norm of an empty tensor; optimc gives 0 for it)
    for seed, scale in ((10, 1.0), (11, 1e-3), (12, 1e3)):
        grads = arrays(dtype, seed, scale, shapes)
        max_norm = factor * ref_norm(grads, norm_type)
        tparams = torch_params_with_grads(torch, grads)
        ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=float(norm_type))
        total = optimc.clip_grad_norm(grads, max_norm, norm_type)
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        key = f"clip_grad_norm p={float(norm_type):g} {dt_id(dtype)}"
        assert_close(total, float(ttotal), rtol, "total norm", record=key + " (total)")
        assert_close(grads, [p.grad.numpy() for p in tparams], rtol, "clipped grads", record=key)


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
def test_clip_grad_norm_inf_grad_vs_torch(dtype):
    torch = pytest.importorskip("torch")
    grads = arrays(dtype, 13)
    grads[3][2] = np.inf
    tparams = torch_params_with_grads(torch, grads)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, 1.0)
    assert optimc.clip_grad_norm(grads, 1.0) == float(ttotal) == math.inf
    assert_bitwise(grads, [p.grad.numpy() for p in tparams], "grads after an Inf total")


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("clip_value", [0.0, 0.3, 1.5])
def test_clip_grad_value_vs_torch(dtype, clip_value):
    torch = pytest.importorskip("torch")
    grads = arrays(dtype, 14, 2.0)
    grads[4][0] = np.nan
    tparams = torch_params_with_grads(torch, grads)
    torch.nn.utils.clip_grad_value_(tparams, clip_value)
    optimc.clip_grad_value(grads, clip_value)
    expected = [p.grad.numpy() for p in tparams]
    assert_close([np.nan_to_num(g) for g in grads], [np.nan_to_num(e) for e in expected], 0.0,
                 "clamped grads", record=f"clip_grad_value {dt_id(dtype)}")
    assert_bitwise(grads, expected, "clamped grads (NaN kept)")
