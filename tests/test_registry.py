"""The one-description-per-algorithm contract: every algorithm's class, C rule,
NumPy reference, docs section and (where torch has it) torch comparison exist
and agree, and the C side refuses hyperparameter keys it does not declare.
A new algorithm that misses one of these places fails here, saying which."""
import ast
import inspect
import os
import re
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _util as U  # noqa: E402
from reference import ALGORITHMS  # noqa: E402

import optimc  # noqa: E402
from optimc import _core  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = [cls.__name__ for cls in optimc.ALL]


def _docs_sections():
    text = open(os.path.join(ROOT, "docs", "algorithms.md"), encoding="utf-8").read()
    parts = re.split(r"^## ", text, flags=re.M)
    return text, {p.split("\n", 1)[0].strip(): p for p in parts[1:]}


@pytest.mark.parametrize("name", NAMES)
def test_has_numpy_reference(name):
    assert name in ALGORITHMS, (f"optimc.{name} has no NumPy reference: add its update rule and a "
                                f"describe({name!r}, ...) entry to tests/reference.py")


def test_every_reference_is_an_optimizer():
    extra = sorted(set(ALGORITHMS) - set(NAMES))
    assert not extra, f"tests/reference.py describes {extra}, which optimc.ALL does not list"


def test_every_c_rule_has_a_class_and_every_class_a_rule():
    rules = _core.algorithms()
    used = {cls._kernel for cls in optimc.ALL}
    assert used <= set(rules), f"classes name C rules that csrc/rules/all.h lacks: {sorted(used - set(rules))}"
    assert set(rules) <= used, f"C rules no class uses (add a class to optimizers/algorithms.py): " \
                               f"{sorted(set(rules) - used)}"


@pytest.mark.parametrize("cls", optimc.ALL, ids=NAMES)
def test_a_rule_with_shaped_state_is_not_elementwise(cls):
    """ZeroRedundancyOptimizer steps shards of a tensor, so it trusts `elementwise`:
    a rule that keeps per-row or factored state (a layout other than `param`)
    makes an element's update depend on others, and its class must say so."""
    rule = _core.algorithms()[cls._kernel]
    assert len(rule["layouts"]) == len(rule["state"])
    assert set(rule["layouts"]) <= {"param", "rows", "row_factor", "col_factor"}
    if set(rule["layouts"]) != {"param"} and rule["layouts"]:
        assert getattr(cls, "elementwise", True) is False, \
            f"{cls.__name__}: its rule keeps {rule['layouts']} state; set elementwise = False"


@pytest.mark.parametrize("cls", optimc.ALL, ids=NAMES)
def test_python_fields_are_exactly_the_c_fields(cls):
    """The class's hyperparameters, split as it declares, name exactly the rule's fields."""
    params = [np.zeros(3)]
    opt = cls(params)
    fields = set(_core.algorithms()[cls._kernel]["fields"])
    assert set(opt._engine_hyper(opt.param_groups[0])) == fields


@pytest.mark.parametrize("name", NAMES)
def test_has_docs_section_with_its_defaults(name):
    text, sections = _docs_sections()
    assert name in sections, f"docs/algorithms.md has no '## {name}' section"
    assert f"| `{name}` |" in text, f"docs/algorithms.md's summary table has no row for {name}"
    options = re.search(r"\*\*Options:\*\*(.*?)(\*\*State|\n\n)", sections[name], re.S)
    assert options, f"docs/algorithms.md '## {name}' has no **Options:** line"
    shown = {}
    for key, value in re.findall(r"`(\w+)=([^`]+)`", options.group(1)):
        shown[key] = ast.literal_eval(value)
    sig = inspect.signature(getattr(optimc, name).__init__)
    for key, p in sig.parameters.items():
        if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty:
            assert key in shown, f"docs/algorithms.md '## {name}' Options do not show {key}"
            assert shown[key] == p.default, f"docs/algorithms.md '## {name}' shows {key}={shown[key]!r}, " \
                                            f"the class has {p.default!r}"


@pytest.mark.parametrize("name", NAMES)
def test_compared_with_torch_where_torch_has_it(name):
    torch = pytest.importorskip("torch")
    if hasattr(torch.optim, name):
        assert ALGORITHMS[name].torch is not None, \
            f"torch.optim has {name}: its reference entry must keep the torch comparison"
        assert any(n == name for n, _ in U.torch_cases()), f"no option combination of {name} reaches torch"


@pytest.mark.parametrize("cls", optimc.ALL, ids=NAMES)
def test_misspelt_or_missing_field_refused_by_the_binding(cls):
    params = [np.zeros(3)]
    opt = cls(params)
    good = opt._engine_hyper(opt.param_groups[0])
    opt._set_hyper(0, good)            # the right keys pass
    bad = dict(good)
    bad["lrr"] = bad.pop("lr")
    with pytest.raises(ValueError, match="'lrr' is not a field"):
        opt._set_hyper(0, bad)
    with pytest.raises(ValueError, match="'lrr' is not a field"):
        opt._add_group([np.zeros(2)], None, bad)
    missing = dict(good)
    del missing["weight_decay"]
    with pytest.raises(ValueError, match="needs the field weight_decay"):
        opt._set_hyper(0, missing)
    assert opt._n_tensors == 1 and len(opt.param_groups) == 1


def test_callable_lr_is_never_seen_as_a_number_before_the_first_step():
    """State initialisation must not depend on lr: a callable's value exists only per step."""
    for cls in optimc.ALL:
        a, b = np.ones(4), np.ones(4)
        fixed, scheduled = cls([a], lr=0.01), cls([b], lr=lambda step: 0.01)
        g = np.linspace(-1, 1, 4)
        for _ in range(3):
            fixed.step([g])
            scheduled.step([g])
        assert np.array_equal(a, b), f"{cls.__name__}: a callable lr gives other results than the same number"


@pytest.mark.parametrize("cls", optimc.ALL, ids=NAMES)
def test_sparse_mark_and_class_agree(cls):
    """A rule's sparse mark (csrc/rules/<name>.h: <name>_SPARSE, the fields that
    must be 0) is what the C step checks; the class repeats it as sparse_grads,
    which names it in the refusals. They must agree: a class that says None on
    a marked rule (NAG on SGD's) must refuse the mark's options itself."""
    mark = _core.algorithms()[cls._kernel]["sparse"]
    declared = cls.sparse_grads
    if mark is None:
        assert declared is None, f"{cls.__name__}.sparse_grads = {declared!r}, but its rule " \
                                 f"{cls._kernel!r} has no <name>_SPARSE mark (the C step refuses SparseGrads)"
        return
    if declared is not None:
        assert tuple(declared) == tuple(mark), \
            f"{cls.__name__}.sparse_grads = {declared!r}, its rule's mark says {mark!r}"
        assert set(declared) <= set(_core.algorithms()[cls._kernel]["fields"])
        assert cls in optimc.sparse.takers() and cls.__name__ in optimc.Optimizer._sparse_takers
        # the mark's options at 0 (where the class lets them be): a SparseGrad is taken
        W = np.ones((4, 2))
        cls([W], **{k: 0.0 for k in declared if k in cls._hyper_names}).step(
            [optimc.SparseGrad(np.array([1, 1]), np.ones((2, 2)))])
        assert np.array_equal(W[[0, 2, 3]], np.ones((3, 2))) and not np.array_equal(W[1], np.ones(2))
        return
    # the rule takes SparseGrads but the class says it never does: it must not reach the mark's options
    with pytest.raises(ValueError):
        cls([np.ones((4, 2))], **{k: 0.0 for k in mark})
