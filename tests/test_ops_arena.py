"""The activation arena: buffers come back only when nothing refers to them."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import cvflow
from cvflow.models.base import REGISTRY, ModelDef, register
from cvflow.ops import arena, conv

BIG = (512, 1024)  # 2 MiB of float32, above an Arena()'s default floor (arena.MIN_BYTES)


def test_idle_buffer_is_reused_across_activations():
    a = arena.Arena()
    with a.active():
        first = arena.empty(np, BIG, np.float32)
        addr = first.__array_interface__["data"][0]
        del first
    with a.active():
        again = arena.empty(np, BIG, np.float32)
    assert again.__array_interface__["data"][0] == addr
    assert a.nbytes == again.nbytes


def test_buffer_in_use_is_never_handed_out_twice():
    a = arena.Arena()
    with a.active():
        held = arena.empty(np, BIG, np.float32)
        view = held[10:20]  # a view keeps the buffer in use after `held` is gone
        del held
        other = arena.empty(np, BIG, np.float32)
        assert not np.shares_memory(view, other)
        del other
        third = arena.empty(np, BIG, np.float32)  # `other`'s buffer is idle again
        assert not np.shares_memory(view, third)
    assert a.nbytes == 2 * third.nbytes


def test_small_arrays_and_inactive_arena_allocate_normally():
    a = arena.Arena()
    plain = arena.empty(np, BIG, np.float32)  # no arena active
    with a.active():
        small = arena.empty(np, (4, 4), np.float32)
    assert a.nbytes == 0 and plain.flags.owndata and small.flags.owndata


def test_unused_buffers_are_dropped_and_release_drops_all():
    a = arena.Arena()
    with a.active():
        arena.empty(np, BIG, np.float32)
        arena.empty(np, (1024, 1024), np.float32)
    assert a.nbytes == (2 + 4) << 20
    with a.active():
        arena.empty(np, BIG, np.float32)  # the 4 MiB buffer is not used this time
    assert a.nbytes == 2 << 20
    a.release()
    assert a.nbytes == 0


def test_concatenate_matches_numpy():
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((1, 256, 512, c)).astype(np.float32) for c in (3, 1, 2)]
    with arena.Arena().active():
        out = arena.concatenate(parts, axis=-1)
    np.testing.assert_array_equal(out, np.concatenate(parts, axis=-1))


def _arena_forward(params, img0, img1, config, options, init_flow):
    """A model whose result is an arena buffer, as a real model's last layer may be."""
    flow = arena.empty(np, img0.shape[:2] + (2,), np.float32)
    flow[...] = (img1 - img0)[..., :2]
    time.sleep(0.002)  # lets another thread run between filling and returning
    return flow


@pytest.fixture
def stub_model():
    model = register(ModelDef(name="test-arena", family="test", config={}, param_shapes=lambda cfg: {"unused": (1,)},
                              forward=_arena_forward, reuse_bytes=arena.MIN_BYTES))
    yield model.name
    REGISTRY.pop(model.name, None)


def test_calc_results_own_their_memory(stub_model):
    algo = cvflow.create(stub_model, weights={"unused": np.zeros(1, np.float32)}, device="cpu")
    rng = np.random.default_rng(1)
    f0, f1 = (rng.integers(0, 256, (600, 800, 3), dtype=np.uint8) for _ in range(2))
    first = algo.calc(f0, f1, None)
    kept = first.copy()
    second = algo.calc(f1, f0, None)
    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(first, second)
    assert first.flags.owndata and second.flags.owndata  # not views into the arena
    conv.conv2d(np.ones((1, 8, 8, 4), np.float32), {"weight": np.ones((4, 4, 3, 3), np.float32)})
    assert conv._LOCAL.bufs
    algo.collectGarbage()
    assert algo._backend.arena.nbytes == 0 and not getattr(conv._LOCAL, "bufs", None)


def test_threads_sharing_one_object_never_share_a_buffer(stub_model):
    algo = cvflow.create(stub_model, weights={"unused": np.zeros(1, np.float32)}, device="cpu")
    base = np.zeros((600, 800, 3), np.uint8)
    bad = []

    def work(k):
        for i in range(15):
            value = 10 * k + i
            got = algo.calc(base, base + np.uint8(value), None)
            if not (got == value).all():
                bad.append((k, i))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_bounded_arena_drops_idle_buffers_largest_first_never_one_in_use():
    mib = 1 << 20
    a = arena.Arena(max_bytes=7 * mib)
    with a.active():
        big = arena.empty(np, (4 * mib,), np.uint8)
        small = arena.empty(np, (2 * mib,), np.uint8)
        keep = arena.empty(np, (1 * mib,), np.uint8)  # in use throughout
        del big, small
        assert a.nbytes == 7 * mib
        # 3 MiB fits no idle buffer (4 MiB is above the slack): 7 + 3 > 7, so idle buffers
        # go, largest first, until it fits: the 4 MiB one only (7 - 4 + 3 = 6 MiB)
        new = arena.empty(np, (3 * mib,), np.uint8)
        assert a.nbytes == 6 * mib and sorted(b.size for b in a._bufs) == [mib, 2 * mib, 3 * mib]
        # nothing idle is left to drop: a request above the bound still gets its buffer
        extra = arena.empty(np, (5 * mib,), np.uint8)
        assert sorted(b.size for b in a._bufs) == [mib, 3 * mib, 5 * mib]  # the idle 2 MiB went
        assert not np.shares_memory(keep, new) and not np.shares_memory(extra, keep)
    unbounded = arena.Arena()
    with unbounded.active():
        for n in (4, 2, 3):
            arena.empty(np, (n * mib,), np.uint8)
    assert unbounded.nbytes == 9 * mib
