"""Pieces and threads for memory-bound passes (cvflow.ops.parallel) and the fused,
in-place ops built on them (instance/batch norm, add+ReLU, the GRU's constant input and
precomputed h-share, the threaded correlation lookup): each equals its plain definition."""
from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvflow.ops import act, corr, parallel
from cvflow.ops.act import add_relu_, leaky_relu, leaky_relu_, relu, relu_
from cvflow.ops.corr import build_corr, corr_lookup
from cvflow.backends.cpu import CPUBackend
from cvflow.ops.norm import batch_norm, batch_norm_, instance_norm
from conftest import randn


# -- spans, run, map_spans ------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 5000), per_item=st.integers(1, 300), chunk=st.integers(1, 4096))
def test_spans_cover_the_range_in_order(n, per_item, chunk):
    pieces = parallel.spans(n, per_item, chunk)
    assert [a for a, _ in pieces] == list(range(0, n, max(1, chunk // per_item)))
    assert all(b > a for a, b in pieces) and (pieces[-1][1] == n if n else pieces == [])
    assert all(b1 == a2 for (_, b1), (a2, _) in pairwise(pieces))
    assert max((b - a for a, b in pieces), default=0) == parallel.piece_len(n, per_item, chunk=chunk)


def test_other_array_modules_get_one_piece_in_this_thread():
    other = object()  # stands for cupy: no pieces, no threads
    assert parallel.map_spans(lambda a, b: (a, b), 10 ** 6, 1, other) == [(0, 10 ** 6)]
    assert parallel.piece_len(10 ** 6, 1, other) == 10 ** 6
    assert parallel.run(lambda i: i, range(3), other) == [0, 1, 2]


@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_map_spans_keeps_order_and_runs_every_piece(threads, monkeypatch):
    monkeypatch.setenv("CVFLOW_NUM_THREADS", threads)
    assert parallel.workers() == int(threads)
    k = int(threads)
    for n, per_item, chunk in ((1000, 1, 64), (7040, 384, 1 << 20), (130, 1, 64), (5, 1, 64), (3, 1, 1)):
        got = parallel.map_spans(lambda a, b: (a, b), n, per_item, chunk=chunk)
        assert got[0][0] == 0 and got[-1][1] == n                  # every item once, in order
        assert all(b > a for a, b in got)                          # never an empty piece
        assert all(b0 == a1 for (_, b0), (a1, _) in zip(got, got[1:]))
        assert max(b - a for a, b in got) <= parallel.piece_len(n, per_item, chunk=chunk)
        pieces = parallel.spans(n, per_item, chunk)
        if k == 1 or (len(pieces) < k and n * per_item < k * parallel.MIN_PIECE):
            assert got == pieces                                    # alone or too small: as `spans`
        else:  # equal pieces, a multiple of the threads (RAFT's GRU: 7040 rows, 3 pieces -> 4)
            assert {i * n // min(k, n) for i in range(min(k, n))} <= {a for a, _ in got}
            assert len(got) % min(k, n) == 0 or len(got) == n  # n pieces of one item at most
            assert max(b - a for a, b in got) - min(b - a for a, b in got) <= 1
    assert parallel.map_spans(lambda a, b: (a, b), 0) == []


def test_run_nested_calls_stay_in_their_thread(monkeypatch):
    monkeypatch.setenv("CVFLOW_NUM_THREADS", "2")
    # an inner run from a pool thread must not wait for the (busy) pool
    out = parallel.run(lambda i: parallel.run(lambda j: i * 10 + j, range(3)), range(4))
    assert out == [[i * 10 + j for j in range(3)] for i in range(4)]


def test_workers_ignores_a_bad_environment_value(monkeypatch):
    monkeypatch.setenv("CVFLOW_NUM_THREADS", "zero")
    assert parallel.workers() >= 1


# -- fused in-place ops -----------------------------------------------------------------------
def _instance_norm_definition(x, eps=1e-5):
    n = x.shape[1] * x.shape[2]
    mean = x.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(x.dtype)
    centred = x - mean
    var = (centred * centred).sum(axis=(1, 2), keepdims=True, dtype=np.float64) / n
    return centred * (1 / np.sqrt(var + eps)).astype(x.dtype)


@pytest.mark.parametrize("shape", [(2, 37, 53, 8), (1, 130, 200, 3), (2, 1, 1, 5), (1, 40, 100, 64)])
def test_instance_norm_equals_its_definition(shape):
    # float64 sums in another order: equal up to a rare last-bit flip of the float32 mean
    rng = np.random.default_rng(sum(shape))
    x = randn(rng, *shape) * 3 + 2
    want = _instance_norm_definition(x)
    np.testing.assert_allclose(instance_norm(x), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(instance_norm(x, relu=True), np.maximum(want, 0), rtol=1e-6, atol=1e-6)
    buf = x.copy()
    out = instance_norm(buf, relu=True, inplace=True)
    assert np.shares_memory(out, buf)
    np.testing.assert_array_equal(out, instance_norm(x, relu=True))


def test_in_place_ops_equal_their_definitions():
    rng = np.random.default_rng(0)
    x = randn(rng, 2, 70, 90, 24)
    p = {"weight": randn(rng, 24), "bias": randn(rng, 24), "running_mean": randn(rng, 24),
         "running_var": np.abs(randn(rng, 24)) + 0.5}
    want = batch_norm(x, p)
    np.testing.assert_array_equal(batch_norm_(x.copy(), p), want)
    np.testing.assert_array_equal(batch_norm_(x.copy(), p, relu=True), np.maximum(want, 0))
    strided = x.copy()[:, ::2]
    np.testing.assert_array_equal(batch_norm_(strided, p, relu=True), np.maximum(batch_norm(x[:, ::2], p), 0))
    y = randn(rng, *x.shape)
    np.testing.assert_array_equal(add_relu_(y.copy(), x), np.maximum(y + x, 0))
    np.testing.assert_array_equal(relu_(y.copy()), np.maximum(y, 0))
    for a in (y[:, ::3], y.astype(np.float64), np.array(-1.5, np.float32), np.array([np.nan, -0.0, 2], np.float32)):
        got = relu(a)
        assert got.dtype == a.dtype and not np.shares_memory(got, a)
        np.testing.assert_array_equal(got, np.maximum(a, 0))
    # LeakyReLU in pieces (x spans many of them, the last one partial) and on a strided view


def test_leaky_relu_in_pieces_equals_its_definition(monkeypatch):
    monkeypatch.setattr(act, "_PIECE", 1000)  # many pieces, the last one partial
    y = randn(np.random.default_rng(1), 2, 70, 90, 24)
    np.testing.assert_array_equal(leaky_relu_(y.copy(), 0.2), leaky_relu(y, 0.2))
    z = y.copy()  # a strided view: updated where it points, nowhere else
    leaky_relu_(z[:, ::3], 0.2)
    np.testing.assert_array_equal(z[:, ::3], leaky_relu(y[:, ::3], 0.2))
    np.testing.assert_array_equal(z[:, 1::3], y[:, 1::3])


# -- GRU: constant input and precomputed h-share --------------------------------------------------
def _params(rng, ch, cin, ks):
    return {f"conv{g}{i}": {"weight": 0.2 * randn(rng, ch, cin, *k), "bias": 0.1 * randn(rng, ch)}
            for g in "zrq" for i, k in ks}


def test_gru_constant_input_equals_concatenated_input():
    """[c, x] as parts (c's share computed once per pass and reused) equals the whole input."""
    rng = np.random.default_rng(1)
    ch, cc, cx = 6, 4, 5
    h, c, x = np.tanh(randn(rng, 1, 9, 11, ch)), randn(rng, 1, 9, 11, cc), randn(rng, 1, 9, 11, cx)
    cx_all = np.concatenate([c, x], -1)
    be = CPUBackend()
    for gru, ks in ((be.conv_gru, [("", (3, 3))]), (be.sep_conv_gru, [("1", (1, 5)), ("2", (5, 1))])):
        p = _params(rng, ch, ch + cc + cx, ks)
        with be.workspace():
            first = gru(h, [c, x], p)
            again = gru(first, [c, x], p)  # the memoised share of c
        np.testing.assert_allclose(first, gru(h, [cx_all], p), atol=1e-5)
        np.testing.assert_allclose(again, gru(first, [cx_all], p), atol=1e-5)


def test_gru_step_takes_a_precomputed_h_share():
    """A step whose h share of z, r comes from the flow head's fused conv (memoised by the
    backend for that state) equals the step computing it itself."""
    from cvflow.ops.conv import conv2d
    from cvflow.ops.gru import cell_parts

    rng = np.random.default_rng(2)
    ch, cx = 5, 3
    h, x = np.tanh(randn(rng, 2, 7, 8, ch)), randn(rng, 2, 7, 8, cx)
    p = _params(rng, ch, ch + cx, [("", (3, 3))])
    be = CPUBackend()
    parts = cell_parts(be, p, "", ch, 0)
    share = conv2d(h, parts["h_zr"], padding=1)
    with be.workspace():
        be.memo()[("h_zr", "", id(parts))] = (h, share)
        fused = be.conv_gru(h, [x], p)
        assert ("h_zr", "", id(parts)) not in be.memo()  # used once
    np.testing.assert_array_equal(fused, be.conv_gru(h, [x], p))


# -- correlation lookup split into pixel pieces ------------------------------------------------------
@pytest.mark.parametrize("threads", ["1", "2"])
def test_lookup_pieces_do_not_change_the_result(threads, monkeypatch):
    rng = np.random.default_rng(3)
    f1, f2 = randn(rng, 1, 40, 130, 8), randn(rng, 1, 40, 130, 8)  # 5200 px: several pieces
    ys, xs = np.meshgrid(np.arange(40, dtype=np.float32), np.arange(130, dtype=np.float32), indexing="ij")
    coords = np.stack([xs, ys], -1)[None] + rng.uniform(-6, 6, (1, 40, 130, 2)).astype(np.float32)
    full, lazy = build_corr(f1, f2, 3), build_corr(f1, f2, 3, budget=0)
    monkeypatch.setenv("CVFLOW_NUM_THREADS", threads)
    got = corr_lookup(full, coords, 3)
    one = np.zeros((3, 7, 7, 5200), np.float32)  # all pixels as one piece, in this thread
    corr._lookup_share(full, coords.reshape(-1, 2), 3, one, 0, 5200)
    np.testing.assert_array_equal(got, one.reshape(-1, 5200).T.reshape(got.shape))
    np.testing.assert_allclose(corr_lookup(lazy, coords, 3), got, atol=1e-5)
