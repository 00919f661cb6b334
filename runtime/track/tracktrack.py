"""TrackTrack (Shim et al., "Focusing on Tracks for Online Multi-Object Tracking", CVPR 2025) without ReID, as
Ultralytics 8.4 runs it (its default tracker).

Differences from ByteTrack that shape the behaviour:

* one association of all tracks (tracked and lost) against high *and* low detections, with a multi-cue cost:
  1 - HMIoU (IoU times the vertical IoU), ``conf_weight`` x |projected track score - detection score|, and
  ``angle_weight`` x the angle between each box corner's recent motion and the direction to the detection; pairs with
  IoU <= 0.1 cost 1, low detections pay ``penalty_p`` more;
* iterative assignment: mutually-cheapest pairs under ``match_thresh``, the threshold lowered by ``reduce_step``
  each round (no Hungarian step);
* a Kalman update whose measurement noise shrinks with detection confidence (NSA Kalman);
* track-aware initialisation: leftover high detections above ``new_track_thresh`` start tracks only when they
  overlap no active track or stronger new detection by more than ``tai_thr``; a track is confirmed after
  ``min_track_len`` consecutive matches (or at once on frame 1);
* camera-motion compensation before the prediction, as BoT-SORT (``gmc_method``).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from runtime.track.base import LOST, NEW, REMOVED, TRACKED, Tracker, Tracklet
from runtime.track.camera_motion import CameraMotion
from runtime.track.config import TrackerConfig
from runtime.track.kalman import XYWH
from runtime.track.matching import greedy_assign, iou
from runtime.track.types import Detections, Tracks

SUPPORT_IOU = 0.10  # pairs overlapping less than this cost 1
HISTORY_STEPS = 3   # corner motion is averaged over the last 3 frames
_CORNER_X = np.array([0, 0, 2, 2])  # corners LT, LB, RT, RB of x1, y1, x2, y2
_CORNER_Y = np.array([1, 3, 1, 3])


class CornerTrack(Tracklet):
    """A tracklet with the history TrackTrack needs: previous score, corner velocities, recent boxes."""

    __slots__ = ("prev_score", "velocity", "history")

    def __init__(self, *args):
        super().__init__(*args)
        self.prev_score = self.score
        self.velocity = np.zeros((4, 2), dtype=np.float32)
        self.history: deque = deque(maxlen=HISTORY_STEPS + 1)  # (frame id, x1y1x2y2) newest last

    def box_before(self, frame_id: int, steps: int, own_box) -> np.ndarray:
        """The box recorded ``steps`` frames before ``frame_id``, else the newest recorded, else ``own_box()``."""
        wanted = frame_id - steps
        for seen, box in self.history:
            if seen == wanted:
                return box
        return self.history[-1][1] if self.history else own_box()


class TrackTrack(Tracker):
    name = "tracktrack"
    kalman = XYWH
    frozen_velocity = [6, 7]
    track_class = CornerTrack

    def __init__(self, config: TrackerConfig):
        c = config.settings
        self.high, self.low = c["track_high_thresh"], c["track_low_thresh"]
        self.new_thresh, self.buffer = c["new_track_thresh"], c["track_buffer"]
        self.limit, self.lost_limit, self.step = c["match_thresh"], c["lost_match_thr"], c["reduce_step"]
        self.penalty_low = c["penalty_p"]
        self.conf_weight, self.angle_weight = c["conf_weight"], c["angle_weight"]
        self.tai_thr, self.min_len = c["tai_thr"], c["min_track_len"]
        self.camera = CameraMotion(c["gmc_method"])
        super().__init__(config)

    def reset(self, keep_ids: bool = False) -> None:
        super().reset(keep_ids)
        self.camera.reset()

    def _box(self, track: Tracklet) -> np.ndarray:
        return self.kalman.boxes(track.mean[None])[0] if track.mean is not None else track.xyxy32.copy()

    # --- costs --------------------------------------------------------------------------------------------------------
    def _cost(self, tracks: list[CornerTrack], dets: list[CornerTrack]) -> np.ndarray:
        n, m = len(tracks), len(dets)
        if n == 0 or m == 0:
            return np.ones((n, m), dtype=np.float32)
        a = np.ascontiguousarray(self.boxes(tracks), dtype=np.float32)
        b = np.ascontiguousarray(self.boxes(dets), dtype=np.float32)
        overlap = iou(a, b)
        v_inter = np.minimum(a[:, 3:4], b[:, 3:4].T) - np.maximum(a[:, 1:2], b[:, 1:2].T)
        v_union = np.maximum(a[:, 3:4], b[:, 3:4].T) - np.minimum(a[:, 1:2], b[:, 1:2].T)
        cost = 1.0 - np.clip(v_inter / (v_union + 1e-9), 0, 1) * overlap
        score = np.array([t.score for t in tracks])
        projected = score + (score - np.array([t.prev_score for t in tracks]))
        cost += self.conf_weight * np.abs(projected[:, None] - np.array([d.score for d in dets])[None])
        supported = overlap > SUPPORT_IOU
        pairs = np.nonzero(supported)
        if len(pairs[0]):
            cost[pairs] += self.angle_weight * self._angle_cost(tracks, dets, pairs)
        cost[~supported] = 1.0
        return np.clip(cost, 0, 1)

    def _angle_cost(self, tracks: list, dets: list, pairs) -> np.ndarray:
        """Mean angle (over the 4 corners, / pi) between each corner's velocity and the move to the detection, times
        the detection score; only for the supported pairs."""
        rows, cols = pairs
        past = np.stack([tracks[i].box_before(self.frame_id, HISTORY_STEPS, lambda t=tracks[i]: self._box(t))
                         for i in rows])
        move = np.stack([dets[j].xyxy32 for j in cols]) - past
        dx, dy = move[:, _CORNER_X], move[:, _CORNER_Y]
        norm = np.sqrt(dx * dx + dy * dy) + 1e-5
        dx /= norm
        dy /= norm
        velocity = np.stack([tracks[i].velocity for i in rows])
        cosine = velocity[:, :, 0] * dx + velocity[:, :, 1] * dy
        angle = np.abs(np.arccos(np.clip(cosine, -1, 1))).mean(axis=-1) / np.pi
        return angle * np.array([dets[j].score for j in cols])

    # --- track updates ------------------------------------------------------------------------------------------------
    def _match(self, pairs: list, tracks: list, dets: list, activated: list, refound: list) -> None:
        if not pairs:
            return
        matched = [tracks[i] for i, _ in pairs]
        found = [dets[j] for _, j in pairs]
        self._correct(matched, found, confidences=True)
        f = self.frame_id
        for track, det in zip(matched, found):
            track.prev_score = track.score
            if track.state == TRACKED or track.state == NEW:
                track.length += 1
                track.history.append((f, det.xyxy32))
                track.velocity = self._corner_velocity(track, det.xyxy32)
                if track.state == TRACKED or track.length + 1 >= self.min_len:
                    track.state = TRACKED
                    track.confirmed = True
                activated.append(track)
            else:  # lost (or removed this frame): found again
                track.history.append((f, self._box(track)))
                track.length = 0
                track.state = TRACKED
                track.confirmed = True
                refound.append(track)
            track.frame_id = f
            track.take_detection(det)

    def _corner_velocity(self, track: CornerTrack, box: np.ndarray) -> np.ndarray:
        velocity = np.zeros((4, 2), dtype=np.float32)
        for steps in range(1, HISTORY_STEPS + 1):
            move = box - track.box_before(self.frame_id, steps, None)
            dx, dy = move[_CORNER_X], move[_CORNER_Y]
            norm = np.sqrt(dx * dx + dy * dy) + 1e-5
            velocity += np.stack([dx / norm, dy / norm], axis=-1) / steps
        return velocity / HISTORY_STEPS

    def _activate(self, dets: list[CornerTrack]) -> None:
        self._start(dets)
        confirmed_state = TRACKED if self.min_len <= 1 else NEW
        for d in dets:
            d.track_id = self._next_id()
            d.history.append((self.frame_id, self._box(d)))
            d.length = 0
            d.state = confirmed_state
            d.confirmed = self.frame_id == 1 or confirmed_state == TRACKED
            d.frame_id = d.start_frame = self.frame_id

    def _allowed_new(self, active: list, dets: list) -> list[bool]:
        """Track-aware NMS: which leftover detections may start a track."""
        if not dets:
            return []
        scores = np.array([d.score for d in dets])
        allow = scores > self.new_thresh
        n_tracks = len(active)
        if n_tracks + len(dets) < 2:
            return allow.tolist()
        boxes = np.concatenate([np.asarray(self.boxes(active), dtype=np.float32).reshape(-1, 4),
                                self.boxes(dets).astype(np.float32)])
        overlap = iou(boxes, boxes)
        if n_tracks:
            allow &= overlap[n_tracks:, :n_tracks].max(axis=1) <= self.tai_thr
        among = overlap[n_tracks:, n_tracks:]
        for i in scores.argsort()[::-1]:
            if allow[i]:
                suppress = among[i] > self.tai_thr
                suppress[i] = False
                allow[suppress] = False
        return allow.tolist()

    # --- one frame ----------------------------------------------------------------------------------------------------
    def update(self, detections: Detections, image: np.ndarray | None = None) -> Tracks:
        self.frame_id += 1
        activated, refound, lost, removed = [], [], [], []
        candidates, scores = self._candidates(detections)
        dets_high = [d for d, s in zip(candidates, scores >= self.high) if s]
        dets_low = [d for d, s in zip(candidates, (scores > self.low) & (scores < self.high)) if s]

        unconfirmed = [t for t in self.tracked if t.state != TRACKED]
        pool = [t for t in self.tracked if t.state == TRACKED]
        ids = {t.track_id for t in pool}
        pool += [t for t in self.lost if t.track_id not in ids]
        if image is not None and self.camera.method is not None:
            warp = self.camera.estimate(image, [d.xyxy32 for d in dets_high])
            self._warp(pool, warp)
            self._warp(unconfirmed, warp)
        self._predict(pool, self.frozen_velocity)
        self._predict(unconfirmed, self.frozen_velocity)

        all_dets = dets_high + dets_low
        n_high = len(dets_high)
        cost = self._cost(pool, all_dets)
        if cost.shape[1] > n_high:
            cost[:, n_high:] += self.penalty_low
        cost = np.clip(cost, 0, 1)
        pairs, u_track, u_det = greedy_assign(cost, self.limit, self.step)
        self._match(pairs, pool, all_dets, activated, refound)
        for i in u_track:
            if pool[i].state != LOST:
                pool[i].state = LOST
                lost.append(pool[i])

        leftover = [all_dets[i] for i in u_det if i < n_high]
        if unconfirmed and leftover:
            pairs, u_unconfirmed, u_left = greedy_assign(self._cost(unconfirmed, leftover), self.limit, self.step)
            self._match(pairs, unconfirmed, leftover, activated, refound)
            for i in u_unconfirmed:
                unconfirmed[i].state = REMOVED
                removed.append(unconfirmed[i])
            leftover = [leftover[i] for i in u_left]
        else:
            for track in unconfirmed:
                track.state = REMOVED
                removed.append(track)

        if self.lost_limit > 0 and leftover:
            just_lost = {id(t) for t in lost}
            still_lost = [t for t in pool if t.state == LOST and id(t) not in just_lost]
            if still_lost:
                pairs, _, u_left = greedy_assign(self._cost(still_lost, leftover), self.lost_limit, self.step)
                self._match(pairs, still_lost, leftover, activated, refound)
                leftover = [leftover[i] for i in u_left]

        active = [t for t in self.tracked if t.state == TRACKED] + activated
        starting = [d for d, ok in zip(leftover, self._allowed_new(active, leftover)) if ok]
        self._activate(starting)
        activated += starting

        self._finish_frame(activated, refound, lost, removed)
        return self._output([t for t in self.tracked if t.confirmed and t.frame_id == self.frame_id])
