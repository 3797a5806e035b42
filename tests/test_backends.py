"""The backend seam: device choice at create(), what a backend owns (prepared layers,
workspace, per-pass memos), and that the user's weights are never written."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import HAVE_GPU

import cvflow
from cvflow.backends import backend_of
from cvflow.backends.base import Backend, Params
from cvflow.backends.cpu import CPUBackend
from cvflow.models.base import REGISTRY
from cvflow.testing import cuda_emulator


def _weights(name, seed=0):
    cvflow.list_models()
    model = REGISTRY[name]
    rng = np.random.default_rng(seed)
    return {k: (0.05 * rng.standard_normal(s)).astype(np.float32) for k, s in model.param_shapes(model.config).items()}


def _pair(h=40, w=56):
    a = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return a, np.roll(a, 2, axis=1)


@pytest.mark.skipif(HAVE_GPU, reason="a CUDA device is present")
def test_cuda_without_a_device_raises_device_error():
    with pytest.raises(cvflow.DeviceError, match=r"device='cuda' needs (CuPy|a CUDA device)"):
        cvflow.create("raft-small", weights=_weights("raft-small"), device="cuda")


@pytest.mark.skipif(HAVE_GPU, reason="a CUDA device is present")
def test_auto_is_the_cpu_without_a_device_even_under_the_emulator():
    assert cvflow.create("flownet2-s", weights=_weights("flownet2-s"), device="auto").device == "cpu"
    with cuda_emulator():  # the emulator is a test hook for device="cuda", never picked by "auto"
        assert cvflow.create("flownet2-s", weights=_weights("flownet2-s"), device="auto").device == "cpu"


def test_emulator_hook_builds_the_cuda_backend():
    with cuda_emulator() as ex:
        of = cvflow.create("flownet2-s", weights=_weights("flownet2-s"), device="cuda")
    assert of.device == "cuda" and of._backend.ex is ex and isinstance(of._params, Params)
    assert "on cuda" in repr(of)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_callers_weights_are_never_written(device):
    weights = _weights("raft-small")
    copies = {k: v.copy() for k, v in weights.items()}
    with cuda_emulator():
        of = cvflow.create("raft-small", weights=weights, device=device, iters=2)
        of.calc(*_pair(), None)
    assert set(weights) == set(copies)
    assert all(np.array_equal(weights[k], copies[k]) for k in copies)
    assert of._backend.prepared_count > 0


def test_collect_garbage_releases_the_backends_workspace():
    calls = []

    class Spy(CPUBackend):
        def release(self):
            calls.append(True)
            super().release()

    of = cvflow.create("flownet2-s", weights=_weights("flownet2-s"), device="cpu")
    of._backend.__class__ = Spy
    of.collectGarbage()
    assert calls and of._backend.arena.nbytes == 0


def test_memos_live_for_one_pass():
    be = CPUBackend()
    with be.workspace():
        be.memo()["k"] = 1
        assert be.memo() == {"k": 1}
    assert be.memo() == {}


def test_prepared_and_constants_are_made_once():
    be, made = CPUBackend(), []
    layer = {"weight": np.ones((2, 2, 1, 1), np.float32)}
    for _ in range(3):
        assert be.prepared(layer, "t", lambda: made.append(1) or "derived") == "derived"
        assert be.const(("c", 3), lambda: made.append(2) or "constant") == "constant"
    assert made == [1, 2] and be.prepared_count == 1


def test_backend_of_a_plain_dict_is_a_cpu_backend():
    assert isinstance(backend_of({}), CPUBackend)
    be = CPUBackend()
    assert backend_of(be) is be
    placed = be.place({"a.b.weight": np.zeros((2, 3))})
    assert backend_of(placed) is be and placed["a"]["b"]["weight"].dtype == np.float32


def test_cpu_and_emulated_cuda_backends_agree_op_by_op():
    """The same generic op (the GRU cell with its fused head) on both backends."""
    rng = np.random.default_rng(0)
    p = {f"conv{g}": {"weight": 0.1 * rng.standard_normal((4, 9, 3, 3)).astype(np.float32),
                      "bias": 0.1 * rng.standard_normal(4).astype(np.float32)} for g in "zrq"}
    head = {f"conv{i}": {"weight": 0.1 * rng.standard_normal((o, c, 3, 3)).astype(np.float32),
                         "bias": 0.1 * rng.standard_normal(o).astype(np.float32)}
            for i, (o, c) in ((1, (6, 4)), (2, (2, 6)))}
    h = np.tanh(rng.standard_normal((1, 5, 7, 4))).astype(np.float32)
    ctx, mot = (rng.standard_normal((1, 5, 7, c)).astype(np.float32) for c in (2, 3))

    def run(be: Backend):
        with be.workspace():
            net = be.conv_gru(h, [ctx, mot], p)
            delta = be.flow_head(net, head)
            return be.to_host(be.conv_gru(net, [ctx, mot], p)), be.to_host(delta)

    from cvflow.backends.cuda.backend import CudaBackend
    from cvflow.backends.cuda.executor import get_executor

    want = run(CPUBackend())
    with cuda_emulator():
        got = run(CudaBackend(get_executor()))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)
