"""ByteTrack (Zhang et al., ECCV 2022) and BoT-SORT without ReID (Aharon et al., 2022), as Ultralytics runs them.

One frame, in order:

1. detections split by score: high (>= ``track_high_thresh``) and low (between the two thresholds);
2. Kalman prediction of the confirmed and lost tracks (BoT-SORT then warps them by the camera motion);
3. first association: those tracks against the high detections, cost 1 - IoU (times the score when
   ``fuse_score``), optimal assignment up to ``match_thresh``;
4. second association: still-unmatched *tracked* tracks against the low detections, plain IoU cost up to 0.5;
   tracks left over become lost;
5. unconfirmed tracks (started last frame) against the leftover high detections, up to 0.7; unmatched ones are
   removed;
6. leftover high detections scoring >= ``new_track_thresh`` start tracks (confirmed at once only on frame 1);
7. lost tracks unseen for more than ``track_buffer`` frames are removed.
"""

from __future__ import annotations

import numpy as np

from runtime.track.base import LOST, REMOVED, TRACKED, Tracker, Tracklet
from runtime.track.camera_motion import CameraMotion
from runtime.track.config import TrackerConfig
from runtime.track.kalman import XYAH, XYWH
from runtime.track.matching import assign, fuse_scores, iou_cost
from runtime.track.types import Detections, Tracks

SECOND_STAGE_LIMIT = 0.5
UNCONFIRMED_LIMIT = 0.7


class ByteTrack(Tracker):
    """ByteTrack: two-stage association that also uses low-score detections to keep tracks alive."""

    name = "bytetrack"
    kalman = XYAH
    frozen_velocity = [7]  # height velocity of tracks not currently tracked

    def __init__(self, config: TrackerConfig):
        c = config.settings
        self.high, self.low, self.new_thresh = c["track_high_thresh"], c["track_low_thresh"], c["new_track_thresh"]
        self.buffer, self.limit, self.fuse = c["track_buffer"], c["match_thresh"], c["fuse_score"]
        super().__init__(config)

    # --- hooks ------------------------------------------------------------------------------------------------------
    def _cost(self, tracks: list[Tracklet], dets: list[Tracklet]) -> np.ndarray:
        cost = iou_cost(self.boxes(tracks), self.boxes(dets))
        if self.fuse:
            cost = fuse_scores(cost, np.array([d.score for d in dets]))
        return cost

    def _compensate(self, pool: list, unconfirmed: list, image, high_xyxy: np.ndarray) -> None:
        """Camera-motion compensation after prediction (none for ByteTrack)."""

    def _after_first(self, pool, dets, u_track, u_det, activated, refound):
        """Extra association between the two stages (OC-SORT's recovery); none here."""
        return u_track, u_det

    def _second(self, pool: list, u_track, dets_low: list, activated: list, refound: list, lost: list) -> None:
        left = [pool[i] for i in u_track if pool[i].state == TRACKED]
        unmatched = range(len(left))
        if left and dets_low:
            pairs, unmatched, _ = assign(iou_cost(self.boxes(left), self.boxes(dets_low)), SECOND_STAGE_LIMIT)
            self._apply(pairs, left, dets_low, activated, refound)
        for i in unmatched:
            left[i].state = LOST
            lost.append(left[i])

    # --- track updates (subclasses add their own per-track state) ---------------------------------------------------
    def _apply(self, pairs: np.ndarray, tracks: list, dets: list, activated: list, refound: list) -> None:
        """Kalman-update matched tracks; tracked ones go to ``activated``, lost ones come back into ``refound``."""
        if not len(pairs):
            return
        matched = [tracks[i] for i in pairs[:, 0]]
        found = [dets[j] for j in pairs[:, 1]]
        self._correct(matched, found)
        for track, det in zip(matched, found):
            if track.state == TRACKED:
                track.length += 1
                activated.append(track)
            else:
                track.length = 0
                track.state = TRACKED
                refound.append(track)
            track.confirmed = True
            track.frame_id = self.frame_id
            track.take_detection(det)

    def _activate(self, dets: list[Tracklet]) -> None:
        self._start(dets)
        for d in dets:
            d.track_id = self._next_id()
            d.state = TRACKED
            d.length = 0
            d.confirmed = self.frame_id == 1
            d.frame_id = d.start_frame = self.frame_id

    # --- one frame --------------------------------------------------------------------------------------------------
    def update(self, detections: Detections, image: np.ndarray | None = None) -> Tracks:
        self.frame_id += 1
        activated, refound, lost, removed = [], [], [], []
        candidates, scores = self._candidates(detections)
        dets_high = [d for d, s in zip(candidates, scores >= self.high) if s]
        dets_low = [d for d, s in zip(candidates, (scores > self.low) & (scores < self.high)) if s]

        unconfirmed = [t for t in self.tracked if not t.confirmed]
        pool = [t for t in self.tracked if t.confirmed]
        ids = {t.track_id for t in pool}
        pool += [t for t in self.lost if t.track_id not in ids]
        self._predict(pool, self.frozen_velocity)
        if image is not None:
            self._compensate(pool, unconfirmed, image, np.array([detections.xyxy[d.det_index] for d in dets_high]))

        pairs, u_track, u_det = assign(self._cost(pool, dets_high), self.limit)
        self._apply(pairs, pool, dets_high, activated, refound)
        u_track, u_det = self._after_first(pool, dets_high, u_track, u_det, activated, refound)
        self._second(pool, u_track, dets_low, activated, refound, lost)

        leftover = [dets_high[i] for i in u_det]
        new_index = range(len(leftover))
        if unconfirmed:
            pairs, u_unconfirmed, new_index = assign(self._cost(unconfirmed, leftover), UNCONFIRMED_LIMIT)
            self._apply(pairs, unconfirmed, leftover, activated, [])
            for i in u_unconfirmed:
                unconfirmed[i].state = REMOVED
                removed.append(unconfirmed[i])
        starting = [leftover[i] for i in new_index if not leftover[i].score < self.new_thresh]
        self._activate(starting)
        activated += starting

        self._finish_frame(activated, refound, lost, removed)
        return self._output([t for t in self.tracked if t.confirmed])


class BoTSORT(ByteTrack):
    """BoT-SORT without ReID: ByteTrack with an XYWH Kalman state and camera-motion compensation."""

    name = "botsort"
    kalman = XYWH
    frozen_velocity = [6, 7]  # width and height velocities

    def __init__(self, config: TrackerConfig):
        self.camera = CameraMotion(config.settings["gmc_method"])
        super().__init__(config)

    def reset(self, keep_ids: bool = False) -> None:
        super().reset(keep_ids)
        self.camera.reset()

    def _compensate(self, pool: list, unconfirmed: list, image, high_xyxy: np.ndarray) -> None:
        if self.camera.method is None:
            return
        warp = self.camera.estimate(image, high_xyxy)
        self._warp(pool, warp)
        self._warp(unconfirmed, warp)
