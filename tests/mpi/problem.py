"""The training problem of the MPI tests, shared by the scripts that run under
mpiexec (tests/mpi/*.py) and by tests/test_distributed.py, which computes the
single-process references from it.

Two small tanh networks, one float32 and one float64, in three param groups
(the third holds one scalar, so with 3 ranks some ranks own none of it), plus
an empty param. Rank r of n trains on rows [r*B/n, (r+1)*B/n) of the batch.

Two kinds of grads:
- "exact": each rank's grads are rounded to a few fractional bits, so that
  their sum over the ranks is exact in any order, and the average
  (sum, then ×1/n in the dtype) is the same bits however MPI adds them: the
  distributed run must equal the single-process one bit for bit.
- "batch": plain grads; the reference steps on the mean grad of the whole
  batch, computed in one piece: equal up to the rounding of the sums.
At step NAN_STEP the grads of the rows that hold row 0 are NaN: with
skip_nonfinite every rank must skip that step.
"""
import inspect

import numpy as np

import optimc

BATCH = 12            # divisible by 1, 2 and 3
STEPS = 100
NAN_STEP = 37
MAX_NORM = 0.5
_FRACTION_BITS = {np.dtype(np.float32): 12, np.dtype(np.float64): 30}
_DTYPES = {"f32": np.float32, "f64": np.float64}


def _data(dtype):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((BATCH, 4)).astype(dtype)
    y = np.sin(X.sum(axis=1)).astype(dtype)
    return X, y


DATA = {tag: _data(dtype) for tag, dtype in _DTYPES.items()}


def initial_params(seed=0):
    """name -> array, in the order of the groups."""
    rng = np.random.default_rng(seed)
    params = {}
    for tag, dtype in _DTYPES.items():
        params[f"W1_{tag}"] = (rng.standard_normal((4, 6)) * 0.7).astype(dtype)
        params[f"b1_{tag}"] = (rng.standard_normal(6) * 0.1).astype(dtype)
        params[f"W2_{tag}"] = (rng.standard_normal(6) * 0.4).astype(dtype)
        params[f"b2_{tag}"] = np.array(0.1, dtype)
    params["empty"] = np.zeros(0, np.float32)
    params["s"] = np.array(3.0)
    return params


def groups(params, cls):
    """Three named param groups; the second one with half the default lr."""
    lr = inspect.signature(cls).parameters["lr"].default
    first = [k for k in params if k.endswith("_f32")]
    second = [k for k in params if k.endswith("_f64")] + ["empty"]
    return [{"params": {k: params[k] for k in first}},
            {"params": {k: params[k] for k in second}, "lr": 0.5 * lr},
            {"params": {"s": params["s"]}}]


def rows_of(rank, n):
    part = BATCH // n
    return slice(rank * part, (rank + 1) * part)


def grads(params, rows, step, exact):
    """Grads of the mean squared error over `rows` (a slice of the batch)."""
    out = {}
    for tag in _DTYPES:
        X, y = DATA[tag]
        X, y = X[rows], y[rows]
        W1, b1, W2, b2 = (params[f"{k}_{tag}"] for k in ("W1", "b1", "W2", "b2"))
        h = np.tanh(X @ W1 + b1)
        err = h @ W2 + b2 - y
        d_out = err / len(y)
        dh = np.outer(d_out, W2) * (1 - h * h)
        out[f"W1_{tag}"] = X.T @ dh
        out[f"b1_{tag}"] = dh.sum(axis=0)
        out[f"W2_{tag}"] = h.T @ d_out
        out[f"b2_{tag}"] = np.asarray(d_out.sum(), X.dtype)
        if step == NAN_STEP and rows.start == 0:
            out[f"W1_{tag}"][0, 0] = np.nan
    out["empty"] = np.zeros(0, np.float32)
    out["s"] = np.asarray(params["s"] - 1.0)
    if exact:
        for k, g in out.items():
            scale = g.dtype.type(2.0 ** _FRACTION_BITS[g.dtype])
            out[k] = np.asarray(np.round(g * scale) / scale, g.dtype)
    return {k: out[k].copy(order="C") for k in params}


def mean_grads(params, n, step, mode):
    """What every rank steps on, computed in one process: the average of the
    ranks' exact grads (sum, then ×1/n in the dtype), or the whole batch's grad."""
    if mode == "batch":
        return grads(params, slice(0, BATCH), step, exact=False)
    parts = [grads(params, rows_of(r, n), step, exact=True) for r in range(n)]
    out = {}
    for k in params:
        total = parts[0][k].copy()
        for p in parts[1:]:
            total += p[k]
        out[k] = total if n == 1 else np.asarray(total * total.dtype.type(1.0 / n))
    return out


def guard(wrapper, mode, clip=False):
    """The guard options of a case. Clipping is left out where it would blur
    the comparison: the clipping factor comes from one norm over both dtypes,
    so in "batch" cases the float32 grads' rounding would move the float64
    params through it; and ZeRO sums the norm over shards, in another order
    than one process (the "clip" cases compare it within rounding)."""
    if clip or (wrapper == "ddp" and mode == "exact"):
        return {"max_grad_norm": MAX_NORM, "skip_nonfinite": True}
    return {"skip_nonfinite": True}


def schedule(opt):
    """The scheduler and live changes of the "live" cases (any optimizer)."""
    return optimc.schedules.StepLR(opt, step_size=30, gamma=0.5)


def live_changes(opt, step):
    if step == 70:
        opt.param_groups[1]["weight_decay"] = 0.01
    if step == 80:
        opt.eps = 1e-6


GROW_AT = 30   # the "grow" cases start with two groups and add the third before this step


def grow(opt, all_groups, step):
    """Add the last group at step GROW_AT; the grads `step` takes now."""
    if step == GROW_AT:
        opt.add_param_group(all_groups[-1])


def active(opt, grads_):
    names = [n for g in opt.param_groups for n in g["param_names"]]
    return {n: grads_[n] for n in names}


def reference(cls, n, mode, wrapper, stop=STEPS, live=False, clip=False, growing=False):
    """The single-process run: a plain `cls` over the same groups, stepped on
    `mean_grads` of `n` ranks (a number, or a function of the step); returns
    (params, optimizer, ema averages or None)."""
    n_at = n if callable(n) else (lambda step: n)
    params = initial_params()
    all_groups = groups(params, cls)
    opt = cls(all_groups[:-1] if growing else all_groups, **guard(wrapper, mode, clip))
    sched = schedule(opt) if live else None
    ema = optimc.EMA(params, decay=0.9) if live else None
    for step in range(1, stop + 1):
        if growing:
            grow(opt, all_groups, step)
        opt.step(active(opt, mean_grads(params, n_at(step), step, mode)))
        if live:
            sched.step()
            live_changes(opt, step)
            ema.update()
    return params, opt, (ema.averages if ema is not None else None)
