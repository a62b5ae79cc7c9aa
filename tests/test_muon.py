"""Muon: a float64 NumPy reference written from torch.optim.Muon's code (exact
values), torch.optim.Muon itself within its bfloat16 Newton–Schulz's
rounding, the 2-D rule, checkpoints and refused input."""
import copy
import itertools
import math
import pickle

import numpy as np
import pytest

import optimc


def lerp(s, e, w):
    return s + w * (e - s) if abs(w) < 0.5 else e - (e - s) * (1 - w)


def reference_step(p, g, buf, h):
    """One torch Muon step on one matrix, in the arrays' dtype, with plain
    NumPy operations (transposes as torch takes them)."""
    t = p.dtype.type
    mu = h["momentum"]
    buf[...] = lerp(buf, g, t(1 - mu))
    update = lerp(g, buf, t(mu)) if h["nesterov"] else buf.copy()
    a, b, c = h["ns_coefficients"]
    x = update.T if update.shape[0] > update.shape[1] else update
    x = x / max(t(math.sqrt(np.sum(x.astype(np.float64) ** 2))), t(h["eps"]))
    for _ in range(h["ns_steps"]):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    if update.shape[0] > update.shape[1]:
        x = x.T
    rows, cols = p.shape
    lr = h["lr"]
    ratio = {None: math.sqrt(max(1, rows / cols)), "original": math.sqrt(max(1, rows / cols)),
             "match_rms_adamw": 0.2 * math.sqrt(max(rows, cols))}[h["adjust_lr_fn"]]
    p *= t(1 - lr * h["weight_decay"])
    p += t(-lr * ratio) * x


DEFAULTS = dict(lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True, ns_coefficients=(3.4445, -4.775, 2.0315),
                eps=1e-7, ns_steps=5, adjust_lr_fn=None)
SHAPES = [(9, 5), (4, 11), (6, 6), (1, 7)]
GRID = [dict(nesterov=n, adjust_lr_fn=a, momentum=m, weight_decay=w, ns_steps=s)
        for n, a, m, w, s in itertools.product([True, False], [None, "original", "match_rms_adamw"],
                                               [0.95, 0.0], [0.1, 0.0], [5])]
GRID += [dict(ns_steps=0), dict(ns_steps=2, ns_coefficients=(2.0, -1.5, 0.5), eps=1e-3)]


def problem(dtype, steps, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return params, grads


def run_reference(params, grads, groups):
    """groups: [(indices, hyper)], hyper possibly changed per step by a callable."""
    ps = [p.copy() for p in params]
    bufs = [np.zeros_like(p) for p in params]
    for k, gs in enumerate(grads):
        for idx, h in groups:
            hk = h(k) if callable(h) else h
            for i in idx:
                reference_step(ps[i], gs[i], bufs[i], hk)
    return ps, bufs


@pytest.mark.parametrize("options", GRID, ids=[",".join(f"{k}={v}" for k, v in o.items()) for o in GRID])
def test_float64_equals_the_numpy_reference(options):
    h = {**DEFAULTS, **options, "lr": 0.02}
    params, grads = problem(np.float64, 40)
    ref, ref_bufs = run_reference(params, grads, [(range(len(params)), h)])
    ours = [p.copy() for p in params]
    opt = optimc.Muon(ours, **h)
    for gs in grads:
        opt.step(gs)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())
    for i, b in enumerate(ref_bufs):
        np.testing.assert_allclose(opt.state[i]["momentum_buffer"], b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_two_groups_and_lr_changed_mid_run(dtype):
    params, grads = problem(dtype, 30, seed=5)
    h0 = {**DEFAULTS, "lr": 0.02}
    h1 = {**DEFAULTS, "lr": 0.05, "nesterov": False, "adjust_lr_fn": "match_rms_adamw"}

    def sched(h):
        return lambda k: {**h, "lr": h["lr"] * (0.5 if k >= 15 else 1.0)}
    ref, _ = run_reference([p.astype(np.float64) for p in params], [[g.astype(np.float64) for g in gs] for gs in grads],
                           [((0, 1), sched(h0)), ((2, 3), sched(h1))])
    ours = [p.copy() for p in params]
    opt = optimc.Muon([{"params": ours[:2]}, {"params": ours[2:], **{k: h1[k] for k in ("lr", "nesterov",
                                                                                        "adjust_lr_fn")}}], lr=0.02)
    for k, gs in enumerate(grads):
        if k == 15:
            for g in opt.param_groups:
                g["lr"] *= 0.5
        opt.step(gs)
    # float32 runs the same operations in float32: its rounding, relative to
    # the float64 reference, stays within a few hundred float32 ulps of the
    # params after 30 steps of an iteration that amplifies by up to ~3 per step
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for a, b in zip(ours, ref):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())


def test_close_to_torch_within_bfloat16_rounding():
    """torch orthogonalises in bfloat16 (8 significant bits, ulp 2⁻⁸ ≈ 0.4 %):
    it rounds the input and every product, and the quintic's slope (a = 3.4445
    at small singular values) amplifies those roundings over the 5 iterations.
    Measured on these shapes: up to 4.5 % of the update's largest element
    (about 11 bfloat16 ulps); the bound is 8 %. One step from the same state,
    so that only the orthogonalisation differs; the momentum buffer (element-
    wise, float64 in both; torch's vectorised lerp may fuse) agrees to 1e-14."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    for shape, options in [((9, 5), {}), ((4, 11), {"nesterov": False}), ((16, 16), {"adjust_lr_fn": "match_rms_adamw"}),
                           ((32, 128), {})]:
        p = rng.standard_normal(shape)
        buf = rng.standard_normal(shape)
        g = rng.standard_normal(shape)
        ours = p.copy()
        opt = optimc.Muon([ours], lr=0.02, **options)
        opt.state[0]["momentum_buffer"][...] = buf
        opt.step([g])
        tp = torch.tensor(p, requires_grad=True)
        topt = torch.optim.Muon([tp], lr=0.02, **options)
        topt.state[tp]["momentum_buffer"] = torch.tensor(buf)
        tp.grad = torch.tensor(g)
        topt.step()
        theirs = tp.detach().numpy()
        update = np.abs(theirs - p * (1 - 0.02 * 0.1)).max()
        assert np.abs(ours - theirs).max() <= 0.08 * update
        np.testing.assert_allclose(opt.state[0]["momentum_buffer"], topt.state[tp]["momentum_buffer"].numpy(),
                                   rtol=1e-14, atol=1e-15)


def test_defaults_are_torchs():
    torch = pytest.importorskip("torch")
    tp = torch.zeros(3, 3, requires_grad=True)
    theirs = torch.optim.Muon([tp]).defaults
    ours = optimc.Muon([np.zeros((3, 3))]).defaults
    assert {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in theirs.items()} == ours


def test_non_2d_params_refused_naming_the_array_and_the_fallback():
    W, b = np.zeros((3, 4)), np.zeros(4)
    with pytest.raises(ValueError, match=r"params\['b'\]: has shape \(4,\); Muon updates 2-D matrices only.*AdamW"):
        optimc.Muon({"W": W, "b": b})
    with pytest.raises(ValueError, match=r"params\[1\]: has shape \(2, 2, 2\)"):
        optimc.Muon([W, np.zeros((2, 2, 2))])
    with pytest.raises(ValueError, match="adjust_lr_fn: expected one of 'original', 'match_rms_adamw'"):
        optimc.Muon([W], adjust_lr_fn="rms")
    with pytest.raises(ValueError, match="ns_steps"):
        optimc.Muon([W], ns_steps=100)


def _snapshot(opt, params):
    return pickle.dumps((opt.state_dict(), [p.copy() for p in params]))


def test_bad_grads_refused_with_nothing_changed():
    params, grads = problem(np.float64, 3)
    opt = optimc.Muon(params, lr=0.02)
    opt.step(grads[0])
    good = grads[1]
    cases = [
        (good[:-1], ValueError, "expected 4 arrays"),
        (good[:-1] + [good[-1].astype(np.float32)], TypeError, r"grads\[3\]: expected float64"),
        (good[:-1] + [good[-1].T.copy()], ValueError, r"grads\[3\]: expected shape"),
        (good[:-1] + [np.asfortranarray(np.zeros(SHAPES[3]))[:, :]], None, None),
        ([good[0], good[1], good[2], params[3]], ValueError, r"grads\[3\]: shares memory with params\[3\]"),
        ({"a": good[0]}, TypeError, "grads: expected a list"),
    ]
    for grads_, exc, match in cases:
        if exc is None:
            continue
        before = _snapshot(opt, params)
        with pytest.raises(exc, match=match):
            opt.step(grads_)
        assert _snapshot(opt, params) == before
    opt.param_groups[0]["momentum"] = 2.0
    before = _snapshot(opt, params)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: momentum"):
        opt.step(good)
    assert _snapshot(opt, params) == before


def test_state_dict_and_pickle_resume_bit_identical():
    params, grads = problem(np.float32, 8, seed=2)
    straight = [p.copy() for p in params]
    opt = optimc.Muon(straight, lr=0.02)
    for gs in grads:
        opt.step(gs)
    half = [p.copy() for p in params]
    opt = optimc.Muon({str(i): p for i, p in enumerate(half)}, lr=0.02)
    for gs in grads[:4]:
        opt.step({str(i): g for i, g in enumerate(gs)})
    sd = opt.state_dict()
    resumed = optimc.Muon({str(i): p.copy() for i, p in enumerate(half)}, lr=0.02)
    resumed.load_state_dict(copy.deepcopy(sd))
    for o in (resumed, pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        ps = [p for g in o.param_groups for p in g["params"]]
        for gs in grads[4:]:
            o.step({str(i): g for i, g in enumerate(gs)})
        assert o.step_count == 8
        assert all(np.array_equal(a, b) for a, b in zip(ps, straight))
    bad = copy.deepcopy(sd)
    bad["state"][0]["momentum_buffer"] = bad["state"][0]["momentum_buffer"].astype(np.float64)
    before = _snapshot(opt, half)
    with pytest.raises(ValueError, match=r"state_dict\['state'\]\[0\]\['momentum_buffer'\]"):
        opt.load_state_dict(bad)
    assert _snapshot(opt, half) == before


def test_bench_muon_rows(capsys):
    """python -m optimc bench --muon, on a small matrix: a row per BLAS setting."""
    from optimc.bench import cli, muon as bench_muon
    rows = bench_muon.muon_rows(shapes=((16, 8),), repeats=1)
    assert [r["blas_threads"] for r in rows] == ["1", "default"]
    assert all(r["optimc_s"] > 0 and (r["torch_s"] is None or r["ratio"] > 0) for r in rows)
    assert "16x8" in bench_muon.format_rows(rows)
    with pytest.raises(SystemExit):
        cli.main(["--muon", "--repeats", "0"])
    assert "--repeats must be at least 1" in capsys.readouterr().err
