"""Pure-NumPy reference implementation of every optimc update rule.

This module is deliberately simple: one small function per algorithm, written
the way ``torch.optim``'s single-tensor (for-loop, ``foreach=False``) code in
PyTorch 2.x writes it, *including the order of the floating-point operations*,
so that float64 results agree with ``torch.optim`` to ~1e-12 relative and can
serve as an independent oracle for the C kernels.

Conventions
-----------
* All tensor arithmetic happens in the parameter's own dtype: every Python
  scalar (lr, betas, ...) is first rounded to that dtype, exactly as torch's
  CPU kernels do (``Scalar.to<scalar_t>()``).  Scalar-only quantities (bias
  corrections, NAdam's mu schedule, RAdam's rectification term, Adagrad's
  decayed lr) are computed in Python floats (double), as torch computes them.
* The torch tensor primitives used by ``torch.optim`` are spelled out as small
  helpers (``_add``, ``_addcmul``, ``_addcdiv``, ``_lerp``) that reproduce the
  scalar formulas of ATen's CPU kernels::

      add(a, b, alpha)          = a + alpha * b
      addcmul(s, t1, t2, value) = s + value * t1 * t2     (left to right)
      addcdiv(s, t1, t2, value) = s + value * t1 / t2     (left to right)
      lerp(s, e, w)             = s + w * (e - s)          if |w| < 0.5
                                  e - (e - s) * (1 - w)    otherwise

  (ATen's vectorised paths may fuse a multiply-add; that changes results by at
  most an ulp per operation, far below the test tolerances.)
* Notation as in the SPEC: t is the step number, 1 on the first step.  Each
  update function receives the step number already incremented.

Public API
----------
``Reference(name, params, **hyper)``
    A tiny optimizer: ``params`` is a list of arrays (copied) or a list of
    param-group dicts ``{"params": [arrays], <hyper overrides>}``.
    ``.step(grads)`` takes grads in flat param order; ``.params`` is the flat
    list of (reference-owned) arrays; ``.state[i]`` is a dict ``{"step": int,
    <buffer name>: ndarray, ...}`` using PyTorch's buffer names;
    ``.param_groups`` is a list of dicts whose hyperparameters may be edited
    between steps.  ``lr`` may be a callable of the 0-based step count.
``run(name, params, grad_seq, **hyper)``
    Run ``len(grad_seq)`` steps and return the ``Reference`` (``.params``,
    ``.state``).
``ALGORITHMS``
    Per optimc class name, the test description that goes with its reference
    rule (registered with ``describe`` right below each rule): the option grid
    the suites run, an option-rich configuration, a second group's overrides,
    and the torch.optim class it is compared with (None where torch has none).
``DEFAULTS``
    optimc's constructor defaults per class name, read from the classes' own
    signatures (the one place they are written).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["ALGORITHMS", "DEFAULTS", "RULES", "Reference", "run", "reference_step", "describe"]

# ---------------------------------------------------------------------------
# the test description of each algorithm, registered beside its rule
# ---------------------------------------------------------------------------
@dataclass
class Algorithm:
    name: str
    update: Callable
    grids: List[Tuple[dict, dict, Callable]]   # (base, {option: values}, keep) each
    rich: dict                                  # most options on (groups, lr edits, resume)
    second_group: dict                          # a second group's overrides
    torch: Optional[Tuple[str, dict]]           # torch.optim class and fixed kwargs


ALGORITHMS: Dict[str, Algorithm] = {}

_SAME_NAME = object()


def describe(name: str, update: Callable, *, grids, rich, second_group, torch=_SAME_NAME):
    """Register optimc class ``name``: its reference ``update`` and how the suites
    test it. ``grids``: (base, axes[, keep]) tuples whose products are the option
    combinations run; ``torch``: (torch.optim class name, fixed kwargs), the same
    name by default, None where torch has no counterpart."""
    norm = [(g[0], g[1], g[2] if len(g) > 2 else (lambda h: True)) for g in grids]
    ALGORITHMS[name] = Algorithm(name, update, norm, rich, second_group,
                                 (name, {}) if torch is _SAME_NAME else torch)


class _Defaults(Mapping):
    """optimc's defaults per class name, read from each class's signature."""

    def __getitem__(self, name):
        import inspect

        import optimc
        sig = inspect.signature(getattr(optimc, name).__init__)
        return {k: p.default for k, p in sig.parameters.items()
                if p.default is not p.empty and p.kind is p.POSITIONAL_OR_KEYWORD}

    def __iter__(self):
        return iter(ALGORITHMS)

    def __len__(self):
        return len(ALGORITHMS)


DEFAULTS = _Defaults()

WD = [0.0, 0.05]
MAX = [False, True]


# ---------------------------------------------------------------------------
# torch primitives, in the tensor's dtype
# ---------------------------------------------------------------------------
def _c(x, like):
    """Round the Python scalar ``x`` to the dtype of array ``like``."""
    return like.dtype.type(x)


def _add(a, b, alpha):
    """torch.add(a, b, alpha=alpha) = a + alpha * b"""
    return a + _c(alpha, a) * b


def _addcmul(s, t1, t2, value):
    """torch.addcmul(s, t1, t2, value=value) = s + value * t1 * t2"""
    return s + _c(value, s) * t1 * t2


def _addcdiv(s, t1, t2, value):
    """torch.addcdiv(s, t1, t2, value=value) = s + value * t1 / t2"""
    return s + _c(value, s) * t1 / t2


def _lerp(s, e, weight):
    """torch.lerp(s, e, weight) with a scalar weight (ATen's two-branch formula)."""
    w = _c(weight, s)
    if abs(w) < 0.5:
        return s + w * (e - s)
    return e - (e - s) * (_c(1.0, s) - w)


def _set(dst, value):
    """Write ``value`` into array ``dst`` in place (works for 0-d arrays too)."""
    dst[...] = value


def _prologue(p, g, h, decoupled):
    """maximize (g <- -g), then weight decay: decoupled p <- p(1 - lr*wd) or L2 g <- g + wd*p."""
    g = -g if h["maximize"] else g
    wd = h["weight_decay"]
    if wd != 0:
        if decoupled:
            _set(p, p * _c(1 - h["lr"] * wd, p))
        else:
            g = _add(g, p, wd)
    return g


# ---------------------------------------------------------------------------
# one update rule per algorithm: (param, grad, state, hyper) -> None, in place
# ``state["step"]`` has already been incremented to t.
# ---------------------------------------------------------------------------
def sgd_update(p, g, st, h):
    """b <- g on t=1, else b <- mu*b + (1-dampening)*g; d = g + mu*b (nesterov) or b; p <- p - lr*d"""
    g = _prologue(p, g, h, decoupled=False)
    mu = h["momentum"]
    if mu != 0:
        if "momentum_buffer" not in st:
            st["momentum_buffer"] = np.array(g, dtype=p.dtype, copy=True)
        else:
            b = st["momentum_buffer"]
            _set(b, _add(b * _c(mu, b), g, 1 - h["dampening"]))
        b = st["momentum_buffer"]
        g = _add(g, b, mu) if h["nesterov"] else b
    _set(p, _add(p, g, -h["lr"]))


describe("SGD", sgd_update,
         grids=[(dict(lr=0.01), dict(momentum=[0.0, 0.9], dampening=[0.0, 0.3], nesterov=[False, True],
                                     weight_decay=WD, maximize=MAX),
                 lambda h: (not h["nesterov"] or (h["momentum"] > 0 and h["dampening"] == 0))
                 and (h["momentum"] > 0 or h["dampening"] == 0))],
         rich=dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.05),
         second_group=dict(momentum=0.5, maximize=True))


def adagrad_update(p, g, st, h):
    """clr = lr/(1+(t-1)*lr_decay); G <- G + g*g; p <- p - clr*g/(sqrt(G)+eps)"""
    if "sum" not in st:
        st["sum"] = np.full_like(p, h["initial_accumulator_value"])
    t = st["step"]
    g = _prologue(p, g, h, decoupled=False)
    clr = h["lr"] / (1 + (t - 1) * h["lr_decay"])
    s = st["sum"]
    _set(s, _addcmul(s, g, g, 1))
    std = np.sqrt(s) + _c(h["eps"], p)
    _set(p, _addcdiv(p, g, std, -clr))


describe("Adagrad", adagrad_update,
         grids=[(dict(lr=0.05), dict(lr_decay=[0.0, 0.05], initial_accumulator_value=[0.0, 0.1],
                                     weight_decay=WD, maximize=MAX)),
                (dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.5, weight_decay=0.05),
                 dict(eps=[1e-10, 1e-3]))],
         rich=dict(lr=0.05, lr_decay=0.05, initial_accumulator_value=0.1, weight_decay=0.05),
         second_group=dict(lr_decay=0.0, eps=1e-6))


def rmsprop_update(p, g, st, h):
    """v <- a*v + (1-a)*g^2; centered: m <- lerp(m, g, 1-a), avg = sqrt(v - m^2) else sqrt(v);
    avg += eps; momentum: b <- mu*b + g/avg, p <- p - lr*b; else p <- p - lr*g/avg"""
    if "square_avg" not in st:
        st["square_avg"] = np.zeros_like(p)
        if h["momentum"] > 0:
            st["momentum_buffer"] = np.zeros_like(p)
        if h["centered"]:
            st["grad_avg"] = np.zeros_like(p)
    g = _prologue(p, g, h, decoupled=False)
    alpha = h["alpha"]
    v = st["square_avg"]
    _set(v, _addcmul(v * _c(alpha, v), g, g, 1 - alpha))
    if h["centered"]:
        ga = st["grad_avg"]
        _set(ga, _lerp(ga, g, 1 - alpha))
        avg = np.sqrt(_addcmul(v, ga, ga, -1))
    else:
        avg = np.sqrt(v)
    avg = avg + _c(h["eps"], p)
    if h["momentum"] > 0:
        b = st["momentum_buffer"]
        _set(b, _addcdiv(b * _c(h["momentum"], b), g, avg, 1))
        _set(p, _add(p, b, -h["lr"]))
    else:
        _set(p, _addcdiv(p, g, avg, -h["lr"]))


describe("RMSprop", rmsprop_update,
         grids=[(dict(lr=0.01), dict(centered=[False, True], momentum=[0.0, 0.9], weight_decay=WD, maximize=MAX)),
                (dict(lr=0.01, weight_decay=0.05), dict(centered=[False, True], momentum=[0.0, 0.5],
                                                        alpha=[0.99, 0.7], eps=[1e-6]))],
         rich=dict(lr=0.01, centered=True, momentum=0.9, weight_decay=0.05),
         second_group=dict(alpha=0.99, momentum=0.5))


def adadelta_update(p, g, st, h):
    """v <- rho*v + (1-rho)*g^2; d = sqrt(u+eps)/sqrt(v+eps)*g; u <- rho*u + (1-rho)*d^2; p <- p - lr*d"""
    if "square_avg" not in st:
        st["square_avg"] = np.zeros_like(p)
        st["acc_delta"] = np.zeros_like(p)
    g = _prologue(p, g, h, decoupled=False)
    rho, eps = h["rho"], _c(h["eps"], p)
    v, u = st["square_avg"], st["acc_delta"]
    _set(v, _addcmul(v * _c(rho, v), g, g, 1 - rho))
    std = np.sqrt(v + eps)
    delta = np.sqrt(u + eps)
    delta = delta / std * g
    _set(u, _addcmul(u * _c(rho, u), delta, delta, 1 - rho))
    _set(p, _add(p, delta, -h["lr"]))


describe("Adadelta", adadelta_update,
         grids=[(dict(lr=1.0), dict(weight_decay=WD, maximize=MAX, rho=[0.9, 0.95])),
                (dict(weight_decay=0.05), dict(lr=[0.5], rho=[0.8], eps=[1e-4]))],
         rich=dict(lr=1.0, rho=0.9, weight_decay=0.05),
         second_group=dict(rho=0.95, eps=1e-4))


def adam_update(p, g, st, h, decoupled=None):
    """m <- lerp(m, g, 1-b1); v <- b2*v + (1-b2)*g^2; (amsgrad: vmax <- max(vmax, v), use vmax);
    p <- p - lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)"""
    if decoupled is None:
        decoupled = h["decoupled_weight_decay"]
    if "exp_avg" not in st:
        st["exp_avg"] = np.zeros_like(p)
        st["exp_avg_sq"] = np.zeros_like(p)
        if h["amsgrad"]:
            st["max_exp_avg_sq"] = np.zeros_like(p)
    t = float(st["step"])
    g = _prologue(p, g, h, decoupled=decoupled)
    b1, b2 = h["betas"]
    m, v = st["exp_avg"], st["exp_avg_sq"]
    _set(m, _lerp(m, g, 1 - b1))
    _set(v, _addcmul(v * _c(b2, v), g, g, 1 - b2))
    bias_correction1 = 1 - b1 ** t
    bias_correction2 = 1 - b2 ** t
    step_size = h["lr"] / bias_correction1
    bias_correction2_sqrt = bias_correction2 ** 0.5
    if h["amsgrad"]:
        vmax = st["max_exp_avg_sq"]
        _set(vmax, np.maximum(vmax, v))
        denom = np.sqrt(vmax) / _c(bias_correction2_sqrt, p) + _c(h["eps"], p)
    else:
        denom = np.sqrt(v) / _c(bias_correction2_sqrt, p) + _c(h["eps"], p)
    _set(p, _addcdiv(p, m, denom, -step_size))


def adamw_update(p, g, st, h):
    """Adam with decoupled weight decay."""
    adam_update(p, g, st, h, decoupled=True)


describe("Adam", adam_update,
         grids=[(dict(lr=0.01), dict(amsgrad=[False, True], weight_decay=WD, maximize=MAX,
                                     decoupled_weight_decay=[False, True]),
                 lambda h: h["weight_decay"] != 0 or not h["decoupled_weight_decay"]),
                (dict(lr=0.01, weight_decay=0.05), dict(betas=[(0.8, 0.95), (0.5, 0.9)], eps=[1e-6],
                                                        amsgrad=[False, True],
                                                        decoupled_weight_decay=[False, True]))],
         rich=dict(lr=0.01, amsgrad=True, weight_decay=0.05),
         second_group=dict(betas=(0.8, 0.95), eps=1e-6))
describe("AdamW", adamw_update,
         grids=[(dict(lr=0.01), dict(amsgrad=[False, True], weight_decay=[0.0, 0.01, 0.1], maximize=MAX)),
                (dict(lr=0.01, weight_decay=0.1), dict(betas=[(0.8, 0.95)], eps=[1e-6], amsgrad=[False, True]))],
         rich=dict(lr=0.01, amsgrad=True, weight_decay=0.1),
         second_group=dict(betas=(0.8, 0.95), maximize=True))


def adamax_update(p, g, st, h):
    """m <- lerp(m, g, 1-b1); u <- max(b2*u, |g|+eps); p <- p - lr/(1-b1^t) * m/u"""
    if "exp_avg" not in st:
        st["exp_avg"] = np.zeros_like(p)
        st["exp_inf"] = np.zeros_like(p)
    t = float(st["step"])
    g = _prologue(p, g, h, decoupled=False)
    b1, b2 = h["betas"]
    m, u = st["exp_avg"], st["exp_inf"]
    _set(m, _lerp(m, g, 1 - b1))
    _set(u, np.maximum(u * _c(b2, u), np.abs(g) + _c(h["eps"], p)))
    clr = h["lr"] / (1 - b1 ** t)
    _set(p, _addcdiv(p, m, u, -clr))


describe("Adamax", adamax_update,
         grids=[(dict(lr=0.01), dict(weight_decay=WD, maximize=MAX)),
                (dict(lr=0.01, weight_decay=0.05), dict(betas=[(0.8, 0.95), (0.5, 0.9)], eps=[1e-6, 1e-2]))],
         rich=dict(lr=0.01, weight_decay=0.05),
         second_group=dict(betas=(0.8, 0.95), eps=1e-6))


def nadam_update(p, g, st, h):
    """PyTorch NAdam: mu_t = b1*(1 - 0.5*0.96^(t*psi)), mu_{t+1} likewise;
    P_t = P_{t-1}*mu_t (state "mu_product"); m <- lerp(m, g, 1-b1); v <- b2*v + (1-b2)*g^2;
    denom = sqrt(v/(1-b2^t)) + eps;
    p <- p - lr*(1-mu_t)/(1-P_t) * g/denom - lr*mu_{t+1}/(1-P_t*mu_{t+1}) * m/denom"""
    if "exp_avg" not in st:
        st["exp_avg"] = np.zeros_like(p)
        st["exp_avg_sq"] = np.zeros_like(p)
        st["mu_product"] = 1.0
    t = float(st["step"])
    b1, b2 = h["betas"]
    lr, psi = h["lr"], h["momentum_decay"]
    bias_correction2 = 1 - b2 ** t
    g = _prologue(p, g, h, decoupled=h["decoupled_weight_decay"])
    mu = b1 * (1.0 - 0.5 * (0.96 ** (t * psi)))
    mu_next = b1 * (1.0 - 0.5 * (0.96 ** ((t + 1) * psi)))
    st["mu_product"] = mu_product = st["mu_product"] * mu
    m, v = st["exp_avg"], st["exp_avg_sq"]
    _set(m, _lerp(m, g, 1 - b1))
    _set(v, _addcmul(v * _c(b2, v), g, g, 1 - b2))
    denom = np.sqrt(v / _c(bias_correction2, v))
    mu_product_next = mu_product * mu_next
    denom = denom + _c(h["eps"], p)
    _set(p, _addcdiv(p, g, denom, -lr * (1.0 - mu) / (1.0 - mu_product)))
    _set(p, _addcdiv(p, m, denom, (-lr * mu_next) / (1.0 - mu_product_next)))


describe("NAdam", nadam_update,
         grids=[(dict(lr=0.01), dict(weight_decay=WD, decoupled_weight_decay=[False, True], maximize=MAX),
                 lambda h: h["weight_decay"] != 0 or not h["decoupled_weight_decay"]),
                (dict(lr=0.01, weight_decay=0.05), dict(momentum_decay=[1e-2, 0.0], betas=[(0.8, 0.95)],
                                                        eps=[1e-6], decoupled_weight_decay=[False, True]))],
         rich=dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True),
         second_group=dict(betas=(0.8, 0.95), momentum_decay=1e-2))


def radam_update(p, g, st, h):
    """m <- lerp(m, g, 1-b1); v <- b2*v + (1-b2)*g^2; rho_inf = 2/(1-b2) - 1;
    rho_t = rho_inf - 2 t b2^t/(1-b2^t); if rho_t > 5:
    p <- p - (m/(1-b1^t)) * lr * sqrt(1-b2^t)/(sqrt(v)+eps) * r_t,
    r_t = sqrt((rho_t-4)(rho_t-2)rho_inf / ((rho_inf-4)(rho_inf-2)rho_t));
    else p <- p - (m/(1-b1^t)) * lr"""
    if "exp_avg" not in st:
        st["exp_avg"] = np.zeros_like(p)
        st["exp_avg_sq"] = np.zeros_like(p)
    t = float(st["step"])
    g = _prologue(p, g, h, decoupled=h["decoupled_weight_decay"])
    b1, b2 = h["betas"]
    lr, eps = h["lr"], h["eps"]
    m, v = st["exp_avg"], st["exp_avg_sq"]
    _set(m, _lerp(m, g, 1 - b1))
    _set(v, _addcmul(v * _c(b2, v), g, g, 1 - b2))
    bias_correction1 = 1 - b1 ** t
    bias_correction2 = 1 - b2 ** t
    bias_corrected_exp_avg = m / _c(bias_correction1, m)
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * (b2 ** t) / bias_correction2
    if rho_t > 5.0:
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf
                / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
        # torch: (bias_correction2 ** 0.5) / tensor  ==  tensor.reciprocal() * scalar
        adaptive_lr = (_c(1.0, p) / (np.sqrt(v) + _c(eps, p))) * _c(bias_correction2 ** 0.5, p)
        update = bias_corrected_exp_avg * _c(lr, p) * adaptive_lr * _c(rect, p)
    else:
        update = bias_corrected_exp_avg * _c(lr, p)
    _set(p, _add(p, update, -1.0))


# beta2 = 0.9: rho_inf = 19, rectification starts at t = 5 instead of t = 6
describe("RAdam", radam_update,
         grids=[(dict(lr=0.01), dict(weight_decay=WD, decoupled_weight_decay=[False, True], maximize=MAX),
                 lambda h: h["weight_decay"] != 0 or not h["decoupled_weight_decay"]),
                (dict(lr=0.01, weight_decay=0.05), dict(betas=[(0.8, 0.95), (0.5, 0.9)], eps=[1e-6],
                                                        decoupled_weight_decay=[False, True]))],
         rich=dict(lr=0.01, weight_decay=0.05),
         second_group=dict(betas=(0.8, 0.95), maximize=True))


def lion_update(p, g, st, h):
    """p <- p(1 - lr*wd); c = b1*m + (1-b1)*g; p <- p - lr*sign(c); m <- b2*m + (1-b2)*g"""
    if "exp_avg" not in st:
        st["exp_avg"] = np.zeros_like(p)
    g = _prologue(p, g, h, decoupled=True)
    b1, b2 = h["betas"]
    m = st["exp_avg"]
    c = _add(m * _c(b1, m), g, 1 - b1)
    _set(p, _add(p, np.sign(c), -h["lr"]))
    _set(m, _add(m * _c(b2, m), g, 1 - b2))


describe("Lion", lion_update,
         grids=[(dict(lr=1e-3), dict(weight_decay=[0.0, 0.1], maximize=MAX, betas=[(0.9, 0.99), (0.95, 0.98)]))],
         rich=dict(lr=1e-3, weight_decay=0.1),
         second_group=dict(betas=(0.95, 0.98), maximize=True),
         torch=None)


def rprop_update(p, g, st, h):
    """f = etaplus/etaminus/1 as sign(g*prev) is +/-/0; step_size <- clamp(step_size*f, min, max)
    (starts at lr); g <- 0 where f = etaminus; p <- p - sign(g)*step_size; prev <- g"""
    if "prev" not in st:
        st["prev"] = np.zeros_like(p)
        st["step_size"] = np.full_like(p, h["lr"])
    g = _prologue(p, g, h, decoupled=False)
    etaminus, etaplus = h["etas"]
    lo, hi = h["step_sizes"]
    prev, size = st["prev"], st["step_size"]
    s = g * prev   # compared with 0, as torch.sign(s) (which is 0 for NaN) is
    f = np.where(s > 0, _c(etaplus, p), np.where(s < 0, _c(etaminus, p), _c(1.0, p))).astype(p.dtype)
    _set(size, np.clip(size * f, _c(lo, p), _c(hi, p)))
    g = np.where(f == _c(etaminus, p), _c(0.0, p), g).astype(p.dtype)
    sign = ((g > 0).astype(p.dtype) - (g < 0).astype(p.dtype))   # torch.sign: 0 for NaN
    _set(p, p - sign * size)
    _set(prev, g)


describe("Rprop", rprop_update,
         grids=[(dict(lr=0.01), dict(etas=[(0.5, 1.2), (0.3, 1.5)], maximize=MAX, weight_decay=WD)),
                (dict(lr=0.05), dict(step_sizes=[(1e-6, 50.0), (1e-3, 0.02)]))],
         rich=dict(lr=0.01, etas=(0.4, 1.3), step_sizes=(1e-4, 1.0)),
         second_group=dict(etas=(0.5, 1.2), maximize=True))


def _momentum_update(p, g, st, h):
    sgd_update(p, g, st, {**h, "nesterov": False})


def _nag_update(p, g, st, h):
    sgd_update(p, g, st, {**h, "nesterov": True, "dampening": 0.0})


describe("Momentum", _momentum_update,
         grids=[(dict(lr=0.01), dict(momentum=[0.9, 0.5], dampening=[0.0, 0.3], weight_decay=WD, maximize=MAX))],
         rich=dict(lr=0.01, momentum=0.9, dampening=0.3, weight_decay=0.05),
         second_group=dict(momentum=0.5, dampening=0.0),
         torch=("SGD", dict(nesterov=False)))
describe("NAG", _nag_update,
         grids=[(dict(lr=0.01), dict(momentum=[0.9, 0.5], weight_decay=WD, maximize=MAX))],
         rich=dict(lr=0.01, momentum=0.9, weight_decay=0.05),
         second_group=dict(momentum=0.5, maximize=True),
         torch=("SGD", dict(nesterov=True, dampening=0.0)))


def _norm(x):
    """The L2 norm of a whole tensor, summed in float64."""
    x = np.asarray(x, np.float64)
    return float(np.sqrt(np.sum(x * x)))


def lamb_update(p, g, st, h):
    """optax.lamb: mu <- (1-b1)g + b1*mu; nu <- (1-b2)g^2 + b2*nu;
    u = (mu/(1-b1^t)) / (sqrt(nu/(1-b2^t) + eps_root) + eps) + wd*p (where mask);
    r = |p|/|u| (1 if either is 0); p <- p + (u*r)*(-lr)"""
    if "mu" not in st:
        st["mu"] = np.zeros_like(p)
        st["nu"] = np.zeros_like(p)
    g = -g if h["maximize"] else g
    t = st["step"]
    b1, b2 = h["b1"], h["b2"]
    mu, nu = st["mu"], st["nu"]
    _set(mu, _c(1 - b1, p) * g + _c(b1, p) * mu)
    _set(nu, _c(1 - b2, p) * (g * g) + _c(b2, p) * nu)
    u = (mu / _c(1 - b1 ** t, p)) / (np.sqrt(nu / _c(1 - b2 ** t, p) + _c(h["eps_root"], p)) + _c(h["eps"], p))
    if h["weight_decay"] != 0 and h["mask"] in (None, True):
        u = u + _c(h["weight_decay"], p) * p
    pn, un = _norm(p), _norm(u)
    ratio = 1.0 if pn == 0 or un == 0 else pn / un
    _set(p, p + (u * _c(ratio, p)) * _c(-h["lr"], p))


describe("LAMB", lamb_update,
         grids=[(dict(lr=0.01), dict(weight_decay=[0.0, 0.1], mask=[None, False], maximize=MAX)),
                (dict(lr=0.01, weight_decay=0.05), dict(b1=[0.9, 0.5], b2=[0.999, 0.9], eps=[1e-6, 1e-3],
                                                        eps_root=[0.0, 1e-8]))],
         rich=dict(lr=0.01, weight_decay=0.1, eps_root=1e-10, b1=0.8),
         second_group=dict(mask=False, b2=0.99, maximize=True),
         torch=None)


def lars_update(p, g, st, h):
    """optax.lars: u = g + wd*p (where weight_decay_mask); where trust_ratio_mask
    u <- u * tc*|p|/(|u| + eps) (1 if either norm is 0); u <- u*(-lr);
    trace <- u + momentum*trace; p <- p + (u + momentum*trace if nesterov else trace)"""
    if "trace" not in st:
        st["trace"] = np.zeros_like(p)
    g = -g if h["maximize"] else g
    u = g
    if h["weight_decay"] != 0 and h["weight_decay_mask"]:
        u = u + _c(h["weight_decay"], p) * p
    if h["trust_ratio_mask"]:
        pn, un = _norm(p), _norm(u)
        if pn != 0 and un != 0:
            u = u * _c(h["trust_coefficient"] * pn / (un + h["eps"]), p)
    u = u * _c(-h["lr"], p)
    tr = st["trace"]
    _set(tr, u + _c(h["momentum"], p) * tr)
    _set(p, p + (u + _c(h["momentum"], p) * tr if h["nesterov"] else tr))


describe("LARS", lars_update,
         grids=[(dict(lr=1.0), dict(weight_decay=[0.0, 1e-3], weight_decay_mask=[True, False],
                                    trust_ratio_mask=[True, False], maximize=MAX)),
                (dict(lr=0.5, weight_decay=1e-3), dict(momentum=[0.0, 0.9], nesterov=[False, True],
                                                       trust_coefficient=[1e-3, 0.02], eps=[0.0, 1e-6]))],
         rich=dict(lr=0.5, weight_decay=1e-3, nesterov=True, trust_coefficient=0.01, eps=1e-8),
         second_group=dict(trust_ratio_mask=False, weight_decay_mask=False, momentum=0.5, maximize=True),
         torch=None)



def asgd_update(p, g, st, h):
    """torch ASGD: eta, mu from the previous step (eta = lr, mu = 1 at t = 1);
    p <- p(1 - lambd*eta); p <- p - eta*g; ax <- p if mu = 1 else ax + (p - ax)*mu;
    then eta = lr/(1 + lambd*lr*t)^alpha, mu = 1/max(1, t - t0)"""
    if "ax" not in st:
        st["ax"] = np.zeros_like(p)
        st["eta"] = h["lr"]
        st["mu"] = 1.0
    t = float(st["step"])
    g = _prologue(p, g, h, decoupled=False)
    eta, mu = st["eta"], st["mu"]
    _set(p, p * _c(1 - h["lambd"] * eta, p))
    _set(p, _add(p, g, -eta))
    ax = st["ax"]
    if mu != 1:
        _set(ax, ax + (p - ax) * _c(mu, p))
    else:
        _set(ax, p)
    st["eta"] = h["lr"] / ((1 + h["lambd"] * h["lr"] * t) ** h["alpha"])
    st["mu"] = 1 / max(1, t - h["t0"])


# t0 = 20 (or 5): averaging starts within the suites' 100 steps
describe("ASGD", asgd_update,
         grids=[(dict(lr=0.01), dict(t0=[1e6, 20.0], weight_decay=WD, maximize=MAX)),
                (dict(lr=0.05, t0=5.0), dict(lambd=[1e-4, 0.1], alpha=[0.75, 0.5]))],
         rich=dict(lr=0.05, lambd=0.05, alpha=0.6, t0=5.0, weight_decay=0.05),
         second_group=dict(t0=1e6, lambd=1e-3, maximize=True))


def _schedule_free_weight(st, h):
    """The schedulefree package's per-group running scalars, kept per param:
    returns (scheduled lr, c = w/sum(w))."""
    k = st["step"] - 1
    sched = (k + 1) / h["warmup_steps"] if k < h["warmup_steps"] else 1.0
    lr = h["lr"] * sched
    st["lr_max"] = lr_max = max(lr, st["lr_max"])
    weight = ((k + 1) ** h["r"]) * (lr_max ** h["weight_lr_power"])
    st["weight_sum"] = weight_sum = st["weight_sum"] + weight
    return lr, (weight / weight_sum if weight_sum != 0 else 0.0)


def sgd_schedule_free_update(p, g, st, h):
    """z = p at t = 1; g <- -g (maximize); g <- g + wd*y; y <- lerp(y, z, c);
    y <- y + lr*(momentum*(1-c) - 1)*g; z <- z - lr*g"""
    if "z" not in st:
        st["z"] = np.array(p, copy=True)
        st["lr_max"], st["weight_sum"] = -1.0, 0.0
    lr, ckp1 = _schedule_free_weight(st, h)
    g = _prologue(p, g, h, decoupled=False)
    z = st["z"]
    _set(p, _lerp(p, z, ckp1))
    _set(p, _add(p, g, lr * (h["momentum"] * (1 - ckp1) - 1)))
    _set(z, _add(z, g, -lr))


describe("SGDScheduleFree", sgd_schedule_free_update,
         grids=[(dict(lr=0.05), dict(weight_decay=WD, maximize=MAX, warmup_steps=[0, 10])),
                (dict(lr=0.05, warmup_steps=5), dict(momentum=[0.9, 0.5], r=[0.0, 1.5],
                                                     weight_lr_power=[2, 0.0]))],
         rich=dict(lr=0.05, momentum=0.8, weight_decay=0.05, warmup_steps=10, r=0.5),
         second_group=dict(momentum=0.5, warmup_steps=3, maximize=True),
         torch=None)


def adamw_schedule_free_update(p, g, st, h):
    """z = p at t = 1; g <- -g (maximize); v <- b2*v + (1-b2)*g^2;
    u = g/(sqrt(v/(1-b2^t)) + eps) + wd*y; y <- lerp(y, z, c);
    y <- y + lr*(b1*(1-c) - 1)*u; z <- z - lr*u"""
    if "z" not in st:
        st["z"] = np.array(p, copy=True)
        st["exp_avg_sq"] = np.zeros_like(p)
        st["lr_max"], st["weight_sum"] = -1.0, 0.0
    lr, ckp1 = _schedule_free_weight(st, h)
    g = -g if h["maximize"] else g
    b1, b2 = h["betas"]
    v, z = st["exp_avg_sq"], st["z"]
    _set(v, _addcmul(v * _c(b2, v), g, g, 1 - b2))
    u = g / (np.sqrt(v / _c(1 - b2 ** st["step"], v)) + _c(h["eps"], v))
    if h["weight_decay"] != 0:
        u = _add(u, p, h["weight_decay"])
    _set(p, _lerp(p, z, ckp1))
    _set(p, _add(p, u, lr * (b1 * (1 - ckp1) - 1)))
    _set(z, _add(z, u, -lr))


describe("AdamWScheduleFree", adamw_schedule_free_update,
         grids=[(dict(lr=0.01), dict(weight_decay=WD, maximize=MAX, warmup_steps=[0, 10])),
                (dict(lr=0.01, warmup_steps=5), dict(betas=[(0.9, 0.999), (0.5, 0.9)], r=[0.0, 1.5],
                                                     weight_lr_power=[2.0, 0.0], eps=[1e-8, 1e-3]))],
         rich=dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.05, warmup_steps=10, r=0.5),
         second_group=dict(betas=(0.5, 0.9), warmup_steps=3, maximize=True),
         torch=None)

def sparse_adam_update(p, g, st, h):
    """Every row given once (a dense grad), torch.optim.SparseAdam's order:
    dm = (g-m)(1-b1); m <- m+dm; dv = (g*g-v)(1-b2); v <- v+dv;
    p <- p - lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps)"""
    if "exp_avg" not in st:
        st["exp_avg"] = np.zeros_like(p)
        st["exp_avg_sq"] = np.zeros_like(p)
    t = st["step"]
    b1, b2 = h["betas"]
    g = _prologue(p, g, h, decoupled=False)
    m, v = st["exp_avg"], st["exp_avg_sq"]
    dm = (g - m) * _c(1 - b1, p)
    dv = (g * g - v) * _c(1 - b2, p)
    numer = dm + m
    denom = np.sqrt(dv + v) + _c(h["eps"], p)
    _set(m, m + dm)
    _set(v, v + dv)
    step_size = h["lr"] * (1 - b2 ** t) ** 0.5 / (1 - b1 ** t)
    _set(p, p + _c(-step_size, p) * (numer / denom))


describe("SparseAdam", sparse_adam_update,
         grids=[(dict(lr=0.01), dict(maximize=MAX, weight_decay=WD)),
                (dict(lr=0.01), dict(betas=[(0.8, 0.95), (0.5, 0.9)], eps=[1e-6]))],
         rich=dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, maximize=True),
         second_group=dict(betas=(0.5, 0.9), maximize=False))


def rowwise_adagrad_update(p, g, st, h):
    """One accumulator per row (axis 0; a 0-d param is one row): clr = lr/(1+(t-1)*lr_decay);
    G_r <- G_r + mean_j(g_rj^2) (summed in double); p_r <- p_r - clr/(sqrt(G_r)+eps) * g_r"""
    if "sum" not in st:
        st["sum"] = np.full(p.shape[:1], h["initial_accumulator_value"], p.dtype)
    if p.size == 0:
        return
    t = st["step"]
    g = _prologue(p, g, h, decoupled=h["decoupled_weight_decay"])
    rows = p.shape[0] if p.ndim else 1
    g64 = np.asarray(g, np.float64).reshape(rows, -1)
    mean = (g64 * g64).sum(axis=1) / g64.shape[1]
    s = st["sum"]
    _set(s, s + mean.astype(p.dtype).reshape(s.shape))
    clr = h["lr"] / (1 + (t - 1) * h["lr_decay"])
    mult = _c(clr, p) / (np.sqrt(s) + _c(h["eps"], p))
    _set(p, p - mult.reshape(s.shape + (1,) * (p.ndim - 1)) * g)


describe("RowWiseAdagrad", rowwise_adagrad_update,
         grids=[(dict(lr=0.05), dict(lr_decay=[0.0, 0.05], initial_accumulator_value=[0.0, 0.1],
                                     weight_decay=WD, maximize=MAX)),
                (dict(lr=0.05, weight_decay=0.05), dict(decoupled_weight_decay=[True], eps=[1e-10, 1e-3]))],
         rich=dict(lr=0.05, lr_decay=0.05, initial_accumulator_value=0.1, weight_decay=0.05),
         second_group=dict(decoupled_weight_decay=True, eps=1e-6),
         torch=None)


def adafactor_update(p, g, st, h):
    """torch.optim.Adafactor: w = t^beta2_decay; rho = min(lr, 1/sqrt(t));
    alpha = max(eps2, RMS(p)) * rho (p before the decay); p <- p(1 - lr*wd);
    ndim >= 2: row_var <- lerp(row_var, mean(g^2, -1), w), col_var <- lerp(col_var,
    mean(g^2, -2), w), V = row_var*col_var / max(mean(row_var, -2), eps1);
    else variance <- lerp(variance, g^2, w), V = variance;
    U = g / sqrt(max(V, eps1^2)); p <- p - alpha/max(1, RMS(U)/d) * U.
    eps1 None: the dtype's machine epsilon. Means and norms summed in float64."""
    factored = p.ndim >= 2
    if "row_var" not in st and "variance" not in st:
        if factored:
            st["row_var"] = np.zeros(p.shape[:-1] + (1,), p.dtype)
            st["col_var"] = np.zeros(p.shape[:-2] + (1, p.shape[-1]), p.dtype)
        else:
            st["variance"] = np.zeros_like(p)
    if p.size == 0:
        return   # torch cannot step an empty param (it divides by its size); nothing to change
    g = -g if h["maximize"] else g
    t = st["step"]
    eps1, eps2 = h["eps"]
    if eps1 is None:
        eps1 = float(np.finfo(p.dtype).eps)
    w = t ** h["beta2_decay"]
    rho = min(h["lr"], 1 / t ** 0.5)
    rms = lambda x: float(_c(_norm(x), p)) / x.size ** 0.5  # noqa: E731  (torch's norm, in the dtype)
    alpha = max(eps2, rms(p)) * rho
    if h["weight_decay"] != 0:
        _set(p, p * _c(1 - h["lr"] * h["weight_decay"], p))
    g64 = np.asarray(g, np.float64)
    if factored:
        rv, cv = st["row_var"], st["col_var"]
        _set(rv, _lerp(rv, (g64 * g64).mean(axis=-1, keepdims=True).astype(p.dtype), w))
        _set(cv, _lerp(cv, (g64 * g64).mean(axis=-2, keepdims=True).astype(p.dtype), w))
        mean = np.asarray(rv, np.float64).mean(axis=-2, keepdims=True).astype(p.dtype)
        var = (rv * cv) / np.maximum(mean, _c(eps1, p))
    else:
        v = st["variance"]
        _set(v, _lerp(v, g * g, w))
        var = v.copy()
    u = (_c(1.0, p) / np.sqrt(np.maximum(var, _c(eps1 * eps1, p)))) * g
    denom = max(1.0, rms(u) / h["d"])
    _set(p, p + _c(-alpha / denom, p) * u)


describe("Adafactor", adafactor_update,
         grids=[(dict(lr=0.01), dict(eps=[(None, 1e-3), (0.3, 1e-3)], weight_decay=WD, maximize=MAX,
                                     d=[1.0, 1.5])),
                (dict(lr=0.05), dict(beta2_decay=[-0.8, -0.5], eps=[(None, 1e-3), (None, 0.5)]))],
         rich=dict(lr=0.12, weight_decay=0.05, eps=(None, 1e-2), d=1.2),
         second_group=dict(beta2_decay=-0.6, eps=(1e-20, 1e-3), maximize=True))


class _Rules(Mapping):
    """Class name -> its reference update (from ALGORITHMS)."""

    def __getitem__(self, name):
        return ALGORITHMS[name].update

    def __iter__(self):
        return iter(ALGORITHMS)

    def __len__(self):
        return len(ALGORITHMS)


RULES = _Rules()


def reference_step(name: str, params: Sequence[np.ndarray], grads: Sequence[np.ndarray],
                   state: List[dict], hyper: dict) -> None:
    """One step of algorithm ``name`` over ``params`` (updated in place) with one
    hyperparameter dict; ``state`` is a list of per-param dicts (created if empty)."""
    h = {**DEFAULTS[name], **hyper}
    while len(state) < len(params):
        state.append({"step": 0})
    for p, g, st in zip(params, grads, state):
        if g.shape != p.shape or g.dtype != p.dtype:
            raise ValueError("grad must match its param in shape and dtype")
        st["step"] += 1
        RULES[name](p, g, st, h)


class Reference:
    """Minimal optimizer around the rules above (param groups, live lr, callable lr)."""

    def __init__(self, name: str, params, **hyper):
        if name not in RULES:
            raise KeyError(name)
        self.name = name
        self.defaults = {**DEFAULTS[name], **hyper}
        params = list(params)
        if params and isinstance(params[0], dict):
            groups = params
        else:
            groups = [{"params": params}]
        self.param_groups: List[dict] = []
        self.params: List[np.ndarray] = []
        self.state: List[dict] = []
        self.steps_done = 0
        for grp in groups:
            self.add_param_group(grp)

    def add_param_group(self, group: dict) -> None:
        """Append a group (params copied); its params start with step 0, like torch."""
        g = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        g["params"] = [np.array(p, copy=True) for p in group["params"]]
        self.param_groups.append(g)
        self.params += g["params"]
        self.state += [{"step": 0} for _ in g["params"]]

    def step(self, grads: Sequence[np.ndarray]) -> None:
        grads = list(grads)
        if len(grads) != len(self.params):
            raise ValueError("need one grad per param")
        i = 0
        for grp in self.param_groups:
            h = {k: v for k, v in grp.items() if k != "params"}
            if callable(h["lr"]):
                h["lr"] = float(h["lr"](self.steps_done))
            n = len(grp["params"])
            reference_step(self.name, grp["params"], grads[i:i + n], self.state[i:i + n], h)
            i += n
        self.steps_done += 1


def run(name: str, params, grad_seq: Sequence[Sequence[np.ndarray]], **hyper) -> Reference:
    """Run ``len(grad_seq)`` steps of ``name`` from (copies of) ``params``."""
    ref = Reference(name, params, **hyper)
    for grads in grad_seq:
        ref.step(grads)
    return ref
