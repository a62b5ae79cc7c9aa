"""Param groups: dicts whose hyperparameters are checked on every change and
pushed to C at once, so the dict and the engine always agree."""
from __future__ import annotations

import weakref
from collections.abc import Mapping

import numpy as np

_FIXED_KEYS = ("params", "param_names")


def split_params(obj, what="params"):
    """(arrays, names or None) from a list/tuple or dict of arrays."""
    if isinstance(obj, np.ndarray):
        raise TypeError(f"{what}: expected a list or dict of arrays, got a single ndarray; "
                        f"wrap it in a list: [array]")
    if isinstance(obj, Mapping):
        return list(obj.values()), list(obj.keys())
    if isinstance(obj, (list, tuple)):
        return list(obj), None
    raise TypeError(f"{what}: expected a list or dict of arrays, got {type(obj).__name__}")


class ParamGroup(dict):
    """A param group: a dict whose hyperparameters are checked on assignment
    and take effect on the next step (``group["lr"] = 0.1``). Its params and
    hyperparameters cannot be removed; other keys (``"initial_lr"``, your own)
    are stored as given."""

    def _optimizer(self):
        ref = self.__dict__.get("_owner")
        return ref() if ref is not None else None

    def _attach(self, optimizer):
        # a weak link: the optimizer holds its groups, not the other way round
        self.__dict__["_owner"] = weakref.ref(optimizer)

    def _protected(self, key):
        opt = self._optimizer()
        return opt is not None and (key in opt._hyper_names or key in _FIXED_KEYS)

    def __setitem__(self, key, value):
        self.update({key: value})

    def update(self, *args, **kwargs):
        new = dict(*args, **kwargs)
        opt = self._optimizer()
        if opt is not None:
            fixed = [k for k in new if k in _FIXED_KEYS]
            if fixed:
                raise ValueError(f"{fixed[0]}: a group's params are fixed; use add_param_group for new ones")
            hyper = {k: v for k, v in new.items() if k in opt._hyper_names}
            if hyper:
                new.update(self._apply(opt, hyper))
        dict.update(self, new)

    def _apply(self, opt, hyper):
        """Check `hyper` and push it to the engine; returns the checked values."""
        return opt._set_group_hyper(self, hyper)

    def __ior__(self, other):
        self.update(other)
        return self

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def _refuse_removal(self, key):
        if self._protected(key):
            raise KeyError(f"{key}: cannot remove a hyperparameter or the params from a param group "
                           f"(set a new value instead)")

    def __delitem__(self, key):
        self._refuse_removal(key)
        dict.__delitem__(self, key)

    _MISSING = object()

    def pop(self, key, default=_MISSING):
        if key in self:
            self._refuse_removal(key)
            return dict.pop(self, key)
        if default is ParamGroup._MISSING:
            raise KeyError(key)
        return default

    def popitem(self):
        if not self:
            raise KeyError("popitem(): param group is empty")
        key = next(reversed(self))
        self._refuse_removal(key)
        return key, dict.pop(self, key)

    def clear(self):
        for key in self:
            self._refuse_removal(key)
        dict.clear(self)

    def copy(self):
        return dict(self)

    def __reduce__(self):  # pickles as a plain dict
        return (dict, (dict(self),))


class Defaults(ParamGroup):
    """``opt.defaults``: the hyperparameters a new group starts from, checked
    on every change like a group's (there is nothing to push to C)."""

    def _protected(self, key):
        opt = self._optimizer()
        return opt is not None and key in opt._hyper_names

    def _apply(self, opt, hyper):
        merged = opt._check(hyper, base=dict(self))
        return {k: merged[k] for k in hyper}
