"""Row-sparse gradients for embedding tables.

``SparseGrad(indices, values)`` stands in ``step()``'s grads for a param with
ndim >= 1 whose rows (along axis 0) were only partly used in a batch: row
``indices[k]`` has grad ``values[k]``. Repeated indices are summed in the
order given (results do not depend on the thread count), and only the rows
given are read and written, so a step costs what the batch touched, not
what the table holds.

Optimizers that take it: ``SGD`` without momentum and ``Adagrad`` without
weight decay (torch.optim's sparse semantics: the dense rule at the given
rows), ``SparseAdam`` (lazy moments) and ``RowWiseAdagrad`` (one accumulator
per row). Any other optimizer refuses it with a TypeError naming these.
"""
from __future__ import annotations

from ._core import SparseGrad, coalesce as _coalesce

__all__ = ["SparseGrad", "coalesce"]


def coalesce(grad):
    """The distinct rows of a SparseGrad (int64, ascending) and their summed
    values (repeats summed in the order given): what a step applies."""
    return _coalesce(grad)
