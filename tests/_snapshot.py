"""Bitwise snapshots of an optimizer, and twins that share its history.

Shared by test_hardening.py, test_lifetime.py and test_fuzz.py, which check the
contract "refused => nothing changed (params, state, counters, groups)" and
"accepted => the same as a clean run". Only the public API is read:
``param_groups``, ``defaults``, ``state``, ``step_count``, ``skipped_steps``,
``last_lr``, ``last_grad_norm``, ``max_grad_norm``, ``skip_nonfinite``,
``state_bytes``, ``state_dict()``.
"""
from __future__ import annotations

import inspect
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Mapping

import numpy as np

import optimc

# options under which each class allocates every state buffer it has
_FULL_OPTIONS = {
    "SGD": dict(momentum=0.9),
    "Adagrad": dict(initial_accumulator_value=0.1),
    "RMSprop": dict(momentum=0.5, centered=True),
    "Adam": dict(amsgrad=True),
    "AdamW": dict(amsgrad=True),
}


def full_options(cls) -> dict:
    """Options that make `cls` allocate all its state buffers ({} for most classes)."""
    return dict(_FULL_OPTIONS.get(cls.__name__, {}))


def hyper_names(cls) -> tuple:
    """The hyperparameters `cls` takes, as its documented signature names them."""
    sig = inspect.signature(cls.__init__)
    return tuple(n for n, p in sig.parameters.items()
                 if n not in ("self", "params") and p.kind is p.POSITIONAL_OR_KEYWORD)


def scalar_names(cls) -> tuple:
    """The per-tensor scalar state `cls`'s C rule declares (NAdam's mu_product, ...)."""
    from optimc import _core
    return tuple(_core.algorithms()[cls._kernel]["scalars"])


def params_of(opt) -> list:
    out = []
    for g in opt.param_groups:
        ps = g["params"]
        out.extend(ps.values() if isinstance(ps, Mapping) else ps)
    return out


def is_named(opt) -> bool:
    return any("param_names" in g for g in opt.param_groups)


def buffer_names(opt, key) -> list:
    """Names of the array entries of ``opt.state[key]`` (not "step"/"mu_product")."""
    return [k for k, v in opt.state[key].items() if isinstance(v, np.ndarray)]


def random_grads(opt, seed=0, scale=1.0):
    """Grads for every param of `opt` (a dict for named params, else a list)."""
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(scale * rng.standard_normal(p.shape)).astype(p.dtype) for p in params_of(opt)]
    if is_named(opt):
        return dict(zip(list(opt.state), arrays))
    return arrays


# ---- bitwise snapshots ------------------------------------------------------

def freeze(x):
    """A hashable, bitwise-exact picture of a value (NaN == NaN, -0.0 != 0.0)."""
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            return ("object array", x.shape, tuple(freeze(v) for v in x.ravel()))
        return ("ndarray", x.dtype.str, x.shape, np.ascontiguousarray(x).tobytes())
    if isinstance(x, np.generic):   # a NumPy scalar compares as the Python number it holds
        return freeze(x.item()) if isinstance(x, (np.number, np.bool_)) else ("numpy scalar", repr(x))
    if x is None or isinstance(x, (bool, int, str, bytes)):
        return (type(x).__name__, x)
    if isinstance(x, float):
        return ("float", struct.pack("<d", x))
    if isinstance(x, complex):
        return ("complex", struct.pack("<dd", x.real, x.imag))
    if isinstance(x, Mapping):
        return ("dict", tuple(sorted(((repr(k), freeze(v)) for k, v in x.items()), key=lambda kv: kv[0])))
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, tuple(freeze(v) for v in x))
    if callable(x):   # a callable lr: the same function in a twin compares equal
        return ("callable", getattr(x, "__qualname__", type(x).__qualname__))
    return ("object", type(x).__qualname__, id(x))


def snapshot(opt, params=None) -> dict:
    """Deep, bitwise copy of everything an optimizer shows: params, every state
    entry, counters, param_groups (without the arrays), defaults, guard, last_lr."""
    params = params_of(opt) if params is None else params
    groups = []
    for g in opt.param_groups:
        groups.append(freeze({k: v for k, v in g.items() if k != "params"}))
    return {
        "params": [freeze(p) for p in params],
        "param identity": [id(p) for p in params_of(opt)],
        "state keys": [repr(k) for k in opt.state],
        "state": {repr(k): freeze(dict(opt.state[k])) for k in opt.state},
        "step_count": opt.step_count,
        "skipped_steps": opt.skipped_steps,
        "param_groups": groups,
        "defaults": freeze(dict(opt.defaults)),
        "max_grad_norm": freeze(opt.max_grad_norm),
        "skip_nonfinite": freeze(opt.skip_nonfinite),
        "last_lr": freeze(list(opt.last_lr)),
        "last_grad_norm": freeze(opt.last_grad_norm),
        "state_bytes": opt.state_bytes,
    }


def assert_unchanged(before: dict, after: dict, ignore=()):
    """Bitwise equality of two snapshots, naming the first field that differs."""
    for key in before:
        if key in ignore:
            continue
        if key == "state":
            assert before[key].keys() == after[key].keys(), "state: params differ"
            for k in before[key]:
                assert before[key][k] == after[key][k], f"state[{k}] changed"
        elif key == "params":
            for i, (a, b) in enumerate(zip(before[key], after[key])):
                assert a == b, f"params[{i}] changed"
            assert len(before[key]) == len(after[key])
        else:
            assert before[key] == after[key], f"{key} changed: {before[key]!r} -> {after[key]!r}"


def assert_same_as_twin(opt, twin, seed=99, steps=1, ignore=()):
    """`opt` and `twin` (same class, options and history) now hold the same bits
    and take the next `steps` steps identically: nothing hidden in C differs."""
    ignore = ("param identity",) + tuple(ignore)
    assert_unchanged(snapshot(twin), snapshot(opt), ignore=ignore)
    for s in range(steps):
        opt.step(random_grads(opt, seed + s))
        twin.step(random_grads(twin, seed + s))
        assert_unchanged(snapshot(twin), snapshot(opt), ignore=ignore)


# ---- building optimizers with a history -------------------------------------

def default_shapes():
    return [(3, 4), (5,), ()]


def make_params(shapes, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(s)).astype(dtype) for s in shapes]


def build(cls, shapes=None, dtype=np.float64, named=False, steps=2, seed=0, **kw):
    """An optimizer over fresh params that has taken `steps` steps of seeded grads."""
    params = make_params(default_shapes() if shapes is None else shapes, dtype, seed)
    opt = cls(dict((f"p{i}", p) for i, p in enumerate(params)) if named else params, **kw)
    for s in range(steps):
        opt.step(random_grads(opt, 1000 + s))
    return opt


def build_pair(cls, **kw):
    """Two optimizers with identical params, options and history."""
    return build(cls, **kw), build(cls, **kw)


# ---- subprocesses -----------------------------------------------------------

def run_python(code: str, timeout=120) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that imports this optimc; a crash there
    fails the calling test instead of killing pytest."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(optimc.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    # from the tests' folder: the current folder comes first on the child's path, and a
    # clone's root holds an optimc/ that may be built for another Python
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=os.path.dirname(os.path.abspath(__file__)))


def assert_clean_exit(proc: subprocess.CompletedProcess):
    """The script ran to its final ``print("done")`` and exited with status 0."""
    rc = proc.returncode
    if rc == 0 and proc.stdout.rstrip().endswith("done"):
        return
    how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
    raise AssertionError(f"subprocess {how}\n--- stdout ---\n{proc.stdout[-4000:]}"
                         f"\n--- stderr ---\n{proc.stderr[-4000:]}")
