"""``python -m optimc`` (the default command): compare the optimizers on the built-in problems.

With no options every optimizer class in ``optimc.ALL`` runs on every problem of
:mod:`optimc.problems`, from the same start, with the same mini-batches, at the
problem's documented learning rate for that class (all other hyperparameters at the
class defaults). A table compares final loss, steps to the target loss and the time each
``step`` call took; a figure shows the loss curves and, for the 2-D problems, the
trajectories over contour plots.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional, Sequence

import numpy as np

import optimc

from . import glove as _glove
from . import problems as _problems
from .figure import DEFAULT_OUTPUT, check_output, import_matplotlib, make_figure
from .runner import run_all
from .special import ENTRIES
from .table import format_table

__all__ = ["main", "build_parser", "optimizer_classes", "DEMO_HINT"]

DEMO_HINT = 'pip install "optimc[demo]"'


def optimizer_classes():
    """{class name: class} of every optimizer the demo can run: ``optimc.ALL``, then the
    entries for LBFGS and Muon (:mod:`optimc.demo.special`), each on its own problems."""
    return {cls.__name__: cls for cls in tuple(optimc.ALL) + ENTRIES}


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


def build_parser(prog: str = "python -m optimc") -> argparse.ArgumentParser:
    names = list(optimizer_classes())
    factories = _problems._FACTORIES
    problem_lines = "\n".join(f"  {cls.name:<16} {cls.description}" for cls in factories.values())
    problem_lines += (f"\n  {_glove.GloVe.name:<16} GloVe on Python's help topics, sparse rows; "
                      f"{_glove.SECTION_SETTINGS['epochs']} epochs (--glove-epochs)\n  {'':<16} by "
                      f"{', '.join(o[0] for o in _glove.OPTIMIZERS)}, if in --optimizers")
    parser = argparse.ArgumentParser(
        prog=prog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run optimc's optimizers on built-in problems and compare them.\n\n"
            "Every optimizer starts from the same point and sees the same mini-batches;\n"
            "each uses the problem's documented learning rate for it (see\n"
            "optimc.problems) and its class defaults otherwise. Prints a table (final\n"
            "loss, steps to reach the target loss, microseconds per optimizer step) and\n"
            "saves a figure of the loss curves and the 2-D trajectories (--output)."),
        epilog=(
            f"problems:\n{problem_lines}\n\n"
            f"optimizers (optimc.ALL, then LBFGS on the full-batch problems and\n"
            f"Muon+AdamW on the MLP):\n  {', '.join(names)}\n\n"
            "other commands (they must come first):\n"
            f"  {prog} bench [options]    the speed benchmark ({prog} bench --help)\n\n"
            "examples:\n"
            f"  {prog}\n"
            f"  {prog} --optimizers sgd,momentum,adam --problems saddle,rosenbrock\n"
            f"  {prog} --steps 500 --dtype float64 --output runs/cmp.png\n"
            f"  {prog} --problems glove --glove-epochs 25\n\n"
            f"The figure needs matplotlib: {DEMO_HINT}"),
    )
    parser.add_argument(
        "--optimizers", metavar="LIST", type=_name_list(names, "optimizers"), default=names,
        help=f"comma-separated optimizer classes to run, case-insensitive (default: all "
             f"{len(names)})")
    parser.add_argument(
        "--problems", metavar="LIST",
        type=_name_list(_problems.PROBLEM_NAMES + (_glove.GloVe.name,), "problems",
                        _problems._normalize),
        default=list(_problems.PROBLEM_NAMES) + [_glove.GloVe.name],
        help="comma-separated problems to run (default: all; see the list below)")
    parser.add_argument(
        "--steps", metavar="N", type=_int_at_least(1, "--steps"), default=None,
        help="optimizer steps per run, for every problem but glove (default: each "
             "problem's own default: "
             + ", ".join(f"{c.name} {c.default_steps}" for c in factories.values()) + ")")
    parser.add_argument(
        "--glove-epochs", metavar="N", type=_int_at_least(1, "--glove-epochs"),
        default=_glove.SECTION_SETTINGS["epochs"],
        help="epochs of the glove problem: passes over its co-occurrences (default: "
             f"{_glove.SECTION_SETTINGS['epochs']}, about a second; more epochs give better "
             "neighbours)")
    parser.add_argument(
        "--seed", metavar="N", type=_int_at_least(0, "--seed"), default=0,
        help="seed for the starting points and the mini-batches; the same seed gives "
             "the same losses (default: 0)")
    parser.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32",
        help="dtype of the parameters and gradients (default: float32)")
    parser.add_argument(
        "--output", metavar="PATH", default=DEFAULT_OUTPUT,
        help=f"the file the figure is written to, format from the extension (default: "
             f"{DEFAULT_OUTPUT} in the current directory)")
    parser.add_argument(
        "--no-plot", action="store_true",
        help="print the table only; do not draw or write the figure")
    return parser


def parse_args(argv: Sequence[str], prog: str, commands: Sequence[str] = ()):
    """The parsed options; a command name among them (``bench`` after an option) is an
    error that says where it belongs."""
    parser = build_parser(prog)
    args, extra = parser.parse_known_args(list(argv))
    misplaced = [a for a in extra if a in commands]
    if misplaced:
        parser.error(f"{misplaced[0]!r} must come first: {prog} {misplaced[0]} [options]")
    if extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    return parser, args


# ---------------------------------------------------------------------------
# Entry point

def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m optimc",
         commands: Sequence[str] = ("bench",)) -> int:
    """Run the demo with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser, args = parse_args(sys.argv[1:] if argv is None else argv, prog, commands)
    classes = optimizer_classes()
    opt_classes = [classes[n] for n in args.optimizers]

    mpl = None
    if not args.no_plot:
        mpl = import_matplotlib()
        problem_msg = check_output(args.output, mpl)
        if problem_msg:
            parser.error(problem_msg)

    dtype = np.dtype(args.dtype)
    t_start = time.perf_counter()
    problem_list = [_problems.get_problem(n) for n in args.problems if n != _glove.GloVe.name]
    results = run_all(problem_list, opt_classes, args.steps, dtype, args.seed)
    t_runs = time.perf_counter() - t_start

    if problem_list:
        print(f"optimc {optimc.__version__}: {len(opt_classes)} optimizer(s) x "
              f"{len(problem_list)} problem(s), {args.dtype}, seed {args.seed}")
        print()
        print(format_table(problem_list, results, args.dtype))
        print(f"\n{len(opt_classes) * len(problem_list)} runs in {t_runs:.1f} s")
    if _glove.GloVe.name in args.problems:
        t_start = time.perf_counter()
        glove, glove_runs = _glove.run_section(args.glove_epochs, dtype, args.seed,
                                               args.optimizers)
        print(("\n" if problem_list else "")
              + f"optimc {optimc.__version__}: glove, {args.dtype}, seed {args.seed}")
        print(_glove.format_section(glove, glove_runs, args.dtype))
        print(f"\nglove: {len(glove_runs)} runs x {args.glove_epochs} epochs in "
              f"{time.perf_counter() - t_start:.1f} s")
    else:
        glove_runs = []

    errors = [r for row in results for r in row if r.error is not None]
    for r in errors:
        print(f"error: {r.problem}/{r.optimizer}: {r.error}", file=sys.stderr)
    for r in glove_runs:
        if r.error is not None:
            errors.append(r)
            print(f"error: glove/{r.label}: {r.error}", file=sys.stderr)

    if not args.no_plot and not problem_list:
        print("no figure: the glove problem has none (notebooks/04_glove_sparse_adagrad.ipynb "
              "draws its curves)")
    elif not args.no_plot:
        if mpl is None:
            print(f"matplotlib is not installed, so no figure was drawn; {DEMO_HINT} "
                  f"to get it (or pass --no-plot).")
        else:
            fig = make_figure(mpl, problem_list, results, opt_classes, args.dtype, args.seed)
            out = os.path.abspath(args.output)
            fig.savefig(out, dpi=110)
            print(f"figure saved to {out}")
    sys.stdout.flush()
    return 1 if errors else 0
