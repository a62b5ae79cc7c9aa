"""Row-sparse grads (optimc.SparseGrad): against torch.optim with sparse COO
grads and against an independent NumPy reference (np.add.at coalescing, then
the reference rule at the touched rows); rows never given stay bit-unchanged;
bad input changes nothing; threads, checkpoints, the guard and the toolkit."""
import copy
import os
import pickle
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reference as R  # noqa: E402

import optimc  # noqa: E402
from optimc import SparseGrad  # noqa: E402

STEPS = 100
ROWS, SEEN = 20, 15          # indices are drawn from rows [0, SEEN): the rest are never given
DTYPES = [np.float64, np.float32]

# (class, hyperparameters) compared with torch's sparse-grad path
TORCH_CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, maximize=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1, eps=1e-10)),
    ("Adagrad", dict(lr=0.1, maximize=True, eps=1e-8)),
    ("SparseAdam", dict(lr=0.01)),
    ("SparseAdam", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, maximize=True)),
]


def _id(case):
    name, h = case
    return name + "".join(f"-{k}={v}" for k, v in h.items() if k != "lr")


def batches(shape, dtype, steps=STEPS, seed=0):
    """Random index sets with repeats (some empty) and their values."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(steps):
        nnz = 0 if t % 10 == 3 else int(rng.integers(1, 12))
        idx = rng.integers(0, SEEN, size=nnz).astype(np.int64 if t % 2 else np.int32)
        values = rng.standard_normal((nnz,) + shape[1:]).astype(dtype)
        out.append((idx, values))
    return out


def close(actual, desired, dtype, what):
    rtol, atol = (1e-12, 1e-14) if dtype == np.float64 else (2e-5, 1e-6)
    atol *= max(1.0, float(np.max(np.abs(desired), initial=0.0)))
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, err_msg=what)


def coalesce(idx, values, n_rows):
    """Independent of optimc: distinct rows and their sums (np.add.at adds in position order)."""
    rows, inverse = np.unique(idx.astype(np.int64), return_inverse=True)
    sums = np.zeros((len(rows),) + values.shape[1:], values.dtype)
    np.add.at(sums, inverse.reshape(-1), values)
    return rows, sums


def reference_sparse_step(name, p, state, idx, values, h):
    """The reference rule (tests/reference.py) applied to the coalesced rows only."""
    rows, sums = coalesce(idx, values, p.shape[0])
    state["step"] += 1
    sub_state = {"step": state["step"]}
    for k, v in state.items():
        if isinstance(v, np.ndarray):
            sub_state[k] = v[rows].copy()
    sub_p = p[rows].copy()
    if len(rows):
        R.RULES[name](sub_p, sums, sub_state, {**R.DEFAULTS[name], **h})
    p[rows] = sub_p
    for k, v in sub_state.items():
        if isinstance(v, np.ndarray):
            if k not in state:   # created on the first call: the rows outside start at the initial value
                state[k] = initial_state(k, p, v, h)
            state[k][rows] = v


def initial_state(buffer, p, sub, h):
    """A whole buffer shaped like the row-gathered one `sub` (per element or per row)."""
    fill = h.get("initial_accumulator_value", 0.0) if buffer == "sum" else 0.0
    return np.full((p.shape[0],) + sub.shape[1:], fill, p.dtype)


# ---------------------------------------------------------------------------
# torch, sparse COO grads
# ---------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Sparse invariant checks")   # torch's own sparse tensors
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", TORCH_CASES, ids=_id)
def test_matches_torch_sparse_coo(case, dtype):
    torch = pytest.importorskip("torch")
    name, h = case
    shape = (ROWS, 3)
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(shape).astype(dtype)
    W = p0.copy()
    opt = getattr(optimc, name)([W], **h)
    tw = torch.from_numpy(p0.copy())
    kw = {k: v for k, v in h.items()}
    if name != "SparseAdam":
        kw["foreach"] = False
    topt = getattr(torch.optim, name)([tw], **kw)
    for idx, values in batches(shape, dtype):
        opt.step([SparseGrad(idx, values)])
        tw.grad = torch.sparse_coo_tensor(torch.from_numpy(idx.astype(np.int64))[None],
                                          torch.from_numpy(values.copy()), shape, check_invariants=True)
        topt.step()
    close(W, tw.detach().numpy(), dtype, f"{name} params")
    tstate = topt.state[tw]
    for k, v in opt.state[0].items():
        if isinstance(v, np.ndarray):
            close(v, tstate[k].numpy(), dtype, f"{name} {k}")
    if "step" in tstate:
        assert opt.state[0]["step"] == int(tstate["step"]) == STEPS
    # rows never given: params and state exactly as they started
    assert np.array_equal(W[SEEN:], p0[SEEN:])
    init = h.get("initial_accumulator_value", 0.0)
    for k, v in opt.state[0].items():
        if isinstance(v, np.ndarray):
            assert np.array_equal(v[SEEN:], np.full_like(v[SEEN:], init if k == "sum" else 0.0))


# ---------------------------------------------------------------------------
# the NumPy reference: sparse and dense grads mixed, a 3-d table, two groups
# ---------------------------------------------------------------------------
REF_CASES = [
    ("SGD", dict(lr=0.1, weight_decay=0.05)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.2, maximize=True)),
    ("SparseAdam", dict(lr=0.01, weight_decay=0.05)),
    ("RowWiseAdagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.2, weight_decay=0.05)),
    ("RowWiseAdagrad", dict(lr=0.1, weight_decay=0.05, decoupled_weight_decay=True, maximize=True)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", REF_CASES, ids=_id)
def test_matches_numpy_reference_mixed_with_dense(case, dtype):
    name, h = case
    if name == "SGD":
        h = {"lr": h["lr"]}   # SGD's sparse path: no weight decay in this case's mix
    rng = np.random.default_rng(7)
    table0 = rng.standard_normal((ROWS, 2, 3)).astype(dtype)
    dense0 = rng.standard_normal(5).astype(dtype)
    table, dense = table0.copy(), dense0.copy()
    opt = getattr(optimc, name)([{"params": [table]}, {"params": [dense], "lr": h["lr"] * 0.5}], **h)
    ref_table, ref_dense = table0.copy(), dense0.copy()
    st_t, st_d = {"step": 0}, {"step": 0}
    hd = {**R.DEFAULTS[name], **h, "lr": h["lr"] * 0.5}
    for idx, values in batches(table.shape, dtype, seed=3):
        gd = rng.standard_normal(5).astype(dtype)
        opt.step([SparseGrad(idx, values), gd])
        reference_sparse_step(name, ref_table, st_t, idx, values, h)
        st_d["step"] += 1
        R.RULES[name](ref_dense, gd, st_d, hd)
    close(table, ref_table, dtype, f"{name} table")
    close(dense, ref_dense, dtype, f"{name} dense param")
    assert np.array_equal(table[SEEN:], table0[SEEN:])
    for k, v in opt.state[0].items():
        if isinstance(v, np.ndarray):
            close(v, st_t[k], dtype, f"{name} {k}")
    assert opt.state[0]["step"] == opt.state[1]["step"] == STEPS


def test_repeats_are_summed_in_the_order_given():
    """float32 sums whose order matters: optimc adds in position order."""
    W = np.zeros((3, 1), np.float32)
    opt = optimc.SGD([W], lr=1.0)
    v = np.array([[1e8], [1.0], [-1e8], [1.0]], np.float32)
    opt.step([SparseGrad(np.array([2, 2, 2, 2]), v)])
    expected = -(((np.float32(1e8) + np.float32(1.0)) + np.float32(-1e8)) + np.float32(1.0))
    assert W[2, 0] == expected and W[0, 0] == 0 and W[1, 0] == 0
    rows, sums = optimc.sparse.coalesce(SparseGrad(np.array([2, 0, 2]), np.array([[1.0], [2.0], [3.0]])))
    assert rows.tolist() == [0, 2] and sums.ravel().tolist() == [2.0, 4.0]


@pytest.mark.parametrize("name", ["SparseAdam", "RowWiseAdagrad"])
def test_a_dense_grad_is_every_row_given(name):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 4))
    b = a.copy()
    cls = getattr(optimc, name)
    opt_dense, opt_sparse = cls([a], lr=0.1), cls([b], lr=0.1)
    for _ in range(5):
        g = rng.standard_normal((6, 4))
        opt_dense.step([g])
        opt_sparse.step([SparseGrad(np.arange(6), g)])
    assert np.array_equal(a, b)


def test_row_wise_state_is_one_value_per_row():
    table = np.zeros((1000, 64), np.float32)
    opt = optimc.RowWiseAdagrad([table])
    assert opt.state[0]["sum"].shape == (1000,) and opt.state_bytes == 1000 * 4
    assert optimc.Adagrad([np.zeros((1000, 64), np.float32)]).state_bytes == 1000 * 64 * 4


# ---------------------------------------------------------------------------
# threads, checkpoints
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["Adagrad", "SparseAdam", "RowWiseAdagrad"])
def test_same_bits_for_any_thread_count(name):
    from optimc import _core
    rng = np.random.default_rng(1)
    shape = (3000, 16)
    t0 = rng.standard_normal(shape).astype(np.float32)
    steps = [(rng.integers(0, 3000, 2000), rng.standard_normal((2000, 16)).astype(np.float32)) for _ in range(3)]
    results = []
    old_threads, old_threshold = optimc.get_num_threads(), _core.config()["thread_threshold"]
    try:
        _core.set_thread_threshold(0)
        for threads in (1, 2, 3):
            optimc.set_num_threads(threads)
            W = t0.copy()
            opt = getattr(optimc, name)([W], lr=0.01)
            for idx, values in steps:
                opt.step([SparseGrad(idx, values)])
            results.append(W)
    finally:
        optimc.set_num_threads(old_threads)
        _core.set_thread_threshold(old_threshold)
    assert all(np.array_equal(results[0], r) for r in results[1:])


@pytest.mark.parametrize("name", ["Adagrad", "SparseAdam", "RowWiseAdagrad"])
def test_resume_from_state_dict_and_pickle_is_bit_identical(name):
    shape = (ROWS, 3)
    data = batches(shape, np.float64, steps=20, seed=11)
    W = np.random.default_rng(2).standard_normal(shape)
    straight = getattr(optimc, name)([W.copy()], lr=0.05)
    for idx, v in data:
        straight.step([SparseGrad(idx, v)])
    first = getattr(optimc, name)([W.copy()], lr=0.05)
    for idx, v in data[:10]:
        first.step([SparseGrad(idx, v)])
    resumed = getattr(optimc, name)([first.param_groups[0]["params"][0].copy()], lr=0.05)
    resumed.load_state_dict(first.state_dict())
    unpickled = pickle.loads(pickle.dumps(first))
    for idx, v in data[10:]:
        resumed.step([SparseGrad(idx, v)])
        unpickled.step([SparseGrad(idx, v)])
    final = straight.param_groups[0]["params"][0]
    for opt in (resumed, unpickled):
        assert np.array_equal(opt.param_groups[0]["params"][0], final)
        for k, v in straight.state[0].items():
            assert np.array_equal(opt.state[0][k], v)


COMPRESSED_BESIDE_SPARSE = """
import numpy as np, optimc
from optimc import SparseGrad, _core
rng = np.random.default_rng(5)
big0 = rng.standard_normal((40, 333)).astype(np.float32)      # 13320 elements: 8-bit state
small0 = rng.standard_normal((20, 4)).astype(np.float32)      # 80 elements: below min_8bit_size
steps = [(rng.standard_normal(big0.shape).astype(np.float32), rng.integers(0, 20, 7),
          rng.standard_normal((7, 4)).astype(np.float32)) for _ in range(3)]
_core.set_thread_threshold(0)
# the sparse takers whose state may be compressed (SparseAdam's is exact); bfloat16
# state has no minimum size, so only 8-bit state leaves a native param beside it
for name in ("Adagrad",):
    cls = getattr(optimc, name)
    for state_dtype in ("8bit",):
        kw = dict(lr=0.01, state_dtype=state_dtype, min_8bit_size=1000)
        big_alone, small_alone = big0.copy(), small0.copy()
        a, b = cls([big_alone], **kw), cls([small_alone], lr=0.01)
        for g, idx, v in steps:
            a.step([g])
            b.step([SparseGrad(idx, v)])
        for threads in (1, 2, 3):
            optimc.set_num_threads(threads)
            big, small = big0.copy(), small0.copy()
            opt = cls([big, small], **kw)
            for g, idx, v in steps:
                opt.step([g, SparseGrad(idx, v)])
            assert np.array_equal(big, big_alone), (name, state_dtype, threads)
            assert np.array_equal(small, small_alone), (name, state_dtype, threads)
            for k, v in a.state[0].items():
                assert np.array_equal(opt.state[0][k], v), (name, state_dtype, threads, k)
print("done")
"""


def test_dense_grad_with_compressed_state_beside_a_sparse_grad():
    """A step with a SparseGrad runs the row step; a dense grad in it whose
    param keeps compressed state (state_dtype with min_8bit_size: small params
    stay native and may take SparseGrads) goes through the block coder, split on
    block edges, exactly as in a step without SparseGrads (it read the 8-bit
    codes as floats: NaN params, then a crash). In a subprocess: it crashed."""
    from _snapshot import assert_clean_exit, run_python
    assert_clean_exit(run_python(COMPRESSED_BESIDE_SPARSE))


def test_sparse_grad_pickles_and_shows_itself():
    g = SparseGrad(np.array([1, 2], np.int32), np.ones((2, 3), np.float32))
    h = pickle.loads(pickle.dumps(g))
    assert np.array_equal(h.indices, g.indices) and np.array_equal(h.values, g.values)
    assert repr(g) == "SparseGrad(2 rows, values (2, 3) float32)"
    with pytest.raises(AttributeError):
        g.indices = np.array([0, 0])
    assert copy.copy(g).values is g.values


# ---------------------------------------------------------------------------
# the guard and the toolkit
# ---------------------------------------------------------------------------
def test_max_grad_norm_measures_the_coalesced_rows():
    rng = np.random.default_rng(4)
    W = rng.standard_normal((ROWS, 3))
    d = rng.standard_normal(4)
    idx, v = np.array([3, 1, 3, 7]), rng.standard_normal((4, 3)) * 10
    rows, sums = coalesce(idx, v, ROWS)
    gd = rng.standard_normal(4)
    norm = np.sqrt(np.sum(sums ** 2) + np.sum(gd ** 2))
    clipped = optimc.Adagrad([W.copy(), d.copy()], lr=0.1, max_grad_norm=1.0)
    clipped.step([SparseGrad(idx, v), gd])
    assert clipped.last_grad_norm == pytest.approx(norm, rel=1e-12)
    coef = 1.0 / (norm + 1e-6)
    by_hand = optimc.Adagrad([W.copy(), d.copy()], lr=0.1)
    by_hand.step([SparseGrad(rows, sums * coef), gd * coef])
    for a, b in zip(clipped.param_groups[0]["params"], by_hand.param_groups[0]["params"]):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-15)
    assert optimc.grad_norm([SparseGrad(idx, v), gd]) == pytest.approx(norm, rel=1e-12)


def test_skip_nonfinite_with_a_sparse_grad_changes_nothing():
    W = np.ones((ROWS, 3))
    opt = optimc.SparseAdam([W], skip_nonfinite=True)
    v = np.ones((2, 3))
    v[1, 2] = np.nan
    opt.step([SparseGrad(np.array([0, 5]), v)])
    assert opt.skipped_steps == 1 and opt.step_count == 0 and opt.state[0]["step"] == 0
    assert np.array_equal(W, np.ones((ROWS, 3))) and not opt.state[0]["exp_avg"].any()


def test_clip_grad_norm_scales_the_values_in_place():
    idx, v = np.array([0, 0, 2]), np.array([[3.0], [1.0], [3.0]])
    gd = np.array([0.0])
    total = optimc.clip_grad_norm({"emb": SparseGrad(idx, v), "b": gd}, max_norm=1.0)
    assert total == pytest.approx(5.0)   # rows 0 and 2: 4 and 3
    np.testing.assert_allclose(v, np.array([[3.0], [1.0], [3.0]]) / (5.0 + 1e-6))
    optimc.clip_grad_value([SparseGrad(idx, v)], 0.1)
    assert v.max() <= 0.1


# ---------------------------------------------------------------------------
# refusals: a clear error, and nothing changed
# ---------------------------------------------------------------------------
def _snapshot(opt, arrays):
    return ([a.copy() for a in arrays], {k: (v.copy() if isinstance(v, np.ndarray) else v)
                                         for k, v in opt.state[0].items()}, opt.step_count)


def _unchanged(opt, arrays, snap):
    params, state, count = snap
    assert all(np.array_equal(a, b) for a, b in zip(arrays, params))
    assert opt.step_count == count
    for k, v in opt.state[0].items():
        assert np.array_equal(v, state[k])


BAD = [
    (lambda W: SparseGrad(np.array([1, 20]), np.ones((2, 3))), ValueError, r"indices\[1\] is 20, out of range"),
    (lambda W: SparseGrad(np.array([-1]), np.ones((1, 3))), ValueError, r"indices\[0\] is -1"),
    (lambda W: SparseGrad(np.array([1]), np.ones((1, 3), np.float32)), TypeError, r"values: expected dtype float64"),
    (lambda W: SparseGrad(np.array([1]), np.ones((1, 4))), ValueError, r"values: expected shape \(1,\) \+ \(3,\)"),
    (lambda W: SparseGrad(np.array([1, 2]), W[:2]), ValueError, r"values: shares memory with params\[1\]"),
]


@pytest.mark.parametrize("bad", range(len(BAD)))
def test_bad_sparse_grads_are_refused_before_anything_is_written(bad):
    make, exc, msg = BAD[bad]
    first, W = np.ones((ROWS, 3)), np.ones((ROWS, 3))
    opt = optimc.Adagrad([first, W], lr=0.1)
    opt.step([np.ones((ROWS, 3)), SparseGrad(np.array([0]), np.ones((1, 3)))])
    snap = _snapshot(opt, [first, W])
    # a good sparse grad (already planned) before the bad one: still nothing written
    with pytest.raises(exc, match=msg):
        opt.step([SparseGrad(np.array([2, 2]), np.ones((2, 3))), make(W)])
    _unchanged(opt, [first, W], snap)
    assert "grads[1]" in str(pytest.raises(exc, opt.step, [np.ones((ROWS, 3)), make(W)]).value)
    _unchanged(opt, [first, W], snap)


def test_optimizers_that_do_not_take_sparse_grads_say_which_do():
    accepting = []
    for cls in optimc.ALL:
        W = np.ones((4, 2))
        opt = cls([W])
        try:
            opt.step([SparseGrad(np.array([1]), np.ones((1, 2)))])
            accepting.append(cls.__name__)
        except TypeError as e:
            assert "does not take a SparseGrad" in str(e) or "only with" in str(e)
            for name in ("SGD (without momentum)", "Adagrad", "SparseAdam", "RowWiseAdagrad"):
                assert name in str(e)
            assert np.array_equal(W, np.ones((4, 2))) and opt.step_count == 0
    assert set(accepting) == {c.__name__ for c in optimc.ALL} & {"SGD", "Adagrad", "SparseAdam", "RowWiseAdagrad"}
    assert set(accepting) <= {c.__name__ for c in optimc.sparse.takers()}
    with pytest.raises(TypeError, match=r"SGD takes a SparseGrad only with momentum=0.*momentum=0.9"):
        optimc.SGD([np.ones((4, 2))], momentum=0.9).step([SparseGrad(np.array([1]), np.ones((1, 2)))])
    with pytest.raises(TypeError, match=r"only with weight_decay=0"):
        optimc.Adagrad([np.ones((4, 2))], weight_decay=0.1).step([SparseGrad(np.array([1]), np.ones((1, 2)))])
    with pytest.raises(ValueError, match=r"the param is 0-d"):
        optimc.SGD([np.ones(())]).step([SparseGrad(np.array([0]), np.ones((1,)))])


@pytest.mark.parametrize("args, exc, msg", [
    ((np.array([1.0]), np.ones((1, 2))), TypeError, "indices: expected dtype int32 or int64"),
    ((np.array([[1]]), np.ones((1, 2))), ValueError, "indices: expected a 1-D array"),
    (([1], np.ones((1, 2))), TypeError, "indices: expected a numpy.ndarray"),
    ((np.array([1, 2]), np.ones((1, 2))), ValueError, r"values: expected shape \(2, ...\)"),
    ((np.array([1]), np.ones((1, 2), np.int64)), TypeError, "values: expected a float32 or float64"),
    ((np.array([1]), np.ones((2, 2))[:, :1].T), ValueError, "values: must be C-contiguous"),
])
def test_sparse_grad_construction_checks(args, exc, msg):
    with pytest.raises(exc, match=msg):
        SparseGrad(*args)


def test_edge_shapes_and_index_types():
    """Tables of scalars (GloVe's biases), tables without rows or without columns,
    and every signed 32/64-bit index type; unsigned indices are refused."""
    b = np.zeros(5)
    optimc.SGD([b], lr=1.0).step([SparseGrad(np.array([1, 1, 4]), np.array([1.0, 2.0, 0.5]))])
    assert b.tolist() == [0.0, -3.0, 0.0, 0.0, -0.5]
    for shape in ((0, 3), (4, 0)):
        T = np.zeros(shape)
        opt = optimc.SparseAdam([T])
        nnz = 0 if shape[0] == 0 else 2
        opt.step([SparseGrad(np.zeros(nnz, np.int64), np.zeros((nnz,) + shape[1:]))])
        assert opt.state[0]["step"] == 1
    W = np.zeros((5, 2))
    opt = optimc.SGD([W], lr=1.0)
    for dt in (np.int32, np.int64, np.intc, np.longlong):
        opt.step([SparseGrad(np.array([3], dt), np.ones((1, 2)))])
    assert W[3].tolist() == [-4.0, -4.0] and not W[[0, 1, 2, 4]].any()
    with pytest.raises(TypeError, match="indices: expected dtype int32 or int64"):
        SparseGrad(np.array([1], np.uint32), np.ones((1, 2)))
