"""Tests for optimc.schedules.

Scheduler objects are compared step by step with torch.optim.lr_scheduler
(same names and arguments, so one builder makes both), on real optimc
optimizers and on a minimal stand-in optimizer (a ``param_groups`` list of
dicts), which documents the whole interface schedulers rely on. The
functional schedules are checked against closed-form NumPy formulas.
"""

import copy
import json
import math
import pickle

import numpy as np
import pytest

from optimc import schedules as S

RTOL = 1e-12


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
        step(sched, t)
        rows.append(observe(opt, sched))
    return rows


def torch_rows(build, kind, n):
    topt = torch_opt(kind)
    import torch.optim.lr_scheduler as TL

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
        with pytest.warns(UserWarning, match="deprecated"):
            ours.step(epoch)
        with pytest.warns(UserWarning):
            theirs.step(epoch)
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=RTOL, atol=0)


def test_cycling_beta1_keeps_beta2_and_assigns_a_new_tuple(make_opt):
    opt = make_opt("betas")
    sched = S.OneCycleLR(opt, max_lr=0.01, total_steps=20)
    for _ in range(10):
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
    S.CyclicLR(opt, 0.01, 0.1, cycle_momentum=False).step()


def test_one_cycle_refuses_stepping_past_total_steps(make_opt):
    sched = S.OneCycleLR(make_opt("momentum"), 0.1, total_steps=5)
    for _ in range(5):
        sched.step()
    with pytest.raises(ValueError, match="total steps"):
        sched.step()


# --------------------------------------------------------------------------
# functional schedules against closed-form NumPy formulas
# --------------------------------------------------------------------------

T = np.arange(600)

FUNCTIONAL = [
    ("constant", S.constant(0.05), np.full(T.shape, 0.05)),
    ("step_decay", S.step_decay(0.1, 30, 0.5), 0.1 * 0.5 ** np.floor(T / 30)),
    ("exponential_decay", S.exponential_decay(0.1, 0.99), 0.1 * 0.99 ** T),
    ("exponential_decay-10", S.exponential_decay(0.1, 0.9, decay_steps=10), 0.1 * 0.9 ** (T / 10)),
    ("exponential_decay-staircase", S.exponential_decay(0.1, 0.9, decay_steps=10, staircase=True),
     0.1 * 0.9 ** np.floor(T / 10)),
    ("cosine_decay", S.cosine_decay(0.1, 200, end_lr=1e-3),
     np.where(T < 200, 1e-3 + (0.1 - 1e-3) * 0.5 * (1 + np.cos(np.pi * T / 200)), 1e-3)),
    ("linear_warmup", S.linear_warmup(0.1, 50, start_lr=0.01), np.where(T < 50, 0.01 + 0.09 * T / 50, 0.1)),
    ("linear_warmup-0", S.linear_warmup(0.1, 0), np.full(T.shape, 0.1)),
    ("warmup_cosine", S.warmup_cosine(0.1, 50, 500, end_lr=1e-4),
     np.where(T < 50, 0.1 * T / 50,
              1e-4 + (0.1 - 1e-4) * 0.5 * (1 + np.cos(np.pi * np.clip(T - 50, 0, 450) / 450)))),
    ("warmup_cosine-no-warmup", S.warmup_cosine(0.1, 0, 300), np.where(
        T < 300, 0.05 * (1 + np.cos(np.pi * T / 300)), 0.0)),
    ("piecewise_constant", S.piecewise_constant([100, 250], [0.1, 0.03, 0.001]),
     np.select([T < 100, T < 250], [0.1, 0.03], 0.001)),
]


@pytest.mark.parametrize("name,sched,expected", FUNCTIONAL, ids=[f[0] for f in FUNCTIONAL])
def test_functional_matches_closed_form(name, sched, expected):
    values = np.array([sched(int(t)) for t in T])
    assert all(type(sched(int(t))) is float for t in T[:3])
    np.testing.assert_allclose(values, expected, rtol=RTOL, atol=1e-18)
    np.testing.assert_array_equal(sched(T), values)                      # arrays of steps, for plots
    np.testing.assert_array_equal(sched(np.int64(7)), values[7])
    clone = pickle.loads(pickle.dumps(sched))
    assert clone == sched and clone(123) == sched(123) and copy.deepcopy(sched) == sched
    assert repr(sched).startswith(name.split("-")[0] + "(")


def test_functional_agrees_with_torch_schedulers():
    torch = pytest.importorskip("torch")
    import torch.optim.lr_scheduler as TL

    cases = [
        (S.step_decay(0.1, 30, 0.5), lambda o: TL.StepLR(o, 30, 0.5), 300),
        (S.exponential_decay(0.1, 0.99), lambda o: TL.ExponentialLR(o, 0.99), 300),
        (S.cosine_decay(0.1, 200, 1e-3), lambda o: TL.CosineAnnealingLR(o, 200, 1e-3), 200),
        (S.piecewise_constant([100, 250], [0.1, 0.01, 0.001]), lambda o: TL.MultiStepLR(o, [100, 250]), 300),
    ]
    for f, make, n in cases:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        sched = make(opt)
        for t in range(n):
            np.testing.assert_allclose(f(t), sched.get_last_lr()[0], rtol=1e-10)
            opt.step()
            sched.step()


@pytest.mark.parametrize("make,exc,match", [
    (lambda: S.constant(-0.1), ValueError, "lr"),
    (lambda: S.constant("0.1"), TypeError, "lr"),
    (lambda: S.step_decay(0.1, 0), ValueError, "step_size"),
    (lambda: S.step_decay(0.1, 10, gamma=0), ValueError, "gamma"),
    (lambda: S.exponential_decay(0.1, -0.9), ValueError, "gamma"),
    (lambda: S.exponential_decay(0.1, 0.9, decay_steps=0), ValueError, "decay_steps"),
    (lambda: S.cosine_decay(0.1, 0), ValueError, "decay_steps"),
    (lambda: S.cosine_decay(0.1, 10, end_lr=-1), ValueError, "end_lr"),
    (lambda: S.linear_warmup(0.1, -5), ValueError, "warmup_steps"),
    (lambda: S.warmup_cosine(0.1, 100, 100), ValueError, "total_steps"),
    (lambda: S.warmup_cosine(0.1, 10, 0), ValueError, "total_steps"),
    (lambda: S.piecewise_constant([10, 10], [0.1, 0.2, 0.3]), ValueError, "boundaries"),
    (lambda: S.piecewise_constant([20, 10], [0.1, 0.2, 0.3]), ValueError, "boundaries"),
    (lambda: S.piecewise_constant([10], [0.1]), ValueError, "values"),
    (lambda: S.piecewise_constant([10], 0.1), TypeError, "values"),
    (lambda: S.constant(0.1)(-1), ValueError, "step"),
    (lambda: S.constant(0.1)(1.5), TypeError, "step"),
])
def test_functional_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


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


def test_functional_schedule_as_optimc_lr():
    optimc = pytest.importorskip("optimc")
    if not hasattr(optimc, "SGD"):
        pytest.skip("optimc not built")
    f = S.warmup_cosine(0.1, 3, 12)
    w = np.zeros(2)
    opt = optimc.SGD([w], lr=f)
    for _ in range(15):
        opt.step([np.ones(2)])
    np.testing.assert_allclose(w, -sum(f(t) for t in range(15)) * np.ones(2), rtol=1e-14)
    with pytest.raises(TypeError, match="callable"):
        S.StepLR(opt, 3)


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
