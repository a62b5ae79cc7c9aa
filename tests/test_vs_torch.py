"""optimc against torch.optim (single-tensor implementations, foreach=False).

Every optimizer torch shares (SGD, Momentum -> SGD(momentum), NAG -> SGD(nesterov),
Adagrad, RMSprop, Adadelta, Adam, AdamW, Adamax, NAdam, RAdam) and every option
combination torch accepts, 100 steps over params of shapes (), (0,), (1,), (7,),
(33,), (1031,), (5, 13); float64 within 1e-10 relative, float32 within 1e-5
relative / 1e-6 absolute.  Every hyperparameter is passed explicitly to both
(optimc's defaults differ from torch's for RMSprop alpha and Adagrad eps).

The largest relative difference per optimizer and dtype, max |a-b| / (|b| + atol_eff/rtol)
over params and state buffers (atol_eff = atol * max(1, max|b|) per array, see _util.TOL), is printed at the end of the module (visible with
``pytest -s``) and appended to the file named by $OPTIMC_PARITY_REPORT if set."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _util as U  # noqa: E402

torch = pytest.importorskip("torch")
import optimc  # noqa: E402

STEPS = 100
REC = U.Recorder()


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    REC.emit(f"optimc vs torch {torch.__version__} (foreach=False), {STEPS} steps: max relative "
             "difference |a-b| / (|b| + atol_eff/rtol) over params and state buffers; "
             "rtol/atol: float64 1e-10/1e-12, float32 1e-5/1e-6")


def compare(name, h, dtype, mine, opt, tr, at):
    what = f"{name} {U.dtype_id(dtype)} step {at}: "
    for i, (a, b) in enumerate(zip(mine, tr.params)):
        U.check_close(a, b, dtype, what + f"param[{i}] shape {b.shape}", recorder=REC, name=name)
        for buf in U.state_names(opt, i):
            theirs = tr.buffer(i, buf)
            ours = opt.state[i][buf]
            if np.ndim(theirs) == 0:   # scalar state (NAdam's mu_product)
                ours, theirs = np.float64(np.asarray(ours)), np.float64(theirs)
            U.check_close(ours, theirs, dtype, what + f"state[{i}][{buf!r}]",
                          recorder=REC, name=name)
        if tr.step_count(i) is not None:
            assert int(opt.state[i]["step"]) == tr.step_count(i), what + f"state[{i}]['step']"


def check_params_each_step(name, dtype, mine, tr, at):
    what = f"{name} {U.dtype_id(dtype)} step {at}: "
    for i, (a, b) in enumerate(zip(mine, tr.params)):
        U.check_close(a, b, dtype, what + f"param[{i}] shape {b.shape}", recorder=REC, name=name)


@pytest.mark.parametrize("dtype", U.DTYPES, ids=U.dtype_id)
@pytest.mark.parametrize("case", U.torch_cases(), ids=U.case_id)
def test_matches_torch(case, dtype):
    name, h = case
    params, grads = U.problem(dtype, STEPS)
    mine = [p.copy() for p in params]
    opt = getattr(optimc, name)(mine, **h)
    tr = U.TorchRun(name, h, params)
    for t, g in enumerate(grads, 1):
        opt.step(g)
        tr.step(g)
        check_params_each_step(name, dtype, mine, tr, t)
    compare(name, h, dtype, mine, opt, tr, STEPS)


@pytest.mark.parametrize("dtype", U.DTYPES, ids=U.dtype_id)
@pytest.mark.parametrize("name", U.torch_names())
def test_lr_changed_mid_run_matches_torch(name, dtype):
    h = U.rich(name)
    params, grads = U.problem(dtype, STEPS, seed=21)
    mine = [p.copy() for p in params]
    opt = getattr(optimc, name)(mine, **h)
    tr = U.TorchRun(name, h, params)
    for t, g in enumerate(grads, 1):
        if t in (31, 61):
            new = h["lr"] * (2.0 if t == 31 else 0.3)
            if t == 31:
                opt.lr = new
            else:
                opt.param_groups[0]["lr"] = new
            tr.set_lr(new)
        opt.step(g)
        tr.step(g)
        check_params_each_step(name, dtype, mine, tr, t)
    compare(name, h, dtype, mine, opt, tr, STEPS)


@pytest.mark.parametrize("dtype", U.DTYPES, ids=U.dtype_id)
@pytest.mark.parametrize("name", U.torch_names())
def test_resumed_from_state_dict_matches_torch(name, dtype):
    """optimc: 40 steps, state_dict, fresh optimizer + load_state_dict, 60 more steps;
    torch: 100 uninterrupted steps."""
    h = U.rich(name)
    params, grads = U.problem(dtype, STEPS, seed=22)
    mine = [p.copy() for p in params]
    opt = getattr(optimc, name)(mine, **h)
    tr = U.TorchRun(name, h, params)
    for t, g in enumerate(grads[:40], 1):
        opt.step(g)
        tr.step(g)
    sd = opt.state_dict()
    mine = [p.copy() for p in mine]
    del opt
    opt = getattr(optimc, name)(mine, **h)
    opt.load_state_dict(sd)
    for t, g in enumerate(grads[40:], 41):
        opt.step(g)
        tr.step(g)
        check_params_each_step(name, dtype, mine, tr, t)
    compare(name, h, dtype, mine, opt, tr, STEPS)
