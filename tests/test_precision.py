"""`precision=` (issue 20): the argument on `create` and `--precision` on the commands, the
CPU's refusal of the GPU modes, TF32 products (the emulator's rounding, the CuPy
executor's own cuBLAS handle) and TF32 golden parity on the emulator."""
from __future__ import annotations

import ctypes
import sys
import types

import numpy as np
import pytest
from conftest import assert_parity, case_weights, fake_cupy, golden_case, golden_flow, load_frames, need_shared
from hypothesis import given, settings
from hypothesis import strategies as st

import cvflow
from cvflow.backends import GPU_DEFAULT_PRECISION, PRECISIONS, make_backend
from cvflow.backends.cuda import executor, gemm
from cvflow.backends.cuda.rounding import bf16_bits, bf16_float, round_tf32
from cvflow.cli import main
from cvflow.errors import DeviceError, InputError
from cvflow.models.base import REGISTRY, ModelDef, register
from cvflow.testing import cuda_emulator



def _shapes(config):
    return {"flow": (2,)}


def _forward(params, img0, img1, config, options, init_flow):
    return np.broadcast_to(params["flow"], img0.shape[:2] + (2,)).astype(np.float32)


@pytest.fixture(scope="module")
def toy():
    model = register(ModelDef(name="test-precision", family="test", config={}, param_shapes=_shapes,
                              forward=_forward, options={"iters": 1}))
    yield {"flow": np.array([1.0, 2.0], np.float32)}
    REGISTRY.pop(model.name, None)


# -- the argument ----------------------------------------------------------------------------

def test_cpu_runs_fp32_and_says_so(toy):
    for precision in (None, "fp32", "FP32"):
        of = cvflow.create("test-precision", weights=toy, device="cpu", precision=precision)
        assert of.precision == of.getPrecision() == "fp32"
        assert "fp32" not in repr(of)


@pytest.mark.parametrize("precision", ["tf32", "fp16", "bf16"])
def test_cpu_refuses_the_gpu_modes(toy, precision):
    with pytest.raises(InputError, match=rf"`precision` '{precision}' needs the CUDA backend: the CPU backend "
                                         r"computes in fp32 only \(device='cpu' allows precision='fp32' or None\)"):
        cvflow.create("test-precision", weights=toy, device="cpu", precision=precision)


@pytest.mark.parametrize("bad", ["fp64", "", 16, b"fp16"])
def test_unknown_precision_names_the_argument_and_the_modes(toy, bad):
    with pytest.raises(InputError, match=r"`precision` must be one of fp32, tf32, fp16, bf16 or None "
                                         rf"\(the device's default\), got {bad!r}"):
        cvflow.create("test-precision", weights=toy, device="cpu", precision=bad)
    with pytest.raises(InputError, match="`precision` must be one of"):  # before any device is looked for
        make_backend("cuda", precision=bad)


def test_gpu_default_and_cuda_modes(toy):
    assert GPU_DEFAULT_PRECISION in PRECISIONS
    with cuda_emulator() as emu:
        assert cvflow.create("test-precision", weights=toy, device="cuda").precision == GPU_DEFAULT_PRECISION
        of = cvflow.create("test-precision", weights=toy, device="cuda", precision="tf32")
        assert of.precision == "tf32" and "(tf32)" in repr(of)
        assert of._backend.ex.math == "tf32" and emu.math == "fp32"  # a view: the shared executor is untouched
        assert of._backend.ex.tracer is emu.tracer


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_backend_runs_half_storage(toy, precision):
    with cuda_emulator():
        of = cvflow.create("test-precision", weights=toy, device="cuda", precision=precision)
        assert of.precision == precision and f"({precision})" in repr(of)
        assert of._backend.storage == (np.float16 if precision == "fp16" else np.uint16)


def test_precision_on_the_command_line(tmp_path, toy, capsys, monkeypatch):
    frames = []
    for name in ("a.png", "b.png"):
        import cv2

        path = tmp_path / name
        cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
        frames.append(str(path))
    weights = tmp_path / "w.npz"
    np.savez(weights, flow=toy["flow"])
    seen = []
    real = cvflow.create
    monkeypatch.setattr(cvflow, "create", lambda *a, **k: seen.append(k["precision"]) or real(*a, **k))
    argv = ["flow", *frames, "-m", "test-precision", "--weights", str(weights), "--device", "cpu",
            "-o", str(tmp_path / "f.flo")]
    assert main(argv + ["--precision", "fp32"]) == 0 and seen == ["fp32"]
    assert main(argv + ["--precision", "tf32"]) == 2
    assert "`precision` 'tf32' needs the CUDA backend" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--precision", "fp64"])
    assert exc.value.code == 2 and "invalid choice: 'fp64'" in capsys.readouterr().err
    for command in ("flow", "video", "eval", "extract"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--precision {fp32,tf32,fp16,bf16}" in capsys.readouterr().out


def test_extract_settings_fingerprint_precision(toy):
    from cvflow.extraction import make_settings

    base, _ = make_settings("test-precision", toy)
    same, _ = make_settings("test-precision", toy, precision=None)
    tf32, _ = make_settings("test-precision", toy, precision="tf32")
    assert base["fingerprint"] == same["fingerprint"] != tf32["fingerprint"] and tf32["precision"] == "tf32"
    with pytest.raises(InputError, match="`precision` must be one of"):
        make_settings("test-precision", toy, precision="half")


# -- TF32 products -------------------------------------------------------------------------

def _tf32_reference(x):
    """Round to 10 mantissa bits, nearest even, in exact rational arithmetic (float64 holds
    every float32 exactly): the definition, independent of round_tf32's bit trick."""
    x = np.float64(x)
    if not np.isfinite(x) or x == 0:
        return np.float32(x)
    m, e = np.frexp(x)  # x = m * 2**e, 0.5 <= |m| < 1
    e = max(e, -125)    # subnormals keep the float32 subnormal step, 2**-149 (13 dropped bits: 2**-136)
    step = np.ldexp(1.0, e - 11)
    q = x / step
    r = np.round(q)     # NumPy rounds halves to even
    with np.errstate(over="ignore"):  # above float32's range: inf, as the device gives
        return np.float32(r * step)


@settings(max_examples=400, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=True))
def test_round_tf32_is_round_to_nearest_even(v):
    got = round_tf32(np.array([v], np.float32))[0]
    want = _tf32_reference(v)
    assert (got == want and np.signbit(got) == np.signbit(want)) or (np.isinf(want) and got == want)
    assert got.view(np.uint32) & np.uint32(0x1FFF) == 0 or not np.isfinite(got)


def test_round_tf32_ties_and_specials():
    one = np.float32(1.0)
    step = np.float32(2.0**-10)
    half = np.float32(2.0**-11)
    x = np.array([one + half, one + step + half, -(one + half), np.nan, np.inf, -np.inf,
                  np.finfo(np.float32).max], np.float32)
    got = round_tf32(x)
    assert got[0] == one and got[1] == one + 2 * step and got[2] == -one  # ties to even
    assert np.isnan(got[3]) and got[4] == np.inf and got[5] == -np.inf
    assert got[6] == np.inf  # above TF32's largest finite value: overflows, as on the device


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 40), st.integers(1, 9), st.integers(0, 2**31))
def test_emulator_tf32_product_is_fp32_product_of_rounded_operands(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    with cuda_emulator() as emu:
        tf = emu.with_math("tf32")
        got = emu.to_host(tf.matmul(emu.asarray(a), emu.asarray(b)))
        fp = emu.to_host(emu.matmul(emu.asarray(a), emu.asarray(b)))
    np.testing.assert_array_equal(got, np.matmul(round_tf32(a), round_tf32(b)))
    np.testing.assert_array_equal(fp, a @ b)


def test_tf32_products_inside_a_captured_graph_replay_in_tf32():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((6, 33)).astype(np.float32), rng.standard_normal((33, 5)).astype(np.float32)
    with cuda_emulator() as emu:
        tf = emu.with_math("tf32")
        da, db, out = emu.asarray(a), emu.asarray(b), emu.empty((6, 5))
        with tf.capture() as held:
            tf.matmul(da, db, out=out)
        held.graph.replay()
        got = emu.to_host(out)
    np.testing.assert_array_equal(got, np.matmul(round_tf32(a), round_tf32(b)))


# -- the CuPy executor's own handle, against a stand-in cuBLAS ---------------------------------

class _FakeCublas(types.ModuleType):
    """cupy_backends.cuda.libs.cublas on host memory: column-major sgemmStridedBatched
    (TF32 rounding when the handle's math mode says so); pointers are host addresses."""

    def __init__(self):
        super().__init__("cublas")
        self.modes, self.streams, self.calls = {}, {}, []

    def create(self):
        h = len(self.modes) + 1
        self.modes[h] = 0
        return h

    def setMathMode(self, h, mode):
        self.modes[h] = mode

    def setStream(self, h, s):
        self.streams[h] = s

    @staticmethod
    def _mat(ptr, trans, rows, cols, ld, stride, nb):
        """op(X) for the batch: X is (rows x cols) column-major, or its transpose stored."""
        r, c = (cols, rows) if trans else (rows, cols)
        size = (nb - 1) * stride + (c - 1) * ld + r
        buf = np.ctypeslib.as_array((ctypes.c_float * size).from_address(ptr))
        x = np.lib.stride_tricks.as_strided(buf, (nb, r, c), (stride * 4, 4, ld * 4))
        return x.transpose(0, 2, 1) if trans else x

    def gemmEx(self, h, ta, tb, m, n, k, alpha, A, atype, lda, B, btype, ldb, beta, C, ctype, ldc, compute, algo):
        assert atype == btype == ctype and compute == gemm.COMPUTE_32F and self.modes[h] == 0
        self.calls.append(("gemmEx", ta, tb, m, n, k, lda, ldb, ldc, atype))
        dt = np.float16 if atype == gemm.R_16F else np.uint16

        def mat(ptr, trans, rows, cols, ld):
            r, c = (cols, rows) if trans else (rows, cols)
            buf = np.ctypeslib.as_array((ctypes.c_uint16 * ((c - 1) * ld + r)).from_address(ptr)).view(dt)
            x = np.lib.stride_tricks.as_strided(buf, (r, c), (2, ld * 2))
            return x.T if trans else x

        wide = [x.astype(np.float32) if dt == np.float16 else bf16_float(x)
                for x in (mat(A, ta, m, k, lda), mat(B, tb, k, n, ldb))]
        res = np.ctypeslib.as_array(ctypes.c_float.from_address(alpha), ()) * np.matmul(*wide)
        c = mat(C, 0, m, n, ldc)
        c[...] = res.astype(np.float16) if dt == np.float16 else bf16_bits(res)

    def sgemmStridedBatched(self, h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, nb):
        self.calls.append((ta, tb, m, n, k, lda, sa, ldb, sb, ldc, sc, nb))
        a = self._mat(A, ta, m, k, lda, sa, nb).copy()
        b = self._mat(B, tb, k, n, ldb, sb, nb).copy()
        if self.modes[h] == gemm.TF32_TENSOR_OP_MATH:
            a, b = round_tf32(a), round_tf32(b)
        c = self._mat(C, 0, m, n, ldc, sc, nb)
        c[...] = alpha * np.matmul(a, b)


@pytest.fixture()
def fake_cublas(monkeypatch):
    lib = _FakeCublas()
    cp = fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    monkeypatch.setattr(executor, "_CUPY", {})
    monkeypatch.setattr(gemm, "_cublas", lambda: lib)
    monkeypatch.setattr(gemm, "_ptr", lambda x: x.ctypes.data)
    return lib


@pytest.mark.parametrize("shapes", [  # logical shapes of a and b, and how each is laid out
    ((7, 5), (5, 3), "", ""),
    ((7, 5), (5, 3), "", "T"),          # b a transposed view (k_corr's f2^T)
    ((7, 5), (5, 3), "T", ""),
    ((2, 7, 5), (2, 5, 3), "", "T"),    # batched, b transposed
    ((2, 7, 5), (5, 3), "", ""),        # b broadcast over the batch: stride 0
    ((1, 5), (5, 1), "", ""),
    ((4, 5), (5, 6), "S", ""),          # neither axis unit-stride: copied
])
def test_cupy_tf32_products_on_the_executors_own_handle(fake_cublas, shapes):
    sa, sb, ta, tb = shapes
    rng = np.random.default_rng(0)

    def make(shape, how):
        if how == "T":
            return np.ascontiguousarray(rng.standard_normal(shape[:-2] + shape[-2:][::-1]).astype(np.float32)) \
                .swapaxes(-1, -2)
        if how == "S":
            return rng.standard_normal(shape[:-1] + (shape[-1] * 2,)).astype(np.float32)[..., ::2]
        return rng.standard_normal(shape).astype(np.float32)

    a, b = make(sa, ta), make(sb, tb)
    assert a.shape == sa and b.shape == sb
    ex = executor.get_executor(0)
    fp32 = ex.matmul(a, b)
    np.testing.assert_array_equal(fp32, np.matmul(a, b))  # fp32: CuPy's matmul, untouched
    assert not fake_cublas.calls
    tf = ex.with_math("tf32")
    got = tf.matmul(a, b)
    np.testing.assert_allclose(got, np.matmul(round_tf32(a), round_tf32(b)), rtol=1e-6, atol=1e-6)
    assert len(fake_cublas.calls) == 1 and fake_cublas.streams == {1: 77}
    out = np.empty(got.shape, np.float32)
    assert tf.matmul(a, b, out=out) is out and len(fake_cublas.modes) == 1  # one handle, kept
    np.testing.assert_array_equal(out, got)
    assert ex.math == "fp32" and tf._cublas is ex._cublas


def _half(x, dt):
    return x.astype(np.float16) if dt == np.float16 else bf16_bits(x)


def _wide(x):
    return x.astype(np.float32) if x.dtype == np.float16 else bf16_float(x)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2), st.integers(1, 7), st.integers(1, 30), st.integers(1, 7),
       st.sampled_from([np.float16, np.uint16]), st.booleans(), st.integers(0, 2**31))
def test_half_products_accumulate_in_fp32(nb, m, k, n, dt, transposed, seed):
    """Half storage (float16; uint16 bfloat16 bits): the emulator's product is the fp32
    product of the stored values, rounded once; the CuPy executor's GemmEx gives the same."""
    rng = np.random.default_rng(seed)
    a = _half(rng.standard_normal((nb, m, k)).astype(np.float32), dt)
    b = _half(rng.standard_normal((nb, k, n)).astype(np.float32), dt)
    if transposed:
        b = np.ascontiguousarray(b.swapaxes(-1, -2)).swapaxes(-1, -2)
    want = _half(np.matmul(_wide(a), _wide(b)), dt)
    with cuda_emulator() as emu:
        for math in ("fp32", "tf32"):  # TF32 is about float32 operands: half products are the same
            got = emu.to_host(emu.with_math(math).matmul(emu.asarray(a, dt), emu.asarray(b, dt)))
            assert got.dtype == dt
            np.testing.assert_array_equal(got, want)
    assert want.dtype == dt


def test_cupy_half_products_on_gemm_ex(fake_cublas):
    rng = np.random.default_rng(5)
    ex = executor.get_executor(0)
    for dt in (np.float16, np.uint16):
        a = _half(rng.standard_normal((2, 6, 9)).astype(np.float32), dt)
        b = np.ascontiguousarray(_half(rng.standard_normal((2, 4, 9)).astype(np.float32), dt)).swapaxes(-1, -2)
        got = ex.matmul(a, b)
        assert got.dtype == dt
        np.testing.assert_array_equal(got, _half(np.matmul(_wide(a), _wide(b)), dt))
    calls = [c for c in fake_cublas.calls if c[0] == "gemmEx"]
    assert len(calls) == 4 and {c[-1] for c in calls} == {gemm.R_16F, gemm.R_16BF}
    with pytest.raises(DeviceError, match=r"matmul's operands must share one storage type, got float16 and "
                                          r"float32"):
        ex.matmul(np.ones((2, 2), np.float16), np.ones((2, 2), np.float32))


def test_cupy_tf32_product_errors(fake_cublas):
    tf = executor.get_executor(0).with_math("tf32")
    a, b = np.ones((3, 4), np.float32), np.ones((4, 2), np.float32)
    with pytest.raises(DeviceError, match=r"matmul: `out` must be C-contiguous float32 \(3, 2\), got \(2, 3\)"):
        tf.matmul(a, b, out=np.empty((2, 3), np.float32))
    with pytest.raises(DeviceError, match=r"matmul: inner dimensions differ, a \(3, 4\) and b \(3, 2\)"):
        tf.matmul(a, np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(tf.matmul(a.astype(np.float64), b), a @ b)  # float64: no TF32 mode


# -- golden parity in TF32 on the emulator ---------------------------------------------------

# TF32 golden bars (README "Precision"), every model name's golden crop (the fp32 suite,
# tests/test_cuda_golden.py, runs every case, the full-frame ones too): (mean, max) px from the authors' fp32 output,
# twice the difference the emulator's TF32 pass measured (bench/precision_accuracy.py,
# README table), rounded up to 1, 2 or 5 x 10^k. The synthetic-weight RAFT is chaotic
# (its updates amplify any rounding), so its bar only catches gross errors.
TF32_BARS = {
    ("raft", "raft-small_sintel_crop_0018_it4"): (2e-3, 1e-2),    # measured 6.3e-4 / 4.9e-3
    ("raft", "raft_synth1_sintel_crop_0016_it6"): (1.0, 20.0),    # 0.37 / 5.4
    ("flownet2", "flownet2-s_synth12_sintel_crop"): (1e-2, 5e-2),  # 2.7e-3 / 2.3e-2
    ("gmflow", "gmflow_synth21_sintel_crop"): (1e-1, 2e-1),        # 4.2e-2 / 7.2e-2
    ("searaft", "searaft-s_synth31_sintel_crop"): (5e-3, 2e-2),    # 1.2e-3 / 9.9e-3
    ("neuflow2", "neuflow2_synth41_sintel_crop"): (2e-1, 1.0),     # 5.2e-2 / 0.35
    ("searaft", "searaft-m_synth32_sintel_crop"): (5e-3, 5e-2),    # 2.1e-3 / 1.1e-2
    ("flownet2", "flownet2-c_synth11_sintel_crop"): (5e-3, 5e-2),  # 2.5e-3 / 1.5e-2
    ("flownet2", "flownet2-sd_synth13_sintel_crop"): (1e-2, 1e-1),  # 4.2e-3 / 3.7e-2
    ("flownet2", "flownet2-css_synth14_sintel_crop"): (2e-2, 2e-1),  # 8.1e-3 / 8.0e-2
    ("flownet2", "flownet2_synth15_sintel_crop"): (2e-2, 5e-1),    # 1.0e-2 / 0.16
    ("gmflow", "gmflow-refine_synth22_sintel_crop"): (5e-1, 2.0),  # 0.11 / 0.62
}
_TF32_SLOW = ("searaft-m_synth32_sintel_crop",)  # over 30 s here (34 s of CPU, 2-core VM)
TF32_CASES = [pytest.param(f, n, id=n, marks=[pytest.mark.slow] if n in _TF32_SLOW else []) for f, n in TF32_BARS]


@pytest.mark.parametrize("family,name", TF32_CASES)
def test_tf32_golden_parity_on_the_emulator(family, name):
    """TF32 moves the flow by rounding only: within the TF32 bar of the golden output,
    and different from the fp32 pass (the products really ran in TF32)."""
    need_shared()
    case = golden_case(family, name)
    frame0, frame1 = load_frames(case)
    options = {k: case[k] for k in ("iters", "iters_s16", "iters_s8") if k in case}
    with cuda_emulator():
        of = cvflow.create(case["model"], weights=case_weights(family, case), device="cuda", precision="tf32",
                           **options)
        flow = of.calc(frame0, frame1, None)
    want = golden_flow(family, case)
    assert_parity(flow, want, *TF32_BARS[family, name])
    assert np.abs(flow - want).max() > 1e-4
