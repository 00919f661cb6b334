"""Videos, live streams and mixed sources: source parsing, provenance, vid_stride, batching, pipelining,
bounded read-ahead, the latest-frame policy, retries, skipped inputs and empty-result arrays.

Videos are written in fixtures with cv2.VideoWriter; live sources are simulated by fake captures that
deliver frames from the runtime's own capture thread (tests/fakes.py). Nothing needs a camera, the network or
torch (the tiny models), and nothing depends on how fast the machine is: live sources run on a fake clock and
cameras the test lets deliver, and overlap is shown by two threads meeting, not by timings.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import runtime.io.streams as streams
import runtime.io.video as video
from fakes import WALL_AT_ZERO, FakeCamera, FakeClock, GatedCamera, camera_frame
from runtime import InputError, Predictor, StreamError, StreamInput
from runtime.io.sources import ImageInput, VideoInput, resolve_inputs
from scenes import CLIP_FPS as FPS
from scenes import CLIP_SIZE_WH as SIZE_WH
from scenes import clip_frames, write_video
from tiny_models import TINY_IMGSZ

MEETING_TIMEOUT_S = 60.0  # how long a thread waits for the event it needs before the test calls it a failure


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", clip_frames())


def decoded(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


def _same(a, b) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)


# ------------------------------------------------------------------------------------------------------ sources
def test_resolve_mixed_folder_glob_lists_cameras_and_urls(tmp_path, clip, pictures):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(pictures[0].read_bytes())
    (folder / "b.mp4").write_bytes(clip.read_bytes())
    (folder / "notes.md").write_text("ignored")
    inputs = resolve_inputs(folder)
    assert [type(x) for x in inputs] == [ImageInput, VideoInput]
    assert [Path(x.name).name for x in inputs] == ["a.jpg", "b.mp4"]
    assert [Path(x.name).name for x in resolve_inputs(str(folder / "*.mp4"))] == ["b.mp4"]
    listing = tmp_path / "sources.streams"
    listing.write_text("# one per line\nmixed/b.mp4\n\n0\n/dev/video2\nrtsp://cam.local/live\n")
    kinds = [(type(x).__name__, getattr(x, "target", None)) for x in resolve_inputs(listing)]
    assert kinds == [("VideoInput", None), ("StreamInput", 0), ("StreamInput", 2),
                     ("StreamInput", "rtsp://cam.local/live")]
    assert [x.name for x in resolve_inputs([0, "1", "rtmp://x/y", "https://h/s.m3u8"])] == [
        "camera 0", "camera 1", "rtmp://x/y", "https://h/s.m3u8"]


@pytest.mark.parametrize("source, pattern", [
    ("nope.mp4", r"nope\.mp4: no such file"),
    ("*.nothing", r"the pattern matches no images or videos"),
    (-1, "camera index must be >= 0"),
    (3.5, "unsupported source float"),
], ids=["missing", "glob", "negative_camera", "float"])
def test_resolve_errors(source, pattern, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=pattern):
        resolve_inputs(source)


def test_empty_list_and_nested_list_are_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(InputError, match=r"empty\.txt: the list of sources is empty"):
        resolve_inputs(empty)
    outer = tmp_path / "outer.txt"
    outer.write_text("empty.txt\n")
    with pytest.raises(InputError, match="cannot name another list"):
        resolve_inputs(outer)


def test_streams_and_files_cannot_be_mixed(tiny_detect_onnx, clip):
    with pytest.raises(InputError, match=r"live streams \(camera 0\) cannot be mixed with files"):
        Predictor(tiny_detect_onnx).stream([str(clip), 0])


@pytest.mark.parametrize("option", ["vid_stride", "stream_buffer", "max_frames"])
def test_stream_options_are_checked(tiny_detect_onnx, clip, option):
    with pytest.raises(InputError, match=f"{option} must be >= 1"):
        Predictor(tiny_detect_onnx).stream(clip, **{option: 0})


# ------------------------------------------------------------------------------------------------------ videos
def test_video_frames_match_images_and_carry_provenance(tiny_seg_onnx, clip):
    predictor = Predictor(tiny_seg_onnx)
    results = predictor.predict(clip)
    frames = decoded(clip)
    assert len(results) == len(frames) == 12
    assert [r.frame_index for r in results] == list(range(12))
    np.testing.assert_allclose([r.timestamp_ms for r in results], [k * 1e3 / FPS for k in range(12)], atol=1)
    assert {r.source for r in results} == {str(clip)} and {r.frame.kind for r in results} == {"video"}
    assert {r.frame.fps for r in results} == {FPS} and {r.frame.frame_count for r in results} == {12}
    assert all(r.orig_hw == (SIZE_WH[1], SIZE_WH[0]) for r in results)
    for ours, ref in zip(results, predictor.predict(frames)):
        _same(ours, ref)
    assert sum(len(r) for r in results) > 0


def test_vid_stride_max_frames_and_batches(tiny_detect_onnx, clip):
    single = Predictor(tiny_detect_onnx).predict(clip)
    strided = Predictor(tiny_detect_onnx, batch=3).predict(clip, vid_stride=5)
    assert [r.frame_index for r in strided] == [0, 5, 10]
    assert {r.frame.frame_count for r in strided} == {3}
    for ours, ref in zip(strided, single[::5]):
        _same(ours, ref)
    capped = Predictor(tiny_detect_onnx, batch=4).predict([clip, clip], max_frames=5)
    assert [r.frame_index for r in capped] == [0, 1, 2, 3, 4] * 2  # batches of 4 across the two files
    for ours, ref in zip(capped, single[:5] * 2):
        _same(ours, ref)


class _WatchedCapture:
    """A video capture that counts its reads (``reads``, under ``cond``) and runs ``on_read(k)`` before read k."""

    def __init__(self, cap, on_read, cond: threading.Condition, reads: list[int]) -> None:
        self.cap, self.on_read, self.cond, self.reads = cap, on_read, cond, reads

    def read(self):
        with self.cond:
            k = self.reads[0]
        self.on_read(k)
        out = self.cap.read()
        with self.cond:
            self.reads[0] += 1
            self.cond.notify_all()
        return out

    def __getattr__(self, name):
        return getattr(self.cap, name)


def test_decoding_overlaps_inference(tiny_detect_onnx, clip, monkeypatch):
    """The next batch is decoded while the engine runs: the first engine run and the read of the second batch's
    first frame meet (each waits for the other), which they cannot if the two ran one after the other."""
    batch = 2
    meeting = threading.Barrier(2, timeout=MEETING_TIMEOUT_S)
    met: dict[str, bool] = {}

    def meet(who: str) -> None:
        try:
            meeting.wait()
            met[who] = True
        except threading.BrokenBarrierError:
            met[who] = False

    cond, reads = threading.Condition(), [0]
    real_open = video.open_video
    monkeypatch.setattr(video, "open_video", lambda path: _WatchedCapture(
        real_open(path), lambda k: meet("read") if k == batch else None, cond, reads))
    predictor = Predictor(tiny_detect_onnx, batch=batch)
    real_run, runs = predictor.engine.run, []

    def run(tensor):
        if not runs:
            meet("engine")
        runs.append(len(tensor))
        return real_run(tensor)

    monkeypatch.setattr(predictor.engine, "run", run)
    results = predictor.predict(clip)
    assert met == {"read": True, "engine": True}, "no frame was decoded while the engine ran"
    assert [r.frame_index for r in results] == list(range(12)) and runs == [batch] * 6


def test_read_ahead_is_bounded(tiny_detect_onnx, clip, monkeypatch):
    """While the consumer holds its first Result, decoding runs ahead only a few batches, then waits."""
    batch = 2
    cond, reads = threading.Condition(), [0]
    real_open = video.open_video
    monkeypatch.setattr(video, "open_video", lambda path: _WatchedCapture(real_open(path), lambda k: None, cond,
                                                                          reads))
    predictor = Predictor(tiny_detect_onnx, batch=batch)
    real_run, runs = predictor.engine.run, threading.Semaphore(0)

    def run(tensor):
        out = real_run(tensor)
        runs.release()
        return out

    monkeypatch.setattr(predictor.engine, "run", run)
    stream = predictor.stream(clip)
    first = next(stream)
    # the engine runs the next batch without waiting for the consumer (so reading has got that far) ...
    assert runs.acquire(timeout=MEETING_TIMEOUT_S) and runs.acquire(timeout=MEETING_TIMEOUT_S)
    with cond:
        # ... and then stops: waiting for more reads times out (this only waits; a slow machine reads fewer)
        cond.wait_for(lambda: reads[0] > 4 * batch, timeout=0.5)
        ahead = reads[0]
    rest = list(stream)
    assert first.frame_index == 0 and len(rest) == 11
    assert 2 * batch <= ahead <= 4 * batch, f"{ahead} frames decoded while one Result was consumed"


def test_corrupt_and_truncated_videos_are_skipped_or_raise(tiny_detect_onnx, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a real video" * 10)
    noisy = [np.random.default_rng(k).integers(0, 255, (96, 128, 3), dtype=np.uint8) for k in range(20)]
    full = write_video(tmp_path / "full.avi", noisy, codec="MJPG")
    truncated = tmp_path / "truncated.avi"
    data = full.read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    predictor = Predictor(tiny_detect_onnx)
    results = predictor.predict([garbage, truncated])
    assert 0 < len(results) < 20 and {r.source for r in results} == {str(truncated)}
    messages = [s.message for s in predictor.skipped]
    assert len(messages) == 2
    assert "garbage.mp4: cannot be opened as a video" in messages[0]
    assert f"truncated.avi: video stopped at frame {len(results)} of 20" in messages[1]
    assert predictor.skipped[1].frame_index == len(results)
    with pytest.raises(InputError, match=r"garbage\.mp4: cannot be opened as a video"):
        predictor.predict([garbage, truncated], strict=True)
    seen = []
    with pytest.raises(InputError, match=r"truncated\.avi: video stopped at frame"):
        for result in predictor.stream(truncated, strict=True):
            seen.append(result.frame_index)
    assert seen == list(range(len(results)))  # the frames before the failure stand


def test_mixed_folder_with_an_unreadable_image(tiny_detect_onnx, clip, tmp_path, pictures):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(pictures[0].read_bytes())
    (folder / "b.jpg").write_bytes(b"\xff\xd8 broken")
    (folder / "c.mp4").write_bytes(clip.read_bytes())
    predictor = Predictor(tiny_detect_onnx)
    stream = predictor.stream(folder)
    results = list(stream)
    assert [(Path(r.source).name, r.frame_index) for r in results] == [("a.jpg", 0)] + [("c.mp4", k) for k in range(12)]
    assert results[0].frame.kind == "image" and results[0].timestamp_ms is None
    assert [Path(s.source).name for s in stream.skipped] == ["b.jpg"] and predictor.skipped == stream.skipped


# ------------------------------------------------------------------------------------------------------ live
@pytest.fixture()
def clock(monkeypatch) -> FakeClock:
    """The live sources' clock, faked: backoff waits and pacing return at once, and are recorded."""
    fake = FakeClock()
    monkeypatch.setattr(streams, "CLOCK", fake)
    return fake


@pytest.fixture()
def cameras(monkeypatch, clock):
    """Replace the capture opener: each open takes the next factory of the list (the last one repeats)."""
    FakeCamera.opened = []
    factories: list = []

    def opener(inp):
        factory = factories.pop(0) if len(factories) > 1 else factories[0]
        return factory()

    monkeypatch.setattr(streams, "open_capture", opener)
    return factories


def test_live_source_drops_stale_frames_and_keeps_latency_bounded(tiny_detect_onnx, cameras, clock):
    """A camera six times faster than the consumer: the stream drops frames instead of queueing them, so every
    Result is of a recent frame. The camera delivers exactly six frames per Result consumed (it waits for the
    test), so the counts below do not depend on scheduling."""
    per_result, buffer = 6, 2
    camera = GatedCamera(fps=200.0, clock=clock)
    cameras.append(lambda: camera)
    stream = Predictor(tiny_detect_onnx).stream_with_images(0, stream_buffer=buffer)
    ages, indices = [], []
    try:
        camera.allow(per_result)
        for k in range(30):
            result, image = next(stream)
            assert result.frame.kind == "stream" and result.source == "camera 0"
            assert np.array_equal(image, camera_frame(result.frame_index))  # the Result is of the frame it says
            # frame n was captured when the fake clock read start + (n + 1) / fps: its time since the epoch, in ms
            captured_at = 100.0 + (result.frame_index + 1) / camera.fps
            assert result.frame.read_start == pytest.approx(captured_at, abs=1e-9)
            assert result.timestamp_ms == pytest.approx((WALL_AT_ZERO + captured_at) * 1e3, abs=0.01)
            ages.append(camera.delivered - 1 - result.frame_index)  # frames captured since this one
            indices.append(result.frame_index)
            camera.allow(per_result)
            assert camera.wait_delivered(per_result * (k + 2)), "the capture thread stopped reading"
    finally:
        camera.run_free()
        stream.close()
    (live,) = stream.stats.streams
    assert indices == sorted(set(indices)) and indices[-1] - indices[0] > 30, "no frame was skipped"
    assert live.dropped > 0 and stream.dropped == {"camera 0": live.dropped}
    assert live.max_queued <= buffer
    # a Result is at most the buffer plus the three in flight (engine, hand-over, consumer) old, each stage
    # costing six captured frames; a queue that kept every frame would age each Result five frames more than
    # the one before (about 150 frames by the thirtieth)
    assert max(ages) <= per_result * (buffer + 3), ages


def test_backoff_doubles_to_a_cap():
    delays = streams.backoff_delays()
    assert [next(delays) for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_live_source_with_bounded_reconnects_raises_after_them(tiny_detect_onnx, cameras, clock):
    cameras.extend([lambda: FakeCamera(fail_after=5), lambda: FakeCamera(opens=False)])
    predictor = Predictor(tiny_detect_onnx)
    seen = []
    stream = predictor.stream("0", stream_buffer=8, reconnect=3)
    with pytest.raises(StreamError, match=r"camera 0: stream stopped after 5 frames; 3 reconnect attempts failed"):
        for result in stream:
            seen.append(result.frame_index)
    assert seen == [0, 1, 2, 3, 4]  # the Results before the failure stand
    assert len(FakeCamera.opened) == 4  # the first open, then three reconnect attempts
    assert clock.waits == [0.5, 1.0, 2.0]  # backing off before each attempt
    assert stream.stats.outages == {"camera 0": (1, 3.5)}


def test_live_source_is_reopened_until_it_is_back(tiny_detect_onnx, cameras, clock, caplog):
    """A camera that reboots (here: 10 failed attempts, 2 minutes) does not end the run; the outage is
    logged once when it starts and once when it ends, and counted."""
    cameras.extend([lambda: FakeCamera(fail_after=3)] + [lambda: FakeCamera(opens=False)] * 10
                   + [lambda: FakeCamera()])
    with caplog.at_level("WARNING", logger="runtime.io.streams"):
        stream = Predictor(tiny_detect_onnx).stream("0", stream_buffer=8, max_frames=8)
        indices = [r.frame_index for r in stream]
    assert len(indices) == 8 and indices == sorted(set(indices))  # indices count on across the outage
    assert indices[-1] >= 3  # frames of the camera that came back
    assert clock.waits == [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    ((lost, seconds),) = stream.stats.outages.values()
    assert lost == 1 and seconds == pytest.approx(sum(clock.waits))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "reconnecting until it is back" in messages[0]
    assert "back after 181.5 s (11 attempts)" in messages[1]


def test_live_source_reconnects_and_delivers_no_frame_from_before_the_outage(tiny_detect_onnx, cameras, clock):
    cameras.extend([lambda: FakeCamera(fail_after=3), lambda: FakeCamera(opens=False),
                    lambda: FakeCamera(fail_after=3), lambda: FakeCamera(opens=False)])
    stream = Predictor(tiny_detect_onnx).stream("/dev/video0", stream_buffer=8, reconnect=2)
    indices = []
    with pytest.raises(StreamError, match="stopped after 6 frames; 2 reconnect attempts failed"):
        for result in stream:
            indices.append(result.frame_index)
    assert indices == sorted(set(indices)) and max(indices) >= 3  # in order, and frames after the reconnect
    (live,) = stream.stats.streams
    assert live.reconnects == 1 and live.outages == 2 and live.captured == 6
    assert len(indices) + live.dropped == 6  # a frame is delivered in order, or dropped: never after the outage
    assert clock.waits == [0.5, 1.0, 0.5, 1.0]  # each outage backs off from the start


def test_camera_that_never_opens(tiny_detect_onnx, cameras, clock):
    cameras.append(lambda: FakeCamera(opens=False))
    with pytest.raises(StreamError, match=r"camera 3: stream cannot be opened; 3 reconnect attempts failed"):
        Predictor(tiny_detect_onnx).predict(3, reconnect=3)
    assert clock.waits == [0.5, 1.0, 2.0]


def test_replayed_file_as_live_source(tiny_detect_onnx, clip, clock):
    stream = Predictor(tiny_detect_onnx).stream(StreamInput(str(clip), "replay", replay_fps=100.0))
    results = list(stream)
    live = stream.stats.streams[0]
    assert live.captured == 12 and len(results) + live.dropped == 12
    assert [r.frame_index for r in results] == sorted(r.frame_index for r in results)
    assert clock.sleeps and all(s == pytest.approx(0.01) for s in clock.sleeps)  # paced at 100 fps, on the clock
    for r in results:  # each frame is stamped with the time it was due
        assert r.frame.read_start == pytest.approx(100.0 + r.frame_index / 100.0, abs=1e-9)


def test_paced_capture_hands_out_frames_when_due(clip):
    clock = FakeClock(start=50.0)
    capture = streams.PacedCapture(str(clip), fps=FPS, clock=clock)
    try:
        assert capture.isOpened() and capture.get(cv2.CAP_PROP_FPS) == FPS
        for n in range(3):  # a reader faster than the file: it waits for each frame to be due
            ok, frame = capture.read()
            assert ok and frame.shape == (SIZE_WH[1], SIZE_WH[0], 3)
            assert capture.capture_time == pytest.approx(50.0 + n / FPS)
        assert clock.sleeps == pytest.approx([1 / FPS, 1 / FPS])
        clock.advance(1.0)  # a reader that fell behind: no waiting, the frame is stamped when it is read
        ok, _ = capture.read()
        assert ok and clock.sleeps == pytest.approx([1 / FPS, 1 / FPS])
        assert capture.capture_time == pytest.approx(50.0 + 2 / FPS + 1.0)
    finally:
        capture.release()
    with pytest.raises(InputError, match="replay fps must be > 0, got 0"):
        streams.PacedCapture(str(clip), fps=0)


# ------------------------------------------------------------------------------------------------------ empty
@pytest.mark.parametrize("model, options, field, shape", [
    ("tiny_seg_onnx", {}, "masks", (0, TINY_IMGSZ, TINY_IMGSZ)),
    ("tiny_seg_onnx", {"retina_masks": True}, "masks", (0, 120, 160)),
    ("tiny_pose_onnx", {}, "keypoints", (0, 17, 3)),
], ids=["segment_letterbox", "segment_native", "pose"])
def test_empty_results_carry_empty_arrays(model, options, field, shape, request):
    predictor = Predictor(request.getfixturevalue(model), conf=1.0, **options)
    result = predictor.predict(np.zeros((120, 160, 3), np.uint8))[0]
    assert len(result) == 0
    array = getattr(result, field)
    assert array is not None and array.shape == shape
    assert array.dtype == (bool if field == "masks" else np.float32)
    assert len(result[np.zeros(0, bool)]) == 0 and getattr(result[:0], field).shape == shape
    for frame_mask in (result.masks if result.masks is not None else []):
        raise AssertionError(f"no masks expected, got one of {frame_mask.shape}")


def test_empty_results_rle_and_detect(tiny_seg_onnx, tiny_detect_onnx):
    image = np.zeros((120, 160, 3), np.uint8)
    rle = Predictor(tiny_seg_onnx, conf=1.0, rle_masks=True).predict(image)[0]
    assert rle.masks_rle == [] and rle.mask_form == "native"
    detect = Predictor(tiny_detect_onnx, conf=1.0).predict(image)[0]
    assert detect.masks is None and detect.keypoints is None
