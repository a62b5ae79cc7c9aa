"""Run under mpiexec by tests/test_distributed.py: bad input on one rank.

    faults.py refusals OUT    one rank passes a bad grad / layout / checkpoint:
                              every rank must raise, none may change anything,
                              and training must go on afterwards; rank 0
                              pickles what every rank saw to OUT
    faults.py hang TIMEOUT    the last rank raises before step(); the others
                              must abort the job after TIMEOUT seconds
"""
import pickle
import sys

import numpy as np
from mpi4py import MPI

import optimc
import problem
from optimc.distributed import (DistributedOptimizer, ZeroRedundancyOptimizer,
                                broadcast_optimizer_state)

comm = MPI.COMM_WORLD
BAD = comm.size - 1   # the rank at fault


def snapshot(opt, params):
    state = opt.consolidate_state_dict(to=None) if isinstance(opt, ZeroRedundancyOptimizer) \
        else opt.state_dict()
    return {k: v.copy() for k, v in params.items()}, state


def equal(a, b):
    """Same structure and values, arrays compared bit for bit."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape \
            and a.tobytes() == b.tobytes()
    return type(a) is type(b) and a == b


def attempt(opt, params, action):
    """Run `action` on every rank; return (exception type name, message, nothing changed)."""
    before = snapshot(opt, params)
    try:
        action()
        seen = (None, None)
    except (TypeError, ValueError) as e:
        seen = (type(e).__name__, str(e))
    return seen + (equal(snapshot(opt, params), before),)


def build(wrapper, params, cls=optimc.Adam):
    guard = problem.guard(wrapper, "exact")
    if wrapper == "zero":
        return ZeroRedundancyOptimizer(problem.groups(params, cls), cls, **guard)
    return DistributedOptimizer(cls(problem.groups(params, cls), **guard))


def refusals(out):
    results = {}
    rows = problem.rows_of(comm.rank, comm.size)
    for wrapper in ("ddp", "zero"):
        params = problem.initial_params()
        opt = build(wrapper, params)
        opt.step(problem.grads(params, rows, 1, True))

        def bad_grads(change):
            def action():
                g = problem.grads(params, rows, 2, True)
                if comm.rank == BAD:
                    change(g)
                opt.step(g)
            return action

        results[wrapper, "shape"] = attempt(opt, params, bad_grads(
            lambda g: g.__setitem__("W1_f64", np.zeros((6, 4)))))
        results[wrapper, "dtype"] = attempt(opt, params, bad_grads(
            lambda g: g.__setitem__("b1_f32", g["b1_f32"].astype(np.float64))))
        results[wrapper, "missing"] = attempt(opt, params, bad_grads(lambda g: g.pop("s")))
        good = opt.consolidate_state_dict(to=None) if wrapper == "zero" else opt.state_dict()
        corrupt = pickle.loads(pickle.dumps(good))
        corrupt["state"][0]["exp_avg"] = corrupt["state"][0]["exp_avg"][:-1]
        results[wrapper, "load"] = attempt(opt, params, lambda: opt.load_state_dict(
            corrupt if comm.rank == BAD else good))
        results[wrapper, "hyper"] = attempt(opt, params, lambda: setattr(opt, "lr", -1.0))
        extra = {"extra": np.zeros(5)}
        results[wrapper, "add_group"] = attempt(opt, params, lambda: opt.add_param_group(
            {"params": extra, "lr": -1.0 if comm.rank == BAD else 0.1}))
        results[wrapper, "groups"] = len(opt.param_groups)
        # training goes on, on every rank alike
        opt.step(problem.grads(params, rows, 2, True))
        results[wrapper, "after"] = (opt.step_count, float(params["W1_f32"][0, 0]))
        try:   # a rank whose params differ from the others' at construction
            other = problem.initial_params()
            if comm.rank == BAD:
                other["W2_f64"] = np.zeros(7)
            build(wrapper, other)
            results[wrapper, "layout"] = (None, None)
        except ValueError as e:
            results[wrapper, "layout"] = (type(e).__name__, str(e))
    params = problem.initial_params()
    plain = optimc.Adam(problem.groups(params, optimc.Adam))
    plain.step(problem.grads(params, rows, 1, True))
    if comm.rank == BAD:   # this rank's state differs; broadcasting rank 0's makes them equal
        plain.step(problem.grads(params, rows, 2, True))
    broadcast_optimizer_state(plain, root=0)
    results["broadcast_state"] = pickle.dumps(plain.state_dict())
    everyone = comm.gather(results, root=0)
    if comm.rank == 0:
        with open(out, "wb") as f:
            pickle.dump(everyone, f)


def hang(timeout):
    params = problem.initial_params()
    opt = DistributedOptimizer(optimc.Adam(params), timeout=float(timeout))
    grads = problem.grads(params, problem.rows_of(comm.rank, comm.size), 1, True)
    if comm.rank == BAD:
        raise RuntimeError("this rank fails before step()")
    opt.step(grads)


if __name__ == "__main__":
    {"refusals": refusals, "hang": hang}[sys.argv[1]](sys.argv[2])
