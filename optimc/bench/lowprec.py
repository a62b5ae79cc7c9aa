"""The benchmark's low-precision section: Adam with its state in float32,
bfloat16 and 8 bits (``state_dtype=``), one float32 param of ``n`` elements, one
thread, against bitsandbytes' CPU ``Adam8bit`` and torchao's ``AdamW8bit`` where
they are installed (8-bit Adam of each; their CPU paths dequantize whole
tensors into float32 temporaries).

``lowprec_section`` measures; ``format_lowprec`` and ``lowprec_markdown`` show it."""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from .timing import calls, measure

__all__ = ["lowprec_section", "format_lowprec", "lowprec_markdown"]

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
                slower_than_optimc_8bit={k: v / eight for k, v in ns.items()})


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
    return "\n".join(lines)


def lowprec_markdown(s: Optional[dict]) -> List[str]:
    if not s:
        return []
    out = [f"Adam on one float32 param of {s['n_elements']:.0e} elements, one thread:", "",
           "| " + " | ".join(HEAD) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEAD) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in _rows(s)]
    out += [f"{name}: not run ({why})." for name, why in s["skipped"].items()]
    return out + [""]
