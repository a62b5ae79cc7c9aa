"""How the benchmark times: runners (``run(k)`` makes k calls) sampled round-robin.

Each runner is warmed up, then the number of calls per sample is chosen so that a
sample lasts about ``sample_time``. Samples are taken in rounds; in every round each
runner takes one sample, in an order that rotates from round to round, so slow drift
of the machine spreads evenly over them. The result is the median over samples, with
the quartiles.
"""

from __future__ import annotations

import gc
import math
import time
from typing import Callable, Dict, Optional

import numpy as np

from .. import _core

__all__ = ["PROFILES", "measure", "calls", "with_threads", "after_idle", "IDLE_GAP"]

#: timing profiles: seconds per sample, seconds per case, rounds (min, max), check steps
PROFILES = {
    "default": dict(sample_time=0.01, case_time=1.2, min_rounds=7, max_rounds=41, check_steps=3),
    "quick": dict(sample_time=0.002, case_time=0.12, min_rounds=3, max_rounds=9, check_steps=2),
}

Runner = Callable[[int], Optional[float]]


def calls(fn, *args) -> Runner:
    """A runner that calls ``fn(*args)`` k times."""
    def run(k):
        for _ in range(k):
            fn(*args)
    return run


def _autorange(run: Runner, target: float) -> int:
    """Calls per sample so that one sample lasts about ``target`` seconds."""
    k = 1
    while True:
        t0 = time.perf_counter()
        run(k)
        dt = time.perf_counter() - t0
        if dt >= 0.2 * target or k >= 1 << 22:
            return max(1, int(math.ceil(k * target / max(dt, 1e-9))))
        k *= 4 if dt < 0.02 * target else 2


def measure(runners: Dict[str, Runner], sample_time: float, case_time: float,
            min_rounds: int, max_rounds: int) -> Dict[str, dict]:
    """Median seconds per call of each runner, sampled round-robin. ``runner(k)``
    makes k calls; if it returns a number, that is the time to count (a runner
    that idles between calls times the calls itself), else the wall time is."""
    names = list(runners)
    per_sample = {}
    for name in names:
        runners[name](1)                       # warm-up
        per_sample[name] = _autorange(runners[name], sample_time)
    per_round = 0.0
    for name in names:                         # one round whose only use is sizing the run
        t0 = time.perf_counter()
        runners[name](per_sample[name])
        per_round += time.perf_counter() - t0
    rounds = int(min(max_rounds, max(min_rounds, case_time / max(per_round, 1e-9))))
    samples = {name: [] for name in names}
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for j in range(len(names)):
                name = names[(r + j) % len(names)]
                k = per_sample[name]
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
                         rounds=rounds, calls=per_sample[name])
    return out


def with_threads(n_threads: int, threshold: int, run: Runner) -> Runner:
    """``run`` with optimc's pool at ``n_threads`` and thread threshold ``threshold``
    (set before every sample: runners of one measurement use different settings)."""
    import optimc

    def run_set(k):
        optimc.set_num_threads(n_threads)
        _core.set_thread_threshold(threshold)
        run(k)
    return run_set


IDLE_GAP = 1e-3   # seconds the process sleeps before each "after idle" step


def after_idle(n_threads: int, threshold: int, opt, grads, gap: float = IDLE_GAP) -> Runner:
    """Steps that each follow ``gap`` seconds of sleep (as after a forward/backward
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
