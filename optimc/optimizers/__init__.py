"""The optimizers. Every class defined in algorithms.py is registered, in
order, in ``ALL``; ``optimc`` exports each under its name."""
from . import algorithms
from .. import sparse as _sparse
from .base import Optimizer
from .checkpoint import _rebuild  # noqa: F401  (pickles made by optimc 0.1 name it here)
from .groups import ParamGroup

ALL = tuple(Optimizer._registry)
for _cls in ALL:
    _cls.__module__ = "optimc"   # shown and pickled as optimc.Adam, ...
globals().update({cls.__name__: cls for cls in ALL})
# the optimizers that take SparseGrads, named in the step's refusals (binding/sparse.c)
Optimizer._sparse_takers = _sparse.takers_text(ALL)

# Optimizers outside ALL: their step is not step(grads) over any arrays
# (LBFGS takes a closure; Muon takes 2-D params only and runs matrix
# products), so the generic suites that loop over ALL do not fit them;
# tests/test_special_registry.py holds them to the same places instead.
from .lbfgs import LBFGS  # noqa: E402
from .muon import Muon  # noqa: E402

SPECIAL = (LBFGS, Muon)
for _cls in SPECIAL:
    _cls.__module__ = "optimc"

__all__ = ["ALL", "Optimizer", "ParamGroup"] + [cls.__name__ for cls in ALL]
__all__ += ["SPECIAL"] + [cls.__name__ for cls in SPECIAL]
