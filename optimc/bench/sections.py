"""The benchmark's measurements, one function per section of its report.

``main``    -- :func:`run_case`: one case, dtype and size; optimc against every competitor.
``fixed``   -- :func:`fixed_cost`: a step on a 1-element param against ``np.add``.
``threads`` -- :func:`threads_big`: 1 vs N threads on a large step; and
               :func:`threshold_sweep`: 1 vs N threads at sizes around the thread
               threshold, back to back and after an idle millisecond, with the smallest
               step (in bytes moved, the threshold's unit) from which the split wins.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from .cases import size_label
from .competitors import (NUMPY_BLOCK, TORCH_VARIANTS, close, make_torch, no_torch_reason,
                          reference_name, roofline_runner, torch_equivalent)
from .numpy_steps import numpy_step_for
from .timing import IDLE_GAP, after_idle, calls, measure, with_threads

__all__ = ["run_case", "fixed_cost", "threads_big", "threshold_sweep", "smallest_winning",
           "THRESHOLD_SIZES"]


def run_case(case, dtype, n_tensors: int, n: int, prof: dict, torch, seed: int) -> dict:
    """Build every implementation for one case, check them against optimc, time them."""
    rng = np.random.default_rng(seed)
    p0 = [rng.standard_normal(n, dtype=dtype) for _ in range(n_tensors)]
    grads = [rng.standard_normal(n, dtype=dtype) for _ in range(n_tensors)]
    total = n_tensors * n
    result = dict(optimizer=case.name, key=case.key, dtype=np.dtype(dtype).name,
                  size=size_label(n_tensors, n), n_tensors=n_tensors, n_per_tensor=n,
                  n_elements=total, state_buffers=case.n_state,
                  bytes_per_element=case.bytes_per_element(dtype), checks={}, skipped={},
                  hyper={k: list(v) if isinstance(v, tuple) else v for k, v in case.hyper.items()})
    steps = prof["check_steps"]

    p_c = [p.copy() for p in p0]
    opt = case.build(p_c)
    for _ in range(steps):
        opt.step(grads)
    runners = {"optimc": calls(opt.step, grads)}

    # the roofline: stream calls over as many arrays of all the elements, pass by pass
    runners["roofline"] = roofline_runner(case, total, dtype)

    np_cls = numpy_step_for(case)
    if np_cls is None:
        for name in ("numpy", "np-block"):
            result["skipped"][name] = f"no NumPy step for {case.name}"
    else:
        variants = [("numpy", None)]
        if n > 2 * NUMPY_BLOCK:
            variants.append(("np-block", NUMPY_BLOCK))
        else:
            result["skipped"]["np-block"] = f"tensors of {n} elements fit in cache already"
        for name, block in variants:
            p_n = [p.copy() for p in p0]
            try:
                impl = np_cls(p_n, case.hyper, block=block)
            except ValueError as exc:   # a setting the NumPy step does not implement
                result["skipped"][name] = str(exc)
                continue
            for _ in range(steps):
                impl.step(grads)
            result["checks"][name] = close(p_n, p_c, dtype)
            runners[name] = calls(impl.step, grads)

    if torch is None:
        for name, _ in TORCH_VARIANTS:
            result["skipped"][name] = "torch not installed (or --no-torch)"
    elif torch_equivalent(case, torch) is None:
        for name, _ in TORCH_VARIANTS:
            result["skipped"][name] = no_torch_reason(case)
    else:
        result["torch_reference"] = reference_name(torch_equivalent(case, torch)[0])
        for name, variant in TORCH_VARIANTS:
            p_t = [p.copy() for p in p0]
            try:
                topt = make_torch(case, torch, p_t, grads, variant, steps)
            except (TypeError, RuntimeError, ValueError, NotImplementedError) as exc:
                result["skipped"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                continue
            result["checks"][name] = close(p_t, p_c, dtype)
            runners[name] = calls(topt.step)

    stats = measure(runners, prof["sample_time"], prof["case_time"], prof["min_rounds"],
                    prof["max_rounds"])
    result["stats"] = stats
    ns = {name: s["median"] / total * 1e9 for name, s in stats.items()}
    result["ns_per_element"] = ns
    result["roofline_fraction"] = ns["roofline"] / ns["optimc"]
    best_np = min((k for k in ("numpy", "np-block") if k in ns), key=ns.get, default=None)
    result["best_numpy"] = best_np
    result["x_numpy"] = ns[best_np] / ns["optimc"] if best_np else None
    best_t = min((k for k, _ in TORCH_VARIANTS if k in ns), key=ns.get, default=None)
    result["best_torch"] = best_t
    result["x_torch"] = ns[best_t] / ns["optimc"] if best_t else None
    return result


def fixed_cost(cases, dtypes, prof) -> List[dict]:
    """A step on one 1-element param vs one np.add(a, b, out=a) on 1-element arrays."""
    out = []
    for dtype in dtypes:
        a = np.ones(1, dtype)
        b = np.full(1, 0.0, dtype)
        runners = {"np.add": calls(np.add, a, b, a)}
        for case in cases:
            p = np.ones(1, dtype)
            g = np.full(1, 1e-3, dtype)
            runners[case.name] = calls(case.build([p]).step, [g])
        stats = measure(runners, max(prof["sample_time"], 0.005), max(prof["case_time"], 0.5),
                        max(prof["min_rounds"], 9), 61)
        t_add = stats["np.add"]["median"]
        for case in cases:
            t = stats[case.name]["median"]
            out.append(dict(optimizer=case.name, dtype=np.dtype(dtype).name, step_ns=t * 1e9,
                            np_add_ns=t_add * 1e9, ratio=t / t_add))
    return out


def threads_big(case, n_threads: int, prof, torch, seed: int, n: int, threshold: int) -> dict:
    """1 vs n_threads threads on an n-element float32 step of ``case`` (and the roofline,
    and torch's fused step where it has one)."""
    dtype = np.float32
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n, dtype=dtype)
    g = rng.standard_normal(n, dtype=dtype)
    opt = case.build([p])
    opt.step([g])
    roofline = roofline_runner(case, n, dtype)
    runners = {}
    for nt in (1, n_threads):
        runners[f"optimc/{nt}"] = with_threads(nt, threshold, calls(opt.step, [g]))
        runners[f"roofline/{nt}"] = with_threads(nt, threshold, roofline)
    skipped = None
    if torch is not None and torch_equivalent(case, torch) is not None:
        try:
            topt = make_torch(case, torch, [p.copy()], [g], {"fused": True}, 1)
        except (TypeError, RuntimeError, ValueError, NotImplementedError) as exc:
            skipped = f"torch fused {case.name}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        else:
            for nt in (1, n_threads):
                def run(k, nt=nt, step=topt.step):
                    torch.set_num_threads(nt)
                    calls(step)(k)
                runners[f"torch-fused/{nt}"] = run
    stats = measure(runners, prof["sample_time"], max(prof["case_time"], 1.0),
                    prof["min_rounds"] + 2, prof["max_rounds"])
    ns = {k: v["median"] / n * 1e9 for k, v in stats.items()}
    res = dict(optimizer=case.name, dtype="float32", n_elements=n, threads=n_threads,
               thread_threshold=threshold, bytes_moved=n * case.bytes_per_element(dtype),
               ns_per_element=ns, stats=stats, skipped=skipped,
               speedup=ns["optimc/1"] / ns[f"optimc/{n_threads}"],
               roofline_speedup=ns["roofline/1"] / ns[f"roofline/{n_threads}"],
               roofline_fraction={nt: ns[f"roofline/{nt}"] / ns[f"optimc/{nt}"]
                                  for nt in (1, n_threads)})
    if f"torch-fused/{n_threads}" in ns:
        res["x_torch_fused"] = {nt: ns[f"torch-fused/{nt}"] / ns[f"optimc/{nt}"]
                                for nt in (1, n_threads)}
    return res


def smallest_winning(rows, ratio: str) -> Optional[int]:
    """Bytes moved by the smallest measured step (rows in increasing size) from which the
    split is faster (``row[ratio] < 1``) at that size and at every larger one."""
    for i, r in enumerate(rows):
        if all(rr[ratio] < 1.0 for rr in rows[i:]):
            return r["bytes_moved"]
    return None


THRESHOLD_SIZES = (16384, 32768, 65536, 131072, 196608, 262144, 393216, 524288, 1048576,
                   2097152, 4194304)


def threshold_sweep(case, dtype, n_threads: int, sizes, prof, seed: int,
                    default_threshold: int) -> dict:
    """At each size: the step with 1 thread, with n_threads forced (threshold 0) and with
    n_threads at the default threshold, back to back; and 1 thread vs n_threads forced
    for steps that each follow an idle millisecond. All in ns per element; the ratios
    (time with n_threads / time with 1) separately. The suggested threshold is the
    smallest measured step, in bytes moved, from which the forced split is faster at
    that size and every larger one (back to back, after idle, and both)."""
    rng = np.random.default_rng(seed)
    bytes_per_element = case.bytes_per_element(dtype)
    rows = []
    for n in sizes:
        p = rng.standard_normal(n, dtype=dtype)
        g = rng.standard_normal(n, dtype=dtype)
        opt = case.build([p])
        opt.step([g])
        base = calls(opt.step, [g])
        runners = {"1": with_threads(1, default_threshold, base),
                   "forced": with_threads(n_threads, 0, base),
                   "default": with_threads(n_threads, default_threshold, base),
                   "1 idle": after_idle(1, default_threshold, opt, [g]),
                   "forced idle": after_idle(n_threads, 0, opt, [g])}
        stats = measure(runners, prof["sample_time"], prof["case_time"],
                        prof["min_rounds"] + 2, prof["max_rounds"])
        t1, tf, td, t1i, tfi = (stats[k]["median"]
                                for k in ("1", "forced", "default", "1 idle", "forced idle"))
        rows.append(dict(optimizer=case.name, dtype=np.dtype(dtype).name, n_elements=n,
                         bytes_moved=n * bytes_per_element,
                         ns_1=t1 / n * 1e9, ns_forced=tf / n * 1e9, ns_default=td / n * 1e9,
                         ns_1_idle=t1i / n * 1e9, ns_forced_idle=tfi / n * 1e9,
                         forced_over_1=tf / t1, default_over_1=td / t1,
                         forced_over_1_idle=tfi / t1i))

    s_b2b = smallest_winning(rows, "forced_over_1")
    s_idle = smallest_winning(rows, "forced_over_1_idle")
    suggested = None if s_b2b is None or s_idle is None else max(s_b2b, s_idle)
    below = [r["default_over_1"] for r in rows if r["bytes_moved"] < default_threshold]
    above = [r["default_over_1"] for r in rows if r["bytes_moved"] >= default_threshold]
    return dict(optimizer=case.name, dtype=np.dtype(dtype).name, threads=n_threads,
                bytes_per_element=bytes_per_element, default_threshold=default_threshold,
                rows=rows, suggested_threshold_bytes=suggested,
                suggested_back_to_back_bytes=s_b2b, suggested_after_idle_bytes=s_idle,
                idle_gap_s=IDLE_GAP,
                worst_default_over_1_below=max(below) if below else None,
                worst_default_over_1_at_or_above=max(above) if above else None)
