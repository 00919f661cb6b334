"""Multi-object trackers (runtime.track): configuration errors, empty and bad frames, per-instance ids, and parity
with Ultralytics' own tracker classes fed the same detections (every frame: same ids, same order, boxes within
1e-3 px, same detection index)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from runtime.errors import InputError
from runtime.track import TRACKERS, Detections, Tracks, make_tracker, tracker_config
from runtime.track.camera_motion import CameraMotion
from tools.track_scenes import scene, textured_frames

SIZE = (1280, 720)
BOX_ATOL = 1e-3


def feed(tracker, frames, images=None) -> list[Tracks]:
    return [tracker.update(Detections(f.xyxy, f.scores, f.class_ids), None if images is None else images[k])
            for k, f in enumerate(frames)]


# ------------------------------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize("name", sorted(TRACKERS))
def test_names_and_yaml_names_give_ultralytics_defaults(name):
    config = tracker_config(name)
    assert config.tracker_type == name
    assert tracker_config(f"{name}.yaml").settings == config.settings
    assert 0 < config["track_low_thresh"] < config["track_high_thresh"] <= 1


def test_tracktrack_defaults_are_its_own():
    config = tracker_config("tracktrack")
    assert (config["track_high_thresh"], config["new_track_thresh"], config["match_thresh"]) == (0.6, 0.7, 0.7)


def test_yaml_file_overrides_keys_and_keeps_the_rest(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("tracker_type: botsort  # comment\ntrack_buffer: 60\ngmc_method: none\nfuse_score: False\n")
    config = tracker_config(path)
    assert (config["track_buffer"], config["gmc_method"], config["fuse_score"]) == (60, None, False)
    assert config["match_thresh"] == tracker_config("botsort")["match_thresh"]
    assert isinstance(make_tracker(path), TRACKERS["botsort"])


@pytest.mark.parametrize("text, words", [
    ("tracker_type: bytetrack\ntrack_bufer: 30\n", ["track_bufer", "unknown key"]),
    ("tracker_type: bytetrack\ngmc_method: orb\n", ["gmc_method", "unknown key"]),
    ("tracker_type: bytetrack\nmatch_thresh: high\n", ["match_thresh", "'high'"]),
    ("tracker_type: bytetrack\ntrack_high_thresh: 1.5\n", ["track_high_thresh", "0 to 1"]),
    ("tracker_type: bytetrack\ntrack_buffer: 2.5\n", ["track_buffer", "integer"]),
    ("tracker_type: bytetrack\nfuse_score: 1\n", ["fuse_score", "true or false"]),
    ("tracker_type: botsort\ngmc_method: optical\n", ["gmc_method", "'optical'"]),
    ("tracker_type: botsort\nwith_reid: True\n", ["with_reid", "ReID"]),
    ("tracker_type: sort\n", ["tracker_type", "'sort'"]),
    ("tracker_type: fasttrack\n", ["fasttrack", "not supported"]),
    ("track_buffer: 30\n", ["tracker_type", "missing"]),
    ("tracker_type: bytetrack\ntrack_buffer: [30\n", ["not valid YAML", "line"]),
    ("- bytetrack\n", ["mapping"]),
])
def test_bad_yaml_is_one_error_naming_the_file_and_key(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        tracker_config(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(InputError, match="not found"):
        tracker_config(tmp_path / "absent.yaml")
    with pytest.raises(InputError, match="unknown tracker 'bytetrak'"):
        tracker_config("bytetrak")
    with pytest.raises(InputError, match="not supported"):
        make_tracker("deepocsort")


def test_overrides_are_checked():
    assert make_tracker("bytetrack", track_buffer=5).config["track_buffer"] == 5
    with pytest.raises(InputError, match="new_track_thresh"):
        make_tracker("bytetrack", new_track_thresh=-1)


# ---------------------------------------------------------------------------------------------- frames and guarantees
@pytest.mark.parametrize("name", sorted(TRACKERS))
def test_empty_frames_give_empty_tracks_and_tracks_resume(name):
    tracker = make_tracker(name)
    empty = tracker.update(Detections.empty())
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4) and empty.track_ids.dtype == np.int64
    box = np.array([[100, 100, 150, 200]], np.float32)
    for k in range(4):
        shifted = box + 2 * k
        tracks = tracker.update(Detections(shifted, [0.9], [3]))
    assert tracks.track_ids.tolist() == [1] and tracks.class_ids.tolist() == [3]
    assert np.abs(tracks.xyxy - shifted).max() < 5
    assert len(tracker.update(Detections(np.zeros((0, 4)), [], []))) == 0


@pytest.mark.parametrize("name", sorted(TRACKERS))
def test_bad_boxes_are_ignored_and_outputs_stay_finite(name):
    rng = np.random.default_rng(1)
    tracker = make_tracker(name)
    for frame in scene(seed=3, n_frames=25, n_objects=15):
        xyxy, scores, cls = frame.xyxy.copy(), frame.scores.copy(), frame.class_ids
        bad = rng.random(len(xyxy)) < 0.2
        xyxy[bad, rng.integers(0, 4)] = np.nan
        xyxy[rng.random(len(xyxy)) < 0.1, 2] = 0  # some boxes with negative or zero width
        scores[rng.random(len(scores)) < 0.05] = np.inf
        tracks = tracker.update(Detections(xyxy, scores, cls))
        assert np.isfinite(tracks.xyxy).all() and np.isfinite(tracks.scores).all()
        assert len(set(tracks.track_ids.tolist())) == len(tracks)
        if len(tracks):
            assert np.isfinite(xyxy[tracks.det_index]).all()
            np.testing.assert_array_equal(scores[tracks.det_index], tracks.scores)
            np.testing.assert_array_equal(cls[tracks.det_index], tracks.class_ids)


def test_detections_reject_mismatched_lengths():
    with pytest.raises(InputError, match="scores"):
        Detections(np.zeros((2, 4)), [0.5], [0, 0])
    with pytest.raises(InputError, match=r"\(n, 4\)"):
        Detections(np.zeros((2, 5)), [0.5, 0.5], [0, 0])


@pytest.mark.parametrize("name", sorted(TRACKERS))
def test_each_tracker_counts_its_own_ids_and_reset_restarts_them(name):
    frames_a = scene(seed=1, n_frames=20, n_objects=8)
    frames_b = scene(seed=2, n_frames=20, n_objects=8)
    alone = feed(make_tracker(name), frames_a)
    a, b = make_tracker(name), make_tracker(name)
    interleaved = []
    for fa, fb in zip(frames_a, frames_b):  # two streams side by side never share ids
        interleaved.append(a.update(Detections(fa.xyxy, fa.scores, fa.class_ids)))
        b.update(Detections(fb.xyxy, fb.scores, fb.class_ids))
    assert [t.track_ids.tolist() for t in interleaved] == [t.track_ids.tolist() for t in alone]
    assert max(max(t.track_ids, default=0) for t in alone) >= 1
    a.reset()
    again = feed(a, frames_a)
    assert [t.track_ids.tolist() for t in again] == [t.track_ids.tolist() for t in alone]


def test_optical_flow_sees_the_camera_pan():
    frames = scene(seed=0, n_frames=3, n_objects=1, pan=(6.0, -4.0))
    camera = CameraMotion("sparseOptFlow")
    warps = [camera.estimate(image) for image in textured_frames(frames, (640, 384), seed=0)]
    np.testing.assert_array_equal(warps[0], np.eye(2, 3))
    np.testing.assert_allclose(warps[2][:, 2], [-6.0, 4.0], atol=0.5)  # content moves against the camera
    np.testing.assert_allclose(warps[2][:, :2], np.eye(2), atol=0.01)


def test_importing_the_trackers_imports_no_torch():
    code = "import sys, runtime.track; print(any(m in sys.modules for m in ('torch', 'ultralytics')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------- parity with Ultralytics
def ultralytics_tracks(config, frames, images=None) -> list[np.ndarray]:
    """Ultralytics' tracker class for ``config`` fed the same frames through its own Boxes."""
    from ultralytics.engine.results import Boxes
    from ultralytics.trackers.track import TRACKER_MAP
    from ultralytics.utils import IterableSimpleNamespace

    settings = dict(config.settings)
    args = IterableSimpleNamespace(tracker_type=config.tracker_type, **settings)
    tracker = TRACKER_MAP[config.tracker_type](args=args)
    out = []
    for k, f in enumerate(frames):
        data = np.concatenate([f.xyxy, f.scores[:, None], f.class_ids[:, None].astype(np.float32)], axis=1)
        rows = tracker.update(Boxes(data.reshape(-1, 6), SIZE[::-1]), None if images is None else images[k])
        out.append(np.asarray(rows, dtype=np.float32).reshape(-1, 8))
    return out


def assert_same_tracks(ours: list[Tracks], theirs: list[np.ndarray]) -> int:
    """Every frame: same ids in the same order, boxes within BOX_ATOL, same detection index, score and class.
    Returns the number of track rows compared."""
    rows = 0
    for k, (got, want) in enumerate(zip(ours, theirs)):
        assert got.track_ids.tolist() == want[:, 4].astype(int).tolist(), f"frame {k}: ids differ"
        assert got.det_index.tolist() == want[:, 7].astype(int).tolist(), f"frame {k}: detection indices differ"
        if len(want):
            worst = float(np.abs(got.xyxy - want[:, :4]).max())
            assert worst <= BOX_ATOL, f"frame {k}: boxes differ by {worst:.2e} px"
            np.testing.assert_array_equal(got.scores, want[:, 5])
            np.testing.assert_array_equal(got.class_ids, want[:, 6].astype(int))
        rows += len(want)
    return rows


SCENES = {
    # objects entering and leaving, occlusions of 5 and 40 frames (track_buffer 30), low scores, empty frames
    "mixed": dict(seed=11, n_frames=90, n_objects=12, gaps=(5, 40), empty_frames=(30, 31, 32)),
    "crowded": dict(seed=12, n_frames=40, n_objects=60, gaps=(3, 35), empty_frames=(20,)),
    "stop_in_gaps": dict(seed=13, n_frames=60, n_objects=20, speed=8.0, gaps=(3, 5, 8), stop_in_gaps=True),
}
VARIANTS = [
    ("bytetrack", {}), ("bytetrack", {"fuse_score": False, "track_buffer": 10}),
    ("botsort", {"gmc_method": "none"}), ("tracktrack", {"gmc_method": "none"}),
    ("tracktrack", {"gmc_method": "none", "lost_match_thr": 0.9, "min_track_len": 1}),
    ("ocsort", {}), ("ocsort", {"use_byte": True, "inertia": 0.5}),
]


@pytest.fixture(scope="module")
def ultralytics_trackers():
    pytest.importorskip("ultralytics.trackers.track", reason="ultralytics is not installed: no reference to compare")
    pytest.importorskip("lap")


@pytest.mark.parametrize("scene_name", sorted(SCENES))
@pytest.mark.parametrize("name, changes", VARIANTS, ids=[f"{n}-{'-'.join(c) or 'defaults'}" for n, c in VARIANTS])
def test_same_ids_and_boxes_as_ultralytics(ultralytics_trackers, scene_name, name, changes):
    frames = scene(**SCENES[scene_name])
    tracker = make_tracker(name, **changes)
    ours = feed(tracker, frames)
    rows = assert_same_tracks(ours, ultralytics_tracks(tracker.config, frames))
    assert rows > 0
    if name == "bytetrack":  # the low-score detections did reach the second association stage
        low = [t.scores < tracker.config["track_high_thresh"] for t in ours]
        assert sum(int(m.sum()) for m in low) > 0


@pytest.mark.parametrize("name, method", [("botsort", "sparseOptFlow"), ("tracktrack", "sparseOptFlow"),
                                          ("botsort", "orb"), ("botsort", "sift"), ("botsort", "ecc")])
def test_same_tracks_as_ultralytics_under_camera_motion(ultralytics_trackers, name, method):
    long = method == "sparseOptFlow"
    frames = scene(seed=21, n_frames=60 if long else 12, n_objects=25, pan=(4.0, 1.5), empty_frames=(7,),
                   size=(960, 540) if long else (480, 270))
    images = list(textured_frames(frames, (960, 540) if long else (480, 270), seed=21))
    tracker = make_tracker(name, gmc_method=method)
    assert assert_same_tracks(feed(tracker, frames, images), ultralytics_tracks(tracker.config, frames, images)) > 0


@pytest.mark.shared
def test_same_tracks_as_ultralytics_on_a_panned_photo(ultralytics_trackers, shared_file):
    import cv2

    photo = cv2.imread(str(shared_file("coco/val2017/000000000139.jpg")))
    frames = scene(seed=22, n_frames=40, n_objects=15, pan=(-3.0, 2.0), size=(640, 360))
    images = list(textured_frames(frames, (640, 360), base=photo))
    for name in ("botsort", "tracktrack"):
        tracker = make_tracker(name)
        assert assert_same_tracks(feed(tracker, frames, images), ultralytics_tracks(tracker.config, frames, images))
