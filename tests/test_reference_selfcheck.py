"""Proves tests/reference.py against torch.optim (single-tensor, foreach=False)
before optimc is involved: every algorithm torch has, every option combination,
100 steps, float64 within 1e-12 relative (float32 within 1e-5)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _util as U  # noqa: E402
from reference import Reference, run  # noqa: E402

torch = pytest.importorskip("torch")

STEPS = 100


def _compare_to_torch(name, h, ref, tr, dtype, tag=""):
    for i, (a, b) in enumerate(zip(ref.params, tr.params)):
        U.check_close(a, b, dtype, f"{tag}param[{i}] shape {b.shape}", kind="selfcheck")
        assert a.dtype == b.dtype == np.dtype(dtype)
        for buf in (k for k in ref.state[i] if k != "step"):
            U.check_close(ref.state[i][buf], tr.buffer(i, buf), dtype,
                          f"{tag}state[{i}][{buf!r}]", kind="selfcheck")
        if tr.step_count(i) is not None:
            assert ref.state[i]["step"] == tr.step_count(i)


@pytest.mark.parametrize("dtype", U.DTYPES, ids=U.dtype_id)
@pytest.mark.parametrize("case", U.torch_cases(), ids=U.case_id)
def test_reference_matches_torch(case, dtype):
    name, h = case
    params, grads = U.problem(dtype, STEPS)
    ref = run(name, params, grads, **h)
    tr = U.TorchRun(name, h, params)
    for g in grads:
        tr.step(g)
    _compare_to_torch(name, h, ref, tr, dtype)
    # the run really moved the params (guards against a no-op on both sides)
    assert any(not np.array_equal(p0, p1) for p0, p1 in zip(params, ref.params) if p0.size)


@pytest.mark.parametrize("name", U.torch_names())
def test_reference_lr_change_and_groups_match_torch(name):
    """Param groups with different lr / weight_decay and an lr edited mid-run."""
    dtype = np.float64
    params, grads = U.problem(dtype, STEPS, seed=5)
    base = dict(next(h for n, h in U.torch_cases() if n == name))
    # a second weight decay where torch's class takes one
    wd = 0.02 if U.torch_spec(name, {**base, "weight_decay": 0.02}) is not None else base["weight_decay"]
    base["weight_decay"] = wd
    groups = [{"params": params[:3]}, {"params": params[3:], "lr": base["lr"] * 0.3,
                                       "weight_decay": 0.0}]
    ref = Reference(name, groups, **base)
    cls, kw = U.torch_ctor(name, base)
    with U.torch_default_dtype(dtype):
        tp = [torch.from_numpy(p.copy()) for p in params]
        topt = cls([{"params": tp[:3]}, {"params": tp[3:], "lr": base["lr"] * 0.3,
                                         "weight_decay": 0.0}], **kw)
        for t, gs in enumerate(grads):
            if t == STEPS // 2:
                ref.param_groups[0]["lr"] = base["lr"] * 2
                topt.param_groups[0]["lr"] = base["lr"] * 2
            for p, g in zip(tp, gs):
                p.grad = U.torch_grad(topt, g)
            topt.step()
            ref.step(gs)
    for i, (a, b) in enumerate(zip(ref.params, tp)):
        U.check_close(a, b.numpy(), dtype, f"param[{i}]", kind="selfcheck")


def test_reference_callable_lr_is_evaluated_at_zero_based_step():
    """lr=callable(k) with k = number of completed steps equals setting lr by hand."""
    params, grads = U.problem(np.float64, 20)
    sched = lambda k: 0.1 * 0.9 ** k  # noqa: E731
    a = run("Adam", params, grads, lr=sched)
    b = Reference("Adam", params, lr=1.0)
    for k, g in enumerate(grads):
        b.param_groups[0]["lr"] = sched(k)
        b.step(g)
    for x, y in zip(a.params, b.params):
        assert np.array_equal(x, y)
