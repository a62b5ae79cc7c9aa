"""Tests for optimc.problems (optimc.demo.problems): the built-in problem set, and the
demo's learning-rate table (optimc.demo.rates)."""

import math

import numpy as np
import pytest

import optimc
import optimc.demo.problems
from optimc import problems as P
from optimc.demo import rates, special

NAMES = list(P.PROBLEM_NAMES)
OPTIMIZERS = [cls.__name__ for cls in optimc.ALL]


@pytest.fixture(scope="module", params=NAMES)
def prob(request):
    return P.get_problem(request.param)


def _perturbed(prob, seed=7, scale=0.1):
    rng = np.random.default_rng(seed)
    return [np.array(p + scale * rng.standard_normal(p.shape)) for p in prob.init(np.float64, 0)]


def _fd_grad(f, params, h=1e-6):
    """Central finite differences of f over every element of every array."""
    grads = []
    for i, p in enumerate(params):
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            ps = [q.copy() for q in params]
            ps[i][idx] += h
            fp = f(ps)
            ps[i][idx] -= 2 * h
            fm = f(ps)
            g[idx] = (fp - fm) / (2 * h)
        grads.append(g)
    return grads


def _assert_grads_close(got, want, rtol=1e-5, atol=1e-7):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        scale = max(1.0, float(np.max(np.abs(w))) if w.size else 1.0)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol * scale, err_msg=f"grads[{i}]")


def test_registry():
    assert NAMES == ["rosenbrock", "saddle", "quadratic", "sparse_logistic", "spiral_mlp"]
    assert [p.name for p in P.all_problems()] == NAMES
    assert P.get_problem("Sparse-Logistic").name == "sparse_logistic"
    with pytest.raises(KeyError, match="unknown problem 'nope'"):
        P.get_problem("nope")


def test_attributes(prob):
    assert prob.name in NAMES
    assert isinstance(prob.description, str) and prob.description
    assert isinstance(prob.default_steps, int) and prob.default_steps > 0
    assert np.isfinite(prob.target_loss)
    if prob.min_loss is not None:
        assert prob.target_loss > prob.min_loss
    assert len(prob.param_names) == len(prob.init())
    assert prob.n_params == sum(p.size for p in prob.init())
    assert repr(prob).startswith("<")


def test_public_name_is_the_demo_module():
    """optimc.problems re-exports optimc.demo.problems: the same objects, every public name."""
    assert P.__all__ == optimc.demo.problems.__all__
    for name in P.__all__:
        assert getattr(P, name) is getattr(optimc.demo.problems, name), name
    from optimc.problems import get_problem  # the notebooks' and docs' import
    assert get_problem is optimc.demo.problems.get_problem


def test_every_optimizer_has_a_demo_rate():
    """A class added to optimc.ALL needs a row in optimc/demo/rates.py."""
    missing = rates.missing_rates(OPTIMIZERS, NAMES)
    assert not missing, ("no demo learning rate for " + "; ".join(missing)
                         + ": add a row to optimc/demo/rates.py (the rule that picks it is "
                           "optimc.problems.sweep_learning_rate)")


def test_missing_rates_names_the_class_and_problem():
    assert rates.missing_rates(["NotAnOptimizer"], ["rosenbrock", "saddle"]) == [
        "NotAnOptimizer on rosenbrock", "NotAnOptimizer on saddle"]
    assert rates.missing_rates(["Adam"]) == []


def test_rate_table_is_consistent():
    assert rates.COLUMNS == P.PROBLEM_NAMES
    for problem, column in rates.LEARNING_RATES.items():
        # every row names an optimizer that exists: no stale entries
        assert set(column) <= set(OPTIMIZERS), set(column) - set(OPTIMIZERS)
        for name, lr in column.items():
            assert isinstance(lr, float) and lr in P.LR_GRID, (problem, name, lr)
    for (problem, name), text in rates.NOTES.items():
        entries = [e.__name__ for e in special.ENTRIES]   # LBFGS, Muon+AdamW (optimc.demo.special)
        assert problem in NAMES and (name in OPTIMIZERS or name in entries) and text


def test_learning_rates_cover_every_optimizer(prob):
    assert sorted(prob.learning_rates) == sorted(OPTIMIZERS)
    assert prob.learning_rates == rates.LEARNING_RATES[prob.name]
    for name, lr in prob.learning_rates.items():
        assert isinstance(lr, float) and 0 < lr <= 10, name
        assert prob.lr_for(name) == lr
    assert prob.lr_for("NoSuchOptimizer") is None
    prob.learning_rates["Adam"] = 123.0  # a copy: the table cannot be changed through it
    assert prob.lr_for("Adam") != 123.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_and_grad_shapes_dtypes(prob, dtype):
    params = prob.init(dtype, seed=0)
    assert isinstance(params, list) and params
    for p in params:
        assert isinstance(p, np.ndarray)
        assert p.dtype == dtype
        assert p.flags.c_contiguous and p.flags.writeable and p.flags.aligned
        assert np.all(np.isfinite(p))
    # every call gives fresh arrays
    again = prob.init(dtype, seed=0)
    assert all(not np.shares_memory(a, b) for a, b in zip(params, again))
    for rng in (None, np.random.default_rng(0)):
        loss, grads = prob.loss_and_grad(params, rng)
        assert isinstance(loss, float) and np.isfinite(loss)
        assert len(grads) == len(params)
        for p, g in zip(params, grads):
            assert isinstance(g, np.ndarray)
            assert g.shape == p.shape and g.dtype == p.dtype
            assert g.flags.c_contiguous and g.flags.writeable
            assert not np.shares_memory(g, p)
            assert np.all(np.isfinite(g))
    assert isinstance(prob.loss(params), float)


def test_float32_matches_float64(prob):
    p32, p64 = prob.init(np.float32, 3), prob.init(np.float64, 3)
    for a, b in zip(p32, p64):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    l32, g32 = prob.loss_and_grad(p32)
    l64, g64 = prob.loss_and_grad(p64)
    assert l32 == pytest.approx(l64, rel=1e-4, abs=1e-5)
    for a, b in zip(g32, g64):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4 * max(1.0, np.abs(b).max()))


def test_loss_is_the_full_batch_loss(prob):
    params = _perturbed(prob)
    assert prob.loss(params) == pytest.approx(prob.loss_and_grad(params, None)[0], rel=1e-12)
    assert prob.grad(params)[0] == pytest.approx(prob.loss_and_grad(params)[1][0])


@pytest.mark.parametrize("where", ["init", "perturbed"])
def test_gradient_matches_finite_differences(prob, where):
    params = prob.init(np.float64, 1) if where == "init" else _perturbed(prob)
    _, grads = prob.loss_and_grad(params, None)
    fd = _fd_grad(prob.loss, params)
    _assert_grads_close(grads, fd)


def test_minibatch_gradient_matches_finite_differences(prob):
    if not prob.stochastic:
        pytest.skip("deterministic problem")
    params = _perturbed(prob)

    def batch_loss(ps):  # the same mini-batch every time: same-seeded generator
        return prob.loss_and_grad(ps, np.random.default_rng(11))[0]

    _, grads = prob.loss_and_grad(params, np.random.default_rng(11))
    _assert_grads_close(grads, _fd_grad(batch_loss, params))
    # and it is a mini-batch: a different one gives a different gradient
    _, other = prob.loss_and_grad(params, np.random.default_rng(12))
    assert not np.allclose(grads[0], other[0])


def test_minibatch_gradients_average_to_the_full_gradient(prob):
    if not prob.stochastic:
        pytest.skip("deterministic problem")
    params = _perturbed(prob)
    rng = np.random.default_rng(5)
    n = 400
    acc = [np.zeros_like(p) for p in params]
    for _ in range(n):
        for a, g in zip(acc, prob.grad(params, rng)):
            a += g / n
    full = prob.grad(params)
    err = np.concatenate([(a - f).ravel() for a, f in zip(acc, full)])
    ref = np.concatenate([f.ravel() for f in full])
    assert np.linalg.norm(err) < 0.25 * np.linalg.norm(ref)


def test_deterministic_problems_ignore_rng(prob):
    if prob.stochastic:
        pytest.skip("stochastic problem")
    params = _perturbed(prob)
    l0, g0 = prob.loss_and_grad(params)
    l1, g1 = prob.loss_and_grad(params, np.random.default_rng(3))
    assert l0 == l1
    for a, b in zip(g0, g1):
        np.testing.assert_array_equal(a, b)


def test_known_minimum_has_zero_gradient(prob):
    m = prob.minimizer(np.float64)
    if m is None:
        assert prob.min_loss is None
        pytest.skip("minimum not known")
    loss, grads = prob.loss_and_grad(m, None)
    assert loss == pytest.approx(prob.min_loss, abs=1e-12)
    for g in grads:
        assert np.max(np.abs(g)) < 1e-9
    # and it is a minimum: nearby points are not better
    rng = np.random.default_rng(0)
    for _ in range(20):
        near = [np.array(p + 1e-3 * rng.standard_normal(p.shape)) for p in m]
        assert prob.loss(near) >= prob.min_loss - 1e-12
    m32 = prob.minimizer(np.float32)
    assert all(p.dtype == np.float32 for p in m32)


def test_start_is_far_from_target(prob):
    for seed in (0, 1, 2):
        assert prob.loss(prob.init(np.float64, seed)) > prob.target_loss


def test_determinism(prob):
    a = prob.init(np.float64, seed=4)
    b = P.get_problem(prob.name).init(np.float64, seed=4)  # a fresh instance too
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    la, ga = prob.loss_and_grad(a, np.random.default_rng(9))
    lb, gb = P.get_problem(prob.name).loss_and_grad(b, np.random.default_rng(9))
    assert la == lb
    for x, y in zip(ga, gb):
        np.testing.assert_array_equal(x, y)
    if not isinstance(prob, P.Problem2D):  # the 2-D problems have a fixed start
        c = prob.init(np.float64, seed=5)
        assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_gradient_descent_decreases_the_loss(prob):
    params = prob.init(np.float64, 0)
    before = prob.loss(params)
    lr = {"rosenbrock": 1e-3, "saddle": 0.1, "quadratic": 0.05,
          "sparse_logistic": 0.5, "spiral_mlp": 0.3}[prob.name]
    for _ in range(50):
        for p, g in zip(params, prob.grad(params)):
            p -= lr * g
    assert prob.loss(params) < before


def test_init_rejects_other_dtypes(prob):
    with pytest.raises(TypeError, match="float32 or float64"):
        prob.init(np.int32)
    with pytest.raises(TypeError):
        prob.init(np.float16)


# --- problem-specific facts -------------------------------------------------

def test_rosenbrock_values():
    r = P.get_problem("rosenbrock")
    assert r.loss(r.init()) == pytest.approx(24.2)
    assert r.f(np.array([1.0]), np.array([1.0]))[0] == 0.0
    fx, fy = r.fgrad(-1.2, 1.0)
    assert (fx, fy) == pytest.approx((-215.6, -88.0))
    X, Y = np.meshgrid(np.linspace(-2, 2, 5), np.linspace(-1, 3, 4))
    Z = r.f(X, Y)
    assert Z.shape == X.shape and Z.min() >= 0


def test_saddle_geometry():
    s = P.get_problem("saddle")
    origin = [np.zeros(2)]
    loss, (g,) = s.loss_and_grad(origin)
    assert loss == pytest.approx(1 / 12)
    assert np.all(g == 0)  # a stationary point ...
    assert s.loss([np.array([0.0, 0.1])]) < 1 / 12 < s.loss([np.array([0.1, 0.0])])  # ... a saddle
    # ... on a plateau: the gradient is tiny everywhere within 0.2 of it
    t = np.linspace(0, 2 * np.pi, 50)
    for x, y in zip(0.2 * np.cos(t), 0.2 * np.sin(t)):
        assert np.linalg.norm(s.grad([np.array([x, y])])[0]) < 0.01
    for m in s.minima:
        loss, (g,) = s.loss_and_grad([np.array(m)])
        assert loss == 0.0 and np.all(g == 0)
    X, Y = np.meshgrid(np.linspace(-2, 2, 41), np.linspace(-2, 2, 41))
    assert s.f(X, Y).min() >= 0.0  # non-negative everywhere


def test_quadratic_condition_number():
    q = P.get_problem("quadratic")
    ev = np.linalg.eigvalsh(q.A)
    assert len(ev) == 50
    assert ev.max() / ev.min() == pytest.approx(1e3, rel=1e-6)
    assert not np.allclose(q.A, np.diag(np.diag(q.A)))  # rotated, not axis-aligned


def test_sparse_logistic_data_is_sparse_and_minimum_is_exact():
    s = P.get_problem("sparse_logistic")
    freq = s.X.mean(axis=0)
    assert s.X.shape == (2000, 100)
    assert set(np.unique(s.X)) <= {0.0, 1.0}
    assert np.median(freq) < 0.05  # most features are rarely active
    assert freq.max() > 0.3  # a few are common
    assert 0.2 < s.y.mean() < 0.8
    w, b = s.minimizer()
    assert b.shape == () and w.shape == (100,)
    assert s.target_loss == pytest.approx(s.min_loss + 1e-3)


def test_spirals():
    X, labels = P.make_spirals(100, 3, seed=0)
    assert X.shape == (300, 2) and labels.shape == (300,)
    assert np.bincount(labels).tolist() == [100, 100, 100]
    assert np.max(np.linalg.norm(X, axis=1)) <= 1 + 1e-12
    m = P.get_problem("spiral_mlp")
    params = m.init(np.float64, 0)
    assert [p.shape for p in params] == [(2, 64), (64,), (64, 3), (3,)]
    assert 0 <= m.accuracy(params) <= 1
    assert m.predict(params, X[:7]).shape == (7,)
    assert m.loss(params) > m.target_loss


# --- the learning-rate rule ---------------------------------------------------

@pytest.mark.parametrize("name, optimizers", [
    ("saddle", OPTIMIZERS),
    ("quadratic", ["SGD", "Momentum", "Adam", "Lion"]),
])
def test_documented_rates_follow_the_sweep_rule(name, optimizers):
    prob = P.get_problem(name)
    for opt in optimizers:
        chosen, results = P.sweep_learning_rate(prob, getattr(optimc, opt))
        assert sorted(results) == sorted(P.LR_GRID)
        assert chosen == prob.learning_rates[opt], (opt, results)


def test_radam_rosenbrock_note_matches_the_sweep():
    """The note the demo prints under its table: every rate above 3e-3 diverges."""
    prob = P.get_problem("rosenbrock")
    assert prob.lr_for("RAdam") == 3e-3
    for lr in [r for r in P.LR_GRID if r > 3e-3]:
        assert P.final_loss(prob, optimc.RAdam, lr) == math.inf, lr
    assert P.final_loss(prob, optimc.RAdam, 3e-3) > 1.0  # far from the minimum 0
    assert "3e-3" in rates.NOTES[("rosenbrock", "RAdam")]


def test_final_loss_reports_divergence_as_inf():
    prob = P.get_problem("quadratic")
    assert P.final_loss(prob, optimc.SGD, 1.0, steps=200) == math.inf  # lr > 2/L
    ok = P.final_loss(prob, optimc.SGD, 0.1, steps=200)
    assert 0 < ok < prob.loss(prob.init(np.float32, 0))
    assert prob.make_rng(3).integers(1 << 30) == prob.make_rng(3).integers(1 << 30)
