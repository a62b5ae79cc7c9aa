"""Who optimc is compared with, for one case: the roofline, NumPy and torch.optim.

* ``roofline``   -- ``optimc._core.stream``: the least arithmetic that reads and writes
  the same bytes per element as the step (the case's arrays: param, grad, state
  buffers), at the same SIMD level and thread count;
* ``numpy`` / ``np-block`` -- the case's NumPy step (:mod:`optimc.bench.numpy_steps`),
  plain and over cache-sized blocks, where one exists;
* ``torch-loop`` / ``torch-foreach`` / ``torch-fused`` -- ``torch.optim`` with
  ``foreach=False`` / ``foreach=True`` / ``fused=True``, on ``torch.from_numpy``
  tensors with ``.grad`` set, where torch has the algorithm and that variant.

Every competitor takes a few steps from optimc's start with the same grads and is
compared with optimc's result (:func:`close`) before it is timed.
"""

from __future__ import annotations

import contextlib
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

__all__ = ["IMPLS", "TORCH_VARIANTS", "NUMPY_BLOCK", "TORCH_EQUIVALENTS", "torch_equivalent",
           "make_torch", "stream_arrays", "close", "tolerances"]

IMPLS = ("optimc", "roofline", "numpy", "np-block", "torch-loop", "torch-foreach", "torch-fused")
TORCH_VARIANTS = (("torch-loop", {"foreach": False}), ("torch-foreach", {"foreach": True}),
                  ("torch-fused", {"fused": True}))
NUMPY_BLOCK = 8192          # elements per block of the blocked NumPy step

#: optimc classes whose torch.optim class has another name, or needs options that the
#: optimc class fixes: class name -> (torch.optim class, extra keyword arguments).
#: Any other class is compared with the torch.optim class of the same name, if any.
TORCH_EQUIVALENTS: Mapping[str, Tuple[str, Mapping[str, object]]] = {
    "Momentum": ("SGD", {}),
    "NAG": ("SGD", {"nesterov": True}),
}


def torch_equivalent(case, torch) -> Optional[Tuple[type, Dict[str, object]]]:
    """(torch.optim class, keyword arguments) computing the case's step, or None."""
    name, extra = TORCH_EQUIVALENTS.get(case.name, (case.name, {}))
    cls = getattr(torch.optim, name, None)
    if cls is None:
        return None
    return cls, {**case.hyper, **extra}


@contextlib.contextmanager
def _torch_default_dtype(torch, dtype):
    """torch keeps scalar state (``step``, NAdam's ``mu_product``) in its default dtype,
    float32 unless told otherwise; a float64 run needs it in float64 as optimc has it."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def make_torch(case, torch, params: List[np.ndarray], grads: List[np.ndarray], variant: dict,
               steps: int):
    """A torch.optim optimizer over tensors sharing ``params``' memory, after ``steps``
    steps with ``grads`` (which create its state, in the params' dtype). Each tensor's
    ``.grad`` is a copy of its grad, set afresh before every one of these steps: torch's
    foreach and fused SGD with ``nesterov=True`` add to ``.grad`` in place. Raises what
    torch raises for an unsupported variant (say, no fused RMSprop)."""
    cls, kwargs = torch_equivalent(case, torch)
    tensors = [torch.from_numpy(p) for p in params]
    with _torch_default_dtype(torch, params[0].dtype):
        opt = cls(tensors, **kwargs, **variant)
        for _ in range(steps):
            for t, g in zip(tensors, grads):
                t.grad = torch.from_numpy(g.copy())
            opt.step()
    return opt


def stream_arrays(case, n: int, dtype) -> Tuple[List[np.ndarray], int]:
    """(arrays, n_write) for ``_core.stream``: as many arrays of ``n`` elements as the
    step touches per element, as many written as it writes."""
    n_arrays, n_write = case.stream_arrays
    arrays = [np.full(n, 1.0, dtype) for _ in range(n_write)]
    arrays += [np.full(n, 0.0, dtype) for _ in range(n_arrays - n_write)]
    return arrays, n_write


def tolerances(dtype) -> Tuple[float, float]:
    """(rtol, atol) of the check against optimc's result."""
    return (1e-5, 1e-6) if np.dtype(dtype) == np.float32 else (1e-10, 1e-12)


def close(got, want, dtype) -> Tuple[bool, float]:
    """(all ``numpy.allclose``, worst |got - want| / tolerance) over lists of arrays."""
    rtol, atol = tolerances(dtype)
    worst = 0.0
    ok = True
    for a, b in zip(got, want):
        a = np.asarray(a)
        b = np.asarray(b)
        if not np.allclose(a, b, rtol=rtol, atol=atol):
            ok = False
        d = np.abs(a.astype(np.float64) - b.astype(np.float64)) / (atol + rtol * np.abs(b))
        worst = max(worst, float(d.max()) if d.size else 0.0)
    return ok, worst
