"""What the benchmark runs: one case per optimizer class in ``optimc.ALL``, and the sizes.

A case's hyperparameters are its class's defaults, read from a freshly built optimizer
and passed explicitly to every implementation. Its memory traffic is derived from the
state the optimizer allocates, not from a table: a step reads and writes the param,
reads the grad, and reads and writes each state buffer the same size as the param, so
``(3 + 2 * state buffers) * itemsize`` bytes per element, in one pass over memory.
A rule with per-tensor sums (LAMB's and LARS's trust ratios) needs every element before
it may update any, so its step is two passes; :data:`TWO_PASS` says what each of them
reads and writes, by array name. That is what the roofline kernel moves for a case,
pass by pass.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

__all__ = ["Case", "Pass", "TWO_PASS", "algorithm_cases", "DTYPES", "DEFAULT_SIZES", "parse_size",
           "parse_sizes", "size_label", "state_buffer_count", "state_buffer_names"]

DTYPES = {"float32": np.float32, "float64": np.float64}
DEFAULT_SIZES = "1e3,1e5,1e6,1e7,1000x1000"


def state_buffer_names(state: Mapping[str, object], param: np.ndarray) -> List[str]:
    """The state buffers in one param's ``opt.state[i]``: the arrays as large as the param
    ("step" and per-tensor scalars such as NAdam's ``mu_product`` are not buffers)."""
    return [k for k, v in state.items()
            if isinstance(v, np.ndarray) and v.ndim > 0 and v.size == param.size]


def state_buffer_count(state: Mapping[str, object], param: np.ndarray) -> int:
    return len(state_buffer_names(state, param))


@dataclass(frozen=True)
class Pass:
    """One pass of a step over memory, per element: the arrays it reads and the arrays it
    writes back ("param", "grad" or a state buffer's name; a written array is read too)."""
    read: Tuple[str, ...]
    write: Tuple[str, ...] = ()

    def values_moved(self) -> int:
        return len(self.read) + len(self.write)


#: Steps that go over memory twice, by class name: a rule with per-tensor sums reads for
#: them before its update (csrc/rules/<name>.h says why each pass moves what it does).
#: Every other step is one pass that reads the param, the grad and each state buffer and
#: writes the param and each state buffer back.
TWO_PASS: Mapping[str, Tuple[Pass, ...]] = {
    # the moments and the norms of θ and u; then u again from the moments, and θ
    "LAMB": (Pass(read=("param", "grad", "mu", "nu"), write=("mu", "nu")),
             Pass(read=("param", "mu", "nu"), write=("param",))),
    # the norms of θ and u = g + λθ; then the update and the trace
    "LARS": (Pass(read=("param", "grad")),
             Pass(read=("param", "grad", "trace"), write=("param", "trace"))),
    # (the bench's params are vectors, which keep the full variance) the variance and
    # the norms of θ and U; then U again from the variance, and θ
    "Adafactor": (Pass(read=("param", "grad", "variance"), write=("variance",)),
                  Pass(read=("param", "grad", "variance"), write=("param",))),
}


def _one_pass(buffers: Sequence[str]) -> Tuple[Pass, ...]:
    return (Pass(read=("param", "grad", *buffers), write=("param", *buffers)),)


@dataclass(frozen=True, eq=False)
class Case:
    """One optimizer class as the benchmark runs it."""
    name: str                     # the class name, e.g. "Adam"
    cls: type
    hyper: Mapping[str, object]   # its defaults, passed explicitly to every implementation
    n_state: int                  # state buffers per param
    passes: Tuple[Pass, ...]      # what each pass over memory reads and writes

    @property
    def key(self) -> str:
        """The name ``--optimizers`` takes: the class name in lower case."""
        return self.name.lower()

    def values_moved(self) -> int:
        """Values read or written per element over all passes: in one pass, param 2,
        grad 1, each state buffer 2."""
        return sum(p.values_moved() for p in self.passes)

    def bytes_per_element(self, dtype) -> int:
        return self.values_moved() * np.dtype(dtype).itemsize

    def build(self, params):
        """An optimc optimizer of this case over ``params``."""
        return self.cls(params, **self.hyper)


def _case(cls) -> Case:
    param = np.zeros(4, np.float64)
    probe = cls([param])
    hyper = {k: v for k, v in probe.param_groups[0].items() if k != "params"}
    buffers = state_buffer_names(probe.state[0], param)
    passes = TWO_PASS.get(cls.__name__) or _one_pass(buffers)
    arrays = {"param", "grad", *buffers}
    for p in passes:
        if not set(p.read) <= arrays or not set(p.write) <= set(p.read):
            raise ValueError(f"TWO_PASS[{cls.__name__!r}]: {p} names arrays the step does not "
                             f"have ({sorted(arrays)}) or writes what it does not read")
    return Case(cls.__name__, cls, hyper, len(buffers), tuple(passes))


def algorithm_cases(classes: Sequence[type] = ()) -> Dict[str, Case]:
    """{key: Case} for ``classes`` (default: every class in ``optimc.ALL``), in that order."""
    if not classes:
        import optimc
        classes = optimc.ALL
    cases = [_case(cls) for cls in classes]
    return {c.key: c for c in cases}


def parse_size(text: str) -> Tuple[int, int]:
    """'1e7' -> (1, 10000000); '1000x1000' -> (1000, 1000): (tensors, elements each)."""
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


def parse_sizes(text: str) -> List[Tuple[int, int]]:
    out = [parse_size(t) for t in text.split(",") if t.strip()]
    if not out:
        raise argparse.ArgumentTypeError("no sizes given")
    return out


def size_label(n_tensors: int, n: int) -> str:
    def short(v):
        if v >= 1000 and v == 10 ** int(round(math.log10(v))):
            return f"1e{int(round(math.log10(v)))}"
        return str(v)
    return short(n) if n_tensors == 1 else f"{n_tensors}x{n}"
