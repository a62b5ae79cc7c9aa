"""Run under mpiexec by tests/test_distributed.py, in phases:

    checkpoint.py save DIR      train 50 steps with ZeRO, save the consolidated
                                checkpoint (params + optimizer) of every
                                optimizer of optimc.ALL to DIR/<name>.pkl
    checkpoint.py resume DIR    load them into ZeRO (and, on one rank, also into
                                DistributedOptimizer over a plain optimizer),
                                train to step 100, write
                                DIR/<name>.<ranks>.resumed.pkl

Grads are the "exact" ones of problem.py, so whatever the number of ranks in
each phase, the result must equal one process stepping on the same averages.
"""
import pickle
import sys

from mpi4py import MPI

import optimc
import problem
from optimc.distributed import DistributedOptimizer, ZeroRedundancyOptimizer, broadcast_parameters

comm = MPI.COMM_WORLD
SAVE_AT = 50


# ZeRO-1 steps shards of tensors: the element-wise algorithms only
SHARDABLE = [cls for cls in optimc.ALL if getattr(cls, "elementwise", True)]


def train(opt, params, start, stop):
    for step in range(start, stop + 1):
        opt.step(problem.grads(params, problem.rows_of(comm.rank, comm.size), step, exact=True))


def save(folder):
    for cls in SHARDABLE:
        params = problem.initial_params() if comm.rank == 0 else problem.initial_params(seed=comm.rank)
        broadcast_parameters(params, root=0)          # every rank starts from rank 0's values
        opt = ZeroRedundancyOptimizer(problem.groups(params, cls), cls, **problem.guard("zero", "exact"))
        train(opt, params, 1, SAVE_AT)
        state = opt.consolidate_state_dict(to=0)
        if comm.rank == 0:
            with open(f"{folder}/{cls.__name__}.pkl", "wb") as f:
                pickle.dump({"params": params, "optimizer": state}, f)


def resume(folder):
    for cls in SHARDABLE:
        with open(f"{folder}/{cls.__name__}.pkl", "rb") as f:
            saved = pickle.load(f)
        out = {}
        for wrapper in ("zero", "ddp") if comm.size == 1 else ("zero",):
            params = {k: v.copy() for k, v in saved["params"].items()}
            guard = problem.guard("zero", "exact")
            if wrapper == "zero":
                opt = ZeroRedundancyOptimizer(problem.groups(params, cls), cls, **guard)
            else:
                opt = DistributedOptimizer(cls(problem.groups(params, cls), **guard))
            if wrapper == "zero" and comm.size > 1:   # only rank 0 needs the checkpoint
                opt.load_state_dict(saved["optimizer"] if comm.rank == 0 else None, root=0)
            else:
                opt.load_state_dict(saved["optimizer"])
            train(opt, params, SAVE_AT + 1, problem.STEPS)
            out[wrapper] = (params, opt.step_count, opt.skipped_steps)
        if comm.rank == 0:
            with open(f"{folder}/{cls.__name__}.{comm.size}.resumed.pkl", "wb") as f:
                pickle.dump(out, f)


if __name__ == "__main__":
    {"save": save, "resume": resume}[sys.argv[1]](sys.argv[2])
