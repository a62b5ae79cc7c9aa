"""What the optimizers outside ``optimc.ALL`` share (LBFGS and Muon: Python
classes over C vector operations, not registry rules): ``param_groups`` and
``defaults``, labels of params and grads, and the checks of the arrays they
are handed (the registry's optimizers do these in the C binding)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def label(names, i, what="params"):
    """``params['w']`` for a named param, ``params[3]`` otherwise."""
    return f"{what}[{names[i]!r}]" if names is not None else f"{what}[{i}]"


def check_param(lab, p):
    """A param must be a writeable, aligned, C-contiguous float32/float64 ndarray
    in native byte order (it is updated in place)."""
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{lab}: expected a numpy.ndarray, got {type(p).__name__}")
    if p.dtype not in (np.float32, np.float64) or not p.dtype.isnative:
        raise TypeError(f"{lab}: expected a float32 or float64 array in native byte order, got {p.dtype}")
    if not (p.flags.c_contiguous and p.flags.aligned):
        raise ValueError(f"{lab}: must be C-contiguous and aligned (optimc writes it in place); "
                         f"make it with np.ascontiguousarray")
    if not p.flags.writeable:
        raise ValueError(f"{lab}: is read-only; optimc writes it in place")


def check_grad(lab, g, p):
    """A grad must be an ndarray of its param's dtype and shape."""
    if not isinstance(g, np.ndarray):
        raise TypeError(f"{lab}: expected a numpy.ndarray, got {type(g).__name__}")
    if g.dtype != p.dtype:
        raise TypeError(f"{lab}: expected {p.dtype} (the param's dtype), got {g.dtype}")
    if g.shape != p.shape:
        raise ValueError(f"{lab}: expected shape {p.shape} (the param's), got {g.shape}")


class SpecialOptimizer:
    """Base of LBFGS and Muon. A subclass sets ``_groups`` (a tuple of dicts),
    ``_defaults``, ``_params`` (every param, in order) and ``_names`` (their
    names, or None when they are positional)."""

    @property
    def param_groups(self):
        """The param groups, in order (LBFGS has one). Change a hyperparameter in
        place (``opt.param_groups[0]["lr"] = x``): it is checked at the next step,
        before anything is written."""
        return self._groups

    @property
    def defaults(self):
        """The hyperparameters the param groups start from."""
        return self._defaults

    def _label(self, i, what="params"):
        return label(self._names, i, what)

    def _grads_in_order(self, grads, what="grads"):
        """`grads` as a list in the params' order, from a dict with the params'
        names (named params) or a list or tuple of one array per param."""
        if self._names is not None:
            if not isinstance(grads, Mapping):
                raise TypeError(f"{what}: the params are named, so a dict with keys {list(self._names)}, "
                                f"got {type(grads).__name__}")
            missing = [k for k in self._names if k not in grads]
            extra = [k for k in grads if k not in self._names]
            if missing or extra:
                raise ValueError(f"{what}: keys differ from the params' (missing {missing}, unknown {extra})")
            return [grads[k] for k in self._names]
        if not isinstance(grads, (list, tuple)):
            raise TypeError(f"{what}: expected a list or tuple of arrays in the params' order, "
                            f"got {type(grads).__name__}")
        if len(grads) != len(self._params):
            raise ValueError(f"{what}: expected {len(self._params)} arrays, got {len(grads)}")
        return list(grads)
