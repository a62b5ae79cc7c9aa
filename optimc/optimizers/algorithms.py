"""The algorithms: one class each, the whole Python description of it — its
C rule (``_kernel``, csrc/rules/<name>.h), hyperparameters and defaults (the
``__init__`` signature), and any checks or fixed options of its own. The
formulas are in the rule files and docs/algorithms.md."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import _checks, _core
from .base import Optimizer
from .groups import split_params


class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum, dampening and
    Nesterov momentum (torch.optim.SGD's formulas). State: ``momentum_buffer``
    (when momentum > 0 at creation). Takes ``optimc.SparseGrad`` without momentum."""
    _kernel = "sgd"
    sparse_grads = ("momentum",)   # as torch's sparse SGD: no buffer to update lazily

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
    sparse_grads = None   # it needs momentum > 0, and SGD's rule takes SparseGrads only without

    def __init__(self, params, lr=0.01, momentum=0.9, weight_decay=0.0, maximize=False, **options):
        Optimizer.__init__(self, params, locals(), **options)

    def _check_group(self, g):
        if g.get("momentum", 0.9) <= 0:
            raise ValueError("momentum: NAG needs momentum > 0")


class Adagrad(Optimizer):
    """Adagrad: per-element steps scaled by the root of the summed squared
    grads. State: ``sum``. Takes ``optimc.SparseGrad`` without weight decay."""
    _kernel = "adagrad"
    sparse_grads = ("weight_decay",)   # as torch.optim.Adagrad: decay would touch every row
    _structural = ("initial_accumulator_value",)

    def __init__(self, params, lr=0.01, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-8, maximize=False, **options):
        super().__init__(params, locals(), **options)


class RMSprop(Optimizer):
    """RMSprop: steps scaled by a moving RMS of the grads; optional centering
    and momentum. State: ``square_avg``, ``momentum_buffer`` (momentum > 0),
    ``grad_avg`` (centered)."""
    _kernel = "rmsprop"
    _structural = ("centered",)

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
    _structural = ("amsgrad",)

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


def _etas(name, value):
    return _checks.pair(name, value, lambda n, v: _checks.real(n, v, lo=0.0, lo_open=True))


def _step_sizes(name, value):
    return _checks.pair(name, value, lambda n, v: _checks.real(n, v, lo=0.0))


class Rprop(Optimizer):
    """Rprop: per-element step sizes that grow by etas[1] while the grad keeps
    its sign and shrink by etas[0] when it flips; only the grad's sign moves
    the param (torch.optim.Rprop's formulas). For full-batch training: noisy
    mini-batch grads flip sign too often. State: ``prev``, ``step_size``."""
    _kernel = "rprop"
    _pairs = {"etas": ("etaminus", "etaplus"), "step_sizes": ("step_size_min", "step_size_max")}
    _checks = {"etas": _etas, "step_sizes": _step_sizes}

    def __init__(self, params, lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0), weight_decay=0.0,
                 maximize=False, **options):
        super().__init__(params, locals(), **options)

    def _check_group(self, g):
        if "etas" in g and not g["etas"][0] < 1.0 < g["etas"][1]:
            raise ValueError(f"etas: expected 0 < etaminus < 1 < etaplus, got {g['etas']!r}")
        if "step_sizes" in g and not g["step_sizes"][0] <= g["step_sizes"][1]:
            raise ValueError(f"step_sizes: expected step_size_min <= step_size_max, got {g['step_sizes']!r}")


# ---- per-param masks (optax's `mask` arguments) ----

def _is_per_param(value):
    return callable(value) or isinstance(value, (list, tuple, Mapping, np.ndarray))


def _group_mask(name, value):
    """A group's mask: True or False (None: True, optax's "no mask")."""
    if value is None:
        return True
    if _is_per_param(value):
        raise TypeError(f"{name}: a per-param mask (a callable or one True/False per param) is taken "
                        f"by the constructor only; a group's {name} is True or False")
    return _checks.flag(name, value)


def _mask_flags(name, mask, params):
    """One bool per array of ``params`` (a list or dict) from a per-param mask: a
    callable of ``params`` returning such a container, or the container itself."""
    arrays, names = split_params(params, "params")
    value = mask(params) if callable(mask) else mask
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if names is None:
        if not isinstance(value, (list, tuple)) or len(value) != len(arrays):
            raise TypeError(f"{name}: expected a list of {len(arrays)} True/False (one per param), "
                            f"got {value!r}")
        return [_checks.flag(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if not isinstance(value, Mapping) or set(value) != set(names):
        raise TypeError(f"{name}: expected a dict of True/False with the params' keys "
                        f"{sorted(names)}, got {value!r}")
    return [_checks.flag(f"{name}[{k!r}]", value[k]) for k in names]


def _split_by_masks(params, masks):
    """``params`` as param groups whose masks are plain bools: a group with a
    per-param mask (its own, or the constructor's from ``masks``) becomes one
    group per run of consecutive params with equal masks, in order, so grads
    keep their order. A list or dict mask at the constructor needs flat params
    (with groups, give each group its own, or pass a callable)."""
    is_groups = isinstance(params, (list, tuple)) and params and all(isinstance(g, Mapping) for g in params)
    if is_groups:
        for name, value in masks.items():
            if _is_per_param(value) and not callable(value):
                raise TypeError(f"{name}: with param groups, give each group its own {name} "
                                f"(or pass a callable of a group's params)")
    groups = [dict(g) for g in params] if is_groups else [{"params": params}]
    out = []
    for group in groups:
        per = {name: _mask_flags(name, group.get(name, value), group["params"])
               for name, value in masks.items() if _is_per_param(group.get(name, value))}
        if not per:
            out.append(group)
            continue
        arrays, names = split_params(group["params"], "params")
        start = 0
        for i in range(1, len(arrays) + 1):
            if i < len(arrays) and all(flags[i] == flags[start] for flags in per.values()):
                continue
            run = arrays[start:i] if names is None else dict(zip(names[start:i], arrays[start:i]))
            out.append({**group, "params": run, **{name: flags[start] for name, flags in per.items()}})
            start = i
    return out


class LAMB(Optimizer):
    """LAMB (optax.lamb): Adam's direction plus weight decay, scaled per tensor
    by the trust ratio ‖θ‖/‖u‖ (both norms computed inside the one C call).
    optax's ``learning_rate`` is ``lr`` here. ``mask``: which params get weight
    decay — True/False per group, or at construction a callable of the params
    (list or dict) returning one bool per param, or such a list/dict (params
    then split into groups of consecutive params with equal masks).
    State: ``mu``, ``nu``."""
    _kernel = "lamb"
    elementwise = False   # the trust ratio needs whole tensors: ZeRO-1 cannot shard it
    _checks = {"b1": lambda n, v: _checks.real(n, v, 0.0, 1.0, hi_open=True),
               "b2": lambda n, v: _checks.real(n, v, 0.0, 1.0, hi_open=True),
               "eps_root": lambda n, v: _checks.real(n, v, lo=0.0),
               "mask": _group_mask}

    def __init__(self, params, lr=1e-3, b1=0.9, b2=0.999, eps=1e-6, eps_root=0.0, weight_decay=0.0,
                 mask=None, maximize=False, **options):
        params = _split_by_masks(params, {"mask": mask})
        if _is_per_param(mask):
            mask = None
        super().__init__(params, locals(), **options)


class LARS(Optimizer):
    """LARS (optax.lars): the grad plus weight decay, scaled per tensor by the
    trust ratio trust_coefficient·‖θ‖/(‖u‖ + eps), times −lr, then momentum
    (a trace of the scaled steps). optax's ``learning_rate`` is ``lr`` here.
    ``weight_decay_mask`` and ``trust_ratio_mask`` take what LAMB's ``mask``
    takes (False on biases and norms is the usual choice). State: ``trace``."""
    _kernel = "lars"
    elementwise = False   # the trust ratio needs whole tensors: ZeRO-1 cannot shard it
    _checks = {"eps": lambda n, v: _checks.real(n, v, lo=0.0),
               "trust_coefficient": lambda n, v: _checks.real(n, v, lo=0.0, lo_open=True),
               "weight_decay_mask": _group_mask, "trust_ratio_mask": _group_mask}

    def __init__(self, params, lr=1.0, weight_decay=0.0, weight_decay_mask=True, trust_coefficient=0.001,
                 eps=0.0, trust_ratio_mask=True, momentum=0.9, nesterov=False, maximize=False, **options):
        params = _split_by_masks(params, {"weight_decay_mask": weight_decay_mask,
                                          "trust_ratio_mask": trust_ratio_mask})
        if _is_per_param(weight_decay_mask):
            weight_decay_mask = True
        if _is_per_param(trust_ratio_mask):
            trust_ratio_mask = True
        super().__init__(params, locals(), **options)
class ASGD(Optimizer):
    """Averaged SGD (torch.optim.ASGD's formulas): SGD with a decaying step size
    η_t and a running average ``ax`` of the iterates, kept from step t0 on
    (before it, ``ax`` is a copy of the latest iterate). State: ``ax``, scalars ``eta``
    and ``mu`` (the next step's step size and averaging weight).
    :attr:`averaged` gives the averaged params."""
    _kernel = "asgd"
    _checks = {"lambd": lambda n, v: _checks.real(n, v, lo=0.0),
               "alpha": lambda n, v: _checks.real(n, v, lo=0.0),
               "t0": _checks.real}

    def __init__(self, params, lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0,
                 maximize=False, **options):
        super().__init__(params, locals(), **options)

    @property
    def averaged(self):
        """The averaged params ā (torch's ``state['ax']``), as views of the C
        buffers in param order (a dict for named params): copy them to
        evaluate or keep the average. A param that has not stepped yet has no
        average; its entry is the param itself."""
        keys = list(self.state)   # param names, or indices
        params = [p for g in self.param_groups for p in g["params"]]
        views = [st["ax"] if st["step"] > 0 else p for st, p in zip((self.state[k] for k in keys), params)]
        named = any("param_names" in g for g in self.param_groups)
        return dict(zip(keys, views)) if named else views


def _warmup_steps(name, value):
    return _checks.integer(name, value, lo=0)


class _ScheduleFreeMode:
    """The train/eval switch of the Schedule-Free optimizers (a mixin).

    While training the params hold the point y where grads are taken; the
    average x, the point to evaluate, is y moved away from the base sequence
    z: x = lerp(y, z, 1 − 1/β) and y = lerp(x, z, 1 − β), with β the group's
    momentum (SGDScheduleFree) or betas[0] (AdamWScheduleFree). ``eval()``
    and ``train()`` apply them in place (in C), as the schedulefree package
    does; a param that has not stepped has no z yet and is left as it is.
    A bfloat16/float16 param moves its master weights (master_weights=True) or
    its float32 value, and is written rounded to nearest even."""

    _mode_key = "train_mode"

    def _refuse_foreach(self, options):
        if "foreach" in options:
            raise TypeError(f"{type(self).__name__}() got the argument 'foreach': that chooses between "
                            f"torch implementations; optimc always updates every param in one C call, "
                            f"so leave it out")

    def _switch(self, to_train):
        if self._train_mode == to_train:
            return
        params = [p for g in self.param_groups for p in g["params"]]
        keys = list(self.state)
        start = 0
        for g in self.param_groups:
            n = len(g["params"])
            beta = self._interpolation(g)
            weight = 1.0 - beta if to_train else 1.0 - 1.0 / beta
            ys, zs, halves = [], [], []
            for key, p in zip(keys[start:start + n], params[start:start + n]):
                st = self.state[key]
                if st["step"] > 0:
                    if p.dtype.name in ("bfloat16", "float16"):
                        y = st["master"] if "master" in st else p.astype(np.float32)
                        halves.append((p, y))
                        p = y
                    ys.append(p)
                    zs.append(st["z"])
            if ys:
                _core.ema(ys, zs, weight)
            for p, y in halves:
                p[...] = y.astype(p.dtype)   # round to nearest even
            start += n
        object.__setattr__(self, "_train_mode", to_train)

    def train(self):
        """Move the params to the training point y (where grads are taken);
        steps are allowed. Does nothing if already in train mode (the mode a
        new optimizer starts in)."""
        self._switch(True)
        return self

    def eval(self):
        """Move the params to the averaged point x (the one to evaluate, test or
        save for inference); steps raise until :meth:`train`. Does nothing if
        already in eval mode."""
        self._switch(False)
        return self

    def _options(self):
        return super()._options() + ([] if self._train_mode else ["eval mode"])   # shown by repr

    @property
    def train_mode(self):
        """True while the params hold y (train mode), False while they hold x."""
        return self._train_mode

    def step(self, *args, **kwargs):
        if not self._train_mode:
            raise RuntimeError(f"{type(self).__name__}.step: the optimizer is in eval mode (its params "
                               f"hold the averaged point x); call opt.train() before stepping")
        return super().step(*args, **kwargs)

    def state_dict(self):
        """As ``Optimizer.state_dict``, plus ``train_mode``: whether the params held
        y (True) or x (False) when it was taken."""
        sd = super().state_dict()
        sd[self._mode_key] = self._train_mode
        return sd

    def load_state_dict(self, state_dict):
        """As ``Optimizer.load_state_dict``; also takes the saved mode. The params
        are not touched: restore them from the same moment as the state."""
        if not isinstance(state_dict, Mapping) or state_dict.get("optimizer") != type(self).__name__:
            return super().load_state_dict(state_dict)      # raises: not this optimizer's state dict
        if self._mode_key not in state_dict:
            raise ValueError(f"state_dict[{self._mode_key!r}]: missing (whether the params hold "
                             f"the training point y or the average x)")
        mode = state_dict[self._mode_key]
        if not isinstance(mode, (bool, np.bool_)):
            raise TypeError(f"state_dict[{self._mode_key!r}]: expected True or False, got {mode!r}")
        super().load_state_dict(state_dict)
        object.__setattr__(self, "_train_mode", bool(mode))


class SGDScheduleFree(_ScheduleFreeMode, Optimizer):
    """Schedule-Free SGD (Defazio et al. 2024; the schedulefree package's
    SGDScheduleFree): no lr schedule needed, an optional linear warm-up
    (``warmup_steps``), and an average of the iterates weighted by
    ``(k+1)^r · lr_max^weight_lr_power``. Call :meth:`eval` before evaluating
    and :meth:`train` before stepping again. State: ``z``, scalars ``lr_max``,
    ``weight_sum``."""
    _kernel = "sgd_schedule_free"
    _checks = {"momentum": lambda n, v: _checks.real(n, v, 0.0, 1.0, lo_open=True, hi_open=True),
               "warmup_steps": _warmup_steps, "r": _checks.real,
               "weight_lr_power": lambda n, v: _checks.real(n, v, lo=0.0)}

    def __init__(self, params, lr=1.0, momentum=0.9, weight_decay=0, warmup_steps=0, r=0.0,
                 weight_lr_power=2, maximize=False, **options):
        self._refuse_foreach(options)
        object.__setattr__(self, "_train_mode", True)
        super().__init__(params, locals(), **options)

    @staticmethod
    def _interpolation(group):
        return group["momentum"]


class AdamWScheduleFree(_ScheduleFreeMode, Optimizer):
    """Schedule-Free AdamW (Defazio et al. 2024; the schedulefree package's
    AdamWScheduleFree): Adam's second moment normalises the grad, the decay
    is added at y after normalising, and the params follow the Schedule-Free
    average (see SGDScheduleFree). State: ``z``, ``exp_avg_sq``, scalars
    ``lr_max``, ``weight_sum``."""
    _kernel = "adamw_schedule_free"
    _checks = {"warmup_steps": _warmup_steps, "r": _checks.real,
               "weight_lr_power": lambda n, v: _checks.real(n, v, lo=0.0)}

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 warmup_steps=0, r=0.0, weight_lr_power=2.0, maximize=False, **options):
        self._refuse_foreach(options)
        object.__setattr__(self, "_train_mode", True)
        super().__init__(params, locals(), **options)

    def _check_group(self, g):
        if "betas" in g and not g["betas"][0] > 0:
            raise ValueError(f"betas: expected betas[0] > 0 (eval() moves the params by 1 - 1/betas[0]), "
                             f"got {g['betas']!r}")

    @staticmethod
    def _interpolation(group):
        return group["betas"][0]
class SparseAdam(Optimizer):
    """SparseAdam (torch.optim.SparseAdam): Adam for embedding tables given
    row-sparse grads (``optimc.SparseGrad``): moments and params change only
    at the given rows, with one step counter per param and ε added after the
    bias-corrected root. A dense grad counts as every row given once.
    ``weight_decay`` (L2 at the given rows) is optimc's addition.
    State: ``exp_avg``, ``exp_avg_sq``."""
    _kernel = "sparse_adam"
    sparse_grads = ()

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False,
                 **options):
        super().__init__(params, locals(), **options)


class RowWiseAdagrad(Optimizer):
    """Row-wise Adagrad (torchrec's RowWiseAdagrad, FBGEMM's row-wise Adagrad):
    one accumulator per row (axis 0), the running sum of the mean of the row's
    squared grad, so its state is 4 or 8 bytes per row. For embedding tables,
    with ``optimc.SparseGrad`` or dense grads; weight decay L2 or decoupled.
    State: ``sum`` (one value per row)."""
    _kernel = "rowwise_adagrad"
    sparse_grads = ()
    _structural = ("initial_accumulator_value",)
    elementwise = False

    def __init__(self, params, lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-8, decoupled_weight_decay=False, maximize=False, **options):
        super().__init__(params, locals(), **options)


def _adafactor_eps(name, value):
    """(eps1, eps2): eps1 None (the param dtype's machine epsilon) or >= 0, eps2 >= 0."""
    return _checks.pair(name, value, lambda n, v: None if v is None and n.endswith("[0]")
                        else _checks.real(n, v, lo=0.0))


class Adafactor(Optimizer):
    """Adafactor (torch.optim.Adafactor's formulas): for params of 2 or more
    dims, the second moment is factored over the last two dims into running
    means of g² per row (``row_var``, shape[:-1] + (1,)) and per column
    (``col_var``, shape[:-2] + (1, C)), so a matrix keeps R + C numbers instead
    of R·C; below 2-D a full ``variance``. The step is relative to the param's
    RMS (at least eps[1]) times min(lr, 1/√t), and the update is clipped to an
    RMS of at most ``d``. ``eps[0]=None`` is the param dtype's machine epsilon.
    Weight decay is decoupled (θ ← θ(1 − lr·wd)), as in torch."""
    _kernel = "adafactor"
    elementwise = False   # factored state and per-tensor RMS: ZeRO-1 cannot shard it
    _pairs = {"eps": ("eps1", "eps2")}
    _fixed = {"decoupled_weight_decay": True}
    _checks = {"beta2_decay": lambda n, v: _checks.real(n, v, hi=0.0),
               "eps": _adafactor_eps,
               "d": lambda n, v: _checks.real(n, v, lo=1.0)}

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0,
                 maximize=False, **options):
        super().__init__(params, locals(), **options)

    def _engine_hyper(self, group):
        d = super()._engine_hyper(group)
        if d["eps1"] is None:
            d["eps1"] = -1.0   # the rule's "None": each param's dtype epsilon
        return d
