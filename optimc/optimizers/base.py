"""The Optimizer base class: params and param groups, live hyperparameters and
the guard options. State access and checkpoints are in checkpoint.py, display
in display.py; the step is ``_core.Engine.step``, one call into C."""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping

from .. import _checks, _core
from .checkpoint import Checkpointing
from .display import Display
from .groups import Defaults, ParamGroup, split_params

# The checks of the hyperparameters most algorithms share; a class adds its
# own in `_checks` (merged over these).
COMMON_CHECKS = {
    "lr": _checks.lr,
    "weight_decay": lambda n, v: _checks.real(n, v, lo=0.0),
    "momentum": lambda n, v: _checks.real(n, v, 0.0, 1.0, hi_open=True),
    "dampening": lambda n, v: _checks.real(n, v, 0.0, 1.0),
    "eps": lambda n, v: _checks.real(n, v, lo=0.0, lo_open=True),
    "betas": _checks.betas,
    "alpha": lambda n, v: _checks.real(n, v, 0.0, 1.0, hi_open=True),
    "rho": lambda n, v: _checks.real(n, v, 0.0, 1.0, hi_open=True),
    "lr_decay": lambda n, v: _checks.real(n, v, lo=0.0),
    "initial_accumulator_value": lambda n, v: _checks.real(n, v, lo=0.0),
    "momentum_decay": lambda n, v: _checks.real(n, v, lo=0.0),
    "nesterov": _checks.flag,
    "maximize": _checks.flag,
    "centered": _checks.flag,
    "amsgrad": _checks.flag,
    "decoupled_weight_decay": _checks.flag,
}

# The options of every optimizer besides its hyperparameters: the guard.
GUARD_OPTIONS = ("max_grad_norm", "clip_value", "skip_nonfinite")

# How the state is stored (csrc/lowprec.c), fixed at construction: None (the
# param's dtype), "bfloat16" or "8bit" (bitsandbytes' blockwise dynamic
# quantization; tensors below min_8bit_size elements stay in the param's dtype).
STATE_OPTIONS = ("state_dtype", "min_8bit_size")
STATE_FORMATS = {None: 0, "bfloat16": 1, "8bit": 2}   # csrc/optimc.h optimc_state_format

# How bfloat16/float16 params are written after each float32 update (csrc/
# halfparam_impl.h), fixed at construction: rounded to nearest even (neither
# option), from a float32 master copy kept in the state (master_weights), or
# stochastically with a counter-based generator seeded by `seed`.
HALF_OPTIONS = ("master_weights", "stochastic_rounding", "seed")

# Names users bring from Keras, optax and torch habits.
_ALIASES = {"learning_rate": "lr", "epsilon": "eps", "decay": "weight_decay", "beta_1": "betas",
            "beta_2": "betas", "beta1": "betas", "beta2": "betas", "clipnorm": "max_grad_norm",
            "global_clipnorm": "max_grad_norm", "clipvalue": "clip_value", "use_ema": None}


def _suggest(name, known):
    hint = _ALIASES.get(name) if name in _ALIASES else None
    if hint is None or hint not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = close[0] if close else None
    return f"; did you mean {hint!r}?" if hint else ""


def _is_half(a):
    """A bfloat16 (ml_dtypes) or float16 array: stepped through float32 (csrc/halfparam_impl.h)."""
    return getattr(getattr(a, "dtype", None), "name", None) in ("bfloat16", "float16")


class Optimizer(Checkpointing, Display, _core.Engine):
    """Base class: params and param groups, live hyperparameters, C-owned
    state, ``state_dict``/``load_state_dict``, pickling. ``step(grads)`` is
    one call into C (see ``optimc._core.Engine.step``).

    A subclass is one algorithm's whole description: its C rule (``_kernel``),
    its hyperparameters and defaults (the ``__init__`` signature), checks for
    hyperparameters of its own (``_checks``), cross-field rules
    (``_check_group``), options it fixes (``_fixed``), options that decide
    which state buffers exist (``_structural``) and how pair-valued
    hyperparameters split into C fields (``_pairs``)."""

    _kernel: str = ""          # the C rule's name (csrc/rules/<name>.h)
    _fixed: dict = {}          # C fields this class fixes
    _checks: dict = {}         # checks of hyperparameters this class adds
    _structural: tuple = ()    # hyperparameters fixed when a group is added
    _pairs: dict = {"betas": ("beta1", "beta2")}   # pair -> its two C fields
    _hyper_names: tuple = ()   # from the __init__ signature
    _registry: list = []       # every algorithm class, in definition order
    # Row-sparse grads (optimc.SparseGrad): None if the class never takes them,
    # else the hyperparameters that must be 0 for it to (its rule's mark,
    # _core.algorithms()[_kernel]["sparse"], which the C step checks)
    sparse_grads = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        sig = inspect.signature(cls.__init__)
        cls._hyper_names = tuple(
            n for n, p in sig.parameters.items()
            if n not in ("self", "params") and p.kind is p.POSITIONAL_OR_KEYWORD)
        cls._all_checks = {**COMMON_CHECKS, **cls._checks}
        missing = [n for n in cls._hyper_names if n not in cls._all_checks]
        if missing and cls._kernel:
            raise TypeError(f"{cls.__name__}: no check for hyperparameter(s) {missing}; add them to _checks")
        if cls._kernel and cls.__module__ == __name__.rsplit(".", 1)[0] + ".algorithms":
            Optimizer._registry.append(cls)   # optimc's own algorithms, in definition order

    def __init__(self, params, hyper, **options):
        hyper = {k: v for k, v in hyper.items() if k in self._hyper_names}
        storage = {k: options.pop(k) for k in STATE_OPTIONS + HALF_OPTIONS if k in options}
        unknown = [k for k in options if k not in GUARD_OPTIONS]
        if unknown:
            known = self._hyper_names + GUARD_OPTIONS + STATE_OPTIONS + HALF_OPTIONS
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {unknown[0]!r}"
                            f"{_suggest(unknown[0], known)} (it takes {', '.join(known)})")
        object.__setattr__(self, "_storage", self._check_storage(**storage))
        self._init_engine(self._kernel)
        defaults = Defaults(self._check(hyper))
        defaults._attach(self)
        object.__setattr__(self, "_defaults", defaults)
        object.__setattr__(self, "_groups", ())
        object.__setattr__(self, "_names", None)
        self.set_guard(**options)
        if isinstance(params, (list, tuple)) and params and all(isinstance(g, Mapping) for g in params):
            groups = list(params)
        else:
            groups = [{"params": params}]
        for group in groups:
            self.add_param_group(group)
        self._check_half_options()

    # ---- hyperparameters ----

    def _check(self, hyper, base=None):
        """Checked copy of `hyper` (merged over `base`), cross-field rules included."""
        out = dict(base or {})
        for name, value in hyper.items():
            if name not in self._hyper_names:
                raise TypeError(f"{name!r}: not a hyperparameter of {type(self).__name__}"
                                f"{_suggest(str(name), self._hyper_names)} "
                                f"(it has {', '.join(self._hyper_names)})")
            out[name] = self._all_checks[name](name, value)
        self._check_group(out)
        return out

    def _check_group(self, group):
        """Rules between hyperparameters (overridden where a class has some)."""

    def _engine_hyper(self, group):
        """The group's hyperparameters as the C rule names its fields."""
        d = {"decoupled_weight_decay": False}
        for k in self._hyper_names:
            if k in self._pairs:
                a, b = self._pairs[k]
                d[a], d[b] = group[k]
            else:
                d[k] = group[k]
        d.update(self._fixed)
        return d

    def _check_structural(self, group, changes):
        for name in self._structural:
            if name in changes and group[name] != changes[name]:
                raise ValueError(f"{name}: fixed when the group was created (it decides the state "
                                 f"buffers); create the optimizer with {name}={changes[name]!r} instead")

    def _set_group_hyper(self, group, changes):
        """Check `changes` for `group`, push them to C; returns the checked values."""
        index = next(i for i, g in enumerate(self.param_groups) if g is group)
        merged = self._check(changes, base={k: group[k] for k in self._hyper_names})
        self._check_structural(group, {k: merged[k] for k in changes})
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
            checked = []
            for i, g in enumerate(self.param_groups):
                merged = self._check({name: value}, base={k: g[k] for k in self._hyper_names})
                self._check_structural(g, {name: merged[name]})
                self._set_hyper(i, self._engine_hyper(merged), False)
                checked.append(merged)
            for i, (g, merged) in enumerate(zip(self.param_groups, checked)):
                self._set_hyper(i, self._engine_hyper(merged))
                dict.__setitem__(g, name, merged[name])
            dict.__setitem__(self.defaults, name, self.param_groups[0][name])
        elif name.startswith("_"):
            object.__setattr__(self, name, value)
        elif isinstance(getattr(type(self), name, None), property):
            if getattr(type(self), name).fset is None:
                raise AttributeError(f"{name}: read-only (add groups with add_param_group, change "
                                     f"hyperparameters in place, load state with load_state_dict)")
            object.__setattr__(self, name, value)
        else:
            known = self._hyper_names + GUARD_OPTIONS
            raise AttributeError(f"{type(self).__name__} has no setting {name!r}{_suggest(name, known)} "
                                 f"(its hyperparameters: {', '.join(self._hyper_names)}; options: "
                                 f"{', '.join(GUARD_OPTIONS)})")

    # ---- params ----

    def add_param_group(self, param_group):
        """Add a group ``{"params": list_or_dict, <hyperparameter>: value, ...}``;
        missing hyperparameters come from ``defaults``. Its state is allocated now."""
        if not isinstance(param_group, Mapping) or "params" not in param_group:
            raise TypeError("param_group: expected a dict with a 'params' entry")
        arrays, names = split_params(param_group["params"], "params")
        if not arrays:
            raise ValueError("params: a param group needs at least one array")
        hyper = {k: v for k, v in param_group.items() if k in self._hyper_names}
        extra = {k: v for k, v in param_group.items()
                 if k not in self._hyper_names and k not in ("params", "param_names")}
        group = ParamGroup()
        # every value is checked, the defaults too (they are a plain dict)
        dict.update(group, self._check({**self.defaults, **hyper}))
        rounding = 1 if self.master_weights else 2 if self.stochastic_rounding else 0
        self._add_group(arrays, names, self._engine_hyper(group), STATE_FORMATS[self.state_dtype],
                        self.min_8bit_size, rounding, self.seed or 0)
        dict.update(group, extra)
        # tuples: a group's params are fixed once handed over
        dict.__setitem__(group, "params", tuple(arrays))
        if names is not None:
            dict.__setitem__(group, "param_names", tuple(names))
            object.__setattr__(self, "_names", (self._names or []) + names)
        group._attach(self)
        object.__setattr__(self, "_groups", self._groups + (group,))

    @property
    def param_groups(self):
        """The param groups, in order (a tuple: add groups with add_param_group)."""
        return self._groups

    @property
    def defaults(self):
        """The hyperparameters a new group starts from (checked on change)."""
        return self._defaults

    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    # ---- how the state is stored (fixed at construction) ----

    @staticmethod
    def _check_storage(state_dtype=None, min_8bit_size=4096, master_weights=False, stochastic_rounding=False,
                       seed=None):
        if not (state_dtype is None or (isinstance(state_dtype, str) and state_dtype in STATE_FORMATS)):
            raise ValueError(f"state_dtype: expected None, 'bfloat16' or '8bit', got {state_dtype!r}")
        min_8bit_size = _checks.integer("min_8bit_size", min_8bit_size, 0)
        master_weights = _checks.flag("master_weights", master_weights)
        stochastic_rounding = _checks.flag("stochastic_rounding", stochastic_rounding)
        if master_weights and stochastic_rounding:
            raise ValueError("master_weights and stochastic_rounding: choose one (master weights keep a "
                             "float32 copy and round it to nearest; stochastic rounding keeps no copy)")
        if seed is not None:
            if not stochastic_rounding:
                raise ValueError("seed: only stochastic_rounding=True uses a seed; leave it out")
            seed = _checks.integer("seed", seed, 0, 2 ** 64 - 1)
        return {"state_dtype": state_dtype, "min_8bit_size": min_8bit_size, "master_weights": master_weights,
                "stochastic_rounding": stochastic_rounding, "seed": seed}

    def _check_half_options(self):
        """master_weights/stochastic_rounding act on bfloat16/float16 params only: refused
        when the optimizer is created without any (they would be accepted and ignored)."""
        for name in ("master_weights", "stochastic_rounding"):
            if self._storage[name] and not any(_is_half(p) for p in self._params()):
                dtypes = sorted({str(p.dtype) for p in self._params()})
                raise ValueError(f"{name}=True: no param is bfloat16 or float16 (got {'/'.join(dtypes)}); "
                                 f"it concerns only those (float32/float64 params are updated in their "
                                 f"own dtype), so leave it out")

    @property
    def master_weights(self):
        """bfloat16/float16 params keep a float32 copy in the state (``"master"``), which
        the algorithm updates; the param is its round-to-nearest-even (fixed at construction)."""
        return self._storage["master_weights"]

    @property
    def stochastic_rounding(self):
        """bfloat16/float16 params are written from the float32 update by unbiased
        stochastic rounding (no master copy; fixed at construction)."""
        return self._storage["stochastic_rounding"]

    @property
    def seed(self):
        """The seed of stochastic rounding's generator (None: 0, the default)."""
        return self._storage["seed"]

    @property
    def state_dtype(self):
        """How the state buffers are stored: None (the param's dtype), "bfloat16"
        or "8bit" (fixed at construction; see the guide's low-precision section)."""
        return self._storage["state_dtype"]

    @property
    def min_8bit_size(self):
        """With state_dtype="8bit": params with fewer elements keep their state
        in the param's dtype (4096 by default, as bitsandbytes)."""
        return self._storage["min_8bit_size"]

    # ---- the guard: live options ----

    def set_guard(self, *, max_grad_norm=None, clip_value=None, skip_nonfinite=False):
        """Inside each step: scale the grads so their global L2 norm is at most
        `max_grad_norm`, then clamp them to [-clip_value, clip_value] (both as
        read: your grads are not modified), and/or skip a step whose grads hold
        NaN or ±Inf (counted in ``skipped_steps``). One pass computes norm and
        finiteness. Each is also a live attribute (``opt.max_grad_norm = 1.0``)."""
        if max_grad_norm is not None:
            max_grad_norm = _checks.real("max_grad_norm", max_grad_norm, lo=0.0, lo_open=True)
        if clip_value is not None:
            clip_value = _checks.real("clip_value", clip_value, lo=0.0, lo_open=True)
        skip_nonfinite = _checks.flag("skip_nonfinite", skip_nonfinite)
        self._set_guard(max_grad_norm or 0.0, clip_value or 0.0, skip_nonfinite)
        object.__setattr__(self, "_guard", {"max_grad_norm": max_grad_norm, "clip_value": clip_value,
                                            "skip_nonfinite": skip_nonfinite})

    def _guard_property(name):
        def get(self):
            return self._guard[name]

        def set_(self, value):
            self.set_guard(**{**self._guard, name: value})
        return property(get, set_, doc=f"Live guard option {name!r} (see set_guard).")

    max_grad_norm = _guard_property("max_grad_norm")
    clip_value = _guard_property("clip_value")
    skip_nonfinite = _guard_property("skip_nonfinite")
    del _guard_property
