"""How an optimizer shows itself: a one-line repr, and an HTML table in
Jupyter with every param's name, shape and dtype."""
from __future__ import annotations

import html


def _value(v):
    """A hyperparameter as a user reads it: a callable lr by its name or repr."""
    if callable(v):
        name = getattr(v, "__qualname__", None)
        text = repr(v)
        if text.startswith("<") and name:   # a function: <function f at 0x...>
            return f"{name}(step)"
        return text
    return repr(v)


class Display:
    """The display half of Optimizer (a mixin; see base.py)."""

    def _summary(self):
        params = self._params()
        dtypes = sorted({str(p.dtype) for p in params})
        return len(params), sum(p.size for p in params), dtypes

    def _options(self):
        opts = [f"{k}={v!r}" for k, v in self._guard.items() if v not in (None, False)]
        if self.state_dtype is not None:
            opts.append(f"state_dtype={self.state_dtype!r}")
        opts += [f"{k}=True" for k in ("master_weights", "stochastic_rounding") if self._storage[k]]
        if self.seed is not None:
            opts.append(f"seed={self.seed!r}")
        return opts

    def __repr__(self):
        n, size, dtypes = self._summary()
        if len(self.param_groups) == 1:
            g = self.param_groups[0]
            hyper = ", ".join(f"{k}={_value(g[k])}" for k in self._hyper_names)
        else:
            hyper = f"{len(self.param_groups)} groups"
        opts = "".join(", " + o for o in self._options())
        skipped = f", {self.skipped_steps} skipped" if self.skipped_steps else ""
        return (f"{type(self).__name__}({hyper}{opts}; {n} param{'s' * (n != 1)} "
                f"({'/'.join(dtypes)}, {size:,} elements), step {self.step_count}{skipped})")

    def _repr_html_(self):
        esc = html.escape
        n, size, dtypes = self._summary()
        head = "".join(f"<th>{esc(k)}</th>" for k in ("group",) + self._hyper_names + ("params",))
        rows = []
        index = 0
        for gi, g in enumerate(self.param_groups):
            names = g.get("param_names") or [str(index + k) for k in range(len(g["params"]))]
            params = ", ".join(f"{esc(str(name))} {esc(str(p.shape))} {esc(str(p.dtype))}"
                               for name, p in zip(names, g["params"]))
            index += len(g["params"])
            rows.append("<tr>" + f"<td>{gi}</td>"
                        + "".join(f"<td>{esc(_value(g[k]))}</td>" for k in self._hyper_names)
                        + f"<td>{params}</td></tr>")
        opts = ", ".join(self._options()) or "none"
        return (f"<div><b>{esc(type(self).__name__)}</b> — {n} params ({esc('/'.join(dtypes))}, "
                f"{size:,} elements), state {self.state_bytes:,} bytes in C, step {self.step_count}, "
                f"skipped {self.skipped_steps}; options: {esc(opts)}"
                f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")
