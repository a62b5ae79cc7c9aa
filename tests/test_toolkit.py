"""The toolkit around the step.

* ``optimc.clip_grad_norm`` / ``clip_grad_value`` / ``grad_norm`` against an
  independent NumPy reference and ``torch.nn.utils``; thread-count independence;
  bad input refused with nothing changed.
* The optimizer options ``max_grad_norm=`` and ``skip_nonfinite=True`` (and
  ``last_grad_norm``, ``skipped_steps``, ``step_count``), each against a twin
  optimizer fed what the option should amount to.
* ``optimc.EMA`` / ``optimc.SWA`` against NumPy and
  ``torch.optim.swa_utils.AveragedModel``.
* A callable ``lr`` (and ``optimc.schedules.warmup_cosine``).

The largest differences seen against torch are printed at the end of the module
(``pytest -s``) and appended to the file named by ``OPTIMC_PARITY_REPORT``, if set.
"""
from __future__ import annotations

import copy
import inspect
import math
import os
import pickle

import numpy as np
import pytest

import optimc

# ===========================================================================
# helpers (all of them: data, references, comparisons, torch glue)
# ===========================================================================
DTYPES = [np.float32, np.float64]
#: 0-d, empty, odd sizes, 2-D and 3-D; every test uses all of them at once.
SHAPES = [(), (0,), (1,), (7,), (33,), (5, 13), (2, 3, 4), (1031,)]
#: indices into SHAPES of arrays that hold at least one element
NONEMPTY = [i for i, s in enumerate(SHAPES) if int(np.prod(s)) > 0]
NORM_TYPES = [1.0, 2.0, 3.5, math.inf, "inf"]


def dt_id(dtype):
    return np.dtype(dtype).name


def ulp_rtol(dtype, k=8):
    """A tight relative tolerance: k units in the last place of `dtype`."""
    return k * float(np.finfo(dtype).eps)


def arrays(dtype, seed=0, scale=1.0, shapes=SHAPES):
    """Fresh C-contiguous, writeable random-normal arrays (0-d ones included)."""
    rng = np.random.default_rng(seed)
    return [np.array(scale * rng.standard_normal(s), dtype=dtype) for s in shapes]


def grad_seq(dtype, steps, seed=100, scales=None, shapes=SHAPES):
    """`steps` lists of grads; step k is scaled by scales[k] (default 1)."""
    scales = scales or [1.0] * steps
    return [arrays(dtype, seed + k, scales[k], shapes) for k in range(steps)]


def copies(xs):
    if isinstance(xs, dict):
        return {k: np.array(v, copy=True) for k, v in xs.items()}
    return [np.array(x, copy=True) for x in xs]


def values(xs):
    return list(xs.values()) if isinstance(xs, dict) else list(xs)


def assert_bitwise(actual, expected, what="arrays"):
    """Same dtype, shape and bytes (the sign of zero included); NaN where the other has
    NaN (any payload: 0·Inf gives the CPU's default NaN, not np.nan)."""
    actual, expected = values(actual), values(expected)
    assert len(actual) == len(expected), f"{what}: {len(actual)} arrays, expected {len(expected)}"
    for i, (a, b) in enumerate(zip(actual, expected)):
        assert a.dtype == b.dtype and a.shape == b.shape, \
            f"{what}[{i}]: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        an, bn = np.isnan(a), np.isnan(b)
        assert np.array_equal(an, bn), f"{what}[{i}]: NaNs at other places: {a!r} vs {b!r}"
        a, b = np.where(an, 0, a), np.where(bn, 0, b)
        assert a.tobytes() == b.tobytes(), f"{what}[{i}] differs: {a!r} vs {b!r}"


def assert_tree_equal(a, b, path="state"):
    """Recursive bitwise equality of state dicts / state views (arrays, numbers, lists,
    callables by identity)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), f"{path}: {type(a)} vs {type(b)}"
        assert_bitwise([a], [b], path)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(map(str, a))} vs " \
                                                          f"{sorted(map(str, b)) if isinstance(b, dict) else b}"
        for k in a:
            assert_tree_equal(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{path}: {a!r} vs {b!r}"
        for k, (x, y) in enumerate(zip(a, b)):
            assert_tree_equal(x, y, f"{path}[{k}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{path}: {a!r} vs {b!r}"
    else:
        assert a == b and type(a) is type(b), f"{path}: {a!r} vs {b!r}"


def state_snapshot(opt):
    """Copies of everything an optimizer holds: params, opt.state views, state_dict,
    counters."""
    views = {k: {n: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v)
                 for n, v in opt.state[k].items()} for k in opt.state}
    return {"params": copies(opt._params()), "views": views, "state_dict": opt.state_dict(),
            "step_count": opt.step_count, "skipped_steps": opt.skipped_steps}


def assert_opt_unchanged(opt, snap):
    assert_tree_equal(state_snapshot(opt), snap, "optimizer")


def rel_diff(actual, expected):
    """max |a - b| / max(|b|, tiny) elementwise, in float64 (0 for empty arrays)."""
    a = np.asarray(actual, np.float64).ravel()
    b = np.asarray(expected, np.float64).ravel()
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), np.finfo(np.float64).tiny)))


def assert_close(actual, expected, rtol, what, record=None):
    """|a - b| <= rtol * (|b| + max|b|) elementwise over lists of arrays (or scalars): an
    element that cancels to near 0 carries the rounding of the array's largest values.
    Records the largest absolute and relative differences under `record`."""
    actual = [np.asarray(x) for x in (values(actual) if isinstance(actual, (list, tuple, dict)) else [actual])]
    expected = [np.asarray(x) for x in (values(expected) if isinstance(expected, (list, tuple, dict)) else [expected])]
    assert len(actual) == len(expected), what
    for i, (a, b) in enumerate(zip(actual, expected)):
        assert a.shape == b.shape, f"{what}[{i}]: shape {a.shape} vs {b.shape}"
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        scale = float(np.max(np.abs(b64))) if b.size else 0.0
        if record is not None and a.size:
            absdiff = float(np.max(np.abs(a64 - b64)))
            DIFFS.add(record, absdiff, rel_diff(a64, b64), absdiff / scale if scale else 0.0)
        tol = rtol * (np.abs(b64) + scale)
        bad = ~(np.abs(a64 - b64) <= tol)
        assert not bad.any(), (f"{what}[{i}]: {int(bad.sum())}/{a.size} elements off, max |diff| "
                               f"{np.max(np.abs(a64 - b64)):.3e} > rtol {rtol:g}; "
                               f"first: {a64[bad][0]!r} vs {b64[bad][0]!r}")


class _Diffs:
    """Largest absolute / relative differences per comparison (the torch parity numbers)."""

    def __init__(self):
        self.rows = {}

    def add(self, key, absdiff, reldiff, normdiff):
        old = self.rows.get(key, (0.0, 0.0, 0.0))
        self.rows[key] = tuple(max(x, y) for x, y in zip(old, (absdiff, reldiff, normdiff)))

    def table(self):
        lines = ["optimc toolkit vs torch: largest differences (rel: per element; "
                 "vs max: |diff| / max|torch| of the array)",
                 f"{'comparison':<38} {'max |diff|':>11} {'max rel':>11} {'max vs max':>11}"]
        for key in sorted(self.rows):
            lines.append(f"{key:<38} " + " ".join(f"{x:>11.3e}" for x in self.rows[key]))
        return "\n".join(lines)


DIFFS = _Diffs()


@pytest.fixture(scope="module", autouse=True)
def _report_diffs():
    yield
    if DIFFS.rows:
        text = DIFFS.table()
        print("\n" + text)
        path = os.environ.get("OPTIMC_PARITY_REPORT")
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(text + "\n\n")


@pytest.fixture
def restore_threads():
    n = optimc.get_num_threads()
    yield
    optimc.set_num_threads(n)


# ---- NumPy references ------------------------------------------------------

def ref_norm(grads, norm_type):
    """The total norm of all elements together, in float64."""
    p = math.inf if norm_type == "inf" else float(norm_type)
    flat = np.concatenate([np.abs(np.asarray(g, np.float64)).ravel() for g in values(grads)])
    if flat.size == 0:
        return 0.0
    if p == math.inf:
        return float(np.max(flat))
    if p == 1.0:
        return float(np.sum(flat))
    if p == 2.0:
        return float(np.sqrt(np.sum(flat * flat)))
    return float(np.sum(flat ** p) ** (1.0 / p))


def ref_clip_norm(grads, max_norm, norm_type=2.0):
    """(clipped copies, total norm): torch's rule, factor max_norm / (norm + 1e-6) if < 1,
    applied in the grads' dtype."""
    total = ref_norm(grads, norm_type)
    coef = max_norm / (total + 1e-6)
    out = copies(grads)
    if coef < 1.0:
        for g in values(out):
            g *= g.dtype.type(coef)
    return out, total


def ref_clip_value(grads, v):
    """Elements above v become v, below -v become -v; every other element (NaN,
    -0.0 included) is kept bit for bit. Written with comparisons, not np.clip,
    whose handling of -0.0 changed between NumPy versions (2.0 returns +0.0)."""
    out = copies(grads)
    for g in values(out):
        hi, lo = g.dtype.type(v), -g.dtype.type(v)
        g[...] = np.where(g > hi, hi, np.where(g < lo, lo, g))
    return out


def ref_lerp(a, p, w):
    """torch.lerp's two-sided form in the arrays' dtype: a + w(p − a) for w < ½,
    else p − (p − a)(1 − w)."""
    t = a.dtype.type
    w = t(w)
    if w < 0.5:
        return a + w * (p - a)
    return p - (p - a) * (t(1) - w)


def ref_average(history, kind, decay=None):
    """EMA (first update copies) or SWA (running mean) of a list of param snapshots."""
    avg = None
    for n, ps in enumerate(history):
        if avg is None:
            avg = copies(ps)
        else:
            w = (1.0 - decay) if kind == "ema" else 1.0 / (n + 1)
            avg = [ref_lerp(a, p, w) for a, p in zip(avg, ps)]
    return avg


# ---- torch glue --------------------------------------------------------------

def torch_params_with_grads(torch, grads):
    out = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype))
        p.grad = torch.from_numpy(np.array(g, copy=True))
        out.append(p)
    return out


def make_opt(name, params, **kw):
    return getattr(optimc, name)(params, **kw)


#: every optimizer class, most with options that touch the grad path
OPT_CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True)),
    ("Momentum", dict(lr=0.05, dampening=0.2)),
    ("NAG", dict(lr=0.05, weight_decay=0.05)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("Adadelta", dict(weight_decay=0.05)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.05)),
    ("AdamW", dict(lr=0.01, maximize=True)),
    ("Adamax", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, decoupled_weight_decay=True, weight_decay=0.05)),
    ("RAdam", dict(lr=0.01)),
    ("Lion", dict(lr=1e-3, weight_decay=0.1)),
]


def case_id(case):
    name, kw = case
    return name + ("-" + "-".join(f"{k}={v}" for k, v in kw.items()) if kw else "")


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


def _arrays_in(obj):
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [x for x in obj if isinstance(x, np.ndarray)]
    return [obj] if isinstance(obj, np.ndarray) else []


@pytest.mark.parametrize("tool", list(TOOL_CALLS))
@pytest.mark.parametrize("case", list(BAD_GRADS))
def test_bad_grads_refused_and_untouched(tool, case):
    build, exc, text = BAD_GRADS[case]
    grads = build()
    inside = _arrays_in(grads)
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


# ===========================================================================
# the optimizer options: max_grad_norm=, skip_nonfinite=True
# ===========================================================================

@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("case", OPT_CASES, ids=case_id)
def test_max_grad_norm_equals_clipping_first(case, dtype):
    name, kw = case
    max_norm = 1.0
    # grad norms ~ 0.4, 370, 37, 3700, 3.7: steps 1 and 5 straddle the threshold
    steps = grad_seq(dtype, 5, scales=[0.01, 10.0, 1.0, 100.0, 0.1])
    p_opt, p_ref, p_own = arrays(dtype), arrays(dtype), arrays(dtype)
    opt = make_opt(name, p_opt, max_grad_norm=max_norm, **kw)
    ref = make_opt(name, p_ref, **kw)          # fed NumPy-clipped grads
    own = make_opt(name, p_own, **kw)          # fed grads clipped by optimc.clip_grad_norm
    assert opt.max_grad_norm == max_norm and opt.skip_nonfinite is False
    for grads in steps:
        before = copies(grads)
        opt.step(grads)
        assert_bitwise(grads, before, "the user's grads")               # read scaled, not modified
        clipped, total = ref_clip_norm(grads, max_norm)
        assert_close(opt.last_grad_norm, total, 1e-13, "last_grad_norm")
        ref.step(clipped)
        g = copies(grads)
        optimc.clip_grad_norm(g, max_norm)
        own.step(g)
    assert opt.step_count == ref.step_count == 5 and opt.skipped_steps == 0
    assert_close(p_opt, p_ref, ulp_rtol(dtype, 16), "params vs NumPy-clipped twin")
    for k in opt.state:
        for buf, v in opt.state[k].items():
            assert_close(v, ref.state[k][buf], ulp_rtol(dtype, 16), f"state[{k}][{buf!r}]")
    # clipping inside the step and clip_grad_norm before it are the same computation
    assert_bitwise(p_opt, p_own, "params vs clip_grad_norm twin")


def test_max_grad_norm_is_global_over_groups_and_dict_params():
    dtype = np.float64
    a, b = arrays(dtype, 20), arrays(dtype, 21, shapes=[(3, 4), (9,)])
    params = {f"a{i}": x for i, x in enumerate(a)}
    extra = {"w": b[0], "v": b[1]}
    opt = optimc.Adam([{"params": params}, {"params": extra, "lr": 0.1}], lr=0.01, max_grad_norm=0.5)
    ref = optimc.Adam([{"params": copies(params)}, {"params": copies(extra), "lr": 0.1}], lr=0.01)
    for k in range(3):
        g = {**{f"a{i}": x for i, x in enumerate(arrays(dtype, 30 + k))},
             **dict(zip(["w", "v"], arrays(dtype, 40 + k, shapes=[(3, 4), (9,)])))}
        before = copies(g)
        opt.step(g)
        assert_bitwise(g, before, "grads")
        clipped, total = ref_clip_norm(g, 0.5)
        assert_close(opt.last_grad_norm, total, 1e-13, "last_grad_norm")
        ref.step(clipped)
    assert_close(opt._params(), ref._params(), ulp_rtol(dtype, 16), "params")


def _poison(grads, where, value):
    g = copies(grads)
    g[NONEMPTY[where]].flat[-1] = value
    return g


BAD_VALUES = [("nan", np.nan, 0), ("inf", np.inf, -1), ("-inf", -np.inf, 3)]


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("bad", BAD_VALUES, ids=lambda b: f"{b[0]}-in-tensor{b[2]}")
@pytest.mark.parametrize("case", OPT_CASES, ids=case_id)
def test_skip_nonfinite(case, bad, dtype):
    name, kw = case
    _, value, where = bad
    steps = grad_seq(dtype, 5)
    opt = make_opt(name, arrays(dtype), skip_nonfinite=True, **kw)
    twin = make_opt(name, arrays(dtype), **kw)           # never sees the bad step
    assert opt.skip_nonfinite is True and opt.max_grad_norm is None
    for k, grads in enumerate(steps):
        if k == 2:
            snap = state_snapshot(opt)
            bad_grads = _poison(grads, where, value)
            before = copies(bad_grads)
            opt.step(bad_grads)                          # skipped: no exception
            assert_bitwise(bad_grads, before, "the user's grads")
            assert opt.skipped_steps == 1 and opt.step_count == 2
            assert not math.isfinite(opt.last_grad_norm)
            snap["skipped_steps"] = 1
            snap["state_dict"]["skipped_steps"] = 1
            assert_opt_unchanged(opt, snap)              # params, state views, state_dict
        opt.step(grads)
        twin.step(grads)
        assert_close(opt.last_grad_norm, ref_norm(grads, 2), 1e-13, "last_grad_norm")
    assert opt.step_count == twin.step_count == 5 and opt.skipped_steps == 1
    assert twin.skipped_steps == 0
    sd, tsd = opt.state_dict(), twin.state_dict()
    assert sd.pop("skipped_steps") == 1 and tsd.pop("skipped_steps") == 0
    assert_tree_equal(sd, tsd, "state_dict vs twin")          # as if the bad step never happened
    assert_bitwise(opt._params(), twin._params(), "params vs twin")


@pytest.mark.parametrize("name,kw", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.01))])
def test_without_the_guard_nonfinite_grads_go_through(name, kw):
    params = arrays(np.float64)
    opt = make_opt(name, params, **kw)
    opt.step(_poison(grad_seq(np.float64, 1)[0], 0, np.nan))
    assert np.isnan(params[NONEMPTY[0]]).any() and opt.step_count == 1 and opt.skipped_steps == 0
    assert opt.last_grad_norm is None


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("case", [OPT_CASES[1], OPT_CASES[7], OPT_CASES[10], OPT_CASES[12]], ids=case_id)
def test_max_grad_norm_and_skip_nonfinite_together(case, dtype):
    name, kw = case
    lrs = []

    def lr_fn(step):                                      # a callable lr sees 0-based step counts
        lrs.append(step)
        return 0.01 * 0.9 ** step

    steps = grad_seq(dtype, 6, scales=[0.01, 10.0, 1.0, 100.0, 0.1, 3.0])
    opt = make_opt(name, arrays(dtype), max_grad_norm=2.0, skip_nonfinite=True, **{**kw, "lr": lr_fn})
    twin = make_opt(name, arrays(dtype), **{**kw, "lr": lambda s: 0.01 * 0.9 ** s})
    for k, grads in enumerate(steps):
        if k in (1, 4):
            snap = state_snapshot(opt)
            opt.step(_poison(grads, k % len(NONEMPTY), np.nan if k == 1 else -np.inf))
            snap["skipped_steps"] += 1
            snap["state_dict"]["skipped_steps"] += 1
            assert_opt_unchanged(opt, snap)
        opt.step(grads)
        clipped, total = ref_clip_norm(grads, 2.0)
        assert_close(opt.last_grad_norm, total, 1e-13, "last_grad_norm")
        twin.step(clipped)
    assert opt.skipped_steps == 2 and opt.step_count == twin.step_count == 6
    assert sorted(set(lrs)) == list(range(6))             # no step count was used up by a skip
    assert_close(opt._params(), twin._params(), ulp_rtol(dtype, 16), "params vs clipped twin")
    for k in opt.state:
        for buf, v in opt.state[k].items():
            assert_close(v, twin.state[k][buf], ulp_rtol(dtype, 16), f"state[{k}][{buf!r}]")


def test_guard_settings_live_and_pickled():
    params = arrays(np.float64)
    opt = optimc.SGD(params, lr=0.1)
    assert opt.max_grad_norm is None and opt.skip_nonfinite is False and opt.last_grad_norm is None
    opt.set_guard(max_grad_norm=0.5, skip_nonfinite=True)
    opt.step(grad_seq(np.float64, 1)[0])
    opt.step(_poison(grad_seq(np.float64, 1)[0], 1, np.inf))
    assert (opt.step_count, opt.skipped_steps) == (1, 1)
    sd = opt.state_dict()
    assert (sd["step_count"], sd["skipped_steps"]) == (1, 1)
    for clone in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert (clone.max_grad_norm, clone.skip_nonfinite) == (0.5, True)
        assert (clone.step_count, clone.skipped_steps) == (1, 1)
    fresh = optimc.SGD(arrays(np.float64), lr=0.1)
    fresh.load_state_dict(sd)
    assert (fresh.step_count, fresh.skipped_steps) == (1, 1)
    opt.set_guard()                                           # both off again
    assert opt.max_grad_norm is None and opt.skip_nonfinite is False
    before = copies(params)
    opt.step(_poison(grad_seq(np.float64, 1)[0], 1, np.inf))
    assert opt.skipped_steps == 1 and opt.step_count == 2
    assert not np.array_equal(params[NONEMPTY[1]], before[NONEMPTY[1]], equal_nan=True)


BAD_GUARDS = [
    (dict(max_grad_norm=0.0), ValueError), (dict(max_grad_norm=-1.0), ValueError),
    (dict(max_grad_norm=float("nan")), ValueError), (dict(max_grad_norm=float("inf")), ValueError),
    (dict(max_grad_norm="1"), TypeError), (dict(max_grad_norm=True), TypeError),
    (dict(skip_nonfinite=1), TypeError), (dict(skip_nonfinite="yes"), TypeError),
]


@pytest.mark.parametrize("kw,exc", BAD_GUARDS,
                         ids=["{}={!r}".format(*next(iter(kw.items()))) for kw, _ in BAD_GUARDS])
def test_bad_guard_options(kw, exc):
    with pytest.raises(exc, match=next(iter(kw))):
        optimc.Adam(arrays(np.float64), **kw)
    opt = optimc.Adam(arrays(np.float64), max_grad_norm=1.0)
    with pytest.raises(exc, match=next(iter(kw))):
        opt.set_guard(**{"max_grad_norm": 1.0, **kw})
    assert opt.max_grad_norm == 1.0 and opt.skip_nonfinite is False   # unchanged


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
    before = copies(_arrays_in(others))
    with pytest.raises(ValueError, match="params"):
        avg.copy_to(others)
    assert_bitwise(_arrays_in(others), before, "targets")


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


# ===========================================================================
# callable lr
# ===========================================================================

def halving(step):
    """A module-level (hence picklable) lr function."""
    return 0.1 * 0.5 ** step


@pytest.mark.parametrize("dtype", DTYPES, ids=dt_id)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_callable_lr_sgd_numpy_loop(dtype, momentum):
    calls = []

    def lr(step):
        calls.append(step)
        return 0.1 * 0.5 ** step

    params = arrays(dtype, 70)
    opt = optimc.SGD(params, lr=lr, momentum=momentum)
    assert opt.lr is lr and opt.param_groups[0]["lr"] is lr
    ref = copies(params)
    buf = None
    for k, grads in enumerate(grad_seq(dtype, 6, seed=71)):
        opt.step(grads)
        eta = dtype(0.1 * 0.5 ** k)
        if momentum:
            buf = copies(grads) if buf is None else [dtype(momentum) * b + g for b, g in zip(buf, grads)]
            d = buf
        else:
            d = grads
        ref = [p - eta * x for p, x in zip(ref, d)]
        assert_close(params, ref, ulp_rtol(dtype, 4), f"params after step {k}")
    assert calls == list(range(6))


@pytest.mark.parametrize("case", OPT_CASES, ids=case_id)
def test_callable_lr_equals_setting_lr_before_each_step(case):
    name, kw = case
    base = kw.get("lr", 0.01)
    fn = lambda step: base * (1.0 + step) / (1.0 + 0.5 * step ** 2)  # noqa: E731
    a, b = arrays(np.float64, 72), arrays(np.float64, 72)
    opt = make_opt(name, a, **{**kw, "lr": fn})
    twin = make_opt(name, b, **kw)
    for k, grads in enumerate(grad_seq(np.float64, 5, seed=73)):
        opt.step(grads)
        twin.lr = fn(k)
        twin.step(grads)
    assert_bitwise(a, b, "params")


BAD_LR_RESULTS = [
    ("negative", lambda s: -0.1, ValueError), ("nan", lambda s: float("nan"), ValueError),
    ("inf", lambda s: float("inf"), ValueError), ("string", lambda s: "0.1", TypeError),
    ("none", lambda s: None, TypeError), ("list", lambda s: [0.1], TypeError),
    ("late-negative", lambda s: 0.1 if s < 2 else -1e-3, ValueError),
]


@pytest.mark.parametrize("bad", BAD_LR_RESULTS, ids=lambda b: b[0])
def test_callable_lr_bad_result_writes_nothing(bad):
    _, fn, exc = bad
    params = arrays(np.float64, 74)
    opt = optimc.Adam(params, lr=fn)
    steps = grad_seq(np.float64, 3, seed=75)
    k = 0
    if bad[0] == "late-negative":
        for k in range(2):
            opt.step(steps[k])
        k = 2
    snap = state_snapshot(opt)
    with pytest.raises(exc, match="lr"):
        opt.step(steps[k])
    assert_opt_unchanged(opt, snap)
    opt.lr = 0.01                                    # a good lr: stepping works again
    opt.step(steps[k])
    assert opt.step_count == k + 1


def test_callable_lr_exception_and_bad_group_write_nothing():
    a, b = arrays(np.float64, 76), arrays(np.float64, 77, shapes=[(3,)])

    def boom(step):
        raise ZeroDivisionError("from the lr function")

    opt = optimc.SGD([{"params": a, "lr": halving}, {"params": b, "lr": boom}], momentum=0.9)
    snap = state_snapshot(opt)
    with pytest.raises(ZeroDivisionError):
        opt.step(grad_seq(np.float64, 1)[0] + [np.ones(3)])
    assert_opt_unchanged(opt, snap)                   # group 0's callable was fine; nothing written
    opt.param_groups[1]["lr"] = lambda s: -1.0
    snap = state_snapshot(opt)
    with pytest.raises(ValueError, match="group 1"):
        opt.step(grad_seq(np.float64, 1)[0] + [np.ones(3)])
    assert_opt_unchanged(opt, snap)


@pytest.mark.parametrize("via", ["state_dict", "pickle", "deepcopy"])
def test_callable_lr_checkpoint_round_trip(via):
    steps = grad_seq(np.float64, 6, seed=78)
    params = arrays(np.float64, 79)
    opt = optimc.Adam(params, lr=halving, max_grad_norm=5.0)
    for g in steps[:3]:
        opt.step(g)
    if via == "state_dict":
        sd = opt.state_dict()
        assert sd["param_groups"][0]["lr"] is halving
        other_params = copies(params)
        resumed = optimc.Adam(other_params, lr=0.5, max_grad_norm=5.0)
        resumed.load_state_dict(sd)
        assert resumed.lr is halving
    else:
        resumed = pickle.loads(pickle.dumps(opt)) if via == "pickle" else copy.deepcopy(opt)
        other_params = resumed._params()
        assert resumed.lr is halving                  # by reference, as pickle does functions
    assert resumed.step_count == 3
    for g in steps[3:]:
        opt.step(g)
        resumed.step(g)
    assert_bitwise(other_params, params, "resumed vs uninterrupted")


def _warmup_cosine_ref(t, peak, warmup, total, end, start):
    """The schedule from its docstring, written independently."""
    if t < warmup:
        return start + (peak - start) * t / warmup
    frac = min(t - warmup, total - warmup) / (total - warmup)
    return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * frac))


def test_lr_from_schedules_warmup_cosine():
    schedules = pytest.importorskip("optimc.schedules")
    if not hasattr(schedules, "warmup_cosine"):
        pytest.skip("optimc.schedules.warmup_cosine not available")
    sig = inspect.signature(schedules.warmup_cosine)
    assert list(sig.parameters)[:3] == ["peak_lr", "warmup_steps", "total_steps"]
    args = dict(peak_lr=0.2, warmup_steps=3, total_steps=10, end_lr=0.01, start_lr=0.02)
    sched = schedules.warmup_cosine(**args)
    dtype = np.float64
    params = arrays(dtype, 80)
    opt = optimc.SGD(params, lr=sched)
    ref = copies(params)
    for k, grads in enumerate(grad_seq(dtype, 13, seed=81)):   # past total_steps: held at end_lr
        eta = _warmup_cosine_ref(k, *args.values())
        assert sched(k) == pytest.approx(eta, rel=1e-14)
        opt.step(grads)
        ref = [p - dtype(eta) * g for p, g in zip(ref, grads)]
    assert_close(params, ref, ulp_rtol(dtype, 4), "params under warmup_cosine")
    clone = pickle.loads(pickle.dumps(opt))              # a Schedule pickles by value
    assert clone.lr == sched and clone.step_count == 13


# ---- non-finite and overflowing norms, naming, odd lr values -------------

def test_nan_norm_makes_grads_nan_like_torch():
    g = [np.array([1.0, np.nan]), np.array([2.0])]
    total = optimc.clip_grad_norm(g, 1.0)
    assert np.isnan(total) and np.all(np.isnan(g[0])) and np.all(np.isnan(g[1]))
    torch = pytest.importorskip("torch")
    t = [torch.tensor([1.0, float("nan")], dtype=torch.float64, requires_grad=True),
         torch.tensor([2.0], dtype=torch.float64, requires_grad=True)]
    for x in t:
        x.grad = x.detach().clone()
    torch.nn.utils.clip_grad_norm_(t, 1.0)
    assert all(torch.isnan(x.grad).all() for x in t)


def test_overflowing_norm_is_nonfinite():
    g = [np.array([1e200, 1e200])]
    with pytest.raises(ValueError, match="grads: the total norm is inf"):
        optimc.clip_grad_norm(g, 1.0, error_if_nonfinite=True)
    assert np.all(g[0] == 1e200)
    w = np.zeros(2)
    opt = optimc.Adam([w], max_grad_norm=1.0, skip_nonfinite=True)
    opt.step([np.array([1e200, 1e200])])
    assert opt.skipped_steps == 1 and opt.step_count == 0 and np.all(w == 0)
    assert opt.last_grad_norm == np.inf


def test_clip_names_dict_entries_by_key():
    with pytest.raises(TypeError, match=r"grads\['b'\]: expected a float32 or float64 array.*got int64"):
        optimc.clip_grad_norm({"a": np.ones(2), "b": np.ones(2, np.int64)}, 1.0)
    with pytest.raises(TypeError, match="error_if_nonfinite"):
        optimc.clip_grad_norm([np.ones(2)], 1.0, error_if_nonfinite="no")


def test_last_grad_norm_none_until_measured():
    opt = optimc.SGD([np.zeros(2)], skip_nonfinite=True)
    assert opt.last_grad_norm is None
    opt.step([np.array([3.0, 4.0])])
    assert opt.last_grad_norm == 5.0


def test_lr_callable_returning_bool_is_a_type_error():
    w = np.zeros(2)
    opt = optimc.SGD([w], lr=lambda step: True)
    with pytest.raises(TypeError, match="lr"):
        opt.step([np.ones(2)])
    assert np.all(w == 0) and opt.step_count == 0


def test_last_lr_reports_the_callable_lr_used():
    w = np.zeros(2)
    opt = optimc.SGD([{"params": [w], "lr": lambda step: 0.5 ** step}, {"params": [np.zeros(1)], "lr": 0.3}])
    for k in range(3):
        opt.step([np.ones(2), np.ones(1)])
        assert opt.last_lr == [0.5 ** k, 0.3]
