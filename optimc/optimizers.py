"""The optimizers: one base class and one thin class per algorithm.

Each class names its C kernel (``_kernel``), lists its hyperparameters with
their defaults in its ``__init__`` signature, and says which options it fixes.
Everything else — params and groups, checks, state access, checkpoints — is
shared here; the step itself is ``_core.Engine.step``, one call into C.
"""
from __future__ import annotations

import html
import inspect
import numbers
from collections.abc import Mapping

import numpy as np

from . import _core
from ._checks import betas as _betas, flag as _flag, lr as _lr, real as _real

STATE_DICT_FORMAT = "optimc.state_dict"
STATE_DICT_VERSION = 1


_CHECKS = {
    "lr": _lr,
    "weight_decay": lambda n, v: _real(n, v, lo=0.0),
    "momentum": lambda n, v: _real(n, v, 0.0, 1.0, hi_open=True),
    "dampening": lambda n, v: _real(n, v, 0.0, 1.0),
    "eps": lambda n, v: _real(n, v, lo=0.0, lo_open=True),
    "betas": _betas,
    "alpha": lambda n, v: _real(n, v, 0.0, 1.0, hi_open=True),
    "rho": lambda n, v: _real(n, v, 0.0, 1.0, hi_open=True),
    "lr_decay": lambda n, v: _real(n, v, lo=0.0),
    "initial_accumulator_value": lambda n, v: _real(n, v, lo=0.0),
    "momentum_decay": lambda n, v: _real(n, v, lo=0.0),
    "nesterov": _flag,
    "maximize": _flag,
    "centered": _flag,
    "amsgrad": _flag,
    "decoupled_weight_decay": _flag,
}

# Options fixed when a group is added: they decide which state buffers exist.
_STRUCTURAL = ("amsgrad", "centered", "initial_accumulator_value")


class ParamGroup(dict):
    """A param group: a dict whose hyperparameters are checked on assignment
    and take effect on the next step (``group["lr"] = 0.1``). Other keys
    (``"initial_lr"``, your own) are stored as given."""

    def __setitem__(self, key, value):
        owner = getattr(self, "_owner", None)
        if owner is not None and key in owner._hyper_names:
            value = owner._set_group_hyper(self, {key: value})[key]
        elif owner is not None and key in ("params", "param_names"):
            raise ValueError(f"{key}: a group's params are fixed; use add_param_group for new ones")
        dict.__setitem__(self, key, value)

    def update(self, *args, **kwargs):
        new = dict(*args, **kwargs)
        owner = getattr(self, "_owner", None)
        hyper = {k: v for k, v in new.items() if owner is not None and k in owner._hyper_names}
        if hyper:
            new.update(owner._set_group_hyper(self, hyper))
        for key, value in new.items():
            if key not in hyper:
                self[key] = value
            else:
                dict.__setitem__(self, key, value)

    def __delitem__(self, key):
        owner = getattr(self, "_owner", None)
        if owner is not None and (key in owner._hyper_names or key in ("params", "param_names")):
            raise KeyError(f"{key}: cannot remove a hyperparameter or the params from a group")
        dict.__delitem__(self, key)

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def __reduce__(self):  # pickles as a plain dict
        return (dict, (dict(self),))


class _State(Mapping):
    """``opt.state``: param index (or name) -> {"step": int, buffer: view}.
    The views alias the C-owned buffers and keep them alive."""

    def __init__(self, opt):
        self._opt = opt

    def _index(self, key):
        names = self._opt._names
        if names is not None:
            try:
                return names.index(key)
            except ValueError:
                raise KeyError(key) from None
        if isinstance(key, numbers.Integral) and 0 <= key < len(self):
            return int(key)
        raise KeyError(key)

    def __getitem__(self, key):
        i = self._index(key)
        return self._opt._param_state(i, copy=False)

    def __iter__(self):
        names = self._opt._names
        return iter(names if names is not None else range(len(self)))

    def __len__(self):
        return self._opt._n_tensors

    def __repr__(self):
        return f"<optimc state of {len(self)} params>"


def _split_params(obj, what="params"):
    """(arrays, names or None) from a list/tuple or dict of arrays."""
    if isinstance(obj, np.ndarray):
        raise TypeError(f"{what}: expected a list or dict of arrays, got a single ndarray; "
                        f"wrap it in a list: [{what[:-1] if what.endswith('s') else what}]")
    if isinstance(obj, Mapping):
        return list(obj.values()), list(obj.keys())
    if isinstance(obj, (list, tuple)):
        return list(obj), None
    raise TypeError(f"{what}: expected a list or dict of arrays, got {type(obj).__name__}")


class Optimizer(_core.Engine):
    """Base class: params and param groups, live hyperparameters, C-owned
    state, ``state_dict``/``load_state_dict``, pickling. ``step(grads)`` is
    one call into C (see ``optimc._core.Engine.step``)."""

    _kernel: str = ""          # the C registry's algorithm name
    _fixed: dict = {}          # options this class fixes (not hyperparameters)
    _hyper_names: tuple = ()   # filled per class from its __init__ signature

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        sig = inspect.signature(cls.__init__)
        cls._hyper_names = tuple(
            n for n, p in sig.parameters.items()
            if n not in ("self", "params") and p.kind is p.POSITIONAL_OR_KEYWORD)

    def __init__(self, params, hyper, *, max_grad_norm=None, skip_nonfinite=False):
        hyper = {k: v for k, v in hyper.items() if k in self._hyper_names}
        self._init_engine(self._kernel)
        object.__setattr__(self, "defaults", self._check(hyper))
        object.__setattr__(self, "param_groups", [])
        object.__setattr__(self, "_names", None)
        object.__setattr__(self, "state", _State(self))
        self.set_guard(max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite)
        if isinstance(params, (list, tuple)) and params and all(isinstance(g, Mapping) for g in params):
            groups = list(params)
        else:
            groups = [{"params": params}]
        if not groups:
            raise ValueError("params: empty")
        for group in groups:
            self.add_param_group(group)
        if self._n_tensors == 0:
            raise ValueError("params: no arrays given")

    # ---- hyperparameters ----

    def _check(self, hyper, base=None):
        """Checked copy of `hyper` (merged over `base`), cross-field rules included."""
        out = dict(base or {})
        for name, value in hyper.items():
            if name not in self._hyper_names:
                raise TypeError(f"{name}: not a hyperparameter of {type(self).__name__} "
                                f"(it has {', '.join(self._hyper_names)})")
            out[name] = _CHECKS[name](name, value)
        self._check_group(out)
        return out

    def _check_group(self, group):
        """Rules between hyperparameters (overridden where a class has some)."""

    def _engine_hyper(self, group):
        """The group's hyperparameters as the C engine names them."""
        d = {k: group[k] for k in self._hyper_names if k in group}
        d.update(self._fixed)
        if "betas" in d:
            d["beta1"], d["beta2"] = d.pop("betas")
        d["decoupled"] = d.pop("decoupled_weight_decay", False)
        return d

    def _set_group_hyper(self, group, changes):
        """Check `changes` for `group`, push them to C; returns the checked values."""
        index = next(i for i, g in enumerate(self.param_groups) if g is group)
        for name in changes:
            if name in _STRUCTURAL and group.get(name) != changes[name]:
                _CHECKS[name](name, changes[name])
                raise ValueError(f"{name}: fixed when the group was created (it decides the state "
                                 f"buffers); create the optimizer with {name}={changes[name]!r} instead")
        merged = self._check(changes, base={k: group[k] for k in self._hyper_names})
        self._set_hyper(index, self._engine_hyper(merged))
        return {k: merged[k] for k in changes}

    def __getattr__(self, name):
        if name in type(self)._hyper_names:
            values = [g[name] for g in self.param_groups]
            if all(v == values[0] for v in values):
                return values[0]
            raise AttributeError(f"{name}: the param groups differ ({values}); "
                                 f"read opt.param_groups[i][{name!r}]")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        if name in type(self)._hyper_names:
            # check against every group before changing any
            for i, g in enumerate(self.param_groups):
                merged = self._check({name: value}, base={k: g[k] for k in self._hyper_names})
                if name in _STRUCTURAL and g[name] != merged[name]:
                    self._set_group_hyper(g, {name: value})   # raises the fixed-option error
                self._set_hyper(i, self._engine_hyper(merged), False)
            for g in self.param_groups:
                g[name] = value
            self.defaults[name] = self.param_groups[0][name]
        else:
            object.__setattr__(self, name, value)

    # ---- params ----

    def add_param_group(self, param_group):
        """Add a group ``{"params": list_or_dict, <hyperparameter>: value, ...}``;
        missing hyperparameters come from ``defaults``. Its state is allocated now."""
        if not isinstance(param_group, Mapping) or "params" not in param_group:
            raise TypeError("param_group: expected a dict with a 'params' entry")
        arrays, names = _split_params(param_group["params"])
        if not arrays:
            raise ValueError("params: a param group needs at least one array")
        hyper = {k: v for k, v in param_group.items() if k in self._hyper_names}
        extra = {k: v for k, v in param_group.items()
                 if k not in self._hyper_names and k not in ("params", "param_names")}
        group = ParamGroup()
        dict.update(group, self._check(hyper, base=self.defaults))
        self._add_group(arrays, names, self._engine_hyper(group))
        dict.update(group, extra)
        dict.__setitem__(group, "params", arrays)
        if names is not None:
            dict.__setitem__(group, "param_names", names)
            object.__setattr__(self, "_names", (self._names or []) + names)
        group._owner = self
        self.param_groups.append(group)

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    # ---- the guard ----

    def set_guard(self, *, max_grad_norm=None, skip_nonfinite=False):
        """Clip the grads' global L2 norm to `max_grad_norm` inside each step
        (grads are read scaled, not modified), and/or skip a step whose grads
        hold NaN or ±Inf (counted in ``skipped_steps``). One pass computes both."""
        if max_grad_norm is not None:
            max_grad_norm = _real("max_grad_norm", max_grad_norm, lo=0.0, lo_open=True)
        skip_nonfinite = _flag("skip_nonfinite", skip_nonfinite)
        self._set_guard(max_grad_norm or 0.0, skip_nonfinite)
        object.__setattr__(self, "max_grad_norm", max_grad_norm)
        object.__setattr__(self, "skip_nonfinite", skip_nonfinite)

    # ---- state ----

    def _param_state(self, i, copy):
        step, mu_product = self._scalars(i)
        d = {"step": step}
        if self._kernel == "nadam":
            d["mu_product"] = mu_product
        d.update(self._state(i, copy))
        return d

    def state_dict(self):
        """Plain Python/NumPy data (copies): state per param index, the groups'
        hyperparameters with their param indices, counters and a format version."""
        state, groups, start = {}, [], 0
        for i in range(self._n_tensors):
            state[i] = self._param_state(i, copy=True)
        for g in self.param_groups:
            n = len(g["params"])
            plain = {k: v for k, v in g.items() if k not in ("params", "param_names")}
            plain["params"] = list(range(start, start + n))
            if "param_names" in g:
                plain["param_names"] = list(g["param_names"])
            groups.append(plain)
            start += n
        return {
            "format": STATE_DICT_FORMAT,
            "version": STATE_DICT_VERSION,
            "optimizer": type(self).__name__,
            "state": state,
            "param_groups": groups,
            "step_count": self.step_count,
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state_dict):
        """Take state and hyperparameters from `state_dict` (from ``state_dict()``).
        Everything is checked first; on any mismatch it raises and changes nothing."""
        sd = state_dict
        if not isinstance(sd, Mapping):
            raise TypeError(f"state_dict: expected a dict, got {type(sd).__name__}")
        if sd.get("format") != STATE_DICT_FORMAT:
            raise ValueError("state_dict: not an optimc state dict (no 'format' entry)")
        if sd.get("version") != STATE_DICT_VERSION:
            raise ValueError(f"state_dict: format version {sd.get('version')!r}; "
                             f"this optimc reads version {STATE_DICT_VERSION}")
        if sd.get("optimizer") != type(self).__name__:
            raise ValueError(f"state_dict: saved from {sd.get('optimizer')!r}, not {type(self).__name__}")
        groups = sd.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict: expected {len(self.param_groups)} param groups, "
                             f"got {len(groups) if isinstance(groups, list) else groups!r}")
        checked_groups, start = [], 0
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            n = len(mine["params"])
            if not isinstance(saved, Mapping) or list(saved.get("params", ())) != list(range(start, start + n)):
                raise ValueError(f"state_dict: param group {gi} should hold params {start}..{start + n - 1}")
            if saved.get("param_names", mine.get("param_names")) != mine.get("param_names"):
                raise ValueError(f"state_dict: param group {gi} names {saved.get('param_names')} "
                                 f"differ from {mine.get('param_names')}")
            start += n
            hyper = {k: v for k, v in saved.items() if k in self._hyper_names}
            missing = set(self._hyper_names) - set(hyper)
            if missing:
                raise ValueError(f"state_dict: param group {gi} lacks {sorted(missing)}")
            for name in _STRUCTURAL:
                if name in hyper and hyper[name] != mine[name]:
                    raise ValueError(f"state_dict: param group {gi} has {name}={hyper[name]!r}, "
                                     f"this optimizer {mine[name]!r} (fixed at creation)")
            merged = self._check(hyper)
            self._set_hyper(gi, self._engine_hyper(merged), False)
            extra = {k: v for k, v in saved.items()
                     if k not in self._hyper_names and k not in ("params", "param_names")}
            checked_groups.append((merged, extra))
        state = sd.get("state")
        if not isinstance(state, Mapping) or len(state) != self._n_tensors:
            raise ValueError(f"state_dict: expected state for {self._n_tensors} params")
        entries, params = [], self._params()
        for i, p in enumerate(params):
            if i not in state or not isinstance(state[i], Mapping):
                raise ValueError(f"state_dict: no state for param {i}")
            saved = dict(state[i])
            mine = self._state(i, False)
            step = saved.pop("step", None)
            if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral) or step < 0:
                raise ValueError(f"state_dict: state[{i}]['step'] must be an integer >= 0, got {step!r}")
            mu = saved.pop("mu_product", 1.0) if self._kernel == "nadam" else 1.0
            mu = _real(f"state_dict: state[{i}]['mu_product']", mu)
            if set(saved) != set(mine):
                raise ValueError(f"state_dict: state[{i}] holds {sorted(saved)}, expected {sorted(mine)}")
            bufs = {}
            for name, value in saved.items():
                if not isinstance(value, np.ndarray) or value.dtype != p.dtype or value.shape != p.shape:
                    got = (f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray)
                           else type(value).__name__)
                    raise ValueError(f"state_dict: state[{i}][{name!r}]: expected a {p.dtype} array "
                                     f"of shape {p.shape}, got {got}")
                bufs[name] = np.ascontiguousarray(value)
            entries.append((int(step), mu, bufs))
        counters = (sd.get("step_count", 0), sd.get("skipped_steps", 0))
        if not all(isinstance(c, numbers.Integral) and c >= 0 for c in counters):
            raise ValueError(f"state_dict: bad step counters {counters!r}")
        # everything checked: now take it
        self._restore(entries)
        for gi, (merged, extra) in enumerate(checked_groups):
            self._set_hyper(gi, self._engine_hyper(merged))
            dict.update(self.param_groups[gi], merged)
            dict.update(self.param_groups[gi], extra)
        self._set_counters(int(counters[0]), int(counters[1]))

    # ---- pickle / deepcopy ----

    def __reduce__(self):
        groups = []
        for g in self.param_groups:
            plain = {k: v for k, v in g.items() if k not in ("params", "param_names")}
            names = g.get("param_names")
            plain["params"] = dict(zip(names, g["params"])) if names is not None else list(g["params"])
            groups.append(plain)
        options = {"max_grad_norm": self.max_grad_norm, "skip_nonfinite": self.skip_nonfinite}
        return (_rebuild, (type(self), groups, dict(self.defaults), options, self.state_dict()))

    # ---- display ----

    def _summary(self):
        params = self._params()
        dtypes = sorted({str(p.dtype) for p in params})
        return len(params), sum(p.size for p in params), dtypes

    def __repr__(self):
        n, size, dtypes = self._summary()
        if len(self.param_groups) == 1:
            g = self.param_groups[0]
            hyper = ", ".join(f"{k}={g[k]!r}" for k in self._hyper_names)
        else:
            hyper = f"{len(self.param_groups)} groups"
        return (f"{type(self).__name__}({hyper}; {n} param{'s' * (n != 1)} "
                f"({'/'.join(dtypes)}, {size:,} elements), step {self.step_count})")

    def _repr_html_(self):
        n, size, dtypes = self._summary()
        esc = html.escape
        head = "".join(f"<th>{esc(k)}</th>" for k in ("group",) + self._hyper_names + ("params",))
        rows = "".join(
            "<tr>" + f"<td>{i}</td>" + "".join(f"<td>{esc(repr(g[k]))}</td>" for k in self._hyper_names)
            + f"<td>{len(g['params'])}</td></tr>"
            for i, g in enumerate(self.param_groups))
        return (f"<div><b>{esc(type(self).__name__)}</b> — {n} params ({esc('/'.join(dtypes))}, "
                f"{size:,} elements), state {self.state_bytes:,} bytes in C, step {self.step_count}"
                f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>")


def _rebuild(cls, groups, defaults, options, state_dict):
    opt = cls(groups, **defaults, **options)
    opt.load_state_dict(state_dict)
    return opt


# ---- the algorithms --------------------------------------------------------

class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum, dampening and
    Nesterov momentum (torch.optim.SGD's formulas). State: ``momentum_buffer``
    (when momentum > 0 at creation)."""
    _kernel = "sgd"

    def __init__(self, params, lr=0.01, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0, maximize=False, **options):
        super().__init__(params, locals(), **options)

    def _check_group(self, g):
        if g.get("nesterov") and (g.get("momentum", 0) <= 0 or g.get("dampening", 0) != 0):
            raise ValueError("nesterov: needs momentum > 0 and dampening = 0")


class Momentum(SGD):
    """SGD with momentum (the seed article's velocity method, γ = 0.9)."""
    _fixed = {"nesterov": False}

    def __init__(self, params, lr=0.01, momentum=0.9, dampening=0.0, weight_decay=0.0,
                 maximize=False, **options):
        Optimizer.__init__(self, params, locals(), **options)


class NAG(SGD):
    """Nesterov accelerated gradient: SGD with ``nesterov=True`` in its
    look-ahead-free form (docs/algorithms.md shows the equivalence)."""
    _fixed = {"nesterov": True, "dampening": 0.0}

    def __init__(self, params, lr=0.01, momentum=0.9, weight_decay=0.0, maximize=False, **options):
        Optimizer.__init__(self, params, locals(), **options)

    def _check_group(self, g):
        if g.get("momentum", 0.9) <= 0:
            raise ValueError("momentum: NAG needs momentum > 0")


class Adagrad(Optimizer):
    """Adagrad: per-element steps scaled by the root of the summed squared
    grads. State: ``sum``."""
    _kernel = "adagrad"

    def __init__(self, params, lr=0.01, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-8, maximize=False, **options):
        super().__init__(params, locals(), **options)


class RMSprop(Optimizer):
    """RMSprop: steps scaled by a moving RMS of the grads; optional centering
    and momentum. State: ``square_avg``, ``momentum_buffer`` (momentum > 0),
    ``grad_avg`` (centered)."""
    _kernel = "rmsprop"

    def __init__(self, params, lr=1e-3, alpha=0.9, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False, maximize=False, **options):
        super().__init__(params, locals(), **options)


class Adadelta(Optimizer):
    """Adadelta: RMS of past updates over RMS of grads; lr only scales it.
    State: ``square_avg``, ``acc_delta``."""
    _kernel = "adadelta"

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False,
                 **options):
        super().__init__(params, locals(), **options)


class Adam(Optimizer):
    """Adam with bias correction; optional AMSGrad and decoupled weight decay.
    State: ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad)."""
    _kernel = "adam"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, maximize=False, decoupled_weight_decay=False, **options):
        super().__init__(params, locals(), **options)


class AdamW(Adam):
    """Adam with decoupled weight decay θ ← θ(1 − ηλ), default λ = 0.01."""
    _fixed = {"decoupled_weight_decay": True}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                 amsgrad=False, maximize=False, **options):
        Optimizer.__init__(self, params, locals(), **options)


class Adamax(Optimizer):
    """Adamax: Adam with the infinity norm. State: ``exp_avg``, ``exp_inf``."""
    _kernel = "adamax"

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 maximize=False, **options):
        super().__init__(params, locals(), **options)


class NAdam(Optimizer):
    """NAdam: Adam with Nesterov momentum and PyTorch's μ_t schedule.
    State: ``exp_avg``, ``exp_avg_sq``, scalar ``mu_product``."""
    _kernel = "nadam"

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False, **options):
        super().__init__(params, locals(), **options)


class RAdam(Optimizer):
    """RAdam: Adam with the variance rectification term; plain momentum steps
    while ρ_t ≤ 5. State: ``exp_avg``, ``exp_avg_sq``."""
    _kernel = "radam"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, maximize=False, **options):
        super().__init__(params, locals(), **options)


class Lion(Optimizer):
    """Lion: the sign of an interpolated momentum, with decoupled weight decay.
    State: ``exp_avg``."""
    _kernel = "lion"
    _fixed = {"decoupled_weight_decay": True}

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False,
                 **options):
        super().__init__(params, locals(), **options)


ALL = (SGD, Momentum, NAG, Adagrad, RMSprop, Adadelta, Adam, AdamW, Adamax, NAdam, RAdam, Lion)
