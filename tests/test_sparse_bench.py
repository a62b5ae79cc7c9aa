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
