"""A NumPy MLP trained data-parallel over MPI with optimc.distributed.

    mpiexec -n 2 python examples/mpi_mlp.py           # each rank takes its share of every batch
    mpiexec -n 2 python examples/mpi_mlp.py --zero    # ZeRO-1: each rank keeps half of Adam's state
    python examples/mpi_mlp.py                        # one process

Every rank builds the same model, takes its rows of each mini-batch, computes
the grads of the whole batch's mean loss from those rows alone, and steps the
distributed optimizer, which averages the grads over the ranks. Rank 0 also
trains a copy of the model in one process on the whole batches and prints its
loss beside the ranks' one: the columns agree (float64; MPI adds the ranks'
grads in another order than one process, which moves the last bits only).
Needs mpi4py and an MPI library: pip install "optimc[mpi]".
"""
import argparse

import numpy as np
from mpi4py import MPI

import optimc
from optimc.distributed import DistributedOptimizer, ZeroRedundancyOptimizer, broadcast_parameters


def spirals(n, rng):
    """n points on each of two interleaved spirals, labels 0 and 1."""
    t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    X = np.concatenate([arm, -arm]) + 0.05 * rng.standard_normal((2 * n, 2))
    return X, np.concatenate([np.zeros(n), np.ones(n)])


def init_params(rng, hidden=32):
    return {"W1": rng.standard_normal((2, hidden)) * 2.0, "b1": np.zeros(hidden),
            "W2": rng.standard_normal((hidden, hidden)) / np.sqrt(hidden), "b2": np.zeros(hidden),
            "W3": rng.standard_normal((hidden, 1)) / np.sqrt(hidden), "b3": np.zeros(1)}


def loss_and_grads(p, X, y, batch_size, scale):
    """Sum of the binary cross-entropy over the rows X, y, divided by
    `batch_size` (the whole batch's), and its grads times `scale`."""
    h1 = np.tanh(X @ p["W1"] + p["b1"])
    h2 = np.tanh(h1 @ p["W2"] + p["b2"])
    z = (h2 @ p["W3"] + p["b3"])[:, 0]
    loss = float(np.sum(np.logaddexp(0, z) - y * z)) / batch_size
    dz = ((1 / (1 + np.exp(-z)) - y) * (scale / batch_size))[:, None]
    d2 = (dz @ p["W3"].T) * (1 - h2 ** 2)
    d1 = (d2 @ p["W2"].T) * (1 - h1 ** 2)
    return loss, {"W1": X.T @ d1, "b1": d1.sum(0), "W2": h1.T @ d2, "b2": d2.sum(0),
                  "W3": h2.T @ dz, "b3": dz.sum(0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zero", action="store_true", help="ZeroRedundancyOptimizer instead of DistributedOptimizer")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=200)
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size

    X, y = spirals(1000, np.random.default_rng(0))             # the same data on every rank
    params = init_params(np.random.default_rng(1 + rank))      # different on purpose...
    broadcast_parameters(params, root=0)                        # ...until rank 0's values are everywhere
    if args.zero:
        opt = ZeroRedundancyOptimizer(params, optimc.Adam, lr=1e-2)
    else:
        opt = DistributedOptimizer(optimc.Adam(params, lr=1e-2))
    schedule = optimc.schedules.CosineAnnealingLR(opt, T_max=args.steps)

    if rank == 0:   # the single-process run to compare with
        ref_params = {k: v.copy() for k, v in params.items()}
        ref = optimc.Adam(ref_params, lr=1e-2)
        ref_schedule = optimc.schedules.CosineAnnealingLR(ref, T_max=args.steps)
        kind = "ZeroRedundancyOptimizer" if args.zero else "DistributedOptimizer"
        print(f"{kind} on {size} rank(s), Adam: {opt.state_bytes:,} state bytes on rank 0 "
              f"(one process: {ref.state_bytes:,})")
        print(f"{'step':>5}  {f'loss, {size} rank(s)':>20}  {'loss, one process':>20}")

    order = np.random.default_rng(2)                            # the same batches on every rank
    for step in range(1, args.steps + 1):
        batch = order.choice(len(y), args.batch, replace=False)
        mine = np.array_split(batch, size)[rank]                 # this rank's rows
        # each rank's grads are scaled by `size` because the optimizer averages them
        loss, grads = loss_and_grads(params, X[mine], y[mine], len(batch), size)
        opt.step(grads)
        schedule.step()
        loss = comm.allreduce(loss)                              # the whole batch's mean loss
        if rank == 0:
            ref_loss, ref_grads = loss_and_grads(ref_params, X[batch], y[batch], len(batch), 1)
            ref.step(ref_grads)
            ref_schedule.step()
            if step % 20 == 0 or step == 1:
                print(f"{step:>5}  {loss:20.10f}  {ref_loss:20.10f}")
    if rank == 0:
        worst = max(float(np.max(np.abs(params[k] - ref_params[k]))) for k in params)
        print(f"largest difference between the params of the two runs: {worst:.1e}")


if __name__ == "__main__":
    main()
