"""The optimizers outside optimc.ALL (optimc.SPECIAL: LBFGS takes a closure,
Muon takes 2-D params only) are held to the places every algorithm has, as
test_registry.py holds ALL's: a docs section with every default, a summary
row, a torch comparison, and a place in the listing — so none is forgotten."""
import ast
import inspect
import os
import re

import pytest

import optimc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = [cls.__name__ for cls in optimc.SPECIAL]
# where each is compared with torch.optim (the test file that must name it)
TORCH_TESTS = {"LBFGS": "test_lbfgs.py", "Muon": "test_muon.py"}


def test_special_and_all_partition_the_exported_optimizers():
    assert not set(optimc.SPECIAL) & set(optimc.ALL)
    exported = [getattr(optimc, n) for n in optimc.__all__]
    steppers = {c for c in exported if isinstance(c, type) and hasattr(c, "step") and hasattr(c, "state_dict")
                and c.__module__ == "optimc" and c is not optimc.Optimizer}
    assert steppers <= set(optimc.ALL) | set(optimc.SPECIAL), \
        f"optimizers neither in ALL nor in SPECIAL: {sorted(c.__name__ for c in steppers - set(optimc.ALL) - set(optimc.SPECIAL))}"
    assert set(NAMES) == set(TORCH_TESTS), "a SPECIAL optimizer needs its torch comparison file in TORCH_TESTS"


@pytest.mark.parametrize("name", NAMES)
def test_has_docs_section_with_its_defaults(name):
    text = open(os.path.join(ROOT, "docs", "algorithms.md"), encoding="utf-8").read()
    sections = {p.split("\n", 1)[0].strip(): p for p in re.split(r"^## ", text, flags=re.M)[1:]}
    assert name in sections, f"docs/algorithms.md has no '## {name}' section"
    assert f"| `{name}` |" in text, f"docs/algorithms.md's summary table has no row for {name}"
    options = re.search(r"\*\*Options:\*\*(.*?)(\*\*State|\n\n)", sections[name], re.S)
    assert options, f"docs/algorithms.md '## {name}' has no **Options:** line"
    shown = {k: ast.literal_eval(v) for k, v in re.findall(r"`(\w+)=([^`]+)`", options.group(1))}
    for key, p in inspect.signature(getattr(optimc, name).__init__).parameters.items():
        if p.default is not p.empty:
            assert key in shown, f"docs/algorithms.md '## {name}' Options do not show {key}"
            assert shown[key] == p.default, f"'## {name}' shows {key}={shown[key]!r}, the class has {p.default!r}"


@pytest.mark.parametrize("name", NAMES)
def test_compared_with_torch(name):
    torch = pytest.importorskip("torch")
    assert hasattr(torch.optim, name)
    source = open(os.path.join(ROOT, "tests", TORCH_TESTS[name]), encoding="utf-8").read()
    assert f"torch.optim.{name}(" in source, f"tests/{TORCH_TESTS[name]} does not run torch.optim.{name}"
    sig = inspect.signature(getattr(torch.optim, name).__init__)
    ours = inspect.signature(getattr(optimc, name).__init__)
    theirs = {k: p.default for k, p in sig.parameters.items() if p.default is not p.empty}
    mine = {k: p.default for k, p in ours.parameters.items() if p.default is not p.empty}
    assert set(theirs) == set(mine), f"{name}: torch's arguments {sorted(theirs)}, ours {sorted(mine)}"
    for k, v in theirs.items():
        assert (tuple(v) if isinstance(v, (list, tuple)) else v) == mine[k], f"{name}.{k}: torch {v!r}, ours {mine[k]!r}"


def test_demo_runs_the_entries_on_their_problems_only():
    """python -m optimc runs LBFGS on the full-batch problems and Muon+AdamW on the MLP."""
    import numpy as np

    from optimc.demo import problems as P
    from optimc.demo import runner, special
    probs = [P.get_problem(n) for n in ("quadratic", "spiral_mlp")]
    rows = runner.run_all(probs, list(special.ENTRIES), 60, np.dtype(np.float32), 0)
    assert [[r.optimizer for r in row] for row in rows] == [["LBFGS"], ["Muon+AdamW"]]
    for prob, (r,) in zip(probs, rows):
        assert r.error is None, r.error
        assert r.lr == {c.__name__: c for c in special.ENTRIES}[r.optimizer].rates[prob.name]
        start = prob.loss(prob.init(np.float32, 0))
        assert r.final_loss < start
    from optimc.demo import cli
    assert {"LBFGS", "Muon+AdamW"} <= set(cli.optimizer_classes())
