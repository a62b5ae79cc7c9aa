"""The algorithms: one class each, the whole Python description of it — its
C rule (``_kernel``, csrc/rules/<name>.h), hyperparameters and defaults (the
``__init__`` signature), and any checks or fixed options of its own. The
formulas are in the rule files and docs/algorithms.md."""
from __future__ import annotations

from .. import _checks
from .base import Optimizer


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


class SparseAdam(Optimizer):
    """SparseAdam (torch.optim.SparseAdam): Adam for embedding tables given
    row-sparse grads (``optimc.SparseGrad``): moments and params change only
    at the given rows, with one step counter per param and ε added after the
    bias-corrected root. A dense grad counts as every row given once.
    ``weight_decay`` (L2 at the given rows) is optimc's addition.
    State: ``exp_avg``, ``exp_avg_sq``."""
    _kernel = "sparse_adam"

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
    _structural = ("initial_accumulator_value",)
    elementwise = False

    def __init__(self, params, lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-8, decoupled_weight_decay=False, maximize=False, **options):
        super().__init__(params, locals(), **options)
