"""Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step
back"): ``Lookahead(opt, k=5, alpha=0.5)`` wraps any optimc optimizer.

The wrapped ("fast") optimizer steps the params as usual; every k-th step the
slow weights φ move toward them and the params restart from there:
    φ ← φ + α(θ − φ);   θ ← φ
The slow weights start as the params at the first step (optax's
``LookaheadParams.init_synced``). They live in buffers the C side allocates,
made once here, and the interpolation runs in C (``_core.ema``).
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from . import _core
from ._checks import real as _real
from .optimizers import Optimizer

FORMAT = "optimc.Lookahead"


def _check_k(value, name="k"):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int >= 1 (fast steps per sync), got {value!r}")
    if value < 1:
        raise ValueError(f"{name}: expected an int >= 1 (fast steps per sync), got {value!r}")
    return int(value)


def _check_alpha(value, name="alpha"):
    return _real(name, value, 0.0, 1.0)


class Lookahead:
    """Run `optimizer` (the fast weights) and every `k` steps pull the slow weights
    toward the params by `alpha` and restart the params from them.

    ``step(grads)`` takes grads as ``optimizer.step`` does and returns True on the
    steps that synchronised. A step the inner optimizer skips (``skip_nonfinite``)
    does not count. :attr:`slow_weights` gives the slow weights (views; the point
    the paper evaluates between syncs). ``state_dict``/``load_state_dict`` hold
    the inner optimizer's state with the slow weights and the count; pickling and
    ``copy.deepcopy`` work. optax's names: ``sync_period`` is `k`,
    ``slow_step_size`` is `alpha`; optax's ``reset_state=False`` is the behaviour
    (the inner optimizer's state is kept across syncs)."""

    def __init__(self, optimizer, k=5, alpha=0.5):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected an optimc optimizer, got {type(optimizer).__name__}")
        self._k = _check_k(k)
        self._alpha = _check_alpha(alpha)
        self.optimizer = optimizer
        self.steps_since_sync = 0   # fast steps since the last sync
        self._started = False       # slow weights taken from the params (at the first step)
        self._slow = [_core.zeros_like(p) for p in self._params()]

    @property
    def k(self):
        """Fast steps between two syncs (optax's ``sync_period``)."""
        return self._k

    @property
    def alpha(self):
        """How far a sync moves the slow weights toward the params (optax's ``slow_step_size``)."""
        return self._alpha

    @property
    def param_groups(self):
        """The inner optimizer's param groups (so schedulers accept a Lookahead)."""
        return self.optimizer.param_groups

    def _params(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _names(self):
        names = [n for g in self.optimizer.param_groups for n in g.get("param_names", ())]
        return names or None

    @property
    def slow_weights(self):
        """The slow weights φ as views of their buffers, in param order (a dict for
        named params); before the first step, the params themselves."""
        views = list(self._slow) if self._started else self._params()
        names = self._names()
        return dict(zip(names, views)) if names is not None else views

    # ---- the step ----

    def step(self, grads):
        """One fast step; on every k-th counted step also the sync. Returns True if it synced."""
        params = self._params()
        if not self._started:
            for slow, p in zip(self._slow, params):
                np.copyto(slow, p)
        skipped = self.optimizer.skipped_steps
        try:
            self.optimizer.step(grads)
        except BaseException:
            if not self._started:
                for slow in self._slow:
                    slow.fill(0)
            raise
        self._started = True
        if self.optimizer.skipped_steps != skipped:
            return False
        self.steps_since_sync += 1
        if self.steps_since_sync < self._k:
            return False
        _core.ema(self._slow, params, self._alpha)     # φ ← φ + α(θ − φ), in C
        for p, slow in zip(params, self._slow):
            np.copyto(p, slow)                          # θ ← φ
        self.steps_since_sync = 0
        return True

    # ---- state ----

    def state_dict(self):
        """Plain data: the inner optimizer's state dict, the slow weights (copies), the count."""
        return {"format": FORMAT, "k": self._k, "alpha": self._alpha,
                "steps_since_sync": self.steps_since_sync, "started": self._started,
                "slow_weights": [s.copy() for s in self._slow],
                "optimizer": self.optimizer.state_dict()}

    def _checked(self, sd):
        if not isinstance(sd, Mapping):
            raise TypeError(f"state_dict: expected a dict, got {type(sd).__name__}")
        if sd.get("format") != FORMAT:
            raise ValueError(f"state_dict: not a Lookahead state dict (format {sd.get('format')!r})")
        k = _check_k(sd.get("k"), "state_dict['k']")
        alpha = _check_alpha(sd.get("alpha"), "state_dict['alpha']")
        started = sd.get("started")
        if not isinstance(started, bool):
            raise TypeError(f"state_dict['started']: expected True or False, got {started!r}")
        n = sd.get("steps_since_sync")
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) or not 0 <= n < k:
            raise ValueError(f"state_dict['steps_since_sync']: expected an int in [0, {k}), got {n!r}")
        slow = sd.get("slow_weights")
        if not isinstance(slow, (list, tuple)) or len(slow) != len(self._slow):
            raise ValueError(f"state_dict['slow_weights']: expected a list of {len(self._slow)} arrays")
        for i, (new, mine) in enumerate(zip(slow, self._slow)):
            if not isinstance(new, np.ndarray) or new.shape != mine.shape or new.dtype != mine.dtype:
                got = f"{new.dtype} {new.shape}" if isinstance(new, np.ndarray) else type(new).__name__
                raise ValueError(f"state_dict['slow_weights'][{i}]: expected a {mine.dtype} array of shape "
                                 f"{mine.shape}, got {got}")
        return k, alpha, int(n), started, slow

    def load_state_dict(self, state_dict):
        """Take a state from :meth:`state_dict` (`k` and `alpha` included); everything
        is checked first (the inner optimizer's part by its own ``load_state_dict``),
        so a bad one raises and changes nothing."""
        k, alpha, n, started, slow = self._checked(state_dict)
        self.optimizer.load_state_dict(state_dict.get("optimizer"))
        self._set_own(k, alpha, n, started, slow)

    def _set_own(self, k, alpha, n, started, slow):
        for new, mine in zip(slow, self._slow):
            np.copyto(mine, new)
        self._k, self._alpha, self.steps_since_sync, self._started = k, alpha, n, started

    def __reduce__(self):
        sd = self.state_dict()
        del sd["optimizer"]                     # the inner optimizer pickles itself
        return (_rebuild, (self.optimizer, sd))

    def __repr__(self):
        return (f"Lookahead({type(self.optimizer).__name__}, k={self._k}, alpha={self._alpha}; "
                f"{self.steps_since_sync}/{self._k} steps since the last sync, "
                f"step {self.optimizer.step_count})")


def _rebuild(optimizer, own):
    la = Lookahead(optimizer, own["k"], own["alpha"])
    la._set_own(*la._checked({**own, "optimizer": None}))
    return la
