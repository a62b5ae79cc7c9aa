"""Helpers of the toolkit suites (test_clipping, test_guard, test_averaging,
test_callable_lr): data, NumPy references, comparisons and torch glue. The
fixtures are imported by each suite."""
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
def report_diffs():
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

def arrays_in(obj):
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [x for x in obj if isinstance(x, np.ndarray)]
    return [obj] if isinstance(obj, np.ndarray) else []
