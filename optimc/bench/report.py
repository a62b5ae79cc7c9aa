"""The benchmark's report: text tables for the terminal, and the files it writes.

Times are in nanoseconds per element; ratios are in tables or columns of their own.
The report states figures and ratios against the competitors, nothing else.
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Dict, List, Optional, Sequence

from .competitors import IMPLS
from .lowprec import lowprec_markdown

__all__ = ["OUTPUT_FILES", "fmt_ns", "fmt_bytes", "format_table", "format_fixed",
           "format_threads_big", "format_sweep", "format_markdown", "write_outputs", "save_plot"]

#: file name -> what it holds (``--help`` lists these; all go in ``--out``)
OUTPUT_FILES: Dict[str, str] = {
    "bench.json": "everything: machine, settings, every implementation's statistics, checks",
    "bench.csv": "the main table, one row per case",
    "bench.md": "the tables as Markdown",
    "bench_threads.csv": "the threads section (when it runs)",
    "bench.png": "time per element against size (with --plot; needs matplotlib)",
}

SHORT = {"optimc": "optimc", "roofline": "roofline", "numpy": "numpy", "np-block": "np-block",
         "torch-loop": "t-loop", "torch-foreach": "t-foreach", "torch-fused": "t-fused"}
RATIOS = ("of roof", "x numpy", "x torch")


def fmt_ns(v) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_bytes(b: Optional[int]) -> str:
    """'11010048 bytes (11.01 MB)', or '-'."""
    return "-" if b is None else f"{b} bytes ({b / 1e6:.2f} MB)"


def _times(v) -> str:
    """A speed-up such as '3.4x', or '-' where there was no competitor."""
    return "-" if v is None else f"{v:.1f}x"


def _main_rows(results) -> List[List[str]]:
    rows = []
    for r in results:
        ns = r["ns_per_element"]
        cells = [r["optimizer"], r["dtype"], r["size"]]
        for impl in IMPLS:
            c = fmt_ns(ns.get(impl))
            chk = r["checks"].get(impl)
            cells.append(c + ("!" if chk is not None and not chk[0] else ""))
        cells += [f"{r['roofline_fraction']:.2f}", _times(r["x_numpy"]), _times(r["x_torch"])]
        rows.append(cells)
    return rows


def _text_table(head: Sequence[str], rows: Sequence[Sequence[str]], left: int,
                indent: str = "", groups: Sequence[tuple] = ()) -> List[str]:
    """Aligned columns; ``groups``: (label, first column, last column) spanning headers."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]

    def line(cells):
        return indent + "  ".join(c.ljust(w) if i < left else c.rjust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    out = []
    if groups:
        starts = [len(indent) + sum(w + 2 for w in widths[:i]) for i in range(len(widths) + 1)]
        text = ""
        for label, first, last in groups:
            span = starts[last + 1] - 2 - starts[first]
            text = text.ljust(starts[first]) + label.center(span, "-")
        out.append(text.rstrip())
    out.append(line(head))
    out.append(indent + "  ".join("-" * w for w in widths))
    out += [line(cells) for cells in rows]
    return out


def format_table(results: List[dict]) -> str:
    head = ["optimizer", "dtype", "size"] + [SHORT[i] for i in IMPLS] + list(RATIOS)
    groups = [(" ns per element (median) ", 3, 2 + len(IMPLS)),
              (" ratios ", 3 + len(IMPLS), 2 + len(IMPLS) + len(RATIOS))]
    return "\n".join(_text_table(head, _main_rows(results), 3, groups=groups))


def format_fixed(fixed: List[dict]) -> str:
    lines = ["fixed cost: one step on a 1-element param vs np.add(a, b, out=a) on 1-element "
             "arrays"]
    for f in fixed:
        lines.append(f"  {f['optimizer']:<10} {f['dtype']:<7}: step {f['step_ns']:7.0f} ns, "
                     f"np.add {f['np_add_ns']:5.0f} ns, ratio {f['ratio']:.2f}")
    return "\n".join(lines)


def format_threads_big(big: dict) -> str:
    nt, ns = big["threads"], big["ns_per_element"]
    lines = [f"threads: {big['optimizer']} {big['dtype']}, {big['n_elements']:.0e} elements "
             f"({fmt_bytes(big['bytes_moved'])} moved per step), 1 vs {nt} threads; "
             f"ns per element (median) and speedup"]
    for impl in ("optimc", "roofline", "torch-fused"):
        if f"{impl}/1" in ns:
            a, b = ns[f"{impl}/1"], ns[f"{impl}/{nt}"]
            lines.append(f"  {impl:<12} {fmt_ns(a):>7} -> {fmt_ns(b):>7}   speedup {a / b:.2f}")
    if big.get("skipped"):
        lines.append(f"  ({big['skipped']})")
    return "\n".join(lines)


def _sweep_tables(s):
    nt, thr = s["threads"], s["default_threshold"]
    time_head = ["elements", "MB moved", "1 thread", f"{nt} threads, threshold 0",
                 f"{nt} threads, default", "1 thread, after idle",
                 f"{nt} threads, threshold 0, after idle"]
    ratio_head = ["elements", "MB moved", "threshold 0", "default threshold",
                  "threshold 0, after idle"]
    times, ratios = [], []
    for r in s["rows"]:
        lead = [str(r["n_elements"]), f"{r['bytes_moved'] / 1e6:.2f}"]
        times.append(lead + [fmt_ns(r[k]) for k in ("ns_1", "ns_forced", "ns_default",
                                                     "ns_1_idle", "ns_forced_idle")])
        ratios.append(lead + [f"{r[k]:.2f}" for k in ("forced_over_1", "default_over_1",
                                                      "forced_over_1_idle")])
    title = (f"{s['optimizer']} {s['dtype']} ({s['bytes_per_element']} bytes per element), "
             f"1 vs {nt} threads; default threshold {fmt_bytes(thr)}; 'after idle': each step "
             f"follows {s['idle_gap_s'] * 1e3:g} ms of sleep")
    largest = max((r["bytes_moved"] for r in s["rows"]), default=None)

    def won(b):
        return f"from {fmt_bytes(b)}" if b is not None else f"never (up to {fmt_bytes(largest)})"
    wins = (f"the forced split was faster at that size and every larger one: back to back "
            f"{won(s['suggested_back_to_back_bytes'])}, after idle "
            f"{won(s['suggested_after_idle_bytes'])}")
    if s["suggested_threshold_bytes"] is None:
        suggestion = f"no suggested threshold ({wins}); default {fmt_bytes(thr)}"
    else:
        suggestion = (f"suggested threshold: {fmt_bytes(s['suggested_threshold_bytes'])} moved "
                      f"per step ({wins}); default {fmt_bytes(thr)}")
    return title, (time_head, times), (ratio_head, ratios), suggestion


def format_sweep(s: dict) -> str:
    title, (th, tr), (rh, rr), suggestion = _sweep_tables(s)
    nt = s["threads"]
    lines = [f"threshold sweep: {title}", "  ns per element (median):"]
    lines += _text_table(th, tr, 0, indent="    ")
    lines.append(f"  time with {nt} threads / time with 1 thread (below 1: threads help):")
    lines += _text_table(rh, rr, 0, indent="    ")
    lines.append("  " + suggestion)
    return "\n".join(lines)


def _md_table(head, rows, left) -> List[str]:
    return (["| " + " | ".join(head) + " |",
             "|" + "---|" * left + "---:|" * (len(head) - left)]
            + ["| " + " | ".join(cells) + " |" for cells in rows] + [""])


def format_markdown(payload) -> str:
    """The run as Markdown tables (what docs/performance.md shows)."""
    lines: List[str] = []
    results = payload["results"]
    if results:
        head = ["optimizer", "dtype", "size"] + [SHORT[i] for i in IMPLS] + list(RATIOS)
        lines.append(f"Times in ns per element (median; {payload['settings']['threads']} "
                     "thread(s)); ratios: roofline / optimc, best NumPy / optimc, fastest "
                     "torch.optim / optimc.")
        lines.append("")
        lines += _md_table(head, _main_rows(results), 3)
    if payload.get("fixed_cost"):
        lines += _md_table(["optimizer", "dtype", "1-element step (ns)", "np.add (ns)", "ratio"],
                           [[f["optimizer"], f["dtype"], f"{f['step_ns']:.0f}",
                             f"{f['np_add_ns']:.0f}", f"{f['ratio']:.2f}"]
                            for f in payload["fixed_cost"]], 2)
    big = payload.get("threads_1e7")
    if big:
        nt, ns = big["threads"], big["ns_per_element"]
        rows = [[impl, fmt_ns(ns[f"{impl}/1"]), fmt_ns(ns[f"{impl}/{nt}"]),
                 f"{ns[f'{impl}/1'] / ns[f'{impl}/{nt}']:.2f}"]
                for impl in ("optimc", "roofline", "torch-fused") if f"{impl}/1" in ns]
        lines += _md_table([f"{big['optimizer']} {big['dtype']}, {big['n_elements']:.0e} "
                            f"elements", "1 thread (ns/el)", f"{nt} threads (ns/el)", "speedup"],
                           rows, 1)
    lines += lowprec_markdown(payload.get("lowprec"))
    for s in payload.get("threshold_sweeps") or []:
        title, (th, tr), (rh, rr), suggestion = _sweep_tables(s)
        lines += [title + ".", "", "ns per element (median):", ""]
        lines += _md_table(th, tr, 0)
        lines += [f"time with {s['threads']} threads / time with 1 thread:", ""]
        lines += _md_table(rh, rr, 0)
        lines += [suggestion[0].upper() + suggestion[1:] + ".", ""]
    return "\n".join(lines)


def write_outputs(out_dir, payload, plot, log=print) -> List[str]:
    """Write the files of :data:`OUTPUT_FILES` that this run has; return their paths."""
    results, big = payload["results"], payload.get("threads_1e7")
    sweeps = payload.get("threshold_sweeps") or []
    os.makedirs(out_dir, exist_ok=True)
    path = {name: os.path.join(out_dir, name) for name in OUTPUT_FILES}
    with open(path["bench.json"], "w") as f:
        json.dump(payload, f, indent=1, default=float)
    with open(path["bench.csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["optimizer", "dtype", "size", "n_tensors", "n_elements", "bytes_per_element",
                    "threads"]
                   + [f"{i.replace('-', '_')}_ns_per_element" for i in IMPLS]
                   + ["roofline_fraction", "x_numpy", "best_numpy", "x_torch", "best_torch",
                      "numpy_check", "torch_check"])
        for r in results:
            ns = r["ns_per_element"]
            np_checks = [v[0] for k, v in r["checks"].items() if not k.startswith("torch")]
            t_checks = [v[0] for k, v in r["checks"].items() if k.startswith("torch")]
            w.writerow([r["optimizer"], r["dtype"], r["size"], r["n_tensors"], r["n_elements"],
                        r["bytes_per_element"], payload["settings"]["threads"]]
                       + ["" if ns.get(i) is None else f"{ns[i]:.5g}" for i in IMPLS]
                       + [f"{r['roofline_fraction']:.4f}",
                          "" if r["x_numpy"] is None else f"{r['x_numpy']:.3f}",
                          r["best_numpy"] or "",
                          "" if r["x_torch"] is None else f"{r['x_torch']:.3f}",
                          r["best_torch"] or "",
                          "" if not np_checks else ("ok" if all(np_checks) else "MISMATCH"),
                          "" if not t_checks else ("ok" if all(t_checks) else "MISMATCH")])
    with open(path["bench.md"], "w") as f:
        f.write(f"Command: `{payload['command']}` ({payload['timestamp']})\n\n"
                + format_markdown(payload))
    written = [path["bench.json"], path["bench.csv"], path["bench.md"]]
    if big or sweeps:
        with open(path["bench_threads.csv"], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["section", "optimizer", "dtype", "n_elements", "bytes_moved", "config",
                        "ns_per_element", "ratio_to_1_thread"])
            if big:
                ns = big["ns_per_element"]
                for k, v in ns.items():
                    impl, nt = k.split("/")
                    w.writerow(["large step", big["optimizer"] if impl == "optimc" else impl,
                                big["dtype"], big["n_elements"], big["bytes_moved"],
                                f"{nt} threads", f"{v:.5g}", f"{v / ns[impl + '/1']:.4f}"])
            for s in sweeps:
                nt, thr = s["threads"], s["default_threshold"]
                for r in s["rows"]:
                    for cfg, col, base in (
                            ("1 thread", "ns_1", "ns_1"),
                            (f"{nt} threads, threshold 0", "ns_forced", "ns_1"),
                            (f"{nt} threads, threshold {thr}", "ns_default", "ns_1"),
                            ("1 thread, after idle", "ns_1_idle", "ns_1_idle"),
                            (f"{nt} threads, threshold 0, after idle", "ns_forced_idle",
                             "ns_1_idle")):
                        w.writerow(["threshold sweep", r["optimizer"], r["dtype"],
                                    r["n_elements"], r["bytes_moved"], cfg, f"{r[col]:.5g}",
                                    f"{r[col] / r[base]:.4f}"])
        written.append(path["bench_threads.csv"])
    if plot and results:
        p = save_plot(results, path["bench.png"], payload, log)
        if p:
            written.append(p)
    return written


def save_plot(results, path, payload, log=print) -> Optional[str]:
    """Time per element against size: a panel per optimizer and dtype, one line per
    implementation. No pyplot: an Agg canvas of its own."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log('--plot: matplotlib is not installed (pip install "optimc[bench]"); no plot saved')
        return None
    labels = list(dict.fromkeys(r["optimizer"] for r in results))
    dtypes = list(dict.fromkeys(r["dtype"] for r in results))
    sizes = list(dict.fromkeys(r["size"] for r in results))
    by_key = {(r["optimizer"], r["dtype"], r["size"]): r for r in results}
    ncols = min(4, len(labels))
    rows_per_dtype = math.ceil(len(labels) / ncols)
    nrows = rows_per_dtype * len(dtypes)
    fig = Figure(figsize=(3.6 * ncols, 2.9 * nrows + 0.9))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    styles = {"optimc": ("C3", "o", "-"), "roofline": ("k", "", ":"), "numpy": ("C0", "s", "-"),
              "np-block": ("C0", "s", "--"), "torch-loop": ("C2", "^", "-"),
              "torch-foreach": ("C2", "v", "--"), "torch-fused": ("C1", "D", "-")}
    for ax in axes.flat:
        ax.set_visible(False)
    for i, dt in enumerate(dtypes):
        for j, lab in enumerate(labels):
            ax = axes[i * rows_per_dtype + j // ncols][j % ncols]
            ax.set_visible(True)
            for impl in IMPLS:
                pts = [(k, by_key[(lab, dt, sz)]["ns_per_element"][impl])
                       for k, sz in enumerate(sizes)
                       if (lab, dt, sz) in by_key and impl in by_key[(lab, dt, sz)]["ns_per_element"]]
                if pts:
                    c, m, ls = styles[impl]
                    ax.plot(*zip(*pts), color=c, marker=m or None, ls=ls, lw=1.5, ms=4,
                            label=impl)
            ax.set_yscale("log")
            ax.set_xticks(range(len(sizes)))
            ax.set_xticklabels(sizes, fontsize=8)
            ax.set_title(f"{lab} {dt}", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            if j % ncols == 0:
                ax.set_ylabel("ns per element")
    handles = {}
    for ax in axes.flat:
        for h, n in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(n, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=len(handles),
               frameon=False, fontsize=9)
    cfg = payload["machine"]["config"]
    fig.suptitle(f"optimc step time per element (lower is better); "
                 f"{payload['machine'].get('cpu_model', '')}, simd={cfg['simd']}, "
                 f"threads={payload['settings']['threads']}", fontsize=11)
    fig.tight_layout(rect=(0, 0.5 / (2.9 * nrows + 0.9), 1, 1 - 0.4 / (2.9 * nrows + 0.9)))
    fig.savefig(path, dpi=100)
    return path
