"""The tracker interface, the track record, and the bookkeeping every tracker shares."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from runtime.track.config import TrackerConfig
from runtime.track.kalman import BoxKalman
from runtime.track.matching import iou_cost
from runtime.track.types import Detections, Tracks

# Track states (the order matters to no one; the names follow ByteTrack).
NEW, TRACKED, LOST, REMOVED = 0, 1, 2, 3
REMOVED_MEMORY = 1000  # ids of removed tracks remembered, as Ultralytics keeps them
DUPLICATE_IOU_COST = 0.15  # a tracked and a lost track overlapping by IoU > 0.85 are one object


class Tracklet:
    """One object: a detection until activated, then a track with a Kalman state.

    ``tlwh`` / ``xyxy32`` are the detection box (float32, computed as Ultralytics computes them from the detector's
    x1y1x2y2); ``mean`` / ``cov`` the Kalman state once activated.
    """

    __slots__ = ("track_id", "state", "confirmed", "score", "class_id", "det_index", "tlwh", "xyxy32", "mean", "cov",
                 "frame_id", "start_frame", "length")

    def __init__(self, tlwh: np.ndarray, xyxy32: np.ndarray, score, class_id: int, det_index: int):
        self.track_id = 0
        self.state = NEW
        self.confirmed = False
        self.score = score
        self.class_id = class_id
        self.det_index = det_index
        self.tlwh = tlwh
        self.xyxy32 = xyxy32
        self.mean = None
        self.cov = None
        self.frame_id = 0
        self.start_frame = 0
        self.length = 0

    def take_detection(self, det: Tracklet) -> None:
        """Score, class and detection index of the detection just matched."""
        self.score, self.class_id, self.det_index = det.score, det.class_id, det.det_index

    def __repr__(self) -> str:
        return f"Tracklet(id={self.track_id}, state={self.state}, frames {self.start_frame}-{self.frame_id})"


def detection_boxes(xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 4) float32 x1y1x2y2 -> (tlwh, x1y1x2y2) float32 as Ultralytics derives them: centre/size in float32, the
    top-left corner in float64 rounded to float32, the far corner as top-left + size in float32."""
    centre = (xyxy[:, :2] + xyxy[:, 2:]) / 2
    size = xyxy[:, 2:] - xyxy[:, :2]
    tlwh = np.concatenate([centre.astype(np.float64) - size.astype(np.float64) / 2, size], axis=1).astype(np.float32)
    corners = tlwh.copy()
    corners[:, 2:] += corners[:, :2]
    return tlwh, corners


def valid_boxes(xyxy: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Boxes a Kalman filter can take: positive width and height, every number finite."""
    size = xyxy[:, 2:] - xyxy[:, :2]
    return (size[:, 0] > 0) & (size[:, 1] > 0) & np.isfinite(xyxy).all(axis=1) & np.isfinite(scores)


def join(first: list, second: list) -> list:
    """``first`` then the tracks of ``second`` whose id is not in ``first``."""
    ids = {t.track_id for t in first}
    return first + [t for t in second if t.track_id not in ids]


def without(tracks: list, ids) -> list:
    ids = ids if isinstance(ids, set) else set(ids)
    return [t for t in tracks if t.track_id not in ids]


class Tracker(ABC):
    """Multi-object tracker over one video or stream: call :meth:`update` once per frame, in order.

    Each instance has its own track-id counter starting at 1 (and :meth:`reset` starts it again), so trackers of
    different streams never share ids.
    """

    name: str = ""
    kalman: BoxKalman
    track_class: type = Tracklet  # what detections become (subclasses add per-track state)

    def __init__(self, config: TrackerConfig):
        self.config = config
        self.reset()

    @abstractmethod
    def update(self, detections: Detections, image: np.ndarray | None = None) -> Tracks:
        """Take this frame's detections (and the BGR frame, for camera-motion compensation); return the confirmed
        tracks."""

    def reset(self, keep_ids: bool = False) -> None:
        """Forget every track and restart ids at 1 (a new video); ``keep_ids`` goes on counting instead (a live
        stream back from an outage its tracks could not span: its new tracks never reuse an old id)."""
        self.frame_id = 0
        self.tracked: list[Tracklet] = []
        self.lost: list[Tracklet] = []
        self.removed_ids: list[int] = []
        if not keep_ids:
            self._last_id = 0

    # --- helpers for subclasses --------------------------------------------------------------------------------------
    def _next_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def _candidates(self, detections: Detections) -> tuple[list[Tracklet], np.ndarray]:
        """The detections a Kalman filter can take, as tracklets, and their scores (float32)."""
        keep = valid_boxes(detections.xyxy, detections.scores)
        index = np.flatnonzero(keep)
        tlwh, corners = detection_boxes(detections.xyxy[index])
        scores = detections.scores[index]
        classes = detections.class_ids[index].tolist()
        score_items = list(scores)  # numpy float32 scalars, as the reference keeps them
        make = self.track_class
        return [make(tlwh[k], corners[k], score_items[k], classes[k], int(i)) for k, i in enumerate(index)], scores

    def boxes(self, tracks: list[Tracklet]) -> np.ndarray:
        """(n, 4) x1y1x2y2 of tracks (Kalman estimate, float64) or of detections (float32)."""
        if not tracks:
            return np.zeros((0, 4), dtype=np.float32)
        if tracks[0].mean is None:
            return np.array([t.xyxy32 for t in tracks])
        return self.kalman.boxes(np.array([t.mean for t in tracks]))

    def _predict(self, tracks: list[Tracklet], frozen_velocity: list[int]) -> None:
        """Kalman prediction; tracks not in the Tracked state get the ``frozen_velocity`` components zeroed first."""
        if not tracks:
            return
        mean = np.array([t.mean for t in tracks])
        cov = np.array([t.cov for t in tracks])
        moving = np.array([t.state == TRACKED for t in tracks])
        if not moving.all():
            idle = np.flatnonzero(~moving)
            mean[np.ix_(idle, frozen_velocity)] = 0
        mean, cov = self.kalman.predict(mean, cov)
        for t, m, c in zip(tracks, mean, cov):
            t.mean, t.cov = m, c

    def _correct(self, tracks: list[Tracklet], dets: list[Tracklet], confidences: bool = False) -> None:
        """Kalman update of each track with its detection (the two lists pair up)."""
        if not tracks:
            return
        mean = np.array([t.mean for t in tracks])
        cov = np.array([t.cov for t in tracks])
        z = self.kalman.measure(np.array([d.tlwh for d in dets]))
        conf = np.array([float(d.score) for d in dets]) if confidences else None
        mean, cov = self.kalman.update(mean, cov, z, conf)
        for t, m, c in zip(tracks, mean, cov):
            t.mean, t.cov = m, c

    def _start(self, dets: list[Tracklet]) -> None:
        """Give new tracks their Kalman state (ids are taken by the caller, in order)."""
        if not dets:
            return
        mean, cov = self.kalman.initiate(self.kalman.measure(np.array([d.tlwh for d in dets])))
        for d, m, c in zip(dets, mean, cov):
            d.mean, d.cov = m, c

    @staticmethod
    def _warp(tracks: list[Tracklet], warp: np.ndarray) -> None:
        """Apply a camera-motion warp to XYWH states: centres and their velocities rotate and shift, sizes scale by
        |R| (the box enclosing the rotated box)."""
        if not tracks:
            return
        rotation = warp[:2, :2]
        full = np.kron(np.eye(4, dtype=np.float32), rotation)
        full[2:4, 2:4] = full[6:8, 6:8] = np.abs(rotation)
        mean = np.matmul(full, np.array([t.mean for t in tracks])[..., None])[..., 0]
        mean[:, :2] += warp[:2, 2]
        cov = np.matmul(np.matmul(full, np.array([t.cov for t in tracks])), np.ascontiguousarray(full.T))
        for t, m, c in zip(tracks, mean, cov):
            t.mean, t.cov = m, c

    def _finish_frame(self, activated: list, refound: list, lost: list, removed: list) -> None:
        """End-of-frame pools, in the reference order: first the lost tracks unseen for more than ``buffer``
        frames are removed; then tracked = still-tracked + activated + refound; lost minus those found again,
        plus the newly lost, minus ids removed in earlier frames (a track removed this frame stays in the lost
        pool one more frame, as in ByteTrack); then tracked/lost duplicates are dropped."""
        for track in self.lost:
            if self.frame_id - track.frame_id > self.buffer:
                track.state = REMOVED
                removed.append(track)
        tracked = [t for t in self.tracked if t.state == TRACKED]
        tracked = join(join(tracked, activated), refound)
        lost_pool = without(self.lost, {t.track_id for t in tracked}) + lost
        lost_pool = without(lost_pool, set(self.removed_ids))
        self.tracked, self.lost = self._drop_duplicates(tracked, lost_pool)
        self.removed_ids.extend(t.track_id for t in removed)
        if len(self.removed_ids) > REMOVED_MEMORY:
            self.removed_ids = self.removed_ids[-REMOVED_MEMORY:]

    def _drop_duplicates(self, tracked: list, lost: list) -> tuple[list, list]:
        if not tracked or not lost:
            return tracked, lost
        close = iou_cost(self.boxes(tracked), self.boxes(lost)) < DUPLICATE_IOU_COST
        drop_tracked, drop_lost = set(), set()
        for p, q in zip(*np.nonzero(close)):
            if tracked[p].frame_id - tracked[p].start_frame > lost[q].frame_id - lost[q].start_frame:
                drop_lost.add(q)
            else:
                drop_tracked.add(p)
        return ([t for i, t in enumerate(tracked) if i not in drop_tracked],
                [t for i, t in enumerate(lost) if i not in drop_lost])

    def _output(self, tracks: list[Tracklet]) -> Tracks:
        if not tracks:
            return Tracks.empty()
        return Tracks(xyxy=self.boxes(tracks).astype(np.float32),
                      track_ids=np.array([t.track_id for t in tracks], dtype=np.int64),
                      scores=np.array([t.score for t in tracks], dtype=np.float32),
                      class_ids=np.array([t.class_id for t in tracks], dtype=np.int32),
                      det_index=np.array([t.det_index for t in tracks], dtype=np.int64))
