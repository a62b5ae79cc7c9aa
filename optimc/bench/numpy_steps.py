"""The NumPy competitors: each algorithm's step written as well as NumPy allows.

In-place ``out=`` ufuncs, temporaries allocated once, nothing allocated per step,
scalars folded so that as few passes over memory run as possible; torch.optim's
single-tensor formulas, reassociated only where that saves a pass. The benchmark holds
each to optimc's result (``numpy.allclose`` after a few steps) before timing it.

:data:`NUMPY_STEPS` maps an optimizer class name to its NumPy step. An algorithm
without an entry is benchmarked against the roofline and torch.optim only. A step
implements the hyperparameters it lists in ``uses``, and only the values given in
``requires`` for the others; anything else is refused with a ValueError naming the
option, so a setting can never be silently ignored.
"""

from __future__ import annotations

import abc
import math
from typing import Dict, Mapping, Tuple

import numpy as np

__all__ = ["NumpyStep", "NUMPY_STEPS", "numpy_step_for"]


class NumpyStep(abc.ABC):
    """A NumPy optimizer over a list of arrays. ``block``: run each tensor larger than
    2 * block elements in blocks of ``block`` elements (views made here), so that the
    temporaries stay in cache."""

    uses: Tuple[str, ...] = ()             # hyperparameters the step implements
    requires: Mapping[str, object] = {}    # the only values it implements for these
    fixed: Mapping[str, object] = {}       # what the optimc class fixes (NAG: nesterov)
    n_tmp = 1                              # temporaries of the tensor's size

    def __init__(self, params, hyper, block=None):
        self.h = {**self.fixed, **dict(hyper)}
        self.check(self.h)
        self.t = 0
        self.params = list(params)
        self.state_names = self.buffers(self.h)
        largest = max(p.size for p in self.params)
        dtype = self.params[0].dtype
        span = block if block and largest > 2 * block else largest
        self.tmp = [np.empty(span, dtype) for _ in range(self.n_tmp)]
        self.units = []   # per tensor: (state, [(slice or None, p view, state views, tmp views)])
        for p in self.params:
            pf = p.reshape(-1)
            state = [self.init_state(pf) for _ in self.state_names]
            if block and pf.size > 2 * block:
                parts = []
                for lo in range(0, pf.size, block):
                    hi = min(lo + block, pf.size)
                    parts.append((slice(lo, hi), pf[lo:hi], [s[lo:hi] for s in state],
                                  [t[:hi - lo] for t in self.tmp]))
            else:
                parts = [(None, pf, state, [t[:pf.size] for t in self.tmp])]
            self.units.append((state, parts))

    @classmethod
    def check(cls, hyper):
        """ValueError unless every hyperparameter is one this step implements."""
        for key, value in hyper.items():
            if key in cls.uses:
                continue
            if key not in cls.requires:
                raise ValueError(f"the NumPy {cls.__name__} step does not know option {key!r}")
            if value != cls.requires[key]:
                raise ValueError(f"the NumPy {cls.__name__} step implements only "
                                 f"{key}={cls.requires[key]!r}, not {value!r}")

    @staticmethod
    def buffers(h) -> Tuple[str, ...]:
        return ()

    def init_state(self, pf):
        return np.full(pf.shape, 0.0, pf.dtype)   # written, so its pages are mapped

    @abc.abstractmethod
    def coefs(self, t):
        """The step's scalars for step number ``t`` (once per step, for all tensors)."""

    @staticmethod
    @abc.abstractmethod
    def update(c, p, g, state, tmp):
        """One tensor (or block): ``p`` and ``state`` updated in place from ``g``."""

    def step(self, grads):
        self.t += 1
        c = self.coefs(self.t)
        for (_, parts), g in zip(self.units, grads):
            gf = g.reshape(-1)
            for sl, p, state, tmp in parts:
                self.update(c, p, gf if sl is None else gf[sl], state, tmp)

    def state(self, i):
        return dict(zip(self.state_names, self.units[i][0]))


_PLAIN = {"weight_decay": 0.0, "maximize": False}


class NumpySGD(NumpyStep):
    # without momentum p -= lr g (2 passes); with it b = g (t=1), else
    # b = mu b + (1-dampening) g; d = g + mu b (nesterov) or b; p -= lr d (4-6 passes)
    uses = ("lr", "momentum", "dampening", "nesterov")
    requires = _PLAIN

    @staticmethod
    def buffers(h):
        return ("momentum_buffer",) if h["momentum"] != 0 else ()

    def coefs(self, t):
        h = self.h
        return (t == 1, h["momentum"], 1 - h.get("dampening", 0.0), h.get("nesterov", False),
                -h["lr"])

    @staticmethod
    def update(c, p, g, state, tmp):
        first, mu, damp, nesterov, neg_lr = c
        t = tmp[0]
        if not state:
            np.multiply(g, neg_lr, out=t)
            np.add(p, t, out=p)
            return
        b, = state
        if first:
            np.copyto(b, g)
        else:
            np.multiply(b, mu, out=b)
            if damp != 1:
                np.multiply(g, damp, out=t)
                np.add(b, t, out=b)
            else:
                np.add(b, g, out=b)
        if nesterov:
            np.multiply(b, mu, out=t)
            np.add(t, g, out=t)
            np.multiply(t, neg_lr, out=t)
        else:
            np.multiply(b, neg_lr, out=t)
        np.add(p, t, out=p)


class NumpyNAG(NumpySGD):
    fixed = {"nesterov": True, "dampening": 0.0}


class NumpyAdagrad(NumpyStep):
    # s += g^2; p -= lr_t g / (sqrt(s) + eps)    (7 passes)
    uses = ("lr", "lr_decay", "eps", "initial_accumulator_value")
    requires = _PLAIN

    @staticmethod
    def buffers(h):
        return ("sum",)

    def init_state(self, pf):
        return np.full(pf.shape, self.h["initial_accumulator_value"], pf.dtype)

    def coefs(self, t):
        h = self.h
        return (h["eps"], -h["lr"] / (1 + (t - 1) * h["lr_decay"]))

    @staticmethod
    def update(c, p, g, state, tmp):
        eps, neg_lr = c
        s, = state
        t = tmp[0]
        np.multiply(g, g, out=t)
        np.add(s, t, out=s)
        np.sqrt(s, out=t)
        np.add(t, eps, out=t)
        np.divide(g, t, out=t)
        np.multiply(t, neg_lr, out=t)
        np.add(p, t, out=p)


class NumpyRMSprop(NumpyStep):
    # v = a v + (1-a) g^2; p -= lr g / (sqrt(v) + eps)    (9 passes)
    uses = ("lr", "alpha", "eps")
    requires = {**_PLAIN, "momentum": 0.0, "centered": False}

    @staticmethod
    def buffers(h):
        return ("square_avg",)

    def coefs(self, t):
        h = self.h
        return (h["alpha"], 1 - h["alpha"], h["eps"], -h["lr"])

    @staticmethod
    def update(c, p, g, state, tmp):
        a, w, eps, neg_lr = c
        v, = state
        t = tmp[0]
        np.multiply(v, a, out=v)
        np.multiply(g, g, out=t)
        np.multiply(t, w, out=t)
        np.add(v, t, out=v)
        np.sqrt(v, out=t)
        np.add(t, eps, out=t)
        np.divide(g, t, out=t)
        np.multiply(t, neg_lr, out=t)
        np.add(p, t, out=p)


class NumpyAdadelta(NumpyStep):
    # v = r v + (1-r) g^2; d = sqrt(u + eps) / sqrt(v + eps) * g;
    # u = r u + (1-r) d^2; p -= lr d    (15 passes, 16 if lr != 1)
    uses = ("lr", "rho", "eps")
    requires = _PLAIN
    n_tmp = 2

    @staticmethod
    def buffers(h):
        return ("square_avg", "acc_delta")

    def coefs(self, t):
        h = self.h
        return (h["rho"], 1 - h["rho"], h["eps"], h["lr"])

    @staticmethod
    def update(c, p, g, state, tmp):
        r, w, eps, lr = c
        v, u = state
        t, d = tmp
        np.multiply(v, r, out=v)
        np.multiply(g, g, out=t)
        np.multiply(t, w, out=t)
        np.add(v, t, out=v)
        np.add(v, eps, out=t)
        np.sqrt(t, out=t)
        np.add(u, eps, out=d)
        np.sqrt(d, out=d)
        np.divide(d, t, out=d)
        np.multiply(d, g, out=d)
        np.multiply(u, r, out=u)
        np.multiply(d, d, out=t)
        np.multiply(t, w, out=t)
        np.add(u, t, out=u)
        if lr != 1:
            np.multiply(d, lr, out=d)
        np.subtract(p, d, out=p)


def _moments(w1, b2, w2, g, m, v, t):
    """m += (1-b1)(g-m); v = b2 v + (1-b2) g^2 (7 passes)."""
    np.subtract(g, m, out=t)
    np.multiply(t, w1, out=t)
    np.add(m, t, out=m)
    np.multiply(v, b2, out=v)
    np.multiply(g, g, out=t)
    np.multiply(t, w2, out=t)
    np.add(v, t, out=v)


class NumpyAdam(NumpyStep):
    # p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
    #   == p - (lr sqrt(bc2)/bc1) m / (sqrt(v) + eps sqrt(bc2))
    # 12 passes (13 with decoupled decay)
    uses = ("lr", "betas", "eps")
    requires = {**_PLAIN, "amsgrad": False, "decoupled_weight_decay": False}
    decoupled = False

    @staticmethod
    def buffers(h):
        return ("exp_avg", "exp_avg_sq")

    def coefs(self, t):
        h = self.h
        b1, b2 = h["betas"]
        bc1, bc2s = 1 - b1 ** t, math.sqrt(1 - b2 ** t)
        wd = h.get("weight_decay", 0.0)
        decay = 1 - h["lr"] * wd if self.decoupled and wd else None
        return (1 - b1, b2, 1 - b2, h["eps"] * bc2s, -h["lr"] * bc2s / bc1, decay)

    @staticmethod
    def update(c, p, g, state, tmp):
        w1, b2, w2, eps_hat, neg_step, decay = c
        m, v = state
        t = tmp[0]
        if decay is not None:
            np.multiply(p, decay, out=p)
        _moments(w1, b2, w2, g, m, v, t)
        np.sqrt(v, out=t)
        np.add(t, eps_hat, out=t)
        np.divide(m, t, out=t)
        np.multiply(t, neg_step, out=t)
        np.add(p, t, out=p)


class NumpyAdamW(NumpyAdam):
    uses = ("lr", "betas", "eps", "weight_decay")
    requires = {"maximize": False, "amsgrad": False}
    decoupled = True


class NumpyAdamax(NumpyStep):
    # m += (1-b1)(g-m); u = max(b2 u, |g| + eps); p -= lr/bc1 * m / u    (11 passes)
    uses = ("lr", "betas", "eps")
    requires = _PLAIN

    @staticmethod
    def buffers(h):
        return ("exp_avg", "exp_inf")

    def coefs(self, t):
        h = self.h
        b1, b2 = h["betas"]
        return (1 - b1, b2, h["eps"], -h["lr"] / (1 - b1 ** t))

    @staticmethod
    def update(c, p, g, state, tmp):
        w1, b2, eps, neg_clr = c
        m, u = state
        t = tmp[0]
        np.subtract(g, m, out=t)
        np.multiply(t, w1, out=t)
        np.add(m, t, out=m)
        np.multiply(u, b2, out=u)
        np.abs(g, out=t)
        np.add(t, eps, out=t)
        np.maximum(u, t, out=u)
        np.divide(m, u, out=t)
        np.multiply(t, neg_clr, out=t)
        np.add(p, t, out=p)


class NumpyNAdam(NumpyStep):
    # r = sqrt(v / bc2) + eps; p -= a g/r + b m/r with a, b from the mu schedule
    # (17 passes)
    uses = ("lr", "betas", "eps", "momentum_decay")
    requires = {**_PLAIN, "decoupled_weight_decay": False}
    n_tmp = 2

    def __init__(self, params, hyper, block=None):
        super().__init__(params, hyper, block)
        self.mu_product = 1.0

    @staticmethod
    def buffers(h):
        return ("exp_avg", "exp_avg_sq")

    def coefs(self, t):
        h = self.h
        b1, b2 = h["betas"]
        mu = b1 * (1 - 0.5 * 0.96 ** (t * h["momentum_decay"]))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * h["momentum_decay"]))
        self.mu_product *= mu
        grad_step = -h["lr"] * (1 - mu) / (1 - self.mu_product)
        avg_step = -h["lr"] * mu_next / (1 - self.mu_product * mu_next)
        return (1 - b1, b2, 1 - b2, 1 - b2 ** t, h["eps"], grad_step, avg_step)

    @staticmethod
    def update(c, p, g, state, tmp):
        w1, b2, w2, bc2, eps, grad_step, avg_step = c
        m, v = state
        t, r = tmp
        _moments(w1, b2, w2, g, m, v, t)
        np.divide(v, bc2, out=r)
        np.sqrt(r, out=r)
        np.add(r, eps, out=r)
        np.divide(g, r, out=t)
        np.multiply(t, grad_step, out=t)
        np.add(p, t, out=p)
        np.divide(m, r, out=t)
        np.multiply(t, avg_step, out=t)
        np.add(p, t, out=p)


class NumpyRAdam(NumpyStep):
    # rho_t > 5: p -= (lr rect sqrt(bc2) / bc1) m / (sqrt(v) + eps)    (12 passes)
    # else:      p -= (lr / bc1) m                                     (9 passes)
    uses = ("lr", "betas", "eps")
    requires = {**_PLAIN, "decoupled_weight_decay": False}

    @staticmethod
    def buffers(h):
        return ("exp_avg", "exp_avg_sq")

    def coefs(self, t):
        h = self.h
        b1, b2 = h["betas"]
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2 ** t / bc2
        if rho_t > 5:
            rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                             / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            step = -h["lr"] * rect * math.sqrt(bc2) / bc1
        else:
            rect, step = None, -h["lr"] / bc1
        return (1 - b1, b2, 1 - b2, h["eps"], rect is not None, step)

    @staticmethod
    def update(c, p, g, state, tmp):
        w1, b2, w2, eps, adapted, step = c
        m, v = state
        t = tmp[0]
        _moments(w1, b2, w2, g, m, v, t)
        if adapted:
            np.sqrt(v, out=t)
            np.add(t, eps, out=t)
            np.divide(m, t, out=t)
            np.multiply(t, step, out=t)
        else:
            np.multiply(m, step, out=t)
        np.add(p, t, out=p)


class NumpyLion(NumpyStep):
    # c = b1 m + (1-b1) g; p = p (1 - lr wd) - lr sign(c); m = b2 m + (1-b2) g
    # (11 passes, 12 with decay). c is computed in optimc's order, so that its sign,
    # which moves p by a whole lr, is the same.
    uses = ("lr", "betas", "weight_decay")
    requires = {"maximize": False}
    n_tmp = 2

    @staticmethod
    def buffers(h):
        return ("exp_avg",)

    def coefs(self, t):
        h = self.h
        b1, b2 = h["betas"]
        decay = 1 - h["lr"] * h["weight_decay"] if h["weight_decay"] else None
        return (b1, 1 - b1, b2, 1 - b2, -h["lr"], decay)

    @staticmethod
    def update(c, p, g, state, tmp):
        b1, w1, b2, w2, neg_lr, decay = c
        m, = state
        t, u = tmp
        if decay is not None:
            np.multiply(p, decay, out=p)
        np.multiply(m, b1, out=t)
        np.multiply(g, w1, out=u)
        np.add(t, u, out=t)
        np.sign(t, out=t)
        np.multiply(t, neg_lr, out=t)
        np.add(p, t, out=p)
        np.multiply(m, b2, out=m)
        np.multiply(g, w2, out=u)
        np.add(m, u, out=m)


#: optimizer class name -> its NumPy step
NUMPY_STEPS: Dict[str, type] = {
    "SGD": NumpySGD, "Momentum": NumpySGD, "NAG": NumpyNAG,
    "Adagrad": NumpyAdagrad, "RMSprop": NumpyRMSprop, "Adadelta": NumpyAdadelta,
    "Adam": NumpyAdam, "AdamW": NumpyAdamW, "Adamax": NumpyAdamax,
    "NAdam": NumpyNAdam, "RAdam": NumpyRAdam, "Lion": NumpyLion,
}


def numpy_step_for(case):
    """The NumPy step class for a case, or None if there is none."""
    return NUMPY_STEPS.get(case.name)
