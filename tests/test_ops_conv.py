"""conv2d / conv_transpose2d: every path conv2d dispatches to (1x1, Winograd, output taps,
channel planes, row taps, im2col; strided, dilated, grouped; transposed with output padding), checked
against a direct float64 definition on hypothesis-drawn sizes."""
from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cvflow.ops import conv, conv_transpose

seeds = st.integers(0, 2**31 - 1)
RTOL = 1e-4


def _naive_conv(x, w, b, stride, pad, dil, groups=1):
    """Cross-correlation with zero padding, float64, one tap at a time."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, h, wd, c = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, ho, wo, o))
    og = o // groups
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw,
                           g * cg:(g + 1) * cg]
                out[..., g * og:(g + 1) * og] += patch @ w[g * og:(g + 1) * og, :, i, j].T
    return out if b is None else out + b


def _naive_conv_t(x, w, b, stride, pad, opad):
    """Transposed conv by definition: scatter every input pixel times every tap."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    n, h, wd, _ = x.shape
    _, o, kh, kw = w.shape
    (sh, sw), (ph, pw), (oph, opw) = stride, pad, opad
    full = np.zeros((n, (h - 1) * sh + kh + oph, (wd - 1) * sw + kw + opw, o))
    for i in range(kh):
        for j in range(kw):
            full[:, i:i + (h - 1) * sh + 1:sh, j:j + (wd - 1) * sw + 1:sw] += x @ w[:, :, i, j]
    out = full[:, ph:full.shape[1] - ph, pw:full.shape[2] - pw]
    return out if b is None else out + b


def _close(out, ref):
    assert out.shape == ref.shape and out.dtype == np.float32
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=RTOL * scale)


def _layer(rng, o, c, kh, kw, bias=True):
    p = {"weight": rng.standard_normal((o, c, kh, kw)).astype(np.float32)}
    if bias:
        p["bias"] = rng.standard_normal(o).astype(np.float32)
    return p


@contextlib.contextmanager
def _spy(name):
    """Count calls of conv's path function `name` inside the block."""
    calls = []
    real = getattr(conv, name)

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    setattr(conv, name, spy)
    try:
        yield calls
    finally:
        setattr(conv, name, real)


# Per path: (function conv2d must call, draw of (c, o, kh, kw, stride, dilation)).
PATHS = {
    "_winograd": st.tuples(st.integers(64, 72), st.integers(64, 72), st.just(3), st.just(3),
                           st.just(1), st.just(1)),
    "_out_taps": st.tuples(st.integers(8, 40), st.integers(1, 2), st.integers(1, 5), st.integers(1, 5),
                           st.just(1), st.integers(1, 2)),
    "_planar": st.tuples(st.integers(1, 8), st.integers(1, 20), st.integers(1, 7), st.integers(1, 7),
                         st.integers(1, 3), st.integers(1, 2)),
    "_row_taps": st.one_of(
        st.tuples(st.integers(9, 24), st.integers(1, 24), st.integers(1, 5), st.integers(1, 5),
                  st.just(1), st.integers(1, 2)),
        st.tuples(st.integers(9, 16), st.integers(1, 20), st.integers(5, 7), st.integers(1, 7),
                  st.integers(2, 3), st.integers(1, 2))),
    "_im2col": st.tuples(st.integers(9, 16), st.integers(1, 20), st.integers(1, 4), st.integers(1, 7),
                         st.integers(2, 3), st.integers(1, 2)),
}


@pytest.mark.parametrize("path", sorted(PATHS))
@settings(max_examples=50, deadline=None)
@given(data=st.data(), n=st.integers(1, 2), h=st.integers(1, 11), w=st.integers(1, 11),
       ph=st.integers(0, 4), pw=st.integers(0, 4), bias=st.booleans(), seed=seeds)
def test_conv2d_path_matches_definition(path, data, n, h, w, ph, pw, bias, seed):
    c, o, kh, kw, s, d = data.draw(PATHS[path])
    assume(not (kh == kw == 1 and ph == pw == 0))  # that is the 1x1 path
    if path == "_out_taps":
        assume(c >= 4 * o)
    if path in ("_planar", "_row_taps") and s == 1:
        assume(not (o <= 8 and c >= 4 * o))  # that is the output-taps path
    assume(h + 2 * ph >= d * (kh - 1) + 1 and w + 2 * pw >= d * (kw - 1) + 1)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    p = _layer(rng, o, c, kh, kw, bias)
    with _spy(path) as calls:
        out = conv.conv2d(x, p, stride=s, padding=(ph, pw), dilation=d)
    assert calls, f"{path} not taken"
    _close(out, _naive_conv(x, p["weight"], p.get("bias"), (s, s), (ph, pw), (d, d)))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 70),
       o=st.integers(1, 70), s=st.integers(1, 3), seed=seeds)
def test_conv2d_1x1_matches_definition(n, h, w, c, o, s, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    p = _layer(rng, o, c, 1, 1)
    _close(conv.conv2d(x, p, stride=s), _naive_conv(x, p["weight"], p["bias"], (s, s), (0, 0), (1, 1)))


@settings(max_examples=20, deadline=None)
@given(groups=st.integers(1, 4), cg=st.integers(1, 5), og=st.integers(1, 5), k=st.sampled_from([1, 3]),
       s=st.integers(1, 2), seed=seeds)
def test_grouped_conv_matches_definition(groups, cg, og, k, s, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 7, 6, groups * cg)).astype(np.float32)
    p = _layer(rng, groups * og, cg, k, k)
    out = conv.conv2d(x, p, stride=s, padding=k // 2, groups=groups)
    _close(out, _naive_conv(x, p["weight"], p["bias"], (s, s), (k // 2, k // 2), (1, 1), groups))


@settings(max_examples=20, deadline=None)
@given(act=st.sampled_from(["relu", "leaky"]), slope=st.floats(0.0, 1.0),
       shape=st.sampled_from([(8, 16, 1, 1, 1), (64, 64, 3, 3, 1), (40, 2, 3, 3, 1), (9, 12, 3, 3, 1),
                              (3, 20, 3, 3, 2)]), seed=seeds)
def test_fused_activation_equals_activation_after(act, slope, shape, seed):
    c, o, kh, kw, s = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 9, 8, c)).astype(np.float32)
    p = _layer(rng, o, c, kh, kw)
    plain = conv.conv2d(x, p, stride=s, padding=kh // 2).astype(np.float64)
    want = np.maximum(plain, 0) if act == "relu" else np.maximum(plain, plain * np.float32(slope))
    _close(conv.conv2d(x, p, stride=s, padding=kh // 2, act=act, slope=slope), want)


def test_non_contiguous_input_and_repeated_calls():
    """Views (a channel slice) and calls of other sizes in between (scratch reuse) are safe."""
    rng = np.random.default_rng(0)
    big = rng.standard_normal((1, 12, 10, 80)).astype(np.float32)
    p = _layer(rng, 64, 70, 3, 3)
    ref = _naive_conv(big[..., :70], p["weight"], p["bias"], (1, 1), (1, 1), (1, 1))
    first = conv.conv2d(big[..., :70], p, padding=1)
    conv.conv2d(rng.standard_normal((2, 30, 31, 70)).astype(np.float32), p, padding=1)
    _close(first, ref)
    _close(conv.conv2d(big[..., :70], p, padding=1), ref)


def test_threads_have_their_own_scratch():
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1, 20, 18, 64)).astype(np.float32) for _ in range(4)]
    p = _layer(rng, 64, 64, 3, 3)
    want = [conv.conv2d(x, p, padding=1) for x in xs]
    got = [None] * len(xs)

    def work(i):
        for _ in range(3):
            got[i] = conv.conv2d(xs[i], p, padding=1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 7), w=st.integers(1, 7), c=st.integers(1, 40),
       o=st.sampled_from([1, 2, 16, 33, 40]), k=st.integers(1, 5), s=st.integers(1, 3),
       data=st.data(), bias=st.booleans(), seed=seeds)
def test_conv_transpose2d_matches_definition(n, h, w, c, o, k, s, data, bias, seed):
    """Both layouts (O below and above the planes threshold), with output padding."""
    pad = data.draw(st.integers(0, k - 1))
    opad = data.draw(st.integers(0, s - 1))
    assume((h - 1) * s - 2 * pad + k + opad > 0 and (w - 1) * s - 2 * pad + k + opad > 0)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    p = {"weight": rng.standard_normal((c, o, k, k)).astype(np.float32)}
    if bias:
        p["bias"] = rng.standard_normal(o).astype(np.float32)
    out = conv_transpose.conv_transpose2d(x, p, stride=s, padding=pad, output_padding=opad)
    _close(out, _naive_conv_t(x, p["weight"], p.get("bias"), (s, s), (pad, pad), (opad, opad)))


def test_conv_transpose2d_fused_leaky():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 5, 6, 12)).astype(np.float32)
    p = {"weight": rng.standard_normal((12, 40, 4, 4)).astype(np.float32),
         "bias": rng.standard_normal(40).astype(np.float32)}
    plain = conv_transpose.conv_transpose2d(x, p, stride=2, padding=1)
    fused = conv_transpose.conv_transpose2d(x, p, stride=2, padding=1, act="leaky", slope=0.1)
    np.testing.assert_allclose(fused, np.maximum(plain, plain * np.float32(0.1)), rtol=1e-6)


def test_winograd_single_tile():
    """One 2x2 Winograd tile, no padding: the direct sum over the 4x4 input."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 4, 4, 64)).astype(np.float32)
    p = _layer(rng, 64, 64, 3, 3)
    out = conv.conv2d(x, p)  # one 2x2 Winograd tile, no padding
    _close(out, _naive_conv(x, p["weight"], p["bias"], (1, 1), (0, 0), (1, 1)))


@pytest.mark.parametrize("c, o, k, s", [(64, 64, 3, 1), (24, 2, 3, 1), (3, 16, 7, 2), (12, 20, 5, 1),
                                        (12, 20, 5, 2), (12, 20, 3, 2), (16, 24, 1, 1)])
def test_many_chunks_equal_one(monkeypatch, c, o, k, s):
    """Tiny chunk budgets split every path into many pieces (halos, phases, Winograd tile
    rows, odd last chunks): the result is the definition's."""
    monkeypatch.setattr(conv, "_MIN_ROWS", 1)
    monkeypatch.setattr(conv, "_CHUNK_BYTES", 1)
    monkeypatch.setattr(conv, "_WINO_BYTES", 1)
    monkeypatch.setattr(conv, "_WINO_MIN_TILES", 1)
    monkeypatch.setattr(conv, "_WINO_WHOLE_TILES", 0)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 13, 17, c)).astype(np.float32)
    p = _layer(rng, o, c, k, k)
    out = conv.conv2d(x, p, stride=s, padding=k // 2)
    _close(out, _naive_conv(x, p["weight"], p["bias"], (s, s), (k // 2, k // 2), (1, 1)))
