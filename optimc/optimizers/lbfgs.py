"""L-BFGS (torch.optim.LBFGS 2.13): ``opt.step(closure)``, where the closure
returns ``(loss, grads)`` computed by the user's NumPy code at the current
params. Each step runs up to ``max_iter`` quasi-Newton iterations, with a
fixed step ``lr`` or a strong-Wolfe line search.

The vector work is C (csrc/lbfgs.c through optimc._core): the two-loop
recursion, the curvature pairs, dot products and the param moves. The
curvature history lives in C-allocated arrays (``optimc._core.zeros_like``);
the scalar logic (step length, line search, stopping tests) is a line-by-line
port of torch's, so float64 runs follow torch's path.

A step is all-or-nothing: if the closure raises, or returns something
malformed or non-finite, the params are put back and the state is left as
it was before the step (new history arrays are made for each pair, never
written over old ones, so the old state needs no copy)."""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from .. import _checks, _core
from .groups import split_params
from .special import SpecialOptimizer, check_grad, check_param, label

__all__ = ["LBFGS"]

_HYPER = ("lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change", "history_size", "line_search_fn")
_LINE_SEARCHES = ("strong_wolfe",)


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2), clamped to
    ``bounds`` (the interval between the points by default); the midpoint when
    the cubic has none."""
    if bounds is not None:
        lo, hi = bounds
    else:
        lo, hi = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    if d2_square >= 0:
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, lo), hi)
    return (lo + hi) / 2.0


def _strong_wolfe(obj_func, t, d, f, g, gtd, rnd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """Line search along d from the current params (loss f, flat grad g,
    directional derivative gtd) for a step t satisfying the strong Wolfe
    conditions: bracketing, then zoom by cubic interpolation (torch's
    ``_strong_wolfe``, ported from minFunc's lswolfe). ``obj_func(t)`` is
    (loss, flat grad) at params + t·d; ``rnd`` rounds a dot product to the
    params' dtype. Returns (loss, flat grad, t, evaluations)."""
    d_norm = _core.vec_abs_max_sum(d)[0]
    f_new, g_new = obj_func(t)
    ls_func_evals = 1
    gtd_new = rnd(_core.vec_dot(g_new, d))

    # bracket an interval containing a point satisfying the Wolfe criteria
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        # extrapolate
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new = obj_func(t)
        ls_func_evals += 1
        gtd_new = rnd(_core.vec_dot(g_new, d))
        ls_iter += 1

    if ls_iter == max_ls:
        bracket, bracket_f = [0, t], [f, f_new]
        bracket_g = [g, g_new]

    # zoom: refine the bracket until a point satisfies the criteria
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                               bracket[1], bracket_f[1], bracket_gtd[1])
        # too close to an end of the bracket (or outside it) twice in a row:
        # move 0.1 of the bracket's length inside it
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False

        f_new, g_new = obj_func(t)
        ls_func_evals += 1
        gtd_new = rnd(_core.vec_dot(g_new, d))
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Armijo condition fails, or no lower than the lowest point
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new, gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                # the old high end becomes the new low end
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new, gtd_new

    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals


def _check_hyper(h):
    """Checked copy of L-BFGS's hyperparameters (max_eval None → max_iter·5//4, as torch)."""
    out = {"lr": _checks.nonneg("lr", h["lr"]),
           "max_iter": _checks.count("max_iter", h["max_iter"])}
    max_eval = h["max_eval"]
    out["max_eval"] = out["max_iter"] * 5 // 4 if max_eval is None else _checks.count("max_eval", max_eval)
    out["tolerance_grad"] = _checks.nonneg("tolerance_grad", h["tolerance_grad"])
    out["tolerance_change"] = _checks.nonneg("tolerance_change", h["tolerance_change"])
    out["history_size"] = _checks.count("history_size", h["history_size"])
    ls = h["line_search_fn"]
    out["line_search_fn"] = None if ls is None else _checks.choice("line_search_fn", ls, _LINE_SEARCHES)
    return out


def _check_params(arrays, names):
    if not arrays:
        raise ValueError("params: LBFGS needs at least one array")
    for i, p in enumerate(arrays):
        lab = label(names, i)
        check_param(lab, p)
        if p.dtype != arrays[0].dtype:
            raise TypeError(f"{lab}: is {p.dtype} but {label(names, 0)} is {arrays[0].dtype}; L-BFGS works on "
                            f"all params as one vector of one dtype")
        for j in range(i):
            if np.may_share_memory(p, arrays[j]):
                raise ValueError(f"{lab}: shares memory with {label(names, j)}")


class LBFGS(SpecialOptimizer):
    """L-BFGS with torch.optim.LBFGS's arguments, defaults and results:
    ``opt.step(closure)``, where ``closure()`` returns ``(loss, grads)`` at
    the current params (grads as a list in the params' order, or a dict when
    the params are named). One param group (torch allows no more). State
    (``opt.state``, torch's names): ``d``, ``t``, ``old_dirs``, ``old_stps``,
    ``ro``, ``H_diag``, ``prev_flat_grad``, ``prev_loss``, ``n_iter``,
    ``func_evals``. The history takes up to ``2·history_size`` vectors of
    all params' size."""

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
                 history_size=100, line_search_fn=None):
        hyper = _check_hyper(dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                                  tolerance_change=tolerance_change, history_size=history_size,
                                  line_search_fn=line_search_fn))
        if isinstance(params, (list, tuple)) and params and all(isinstance(g, Mapping) for g in params):
            if len(params) != 1:
                raise ValueError(f"params: LBFGS takes one param group (as torch.optim.LBFGS), got {len(params)}; "
                                 f"it works on all params as one vector")
            group = dict(params[0])
            if "params" not in group:
                raise TypeError("params[0]: expected a dict with a 'params' entry")
            unknown = [k for k in group if k not in _HYPER and k != "params"]
            if unknown:
                raise TypeError(f"params[0]: {unknown[0]!r} is not a hyperparameter of LBFGS "
                                f"(it has {', '.join(_HYPER)})")
            hyper = _check_hyper({**hyper, **{k: v for k, v in group.items() if k in _HYPER}})
            params = group["params"]
        arrays, names = split_params(params)
        _check_params(arrays, names)
        self._params = tuple(arrays)
        self._names = names
        self._dtype = arrays[0].dtype
        self._n = sum(p.size for p in arrays)
        self._offsets = np.cumsum([0] + [p.size for p in arrays]).tolist()
        self._template = np.empty(self._n, self._dtype)   # shape and dtype of every flat vector
        group = {**hyper, "params": self._params}
        if names is not None:
            group["param_names"] = tuple(names)
        self._groups = (group,)
        self._defaults = dict(hyper)
        self._state = {"func_evals": 0, "n_iter": 0}

    # ---- the public face ----

    @property
    def state(self):
        """The global state, under torch's names (L-BFGS keeps no per-param state).
        Arrays are the C-allocated buffers themselves: read them, do not write them."""
        return self._state

    def __repr__(self):
        g = self._groups[0]
        hyper = ", ".join(f"{k}={g[k]!r}" for k in _HYPER)
        return f"LBFGS({len(self._params)} params, {self._n} elements, {self._dtype}; {hyper})"

    # ---- flat vectors ----

    def _flat(self):
        return _core.zeros_like(self._template)

    def _round(self, x):
        """A dot product's value as torch holds it: a 0-d tensor of the params' dtype."""
        return float(self._dtype.type(x))

    def _add_direction(self, t, d):
        """params += t·d (d flat)."""
        for p, a, b in zip(self._params, self._offsets, self._offsets[1:]):
            _core.vec_axpy(t, d[a:b], p.reshape(-1))

    def _evaluate(self, closure):
        """(loss, flat grad) from one call of the closure, checked."""
        out = closure()
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError(f"closure: must return a pair (loss, grads), got {type(out).__name__}")
        loss, grads = out
        if isinstance(loss, np.ndarray) and loss.ndim == 0:
            loss = loss[()]
        if isinstance(loss, (bool, np.bool_)) or not isinstance(loss, numbers.Real):
            raise TypeError(f"closure's loss: expected a real number, got {type(loss).__name__}")
        loss = float(loss)
        if not math.isfinite(loss):
            raise ValueError(f"closure's loss: is {loss} at the current params; L-BFGS needs finite values "
                             f"(lower lr, or use line_search_fn='strong_wolfe')")
        grads = self._grads_in_order(grads, "closure's grads")
        flat = self._flat()
        for i, (p, g, a, b) in enumerate(zip(self._params, grads, self._offsets, self._offsets[1:])):
            lab = "closure's " + self._label(i, "grads")
            check_grad(lab, g, p)
            flat[a:b] = g.reshape(-1)
            if not math.isfinite(_core.vec_abs_max_sum(flat[a:b])[0]):
                raise ValueError(f"{lab}: holds NaN or ±inf at the current params")
        return loss, flat

    # ---- the step ----

    def step(self, closure):
        """Run up to ``max_iter`` L-BFGS iterations; ``closure()`` returns
        ``(loss, grads)`` at the current params and is called up to
        ``max_eval`` times (plus one). Returns the loss of the first call.
        If anything fails, params and state are as they were before."""
        if not callable(closure):
            raise TypeError(f"closure: expected a callable returning (loss, grads), got {type(closure).__name__}")
        group = _check_hyper(self._groups[0])
        saved = [p.copy() for p in self._params]
        state = dict(self._state)
        try:
            loss = self._iterate(closure, group, state)
        except BaseException:
            for p, s in zip(self._params, saved):
                np.copyto(p, s)
            raise
        self._state = state
        return loss

    def _iterate(self, closure, group, state):
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        line_search_fn, history_size = group["line_search_fn"], group["history_size"]
        rnd = self._round

        orig_loss, flat_grad = self._evaluate(closure)
        loss = orig_loss
        current_evals = 1
        state["func_evals"] += 1
        grad_max, grad_sum = _core.vec_abs_max_sum(flat_grad)
        if grad_max <= tolerance_grad:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        H_diag, prev_flat_grad, prev_loss = state.get("H_diag"), state.get("prev_flat_grad"), state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # the descent direction
            if state["n_iter"] == 1:
                d = self._flat()
                _core.vec_axpy(-1.0, flat_grad, d)
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1.0
            else:
                # the curvature pair of the last move, kept if y·s > 1e-10;
                # new arrays each time, so the history before this step stays intact
                y, s = self._flat(), self._flat()
                ys, yy = _core.lbfgs_pair(flat_grad, prev_flat_grad, d, t, y, s)
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs, old_stps, ro = old_dirs[1:], old_stps[1:], ro[1:]
                    old_dirs, old_stps = old_dirs + [y], old_stps + [s]
                    ro = ro + [rnd(1.0 / ys)]
                    H_diag = rnd(ys / yy)
                d = self._flat()
                _core.lbfgs_direction(flat_grad, old_dirs, old_stps, ro, H_diag, d)

            prev_flat_grad = flat_grad
            prev_loss = loss

            # the step length
            if state["n_iter"] == 1:
                inv = rnd(1.0 / rnd(grad_sum))
                t = rnd(inv * lr) if inv < 1.0 else lr
            else:
                t = lr
            gtd = rnd(_core.vec_dot(flat_grad, d))
            if gtd > -tolerance_change:
                break

            ls_func_evals = 0
            if line_search_fn is not None:
                x_init = [p.copy() for p in self._params]

                def obj_func(step_t, d=d, x_init=x_init):
                    self._add_direction(step_t, d)
                    try:
                        return self._evaluate(closure)
                    finally:
                        for p, x in zip(self._params, x_init):
                            np.copyto(p, x)

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    obj_func, t, d, loss, flat_grad, gtd, rnd, max_ls=max_eval - current_evals)
                self._add_direction(t, d)
                grad_max = _core.vec_abs_max_sum(flat_grad)[0]
                opt_cond = grad_max <= tolerance_grad
            else:
                self._add_direction(t, d)
                opt_cond = False
                if n_iter != max_iter:
                    # not re-evaluated after the last iteration (torch's choice:
                    # in a stochastic setting that evaluation would be wasted)
                    loss, flat_grad = self._evaluate(closure)
                    grad_max = _core.vec_abs_max_sum(flat_grad)[0]
                    opt_cond = grad_max <= tolerance_grad
                    ls_func_evals = 1

            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            # stopping tests
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if rnd(_core.vec_abs_max_sum(d)[0] * abs(t)) <= tolerance_change:   # max |t·d|
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        state.update(d=d, t=float(t), old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=float(H_diag),
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss

    # ---- checkpoints ----

    def state_dict(self):
        """Plain data (copies): ``{"state": {0: {...}}, "param_groups": [{...}]}``
        as torch lays it out (the global state under the first param's index)."""
        st = {}
        for k, v in self._state.items():
            if isinstance(v, np.ndarray):
                v = v.copy()
            elif isinstance(v, list):
                v = [x.copy() if isinstance(x, np.ndarray) else x for x in v]
            st[k] = v
        g = {k: self._groups[0][k] for k in _HYPER}
        g["params"] = list(range(len(self._params)))
        if self._names is not None:
            g["param_names"] = list(self._names)
        return {"state": {0: st}, "param_groups": [g]}

    def load_state_dict(self, state_dict):
        """Take a ``state_dict()``: every entry is checked (keys, types, sizes,
        dtype) before anything changes; arrays are copied into C-allocated buffers."""
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError("state_dict: expected a dict with exactly 'state' and 'param_groups'")
        groups = state_dict["param_groups"]
        if not isinstance(groups, (list, tuple)) or len(groups) != 1 or not isinstance(groups[0], Mapping):
            raise ValueError("state_dict['param_groups']: expected a list of one group (LBFGS has one)")
        g = groups[0]
        if list(g.get("params", ())) != list(range(len(self._params))):
            raise ValueError(f"state_dict['param_groups'][0]['params']: expected {list(range(len(self._params)))} "
                             f"(this optimizer has {len(self._params)} params)")
        if self._names is not None and list(g.get("param_names", ())) != list(self._names):
            raise ValueError(f"state_dict['param_groups'][0]['param_names']: expected {list(self._names)}")
        missing = [k for k in _HYPER if k not in g]
        if missing:
            raise ValueError(f"state_dict['param_groups'][0]: missing {missing[0]!r}")
        hyper = _check_hyper({k: g[k] for k in _HYPER})
        outer = state_dict["state"]
        if not isinstance(outer, Mapping) or set(outer) not in (set(), {0}):
            raise ValueError("state_dict['state']: expected {} or {0: {...}}")
        entry = outer.get(0, {"func_evals": 0, "n_iter": 0})
        if not isinstance(entry, Mapping):
            raise ValueError("state_dict['state'][0]: expected a dict")
        new = self._checked_state(entry, hyper["history_size"])
        dict.update(self._groups[0], hyper)
        self._state = new

    def _checked_state(self, entry, history_size):
        known = {"func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad",
                 "prev_loss"}
        where = "state_dict['state'][0]"
        unknown = sorted(set(entry) - known, key=str)
        if unknown:
            raise ValueError(f"{where}: unknown entry {unknown[0]!r} (LBFGS keeps {sorted(known)})")
        for k in ("func_evals", "n_iter"):
            if k not in entry:
                raise ValueError(f"{where}: missing {k!r}")
        out = {k: _checks.integer(f"{where}[{k!r}]", entry[k], lo=0) for k in ("func_evals", "n_iter")}
        rest = known - {"func_evals", "n_iter"}
        present = rest & set(entry)
        if present and present != rest:
            raise ValueError(f"{where}: has {sorted(present)} but not {sorted(rest - present)}; these come together")
        if not present:
            return out

        def vector(name, v):
            if not isinstance(v, np.ndarray):
                raise TypeError(f"{name}: expected a numpy.ndarray, got {type(v).__name__}")
            if v.dtype != self._dtype or v.shape != (self._n,):
                raise ValueError(f"{name}: expected a {self._dtype} array of shape ({self._n},), got "
                                 f"{v.dtype} {v.shape}")
            c = self._flat()
            c[...] = v
            return c

        for k in ("t", "H_diag", "prev_loss"):
            out[k] = _checks.real(f"{where}[{k!r}]", entry[k])
        out["d"] = vector(f"{where}['d']", entry["d"])
        out["prev_flat_grad"] = vector(f"{where}['prev_flat_grad']", entry["prev_flat_grad"])
        lists = {}
        for k in ("old_dirs", "old_stps", "ro"):
            v = entry[k]
            if not isinstance(v, (list, tuple)):
                raise TypeError(f"{where}[{k!r}]: expected a list, got {type(v).__name__}")
            lists[k] = list(v)
        m = len(lists["ro"])
        if len(lists["old_dirs"]) != m or len(lists["old_stps"]) != m:
            raise ValueError(f"{where}: old_dirs, old_stps and ro differ in length")
        if m > history_size:
            raise ValueError(f"{where}: holds {m} pairs, more than history_size={history_size}")
        out["old_dirs"] = [vector(f"{where}['old_dirs'][{i}]", v) for i, v in enumerate(lists["old_dirs"])]
        out["old_stps"] = [vector(f"{where}['old_stps'][{i}]", v) for i, v in enumerate(lists["old_stps"])]
        out["ro"] = [_checks.real(f"{where}['ro'][{i}]", v) for i, v in enumerate(lists["ro"])]
        return out

    def __reduce__(self):
        params = dict(zip(self._names, self._params)) if self._names is not None else list(self._params)
        return (_rebuild, (params, self.state_dict()))


def _rebuild(params, state_dict):
    g = state_dict["param_groups"][0]
    opt = LBFGS(params, **{k: g[k] for k in _HYPER})
    opt.load_state_dict(state_dict)
    return opt
