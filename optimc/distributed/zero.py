"""ZeRO stage 1: the optimizer state is split over the ranks.

The params of one dtype are numbered end to end as one flat buffer; rank r owns
a contiguous range of it, split on element boundaries (tensors may straddle
ranks) and balanced to within one 64-byte block. Each rank runs a plain optimc
optimizer (the *shard optimizer*) over 1-D views of the pieces of the user's
params that fall in its range, so it holds 1/N of the state. A step:

1. agreement: every rank checks its grads; any bad grad makes every rank raise;
2. ``Reduce_scatter(SUM)`` of the grads, one call per dtype, then ×1/N in the
   grads' dtype: each rank receives the mean grads of its range only;
3. the guard (``max_grad_norm=``, ``skip_nonfinite=``), global: one Allreduce
   of (sum of squares, non-finite count) over the ranks' shards;
4. one C step of the shard optimizer;
5. ``Allgatherv`` of the updated ranges, one call per dtype, into the params.

This needs an algorithm whose update of an element depends only on that element
and per-tensor scalars (the step count): every optimizer in ``optimc.ALL``.
A class that sets ``elementwise = False`` is refused.
"""
from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping

import numpy as np

from ..optimizers import Adam, Optimizer
from ..toolkit import grad_norm
from . import _mpi
from .flat import Layout, aligned_empty, split_arrays
from .wrapper import MPIOptimizer

_BLOCK_BYTES = 64


def shard_bounds(n, size, block):
    """[(lo, hi)] per rank: n elements in contiguous ranges of whole `block`s,
    sizes differing by at most one block."""
    blocks = -(-n // block)
    return [(min(n, r * blocks // size * block), min(n, (r + 1) * blocks // size * block))
            for r in range(size)]


def _check_param(label, a):
    if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{label}: expected a float32 or float64 ndarray, "
                        f"got {getattr(a, 'dtype', type(a).__name__)}")
    if not (a.flags.c_contiguous and a.flags.aligned and a.flags.writeable):
        raise ValueError(f"{label}: must be writeable, aligned and C-contiguous")


def _check_no_overlap(params, labels):
    spans = sorted((a.__array_interface__["data"][0], a.nbytes, k) for k, a in enumerate(params) if a.size)
    for (start, nbytes, k), (nxt, _, j) in zip(spans, spans[1:]):
        if nxt < start + nbytes:
            raise ValueError(f"{labels[j]}: shares memory with {labels[k]}; every param must be its own memory")


class _ShardedGroup(dict):
    """A param group of a ZeroRedundancyOptimizer: the full params, and
    hyperparameters that are checked and passed on to this rank's shard
    optimizer on assignment (so schedulers work as on any optimizer)."""

    _owner = None
    _index = 0

    def _inner(self):
        return self._owner.optimizer.param_groups[self._index]

    def __setitem__(self, key, value):
        owner = self._owner
        if owner is not None and key in ("params", "param_names"):
            raise ValueError(f"{key}: a group's params are fixed; use add_param_group for new ones")
        if owner is not None and key in owner.defaults:
            inner = self._inner()
            inner[key] = value           # checks it; raises and changes nothing when bad
            value = inner[key]
        dict.__setitem__(self, key, value)

    def update(self, *args, **kwargs):
        new = dict(*args, **kwargs)
        owner = self._owner
        hyper = {k: v for k, v in new.items() if owner is not None and k in owner.defaults}
        if hyper:
            inner = self._inner()
            inner.update(hyper)          # checked together, as optimc's groups do
            new.update({k: inner[k] for k in hyper})
        for key, value in new.items():
            if key in hyper:
                dict.__setitem__(self, key, value)
            else:
                self[key] = value

    def __delitem__(self, key):
        owner = self._owner
        if owner is not None and (key in owner.defaults or key in ("params", "param_names")):
            raise KeyError(f"{key}: cannot remove a hyperparameter or the params from a group")
        dict.__delitem__(self, key)

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def __reduce__(self):
        return (dict, (dict(self),))


def _normalise_groups(params):
    """[(arrays, names or None, other entries)] from params as optimc takes them."""
    if isinstance(params, (list, tuple)) and params and all(isinstance(g, Mapping) for g in params):
        groups = list(params)
    else:
        groups = [{"params": params}]
    out = []
    for g in groups:
        if "params" not in g:
            raise TypeError("param_group: expected a dict with a 'params' entry")
        arrays, names = split_arrays(g["params"], "params")
        if not arrays:
            raise ValueError("params: a param group needs at least one array")
        out.append((arrays, names, {k: v for k, v in g.items() if k not in ("params", "param_names")}))
    return out


class ZeroRedundancyOptimizer(MPIOptimizer):
    """ZeRO stage 1 over the ranks of `comm` (default ``MPI.COMM_WORLD``):
    each rank keeps the optimizer state of 1/N of the elements.

    ``ZeroRedundancyOptimizer(params, optimc.Adam, lr=1e-3)`` takes params as
    optimc's optimizers do (a list, a dict, or param groups) and the
    hyperparameters of `optimizer_class` as keywords. Create it on every rank
    with the same params and options; call ``step(grads)`` on every rank with
    that rank's grads. The params stay the user's arrays and after every step
    hold the same values on every rank.

    ``max_grad_norm=`` and ``skip_nonfinite=`` work on the global grads (all
    ranks together), as for one process. `timeout` (seconds; None: forever) is
    how long a rank waits for the others at the start of each collective call
    before it aborts the MPI job with a message.

    Checkpoints: ``consolidate_state_dict(to=0)`` returns on rank `to` the
    state_dict a single-process `optimizer_class` would have; it loads into a
    plain optimizer, or into a ZeroRedundancyOptimizer on any number of ranks.
    """

    _instead_of_pickle = "save consolidate_state_dict() instead"

    def __init__(self, params, optimizer_class=Adam, comm=None, *, timeout=_mpi.DEFAULT_TIMEOUT,
                 max_grad_norm=None, skip_nonfinite=False, **defaults):
        if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
            raise TypeError(f"optimizer_class: expected an optimc optimizer class such as optimc.Adam, "
                            f"got {optimizer_class!r}")
        if not getattr(optimizer_class, "elementwise", True):
            raise ValueError(f"optimizer_class: {optimizer_class.__name__} is not element-wise (its update "
                             f"of an element depends on other elements of the tensor), so a rank cannot "
                             f"step a shard of a tensor; use DistributedOptimizer for it")
        self.__dict__.update(optimizer_class=optimizer_class, comm=_mpi.communicator(comm),
                             timeout=_mpi.check_timeout(timeout), skipped_steps=0,
                             last_grad_norm=None, last_step_times={}, _defaults_in=dict(defaults))
        error, built = None, None
        try:
            groups = _normalise_groups(params)
            built = self._build(groups)
            built["optimizer"].set_guard(max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite)
            guard = (built["optimizer"].max_grad_norm, built["optimizer"].skip_nonfinite)
            built["optimizer"].set_guard()   # the shard optimizer sees one shard: the guard runs here
        except (TypeError, ValueError) as e:
            error = e
        signature = None if built is None else built["signature"]
        _mpi.agree(self.comm, error, self.timeout, "ZeroRedundancyOptimizer()", signature)
        self._commit(built)
        self.__dict__.update(max_grad_norm=guard[0], skip_nonfinite=guard[1])

    # ---- layout ----

    def _build(self, groups):
        """Everything that depends on the params, computed without changing self."""
        comm = self.comm
        params, labels, names, group_of = [], [], [], []
        named = [n is not None for _, n, _ in groups]
        if any(named) and not all(named):
            raise TypeError("params: name the arrays of every group (dicts) or of none (lists)")
        for gi, (arrays, gnames, _) in enumerate(groups):
            for k, a in enumerate(arrays):
                label = f"params[{gnames[k]!r}]" if gnames is not None else f"params[{len(params)}]"
                _check_param(label, a)
                params.append(a)
                labels.append(label)
                group_of.append(gi)
            names.extend(gnames or ())
        _check_no_overlap(params, labels)
        if all(named) and len(set(names)) != len(names):
            raise ValueError("params: a name is used twice")
        layout = Layout(params)
        bounds = {d: shard_bounds(n, comm.size, _BLOCK_BYTES // d.itemsize) for d, n in layout.sizes.items()}
        mine = {d: b[comm.rank] for d, b in bounds.items()}
        shard_grads = {d: aligned_empty(hi - lo, d) for d, (lo, hi) in mine.items()}

        # this rank's pieces, per group: (global index, start in the tensor, length, param view, grad view)
        pieces = [[] for _ in groups]
        own_pairs = {d: [] for d in layout.slots}   # (place in the shard buffer, param piece)
        for dtype, slots in layout.slots.items():
            lo, hi = mine[dtype]
            for i, offset, size in slots:
                if size == 0:   # an empty tensor belongs to rank 0, so that it has a state
                    if comm.rank == 0:
                        pieces[group_of[i]].append((i, 0, 0, params[i].reshape(-1), shard_grads[dtype][:0]))
                    continue
                a, b = max(offset, lo), min(offset + size, hi)
                if a < b:
                    piece = params[i].reshape(-1)[a - offset:b - offset]
                    grad = shard_grads[dtype][a - lo:b - lo]
                    pieces[group_of[i]].append((i, a - offset, b - a, piece, grad))
                    own_pairs[dtype].append((grad, piece))
        inner_groups, inner_map, inner_group_of, inner_grads = [], [], [], []
        for gi, (_, _, extra) in enumerate(groups):
            mine_here = sorted(pieces[gi], key=lambda x: x[0])
            if not mine_here:   # no element of this group here: a one-element stand-in keeps groups aligned
                mine_here = [(None, 0, 1, np.zeros(1), np.zeros(1))]
            inner_groups.append({**extra, "params": [p for _, _, _, p, _ in mine_here]})
            inner_map.extend(None if i is None else (i, a, n) for i, a, n, _, _ in mine_here)
            inner_grads.extend(g for *_, g in mine_here)
            inner_group_of.extend([gi] * len(mine_here))
        optimizer = self.optimizer_class(inner_groups, **self._defaults_in)

        wrapper_groups = []
        for gi, (arrays, gnames, extra) in enumerate(groups):
            g = _ShardedGroup()
            dict.update(g, {k: v for k, v in optimizer.param_groups[gi].items() if k != "params"})
            dict.__setitem__(g, "params", list(arrays))
            if gnames is not None:
                dict.__setitem__(g, "param_names", list(gnames))
            wrapper_groups.append(g)
        sizes = "/".join(str(len(a)) for a, _, _ in groups)
        return {
            "optimizer": optimizer, "param_groups": wrapper_groups, "_params": params,
            "_names": names if all(named) else None, "_group_of": group_of, "_layout": layout,
            "_bounds": bounds, "_shard_grads": shard_grads, "_inner_map": inner_map,
            "_inner_group_of": inner_group_of, "_inner_grads": inner_grads, "_own_pairs": own_pairs,
            "_param_regions": {d: layout.region(params, d) for d in layout.slots},
            "_scratch": {},
            "signature": f"{self.optimizer_class.__name__} groups of {sizes} params {layout.signature()}",
        }

    def _commit(self, built):
        built = dict(built)
        del built["signature"]
        self.__dict__.update(built)
        for gi, g in enumerate(self.param_groups):
            g._owner, g._index = self, gi

    def _full_buffer(self, dtype):
        """The reusable full-length buffer of `dtype` (allocated when first needed)."""
        buf = self._scratch.get(dtype)
        if buf is None:
            buf = self._scratch[dtype] = aligned_empty(self._layout.sizes[dtype], dtype)
        return buf

    # ---- the step ----

    def step(self, grads):
        """One step on the grads averaged over the ranks (see the module docstring)."""
        t0 = time.perf_counter()
        ordered = self._agreed_grads(grads)
        MPI, comm, layout = _mpi.mpi(), self.comm, self._layout
        t1 = time.perf_counter()
        t_pack = 0.0
        for dtype, shard in self._shard_grads.items():
            tp = time.perf_counter()
            full = layout.region(ordered, dtype)
            if full is None:
                full = self._full_buffer(dtype)
                layout.pack(ordered, dtype, full)
            t_pack += time.perf_counter() - tp
            counts = [hi - lo for lo, hi in self._bounds[dtype]]
            comm.Reduce_scatter(full, shard, recvcounts=counts, op=MPI.SUM)
            if comm.size > 1:
                shard *= dtype.type(1.0 / comm.size)
        if self.max_grad_norm is not None or self.skip_nonfinite:
            if self._global_guard():
                self.__dict__["skipped_steps"] += 1
                self._record_times(t0, t1, t_pack, time.perf_counter(), 0.0)
                return
        t2 = time.perf_counter()
        failure = None
        try:
            self.optimizer.step(self._inner_grads)
        except Exception as e:   # e.g. a callable lr that raised: still take part in the gather
            failure = e
        t3 = time.perf_counter()
        t_pack += self._gather_params()
        t4 = time.perf_counter()
        self._record_times(t0, t1, t_pack, t2 + (t4 - t3), t3 - t2)
        if failure is not None:
            raise failure

    def _record_times(self, t0, t1, t_pack, t_end, t_step):
        self.__dict__["last_step_times"] = {"agree": t1 - t0, "pack": t_pack,
                                            "communicate": t_end - t1 - t_pack, "step": t_step}

    def _global_guard(self):
        """Global norm and non-finite check over all ranks' shards; True to skip."""
        MPI = _mpi.mpi()
        shards = list(self._shard_grads.values())
        norm = grad_norm(self._inner_grads)   # tensor by tensor, in the order one process sums them
        nonfinite = 0.0
        if not math.isfinite(norm):
            nonfinite = float(sum(int(np.count_nonzero(~np.isfinite(s))) for s in shards))
        totals = np.array([norm * norm, nonfinite])
        if self.comm.size > 1:   # (one rank keeps its norm as is: the same bits as one process)
            self.comm.Allreduce(MPI.IN_PLACE, totals, op=MPI.SUM)
            norm = math.sqrt(totals[0])
        self.__dict__["last_grad_norm"] = norm
        # as the C guard: an overflowing norm of finite grads is skipped too
        if self.skip_nonfinite and (totals[1] > 0 or not math.isfinite(norm)):
            return True
        if self.max_grad_norm is not None:
            coef = self.max_grad_norm / (norm + 1e-6)
            if coef < 1.0:
                for shard in shards:
                    shard *= shard.dtype.type(coef)
        return False

    def _gather_params(self):
        """Every rank's updated range into every rank's params; returns the packing time."""
        MPI, comm, t_pack = _mpi.mpi(), self.comm, 0.0
        for dtype, bounds in self._bounds.items():
            counts = [hi - lo for lo, hi in bounds]
            spec = (counts, [lo for lo, _ in bounds], _mpi.mpi_type(dtype))
            region = self._param_regions[dtype]
            if region is not None:
                comm.Allgatherv(MPI.IN_PLACE, [region, *spec])
                continue
            tp = time.perf_counter()
            send = self._shard_grads[dtype]       # the grads are spent: reuse their buffer
            for place, piece in self._own_pairs[dtype]:
                np.copyto(place, piece)
            full = self._full_buffer(dtype)
            t_pack += time.perf_counter() - tp
            comm.Allgatherv(send, [full, *spec])
            tp = time.perf_counter()
            self._layout.unpack(full, dtype, self._params, skip=bounds[comm.rank])
            t_pack += time.perf_counter() - tp
        return t_pack

    # ---- what it shows ----

    @property
    def params(self):
        """The params (the user's arrays), as given: a list, or a dict when named."""
        return dict(zip(self._names, self._params)) if self._names is not None else list(self._params)

    @property
    def defaults(self):
        return self.optimizer.defaults

    @property
    def step_count(self):
        return self.optimizer.step_count

    @property
    def last_lr(self):
        return self.optimizer.last_lr

    @property
    def state_bytes(self):
        """Bytes of optimizer state on this rank (about 1/N of one process's)."""
        stand_ins = sum(v.nbytes for k, m in enumerate(self._inner_map) if m is None
                        for v in self.optimizer.state[k].values() if isinstance(v, np.ndarray))
        return self.optimizer.state_bytes - stand_ins

    def set_guard(self, *, max_grad_norm=None, skip_nonfinite=False):
        """Clip the global grad norm to `max_grad_norm` and/or skip steps whose
        grads (on any rank) hold NaN or ±Inf, as optimc's ``set_guard``."""
        self.optimizer.set_guard(max_grad_norm=max_grad_norm, skip_nonfinite=skip_nonfinite)
        checked = (self.optimizer.max_grad_norm, self.optimizer.skip_nonfinite)
        self.optimizer.set_guard()
        self.__dict__.update(max_grad_norm=checked[0], skip_nonfinite=checked[1])

    def __getattr__(self, name):
        if name == "state":
            raise AttributeError("state: a ZeroRedundancyOptimizer's state is split over the ranks; "
                                 "consolidate_state_dict() gathers it, .optimizer.state is this rank's shard")
        inner = self.__dict__.get("optimizer")
        if inner is not None and name in inner.defaults:
            return getattr(inner, name)
        raise AttributeError(f"'ZeroRedundancyOptimizer' object has no attribute {name!r}")

    def _set_hyper(self, name, value):
        inner = self.__dict__.get("optimizer")
        if inner is None or name not in inner.defaults:
            return False
        setattr(inner, name, value)          # checked against every group first
        for gi, g in enumerate(self.param_groups):
            dict.__setitem__(g, name, inner.param_groups[gi][name])
        return True

    def __repr__(self):
        n = len(self._params)
        return (f"ZeroRedundancyOptimizer({self.optimizer_class.__name__}, {n} param{'s' * (n != 1)}, "
                f"rank {self.comm.rank} of {self.comm.size}, {self.state_bytes:,} state bytes here, "
                f"step {self.step_count})")

    # ---- checkpoints ----

    def consolidate_state_dict(self, to=0):
        """The state_dict of the whole optimizer, as a single-process
        `optimizer_class` over the same params would return it, on rank `to`
        (None on the others); ``to=None``: on every rank. Call it on every rank."""
        if to is not None:
            to = _mpi.check_root(to, self.comm)
        _mpi.agree(self.comm, None, self.timeout, "consolidate_state_dict()")
        local = self.optimizer.state_dict()
        pieces = [(m[0], m[1], local["state"][k]) for k, m in enumerate(self._inner_map) if m is not None]
        if to is None:
            everyone = self.comm.allgather(pieces)
        else:
            everyone = self.comm.gather(pieces, root=to)
            if self.comm.rank != to:
                return None
        by_param = {}
        for i, start, entry in (p for rank_pieces in everyone for p in rank_pieces):
            by_param.setdefault(i, []).append((start, entry))
        state = {}
        for i, p in enumerate(self._params):
            parts = [e for _, e in sorted(by_param[i], key=lambda x: x[0])]
            state[i] = {key: (np.concatenate([e[key] for e in parts]).reshape(p.shape)
                              if isinstance(parts[0][key], np.ndarray) else parts[0][key])
                        for key in parts[0]}
        groups, start = [], 0
        for g in self.param_groups:
            plain = {k: v for k, v in g.items() if k not in ("params", "param_names")}
            plain["params"] = list(range(start, start + len(g["params"])))
            if "param_names" in g:
                plain["param_names"] = list(g["param_names"])
            start += len(g["params"])
            groups.append(plain)
        out = {k: v for k, v in local.items() if k not in ("state", "param_groups")}
        out.update(state=state, param_groups=groups, step_count=self.step_count,
                   skipped_steps=self.skipped_steps)
        return out

    def _shard_state_dict(self, sd, base):
        """This rank's shard-optimizer state_dict cut from the whole-optimizer
        `sd`; stand-ins keep their state from `base` (the shard optimizer's own)."""
        if not isinstance(sd, Mapping):
            raise TypeError(f"state_dict: expected a dict, got {type(sd).__name__}")
        groups, state = sd.get("param_groups"), sd.get("state")
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict: expected {len(self.param_groups)} param groups, got "
                             f"{len(groups) if isinstance(groups, list) else groups!r}")
        if not isinstance(state, Mapping) or len(state) != len(self._params):
            raise ValueError(f"state_dict: expected state for {len(self._params)} params")
        start, inner_start, inner_groups = 0, 0, []
        counts = [self._inner_group_of.count(gi) for gi in range(len(groups))]
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            n = len(mine["params"])
            if not isinstance(saved, Mapping) or list(saved.get("params", ())) != list(range(start, start + n)):
                raise ValueError(f"state_dict: param group {gi} should hold params {start}..{start + n - 1}")
            if saved.get("param_names", mine.get("param_names")) != mine.get("param_names"):
                raise ValueError(f"state_dict: param group {gi} names {saved.get('param_names')} "
                                 f"differ from {mine.get('param_names')}")
            plain = {k: v for k, v in saved.items() if k not in ("params", "param_names")}
            plain["params"] = list(range(inner_start, inner_start + counts[gi]))
            inner_groups.append(plain)
            start += n
            inner_start += counts[gi]
        self._check_entries(state, base)
        inner_state = {}
        for k, m in enumerate(self._inner_map):
            if m is None:
                inner_state[k] = base["state"][k]
                continue
            i, a, length = m
            inner_state[k] = {key: (np.ascontiguousarray(v).reshape(-1)[a:a + length].copy()
                                    if isinstance(v, np.ndarray) else v)
                              for key, v in state[i].items()}
        skipped = sd.get("skipped_steps", 0)
        if isinstance(skipped, bool) or not isinstance(skipped, numbers.Integral) or skipped < 0:
            raise ValueError(f"state_dict: bad step counters {(sd.get('step_count'), skipped)!r}")
        out = {k: v for k, v in sd.items() if k not in ("state", "param_groups", "skipped_steps")}
        out.update(state=inner_state, param_groups=inner_groups, skipped_steps=0)
        return out, int(skipped)

    def _check_entries(self, state, base):
        """Every param's state entry, including those this rank holds no piece
        of, so that every rank refuses a bad checkpoint together. A group's
        entries have the keys of its pieces' (or stand-in's) state here."""
        sample = {}
        for k, gi in enumerate(self._inner_group_of):
            sample.setdefault(gi, base["state"][k])
        for i, p in enumerate(self._params):
            entry, want = state.get(i), sample[self._group_of[i]]
            if not isinstance(entry, Mapping):
                raise ValueError(f"state_dict: no state for param {i}")
            if set(entry) != set(want):
                raise ValueError(f"state_dict: state[{i}] holds {sorted(entry)}, expected {sorted(want)}")
            for key, value in entry.items():
                label = f"state_dict: state[{i}][{key!r}]"
                if isinstance(want[key], np.ndarray):
                    if not isinstance(value, np.ndarray) or value.shape != p.shape or value.dtype != p.dtype:
                        got = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) \
                            else type(value).__name__
                        raise ValueError(f"{label}: expected a {p.dtype} array of shape {p.shape}, got {got}")
                elif isinstance(want[key], numbers.Integral):
                    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                        raise ValueError(f"{label} must be an integer >= 0, got {value!r}")
                elif isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                    raise ValueError(f"{label} must be a finite number, got {value!r}")

    def load_state_dict(self, state_dict, root=None):
        """Take the whole-optimizer `state_dict` (from ``consolidate_state_dict``,
        or a single-process optimizer's ``state_dict()``, saved at any number of
        ranks) on every rank, or, if any rank refuses it, on none. Every rank
        passes it; with `root`, only rank `root` needs to (the others pass None)."""
        if root is not None:
            root = _mpi.check_root(root, self.comm)
        _mpi.agree(self.comm, None, self.timeout, "load_state_dict()")
        if root is not None:
            state_dict = self.comm.bcast(state_dict if self.comm.rank == root else None, root=root)
        backup = self.optimizer.state_dict()
        error, loaded = None, False
        try:
            inner_sd, skipped = self._shard_state_dict(state_dict, backup)
            self.optimizer.load_state_dict(inner_sd)
            loaded = True
        except (TypeError, ValueError) as e:
            error = e
        try:
            _mpi.agree(self.comm, error, self.timeout, "load_state_dict()")
        except Exception:
            if loaded:
                self.optimizer.load_state_dict(backup)
            raise
        self.__dict__["skipped_steps"] = skipped
        for gi, (g, saved) in enumerate(zip(self.param_groups, state_dict["param_groups"])):
            dict.update(g, {k: v for k, v in self.optimizer.param_groups[gi].items() if k != "params"})
            dict.update(g, {k: v for k, v in saved.items()
                            if k not in ("params", "param_names") and k not in self.defaults})

    # ---- more params ----

    def add_param_group(self, param_group):
        """Add a group (on every rank, with the same shapes): the ranges are cut
        anew over all params and the existing state moves to its new owners."""
        old = self.consolidate_state_dict(to=None)
        error, built = None, None
        try:
            if not isinstance(param_group, Mapping) or "params" not in param_group:
                raise TypeError("param_group: expected a dict with a 'params' entry")
            groups = [(g["params"], g.get("param_names"),
                       {k: v for k, v in g.items() if k not in ("params", "param_names")})
                      for g in self.param_groups]
            groups += _normalise_groups([param_group])
            built = self._build(groups)
            fresh = built["optimizer"].state_dict()
            for k, m in enumerate(built["_inner_map"]):
                if m is not None and m[0] < len(self._params):
                    i, a, length = m
                    fresh["state"][k] = {key: (v.reshape(-1)[a:a + length].copy()
                                               if isinstance(v, np.ndarray) else v)
                                         for key, v in old["state"][i].items()}
            fresh["step_count"] = old["step_count"]
            built["optimizer"].load_state_dict(fresh)
            built["optimizer"].set_guard()
        except (TypeError, ValueError) as e:
            error = e
        signature = None if built is None else built["signature"]
        _mpi.agree(self.comm, error, self.timeout, "add_param_group()", signature)
        self._commit(built)
