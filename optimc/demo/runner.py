"""Running the demo: every chosen optimizer on every chosen problem, recorded.

Each run starts from the problem's starting point for the seed, sees the same
mini-batches as every other optimizer (the problem's generator for the seed), and uses
the problem's learning rate for that optimizer class (:mod:`optimc.demo.rates`; the
class's own default where the table has none), all other hyperparameters at the class
defaults. The problem computes each gradient in NumPy; ``opt.step`` updates the params
in place, and only that call is timed.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .problems import Problem2D
from .special import applies, step_with_loss

__all__ = ["RunResult", "run_one", "run_all", "eval_every"]


@dataclass
class RunResult:
    """One optimizer on one problem: what the table and the figure show."""
    problem: str
    optimizer: str
    lr: Optional[float]
    steps: int
    final_loss: float = math.nan          # the exact (full-data) loss after the last step
    steps_to_target: Optional[int] = None
    us_per_step: float = math.nan         # median wall time of one opt.step() call
    diverged_at: Optional[int] = None
    error: Optional[str] = None
    curve_steps: np.ndarray = field(default_factory=lambda: np.empty(0))
    curve_loss: np.ndarray = field(default_factory=lambda: np.empty(0))  # exact losses
    path: Optional[np.ndarray] = None     # (n, 2) for the 2-D problems


def eval_every(problem, steps: int) -> int:
    """How often a stochastic problem's exact (full-data) loss is recorded: computing it
    costs a pass over all the data, so not at every step of a long run."""
    if not problem.stochastic:
        return 1
    return max(1, min(10, steps // 100))


def run_one(problem, opt_cls, steps: int, dtype, seed: int, lr: Optional[float] = None
            ) -> RunResult:
    """One optimizer class on one problem; ``lr`` overrides the problem's rate for it."""
    name = opt_cls.__name__
    if lr is None:
        lr = problem.lr_for(name)
    if lr is None:   # the entries outside optimc.ALL carry their rates (optimc.demo.special)
        lr = getattr(opt_cls, "rates", {}).get(problem.name)
    res = RunResult(problem.name, name, lr, steps)
    params = problem.init(dtype, seed)
    opt = opt_cls(params) if lr is None else opt_cls(params, lr=lr)
    if lr is None:
        res.lr = float(opt.lr)
    rng = problem.make_rng(seed) if problem.stochastic else None
    every = eval_every(problem, steps)
    path = np.full((steps + 1, 2), np.nan) if isinstance(problem, Problem2D) else None
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
            step_with_loss(opt, loss, grads)
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
            from tqdm import tqdm  # a dependency of optimc
            self.bar = tqdm(total=total, unit="run", file=stream, leave=False,
                            dynamic_ncols=True)

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
    """``results[i][j]``: optimizer ``j`` on problem ``i``. An optimizer that raises is
    reported in its row (``error``) and the others still run."""
    progress = _Progress(len(problem_list) * len(opt_classes))
    results = []
    try:
        for i, prob in enumerate(problem_list, 1):
            steps = steps_override or prob.default_steps
            t0 = time.perf_counter()
            row = []
            for cls in opt_classes:
                if not applies(cls, prob):
                    progress.advance()
                    continue
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
