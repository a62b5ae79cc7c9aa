"""Checkpoints that are not pickle: ``optimc.save`` / ``optimc.load``.

A checkpoint is one ``.npz`` file (NumPy's zip of ``.npy`` arrays): every array
of the optimizer's params and ``state_dict()`` (and of the extra objects' state
dicts) as its own entry, and one entry ``optimc_json``, a uint8 array holding
UTF-8 JSON: everything that is not an array (hyperparameters, counters, the
schedulers' plain state) with references to the array entries.

Loading reads it with ``np.load(..., allow_pickle=False)`` and ``json.loads``,
neither of which can run code, so an untrusted checkpoint can at worst fail to
load. The one kind of object rebuilt from the JSON is a ``Schedule`` of
:mod:`optimc.schedules`, and only by calling one of that module's schedule
functions, chosen from a fixed list, with the saved numbers.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
import zipfile

import numpy as np

from . import schedules as _schedules

FORMAT = "optimc-checkpoint"
VERSION = 1
META_KEY = "optimc_json"   # the npz entry (optimc_json.npy) holding the JSON document
_TAG = "__optimc__"     # marks the JSON objects that stand for non-JSON values

# The schedule functions a checkpoint may name; nothing else is ever called on load.
_SCHEDULE_FUNCTIONS = {
    name: getattr(_schedules, name)
    for name in ("constant", "step_decay", "exponential_decay", "cosine_decay", "linear_warmup",
                 "warmup_cosine", "piecewise_constant")
}

_CALLABLE_HINT = (
    "a checkpoint written by optimc.save holds only arrays and plain data, never code. "
    "Use a schedule from optimc.schedules (e.g. schedules.warmup_cosine(...), saved as its "
    "numbers) or a scheduler object (schedules.CosineAnnealingLR(opt, ...), saved with "
    "optimc.save(path, opt, scheduler)); or, for files you trust, pickle the optimizer")


def _is_bfloat16(dtype):
    """ml_dtypes' bfloat16 (a param dtype optimc takes), which .npy files cannot name."""
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.name == "bfloat16"


class _Encoder:
    """Turns a state tree into JSON-able data plus a dict of arrays."""

    def __init__(self):
        self.arrays = {}

    def _store(self, array):
        key = f"a{len(self.arrays)}"
        self.arrays[key] = array
        return key

    def encode(self, value, path):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject or value.dtype.fields is not None:
                raise TypeError(f"{path}: an array of dtype {value.dtype} cannot be saved "
                                f"(only numeric arrays)")
            if _is_bfloat16(value.dtype):   # NumPy would write raw void bytes: keep the bits as uint16
                return {_TAG: "bfloat16", "key": self._store(value.copy(order="C").view(np.uint16))}
            return {_TAG: "array", "key": self._store(value)}
        if isinstance(value, np.generic):
            if not isinstance(value, (np.number, np.bool_)):
                raise TypeError(f"{path}: a NumPy {type(value).__name__} cannot be saved")
            return {_TAG: "scalar", "key": self._store(np.asarray(value))}
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, float):
            return value if math.isfinite(value) else {_TAG: "float", "value": repr(value)}
        if isinstance(value, tuple):
            return {_TAG: "tuple", "items": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self.encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and _TAG not in value:
                return {k: self.encode(v, f"{path}[{k!r}]") for k, v in value.items()}
            return {_TAG: "dict", "items": [[self.encode(k, f"{path} key"), self.encode(v, f"{path}[{k!r}]")]
                                            for k, v in value.items()]}
        if isinstance(value, _schedules.Schedule):
            rule, args = value.__getstate__()
            name = rule.__name__.lstrip("_")
            if name not in _SCHEDULE_FUNCTIONS:
                raise TypeError(f"{path}: the schedule {value!r} is not one that a checkpoint can name")
            return {_TAG: "schedule", "name": name, "args": self.encode(dict(args), f"{path} args")}
        if callable(value):
            raise TypeError(f"{path} is a callable ({value!r}), which cannot be saved: {_CALLABLE_HINT}")
        raise TypeError(f"{path}: a {type(value).__name__} cannot be saved in a checkpoint "
                        f"(arrays, numbers, strings, lists, tuples and dicts can)")


class _Decoder:
    """The inverse of _Encoder, reading arrays from an open ``np.load`` file."""

    def __init__(self, npz, path):
        self.npz, self.path, self.used = npz, path, set()

    def _array(self, key, where):
        if not isinstance(key, str) or key not in self.npz.files:
            raise ValueError(f"{self.path}: {where} refers to a missing array entry {key!r}")
        try:
            array = self.npz[key]
        except ValueError as exc:        # object arrays: np.load refuses them without pickle
            raise ValueError(f"{self.path}: entry {key!r} is not a plain numeric array ({exc}); "
                             f"refused: checkpoints never hold pickled objects") from None
        if not isinstance(array, np.ndarray):
            raise ValueError(f"{self.path}: entry {key!r} is not an array; refused")
        if array.dtype.hasobject or array.dtype.fields is not None or array.dtype.kind not in "biufc":
            raise ValueError(f"{self.path}: entry {key!r} has dtype {array.dtype}; refused")
        self.used.add(key)
        return array

    def decode(self, value, where="state"):
        if value is None or isinstance(value, (bool, str, int, float)):
            return value
        if isinstance(value, list):
            return [self.decode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, dict):
            raise ValueError(f"{self.path}: {where}: unexpected JSON value {value!r}")
        tag = value.get(_TAG)
        if tag is None:
            return {k: self.decode(v, f"{where}[{k!r}]") for k, v in value.items()}
        if tag == "array":
            return self._array(value.get("key"), where)
        if tag == "bfloat16":            # bfloat16 params, stored as their bits (see _Encoder)
            bits = self._array(value.get("key"), where)
            if bits.dtype != np.uint16:
                raise ValueError(f"{self.path}: {where}: bfloat16 bits must be a uint16 array, got {bits.dtype}")
            try:
                import ml_dtypes
            except ImportError:
                raise ValueError(f"{self.path}: {where} holds bfloat16 values; install ml_dtypes to "
                                 f"load it") from None
            return bits.view(ml_dtypes.bfloat16)
        if tag == "scalar":
            array = self._array(value.get("key"), where)
            if array.shape != ():
                raise ValueError(f"{self.path}: {where}: a scalar entry holds shape {array.shape}")
            return array[()]
        if tag == "float" and value.get("value") in ("nan", "inf", "-inf"):
            return float(value["value"])
        if tag == "tuple" and isinstance(value.get("items"), list):
            return tuple(self.decode(v, f"{where}[{i}]") for i, v in enumerate(value["items"]))
        if tag == "dict" and isinstance(value.get("items"), list):
            out = {}
            for item in value["items"]:
                if not (isinstance(item, list) and len(item) == 2):
                    raise ValueError(f"{self.path}: {where}: malformed dict item {item!r}")
                key = self.decode(item[0], f"{where} key")
                if isinstance(key, (list, dict)):
                    raise ValueError(f"{self.path}: {where}: unhashable key {key!r}")
                out[key] = self.decode(item[1], f"{where}[{key!r}]")
            return out
        if tag == "schedule":
            fn = _SCHEDULE_FUNCTIONS.get(value.get("name"))
            args = self.decode(value.get("args"), f"{where} args")
            if fn is None or not isinstance(args, dict):
                raise ValueError(f"{self.path}: {where}: unknown schedule {value.get('name')!r}")
            try:
                return fn(**args)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{self.path}: {where}: bad schedule arguments: {exc}") from None
        raise ValueError(f"{self.path}: {where}: unknown entry type {tag!r}")


def _params_of(opt):
    """The optimizer's param arrays in state_dict order (through the public param_groups)."""
    groups = getattr(opt, "param_groups", None)
    if not isinstance(groups, (list, tuple)) or not hasattr(opt, "state_dict") or not hasattr(opt, "load_state_dict"):
        raise TypeError(f"opt: expected an optimc optimizer (or MultiSteps), got {type(opt).__name__}")
    return [p for g in groups for p in g["params"]]


def _check_extras(extras):
    for i, obj in enumerate(extras):
        if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
            raise TypeError(f"extras[{i}]: expected an object with state_dict()/load_state_dict() "
                            f"(a scheduler, EMA, SWA), got {type(obj).__name__}")


def save(path, opt, *extras, metadata=None):
    """Write a checkpoint of `opt` (its params and ``state_dict()``) and of each of
    `extras` (schedulers, ``EMA``/``SWA``: anything with ``state_dict()``) to `path`,
    a ``.npz`` file, plus `metadata`, a JSON-able dict of your own (epoch, metrics...).

    The file holds arrays and plain data only (no pickle): :func:`load` reads it
    back without running code. It is written to a temporary file first and then
    renamed, so a crash mid-save leaves any previous file at `path` intact.
    A callable ``lr`` other than an ``optimc.schedules`` schedule cannot be saved
    (``TypeError``). The path is used as given (no suffix is added)."""
    params = _params_of(opt)
    _check_extras(extras)
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata: expected a dict or None, got {type(metadata).__name__}")
    enc = _Encoder()
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "params": enc.encode(list(params), "params"),
        "objects": [{"class": type(obj).__name__, "state": enc.encode(obj.state_dict(), name)}
                    for obj, name in [(opt, "opt")] + [(x, f"extras[{i}]") for i, x in enumerate(extras)]],
        "metadata": enc.encode(metadata, "metadata"),
    }
    text = json.dumps(doc, allow_nan=False)
    entries = dict(enc.arrays)
    entries[META_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".optimc-", suffix=".npz.tmp", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **entries)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _open(path):
    """The checkpoint's npz file, after checking that it is a zip of .npy arrays only."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an optimc checkpoint (not an .npz file; optimc.load never "
                         f"reads pickle files)")
    with zipfile.ZipFile(path) as z:
        others = [n for n in z.namelist() if not n.endswith(".npy")]
    if others:
        raise ValueError(f"{path}: not an optimc checkpoint (entries that are not .npy arrays: {others})")
    return np.load(path, allow_pickle=False)


def _document(dec):
    """The checkpoint's JSON document, checked for format and version."""
    if META_KEY not in dec.npz.files:
        raise ValueError(f"{dec.path}: not an optimc checkpoint (no {META_KEY} entry)")
    raw = dec._array(META_KEY, META_KEY)
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{dec.path}: {META_KEY} must be a 1-D uint8 array")
    try:
        doc = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{dec.path}: {META_KEY} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{dec.path}: not an optimc checkpoint (no format {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise ValueError(f"{dec.path}: checkpoint version {doc.get('version')!r}; "
                         f"this optimc reads version {VERSION}")
    return doc


def load(path, opt, *extras):
    """Restore a checkpoint written by :func:`save` into `opt` and `extras` (the same
    kinds of objects, in the same order, built as they were for the saved run —
    the optimizer with the same params and options, the schedulers on it). Returns
    the saved `metadata` (or ``None``).

    The params are written in place into the optimizer's arrays. Everything is
    checked before anything changes: on a mismatch (another optimizer class, other
    shapes or dtypes, a missing object) it raises ``ValueError`` and every param
    and state is as it was. Reading never runs code from the file."""
    params = _params_of(opt)
    _check_extras(extras)
    with _open(path) as npz:
        dec = _Decoder(npz, os.fspath(path))
        saved_params, states, metadata = _decode_all(dec, _document(dec), params, [opt] + list(extras))
    # Each load_state_dict checks its own input before taking it; if a later one
    # refuses, the earlier ones are put back, so a failed load changes nothing.
    targets = [opt] + list(extras)
    previous = []
    try:
        for target, state in zip(targets, states):
            before = target.state_dict()
            target.load_state_dict(state)
            previous.append((target, before))
    except BaseException:
        for target, before in reversed(previous):
            target.load_state_dict(before)
        raise
    for mine, new in zip(params, saved_params):
        np.copyto(mine, new)
    return metadata


def _decode_all(dec, doc, params, targets):
    """(params, states, metadata) decoded and checked against the objects to load into."""
    objects = doc.get("objects")
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise ValueError(f"{dec.path}: malformed object list")
    saved_names = [o.get("class") for o in objects]
    names = [type(t).__name__ for t in targets]
    if saved_names != names:
        raise ValueError(f"{dec.path}: holds the state of {saved_names}; load(path, ...) was given {names} "
                         f"(pass the same kinds of objects in the same order as to save)")
    saved_params = dec.decode(doc.get("params"), "params")
    if not isinstance(saved_params, list) or len(saved_params) != len(params):
        raise ValueError(f"{dec.path}: holds {len(saved_params) if isinstance(saved_params, list) else '?'} "
                         f"params, the optimizer has {len(params)}")
    for i, (new, mine) in enumerate(zip(saved_params, params)):
        if not isinstance(new, np.ndarray) or new.shape != mine.shape or new.dtype != mine.dtype:
            got = f"{new.dtype} {new.shape}" if isinstance(new, np.ndarray) else type(new).__name__
            raise ValueError(f"{dec.path}: params[{i}]: expected a {mine.dtype} array of shape "
                             f"{mine.shape}, got {got}")
        if not mine.flags.writeable:
            raise ValueError(f"params[{i}]: is read-only; cannot load into it")
    states = [dec.decode(o.get("state"), f"{o.get('class')} state") for o in objects]
    metadata = dec.decode(doc.get("metadata"), "metadata")
    unused = set(dec.npz.files) - dec.used
    if unused:
        raise ValueError(f"{dec.path}: unexpected entries {sorted(unused)}")
    return saved_params, states, metadata
