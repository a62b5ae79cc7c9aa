"""optimc.save / optimc.load: .npz checkpoints that hold no pickle.

* A resumed run is bit-identical to an uninterrupted one, for every class in
  optimc.ALL (float32 and float64, named params, two param groups), with a
  scheduler, an EMA, a MultiSteps and a Schedule lr saved alongside.
* Loading an untrusted file cannot run code: object arrays, pickle files and
  non-.npy zip members are refused, and a pickle payload never executes.
* A mismatch (another class, shapes, dtypes, object list) raises and changes nothing.
* A callable lr cannot be saved, and the error says what to do instead.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import optimc
from optimc import schedules

DTYPES = [np.float32, np.float64]


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {"W": rng.standard_normal((5, 3)).astype(dtype), "b": rng.standard_normal(3).astype(dtype),
            "s": np.array(rng.standard_normal(), dtype=dtype)}


def grads_for(params, k):
    rng = np.random.default_rng(1000 + k)
    return {n: rng.standard_normal(p.shape).astype(p.dtype) for n, p in params.items()}


def build(cls, params):
    """Two groups (W | b, s) with a Schedule lr, plus a scheduler-free EMA: the same each call."""
    groups = [{"params": {"W": params["W"]}}, {"params": {"b": params["b"], "s": params["s"]}}]
    opt = cls(groups, lr=schedules.exponential_decay(1e-2, 0.97), max_grad_norm=5.0)
    return opt, optimc.EMA(opt, decay=0.9, warmup="count")


def assert_same(a, b, what):
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), f"{what}[{k!r}] differs"


def state_arrays(opt):
    return {f"{n}.{k}": np.array(v) for n in opt.state for k, v in opt.state[n].items()
            if isinstance(v, np.ndarray)}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("cls", optimc.ALL, ids=lambda c: c.__name__)
def test_resume_is_bit_identical(cls, dtype, tmp_path):
    params = make_params(dtype)
    opt, ema = build(cls, params)
    for k in range(4):
        opt.step(grads_for(params, k))
        ema.update()
    path = tmp_path / "ck.npz"
    optimc.save(path, opt, ema, metadata={"epoch": 4, "note": "after four steps"})
    for k in range(4, 9):                       # the uninterrupted run
        opt.step(grads_for(params, k))
        ema.update()

    params2 = {n: np.zeros_like(p) for n, p in make_params(dtype, seed=99).items()}
    opt2, ema2 = build(cls, params2)
    assert optimc.load(path, opt2, ema2) == {"epoch": 4, "note": "after four steps"}
    assert opt2.step_count == 4 and ema2.num_updates == 4
    for k in range(4, 9):
        opt2.step(grads_for(params2, k))
        ema2.update()
    assert_same(params2, params, "params")
    assert_same(state_arrays(opt2), state_arrays(opt), "state")
    assert_same(dict(enumerate(ema2.averages.values())), dict(enumerate(ema.averages.values())), "EMA")
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def test_schedulers_and_multisteps_round_trip(tmp_path):
    """A scheduler (plain-data state) and a MultiSteps mid-accumulation resume exactly."""
    def make(p):
        opt = optimc.SGD([p], lr=0.1, momentum=0.9)
        ms = optimc.MultiSteps(opt, every_k=3)
        sched = schedules.SequentialLR(opt, [schedules.LinearLR(opt, start_factor=0.1, total_iters=2),
                                             schedules.CosineAnnealingLR(opt, T_max=10)], milestones=[2])
        plateau = schedules.ReduceLROnPlateau(opt, patience=0)
        return ms, sched, plateau

    def run(ms, sched, plateau, p, ks):
        for k in ks:
            if ms.step([np.sin(p + k)]):
                sched.step()
                plateau.step(float(np.sum(p ** 2)))

    p = np.linspace(-1, 1, 7)
    ms, sched, plateau = make(p)
    run(ms, sched, plateau, p, range(7))         # 2 inner steps, 1 grad pending
    assert ms.mini_step == 1
    optimc.save(tmp_path / "ck.npz", ms, sched, plateau)
    run(ms, sched, plateau, p, range(7, 20))

    p2 = np.zeros(7)
    ms2, sched2, plateau2 = make(p2)
    optimc.load(tmp_path / "ck.npz", ms2, sched2, plateau2)
    assert ms2.mini_step == 1 and sched2.last_epoch == sched.last_epoch - 4
    run(ms2, sched2, plateau2, p2, range(7, 20))
    assert p2.tobytes() == p.tobytes()
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert plateau2.state_dict() == plateau.state_dict()


def test_file_is_plain_npz_and_json(tmp_path):
    params = make_params(np.float64)
    opt = optimc.Adam(params, lr=schedules.warmup_cosine(1e-2, 2, 10))
    opt.step(grads_for(params, 0))
    path = tmp_path / "ck.npz"
    optimc.save(path, opt, metadata={"nan": float("nan"), "t": (1, 2)})
    with zipfile.ZipFile(path) as z:
        assert all(n.endswith(".npy") for n in z.namelist())
    with np.load(path, allow_pickle=False) as npz:           # readable without optimc, no pickle
        doc = json.loads(npz["optimc_json"].tobytes().decode())
        assert all(npz[k].dtype != object for k in npz.files)
    assert doc["format"] == "optimc-checkpoint" and doc["objects"][0]["class"] == "Adam"
    lr = doc["objects"][0]["state"]["param_groups"][0]["lr"]
    assert lr["name"] == "warmup_cosine" and lr["args"]["peak_lr"] == 0.01
    opt2 = optimc.Adam(make_params(np.float64, 5), lr=0.5)
    meta = optimc.load(path, opt2)
    assert np.isnan(meta["nan"]) and meta["t"] == (1, 2)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]      # a Schedule again
    assert isinstance(opt2.param_groups[0]["lr"], schedules.Schedule)


def test_callable_lr_cannot_be_saved(tmp_path):
    opt = optimc.SGD([np.ones(3)], lr=lambda step: 0.1)
    path = tmp_path / "ck.npz"
    with pytest.raises(TypeError, match=r"lr.*callable.*cannot be saved.*optimc\.schedules"):
        optimc.save(path, opt)
    assert not path.exists()
    assert not [f for f in os.listdir(tmp_path)], "no temporary file left behind"


def _snapshot(opt, ema):
    return ({n: p.copy() for g in opt.param_groups for n, p in zip(g["param_names"], g["params"])},
            state_arrays(opt), opt.step_count, [a.copy() for a in ema.averages.values()], ema.num_updates)


def _assert_unchanged(opt, ema, snap):
    now = _snapshot(opt, ema)
    assert_same(now[0], snap[0], "params")
    assert_same(now[1], snap[1], "state")
    assert now[2] == snap[2] and now[4] == snap[4]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(now[3], snap[3]))


@pytest.mark.parametrize("case", ["other-class", "other-dtype", "other-shape", "fewer-extras",
                                  "other-extra", "ema-mismatch"])
def test_mismatch_raises_and_changes_nothing(case, tmp_path):
    params = make_params(np.float64)
    opt, ema = build(optimc.Adam, params)
    opt.step(grads_for(params, 0))
    ema.update()
    path = tmp_path / "ck.npz"
    optimc.save(path, opt, ema)

    cls, dtype, shape_b, extras = optimc.Adam, np.float64, (3,), "ema"
    if case == "other-class":
        cls = optimc.AdamW
    elif case == "other-dtype":
        dtype = np.float32
    elif case == "other-shape":
        shape_b = (4,)
    elif case == "fewer-extras":
        extras = ""
    elif case == "other-extra":
        extras = "swa"
    target = make_params(dtype, 3)
    target["b"] = np.zeros(shape_b, dtype)
    opt2, ema2 = build(cls, target)
    for k in range(2):
        opt2.step(grads_for(target, k))
        ema2.update()
    objs = {"ema": [ema2], "": [], "swa": [optimc.SWA(opt2)]}[extras]
    if case == "ema-mismatch":       # the EMA's load refuses after the optimizer's succeeded
        objs = [optimc.EMA([np.zeros(2)])]
        optimc.save(path, opt, objs[0])
        objs = [optimc.EMA(opt2)]
    snap = _snapshot(opt2, ema2)
    lr_before = [g["lr"] for g in opt2.param_groups]
    with pytest.raises(ValueError):
        optimc.load(path, opt2, *objs)
    _assert_unchanged(opt2, ema2, snap)
    assert [g["lr"] for g in opt2.param_groups] == lr_before


# ---- untrusted files ------------------------------------------------------------

class _Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps(_Payload(str(marker))))
    opt = optimc.SGD([np.ones(2)])
    with pytest.raises(ValueError, match="not an optimc checkpoint"):
        optimc.load(path, opt)
    assert not marker.exists()


def test_object_array_is_refused_without_running_it(tmp_path):
    """A checkpoint whose array entry is a pickled object array (np.save with
    allow_pickle) is refused by np.load(allow_pickle=False); nothing runs."""
    marker = tmp_path / "code-ran"
    params = [np.ones(2)]
    opt = optimc.SGD(params, lr=0.1)
    good = tmp_path / "good.npz"
    optimc.save(good, opt)
    evil = tmp_path / "evil.npz"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for name in zin.namelist():
            if name == "a0.npy":                 # the param array -> a pickled object array
                import io
                buf = io.BytesIO()
                np.save(buf, np.array([_Payload(str(marker))], dtype=object), allow_pickle=True)
                zout.writestr(name, buf.getvalue())
            else:
                zout.writestr(name, zin.read(name))
    before = params[0].copy()
    with pytest.raises(ValueError, match="refused"):
        optimc.load(evil, opt)
    assert not marker.exists()
    assert params[0].tobytes() == before.tobytes()


def test_other_members_and_bad_json_are_refused(tmp_path):
    opt = optimc.SGD([np.ones(2)])
    good = tmp_path / "good.npz"
    optimc.save(good, opt)
    extra = tmp_path / "extra.npz"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(extra, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
        zout.writestr("payload.pkl", pickle.dumps([1]))
    with pytest.raises(ValueError, match="not .npy"):
        optimc.load(extra, opt)
    for doc in ({"format": "something-else"}, {"format": "optimc-checkpoint", "version": 99},
                {"format": "optimc-checkpoint", "version": 1, "objects": [{"class": "SGD"}],
                 "params": [{"__optimc__": "schedule", "name": "system", "args": {}}]}):
        bad = tmp_path / "bad.npz"
        np.savez(bad, optimc_json=np.frombuffer(json.dumps(doc).encode(), np.uint8))
        with pytest.raises(ValueError):
            optimc.load(bad, opt)
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=np.ones(3))
    with pytest.raises(ValueError, match="no optimc_json"):
        optimc.load(plain, opt)
    with pytest.raises(FileNotFoundError):
        optimc.load(tmp_path / "missing.npz", opt)


def test_bad_arguments():
    opt = optimc.SGD([np.ones(2)])
    with pytest.raises(TypeError, match="opt"):
        optimc.save("x.npz", object())
    with pytest.raises(TypeError, match=r"extras\[0\]"):
        optimc.save("x.npz", opt, 3)
    with pytest.raises(TypeError, match="metadata"):
        optimc.save("x.npz", opt, metadata=[1])
    with pytest.raises(TypeError, match=r"metadata\['f'\].*callable"):
        optimc.save("x.npz", opt, metadata={"f": print})
    assert not os.path.exists("x.npz")
