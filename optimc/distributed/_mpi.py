"""MPI access for optimc.distributed: the lazy mpi4py import, and the agreement
step that every collective operation starts with.

The agreement is one small non-blocking Allreduce of (error flag, layout hash).
It runs before any data moves, so a rank with bad input makes every rank raise
the same error and no rank changes anything. It is also where a rank that never
arrives is noticed: after `timeout` seconds the waiting ranks print why and call
``comm.Abort``, which ends the whole job instead of leaving it hanging.
"""
from __future__ import annotations

import numbers
import os
import sys
import time
import zlib

import numpy as np

INSTALL_HINT = 'optimc.distributed needs mpi4py and an MPI library: pip install "optimc[mpi]"'
DEFAULT_TIMEOUT = 600.0   # seconds a rank waits for the others in the agreement step
_SPIN_SECONDS = 1.0       # poll without sleeping this long (MPI progresses only inside calls),
_SLEEP_SECONDS = 1e-3     # then poll every millisecond


def mpi():
    """The mpi4py.MPI module, or an ImportError that says what to install."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return MPI


def communicator(comm):
    """`comm`, or COMM_WORLD when None; refuses anything that is not an intracommunicator."""
    MPI = mpi()
    if comm is None:
        return MPI.COMM_WORLD
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        raise TypeError(f"comm: expected an mpi4py intracommunicator such as MPI.COMM_WORLD, "
                        f"got {comm!r}")
    return comm


def check_timeout(timeout):
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout > 0:
        raise ValueError(f"timeout: expected a number of seconds > 0, or None to wait forever; "
                         f"got {timeout!r}")
    return float(timeout)


def check_root(root, comm):
    if isinstance(root, bool) or not isinstance(root, numbers.Integral) or not 0 <= root < comm.size:
        raise ValueError(f"root: expected a rank in [0, {comm.size}), got {root!r}")
    return int(root)


def wait(comm, request, timeout, what):
    """Complete `request`; abort the job if that takes longer than `timeout` seconds."""
    if timeout is None:
        request.Wait()
        return
    MPI = mpi()
    start = MPI.Wtime()
    while not request.Test():
        waited = MPI.Wtime() - start
        if waited > timeout:
            sys.stderr.write(
                f"optimc.distributed: rank {comm.rank} of {comm.size} waited {waited:.1f} s in {what} "
                f"for the other ranks (timeout={timeout:g}); one of them has raised or left the "
                f"training loop. Aborting the MPI job.\n")
            sys.stderr.flush()
            comm.Abort(1)
        if waited > _SPIN_SECONDS:
            time.sleep(_SLEEP_SECONDS)
        else:   # yield the core: with more ranks than cores, the rank we wait for may need it
            os.sched_yield()


def _layout_hash(signature):
    return 0 if signature is None else zlib.crc32(signature.encode())


def agree(comm, error, timeout, what, signature=None):
    """Every rank calls this at the same point. `error` is None or the exception
    this rank found in its own input; `signature` (a string) must be equal on
    every rank. If any rank has an error or the signatures differ, every rank
    raises the same exception, naming the ranks at fault."""
    MPI = mpi()
    h = _layout_hash(signature)
    send = np.array([error is not None, h, -h], np.int64)
    recv = np.empty(3, np.int64)
    wait(comm, comm.Iallreduce(send, recv, op=MPI.MAX), timeout, what)
    if recv[0] == 0 and recv[1] == -recv[2]:
        return
    # Someone is at fault: every rank is past the agreement, so these calls cannot hang.
    mine = None if error is None else (type(error), str(error))
    errors = comm.allgather(mine)
    if recv[0]:
        faults = [(r, e) for r, e in enumerate(errors) if e is not None]
        cls = faults[0][1][0]
        text = "; ".join(f"rank {r}: {msg}" for r, (_, msg) in faults)
        raise cls(f"{what} refused on {len(faults)} of {comm.size} ranks, so no rank changed "
                  f"anything. {text}")
    signatures = comm.allgather(signature)
    first = next(r for r, s in enumerate(signatures) if s != signatures[0])
    raise ValueError(f"{what}: the ranks disagree: rank 0 has {signatures[0]}, rank {first} has "
                     f"{signatures[first]}; every rank must pass the same layout")


def mpi_type(dtype):
    MPI = mpi()
    return {np.dtype(np.float32): MPI.FLOAT, np.dtype(np.float64): MPI.DOUBLE}[np.dtype(dtype)]
