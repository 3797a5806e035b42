"""cvflow.video: the pair iterator, the writer, warm start, interruption; on small generated videos."""
from __future__ import annotations

import os
import zipfile

import cv2
import numpy as np
import pytest

import cvflow
from cvflow.models.base import REGISTRY, ModelDef, register
from cvflow.video import VideoInterrupted, iter_video_flow, pair_count, run_video

# -- helpers shared with test_cli.py ------------------------------------------------------


def make_video(path, n=6, h=128, w=160, shift=2, fps=10.0, seed=0):
    """A translating random texture: frame i is the texture shifted left by i*shift px (flow ~ (-shift, 0))."""
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (h + 8, w + n * shift + 8, 3), dtype=np.uint8), (5, 5), 1.5)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.ascontiguousarray(tex[4:4 + h, 4 + i * shift:4 + i * shift + w]))
    writer.release()
    return path


def _test_shapes(config):
    return {"gain": (2,)}


def _counting_forward(params, img0, img1, config, options, init_flow):
    """Flow = init + gain (so warm start accumulates: pair k gives (k+1) * gain), records its inputs."""
    config["calls"].append(None if init_flow is None else init_flow.copy())
    h, w = img0.shape[:2]
    base = np.zeros((h, w, 2), np.float32) if init_flow is None else init_flow
    return (base + params["gain"]).astype(np.float32)


WARM_CALLS: list = []
PLAIN_CALLS: list = []
WEIGHTS = {"gain": np.array([1.0, -0.5], np.float32)}


@pytest.fixture(autouse=True, scope="module")
def test_models():
    models = [
        register(ModelDef(name="test-video-warm", family="test", config={"calls": WARM_CALLS},
                          param_shapes=_test_shapes, forward=_counting_forward,
                          options={"iters": 2, "warm_start": False})),
        register(ModelDef(name="test-video-plain", family="test", config={"calls": PLAIN_CALLS},
                          param_shapes=_test_shapes, forward=_counting_forward, options={})),
    ]
    yield models
    for m in models:
        REGISTRY.pop(m.name, None)


@pytest.fixture
def warm():
    WARM_CALLS.clear()
    return cvflow.create("test-video-warm", weights=WEIGHTS, device="cpu")


@pytest.fixture
def plain():
    PLAIN_CALLS.clear()
    return cvflow.create("test-video-plain", weights=WEIGHTS, device="cpu")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("video") / "in.mp4")


def assert_no_temp_files(directory):
    left = [p.name for p in directory.iterdir() if p.name.startswith(".tmp-")]
    assert not left, f"temporary files left: {left}"


# -- iter_video_flow ------------------------------------------------------------------


def test_iterates_all_pairs_with_frames(video, plain):
    got = [(k, f0.copy(), f1.copy(), flow.copy()) for k, f0, f1, flow in iter_video_flow(video, plain)]
    assert [g[0] for g in got] == [0, 1, 2, 3, 4]
    for k, f0, f1, flow in got:
        assert f0.shape == (128, 160, 3) and f0.dtype == np.uint8 and f1.shape == f0.shape
        assert flow.shape == (128, 160, 2) and flow.dtype == np.float32
        np.testing.assert_allclose(flow[0, 0], [1.0, -0.5])
    np.testing.assert_array_equal(got[0][2], got[1][1])  # pair k's second frame is pair k+1's first


def test_flow_buffer_is_reused_read_only(video, plain):
    seen = []
    for _, _, _, flow in iter_video_flow(video, plain):
        assert not flow.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            flow[0, 0, 0] = 5
        seen.append(flow)
    assert all(np.shares_memory(seen[0], f) for f in seen[1:])


def test_warm_start_feeds_previous_flow(video, warm):
    flows = [flow.copy() for *_, flow in iter_video_flow(video, warm)]
    assert WARM_CALLS[0] is None
    for k in range(1, 5):
        np.testing.assert_array_equal(WARM_CALLS[k], flows[k - 1])
    np.testing.assert_allclose(flows[4][3, 7], [5.0, -2.5])
    assert warm.getFlags() == 0 and warm.get("warm_start") is False  # restored


def test_no_warm_start(video, warm):
    warm.set("warm_start", True)
    warm.setFlags(cvflow.OPTFLOW_USE_INITIAL_FLOW)
    flows = [flow.copy() for *_, flow in iter_video_flow(video, warm, warm_start=False)]
    assert all(c is None for c in WARM_CALLS)
    np.testing.assert_allclose(flows[4][0, 0], [1.0, -0.5])
    assert warm.getFlags() == cvflow.OPTFLOW_USE_INITIAL_FLOW and warm.get("warm_start") is True


def test_model_without_warm_start_never_gets_initial_flow(video, plain):
    plain.setFlags(cvflow.OPTFLOW_USE_INITIAL_FLOW)  # a stale user flag must not leak the buffer in
    list(iter_video_flow(video, plain, warm_start=True))
    assert PLAIN_CALLS and all(c is None for c in PLAIN_CALLS)
    assert plain.getFlags() == cvflow.OPTFLOW_USE_INITIAL_FLOW


def test_flags_restored_when_closed_early(video, warm):
    gen = iter_video_flow(video, warm)
    next(gen)
    assert warm.getFlags() == cvflow.OPTFLOW_USE_INITIAL_FLOW
    gen.close()
    assert warm.getFlags() == 0


def test_every_and_max_side(video, plain):
    got = [(k, f0.shape, flow.shape) for k, f0, _, flow in iter_video_flow(video, plain, every=2, max_side=80)]
    assert [g[0] for g in got] == [0, 1]  # frames 0, 2, 4 -> two pairs
    assert got[0][1] == (64, 80, 3) and got[0][2] == (64, 80, 2)
    assert pair_count(6, 2) == 2 and pair_count(6, 1) == 5 and pair_count(1, 1) == 0 and pair_count(0, 3) == 0


def test_max_side_larger_than_frame_keeps_size(video, plain):
    _, f0, _, flow = next(iter_video_flow(video, plain, max_side=1000))
    assert f0.shape == (128, 160, 3) and flow.shape == (128, 160, 2)


def test_translating_texture_flow_with_farneback_like_check(video):
    """The generated video really translates by -2 px/frame (checks the fixture, with OpenCV's Farneback)."""
    cap = cv2.VideoCapture(str(video))
    ok0, a = cap.read()
    ok1, b = cap.read()
    cap.release()
    assert ok0 and ok1
    flow = cv2.calcOpticalFlowFarneback(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.cvtColor(b, cv2.COLOR_BGR2GRAY),
                                        None, 0.5, 3, 15, 3, 5, 1.2, 0)
    assert abs(np.median(flow[16:-16, 16:-16, 0]) + 2) < 0.3


@pytest.mark.parametrize("kw, msg", [
    ({"every": 0}, r"`every` must be an int >= 1, got 0"),
    ({"every": 1.5}, r"`every` must be an int >= 1, got 1.5"),
    ({"max_side": 0}, r"`max_side` must be an int >= 1, got 0"),
])
def test_bad_arguments(video, plain, kw, msg):
    with pytest.raises(ValueError, match=msg):
        next(iter_video_flow(video, plain, **kw))


def test_missing_corrupt_and_short_videos(tmp_path, plain):
    with pytest.raises(cvflow.CvflowFileNotFoundError, match="no such video file: .*nope.mp4"):
        next(iter_video_flow(tmp_path / "nope.mp4", plain))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 50)
    with pytest.raises(cvflow.InputError, match="cannot open video .*bad.mp4: not a video format OpenCV"):
        next(iter_video_flow(bad, plain))
    one = make_video(tmp_path / "one.mp4", n=1)
    with pytest.raises(cvflow.InputError, match="one.mp4 has fewer than two frames to pair"):
        next(iter_video_flow(one, plain))
    three = make_video(tmp_path / "three.mp4", n=3)
    with pytest.raises(cvflow.InputError, match="fewer than two frames to pair when keeping one frame in 3"):
        next(iter_video_flow(three, plain, every=3))


# -- run_video ------------------------------------------------------------------------


def test_run_video_writes_flo_and_mp4(video, warm, tmp_path):
    out = tmp_path / "out"
    res = run_video(video, warm, out, progress=False)
    assert res["pairs"] == 5 and res["size"] == [128, 160] and res["pairs_per_s"] > 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["flow.mp4"] + [f"flow_{k:06d}.flo" for k in range(5)]
    for k in range(5):
        flow = cvflow.readOpticalFlow(out / f"flow_{k:06d}.flo")
        np.testing.assert_allclose(flow[0, 0], [k + 1.0, -0.5 * (k + 1)])  # warm start accumulates
    cap = cv2.VideoCapture(str(out / "flow.mp4"))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 5
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (320, 128)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    cap.release()


def test_run_video_npz_every_and_no_mp4(video, plain, tmp_path):
    res = run_video(video, plain, tmp_path, every=2, max_side=64, npz=True, mp4=False, progress=False)
    assert res["pairs"] == 2 and res["size"] == [51, 64]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.npz"]
    with np.load(tmp_path / "flow.npz") as data:
        assert data["flow"].shape == (2, 51, 64, 2) and data["flow"].dtype == np.float32
        np.testing.assert_array_equal(data["frame_index"], [[0, 2], [2, 4]])
        np.testing.assert_allclose(data["flow"][:, 5, 5], [[1.0, -0.5]] * 2)


def test_run_video_mp4_odd_size_is_padded_not_cropped(video, plain, tmp_path):
    res = run_video(video, plain, tmp_path, max_side=99, progress=False)
    assert res["size"] == [79, 99]
    cap = cv2.VideoCapture(str(tmp_path / "flow.mp4"))
    ok, panel = cap.read()
    cap.release()
    assert ok and panel.shape == (80, 198, 3)


def test_run_video_mp4_fps_divided_by_every(video, plain, tmp_path):
    run_video(video, plain, tmp_path, every=2, progress=False)
    cap = cv2.VideoCapture(str(tmp_path / "flow.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)
    cap.release()


@pytest.mark.parametrize("npz", [False, True])
def test_interrupt_keeps_completed_outputs(video, warm, tmp_path, npz):
    def stop_after_two(k, flow):
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(VideoInterrupted, match="interrupted after 2 pairs") as info:
        run_video(video, warm, tmp_path, npz=npz, progress=False, on_pair=stop_after_two)
    assert isinstance(info.value, KeyboardInterrupt)
    assert info.value.summary["pairs"] == 2
    assert warm.getFlags() == 0  # restored on interrupt too
    assert_no_temp_files(tmp_path)
    if npz:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.mp4", "flow.npz"]
        with np.load(tmp_path / "flow.npz") as data:
            assert data["flow"].shape == (2, 128, 160, 2)
            np.testing.assert_allclose(data["flow"][1, 0, 0], [2.0, -1.0])
        with zipfile.ZipFile(tmp_path / "flow.npz") as zf:
            assert zf.testzip() is None
    else:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.mp4", "flow_000000.flo", "flow_000001.flo"]
        np.testing.assert_allclose(cvflow.readOpticalFlow(tmp_path / "flow_000001.flo")[0, 0], [2.0, -1.0])
    cap = cv2.VideoCapture(str(tmp_path / "flow.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 2


def test_interrupt_before_first_pair_leaves_nothing(video, plain, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plain, "calc", boom)
    with pytest.raises(VideoInterrupted, match="after 0 pairs"):
        run_video(video, plain, tmp_path / "o", npz=True, progress=False)
    assert list((tmp_path / "o").iterdir()) == []


def test_error_mid_run_keeps_completed_outputs(video, plain, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = plain.calc

    def fail_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise cvflow.InputError("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(plain, "calc", fail_third)
    with pytest.raises(cvflow.InputError, match="simulated failure"):
        run_video(video, plain, tmp_path, npz=True, progress=False)
    assert_no_temp_files(tmp_path)
    with np.load(tmp_path / "flow.npz") as data:
        assert data["flow"].shape[0] == 2


def test_run_video_output_is_a_file(video, plain, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(cvflow.OutputError, match="exists and is not a directory"):
        run_video(video, plain, f, progress=False)


def test_progress_plain_counter_without_tqdm(video, plain, tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tqdm(name, *args, **kwargs):
        if name == "tqdm" or name.startswith("tqdm."):
            raise ImportError("no tqdm")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    run_video(video, plain, tmp_path, mp4=False, progress=True)
    err = capsys.readouterr().err
    assert "video: 5/5 pairs" in err and "pairs/s" in err


def test_progress_tqdm(video, plain, tmp_path, capsys):
    pytest.importorskip("tqdm")
    run_video(video, plain, tmp_path, mp4=False, progress=True)
    err = capsys.readouterr().err
    assert "5/5" in err and "pairs/s" in err


def test_calc_batch_matches_calc(video, plain):
    cap = cv2.VideoCapture(str(video))
    frames = [cap.read()[1] for _ in range(3)]
    cap.release()
    batch = plain.calc_batch(frames[:-1], frames[1:])
    assert len(batch) == 2
    for a, b, f in zip(frames[:-1], frames[1:], batch):
        np.testing.assert_array_equal(f, plain.calc(a, b))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_video_module_does_not_import_tqdm_eagerly():
    import subprocess
    import sys

    code = "import sys, cvflow.video, cvflow.evaluate, cvflow.cli; assert 'tqdm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
