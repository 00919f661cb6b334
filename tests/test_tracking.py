"""Tracking in the Predictor and the CLI: one tracker per source, ids on every Result, Ultralytics' track mode
on a real detector end to end, and the tracker's per-source bookkeeping on hand-made Results."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime import FrameInfo, InputError, Predictor, Result
from runtime.cli.infer import main
from runtime.records.letterbox import plan_letterbox
from runtime.track import source_trackers

from conftest import needs_export
from matching import box_iou
from scenes import clip_frames, write_video

NAMES = ("person", "car")


def _result(source: str, kind: str, index: int, boxes, timestamp_ms: float | None = None) -> Result:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    letterbox = plan_letterbox((480, 640), (480, 640))
    return Result(boxes, np.full(n, 0.9, np.float32), np.zeros(n, np.int32), NAMES, letterbox,
                  frame=FrameInfo(source, kind, index, timestamp_ms=timestamp_ms, fps=30.0))


def _walk(step: int) -> list[list[float]]:
    return [[100 + 5 * step, 100, 160 + 5 * step, 220], [400, 50 + 4 * step, 470, 150 + 4 * step]]


def test_each_live_stream_has_its_own_ids():
    trackers = source_trackers("bytetrack")
    ids = {}
    for k in range(6):
        for name in ("rtsp://a", "rtsp://b"):  # batched round-robin, as several streams arrive
            tracked = trackers(_result(name, "stream", k, _walk(k), timestamp_ms=1000 + 33.3 * k), None)
            assert tracked.track_ids is not None and len(tracked) == len(tracked.track_ids) == 2
            ids.setdefault(name, set()).update(tracked.track_ids.tolist())
    assert ids["rtsp://a"] == ids["rtsp://b"] == {1, 2}  # each stream counts its own ids, none mixed


def test_files_start_afresh_unless_persisted():
    fresh, persisted = source_trackers("bytetrack"), source_trackers("bytetrack", persist=True)
    for trackers, second_ids in ((fresh, {1, 2}), (persisted, {3, 4})):
        for k in range(3):
            trackers(_result("a.mp4", "video", k, _walk(k)), None)
        out = [trackers(_result("b.mp4", "video", k, [[10, 10, 50, 50], [300, 300, 360, 400]]), None)
               for k in range(3)]
        assert set(out[-1].track_ids.tolist()) == second_ids


def test_an_outage_longer_than_the_track_buffer_resets_a_stream():
    trackers = source_trackers("bytetrack", track_buffer=30)  # 30 frames at 30 fps: 1 s
    for k in range(4):
        first = trackers(_result("rtsp://cam", "stream", k, _walk(k), timestamp_ms=33.3 * k), None)
    short = trackers(_result("rtsp://cam", "stream", 4, _walk(4), timestamp_ms=33.3 * 3 + 900), None)
    assert set(short.track_ids.tolist()) == set(first.track_ids.tolist())  # 0.9 s: the tracks wait
    later = [trackers(_result("rtsp://cam", "stream", 5 + k, _walk(5 + k), timestamp_ms=5000 + 33.3 * k), None)
             for k in range(3)]
    assert not set(later[-1].track_ids.tolist()) & set(first.track_ids.tolist())  # 4 s later: new tracks


def test_tracked_boxes_are_clipped_and_empty_frames_carry_empty_ids():
    trackers = source_trackers("bytetrack")
    for k in range(3):
        out = trackers(_result("v.mp4", "video", k, [[-20 - 10 * k, 5, 60, 90], [590, 400, 660 + 10 * k, 500]]), None)
    assert len(out) == 2 and out.xyxy.min() >= 0 and out.xyxy[:, 2].max() <= 640 and out.xyxy[:, 3].max() <= 480
    empty = trackers(_result("v.mp4", "video", 3, np.zeros((0, 4))), None)
    assert len(empty) == 0 and empty.track_ids.shape == (0,) and empty.track_ids.dtype == np.int64


def test_a_bad_tracker_is_refused_before_any_frame(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("tracker_type: bytetrack\ntrack_bufer: 30\n")
    with pytest.raises(InputError, match="track_bufer"):
        source_trackers(bad)
    with pytest.raises(InputError, match="nosuchtracker"):
        source_trackers("nosuchtracker")


# ------------------------------------------------------------------------------- a real detector, end to end
def _clip(images: list[Path], path: Path, frames_per_shot: int = 24) -> Path:
    """A 640x480 clip that pans and zooms over each image in turn, with hard cuts between the shots."""
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    for shot, image_path in enumerate(images):
        img = cv2.imread(str(image_path))
        h, w = img.shape[:2]
        for k in range(frames_per_shot):
            zoom = 1.25 + (0.25 * k / frames_per_shot if shot % 2 else -0.2 * k / frames_per_shot)
            s = max(640 / w, 480 / h) * zoom
            big = cv2.resize(img, (int(w * s) + 1, int(h * s) + 1))
            x = (big.shape[1] - 640) * k // frames_per_shot
            y = (big.shape[0] - 480) * (frames_per_shot - k) // frames_per_shot
            out.write(np.ascontiguousarray(big[y:y + 480, x:x + 640]))
    out.release()
    return path


@needs_export
@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("tracker", ["bytetrack", "botsort", "ocsort", "tracktrack"])
def test_track_matches_ultralytics_track_on_a_real_detector(tracker, shared_detect_pt, shared_detect_onnx,
                                                             shared_dir, tmp_path):
    from ultralytics import YOLO

    clip = _clip(sorted((shared_dir / "coco/val2017").glob("*.jpg"))[:3], tmp_path / "clip.mp4")
    ours = list(Predictor(shared_detect_onnx).track(str(clip), tracker=tracker))
    theirs = [(r.boxes.xyxy.numpy(), r.boxes.cls.numpy().astype(int),
               (r.boxes.id.numpy().astype(int) if r.boxes.id is not None else None))
              for r in YOLO(str(shared_detect_pt)).track(source=str(clip), tracker=f"{tracker}.yaml", stream=True,
                                                         rect=False, verbose=False)]  # our export: fixed 640x640
    assert len(ours) == len(theirs)
    their_total = matched = 0
    pairs: dict[int, dict[int, int]] = {}
    our_total = sum(len(r) for r in ours)
    for mine, (boxes, cls, ids) in zip(ours, theirs):
        if ids is None:  # Ultralytics passed the frame's detections on without ids: nothing tracked there
            continue
        their_total += len(ids)
        if not len(mine) or not len(ids):
            continue
        iou = box_iou(boxes, mine.xyxy)
        iou[cls[:, None] != mine.class_ids[None, :]] = 0
        for i, j in zip(*np.nonzero(iou >= 0.9)):
            if iou[i, j] == iou[i].max():
                matched += 1
                counts = pairs.setdefault(int(mine.track_ids[j]), {})
                counts[int(ids[i])] = counts.get(int(ids[i]), 0) + 1
    assert their_total > 100, "the clip should give Ultralytics plenty of tracked boxes"
    assert matched >= 0.98 * their_total, (matched, their_total)
    assert abs(our_total - their_total) <= 0.02 * their_total, (our_total, their_total)
    consistent = sum(max(c.values()) for c in pairs.values())  # each of our ids stands for one of theirs
    assert consistent >= 0.98 * matched, (consistent, matched)


def test_cli_track_writes_ids_and_refuses_unknown_trackers(tiny_detect_onnx, tmp_path, capsys):
    clip = write_video(tmp_path / "clip.mp4", clip_frames(6))
    code = main([str(clip), "-m", str(tiny_detect_onnx), "--track", "--trails", "5",
                 "--save-dir", str(tmp_path / "out"), "--jsonl", "f.jsonl"])
    assert code == 0
    lines = [json.loads(line) for line in (tmp_path / "out" / "f.jsonl").read_text().splitlines()]
    assert len(lines) == 6
    detections = [d for line in lines for d in line["detections"]]
    assert detections and all(isinstance(d["track_id"], int) and d["track_id"] >= 1 for d in detections)
    assert (tmp_path / "out" / "clip.mp4").is_file()
    capsys.readouterr()
    assert main([str(clip), "-m", str(tiny_detect_onnx), "--track", "nosuch", "--no-save"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nosuch" in err[0]


@pytest.mark.parametrize("task", ["segment", "pose"])
def test_masks_and_keypoints_follow_their_tracks(task, tiny_onnx, tmp_path):
    clip = str(write_video(tmp_path / "clip.mp4", clip_frames(8)))
    predictor = Predictor(tiny_onnx(task), conf=0.25)
    plain = list(predictor.stream(clip))
    tracked = list(predictor.track(clip))
    assert len(plain) == len(tracked) and sum(len(r) for r in tracked) > 0
    for untracked, result in zip(plain, tracked):
        extra = result.masks if task == "segment" else result.keypoints
        reference = untracked.masks if task == "segment" else untracked.keypoints
        assert extra.shape[0] == len(result) == len(result.track_ids)
        for k in range(len(result)):  # each tracked detection carries the mask / keypoints of a detection
            assert any(np.array_equal(extra[k], ref) for ref in reference)
