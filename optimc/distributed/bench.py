"""Benchmark of the distributed optimizers: step time, where it goes, and
optimizer state per rank, on 1 rank and on all the ranks of the job.

    mpiexec -n 2 python -m optimc.distributed.bench            # Adam, 1e7 float32
    mpiexec -n 2 python -m optimc.distributed.bench --size 1000000 --steps 10

Rank 0 first runs alone (on MPI.COMM_SELF): plain optimc, then each wrapper on
one rank; then every rank runs each wrapper together. Params and grads are one
array each, so nothing is packed. Times are medians over the steps, the
slowest rank's per step; "agree" is the check that all ranks are there with
valid grads, "comm" the data collectives, "C step" the optimizer's own step.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import optimc

from . import _mpi
from .data_parallel import DistributedOptimizer
from .zero import ZeroRedundancyOptimizer

_PARTS = ("agree", "pack", "communicate", "step")


def _measure(comm, make, size, dtype, steps, warmup):
    """(median ms per step, {part: median ms}, state bytes on this rank)."""
    rng = np.random.default_rng(comm.rank)
    param = rng.standard_normal(size).astype(dtype)
    grad = (rng.standard_normal(size) * 1e-2).astype(dtype)
    opt = make(param, comm)
    totals, parts = [], {p: [] for p in _PARTS}
    for i in range(warmup + steps):
        comm.Barrier()
        t = time.perf_counter()
        opt.step([grad])
        elapsed = comm.allreduce(time.perf_counter() - t, op=_mpi.mpi().MAX)
        if i >= warmup:
            totals.append(elapsed)
            times = getattr(opt, "last_step_times", None) or {"step": elapsed}
            for p in _PARTS:
                parts[p].append(comm.allreduce(times.get(p, 0.0), op=_mpi.mpi().MAX))
    ms = {p: 1e3 * statistics.median(v) for p, v in parts.items()}
    return 1e3 * statistics.median(totals), ms, opt.state_bytes


def _runs():
    plain = ("optimc.Adam", lambda p, comm: optimc.Adam([p]))
    ddp = ("DistributedOptimizer", lambda p, comm: DistributedOptimizer(optimc.Adam([p]), comm))
    zero = ("ZeroRedundancyOptimizer", lambda p, comm: ZeroRedundancyOptimizer([p], optimc.Adam, comm))
    return [plain, ddp, zero], [ddp, zero]


def main(argv=None, prog="python -m optimc.distributed.bench"):
    ap = argparse.ArgumentParser(prog=prog,
                                 description="Step time and state bytes per rank of the distributed "
                                             "optimizers (run it under mpiexec -n N).")
    ap.add_argument("--size", type=int, default=10_000_000, help="elements (default 1e7)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--threads", type=int, default=1,
                    help="optimc threads per rank (default 1: one core per rank)")
    args = ap.parse_args(argv)
    if args.size < 1 or args.steps < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("--size, --steps and --threads must be >= 1, --warmup >= 0")
    MPI = _mpi.mpi()
    world = MPI.COMM_WORLD
    optimc.set_num_threads(args.threads)
    alone, together = _runs()
    rows = []
    if world.rank == 0:
        for name, make in alone:
            rows.append((1, name, *_measure(MPI.COMM_SELF, make, args.size, args.dtype, args.steps, args.warmup)))
    # the other ranks wait without spinning, so that rank 0 alone has the machine
    done = world.Ibarrier()
    while not done.Test():
        time.sleep(0.01)
    if world.size > 1:
        for name, make in together:
            rows.append((world.size, name, *_measure(world, make, args.size, args.dtype, args.steps,
                                                     args.warmup)))
    if world.rank != 0:
        return 0
    print(f"optimc.distributed benchmark: Adam on {args.size:,} {args.dtype} elements, median of "
          f"{args.steps} steps, {args.threads} optimc thread(s) per rank, {world.size} rank(s); "
          f"{MPI.Get_library_version().splitlines()[0].strip()}")
    print(f"{'ranks':>5}  {'optimizer':<24} {'step ms':>8} {'agree':>7} {'pack':>7} {'comm':>8} "
          f"{'C step':>8} {'state MB/rank':>14}")
    for ranks, name, total, ms, state in rows:
        print(f"{ranks:>5}  {name:<24} {total:8.2f} {ms['agree']:7.3f} {ms['pack']:7.3f} "
              f"{ms['communicate']:8.2f} {ms['step']:8.2f} {state / 1e6:14.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
