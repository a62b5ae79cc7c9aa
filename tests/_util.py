"""Shared helpers for the optimc correctness suites (reference self-check,
optimc vs reference, optimc vs torch): option grids, random problems,
tolerance checks with max-relative-difference bookkeeping, and a torch runner."""
from __future__ import annotations

import contextlib
import itertools
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from reference import ALGORITHMS, DEFAULTS

# ---------------------------------------------------------------------------
# shapes and random problems
# ---------------------------------------------------------------------------
#: 0-d, empty, odd lengths and a 2-D shape; every suite steps all of them at once.
SHAPES: List[Tuple[int, ...]] = [(), (0,), (1,), (7,), (33,), (1031,), (5, 13)]
DTYPES = [np.float64, np.float32]


def make_params(shapes: Sequence[tuple], dtype, seed: int = 0) -> List[np.ndarray]:
    """Random normal params (0-d ones made with ``np.array(x)``), C-contiguous, writeable."""
    rng = np.random.default_rng(seed)
    out = []
    for s in shapes:
        if s == ():
            out.append(np.array(rng.standard_normal(), dtype=dtype))
        else:
            out.append(np.ascontiguousarray(rng.standard_normal(s).astype(dtype)))
    return out


def make_grads(shapes: Sequence[tuple], dtype, steps: int, seed: int = 1,
               scale: float = 1.0) -> List[List[np.ndarray]]:
    """``steps`` lists of random normal grads, one per shape, from a seeded Generator."""
    rng = np.random.default_rng(seed)
    return [[np.array(scale * rng.standard_normal(s), dtype=dtype) for s in shapes]
            for _ in range(steps)]


def problem(dtype, steps: int, shapes=SHAPES, seed: int = 0):
    return make_params(shapes, dtype, seed), make_grads(shapes, dtype, steps, seed + 1000)


# ---------------------------------------------------------------------------
# option grids: every option of every optimizer, hyperparameters always explicit
# ---------------------------------------------------------------------------
def _grid(name: str, base: dict, keep=lambda h: True, **axes) -> List[Tuple[str, dict]]:
    keys = list(axes)
    out = []
    for values in itertools.product(*(axes[k] for k in keys)):
        h = {**DEFAULTS[name], **base, **dict(zip(keys, values))}
        if keep(h):
            out.append((name, h))
    return out


def _dedup(cases):
    seen, out = set(), []
    for name, h in cases:
        key = (name, tuple(sorted((k, repr(v)) for k, v in h.items())))
        if key not in seen:
            seen.add(key)
            out.append((name, h))
    return out


def all_cases() -> List[Tuple[str, dict]]:
    """(class name, full hyperparameter dict) for every algorithm and option
    combination its reference entry lists (tests/reference.py)."""
    c: List[Tuple[str, dict]] = []
    for name, alg in ALGORITHMS.items():
        for base, axes, keep in alg.grids:
            c += _grid(name, base, keep, **axes)
    return _dedup(c)


def torch_spec(name: str, h: Optional[dict] = None):
    """(torch.optim class, kwargs) for optimc class ``name`` with hyperparameters
    ``h``, or None where torch has no counterpart or does not take an option
    that ``h`` sets away from optimc's default (e.g. weight decay torch lacks)."""
    import inspect

    import torch

    spec = ALGORITHMS[name].torch
    if spec is None or not hasattr(torch.optim, spec[0]):
        return None
    cls = getattr(torch.optim, spec[0])
    accepted = inspect.signature(cls.__init__).parameters
    h = {**DEFAULTS[name], **(h or {})}
    kw = {"foreach": False} if "foreach" in accepted else {}
    for k, v in h.items():
        if k in accepted:
            kw[k] = tuple(v) if isinstance(v, list) else v
        elif v != DEFAULTS[name][k]:
            return None
    kw.update(spec[1])
    return cls, kw


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def torch_names() -> List[str]:
    """The optimc classes torch.optim has a counterpart of."""
    return [n for n in ALGORITHMS if _torch_available() and torch_spec(n) is not None]


def torch_cases() -> List[Tuple[str, dict]]:
    if not _torch_available():
        return []
    return [(n, h) for n, h in all_cases() if torch_spec(n, h) is not None]


def case_id(case) -> str:
    name, h = case
    d = DEFAULTS[name]
    parts = [name]
    for k, v in h.items():
        if k == "lr" or v == d.get(k):
            continue
        if isinstance(v, bool):
            parts.append(k if v else f"no_{k}")
        elif isinstance(v, tuple):
            parts.append(f"{k}={','.join(map(str, v))}")
        else:
            parts.append(f"{k}={v}")
    return "-".join(parts)


def dtype_id(dt) -> str:
    return np.dtype(dt).name


# ---------------------------------------------------------------------------
# tolerances and max-relative-difference bookkeeping
# ---------------------------------------------------------------------------
#: (rtol, atol) per dtype and comparison.  atol is for unit-scale data: it is
#: multiplied by max(1, max|expected|) of the array compared, since an element
#: that cancels to ~0 inside an array of magnitude M carries rounding of order
#: ulp(M) (e.g. RMSprop's momentum_buffer, |b| up to ~30, in float32).
#: The recorded "relative difference" is max |a-b| / (|b| + atol_eff/rtol):
#: the check passes iff that is <= rtol.
TOL = {
    "selfcheck": {np.dtype(np.float64): (1e-12, 1e-14), np.dtype(np.float32): (1e-5, 1e-6)},
    "optimc": {np.dtype(np.float64): (1e-10, 1e-12), np.dtype(np.float32): (1e-5, 1e-6)},
}


def effective_atol(desired, atol: float) -> float:
    b = np.asarray(desired, dtype=np.float64)
    if b.size == 0 or not np.isfinite(b).all():
        return atol
    return atol * max(1.0, float(np.max(np.abs(b))))


def rel_diff(actual, desired, rtol: float, atol: float) -> float:
    """max |a-b| / (|b| + atol_eff/rtol), atol_eff = effective_atol(desired, atol)."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(desired, dtype=np.float64)
    if a.size == 0:
        return 0.0
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0 if np.array_equal(a, b, equal_nan=True) else float("inf")
    return float(np.max(np.abs(a - b) / (np.abs(b) + effective_atol(b, atol) / rtol)))


class Recorder:
    """Keeps, per (optimizer, dtype), the largest checked relative difference and the
    largest absolute difference seen."""

    def __init__(self):
        self.max: Dict[Tuple[str, str], float] = {}
        self.absmax: Dict[Tuple[str, str], float] = {}
        self.count: Dict[Tuple[str, str], int] = {}

    def add(self, name: str, dtype, value: float, absdiff: float = 0.0):
        key = (name, dtype_id(dtype))
        self.max[key] = max(self.max.get(key, 0.0), value)
        self.absmax[key] = max(self.absmax.get(key, 0.0), absdiff)
        self.count[key] = self.count.get(key, 0) + 1

    def table(self, title: str) -> str:
        names = sorted({k[0] for k in self.max}, key=lambda n: (list(DEFAULTS).index(n)
                                                             if n in DEFAULTS else 99, n))
        fmt = lambda x: "-" if x is None else f"{x:.3e}"  # noqa: E731
        lines = [title,
                 f"{'optimizer':<10} {'rel f64':>10} {'rel f32':>10} {'abs f64':>10} "
                 f"{'abs f32':>10} {'checks':>7}"]
        for n in names:
            cnt = self.count.get((n, "float64"), 0) + self.count.get((n, "float32"), 0)
            lines.append(f"{n:<10} {fmt(self.max.get((n, 'float64'))):>10} "
                         f"{fmt(self.max.get((n, 'float32'))):>10} "
                         f"{fmt(self.absmax.get((n, 'float64'))):>10} "
                         f"{fmt(self.absmax.get((n, 'float32'))):>10} {cnt:>7}")
        return "\n".join(lines)

    def emit(self, title: str):
        """Print the table (visible with ``pytest -s``) and, if the env var
        OPTIMC_PARITY_REPORT names a path, write it there."""
        if not self.max:
            return
        text = self.table(title)
        print("\n" + text)
        path = os.environ.get("OPTIMC_PARITY_REPORT")
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(text + "\n\n")


def check_close(actual, desired, dtype, what: str, kind: str = "optimc",
                recorder: Optional[Recorder] = None, name: Optional[str] = None) -> float:
    """Assert |actual - desired| <= atol_eff + rtol*|desired| elementwise (dtype's tolerances);
    record the relative difference; return it."""
    rtol, atol = TOL[kind][np.dtype(dtype)]
    actual = np.asarray(actual)
    desired = np.asarray(desired)
    assert actual.shape == desired.shape, f"{what}: shape {actual.shape} != {desired.shape}"
    r = rel_diff(actual, desired, rtol, atol)
    if recorder is not None and name is not None:
        absdiff = (float(np.max(np.abs(actual.astype(np.float64) - desired.astype(np.float64))))
                   if actual.size and np.isfinite(r) else 0.0)
        recorder.add(name, dtype, r, absdiff)
    if not r <= rtol:
        a = np.asarray(actual, np.float64).ravel()
        b = np.asarray(desired, np.float64).ravel()
        atol = effective_atol(b, atol)
        bad = np.abs(a - b) > atol + rtol * np.abs(b)
        i = int(np.argmax(bad)) if bad.any() else 0
        raise AssertionError(
            f"{what}: relative difference {r:.3e} > rtol {rtol:g} (atol {atol:g}); "
            f"{int(bad.sum())}/{a.size} elements off; first at flat index {i}: "
            f"actual {a[i]!r} vs expected {b[i]!r}")
    return r


# ---------------------------------------------------------------------------
# torch side
# ---------------------------------------------------------------------------
def torch_ctor(name: str, h: dict):
    """torch.optim class and kwargs (every hyperparameter explicit, foreach=False)."""
    spec = torch_spec(name, h)
    if spec is None:
        raise KeyError(f"torch has no counterpart of {name} with {h}")
    return spec


@contextlib.contextmanager
def torch_default_dtype(dtype):
    """torch keeps scalar state ("step", NAdam's "mu_product") in the default dtype;
    make it float64 for float64 runs so the scalar state is not rounded to float32."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def torch_grad(opt, g):
    """A torch grad for optimizer `opt` from the NumPy grad g: dense, or for
    SparseAdam (which takes only sparse grads) sparse with every row given.
    None (torch skips the param) for an empty param of Adafactor, whose step
    divides by the param's size: an empty param never changes anyway."""
    import torch

    if np.size(g) == 0 and isinstance(opt, getattr(torch.optim, "Adafactor", ())):
        return None
    grad = torch.from_numpy(np.array(g, copy=True))
    if isinstance(opt, torch.optim.SparseAdam):
        grad = grad.to_sparse(min(1, grad.ndim))
    return grad


class TorchRun:
    """A torch.optim optimizer over copies of numpy params, stepped with numpy grads."""

    def __init__(self, name: str, h: dict, params: Sequence[np.ndarray]):
        import torch

        self.name, self.h = name, h
        self.dtype = params[0].dtype
        cls, kw = torch_ctor(name, h)
        with torch_default_dtype(self.dtype):
            self.tparams = [torch.from_numpy(np.array(p, copy=True)) for p in params]
            self.opt = cls(self.tparams, **kw)

    def step(self, grads: Sequence[np.ndarray]):
        import torch

        with torch_default_dtype(self.dtype):
            for p, g in zip(self.tparams, grads):
                p.grad = torch_grad(self.opt, g)
            self.opt.step()

    def set_lr(self, lr: float):
        for grp in self.opt.param_groups:
            grp["lr"] = lr

    @property
    def params(self) -> List[np.ndarray]:
        return [p.detach().numpy() for p in self.tparams]

    def buffer(self, i: int, buf: str):
        if buf not in self.opt.state[self.tparams[i]] and self.tparams[i].numel() == 0:
            return self.tparams[i].detach().numpy()   # never stepped (torch_grad): empty like the param
        v = self.opt.state[self.tparams[i]][buf]
        return float(v) if v.ndim == 0 and self.tparams[i].ndim != 0 else v.detach().numpy()

    def step_count(self, i: int) -> Optional[int]:
        st = self.opt.state[self.tparams[i]]
        return int(st["step"]) if "step" in st else None


def state_names(opt, i) -> List[str]:
    """The state entries of optimc's param i to compare (everything but "step")."""
    return [k for k in opt.state[i] if k != "step"]


# ---------------------------------------------------------------------------
# one option-rich configuration per optimizer (for groups / lr edits / resume),
# and a second group's overrides (lr, weight decay and an algorithm-specific value)
# ---------------------------------------------------------------------------
ALL_NAMES = list(ALGORITHMS)


def rich(name: str) -> dict:
    """Full hyperparameters for ``name`` with most of its options switched on."""
    return {**DEFAULTS[name], **ALGORITHMS[name].rich}


def second_group(name: str) -> dict:
    """Overrides for a second param group: lr x 0.3, other weight decay, and the
    reference entry's second_group values."""
    h = rich(name)
    return {"lr": h["lr"] * 0.3, "weight_decay": 0.0 if h["weight_decay"] else 0.02,
            **ALGORITHMS[name].second_group}
