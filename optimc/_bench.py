"""The speed benchmark: ``python -m optimc bench [options]`` (or ``benchmarks/run.py``).

For each optimizer, dtype and size, one run times side by side:

* ``optimc``     -- ``opt.step(grads)``: one call into C for all params;
* ``roofline``   -- ``optimc._core.stream``: the least arithmetic that reads and
  writes the same bytes per element as the step (same SIMD level and threads);
* ``numpy``      -- the same step in NumPy, written as well as NumPy allows:
  in-place ``out=`` ufuncs, preallocated temporaries, nothing allocated per
  step, scalars folded so that as few passes as possible run;
* ``np-block``   -- the same NumPy step run over cache-sized blocks of each
  large tensor (views made once), so the temporaries stay in cache;
* ``torch-loop`` / ``torch-foreach`` / ``torch-fused`` -- ``torch.optim`` with
  ``foreach=False`` / ``foreach=True`` / ``fused=True`` (where torch is installed
  and supports it), on ``torch.from_numpy`` tensors with ``.grad`` set and
  ``torch.set_num_threads`` equal to optimc's thread count.

Before timing, every implementation takes a few steps from the same start with
the same grads and its params are compared with optimc's (``numpy.allclose``):
a mismatch is flagged in the table and makes the command exit with status 1.

Method: each implementation is warmed up, then timed in rounds; in every
round each implementation runs one sample (enough calls to last about
``--sample-time``; the order rotates from round to round, so drift of the
machine spreads evenly), and the reported time is the median over samples,
in nanoseconds per element (of all tensors together).

Extra measurements (``--sections``): ``fixed`` -- a step on one 1-element
param against one ``np.add(a, b, out=a)`` on 1-element arrays; ``threads`` --
1 vs N threads on a 1e7-element Adam float32 step, and 1 vs N threads at sizes
around the thread threshold, back to back and after an idle millisecond (which
threshold the measurements suggest).

Results go to ``--out`` (default ``bench-results/``): ``bench.json`` (all of
it, with the machine's details), ``bench.csv`` (the table), ``bench.md`` (the
tables as Markdown), ``bench_threads.csv`` and, with ``--plot``, ``bench.png``.
See benchmarks/README.md and docs/performance.md.
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import platform
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from . import _core

# ---------------------------------------------------------------------------
# What is compared

#: key -> (label, optimc class name, torch class name, hyperparameters, stream (arrays, written))
#: The hyperparameters are passed explicitly to all implementations.
OPTIMIZERS = {
    "adam": ("Adam", "Adam", "Adam",
             dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0), (4, 3)),
    "adamw": ("AdamW", "AdamW", "AdamW",
              dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2), (4, 3)),
    "sgd": ("SGD-momentum", "SGD", "SGD",
            dict(lr=1e-2, momentum=0.9, dampening=0.0, weight_decay=0.0), (3, 2)),
    "rmsprop": ("RMSprop", "RMSprop", "RMSprop",
                dict(lr=1e-3, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False),
                (3, 2)),
    "adagrad": ("Adagrad", "Adagrad", "Adagrad",
                dict(lr=1e-2, lr_decay=0.0, eps=1e-8, weight_decay=0.0,
                     initial_accumulator_value=0.0), (3, 2)),
    "adadelta": ("Adadelta", "Adadelta", "Adadelta",
                 dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0), (4, 3)),
}
ALIASES = {"sgd-momentum": "sgd", "momentum": "sgd", "sgd_momentum": "sgd"}
DTYPES = {"float32": np.float32, "float64": np.float64}
DEFAULT_SIZES = "1e3,1e5,1e6,1e7,1000x1000"
TORCH_VARIANTS = (("torch-loop", {"foreach": False}), ("torch-foreach", {"foreach": True}),
                  ("torch-fused", {"fused": True}))
IMPLS = ("optimc", "roofline", "numpy", "np-block", "torch-loop", "torch-foreach", "torch-fused")
NUMPY_BLOCK = 8192          # elements per block of the blocked NumPy step

# timing profiles: seconds per sample, seconds per case, rounds (min, max), check steps
PROFILES = {
    "default": dict(sample_time=0.01, case_time=1.2, min_rounds=7, max_rounds=41, check_steps=3),
    "quick": dict(sample_time=0.002, case_time=0.12, min_rounds=3, max_rounds=9, check_steps=2),
}


# ---------------------------------------------------------------------------
# NumPy implementations (torch.optim's single-tensor formulas, reassociated
# only where that saves a pass; the check below holds them to optimc's result)

class _NumpyStep:
    """A NumPy optimizer over a list of arrays. ``block``: run each tensor
    larger than 2*block in blocks of ``block`` elements (views made here)."""

    n_tmp = 1

    def __init__(self, params, hyper, block=None):
        self.h = dict(hyper)
        self.t = 0
        self.params = list(params)
        self.n_state = self.state_names()
        largest = max(p.size for p in self.params)
        dtype = self.params[0].dtype
        span = block if block and largest > 2 * block else largest
        self.tmp = [np.empty(span, dtype) for _ in range(self.n_tmp)]
        self.units = []   # per tensor: list of (slice or None, p view, state views, tmp views)
        for p in self.params:
            pf = p.reshape(-1)
            state = [self.init_state(pf) for _ in self.n_state]
            if block and pf.size > 2 * block:
                parts = []
                for lo in range(0, pf.size, block):
                    hi = min(lo + block, pf.size)
                    parts.append((slice(lo, hi), pf[lo:hi], [s[lo:hi] for s in state],
                                  [t[:hi - lo] for t in self.tmp]))
            else:
                parts = [(None, pf, state, [t[:pf.size] for t in self.tmp])]
            self.units.append((state, parts))

    @staticmethod
    def state_names():
        return ()

    @staticmethod
    def init_state(pf):
        return np.full(pf.shape, 0.0, pf.dtype)   # written, so its pages are mapped

    def step(self, grads):
        self.t += 1
        c = self.coefs(self.t)
        for (_, parts), g in zip(self.units, grads):
            gf = g.reshape(-1)
            for sl, p, state, tmp in parts:
                self.update(c, p, gf if sl is None else gf[sl], state, tmp)

    def state(self, i):
        return dict(zip(self.n_state, self.units[i][0]))


class NumpyAdam(_NumpyStep):
    # m += (1-b1)(g-m); v = b2 v + (1-b2) g^2;
    # p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps) == p - (lr sqrt(bc2)/bc1) m / (sqrt(v) + eps sqrt(bc2))
    # 12 passes (13 with decoupled decay)
    decoupled = False

    @staticmethod
    def state_names():
        return ("exp_avg", "exp_avg_sq")

    def coefs(self, t):
        h = self.h
        b1, b2 = h["betas"]
        bc1, bc2s = 1 - b1 ** t, math.sqrt(1 - b2 ** t)
        decay = 1 - h["lr"] * h["weight_decay"] if self.decoupled and h["weight_decay"] else None
        return (1 - b1, b2, 1 - b2, h["eps"] * bc2s, -h["lr"] * bc2s / bc1, decay)

    @staticmethod
    def update(c, p, g, state, tmp):
        w1, b2, w2, eps_hat, neg_step, decay = c
        m, v = state
        t = tmp[0]
        if decay is not None:
            np.multiply(p, decay, out=p)
        np.subtract(g, m, out=t)
        np.multiply(t, w1, out=t)
        np.add(m, t, out=m)
        np.multiply(v, b2, out=v)
        np.multiply(g, g, out=t)
        np.multiply(t, w2, out=t)
        np.add(v, t, out=v)
        np.sqrt(v, out=t)
        np.add(t, eps_hat, out=t)
        np.divide(m, t, out=t)
        np.multiply(t, neg_step, out=t)
        np.add(p, t, out=p)


class NumpyAdamW(NumpyAdam):
    decoupled = True


class NumpySGD(_NumpyStep):
    # b = g (t=1), else b = mu b + (1-dampening) g; p -= lr b    (4 passes)
    @staticmethod
    def state_names():
        return ("momentum_buffer",)

    def coefs(self, t):
        h = self.h
        return (t == 1, h["momentum"], 1 - h["dampening"], -h["lr"])

    @staticmethod
    def update(c, p, g, state, tmp):
        first, mu, damp, neg_lr = c
        b, = state
        t = tmp[0]
        if first:
            np.copyto(b, g)
        else:
            np.multiply(b, mu, out=b)
            if damp != 1:
                np.multiply(g, damp, out=t)
                np.add(b, t, out=b)
            else:
                np.add(b, g, out=b)
        np.multiply(b, neg_lr, out=t)
        np.add(p, t, out=p)


class NumpyRMSprop(_NumpyStep):
    # v = a v + (1-a) g^2; p -= lr g / (sqrt(v) + eps)    (9 passes)
    @staticmethod
    def state_names():
        return ("square_avg",)

    def coefs(self, t):
        h = self.h
        return (h["alpha"], 1 - h["alpha"], h["eps"], -h["lr"])

    @staticmethod
    def update(c, p, g, state, tmp):
        a, w, eps, neg_lr = c
        v, = state
        t = tmp[0]
        np.multiply(v, a, out=v)
        np.multiply(g, g, out=t)
        np.multiply(t, w, out=t)
        np.add(v, t, out=v)
        np.sqrt(v, out=t)
        np.add(t, eps, out=t)
        np.divide(g, t, out=t)
        np.multiply(t, neg_lr, out=t)
        np.add(p, t, out=p)


class NumpyAdagrad(_NumpyStep):
    # s += g^2; p -= lr_t g / (sqrt(s) + eps)    (7 passes)
    @staticmethod
    def state_names():
        return ("sum",)

    def coefs(self, t):
        h = self.h
        return (h["eps"], -h["lr"] / (1 + (t - 1) * h["lr_decay"]))

    @staticmethod
    def update(c, p, g, state, tmp):
        eps, neg_lr = c
        s, = state
        t = tmp[0]
        np.multiply(g, g, out=t)
        np.add(s, t, out=s)
        np.sqrt(s, out=t)
        np.add(t, eps, out=t)
        np.divide(g, t, out=t)
        np.multiply(t, neg_lr, out=t)
        np.add(p, t, out=p)


class NumpyAdadelta(_NumpyStep):
    # v = r v + (1-r) g^2; d = sqrt(u + eps) / sqrt(v + eps) * g;
    # u = r u + (1-r) d^2; p -= lr d    (15 passes, 16 if lr != 1)
    n_tmp = 2

    @staticmethod
    def state_names():
        return ("square_avg", "acc_delta")

    def coefs(self, t):
        h = self.h
        return (h["rho"], 1 - h["rho"], h["eps"], h["lr"])

    @staticmethod
    def update(c, p, g, state, tmp):
        r, w, eps, lr = c
        v, u = state
        t, d = tmp
        np.multiply(v, r, out=v)
        np.multiply(g, g, out=t)
        np.multiply(t, w, out=t)
        np.add(v, t, out=v)
        np.add(v, eps, out=t)
        np.sqrt(t, out=t)
        np.add(u, eps, out=d)
        np.sqrt(d, out=d)
        np.divide(d, t, out=d)
        np.multiply(d, g, out=d)
        np.multiply(u, r, out=u)
        np.multiply(d, d, out=t)
        np.multiply(t, w, out=t)
        np.add(u, t, out=u)
        if lr != 1:
            np.multiply(d, lr, out=d)
        np.subtract(p, d, out=p)


NUMPY_IMPLS = {"adam": NumpyAdam, "adamw": NumpyAdamW, "sgd": NumpySGD, "rmsprop": NumpyRMSprop,
               "adagrad": NumpyAdagrad, "adadelta": NumpyAdadelta}


# ---------------------------------------------------------------------------
# Timing

def _autorange(run: Callable[[int], Optional[float]], target: float) -> int:
    """Calls per sample so that one sample lasts about `target` seconds."""
    k = 1
    while True:
        t0 = time.perf_counter()
        run(k)
        dt = time.perf_counter() - t0
        if dt >= 0.2 * target or k >= 1 << 22:
            return max(1, int(math.ceil(k * target / max(dt, 1e-9))))
        k *= 4 if dt < 0.02 * target else 2


def measure(runners: Dict[str, Callable[[int], Optional[float]]], sample_time: float,
            case_time: float, min_rounds: int, max_rounds: int) -> Dict[str, dict]:
    """Median seconds per call of each runner, sampled round-robin. ``runner(k)``
    makes k calls; if it returns a number, that is the time to count (a runner
    that idles between calls times the calls itself), else the wall time is."""
    names = list(runners)
    calls = {}
    for name in names:
        runners[name](1)                       # warm-up
        calls[name] = _autorange(runners[name], sample_time)
    per_round = 0.0
    for name in names:                         # one untimed-for-results round, to size the run
        t0 = time.perf_counter()
        runners[name](calls[name])
        per_round += time.perf_counter() - t0
    rounds = int(min(max_rounds, max(min_rounds, case_time / max(per_round, 1e-9))))
    samples = {name: [] for name in names}
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for j in range(len(names)):
                name = names[(r + j) % len(names)]
                k = calls[name]
                t0 = time.perf_counter()
                own = runners[name](k)
                wall = time.perf_counter() - t0
                samples[name].append((wall if own is None else own) / k)
    finally:
        if was_enabled:
            gc.enable()
    out = {}
    for name in names:
        s = np.asarray(samples[name])
        q1, med, q3 = np.percentile(s, [25, 50, 75])
        out[name] = dict(median=float(med), min=float(s.min()), q1=float(q1), q3=float(q3),
                         rounds=rounds, calls=calls[name])
    return out


def _optimc_runner(opt, grads):
    step = opt.step

    def run(k):
        for _ in range(k):
            step(grads)
    return run


def _stream_runner(arrays, n_write):
    stream = _core.stream

    def run(k):
        for _ in range(k):
            stream(arrays, n_write)
    return run


def _numpy_runner(impl, grads):
    step = impl.step

    def run(k):
        for _ in range(k):
            step(grads)
    return run


def _torch_runner(opt):
    step = opt.step

    def run(k):
        for _ in range(k):
            step()
    return run


# ---------------------------------------------------------------------------
# Cases

def parse_size(text: str):
    """'1e7' -> (1, 10000000); '1000x1000' -> (1000, 1000)."""
    t = text.strip().lower().replace("×", "x")
    try:
        if "x" in t:
            a, b = t.split("x", 1)
            n_tensors, n = int(float(a)), int(float(b))
        else:
            n_tensors, n = 1, int(float(t))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 1e6 or 1000x1000") from None
    if n_tensors < 1 or n < 1:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: counts must be >= 1")
    return n_tensors, n


def size_label(n_tensors: int, n: int) -> str:
    def short(v):
        if v >= 1000 and v == 10 ** int(round(math.log10(v))):
            return f"1e{int(round(math.log10(v)))}"
        return str(v)
    return short(n) if n_tensors == 1 else f"{n_tensors}x{n}"


def _tolerances(dtype):
    return (1e-5, 1e-6) if dtype == np.float32 else (1e-10, 1e-12)


def _close(a_list, b_list, dtype):
    rtol, atol = _tolerances(dtype)
    worst = 0.0
    ok = True
    for a, b in zip(a_list, b_list):
        b = np.asarray(b)
        if not np.allclose(a, b, rtol=rtol, atol=atol):
            ok = False
        d = np.abs(a.astype(np.float64) - b.astype(np.float64)) / (atol + rtol * np.abs(b))
        worst = max(worst, float(d.max()) if d.size else 0.0)
    return ok, worst


def run_case(key: str, dtype, n_tensors: int, n: int, prof: dict, torch, seed: int) -> dict:
    """Build every implementation for one case, check them, time them."""
    import optimc
    label, cls_name, torch_name, hyper, (n_arrays, n_write) = OPTIMIZERS[key]
    rng = np.random.default_rng(seed)
    p0 = [rng.standard_normal(n, dtype=dtype) for _ in range(n_tensors)]
    grads = [rng.standard_normal(n, dtype=dtype) for _ in range(n_tensors)]
    total = n_tensors * n
    result = dict(optimizer=label, key=key, dtype=np.dtype(dtype).name, size=size_label(n_tensors, n),
                  n_tensors=n_tensors, n_per_tensor=n, n_elements=total, checks={}, skipped={},
                  hyper={k: list(v) if isinstance(v, tuple) else v for k, v in hyper.items()})
    steps = prof["check_steps"]

    # optimc
    p_c = [p.copy() for p in p0]
    opt = getattr(optimc, cls_name)(p_c, **hyper)
    for _ in range(steps):
        opt.step(grads)
    runners = {"optimc": _optimc_runner(opt, grads)}

    # the roofline: stream over as many arrays of the same size (one call for all elements)
    stream_arrays = [np.full(total, 1.0, dtype) for _ in range(n_write)] + \
                    [np.full(total, 0.0, dtype) for _ in range(n_arrays - n_write)]
    runners["roofline"] = _stream_runner(stream_arrays, n_write)

    # NumPy, plain and blocked
    np_cls = NUMPY_IMPLS[key]
    variants = [("numpy", None)]
    if n > 2 * NUMPY_BLOCK:
        variants.append(("np-block", NUMPY_BLOCK))
    else:
        result["skipped"]["np-block"] = f"tensors of {n} elements fit in cache already"
    for name, block in variants:
        p_n = [p.copy() for p in p0]
        impl = np_cls(p_n, hyper, block=block)
        for _ in range(steps):
            impl.step(grads)
        result["checks"][name] = _close(p_n, p_c, dtype)
        runners[name] = _numpy_runner(impl, grads)

    # torch.optim
    if torch is None:
        for name, _ in TORCH_VARIANTS:
            result["skipped"][name] = "torch not installed (or --no-torch)"
    else:
        tcls = getattr(torch.optim, torch_name)
        for name, kw in TORCH_VARIANTS:
            p_t = [p.copy() for p in p0]
            tens = [torch.from_numpy(p) for p in p_t]
            for t, g in zip(tens, grads):
                t.grad = torch.from_numpy(g)
            try:
                topt = tcls(tens, **hyper, **kw)
                for _ in range(steps):
                    topt.step()
            except (TypeError, RuntimeError, ValueError, NotImplementedError) as exc:
                result["skipped"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                continue
            result["checks"][name] = _close(p_t, p_c, dtype)
            runners[name] = _torch_runner(topt)

    stats = measure(runners, prof["sample_time"], prof["case_time"], prof["min_rounds"],
                    prof["max_rounds"])
    result["stats"] = stats
    ns = {name: s["median"] / total * 1e9 for name, s in stats.items()}
    result["ns_per_element"] = ns
    result["bytes_per_element"] = (n_arrays + n_write) * np.dtype(dtype).itemsize
    result["roofline_fraction"] = ns["roofline"] / ns["optimc"]
    np_names = [k for k in ("numpy", "np-block") if k in ns]
    best_np = min(np_names, key=ns.get)
    result["best_numpy"] = best_np
    result["x_numpy"] = ns[best_np] / ns["optimc"]
    t_names = [k for k, _ in TORCH_VARIANTS if k in ns]
    if t_names:
        best_t = min(t_names, key=ns.get)
        result["best_torch"] = best_t
        result["x_torch"] = ns[best_t] / ns["optimc"]
    else:
        result["best_torch"] = None
        result["x_torch"] = None
    return result


# ---------------------------------------------------------------------------
# Fixed cost and threads

def fixed_cost(keys, dtypes, prof) -> List[dict]:
    """A step on one 1-element param vs one np.add(a, b, out=a) on 1-element arrays."""
    import optimc
    out = []
    for dtype in dtypes:
        a = np.ones(1, dtype)
        b = np.full(1, 0.0, dtype)

        def run_add(k, add=np.add, a=a, b=b):
            for _ in range(k):
                add(a, b, out=a)
        runners = {"np.add": run_add}
        for key in keys:
            label, cls_name, _, hyper, _ = OPTIMIZERS[key]
            p = np.ones(1, dtype)
            g = np.full(1, 1e-3, dtype)
            opt = getattr(optimc, cls_name)([p], **hyper)
            runners[label] = _optimc_runner(opt, [g])
        stats = measure(runners, max(prof["sample_time"], 0.005), max(prof["case_time"], 0.5),
                        max(prof["min_rounds"], 9), 61)
        t_add = stats["np.add"]["median"]
        for key in keys:
            label = OPTIMIZERS[key][0]
            t = stats[label]["median"]
            out.append(dict(optimizer=label, dtype=np.dtype(dtype).name, step_ns=t * 1e9,
                            np_add_ns=t_add * 1e9, ratio=t / t_add))
    return out


def _with_threads(n_threads, threshold, fn):
    import optimc

    def run(k):
        optimc.set_num_threads(n_threads)
        _core.set_thread_threshold(threshold)
        fn(k)
    return run


IDLE_GAP = 1e-3   # seconds the process sleeps before each "after idle" step


def _after_idle(n_threads, threshold, opt, grads, gap=IDLE_GAP):
    """Steps that each follow `gap` seconds of sleep (as after a forward/backward
    pass: the pool's workers are asleep); times the steps only."""
    import optimc
    step, perf, sleep = opt.step, time.perf_counter, time.sleep

    def run(k):
        optimc.set_num_threads(n_threads)
        _core.set_thread_threshold(threshold)
        total = 0.0
        for _ in range(k):
            sleep(gap)
            t0 = perf()
            step(grads)
            total += perf() - t0
        return total
    return run


def threads_big(n_threads: int, prof, torch, seed: int, n: int = 10 ** 7, thr: int = 1 << 18) -> dict:
    """1 vs n_threads threads on an n-element Adam float32 step (and the stream, torch fused)."""
    import optimc
    dtype = np.float32
    _, cls_name, torch_name, hyper, (n_arrays, n_write) = OPTIMIZERS["adam"]
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n, dtype=dtype)
    g = rng.standard_normal(n, dtype=dtype)
    opt = optimc.Adam([p], **hyper)
    opt.step([g])
    arrays = [np.full(n, 1.0, dtype) for _ in range(n_write)] + \
             [np.full(n, 0.0, dtype) for _ in range(n_arrays - n_write)]
    runners = {}
    for nt in (1, n_threads):
        runners[f"optimc/{nt}"] = _with_threads(nt, thr, _optimc_runner(opt, [g]))
        runners[f"roofline/{nt}"] = _with_threads(nt, thr, _stream_runner(arrays, n_write))
    if torch is not None:
        tp = torch.from_numpy(p.copy())
        tp.grad = torch.from_numpy(g)
        try:
            topt = torch.optim.Adam([tp], **hyper, fused=True)
            topt.step()
            base = _torch_runner(topt)
            for nt in (1, n_threads):
                def run(k, nt=nt):
                    torch.set_num_threads(nt)
                    base(k)
                runners[f"torch-fused/{nt}"] = run
        except (TypeError, RuntimeError) as exc:  # pragma: no cover - depends on torch build
            print(f"  torch fused Adam unavailable: {exc}")
    stats = measure(runners, prof["sample_time"], max(prof["case_time"], 1.0),
                    prof["min_rounds"] + 2, prof["max_rounds"])
    ns = {k: v["median"] / n * 1e9 for k, v in stats.items()}
    res = dict(optimizer="Adam", dtype="float32", n_elements=n, threads=n_threads,
               thread_threshold=thr, ns_per_element=ns, stats=stats,
               speedup=ns["optimc/1"] / ns[f"optimc/{n_threads}"],
               roofline_speedup=ns["roofline/1"] / ns[f"roofline/{n_threads}"],
               roofline_fraction={nt: ns[f"roofline/{nt}"] / ns[f"optimc/{nt}"] for nt in (1, n_threads)})
    if f"torch-fused/{n_threads}" in ns:
        res["x_torch_fused"] = {nt: ns[f"torch-fused/{nt}"] / ns[f"optimc/{nt}"] for nt in (1, n_threads)}
    return res


THRESHOLD_SIZES = (16384, 32768, 65536, 131072, 196608, 262144, 393216, 524288, 1048576,
                   2097152, 4194304)


def threads_threshold(key: str, dtype, n_threads: int, sizes, prof, seed: int,
                      default_thr: int = 12 << 20) -> dict:
    """At each size: 1 thread, n_threads forced (threshold 0), and n_threads with the
    default threshold, back to back; and 1 thread vs n_threads forced for steps that
    follow an idle millisecond. Suggests the smallest size from which the split wins
    at that size and every larger one (back to back, after idle, and both)."""
    import optimc
    label, cls_name, _, hyper, _ = OPTIMIZERS[key]
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        p = rng.standard_normal(n, dtype=dtype)
        g = rng.standard_normal(n, dtype=dtype)
        opt = getattr(optimc, cls_name)([p], **hyper)
        opt.step([g])
        base = _optimc_runner(opt, [g])
        runners = {"1": _with_threads(1, default_thr, base),
                   "forced": _with_threads(n_threads, 0, base),
                   "default": _with_threads(n_threads, default_thr, base),
                   "1 idle": _after_idle(1, default_thr, opt, [g]),
                   "forced idle": _after_idle(n_threads, 0, opt, [g])}
        stats = measure(runners, prof["sample_time"], prof["case_time"],
                        prof["min_rounds"] + 2, prof["max_rounds"])
        t1, tf, td, t1i, tfi = (stats[k]["median"]
                                for k in ("1", "forced", "default", "1 idle", "forced idle"))
        # what the engine compares with its threshold: param r/w, grad r, state r/w
        moved = 3 * p.nbytes + 2 * opt.state_bytes
        rows.append(dict(optimizer=label, dtype=np.dtype(dtype).name, n_elements=n, bytes_moved=moved,
                         ns_1=t1 / n * 1e9, ns_forced=tf / n * 1e9, ns_default=td / n * 1e9,
                         forced_over_1=tf / t1, default_over_1=td / t1,
                         ns_1_idle=t1i / n * 1e9, ns_forced_idle=tfi / n * 1e9,
                         forced_over_1_idle=tfi / t1i))

    def smallest_winning(field):
        # the smallest measured size from which the forced split is faster at every larger size
        for i, r in enumerate(rows):
            if all(rr[field] < 1.0 for rr in rows[i:]):
                return r["n_elements"]
        return None
    s_b2b, s_idle = smallest_winning("forced_over_1"), smallest_winning("forced_over_1_idle")
    suggested = None if s_b2b is None or s_idle is None else max(s_b2b, s_idle)
    below = [r["default_over_1"] for r in rows if r["bytes_moved"] < default_thr]
    above = [r["default_over_1"] for r in rows if r["bytes_moved"] >= default_thr]
    return dict(optimizer=label, dtype=np.dtype(dtype).name, threads=n_threads,
                default_threshold=default_thr, rows=rows, suggested_threshold=suggested,
                suggested_back_to_back=s_b2b, suggested_after_idle=s_idle, idle_gap_s=IDLE_GAP,
                worst_default_over_1_below=max(below) if below else None,
                worst_default_over_1_at_or_above=max(above) if above else None)


# ---------------------------------------------------------------------------
# Reporting

def _fmt_ns(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


SHORT = {"optimc": "optimc", "roofline": "roofline", "numpy": "numpy", "np-block": "np-block",
         "torch-loop": "t-loop", "torch-foreach": "t-foreach", "torch-fused": "t-fused"}


def format_table(results: List[dict]) -> str:
    head = (["optimizer", "dtype", "size"] + [SHORT[i] for i in IMPLS]
            + ["of roof", "x numpy", "x torch"])
    rows = []
    for r in results:
        ns = r["ns_per_element"]
        cells = [r["optimizer"], r["dtype"], r["size"]]
        for impl in IMPLS:
            c = _fmt_ns(ns.get(impl))
            chk = r["checks"].get(impl)
            if chk is not None and not chk[0]:
                c += "!"
            cells.append(c)
        cells.append(f"{r['roofline_fraction']:.2f}")
        cells.append(f"{r['x_numpy']:.1f}x")
        cells.append("-" if r["x_torch"] is None else f"{r['x_torch']:.1f}x")
        rows.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    left = 3
    lines = ["  ".join(h.ljust(w) if i < left else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for cells in rows:
        lines.append("  ".join(c.ljust(w) if i < left else c.rjust(w)
                               for i, (c, w) in enumerate(zip(cells, widths))))
    return "\n".join(lines)


def format_markdown(payload) -> str:
    """The run as Markdown tables (what docs/performance.md shows)."""
    results, lines = payload["results"], []
    if results:
        head = ["optimizer", "dtype", "size"] + [SHORT[i] for i in IMPLS] + ["of roof", "x numpy", "x torch"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
        for r in results:
            ns = r["ns_per_element"]
            cells = [r["optimizer"], r["dtype"], r["size"]]
            for impl in IMPLS:
                c = _fmt_ns(ns.get(impl))
                chk = r["checks"].get(impl)
                cells.append(c + ("!" if chk is not None and not chk[0] else ""))
            cells += [f"{r['roofline_fraction']:.2f}", f"{r['x_numpy']:.1f}x",
                      "-" if r["x_torch"] is None else f"{r['x_torch']:.1f}x"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if payload.get("fixed_cost"):
        lines += ["| optimizer | dtype | 1-element step (ns) | np.add (ns) | ratio |", "|---|---|---:|---:|---:|"]
        for f in payload["fixed_cost"]:
            lines.append(f"| {f['optimizer']} | {f['dtype']} | {f['step_ns']:.0f} | {f['np_add_ns']:.0f} | "
                         f"{f['ratio']:.2f} |")
        lines.append("")
    big = payload.get("threads_1e7")
    if big:
        nt = big["threads"]
        lines += [f"| Adam float32, {big['n_elements']:.0e} elements | 1 thread (ns/el) | {nt} threads (ns/el) "
                  f"| speedup |", "|---|---:|---:|---:|"]
        ns = big["ns_per_element"]
        for impl in ("optimc", "roofline", "torch-fused"):
            if f"{impl}/1" in ns:
                a, b = ns[f"{impl}/1"], ns[f"{impl}/{nt}"]
                lines.append(f"| {impl} | {_fmt_ns(a)} | {_fmt_ns(b)} | {a / b:.2f} |")
        lines.append("")
    for s in payload.get("threshold_sweeps") or []:
        nt, thr = s["threads"], s["default_threshold"]
        lines += [f"{s['optimizer']} {s['dtype']}: time with {nt} threads / time with 1 thread; "
                  f"suggested threshold {s['suggested_threshold']} (back to back "
                  f"{s['suggested_back_to_back']}, after idle {s['suggested_after_idle']})", "",
                  f"| elements | 1 thread (ns/el) | {nt} threads, threshold 0 | {nt} threads, threshold {thr} "
                  f"| after {s['idle_gap_s'] * 1e3:g} ms idle: 1 thread (ns/el) | after idle: {nt} threads, "
                  f"threshold 0 |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for r in s["rows"]:
            lines.append(f"| {r['n_elements']} | {_fmt_ns(r['ns_1'])} | {r['forced_over_1']:.2f} | "
                         f"{r['default_over_1']:.2f} | {_fmt_ns(r['ns_1_idle'])} | "
                         f"{r['forced_over_1_idle']:.2f} |")
        lines.append("")
    if payload.get("targets"):
        lines += ["| target | goal | measured | |", "|---|---|---:|---|"]
        for t in payload["targets"]:
            val = "-" if t["value"] is None else f"{t['value']:.2f}"
            mark = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
            detail = f" ({t['detail']})" if t["detail"] else ""
            lines.append(f"| {t['target']} | {t['goal']} | {val} | {mark}{detail} |")
        lines.append("")
    return "\n".join(lines)


def _find(results, label, dtype, size):
    for r in results:
        if r["optimizer"] == label and r["dtype"] == dtype and r["size"] == size:
            return r
    return None


def targets(results, fixed, big, sweeps) -> List[dict]:
    """The issue's targets, from this run: headline (Adam float32) and the worst case."""
    out = []

    def add(name, goal, value, met, detail=""):
        out.append(dict(target=name, goal=goal, value=value,
                        met=None if value is None else bool(met), detail=detail))

    def worst(size, field, dtype=None):
        rs = [r for r in results if r["size"] == size and r.get(field) is not None
              and (dtype is None or r["dtype"] == dtype)]
        if not rs:
            return ""
        w = min(rs, key=lambda r: r[field])
        return f"worst: {w['optimizer']} {w['dtype']} {w[field]:.2f}"

    for label in ("Adam", "SGD-momentum"):
        r = _find(results, label, "float32", "1e7")
        v = r["roofline_fraction"] if r else None
        add(f"{label} float32 1e7: fraction of roofline speed", ">= 0.90", v, v is not None and v >= 0.90,
            worst("1e7", "roofline_fraction"))
    for size, goal in (("1e7", 4.0), ("1e5", 5.0)):
        r = _find(results, "Adam", "float32", size)
        v = r["x_numpy"] if r else None
        add(f"Adam float32 {size}: x faster than best NumPy", f">= {goal:g}", v,
            v is not None and v >= goal, worst(size, "x_numpy"))
    for dtype in ("float32", "float64"):
        r = _find(results, "Adam", dtype, "1e7")
        v = None
        if r and "torch-fused" in r["ns_per_element"]:
            v = r["ns_per_element"]["torch-fused"] / r["ns_per_element"]["optimc"]
        add(f"Adam {dtype} 1e7: x faster than torch fused (same threads)", ">= 1.0", v,
            v is not None and v >= 1.0)
    for size, goal in (("1e3", 10.0), ("1000x1000", 5.0)):
        r = _find(results, "Adam", "float32", size)
        v = r["x_torch"] if r else None
        add(f"Adam float32 {size}: x faster than torch's fastest", f">= {goal:g}", v,
            v is not None and v >= goal, worst(size, "x_torch"))
    f = next((x for x in fixed if x["optimizer"] == "Adam" and x["dtype"] == "float32"), None)
    v = f["ratio"] if f else None
    wf = max(fixed, key=lambda x: x["ratio"]) if fixed else None
    add("fixed cost: 1-element Adam step / np.add", "<= 3", v, v is not None and v <= 3.0,
        f"worst: {wf['optimizer']} {wf['dtype']} {wf['ratio']:.2f}" if wf else "")
    v = big["speedup"] if big else None
    size = size_label(1, big["n_elements"]) if big else "1e7"
    add(f"Adam float32 {size}: {big['threads'] if big else 2} threads vs 1 (speedup)", "> 1.0", v,
        v is not None and v > 1.0)
    below = [s["worst_default_over_1_below"] for s in sweeps if s["worst_default_over_1_below"] is not None]
    v = max(below) if below else None
    add("below the threshold: default N threads / 1 thread (worst)", "<= 1.05", v,
        v is not None and v <= 1.05)
    return out


def format_targets(ts) -> str:
    lines = []
    for t in ts:
        mark = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        val = "-" if t["value"] is None else f"{t['value']:.2f}"
        extra = f"   ({t['detail']})" if t["detail"] else ""
        lines.append(f"  {t['target']:<62} {t['goal']:>8}  {val:>7}  {mark}{extra}")
    return "\n".join(lines)


def _cpu_times():
    """(busy, steal) CPU seconds of the whole machine from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle - steal) / hz, steal / hz


def _git_revision():
    """The source tree's commit (and whether it has local changes), if it is a checkout."""
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "csrc", "optimc",
                                "setup.py"], capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + (" (with local changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(torch) -> dict:
    import optimc
    info = dict(platform=platform.platform(), python=platform.python_version(),
                numpy=np.__version__, optimc=getattr(optimc, "__version__", "?"),
                torch=getattr(torch, "__version__", None) if torch is not None else None,
                cpu_count=os.cpu_count(), config=optimc.show_config(print_it=False),
                source=_git_revision(), extension=getattr(_core, "__file__", None))
    try:
        info["extension_built"] = time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                time.localtime(os.path.getmtime(_core.__file__)))
    except (OSError, TypeError):
        pass
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        info["cpu_model"] = platform.processor()
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    info["memory_gib"] = round(int(line.split()[1]) / 2 ** 20, 1)
                    break
    except OSError:
        pass
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    info["env"] = {k: os.environ[k] for k in ("OPTIMC_SIMD", "OPTIMC_NUM_THREADS", "OMP_NUM_THREADS",
                                              "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                   if k in os.environ}
    return info


def write_outputs(out_dir, payload, results, big, sweeps, plot, log=print):
    os.makedirs(out_dir, exist_ok=True)
    jpath = os.path.join(out_dir, "bench.json")
    with open(jpath, "w") as f:
        json.dump(payload, f, indent=1, default=float)
    cpath = os.path.join(out_dir, "bench.csv")
    with open(cpath, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["optimizer", "dtype", "size", "n_tensors", "n_elements", "threads"]
                   + [f"{i.replace('-', '_')}_ns_per_element" for i in IMPLS]
                   + ["roofline_fraction", "x_numpy", "best_numpy", "x_torch", "best_torch",
                      "numpy_check", "torch_check"])
        for r in results:
            ns = r["ns_per_element"]
            np_ok = all(v[0] for k, v in r["checks"].items() if not k.startswith("torch"))
            t_checks = [v[0] for k, v in r["checks"].items() if k.startswith("torch")]
            w.writerow([r["optimizer"], r["dtype"], r["size"], r["n_tensors"], r["n_elements"],
                        payload["settings"]["threads"]]
                       + ["" if ns.get(i) is None else f"{ns[i]:.5g}" for i in IMPLS]
                       + [f"{r['roofline_fraction']:.4f}", f"{r['x_numpy']:.3f}", r["best_numpy"],
                          "" if r["x_torch"] is None else f"{r['x_torch']:.3f}", r["best_torch"] or "",
                          "ok" if np_ok else "MISMATCH",
                          "" if not t_checks else ("ok" if all(t_checks) else "MISMATCH")])
    mpath = os.path.join(out_dir, "bench.md")
    with open(mpath, "w") as f:
        f.write(f"Command: `{payload['command']}` ({payload['timestamp']})\n\n" + format_markdown(payload))
    paths = [jpath, cpath, mpath]
    if big or sweeps:
        tpath = os.path.join(out_dir, "bench_threads.csv")
        with open(tpath, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["section", "optimizer", "dtype", "n_elements", "config", "ns_per_element",
                        "ratio_to_1_thread"])
            if big:
                n1 = big["ns_per_element"]
                for k, v in n1.items():
                    impl, nt = k.split("/")
                    w.writerow(["1e7", "Adam" if impl == "optimc" else impl, "float32", big["n_elements"],
                                f"{nt} threads", f"{v:.5g}", f"{v / n1[impl + '/1']:.4f}"])
            for s in sweeps:
                for r in s["rows"]:
                    for cfg, col, base in (
                            ("1 thread", "ns_1", "ns_1"),
                            (f"{s['threads']} threads, threshold 0", "ns_forced", "ns_1"),
                            (f"{s['threads']} threads, threshold {s['default_threshold']}", "ns_default",
                             "ns_1"),
                            ("1 thread, after idle", "ns_1_idle", "ns_1_idle"),
                            (f"{s['threads']} threads, threshold 0, after idle", "ns_forced_idle",
                             "ns_1_idle")):
                        w.writerow(["threshold", r["optimizer"], r["dtype"], r["n_elements"], cfg,
                                    f"{r[col]:.5g}", f"{r[col] / r[base]:.4f}"])
        paths.append(tpath)
    if plot and results:
        p = save_plot(results, os.path.join(out_dir, "bench.png"), payload, log)
        if p:
            paths.append(p)
    return paths


def save_plot(results, path, payload, log=print):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log('--plot: matplotlib is not installed (pip install "optimc[bench]"); no plot saved')
        return None
    labels = list(dict.fromkeys(r["optimizer"] for r in results))
    dtypes = list(dict.fromkeys(r["dtype"] for r in results))
    sizes = list(dict.fromkeys(r["size"] for r in results))
    fig, axes = plt.subplots(len(dtypes), len(labels), figsize=(3.3 * len(labels), 3.2 * len(dtypes)),
                             squeeze=False, sharex=True)
    styles = {"optimc": ("C3", "o", "-"), "roofline": ("k", "", ":"), "numpy": ("C0", "s", "-"),
              "np-block": ("C0", "s", "--"), "torch-loop": ("C2", "^", "-"),
              "torch-foreach": ("C2", "v", "--"), "torch-fused": ("C1", "D", "-")}
    for i, dt in enumerate(dtypes):
        for j, lab in enumerate(labels):
            ax = axes[i][j]
            for impl in IMPLS:
                xs, ys = [], []
                for k, sz in enumerate(sizes):
                    r = _find(results, lab, dt, sz)
                    if r and impl in r["ns_per_element"]:
                        xs.append(k)
                        ys.append(r["ns_per_element"][impl])
                if xs:
                    c, m, ls = styles[impl]
                    ax.plot(xs, ys, color=c, marker=m or None, ls=ls, lw=1.5, ms=4, label=impl)
            ax.set_yscale("log")
            ax.set_xticks(range(len(sizes)))
            ax.set_xticklabels(sizes, fontsize=8, rotation=30)
            ax.set_title(f"{lab} {dt}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if j == 0:
                ax.set_ylabel("ns per element")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), frameon=False, fontsize=9)
    cfg = payload["machine"]["config"]
    fig.suptitle(f"optimc step time per element (lower is better); {payload['machine'].get('cpu_model', '')}, "
                 f"simd={cfg['simd']}, threads={payload['settings']['threads']}", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# Command line

def _list_arg(valid, what, aliases=None):
    aliases = aliases or {}

    def parse(text):
        names = [t.strip().lower() for t in text.split(",") if t.strip()]
        if names == ["all"]:
            return list(valid)
        out = []
        for nm in names:
            nm = aliases.get(nm, nm)
            if nm not in valid:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {nm!r}; choose from {', '.join(valid)} (or 'all')")
            if nm not in out:
                out.append(nm)
        if not out:
            raise argparse.ArgumentTypeError(f"no {what} given")
        return out
    return parse


def _sizes_arg(text):
    out = [parse_size(t) for t in text.split(",") if t.strip()]
    if not out:
        raise argparse.ArgumentTypeError("no sizes given")
    return out


def _pos_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


SECTIONS = ("main", "fixed", "threads")


def build_parser():
    p = argparse.ArgumentParser(
        prog=("optimc" if os.path.basename(sys.argv[0]) == "optimc" else "python -m optimc") + " bench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="optimc's speed benchmark: optimc's step against a NumPy implementation,\n"
                    "torch.optim (loop, foreach, fused) and the memory roofline (optimc's stream\n"
                    "kernel over the same bytes), all in one run. Reports medians in ns per element\n"
                    "and ratios; writes JSON and CSV (see benchmarks/README.md).",
        epilog="examples:\n"
               "  python -m optimc bench                      # the full run (a few minutes)\n"
               "  python -m optimc bench --quick              # about 30 seconds\n"
               "  python -m optimc bench --optimizers adam,sgd --dtypes float32 --sizes 1e6,1e7\n"
               "  python -m optimc bench --threads 2 --sections main --plot\n")
    p.add_argument("--quick", action="store_true",
                   help="a ~30 s run: float32 only (unless --dtypes), few repeats, short threads section")
    p.add_argument("--optimizers", type=_list_arg(tuple(OPTIMIZERS), "optimizer", ALIASES),
                   default=list(OPTIMIZERS),
                   help="comma-separated: adam, adamw, sgd (with momentum 0.9), rmsprop, adagrad, "
                        "adadelta, or all (default: all)")
    p.add_argument("--dtypes", type=_list_arg(tuple(DTYPES), "dtype"), default=None,
                   help="float32, float64 or both (default: both; float32 with --quick)")
    p.add_argument("--sizes", type=_sizes_arg, default=None,
                   help=f"comma-separated element counts of one tensor (1e6) or TENSORSxELEMENTS "
                        f"(1000x1000) (default: {DEFAULT_SIZES})")
    p.add_argument("--threads", type=_pos_int, default=1,
                   help="threads for the main table, optimc and torch alike (default: 1)")
    p.add_argument("--compare-threads", type=_pos_int, default=2, metavar="N",
                   help="the threads section compares 1 thread with N (default: 2)")
    p.add_argument("--sections", type=_list_arg(SECTIONS, "section"), default=list(SECTIONS),
                   help="which parts to run: main (the table), fixed (per-call cost), threads "
                        "(default: all)")
    p.add_argument("--simd", choices=("baseline", "avx2", "avx512"), default=None,
                   help="optimc's SIMD level (default: the best the CPU has, or OPTIMC_SIMD)")
    p.add_argument("--threads-size", type=lambda t: parse_size(t)[1], default=None, metavar="N",
                   help="elements of the Adam float32 step the threads section times with 1 and "
                        "N threads (default 1e7, 1e6 with --quick)")
    p.add_argument("--sweep-sizes", type=_sizes_arg, default=None, metavar="LIST",
                   help="element counts of the thread-threshold sweep (default: 16384 ... 4194304 "
                        "around the default threshold)")
    p.add_argument("--no-torch", action="store_true", help="leave torch.optim out even if installed")
    p.add_argument("--out", default="bench-results", metavar="DIR",
                   help="directory for bench.json, bench.csv, bench_threads.csv (default: bench-results/)")
    p.add_argument("--plot", action="store_true", help="also save DIR/bench.png (needs matplotlib)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random params and grads")
    p.add_argument("--sample-time", type=float, default=None, metavar="S",
                   help="seconds per timed sample (default 0.01, 0.002 with --quick)")
    p.add_argument("--case-time", type=float, default=None, metavar="S",
                   help="seconds of timing per case, split over its implementations "
                        "(default 1.2, 0.12 with --quick)")
    p.add_argument("--min-rounds", type=_pos_int, default=None, metavar="R",
                   help="at least R timed samples per implementation (default 7, 3 with --quick)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    import optimc

    prof = dict(PROFILES["quick" if args.quick else "default"])
    if args.sample_time is not None:
        prof["sample_time"] = args.sample_time
    if args.case_time is not None:
        prof["case_time"] = args.case_time
    if args.min_rounds is not None:
        prof["min_rounds"] = args.min_rounds
        prof["max_rounds"] = max(prof["max_rounds"], args.min_rounds)
    dtypes = args.dtypes or (["float32"] if args.quick else list(DTYPES))
    sizes = args.sizes or _sizes_arg(DEFAULT_SIZES)

    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: F811
        except ImportError:
            print("torch is not installed: torch.optim columns are skipped")
            torch = None

    saved = optimc.show_config(print_it=False)
    cpu0, own0 = _cpu_times(), os.times()
    saved_torch_threads = torch.get_num_threads() if torch is not None else None
    t_start = time.perf_counter()
    try:
        if args.simd:
            optimc.set_simd(args.simd)
        optimc.set_num_threads(args.threads)
        if torch is not None:
            torch.set_num_threads(args.threads)
        machine = machine_info(torch)
        machine["config_before_run"] = saved
        cfg = machine["config"]
        print(f"optimc bench: {machine.get('cpu_model', '?')}, {machine.get('cpus_usable', machine['cpu_count'])} "
              f"CPUs, {machine.get('memory_gib', '?')} GiB; simd={cfg['simd']} (cpu {cfg['cpu_simd']}), "
              f"threads={args.threads}, thread_threshold={cfg['thread_threshold']} bytes")
        print(f"numpy {np.__version__}, torch {machine['torch'] or 'absent'}, python {machine['python']}")
        load = machine.get("loadavg_start")
        if load and load[0] > 0.5:
            print(f"note: load average {load[0]:.2f} at start: other processes compete for the CPU "
                  f"and memory bandwidth; timings will be noisy")
        print()

        results = []
        mismatches = []
        if "main" in args.sections:
            print(f"main table: ns per element (median), {args.threads} thread(s); "
                  "'of roof' = roofline time / optimc time; 'x numpy' = best NumPy / optimc; "
                  "'x torch' = fastest torch.optim / optimc; '!' = result differs from optimc")
            for key in args.optimizers:
                for dt in dtypes:
                    for n_tensors, n in sizes:
                        r = run_case(key, DTYPES[dt], n_tensors, n, prof, torch, args.seed)
                        results.append(r)
                        for impl, (ok, worst) in r["checks"].items():
                            if not ok:
                                mismatches.append(f"{r['optimizer']} {r['dtype']} {r['size']} {impl}: "
                                                  f"max |diff|/tol = {worst:.3g}")
                        ns = r["ns_per_element"]
                        print(f"  {r['optimizer']:<12} {r['dtype']:<7} {r['size']:>9}: optimc "
                              f"{_fmt_ns(ns['optimc'])}, roofline {_fmt_ns(ns['roofline'])}, "
                              f"numpy {_fmt_ns(ns[r['best_numpy']])}"
                              + (f", torch {_fmt_ns(ns[r['best_torch']])}" if r["best_torch"] else "")
                              + f"  [{time.perf_counter() - t_start:.0f} s]", flush=True)
            print()
            print(format_table(results))
            print()
            if mismatches:
                print("RESULT MISMATCHES (the implementation differs from optimc after the check steps):")
                for m in mismatches:
                    print("  " + m)
                print()

        fixed = []
        if "fixed" in args.sections:
            fixed = fixed_cost(args.optimizers, [DTYPES[d] for d in dtypes], prof)
            print("fixed cost: one step on a 1-element param vs np.add(a, b, out=a) on 1-element arrays")
            for f in fixed:
                print(f"  {f['optimizer']:<12} {f['dtype']:<7}: step {f['step_ns']:7.0f} ns, "
                      f"np.add {f['np_add_ns']:5.0f} ns, ratio {f['ratio']:.2f}")
            print()

        big, sweeps = None, []
        if "threads" in args.sections:
            nt = args.compare_threads
            big_n = args.threads_size or (10 ** 6 if args.quick else 10 ** 7)
            big = threads_big(nt, prof, torch, args.seed, n=big_n, thr=saved["thread_threshold"])
            ns = big["ns_per_element"]
            print(f"threads: Adam float32, {big['n_elements']:.0e} elements, 1 vs {nt} threads "
                  f"(threshold {big['thread_threshold']})")
            line = (f"  optimc {_fmt_ns(ns['optimc/1'])} -> {_fmt_ns(ns[f'optimc/{nt}'])} ns/el "
                    f"(speedup {big['speedup']:.2f}); roofline {_fmt_ns(ns['roofline/1'])} -> "
                    f"{_fmt_ns(ns[f'roofline/{nt}'])} (speedup {big['roofline_speedup']:.2f})")
            if "x_torch_fused" in big:
                line += (f"; torch fused {_fmt_ns(ns['torch-fused/1'])} -> "
                         f"{_fmt_ns(ns[f'torch-fused/{nt}'])}")
            print(line)
            if args.sweep_sizes:
                sweep_sizes = [n for _, n in args.sweep_sizes]
            else:
                sweep_sizes = THRESHOLD_SIZES[::2] if args.quick else THRESHOLD_SIZES
            # the cheapest-per-byte step (SGD) and Adam, in the dtypes asked for
            sweep_keys = [k for k in ("adam", "sgd") if k in args.optimizers] or ["adam"]
            sweep_cases = [(k, DTYPES[d]) for d in dtypes for k in sweep_keys]
            if args.quick:
                sweep_cases = sweep_cases[:1]
            for key, dt in sweep_cases:
                s = threads_threshold(key, dt, nt, sweep_sizes, prof, args.seed,
                                      default_thr=saved["thread_threshold"])
                sweeps.append(s)
                print(f"  threshold sweep {s['optimizer']} {s['dtype']}: time with {nt} threads / "
                      f"time with 1 thread; forced = threshold 0, default = threshold "
                      f"{s['default_threshold']}; after idle = each step follows "
                      f"{s['idle_gap_s'] * 1e3:g} ms of sleep")
                print(f"    {'elements':>9} {'1 thread':>9} {'forced':>7} {'default':>8} "
                      f"{'1 thr idle':>10} {'forced idle':>11}")
                for r in s["rows"]:
                    print(f"    {r['n_elements']:>9} {_fmt_ns(r['ns_1']):>9} {r['forced_over_1']:>7.2f} "
                          f"{r['default_over_1']:>8.2f} {_fmt_ns(r['ns_1_idle']):>10} "
                          f"{r['forced_over_1_idle']:>11.2f}")
                print(f"    suggested threshold: {s['suggested_threshold']} elements (back to back: "
                      f"{s['suggested_back_to_back']}, after idle: {s['suggested_after_idle']}; "
                      f"default {s['default_threshold']})")
            print()

        ts = targets(results, fixed, big, sweeps) if "main" in args.sections else []
        if ts:
            print("targets (this run):")
            print(format_targets(ts))
            print()
        try:
            machine["loadavg_end"] = os.getloadavg()
        except OSError:  # pragma: no cover
            pass
        cpu1, own1 = _cpu_times(), os.times()
        if cpu0 and cpu1:
            own = (own1.user - own0.user) + (own1.system - own0.system)
            wall = time.perf_counter() - t_start
            others = max(0.0, (cpu1[0] - cpu0[0]) - own)
            machine["others_cpu_seconds"] = others
            machine["steal_cpu_seconds"] = cpu1[1] - cpu0[1]
            print(f"other processes used {others:.1f} CPU-seconds during this {wall:.0f} s run "
                  f"(steal {cpu1[1] - cpu0[1]:.1f} s)"
                  + ("; the timings may be disturbed: re-run on a quiet machine" if others > 0.05 * wall
                     else ""))
        payload = dict(
            command="python -m optimc bench " + " ".join(sys.argv[1:] if argv is None else argv),
            timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"), seconds=time.perf_counter() - t_start,
            machine=machine,
            settings=dict(threads=args.threads, compare_threads=args.compare_threads,
                          dtypes=dtypes, optimizers=args.optimizers,
                          sizes=[size_label(a, b) for a, b in sizes], profile=prof,
                          numpy_block=NUMPY_BLOCK, quick=args.quick, seed=args.seed,
                          sections=args.sections),
            results=results, fixed_cost=fixed, threads_1e7=big, threshold_sweeps=sweeps,
            targets=ts, mismatches=mismatches)
        paths = write_outputs(args.out, payload, results, big, sweeps, args.plot)
        print("wrote " + ", ".join(paths) + f"  ({time.perf_counter() - t_start:.0f} s in all)")
        return 1 if mismatches else 0
    finally:
        optimc.set_num_threads(saved["num_threads"])
        _core.set_thread_threshold(saved["thread_threshold"])
        optimc.set_simd(saved["simd"])
        if torch is not None and saved_torch_threads:
            torch.set_num_threads(saved_torch_threads)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
