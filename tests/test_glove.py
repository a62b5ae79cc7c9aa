"""Tests for the GloVe application (optimc/demo/glove.py): the counts, the objective and
its row gradients, training with the sparse optimizers, and the main job's section."""

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import optimc
from optimc.demo import glove as G

TINY = [
    "The cat sat on the mat. The dog sat on the log!",
    "A cat and a dog; the cat ran.",
    "",
    "dog",
]


# --- corpus, vocabulary, counts -------------------------------------------------

def test_corpus_is_pythons_help_topics():
    from pydoc_data.topics import topics
    docs = G.corpus_documents()
    assert docs == [topics[k] for k in sorted(topics)]
    assert sum(len(d) for d in G.tokenize(docs)) > 50_000


def test_tokenize_and_vocabulary():
    tokens = G.tokenize(TINY)
    assert tokens[0][:4] == ["the", "cat", "sat", "on"]
    assert tokens[2] == [] and tokens[3] == ["dog"]
    words, counts, ids, doc = G.build_vocabulary(tokens, 4)
    # the: 5, cat: 3, dog: 3, a: 2, on: 2, sat: 2, ... -> ties by spelling
    assert words == ["the", "cat", "dog", "a"]
    assert counts.tolist() == [5, 3, 3, 2]
    flat = [w for d in tokens for w in d]
    assert ids.tolist() == [words.index(w) if w in words else -1 for w in flat]
    assert doc.tolist() == [i for i, d in enumerate(tokens) for _ in d]
    with pytest.raises(ValueError, match="vocab_size must be at least 2"):
        G.build_vocabulary(tokens, 1)
    with pytest.raises(ValueError, match="the corpus has no words"):
        G.build_vocabulary([[], []], 5)


def _slow_counts(tokens, words, window):
    """Independent reference: drop out-of-vocabulary words per document, then for every
    position look back up to ``window`` words and add 1/distance both ways."""
    index = {w: i for i, w in enumerate(words)}
    X = {}
    for doc in tokens:
        kept = [index[w] for w in doc if w in index]
        for pos, right in enumerate(kept):
            for dist in range(1, window + 1):
                if pos - dist < 0:
                    break
                left = kept[pos - dist]
                X[left, right] = X.get((left, right), 0.0) + 1.0 / dist
                X[right, left] = X.get((right, left), 0.0) + 1.0 / dist
    return X


@pytest.mark.parametrize("window, vocab", [(1, 3), (3, 6), (10, 20), (100, 4)])
def test_cooccurrence_counts_match_a_slow_reference(window, vocab):
    tokens = G.tokenize(TINY)
    words, _, ids, doc = G.build_vocabulary(tokens, vocab)
    rows, cols, vals = G.cooccurrence_counts(ids, doc, len(words), window)
    want = _slow_counts(tokens, words, window)
    assert rows.dtype == cols.dtype == np.int64 and vals.dtype == np.float64
    keys = list(zip(rows.tolist(), cols.tolist()))
    assert keys == sorted(want)                      # (row, col) order, each entry once
    np.testing.assert_allclose(vals, [want[k] for k in keys], rtol=1e-15)
    # symmetric
    dense = np.zeros((len(words),) * 2)
    dense[rows, cols] = vals
    np.testing.assert_array_equal(dense, dense.T)


def test_cooccurrence_counts_edge_cases():
    r, c, v = G.cooccurrence_counts(np.array([0, -1, 1]), np.zeros(3, int), 2, window=1)
    assert list(zip(r, c, v)) == [(0, 1, 1.0), (1, 0, 1.0)]      # the unknown word is skipped
    r, c, v = G.cooccurrence_counts(np.array([0, 1]), np.array([0, 1]), 2, window=5)
    assert r.size == c.size == v.size == 0                        # no window spans documents
    with pytest.raises(ValueError, match="window must be at least 1"):
        G.cooccurrence_counts(np.array([0, 1]), np.zeros(2, int), 2, window=0)


def test_cooccurrence_counts_of_a_large_vocabulary(monkeypatch):
    """Above a V x V table's worth the counts are summed by sorting: the same result."""
    tokens = G.tokenize(TINY)
    words, _, ids, doc = G.build_vocabulary(tokens, 20)
    table = G.cooccurrence_counts(ids, doc, len(words), 4)
    monkeypatch.setattr(G, "_DENSE_COUNTS_MAX", len(words) ** 2 - 1)
    sorted_ = G.cooccurrence_counts(ids, doc, len(words), 4)
    for a, b in zip(table, sorted_):
        np.testing.assert_array_equal(a, b)

def test_weighting():
    x = np.array([1.0, 50.0, 100.0, 250.0])
    np.testing.assert_allclose(G.weighting(x), [0.01 ** 0.75, 0.5 ** 0.75, 1.0, 1.0])


# --- the objective and its gradients ----------------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return G.GloVe(vocab_size=8, dim=3, window=3, batch_size=5, documents=TINY)


def _perturbed(glove, dtype=np.float64, seed=3):
    params = glove.init(dtype, 0)
    rng = np.random.default_rng(seed)
    for p in params.values():
        p += (0.3 * rng.standard_normal(p.shape)).astype(dtype)
    return params


def _dense_reference(glove, params, weight):
    """J_w = sum over (i, j) of weight_ij f(X_ij) (w_i.w~_j + b_i + b~_j - log X_ij)^2
    and its gradient, with full V x V matrices (weight = how often each entry counts)."""
    V = glove.vocab_size
    X = np.zeros((V, V))
    X[glove.rows, glove.cols] = glove.x
    mask = X > 0
    logX = np.log(np.where(mask, X, 1.0))
    F = np.where(mask, np.minimum(1.0, (X / 100.0) ** 0.75), 0.0) * weight
    W, Wc, b, bc = (params[n].astype(np.float64) for n in glove.param_names)
    D = W @ Wc.T + b[:, None] + bc[None, :] - logX
    J = float(np.sum(F * D * D))
    E = 2 * F * D
    return J, {"W": E @ Wc, "W_ctx": E.T @ W, "b": E.sum(1), "b_ctx": E.sum(0)}


def _coalesce(rows, values, shape):
    out = np.zeros(shape)
    np.add.at(out, rows, values)
    return out


def test_loss_matches_dense_reference(tiny):
    params = _perturbed(tiny)
    V = tiny.vocab_size
    J, _ = _dense_reference(tiny, params, np.ones((V, V)))
    assert tiny.loss(params) == pytest.approx(J / tiny.n_entries, rel=1e-13)
    # float32 params: the loss is still computed in float64 from their values
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    J32, _ = _dense_reference(tiny, p32, np.ones((V, V)))
    assert tiny.loss(p32) == pytest.approx(J32 / tiny.n_entries, rel=1e-13)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_row_grads_match_dense_reference_with_repeats(tiny, dtype, rtol):
    params = _perturbed(tiny, dtype)
    rng = np.random.default_rng(5)
    entries = rng.integers(0, tiny.n_entries, 3 * tiny.n_entries)   # many repeated entries
    loss, grads = tiny.row_grads(params, entries)
    V = tiny.vocab_size
    weight = np.zeros((V, V))
    np.add.at(weight, (tiny.rows[entries], tiny.cols[entries]), 1.0)
    J, want = _dense_reference(tiny, params, weight)
    assert loss == pytest.approx(J, rel=rtol)
    for name, (rows, values) in grads.items():
        p = params[name]
        assert rows.ndim == 1 and rows.dtype == np.int64 and rows.size == entries.size
        assert values.dtype == p.dtype and values.shape == (entries.size,) + p.shape[1:]
        assert values.flags.c_contiguous
        got = _coalesce(rows, values, p.shape)
        np.testing.assert_allclose(got, want[name], rtol=rtol, atol=rtol * np.abs(want[name]).max())
        # the dense form handed to dense optimizers is the same sum
        np.testing.assert_allclose(G.dense_rows(rows, values, p.shape), got,
                                   rtol=rtol, atol=rtol * np.abs(got).max())
        assert G.dense_rows(rows, values, p.shape).dtype == p.dtype


def test_gradient_matches_finite_differences(tiny):
    params = _perturbed(tiny)
    all_entries = np.arange(tiny.n_entries)
    _, grads = tiny.row_grads(params, all_entries)
    h = 1e-6
    rng = np.random.default_rng(9)
    for name, (rows, values) in grads.items():
        g = _coalesce(rows, values, params[name].shape) / tiny.n_entries   # of J / N
        for flat in rng.choice(params[name].size, 4, replace=False):
            idx = np.unravel_index(flat, params[name].shape)
            saved = params[name][idx]
            params[name][idx] = saved + h
            up = tiny.loss(params)
            params[name][idx] = saved - h
            down = tiny.loss(params)
            params[name][idx] = saved
            assert g[idx] == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-9), (name, idx)


def test_init_and_batches(tiny):
    p = tiny.init(np.float32, 4)
    assert {k: (v.shape, v.dtype) for k, v in p.items()} == {
        "W": ((8, 3), np.float32), "W_ctx": ((8, 3), np.float32),
        "b": ((8,), np.float32), "b_ctx": ((8,), np.float32)}
    assert all(np.abs(v).max() <= 0.5 / 3 for v in p.values())
    q = tiny.init(np.float32, 4)
    assert all(np.array_equal(p[k], q[k]) for k in p)
    assert not np.array_equal(tiny.init(np.float32, 5)["W"], p["W"])
    batches = tiny.batches(np.random.default_rng(0))
    assert all(b.size == 5 for b in batches[:-1]) and 1 <= batches[-1].size <= 5
    assert sorted(np.concatenate(batches).tolist()) == list(range(tiny.n_entries))
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        tiny.init(np.float16)


@pytest.mark.parametrize("kwargs, message", [
    (dict(vocab_size=1), "vocab_size must be an integer of at least 2"),
    (dict(dim=0), "dim must be an integer of at least 1"),
    (dict(window=2.5), "window must be an integer of at least 1"),
    (dict(batch_size=True), "batch_size must be an integer of at least 1"),
    (dict(x_max=0.0), "x_max and alpha must be positive"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        G.GloVe(documents=TINY, **kwargs)


def test_nearest_neighbours(tiny):
    params = _perturbed(tiny)
    vec = params["W"] + params["W_ctx"]
    unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    for i, word in enumerate(tiny.words):
        got = G.nearest_neighbours(tiny, params, word, 3)
        sims = {w: float(unit[i] @ unit[j]) for j, w in enumerate(tiny.words) if j != i}
        want = sorted(sims, key=lambda w: -sims[w])[:3]
        assert [w for w, _ in got] == want
        assert [s for _, s in got] == pytest.approx([sims[w] for w in want], rel=1e-12)
    with pytest.raises(KeyError, match="'zebra' is not among the 8 words"):
        G.nearest_neighbours(tiny, params, "zebra")


# --- training with the sparse optimizers -------------------------------------------

@pytest.fixture(scope="module")
def small():
    """The real corpus, a small model: 150 words x 8 dims, 80 batches an epoch."""
    return G.GloVe(vocab_size=150, dim=8, batch_size=256)


def test_sparse_grads_are_what_the_optimizers_take(small):
    params = small.init(np.float32, 0)
    entries = small.batches(np.random.default_rng(0))[0]
    loss, grads = small.grads(params, entries, sparse=True)
    _, rows = small.row_grads(params, entries)
    assert loss == small.row_grads(params, entries)[0]
    assert set(grads) == set(small.param_names)
    assert all(isinstance(g, optimc.SparseGrad) for g in grads.values())
    _, dense = small.grads(params, entries, sparse=False)
    for name, (r, v) in rows.items():
        assert dense[name].shape == params[name].shape and dense[name].dtype == np.float32
        untouched = np.setdiff1d(np.arange(small.vocab_size), r)
        assert not np.any(dense[name][untouched])


@pytest.mark.parametrize("label, cls, lr, sparse", G.OPTIMIZERS, ids=[o[0] for o in G.OPTIMIZERS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_decreases_the_loss(small, label, cls, lr, sparse, dtype):
    run = G.train(small, cls, lr, 3, sparse=sparse, dtype=dtype, seed=0, label=label)
    assert run.error is None and run.label == label and len(run.losses) == 4
    assert all(math.isfinite(x) for x in run.losses)
    assert run.losses[1] < 0.5 * run.losses[0]       # the first epoch does most of the work
    assert run.losses[3] < run.losses[2] < run.losses[1]
    assert all(p.dtype == dtype for p in run.params.values())
    assert run.us_per_step > 0 and (run.state_bytes > 0) == (cls != "SGD")   # SGD keeps none
    assert isinstance(run.opt, getattr(optimc, cls))


def test_sparse_and_dense_updates_agree(small):
    """SGD without momentum and Adagrad change only the rows with a gradient, so the
    sparse rows and the dense tables (zeros elsewhere) train to the same vectors."""
    for cls, lr in (("SGD", 0.01), ("Adagrad", 0.05)):
        a = G.train(small, cls, lr, 1, sparse=True, dtype=np.float64, seed=2)
        b = G.train(small, cls, lr, 1, sparse=False, dtype=np.float64, seed=2)
        for name in small.param_names:
            np.testing.assert_allclose(a.params[name], b.params[name], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{cls} {name}")


def test_rows_outside_the_batch_are_unchanged(small):
    entries = small.batches(np.random.default_rng(3))[0][:50]
    for cls in [o[1] for o in G.OPTIMIZERS if o[3]]:      # those given SparseGrad rows
        params = small.init(np.float32, 0)
        before = {k: v.copy() for k, v in params.items()}
        opt = getattr(optimc, cls)(params, lr=0.1)
        opt.step(small.grads(params, entries, sparse=True)[1])
        for name, rows in (("W", small.rows), ("W_ctx", small.cols),
                           ("b", small.rows), ("b_ctx", small.cols)):
            outside = np.setdiff1d(np.arange(small.vocab_size), rows[entries])
            assert outside.size > 0
            np.testing.assert_array_equal(params[name][outside], before[name][outside],
                                          err_msg=f"{cls} {name}")
            assert np.any(params[name] != before[name]), f"{cls} {name}"


def test_training_is_deterministic(small):
    a = G.train(small, "SparseAdam", 0.01, 2, seed=5)
    b = G.train(small, "SparseAdam", 0.01, 2, seed=5)
    c = G.train(small, "SparseAdam", 0.01, 2, seed=6)
    assert a.losses == b.losses
    assert all(np.array_equal(a.params[k], b.params[k]) for k in small.param_names)
    assert a.losses[-1] != c.losses[-1]
    again = G.GloVe(vocab_size=150, dim=8, batch_size=256)       # the counts too
    assert again.words == small.words
    np.testing.assert_array_equal(again.x, small.x)


# --- the main job's section --------------------------------------------------------

def test_probe_words_are_in_the_sections_vocabulary():
    settings = {k: v for k, v in G.SECTION_SETTINGS.items() if k != "epochs"}
    words = G.GloVe(**settings).words
    assert all(w in words for w in G.PROBE_WORDS)


def test_section_format(small):
    runs = [G.train(small, cls, lr, 2, sparse, seed=0, label=label)
            for label, cls, lr, sparse in G.OPTIMIZERS]
    text = G.format_section(small, runs, "float32", probes=("list", "zebra", "true"), k=3)
    lines = text.splitlines()
    assert lines[0].startswith("glove - GloVe word vectors on Python's help topics")
    assert f"{small.vocab_size} words x 8 dims" in lines[1]
    best = min(r.losses[-1] for r in runs)
    for r in runs:
        row = next(ln for ln in lines if ln.startswith(f"  {r.label} "))
        assert f"{r.losses[0]:.4f}" in row and f"{r.losses[-1]:.4f}" in row
        assert row.split()[-2:][0] == "*" if r.losses[-1] == best else "*" not in row
    winner = next(r for r in runs if r.losses[-1] == best)
    assert f"after {winner.label}:" in text
    near = ", ".join(w for w, _ in G.nearest_neighbours(small, winner.params, "list", 3))
    assert f"    list       {near}" in lines
    assert "zebra" not in text                        # a probe outside the vocabulary is left out
    # a failed run is reported in its row, the others still show
    broken = G.GloVeRun("Broken", "Broken", 0.1, True, 2, error="TypeError: no")
    assert "  Broken            0.1  error: TypeError: no" in G.format_section(
        small, runs + [broken], "float32").splitlines()


def test_section_errors_are_reported_per_run(monkeypatch):
    monkeypatch.setattr(G, "SECTION_SETTINGS", dict(vocab_size=60, dim=4, batch_size=4096,
                                                    epochs=1))
    monkeypatch.setattr(G, "OPTIMIZERS", G.OPTIMIZERS + (("Lion", "Lion", 1e-3, True),))
    glove, runs = G.run_section(dtype=np.float64, seed=1)
    assert [r.label for r in runs] == [o[0] for o in G.OPTIMIZERS]
    assert all(r.error is None for r in runs[:-1])
    assert runs[-1].error.startswith("TypeError")
    _, only = G.run_section(1, optimizers=["SGD", "Adam"])
    assert [r.label for r in only] == ["SGD (dense)"]


def _run_cli(*args, cwd):
    env = dict(os.environ, PYTHONWARNINGS="error::RuntimeWarning")
    return subprocess.run([sys.executable, "-m", "optimc", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _losses_and_neighbours(stdout):
    """The section's loss cells (the times left out) and its neighbour lines."""
    labels = tuple(f"  {o[0]} " for o in G.OPTIMIZERS)
    losses = [ln.rsplit(None, 1)[0] for ln in stdout.splitlines() if ln.startswith(labels)]
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("  nearest neighbours"))
    near = [ln for ln in lines[start + 1:] if ln.startswith("    ")]
    assert len(losses) == len(G.OPTIMIZERS) and len(near) == len(G.PROBE_WORDS)
    return losses, near


def test_main_job_section(tmp_path):
    r = _run_cli("--problems", "glove", "--glove-epochs", "2", "--seed", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "glove - GloVe word vectors" in out
    assert re.search(r"\n  optimizer +lr epoch 0 +1 +2  us/update\n", out)
    for label, _, _, _ in G.OPTIMIZERS:
        assert f"\n  {label} " in out
    assert "nearest neighbours (cosine of W + W_ctx)" in out
    assert "glove: 4 runs x 2 epochs in" in out
    assert "no figure: the glove problem has none" in out
    assert not any(tmp_path.iterdir())
    again = _run_cli("--problems", "glove", "--glove-epochs", "2", "--seed", "1", "--no-plot",
                     cwd=tmp_path)
    assert _losses_and_neighbours(again.stdout) == _losses_and_neighbours(out)
    r = _run_cli("--glove-epochs", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--glove-epochs must be at least 1" in r.stderr

