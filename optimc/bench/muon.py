"""``python -m optimc bench --muon``: Muon's step time against torch.optim.Muon
on the matrices of issue 12 (1024×1024 and 1024×4096 float32), with the BLAS
(NumPy's, and torch's intra-op threads) at one thread and at its default.

optimc's step is its C element-wise parts plus NumPy matmul in float32; torch's
runs the Newton–Schulz products in bfloat16. Ratio = torch time / optimc time
(above 1: optimc is faster)."""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import List, Optional, Sequence

import numpy as np


SHAPES = ((1024, 1024), (1024, 4096))


def _median_seconds(step, repeats: int, warm_up: bool = True) -> float:
    """Median wall time of ``repeats`` calls, after one warm-up call if asked. A
    step here takes milliseconds to seconds, so each call is timed on its own."""
    if warm_up:
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def muon_rows(shapes=SHAPES, repeats: int = 5, seed: int = 0) -> List[dict]:
    """One row per shape and BLAS thread setting: median seconds per step of each
    (optimc and torch timed alternately, so both see the same machine load)."""
    import optimc
    from threadpoolctl import threadpool_limits
    try:
        import torch
    except ImportError:
        torch = None
    rng = np.random.default_rng(seed)
    default_torch = torch.get_num_threads() if torch is not None else None
    rows = []
    try:
        for shape in shapes:
            W = rng.standard_normal(shape).astype(np.float32)
            G = rng.standard_normal(shape).astype(np.float32)
            for label, limit in (("1", 1), ("default", None)):
                with threadpool_limits(limits=limit, user_api="blas"):
                    opt = optimc.Muon([W.copy()], lr=0.02)
                    mine = [_median_seconds(lambda: opt.step([G]), 1)]
                    theirs = []
                    if torch is not None:
                        torch.set_num_threads(1 if limit == 1 else default_torch)
                        tp = torch.tensor(W, requires_grad=True)
                        tp.grad = torch.tensor(G)
                        topt = torch.optim.Muon([tp], lr=0.02)
                        # no warm-up: torch's first step only adds a zeroed momentum buffer,
                        # and on CPUs without native bfloat16 its products take seconds
                        theirs.append(_median_seconds(topt.step, 1, warm_up=False))
                    for _ in range(repeats - 1):
                        mine.append(_median_seconds(lambda: opt.step([G]), 1, warm_up=False))
                        if torch is not None:
                            theirs.append(_median_seconds(topt.step, 1, warm_up=False))
                row = dict(shape=list(shape), blas_threads=label, optimc_s=float(np.median(mine)),
                           torch_s=float(np.median(theirs)) if theirs else None)
                row["ratio"] = row["torch_s"] / row["optimc_s"] if row["torch_s"] else None
                rows.append(row)
                print(format_rows([row], header=False), flush=True)
    finally:
        if torch is not None:
            torch.set_num_threads(default_torch)
    return rows


HEADER = ("Muon step, float32 (median ms; ratio = torch / optimc)\n"
          f"{'shape':>11} {'BLAS threads':>12} {'optimc':>9} {'torch':>9} {'ratio':>6}")


def format_rows(rows, header: bool = True) -> str:
    lines = [HEADER] if header else []
    for r in rows:
        t = f"{r['torch_s'] * 1e3:9.2f}" if r["torch_s"] else f"{'-':>9}"
        ratio = f"{r['ratio']:6.2f}" if r["ratio"] else f"{'-':>6}"
        lines.append(f"{'x'.join(map(str, r['shape'])):>11} {r['blas_threads']:>12} "
                     f"{r['optimc_s'] * 1e3:9.2f} {t} {ratio}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None, prog: str = "python -m optimc bench --muon") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="timed steps of each (default 5)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(list(argv or []))
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    print(HEADER, flush=True)
    rows = muon_rows(repeats=args.repeats)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(dict(command=f"{prog} " + " ".join(argv or []), cpus=os.cpu_count(), rows=rows), f, indent=1)
    return 0
