"""Data parallelism: every rank holds all params and all optimizer state, and
steps on the grads averaged over the ranks.

The average is taken in the grads' dtype: one in-place ``Allreduce(SUM)`` per
dtype over a contiguous buffer, then a multiply by 1/N (rounded to the dtype).
Every rank then holds the same averaged grads, so the wrapped optimizer's own
guard (``max_grad_norm=``, ``skip_nonfinite=``) sees the global norm and makes
the same decision on every rank.
"""
from __future__ import annotations

import time

import numpy as np

from ..optimizers import Optimizer
from . import _mpi
from .flat import Layout, aligned_empty, split_arrays
from .wrapper import MPIOptimizer


def _opt_params(opt):
    """(params in order, names or None) of an optimc optimizer."""
    params = [p for g in opt.param_groups for p in g["params"]]
    if all("param_names" in g for g in opt.param_groups):
        names = [n for g in opt.param_groups for n in g["param_names"]]
    else:
        names = None
    return params, names


def _load_everywhere(comm, opt, state_dict, timeout, what):
    """`opt.load_state_dict(state_dict)` on every rank, or on none: a rank that
    loaded puts its old state back when another rank refused."""
    backup = opt.state_dict()
    error = None
    try:
        opt.load_state_dict(state_dict)
    except (TypeError, ValueError) as e:
        error = e
    try:
        _mpi.agree(comm, error, timeout, what)
    except Exception:
        if error is None:
            opt.load_state_dict(backup)
        raise


class DistributedOptimizer(MPIOptimizer):
    """Wraps an optimc optimizer so that ``step(grads)`` steps on the grads
    averaged over the ranks of `comm` (default ``MPI.COMM_WORLD``).

    Create the same optimizer on every rank (same params, shapes and options),
    start from the same params (:func:`broadcast_parameters`), and call
    ``step`` on every rank with that rank's grads. Everything else — param
    groups, live hyperparameters (``opt.lr = ...``), schedulers, ``state``,
    ``state_dict()`` — is the wrapped optimizer's, identical on every rank.

    Each step first checks every rank's grads with one small collective, so a
    rank with a bad grad makes every rank raise and none update. A rank that
    waits there more than `timeout` seconds (default 600; None: forever) for
    the others aborts the MPI job with a message instead of hanging.

    When the grads tile one buffer per dtype (e.g. ``FlatBuffer(params).views``)
    they are averaged in place, with no copy; otherwise they are copied into a
    reusable buffer (allocated at the first step that needs it) and left unchanged.
    """

    _instead_of_pickle = "pickle its .optimizer or save its state_dict()"

    def __init__(self, optimizer, comm=None, *, timeout=_mpi.DEFAULT_TIMEOUT):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected an optimc optimizer (e.g. optimc.Adam(params)), "
                            f"got {type(optimizer).__name__}")
        object.__setattr__(self, "optimizer", optimizer)
        object.__setattr__(self, "comm", _mpi.communicator(comm))
        object.__setattr__(self, "timeout", _mpi.check_timeout(timeout))
        object.__setattr__(self, "last_step_times", {})
        self._set_layout("DistributedOptimizer()")

    def _set_layout(self, what):
        params, names = _opt_params(self.optimizer)
        layout = Layout(params)
        signature = f"{type(self.optimizer).__name__} params {layout.signature()}"
        _mpi.agree(self.comm, None, self.timeout, what, signature)
        object.__setattr__(self, "_params", params)
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_layout", layout)
        object.__setattr__(self, "_scratch", {})        # dtype -> (buffer, views), made when first needed

    def step(self, grads):
        """Average `grads` over the ranks, then step the wrapped optimizer once."""
        t0 = time.perf_counter()
        ordered = self._agreed_grads(grads)
        t1 = time.perf_counter()
        MPI, size, layout = _mpi.mpi(), self.comm.size, self._layout
        averaged = list(ordered)
        t_pack = 0.0
        for dtype in layout.slots:
            tp = time.perf_counter()
            buf = layout.region(ordered, dtype, writeable=True)
            if buf is None:
                if dtype not in self._scratch:
                    scratch = aligned_empty(layout.sizes[dtype], dtype)
                    self._scratch[dtype] = (scratch, layout.views({dtype: scratch}))
                buf, views = self._scratch[dtype]
                layout.pack(ordered, dtype, buf)
                for i, _, _ in layout.slots[dtype]:
                    averaged[i] = views[i]
            t_pack += time.perf_counter() - tp
            if size > 1:
                self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
                buf *= dtype.type(1.0 / size)
        t2 = time.perf_counter()
        if self._names is not None:
            averaged = dict(zip(self._names, averaged))
        self.optimizer.step(averaged)
        t3 = time.perf_counter()
        object.__setattr__(self, "last_step_times", {
            "agree": t1 - t0, "pack": t_pack, "communicate": t2 - t1 - t_pack, "step": t3 - t2})

    def add_param_group(self, param_group):
        """Add a group to the wrapped optimizer (on every rank, with the same shapes)."""
        error = None
        try:   # check the group on its own first, so that a rank that refuses it cannot leave the others waiting
            type(self.optimizer)([param_group], **self.optimizer.defaults)
        except (TypeError, ValueError) as e:
            error = e
        _mpi.agree(self.comm, error, self.timeout, "add_param_group()")
        self.optimizer.add_param_group(param_group)
        self._set_layout("add_param_group()")

    def load_state_dict(self, state_dict):
        """Load `state_dict` on every rank, or, if any rank refuses it, on none."""
        _load_everywhere(self.comm, self.optimizer, state_dict, self.timeout, "load_state_dict()")

    def __getattr__(self, name):
        if name == "optimizer":   # not set yet: __init__ failed
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def _set_hyper(self, name, value):
        if name not in self.optimizer.defaults:
            return False
        setattr(self.optimizer, name, value)
        return True

    def __repr__(self):
        return f"DistributedOptimizer({self.optimizer!r}, rank {self.comm.rank} of {self.comm.size})"


def _arrays_of(params):
    """(arrays, names) from a list/dict of arrays or an optimizer (its params)."""
    from .zero import ZeroRedundancyOptimizer
    if isinstance(params, DistributedOptimizer):
        params = params.optimizer
    if isinstance(params, Optimizer):
        return _opt_params(params)
    if isinstance(params, ZeroRedundancyOptimizer):
        return params._params, params._names
    arrays, names = split_arrays(params, "params")
    for i, a in enumerate(arrays):
        label = f"params[{names[i]!r}]" if names is not None else f"params[{i}]"
        if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{label}: expected a float32 or float64 ndarray, "
                            f"got {getattr(a, 'dtype', type(a).__name__)}")
        if not (a.flags.c_contiguous and a.flags.writeable):
            raise ValueError(f"{label}: must be C-contiguous and writeable")
    return arrays, names


def broadcast_parameters(params, root=0, comm=None, *, timeout=_mpi.DEFAULT_TIMEOUT):
    """Copy rank `root`'s values of `params` into every rank's, in place: one
    ``Bcast`` per dtype. `params` is a list or dict of arrays, or an optimizer
    (plain, DistributedOptimizer or ZeroRedundancyOptimizer: its params).
    Every rank must pass arrays of the same shapes and dtypes."""
    comm = _mpi.communicator(comm)
    timeout = _mpi.check_timeout(timeout)
    root = _mpi.check_root(root, comm)
    error, arrays, layout = None, None, None
    try:
        arrays, _ = _arrays_of(params)
        layout = Layout(arrays)
    except (TypeError, ValueError) as e:
        error = e
    _mpi.agree(comm, error, timeout, "broadcast_parameters()", layout and layout.signature())
    for dtype, n in layout.sizes.items():
        buf = layout.region(arrays, dtype)
        if buf is not None:
            comm.Bcast(buf, root=root)
            continue
        buf = aligned_empty(n, dtype)
        if comm.rank == root:
            layout.pack(arrays, dtype, buf)
        comm.Bcast(buf, root=root)
        if comm.rank != root:
            layout.unpack(buf, dtype, arrays)


def broadcast_optimizer_state(optimizer, root=0, comm=None, *, timeout=_mpi.DEFAULT_TIMEOUT):
    """Load rank `root`'s optimizer state (``state_dict()``) into every rank's
    optimizer (a plain optimc optimizer or a DistributedOptimizer), or, if any
    rank refuses it, into none."""
    from .zero import ZeroRedundancyOptimizer
    if isinstance(optimizer, ZeroRedundancyOptimizer):
        raise TypeError("optimizer: a ZeroRedundancyOptimizer's state is sharded (each element's state "
                        "lives on one rank), so there is none to broadcast; give it a saved state with "
                        "load_state_dict(state_dict, root=...)")
    if isinstance(optimizer, DistributedOptimizer):
        comm = optimizer.comm if comm is None else comm
        optimizer = optimizer.optimizer
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer: expected an optimc optimizer, got {type(optimizer).__name__}")
    comm = _mpi.communicator(comm)
    timeout = _mpi.check_timeout(timeout)
    root = _mpi.check_root(root, comm)
    signature = f"{type(optimizer).__name__} params {Layout(_opt_params(optimizer)[0]).signature()}"
    _mpi.agree(comm, None, timeout, "broadcast_optimizer_state()", signature)
    state_dict = comm.bcast(optimizer.state_dict() if comm.rank == root else None, root=root)
    _load_everywhere(comm, optimizer, state_dict, timeout, "broadcast_optimizer_state()")
