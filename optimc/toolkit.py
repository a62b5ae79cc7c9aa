"""Around the step: gradient clipping and parameter averaging, heavy parts in C.

Clipping inside the step (``max_grad_norm=``) and the non-finite guard
(``skip_nonfinite=True``) are optimizer options; see ``Optimizer.set_guard``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from . import _core
from ._checks import flag as _flag, real as _real
from .optimizers import Optimizer
from .optimizers.groups import split_params as _split_params
from .sparse import SparseGrad


def _norm_type(norm_type):
    if isinstance(norm_type, str) and norm_type.lower() == "inf":
        return math.inf
    if isinstance(norm_type, numbers.Real) and not isinstance(norm_type, bool) and norm_type == math.inf:
        return math.inf
    try:
        return _real("norm_type", norm_type, lo=0.0, lo_open=True)
    except ValueError:
        raise ValueError(f"norm_type: expected a number > 0 or inf, got {norm_type!r}") from None


def _with_sparse(grads):
    """(arrays to measure, arrays to change in place) when `grads` holds a
    SparseGrad: its coalesced rows are measured (repeats summed, as a step
    sees them) and its values are scaled or clamped; None without one."""
    items = list(grads.values()) if isinstance(grads, Mapping) else grads
    if not isinstance(items, (list, tuple)) or not any(isinstance(g, SparseGrad) for g in items):
        return None
    measured = [_core.coalesce(g)[1] if isinstance(g, SparseGrad) else g for g in items]
    changed = [g.values if isinstance(g, SparseGrad) else g for g in items]
    return measured, changed


def grad_norm(grads, norm_type=2.0):
    """The total `norm_type`-norm of all grads together (2, 1, any p > 0, or
    inf), computed in double in a fixed order, in one call into C. A
    SparseGrad counts with its coalesced rows (repeated indices summed)."""
    split = _with_sparse(grads)
    return _core.grad_norm(split[0] if split else grads, _norm_type(norm_type))[0]


def clip_grad_norm(grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the grads in place so that their total norm is at most `max_norm`
    (as ``torch.nn.utils.clip_grad_norm_``: factor max_norm / (norm + 1e-6)
    when that is below 1). Returns the total norm before clipping.

    `grads` is a list/tuple/dict of float32/float64 arrays and SparseGrads
    (measured over their coalesced rows; their values are scaled in place)."""
    max_norm = _real("max_norm", max_norm, lo=0.0)
    error_if_nonfinite = _flag("error_if_nonfinite", error_if_nonfinite)
    split = _with_sparse(grads)
    if split:   # the norm over coalesced rows; the values scaled in place
        _core.grad_norm(split[1], 2.0, True)   # writeability, before anything
        measured, grads = split
    else:
        measured = grads
    # checks writeability up front: whether clipping writes depends on the values
    total, _ = _core.grad_norm(measured, _norm_type(norm_type), True)
    if error_if_nonfinite and not math.isfinite(total):
        raise ValueError(f"grads: the total norm is {total} (a grad holds NaN or Inf, or the norm "
                         "overflows); pass error_if_nonfinite=False to clip anyway")
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:   # as torch: a NaN norm makes every grad NaN
        _core.scale_clip(grads, 0, coef)
    return total


def clip_grad_value(grads, clip_value):
    """Clamp every grad element to [-clip_value, clip_value], in place (a
    SparseGrad's values as given, before repeats are summed)."""
    clip_value = _real("clip_value", clip_value, lo=0.0)
    split = _with_sparse(grads)
    _core.scale_clip(split[1] if split else grads, 1, clip_value)


class _Averager:
    """Shared by EMA and SWA: averages held as arrays, updated in C."""

    def __init__(self, params):
        if isinstance(params, Optimizer):
            names = params._names
            arrays = params._params()
        else:
            arrays, names = _split_params(params)
        if not arrays:
            raise ValueError("params: no arrays given")
        for i, p in enumerate(arrays):
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                raise TypeError(f"params[{i}]: expected a float32/float64 ndarray")
            if not p.flags.c_contiguous:
                raise ValueError(f"params[{i}]: must be C-contiguous")
        self._params = arrays
        self._names = names
        self._averages = [np.array(p, copy=True) for p in arrays]
        self.num_updates = 0

    def _describe_arrays(self):
        dtypes = "/".join(sorted({str(a.dtype) for a in self._averages}))
        n = len(self._averages)
        return f"{n} array{'s' * (n != 1)} ({dtypes}, {sum(a.size for a in self._averages):,} elements)"

    @property
    def averages(self):
        """The averaged arrays (a dict when params were given by name)."""
        if self._names is not None:
            return dict(zip(self._names, self._averages))
        return list(self._averages)

    def update(self):
        """Fold the params' current values into the averages (one call into C)."""
        _core.ema(self._averages, self._params, self._weight())
        self.num_updates += 1

    def copy_to(self, params=None):
        """Write the averages into `params` (default: the tracked params)."""
        targets = self._params if params is None else _split_params(params)[0]
        self._check_targets(targets)
        for t, a in zip(targets, self._averages):
            np.copyto(t, a)

    def _check_targets(self, targets):
        """Every target can take its average: checked before any is written."""
        if len(targets) != len(self._averages):
            raise ValueError(f"params: expected {len(self._averages)} arrays, got {len(targets)}")
        for i, (t, a) in enumerate(zip(targets, self._averages)):
            label = f"params[{self._names[i]!r}]" if self._names is not None and targets is self._params \
                else f"params[{i}]"
            if not isinstance(t, np.ndarray) or t.shape != a.shape or t.dtype != a.dtype:
                raise ValueError(f"{label}: expected a {a.dtype} array of shape {a.shape}")
            if not t.flags.writeable:
                raise ValueError(f"{label}: is read-only; cannot write the average into it")

    def swap(self):
        """Exchange params and averages in place (evaluate with the averages,
        then call swap() again to resume training)."""
        self._check_targets(self._params)
        for p, a in zip(self._params, self._averages):
            tmp = p.copy()
            np.copyto(p, a)
            np.copyto(a, tmp)

    def state_dict(self):
        return {"num_updates": self.num_updates, "averages": [a.copy() for a in self._averages]}

    def load_state_dict(self, sd):
        avgs = sd.get("averages") if isinstance(sd, Mapping) else None
        if not isinstance(avgs, list) or len(avgs) != len(self._averages):
            raise ValueError(f"state_dict: expected {len(self._averages)} averages")
        for i, (new, mine) in enumerate(zip(avgs, self._averages)):
            if not isinstance(new, np.ndarray) or new.shape != mine.shape or new.dtype != mine.dtype:
                raise ValueError(f"state_dict: averages[{i}]: expected a {mine.dtype} array of shape {mine.shape}")
        n = sd.get("num_updates")
        if not isinstance(n, numbers.Integral) or n < 0:
            raise ValueError("state_dict: num_updates must be an integer >= 0")
        for new, mine in zip(avgs, self._averages):
            np.copyto(mine, new)
        self.num_updates = int(n)


_WARMUPS = (None, "count", "power")


class EMA(_Averager):
    """Exponential moving average of the params: avg ← avg + w_t·(θ − avg) at each
    ``update()``, t = 1, 2, ... the update's number. The weight w_t:

    * default: w_1 = 1 (the first update copies the params), then w_t = 1 − decay;
      as torch.optim.swa_utils' ``AveragedModel(..., multi_avg_fn=
      get_ema_multi_avg_fn(decay))`` and Keras' ``use_ema``.
    * ``debias=True``: the bias-corrected average of optax's ``ema(decay, debias=True)``,
      m_t / (1 − decay^t) with m the average started at zero; as a weight,
      w_t = (1 − decay) / (1 − decay^t) (so w_1 = 1 too).
    * ``warmup="count"``: w_t = 1 − min(decay, t / (9 + t)), TensorFlow's
      ``ExponentialMovingAverage(decay, num_updates)`` form min(decay, (1 + n)/(10 + n))
      with n = t − 1 updates done before.
    * ``warmup="power"``: w_t = 1 − min(decay, 1 − (1 + (t − 1)/warmup_gamma)^(−warmup_power)),
      timm's ``ModelEmaV3(use_warmup=True)`` decay (defaults gamma 1, power 2/3;
      w_1 = 1).

    With a warm-up (or debiasing) early averages follow the params closely and the
    average does not remember the random initial weights for ~1/(1 − decay) updates.
    """

    debias = False           # class defaults: EMAs pickled before these options existed
    warmup = None
    warmup_gamma = 1.0
    warmup_power = 2.0 / 3.0

    def __init__(self, params, decay=0.999, *, debias=False, warmup=None, warmup_gamma=None,
                 warmup_power=None):
        self.decay = _real("decay", decay, 0.0, 1.0)
        self.debias = _flag("debias", debias)
        if warmup not in _WARMUPS:
            raise ValueError(f"warmup: expected None, 'count' or 'power', got {warmup!r}")
        if self.debias and warmup is not None:
            raise ValueError("debias=True and warmup: choose one (both correct the start of the average)")
        if warmup != "power" and (warmup_gamma is not None or warmup_power is not None):
            raise ValueError("warmup_gamma/warmup_power: only used with warmup='power'")
        self.warmup = warmup
        if warmup == "power":
            if warmup_gamma is not None:
                self.warmup_gamma = _real("warmup_gamma", warmup_gamma, lo=0.0, lo_open=True)
            if warmup_power is not None:
                self.warmup_power = _real("warmup_power", warmup_power, lo=0.0, lo_open=True)
        super().__init__(params)

    def current_decay(self):
        """The decay the next ``update()`` will use (1 − its weight)."""
        return 1.0 - self._weight()

    def _weight(self):
        t = self.num_updates + 1            # this update's number, 1-based
        d = self.decay
        if self.debias:
            return (1.0 - d) / (1.0 - d ** t) if d < 1.0 else (1.0 if t == 1 else 0.0)
        if self.warmup == "count":
            return 1.0 - min(d, t / (9.0 + t))
        if self.warmup == "power":
            return 1.0 - min(d, 1.0 - (1.0 + (t - 1) / self.warmup_gamma) ** -self.warmup_power)
        return 1.0 if t == 1 else 1.0 - d

    def __repr__(self):
        opts = "".join(f", {k}={v!r}" for k, v in (("debias", self.debias), ("warmup", self.warmup)) if v)
        if self.warmup == "power":
            opts += f", warmup_gamma={self.warmup_gamma!r}, warmup_power={self.warmup_power!r}"
        return f"EMA(decay={self.decay!r}{opts}; {self._describe_arrays()}, {self.num_updates} updates)"


class SWA(_Averager):
    """Uniform (Polyak / stochastic weight) averaging, as torch's default
    ``AveragedModel``: after n updates the averages are the mean of the n
    params seen, avg ← avg + (θ − avg)/(n + 1)."""

    def _weight(self):
        return 1.0 / (self.num_updates + 1)

    def __repr__(self):
        return f"SWA({self._describe_arrays()}, {self.num_updates} updates)"
