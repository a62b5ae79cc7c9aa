"""SGDScheduleFree and AdamWScheduleFree against the schedulefree package
(1.4.1; its single-tensor path and its default foreach path): option
combinations, 120 steps, the lr changed mid-run, train/eval switches, two
groups; float64 to 1e-12 and float32 to float32 rounding. Then the mode
itself: stepping in eval mode, state_dict/load/pickle, bad input."""
import copy
import os
import pickle
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _util as U  # noqa: E402

import optimc  # noqa: E402

SHAPES = [(), (7,), (5, 3)]
STEPS = 120
TOL = {np.float64: 1e-12, np.float32: 2e-6}
EVAL_AT = (40, 90)      # eval(), compare x, train() again
LR_AT = 60              # the lr changes here

SGD_CASES = [
    dict(lr=0.05),
    dict(lr=0.05, momentum=0.5, weight_decay=0.05),
    dict(lr=0.05, warmup_steps=10, r=1.5),
    dict(lr=0.05, warmup_steps=10, weight_lr_power=0.0, maximize=True),
    dict(lr=0.05, momentum=0.6, warmup_steps=7, r=0.5, weight_lr_power=1.0, weight_decay=0.05),
    dict(lr=0.05, momentum=0.95, maximize=True, weight_decay=0.01),
]
ADAMW_CASES = [
    dict(lr=0.01),
    dict(lr=0.01, betas=(0.5, 0.9), weight_decay=0.05),
    dict(lr=0.01, warmup_steps=10, r=1.5, eps=1e-3),
    dict(lr=0.01, warmup_steps=10, weight_lr_power=0.0, maximize=True),
    dict(lr=0.01, betas=(0.6, 0.99), warmup_steps=7, r=0.5, weight_lr_power=1.0, weight_decay=0.05),
    dict(lr=0.01, betas=(0.95, 0.98), maximize=True, weight_decay=0.01),
]
CASES = [("SGDScheduleFree", h) for h in SGD_CASES] + [("AdamWScheduleFree", h) for h in ADAMW_CASES]


def _close(actual, desired, dtype, what):
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    if not desired.size:
        return
    scale = max(1.0, float(np.max(np.abs(desired))))
    err = float(np.max(np.abs(actual - desired))) / scale
    assert err <= TOL[dtype], f"{what}: relative difference {err:.3e} > {TOL[dtype]:g}"


def _package_run(name, groups, dtype, grads, foreach, mine):
    """Step the package's optimizer and optimc's side by side, switching both to eval
    and back at EVAL_AT and changing lr at LR_AT; compare params after every switch."""
    torch = pytest.importorskip("torch")
    schedulefree = pytest.importorskip("schedulefree")
    ref_cls = getattr(schedulefree, name)
    maximize = [g.pop("maximize", False) for g in groups]
    with U.torch_default_dtype(dtype):
        tgroups = [{**g, "params": [torch.from_numpy(p.copy()) for p in g["params"]]} for g in groups]
        ref = ref_cls(tgroups, foreach=foreach)
        ref.train()
        tparams = [p for g in tgroups for p in g["params"]]
        signs = [(-1.0 if mx else 1.0) for g, mx in zip(groups, maximize) for _ in g["params"]]
        for t, gs in enumerate(grads):
            if t == LR_AT:
                for gi, grp in enumerate(ref.param_groups):
                    grp["lr"] *= 0.5
                    mine.param_groups[gi]["lr"] = grp["lr"]
            if t in EVAL_AT:
                ref.eval()
                mine.eval()
                for i, p in enumerate(tparams):
                    _close(_flat(mine)[i], p.numpy(), dtype, f"x of param {i} at step {t}")
                ref.train()
                mine.train()
            mine.step(gs)
            for p, g, s in zip(tparams, gs, signs):
                p.grad = torch.from_numpy(np.asarray(s * g, dtype=dtype))
            ref.step()
        return ref, tparams


def _flat(opt):
    return [p for g in opt.param_groups for p in g["params"]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name, h", CASES, ids=[f"{n}-" + "-".join(f"{k}={v}" for k, v in h.items())
                                                  for n, h in CASES])
def test_matches_schedulefree(name, h, dtype):
    params, grads = U.problem(dtype, STEPS, SHAPES, seed=5)
    mine = getattr(optimc, name)([p.copy() for p in params], **h)
    ref, tparams = _package_run(name, [{**h, "params": params}], dtype, grads, False, mine)
    for i, p in enumerate(tparams):
        _close(_flat(mine)[i], p.numpy(), dtype, f"y of param {i}")
        st = ref.state[p]
        for buf in ("z", "exp_avg_sq"):
            if buf in st:
                _close(mine.state[i][buf], st[buf].numpy(), dtype, f"{buf} of param {i}")
        grp = ref.param_groups[0]
        assert mine.state[i]["step"] == grp["k"] == STEPS
        _close(mine.state[i]["lr_max"], grp["lr_max"], np.float64, "lr_max")
        _close(mine.state[i]["weight_sum"], grp["weight_sum"], np.float64, "weight_sum")
    ref.eval()
    mine.eval()
    for i, p in enumerate(tparams):
        _close(_flat(mine)[i], p.numpy(), dtype, f"x of param {i} at the end")


@pytest.mark.parametrize("name, h", [CASES[1], CASES[-2]], ids=["SGDScheduleFree", "AdamWScheduleFree"])
def test_two_groups_and_the_package_default_foreach_path(name, h):
    """Groups with other momentum/betas, warm-up and lr switch and step separately;
    torch's foreach kernels round like its single-tensor ones here."""
    dtype = np.float64
    params, grads = U.problem(dtype, STEPS, SHAPES + [(4,)], seed=7)
    other = dict(lr=h["lr"] * 0.3, warmup_steps=3, weight_decay=0.0,
                 **({"momentum": 0.8} if name.startswith("SGD") else {"betas": (0.8, 0.9)}))
    groups = [{**h, "params": params[:2]}, {**other, "params": params[2:]}]
    mine = getattr(optimc, name)([{**g, "params": [p.copy() for p in g["params"]]} for g in groups])
    ref, tparams = _package_run(name, copy.deepcopy(groups), dtype, grads, True, mine)
    for i, p in enumerate(tparams):
        _close(_flat(mine)[i], p.numpy(), dtype, f"y of param {i}")
        _close(mine.state[i]["z"], ref.state[p]["z"].numpy(), dtype, f"z of param {i}")


# ---- the mode ----

@pytest.fixture(params=["SGDScheduleFree", "AdamWScheduleFree"])
def stepped(request):
    params, grads = U.problem(np.float64, 5, SHAPES, seed=2)
    opt = getattr(optimc, request.param)(params, lr=0.01)
    for gs in grads:
        opt.step(gs)
    return opt, grads[0]


def _snapshot(opt):
    return ([p.copy() for p in _flat(opt)], opt.state_dict())


def _same(a, b):
    pa, sa = a
    pb, sb = b
    assert all(np.array_equal(x, y) for x, y in zip(pa, pb))
    for i in sa["state"]:
        for k, v in sa["state"][i].items():
            assert np.array_equal(v, sb["state"][i][k]), k
    assert sa["step_count"] == sb["step_count"] and sa["train_mode"] == sb["train_mode"]


def test_eval_moves_to_x_and_train_back_to_y(stepped):
    opt, _ = stepped
    y = [p.copy() for p in _flat(opt)]
    assert opt.train_mode is True
    assert opt.eval() is opt and opt.train_mode is False
    assert repr(opt).endswith("maximize=False, eval mode; 3 params (float64, 23 elements), step 5)")
    x = [p.copy() for p in _flat(opt)]
    assert any(not np.array_equal(a, b) for a, b in zip(x, y) if a.size)
    opt.eval()                                  # a second eval() changes nothing
    assert all(np.array_equal(a, b) for a, b in zip(_flat(opt), x))
    opt.train()
    for a, b in zip(_flat(opt), y):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_a_step_in_eval_mode_raises_and_changes_nothing(stepped):
    opt, g = stepped
    opt.eval()
    before = _snapshot(opt)
    with pytest.raises(RuntimeError, match=r"eval mode.*opt\.train\(\)"):
        opt.step(g)
    _same(before, _snapshot(opt))
    opt.train()
    opt.step(g)
    assert opt.step_count == 6


def test_eval_before_the_first_step_leaves_the_params():
    p = np.arange(5.0)
    opt = optimc.SGDScheduleFree([p])
    opt.eval()
    opt.train()
    np.testing.assert_array_equal(p, np.arange(5.0))
    opt.step([np.ones(5)])
    np.testing.assert_array_equal(opt.state[0]["z"], np.arange(5.0) - 1.0)   # z started at the param


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_state_dict_and_pickle_keep_the_mode(stepped, mode):
    opt, g = stepped
    getattr(opt, mode)()
    sd = opt.state_dict()
    assert sd["train_mode"] is (mode == "train")
    fresh = type(opt)([p.copy() for p in _flat(opt)], lr=0.01)
    fresh.load_state_dict(sd)
    assert fresh.train_mode is opt.train_mode
    for clone in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert clone.train_mode is opt.train_mode
        _same(_snapshot(opt), _snapshot(clone))
        # resumed runs continue bit-identically, switches included
        for o in (opt, clone):
            o.train()
            o.step(g)
            o.eval()
        _same(_snapshot(opt), _snapshot(clone))
        opt.load_state_dict(sd)   # back to the saved state for the next clone
        for p, q in zip(_flat(opt), _flat(fresh)):
            p[...] = q


@pytest.mark.parametrize("value, error", [(None, ValueError), ("yes", TypeError), (1, TypeError)])
def test_load_refuses_a_bad_mode_and_changes_nothing(stepped, value, error):
    opt, _ = stepped
    sd = opt.state_dict()
    sd["step_count"] = 0          # would change something if taken
    if value is None:
        del sd["train_mode"]
    else:
        sd["train_mode"] = value
    before = _snapshot(opt)
    with pytest.raises(error, match="train_mode"):
        opt.load_state_dict(sd)
    _same(before, _snapshot(opt))


@pytest.mark.parametrize("name", ["SGDScheduleFree", "AdamWScheduleFree"])
def test_foreach_is_refused(name):
    with pytest.raises(TypeError, match="foreach"):
        getattr(optimc, name)([np.zeros(3)], foreach=True)


@pytest.mark.parametrize("name, kw, error", [
    ("SGDScheduleFree", dict(momentum=0.0), ValueError), ("SGDScheduleFree", dict(momentum=1.0), ValueError),
    ("SGDScheduleFree", dict(warmup_steps=-1), ValueError), ("SGDScheduleFree", dict(warmup_steps=2.5), TypeError),
    ("SGDScheduleFree", dict(weight_lr_power=-1.0), ValueError), ("SGDScheduleFree", dict(r=float("inf")), ValueError),
    ("AdamWScheduleFree", dict(betas=(0.0, 0.999)), ValueError), ("AdamWScheduleFree", dict(eps=0.0), ValueError),
    ("AdamWScheduleFree", dict(warmup_steps=True), TypeError)])
def test_bad_hyperparameters_are_refused(name, kw, error):
    with pytest.raises(error, match=next(iter(kw))):
        getattr(optimc, name)([np.zeros(3)], **kw)
