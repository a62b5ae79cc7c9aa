"""What DistributedOptimizer and ZeroRedundancyOptimizer share: the step's
agreement on every rank's grads, live hyperparameters as attributes of the
wrapper, and the refusal to pickle a communicator."""
from __future__ import annotations

from . import _mpi
from .flat import check_grads

GUARD_OPTIONS = ("max_grad_norm", "skip_nonfinite")


class MPIOptimizer:
    """Base of the optimizers that step over the ranks of ``comm``. A subclass
    has ``comm``, ``timeout``, ``_params`` and ``_names``; its ``_set_hyper(name,
    value)`` sets a hyperparameter of the wrapped optimizer and returns True, or
    returns False when `name` is none; ``_instead_of_pickle`` (a class attribute)
    says what to save instead."""

    def _agreed_grads(self, grads):
        """This rank's `grads` checked and in the params' order, once every rank's
        are: a bad grad on any rank makes every rank raise here, before anything moves."""
        error, ordered = None, None
        try:
            ordered = check_grads(grads, self._params, self._names)
        except (TypeError, ValueError) as e:
            error = e
        _mpi.agree(self.comm, error, self.timeout, "step()")
        return ordered

    def __setattr__(self, name, value):
        if self._set_hyper(name, value):
            return
        if name in GUARD_OPTIONS:
            raise AttributeError(f"{name}: set it with set_guard(max_grad_norm=..., skip_nonfinite=...)")
        object.__setattr__(self, name, value)

    def __reduce__(self):
        raise TypeError(f"a {type(self).__name__} holds an MPI communicator and cannot be pickled; "
                        f"{self._instead_of_pickle}")
