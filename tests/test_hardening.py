"""Refusals that change nothing, and settings that are never ignored (issue 9).

Each test names the item of issue 9 it guards and covers the class of bug, not
only the example the issue gives:

* 5, 6   aliasing: grads or new params that share memory with any param or any
         state buffer of the optimizer are refused with nothing written.
* 7-12   checkpoints: every field of a state_dict is checked before the first
         write (hostile counters, steps, scalar state, buffers, groups, keys);
         counters are bounded; a checkpoint made of the optimizer's own live
         views loads as if copied; state_dict() is one consistent snapshot while
         another thread steps; every refusal names its field.
* 14     attributes: unknown settings are refused, max_grad_norm and
         skip_nonfinite are live.
* 15     ParamGroup: no dict method gets around the checks; the dict and the C
         engine always agree (checked through step results).

Items 1, 4 and 13 are in test_lifetime.py; the fuzz suites in test_fuzz.py.
"""
import copy
import hashlib
import pickle
import sys
import threading
import time

import numpy as np
import pytest

import optimc
from _snapshot import (assert_clean_exit, assert_same_as_twin, assert_unchanged, buffer_names, build,
                       build_pair, full_options, hyper_names, params_of, random_grads, run_python,
                       snapshot)

ALL = list(optimc.ALL)
IDS = [c.__name__ for c in ALL]
REFUSALS = (TypeError, ValueError)

# The largest step count the engine keeps: every count is exact in a double.
STEP_LIMIT = 2 ** 53


def assert_refused(call, *fields, types=REFUSALS):
    """`call()` raises one of `types` whose message names every one of `fields`."""
    try:
        call()
    except types as e:
        msg = str(e)
    except Exception as e:  # noqa: BLE001 -- any other exception is the failure
        raise AssertionError(f"refused with {type(e).__name__}: {e!s} -- expected "
                             f"{'/'.join(t.__name__ for t in types)} naming {fields}") from e
    else:
        raise AssertionError(f"accepted; expected a refusal naming {fields}")
    for f in fields:   # "param_groups" may read "param groups"
        assert f in msg or f.replace("_", " ") in msg, f"the refusal does not name {f!r}: {msg}"
    return msg


# ---- items 5 and 6: aliasing -------------------------------------------------

def _aliasing_setup(cls):
    """Params a (12 elements, inside a larger buffer `base`), b (12), c (6), with
    state from one step, and an identical twin."""
    def one():
        base = np.zeros(30)
        a = base[:12]
        a[:] = np.linspace(-1, 1, 12)
        b = np.linspace(1, 2, 12)
        c = np.linspace(-2, -1, 6)
        opt = cls([a, b, c], lr=0.1, **full_options(cls))
        opt.step([np.full(12, 0.5), np.full(12, -0.5), np.full(6, 0.25)])
        return opt, base
    (opt, base), (twin, _) = one(), one()
    return opt, twin, base


def _alias_cases(opt, base):
    """(name, grads) where one grad shares memory with a param or state buffer."""
    a, b, c = params_of(opt)
    ga, gb, gc = np.ones(12), np.ones(12), np.ones(6)
    yield "grad[0] is param b", [b, gb, gc]
    yield "grad[0] is its own param", [a, gb, gc]
    yield "grads[0], grads[1] are the params swapped", [b, a, gc]
    yield "grad[2] is part of param a", [ga, gb, a[3:9]]
    yield "grad[2] overlaps the end of param a", [ga, gb, base[9:15]]
    for k in buffer_names(opt, 0):
        yield f"grad[1] is param a's {k}", [ga, opt.state[0][k], gc]
        yield f"grad[0] is its own {k}", [opt.state[0][k], gb, gc]
        yield f"grad[2] is part of param b's {k}", [ga, gb, opt.state[1][k][6:]]


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_grads_aliasing_params_or_state_are_refused(cls):
    """Item 5: a grad that shares memory with any param or any state buffer of
    the optimizer (whole, part, overlapping) is refused, nothing written."""
    opt, twin, base = _aliasing_setup(cls)
    for name, grads in _alias_cases(opt, base):
        before = snapshot(opt)
        try:
            assert_refused(lambda: opt.step(grads), "grads", types=(ValueError,))
        except AssertionError as e:
            raise AssertionError(f"{cls.__name__}, {name}: {e}") from None
        assert_unchanged(before, snapshot(opt))
    assert_same_as_twin(opt, twin)


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_one_grad_for_several_params_is_fine(cls):
    """Grads are only read: the same array for two params is not aliasing."""
    opt, twin = build_pair(cls, shapes=[(5,), (5,)], **full_options(cls))
    g = np.linspace(-1, 1, 5)
    opt.step([g, g])
    twin.step([g.copy(), g.copy()])
    assert_same_as_twin(opt, twin)


def _new_param_cases(opt, base):
    """(name, param group) whose arrays share memory with the optimizer or each other."""
    a, b, c = params_of(opt)
    x = np.zeros(4)
    y = np.zeros(10)
    for k in buffer_names(opt, 0):
        yield f"param a's {k}", {"params": [opt.state[0][k]]}
        yield f"part of param b's {k}", {"params": [opt.state[1][k][2:8]]}
    yield "param b again", {"params": [b]}
    yield "a reshaped view of param b", {"params": [b.reshape(3, 4)]}
    yield "part of param a", {"params": [a[2:5]]}
    yield "a buffer overlapping the end of param a", {"params": [base[10:14]]}
    yield "one new array twice", {"params": [x, x]}
    yield "two overlapping new arrays", {"params": [y[:5], y[3:8]]}


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_new_params_sharing_memory_are_refused(cls):
    """Item 6: add_param_group refuses an array that is (part of) a state
    buffer, overlaps a param, or overlaps another new array; nothing changes."""
    opt, twin, base = _aliasing_setup(cls)
    for name, group in _new_param_cases(opt, base):
        before = snapshot(opt)
        try:
            assert_refused(lambda: opt.add_param_group(group), "params", types=(ValueError,))
        except AssertionError as e:
            raise AssertionError(f"{cls.__name__}, {name}: {e}") from None
        assert_unchanged(before, snapshot(opt))
        assert len(opt.param_groups) == 1 and len(opt.state) == 3
    assert_same_as_twin(opt, twin)


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_overlapping_params_refused_at_construction(cls):
    x = np.zeros(8)
    for params in ([x, x], [x[:5], x[4:]], [{"params": [x]}, {"params": [x[2:3]]}],
                   {"u": x, "v": x.reshape(2, 4)}):
        assert_refused(lambda: cls(params, **full_options(cls)), "params", types=(ValueError,))


def test_named_params_state_view_refused():
    opt = build(optimc.Adam, named=True, steps=1, amsgrad=True)
    before = snapshot(opt)
    assert_refused(lambda: opt.add_param_group({"params": {"s": opt.state["p0"]["exp_avg"]}}),
                   "params", types=(ValueError,))
    assert_unchanged(before, snapshot(opt))


# ---- items 7 to 12: checkpoints ----------------------------------------------

def _checkpoint_setup(cls, named=False):
    """(opt, twin, sd): opt and twin identical after 3 steps; sd from another
    run (2 steps, other grads and lr, one skipped step) so that every field of it
    differs from opt's: a half-applied load cannot go unseen."""
    kw = full_options(cls)
    opt, twin = build_pair(cls, steps=3, named=named, **kw)
    source = build(cls, steps=2, seed=7, named=named, lr=0.0123, skip_nonfinite=True, **kw)
    bad = random_grads(source, 3)
    first = next(iter(bad))
    (bad[first] if isinstance(bad, dict) else bad[0]).flat[0] = np.nan
    source.step(bad)
    assert source.skipped_steps == 1
    return opt, twin, source.state_dict()


def _last(sd):
    """Key of the last param's state entry (checks of late entries matter)."""
    return list(sd["state"])[-1]


HOSTILE_COUNTS = [
    2 ** 64, 2 ** 63, 2 ** 63 - 1, STEP_LIMIT + 1, np.uint64(2 ** 63), np.uint64(2 ** 64 - 1),
    -1, np.int64(-1), 1.5, 2.0, np.float64(3.0), float("nan"), float("inf"), True, np.bool_(False),
    None, "3", b"3", [3], np.array([3]), 3 + 0j,
]


def _count_id(v):
    return f"{type(v).__name__}({v!r})"[:40]


@pytest.mark.parametrize("value", HOSTILE_COUNTS, ids=[_count_id(v) for v in HOSTILE_COUNTS])
@pytest.mark.parametrize("field", ["step_count", "skipped_steps", "state-step"])
def test_hostile_counters_refused_before_any_write(field, value):
    """Items 7, 8, 12: a counter or per-param step that is not an int in
    [0, 2**53] (too big, unsigned 64-bit, negative, float, bool, None, str...)
    is refused with a TypeError/ValueError naming it, and the optimizer is
    bit-identical afterwards (no half-loaded buffers, lr or counters)."""
    for cls in ALL:
        opt, twin, sd = _checkpoint_setup(cls)
        if field == "state-step":
            sd["state"][_last(sd)]["step"] = value
            names = ("state", "step")
        else:
            sd[field] = value
            names = (field,)
        before = snapshot(opt)
        try:
            assert_refused(lambda: opt.load_state_dict(sd), *names)
        except AssertionError as e:
            raise AssertionError(f"{cls.__name__}: {e}") from None
        assert_unchanged(before, snapshot(opt))
        assert_same_as_twin(opt, twin)


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_counters_near_the_limit_refuse_the_step_that_would_pass_it(cls):
    """Item 8: counts up to 2**53 load; a step that would take the per-param
    step or step_count past 2**53 is refused with nothing written (never a
    wrap to negative and NaN params); the optimizer still loads its own
    checkpoint afterwards."""
    for field in ("state-step", "step_count"):
        for start in (STEP_LIMIT - 2, STEP_LIMIT - 1, STEP_LIMIT):
            opt = build(cls, steps=1, **full_options(cls))
            sd = opt.state_dict()
            if field == "state-step":
                for entry in sd["state"].values():
                    entry["step"] = start
            else:
                sd["step_count"] = start
            try:
                opt.load_state_dict(sd)
            except REFUSALS:
                assert start == STEP_LIMIT, f"{cls.__name__}: {field}={start} (below the limit) refused"
                continue
            refused = 0
            for s in range(3):
                before = snapshot(opt)
                try:
                    opt.step(random_grads(opt, s))
                except ValueError as e:
                    assert "step" in str(e)
                    assert_unchanged(before, snapshot(opt))
                    refused += 1
                    continue
                assert refused == 0, f"{cls.__name__}: a step was taken after one was refused"
                steps = [opt.state[k]["step"] for k in opt.state]
                counters = steps if field == "state-step" else [opt.step_count]
                assert all(0 < c <= STEP_LIMIT for c in counters), (cls.__name__, field, counters)
                assert all(np.isfinite(p).all() for p in params_of(opt)), cls.__name__
            assert refused, f"{cls.__name__}: {field} went past 2**53 from {start}"
            opt.load_state_dict(opt.state_dict())


_WRAP_SCRIPT = r"""
import numpy as np, optimc
FULL = {full!r}
for cls in optimc.ALL:
    for field in ("state-step", "step_count"):
        opt = cls([np.zeros(3)], lr=0.01, **FULL.get(cls.__name__, {{}}))
        opt.step([np.ones(3)])
        sd = opt.state_dict()
        if field == "state-step":
            sd["state"][0]["step"] = 2 ** 63 - 1
        else:
            sd["step_count"] = 2 ** 63 - 1
        try:
            opt.load_state_dict(sd)
            opt.step([np.ones(3)])
        except (TypeError, ValueError):
            continue
        raise AssertionError(f"{{cls.__name__}}: {{field}} = 2**63-1 loaded and stepped past: step "
                             f"{{opt.state[0]['step']}}, step_count {{opt.step_count}}, "
                             f"param {{opt.param_groups[0]['params'][0]}}")
print("done")
"""


def test_int64_max_counters_never_wrap():
    """Item 8, the issue's case: a count of 2**63-1 is refused on load (or the
    step that follows is); it never wraps negative (signed overflow: UB, which
    tools/sanitize.sh reports) into NaN params. In a subprocess so that a
    sanitizer abort fails this test only."""
    proc = run_python(_WRAP_SCRIPT.format(full={c.__name__: full_options(c) for c in ALL}))
    assert_clean_exit(proc)


_HUGE_SCRIPT = """
import numpy as np, optimc
from numpy.lib.stride_tricks import as_strided
# params that claim more elements than memory holds (contiguous strides over one
# element): the state block's size must not wrap around to a small block that the
# initial state then overruns. Each optimizer must refuse with MemoryError.
def huge(shape, dtype):
    item = np.dtype(dtype).itemsize
    strides = tuple(int(np.prod(shape[d + 1:], dtype=object)) * item for d in range(len(shape)))
    return as_strided(np.zeros(1, dtype), shape=shape, strides=strides, writeable=True)
cases = [dict(),                                  # two float32 buffers of 2**63 bytes: 2**64
         dict(stochastic_rounding=True),
         dict(amsgrad=True),                      # three of them
         dict(master_weights=True)]               # and the master copy
# (only sizes past 2**64: a smaller one is a real allocation, which tools/sanitize.sh's
# ASan aborts on instead of returning NULL)
for kw in cases:
    try:
        optimc.Adam([huge((2 ** 61,), np.float16)], **kw)
    except MemoryError:
        continue
    raise AssertionError(f"{{kw}}: accepted")
print("done")
"""


def test_state_sizes_of_huge_params_do_not_wrap():
    """A param of 2**61 float16 elements has 2**63 bytes of float32 state per
    buffer: the block's size saturates and its allocation fails with MemoryError
    (Adam's two buffers wrapped to a block of 0 bytes, which the initial state
    then wrote: a crash). In a subprocess: it crashed."""
    assert_clean_exit(run_python(_HUGE_SCRIPT))


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_every_state_entry_is_required(cls):
    """Item 9: a checkpoint without any one entry of a param's state ("step",
    NAdam's "mu_product", any buffer) is refused naming it; nothing changes."""
    opt, twin, sd = _checkpoint_setup(cls)
    last = _last(sd)
    for key in list(sd["state"][last]):
        bad = copy.deepcopy(sd)
        del bad["state"][last][key]
        before = snapshot(opt)
        try:
            assert_refused(lambda: opt.load_state_dict(bad), key)
        except AssertionError as e:
            raise AssertionError(f"{cls.__name__}, without {key!r}: {e}") from None
        assert_unchanged(before, snapshot(opt))
    assert_same_as_twin(opt, twin)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), None, "0.5", True,
                                   2 ** 1024, np.array([0.5]), [0.5], 0.5j],
                         ids=lambda v: _count_id(v))
def test_scalar_state_checked(value):
    """Item 9/12: NAdam's mu_product must be a finite real number; the refusal
    names it (2**1024 must not escape as OverflowError)."""
    opt, twin, sd = _checkpoint_setup(optimc.NAdam)
    sd["state"][_last(sd)]["mu_product"] = value
    before = snapshot(opt)
    assert_refused(lambda: opt.load_state_dict(sd), "mu_product")
    assert_unchanged(before, snapshot(opt))
    assert_same_as_twin(opt, twin)


def _buffer_mutations(arr):
    """Replacements for a state buffer of a (3, 4) float64 param that must be refused."""
    yield "float32", arr.astype(np.float32)
    yield "int64", arr.astype(np.int64)
    yield "object", arr.astype(object)
    if arr.ndim > 1:   # a per-row buffer (3,) is already flat
        yield "flattened", arr.ravel()
    yield "extra axis", arr[None]
    if arr.ndim > 1:
        yield "transposed shape", np.ascontiguousarray(arr.T)
    yield "one element more", np.append(arr.ravel(), 0.0)
    yield "0-d", np.array(0.0)
    yield "empty", np.zeros((0,))
    yield "list", arr.tolist()
    yield "None", None
    yield "float", 0.0
    yield "str", "zeros"


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_state_buffers_checked(cls):
    """Items 7, 12: a buffer of the wrong dtype, shape or type is refused
    naming it; extra entries (also a key None) are refused naming the key."""
    opt, twin, sd = _checkpoint_setup(cls)
    first = list(sd["state"])[0]          # param 0 has shape (3, 4)
    cases = []
    for k in buffer_names(opt, 0):
        for what, value in _buffer_mutations(sd["state"][first][k]):
            bad = copy.deepcopy(sd)
            bad["state"][first][k] = value
            cases.append((f"{k} as {what}", bad, ("state", k)))
    for key in (None, "extra", 0, "mu_product" if cls is not optimc.NAdam else "momentum"):
        bad = copy.deepcopy(sd)
        bad["state"][_last(sd)][key] = np.zeros(5)
        cases.append((f"extra entry {key!r}", bad, ("state", str(key))))
    bad = copy.deepcopy(sd)
    del bad["state"][_last(sd)]
    cases.append(("a param without state", bad, ("state",)))
    bad = copy.deepcopy(sd)
    bad["state"][len(bad["state"])] = copy.deepcopy(bad["state"][first])
    cases.append(("state for a param that does not exist", bad, ("state",)))
    bad = copy.deepcopy(sd)
    bad["state"][None] = bad["state"].pop(_last(sd))
    cases.append(("a state key None", bad, ("state",)))
    for name, bad, fields in cases:
        before = snapshot(opt)
        try:
            assert_refused(lambda: opt.load_state_dict(bad), *fields)
        except AssertionError as e:
            raise AssertionError(f"{cls.__name__}, {name}: {e}") from None
        assert_unchanged(before, snapshot(opt))
    assert_same_as_twin(opt, twin)


GROUP_VALUES = [None, "x", float("nan"), float("inf"), -1.0, 2 ** 1024, np.array([1.0, 2.0]),
                np.array([True, False]), [0.1], {"v": 1}]


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_group_hyperparameters_checked(cls):
    """Items 7, 12: every hyperparameter of a saved group is checked like one
    given to the constructor (no 'truth value of an array is ambiguous', no
    OverflowError), and a missing one is refused naming it."""
    opt, twin, sd = _checkpoint_setup(cls)
    for name in hyper_names(cls):
        cases = []
        for value in GROUP_VALUES:
            try:
                cls([np.zeros(2)], **{name: value})
                continue            # a value the constructor takes is not a test of the load
            except (TypeError, ValueError, OverflowError):
                pass                # OverflowError: the constructor test below fails on it
            bad = copy.deepcopy(sd)
            bad["param_groups"][0][name] = value
            cases.append((repr(value), bad))
        missing = copy.deepcopy(sd)
        del missing["param_groups"][0][name]
        cases.append(("<missing>", missing))
        for what, bad in cases:
            before = snapshot(opt)
            try:
                assert_refused(lambda: opt.load_state_dict(bad), name)
            except AssertionError as e:
                raise AssertionError(f"{cls.__name__}, {name}={what}: {e}") from None
            assert_unchanged(before, snapshot(opt))
    assert_same_as_twin(opt, twin)


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_constructor_and_setters_name_the_field_for_huge_ints(cls):
    """Item 12: an int too big for a double is a ValueError naming the field,
    not 'OverflowError: int too big to convert'."""
    for name in hyper_names(cls):
        assert_refused(lambda: cls([np.zeros(2)], **{name: 2 ** 1024}), name)
    opt = build(cls, **full_options(cls))
    before = snapshot(opt)
    assert_refused(lambda: setattr(opt, "lr", 2 ** 1024), "lr")
    assert_refused(lambda: opt.param_groups[0].__setitem__("lr", 2 ** 1024), "lr")
    assert_unchanged(before, snapshot(opt))


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_group_structure_checked(cls):
    """Item 12: group `params` None / wrong indices / a group that is not a
    dict / wrong names are refused naming what is wrong; nothing changes."""
    opt, twin, sd = _checkpoint_setup(cls)
    n = len(params_of(opt))
    cases = []
    for what, value in [("None", None), ("reversed", list(range(n))[::-1]), ("repeated", [0] * n),
                        ("too few", list(range(n - 1))), ("too many", list(range(n + 1))),
                        ("a str", "0"), ("an int", 0)]:
        bad = copy.deepcopy(sd)
        bad["param_groups"][0]["params"] = value
        cases.append((f"params {what}", bad, "params"))
    bad = copy.deepcopy(sd)
    del bad["param_groups"][0]["params"]
    cases.append(("params missing", bad, "params"))
    bad = copy.deepcopy(sd)
    bad["param_groups"][0] = list(bad["param_groups"][0].items())
    cases.append(("group not a dict", bad, "group"))
    for what, value in [("None", None), ("extra group", sd["param_groups"] * 2), ("empty", []),
                        ("a dict", {0: sd["param_groups"][0]})]:
        bad = copy.deepcopy(sd)
        bad["param_groups"] = value
        cases.append((f"param_groups {what}", bad, "group"))
    for name, bad, field in cases:
        before = snapshot(opt)
        try:
            assert_refused(lambda: opt.load_state_dict(bad), field)
        except AssertionError as e:
            raise AssertionError(f"{cls.__name__}, {name}: {e}") from None
        assert_unchanged(before, snapshot(opt))
    assert_same_as_twin(opt, twin)


def test_named_group_names_checked():
    opt, twin, sd = _checkpoint_setup(optimc.Adam, named=True)
    for names in (["p0", "p1", "zz"], ["p1", "p0", "p2"], None, "p0"):
        bad = copy.deepcopy(sd)
        bad["param_groups"][0]["param_names"] = names
        before = snapshot(opt)
        assert_refused(lambda: opt.load_state_dict(bad), "names")
        assert_unchanged(before, snapshot(opt))
    assert_same_as_twin(opt, twin)


@pytest.mark.parametrize("key", ["format", "version", "optimizer", "state", "param_groups",
                                 "step_count", "skipped_steps"])
def test_top_level_entries_required(key):
    """Item 9 for the top level: a checkpoint without any of its entries is
    refused naming it (a missing step_count must not quietly become 0: a
    callable lr sees the count, so the resumed run would differ)."""
    for cls in ALL:
        opt, twin, sd = _checkpoint_setup(cls)
        del sd[key]
        before = snapshot(opt)
        try:
            assert_refused(lambda: opt.load_state_dict(sd), key)
        except AssertionError as e:
            raise AssertionError(f"{cls.__name__}: {e}") from None
        assert_unchanged(before, snapshot(opt))


def _equivalent_variants(sd):
    """(name, sd') holding the same values as sd in other accepted forms."""
    first, last = list(sd["state"])[0], _last(sd)
    out = copy.deepcopy(sd)
    out["step_count"] = np.int64(sd["step_count"])
    out["skipped_steps"] = np.int32(sd["skipped_steps"])
    out["state"][last]["step"] = np.int64(sd["state"][last]["step"])
    yield "NumPy integer counters", out
    for what, change in [("Fortran-ordered", np.asfortranarray),
                         ("read-only", lambda a: np.lib.stride_tricks.as_strided(a, writeable=False)),
                         ("strided", lambda a: np.repeat(a, 2, axis=-1)[..., ::2])]:
        out = copy.deepcopy(sd)
        for k, v in out["state"][first].items():
            if isinstance(v, np.ndarray):
                out["state"][first][k] = change(v)
        yield f"{what} buffers", out
    out = copy.deepcopy(sd)
    out["param_groups"][0]["lr"] = np.float64(sd["param_groups"][0]["lr"])
    yield "a NumPy float lr", out


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_equivalent_checkpoints_load_the_same(cls):
    """What is accepted must load as the plain checkpoint does: NumPy integer
    counters, Fortran-ordered / read-only / strided buffers, NumPy float lr; extra
    group keys (a scheduler's "initial_lr") are kept."""
    _, _, sd = _checkpoint_setup(cls)
    for name, variant in _equivalent_variants(sd):
        opt, twin, _ = _checkpoint_setup(cls)
        opt.load_state_dict(variant)
        twin.load_state_dict(sd)
        try:
            assert_same_as_twin(opt, twin, steps=2)
        except AssertionError as e:
            raise AssertionError(f"{cls.__name__}, {name}: {e}") from None
    opt, _, _ = _checkpoint_setup(cls)
    extra = copy.deepcopy(sd)
    extra["param_groups"][0]["initial_lr"] = 0.5
    opt.load_state_dict(extra)
    assert opt.param_groups[0]["initial_lr"] == 0.5


def _arrangements(opt):
    """(name, {(param, buffer): (source param, source buffer)}) for a load whose
    buffers are the optimizer's own live views."""
    ks = buffer_names(opt, 0)
    n = len(opt.state)
    everything = [(i, k) for i in range(n) for k in ks]
    yield "identity", {(i, k): (i, k) for i, k in everything}
    yield "params 0 and 1 swapped", {(i, k): ({0: 1, 1: 0}.get(i, i), k) for i, k in everything}
    yield "rotated", {(i, k): ((i + 1) % n, k) for i, k in everything}
    yield "one source for two params", {(i, k): (1 if i in (0, 2) else i, k) for i, k in everything}
    if len(ks) >= 2:
        swap = {ks[0]: ks[1], ks[1]: ks[0]}
        yield "two buffers of each param swapped", {(i, k): (i, swap.get(k, k)) for i, k in everything}


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_checkpoint_made_of_live_views_loads_as_copies(cls):
    """Item 10: load_state_dict with buffers that are the optimizer's own state
    views (swapped, rotated, shared) gives the state those views held before
    the load, as if they had been copied."""
    kw = dict(shapes=[(6,), (6,), (6,)], steps=3, **full_options(cls))
    for name, plan in _arrangements(build(cls, **kw)):
        opt, twin = build_pair(cls, **kw)
        live, copied = opt.state_dict(), opt.state_dict()
        for (i, k), (j, src) in plan.items():
            live["state"][i][k] = opt.state[j][src]
            copied["state"][i][k] = opt.state[j][src].copy()
        opt.load_state_dict(live)
        twin.load_state_dict(copied)
        try:
            assert_same_as_twin(opt, twin)
        except AssertionError as e:
            raise AssertionError(f"{cls.__name__}, {name}: {e}") from None


def _digests(entries):
    """Per param: its step and a hash of each state buffer (small to keep for 400 steps)."""
    out = []
    for entry in entries:
        h = hashlib.sha256()
        for k in sorted(entry, key=str):
            v = entry[k]
            h.update(str(k).encode())
            h.update(np.ascontiguousarray(v).tobytes() if isinstance(v, np.ndarray) else repr(v).encode())
        out.append(h.hexdigest())
    return tuple(out)


def test_state_dict_is_one_snapshot_while_another_thread_steps():
    """Item 11: state_dict() taken while another thread steps holds one step's
    state: every per-param step equal to step_count and every buffer exactly
    as a single-threaded reference run had it after that many steps."""
    shapes = [(20_000,)] * 6
    grads = [[np.random.default_rng(s * 10 + i).standard_normal(sh) for i, sh in enumerate(shapes)]
             for s in range(4)]
    params = [np.zeros(sh) for sh in shapes]
    opt = optimc.Adam(params, lr=0.01, amsgrad=True)
    # The stepper starts after the first snapshot and gives up the GIL after each step,
    # so that snapshots are taken between and during its steps however fast either thread
    # runs (without that, the stepper could run all its steps before a second snapshot).
    go, stop = threading.Event(), threading.Event()
    max_steps = 400

    def stepper():
        go.wait()
        for s in range(max_steps):
            if stop.is_set():
                break
            opt.step(grads[s % 4])
            time.sleep(0)

    snaps = []
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)           # let the threads interleave often
    try:
        t = threading.Thread(target=stepper)
        t.start()
        snaps.append(opt.state_dict())
        go.set()
        while t.is_alive() and len(snaps) < 150:
            snaps.append(opt.state_dict())
        stop.set()
        t.join()
    finally:
        sys.setswitchinterval(old_interval)

    # the single-threaded reference, hashed at the step counts the snapshots claim
    wanted = {sd["step_count"] for sd in snaps}
    reference = optimc.Adam([np.zeros(sh) for sh in shapes], lr=0.01, amsgrad=True)
    seen = {}
    for s in range(max(wanted) + 1):
        if s in wanted:
            seen[s] = _digests(reference.state_dict()["state"].values())
        reference.step(grads[s % 4])
    torn = []
    for n, sd in enumerate(snaps):
        steps = {e["step"] for e in sd["state"].values()}
        if steps != {sd["step_count"]} or _digests(sd["state"].values()) != seen.get(sd["step_count"]):
            torn.append((n, sd["step_count"], sorted(steps)))
    assert any(0 < sd["step_count"] < opt.step_count for sd in snaps), "the snapshots never overlapped a step"
    assert not torn, f"{len(torn)} of {len(snaps)} snapshots mix steps, e.g. {torn[:3]}"


# The four unclear refusals the issue lists, and the field each must name.
UNCLEAR = {
    "step 2**64": (lambda sd: sd["state"][0].__setitem__("step", 2 ** 64), "step"),
    "step_count 2**64": (lambda sd: sd.__setitem__("step_count", 2 ** 64), "step_count"),
    "group params None": (lambda sd: sd["param_groups"][0].__setitem__("params", None), "params"),
    "a state key None": (lambda sd: sd["state"][0].__setitem__(None, np.zeros(2)), "None"),
    "an array as amsgrad": (lambda sd: sd["param_groups"][0].__setitem__("amsgrad", np.array([True, False])),
                            "amsgrad"),
}


@pytest.mark.parametrize("case", list(UNCLEAR))
def test_unclear_refusals_name_the_field(case):
    """Item 12, the listed examples: a TypeError/ValueError naming the field."""
    mutate, field = UNCLEAR[case]
    opt = optimc.Adam([np.zeros(2), np.zeros(3)])
    opt.step([np.ones(2), np.ones(3)])
    sd = opt.state_dict()
    mutate(sd)
    before = snapshot(opt)
    assert_refused(lambda: opt.load_state_dict(sd), field)
    assert_unchanged(before, snapshot(opt))


# ---- item 14: settings are live or refused --------------------------------------

OTHER_SETTINGS = sorted({n for c in ALL for n in hyper_names(c)} | {"learning_rate", "beta1", "beta2"})


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_unknown_settings_are_refused(cls):
    """Item 14: assigning a hyperparameter the class does not have
    (opt.learning_rate, opt.momentum on Adam...) raises, names it, stores
    nothing and changes nothing."""
    mine = set(hyper_names(cls))
    opt, twin = build_pair(cls, **full_options(cls))
    for name in OTHER_SETTINGS:
        if name in mine:
            continue
        before = snapshot(opt)
        msg = assert_refused(lambda: setattr(opt, name, 0.5), name, types=(AttributeError, TypeError))
        if name == "learning_rate":
            assert "lr" in msg, f"no hint to use lr: {msg}"
        assert not hasattr(opt, name)
        assert_unchanged(before, snapshot(opt))
    assert_same_as_twin(opt, twin)


@pytest.mark.parametrize("name", ["param_groups", "state", "step_count", "skipped_steps",
                                  "last_lr", "last_grad_norm", "state_bytes"])
def test_structure_and_counters_cannot_be_replaced(name):
    """Item 14: replacing what the engine keeps in step with its own data (the
    groups, the state mapping, the counters) is refused, not ignored."""
    opt, twin = build_pair(optimc.Adam)
    value = {"param_groups": [{"params": [np.zeros(2)], "lr": 1.0}], "state": {}}.get(name, 5)
    before = snapshot(opt)
    assert_refused(lambda: setattr(opt, name, value), name, types=(AttributeError, TypeError))
    assert_unchanged(before, snapshot(opt))
    assert_same_as_twin(opt, twin)


def _with_nan(grads):
    first = next(iter(grads))
    g = grads[first] if isinstance(grads, dict) else grads[0]
    g.flat[0] = np.nan
    return grads


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_skip_nonfinite_set_later_takes_effect(cls):
    """Item 14: opt.skip_nonfinite = True makes the next step skip a NaN grad
    exactly as the constructor option does; = False lets it through again."""
    kw = full_options(cls)
    opt = build(cls, **kw)
    twin = build(cls, skip_nonfinite=True, **kw)
    opt.skip_nonfinite = True
    assert opt.skip_nonfinite is True
    before = snapshot(opt)
    opt.step(_with_nan(random_grads(opt, 5)))
    assert opt.skipped_steps == 1, "the NaN step was not skipped"
    assert_unchanged(before, snapshot(opt), ignore=("skipped_steps", "last_grad_norm"))
    twin.step(_with_nan(random_grads(twin, 5)))
    assert_same_as_twin(opt, twin)
    opt.skip_nonfinite = False
    opt.step(_with_nan(random_grads(opt, 6)))
    assert opt.skipped_steps == 1
    # the NaN went in: into the params, or (Rprop, which reads sign(NaN) as 0 as torch
    # does) into the state
    after = [params_of(opt)[0]] + [v for v in opt.state[0].values() if isinstance(v, np.ndarray)]
    assert not all(np.isfinite(a).all() for a in after)


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_max_grad_norm_set_later_takes_effect(cls):
    """Item 14: opt.max_grad_norm = x clips the next step exactly as the
    constructor option does; = None stops clipping."""
    kw = full_options(cls)
    opt, plain = build_pair(cls, steps=0, **kw)
    clipped = build(cls, max_grad_norm=0.5, steps=0, **kw)   # the same (empty) history
    opt.max_grad_norm = 0.5
    assert opt.max_grad_norm == 0.5
    for o in (opt, plain, clipped):
        o.step(random_grads(o, 9, scale=10.0))
    assert_same_as_twin(opt, clipped)
    assert snapshot(plain)["state"] != snapshot(clipped)["state"], "clipping changed nothing: test too weak"
    unclipped, plain = build_pair(cls, **kw)
    unclipped.max_grad_norm = 0.5
    unclipped.max_grad_norm = None
    assert_same_as_twin(unclipped, plain)


@pytest.mark.parametrize("name,value", [
    ("max_grad_norm", -1.0), ("max_grad_norm", 0.0), ("max_grad_norm", float("nan")),
    ("max_grad_norm", "1"), ("max_grad_norm", True), ("max_grad_norm", 2 ** 1024),
    ("skip_nonfinite", "yes"), ("skip_nonfinite", 1), ("skip_nonfinite", None),
])
def test_bad_guard_settings_refused(name, value):
    opt, twin = build_pair(optimc.Adam)
    before = snapshot(opt)
    assert_refused(lambda: setattr(opt, name, value), name)
    assert_unchanged(before, snapshot(opt))
    assert_same_as_twin(opt, twin)


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_pickle_and_checkpoint_after_any_accepted_setting(cls):
    """Item 8's "the optimizer then refuses its own checkpoint", generalised:
    after any setting the optimizer accepted (opt.momentum = 0 included), pickle,
    deepcopy and its own checkpoint in a like-built optimizer resume exactly."""
    for name in hyper_names(cls):
        current = build(cls, **full_options(cls)).param_groups[0][name]
        values = [_other_value(name, current)]
        if isinstance(current, float) and current:
            values.append(0.0)
        for value in values:
            opt = build(cls, **full_options(cls))
            try:
                setattr(opt, name, value)
            except REFUSALS:
                continue
            for how, copy_of in [("pickle", lambda o: pickle.loads(pickle.dumps(o))), ("deepcopy", copy.deepcopy)]:
                try:
                    clone = copy_of(opt)
                except REFUSALS as e:
                    raise AssertionError(f"{cls.__name__}: {how} fails after {name} = {value!r}: {e}") from None
                assert_same_as_twin(clone, opt, ignore=("last_grad_norm",))


# ---- item 15: ParamGroup cannot be bypassed ---------------------------------

def assert_dict_and_c_agree(opt, seed=77):
    """The groups as the dicts show them drive the step: a fresh optimizer built
    from the dicts, loaded with opt's checkpoint, steps exactly as opt does."""
    cls = type(opt)
    names = hyper_names(cls)
    for i, g in enumerate(opt.param_groups):
        lost = [n for n in ("params",) + names if n not in g]
        assert not lost, f"param_groups[{i}] lost {lost}"
    assert len(opt.state) == len(params_of(opt)), "the groups' params and the optimizer's state disagree"
    groups = []
    for g in opt.param_groups:
        copies = [p.copy() for p in g["params"]]
        plain = {n: g[n] for n in names}
        plain["params"] = dict(zip(g["param_names"], copies)) if "param_names" in g else copies
        groups.append(plain)
    try:
        fresh = cls(groups, max_grad_norm=opt.max_grad_norm, skip_nonfinite=opt.skip_nonfinite)
    except REFUSALS as e:
        raise AssertionError(f"the groups hold what the constructor refuses: {e}") from None
    try:
        fresh.load_state_dict(opt.state_dict())
    except REFUSALS as e:
        raise AssertionError(f"the optimizer's own checkpoint does not fit its groups: {e}") from None
    # defaults are what the constructor got, and the norm is measured by a step
    assert_same_as_twin(opt, fresh, seed=seed, ignore=("defaults", "last_grad_norm"))


def _set_defaults_then_add(opt, g):
    opt.defaults["lr"] = -1.0
    opt.add_param_group({"params": [np.zeros(3)]})


def _replace_defaults_then_add(opt, g):
    opt.defaults = {"lr": -1.0}
    opt.add_param_group({"params": [np.zeros(3)]})


def _ior(g, d):
    g |= d


GROUP_BYPASSES = {
    "pop lr": lambda opt, g: g.pop("lr"),
    "pop lr with a default": lambda opt, g: g.pop("lr", None),
    "pop params": lambda opt, g: g.pop("params"),
    "popitem": lambda opt, g: g.popitem(),
    "clear": lambda opt, g: g.clear(),
    "del lr": lambda opt, g: g.__delitem__("lr"),
    "|= a negative lr": lambda opt, g: _ior(g, {"lr": -1.0}),
    "|= a str lr": lambda opt, g: _ior(g, {"lr": "fast"}),
    "|= params": lambda opt, g: _ior(g, {"params": []}),
    "update with a bad lr": lambda opt, g: g.update(lr=-1.0),
    "update with one bad value of two": lambda opt, g: g.update({"lr": 0.5, "weight_decay": -1.0}),
    "update params": lambda opt, g: g.update(params=[np.zeros(3)]),
    "setdefault of a set key": lambda opt, g: g.setdefault("lr", -1.0),
    "params list append": lambda opt, g: g["params"].append(np.zeros(3)),
    "params list clear": lambda opt, g: g["params"].clear(),
    "params list item replaced": lambda opt, g: g["params"].__setitem__(0, np.zeros_like(g["params"][0])),
    "params list reversed": lambda opt, g: g["params"].reverse(),
    "defaults changed, then a group added": _set_defaults_then_add,
    "defaults replaced, then a group added": _replace_defaults_then_add,
}


@pytest.mark.parametrize("op", list(GROUP_BYPASSES))
def test_param_group_checks_cannot_be_bypassed(op):
    """Item 15: dict methods (pop, popitem, clear, |=, update, the params list)
    are refused with nothing changed, or take effect checked — the dict and the
    C engine always agree (proved by the next step)."""
    opt = optimc.SGD([np.linspace(-1, 1, 4), np.linspace(0, 1, 3)], lr=0.1, momentum=0.9)
    opt.step([np.ones(4), np.ones(3)])
    g = opt.param_groups[0]
    before = snapshot(opt)
    try:
        GROUP_BYPASSES[op](opt, g)
    except (KeyError, TypeError, ValueError, AttributeError):
        assert_unchanged(before, snapshot(opt))
    assert_dict_and_c_agree(opt)


def _other_value(name, value):
    """A different value for a hyperparameter (valid or not: the check decides)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, tuple):   # betas, etas, step_sizes: move the first of the pair
        return (value[0] * 0.5 if value[0] is not None else 1e-6, value[1])   # Adafactor's eps: (None, ε₂)
    if callable(value):
        return 0.5
    return value * 0.5 if value else 0.05


@pytest.mark.parametrize("how", ["|=", "update", "update pairs", "setitem"])
@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_group_changes_take_effect_or_are_refused(cls, how):
    """Item 15: any change of any hyperparameter through any dict route is
    either refused with nothing changed or used by the next step."""
    for name in hyper_names(cls):
        opt = build(cls, **full_options(cls))
        g = opt.param_groups[0]
        new = {name: _other_value(name, g[name])}
        before = snapshot(opt)
        try:
            if how == "|=":
                _ior(g, new)
            elif how == "update":
                g.update(new)
            elif how == "update pairs":
                g.update(list(new.items()))
            else:
                g[name] = new[name]
        except REFUSALS:
            assert_unchanged(before, snapshot(opt))
        else:
            assert g[name] == new[name]
        try:
            assert_dict_and_c_agree(opt)
        except AssertionError as e:
            raise AssertionError(f"{cls.__name__}, {name} via {how}: {e}") from None
