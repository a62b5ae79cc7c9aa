"""Tests for the scheduler objects of optimc.schedules (optimc/schedules/schedulers.py).

Scheduler objects are compared step by step with torch.optim.lr_scheduler
(same names and arguments, so one builder makes both), on real optimc
optimizers and on a minimal stand-in optimizer (a ``param_groups`` list of
dicts), which documents the whole interface schedulers rely on. Then: every
field of every scheduler's state is checked on load, a refused step or
constructor changes nothing, the step-order warning, and the reprs.
"""

import copy
import json
import math
import pickle
import warnings

import numpy as np
import pytest

from optimc import schedules as S

RTOL = 1e-12
ORDER_WARNING = "before the optimizer's first step"

# Every test here steps the optimizer before its scheduler, as a user must; the
# warning for the wrong order is tested on its own (test_step_order_warning_*).
pytestmark = pytest.mark.filterwarnings(f"error:.*{ORDER_WARNING}:UserWarning")


# --------------------------------------------------------------------------
# optimizers: real optimc ones, the stand-in, and torch's
# --------------------------------------------------------------------------

class StandInOptimizer:
    """Everything a scheduler needs from an optimizer: ``param_groups`` (and ``defaults``)."""

    def __init__(self, groups, **defaults):
        self.defaults = dict(defaults)
        self.param_groups = [{**defaults, **g} for g in groups]


# kind -> (optimizer class name shared by optimc and torch, its hyperparameters)
KINDS = {
    "momentum": ("SGD", {"momentum": 0.9}),
    "betas": ("Adam", {"betas": (0.9, 0.999)}),
    "plain": ("Adagrad", {}),
}
LRS = [0.1, 0.025]          # two param groups with different initial lrs


def _groups(lrs, zeros):
    return [{"params": [zeros(3)], "lr": lr} for lr in lrs]


def standin_opt(kind, lrs=LRS):
    return StandInOptimizer(_groups(lrs, np.zeros), lr=lrs[0], **KINDS[kind][1])


def optimc_opt(kind, lrs=LRS):
    optimc = pytest.importorskip("optimc")
    name, kw = KINDS[kind]
    if not hasattr(optimc, name):
        pytest.skip(f"optimc.{name} is not available (optimc not built)")
    return getattr(optimc, name)(_groups(lrs, np.zeros), lr=lrs[0], **kw)


def torch_opt(kind, lrs=LRS):
    torch = pytest.importorskip("torch")
    name, kw = KINDS[kind]
    return getattr(torch.optim, name)(_groups(lrs, lambda n: torch.zeros(n, requires_grad=True)),
                                      lr=lrs[0], **kw)


@pytest.fixture(params=["optimc", "standin"])
def make_opt(request):
    """Builds the optimizer the scheduler under test drives: optimc's, or the stand-in."""
    return optimc_opt if request.param == "optimc" else standin_opt


def opt_step(opt):
    """One optimizer step with zero grads (params stay put), before a scheduler step;
    the stand-in has no step."""
    if hasattr(opt, "step"):
        opt.step([np.zeros_like(p) for g in opt.param_groups for p in g["params"]])


def momentum_of(opt):
    return [g["betas"][0] if "betas" in g else g["momentum"] if "momentum" in g else 0.0
            for g in opt.param_groups]


def _metric(t):
    """A noisy loss curve with plateaus, the same for both sides."""
    return float(max(1.0 - 0.01 * t, 0.4) + 0.02 * math.sin(1.7 * t) + (0.3 if t % 97 == 50 else 0.0))


# --------------------------------------------------------------------------
# the schedulers, as (id, optimizer kind, steps, build(module, opt), metric or None)
# `L` is torch.optim.lr_scheduler or optimc.schedules: same names, same arguments.
# --------------------------------------------------------------------------

SPECS = [
    ("LambdaLR", "momentum", 300, lambda L, o: L.LambdaLR(o, [lambda e: 0.95 ** e, lambda e: 1 / (1 + e)])),
    ("LambdaLR-single", "plain", 300, lambda L, o: L.LambdaLR(o, lambda e: (e + 1) / (e + 10))),
    ("MultiplicativeLR", "betas", 300,
     lambda L, o: L.MultiplicativeLR(o, [lambda e: 0.99, lambda e: 1.05 if e % 10 == 0 else 0.98])),
    ("StepLR", "momentum", 300, lambda L, o: L.StepLR(o, step_size=30, gamma=0.5)),
    ("MultiStepLR", "momentum", 300, lambda L, o: L.MultiStepLR(o, [10, 50, 50, 120], gamma=0.3)),
    ("ConstantLR", "plain", 300, lambda L, o: L.ConstantLR(o, factor=0.25, total_iters=40)),
    ("LinearLR", "betas", 300, lambda L, o: L.LinearLR(o, start_factor=0.05, end_factor=0.8, total_iters=100)),
    ("ExponentialLR", "momentum", 300, lambda L, o: L.ExponentialLR(o, gamma=0.99)),
    ("PolynomialLR", "plain", 300, lambda L, o: L.PolynomialLR(o, total_iters=120, power=2.0)),
    ("CosineAnnealingLR", "momentum", 300, lambda L, o: L.CosineAnnealingLR(o, T_max=70, eta_min=1e-4)),
    ("CosineAnnealingLR-eta0", "betas", 300, lambda L, o: L.CosineAnnealingLR(o, T_max=50)),
    ("CosineAnnealingWarmRestarts", "momentum", 300,
     lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-3)),
    ("CosineAnnealingWarmRestarts-mult1", "plain", 300, lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=25)),
    ("CyclicLR-triangular-momentum", "momentum", 300,
     lambda L, o: L.CyclicLR(o, base_lr=[0.01, 0.001], max_lr=[0.1, 0.05], step_size_up=20, step_size_down=35)),
    ("CyclicLR-triangular2-betas", "betas", 300,
     lambda L, o: L.CyclicLR(o, 0.001, 0.01, step_size_up=15, mode="triangular2")),
    ("CyclicLR-exp_range-momentum", "momentum", 300,
     lambda L, o: L.CyclicLR(o, 0.01, 0.1, step_size_up=10, mode="exp_range", gamma=0.995,
                             base_momentum=[0.7, 0.75], max_momentum=0.95)),
    ("CyclicLR-scale_fn-no-momentum", "plain", 300,
     lambda L, o: L.CyclicLR(o, 0.01, 0.1, 12, scale_fn=lambda x: 0.5 ** (x / 50),
                             scale_mode="iterations", cycle_momentum=False)),
    # OneCycleLR: steps 0 .. total_steps - 1 (see test_one_cycle_holds_min_lr_after_the_last_step)
    ("OneCycleLR-cos-momentum", "momentum", 299, lambda L, o: L.OneCycleLR(o, max_lr=[0.1, 0.05], total_steps=300)),
    ("OneCycleLR-linear-3phase-betas", "betas", 299,
     lambda L, o: L.OneCycleLR(o, max_lr=0.01, epochs=10, steps_per_epoch=30, anneal_strategy="linear",
                               three_phase=True, base_momentum=[0.8, 0.85], max_momentum=0.95)),
    ("OneCycleLR-no-momentum", "plain", 249, lambda L, o: L.OneCycleLR(o, 0.1, total_steps=250, pct_start=0.25,
                                                                     cycle_momentum=False)),
    ("SequentialLR-warmup-cosine", "momentum", 300,
     lambda L, o: L.SequentialLR(o, [L.LinearLR(o, 0.1, total_iters=20), L.CosineAnnealingLR(o, T_max=200)],
                                 milestones=[20])),
    ("SequentialLR-3", "betas", 300,
     lambda L, o: L.SequentialLR(o, [L.ConstantLR(o, 0.5, total_iters=10), L.ExponentialLR(o, 0.98),
                                     L.StepLR(o, 25, 0.5)], milestones=[30, 100])),
    ("SequentialLR-chained-first", "momentum", 300,
     lambda L, o: L.SequentialLR(o, [L.ChainedScheduler([L.ConstantLR(o, 0.5, total_iters=3), L.ExponentialLR(o, 0.9)]),
                                     L.StepLR(o, 5, 0.5)], milestones=[10])),
    ("ChainedScheduler", "plain", 300,
     lambda L, o: L.ChainedScheduler([L.ConstantLR(o, 0.2, total_iters=15), L.ExponentialLR(o, 0.99)])),
    ("ChainedScheduler-cosine-multistep", "momentum", 300,
     lambda L, o: L.ChainedScheduler([L.CosineAnnealingLR(o, 40), L.MultiStepLR(o, [60, 150], 0.5)])),
    ("ReduceLROnPlateau-min-rel", "momentum", 300,
     lambda L, o: L.ReduceLROnPlateau(o, patience=5, factor=0.5, cooldown=3, min_lr=[1e-4, 1e-5])),
    ("ReduceLROnPlateau-max-abs", "plain", 300,
     lambda L, o: L.ReduceLROnPlateau(o, mode="max", threshold=0.01, threshold_mode="abs", patience=3,
                                      factor=0.3, min_lr=1e-6)),
]
SPEC_IDS = [s[0] for s in SPECS]


def step(sched, t):
    if isinstance(sched, S.ReduceLROnPlateau) or type(sched).__name__ == "ReduceLROnPlateau":
        metric = _metric(t)
        sched.step(-metric if sched.mode == "max" else metric)
    else:
        sched.step()


def observe(opt, sched):
    """One row: get_last_lr(), the groups' lrs, and their momentum/beta1."""
    return [*sched.get_last_lr(), *[g["lr"] for g in opt.param_groups], *momentum_of(opt)]


def run(opt, sched, t0, t1):
    rows = []
    for t in range(t0, t1):
        opt_step(opt)
        step(sched, t)
        rows.append(observe(opt, sched))
    return rows


def torch_rows(build, kind, n):
    topt = torch_opt(kind)
    import torch.optim.lr_scheduler as TL

    with warnings.catch_warnings():
        # torch's SequentialLR constructor steps a wrapped ChainedScheduler's schedulers, which
        # warn about the order there; optimc's constructors never warn (tested below)
        warnings.filterwarnings("ignore", "Detected call of", UserWarning)
        sched = build(TL, topt)
        rows = [observe(topt, sched)]
        for t in range(n):
            topt.step()                 # no grads: a no-op that keeps torch's order check quiet
            step(sched, t)
            rows.append(observe(topt, sched))
    return rows


@pytest.mark.parametrize("name,kind,n,build", SPECS, ids=SPEC_IDS)
def test_matches_torch(make_opt, name, kind, n, build):
    pytest.importorskip("torch")
    opt = make_opt(kind)
    sched = build(S, opt)
    ours = [observe(opt, sched)] + run(opt, sched, 0, n)
    np.testing.assert_allclose(np.array(ours), np.array(torch_rows(build, kind, n)), rtol=RTOL, atol=0)


_GROUP_KEYS = ("lr", "initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum", "momentum", "betas")


def checkpoint(opt):
    """The optimizer's checkpoint: optimc's state_dict (it keeps the keys schedulers add
    to the groups), or for the stand-in a copy of what schedulers touch in its groups."""
    if hasattr(opt, "state_dict"):
        return opt.state_dict()
    return [{k: g[k] for k in _GROUP_KEYS if k in g} for g in opt.param_groups]


def restore(opt, saved):
    if hasattr(opt, "load_state_dict"):
        opt.load_state_dict(saved)
    else:
        for g, snap in zip(opt.param_groups, saved):
            g.update(snap)


@pytest.mark.parametrize("name,kind,n,build", SPECS, ids=SPEC_IDS)
def test_state_dict_resume(make_opt, name, kind, n, build):
    opt = make_opt(kind)
    sched = build(S, opt)
    run(opt, sched, 0, n // 2)
    state, opt_state = sched.state_dict(), checkpoint(opt)
    saved = json.loads(json.dumps(state))          # plain data: survives JSON and pickle
    assert pickle.loads(pickle.dumps(state)) == state
    before = copy.deepcopy(state)
    expected = run(opt, sched, n // 2, n)
    assert state == before, "state_dict() must return a copy"

    opt2 = make_opt(kind)
    sched2 = build(S, opt2)                        # as with torch: build, then restore both
    restore(opt2, opt_state)
    sched2.load_state_dict(saved)
    assert run(opt2, sched2, n // 2, n) == expected


def test_warm_restarts_fractional_epochs_match_torch(make_opt):
    pytest.importorskip("torch")
    import torch.optim.lr_scheduler as TL

    opt, topt = make_opt("momentum"), torch_opt("momentum")
    ours, theirs = S.CosineAnnealingWarmRestarts(opt, T_0=7, T_mult=2), TL.CosineAnnealingWarmRestarts(topt, 7, 2)
    for epoch in np.arange(0.0, 60.0, 0.37):
        topt.step()
        opt_step(opt)
        ours.step(float(epoch))
        theirs.step(float(epoch))
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=RTOL, atol=0)


@pytest.mark.parametrize("name", ["StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR",
                                  "ConstantLR", "PolynomialLR"])
def test_explicit_epoch_uses_closed_form_like_torch(make_opt, name):
    pytest.importorskip("torch")
    import torch.optim.lr_scheduler as TL

    build = dict((s[0], s[3]) for s in SPECS)[name]
    opt, topt = make_opt("momentum"), torch_opt("momentum")
    ours, theirs = build(S, opt), build(TL, topt)
    for epoch in [3, 17, 5, 150, 40]:
        topt.step()
        opt_step(opt)
        with pytest.warns(UserWarning, match="deprecated"):
            ours.step(epoch)
        with pytest.warns(UserWarning):
            theirs.step(epoch)
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=RTOL, atol=0)


def test_cycling_beta1_keeps_beta2_and_assigns_a_new_tuple(make_opt):
    opt = make_opt("betas")
    sched = S.OneCycleLR(opt, max_lr=0.01, total_steps=20)
    for _ in range(10):
        opt_step(opt)
        sched.step()
        for g in opt.param_groups:
            assert isinstance(g["betas"], tuple) and g["betas"][1] == 0.999
    assert 0.85 <= opt.param_groups[0]["betas"][0] < 0.95


def test_get_last_lr_is_a_copy_and_groups_get_initial_lr(make_opt):
    opt = make_opt("momentum")
    sched = S.StepLR(opt, 2)
    lrs = sched.get_last_lr()
    lrs[0] = 123.0
    assert sched.get_last_lr() == LRS
    assert [g["initial_lr"] for g in opt.param_groups] == LRS


def test_resume_with_last_epoch_needs_initial_lr():
    with pytest.raises(KeyError, match="initial_lr"):
        S.StepLR(standin_opt("plain"), 3, last_epoch=5)


def test_lambda_functions_not_saved_but_callable_objects_are(make_opt):
    class Warmup:
        def __init__(self):
            self.scale = 0.5

        def __call__(self, epoch):
            return self.scale * min(1.0, (epoch + 1) / 10)

    opt = make_opt("plain")
    sched = S.LambdaLR(opt, [Warmup(), lambda e: 1.0])
    sched.lr_lambdas[0].scale = 0.25
    state = sched.state_dict()
    assert state["lr_lambdas"] == [{"scale": 0.25}, None]
    sched2 = S.LambdaLR(make_opt("plain"), [Warmup(), lambda e: 1.0])
    sched2.load_state_dict(state)
    assert sched2.lr_lambdas[0].scale == 0.25


def test_added_param_group_is_a_clear_error():
    opt = standin_opt("plain")
    sched = S.LambdaLR(opt, lambda e: 0.9 ** e)
    opt.param_groups.append({"params": [np.zeros(2)], "lr": 0.5})
    with pytest.raises(ValueError, match="add_param_group"):
        sched.step()


# --------------------------------------------------------------------------
# bad arguments
# --------------------------------------------------------------------------

def _fn(e):
    return 1.0


BAD = [
    (lambda o: S.StepLR(object(), 3), TypeError, "param_groups"),
    (lambda o: S.ReduceLROnPlateau(object()), TypeError, "param_groups"),
    (lambda o: S.OneCycleLR([1, 2], 0.1, 10), TypeError, "param_groups"),
    (lambda o: S.StepLR(StandInOptimizer([]), 3), ValueError, "empty"),
    (lambda o: S.StepLR(StandInOptimizer([{"lr": "0.1"}]), 3), TypeError, "lr"),
    (lambda o: S.StepLR(StandInOptimizer([{"params": []}]), 3), TypeError, "'lr'"),
    (lambda o: S.StepLR(StandInOptimizer([{"lr": lambda t: 0.1}]), 3), TypeError, "callable schedule"),
    (lambda o: S.StepLR(o, step_size=-1), ValueError, "step_size"),
    (lambda o: S.StepLR(o, step_size=0), ValueError, "step_size"),
    (lambda o: S.StepLR(o, step_size=2.5), TypeError, "step_size"),
    (lambda o: S.StepLR(o, 3, gamma=0.0), ValueError, "gamma"),
    (lambda o: S.StepLR(o, 3, gamma=-0.5), ValueError, "gamma"),
    (lambda o: S.StepLR(o, 3, last_epoch=-2), ValueError, "last_epoch"),
    (lambda o: S.ExponentialLR(o, gamma=0), ValueError, "gamma"),
    (lambda o: S.MultiStepLR(o, [30, 10]), ValueError, "milestones"),
    (lambda o: S.MultiStepLR(o, [10, -1]), ValueError, r"milestones\[1\]"),
    (lambda o: S.MultiStepLR(o, [10, 20], gamma=0), ValueError, "gamma"),
    (lambda o: S.MultiStepLR(o, 10), TypeError, "milestones"),
    (lambda o: S.LambdaLR(o, [_fn]), ValueError, "lr_lambda"),
    (lambda o: S.LambdaLR(o, 0.5), TypeError, "lr_lambda"),
    (lambda o: S.MultiplicativeLR(o, [_fn, _fn, _fn]), ValueError, "lr_lambda"),
    (lambda o: S.ConstantLR(o, factor=1.5), ValueError, "factor"),
    (lambda o: S.ConstantLR(o, factor=0.0), ValueError, "factor"),
    (lambda o: S.ConstantLR(o, total_iters=0), ValueError, "total_iters"),
    (lambda o: S.LinearLR(o, start_factor=0.0), ValueError, "start_factor"),
    (lambda o: S.LinearLR(o, end_factor=2.0), ValueError, "end_factor"),
    (lambda o: S.PolynomialLR(o, total_iters=0), ValueError, "total_iters"),
    (lambda o: S.PolynomialLR(o, power=-1.0), ValueError, "power"),
    (lambda o: S.CosineAnnealingLR(o, T_max=0), ValueError, "T_max"),
    (lambda o: S.CosineAnnealingLR(o, T_max=-10), ValueError, "T_max"),
    (lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=-1.0), ValueError, "eta_min"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=0), ValueError, "T_0"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0), ValueError, "T_mult"),
    (lambda o: S.CyclicLR(o, [0.01], 0.1), ValueError, "base_lr"),
    (lambda o: S.CyclicLR(o, 0.01, [0.1, 0.2, 0.3]), ValueError, "max_lr"),
    (lambda o: S.CyclicLR(o, 0.01, 0.1, step_size_up=0), ValueError, "step_size_up"),
    (lambda o: S.CyclicLR(o, 0.01, 0.1, mode="sawtooth"), ValueError, "mode"),
    (lambda o: S.CyclicLR(o, 0.01, 0.1, scale_mode="epochs", scale_fn=_fn), ValueError, "scale_mode"),
    (lambda o: S.CyclicLR(o, 0.01, 0.1, base_momentum=[0.8]), ValueError, "base_momentum"),
    (lambda o: S.CyclicLR(o, 0.01, 0.1, max_momentum=1.5), ValueError, "max_momentum"),
    (lambda o: S.OneCycleLR(o, 0.1), ValueError, "total_steps"),
    (lambda o: S.OneCycleLR(o, 0.1, total_steps=0), ValueError, "total_steps"),
    (lambda o: S.OneCycleLR(o, 0.1, epochs=3, steps_per_epoch=0), ValueError, "steps_per_epoch"),
    (lambda o: S.OneCycleLR(o, 0.1, 10, pct_start=1.5), ValueError, "pct_start"),
    (lambda o: S.OneCycleLR(o, 0.1, 10, anneal_strategy="exp"), ValueError, "anneal_strategy"),
    (lambda o: S.OneCycleLR(o, [0.1], 10), ValueError, "max_lr"),
    (lambda o: S.OneCycleLR(o, 0.1, 10, div_factor=0), ValueError, "div_factor"),
    (lambda o: S.ReduceLROnPlateau(o, factor=1.0), ValueError, "factor"),
    (lambda o: S.ReduceLROnPlateau(o, mode="up"), ValueError, "mode"),
    (lambda o: S.ReduceLROnPlateau(o, threshold_mode="pct"), ValueError, "threshold_mode"),
    (lambda o: S.ReduceLROnPlateau(o, patience=-1), ValueError, "patience"),
    (lambda o: S.ReduceLROnPlateau(o, min_lr=[0.0]), ValueError, "min_lr"),
    (lambda o: S.SequentialLR(o, [], []), ValueError, "at least one"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.StepLR(o, 3)], []), ValueError, "milestone"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.StepLR(o, 3)], [5, 2]), ValueError, "milestone"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), "cosine"], [5]), TypeError, r"schedulers\[1\]"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.ReduceLROnPlateau(o)], [5]), ValueError, "ReduceLROnPlateau"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.StepLR(standin_opt("momentum"), 3)], [5]), ValueError,
     "same optimizer"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.ChainedScheduler([S.StepLR(o, 2)])], [5]), ValueError,
     r"schedulers\[1\] is a ChainedScheduler"),
    (lambda o: S.ChainedScheduler([]), ValueError, "at least one"),
    (lambda o: S.ChainedScheduler(S.StepLR(o, 3)), TypeError, "list"),
    (lambda o: S.ChainedScheduler([S.StepLR(o, 3), S.StepLR(standin_opt("momentum"), 3)]), ValueError,
     "same optimizer"),
]


@pytest.mark.parametrize("make,exc,match", BAD, ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD)])
def test_bad_arguments(make_opt, make, exc, match):
    with pytest.raises(exc, match=match):
        make(make_opt("momentum"))


@pytest.mark.parametrize("make", [lambda o: S.CyclicLR(o, 0.01, 0.1), lambda o: S.OneCycleLR(o, 0.1, 10)])
def test_cycle_momentum_needs_momentum_or_betas(make_opt, make):
    opt = make_opt("plain")
    with pytest.raises(ValueError, match="cycle_momentum"):
        make(opt)


def test_load_state_dict_checks_before_taking(make_opt):
    opt = make_opt("momentum")
    sched = S.CosineAnnealingLR(opt, T_max=10)
    opt_step(opt)
    sched.step()
    before = sched.state_dict()
    with pytest.raises(ValueError, match="missing keys"):
        sched.load_state_dict(S.StepLR(make_opt("momentum"), 3).state_dict())
    bad = dict(before, base_lrs=[0.1])
    with pytest.raises(ValueError, match="base_lrs"):
        sched.load_state_dict(bad)
    with pytest.raises(TypeError, match="dict"):
        sched.load_state_dict([("last_epoch", 3)])
    assert sched.state_dict() == before

    seq = S.SequentialLR(opt, [S.ConstantLR(opt, 0.5, 3), S.ExponentialLR(opt, 0.9)], [3])
    seq.step()
    before = seq.state_dict()
    bad = copy.deepcopy(before)
    bad["last_epoch"] = 99
    bad["_schedulers"][1] = before["_schedulers"][0]        # a wrapped scheduler's state does not fit
    with pytest.raises(ValueError, match="ExponentialLR"):
        seq.load_state_dict(bad)
    assert seq.state_dict() == before


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_holds_min_lr_after_the_last_step(make_opt, strategy, three_phase):
    """Stepping after each of total_steps batches reaches t = total_steps: optimc gives
    min_lr and the final momentum there; torch extrapolates the last phase (with
    "linear" to a negative lr). Every earlier step matches torch (test_matches_torch)."""
    opt = make_opt("momentum")
    sched = S.OneCycleLR(opt, max_lr=[0.1, 0.05], total_steps=100, anneal_strategy=strategy,
                         three_phase=three_phase)
    for _ in range(100):
        opt_step(opt)
        sched.step()
    np.testing.assert_allclose(sched.get_last_lr(), [g["min_lr"] for g in opt.param_groups], rtol=1e-9)
    np.testing.assert_allclose(momentum_of(opt), [0.95, 0.95], rtol=1e-12)


def test_cycling_momentum_on_sgd_created_without_momentum():
    opt = standin_opt("momentum")                     # like torch: momentum is just a number
    opt.param_groups[0]["momentum"] = 0.0
    S.CyclicLR(opt, 0.01, 0.1)
    assert opt.param_groups[0]["momentum"] == 0.9
    optimc = pytest.importorskip("optimc")
    if not hasattr(optimc, "SGD"):
        pytest.skip("optimc not built")
    opt = optimc.SGD([np.zeros(3)], lr=0.1)            # no momentum buffer: optimc refuses, clearly
    with pytest.raises(ValueError, match="cycle_momentum=False"):
        S.CyclicLR(opt, 0.01, 0.1)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["momentum"] == 0.0
    sched = S.CyclicLR(opt, 0.01, 0.1, cycle_momentum=False)
    opt_step(opt)
    sched.step()


def test_one_cycle_refuses_stepping_past_total_steps(make_opt):
    opt = make_opt("momentum")
    sched = S.OneCycleLR(opt, 0.1, total_steps=5)
    for _ in range(5):
        opt_step(opt)
        sched.step()
    before, lrs = sched.state_dict(), [g["lr"] for g in opt.param_groups]
    with pytest.raises(ValueError, match="total steps"):
        sched.step()
    assert sched.state_dict() == before and [g["lr"] for g in opt.param_groups] == lrs


# --------------------------------------------------------------------------
# with real optimc optimizers: the scheduled lr is the one the next step uses
# --------------------------------------------------------------------------

def test_scheduler_drives_optimc_steps():
    optimc = pytest.importorskip("optimc")
    if not hasattr(optimc, "SGD"):
        pytest.skip("optimc not built")
    w = np.zeros(4)
    opt = optimc.SGD([w], lr=0.1)
    sched = S.StepLR(opt, step_size=3, gamma=0.5)
    expected, g = np.zeros(4), np.ones(4)
    for t in range(10):
        opt.step([g])
        expected -= 0.1 * 0.5 ** (t // 3) * g
        sched.step()
    np.testing.assert_allclose(w, expected, rtol=1e-15)


def test_one_cycle_betas_reach_optimc_adam():
    optimc = pytest.importorskip("optimc")
    if not hasattr(optimc, "Adam"):
        pytest.skip("optimc not built")
    w = np.zeros(3)
    opt = optimc.Adam([w], lr=1e-3)
    sched = S.OneCycleLR(opt, max_lr=0.01, total_steps=10)
    for _ in range(10):
        opt.step([np.ones(3)])
        sched.step()
    beta1 = opt.param_groups[0]["betas"][0]
    assert beta1 == pytest.approx(0.95) and opt.param_groups[0]["betas"][1] == 0.999
    assert np.all(np.isfinite(w)) and np.all(w < 0)


# ---- attaching a scheduler to some param groups only ---------------------

def test_scheduler_on_one_param_group():
    import optimc
    a, b = np.zeros(2), np.zeros(2)
    opt = optimc.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.5}], momentum=0.9)
    sched = S.StepLR(S.select(opt, 1), step_size=2, gamma=0.1)
    lrs = []
    for _ in range(5):
        opt.step([np.ones(2), np.ones(2)])
        sched.step()
        lrs.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
    assert [l0 for l0, _ in lrs] == [1.0] * 5
    np.testing.assert_allclose([l1 for _, l1 in lrs], [0.5, 0.05, 0.05, 0.005, 0.005])
    assert sched.get_last_lr() == [lrs[-1][1]]
    # the same schedule as torch gives a one-group optimizer
    torch = pytest.importorskip("torch")
    t = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.5)
    ts = torch.optim.lr_scheduler.StepLR(t, step_size=2, gamma=0.1)
    expect = []
    for _ in range(5):
        t.step()
        ts.step()
        expect.append(ts.get_last_lr()[0])
    assert [l1 for _, l1 in lrs] == expect


@pytest.mark.parametrize("indices,exc,match", [
    ((2,), ValueError, "param group 2 does not exist"),
    ((-1,), ValueError, "param group -1 does not exist"),
    ((), ValueError, "at least one"),
    ((0, 0), ValueError, "twice"),
    (("0",), TypeError, "int"),
])
def test_scheduler_on_missing_param_group_refused(indices, exc, match):
    import optimc
    opt = optimc.Adam([{"params": [np.zeros(2)]}, {"params": [np.zeros(2)], "lr": 0.1}])
    before = [dict(g) for g in opt.param_groups]
    with pytest.raises(exc, match=match):
        S.CosineAnnealingLR(S.select(opt, *indices), T_max=10)
    for g, b in zip(opt.param_groups, before):
        assert set(g) == set(b) and all(g[k] is b[k] or g[k] == b[k] for k in b)


# --------------------------------------------------------------------------
# load_state_dict: every field of every scheduler is checked before any is taken
# --------------------------------------------------------------------------

SPEC_BY_ID = {s[0]: s for s in SPECS}


def stepped(spec_id, opt, n=7):
    """The scheduler of SPECS[spec_id] on `opt` after n steps (each after an optimizer step)."""
    _, _, _, build = SPEC_BY_ID[spec_id]
    sched = build(S, opt)
    run(opt, sched, 0, n)
    return sched


def snapshot(opt, sched):
    """Everything a refused call must leave alone: the scheduler's state (with wrapped
    ones') and the group values schedulers read and write."""
    return sched.state_dict(), [{k: copy.deepcopy(g[k]) for k in _GROUP_KEYS if k in g} for g in opt.param_groups]


def assert_same(before, after):
    """Bit-identical snapshots (NaN-safe: compared by repr)."""
    assert repr(before) == repr(after)


def paths(state, prefix=()):
    """Every field of a state, and every entry of its lists, as key paths (wrapped
    schedulers' fields included)."""
    for key, value in state.items():
        yield prefix + (key,)
        if key == "_schedulers":
            for i, sub in enumerate(value):
                yield from paths(sub, prefix + (key, i))
        elif isinstance(value, list):
            for i in range(len(value)):
                yield prefix + (key, i)


def replaced(state, path, value):
    state = copy.deepcopy(state)
    target = state
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return state


@pytest.mark.parametrize("kind_of_opt", ["optimc", "standin"])
@pytest.mark.parametrize("spec_id", SPEC_IDS)
def test_every_field_is_checked_on_load(kind_of_opt, spec_id):
    """A string, NaN or an arbitrary object in any field (or list entry) of any
    scheduler's state is refused with an error naming that field, and nothing changes."""
    make = optimc_opt if kind_of_opt == "optimc" else standin_opt
    opt = make(SPEC_BY_ID[spec_id][1])
    sched = stepped(spec_id, opt)
    state = sched.state_dict()
    before = snapshot(opt, sched)
    for path in paths(state):
        field = "state_dict" + "".join(f"[{k!r}]" for k in path)
        for bad in ("x", math.nan, object()):
            with pytest.raises((TypeError, ValueError)) as info:
                sched.load_state_dict(replaced(state, path, bad))
            assert str(info.value).startswith(field), (path, bad, str(info.value))
    assert_same(before, snapshot(opt, sched))
    sched.load_state_dict(state)                  # and the untouched state still loads


BAD_STATES = [
    # issue 9 item 16's cases, then one or more per field kind and per scheduler
    ("StepLR", {"last_epoch": "x"}, TypeError, "last_epoch"),
    ("StepLR", {"last_epoch": 2.5}, TypeError, "last_epoch"),
    ("StepLR", {"last_epoch": True}, TypeError, "last_epoch"),
    ("StepLR", {"last_epoch": -2}, ValueError, "last_epoch"),
    ("StepLR", {"last_epoch": 2**63}, ValueError, "last_epoch"),
    ("StepLR", {"_step_count": -1}, ValueError, "_step_count"),
    ("StepLR", {"gamma": -2}, ValueError, "gamma"),
    ("StepLR", {"gamma": math.nan}, ValueError, "gamma"),
    ("StepLR", {"gamma": math.inf}, ValueError, "gamma"),
    ("StepLR", {"gamma": 0.0}, ValueError, "gamma"),
    ("StepLR", {"step_size": 0}, ValueError, "step_size"),
    ("StepLR", {"step_size": 30.0}, TypeError, "step_size"),
    ("StepLR", {"base_lrs": [0.1]}, ValueError, "base_lrs"),
    ("StepLR", {"base_lrs": [math.nan, 0.1]}, ValueError, r"base_lrs'\]\[0\]"),
    ("StepLR", {"base_lrs": [0.1, -1.0]}, ValueError, r"base_lrs'\]\[1\]"),
    ("StepLR", {"base_lrs": [0.1, "0.1"]}, TypeError, r"base_lrs'\]\[1\]"),
    ("StepLR", {"base_lrs": 0.1}, ValueError, "base_lrs"),
    ("StepLR", {"_last_lr": [0.1, math.inf]}, ValueError, "_last_lr"),
    ("MultiStepLR", {"milestones": [3.5]}, TypeError, r"milestones'\]\[0\]"),
    ("MultiStepLR", {"milestones": [50, 10]}, ValueError, "milestones"),
    ("MultiStepLR", {"milestones": "10"}, TypeError, "milestones"),
    ("ConstantLR", {"factor": 1.5}, ValueError, "factor"),
    ("LinearLR", {"start_factor": 0.0}, ValueError, "start_factor"),
    ("LinearLR", {"total_iters": 0}, ValueError, "total_iters"),
    ("PolynomialLR", {"power": -1.0}, ValueError, "power"),
    ("CosineAnnealingLR", {"T_max": 0}, ValueError, "T_max"),
    ("CosineAnnealingLR", {"eta_min": -0.1}, ValueError, "eta_min"),
    ("CosineAnnealingWarmRestarts", {"T_i": 0}, ValueError, "T_i"),
    ("CosineAnnealingWarmRestarts", {"T_cur": -5}, ValueError, "T_cur"),
    ("CosineAnnealingWarmRestarts", {"T_mult": 1.5}, TypeError, "T_mult"),
    ("LambdaLR", {"lr_lambdas": [{"scale": 1.0}, None]}, ValueError, r"lr_lambdas'\]\[0\]"),
    ("LambdaLR", {"lr_lambdas": [None]}, ValueError, "lr_lambdas"),
    ("CyclicLR-triangular-momentum", {"step_ratio": 0.0}, ValueError, "step_ratio"),
    ("CyclicLR-triangular-momentum", {"step_ratio": 1.5}, ValueError, "step_ratio"),
    ("CyclicLR-triangular-momentum", {"total_size": -55.0}, ValueError, "total_size"),
    ("CyclicLR-triangular-momentum", {"mode": "sawtooth"}, ValueError, "mode"),
    ("CyclicLR-triangular-momentum", {"use_beta1": True}, ValueError, "use_beta1"),
    ("CyclicLR-triangular-momentum", {"base_momentums": [1.0, 0.8]}, ValueError, "base_momentums"),
    ("CyclicLR-triangular-momentum", {"max_lrs": [0.1, -0.05]}, ValueError, "max_lrs"),
    ("CyclicLR-scale_fn-no-momentum", {"_scale_fn_custom": {"a": 1}}, ValueError, "_scale_fn_custom"),
    ("CyclicLR-scale_fn-no-momentum", {"scale_mode": "epochs"}, ValueError, "scale_mode"),
    ("OneCycleLR-cos-momentum", {"total_steps": 0}, ValueError, "total_steps"),
    ("OneCycleLR-cos-momentum", {"total_steps": 500}, ValueError, "total_steps - 1"),
    ("OneCycleLR-cos-momentum", {"_anneal_func_type": "exp"}, ValueError, "_anneal_func_type"),
    ("OneCycleLR-cos-momentum", {"_schedule_phases": []}, ValueError, "_schedule_phases"),
    ("OneCycleLR-cos-momentum", {"cycle_momentum": False}, ValueError, "cycle_momentum"),
    ("SequentialLR-3", {"_milestones": [30]}, ValueError, "_milestones"),
    ("SequentialLR-3", {"_milestones": [100, 30]}, ValueError, "_milestones"),
    ("SequentialLR-3", {"_schedulers": []}, ValueError, "_schedulers"),
    ("ChainedScheduler", {"_schedulers": "x"}, ValueError, "_schedulers"),
    ("ReduceLROnPlateau-min-rel", {"factor": 1.0}, ValueError, "factor"),
    ("ReduceLROnPlateau-min-rel", {"mode": "up"}, ValueError, "mode"),
    ("ReduceLROnPlateau-min-rel", {"mode_worse": -math.inf}, ValueError, "mode_worse"),
    ("ReduceLROnPlateau-min-rel", {"best": math.nan}, ValueError, "best"),
    ("ReduceLROnPlateau-min-rel", {"num_bad_epochs": 6}, ValueError, "num_bad_epochs"),
    ("ReduceLROnPlateau-min-rel", {"cooldown_counter": 4}, ValueError, "cooldown_counter"),
    ("ReduceLROnPlateau-min-rel", {"patience": -1}, ValueError, "patience"),
    ("ReduceLROnPlateau-min-rel", {"min_lrs": [1e-4]}, ValueError, "min_lrs"),
    ("ReduceLROnPlateau-max-abs", {"default_min_lr": "x"}, TypeError, "default_min_lr"),
    ("ReduceLROnPlateau-max-abs", {"min_lrs": [1e-6, 1e-3]}, ValueError, "min_lrs"),
    ("StepLR", {None: 1}, ValueError, r"unexpected keys \['None'\]"),
]


@pytest.mark.parametrize("spec_id,change,exc,match", BAD_STATES,
                         ids=[f"{i}-{b[0]}-{next(iter(b[1]))}" for i, b in enumerate(BAD_STATES)])
def test_bad_state_refused_with_nothing_changed(make_opt, spec_id, change, exc, match):
    opt = make_opt(SPEC_BY_ID[spec_id][1])
    sched = stepped(spec_id, opt)
    before = snapshot(opt, sched)
    with pytest.raises(exc, match=match):
        sched.load_state_dict({**sched.state_dict(), **change})
    assert_same(before, snapshot(opt, sched))


@pytest.mark.parametrize("spec_id", SPEC_IDS)
def test_every_builtin_state_field_declares_its_check(spec_id):
    sched = stepped(spec_id, standin_opt(SPEC_BY_ID[spec_id][1]))
    undeclared = set(sched.state_dict()) - set(type(sched)._field_specs) - {"_schedulers"}
    assert not undeclared, f"{type(sched).__name__} declares no check for {undeclared} in _fields"


class WarmupLR(S.LRScheduler):
    """A user's scheduler: it declares no checks, so its fields keep their kind of value."""

    def __init__(self, optimizer, warmup, label="warm", last_epoch=-1):
        self.warmup, self.label, self.ramp = warmup, label, [0.5, 1.0]
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * min(1.0, (self.last_epoch + 1) / self.warmup) for base in self.base_lrs]


@pytest.mark.parametrize("change,exc", [({"warmup": "5"}, TypeError), ({"warmup": 2.5}, TypeError),
                                        ({"label": 3}, TypeError), ({"ramp": [0.5]}, ValueError),
                                        ({"ramp": [0.5, math.nan]}, ValueError), ({"last_epoch": -3}, ValueError)])
def test_user_subclass_fields_keep_their_kind(make_opt, change, exc):
    opt = make_opt("plain")
    sched = WarmupLR(opt, warmup=5)
    run(opt, sched, 0, 3)
    assert repr(sched) == "WarmupLR(warmup=5, label='warm', last_epoch=3)"
    before = snapshot(opt, sched)
    with pytest.raises(exc, match=next(iter(change))):
        sched.load_state_dict({**sched.state_dict(), **change})
    assert_same(before, snapshot(opt, sched))
    sched.load_state_dict({**sched.state_dict(), "warmup": 10})
    assert sched.warmup == 10


def test_nested_fields_are_named_with_their_path(make_opt):
    opt = make_opt("betas")
    sched = stepped("SequentialLR-3", opt)
    state = sched.state_dict()
    state["_schedulers"][2]["gamma"] = -0.5
    with pytest.raises(ValueError, match=r"state_dict\['_schedulers'\]\[2\]\['gamma'\]"):
        sched.load_state_dict(state)


def test_loaded_values_are_plain_python(make_opt):
    opt = make_opt("momentum")
    sched = stepped("StepLR", opt)
    state = sched.state_dict()
    sched.load_state_dict({**state, "last_epoch": np.int64(9), "gamma": np.float32(0.5),
                           "base_lrs": (np.float64(0.1), 0.025)})
    assert type(sched.last_epoch) is int and type(sched.gamma) is float and sched.base_lrs == [0.1, 0.025]


def test_a_state_saved_before_the_field_checks_still_loads():
    """A CyclicLR state and its groups as optimc saved them before this version (JSON)."""
    saved = json.loads(
        '{"max_lrs": [0.1, 0.1], "total_size": 8.0, "step_ratio": 0.5, "mode": "triangular", "gamma": 1.0, '
        '"_scale_fn_custom": null, "scale_mode": "cycle", "cycle_momentum": true, "use_beta1": false, '
        '"base_momentums": [0.8, 0.8], "max_momentums": [0.9, 0.9], "base_lrs": [0.01, 0.01], '
        '"last_epoch": 5, "_step_count": 6, "_last_lr": [0.0775, 0.0775]}')
    groups = [{"lr": 0.0775, "momentum": 0.8250000000000001, "max_momentum": 0.9, "base_momentum": 0.8,
               "initial_lr": 0.01}] * 2
    reference = S.CyclicLR(standin_opt("momentum"), 0.01, 0.1, step_size_up=4)
    expected = run(reference.optimizer, reference, 0, 11)[5:]       # the steps after the 5th
    opt = standin_opt("momentum")
    sched = S.CyclicLR(opt, 0.01, 0.1, step_size_up=4)
    for g, snap in zip(opt.param_groups, groups):
        g.update(snap)
    sched.load_state_dict(saved)
    assert run(opt, sched, 5, 11) == expected


# The values hypothesis tries in a field: anything a hostile or corrupt checkpoint may hold.
try:
    from hypothesis import HealthCheck, given, settings, strategies as st
except ImportError:
    given = None

    def test_fuzzed_states_refused_unchanged_or_loaded_and_usable():
        pytest.skip("hypothesis is not installed (it is in the test extras: pip install '.[test]')")

if given is not None:
    def _field_values(original):
        near = []
        if isinstance(original, (int, float)) and not isinstance(original, bool) and math.isfinite(original):
            near = [original + 1, original - 1, original * 2, -original, original * 1e300, 0, 2**63 - 1 - original]
        return st.one_of(
            st.sampled_from(near) if near else st.nothing(),
            st.integers(-3, 12), st.integers(2**62, 2**65),
            st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=2), st.none(), st.booleans(),
            st.lists(st.one_of(st.floats(-1, 2), st.integers(-1, 3)), max_size=3),
            st.just([{"end_step": 1.0, "start_lr": "max_lr", "end_lr": "min_lr", "start_momentum": "base_momentum",
                      "end_momentum": "max_momentum"}]),
        )

    @pytest.mark.parametrize("kind_of_opt", ["optimc", "standin"])
    @pytest.mark.parametrize("spec_id", SPEC_IDS)
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def test_fuzzed_states_refused_unchanged_or_loaded_and_usable(kind_of_opt, spec_id, data):
        """Property: a state with one field (or list entry) replaced is either refused
        with nothing changed, or loaded; then every next step either works, giving
        finite lrs >= 0 and a state that loads again, or is refused with nothing changed."""
        make = optimc_opt if kind_of_opt == "optimc" else standin_opt
        opt = make(SPEC_BY_ID[spec_id][1])
        sched = stepped(spec_id, opt, n=5)
        state = sched.state_dict()
        path = data.draw(st.sampled_from(list(paths(state))), label="path")
        original = state
        for key in path:
            original = original[key]
        state = replaced(state, path, data.draw(_field_values(original), label="value"))
        before = snapshot(opt, sched)
        try:
            sched.load_state_dict(state)
        except (TypeError, ValueError, KeyError):
            assert_same(before, snapshot(opt, sched))
            return
        for t in range(3):
            before = snapshot(opt, sched)
            try:
                opt_step(opt)
                step(sched, t)
            except (TypeError, ValueError, KeyError):
                assert_same(before, snapshot(opt, sched))
                continue
            lrs = sched.get_last_lr()
            assert all(isinstance(lr, float) and math.isfinite(lr) and lr >= 0 for lr in lrs)
            sched.load_state_dict(sched.state_dict())


# --------------------------------------------------------------------------
# a refused step or constructor changes nothing
# --------------------------------------------------------------------------

class Flaky:
    """lr_lambda / scale_fn that gives `bad` for `epoch` until told otherwise."""

    def __init__(self, good, epoch, bad, armed=True):
        self.good, self.epoch, self.bad, self.armed = good, epoch, bad, armed

    def __call__(self, x):
        if self.armed and x == self.epoch:
            if isinstance(self.bad, Exception):
                raise self.bad
            return self.bad
        return self.good(x)


def _good_factor(e):
    return 0.9 ** e


@pytest.mark.parametrize("bad,exc,match", [
    (math.nan, ValueError, "lr computed for param group 1"),
    (-1.0, ValueError, "lr computed for param group 1"),
    (math.inf, ValueError, "lr computed for param group 1"),
    ("0.5", TypeError, "can't multiply|param group 1"),
    (RuntimeError("user code failed"), RuntimeError, "user code failed"),
])
def test_refused_lambda_step_changes_no_group(make_opt, bad, exc, match):
    """issue 9 item 16: LambdaLR refused for group 1 had changed group 0 and last_epoch."""
    opt = make_opt("momentum")
    flaky = Flaky(_good_factor, 3, bad)
    sched = S.LambdaLR(opt, [_good_factor, flaky])
    twin_opt = make_opt("momentum")
    twin = S.LambdaLR(twin_opt, [_good_factor, _good_factor])
    run(opt, sched, 0, 2)
    run(twin_opt, twin, 0, 2)
    before = snapshot(opt, sched)
    opt_step(opt)
    with pytest.raises(exc, match=match):
        sched.step()
    assert_same(before, snapshot(opt, sched))
    flaky.armed = False                                  # the same step again, now accepted
    sched.step()
    run(twin_opt, twin, 2, 3)
    counters = [{k: v for k, v in s.state_dict().items() if k != "lr_lambdas"} for s in (sched, twin)]
    assert counters[0] == counters[1] and sched.get_last_lr() == twin.get_last_lr()


def _refusals():
    """(optimizer kind, make a scheduler and the function that breaks its step to epoch 5)."""
    def chained(o):
        flaky = Flaky(lambda e: 0.95, 5, -1.0)
        return S.ChainedScheduler([S.ExponentialLR(o, 0.9), S.MultiplicativeLR(o, [lambda e: 0.95, flaky])]), flaky

    def sequential(o):
        flaky = Flaky(_good_factor, 5, math.nan)
        return S.SequentialLR(o, [S.LambdaLR(o, [flaky, _good_factor]), S.StepLR(o, 2)], [10]), flaky

    def sequential_at_milestone(o):
        flaky = Flaky(_good_factor, 0, math.nan)          # the second scheduler starts at its epoch 0
        seq = S.SequentialLR(o, [S.StepLR(o, 2), S.LambdaLR(o, [_good_factor, _good_factor])], [5])
        seq._schedulers[1].lr_lambdas[1] = flaky
        return seq, flaky

    def cyclic(o):
        flaky = Flaky(lambda x: 1.0, 5, math.nan)
        return S.CyclicLR(o, 0.01, 0.1, step_size_up=3, scale_fn=flaky, scale_mode="iterations",
                          cycle_momentum=False), flaky

    def cyclic_momentum(o):
        flaky = Flaky(lambda x: 1.0, 5, -0.2)              # lr 0.004 is fine, momentum 1.02 is not
        return S.CyclicLR(o, 0.01, 0.1, step_size_up=3, scale_fn=flaky, scale_mode="iterations",
                          base_momentum=0.5, max_momentum=0.99), flaky

    def selection(o):
        flaky = Flaky(_good_factor, 5, math.nan)
        return S.LambdaLR(S.select(o, 1, 0), [_good_factor, flaky]), flaky

    return [("chained", "plain", chained), ("sequential", "betas", sequential),
            ("sequential-milestone", "betas", sequential_at_milestone), ("cyclic", "plain", cyclic),
            ("cyclic-momentum", "momentum", cyclic_momentum), ("selection", "momentum", selection)]


@pytest.mark.parametrize("kind,make", [r[1:] for r in _refusals()], ids=[r[0] for r in _refusals()])
def test_refused_step_of_any_scheduler_changes_nothing(make_opt, kind, make):
    opt = make_opt(kind)
    sched, flaky = make(opt)
    run(opt, sched, 0, 4)
    before = snapshot(opt, sched)
    opt_step(opt)
    with pytest.raises((ValueError, TypeError)):
        sched.step()
    assert_same(before, snapshot(opt, sched))
    flaky.armed = False
    sched.step()


def test_one_cycle_step_needs_the_keys_it_stores_in_the_groups():
    """The optimizer's checkpoint holds "max_lr" & co.; a group without them is named."""
    opt = standin_opt("momentum")
    sched = stepped("OneCycleLR-cos-momentum", opt)
    del opt.param_groups[1]["max_lr"]
    before = snapshot(opt, sched)
    with pytest.raises(KeyError, match=r"param_groups\[1\] has no 'max_lr'"):
        sched.step()
    assert_same(before, snapshot(opt, sched))
    opt.param_groups[1]["max_lr"] = -1.0
    with pytest.raises(ValueError, match=r"param_groups\[1\]\['max_lr'\]"):
        sched.step()
    assert_same(before[0], snapshot(opt, sched)[0])


class PickyGroup(dict):
    """A param group whose optimizer refuses lrs below 0.02 (as optimc refuses bad values)."""

    def __setitem__(self, key, value):
        if key == "lr" and value < 0.02:
            raise ValueError(f"lr: this optimizer takes no lr below 0.02, got {value}")
        dict.__setitem__(self, key, value)


def picky_opt(kind="momentum"):
    opt = standin_opt(kind, lrs=[0.1, 0.05])
    opt.param_groups = [PickyGroup(g) for g in opt.param_groups]
    return opt


def test_write_refused_by_the_optimizer_is_undone():
    """Group 1 refuses its new lr after group 0 took its own: group 0 is put back."""
    opt = picky_opt()
    sched = S.StepLR(opt, step_size=2, gamma=0.3)
    run(opt, sched, 0, 1)
    before = snapshot(opt, sched)
    with pytest.raises(ValueError, match="below 0.02"):
        sched.step()                                    # 0.1 -> 0.03 taken, 0.05 -> 0.015 refused
    assert_same(before, snapshot(opt, sched))


def test_plateau_refused_reduction_changes_nothing():
    opt = picky_opt()
    sched = S.ReduceLROnPlateau(opt, patience=1, factor=0.3, cooldown=2)
    sched.step(1.0)
    sched.step(1.0)
    before = snapshot(opt, sched)
    with pytest.raises(ValueError, match="below 0.02"):
        sched.step(1.0)                                 # 0.05 * 0.3 refused by group 1
    assert_same(before, snapshot(opt, sched))
    assert sched.num_bad_epochs == 1 and sched.cooldown_counter == 0 and sched.last_epoch == 2


@pytest.mark.parametrize("metric,exc", [("0.5", TypeError), (None, TypeError), ([1.0, 2.0], TypeError),
                                        (np.ones(3), TypeError), (True, TypeError)])
def test_plateau_refuses_a_metric_that_is_not_a_number(make_opt, metric, exc):
    opt = make_opt("momentum")
    sched = stepped("ReduceLROnPlateau-min-rel", opt)
    before = snapshot(opt, sched)
    with pytest.raises(exc, match="metrics"):
        sched.step(metric)
    assert_same(before, snapshot(opt, sched))
    sched.step(np.array(0.5))                           # a 0-d array is a number
    sched.step(np.float32(0.4))
    sched.step(math.nan)                                # as torch: never an improvement
    assert sched.num_bad_epochs == 1


@pytest.mark.parametrize("spec_id", ["StepLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts",
                                     "SequentialLR-3", "ReduceLROnPlateau-max-abs"])
def test_step_at_the_counter_bound_is_refused(make_opt, spec_id):
    """A step that would move last_epoch past 2**63 - 1 is refused: the scheduler never
    reaches a state that load_state_dict refuses."""
    opt = make_opt(SPEC_BY_ID[spec_id][1])
    sched = stepped(spec_id, opt)
    sched.load_state_dict({**sched.state_dict(), "last_epoch": 2**63 - 1})
    before = snapshot(opt, sched)
    with pytest.raises(ValueError, match="last_epoch"):
        step(sched, 0)
    assert_same(before, snapshot(opt, sched))


def test_triangular2_runs_past_1024_cycles():
    """torch computes 1 / 2.0 ** (cycle - 1), which raises OverflowError from cycle 1025 on;
    the amplitude is 0.5 ** (cycle - 1), the same value wherever both are defined."""
    opt = standin_opt("plain")
    sched = S.CyclicLR(opt, 0.01, 0.1, step_size_up=1, mode="triangular2", cycle_momentum=False)
    rows = run(opt, sched, 0, 2 * 1100)
    assert rows[2 * 3 - 2][0] == pytest.approx(0.01 + 0.09 / 4)     # cycle 3's peak
    assert rows[-2][0] == 0.01


def test_refused_constructors_change_no_group(make_opt):
    opt = make_opt("momentum")
    before = [dict(g) for g in opt.param_groups]

    def unchanged():
        for g, b in zip(opt.param_groups, before):
            assert set(g) == set(b) and all(g[k] is b[k] or repr(g[k]) == repr(b[k]) for k in b)

    with pytest.raises(RuntimeError):
        S.LambdaLR(opt, [_good_factor, Flaky(_good_factor, 0, RuntimeError("at epoch 0"))])
    unchanged()                                          # no "initial_lr" left behind
    with pytest.raises(ValueError):
        S.CyclicLR(opt, 0.01, 0.1, scale_fn=Flaky(lambda x: 1.0, 1, math.nan))
    unchanged()                                          # lr, momentum, max/base_momentum put back
    with pytest.raises(ValueError):
        S.OneCycleLR(opt, max_lr=[0.1, math.inf], total_steps=10)
    unchanged()
    child = S.LambdaLR(opt, [_good_factor, Flaky(_good_factor, 0, math.nan, armed=False)])
    counters = (child.last_epoch, child._step_count, child.get_last_lr())
    before = [dict(g) for g in opt.param_groups]
    child.lr_lambdas[1].armed = True                     # SequentialLR redoes the first step: refused
    with pytest.raises(ValueError):
        S.SequentialLR(opt, [child, S.StepLR(opt, 3)], [5])
    unchanged()
    assert (child.last_epoch, child._step_count, child.get_last_lr()) == counters


# --------------------------------------------------------------------------
# scheduler.step() before the optimizer's first step warns (as torch)
# --------------------------------------------------------------------------

def _order_warnings(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if ORDER_WARNING in str(w.message)]


@pytest.mark.filterwarnings("default")
@pytest.mark.parametrize("spec_id", [s for s in SPEC_IDS if "Plateau" not in s])
def test_step_order_warning_once_when_the_optimizer_never_stepped(spec_id):
    opt = optimc_opt(SPEC_BY_ID[spec_id][1])
    assert not _order_warnings(lambda: SPEC_BY_ID[spec_id][3](S, opt))     # building never warns
    sched = SPEC_BY_ID[spec_id][3](S, opt)
    caught = _order_warnings(sched.step)
    assert len(caught) == 1 and caught[0].category is UserWarning and caught[0].filename == __file__
    assert type(sched).__name__ in str(caught[0].message)
    assert not _order_warnings(sched.step)               # only on the first scheduler step
    opt_step(opt)
    sched2 = SPEC_BY_ID[spec_id][3](S, opt)
    assert not _order_warnings(sched2.step)               # the right order: no warning


@pytest.mark.filterwarnings("default")
def test_step_order_warning_conditions():
    optimc = pytest.importorskip("optimc")
    p = np.zeros(3)
    opt = optimc.SGD([{"params": [p]}, {"params": [np.zeros(2)]}], lr=0.1, skip_nonfinite=True)
    assert len(_order_warnings(S.StepLR(S.select(opt, 1), 2).step)) == 1    # through a selection too
    assert not _order_warnings(lambda: S.ReduceLROnPlateau(opt).step(1.0))  # as torch: plateau never warns
    assert not _order_warnings(S.StepLR(standin_opt("plain"), 2).step)      # no counters to tell
    opt.step([np.full(3, np.nan), np.zeros(2)])                             # a skipped step is a step call
    assert opt.step_count == 0 and opt.skipped_steps == 1
    assert not _order_warnings(S.StepLR(opt, 2).step)


@pytest.mark.filterwarnings("default")
def test_torch_warns_in_the_same_case():
    """torch marks its optimizer's step() when a scheduler is built and warns on the
    scheduler's first step() if that mark is missing; optimc reads the optimizer's counters
    (a step before the scheduler was built counts too)."""
    torch = pytest.importorskip("torch")
    topt = torch_opt("momentum")
    sched = torch.optim.lr_scheduler.StepLR(topt, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sched.step()
    assert any("before `optimizer.step()`" in str(w.message) for w in caught)
    topt = torch_opt("momentum")
    sched = torch.optim.lr_scheduler.StepLR(topt, 2)
    topt.step()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sched.step()
    assert not caught


# --------------------------------------------------------------------------
# repr
# --------------------------------------------------------------------------

def test_repr_shows_the_arguments_and_last_epoch():
    opt = standin_opt("momentum")
    sched = S.StepLR(opt, step_size=30, gamma=0.1)
    run(opt, sched, 0, 4)
    assert repr(sched) == "StepLR(step_size=30, gamma=0.1, last_epoch=4)"
    assert repr(S.LambdaLR(standin_opt("plain"), _good_factor)) == "LambdaLR(lr_lambda=_good_factor, last_epoch=0)"
    seq = S.SequentialLR(opt, [S.ConstantLR(opt, 0.5, 3), S.ExponentialLR(opt, 0.9)], [3])
    assert repr(seq) == ("SequentialLR(schedulers=[ConstantLR(factor=0.5, total_iters=3, last_epoch=0), "
                         "ExponentialLR(gamma=0.9, last_epoch=-1)], milestones=[3], last_epoch=0)")
    assert repr(S.select(optimc_opt("momentum"), 1)) == "select(SGD, 1)"
    html = S.StepLR(S.select(optimc_opt("momentum"), 1), 3)._repr_html_()
    assert "StepLR(step_size=3" in html and "<td>1</td><td>0.025</td>" in html


@pytest.mark.parametrize("spec_id", [s for s in SPEC_IDS
                                     if not s.startswith(("Lambda", "Multiplicative", "Sequential", "Chained"))
                                     and "scale_fn" not in s])
def test_repr_rebuilds_the_same_schedule(spec_id):
    """The arguments a repr shows are those the scheduler runs with: building a new one
    from them gives the same learning rates."""
    _, kind, n, build = SPEC_BY_ID[spec_id]
    opt = standin_opt(kind)
    sched = build(S, opt)
    text = repr(sched)
    assert text.startswith(type(sched).__name__ + "(") and "\n" not in text
    args = eval("dict(" + text[len(type(sched).__name__) + 1:-1] + ")")
    assert args.pop("last_epoch") == sched.last_epoch
    opt2 = standin_opt(kind)
    again = type(sched)(opt2, **args)
    assert run(opt2, again, 0, n) == run(opt, sched, 0, n)
