"""Videos, live streams and mixed sources: source parsing, provenance, vid_stride, batching, pipelining,
bounded read-ahead, the latest-frame policy, retries, skipped inputs and empty-result arrays.

Videos are written in fixtures with cv2.VideoWriter; live sources are simulated by fake captures that
deliver frames from the runtime's own capture thread. Nothing needs a camera or the network.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import runtime.io.streams as streams
import runtime.io.video as video
from runtime import InputError, Predictor, StreamError, StreamInput
from runtime.io.sources import ImageInput, VideoInput, resolve_inputs

pytest.importorskip("ultralytics")
from test_parity import asset_images  # noqa: E402

FPS = 10.0
SIZE_WH = (256, 192)


def write_video(path: Path, frames: list[np.ndarray], fps: float = FPS, codec: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (frames[0].shape[1], frames[0].shape[0]))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def clip_frames(n: int = 12) -> list[np.ndarray]:
    """n frames panning over bus.jpg: real objects, every frame a little different."""
    bus = cv2.imread(str(asset_images()[0]))
    big = cv2.resize(bus, (SIZE_WH[0] + 4 * n, SIZE_WH[1] + 2 * n))
    return [np.ascontiguousarray(big[2 * k:2 * k + SIZE_WH[1], 4 * k:4 * k + SIZE_WH[0]]) for k in range(n)]


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
def test_resolve_mixed_folder_glob_lists_cameras_and_urls(tmp_path, clip):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(asset_images()[0].read_bytes())
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


def test_streams_and_files_cannot_be_mixed(random_detect_onnx, clip):
    with pytest.raises(InputError, match=r"live streams \(camera 0\) cannot be mixed with files"):
        Predictor(random_detect_onnx).stream([str(clip), 0])


@pytest.mark.parametrize("option", ["vid_stride", "stream_buffer", "max_frames"])
def test_stream_options_are_checked(random_detect_onnx, clip, option):
    with pytest.raises(InputError, match=f"{option} must be >= 1"):
        Predictor(random_detect_onnx).stream(clip, **{option: 0})


# ------------------------------------------------------------------------------------------------------ videos
def test_video_frames_match_images_and_carry_provenance(random_seg_onnx, clip):
    predictor = Predictor(random_seg_onnx, conf=0.3)
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


def test_vid_stride_max_frames_and_batches(random_detect_onnx, clip):
    single = Predictor(random_detect_onnx, conf=0.3).predict(clip)
    strided = Predictor(random_detect_onnx, conf=0.3, batch=3).predict(clip, vid_stride=5)
    assert [r.frame_index for r in strided] == [0, 5, 10]
    assert {r.frame.frame_count for r in strided} == {3}
    for ours, ref in zip(strided, single[::5]):
        _same(ours, ref)
    capped = Predictor(random_detect_onnx, conf=0.3, batch=4).predict([clip, clip], max_frames=5)
    assert [r.frame_index for r in capped] == [0, 1, 2, 3, 4] * 2  # batches of 4 across the two files
    for ours, ref in zip(capped, single[:5] * 2):
        _same(ours, ref)


def test_decoding_overlaps_inference_and_reads_ahead_boundedly(random_detect_onnx, clip, monkeypatch):
    """The next frames are decoded while the engine runs, but never more than a few batches ahead."""
    reads: list[tuple[float, float]] = []
    real_open = video.open_video

    class SlowCapture:
        def __init__(self, cap):
            self.cap = cap

        def read(self):
            t0 = time.perf_counter()
            time.sleep(0.02)
            out = self.cap.read()
            reads.append((t0, time.perf_counter()))
            return out

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(video, "open_video", lambda path: SlowCapture(real_open(path)))
    predictor = Predictor(random_detect_onnx, conf=0.3, batch=2)
    runs: list[tuple[float, float]] = []
    real_run = predictor.engine.run

    def slow_run(batch):
        t0 = time.perf_counter()
        time.sleep(0.04)
        out = real_run(batch)
        runs.append((t0, time.perf_counter()))
        return out

    monkeypatch.setattr(predictor.engine, "run", slow_run)
    stream = predictor.stream(clip)
    first = next(stream)
    time.sleep(0.5)  # the consumer stalls: decoding must not run away
    ahead = len(reads)
    rest = list(stream)
    assert first.frame_index == 0 and len(rest) == 11
    assert ahead <= 4 * predictor.batch, f"{ahead} frames decoded while one Result was consumed"
    overlapping = [(r, i) for r in reads for i in runs if r[0] < i[1] and i[0] < r[1]]
    assert overlapping, "no frame was decoded while the engine ran"


def test_corrupt_and_truncated_videos_are_skipped_or_raise(random_detect_onnx, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a real video" * 10)
    noisy = [np.random.default_rng(k).integers(0, 255, (96, 128, 3), dtype=np.uint8) for k in range(20)]
    full = write_video(tmp_path / "full.avi", noisy, codec="MJPG")
    truncated = tmp_path / "truncated.avi"
    data = full.read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    predictor = Predictor(random_detect_onnx, conf=0.3)
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


def test_mixed_folder_with_an_unreadable_image(random_detect_onnx, clip, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(asset_images()[0].read_bytes())
    (folder / "b.jpg").write_bytes(b"\xff\xd8 broken")
    (folder / "c.mp4").write_bytes(clip.read_bytes())
    predictor = Predictor(random_detect_onnx, conf=0.3)
    stream = predictor.stream(folder)
    results = list(stream)
    assert [(Path(r.source).name, r.frame_index) for r in results] == [("a.jpg", 0)] + [("c.mp4", k) for k in range(12)]
    assert results[0].frame.kind == "image" and results[0].timestamp_ms is None
    assert [Path(s.source).name for s in stream.skipped] == ["b.jpg"] and predictor.skipped == stream.skipped


# ------------------------------------------------------------------------------------------------------ live
class FakeCamera:
    """A camera delivering ``fps`` frames per second (read blocks until the next one is due); frame n
    is filled with n % 256 so the test can tell which frame a Result came from. After ``fail_after``
    frames it stops delivering."""

    opened: list["FakeCamera"] = []

    def __init__(self, fps: float = 200.0, fail_after: int | None = None, opens: bool = True):
        self.period, self.fail_after, self.opens = 1 / fps, fail_after, opens
        self.n, self.start = 0, None
        FakeCamera.opened.append(self)

    def isOpened(self):  # noqa: N802
        return self.opens

    def get(self, prop):
        return 1 / self.period if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        if self.fail_after is not None and self.n >= self.fail_after:
            return False, None
        self.start = self.start or time.perf_counter()
        due = self.start + self.n * self.period
        time.sleep(max(0.0, due - time.perf_counter()))
        frame = np.full((96, 128, 3), self.n % 256, np.uint8)
        self.n += 1
        return True, frame

    def release(self):
        pass


@pytest.fixture()
def cameras(monkeypatch):
    """Replace the capture opener: each open takes the next factory of the list (the last one repeats)."""
    FakeCamera.opened = []
    factories: list = []

    def opener(inp):
        factory = factories.pop(0) if len(factories) > 1 else factories[0]
        return factory()

    monkeypatch.setattr(streams, "open_capture", opener)
    monkeypatch.setattr(streams, "RETRY_DELAYS_S", (0.01, 0.02))
    return factories


def test_live_source_drops_stale_frames_and_keeps_latency_bounded(random_detect_onnx, cameras):
    cameras.append(lambda: FakeCamera(fps=200.0))
    predictor = Predictor(random_detect_onnx, conf=0.3)
    stream = predictor.stream_with_images(0, stream_buffer=2, max_frames=30)
    ages, indices = [], []
    for result, image in stream:
        assert result.frame.kind == "stream" and result.source == "camera 0"
        assert int(image[0, 0, 0]) == result.frame_index % 256  # the Result is of the frame it says
        ages.append(time.perf_counter() - result.frame.read_start)
        indices.append(result.frame_index)
        assert abs(result.timestamp_ms - time.time() * 1e3) < 5e3  # the capture clock, ms since the epoch
        time.sleep(0.03)  # a consumer 6x slower than the camera
    (live,) = stream.stats.streams
    assert len(indices) == 30 and indices == sorted(set(indices))
    assert live.dropped > 0 and stream.dropped == {"camera 0": live.dropped}
    assert live.max_queued <= 2
    assert indices[-1] - indices[0] > 30, "the stream skipped nothing: no frame was dropped"
    # latency stays bounded (no queue builds up): a queue that kept every frame would age each Result by about
    # 25 ms more than the one before (0.5 s over the last ten); medians stand a scheduling hiccup on a busy box
    assert np.median(ages[-10:]) < np.median(ages[:10]) + 0.25


def test_live_source_that_stops_is_retried_then_raises(random_detect_onnx, cameras):
    cameras.extend([lambda: FakeCamera(fail_after=5), lambda: FakeCamera(opens=False)])
    predictor = Predictor(random_detect_onnx, conf=0.3)
    seen = []
    with pytest.raises(StreamError, match=r"camera 0: stream stopped after 5 frames; 2 reconnect attempts failed"):
        for result in predictor.stream("0", stream_buffer=8):
            seen.append(result.frame_index)
    assert seen == [0, 1, 2, 3, 4]  # the Results before the failure stand
    assert len(FakeCamera.opened) == 3  # the first open, then two reconnect attempts


def test_live_source_reconnects(random_detect_onnx, cameras):
    cameras.extend([lambda: FakeCamera(fail_after=3), lambda: FakeCamera(opens=False), lambda: FakeCamera()])
    stream = Predictor(random_detect_onnx, conf=0.3).stream("/dev/video0", stream_buffer=8, max_frames=6)
    assert len(list(stream)) == 6
    assert stream.stats.streams[0].reconnects == 1


def test_camera_that_never_opens(random_detect_onnx, cameras):
    cameras.append(lambda: FakeCamera(opens=False))
    with pytest.raises(StreamError, match=r"camera 3: stream cannot be opened; 2 reconnect attempts failed"):
        Predictor(random_detect_onnx).predict(3)


def test_replayed_file_as_live_source(random_detect_onnx, clip):
    stream = Predictor(random_detect_onnx, conf=0.3).stream(StreamInput(str(clip), "replay", replay_fps=100.0))
    results = list(stream)
    live = stream.stats.streams[0]
    assert live.captured == 12 and len(results) + live.dropped == 12
    assert [r.frame_index for r in results] == sorted(r.frame_index for r in results)


# ------------------------------------------------------------------------------------------------------ empty
@pytest.mark.parametrize("model, options, field, shape", [
    ("random_seg_onnx", {}, "masks", (0, 320, 320)),
    ("random_seg_onnx", {"retina_masks": True}, "masks", (0, 120, 160)),
    ("random_pose_onnx", {}, "keypoints", (0, 17, 3)),
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


def test_empty_results_rle_and_detect(random_seg_onnx, random_detect_onnx):
    image = np.zeros((120, 160, 3), np.uint8)
    rle = Predictor(random_seg_onnx, conf=1.0, rle_masks=True).predict(image)[0]
    assert rle.masks_rle == [] and rle.mask_form == "native"
    detect = Predictor(random_detect_onnx, conf=1.0).predict(image)[0]
    assert detect.masks is None and detect.keypoints is None
