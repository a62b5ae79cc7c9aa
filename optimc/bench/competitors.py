"""Who optimc is compared with, for one case: the roofline, NumPy and torch.optim.

* ``roofline``   -- ``optimc._core.stream``: the least arithmetic that reads and writes
  the same bytes per element as the step (the case's arrays: param, grad, state
  buffers), pass by pass for a two-pass step, at the same SIMD level and thread count;
* ``numpy`` / ``np-block`` -- the case's NumPy step (:mod:`optimc.bench.numpy_steps`),
  plain and over cache-sized blocks, where one exists;
* ``torch-loop`` / ``torch-foreach`` / ``torch-fused`` -- ``torch.optim`` with
  ``foreach=False`` / ``foreach=True`` / ``fused=True``, on ``torch.from_numpy``
  tensors with ``.grad`` set, where torch has the algorithm and that variant; for an
  algorithm outside torch.optim whose reference is a torch package
  (:data:`TORCH_PACKAGES`: Schedule-Free), that package's optimizer in the same columns.

Every competitor takes a few steps from optimc's start with the same grads and is
compared with optimc's result (:func:`close`) before it is timed.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

__all__ = ["IMPLS", "TORCH_VARIANTS", "NUMPY_BLOCK", "TORCH_EQUIVALENTS", "TORCH_PACKAGES",
           "torch_equivalent", "no_torch_reason", "reference_name", "make_torch", "roofline_runner",
           "stream_passes", "close", "tolerances"]

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


#: optimc classes that torch.optim lacks but a torch-based package implements, as the
#: reference their tests compare with: class name -> (module, class). They fill the
#: torch columns: ``foreach=False`` (t-loop) and ``foreach=True`` (t-foreach); they have
#: no fused step, and no ``maximize`` (compared only where optimc's is False).
TORCH_PACKAGES: Mapping[str, Tuple[str, str]] = {
    "SGDScheduleFree": ("schedulefree", "SGDScheduleFree"),
    "AdamWScheduleFree": ("schedulefree", "AdamWScheduleFree"),
}


def _package_class(case):
    """The case's class in its torch package (None if it has none or it is missing)."""
    module, name = TORCH_PACKAGES[case.name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(mod, name, None)


def torch_equivalent(case, torch) -> Optional[Tuple[type, Dict[str, object]]]:
    """(torch.optim class, or a torch package's, keyword arguments) computing the case's
    step, or None (:func:`no_torch_reason` says why)."""
    if case.name in TORCH_PACKAGES:
        cls = _package_class(case)
        if cls is None or case.hyper.get("maximize"):
            return None
        return cls, {k: v for k, v in case.hyper.items() if k != "maximize"}
    name, extra = TORCH_EQUIVALENTS.get(case.name, (case.name, {}))
    cls = getattr(torch.optim, name, None)
    if cls is None:
        return None
    return cls, {**case.hyper, **extra}


def no_torch_reason(case) -> str:
    """Why the torch columns of a case are empty when torch is installed."""
    if case.name in TORCH_PACKAGES:
        module, name = TORCH_PACKAGES[case.name]
        if _package_class(case) is None:
            return f"{module} not installed (its {name} is the reference)"
        return f"{module}.{name} has no maximize"
    return f"torch.optim has no {case.name}"


def _is_package(cls) -> bool:
    return not cls.__module__.startswith("torch.")


def reference_name(cls) -> str:
    """'torch.optim.ASGD', 'schedulefree.SGDScheduleFree': what the torch columns ran."""
    return f"{cls.__module__.split('.')[0]}.{cls.__name__}" if _is_package(cls) \
        else f"torch.optim.{cls.__name__}"


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
    package = _is_package(cls)
    if package and "fused" in variant:
        raise NotImplementedError(f"{reference_name(cls)} has no fused step")
    tensors = [torch.from_numpy(p) for p in params]
    with _torch_default_dtype(torch, params[0].dtype):
        opt = cls(tensors, **kwargs, **variant)
        if package:
            opt.train()   # Schedule-Free's step refuses to run in eval mode, its initial one
        for _ in range(steps):
            for t, g in zip(tensors, grads):
                t.grad = torch.from_numpy(g.copy())
            opt.step()
    return opt


def stream_passes(case, n: int, dtype) -> List[Tuple[List[np.ndarray], int]]:
    """(arrays, n_write) for each ``_core.stream`` call of the roofline: one array of
    ``n`` elements per array the step touches (param, grad, state buffers), shared by
    its passes as the step's are; each pass lists the arrays it writes first (each
    read too), then those it only reads. Arrays written anywhere start at 1, the
    others at 0."""
    written = {a for p in case.passes for a in p.write}
    names = {a for p in case.passes for a in p.read}
    arrays = {a: np.full(n, 1.0 if a in written else 0.0, dtype) for a in sorted(names)}
    return [([arrays[a] for a in p.write] + [arrays[a] for a in p.read if a not in p.write],
             len(p.write)) for p in case.passes]


def roofline_runner(case, n: int, dtype):
    """A runner (:mod:`optimc.bench.timing`: ``run(k)`` makes k calls) of the roofline's
    step over ``n`` elements: one ``_core.stream`` call per pass of the case's step (a
    one-pass step's is the stream call itself, with no Python around it)."""
    from .. import _core
    from .timing import calls
    passes = stream_passes(case, n, dtype)
    if len(passes) == 1:
        return calls(_core.stream, *passes[0])
    stream = _core.stream

    def run(k):
        for _ in range(k):
            for arrays, n_write in passes:
                stream(arrays, n_write)
    return run


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
