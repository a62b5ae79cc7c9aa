"""The benchmark's sparse section: an embedding-table step given row-sparse grads.

A float32 table of 1,000,000 x 64 (100,000 x 64 with --quick); each step gives
1,000 or 10,000 indices, a quarter of which repeat others in the batch (hot rows,
as in real batches), with one 64-wide grad row each. Per optimizer (sparse Adagrad
and SparseAdam) and batch size it times optimc's step given an ``optimc.SparseGrad``
(the SparseGrad made inside the timing, as a training loop makes one per step),
the fastest of three NumPy steps and torch.optim given a sparse COO grad (built
once, outside the timing; torch coalesces it inside its step). The NumPy steps
coalesce by ``np.unique`` + ``np.add.at``, by a stable ``argsort`` +
``np.add.reduceat``, or by a stable ``argsort`` and one fancy-indexed ``+=`` per
rank of repeat (every row's first occurrence, then its second, ...: no index
repeats within one ``+=``, so it is exact and fast), then gather the rows with
``np.take``, update them with in-place ufuncs and scatter them back. Every implementation is checked against optimc's
result first. A last line times optimc's 10,000-index step on a table a tenth
the size: a step's cost should follow the rows it touches, not the table.

Each row also times the step's floor (``floor_runners``): the least work any
implementation of that step must do, in C with no Python in the loop -- read
the indices and values, read and write the touched rows of the param and of
the optimizer's state buffers (1 for Adagrad, 2 for SparseAdam), with a single
add as arithmetic -- with and without coalescing, on one thread and on all.
Best NumPy / floor bounds the speedup any implementation can show here.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from .. import _core
from .timing import measure, with_threads

__all__ = ["sparse_section", "format_sparse", "SPARSE_OPTIMIZERS"]

SPARSE_OPTIMIZERS = ("Adagrad", "SparseAdam")
DIM = 64
BATCHES = 16          # distinct index sets, cycled through
REPEAT_FRACTION = 0.25
HYPER = {"Adagrad": dict(lr=0.01, eps=1e-8), "SparseAdam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)}


def make_batches(rng, n_rows: int, nnz: int, dtype=np.float32):
    """Index sets with repeats (a quarter of each drawn again from the rest), and values."""
    out = []
    for _ in range(BATCHES):
        fresh = rng.integers(0, n_rows, nnz - int(nnz * REPEAT_FRACTION))
        idx = np.concatenate([fresh, rng.choice(fresh, nnz - len(fresh))])
        rng.shuffle(idx)
        out.append((idx.astype(np.int64), rng.standard_normal((nnz, DIM), dtype=dtype)))
    return out


def coalesce_add_at(idx, values):
    rows, inverse = np.unique(idx, return_inverse=True)
    g = np.zeros((len(rows),) + values.shape[1:], values.dtype)
    np.add.at(g, inverse.reshape(-1), values)
    return rows, g


def coalesce_reduceat(idx, values):
    order = np.argsort(idx, kind="stable")
    s = idx[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    return s[starts], np.add.reduceat(values[order], starts, axis=0)


def coalesce_ranks(idx, values):
    order = np.argsort(idx, kind="stable")
    s = idx[order]
    new = np.empty(len(s), bool)
    new[:1] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1                   # each sorted position's row, 0..n_unique-1
    rank = np.arange(len(s)) - starts[group]     # 0 for a row's first occurrence, 1 for its second, ...
    g = np.take(values, order[starts], axis=0)
    for k in range(1, int(rank.max(initial=0)) + 1):
        at = np.flatnonzero(rank == k)           # rows distinct within one rank: a plain += is exact
        g[group[at]] += np.take(values, order[at], axis=0)
    return s[starts], g


COALESCERS = {"numpy add.at": coalesce_add_at, "numpy reduceat": coalesce_reduceat,
              "numpy ranks": coalesce_ranks}


class NumpySparse:
    """torch's sparse Adagrad / SparseAdam in NumPy: coalesce, gather, update, scatter."""

    def __init__(self, name, table, coalesce):
        self.name, self.p, self.coalesce, self.t = name, table, coalesce, 0
        h = HYPER[name]
        self.lr, self.eps = h["lr"], h["eps"]
        if name == "Adagrad":
            self.sum = np.zeros_like(table)
        else:
            self.b1, self.b2 = h["betas"]
            self.m, self.v = np.zeros_like(table), np.zeros_like(table)

    def step(self, idx, values):
        rows, g = self.coalesce(idx, values)   # g is the step's own array: updated in place
        self.t += 1
        dt = self.p.dtype.type
        p = np.take(self.p, rows, axis=0)
        if self.name == "Adagrad":
            s = np.take(self.sum, rows, axis=0)
            s += np.square(g)
            self.sum[rows] = s
            np.sqrt(s, out=s)
            s += dt(self.eps)
            np.divide(g, s, out=g)
            g *= dt(self.lr)
            p -= g
            self.p[rows] = p
            return
        m, v = np.take(self.m, rows, axis=0), np.take(self.v, rows, axis=0)
        d = g - m
        d *= dt(1 - self.b1)
        m += d
        np.square(g, out=g)
        g -= v
        g *= dt(1 - self.b2)
        v += g
        self.m[rows], self.v[rows] = m, v
        size = self.lr * (1 - self.b2 ** self.t) ** 0.5 / (1 - self.b1 ** self.t)
        np.sqrt(v, out=g)
        g += dt(self.eps)
        np.divide(m, g, out=g)
        g *= dt(size)
        p -= g
        self.p[rows] = p


def _cycle(step, batches):
    state = {"i": 0}

    def run(k):
        for _ in range(k):
            idx, values = batches[state["i"] % BATCHES]
            state["i"] += 1
            step(idx, values)
    return run


def _check(a, b) -> bool:
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-6))


def _optimc(name, table):
    import optimc
    opt = getattr(optimc, name)([table], **HYPER[name])
    return lambda idx, values: opt.step([optimc.SparseGrad(idx, values)])


def _torch(name, table, torch):
    tp = torch.from_numpy(table)
    kw = dict(HYPER[name])
    if name == "Adagrad":
        kw["foreach"] = False
    opt = getattr(torch.optim, name)([tp], **kw)
    shape = table.shape
    made = {}

    def step(idx, values):
        key = id(idx)
        if key not in made:   # the grad a backward pass would hand over
            made[key] = torch.sparse_coo_tensor(torch.from_numpy(idx)[None], torch.from_numpy(values), shape,
                                                check_invariants=False)
        tp.grad = made[key]
        opt.step()
    return step


def run_sparse(name, n_rows, nnz, prof, torch, seed, floor=True) -> dict:
    rng = np.random.default_rng(seed)
    table0 = rng.standard_normal((n_rows, DIM), dtype=np.float32)
    batches = make_batches(rng, n_rows, nnz)
    impls = {"optimc": table0.copy()}
    steps = {"optimc": _optimc(name, impls["optimc"])}
    for label, coalesce in COALESCERS.items():
        impls[label] = table0.copy()
        steps[label] = NumpySparse(name, impls[label], coalesce).step
    if torch is not None:
        impls["torch"] = table0.copy()
        steps["torch"] = _torch(name, impls["torch"], torch)
    checks = {}
    for label, step in steps.items():   # two steps each from the same table, then compare
        for idx, values in batches[:2]:
            step(idx, values)
    for label in steps:
        if label != "optimc":
            checks[label] = _check(impls[label], impls["optimc"])
    runners = {k: _cycle(s, batches) for k, s in steps.items()}
    floors = {}
    if floor:
        # every runner sets the pool as it needs it: optimc's step as the section runs it
        import optimc
        n_threads, threshold = optimc.get_num_threads(), _core.config()["thread_threshold"]
        runners["optimc"] = with_threads(n_threads, threshold, runners["optimc"])
        floors = floor_runners(name, table0, batches, n_threads, threshold)
        runners.update(floors)
    try:
        timed = measure(runners, prof["sample_time"], prof["case_time"], prof["min_rounds"], prof["max_rounds"])
    finally:
        if floor:   # the floors' runners set the pool: back to the section's settings
            optimc.set_num_threads(n_threads)
            _core.set_thread_threshold(threshold)
    sec = {k: v["median"] for k, v in timed.items()}
    numpy_best = min((k for k in sec if k.startswith("numpy")), key=lambda k: sec[k])
    out = dict(optimizer=name, n_rows=n_rows, dim=DIM, indices=nnz, dtype="float32",
               seconds_per_step=sec, checks=checks, best_numpy=numpy_best,
               # the fastest sample of each: on a busy machine, the least disturbed
               seconds_per_step_min={k: v["min"] for k, v in timed.items()},
               x_numpy=sec[numpy_best] / sec["optimc"],
               x_torch=(sec["torch"] / sec["optimc"]) if "torch" in sec else None)
    if floors:
        best = min(floors, key=lambda k: sec[k])
        out.update(floor=best, floor_seconds=sec[best], floor_x_numpy=sec[numpy_best] / sec[best],
                   optimc_over_floor=sec["optimc"] / sec[best])
    return out


#: state arrays per row of the table: what a step must read and write besides the param
STATE_BUFFERS = {"Adagrad": 1, "SparseAdam": 2}


def floor_runners(name, table0, batches, n_threads: int, threshold: int) -> dict:
    """The floor of the step (``_core.sparse_floor``, C): the same indices and values,
    the touched rows of a copy of the table and of as many state arrays as ``name``
    keeps read, the grad added, written back; with the step's coalescing ("sorted":
    a stable sort, each distinct row once) and without ("unsorted": position by
    position). On one thread, and on ``n_threads`` forced (threshold 0) when more.
    Keys: "floor sorted/1", "floor unsorted/1", ... The state arrays are written
    once first, so that no step pays a page's first touch."""
    p = table0.copy()
    states = [np.empty_like(table0) for _ in range(STATE_BUFFERS[name])]
    for s in states:
        s.fill(0.0)
    counts = [1] + ([n_threads] if n_threads > 1 else [])
    out = {}
    for coalesce, label in ((True, "sorted"), (False, "unsorted")):
        def step(idx, values, coalesce=coalesce):
            _core.sparse_floor(p, states, idx, values, coalesce)
        for nt in counts:
            out[f"floor {label}/{nt}"] = with_threads(nt, threshold if nt == 1 else 0, _cycle(step, batches))
    return out


def sparse_section(prof, torch, seed, quick=False, optimizers=SPARSE_OPTIMIZERS,
                   n_rows=None, sizes=(1_000, 10_000)) -> dict:
    """Every optimizer at every batch size, then the largest batch on a table a tenth the size."""
    n_rows = n_rows or (100_000 if quick else 1_000_000)
    rows = [run_sparse(name, n_rows, nnz, prof, torch, seed) for name in optimizers for nnz in sizes]
    # the same step on a table a tenth the size: optimc only
    small = n_rows // 10
    scale = []
    for name in optimizers:
        big = next(r for r in rows if r["optimizer"] == name and r["indices"] == sizes[-1])
        r = run_sparse(name, small, sizes[-1], prof, None, seed, floor=False)
        scale.append(dict(optimizer=name, indices=sizes[-1], small_rows=small, big_rows=n_rows,
                          small_seconds=r["seconds_per_step"]["optimc"],
                          big_seconds=big["seconds_per_step"]["optimc"]))
    return dict(rows=rows, scale=scale, repeat_fraction=REPEAT_FRACTION)


def _us(v: Optional[float]) -> str:
    return "-" if v is None else f"{v * 1e6:.0f}"


def format_sparse(s: dict) -> str:
    rows = s["rows"]
    if not rows:
        return ""
    r0 = rows[0]
    lines = [f"sparse section: a {r0['n_rows']:,} x {r0['dim']} float32 table, row-sparse grads "
             f"({s['repeat_fraction']:.0%} of each batch's indices repeat others); microseconds "
             f"per step (median); '!' = result differs from optimc",
             f"  {'optimizer':<11}{'indices':>8}{'optimc':>9}{'numpy':>9}{'torch':>9}"
             f"{'x numpy':>9}{'x torch':>9}{'floor':>9}{'floor':>8}  best numpy",
             f"  {'':<11}{'':>8}{'':>9}{'':>9}{'':>9}{'':>9}{'':>9}{'':>9}{'x numpy':>8}"]
    for r in rows:
        sec, bad = r["seconds_per_step"], {k for k, ok in r["checks"].items() if not ok}
        mark = lambda k: "!" if k in bad else ""   # noqa: E731
        has_floor = r.get("floor") is not None
        lines.append(f"  {r['optimizer']:<11}{r['indices']:>8}{_us(sec['optimc']):>9}"
                     f"{_us(sec[r['best_numpy']]) + mark(r['best_numpy']):>9}"
                     f"{_us(sec.get('torch')) + mark('torch'):>9}{r['x_numpy']:>8.1f}x"
                     + (f"{r['x_torch']:>8.1f}x" if r["x_torch"] is not None else f"{'-':>9}")
                     + (f"{_us(r['floor_seconds']):>9}{r['floor_x_numpy']:>7.1f}x" if has_floor
                        else f"{'-':>9}{'-':>8}")
                     + f"  {r['best_numpy']}")
    floored = [r for r in rows if r.get("floor") is not None]
    if floored:
        lines.append("  floor = the least work of the step (C, _core.sparse_floor: the touched rows of the "
                     "param and of its state read, the grad added, written back), the fastest of "
                     "(sorted/unsorted) x (threads); 'floor x numpy' = best NumPy / floor, the most "
                     "any implementation could reach here:")
        for r in floored:
            sec = r["seconds_per_step"]
            parts = ", ".join(f"{k[len('floor '):]} {_us(sec[k])}" for k in sec if k.startswith("floor "))
            lines.append(f"    {r['optimizer']} {r['indices']}: {parts} us; optimc = "
                         f"{r['optimc_over_floor']:.2f} x floor")
    for c in s["scale"]:
        lines.append(f"  {c['optimizer']} at {c['indices']:,} indices: {_us(c['small_seconds'])} us "
                     f"on {c['small_rows']:,} rows, {_us(c['big_seconds'])} us on {c['big_rows']:,} "
                     f"rows (ratio {c['big_seconds'] / c['small_seconds']:.2f})")
    return "\n".join(lines)


def mismatches(s: dict) -> List[str]:
    return [f"sparse {r['optimizer']} {r['indices']} indices {k}: differs from optimc"
            for r in s["rows"] for k, ok in r["checks"].items() if not ok]
