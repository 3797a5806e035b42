"""2-D convolution on NHWC activations.

Weights keep PyTorch's layout (O, I/groups, kh, kw). Every path is a few large matrix
products fed by copies sized to stay in cache; zero padding is written into those
copies, never materialised as a padded input. With several threads, each takes whole
chunks (copy, product at one BLAS thread, bias and activation: `cvflow.ops.parallel`),
at least one per thread. Paths, in the order `conv2d` picks them:

- 1x1: the input is already the matrix.
- 3x3, stride 1, C and O >= 64: Winograd F(2x2, 3x3) (`conv_winograd`), 16 products
  per 2x2 outputs instead of 36. (F(4x4, 3x3) took 22% less CPU in RAFT-small, but its
  ~20x float32 rounding moved RAFT's and NeuFlow's 1e-4 px consistency checks.)
- stride 1, O <= 8 and O <= C/4 (flow heads): "output taps". One product per input
  pixel gives every tap's contribution, each then added at its shift.
- C <= 8 (frames, flows): im2col from channel planes, one copy per tap of whole
  output rows (`_planar`).
- stride 1, or kernels of 5+ rows: "row taps". Each chunk of output rows copies, per
  input row, the kw taps of every output column side by side (kw*C values); kernel
  row i is then a contiguous slab of that buffer (of the rows of its phase, when
  strided), so kh products sum the kernel rows without a kh-fold copy.
- otherwise (3x3 strided): im2col per chunk of output rows, kh*kw*C values per output
  pixel, one product.
Transposed convolution: `cvflow.ops.conv_transpose`.
"""
from __future__ import annotations

import threading

from cvflow.arrays import get_xp
from cvflow.ops import arena
from cvflow.ops import conv_winograd as wino
from cvflow.ops.im2col import fill as _fill, span as _span
from cvflow.ops.act import leaky_relu_, relu_
from cvflow.ops.parallel import map_spans, pooled_products, run, workers
from cvflow.ops.parallel import SPLIT_MACS as _SPLIT_MACS
from cvflow.ops.parallel import matmul as pooled_matmul

# Bytes of copied input per chunk: L2/L3-resident, yet enough rows for an efficient product.
_CHUNK_BYTES = 2 << 20
# Frames and flows (C <= 8): kh*kw copies of a few planes per chunk, each a NumPy call
# that re-takes the GIL (see cvflow.ops.parallel.CHUNK): larger chunks, fewer calls.
_PLANAR_BYTES = 8 << 20
_WINO_BYTES = 4 << 20
# Matrix rows per product (at least). Every BLAS call hands its work to OpenBLAS's threads,
# and on a loaded VM that hand-off costs ~0.1 ms: few, large products keep it negligible
# (RAFT-small, 440x1024: 6,474 products per pair at 1024 rows and 256-tile Winograd
# chunks, 1,475 with these minimums and whole 1/8-resolution maps per Winograd product;
# 2.1-2.9 s -> 1.6-2.0 s in a slow spell, the same when the machine is quiet).
_MIN_ROWS = 4096
# Outputs up to which a product per input pixel beats row taps (when C >= 4*O).
_NARROW_MAX = 8
_WINO_MIN_TILES = 256  # tiles per Winograd product, when chunked
# Maps of up to this many 2x2 tiles go in one chunk (16 products per conv: see _MIN_ROWS).
# Chunking larger maps by _WINO_BYTES stays faster (2x220x512x64: 106 ms vs 139 in one
# 2048-tile chunks); single chunks win on small maps (55x128x82->288: 15.6 vs 17.1 ms).
_WINO_WHOLE_TILES = 4096
_WINO_MIN_CHANNELS = 64  # min(C, O) from which Winograd beats row taps (measured)
_PLANAR_MAX = 8  # input channels up to which im2col from channel planes wins (frames, flows)
_ROW_TAPS_MIN_KH = 5  # strided convs: kernel rows from which row taps beat im2col (measured)

_LOCAL = threading.local()  # per-thread scratch buffers, reused across calls
_ALL_BUFS: list = []  # every thread's scratch dict (the pool's threads have their own)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _scratch(xp, n, slot, dtype):
    """A reusable flat buffer of n elements, one per slot and thread, grown on demand.
    A slot holds the largest chunk seen (a few MB by the budgets above; tens of MB for
    the widest layers), so calls skip fresh page faults without holding whole images."""
    bufs = _LOCAL.__dict__.get("bufs")
    if bufs is None:
        bufs = _LOCAL.bufs = {}
        _ALL_BUFS.append(bufs)
    key = (xp.__name__, slot, dtype)
    buf = bufs.get(key)
    if buf is None or buf.size < n:
        buf = bufs[key] = xp.empty(max(n, 1), dtype)
    return buf[:n]


def release_scratch():
    """Drop the scratch buffers of every thread (this one's and the pool's; they are
    re-made, smaller or larger, on demand). Not to be called during a pass."""
    for bufs in list(_ALL_BUFS):
        bufs.clear()


def _jobs(n_rows, step, macs):
    """[(a, b), ...]: runs of `step` rows of one image; when products run in the pool
    (`cvflow.ops.parallel.run(..., blas_one=True)`) and the image's `macs` (multiply-adds)
    are worth a hand-off, at least one run per thread. BLAS rounds differently for other
    product shapes: runs depend on the image alone (and the threads), never on the batch,
    so an image gives the same numbers in any batch (calcBidirectional's == calc's)."""
    if macs >= _SPLIT_MACS and pooled_products():
        step = min(step, -(-n_rows // workers()))
    step = max(1, step)
    return [(a, min(n_rows, a + step)) for a in range(0, n_rows, step)]


def weight_matrix(w):
    """(O, I, kh, kw) conv weight -> (kh*kw*I, O) matrix matching NHWC im2col."""
    xp = get_xp(w)
    o = w.shape[0]
    return xp.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(-1, o))


def _cached(p, key, make):
    # Derived once per weight (cached on the layer's dict), never recomputed per call.
    m = p.get(key)
    if m is None:
        m = p[key] = make(p["weight"])
    return m


def _finish(res, bias, act, slope):
    """Bias and activation in place on a C-contiguous output chunk (..., O), while it is
    in cache. LeakyReLU is max(x, slope*x), for 0 <= slope <= 1."""
    if bias is not None:
        res += bias
    if act == "relu":
        relu_(res)  # the shared in-place ReLU (cv2.threshold on NumPy float32)
    elif act == "leaky":
        leaky_relu_(res, slope)  # the shared in-place LeakyReLU (cache-sized pieces)


def conv2d(x, p, stride=1, padding=0, dilation=1, groups=1, act=None, slope=0.1):
    """Convolution (cross-correlation, as PyTorch) with zero padding.

    x: (N, H, W, C) float32. p: {"weight": (O, C/groups, kh, kw), "bias": (O,) optional}.
    act: None, "relu" or "leaky" (LeakyReLU with `slope`), applied after the bias.
    Returns (N, Ho, Wo, O) with Ho = (H + 2*ph - dh*(kh-1) - 1) // sh + 1.
    """
    xp = get_xp(x)
    if groups != 1:
        return _grouped(x, p, stride, padding, dilation, groups, act, slope)
    o, c, kh, kw = p["weight"].shape
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    n, h, wd, _ = x.shape
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    bias = p.get("bias")
    out = arena.empty(xp, (n, ho, wo, o), x.dtype)
    if kh == kw == 1 and ph == pw == 0:
        # any layout BLAS takes as it is (a channels-outermost view: transposed operand)
        xs = (x[:, ::sh, ::sw] if sh > 1 or sw > 1 else x).reshape(-1, c)
        res, mat = out.reshape(-1, o), _cached(p, "_mat", weight_matrix)
        step = max(_MIN_ROWS, _CHUNK_BYTES // ((c + o) * x.itemsize))

        def piece(ab):  # in pieces: bias and act while in cache
            a, b = ab
            xp.matmul(xs[a:b], mat, out=res[a:b])
            _finish(res[a:b], bias, act, slope)

        per = res.shape[0] // n
        run(piece, [(b * per + i, b * per + j) for b in range(n) for i, j in _jobs(per, step, per * o * c)],
            xp, blas_one=True)
        return out
    x = xp.ascontiguousarray(x)  # the copies below read each kw*C run of a row as one block
    if kh == kw == 3 and sh == sw == dh == dw == 1 and min(c, o) >= _WINO_MIN_CHANNELS:
        _winograd(x, p, ph, pw, out, act, slope)
    elif sh == sw == 1 and o <= _NARROW_MAX and c >= 4 * o:
        _out_taps(x, p, ph, pw, (dh, dw), out, act, slope)
    elif c <= _PLANAR_MAX:
        _planar(x, p, (sh, sw), ph, pw, (dh, dw), out, act, slope)
    elif sh == 1 or kh >= _ROW_TAPS_MIN_KH:
        _row_taps(x, p, (sh, sw), ph, pw, (dh, dw), out, act, slope)
    else:
        _im2col(x, p, (sh, sw), ph, pw, (dh, dw), out, act, slope)
    return out


def _setup(x, p, out):
    """What every path starts from: xp, C, Ho, Wo, O, kh, kw, the weight matrix, the bias."""
    kh, kw = p["weight"].shape[2:]
    _, ho, wo, o = out.shape
    return get_xp(x), x.shape[-1], ho, wo, o, kh, kw, _cached(p, "_mat", weight_matrix), p.get("bias")


def _chunk_rows(n_rows, row_bytes, row_len, budget, min_len=None):
    """Rows per chunk: within `budget` bytes, but at least `min_len` matrix rows."""
    min_len = _MIN_ROWS if min_len is None else min_len
    rows = max(budget // max(1, row_bytes), -(-min_len // max(1, row_len)))
    return max(1, min(n_rows, rows))


def _im2col(x, p, stride, ph, pw, dilation, out, act, slope):
    """Any stride/dilation: per chunk of output rows, cols[r, c] = the kh*kw*C inputs of
    output (r, c), then one product with the (kh*kw*C, O) weight matrix."""
    xp, c, ho, wo, o, kh, kw, mat, bias = _setup(x, p, out)
    (sh, sw), (dh, dw) = stride, dilation
    k = kh * kw * c
    rows = _chunk_rows(ho, wo * k * x.itemsize, wo, _CHUNK_BYTES)

    def chunk(job):
        b, (r0, r1) = job
        m = r1 - r0
        cols = _scratch(xp, m * wo * k, "cols", x.dtype).reshape(m, wo, kh, kw, c)
        _fill(cols, x[b], r0 * sh - ph, sh, dh, sw, dw, pw)
        res = out[b, r0:r1].reshape(-1, o)
        xp.matmul(cols.reshape(m * wo, k), mat, out=res)
        _finish(res, bias, act, slope)

    run(chunk, [(b, j) for b in range(len(x)) for j in _jobs(ho, rows, out[0].size * kh * kw * c)], xp, blas_one=True)


def _row_taps(x, p, stride, ph, pw, dilation, out, act, slope):
    """taps[t, c] = the kw inputs of output column c on input row t; output row r sums,
    over kernel rows i, taps[r*sh + i*dh] @ W[i] (kh products per chunk). With row
    stride sh the taps are kept per input-row phase (t mod sh), so that every kernel
    row reads a contiguous slab: each input row is copied once, not kh/sh times."""
    xp, c, ho, wo, o, kh, kw, mat, bias = _setup(x, p, out)
    (sh, sw), (dh, dw) = stride, dilation
    k = kw * c
    # kernel row i reads phase (i*dh) % sh, at offset (i*dh) // sh rows down that phase
    where = [((i * dh) % sh, (i * dh) // sh) for i in range(kh)]
    depth = {q: max(d for qq, d in where if qq == q) for q, _ in where}  # extra rows per phase
    rows = _chunk_rows(ho, wo * k * x.itemsize * len(depth), wo, _CHUNK_BYTES)

    def chunk(job):
        b, (r0, r1) = job
        m = r1 - r0
        tmp = _scratch(xp, m * wo * o, "part", x.dtype).reshape(-1, o) if kh > 1 else None
        flats = {}
        for q, extra in depth.items():
            taps = _scratch(xp, (m + extra) * wo * k, f"taps{q}", x.dtype).reshape(m + extra, wo, 1, kw, c)
            _fill(taps, x[b], r0 * sh - ph + q, sh, 0, sw, dw, pw)
            flats[q] = taps.reshape(-1, k)
        res = out[b, r0:r1].reshape(-1, o)
        for i, (q, d) in enumerate(where):
            dst = res if i == 0 else tmp
            xp.matmul(flats[q][d * wo:(d + m) * wo], mat[i * k:(i + 1) * k], out=dst)
            if i:
                res += dst
        _finish(res, bias, act, slope)

    run(chunk, [(b, j) for b in range(len(x)) for j in _jobs(ho, rows, out[0].size * kh * kw * c)], xp, blas_one=True)


def _planar(x, p, stride, ph, pw, dilation, out, act, slope):
    """Few input channels (frames, flows): im2col from channel planes. The zero-padded
    input is split once into planes (C, row phase, column phase, rows, columns), so
    the column matrix of each chunk - one row per (tap, channel), one column per output
    pixel - is built from contiguous runs of whole output rows, C planes per copy; it
    enters the product transposed, (pixels, kh*kw*C) @ (kh*kw*C, O)."""
    xp, c, ho, wo, o, kh, kw, mat, bias = _setup(x, p, out)
    n, h, wd = x.shape[:3]
    (sh, sw), (dh, dw) = stride, dilation
    k = kh * kw * c
    hs, ws = -(-(h + 2 * ph) // sh), -(-(wd + 2 * pw) // sw)  # rows, columns per phase
    padded = _scratch(xp, c * hs * sh * ws * sw, "planar_in", x.dtype).reshape(c, hs * sh, ws * sw)
    phases = _scratch(xp, padded.size, "planar_ph", x.dtype).reshape(c, sh, sw, hs, ws)
    rows = _chunk_rows(ho, wo * k * x.itemsize, wo, _PLANAR_BYTES)
    taps = [((i * dh) % sh, (j * dw) % sw, (i * dh) // sh, (j * dw) // sw) for i in range(kh) for j in range(kw)]

    def chunk(job, b):
        r0, r1 = job
        m = r1 - r0
        cm = _scratch(xp, k * m * wo, "planar_cols", x.dtype).reshape(kh * kw, c, m, wo)
        for t, (qy, qx, oy, ox) in enumerate(taps):
            cm[t] = phases[:, qy, qx, r0 + oy:r0 + oy + m, ox:ox + wo]
        res = out[b, r0:r1].reshape(-1, o)
        xp.matmul(cm.reshape(k, m * wo).T, mat, out=res)
        _finish(res, bias, act, slope)

    for b in range(n):
        padded[...] = 0
        padded[:, ph:ph + h, pw:pw + wd] = x[b].transpose(2, 0, 1)
        phases[...] = padded.reshape(c, hs, sh, ws, sw).transpose(0, 2, 4, 1, 3)
        run(lambda job: chunk(job, b), _jobs(ho, rows, out[0].size * k), xp, blas_one=True)


def _out_taps(x, p, ph, pw, dilation, out, act, slope):
    """Stride 1, few outputs, many inputs (flow heads): one product per input pixel gives
    every tap's contribution, taps = W (kh*kw*O, C) @ x^T, each tap a (rows, W) plane;
    output (r, c) then sums taps[i, j][r + i*dh - ph, c + j*dw - pw] (long row runs)."""
    xp = get_xp(x)
    n, h, wd, c = x.shape
    _, ho, wo, o = out.shape
    kh, kw = p["weight"].shape[2:]
    dh, dw = dilation
    tmat = _cached(p, "_omat_t", lambda w: xp.ascontiguousarray(w.transpose(2, 3, 0, 1).reshape(-1, c)))
    bias = p.get("bias")
    k = kh * kw * o
    halo = (kh - 1) * dh
    rows = _chunk_rows(ho, wd * (k + o) * x.itemsize, wd, _CHUNK_BYTES)

    def chunk(job):
        b, (r0, r1) = job
        m = r1 - r0
        planes = _scratch(xp, o * m * wo, "out_acc", x.dtype).reshape(o, m, wo)
        planes[...] = 0
        ya, yb = max(0, r0 - ph), min(h, r0 + m + halo - ph)  # input rows this chunk reads
        if yb > ya:
            taps = _scratch(xp, k * (yb - ya) * wd, "out_taps", x.dtype).reshape(kh, kw, o, yb - ya, wd)
            xp.matmul(tmat, x[b, ya:yb].reshape(-1, c).T, out=taps.reshape(k, -1))
        for i in range(kh):
            off = r0 + i * dh - ph - ya  # chunk row t reads taps row t + off
            ra, rb = _span(m, yb - ya, 1, off)
            for j in range(kw if rb > ra else 0):
                ca, cb = _span(wo, wd, 1, j * dw - pw)
                if cb > ca:
                    x0 = ca + j * dw - pw
                    planes[:, ra:rb, ca:cb] += taps[i, j, :, ra + off:rb + off, x0:x0 + cb - ca]
        res = out[b, r0:r1]
        res[...] = planes.transpose(1, 2, 0)
        _finish(res, bias, act, slope)

    run(chunk, [(b, j) for b in range(n) for j in _jobs(ho, rows, out[0].size * kh * kw * c)], xp, blas_one=True)


def _winograd(x, p, ph, pw, out, act, slope):
    """3x3 stride 1 by Winograd F(2x2, 3x3), in chunks of tile rows."""
    xp = get_xp(x)
    n, _, _, c = x.shape
    _, ho, wo, o = out.shape
    u, bias = _cached(p, "_wino", wino.weights), p.get("bias")
    th, tw = -(-ho // 2), -(-wo // 2)
    wp = 2 * tw + 2
    if th * tw <= _WINO_WHOLE_TILES:
        rows = th
    else:
        rows = _chunk_rows(th, 16 * tw * (c + o) * x.itemsize, tw, _WINO_BYTES, _WINO_MIN_TILES)

    def chunk(job):
        # A whole chunk in one thread: with several threads each takes its own chunks
        # (at least one per thread), products included at one BLAS thread each; alone,
        # the passes below still go to the pool in pieces and the products by shares.
        b, (t0, t1) = job
        m = t1 - t0
        d = _scratch(xp, (2 * m + 2) * wp * c, "wino_in", x.dtype).reshape(2 * m + 2, wp, c)
        rm = _scratch(xp, 4 * m * wp * c, "wino_rows", x.dtype).reshape(4, m, wp, c)
        vm = _scratch(xp, 16 * m * tw * c, "wino_v", x.dtype).reshape(16, m, tw, c)
        # The copies and transforms around the products are memory-bound NumPy passes, in
        # cache-sized pieces of tile rows (spread over the pool when not in it already).
        map_spans(lambda i0, i1: _fill(d[i0:i1].reshape(i1 - i0, wp, 1, 1, c), x[b], 2 * t0 - ph + i0,
                                       1, 0, 1, 1, pw), 2 * m + 2, wp * c, xp)
        map_spans(lambda a, e: wino.in_transform(d[2 * a:2 * e + 2], rm[:, a:e], vm[:, a:e]),
                  m, 20 * tw * c, xp)
        pm = _scratch(xp, 16 * m * tw * o, "wino_prod", x.dtype).reshape(16, m * tw, o)
        pooled_matmul(vm.reshape(16, m * tw, c), u, out=pm)
        if bias is not None:
            pm[5] += bias
        ym = _scratch(xp, 4 * m * tw * o, "wino_out", x.dtype).reshape(4, m, tw, o)
        wino.out_transform(pm.reshape(16, m, tw, o), ym)
        res = out[b, 2 * t0:min(ho, 2 * t1)]

        def place(a, e):
            wino.scatter(ym[:, a:e], res[2 * a:2 * e])
            _finish(res[2 * a:2 * e], None, act, slope)

        map_spans(place, m, 8 * tw * o, xp)

    run(chunk, [(b, j) for b in range(n) for j in _jobs(th, rows, 4 * out[0].size * c)], xp, blas_one=True)


def _grouped(x, p, stride, padding, dilation, groups, act, slope):
    xp = get_xp(x)
    w, bias = p["weight"], p.get("bias")
    og, cg = w.shape[0] // groups, x.shape[-1] // groups
    parts = []
    for g in range(groups):
        pg = {"weight": w[g * og:(g + 1) * og]}
        if bias is not None:
            pg["bias"] = bias[g * og:(g + 1) * og]
        xg = xp.ascontiguousarray(x[..., g * cg:(g + 1) * cg])
        parts.append(conv2d(xg, pg, stride, padding, dilation, act=act, slope=slope))
    return arena.concatenate(parts, axis=-1)
