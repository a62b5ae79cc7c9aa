"""fork() and the thread pool. Each case runs in a fresh interpreter (the pool's
state at fork time depends on what ran before) and forks many children, so a
race that shows in a fraction of forks fails the test every time."""
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")

# Shared by every case: threads forced on for any size, a single-thread
# reference, and a child waiter that kills a hung child instead of hanging.
PRELUDE = r'''
import os, sys, time, warnings
import numpy as np
import optimc
from optimc import _core
warnings.simplefilter("ignore", DeprecationWarning)   # Python 3.12+: fork with threads

N = 200_000          # elements per param: every worker gets a real share

def train(params, steps=3):
    opt = optimc.Adam(params, lr=1e-2, weight_decay=0.01)
    for s in range(steps):
        opt.step([np.cos(np.arange(p.size, dtype=p.dtype) * (0.1 + s)) for p in params])
    return params

def fresh():
    return [np.linspace(-1, 1, N, dtype=np.float32), np.linspace(2, -2, N + 37, dtype=np.float64)]

def matches(params, ref):
    return all(np.array_equal(p, r) for p, r in zip(params, ref))

optimc.set_num_threads(1)
REF = train(fresh())
_core.set_thread_threshold(0)
optimc.set_num_threads(2)

def wait_child(pid, timeout=30.0):
    """exit status of child pid, or 'hung' (and the child is killed); callers
    stop at the first hang, so a hanging case fails in one timeout"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.002)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "hung"

def report(outcomes):
    bad = {o: outcomes.count(o) for o in set(outcomes) if o != 0}
    print(f"{len(outcomes)} children, failures: {bad}")
    sys.exit(1 if bad else 0)
'''


def run_case(body, timeout=600):
    script = PRELUDE + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout,
                         cwd=os.path.dirname(os.path.abspath(__file__)))   # not a clone's root (see _snapshot)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}"


def test_children_forked_after_a_threaded_step_step_correctly():
    # The parent's pool has run tasks (its generation is past 0) and its
    # workers are alive at fork time; each child starts a pool of its own.
    run_case('''
    outcomes = []
    for i in range(100):
        train(fresh(), steps=1)                     # the parent steps with threads between forks
        pid = os.fork()
        if pid == 0:
            try:
                ok = matches(train(fresh()), REF)
            except BaseException:
                os._exit(4)
            os._exit(0 if ok else 3)
        outcomes.append(wait_child(pid))
        if outcomes[-1] == "hung":
            break
    report(outcomes)
    ''')


def test_multiprocessing_fork_workers_step_correctly():
    run_case('''
    import multiprocessing as mp

    def work():
        sys.exit(0 if matches(train(fresh()), REF) else 3)

    train(fresh())
    ctx = mp.get_context("fork")
    outcomes = []
    for batch in range(15):                     # 60 forked workers, 4 at a time
        procs = [ctx.Process(target=work) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
                outcomes.append("hung")
            else:
                outcomes.append(p.exitcode)
        if "hung" in outcomes:
            break
    report(outcomes)
    ''')


def test_growing_the_pool_between_steps():
    # Every set_num_threads(n) with a new largest n starts new workers while
    # the older ones are idle after a finished task.
    run_case('''
    optimc.set_num_threads(1)
    REF1 = train(fresh(), steps=1)
    bad = []
    for n in range(2, 41):
        optimc.set_num_threads(n)
        if not matches(train(fresh(), steps=1), REF1):
            bad.append(n)
    print("wrong results with", bad, "threads")
    sys.exit(1 if bad else 0)
    ''')


def test_fork_while_another_thread_is_inside_a_step():
    # SGD with lr=1 on ones from zeros: after k whole steps every element is
    # exactly -k, so a half-done step shows as unequal elements.
    run_case('''
    import threading
    p = np.zeros(8_000_000, np.float32)
    g = np.ones_like(p)
    opt = optimc.SGD([p], lr=1.0)
    stop = threading.Event()

    def stepper():
        while not stop.is_set():
            opt.step([g])

    t = threading.Thread(target=stepper)
    t.start()
    outcomes = []
    try:
        for i in range(40):
            time.sleep(0.003 * (i % 7))              # land at different points of a step
            pid = os.fork()
            if pid == 0:
                try:
                    before = p[0]
                    whole = p.min() == p.max()
                    opt.step([g])
                    ok = whole and p.min() == p.max() == before - 1
                except BaseException:
                    os._exit(4)
                os._exit(0 if ok else 3)
            outcomes.append(wait_child(pid, timeout=20))
            if outcomes[-1] == "hung":
                break
    finally:
        stop.set()
        t.join()
    report(outcomes)
    ''')
