"""GloVe word vectors (Pennington, Socher and Manning, 2014) trained with sparse row updates.

The corpus is Python's own documentation as every CPython install carries it: the
help topics of :mod:`pydoc_data.topics` (the text ``help("for")`` shows: the language
reference's chapters on statements, expressions, the data model, ...), about 65,000
words. It needs no download and no docstrings (it is data, so ``python -OO`` keeps
it). Everything is seeded, so a run repeats exactly on one installation; the topics'
wording changes a little between Python versions, and with it the counts, losses and
neighbours.

The pipeline, all vectorised NumPy:

1. :func:`tokenize` -- lower-case words (runs of the letters a-z), one list per help topic.
2. :func:`build_vocabulary` -- the ``vocab_size`` most frequent words (ties by spelling).
3. :func:`cooccurrence_counts` -- X_ij = sum over the times word j occurs within
   ``window`` words on either side of word i of 1/distance, as GloVe's ``cooccur``
   counts: words outside the vocabulary are dropped first, and windows do not cross
   from one help topic into the next. Stored sparse, as COO arrays (rows, cols, values)
   sorted by (row, col).
4. :class:`GloVe` -- the weighted least-squares objective

       J = sum over the nonzero X_ij of f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2,
       f(x) = min(1, (x / x_max)^0.75),  x_max = 100,

   over four embedding tables: word vectors ``W`` (V, d), context vectors ``W_ctx``
   (V, d) and the biases ``b``, ``b_ctx`` (V,). A mini-batch is a set of nonzero
   entries; its gradient touches only the rows of the words in it, and is handed to
   the optimizer as ``optimc.SparseGrad(rows, values)`` -- one value row per entry,
   so a word that occurs in several entries of the batch has its row repeated, and
   the optimizer sums the repeats.

:func:`train` runs one optimizer; :data:`OPTIMIZERS` lists the four the demo compares:
sparse Adagrad at GloVe's own learning rate (0.05), SparseAdam, RowWiseAdagrad, and
plain SGD given dense gradients (full tables, zero outside the batch's rows), the way
a dense optimizer has to be fed. :func:`nearest_neighbours` ranks words by the cosine
similarity of ``W + W_ctx`` (GloVe's recommended word representation).

``python -m optimc`` prints a short run of all four (:func:`run_section`);
``--glove-epochs`` trains longer. The notebook ``notebooks/04_glove_sparse_adagrad.ipynb``
runs a larger model and draws the curves and a 2-D projection of the vectors.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "CORPUS", "OPTIMIZERS", "PROBE_WORDS", "LR_GRID", "SECTION_SETTINGS",
    "corpus_documents", "tokenize", "build_vocabulary", "cooccurrence_counts",
    "weighting", "GloVe", "GloVeRun", "dense_rows", "train", "nearest_neighbours", "sweep_learning_rate",
    "run_section", "format_section",
]

#: Where the text comes from (a module of the standard library).
CORPUS = "pydoc_data.topics"

#: (label, optimizer class name, learning rate, whether it gets SparseGrad rows).
#: Adagrad's rate is GloVe's; the others were chosen by :func:`sweep_learning_rate`
#: (see its docstring) on the demo's section settings.
OPTIMIZERS: Tuple[Tuple[str, str, float, bool], ...] = (
    ("Adagrad", "Adagrad", 0.05, True),
    ("SparseAdam", "SparseAdam", 0.03, True),
    ("RowWiseAdagrad", "RowWiseAdagrad", 0.3, True),
    ("SGD (dense)", "SGD", 0.1, False),
)

#: Words whose nearest neighbours the demo prints (all among the 300 most frequent).
PROBE_WORDS: Tuple[str, ...] = ("list", "true", "class", "exception", "two")

#: The half-decade grid of :func:`sweep_learning_rate` (the demo's grid, in its useful range).
LR_GRID: Tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)

#: The main job's GloVe section: small enough to take about a second.
SECTION_SETTINGS = dict(vocab_size=300, dim=16, batch_size=1024, epochs=6)


# ---------------------------------------------------------------------------
# Corpus, vocabulary, co-occurrences

def corpus_documents() -> List[str]:
    """The help topics of :mod:`pydoc_data.topics`, one string per topic, in the
    order of their names."""
    from pydoc_data.topics import topics
    return [topics[name] for name in sorted(topics)]


_WORD = re.compile(r"[a-z]+")
_DENSE_COUNTS_MAX = 1 << 24    # up to 4096 words the counts are summed in a V x V table


def tokenize(documents: Sequence[str]) -> List[List[str]]:
    """Each document as its list of lower-case words (maximal runs of a-z)."""
    return [_WORD.findall(doc.lower()) for doc in documents]


def build_vocabulary(tokens: Sequence[Sequence[str]], vocab_size: int
                     ) -> Tuple[List[str], np.ndarray, np.ndarray, np.ndarray]:
    """The ``vocab_size`` most frequent words.

    Returns ``(words, counts, ids, doc)``: the words by falling count (ties in
    alphabetical order), their counts, and the whole token stream as word ids (``-1``
    for a word outside the vocabulary) with the document number of every token.
    """
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    flat = np.concatenate([np.array(d, dtype=str) for d in tokens] or [np.array([], str)])
    doc = np.repeat(np.arange(len(tokens)), [len(d) for d in tokens])
    if flat.size == 0:
        raise ValueError("the corpus has no words")
    unique, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)                 # NumPy 2.0/2.1 kept the input's shape
    order = np.lexsort((np.arange(unique.size), -counts))[:vocab_size]   # count, then spelling
    id_of_unique = np.full(unique.size, -1, dtype=np.int64)
    id_of_unique[order] = np.arange(order.size)
    return unique[order].tolist(), counts[order], id_of_unique[inverse], doc


def cooccurrence_counts(ids: np.ndarray, doc: np.ndarray, vocab_size: int, window: int = 10
                        ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric windowed co-occurrence counts with 1/distance weighting, as COO arrays.

    ``ids``: the token stream as word ids (negative = outside the vocabulary, dropped
    before the windows are laid, as GloVe does); ``doc``: each token's document (a
    window never spans two). For each pair of kept tokens ``d <= window`` apart, word
    ids a (left) and b (right), 1/d is added to X[a, b] and to X[b, a]. Returns
    ``(rows, cols, values)``: int64, int64, float64, the nonzero entries in (row, col)
    order. Sums run in a fixed order, so the values are the same on every run.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    ids = np.asarray(ids, dtype=np.int64)
    doc = np.asarray(doc)
    keep = ids >= 0
    ids, doc = ids[keep], doc[keep]
    keys, weights = [], []
    for d in range(1, min(window, ids.size - 1) + 1):
        same = doc[:-d] == doc[d:]
        left, right = ids[:-d][same], ids[d:][same]
        w = np.full(left.size, 1.0 / d)
        keys += [left * vocab_size + right, right * vocab_size + left]
        weights += [w, w]
    if not keys:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy(), np.empty(0)
    keys, weights = np.concatenate(keys), np.concatenate(weights)
    if vocab_size * vocab_size <= _DENSE_COUNTS_MAX:    # a V x V table: no sort needed
        table = np.bincount(keys, weights=weights, minlength=vocab_size * vocab_size)
        unique = np.flatnonzero(table)
        values = table[unique]
    else:
        unique, inverse = np.unique(keys, return_inverse=True)
        values = np.bincount(inverse.reshape(-1), weights=weights, minlength=unique.size)
    return unique // vocab_size, unique % vocab_size, values


def weighting(x: np.ndarray, x_max: float = 100.0, alpha: float = 0.75) -> np.ndarray:
    """GloVe's weighting function f(x) = min(1, (x / x_max)^alpha)."""
    return np.minimum(1.0, (np.asarray(x, dtype=np.float64) / x_max) ** alpha)


# ---------------------------------------------------------------------------
# The objective

_LOSS_SLICE = 8192      # entries per slice of the full loss


class GloVe:
    """The GloVe objective on the corpus (or on ``documents``), with its data fixed at
    construction.

    ``params = glove.init(dtype, seed)`` is a dict of four fresh tables (``W``,
    ``W_ctx`` of shape (V, dim); ``b``, ``b_ctx`` of shape (V,)), uniform in
    ±0.5/dim as GloVe starts them. ``glove.loss(params)`` is J / N, the objective
    divided by the number N of nonzero co-occurrences (a mean that stays comparable
    across vocabulary sizes). ``glove.row_grads(params, entries)`` is the gradient of
    the entries' share of J, as ``{name: (rows, values)}`` with repeated rows;
    ``glove.grads(params, entries, sparse)`` wraps those as ``optimc.SparseGrad`` or
    sums them into dense arrays.
    """

    name = "glove"
    param_names = ("W", "W_ctx", "b", "b_ctx")

    def __init__(self, vocab_size: int = 300, dim: int = 16, window: int = 10,
                 x_max: float = 100.0, alpha: float = 0.75, batch_size: int = 1024,
                 documents: Optional[Sequence[str]] = None):
        for what, value, lo in (("vocab_size", vocab_size, 2), ("dim", dim, 1),
                                ("window", window, 1), ("batch_size", batch_size, 1)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
                raise ValueError(f"{what} must be an integer of at least {lo}, got {value!r}")
        if not (x_max > 0 and alpha > 0):
            raise ValueError(f"x_max and alpha must be positive, got {x_max!r}, {alpha!r}")
        docs = corpus_documents() if documents is None else list(documents)
        self.words, self.counts, ids, doc = build_vocabulary(tokenize(docs), vocab_size)
        self.vocab_size = len(self.words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.n_tokens = int(ids.size)
        self.dim, self.window, self.batch_size = int(dim), int(window), int(batch_size)
        self.x_max, self.alpha = float(x_max), float(alpha)
        self.rows, self.cols, self.x = cooccurrence_counts(ids, doc, self.vocab_size, window)
        self.log_x = np.log(self.x)
        self.f = weighting(self.x, x_max, alpha)
        self._cast = {}

    @property
    def n_entries(self) -> int:
        """N, the number of nonzero co-occurrence counts."""
        return int(self.x.size)

    def __repr__(self) -> str:
        return (f"<GloVe: {self.vocab_size} words x {self.dim} dims, window {self.window}, "
                f"{self.n_entries} co-occurrences from {self.n_tokens} tokens>")

    def _data(self, dtype):
        """(log X, f(X)) in the params' dtype, cast once."""
        dt = np.dtype(dtype)
        if dt not in self._cast:
            self._cast[dt] = (self.log_x.astype(dt), self.f.astype(dt))
        return self._cast[dt]

    def init(self, dtype=np.float32, seed: int = 0) -> Dict[str, np.ndarray]:
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        rng = np.random.default_rng([seed, 14])
        V, d = self.vocab_size, self.dim
        shapes = {"W": (V, d), "W_ctx": (V, d), "b": (V,), "b_ctx": (V,)}
        return {name: ((rng.random(shape) - 0.5) / d).astype(dt) for name, shape in shapes.items()}

    def residuals(self, params, entries=None) -> np.ndarray:
        """w_i . w~_j + b_i + b~_j - log X_ij for the given entries (an index array or a
        slice of the entries; default: all)."""
        return self._gather(params, entries)[0]

    def _gather(self, params, entries):
        W, Wc, b, bc = (params[n] for n in self.param_names)
        log_x, _ = self._data(W.dtype)
        r, c = self.rows, self.cols
        if entries is not None:
            r, c, log_x = r[entries], c[entries], log_x[entries]
        w_rows, ctx_rows = W[r], Wc[c]
        diff = np.einsum("ij,ij->i", w_rows, ctx_rows)
        diff += b[r]
        diff += bc[c]
        diff -= log_x
        return diff, r, c, w_rows, ctx_rows

    def loss(self, params) -> float:
        """J / N over every nonzero co-occurrence, computed in float64 (in slices of the
        entries, so that the gathered rows stay in cache)."""
        p64 = {n: params[n].astype(np.float64) for n in self.param_names}
        total = 0.0
        for start in range(0, self.n_entries, _LOSS_SLICE):
            part = slice(start, start + _LOSS_SLICE)
            diff = self.residuals(p64, part)
            total += float(np.dot(self.f[part], diff * diff))
        return total / self.n_entries

    def row_grads(self, params, entries: np.ndarray
                  ) -> Tuple[float, Dict[str, Tuple[np.ndarray, np.ndarray]]]:
        """The entries' share of J, and its gradient as ``{name: (rows, values)}``.

        With e_k = f(X_k) (w_i . w~_j + b_i + b~_j - log X_k) for entry k = (i, j):
        dJ/dw_i gets 2 e_k w~_j, dJ/dw~_j gets 2 e_k w_i, dJ/db_i and dJ/db~_j get
        2 e_k -- one value row per entry, so rows repeat (summing them is the
        optimizer's job). Computed in the params' dtype.
        """
        _, f = self._data(params["W"].dtype)
        diff, r, c, w_rows, ctx_rows = self._gather(params, entries)
        weighted = f[entries] * diff
        loss = float(np.dot(weighted.astype(np.float64), diff))
        g = 2 * weighted
        ctx_rows *= g[:, None]            # the gathered copies become the value rows
        w_rows *= g[:, None]
        return loss, {"W": (r, ctx_rows), "W_ctx": (c, w_rows), "b": (r, g), "b_ctx": (c, g.copy())}

    def grads(self, params, entries: np.ndarray, sparse: bool = True):
        """``(loss, grads)`` for ``opt.step``: see :meth:`step_grads`."""
        loss, rows = self.row_grads(params, entries)
        return loss, self.step_grads(params, rows, sparse)

    @staticmethod
    def step_grads(params, rows, sparse: bool = True):
        """The row gradients of :meth:`row_grads` as ``opt.step`` takes them: an
        ``optimc.SparseGrad`` per table, or dense arrays of the tables' shapes (the
        repeats summed, zero outside the rows)."""
        if sparse:
            import optimc
            return {n: optimc.SparseGrad(i, v) for n, (i, v) in rows.items()}
        return {n: dense_rows(i, v, params[n].shape) for n, (i, v) in rows.items()}

    def batches(self, rng: np.random.Generator) -> List[np.ndarray]:
        """One epoch: the entries shuffled by ``rng``, cut into mini-batches."""
        order = rng.permutation(self.n_entries)
        return [order[k:k + self.batch_size] for k in range(0, order.size, self.batch_size)]

    def vectors(self, params) -> np.ndarray:
        """W + W~, float64: the word representation GloVe recommends."""
        return params["W"].astype(np.float64) + params["W_ctx"]


def dense_rows(rows: np.ndarray, values: np.ndarray, shape) -> np.ndarray:
    """The dense array of ``shape`` holding the sum of ``values`` at ``rows`` (repeats
    summed, in float64, in order), zero elsewhere: what a dense optimizer is given."""
    width = 1
    for n in shape[1:]:
        width *= n
    flat = (rows[:, None] * width + np.arange(width)).reshape(-1)
    total = np.bincount(flat, weights=values.reshape(-1), minlength=shape[0] * width)
    return total.reshape(shape).astype(values.dtype)


def nearest_neighbours(glove: GloVe, params, word: str, k: int = 5) -> List[Tuple[str, float]]:
    """The ``k`` words whose ``W + W_ctx`` rows have the highest cosine similarity with
    ``word``'s (the word itself left out), with the similarities."""
    if word not in glove.index:
        raise KeyError(f"{word!r} is not among the {glove.vocab_size} words of the vocabulary")
    vec = glove.vectors(params)
    unit = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-300)
    i = glove.index[word]
    sim = unit @ unit[i]
    sim[i] = -np.inf
    best = np.argsort(-sim, kind="stable")[:k]
    return [(glove.words[j], float(sim[j])) for j in best]


# ---------------------------------------------------------------------------
# Training

@dataclass
class GloVeRun:
    """One optimizer's training run."""
    label: str
    optimizer: str
    lr: float
    sparse: bool
    epochs: int
    losses: List[float] = field(default_factory=list)   # J / N before training, then per epoch
    us_per_step: float = math.nan       # median time of building the step's grads + opt.step
    state_bytes: int = 0
    params: Dict[str, np.ndarray] = field(default_factory=dict)
    opt: object = None                                    # the optimizer, after training
    error: Optional[str] = None                           # why the run failed, if it did


def train(glove: GloVe, optimizer: str, lr: float, epochs: int, sparse: bool = True,
          dtype=np.float32, seed: int = 0, label: Optional[str] = None) -> GloVeRun:
    """Train the tables from ``glove.init(dtype, seed)`` with ``optimc.<optimizer>(lr=lr)``
    for ``epochs`` passes over the shuffled entries (the order from ``seed``: every
    optimizer sees the same batches). ``sparse``: hand it ``SparseGrad`` rows, else
    dense arrays. Records J / N before training and after every epoch, and the median
    time of one update: turning the batch's row gradients into the optimizer's grads
    (``SparseGrad`` objects, or dense tables) plus ``opt.step``."""
    import optimc
    cls = getattr(optimc, optimizer)
    params = glove.init(dtype, seed)
    opt = cls(params, lr=lr)
    run = GloVeRun(label or optimizer, optimizer, lr, sparse, epochs, params=params)
    run.losses.append(glove.loss(params))
    rng = np.random.default_rng([seed, 15])
    times = []
    clock = time.perf_counter_ns
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(epochs):
            for entries in glove.batches(rng):
                _, rows = glove.row_grads(params, entries)
                t0 = clock()     # what differs between sparse and dense: the grads' form and the step
                opt.step(glove.step_grads(params, rows, sparse))
                times.append(clock() - t0)
            run.losses.append(glove.loss(params))
    if times:
        run.us_per_step = float(np.median(times)) / 1e3
    run.state_bytes = int(opt.state_bytes)
    run.opt = opt
    return run


def sweep_learning_rate(glove: GloVe, optimizer: str, sparse: bool, epochs: int,
                        grid: Sequence[float] = LR_GRID, seeds: Sequence[int] = (1, 2, 3),
                        dtype=np.float32) -> Tuple[float, Dict[float, float]]:
    """The demo's rule (:func:`optimc.problems.sweep_learning_rate`) applied to GloVe:
    for each rate the median over ``seeds`` of the final J / N after ``epochs``
    epochs (``inf`` if it diverged); the lowest wins, the smaller rate when two are
    within 5 %. Returns ``(chosen lr, {lr: median final loss})``."""
    results = {}
    for lr in grid:
        finals = []
        for s in seeds:
            loss = train(glove, optimizer, lr, epochs, sparse, dtype, s).losses[-1]
            finals.append(loss if math.isfinite(loss) else math.inf)
        results[lr] = float(np.median(finals))
    best = min(results.values())
    chosen = min(lr for lr, loss in results.items() if loss <= best * 1.05)
    return chosen, results


# ---------------------------------------------------------------------------
# The main job's section

def run_section(epochs: Optional[int] = None, dtype=np.float32, seed: int = 0,
                optimizers: Optional[Sequence[str]] = None):
    """Build the section's GloVe problem and train every optimizer of :data:`OPTIMIZERS`
    (those whose class name is in ``optimizers``, if given). Returns ``(glove, runs)``."""
    settings = dict(SECTION_SETTINGS)
    default_epochs = settings.pop("epochs")
    epochs = default_epochs if epochs is None else epochs
    glove = GloVe(**settings)
    runs = []
    for label, cls, lr, sparse in OPTIMIZERS:
        if optimizers is not None and cls not in optimizers:
            continue
        try:
            runs.append(train(glove, cls, lr, epochs, sparse, dtype, seed, label))
        except Exception as exc:  # reported in the section, the others still run
            runs.append(GloVeRun(label, cls, lr, sparse, epochs,
                                 error=f"{type(exc).__name__}: {exc}"))
    return glove, runs


def format_section(glove: GloVe, runs: Sequence[GloVeRun], dtype_name: str,
                   probes: Sequence[str] = PROBE_WORDS, k: int = 5) -> str:
    """The section's text: J / N per epoch for every run, then the nearest neighbours of
    the probe words under the run with the lowest final loss."""
    lines = [
        f"glove - GloVe word vectors on Python's help topics ({CORPUS}), sparse rows",
        f"  {glove.n_tokens} tokens, {glove.vocab_size} words x {glove.dim} dims, window "
        f"{glove.window}, {glove.n_entries} co-occurrences; batch {glove.batch_size}, {dtype_name}",
    ]
    if not runs:
        return "\n".join(lines + ["  (none of the chosen optimizers trains GloVe: "
                                  + ", ".join(sorted({o[1] for o in OPTIMIZERS})) + ")"])
    epochs = runs[0].epochs
    shown = list(range(epochs + 1))
    if len(shown) > 7:       # a long run: the start, then six evenly spread epochs
        shown = sorted(set(np.linspace(0, epochs, 7).round().astype(int).tolist()))
    head = "".join(f"{('epoch ' if k == 0 else '') + str(e):>8}" for k, e in enumerate(shown))
    lines.append(f"  {'optimizer':<15}{'lr':>6}{head}  {'us/update':>9}")
    finals = [r.losses[-1] for r in runs if r.error is None and math.isfinite(r.losses[-1])]
    best = min(finals) if finals else None
    for r in runs:
        if r.error is not None:
            lines.append(f"  {r.label:<15}{r.lr:>6g}  error: {r.error}")
            continue
        cells = "".join(f"{_fmt(r.losses[e]) if e < len(r.losses) else '-':>8}" for e in shown)
        mark = " *" if r.losses[-1] == best else "  "
        us = f"{r.us_per_step:.1f}" if math.isfinite(r.us_per_step) else "-"
        lines.append(f"  {r.label:<15}{r.lr:>6g}{cells}{mark}{us:>9}")
    lines += [
        "  loss: J / N, the weighted squared error per co-occurrence; * = the lowest at the end.",
        "  us/update: median time of one update: the batch's row gradients made SparseGrads",
        "    (or scattered into dense tables, for SGD (dense)), then opt.step.",
    ]
    if best is not None:
        winner = next(r for r in runs if r.error is None and r.losses[-1] == best)
        lines.append(f"  nearest neighbours (cosine of W + W_ctx) after {winner.label}:")
        for word in probes:
            if word in glove.index:
                near = ", ".join(w for w, _ in nearest_neighbours(glove, winner.params, word, k))
                lines.append(f"    {word:<10} {near}")
    return "\n".join(lines)


def _fmt(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else "nan"
