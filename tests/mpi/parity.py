"""Run under mpiexec by tests/test_distributed.py as ``parity.py OUT MODE``:
trains every optimizer of optimc.ALL on tests/mpi/problem.py with
DistributedOptimizer and with ZeroRedundancyOptimizer, each rank on its part
of the batch, with the grads of MODE ("exact" or "batch", see problem.py), and
writes the final params (and whether every rank holds the same ones) to OUT
(.npz). The test compares them with single-process runs.
"""
import sys

import numpy as np
from mpi4py import MPI

import optimc
import problem
from optimc.distributed import DistributedOptimizer, FlatBuffer, ZeroRedundancyOptimizer

comm = MPI.COMM_WORLD


def run(cls, wrapper, mode, flat=False, live=False, clip=False, growing=False):
    params = problem.initial_params()
    if flat:   # params and grads as views of one buffer per dtype: no packing copies
        params = FlatBuffer(params, copy=True).views
        grad_buffer = FlatBuffer(params)
    guard = problem.guard(wrapper, mode, clip)
    all_groups = problem.groups(params, cls)
    first = all_groups[:-1] if growing else all_groups
    if wrapper == "ddp":
        opt = DistributedOptimizer(cls(first, **guard))
    else:
        opt = ZeroRedundancyOptimizer(first, cls, **guard)
        assert all(r is not None for r in opt._param_regions.values()) == flat
    sched = problem.schedule(opt) if live else None
    ema = optimc.EMA(params, decay=0.9) if live else None
    for step in range(1, problem.STEPS + 1):
        if growing:
            problem.grow(opt, all_groups, step)
        grads = problem.active(opt, problem.grads(params, problem.rows_of(comm.rank, comm.size), step,
                                                  mode == "exact"))
        if flat:
            for k, g in grads.items():
                grad_buffer.views[k][...] = g
            grads = grad_buffer.views
        opt.step(grads)
        if live:
            sched.step()
            problem.live_changes(opt, step)
            ema.update()
    final = {k: v.copy() for k, v in params.items()}
    if live:
        final.update({f"ema:{k}": v for k, v in ema.averages.items()})
    everyone = comm.gather(final, root=0)
    same = comm.rank == 0 and all(np.array_equal(o[k], final[k]) for o in everyone for k in final)
    return final, same, (opt.step_count, opt.skipped_steps)


def main(out, mode):
    """`mode`: "batch" (with the flat, live and clip variants of Adam/SGD) or "exact"
    (with the grow variant: add_param_group after GROW_AT - 1 steps)."""
    cases = [(cls, w, mode, "plain") for cls in optimc.ALL for w in ("ddp", "zero")
             if w == "ddp" or getattr(cls, "elementwise", True)]   # ZeRO-1 shards element-wise ones only
    if mode == "exact":
        cases += [(optimc.Adam, w, "exact", "grow") for w in ("ddp", "zero")]
    if mode == "batch":
        cases += [(optimc.Adam, w, "exact", v) for w in ("ddp", "zero") for v in ("flat", "live")]
        cases += [(cls, "zero", "exact", "clip") for cls in (optimc.SGD, optimc.Adam)]
    results = {}
    for cls, wrapper, case_mode, variant in cases:
        final, same, counts = run(cls, wrapper, case_mode, flat=variant == "flat", live=variant == "live",
                                  clip=variant == "clip", growing=variant == "grow")
        key = f"{cls.__name__}|{wrapper}|{case_mode}|{variant}"
        results.update({f"{key}|{k}": v for k, v in final.items()})
        results[f"{key}|same"] = np.array(same)
        results[f"{key}|counts"] = np.array(counts)
    if comm.rank == 0:
        np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
