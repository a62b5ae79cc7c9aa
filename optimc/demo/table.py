"""The demo's comparison table, as text."""

from __future__ import annotations

import math
import textwrap
from typing import Dict, List, Tuple

from .rates import NOTES

__all__ = ["format_table", "format_loss", "notes_for"]


def format_loss(x: float) -> str:
    if not math.isfinite(x):
        return "nan"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.6f}"
    return f"{x:.3e}"


def notes_for(problem_list, results) -> Dict[Tuple[str, str], int]:
    """{(problem, optimizer): footnote number} for the runs shown that have a note in
    :data:`optimc.demo.rates.NOTES`, numbered in table order from 1."""
    numbers: Dict[Tuple[str, str], int] = {}
    for prob, row in zip(problem_list, results):
        for r in row:
            key = (prob.name, r.optimizer)
            if key in NOTES and key not in numbers:
                numbers[key] = len(numbers) + 1
    return numbers


def format_table(problem_list, results, dtype_name: str) -> str:
    lines: List[str] = []
    notes = notes_for(problem_list, results)
    header = (f"  {'optimizer':<10} {'lr':>7}  {'final loss':>14}  {'steps to target':>15}  "
              f"{'us/step':>8}")
    for prob, row in zip(problem_list, results):
        steps = row[0].steps if row else prob.default_steps
        minimum = "unknown" if prob.min_loss is None else format_loss(prob.min_loss)
        kind = "mini-batch" if prob.stochastic else "full-batch"
        lines.append(f"{prob.name} - {prob.description}")
        lines.append(f"  {prob.n_params} parameters, {kind}, {steps} steps, {dtype_name}; "
                     f"target loss {format_loss(prob.target_loss)}, minimum {minimum}")
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
                    final = format_loss(r.final_loss) + (" *" if r.final_loss == best else "  ")
                hit = "-" if r.steps_to_target is None else str(r.steps_to_target)
                us = "-" if not math.isfinite(r.us_per_step) else f"{r.us_per_step:.1f}"
            note = notes.get((prob.name, r.optimizer))
            mark = f"  [{note}]" if note else ""
            lines.append(f"  {r.optimizer:<10} {lr:>7}  {final:>14}  {hit:>15}  {us:>8}{mark}")
        lines.append("")
    lines += [
        "final loss: the exact (full-data) loss after the last step; * = the lowest.",
        "steps to target: the first step at which the loss was at or below the target",
        "  (mini-batch problems: checked every few steps); '-' = not reached.",
        "us/step: median wall time of one optimizer.step() call, in microseconds.",
        "lr: the problem's rate for that optimizer (optimc.problems); other options default.",
    ]
    for (problem, optimizer), number in notes.items():
        lines.append(textwrap.fill(f"[{number}] {optimizer} on {problem}: "
                                   f"{NOTES[(problem, optimizer)]}", width=88,
                                   subsequent_indent="    "))
    return "\n".join(lines)
