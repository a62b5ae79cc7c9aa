"""Gradient accumulation: ``MultiSteps(opt, every_k)`` steps `opt` once per k grads.

A batch too large for memory is split into k micro-batches; their grads are
summed (or averaged) into buffers allocated once, and the wrapped optimizer
takes one step with the result on every k-th call — so its clipping
(``max_grad_norm``), its non-finite guard, its step count and any scheduler
driven by it see one step per k micro-batches. Named after optax.MultiSteps.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from . import _core
from ._checks import flag as _flag
from .optimizers import Optimizer

FORMAT = "optimc.MultiSteps"


class MultiSteps:
    """Accumulate grads over `every_k` calls of :meth:`step`, then step `opt` once.

    The grads are summed in place into buffers of the params' dtypes and shapes,
    allocated once, here (a step allocates nothing proportional to the params):
    acc ← acc + g. On the k-th call ``average=True`` (the default, as optax's
    ``use_grad_mean``) divides the sum by k, so the inner optimizer sees the mean
    of the k grads; ``average=False`` hands it the sum.

    ``step(grads)`` takes grads exactly as ``opt.step`` does (a dict for named
    params, else a list/tuple), checks them the same way before touching the
    buffers (a bad grad raises and changes nothing), and returns True when it
    stepped the inner optimizer (every k-th call), else False — step a scheduler
    only then. A callable ``lr`` is evaluated (and checked) once more before the
    k-th grads are added, so that a bad value raises with nothing changed::

        ms = optimc.MultiSteps(opt, every_k=4)
        for micro_batch in batches:
            if ms.step(grads_of(micro_batch)):
                scheduler.step()
    """

    def __init__(self, opt, every_k=4, average=True):
        if not isinstance(opt, Optimizer):
            raise TypeError(f"opt: expected an optimc optimizer, got {type(opt).__name__}")
        if isinstance(every_k, bool) or not isinstance(every_k, numbers.Integral) or every_k < 1:
            raise ValueError(f"every_k: expected an integer >= 1, got {every_k!r}")
        self.optimizer = opt
        self.every_k = int(every_k)
        self.average = _flag("average", average)
        self.mini_step = 0          # grads accumulated since the inner optimizer last stepped
        params = [p for g in opt.param_groups for p in g["params"]]
        self._names = [n for g in opt.param_groups for n in g.get("param_names", ())] or None
        # accumulation buffers in C-allocated memory, made once
        self._buffers = [_core.zeros_like(p) for p in params]

    # ---- the step ----

    @property
    def param_groups(self):
        """The inner optimizer's param groups (so schedulers and optimc.save accept a MultiSteps)."""
        return self.optimizer.param_groups

    def _label(self, i):
        return f"grads[{self._names[i]!r}]" if self._names is not None else f"grads[{i}]"

    def _grad_list(self, grads):
        """The grads as a list in param order, checked as the optimizer's step checks them."""
        n = len(self._buffers)
        if self._names is not None:
            if not isinstance(grads, dict):
                raise TypeError("grads: this optimizer's params are named, so step() takes a dict "
                                f"name -> array with the same keys; got {type(grads).__name__}")
            for name in self._names:
                if name not in grads:
                    raise ValueError(f"grads[{name!r}]: missing")
            for key in grads:
                if key not in self._names:
                    raise ValueError(f"grads[{key!r}]: no param has this name")
            out = [grads[name] for name in self._names]
        else:
            if not isinstance(grads, (list, tuple)):
                raise TypeError(f"grads: expected a list or tuple of {n} arrays (one per param, in "
                                f"order), got {type(grads).__name__}")
            if len(grads) != n:
                raise ValueError(f"grads: expected {n} arrays (one per param), got {len(grads)}")
            out = list(grads)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        for i, (g, p, buf) in enumerate(zip(out, params, self._buffers)):
            label = self._label(i)
            if not isinstance(g, np.ndarray):
                raise TypeError(f"{label}: expected a numpy.ndarray, got {type(g).__name__}")
            if g.dtype != p.dtype or not g.dtype.isnative:
                raise TypeError(f"{label}: expected dtype {p.dtype} (the param's), got {g.dtype}; "
                                f"optimc never casts silently")
            if g.shape != p.shape:
                raise ValueError(f"{label}: expected shape {p.shape} (the param's), got {g.shape}")
            if not (g.flags.c_contiguous and g.flags.aligned):
                raise ValueError(f"{label}: must be C-contiguous and aligned; pass np.ascontiguousarray(grad)")
            state = self.optimizer.state[self._names[i] if self._names is not None else i]
            owned = [p, buf] + [v for v in state.values() if isinstance(v, np.ndarray)]
            if g.size and any(np.may_share_memory(g, a) for a in owned):
                raise ValueError(f"{label}: shares memory with its param, its optimizer state or "
                                 f"the accumulation buffer")
        return out

    def _check_lr(self):
        """Evaluate callable lrs now, so that a bad one raises before the buffers change."""
        t = self.optimizer.step_count
        for gi, group in enumerate(self.optimizer.param_groups):
            lr = group["lr"]
            if callable(lr):
                value = lr(t)
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise TypeError(f"lr: the callable lr of param group {gi} returned {value!r} for "
                                    f"step {t}; expected a number")
                if not (math.isfinite(value) and value >= 0):
                    raise ValueError(f"lr: the callable lr of param group {gi} returned {value!r} for "
                                     f"step {t}; expected a finite number >= 0")

    def step(self, grads):
        """Add `grads` to the buffers; on the k-th call step the inner optimizer with
        their mean (or sum) and clear them. Returns True when the inner optimizer stepped."""
        grads = self._grad_list(grads)
        last = self.mini_step + 1 == self.every_k
        if last:
            self._check_lr()
        for buf, g in zip(self._buffers, grads):
            np.add(buf, g, out=buf)
        if not last:
            self.mini_step += 1
            return False
        if self.average:
            for buf in self._buffers:
                np.divide(buf, self.every_k, out=buf)
        accumulated = dict(zip(self._names, self._buffers)) if self._names is not None else list(self._buffers)
        try:
            self.optimizer.step(accumulated)
        finally:                 # the k grads are used up (or, if the step raised, dropped)
            self.reset()
        return True

    def reset(self):
        """Drop the grads accumulated so far (the inner optimizer is not touched)."""
        for buf in self._buffers:
            buf.fill(0)
        self.mini_step = 0

    # ---- state ----

    def state_dict(self):
        """Plain data: the inner optimizer's state dict, the buffers (copies) and the count."""
        return {"format": FORMAT, "every_k": self.every_k, "average": self.average,
                "mini_step": self.mini_step, "buffers": [b.copy() for b in self._buffers],
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict):
        """Take a state from :meth:`state_dict`; everything is checked first (the
        inner optimizer's part by its own ``load_state_dict``), so a bad one raises
        and changes nothing."""
        sd = state_dict
        if not isinstance(sd, Mapping):
            raise TypeError(f"state_dict: expected a dict, got {type(sd).__name__}")
        if sd.get("format") != FORMAT:
            raise ValueError(f"state_dict: not a MultiSteps state dict (format {sd.get('format')!r})")
        for key in ("every_k", "average"):
            if sd.get(key) != getattr(self, key):
                raise ValueError(f"state_dict: saved with {key}={sd.get(key)!r}, this MultiSteps has "
                                 f"{key}={getattr(self, key)!r}")
        n = sd.get("mini_step")
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= n < self.every_k:
            raise ValueError(f"state_dict: mini_step must be an integer in [0, {self.every_k}), got {n!r}")
        bufs = sd.get("buffers")
        if not isinstance(bufs, (list, tuple)) or len(bufs) != len(self._buffers):
            raise ValueError(f"state_dict: expected {len(self._buffers)} buffers")
        for i, (new, mine) in enumerate(zip(bufs, self._buffers)):
            if not isinstance(new, np.ndarray) or new.shape != mine.shape or new.dtype != mine.dtype:
                raise ValueError(f"state_dict: buffers[{i}]: expected a {mine.dtype} array of shape {mine.shape}")
        self.optimizer.load_state_dict(sd.get("optimizer"))
        for new, mine in zip(bufs, self._buffers):
            np.copyto(mine, new)
        self.mini_step = int(n)

    def __repr__(self):
        return (f"MultiSteps({type(self.optimizer).__name__}, every_k={self.every_k}, "
                f"average={self.average}; {self.mini_step}/{self.every_k} accumulated, "
                f"step {self.optimizer.step_count})")
