"""The emulator's device accounting (cvflow/backends/cuda/trace.py) and the dispatch
profile built on it (cvflow/profiling.py, bench/gpu_profile.py)."""
from __future__ import annotations

import numpy as np
import pytest

from cvflow.profiling import profile
from cvflow.backends.cuda.trace import DeviceArray
from cvflow.errors import DeviceError
from cvflow.testing import cuda_emulator


def test_tracer_counts_ops_copies_syncs_and_live_bytes():
    with cuda_emulator() as ex, ex.tracer.record() as c:
        a = ex.asarray(np.ones(1000))                      # one host->device copy, one buffer
        base = c.peak
        b = a * 2                                          # an op and a new buffer
        b += a                                             # an op in place: no buffer
        assert isinstance(b, DeviceArray) and ex.xp.tanh(a[:10]).shape == (10,)
        assert c.h2d == 1 and c.h2d_bytes == 4000 and c.allocs == 3
        assert c.ops["multiply"] == 1 and c.ops["add"] == 1 and c.ops["tanh"] == 1
        live = ex.tracer.live
        del b
        assert ex.tracer.live == live - 4000 and c.peak >= base + 4000
        assert float(a.sum()) == 1000 and c.syncs == 1 and c.d2h == 1
        ex.matmul(a.reshape(1, -1), a.reshape(-1, 1))
        assert c.ex_matmuls == 1 and c.flops == 2000 and c.executor_calls == 1
        c2 = a + np.ones(1000, np.float32)                # a host operand: an implicit copy
        assert c.h2d == 2 and isinstance(c2, DeviceArray)
        host = ex.to_host(a)
        assert type(host) is np.ndarray and c.d2h == 2 and c.syncs == 2


def test_profile_counts_one_pass_and_dry_mode_changes_no_count():
    wet = profile("raft-small", 64, 96, {"iters": 2}, dry=False)
    dry = profile("raft-small", 64, 96, {"iters": 2}, dry=True)
    for p in (wet, dry):
        t = p.total
        assert t.syncs == 1 and t.d2h == 1        # the flow's copy back is the pass's only sync
        assert t.h2d == 2                          # the frames: tables and grids are uploaded once
        assert t.launches["im2col:im2col"] > 0 and t.matmuls >= t.ex_matmuls > 0 and t.flops > 0
        assert {"encoders", "update", "upsampling"} <= set(p.phases) and p.phases["update"].entries == 2
        assert p.update.executor_calls > 0
    assert wet.summary() == dry.summary()


def test_profile_phases_of_gmflow_and_flownet2():
    gm = profile("gmflow", 64, 64)
    assert {"encoders", "transformer", "matching", "propagation", "upsampling"} <= set(gm.phases)
    assert gm.update is None and gm.total.syncs == 1
    fn = profile("flownet2-c", 64, 64)
    assert fn.phases["networks"].entries == 1


def test_emulator_kernels_and_products_take_device_arrays_only():
    with cuda_emulator() as ex:
        with pytest.raises(DeviceError, match="matmul's a must be a device array"):
            ex.matmul(np.ones((2, 2), np.float32), ex.zeros((2, 2)))
        with pytest.raises(DeviceError, match="act:add_relu argument 1 is a host array"):
            ex.launch("act:add_relu", (1,), (8,), (ex.zeros(8), np.zeros(8, np.float32), np.int32(8)))


def test_bench_gpu_profile_prints_the_table(capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import gpu_profile

    monkey = [("raft-small", 64, 96, {"iters": 2})]
    saved, gpu_profile.MODELS = gpu_profile.MODELS, monkey
    try:
        assert gpu_profile.main([]) == 0
    finally:
        gpu_profile.MODELS = saved
    out = capsys.readouterr().out
    assert "| raft-small | 64x96 | iters=2 |" in out and "graph replay ms" in out


def test_raft_updates_dispatch_within_what_is_reached():
    """RAFT's and RAFT-small's updates within the issue's 30 executor calls, with no array
    op (tests/test_cuda_graph_models.py holds the budget from 128 px frames); RAFT's GRU
    gates are two kernels per cell."""
    small = profile("raft-small", 64, 96, {"iters": 2}).update
    assert small.executor_calls <= 30 and small.other_ops == 0
    big = profile("raft", 64, 96, {"iters": 2}).update
    assert big.launches["gru:gru_gates"] == big.launches["gru:gru_blend"] == 2
    assert big.executor_calls <= 30 and big.other_ops == 0
