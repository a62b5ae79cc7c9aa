"""``python -m optimc bench``: the benchmark's command line.

Options are parsed into groups (what to run, how to run it, how long to time, where
the results go); :func:`run` takes the parsed options. A new way of running the step
(say, across processes) is an option in :func:`add_execution_options` read in
:func:`run`, and a new section is a name in :data:`SECTIONS` and a branch in :func:`run`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np

from .. import _core
from .cases import DEFAULT_SIZES, DTYPES, algorithm_cases, parse_size, parse_sizes, size_label
from .competitors import NUMPY_BLOCK
from .machine import cpu_times, machine_info
from .report import (OUTPUT_FILES, fmt_ns, format_fixed, format_sweep, format_table,
                     format_threads_big, write_outputs)
from .sections import THRESHOLD_SIZES, fixed_cost, run_case, threads_big, threshold_sweep
from .sparse import format_sparse, mismatches as sparse_mismatches, sparse_section
from .lowprec import format_lowprec, format_lowprec_floor, lowprec_floor, lowprec_section
from .timing import PROFILES

__all__ = ["main", "build_parser", "run", "SECTIONS"]

SECTIONS = ("main", "fixed", "threads", "sparse", "lowprec")
DEFAULT_OUT = "bench-results"


def _list_arg(valid, what):
    def parse(text):
        names = [t.strip().lower() for t in text.split(",") if t.strip()]
        if names == ["all"]:
            return list(valid)
        out = []
        for nm in names:
            if nm not in valid:
                raise argparse.ArgumentTypeError(
                    f"unknown {what} {nm!r}; choose from {', '.join(valid)} (or 'all')")
            if nm not in out:
                out.append(nm)
        if not out:
            raise argparse.ArgumentTypeError(f"no {what} given")
        return out
    return parse


def _one_of(valid, what):
    def parse(text):
        name = text.strip().lower()
        if name not in valid:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {text!r}; choose from {', '.join(valid)}")
        return name
    return parse


def _pos_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def _pos_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {v}")
    return v


def add_selection_options(group, cases):
    keys = list(cases)
    group.add_argument("--optimizers", type=_list_arg(keys, "optimizer"), default=keys,
                       metavar="LIST",
                       help=f"comma-separated, case-insensitive: {', '.join(keys)} or all "
                            f"(default: all, each at its class defaults)")
    group.add_argument("--dtypes", type=_list_arg(tuple(DTYPES), "dtype"), default=None,
                       metavar="LIST",
                       help="float32, float64 or both (default: both; float32 with --quick)")
    group.add_argument("--sizes", type=parse_sizes, default=None, metavar="LIST",
                       help=f"comma-separated element counts of one tensor (1e6) or "
                            f"TENSORSxELEMENTS (1000x1000) (default: {DEFAULT_SIZES})")
    group.add_argument("--sections", type=_list_arg(SECTIONS, "section"), default=list(SECTIONS),
                       metavar="LIST",
                       help="which parts to run: main (the table), fixed (per-call cost), "
                            "threads, sparse (an embedding table given row-sparse grads) "
                            "(default: all)")
    group.add_argument("--threads-optimizer", type=_one_of(keys, "optimizer"),
                       default="adam" if "adam" in keys else keys[0], metavar="NAME",
                       help="the optimizer of the threads section's large step and first "
                            "sweep (default: adam)")
    group.add_argument("--threads-size", type=lambda t: parse_size(t)[1], default=None,
                       metavar="N",
                       help="elements of the threads section's large float32 step, timed with "
                            "1 and N threads, and of the lowprec section's Adam step "
                            "(default 1e7, 1e6 with --quick)")
    group.add_argument("--sweep-sizes", type=parse_sizes, default=None, metavar="LIST",
                       help="element counts of the thread-threshold sweep (default: 16384 ... "
                            "4194304, around the default threshold)")


def add_execution_options(group):
    """How the steps run: threads, SIMD level, which competitors are loaded."""
    group.add_argument("--threads", type=_pos_int, default=1, metavar="N",
                       help="threads for the main table, optimc and torch alike (default: 1)")
    group.add_argument("--compare-threads", type=_pos_int, default=2, metavar="N",
                       help="the threads section compares 1 thread with N (default: 2)")
    group.add_argument("--simd", choices=("baseline", "avx2", "avx512"), default=None,
                       help="optimc's SIMD level (default: the best the CPU has, or OPTIMC_SIMD)")
    group.add_argument("--no-torch", action="store_true",
                       help="leave torch.optim (and torch packages such as schedulefree) out "
                            "even if installed")
    group.add_argument("--seed", type=int, default=0, help="seed of the random params and grads")


def add_timing_options(group):
    group.add_argument("--quick", action="store_true",
                       help="a short run: float32 only (unless --dtypes), few repeats, short threads "
                            "section")
    group.add_argument("--sample-time", type=_pos_float, default=None, metavar="S",
                       help="seconds per timed sample (default 0.01, 0.002 with --quick)")
    group.add_argument("--case-time", type=_pos_float, default=None, metavar="S",
                       help="seconds of timing per case, split over its implementations "
                            "(default 1.2, 0.12 with --quick)")
    group.add_argument("--min-rounds", type=_pos_int, default=None, metavar="R",
                       help="at least R timed samples per implementation (default 7, 3 with "
                            "--quick)")


def add_output_options(group):
    group.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                       help=f"the directory the result files go to, created if needed "
                            f"(default: ./{DEFAULT_OUT})")
    group.add_argument("--plot", action="store_true",
                       help="also write DIR/bench.png (needs matplotlib)")


def build_parser(prog: str = "python -m optimc bench", cases=None) -> argparse.ArgumentParser:
    cases = algorithm_cases() if cases is None else cases
    files = "\n".join(f"  {name:<18} {what}" for name, what in OUTPUT_FILES.items())
    p = argparse.ArgumentParser(
        prog=prog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="optimc's speed benchmark: every optimizer in optimc.ALL at its defaults,\n"
                    "optimc's step against a NumPy step (where one is written), torch.optim\n"
                    "(loop, foreach, fused, where torch has the algorithm; for Schedule-Free\n"
                    "the schedulefree package) and the memory roofline (optimc's stream\n"
                    "kernel over the same bytes, pass by pass), all in one run.\n"
                    "Prints medians in ns per element and ratios to the competitors.",
        epilog=f"files written, to --out DIR (default ./{DEFAULT_OUT}, relative to the\n"
               f"current directory):\n{files}\n\n"
               "examples:\n"
               f"  {prog}                      # the full run\n"
               f"  {prog} --quick              # a short, rougher run\n"
               f"  {prog} --optimizers adam,sgd --dtypes float32 --sizes 1e6,1e7\n"
               f"  {prog} --threads 2 --sections main --plot --out /tmp/bench\n"
               f"  mpiexec -n 2 {prog} --mpi     # the distributed optimizers (see --mpi --help)\n\n"
               "See benchmarks/README.md and docs/performance.md.")
    add_selection_options(p.add_argument_group("what to run"), cases)
    add_execution_options(p.add_argument_group("how to run it"))
    add_timing_options(p.add_argument_group("timing"))
    add_output_options(p.add_argument_group("results"))
    return p


def _profile(args) -> dict:
    prof = dict(PROFILES["quick" if args.quick else "default"])
    if args.sample_time is not None:
        prof["sample_time"] = args.sample_time
    if args.case_time is not None:
        prof["case_time"] = args.case_time
    if args.min_rounds is not None:
        prof["min_rounds"] = args.min_rounds
        prof["max_rounds"] = max(prof["max_rounds"], args.min_rounds)
    return prof


def _import_torch(args):
    if args.no_torch:
        return None
    try:
        import torch
    except ImportError:
        print("torch is not installed: torch.optim columns are skipped")
        return None
    return torch


def run(args, cases, command: str) -> int:
    """Run the sections ``args`` asks for; print the report and write the files."""
    import optimc

    prof = _profile(args)
    dtypes = args.dtypes or (["float32"] if args.quick else list(DTYPES))
    sizes = args.sizes or parse_sizes(DEFAULT_SIZES)
    selected = [cases[k] for k in args.optimizers]
    torch = _import_torch(args)

    saved = optimc.show_config(print_it=False)
    cpu0, own0 = cpu_times(), os.times()
    saved_torch_threads = torch.get_num_threads() if torch is not None else None
    t_start = time.perf_counter()
    try:
        if args.simd:
            optimc.set_simd(args.simd)
        optimc.set_num_threads(args.threads)
        if torch is not None:
            torch.set_num_threads(args.threads)
        machine = machine_info(torch)
        machine["config_before_run"] = saved
        cfg = machine["config"]
        print(f"optimc bench: {machine.get('cpu_model', '?')}, "
              f"{machine.get('cpus_usable', machine['cpu_count'])} CPUs, "
              f"{machine.get('memory_gib', '?')} GiB; simd={cfg['simd']} (cpu {cfg['cpu_simd']}), "
              f"threads={args.threads}, thread_threshold={cfg['thread_threshold']} bytes")
        print(f"numpy {np.__version__}, torch {machine['torch'] or 'absent'}, "
              f"python {machine['python']}")
        load = machine.get("loadavg_start")
        if load and load[0] > 0.5:
            print(f"note: load average {load[0]:.2f} at start: other processes compete for the "
                  f"CPU and memory bandwidth; timings will be noisy")
        print()

        results, mismatches = [], []
        if "main" in args.sections:
            print(f"main table: ns per element (median), {args.threads} thread(s); "
                  "'of roof' = roofline time / optimc time; 'x numpy' = best NumPy / optimc; "
                  "'x torch' = fastest torch.optim (for Schedule-Free: the schedulefree "
                  "package) / optimc; '!' = result differs from optimc; "
                  "'-' = not run (the JSON says why)")
            for case in selected:
                for dt in dtypes:
                    for n_tensors, n in sizes:
                        r = run_case(case, DTYPES[dt], n_tensors, n, prof, torch, args.seed)
                        results.append(r)
                        for impl, (ok, worst) in r["checks"].items():
                            if not ok:
                                mismatches.append(f"{r['optimizer']} {r['dtype']} {r['size']} "
                                                  f"{impl}: max |diff|/tol = {worst:.3g}")
                        ns = r["ns_per_element"]
                        print(f"  {r['optimizer']:<10} {r['dtype']:<7} {r['size']:>9}: optimc "
                              f"{fmt_ns(ns['optimc'])}, roofline {fmt_ns(ns['roofline'])}"
                              + (f", numpy {fmt_ns(ns[r['best_numpy']])}" if r["best_numpy"]
                                 else "")
                              + (f", torch {fmt_ns(ns[r['best_torch']])}" if r["best_torch"]
                                 else "")
                              + f"  [{time.perf_counter() - t_start:.0f} s]", flush=True)
            print()
            print(format_table(results))
            print()
            if mismatches:
                print("RESULT MISMATCHES (the implementation differs from optimc after the "
                      "check steps):")
                for m in mismatches:
                    print("  " + m)
                print()

        fixed = []
        if "fixed" in args.sections:
            fixed = fixed_cost(selected, [DTYPES[d] for d in dtypes], prof)
            print(format_fixed(fixed))
            print()

        big, sweeps = None, []
        if "threads" in args.sections:
            nt = args.compare_threads
            subject = cases[args.threads_optimizer]
            big = threads_big(subject, nt, prof, torch, args.seed,
                              n=args.threads_size or (10 ** 6 if args.quick else 10 ** 7),
                              threshold=saved["thread_threshold"])
            print(format_threads_big(big))
            print()
            sweep_sizes = ([n for _, n in args.sweep_sizes] if args.sweep_sizes
                           else THRESHOLD_SIZES[::2] if args.quick else THRESHOLD_SIZES)
            # the threads optimizer, and the selected step that moves the fewest bytes
            # per element (the most expensive per byte moved to split over threads)
            lightest = min(selected, key=lambda c: c.values_moved())
            subjects = [subject] + ([lightest] if lightest.key != subject.key else [])
            sweep_cases = [(c, DTYPES[d]) for d in dtypes for c in subjects]
            if args.quick:
                sweep_cases = sweep_cases[:1]
            for case, dt in sweep_cases:
                s = threshold_sweep(case, dt, nt, sweep_sizes, prof, args.seed,
                                    default_threshold=saved["thread_threshold"])
                sweeps.append(s)
                print(format_sweep(s))
                print()

        sparse = None
        if "sparse" in args.sections:
            sparse = sparse_section(prof, torch, args.seed, quick=args.quick)
            print(format_sparse(sparse))
            print()
            mismatches += sparse_mismatches(sparse)
        low = None
        if "lowprec" in args.sections:
            # one thread, as the speed bar is stated; restored by the finally below
            optimc.set_num_threads(1)
            if torch is not None:
                torch.set_num_threads(1)
            low = lowprec_section(prof, torch, args.seed,
                                  n=args.threads_size or (10 ** 6 if args.quick else 10 ** 7))
            low["floor"] = lowprec_floor(prof, args.seed, n=low["n_elements"])
            optimc.set_num_threads(args.threads)
            if torch is not None:
                torch.set_num_threads(args.threads)
            print(format_lowprec(low))
            print(format_lowprec_floor(low["floor"]))
            print()

        try:
            machine["loadavg_end"] = os.getloadavg()
        except OSError:  # pragma: no cover - platforms without a load average
            pass
        cpu1, own1 = cpu_times(), os.times()
        if cpu0 and cpu1:
            own = (own1.user - own0.user) + (own1.system - own0.system)
            wall = time.perf_counter() - t_start
            others = max(0.0, (cpu1[0] - cpu0[0]) - own)
            machine["others_cpu_seconds"] = others
            machine["steal_cpu_seconds"] = cpu1[1] - cpu0[1]
            print(f"other processes used {others:.1f} CPU-seconds during this {wall:.0f} s run "
                  f"(steal {cpu1[1] - cpu0[1]:.1f} s)"
                  + ("; the timings may be disturbed: re-run on a quiet machine"
                     if others > 0.05 * wall else ""))
        payload = dict(
            command=command, timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            seconds=time.perf_counter() - t_start, machine=machine,
            settings=dict(threads=args.threads, compare_threads=args.compare_threads,
                          dtypes=dtypes, optimizers=[cases[k].name for k in args.optimizers],
                          sizes=[size_label(a, b) for a, b in sizes], profile=prof,
                          numpy_block=NUMPY_BLOCK, quick=args.quick, seed=args.seed,
                          sections=args.sections),
            results=results, fixed_cost=fixed, threads_1e7=big, threshold_sweeps=sweeps, lowprec=low,
            sparse=sparse, mismatches=mismatches)
        paths = write_outputs(args.out, payload, args.plot)
        print("wrote " + ", ".join(paths) + f"  ({time.perf_counter() - t_start:.0f} s in all)")
        return 1 if mismatches else 0
    finally:
        optimc.set_num_threads(saved["num_threads"])
        _core.set_thread_threshold(saved["thread_threshold"])
        optimc.set_simd(saved["simd"])
        if torch is not None and saved_torch_threads:
            torch.set_num_threads(saved_torch_threads)


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m optimc bench",
         commands: Sequence[str] = ()) -> int:
    """Run the benchmark with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--mpi" in argv:   # the distributed benchmark, with its own options (run under mpiexec)
        from optimc.distributed import bench as mpi_bench
        argv.remove("--mpi")
        return int(mpi_bench.main(argv, prog=f"{prog} --mpi") or 0)
    if "--muon" in argv:  # Muon against torch.optim.Muon (optimc/bench/muon.py), its own options
        from . import muon
        argv.remove("--muon")
        return muon.main(argv, prog=f"{prog} --muon")
    cases = algorithm_cases()
    args = build_parser(prog, cases).parse_args(argv)
    return run(args, cases, command=" ".join([prog, *argv]))
