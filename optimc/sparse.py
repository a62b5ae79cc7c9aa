"""Row-sparse gradients for embedding tables.

``SparseGrad(indices, values)`` stands in ``step()``'s grads for a param with
ndim >= 1 whose rows (along axis 0) were only partly used in a batch: row
``indices[k]`` has grad ``values[k]``. Repeated indices are summed in the
order given (results do not depend on the thread count), and only the rows
given are read and written, so a step costs what the batch touched, not
what the table holds.

Optimizers that take it (``takers()``): ``SGD`` without momentum and
``Adagrad`` without weight decay (torch.optim's sparse semantics: the dense
rule at the given rows), ``SparseAdam`` (lazy moments) and ``RowWiseAdagrad``
(one accumulator per row). Any other optimizer refuses it with a TypeError
naming these. Which ones do is each rule's mark (``<name>_SPARSE`` in
csrc/rules/<name>.h, published as ``_core.algorithms()[name]["sparse"]``),
which each class repeats as its ``sparse_grads``.
"""
from __future__ import annotations

from ._core import SparseGrad, coalesce as _coalesce

__all__ = ["SparseGrad", "coalesce", "takers"]


def takers():
    """The optimizer classes (of ``optimc.ALL``) that take a SparseGrad, each
    with the hyperparameters that must be 0 for it to: ``{class: (names...)}``."""
    from .optimizers import ALL
    return {cls: cls.sparse_grads for cls in ALL if cls.sparse_grads is not None}


def takers_text(classes) -> str:
    """'SGD (without momentum), ..., SparseAdam and RowWiseAdagrad': the classes
    that take a SparseGrad, as the step's refusals name them."""
    names = [cls.__name__ + (f" (without {', '.join(cls.sparse_grads)})" if cls.sparse_grads else "")
             for cls in classes if cls.sparse_grads is not None]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def coalesce(grad):
    """The distinct rows of a SparseGrad (int64, ascending) and their summed
    values (repeats summed in the order given): what a step applies."""
    return _coalesce(grad)
