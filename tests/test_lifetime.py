"""What lives how long (issue 9, items 1, 4 and 13).

* Item 1: a step holds every grad it reads until its kernels return, and runs
  user code (a callable lr) before it takes the pointers it will use. Code that
  can crash the interpreter runs in a subprocess, so a crash fails the test.
* Item 4: a param resized after it was handed over (``p.resize(...,
  refcheck=False)``): state views, ``state_dict()``, ``step()`` and pickling use
  the engine's own sizes and never read past the C buffers.
* Item 13: an optimizer without outside references is freed by reference
  counting alone (no cycles through ``opt.state``, the param groups, views,
  schedulers), watched through a ``weakref`` with the cyclic GC disabled.
"""
import copy
import gc
import pickle
import sys
import weakref

import numpy as np
import pytest

import optimc
from _snapshot import (assert_clean_exit, assert_unchanged, buffer_names, build, full_options,
                       params_of, random_grads, run_python, snapshot)

ALL = list(optimc.ALL)
IDS = [c.__name__ for c in ALL]


# ---- item 1: user code and other threads cannot free what a step reads -------

# One script per case; it loops over every optimizer class. The freed block is
# taken over by an array of 7.0 ("squatter"), so a step that still reads through
# a stale pointer computes a wrong result even when it does not crash.
_LR_SCRIPT = r"""
import numpy as np, optimc
N = 300_000
CONTAINER, MUTATION = {container!r}, {mutation!r}
squatters = []

def wrap(a):
    return {{"w": a}} if CONTAINER == "dict" else [a]

def mutate(grads):
    key = "w" if CONTAINER == "dict" else 0
    if MUTATION == "clear":
        grads.clear()
    elif MUTATION == "replace":
        grads[key] = np.full(N, 3.0, np.float32)
    elif MUTATION == "delete":
        del grads[key]
    squatters.append(np.full(N, 7.0, np.float32))

for cls in optimc.ALL:
    p = np.zeros(N, np.float32)
    grads = wrap(np.full(N, 0.5, np.float32))   # the list/dict holds the only reference

    def lr(step, grads=grads):
        mutate(grads)
        return 0.5

    opt = cls(wrap(p), lr=lr, **{full!r}.get(cls.__name__, {{}}))
    try:
        opt.step(grads)
    except (TypeError, ValueError) as e:
        assert not p.any(), cls.__name__ + ": refused, but the param was written"
        assert opt.step_count == 0 and all(opt.state[k]["step"] == 0 for k in opt.state)
        print(cls.__name__, "refused:", e, flush=True)
    else:
        # accepted: the result of the grads it was given (0.5), or of those the
        # list/dict held once the callable had run (3.0 after "replace")
        matches = []
        for value in (0.5, 3.0) if MUTATION == "replace" else (0.5,):
            q = np.zeros(N, np.float32)
            ref = cls(wrap(q), lr=0.5, **{full!r}.get(cls.__name__, {{}}))
            ref.step(wrap(np.full(N, value, np.float32)))
            matches.append(np.array_equal(p, q))
            del ref, q
        assert any(matches), \
            cls.__name__ + ": accepted, but the result is from neither the given grads nor the new ones"
        print(cls.__name__, "accepted", flush=True)
    del opt, grads, lr
    squatters.clear()
print("done")
"""

_FULL = {c.__name__: full_options(c) for c in ALL}


@pytest.mark.parametrize("container,mutation", [
    ("list", "clear"), ("list", "replace"), ("list", "delete"),
    ("dict", "clear"), ("dict", "replace"),
])
def test_lr_callable_that_changes_the_grads(container, mutation):
    """Item 1: a callable lr that empties or replaces the grads list/dict of the
    very step that calls it: the step completes correctly or is refused with
    nothing written — never a use-after-free."""
    proc = run_python(_LR_SCRIPT.format(container=container, mutation=mutation, full=_FULL))
    assert_clean_exit(proc)


_PARAM_CHANGED_BY_LR = r"""
import numpy as np, optimc
N = 1_000_000
for how in ("resize", "read-only"):
    for cls in optimc.ALL:
        p = np.zeros(N, np.float32)
        def lr(step):
            if how == "resize":
                p.resize(2 * N, refcheck=False)   # frees the buffer the optimizer was given
            else:
                p.flags.writeable = False
            return 0.5
        opt = cls([p], lr=lr)
        try:
            opt.step([np.ones(N, np.float32)])
        except (TypeError, ValueError) as e:
            assert "params[0]" in str(e), (cls.__name__, how, str(e))
            assert not p.any(), cls.__name__ + ": refused, but the param was written"
            assert opt.step_count == 0
        else:
            raise AssertionError(cls.__name__ + ": a step went ahead on a param its lr callable "
                                 + ("resized" if how == "resize" else "made read-only"))
        del opt, lr, p
print("done")
"""


def test_lr_callable_that_changes_the_param_is_refused():
    """Item 1, the other side: user code runs before the step checks what it
    will write, so a param resized or made read-only by the lr callable is
    refused (today the kernel writes through the freed pointer)."""
    proc = run_python(_PARAM_CHANGED_BY_LR)
    assert_clean_exit(proc)


_THREAD_CLEARS_GRADS = r"""
import threading
import numpy as np, optimc
optimc.set_num_threads(2)
N = 4_000_000                     # 48 MB moved per step: above the thread threshold
ROUNDS = 8
for container in ("list", "dict"):
    p = np.zeros(N, np.float32)
    opt = optimc.SGD({"w": p} if container == "dict" else [p], lr=0.5)
    expected, squatters, refused = 0.0, [], 0
    for r in range(ROUNDS):
        g = np.full(N, 0.5, np.float32)
        grads = {"w": g} if container == "dict" else [g]
        del g                      # the list/dict holds the only reference
        go = threading.Event()

        def clear():
            go.wait()
            grads.clear()          # runs while the step has released the GIL
            squatters.append(np.full(N, 7.0, np.float32))

        t = threading.Thread(target=clear)
        t.start()
        go.set()
        try:
            opt.step(grads)
        except (TypeError, ValueError):
            refused += 1           # the thread was first: nothing may be written
        else:
            expected -= 0.25
        t.join()
        assert np.all(p == np.float32(expected)), (container, r, float(p.min()), float(p.max()), expected)
        squatters.clear()
    print(container, "refused", refused, "of", ROUNDS, flush=True)
print("done")
"""


def test_other_thread_clearing_the_grads_during_a_large_step():
    """Item 1: another thread empties the grads list/dict while a threaded step
    runs without the GIL (8 rounds each): the step keeps its own references."""
    proc = run_python(_THREAD_CLEARS_GRADS)
    assert_clean_exit(proc)


_THREAD_CLEARS_TOOLKIT_GRADS = r"""
import threading
import numpy as np, optimc
optimc.set_num_threads(2)
N = 9_000_000                     # 36 MB per array: above glibc's largest mmap threshold, so a
ROUNDS = 4                        # freed array goes back to the OS and a read of it faults
calls = {
    "clip_grad_value": lambda grads: optimc.clip_grad_value(grads, 0.5),
    "clip_grad_norm": lambda grads: optimc.clip_grad_norm(grads, 1.0),
    "grad_norm": lambda grads: optimc.grad_norm(grads),
}
for container in ("list", "dict"):
    for name, call in calls.items():
        for r in range(ROUNDS):
            arrays = [np.full(N, 2.0, np.float32) for _ in range(2)]
            grads = {f"g{i}": a for i, a in enumerate(arrays)} if container == "dict" else arrays
            del arrays                 # the list/dict holds the only references
            go, squatters = threading.Event(), []

            def clear():
                go.wait()
                grads.clear()          # runs while the call has released the GIL
                squatters.append(np.full(2 * N, 7.0, np.float32))

            t = threading.Thread(target=clear)
            t.start()
            go.set()
            try:
                call(grads)
            except ValueError as e:    # emptied before (or between) its calls into C
                assert "no arrays given" in str(e), e
            t.join()
            assert np.all(squatters[0] == np.float32(7.0)), (container, name, r)
print("done")
"""


def test_other_thread_clearing_the_grads_of_clipping_and_norms():
    """The toolkit's C functions (clip_grad_norm, clip_grad_value, grad_norm,
    and the EMA/SWA/Lookahead/Schedule-Free averages, which share their array
    collection) read the arrays without the GIL: they hold their own references
    (a tuple) until the kernel returns, so another thread emptying the caller's
    list or dict frees nothing in use (it crashed: the kernel wrote freed memory)."""
    proc = run_python(_THREAD_CLEARS_TOOLKIT_GRADS, timeout=300)
    assert_clean_exit(proc)


# ---- item 4: a param resized after it was handed over ------------------------

@pytest.mark.parametrize("new_shape", [(4000,), (40, 100), (10,)], ids=["grown", "grown-2d", "shrunk"])
@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_resized_param_never_changes_the_state_layout(cls, new_shape):
    """Item 4: state views and state_dict() keep the engine's own shape; step()
    is refused with nothing written; pickling never builds state from the
    param's new size. (Every read of state follows the shape check, so while the
    bug is in, the test fails before it reads past the buffer.)"""
    p = np.linspace(-1, 1, 1000).reshape(20, 50).copy()   # owns its data: resizable
    q = np.linspace(0, 1, 7)
    opt = cls([p, q], lr=0.01, **full_options(cls))
    opt.step([np.ones_like(p), np.ones_like(q)])
    names = buffer_names(opt, 0)
    saved = {k: opt.state[0][k].copy() for k in names}
    p.resize(new_shape, refcheck=False)

    for k in names:
        shape = opt.state[0][k].shape     # only the shape: a wrong view must not be read (or printed)
        assert shape == saved[k].shape, f"opt.state[0][{k!r}] follows the resized param: {shape}"
        assert np.array_equal(opt.state[0][k], saved[k])
    sd = opt.state_dict()
    for k in names:
        shape = sd["state"][0][k].shape
        assert shape == saved[k].shape, f"state_dict()['state'][0][{k!r}]: {shape}"
        assert np.array_equal(sd["state"][0][k], saved[k])

    before = snapshot(opt)
    for g in (np.ones(new_shape), np.ones((20, 50))):
        with pytest.raises(ValueError, match=r"params\[0\]"):
            opt.step([g, np.ones_like(q)])
        assert_unchanged(before, snapshot(opt))

    # a checkpoint sized for the new shape must not be copied into the old buffers
    bad = opt.state_dict()
    for k in names:
        bad["state"][0][k] = np.zeros(new_shape)
    with pytest.raises((ValueError, TypeError)):
        opt.load_state_dict(bad)
    assert_unchanged(before, snapshot(opt))

    try:
        blob = pickle.dumps(opt)
        clone = pickle.loads(blob)
    except (ValueError, TypeError):
        return                     # refusing to pickle/resume a resized param is fine
    for i, cp in enumerate(params_of(clone)):
        for k in buffer_names(clone, i):
            assert clone.state[i][k].shape == cp.shape


_RESIZED_READS = r"""
import pickle
import numpy as np, optimc
FULL = {full!r}
for cls in optimc.ALL:
    p = np.zeros(1000)
    opt = cls([p], lr=0.01, **FULL.get(cls.__name__, {{}}))
    opt.step([np.ones(1000)])
    p.resize(4000, refcheck=False)
    copies = [np.array(v) for v in opt.state[0].values() if isinstance(v, np.ndarray)]
    sd = opt.state_dict()
    try:
        pickle.dumps(opt)
    except (TypeError, ValueError):
        pass
    shapes = [c.shape for c in copies] + [v.shape for v in sd["state"][0].values() if isinstance(v, np.ndarray)]
    assert all(s == (1000,) for s in shapes), (cls.__name__, shapes)
print("done")
"""


def test_resized_param_state_reads_stay_inside_the_buffers():
    """Item 4, reading everything: copies of the state views, state_dict() and
    pickling after a resize. In a subprocess, so that under tools/sanitize.sh a
    read past the C buffer (heap-buffer-overflow) fails this test only."""
    assert_clean_exit(run_python(_RESIZED_READS.format(full=_FULL)))


# ---- item 13: freed by reference counting alone ------------------------------

def _touch_nothing(opt):
    return ()


def _step(opt):
    opt.step(random_grads(opt, 1))
    return ()


def _touch_state(opt):
    len(opt.state)
    list(opt.state)
    dict(opt.state[0])
    return ()


def _view_taken_and_dropped(opt):
    v = opt.state[0][buffer_names(opt, 0)[0]]
    v += 0
    del v
    return ()


def _touch_groups(opt):
    g = opt.param_groups[0]
    g["lr"] = g["lr"] * 0.5
    opt.lr = 0.01
    repr(opt)
    opt._repr_html_()
    return ()


def _scheduler(opt):
    sched = optimc.schedules.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(random_grads(opt, 1))
    sched.step()
    return (sched,)      # dropped together with the optimizer


def _checkpoint(opt):
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    pickle.dumps(opt)
    return (sd,)         # plain copies: keeping them must not keep the optimizer


def _deepcopy(opt):
    return (copy.deepcopy(opt),)


def _refused_calls(opt):
    try:
        opt.step([np.zeros(3, np.int8)])
    except (TypeError, ValueError):
        pass
    try:
        opt.add_param_group({"params": [opt.state[0][buffer_names(opt, 0)[0]]]})
    except (TypeError, ValueError):
        pass
    return ()


def _callable_lr_and_groups(opt):
    opt.add_param_group({"params": [np.zeros(4)], "lr": optimc.schedules.cosine_decay(0.1, 10)})
    opt.step(random_grads(opt, 2))
    return ()


USES = [_touch_nothing, _step, _touch_state, _view_taken_and_dropped, _touch_groups, _scheduler,
        _checkpoint, _deepcopy, _refused_calls, _callable_lr_and_groups]


@pytest.mark.parametrize("use", USES, ids=[u.__name__.strip("_") for u in USES])
@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_del_frees_the_optimizer_without_gc(cls, use):
    """Item 13: after ``del opt`` (and of whatever `use` returned) the optimizer
    is gone at once, with the cyclic GC off; its params' refcounts are back."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        params = [np.linspace(-1, 1, 12), np.zeros(5)]
        refs_before = [sys.getrefcount(p) for p in params]
        opt = cls(params, lr=0.01, **full_options(cls))
        kept = use(opt)
        alive = weakref.ref(opt)
        others = [weakref.ref(k) for k in kept if isinstance(k, optimc.Optimizer)]
        del opt, kept
        assert alive() is None, f"{cls.__name__} survives del after {use.__name__}: it sits in a reference cycle"
        assert all(o() is None for o in others)
        assert [sys.getrefcount(p) for p in params] == refs_before
    finally:
        if was_enabled:
            gc.enable()


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_view_keeps_the_optimizer_only_while_it_lives(cls):
    """A state view keeps its owner alive (its memory is the owner's) and
    releases it when the view goes — by refcount, with the GC off."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        opt = cls([np.ones(6)], lr=0.01, **full_options(cls))
        opt.step([np.ones(6)])
        view = opt.state[0][buffer_names(opt, 0)[0]]
        expected = view.copy()
        alive = weakref.ref(opt)
        del opt
        assert np.array_equal(view, expected)
        del view
        assert alive() is None
    finally:
        if was_enabled:
            gc.enable()


@pytest.mark.parametrize("cls", ALL, ids=IDS)
def test_named_optimizer_freed_without_gc(cls):
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        opt = build(cls, named=True, steps=1, **full_options(cls))
        dict(opt.state["p0"])
        alive = weakref.ref(opt)
        del opt
        assert alive() is None
    finally:
        if was_enabled:
            gc.enable()
