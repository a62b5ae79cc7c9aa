"""Built-in test problems for comparing optimizers (pure NumPy): the demo's problems.

Public name: ``optimc.problems`` (a re-export of this module, ``optimc.demo.problems``).

Every problem is an object with the same small protocol::

    problem.name, problem.description
    params = problem.init(dtype=np.float64, seed=0)   # list of fresh ndarrays
    loss = problem.loss(params)                       # exact (full-data) loss, a float
    loss, grads = problem.loss_and_grad(params, rng)  # grads: list, same shapes/dtypes
    problem.target_loss, problem.min_loss             # what "solved" means; known minimum
    problem.minimizer(dtype)                          # a known minimizer, or None
    problem.learning_rates["Adam"]                    # a suitable lr per optimizer class
    problem.default_steps, problem.stochastic

``loss_and_grad(params, rng)``: for the stochastic problems (``problem.stochastic``)
``rng`` is a :class:`numpy.random.Generator` from which a mini-batch is drawn, and the
returned loss is the mini-batch loss; with ``rng=None`` the gradient is the exact
full-data one. The deterministic problems ignore ``rng``. Gradients are computed in the
parameters' dtype (float32 or float64) and are fresh arrays, so they can be handed
straight to an optimizer's ``step``::

    import numpy as np, optimc
    from optimc.problems import get_problem

    prob = get_problem("spiral_mlp")
    params = prob.init(np.float32, seed=0)
    opt = optimc.Adam(params, lr=prob.learning_rates["Adam"])
    rng = np.random.default_rng(0)
    for _ in range(prob.default_steps):
        loss, grads = prob.loss_and_grad(params, rng)
        opt.step(grads)
    print(prob.loss(params), "target", prob.target_loss)

Everything is deterministic: a problem's data is fixed when it is constructed (from
its ``data_seed``), ``init(dtype, seed)`` depends only on its arguments, and mini-batches
depend only on the generator handed in.

The problems
------------
``rosenbrock``       Rosenbrock's banana valley, 2-D, start (-1.2, 1), minimum 0 at (1, 1).
``saddle``           a degenerate saddle at the origin on a plateau (loss 1/12), 2-D;
                     minima 0 at (0, ±1).
``quadratic``        a 50-D quadratic with condition number 1e3, minimum 0.
``sparse_logistic``  L2-regularised logistic regression on binary features most of
                     which are rarely active (the case Adagrad was designed for);
                     mini-batches of 32.
``spiral_mlp``       a one-hidden-layer tanh network (2-64-3) with softmax
                     cross-entropy on three interleaved spirals; mini-batches of 32.

Learning rates
--------------
``problem.learning_rates`` maps optimizer class names to a learning rate. They were
chosen by one mechanical rule, the same for every optimizer and problem, not tuned to
make any optimizer look good: a sweep over a coarse half-decade grid
(1e-5, 3e-5, 1e-4, ..., 1, 3) at the problem's default step count in float32 (the
demo's default dtype), keeping the rate with the lowest median final loss over seeds
1, 2 and 3 (the demo's default seed, 0, was not used; the 2-D problems have a fixed
start, so one run), and preferring the smaller rate when two are within 5 %. The
sweep's choices were then checked against reasoning where reasoning gives a number:
on the quadratic (largest curvature L = 10) SGD is stable only below 2/L = 0.2 and
heavy-ball momentum below 2(1 + 0.9)/L = 0.38, and the sweep landed on 0.1 and 0.3.
Some choices sit at the top of the grid (Adadelta at 3 on three problems, SGD and
Adagrad at 3 on the spirals): that is where the rule put them, not a recommendation;
on the noisy spiral problem neighbouring rates are often near-ties. The sweep is
:func:`sweep_learning_rate`; running it with optimc's optimizers reproduces every
entry of the table in :mod:`optimc.demo.rates` (one row per optimizer class, one column
per problem), from which ``learning_rates`` is read. All other
hyperparameters stay at each class's defaults (so AdamW keeps its decoupled
``weight_decay=0.01``, which costs it some final loss where the minimum is far from
the origin). The rates are "suitable", not optimal, and a single rate per optimizer
cannot show everything (no schedules here). A class missing from the table is
run at its own default learning rate (:meth:`Problem.lr_for` returns ``None`` then).
"""

from __future__ import annotations

import abc
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .rates import learning_rates_for
from .special import step_with_loss

__all__ = [
    "Problem",
    "Problem2D",
    "Rosenbrock",
    "SaddlePlateau",
    "IllConditionedQuadratic",
    "SparseLogisticRegression",
    "SpiralMLP",
    "PROBLEM_NAMES",
    "LR_GRID",
    "get_problem",
    "all_problems",
    "final_loss",
    "sweep_learning_rate",
    "make_spirals",
]

Params = List[np.ndarray]


def _as_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


class Problem(abc.ABC):
    """Base class: a differentiable objective with a starting point.

    Subclasses set the class attributes and implement :meth:`init` and
    :meth:`loss_and_grad` (and :meth:`loss` if a cheaper exact loss exists).
    """

    name: str = ""
    description: str = ""
    #: True if :meth:`loss_and_grad` with a generator returns mini-batch estimates.
    stochastic: bool = False
    #: Number of steps the demo runs by default.
    default_steps: int = 1000
    #: The loss counted as "solved" (exact, full-data loss).
    target_loss: float = 0.0
    #: The known minimum of the loss, or None if unknown.
    min_loss: Optional[float] = 0.0
    #: Names of the parameter arrays, in order.
    param_names: Tuple[str, ...] = ()
    @property
    def learning_rates(self) -> Dict[str, float]:
        """Suitable learning rates per optimizer class name: this problem's column of
        the table in :mod:`optimc.demo.rates` (see the module docstring)."""
        return learning_rates_for(self.name)

    _data_names: Tuple[str, ...] = ()   # the fixed float arrays _data casts

    def _data(self, dt):
        """The arrays named in ``_data_names``, cast to ``dt`` once per dtype."""
        cache = self.__dict__.setdefault("_data_cache", {})
        if dt not in cache:
            cache[dt] = tuple(getattr(self, name).astype(dt) for name in self._data_names)
        return cache[dt]

    @abc.abstractmethod
    def init(self, dtype=np.float64, seed: int = 0) -> Params:
        """Fresh starting parameters (a list of C-contiguous arrays of ``dtype``)."""

    @abc.abstractmethod
    def loss_and_grad(self, params: Sequence[np.ndarray], rng=None) -> Tuple[float, Params]:
        """Loss and gradients at ``params`` (mini-batch if ``rng`` is given and the
        problem is stochastic, else exact). Gradients have the params' dtypes."""

    def loss(self, params: Sequence[np.ndarray]) -> float:
        """The exact (full-data) loss at ``params``."""
        return self.loss_and_grad(params, None)[0]

    def grad(self, params: Sequence[np.ndarray], rng=None) -> Params:
        """Only the gradients of :meth:`loss_and_grad`."""
        return self.loss_and_grad(params, rng)[1]

    def minimizer(self, dtype=np.float64) -> Optional[Params]:
        """A known minimizer as parameter arrays, or None if none is known."""
        return None

    def make_rng(self, seed: int = 0) -> np.random.Generator:
        """The generator the demo and :func:`sweep_learning_rate` draw mini-batches from."""
        return np.random.default_rng([seed, 7])

    def lr_for(self, optimizer_name: str) -> Optional[float]:
        """The documented learning rate for an optimizer class name, or None."""
        return self.learning_rates.get(optimizer_name)

    @property
    def n_params(self) -> int:
        """Total number of scalar parameters."""
        return int(sum(p.size for p in self.init(np.float64, 0)))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.description}>"


class Problem2D(Problem):
    """A problem with one parameter array of shape (2,), drawable as a contour plot."""

    param_names = ("xy",)
    #: ((xmin, xmax), (ymin, ymax)) of a view that shows the interesting region.
    bounds: Tuple[Tuple[float, float], Tuple[float, float]] = ((-2.0, 2.0), (-2.0, 2.0))
    #: Fixed starting point (the 2-D problems start at the same place for every seed).
    start: Tuple[float, float] = (0.0, 0.0)
    #: Known minima as (x, y) points.
    minima: Tuple[Tuple[float, float], ...] = ()

    @abc.abstractmethod
    def f(self, x, y):
        """The loss evaluated elementwise on arrays of x and y (for contour plots)."""

    @abc.abstractmethod
    def fgrad(self, x, y):
        """(fx, fy), the partial derivatives, elementwise."""

    def init(self, dtype=np.float64, seed: int = 0) -> Params:
        return [np.array(self.start, dtype=_as_dtype(dtype))]

    def loss(self, params) -> float:
        p = params[0]
        return float(self.f(p[0], p[1]))

    def loss_and_grad(self, params, rng=None):
        p = params[0]
        x, y = p[0], p[1]  # NumPy scalars of p's dtype: the arithmetic stays in it
        fx, fy = self.fgrad(x, y)
        g = np.empty(2, dtype=p.dtype)
        g[0] = fx
        g[1] = fy
        return float(self.f(x, y)), [g]

    def minimizer(self, dtype=np.float64):
        if not self.minima:
            return None
        return [np.array(self.minima[0], dtype=_as_dtype(dtype))]


class Rosenbrock(Problem2D):
    """f(x, y) = (1 - x)² + 100 (y - x²)², from (-1.2, 1).

    The minimum 0 at (1, 1) lies at the bottom of a long, curved, flat-bottomed valley:
    the gradient points across the valley, not along it, so plain gradient descent
    zig-zags and crawls; the Hessian's condition number at the minimum is about 2500.
    """

    name = "rosenbrock"
    description = "Rosenbrock's curved valley, 2-D, min 0 at (1, 1)"
    default_steps = 2000
    target_loss = 1e-4
    min_loss = 0.0
    bounds = ((-2.0, 2.0), (-1.0, 3.0))
    start = (-1.2, 1.0)
    minima = ((1.0, 1.0),)

    def f(self, x, y):
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2

    def fgrad(self, x, y):
        r = y - x * x
        return -2 * (1 - x) - 400 * x * r, 200 * r


class SaddlePlateau(Problem2D):
    """f(x, y) = x⁴/4 + (y² - 1)²(2y² + 1)/12  (= x⁴/4 + y⁶/6 - y⁴/4 + 1/12), from (1, 0.05).

    The origin is a saddle point (f = 1/12) whose Hessian is zero: around it lies a
    plateau on which the gradient is tiny in every direction (∂f/∂x = x³,
    ∂f/∂y = y³(y² - 1)), and the way down, along ±y, starts as a fourth-order slope,
    -y⁴/4. The only other stationary points are the two minima, f = 0 at (0, ±1).
    The start lies just off the saddle's attracting axis (y = 0): a method first
    slides onto the plateau, then has to leave it while the gradient pushing it
    away is ~y³. Plain gradient descent needs about 1/(2 η y²) steps to get
    off the plateau from height y.
    """

    name = "saddle"
    description = "degenerate saddle on a plateau (f=1/12), 2-D, min 0 at (0, +-1)"
    default_steps = 1000
    target_loss = 1e-4
    min_loss = 0.0
    bounds = ((-1.25, 1.25), (-1.5, 1.5))
    start = (1.0, 0.05)
    minima = ((0.0, 1.0), (0.0, -1.0))
    saddle = (0.0, 0.0)

    def f(self, x, y):
        x2 = x * x
        y2 = y * y
        return x2 * x2 / 4 + (y2 - 1) * (y2 - 1) * (2 * y2 + 1) / 12

    def fgrad(self, x, y):
        y2 = y * y
        return x * x * x, y * y2 * (y2 - 1)


class IllConditionedQuadratic(Problem):
    """f(θ) = ½ (θ - θ*)ᵀ A (θ - θ*), θ ∈ R⁵⁰, A = Q diag(λ) Qᵀ.

    The eigenvalues λ are log-spaced from 0.01 to 10 (condition number 1e3) and Q is a
    random rotation, so the ill-conditioning is not aligned with the axes (per-
    coordinate step sizes cannot undo it). θ* is fixed by the data seed; the start is
    θ* plus a standard normal vector drawn from ``seed``. Minimum 0 at θ*. A single
    parameter array.
    """
    _data_names = ("A", "theta_star")

    name = "quadratic"
    description = "50-D quadratic, condition number 1e3 (rotated), min 0"
    default_steps = 1000
    target_loss = 1e-3
    min_loss = 0.0
    param_names = ("theta",)

    def __init__(self, dim: int = 50, cond: float = 1e3, lmax: float = 10.0, data_seed: int = 0):
        rng = np.random.default_rng([data_seed, 50_1000])
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        q *= np.sign(np.diag(r))  # a uniformly random rotation
        self.dim = dim
        self.eigenvalues = np.geomspace(lmax / cond, lmax, dim)
        self.A = (q * self.eigenvalues) @ q.T
        self.A = (self.A + self.A.T) / 2
        self.theta_star = rng.standard_normal(dim)

    def init(self, dtype=np.float64, seed: int = 0) -> Params:
        dt = _as_dtype(dtype)
        rng = np.random.default_rng([seed, 1])
        return [(self.theta_star + rng.standard_normal(self.dim)).astype(dt)]

    def loss_and_grad(self, params, rng=None):
        theta = params[0]
        A, ts = self._data(theta.dtype)
        d = theta - ts
        g = A @ d
        return float(0.5 * (d @ g)), [g]

    def minimizer(self, dtype=np.float64):
        return [self.theta_star.astype(_as_dtype(dtype))]


def _log1pexp(z):
    """log(1 + exp(z)) without overflow."""
    return np.logaddexp(0, z)


def _sigmoid(z):
    # tanh form: stable for any z and stays in z's dtype
    return 0.5 * (1 + np.tanh(0.5 * z))


class SparseLogisticRegression(Problem):
    """Logistic regression on sparse binary features, with a little L2 regularisation.

    n = 2000 examples, d = 100 binary features. Feature j is active with probability
    p_j, log-spaced from 0.5 down to 0.003: a few features are common, most are rare
    (seen a handful of times in the data set, a few times per hundred mini-batches).
    The true weights are larger on the rare features (as with informative rare words).
    Labels are drawn from the model, so the data are not separable. Loss:
    mean log-loss + (λ/2)‖w‖², λ = 1e-3; parameters ``[w (100,), b ()]``.
    The minimum is computed once, by Newton's method in float64, when the problem is
    constructed; the target is 1e-3 above it. Mini-batches of 32 examples.
    """
    _data_names = ("X", "y")

    name = "sparse_logistic"
    description = "logistic regression, 100 sparse features, mostly rare; batch 32"
    stochastic = True
    default_steps = 3000
    param_names = ("w", "b")
    batch_size = 32
    l2 = 1e-3

    def __init__(self, n: int = 2000, d: int = 100, data_seed: int = 0):
        rng = np.random.default_rng([data_seed, 2000_100])
        freq = np.geomspace(0.5, 0.003, d)
        X = (rng.random((n, d)) < freq).astype(np.float64)
        w_true = rng.standard_normal(d) * np.where(freq < 0.05, 2.0, 0.5)
        b_true = -0.5
        y = (rng.random(n) < _sigmoid(X @ w_true + b_true)).astype(np.float64)
        self.n, self.d = n, d
        self.X, self.y, self.freq = X, y, freq
        self.w_true = w_true
        self.w_opt, self.b_opt = self._newton()
        self.min_loss = self._loss64(self.w_opt, self.b_opt)
        self.target_loss = self.min_loss + 1e-3

    def _loss64(self, w, b) -> float:
        z = self.X @ w + b
        return float(np.mean(_log1pexp(z) - self.y * z) + 0.5 * self.l2 * (w @ w))

    def _newton(self):
        X, y, n, d = self.X, self.y, self.n, self.d
        Xb = np.hstack([X, np.ones((n, 1))])
        reg = np.full(d + 1, self.l2)
        reg[-1] = 0.0
        beta = np.zeros(d + 1)
        for _ in range(100):
            p = _sigmoid(Xb @ beta)
            g = Xb.T @ (p - y) / n + reg * beta
            H = (Xb.T * (p * (1 - p))) @ Xb / n + np.diag(reg)
            step = np.linalg.solve(H, g)
            beta -= step
            if np.max(np.abs(step)) < 1e-13:
                break
        return beta[:-1].copy(), np.array(beta[-1])

    def init(self, dtype=np.float64, seed: int = 0) -> Params:
        dt = _as_dtype(dtype)
        rng = np.random.default_rng([seed, 2])
        return [(0.01 * rng.standard_normal(self.d)).astype(dt), np.zeros((), dtype=dt)]

    def batch_indices(self, rng) -> np.ndarray:
        """The example indices of one mini-batch drawn from ``rng``."""
        return rng.integers(0, self.n, size=self.batch_size)

    def loss_and_grad(self, params, rng=None):
        w, b = params
        X, y = self._data(w.dtype)
        if rng is not None:
            idx = self.batch_indices(rng)
            X, y = X[idx], y[idx]
        z = X @ w + b
        r = (_sigmoid(z) - y) / len(y)
        gw = X.T @ r + self.l2 * w
        gb = np.asarray(r.sum(), dtype=w.dtype)
        loss = float(np.mean(_log1pexp(z) - y * z) + 0.5 * self.l2 * (w @ w))
        return loss, [gw, gb]

    def loss(self, params) -> float:
        w, b = params
        X, y = self._data(w.dtype)
        z = X @ w + b
        return float(np.mean(_log1pexp(z) - y * z) + 0.5 * self.l2 * (w @ w))

    def minimizer(self, dtype=np.float64):
        dt = _as_dtype(dtype)
        return [self.w_opt.astype(dt), self.b_opt.astype(dt)]


def make_spirals(n_per_class: int = 200, n_classes: int = 3, noise: float = 0.2, seed: int = 0):
    """Interleaved spirals: (X float64 (n, 2), labels int64 (n,)).

    Class k's points lie on the arm r ∈ [0, 1], angle = 4r + 2πk/K, plus Gaussian
    angle noise of ``noise`` radians.
    """
    rng = np.random.default_rng([seed, 3])
    X = np.empty((n_per_class * n_classes, 2))
    labels = np.empty(n_per_class * n_classes, dtype=np.int64)
    for k in range(n_classes):
        r = np.linspace(0.0, 1.0, n_per_class)
        t = 4.0 * r + 2 * np.pi * k / n_classes + noise * rng.standard_normal(n_per_class)
        sl = slice(k * n_per_class, (k + 1) * n_per_class)
        X[sl, 0] = r * np.cos(t)
        X[sl, 1] = r * np.sin(t)
        labels[sl] = k
    return X, labels


class SpiralMLP(Problem):
    """A 2-64-3 tanh network classifying three interleaved spirals (600 points).

    Softmax cross-entropy, mean over the batch, no regularisation; parameters
    ``[W1 (2, 64), b1 (64,), W2 (64, 3), b2 (3,)]``, initialised with scaled normals
    (W1 ~ N(0, 1), since the inputs have radius ≤ 1; W2 ~ N(0, 1/64); zero biases).
    Mini-batches of 32 examples. The minimum is not known (the loss is non-convex and
    approaches 0); the target, 0.1, needs the network to have learnt the spiral arms
    (the best constant guess has loss ln 3 ≈ 1.10; at 0.1 nearly every point is
    classified correctly).
    """
    _data_names = ("X", "Y")

    name = "spiral_mlp"
    description = "2-64-3 tanh MLP, softmax CE on 3 spirals (600 pts); batch 32"
    stochastic = True
    default_steps = 2000
    target_loss = 0.1
    min_loss = None
    param_names = ("W1", "b1", "W2", "b2")
    batch_size = 32
    hidden = 64

    def __init__(self, n_per_class: int = 200, n_classes: int = 3, data_seed: int = 0):
        self.X, self.labels = make_spirals(n_per_class, n_classes, seed=data_seed)
        self.n = len(self.labels)
        self.n_classes = n_classes
        self.Y = np.eye(n_classes)[self.labels]

    def init(self, dtype=np.float64, seed: int = 0) -> Params:
        dt = _as_dtype(dtype)
        rng = np.random.default_rng([seed, 4])
        h, k = self.hidden, self.n_classes
        W1 = rng.standard_normal((2, h))
        W2 = rng.standard_normal((h, k)) / math.sqrt(h)
        return [W1.astype(dt), np.zeros(h, dt), W2.astype(dt), np.zeros(k, dt)]

    def batch_indices(self, rng) -> np.ndarray:
        """The example indices of one mini-batch drawn from ``rng``."""
        return rng.integers(0, self.n, size=self.batch_size)

    @staticmethod
    def _forward(params, X, Y):
        W1, b1, W2, b2 = params
        H = np.tanh(X @ W1 + b1)
        Z = H @ W2 + b2
        Z = Z - Z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(Z).sum(axis=1, keepdims=True))
        logp = Z - lse
        loss = float(-(Y * logp).sum() / len(X))
        return loss, H, logp

    def loss_and_grad(self, params, rng=None):
        W1, b1, W2, b2 = params
        X, Y = self._data(W1.dtype)
        if rng is not None:
            idx = self.batch_indices(rng)
            X, Y = X[idx], Y[idx]
        loss, H, logp = self._forward(params, X, Y)
        dZ = (np.exp(logp) - Y) / len(X)
        gW2 = H.T @ dZ
        gb2 = dZ.sum(axis=0)
        dH = (dZ @ W2.T) * (1 - H * H)
        gW1 = X.T @ dH
        gb1 = dH.sum(axis=0)
        return loss, [gW1, gb1, gW2, gb2]

    def loss(self, params) -> float:
        X, Y = self._data(params[0].dtype)
        return self._forward(params, X, Y)[0]

    def accuracy(self, params) -> float:
        """Fraction of the 600 points classified correctly."""
        X, Y = self._data(params[0].dtype)
        _, _, logp = self._forward(params, X, Y)
        return float(np.mean(np.argmax(logp, axis=1) == self.labels))

    def predict(self, params, points) -> np.ndarray:
        """Class predictions for an (m, 2) array of points (for decision-region plots)."""
        W1, b1, W2, b2 = params
        H = np.tanh(np.asarray(points, dtype=W1.dtype) @ W1 + b1)
        return np.argmax(H @ W2 + b2, axis=1)


# ---------------------------------------------------------------------------
# The rule that chose them, runnable

#: The learning-rate grid of :func:`sweep_learning_rate` (half decades).
LR_GRID: Tuple[float, ...] = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)


def final_loss(problem: Problem, optimizer_cls, lr: float, steps: Optional[int] = None,
               dtype=np.float32, seed: int = 0) -> float:
    """Run ``optimizer_cls(params, lr=lr)`` on ``problem`` from ``init(dtype, seed)`` for
    ``steps`` steps (default ``problem.default_steps``), mini-batches from
    ``problem.make_rng(seed)``; return the exact final loss (``inf`` if it diverged)."""
    params = problem.init(dtype, seed)
    opt = optimizer_cls(params, lr=lr)
    rng = problem.make_rng(seed) if problem.stochastic else None
    with np.errstate(all="ignore"):
        for _ in range(problem.default_steps if steps is None else steps):
            loss, grads = problem.loss_and_grad(params, rng)
            if not math.isfinite(loss):
                return math.inf
            step_with_loss(opt, loss, grads)
        loss = problem.loss(params)
    return loss if math.isfinite(loss) else math.inf


def sweep_learning_rate(problem: Problem, optimizer_cls, grid: Sequence[float] = LR_GRID,
                        seeds: Sequence[int] = (1, 2, 3), steps: Optional[int] = None,
                        dtype=np.float32) -> Tuple[float, Dict[float, float]]:
    """The rule behind ``learning_rates``: ``(chosen lr, {lr: median final loss})``.

    For each rate in ``grid``, the median over ``seeds`` of :func:`final_loss` (one
    seed for the 2-D problems, whose start is fixed); the chosen rate has the lowest
    distance to the minimum, the smaller rate winning when two are within 5 %.
    """
    if isinstance(problem, Problem2D):
        seeds = tuple(seeds)[:1]
    results = {}
    for lr in grid:
        losses = [final_loss(problem, optimizer_cls, lr, steps, dtype, s) for s in seeds]
        results[lr] = float(np.median(losses))
    offset = problem.min_loss or 0.0
    gaps = {lr: loss - offset for lr, loss in results.items()}
    best = min(gaps.values())
    chosen = min(lr for lr, gap in gaps.items() if gap <= best * 1.05 + 1e-12)
    return chosen, results


# ---------------------------------------------------------------------------
# Registry

_FACTORIES = {
    "rosenbrock": Rosenbrock,
    "saddle": SaddlePlateau,
    "quadratic": IllConditionedQuadratic,
    "sparse_logistic": SparseLogisticRegression,
    "spiral_mlp": SpiralMLP,
}

#: The built-in problems' names, in the demo's order.
PROBLEM_NAMES: Tuple[str, ...] = tuple(_FACTORIES)


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def get_problem(name: str) -> Problem:
    """A new instance of the built-in problem ``name`` (case and '-'/'_' insensitive)."""
    key = _normalize(name)
    if key not in _FACTORIES:
        raise KeyError(f"unknown problem {name!r}; choose from {', '.join(PROBLEM_NAMES)}")
    return _FACTORIES[key]()


def all_problems() -> List[Problem]:
    """One new instance of every built-in problem, in :data:`PROBLEM_NAMES` order."""
    return [factory() for factory in _FACTORIES.values()]
