"""Arrays laid out end to end in one contiguous buffer per dtype.

MPI moves one buffer per call, so the distributed optimizers work on one flat
buffer per dtype. When the user's arrays already tile such a buffer (views made
by :class:`FlatBuffer`, or slices of one big array of their own), the buffer is
used in place; otherwise the arrays are copied into a reusable one.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_ALIGN = 64   # bytes: buffers start on a cache line, like the C kernels' thread splits


def split_arrays(obj, what):
    """(arrays, names or None) from a list/tuple or dict of arrays."""
    if isinstance(obj, np.ndarray):
        raise TypeError(f"{what}: expected a list or dict of arrays, got a single ndarray; wrap it in a list")
    if isinstance(obj, Mapping):
        return list(obj.values()), list(obj.keys())
    if isinstance(obj, (list, tuple)):
        return list(obj), None
    raise TypeError(f"{what}: expected a list or dict of arrays, got {type(obj).__name__}")


def _address(a):
    return a.__array_interface__["data"][0]


def _owner(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def tiled_region(arrays):
    """The 1-D array that `arrays` (one dtype, C-contiguous) tile end to end in
    this order, as a view of the memory they share, or None. Empty arrays hold
    no bytes and are skipped."""
    arrays = [a for a in arrays if a.size]
    if not arrays:
        return None
    owner = _owner(arrays[0])
    if not owner.flags.c_contiguous:
        return None
    start = pos = _address(arrays[0]) - _address(owner)
    for a in arrays:
        if _owner(a) is not owner or not a.flags.c_contiguous or _address(a) - _address(owner) != pos:
            return None
        pos += a.nbytes
    if start < 0 or pos > owner.nbytes:
        return None
    region = np.ndarray((pos - start) // arrays[0].itemsize, arrays[0].dtype, buffer=owner, offset=start)
    if not owner.flags.writeable:
        region.flags.writeable = False
    return region


def aligned_empty(n, dtype):
    """An uninitialised 1-D array of n elements starting on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    raw = np.empty(n * dtype.itemsize + _ALIGN, np.uint8)
    skip = -_address(raw) % _ALIGN
    return raw[skip:skip + n * dtype.itemsize].view(dtype)


class Layout:
    """Where each array of an ordered list sits in one flat buffer per dtype:
    ``slots[dtype]`` lists (index, offset, size) in order, ``sizes[dtype]`` the
    buffer's length."""

    def __init__(self, arrays):
        self.shapes = [a.shape for a in arrays]
        self.dtypes = [a.dtype for a in arrays]
        self.slots, self.sizes = {}, {}
        for i, a in enumerate(arrays):
            slots = self.slots.setdefault(a.dtype, [])
            offset = self.sizes.get(a.dtype, 0)
            slots.append((i, offset, a.size))
            self.sizes[a.dtype] = offset + a.size

    def signature(self):
        """A short text equal for equal layouts (compared across ranks)."""
        return "[" + ", ".join(f"{d} {s}" for d, s in zip(self.dtypes, self.shapes)) + "]"

    def views(self, buffers):
        """The arrays' shapes as views of `buffers` (dtype -> 1-D array), in order
        (None for the arrays of a dtype that `buffers` lacks)."""
        out = [None] * len(self.shapes)
        for dtype, slots in self.slots.items():
            if dtype not in buffers:
                continue
            for i, offset, size in slots:
                out[i] = buffers[dtype][offset:offset + size].reshape(self.shapes[i])
        return out

    def region(self, arrays, dtype, writeable=False):
        """The flat buffer `arrays` of `dtype` already tile, or None."""
        chosen = [arrays[i] for i, _, _ in self.slots[dtype]]
        if writeable and not all(a.flags.writeable for a in chosen):
            return None
        return tiled_region(chosen)

    def pack(self, arrays, dtype, buffer):
        for i, offset, size in self.slots[dtype]:
            buffer[offset:offset + size] = arrays[i].reshape(-1)

    def unpack(self, buffer, dtype, arrays, skip=(0, 0)):
        """Copy `buffer` into the arrays of `dtype`, except flat positions in [skip)."""
        lo, hi = skip
        for i, offset, size in self.slots[dtype]:
            dest = arrays[i].reshape(-1)
            for a, b in ((offset, min(offset + size, lo)), (max(offset, hi), offset + size)):
                if a < b:
                    dest[a - offset:b - offset] = buffer[a:b]


class FlatBuffer:
    """Zero-filled (or copied) arrays shaped like `arrays`, all views of one
    64-byte aligned buffer per dtype.

    ``views`` are the new arrays (a dict when `arrays` is one), ``buffers`` maps
    each dtype to its 1-D buffer. Pass the views as params or grads to the
    distributed optimizers and their data moves with no packing copy::

        flat = FlatBuffer(params, copy=True)   # params: list or dict of arrays
        params = flat.views                    # train these from now on
        grads = FlatBuffer(params)             # write each step's grads into grads.views
    """

    def __init__(self, arrays, copy=False):
        arrays_list, names = split_arrays(arrays, "arrays")
        for i, a in enumerate(arrays_list):
            if not isinstance(a, np.ndarray) or a.dtype not in _DTYPES:
                raise TypeError(f"arrays[{names[i] if names else i}]: expected a float32 or float64 "
                                f"ndarray, got {getattr(a, 'dtype', type(a).__name__)}")
        self.layout = Layout(arrays_list)
        self.buffers = {d: aligned_empty(n, d) for d, n in self.layout.sizes.items()}
        views = self.layout.views(self.buffers)
        for v, a in zip(views, arrays_list):
            if copy:
                np.copyto(v, a)
            else:
                v[...] = 0
        self.views = dict(zip(names, views)) if names is not None else views

    def __repr__(self):
        sizes = ", ".join(f"{d}: {b.size:,}" for d, b in self.buffers.items())
        return f"FlatBuffer({len(self.layout.shapes)} arrays; {sizes} elements)"


def check_grads(grads, params, names):
    """`grads` as a list in param order, checked as optimc's step checks them:
    same container kind, count or keys, ndarray, dtype, shape, C-contiguous."""
    if names is not None:
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads: the params are named, so step() takes a dict name -> array with "
                            f"the same keys; got {type(grads).__name__}")
        missing = [n for n in names if n not in grads]
        if missing:
            raise ValueError(f"grads[{missing[0]!r}]: missing")
        known = set(names)
        extra = [k for k in grads if k not in known]
        if extra:
            raise ValueError(f"grads[{extra[0]!r}]: not a param of this optimizer")
        ordered = [grads[n] for n in names]
        labels = [f"grads[{n!r}]" for n in names]
    else:
        if not isinstance(grads, (list, tuple)):
            raise TypeError(f"grads: expected a list or tuple of {len(params)} arrays (one per param, "
                            f"in order), got {type(grads).__name__}")
        if len(grads) != len(params):
            raise ValueError(f"grads: expected {len(params)} arrays (one per param), got {len(grads)}")
        ordered = list(grads)
        labels = [f"grads[{i}]" for i in range(len(params))]
    for label, g, p in zip(labels, ordered, params):
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{label}: expected a numpy.ndarray, got {type(g).__name__}")
        if g.dtype != p.dtype:
            raise TypeError(f"{label}: expected dtype {p.dtype} (the param's), got {g.dtype}; "
                            f"optimc never casts silently")
        if g.shape != p.shape:
            raise ValueError(f"{label}: expected shape {p.shape} (the param's), got {g.shape}")
        if not (g.flags.c_contiguous and g.flags.aligned):
            raise ValueError(f"{label}: must be C-contiguous and aligned; pass np.ascontiguousarray(grad)")
    return ordered
