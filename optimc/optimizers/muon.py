"""Muon (torch.optim.Muon 2.13): momentum, then the Newton–Schulz
orthogonalisation of the (Nesterov) momentum, then a decoupled-decay step
scaled for the matrix's shape. 2-D params only: give the others (biases,
gains, embeddings) to another optimizer such as AdamW.

The element-wise parts (momentum, decay and the step) are C (csrc/muon.c via
optimc._core), as is the Frobenius norm (a dot product accumulated in double,
so it does not depend on BLAS threads). The Newton–Schulz iteration is matrix
products, done by NumPy's matmul (its BLAS) in the param's dtype — torch
runs it in bfloat16, so torch's results differ from these by bfloat16's
rounding; a float64 NumPy reference matches them to 1e-12 (tests/test_muon.py)."""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .. import _checks, _core
from .groups import split_params
from .special import SpecialOptimizer, check_grad, check_param

__all__ = ["Muon"]

_HYPER = ("lr", "weight_decay", "momentum", "nesterov", "ns_coefficients", "eps", "ns_steps", "adjust_lr_fn")
_ADJUST = ("original", "match_rms_adamw")


def _coefficients(name, value):
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise TypeError(f"{name}: expected three numbers (a, b, c), got {value!r}")
    return tuple(_checks.real(f"{name}[{k}]", v) for k, v in enumerate(value))


_CHECKS = {
    "lr": _checks.nonneg,
    "weight_decay": _checks.nonneg,
    "momentum": lambda n, v: _checks.real(n, v, 0.0, 1.0),
    "nesterov": _checks.flag,
    "ns_coefficients": _coefficients,
    "eps": _checks.positive,
    "ns_steps": lambda n, v: _checks.integer(n, v, lo=0, hi=99),
    "adjust_lr_fn": lambda n, v: None if v is None else _checks.choice(n, v, _ADJUST),
}


def _check_hyper(h, where=""):
    return {k: _CHECKS[k](where + k, h[k]) for k in _HYPER}


def adjusted_lr(lr, adjust_lr_fn, shape):
    """torch's lr adjustment for an A×B matrix: lr·√max(1, A/B) ("original",
    the default) or lr·0.2·√max(A, B) ("match_rms_adamw")."""
    a, b = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, a / b))
    return lr * 0.2 * math.sqrt(max(a, b))


class _Workspace:
    """The Newton–Schulz iteration's buffers for one shape and dtype, reused
    every step: the iterate and its successor (the matrix's shape) and two
    k×k Gram-sized matrices (k the smaller side)."""

    def __init__(self, shape, dtype):
        k = min(shape)
        self.x = np.empty(shape, dtype)
        self.y = np.empty(shape, dtype)
        self.a = np.empty((k, k), dtype)
        self.aa = np.empty((k, k), dtype)


def newton_schulz(x, ws, coefficients, steps, eps):
    """Orthogonalise x (2-D, overwritten) in its dtype: x ← x / max(‖x‖_F, eps),
    then ``steps`` times, for a wide x (rows ≤ cols): A = x xᵀ, B = bA + cA²,
    x ← ax + Bx. A tall x is iterated as its transpose (A = xᵀx, x ← ax + xB),
    as torch does. Returns the array holding the result (x or ws.y)."""
    a, b, c = coefficients
    norm = x.dtype.type(math.sqrt(_core.vec_dot(x, x)))
    norm = max(norm, x.dtype.type(eps))
    np.divide(x, norm, out=x)
    tall = x.shape[0] > x.shape[1]
    y = ws.y if x is not ws.y else ws.x
    for _ in range(steps):
        if tall:
            np.matmul(x.T, x, out=ws.a)
        else:
            np.matmul(x, x.T, out=ws.a)
        np.matmul(ws.a, ws.a, out=ws.aa)
        ws.aa *= c
        ws.a *= b
        ws.a += ws.aa                     # B = bA + cA²
        if tall:
            np.matmul(x, ws.a, out=y)
        else:
            np.matmul(ws.a, x, out=y)
        x *= a
        y += x                            # ax + Bx
        x, y = y, x
    return x


class Muon(SpecialOptimizer):
    """Muon with torch.optim.Muon's arguments, defaults and formulas, for 2-D
    params: ``opt.step(grads)``. Per matrix: B ← μB + (1−μ)g (a lerp), the
    update is g + μ(B − g) with ``nesterov`` (else B), orthogonalised by
    ``ns_steps`` Newton–Schulz iterations; then θ ← θ(1 − ηλ) − η'·update,
    η' = η adjusted for the shape (``adjust_lr_fn``). State per param:
    ``momentum_buffer`` (C-allocated). Param groups as in every optimc optimizer."""

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None):
        self._defaults = _check_hyper(dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                           ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                                           adjust_lr_fn=adjust_lr_fn))
        self._groups = ()
        self._params = []
        self._names = None
        self._buffers = []
        self._workspaces = {}
        self.step_count = 0
        if isinstance(params, (list, tuple)) and params and all(isinstance(g, Mapping) for g in params):
            groups = list(params)
        else:
            groups = [{"params": params}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group):
        """Add ``{"params": list_or_dict, <hyperparameter>: value, ...}``; the
        rest from ``defaults``. Every param must be a 2-D float32/float64 matrix."""
        if not isinstance(param_group, Mapping) or "params" not in param_group:
            raise TypeError("param_group: expected a dict with a 'params' entry")
        unknown = [k for k in param_group if k not in _HYPER and k not in ("params", "param_names")]
        if unknown:
            raise TypeError(f"param_group: {unknown[0]!r} is not a hyperparameter of Muon (it has {', '.join(_HYPER)})")
        arrays, names = split_params(param_group["params"])
        if not arrays:
            raise ValueError("params: a param group needs at least one array")
        if (names is None) != (self._names is None) and self._params:
            raise TypeError("params: name every param or none (the groups so far are "
                            + ("named" if self._names is not None else "positional") + ")")
        hyper = _check_hyper({**self._defaults, **{k: v for k, v in param_group.items() if k in _HYPER}})
        start = len(self._params)
        for k, p in enumerate(arrays):
            lab = f"params[{names[k]!r}]" if names is not None else f"params[{start + k}]"
            if isinstance(p, np.ndarray) and p.ndim != 2:
                raise ValueError(f"{lab}: has shape {p.shape}; Muon updates 2-D matrices only (torch's rule). "
                                 f"Give biases, gains and other non-2-D params to another optimizer, e.g. "
                                 f"optimc.AdamW, as Muon's authors do (docs/algorithms.md, Muon)")
            check_param(lab, p)
            for j, q in enumerate(self._params + arrays[:k]):
                if np.may_share_memory(p, q):
                    raise ValueError(f"{lab}: shares memory with {self._label(j) if j < start else 'another param'}")
        if names is not None and self._names is not None:
            dup = [n for n in names if n in self._names]
            if dup:
                raise ValueError(f"params: the name {dup[0]!r} is already taken")
        group = {**hyper, "params": tuple(arrays)}
        if names is not None:
            group["param_names"] = tuple(names)
            self._names = (self._names or []) + list(names)
        self._params = self._params + arrays
        self._buffers = self._buffers + [_core.zeros_like(p) for p in arrays]
        self._groups = self._groups + (group,)

    @property
    def state(self):
        """Param index (or name) -> ``{"momentum_buffer": view of the C buffer}``."""
        keys = self._names if self._names is not None else range(len(self._params))
        return {k: {"momentum_buffer": b} for k, b in zip(keys, self._buffers)}

    def __repr__(self):
        return f"Muon({len(self._params)} matrices in {len(self._groups)} group(s); defaults {self._defaults})"

    def _workspace(self, shape, dtype):
        key = (shape, np.dtype(dtype).str)
        if key not in self._workspaces:
            self._workspaces[key] = _Workspace(shape, dtype)
        return self._workspaces[key]

    def step(self, grads):
        """One Muon step: ``grads`` a list in the params' order (or a dict when
        the params are named), each the param's shape and dtype, C-contiguous.
        Everything is checked before anything is written."""
        grads = self._grads_in_order(grads)
        groups = [_check_hyper(g, "param_groups[%d]: " % i) for i, g in enumerate(self._groups)]
        for i, (p, g, b) in enumerate(zip(self._params, grads, self._buffers)):
            lab = self._label(i, "grads")
            check_grad(lab, g, p)
            if not (g.flags.c_contiguous and g.flags.aligned):
                raise ValueError(f"{lab}: must be C-contiguous and aligned; make it with np.ascontiguousarray")
            for j, q in enumerate(self._params):
                if np.may_share_memory(g, q) or np.may_share_memory(g, self._buffers[j]):
                    raise ValueError(f"{lab}: shares memory with {self._label(j)} or its state")
        k = 0
        for gi, group in enumerate(self._groups):
            h = groups[gi]
            for _ in group["params"]:
                p, g, buf = self._params[k], grads[k], self._buffers[k]
                ws = self._workspace(p.shape, p.dtype)
                _core.muon_momentum(g, buf, ws.x, h["momentum"], h["nesterov"])
                update = newton_schulz(ws.x, ws, h["ns_coefficients"], h["ns_steps"], h["eps"])
                lr = h["lr"]
                _core.muon_apply(p, update, 1 - lr * h["weight_decay"], -adjusted_lr(lr, h["adjust_lr_fn"], p.shape))
                k += 1
        self.step_count += 1

    # ---- checkpoints ----

    def state_dict(self):
        """Plain data (copies): state per param index, the groups with their
        param indices, and ``step_count``."""
        groups, start = [], 0
        for g in self._groups:
            plain = {k: g[k] for k in _HYPER}
            plain["params"] = list(range(start, start + len(g["params"])))
            if "param_names" in g:
                plain["param_names"] = list(g["param_names"])
            start += len(g["params"])
            groups.append(plain)
        return {"state": {i: {"momentum_buffer": b.copy()} for i, b in enumerate(self._buffers)},
                "param_groups": groups, "step_count": self.step_count}

    def load_state_dict(self, state_dict):
        """Take a ``state_dict()``; all of it is checked before anything changes."""
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"state", "param_groups", "step_count"}:
            raise ValueError("state_dict: expected a dict with exactly 'state', 'param_groups' and 'step_count'")
        groups = state_dict["param_groups"]
        if not isinstance(groups, (list, tuple)) or len(groups) != len(self._groups):
            raise ValueError(f"state_dict['param_groups']: expected {len(self._groups)} groups")
        checked, start = [], 0
        for i, (g, mine) in enumerate(zip(groups, self._groups)):
            where = f"state_dict['param_groups'][{i}]"
            if not isinstance(g, Mapping):
                raise ValueError(f"{where}: expected a dict")
            want = list(range(start, start + len(mine["params"])))
            if list(g.get("params", ())) != want:
                raise ValueError(f"{where}['params']: expected {want}")
            if "param_names" in mine and list(g.get("param_names", ())) != list(mine["param_names"]):
                raise ValueError(f"{where}['param_names']: expected {list(mine['param_names'])}")
            missing = [k for k in _HYPER if k not in g]
            if missing:
                raise ValueError(f"{where}: missing {missing[0]!r}")
            checked.append(_check_hyper(g, f"{where}: "))
            start += len(mine["params"])
        step_count = _checks.integer("state_dict['step_count']", state_dict["step_count"], lo=0)
        state = state_dict["state"]
        if not isinstance(state, Mapping) or set(state) != set(range(len(self._params))):
            raise ValueError(f"state_dict['state']: expected entries 0..{len(self._params) - 1}")
        new = []
        for i, p in enumerate(self._params):
            e = state[i]
            where = f"state_dict['state'][{i}]"
            if not isinstance(e, Mapping) or set(e) != {"momentum_buffer"}:
                raise ValueError(f"{where}: expected exactly {{'momentum_buffer': array}}")
            b = e["momentum_buffer"]
            if not isinstance(b, np.ndarray) or b.dtype != p.dtype or b.shape != p.shape:
                raise ValueError(f"{where}['momentum_buffer']: expected a {p.dtype} array of shape {p.shape}, got "
                                 + (f"{b.dtype} {b.shape}" if isinstance(b, np.ndarray) else type(b).__name__))
            new.append(b)
        for mine, h in zip(self._groups, checked):
            mine.update(h)
        for buf, b in zip(self._buffers, new):
            buf[...] = b
        self.step_count = step_count

    def __reduce__(self):
        groups = []
        for g in self._groups:
            params = dict(zip(g["param_names"], g["params"])) if "param_names" in g else list(g["params"])
            groups.append({**{k: g[k] for k in _HYPER}, "params": params})
        return (_rebuild, (groups, self.state_dict()))


def _rebuild(groups, state_dict):
    opt = Muon(groups)
    opt.load_state_dict(state_dict)
    return opt

