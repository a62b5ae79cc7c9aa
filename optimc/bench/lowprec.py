"""The benchmark's low-precision section: Adam with its state in float32,
bfloat16 and 8 bits (``state_dtype=``), one float32 param of ``n`` elements, one
thread, against bitsandbytes' CPU ``Adam8bit`` and torchao's ``AdamW8bit`` where
they are installed (8-bit Adam of each; their CPU paths dequantize whole
tensors into float32 temporaries).

The section also times Adam on 16-bit params (``half_param_section``: bfloat16
and float16 params rounded to nearest, with float32 master weights, or with
stochastic rounding), next to a float32 param in the same measurement, with the
bytes each keeps per param (the param and its state).

``lowprec_section`` measures; ``format_lowprec`` and ``lowprec_markdown`` show it.
``lowprec_loss_curves`` trains the main job's spiral MLP with each storage and
``plot_loss_curves`` draws the trade-off; ``python -m optimc.bench.lowprec --out
docs/images/lowprec_loss.png`` runs both (the figure in the docs)."""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from .timing import calls, measure

__all__ = ["lowprec_section", "format_lowprec", "lowprec_markdown", "lowprec_loss_curves",
           "format_loss_curves", "plot_loss_curves", "half_param_section", "HALF_PARAM_CASES",
           "lowprec_floor", "format_lowprec_floor"]

STATE_DTYPES = (None, "bfloat16", "8bit")


def _label(state_dtype) -> str:
    return f"optimc Adam, state {state_dtype or 'float32'}"


def _torch_runner(torch, make, p0, g0):
    """A runner of a torch optimizer's step on a copy of p0 with grad g0, or the
    reason it cannot run."""
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    p.grad = torch.from_numpy(g0.copy())
    try:
        opt = make([p])
        opt.step()
    except Exception as exc:   # a CPU path missing from this version
        return None, f"{type(exc).__name__}: {exc}"
    return calls(opt.step), None


def lowprec_section(prof: dict, torch, seed: int, n: int = 10 ** 7) -> dict:
    """ns per element of one Adam step with each state storage (one thread; the
    caller sets it), state bytes per param, and the third-party 8-bit Adams."""
    import optimc

    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n, dtype=np.float32)
    g0 = rng.standard_normal(n, dtype=np.float32)
    runners, state_bytes, skipped = {}, {}, {}
    for sd in STATE_DTYPES:
        opt = optimc.Adam([p0.copy()], lr=1e-3, state_dtype=sd)
        opt.step([g0])
        runners[_label(sd)] = calls(opt.step, [g0])
        state_bytes[_label(sd)] = opt.state_bytes / n
    if torch is None:
        skipped["bitsandbytes Adam8bit"] = skipped["torchao AdamW8bit"] = "torch not installed (or --no-torch)"
    else:
        try:
            import bitsandbytes as bnb
            run, why = _torch_runner(torch, lambda ps: bnb.optim.Adam8bit(ps, lr=1e-3), p0, g0)
        except Exception as exc:
            run, why = None, f"bitsandbytes not available ({type(exc).__name__})"
        if run:
            runners["bitsandbytes Adam8bit"] = run
        else:
            skipped["bitsandbytes Adam8bit"] = why
        try:
            from torchao.optim import AdamW8bit
            run, why = _torch_runner(torch, lambda ps: AdamW8bit(ps, lr=1e-3, weight_decay=0.0), p0, g0)
        except Exception as exc:
            run, why = None, f"torchao not available ({type(exc).__name__})"
        if run:
            runners["torchao AdamW8bit"] = run
        else:
            skipped["torchao AdamW8bit"] = why
    times = measure(runners, prof["sample_time"], prof["case_time"], prof["min_rounds"], prof["max_rounds"])
    ns = {k: v["median"] / n * 1e9 for k, v in times.items()}
    eight = ns[_label("8bit")]
    return dict(n_elements=n, ns_per_element=ns, state_bytes_per_param=state_bytes, skipped=skipped,
                times=times, speedup_vs_float32={k: ns[_label(None)] / v for k, v in ns.items()},
                slower_than_optimc_8bit={k: v / eight for k, v in ns.items()},
                half_params=half_param_section(prof, seed, n))


# ---- 16-bit params ----

# (label, the param's dtype, the optimizer's options); the first is the float32 reference
HALF_PARAM_CASES = (
    ("float32 param", "float32", {}),
    ("bfloat16 param, round to nearest", "bfloat16", {}),
    ("bfloat16 param, master weights", "bfloat16", {"master_weights": True}),
    ("bfloat16 param, stochastic rounding", "bfloat16", {"stochastic_rounding": True}),
    ("float16 param, round to nearest", "float16", {}),
    ("float16 param, master weights", "float16", {"master_weights": True}),
    ("float16 param, stochastic rounding", "float16", {"stochastic_rounding": True}),
    ("bfloat16 param, stochastic rounding, 8-bit state", "bfloat16",
     {"stochastic_rounding": True, "state_dtype": "8bit"}),
)


def half_param_section(prof: dict, seed: int, n: int = 10 ** 7) -> dict:
    """ns per element of one Adam step (lr 1e-3, float32 grad) on one param of n
    elements in each of HALF_PARAM_CASES, measured together (one thread: the
    caller sets it), and the bytes per param of the param and its state.
    bfloat16 cases need ml_dtypes (skipped, with the reason, without it)."""
    import optimc

    try:
        import ml_dtypes
        bf16 = ml_dtypes.bfloat16
    except ImportError:
        bf16 = None
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n, dtype=np.float32)
    g0 = rng.standard_normal(n, dtype=np.float32)
    runners, nbytes, skipped = {}, {}, {}
    for label, dtype, options in HALF_PARAM_CASES:
        if dtype == "bfloat16" and bf16 is None:
            skipped[label] = "ml_dtypes not installed"
            continue
        p = p0.astype(bf16 if dtype == "bfloat16" else np.dtype(dtype))
        opt = optimc.Adam([p], lr=1e-3, **options)
        opt.step([g0])
        runners[label] = calls(opt.step, [g0])
        nbytes[label] = (p.nbytes + opt.state_bytes) / n
    times = measure(runners, prof["sample_time"], prof["case_time"], prof["min_rounds"], prof["max_rounds"])
    ns = {k: v["median"] / n * 1e9 for k, v in times.items()}
    ref = ns[HALF_PARAM_CASES[0][0]]
    return dict(n_elements=n, ns_per_element=ns, bytes_per_param=nbytes, skipped=skipped, times=times,
                time_vs_float32={k: v / ref for k, v in ns.items()})


HALF_HEAD = ["Adam on", "ns/element", "time / float32 param", "bytes/param (param + state)"]


def _half_rows(h) -> List[List[str]]:
    return [[name, f"{v:.2f}", f"{h['time_vs_float32'][name]:.2f}", f"{h['bytes_per_param'][name]:.2f}"]
            for name, v in h["ns_per_element"].items()]


def format_half_params(h: dict) -> str:
    lines = [f"16-bit params: Adam on one param of {h['n_elements']:.0e} elements, float32 grad, one thread; "
             "ns per element (median)"]
    for row in _half_rows(h):
        lines.append(f"  {row[0]:<48} {row[1]:>7} ns   {row[2]:>5}x float32 time   {row[3]:>6} B/param")
    for name, why in h["skipped"].items():
        lines.append(f"  {name}: not run ({why})")
    return "\n".join(lines)


def half_params_markdown(h: Optional[dict]) -> List[str]:
    if not h:
        return []
    return _markdown_table(f"16-bit params: Adam on one param of {h['n_elements']:.0e} elements, float32 grad, "
                           "one thread:", HALF_HEAD, _half_rows(h), h["skipped"])


def _markdown_table(title: str, head: List[str], rows: List[List[str]], skipped: dict) -> List[str]:
    """A title, a table whose first column is a name and the rest numbers, and the skipped rows."""
    out = [title, "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out += [f"{name}: not run ({why})." for name, why in skipped.items()]
    return out + [""]


def _rows(s) -> List[List[str]]:
    rows = []
    for name, v in s["ns_per_element"].items():
        b = s["state_bytes_per_param"].get(name)
        rows.append([name, f"{v:.2f}", f"{s['speedup_vs_float32'][name]:.2f}",
                     f"{s['slower_than_optimc_8bit'][name]:.2f}", f"{b:.2f}" if b is not None else "-"])
    return rows


HEAD = ["implementation", "ns/element", "x optimc float32 (speed)", "time / optimc 8-bit",
        "state bytes/param"]


def format_lowprec(s: dict) -> str:
    lines = [f"low precision: Adam on one float32 param of {s['n_elements']:.0e} elements, one thread; "
             "ns per element (median)"]
    for row in _rows(s):
        lines.append(f"  {row[0]:<34} {row[1]:>7} ns   {row[2]:>5}x float32 speed   "
                     f"{row[3]:>6}x 8-bit time   {row[4]:>5} B/param")
    for name, why in s["skipped"].items():
        lines.append(f"  {name}: not run ({why})")
    if s.get("half_params"):
        lines += ["", format_half_params(s["half_params"])]
    return "\n".join(lines)


def lowprec_markdown(s: Optional[dict]) -> List[str]:
    if not s:
        return []
    return (_markdown_table(f"Adam on one float32 param of {s['n_elements']:.0e} elements, one thread:",
                            HEAD, _rows(s), s["skipped"])
            + half_params_markdown(s.get("half_params")))


# ---- the floor: the same steps in cache, and the memory roofline of each storage ----

# Bytes per element one Adam step must move: param read and written (4 + 4),
# grad read (4), two moments read and written in the storage's size (8-bit block
# scales, 8 bytes per 256 elements, left out). The roofline moves them as float32
# arrays: (elements per param element, read-write arrays, read-only arrays), so
# bytes = 4·fraction·(2·rw + r): 28, 20 and 16.
ADAM_TRAFFIC = {None: (1.0, 3, 1), "bfloat16": (1.0, 2, 1), "8bit": (0.5, 3, 2)}


def _stream_runner(n: int, fraction: float, read_write: int, read_only: int):
    """The roofline (``_core.stream``, optimc's least-arithmetic kernel) over
    read_write + read_only float32 arrays of fraction·n elements."""
    from .. import _core
    m = max(1, int(n * fraction))
    arrays = [np.ones(m, np.float32) for _ in range(read_write)] + \
        [np.zeros(m, np.float32) for _ in range(read_only)]
    return calls(_core.stream, arrays, read_write)


def lowprec_floor(prof: dict, seed: int, n: int = 10 ** 7, n_cache: int = 2 ** 15) -> dict:
    """What bounds the low-precision Adam steps (one thread; the caller sets it):
    ns per element of the same optimc Adam steps on a param of ``n_cache``
    elements (the step's 0.9 MB of float32 data fit a 1 MiB L2 cache: the
    arithmetic and the conversions, without main-memory traffic) and of the streaming roofline over the bytes each
    storage's step moves on ``n`` elements (the memory's share alone)."""
    import optimc

    rng = np.random.default_rng(seed)
    runners, bytes_moved = {}, {}
    p0 = rng.standard_normal(n_cache, dtype=np.float32)
    g0 = rng.standard_normal(n_cache, dtype=np.float32)
    for sd in STATE_DTYPES:
        opt = optimc.Adam([p0.copy()], lr=1e-3, state_dtype=sd)
        opt.step([g0])
        runners[f"cached: {_label(sd)}"] = calls(opt.step, [g0])
    for sd, (fraction, rw, ro) in ADAM_TRAFFIC.items():
        name = f"roofline: bytes of Adam, state {sd or 'float32'}"
        runners[name] = _stream_runner(n, fraction, rw, ro)
        bytes_moved[name] = int(round(4 * fraction * (2 * rw + ro)))
    # the cached rows among themselves (the roofline's streams would evict their data)
    timing = (prof["sample_time"], prof["case_time"], prof["min_rounds"], prof["max_rounds"])
    times = measure({k: v for k, v in runners.items() if k.startswith("cached")}, *timing)
    times.update(measure({k: v for k, v in runners.items() if k.startswith("roofline")}, *timing))
    ns = {k: v["median"] / (n_cache if k.startswith("cached") else n) * 1e9 for k, v in times.items()}
    return dict(n_elements=n, n_cache=n_cache, ns_per_element=ns, bytes_per_element=bytes_moved, times=times)


def format_lowprec_floor(f: dict) -> str:
    lines = [f"low precision, the floor: the same Adam steps on {f['n_cache']} elements (state in cache), "
             f"and the one-thread streaming roofline over each storage's bytes on {f['n_elements']:.0e} "
             "elements; ns per element (median)"]
    for name, v in f["ns_per_element"].items():
        b = f["bytes_per_element"].get(name)
        lines.append(f"  {name:<42} {v:7.3f} ns" + (f"   ({b} B/element)" if b else ""))
    return "\n".join(lines)


# ---- the trade-off in training: loss curves of the three storages ----

CURVE_STATE_DTYPES = (None, "bfloat16", "8bit")


def lowprec_loss_curves(steps: int = 1000, seed: int = 0) -> dict:
    """Adam on the main job's spiral MLP (``optimc.demo.problems.SpiralMLP``, its
    learning rate, float32 params, every param compressed: ``min_8bit_size=0``)
    with float32, bfloat16 and 8-bit state, the same mini-batches for each.

    Returns ``{"steps", "loss": {label: full-data loss after each step},
    "distance": {label: relative L2 distance of the params from float32's after
    each step}, "state_bytes": {label: bytes of state per param}}``."""
    import optimc
    from optimc.demo.problems import SpiralMLP

    problem = SpiralMLP()
    runs, loss, state_bytes = {}, {}, {}
    for sd in CURVE_STATE_DTYPES:
        label = sd or "float32"
        ps = problem.init(np.float32, seed=seed)
        rng = problem.make_rng(seed)
        opt = optimc.Adam(ps, lr=problem.lr_for("Adam"), state_dtype=sd, min_8bit_size=0)
        trail, curve = [], []
        for _ in range(steps):
            _, g = problem.loss_and_grad(ps, rng)
            opt.step([x.astype(np.float32) for x in g])
            curve.append(problem.loss(ps))
            trail.append([p.copy() for p in ps])
        runs[label], loss[label] = trail, np.array(curve)
        state_bytes[label] = opt.state_bytes / sum(p.size for p in ps)
    ref = runs["float32"]
    distance = {}
    for label, trail in runs.items():
        distance[label] = np.array([
            np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(ps, rs)) / sum((b ** 2).sum() for b in rs))
            for ps, rs in zip(trail, ref)])
    return dict(steps=steps, loss=loss, distance=distance, state_bytes=state_bytes,
                target_loss=problem.target_loss)


def format_loss_curves(c: dict) -> str:
    lines = [f"Adam on the spiral MLP, {c['steps']} steps, float32 params (loss: full data, after the last step)"]
    for label, curve in c["loss"].items():
        reached = np.flatnonzero(curve <= c["target_loss"])
        first = f"step {reached[0] + 1}" if reached.size else "not reached"
        lines.append(f"  state {label:<9} {c['state_bytes'][label]:5.2f} B/param   loss {curve[-1]:.4f}   "
                     f"params {100 * c['distance'][label][-1]:4.1f}% from float32's   "
                     f"target {c['target_loss']:g}: {first}")
    return "\n".join(lines)


def plot_loss_curves(c: dict, path: str) -> None:
    """Two panels: the loss curves, and the params' distance from the float32
    run. An Agg canvas of its own (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax_loss, ax_dist = fig.subplots(1, 2)
    x = np.arange(1, c["steps"] + 1)
    for k, (label, curve) in enumerate(c["loss"].items()):
        name, colour = f"{label} state ({c['state_bytes'][label]:.2f} B/param)", f"C{k}"
        ax_loss.plot(x, curve, label=name, lw=1.2, color=colour)
        if label != "float32":
            ax_dist.plot(x, 100 * c["distance"][label], label=name, lw=1.2, color=colour)
    ax_loss.axhline(c["target_loss"], color="grey", ls=":", lw=1, label="target loss")
    ax_loss.set(yscale="log", xlabel="step", ylabel="loss (full data)",
                title="Adam on the spiral MLP: loss")
    ax_dist.set(xlabel="step", ylabel="% (relative L2)", title="params' distance from the float32 run")
    ax_loss.legend(fontsize=8)
    ax_dist.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m optimc.bench.lowprec",
        description="Loss curves of Adam with float32, bfloat16 and 8-bit state on the main job's "
                    "spiral MLP (the figure of docs/performance.md and the guide's section 18).")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="lowprec_loss.png", help="the PNG to write (default: %(default)s)")
    args = ap.parse_args(argv)
    c = lowprec_loss_curves(args.steps, args.seed)
    print(format_loss_curves(c))
    plot_loss_curves(c, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
