"""The demo's figure: loss curves per problem, trajectories over the 2-D problems.

Many optimizers share each panel, so a line's colour says its family and its line style
(and shade) which member of the family it is; :data:`FAMILIES` is the map, and a class
not in it joins the family of its nearest base class that is, or else "other".
"""

from __future__ import annotations

import math
import os
import textwrap
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .problems import Problem2D
from .rates import NOTES
from .table import notes_for

__all__ = ["FAMILIES", "DEFAULT_OUTPUT", "line_styles", "import_matplotlib", "check_output",
           "make_figure"]

DEFAULT_OUTPUT = "optimc_comparison.png"

#: (family, matplotlib colour map, members): a family's lines share the map's hue.
FAMILIES: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
    ("SGD and momentum", "Blues", ("SGD", "Momentum", "NAG")),
    ("per-parameter rates", "Greens", ("Adagrad", "RMSprop", "Adadelta")),
    ("Adam and variants", "Reds", ("Adam", "AdamW", "Adamax", "NAdam", "RAdam")),
    ("sign-based steps", "Purples", ("Lion", "Rprop")),
)
OTHER_FAMILY = ("other", "Greys")

#: Members of a family differ by these, in order.
DASHES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 1)),
          (0, (3, 1, 1, 1)))


def family_of(cls) -> Tuple[str, str]:
    """(family, colour map) of an optimizer class: its own entry in :data:`FAMILIES`, else
    that of its nearest base class with one, else :data:`OTHER_FAMILY`."""
    for klass in cls.__mro__:
        for family, cmap, members in FAMILIES:
            if klass.__name__ in members:
                return family, cmap
    return OTHER_FAMILY


def line_styles(classes: Sequence[type]) -> Dict[str, Tuple[tuple, object, str]]:
    """{class name: (RGBA colour, line style, family)} for the classes drawn together."""
    from matplotlib import colormaps

    groups: Dict[Tuple[str, str], List[str]] = {}
    for cls in classes:
        groups.setdefault(family_of(cls), []).append(cls.__name__)
    order = {name: i for _, _, members in FAMILIES for i, name in enumerate(members)}
    styles = {}
    for (family, cmap_name), names in groups.items():
        names.sort(key=lambda n: order.get(n, len(order)))  # the map's order, newcomers last
        cmap = colormaps[cmap_name]
        for i, name in enumerate(names):
            # from the darkest shade to a light one that still shows on white
            shade = 0.95 - 0.45 * i / max(len(names) - 1, 1) if len(names) > 1 else 0.8
            styles[name] = (cmap(shade), DASHES[i % len(DASHES)], family)
    return styles


def import_matplotlib():
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


def check_output(path: str, mpl) -> Optional[str]:
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


def smoothing_window(prob, steps: int) -> int:
    """Steps a mini-batch problem's curve is averaged over (1: not averaged)."""
    return max(1, steps // 20) if prob.stochastic else 1


def caption(problem_list, results) -> List[str]:
    """The lines printed under the figure: how the curves differ from the table's
    numbers, and the notes on results that need one."""
    parts = []
    offsets = [p for p in problem_list if p.min_loss]
    if offsets:
        parts.append("loss panels subtract the known minimum where it is not 0 ("
                     + ", ".join(f"{p.name} {p.min_loss:.6f}" for p in offsets) + ")")
    stochastic = [(p, row) for p, row in zip(problem_list, results) if p.stochastic and row]
    if stochastic:
        parts.append("mini-batch panels show a trailing mean of the full-data loss ("
                     + ", ".join(f"{p.name} over {smoothing_window(p, row[0].steps)} steps"
                                 for p, row in stochastic)
                     + "), so their curves end near, not at, the table's final loss")
    lines = []
    if parts:
        lines.append("Unlike the table, which prints the full-data loss after the last step: "
                     + "; ".join(parts) + ".")
    for (problem, optimizer), number in notes_for(problem_list, results).items():
        lines.append(f"[{number}] {optimizer} on {problem}: {NOTES[(problem, optimizer)]}")
    return lines


def make_figure(mpl, problem_list, results, opt_classes, dtype_name: str, seed: int):
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D

    styles = line_styles(opt_classes)
    panels = [("loss", p, r) for p, r in zip(problem_list, results)]
    panels += [("path", p, r) for p, r in zip(problem_list, results) if isinstance(p, Problem2D)]
    n = len(panels)
    ncols = min(4, n + 1)  # + one cell for the legend
    nrows = math.ceil((n + 1) / ncols)
    width = 4.6 * ncols
    notes = [textwrap.fill(line, width=int(width * 10.5), subsequent_indent='    ')
             for line in caption(problem_list, results)]
    caption_in = 0.19 * sum(line.count("\n") + 1 for line in notes) + (0.15 if notes else 0)
    height = 4.1 * nrows + 0.5 + caption_in
    Figure, FigureCanvasAgg = mpl
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)

    numbers = notes_for(problem_list, results)
    for ax, (kind, prob, row) in zip(axes.flat, panels):
        if kind == "loss":
            _loss_panel(ax, prob, row, styles, numbers)
        else:
            _path_panel(ax, prob, row, styles, LogNorm)
    spare = list(axes.flat)[n:]
    for ax in spare:
        ax.axis("off")

    # the legend: one block per family, its name first
    handles, titles = [], set()
    for family in dict.fromkeys(s[2] for s in styles.values()):
        title = Line2D([], [], ls="", label=family)
        titles.add(id(title))
        handles.append(title)
        shown = {r.optimizer: r for row in results for r in row}   # every row: some run on few problems
        for r in shown.values():
            if r.optimizer in styles and styles[r.optimizer][2] == family:
                color, ls, _ = styles[r.optimizer]
                handles.append(Line2D([], [], color=color, ls=ls, lw=2.2, label=r.optimizer))
    handles.append(Line2D([], [], ls="", label="markers"))
    titles.add(id(handles[-1]))
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
    legend = spare[0].legend(handles=handles, loc="center", ncol=2, frameon=False, fontsize=10,
                             handlelength=3.2, columnspacing=1.2)
    for handle, text in zip(handles, legend.get_texts()):
        if id(handle) in titles:
            text.set_fontweight("bold")
    title = (f"optimc: {len(styles)} optimizer(s) on {len(problem_list)} problem(s) "
             f"({dtype_name}, seed {seed}; learning rates from optimc.problems)")
    fig.suptitle(title, fontsize=13)
    bottom = (caption_in + 0.1) / height if notes else 0
    if notes:
        fig.text(0.01, 0.01, "\n".join(notes), fontsize=9.5, va="bottom", ha="left",
                 family="sans-serif")
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.35 / height))
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


def _loss_panel(ax, prob, row, styles, numbers):
    offset = prob.min_loss if prob.min_loss else 0.0
    window = smoothing_window(prob, max((r.steps for r in row), default=0))
    floor = 1e-12 if offset == 0 else 1e-8  # below float32 resolution of the loss
    lowest = math.inf
    for r in row:
        if r.error is not None or r.curve_loss.size == 0:
            continue
        color, ls, _ = styles[r.optimizer]
        y = r.curve_loss - offset
        if window > 1 and np.all(np.isfinite(y)):
            y = _running_mean(r.curve_steps, y, window)
        y = np.where(np.isfinite(y), np.maximum(y, floor), np.nan)
        ax.plot(r.curve_steps, y, color=color, ls=ls, lw=1.5)
        ok = np.flatnonzero(np.isfinite(y))
        if r.diverged_at is not None and ok.size:
            ax.plot(r.curve_steps[ok[-1]], y[ok[-1]], "x", color=color, ms=7, mew=2)
        note = numbers.get((prob.name, r.optimizer))
        if note and ok.size:  # the caption's footnote, at the end of the curve
            ax.annotate(f"[{note}]", (r.curve_steps[ok[-1]], y[ok[-1]]), xytext=(3, 3),
                        textcoords="offset points", color=color, fontsize=10,
                        fontweight="bold", ha="right", va="bottom")
        if ok.size:
            lowest = min(lowest, np.nanmin(y))
    ax.axhline(max(prob.target_loss - offset, floor), color="0.4", ls=":", lw=1.2)
    ax.set_yscale("log")
    if math.isfinite(lowest):
        ax.set_ylim(bottom=max(lowest / 3, floor / 2))
    ax.set_xlabel("step")
    label = f"loss - {offset:.4f} (minimum)" if offset else "loss"
    if window > 1:
        label += f", mean of {window} steps"
    ax.set_ylabel(label)
    ax.set_title(prob.name + (", mini-batches" if prob.stochastic else "") +
                 f": {prob.n_params} params", fontsize=11)
    ax.grid(True, which="major", alpha=0.3)


def _path_panel(ax, prob, row, styles, LogNorm):
    (x0, x1), (y0, y1) = prob.bounds
    X, Y = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    Z = prob.f(X, Y)
    zmin = max(float(Z.min()), 1e-4)
    levels = np.geomspace(zmin, float(Z.max()), 24)
    ax.contourf(X, Y, np.maximum(Z, zmin), levels=levels, norm=LogNorm(), cmap="Greys_r",
                alpha=0.45)
    ax.contour(X, Y, np.maximum(Z, zmin), levels=levels, norm=LogNorm(), colors="0.45",
               linewidths=0.4)
    if hasattr(prob, "saddle"):
        ax.contour(X, Y, Z, levels=[prob.f(*prob.saddle)], colors="0.1", linewidths=1.0,
                   linestyles="--")
        ax.plot(*prob.saddle, marker="x", color="k", ms=9, mew=2, zorder=5)
    for r in row:
        if r.error is not None or r.path is None:
            continue
        color, ls, _ = styles[r.optimizer]
        p = r.path[np.all(np.isfinite(r.path), axis=1)]
        ax.plot(p[:, 0], p[:, 1], color=color, ls=ls, lw=1.4)
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
