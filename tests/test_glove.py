"""Tests for the GloVe application (optimc/demo/glove.py): the counts, the objective and
its row gradients, training with the sparse optimizers, and the main job's section."""

import math
import os
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
