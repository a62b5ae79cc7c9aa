"""State out and in: ``opt.state`` (views of the C buffers), ``state_dict()``
(copies, taken between two steps), ``load_state_dict()`` (everything checked
before anything is taken) and pickling."""
from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from .. import _checks, _core

STATE_DICT_FORMAT = "optimc.state_dict"
STATE_DICT_VERSION = 1
MAX_STEP = 2 ** 53   # csrc/optimc.h OPTIMC_MAX_STEP


class _State(Mapping):
    """``opt.state``: param index (or name) -> {"step": int, scalar: float,
    buffer: view}. The views alias the C-owned buffers and keep them alive."""

    def __init__(self, opt):
        self._opt = opt

    def _index(self, key):
        names = self._opt._names
        if names is not None:
            try:
                return names.index(key)
            except ValueError:
                raise KeyError(key) from None
        if isinstance(key, numbers.Integral) and not isinstance(key, bool) and 0 <= key < len(self):
            return int(key)
        raise KeyError(key)

    def __getitem__(self, key):
        step, scalars, bufs = self._opt._state(self._index(key))
        return {"step": step, **scalars, **bufs}

    def __iter__(self):
        names = self._opt._names
        return iter(names if names is not None else range(len(self)))

    def __len__(self):
        return self._opt._n_tensors

    def __repr__(self):
        return f"<optimc state of {len(self)} params>"


def _shown(value):
    return f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else repr(value)


class Checkpointing:
    """The state half of Optimizer (a mixin; see base.py)."""

    @property
    def state(self):
        """Param index (or name) -> its state: ``step``, scalars, and views of
        the C buffers (writeable; they keep the optimizer alive)."""
        return _State(self)

    def _label(self, i):
        return f"state[{self._names[i]!r}]" if self._names is not None else f"state[{i}]"

    def state_dict(self):
        """Plain Python/NumPy data (copies, all from between two steps): state
        per param index, the groups' hyperparameters with their param indices,
        counters and a format version."""
        entries, (steps, skipped) = self._snapshot()
        state = {i: {"step": step, **scalars, **bufs} for i, (step, scalars, bufs) in enumerate(entries)}
        groups, start = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            plain = {k: v for k, v in g.items() if k not in ("params", "param_names")}
            plain["params"] = list(range(start, start + n))
            if "param_names" in g:
                plain["param_names"] = list(g["param_names"])
            groups.append(plain)
            start += n
        return {
            "format": STATE_DICT_FORMAT,
            "version": STATE_DICT_VERSION,
            "optimizer": type(self).__name__,
            "state": state,
            "param_groups": groups,
            "step_count": steps,
            "skipped_steps": skipped,
        }

    def _checked_groups(self, groups):
        """(hyperparameters for C, checked values, extra keys) per saved group."""
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            got = len(groups) if isinstance(groups, list) else type(groups).__name__
            raise ValueError(f"state_dict['param_groups']: expected a list of {len(self.param_groups)} "
                             f"groups, got {got}")
        out, start = [], 0
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            where = f"state_dict['param_groups'][{gi}]"
            n = len(mine["params"])
            if not isinstance(saved, Mapping):
                raise TypeError(f"{where}: expected a dict, got {type(saved).__name__}")
            indices = saved.get("params")
            if not isinstance(indices, (list, tuple)) or list(indices) != list(range(start, start + n)):
                raise ValueError(f"{where}['params']: expected the param indices {start}..{start + n - 1}, "
                                 f"got {indices!r}")
            saved_names = saved.get("param_names", mine.get("param_names"))
            if (tuple(saved_names) if isinstance(saved_names, (list, tuple)) else saved_names) \
                    != mine.get("param_names"):
                raise ValueError(f"{where}['param_names']: {saved.get('param_names')!r} differ from this "
                                 f"optimizer's {mine.get('param_names')!r}")
            start += n
            hyper = {k: v for k, v in saved.items() if k in self._hyper_names}
            missing = [k for k in self._hyper_names if k not in hyper]
            if missing:
                raise ValueError(f"{where}: lacks the hyperparameter(s) {missing}")
            merged = {}
            for name, value in hyper.items():
                merged[name] = self._all_checks[name](f"{where}[{name!r}]", value)
            self._check_group(merged)
            for name in self._structural:
                if merged[name] != mine[name]:
                    raise ValueError(f"{where}[{name!r}]: {merged[name]!r}, but this optimizer has "
                                     f"{mine[name]!r} (fixed at creation: it decides the state buffers)")
            extra = {k: v for k, v in saved.items()
                     if k not in self._hyper_names and k not in ("params", "param_names")}
            out.append((self._engine_hyper(merged), merged, extra))
        return out

    def _checked_entry(self, i, saved, param, template):
        """(step, scalars, buffers) for C from a saved state entry of param i."""
        where = f"state_dict['state'][{i}]"
        if self._names is not None:
            where += f" (param {self._names[i]!r})"
        if not isinstance(saved, Mapping):
            raise TypeError(f"{where}: expected a dict, got {type(saved).__name__}")
        step, scalars, bufs = template
        saved = self._converted_state(where, saved, bufs, param)
        keys = set(saved)
        wanted = {"step", *scalars, *bufs}
        if keys != wanted:
            extra = [k for k in saved if k not in wanted]
            missing = [k for k in ("step", *scalars, *bufs) if k not in keys]
            raise ValueError(f"{where}: expected the entries {sorted(wanted)}; "
                             + (f"missing {missing}" if missing else f"unexpected {extra!r}"))
        step = _checks.integer(f"{where}['step']", saved["step"], 0, MAX_STEP)
        out_scalars = {k: _checks.real(f"{where}[{k!r}]", saved[k]) for k in scalars}
        out_bufs = {}
        for name in bufs:
            value = saved[name]
            want = bufs[name].dtype   # the param's, or the stored form of compressed state
            if not isinstance(value, np.ndarray) or value.dtype != want or value.shape != bufs[name].shape:
                raise ValueError(f"{where}[{name!r}]: expected a {want} array of shape "
                                 f"{bufs[name].shape}, got {_shown(value)}")
            out_bufs[name] = np.ascontiguousarray(value)
        return step, out_scalars, out_bufs

    def _converted_state(self, where, saved, bufs, param):
        """`saved` with each state buffer in this optimizer's storage (see
        state_dtype): a buffer saved in another form (the param's dtype,
        bfloat16 bits, 8-bit codes with their "<name>_absmax" block scales) is
        decoded to float32 and encoded again. Block scales are checked here
        (finite, >= 0); the same form passes through unchanged."""
        if not isinstance(saved, Mapping):
            return saved
        kinds = dict(zip(*(_core.algorithms()[self._kernel][k] for k in ("state", "state_kind"))))
        out = dict(saved)
        for name in [n for n in kinds if n in bufs]:
            value = saved.get(name)
            if not isinstance(value, np.ndarray) or not value.flags.c_contiguous:
                continue   # reported by the checks that follow
            scale_key = name + "_absmax"
            saved_form = "8bit" if value.dtype == np.uint8 else "bfloat16" if value.dtype == np.uint16 else None
            target = bufs[name].dtype
            target_form = "8bit" if target == np.uint8 else "bfloat16" if target == np.uint16 else None
            if saved_form == target_form or value.shape != bufs[name].shape:
                continue   # the same form (checked as it is), or a shape the checks report
            # the state of a bfloat16/float16 param is float32 (csrc/halfparam_impl.h)
            state_float = np.float32 if param.dtype.name in ("bfloat16", "float16") else param.dtype
            if saved_form is None and value.dtype != state_float:
                continue
            signed = kinds.get(name) != "unsigned"
            if saved_form == "8bit":
                scales = saved.get(scale_key)
                nb = -(-value.size // 256)
                if not isinstance(scales, np.ndarray) or scales.dtype != np.float32 or scales.shape != (nb,):
                    raise ValueError(f"{where}[{scale_key!r}]: expected a float32 array of {nb} block scales, "
                                     f"got {_shown(scales)}")
                bad = ~(np.isfinite(scales) & (scales >= 0))
                if bad.any():
                    b = int(np.argmax(bad))
                    raise ValueError(f"{where}[{scale_key!r}][{b}]: a block scale must be finite and >= 0, "
                                     f"got {float(scales[b])!r} (a corrupt checkpoint?)")
                values = _core.dequantize_blockwise(np.ascontiguousarray(value).ravel(),
                                                    np.ascontiguousarray(scales), signed)
                del out[scale_key]
            elif saved_form == "bfloat16":
                values = _core.bf16_decode(np.ascontiguousarray(value).ravel())
            elif value.dtype.kind == "f":
                values = value.ravel()
            else:
                continue
            if target_form == "8bit":
                codes, scales = _core.quantize_blockwise(np.ascontiguousarray(values, np.float32), signed)
                out[name] = codes.reshape(value.shape)
                out[scale_key] = scales
            elif target_form == "bfloat16":
                out[name] = _core.bf16_encode(np.ascontiguousarray(values, np.float32)).reshape(value.shape)
            else:
                out[name] = np.asarray(values).astype(target).reshape(value.shape)
        return out

    def load_state_dict(self, state_dict):
        """Take state and hyperparameters from `state_dict` (from ``state_dict()``).
        Everything is checked first; on any mismatch it raises and changes nothing."""
        sd = state_dict
        if not isinstance(sd, Mapping):
            raise TypeError(f"state_dict: expected a dict, got {type(sd).__name__}")
        if sd.get("format") != STATE_DICT_FORMAT:
            raise ValueError("state_dict: not an optimc state dict (no 'format' entry)")
        if sd.get("version") != STATE_DICT_VERSION:
            raise ValueError(f"state_dict: format version {sd.get('version')!r}; "
                             f"this optimc reads version {STATE_DICT_VERSION}")
        if sd.get("optimizer") != type(self).__name__:
            raise ValueError(f"state_dict['optimizer']: saved from {sd.get('optimizer')!r}, "
                             f"not {type(self).__name__}")
        groups = self._checked_groups(sd.get("param_groups"))
        state = sd.get("state")
        if not isinstance(state, Mapping) or len(state) != self._n_tensors:
            raise ValueError(f"state_dict['state']: expected state for {self._n_tensors} params")
        entries = []
        for i, p in enumerate(self._params()):
            if i not in state:
                raise ValueError(f"state_dict['state']: no state for param {i} ({self._label(i)})")
            entries.append(self._checked_entry(i, state[i], p, self._state(i)))
        for k in ("step_count", "skipped_steps"):
            if k not in sd:
                raise ValueError(f"state_dict[{k!r}]: missing (the optimizer's step counters)")
        counters = tuple(_checks.integer(f"state_dict[{k!r}]", sd[k], 0, MAX_STEP)
                         for k in ("step_count", "skipped_steps"))
        self._load(entries, [engine for engine, _, _ in groups], counters)
        # the engine took everything: the groups' dicts follow
        for g, (_, merged, extra) in zip(self.param_groups, groups):
            dict.update(g, merged)
            dict.update(g, extra)

    # ---- pickle / deepcopy ----

    def __reduce__(self):
        groups = []
        for g in self.param_groups:
            plain = {k: v for k, v in g.items() if k not in ("params", "param_names")}
            names = g.get("param_names")
            plain["params"] = dict(zip(names, g["params"])) if names is not None else list(g["params"])
            groups.append(plain)
        return (_rebuild, (type(self), groups, dict(self.defaults), {**self._guard, **self._storage}, self.state_dict()))


def _rebuild(cls, groups, defaults, options, state_dict):
    opt = cls(groups, **defaults, **options)
    opt.load_state_dict(state_dict)
    return opt
