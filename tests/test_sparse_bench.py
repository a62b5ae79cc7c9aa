"""The benchmark's sparse section on a tiny table: every implementation agrees with
optimc, and the CLI runs it (timings are only reported, never asserted)."""
import numpy as np
import pytest

from optimc.bench import cli
from optimc.bench.sparse import (COALESCERS, coalesce_add_at, coalesce_ranks, coalesce_reduceat, format_sparse,
                                 sparse_section)

TINY = dict(sample_time=1e-4, case_time=1e-3, min_rounds=1, max_rounds=1, check_steps=1)


def test_numpy_coalescers_agree():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 50, 200)
    v = rng.standard_normal((200, 3))
    (r1, g1), (r2, g2) = coalesce_add_at(idx, v), coalesce_reduceat(idx, v)
    assert np.array_equal(r1, r2) and np.allclose(g1, g2)
    # by rank of repeat: the same rows, each summed in position order as np.add.at sums
    r3, g3 = coalesce_ranks(idx, v)
    assert np.array_equal(r3, r1) and np.array_equal(g3, g1)
    assert coalesce_ranks in COALESCERS.values()
    r4, g4 = coalesce_ranks(idx[:0], v[:0])
    assert r4.shape == (0,) and g4.shape == (0, 3)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_sparse_section_checks_every_implementation():
    try:
        import torch
    except ImportError:
        torch = None
    s = sparse_section(TINY, torch, seed=0, n_rows=3000, sizes=(50, 400))
    assert len(s["rows"]) == 4 and len(s["scale"]) == 2
    for r in s["rows"]:
        assert r["checks"] and all(r["checks"].values()), r
        assert ("torch" in r["checks"]) == (torch is not None)
        assert r["x_numpy"] > 0
    text = format_sparse(s)
    assert "3,000 x 64 float32 table" in text and "SparseAdam" in text


def test_cli_knows_the_sparse_section():
    args = cli.build_parser().parse_args(["--sections", "sparse", "--quick"])
    assert args.sections == ["sparse"]


# ---- the floor: _core.sparse_floor touches exactly the given rows ----

def _floor_case(dtype, index_dtype, n_rows=500, nnz=300, seed=1):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_rows // 3, nnz).astype(index_dtype)    # many repeats, a third of the rows
    # small integers: every sum is exact in any order, so the expected result is exact
    values = rng.integers(-8, 9, (nnz, 4)).astype(dtype)
    param = rng.integers(-100, 100, (n_rows, 4)).astype(dtype)
    states = [rng.integers(-100, 100, (n_rows, 4)).astype(dtype) for _ in range(2)]
    return idx, values, param, states


def _expected(base, idx, values):
    out = base.copy()
    np.add.at(out, idx.astype(np.int64), values)      # each given row + the sum of its values
    return out


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("threads", [1, 2])
def test_floor_touches_exactly_the_given_rows(coalesce, dtype, index_dtype, threads):
    import optimc
    from optimc import _core
    idx, values, param, states = _floor_case(dtype, index_dtype)
    p0, s0 = param.copy(), [s.copy() for s in states]
    saved = _core.config()
    try:
        optimc.set_num_threads(threads)
        _core.set_thread_threshold(0)                  # split over the pool even this small step
        _core.sparse_floor(param, states, idx, values, coalesce)
    finally:
        optimc.set_num_threads(saved["num_threads"])
        _core.set_thread_threshold(saved["thread_threshold"])
    touched = np.zeros(len(param), bool)
    touched[idx] = True
    for got, before in [(param, p0)] + list(zip(states, s0)):
        want = _expected(before, idx, values)
        assert np.array_equal(got, want)
        # untouched rows: bit-unchanged (also the NaN-free compare above); touched rows changed
        assert np.array_equal(got[~touched].view(np.uint8), before[~touched].view(np.uint8))
    changed = np.any(param != p0, axis=1)
    sums = np.zeros_like(param)
    np.add.at(sums, idx.astype(np.int64), values)
    assert np.array_equal(changed, touched & np.any(sums != 0, axis=1))


def test_floor_with_no_state_empty_grad_and_nan_rows():
    from optimc import _core
    p = np.arange(12.0, dtype=np.float32).reshape(6, 2)
    p[4] = np.nan                                       # an untouched NaN row stays the same NaN bits
    before = p.copy()
    _core.sparse_floor(p, [], np.array([], np.int64), np.zeros((0, 2), np.float32), True)
    assert np.array_equal(p.view(np.uint32), before.view(np.uint32))
    _core.sparse_floor(p, [], np.array([1, 1], np.int64), np.ones((2, 2), np.float32), False)
    want = before.copy()
    want[1] += 2
    assert np.array_equal(p.view(np.uint32), want.view(np.uint32))


def test_floor_refuses_bad_input_before_writing():
    from optimc import _core
    p = np.zeros((5, 3))
    s = np.zeros((5, 3))
    v = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"indices\[1\] is 5, out of range"):
        _core.sparse_floor(p, [s], np.array([0, 5]), v, True)
    with pytest.raises(ValueError, match=r"indices\[0\] is -1"):
        _core.sparse_floor(p, [s], np.array([-1, 0]), v, False)
    with pytest.raises(TypeError, match="values: expected the param's dtype"):
        _core.sparse_floor(p, [s], np.array([0, 1]), v.astype(np.float32), True)
    with pytest.raises(ValueError, match="one row of the param per index"):
        _core.sparse_floor(p, [s], np.array([0, 1, 2]), v, True)
    with pytest.raises(ValueError, match=r"states\[0\]: expected an array of the param's shape"):
        _core.sparse_floor(p, [np.zeros((4, 3))], np.array([0, 1]), v, True)
    with pytest.raises(ValueError, match="shares memory"):
        _core.sparse_floor(p, [p[:]], np.array([0, 1]), v, True)
    with pytest.raises(ValueError, match="values: shares memory"):
        _core.sparse_floor(p, [s], np.array([0, 1]), p[:2], True)
    with pytest.raises(TypeError, match="indices"):
        _core.sparse_floor(p, [s], np.array([0.0, 1.0]), v, True)
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros((5, 3))
        ro.flags.writeable = False
        _core.sparse_floor(ro, [s], np.array([0, 1]), v, True)
    assert not p.any() and not s.any()


def test_section_reports_the_floor():
    import optimc
    from optimc import _core
    saved = _core.config()
    try:
        optimc.set_num_threads(2)
        s = sparse_section(TINY, None, seed=0, n_rows=3000, sizes=(50, 400))
        # the floors' runners set the pool; the section's settings are back after each row
        assert optimc.get_num_threads() == 2
        assert _core.config()["thread_threshold"] == saved["thread_threshold"]
    finally:
        optimc.set_num_threads(saved["num_threads"])
    for r in s["rows"]:
        floors = {k: v for k, v in r["seconds_per_step"].items() if k.startswith("floor ")}
        # sorted and unsorted, on one thread and on the section's two, in every row
        assert set(floors) == {"floor sorted/1", "floor unsorted/1", "floor sorted/2", "floor unsorted/2"}
        assert r["floor"] in floors and r["floor_seconds"] == min(floors.values())
        assert set(r["seconds_per_step_min"]) == set(r["seconds_per_step"])
        assert all(r["seconds_per_step_min"][k] <= v for k, v in r["seconds_per_step"].items())
        assert r["floor_x_numpy"] == pytest.approx(r["seconds_per_step"][r["best_numpy"]] / r["floor_seconds"])
    text = format_sparse(s)
    assert "floor = the least work of the step" in text and "x floor" in text
    assert "floor sorted/1" not in text and "sorted/1" in text
