"""optimc over MPI (mpi4py): data-parallel and ZeRO-1 sharded optimizers.

    mpiexec -n 4 python train.py

    from optimc.distributed import DistributedOptimizer, broadcast_parameters
    broadcast_parameters(params, root=0)                     # same start on every rank
    opt = DistributedOptimizer(optimc.Adam(params, lr=1e-3))
    opt.step(grads)            # grads of this rank's part of the batch; averaged over the ranks

    opt = ZeroRedundancyOptimizer(params, optimc.Adam, lr=1e-3)   # each rank keeps 1/N of the state

Importing this package does not import mpi4py; the first call that needs MPI
does, and raises an ImportError naming what to install when it is missing
(``pip install "optimc[mpi]"``). ``FlatBuffer`` needs no MPI.
"""
from .data_parallel import DistributedOptimizer, broadcast_optimizer_state, broadcast_parameters
from .flat import FlatBuffer
from .zero import ZeroRedundancyOptimizer

__all__ = ["DistributedOptimizer", "ZeroRedundancyOptimizer", "broadcast_parameters",
           "broadcast_optimizer_state", "FlatBuffer"]
