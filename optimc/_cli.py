"""The command line: ``python -m optimc`` (the comparison) and ``python -m optimc bench``.

With no arguments every optimizer runs on every problem of :mod:`optimc.problems`,
from the same start, with the same mini-batches, at the problem's documented
learning rate for that optimizer (all other hyperparameters at the class defaults).
The problem computes each gradient in NumPy; the optimizer's ``step`` updates the
parameters in place. A table compares final loss, steps to the target loss and the
time each ``step`` call took; a figure shows the loss curves and, for the 2-D
problems, the trajectories over contour plots.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np

from . import problems as _problems

OPTIMIZER_NAMES = ("SGD", "Momentum", "NAG", "Adagrad", "RMSprop", "Adadelta",
                   "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "Lion")
DEFAULT_OUTPUT = "optimc_comparison.png"
DEMO_HINT = 'pip install "optimc[demo]"'


# ---------------------------------------------------------------------------
# Argument parsing

def _name_list(valid: Sequence[str], what: str, normalize=lambda s: s.lower()):
    lookup = {normalize(v): v for v in valid}

    def parse(text: str) -> List[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"no {what} given; choose from {', '.join(valid)}")
        if len(names) == 1 and names[0].lower() == "all":
            return list(valid)
        out = []
        for n in names:
            key = normalize(n)
            if key not in lookup:
                raise argparse.ArgumentTypeError(
                    f"unknown {what[:-1]} {n!r}; choose from {', '.join(valid)} (or 'all')")
            if lookup[key] not in out:
                out.append(lookup[key])
        return out

    return parse


def _int_at_least(lo: int, what: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"{what} must be at least {lo}, got {v}")
        return v

    return parse


def build_parser() -> argparse.ArgumentParser:
    problem_lines = "\n".join(
        f"  {cls.name:<16} {cls.description}" for cls in _problems._FACTORIES.values())
    parser = argparse.ArgumentParser(
        prog="optimc" if os.path.basename(sys.argv[0]) == "optimc" else "python -m optimc",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run optimc's optimizers on built-in problems and compare them.\n\n"
            "Every optimizer starts from the same point and sees the same mini-batches;\n"
            "each uses the problem's documented learning rate for it (see\n"
            "optimc.problems) and its class defaults otherwise. Prints a table (final\n"
            "loss, steps to reach the target loss, microseconds per optimizer step) and\n"
            "saves a figure of the loss curves and the 2-D trajectories."),
        epilog=(
            f"problems:\n{problem_lines}\n\n"
            f"optimizers:\n  {', '.join(OPTIMIZER_NAMES)}\n\n"
            "examples:\n"
            "  python -m optimc\n"
            "  python -m optimc --optimizers sgd,momentum,adam --problems saddle,rosenbrock\n"
            "  python -m optimc --steps 500 --dtype float64 --output runs/cmp.png\n"
            "  python -m optimc bench --help      # the speed benchmark and its options\n\n"
            f"The figure needs matplotlib: {DEMO_HINT}"),
    )
    parser.add_argument(
        "command", nargs="?", choices=("run", "bench"), default="run",
        help="'run' (the default) compares the optimizers; 'bench' runs the speed "
             "benchmark (must come first: python -m optimc bench [benchmark options])")
    parser.add_argument(
        "--optimizers", metavar="LIST", type=_name_list(OPTIMIZER_NAMES, "optimizers"),
        default=list(OPTIMIZER_NAMES),
        help="comma-separated optimizer classes to run, case-insensitive (default: all 12)")
    parser.add_argument(
        "--problems", metavar="LIST",
        type=_name_list(_problems.PROBLEM_NAMES, "problems", _problems._normalize),
        default=list(_problems.PROBLEM_NAMES),
        help="comma-separated problems to run (default: all; see the list below)")
    parser.add_argument(
        "--steps", metavar="N", type=_int_at_least(1, "--steps"), default=None,
        help="optimizer steps per run, for every problem (default: each problem's own "
             "default: " + ", ".join(f"{c.name} {c.default_steps}"
                                     for c in _problems._FACTORIES.values()) + ")")
    parser.add_argument(
        "--seed", metavar="N", type=_int_at_least(0, "--seed"), default=0,
        help="seed for the starting points and the mini-batches; the same seed gives "
             "the same losses (default: 0)")
    parser.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32",
        help="dtype of the parameters and gradients (default: float32)")
    parser.add_argument(
        "--output", metavar="PATH", default=DEFAULT_OUTPUT,
        help=f"where to save the figure, format from the extension (default: "
             f"{DEFAULT_OUTPUT} in the current directory)")
    parser.add_argument(
        "--no-plot", action="store_true",
        help="print the table only; do not draw or save the figure")
    return parser


# ---------------------------------------------------------------------------
# Running

@dataclass
class RunResult:
    problem: str
    optimizer: str
    lr: Optional[float]
    steps: int
    final_loss: float = math.nan
    steps_to_target: Optional[int] = None
    us_per_step: float = math.nan
    diverged_at: Optional[int] = None
    error: Optional[str] = None
    curve_steps: np.ndarray = field(default_factory=lambda: np.empty(0))
    curve_loss: np.ndarray = field(default_factory=lambda: np.empty(0))
    path: Optional[np.ndarray] = None  # (n, 2) for the 2-D problems


def _eval_every(problem, steps: int) -> int:
    """How often a stochastic problem's exact loss is recorded."""
    if not problem.stochastic:
        return 1
    return max(1, min(10, steps // 100))


def run_one(problem, opt_cls, steps: int, dtype, seed: int) -> RunResult:
    """One optimizer on one problem; the optimizer owns the per-step work."""
    name = opt_cls.__name__
    lr = problem.lr_for(name)
    res = RunResult(problem.name, name, lr, steps)
    params = problem.init(dtype, seed)
    opt = opt_cls(params) if lr is None else opt_cls(params, lr=lr)
    if lr is None:
        res.lr = float(getattr(opt, "lr", math.nan))
    rng = problem.make_rng(seed) if problem.stochastic else None
    every = _eval_every(problem, steps)
    is_2d = isinstance(problem, _problems.Problem2D)
    path = np.full((steps + 1, 2), np.nan) if is_2d else None
    rec_k: List[int] = []
    rec_l: List[float] = []
    step_ns = np.zeros(steps, dtype=np.int64)
    done = 0
    clock = time.perf_counter_ns
    with np.errstate(all="ignore"):
        for k in range(steps):
            loss, grads = problem.loss_and_grad(params, rng)
            if problem.stochastic:
                if k % every == 0:
                    rec_k.append(k)
                    rec_l.append(problem.loss(params))
            else:
                rec_k.append(k)
                rec_l.append(loss)
            if path is not None:
                path[k] = params[0]
            if not math.isfinite(loss):
                res.diverged_at = k
                break
            t0 = clock()
            opt.step(grads)
            step_ns[k] = clock() - t0
            done += 1
        else:
            final = problem.loss(params)
            rec_k.append(steps)
            rec_l.append(final)
            if path is not None:
                path[steps] = params[0]
            if math.isfinite(final):
                res.final_loss = final
            else:
                res.diverged_at = steps
    res.curve_steps = np.asarray(rec_k)
    res.curve_loss = np.asarray(rec_l, dtype=np.float64)
    if path is not None:
        res.path = path[: done + 1]
    hit = np.flatnonzero(res.curve_loss <= problem.target_loss)
    if hit.size:
        res.steps_to_target = int(res.curve_steps[hit[0]])
    if done:  # the median resists the odd preempted or page-faulting call
        res.us_per_step = float(np.median(step_ns[:done])) / 1e3
    return res


class _Progress:
    """A tqdm bar on a terminal; plain lines, one per problem, otherwise."""

    def __init__(self, total: int, stream=sys.stderr):
        self.stream = stream
        self.bar = None
        if stream.isatty():
            try:
                from tqdm import tqdm
            except ImportError:  # pragma: no cover - tqdm is a dependency
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, unit="run", file=stream, leave=False,
                                dynamic_ncols=True)
        self.t0 = time.perf_counter()

    def start(self, problem, optimizer):
        if self.bar is not None:
            self.bar.set_description(f"{problem}: {optimizer}", refresh=True)

    def advance(self):
        if self.bar is not None:
            self.bar.update(1)

    def problem_done(self, index, count, problem, n_opt, steps, seconds):
        if self.bar is None:
            print(f"[{index}/{count}] {problem}: {n_opt} optimizer(s) x {steps} steps "
                  f"in {seconds:.1f} s", file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run_all(problem_list, opt_classes, steps_override, dtype, seed) -> List[List[RunResult]]:
    total = len(problem_list) * len(opt_classes)
    progress = _Progress(total)
    results = []
    try:
        for i, prob in enumerate(problem_list, 1):
            steps = steps_override or prob.default_steps
            t0 = time.perf_counter()
            row = []
            for cls in opt_classes:
                progress.start(prob.name, cls.__name__)
                try:
                    row.append(run_one(prob, cls, steps, dtype, seed))
                except Exception as exc:  # report it in the table, keep going
                    r = RunResult(prob.name, cls.__name__, prob.lr_for(cls.__name__), steps)
                    r.error = f"{type(exc).__name__}: {exc}"
                    row.append(r)
                progress.advance()
            results.append(row)
            progress.problem_done(i, len(problem_list), prob.name, len(opt_classes), steps,
                                  time.perf_counter() - t0)
    finally:
        progress.close()
    return results


# ---------------------------------------------------------------------------
# The table

def _fmt_loss(x: float) -> str:
    if not math.isfinite(x):
        return "nan"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.6f}"
    return f"{x:.3e}"


def format_table(problem_list, results, dtype_name: str) -> str:
    lines = []
    header = f"  {'optimizer':<10} {'lr':>7}  {'final loss':>14}  {'steps to target':>15}  {'us/step':>8}"
    for prob, row in zip(problem_list, results):
        steps = row[0].steps if row else prob.default_steps
        minimum = "unknown" if prob.min_loss is None else _fmt_loss(prob.min_loss)
        kind = "mini-batch" if prob.stochastic else "full-batch"
        lines.append(f"{prob.name} - {prob.description}")
        lines.append(f"  {prob.n_params} parameters, {kind}, {steps} steps, {dtype_name}; "
                     f"target loss {_fmt_loss(prob.target_loss)}, minimum {minimum}")
        lines.append(header)
        finite = [r.final_loss for r in row if r.error is None and math.isfinite(r.final_loss)]
        best = min(finite) if finite else None
        for r in row:
            lr = "-" if r.lr is None or not math.isfinite(r.lr) else f"{r.lr:g}"
            if r.error is not None:
                final, hit, us = "error", "-", "-"
            else:
                if r.diverged_at is not None:
                    final = f"diverged@{r.diverged_at}"
                else:
                    final = _fmt_loss(r.final_loss) + (" *" if r.final_loss == best else "  ")
                hit = "-" if r.steps_to_target is None else str(r.steps_to_target)
                us = "-" if not math.isfinite(r.us_per_step) else f"{r.us_per_step:.1f}"
            lines.append(f"  {r.optimizer:<10} {lr:>7}  {final:>14}  {hit:>15}  {us:>8}")
        lines.append("")
    lines += [
        "final loss: the exact (full-data) loss after the last step; * = the lowest.",
        "steps to target: the first step at which the loss was at or below the target",
        "  (mini-batch problems: checked every few steps); '-' = not reached.",
        "us/step: median wall time of one optimizer.step() call, in microseconds.",
        "lr: the problem's rate for that optimizer (optimc.problems); other options default.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The figure

_STYLE = {  # families share a hue
    "SGD": ("#1f77b4", "-"), "Momentum": ("#17becf", "-"), "NAG": ("#aec7e8", "--"),
    "Adagrad": ("#2ca02c", "-"), "RMSprop": ("#98df8a", "--"), "Adadelta": ("#bcbd22", "-"),
    "Adam": ("#d62728", "-"), "AdamW": ("#ff9896", "--"), "Adamax": ("#ff7f0e", "-"),
    "NAdam": ("#9467bd", "-"), "RAdam": ("#e377c2", "--"), "Lion": ("#8c564b", "-"),
}


def _style(name, i):
    if name in _STYLE:
        return _STYLE[name]
    return (f"C{i % 10}", "-")


def _import_matplotlib():
    """matplotlib's Figure and Agg canvas, or None if matplotlib is not installed.

    No pyplot: the figure is drawn on an Agg canvas of its own, so the global
    backend (a notebook's, say) is left alone.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure, FigureCanvasAgg


def _check_output(path: str, mpl) -> Optional[str]:
    """An error message if the figure cannot be written to ``path``, else None."""
    if os.path.isdir(path):
        return f"--output {path!r} is a directory; give a file name such as {DEFAULT_OUTPUT}"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"--output {path!r}: directory {parent!r} does not exist"
    if not os.access(parent, os.W_OK):
        return f"--output {path!r}: directory {parent!r} is not writable"
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext and mpl is not None:
        Figure, FigureCanvasAgg = mpl
        supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
        if ext not in supported:
            return (f"--output {path!r}: unknown figure format {ext!r}; "
                    f"use one of {', '.join(sorted(supported))}")
    return None


def make_figure(mpl, problem_list, results, dtype_name: str, seed: int):
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D

    panels = [("loss", p, r) for p, r in zip(problem_list, results)]
    panels += [("path", p, r) for p, r in zip(problem_list, results)
               if isinstance(p, _problems.Problem2D)]
    n = len(panels)
    ncols = min(4, n + 1)  # + one panel for the legend
    nrows = math.ceil((n + 1) / ncols)
    Figure, FigureCanvasAgg = mpl
    fig = Figure(figsize=(4.3 * ncols, 3.9 * nrows + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    names = [r.optimizer for r in results[0]] if results else []

    for ax, (kind, prob, row) in zip(axes.flat, panels):
        if kind == "loss":
            _loss_panel(ax, prob, row)
        else:
            _path_panel(ax, prob, row, LogNorm)
    spare = list(axes.flat)[n:]
    for ax in spare:
        ax.axis("off")

    handles = [Line2D([], [], color=_style(nm, i)[0], ls=_style(nm, i)[1], lw=2, label=nm)
               for i, nm in enumerate(names)]
    handles.append(Line2D([], [], color="0.4", ls=":", lw=1.2, label="target loss"))
    if any(kind == "path" for kind, _, _ in panels):
        handles += [
            Line2D([], [], ls="", marker="o", color="w", mec="k", ms=8, label="start"),
            Line2D([], [], ls="", marker="o", color="0.5", mec="k", mew=0.5, ms=4,
                   label="end of run"),
            Line2D([], [], ls="", marker="*", color="gold", mec="k", ms=13, label="minimum"),
        ]
        if any(hasattr(p, "saddle") for kind, p, _ in panels if kind == "path"):
            handles += [
                Line2D([], [], ls="", marker="x", color="k", mew=2, ms=8, label="saddle"),
                Line2D([], [], ls="--", color="0.1", lw=1.0, label="loss = saddle's"),
            ]
    title = (f"optimc: {len(names)} optimizer(s) on {len(problem_list)} problem(s) "
             f"({dtype_name}, seed {seed}; learning rates from optimc.problems)")
    spare[0].legend(handles=handles, loc="center", ncol=2 if len(handles) > 7 else 1,
                    frameon=False, fontsize=10, handlelength=2.5,
                    title="optimizer", title_fontsize=10)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (3.9 * nrows + 0.4)))
    return fig


def _running_mean(steps, y, window_steps):
    """Trailing mean of y over the last ``window_steps`` steps (shorter at the start)."""
    if len(steps) < 2 or window_steps <= 1:
        return y
    spacing = max(1, int(steps[1] - steps[0]))
    w = max(1, window_steps // spacing)
    c = np.concatenate([[0.0], np.cumsum(y)])
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(0, idx - w)
    return (c[idx] - c[lo]) / (idx - lo)


def _loss_panel(ax, prob, row):
    offset = prob.min_loss if prob.min_loss else 0.0
    steps_total = max((r.steps for r in row), default=0)
    window = max(1, steps_total // 20) if prob.stochastic else 1
    floor = 1e-12 if offset == 0 else 1e-8  # below float32 resolution of the loss
    lowest = math.inf
    for i, r in enumerate(row):
        if r.error is not None or r.curve_loss.size == 0:
            continue
        color, ls = _style(r.optimizer, i)
        y = r.curve_loss - offset
        if window > 1 and np.all(np.isfinite(y)):
            y = _running_mean(r.curve_steps, y, window)
        y = np.maximum(y, floor)
        y = np.where(np.isfinite(y), y, np.nan)
        ax.plot(r.curve_steps, y, color=color, ls=ls, lw=1.4, alpha=0.9)
        if r.diverged_at is not None:
            ok = np.flatnonzero(np.isfinite(y))
            if ok.size:
                ax.plot(r.curve_steps[ok[-1]], y[ok[-1]], "x", color=color, ms=7, mew=2)
        if np.isfinite(y).any():
            lowest = min(lowest, np.nanmin(y))
    ax.axhline(max(prob.target_loss - offset, floor), color="0.4", ls=":", lw=1.2)
    ax.set_yscale("log")
    if math.isfinite(lowest):
        ax.set_ylim(bottom=max(lowest / 3, floor / 2))
    ax.set_xlabel("step")
    label = "loss - minimum" if offset else "loss"
    if window > 1:
        label += f"  (mean over {window} steps)"
    ax.set_ylabel(label)
    ax.set_title(prob.name + (", mini-batches" if prob.stochastic else "") +
                 f": {prob.n_params} params", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)


def _path_panel(ax, prob, row, LogNorm):
    (x0, x1), (y0, y1) = prob.bounds
    xs = np.linspace(x0, x1, 300)
    ys = np.linspace(y0, y1, 300)
    X, Y = np.meshgrid(xs, ys)
    Z = prob.f(X, Y)
    zmin = max(float(Z.min()), 1e-4)
    levels = np.geomspace(zmin, float(Z.max()), 24)
    ax.contourf(X, Y, np.maximum(Z, zmin), levels=levels, norm=LogNorm(), cmap="Greys_r",
                alpha=0.55)
    ax.contour(X, Y, np.maximum(Z, zmin), levels=levels, norm=LogNorm(), colors="0.35",
               linewidths=0.4)
    if hasattr(prob, "saddle"):
        ax.contour(X, Y, Z, levels=[prob.f(*prob.saddle)], colors="0.1", linewidths=1.0,
                   linestyles="--")
        ax.plot(*prob.saddle, marker="x", color="k", ms=9, mew=2, zorder=5)
    for i, r in enumerate(row):
        if r.error is not None or r.path is None:
            continue
        color, ls = _style(r.optimizer, i)
        p = r.path[np.all(np.isfinite(r.path), axis=1)]
        ax.plot(p[:, 0], p[:, 1], color=color, ls=ls, lw=1.3, alpha=0.95)
        if len(p):
            ax.plot(p[-1, 0], p[-1, 1], "o", color=color, ms=4, mec="k", mew=0.5, zorder=6)
    ax.plot(*prob.start, "o", color="w", mec="k", ms=8, zorder=7)
    for m in prob.minima:
        ax.plot(*m, marker="*", color="gold", mec="k", ms=14, zorder=7)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{prob.name}: trajectories", fontsize=11)


# ---------------------------------------------------------------------------
# Entry points

def _bench(argv: List[str]) -> int:
    import importlib

    try:
        _bench = importlib.import_module("optimc._bench")
    except ModuleNotFoundError as exc:
        if exc.name != "optimc._bench":
            raise
        print("optimc: the benchmark is not available: the module optimc._bench is missing "
              "from this installation.", file=sys.stderr)
        return 2
    rc = _bench.main(argv)
    return int(rc or 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        return _bench(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench":
        parser.error("'bench' must come first: python -m optimc bench [benchmark options]")

    import optimc

    missing = [n for n in args.optimizers if not hasattr(optimc, n)]
    if missing:
        parser.error(f"this optimc has no optimizer class {', '.join(missing)}")
    opt_classes = [getattr(optimc, n) for n in args.optimizers]

    mpl = None
    if not args.no_plot:
        mpl = _import_matplotlib()
        problem_msg = _check_output(args.output, mpl)
        if problem_msg:
            parser.error(problem_msg)

    dtype = np.dtype(args.dtype)
    t_start = time.perf_counter()
    problem_list = [_problems.get_problem(n) for n in args.problems]
    results = run_all(problem_list, opt_classes, args.steps, dtype, args.seed)
    t_runs = time.perf_counter() - t_start

    version = getattr(optimc, "__version__", None)
    print(f"optimc{' ' + version if version else ''}: {len(opt_classes)} optimizer(s) x "
          f"{len(problem_list)} problem(s), {args.dtype}, seed {args.seed}")
    print()
    print(format_table(problem_list, results, args.dtype))
    print(f"\n{len(opt_classes) * len(problem_list)} runs in {t_runs:.1f} s")

    errors = [r for row in results for r in row if r.error is not None]
    for r in errors:
        print(f"error: {r.problem}/{r.optimizer}: {r.error}", file=sys.stderr)

    if not args.no_plot:
        if mpl is None:
            print(f"matplotlib is not installed, so no figure was drawn; {DEMO_HINT} "
                  f"to get it (or pass --no-plot).")
        else:
            fig = make_figure(mpl, problem_list, results, args.dtype, args.seed)
            out = os.path.abspath(args.output)
            fig.savefig(out, dpi=110)
            print(f"figure saved to {out}")
    sys.stdout.flush()
    return 1 if errors else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
