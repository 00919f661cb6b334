"""OC-SORT (Cao et al., "Observation-Centric SORT", CVPR 2023) as Ultralytics 8.4 runs it: ByteTrack's frame
structure with three observation-centric additions.

* OCM: the first-stage cost adds ``inertia`` x the angle (/ pi) between a track's observed direction of motion (its
  last observation against the one ``delta_t`` frames earlier) and the direction from its last observation to each
  detection;
* OCR: tracks still unmatched after the first stage are matched again by the IoU of their *last observation* (not
  the prediction), tracked tracks first, then lost ones;
* ORU: a lost track found again by OCR first replays its Kalman filter along a straight line of virtual observations
  across the gap, so the occlusion does not leave a drifted velocity.

The low-score second stage runs only with ``use_byte: true``.
"""

from __future__ import annotations

import numpy as np

from runtime.track.base import LOST, TRACKED, Tracklet
from runtime.track.bytetrack import ByteTrack
from runtime.track.config import TrackerConfig
from runtime.track.kalman import _TRANSITION, _TRANSITION_T
from runtime.track.matching import assign, fuse_scores, iou_cost


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


class ObservedTrack(Tracklet):
    """A tracklet that keeps its recent real observations (x1y1x2y2, float32) and the state at the last one."""

    __slots__ = ("last_seen", "seen", "direction", "saved")

    def __init__(self, *args):
        super().__init__(*args)
        self.last_seen = np.array([-1, -1, -1, -1], dtype=np.float32)
        self.seen: dict[int, np.ndarray] = {}
        self.direction = None  # unit (dx, dy) float32, or None before two observations
        self.saved = None      # (mean, cov) after the last observation

    def observe(self, box: np.ndarray, frame_id: int, keep: int) -> None:
        self.last_seen = box
        self.seen[frame_id] = box
        if len(self.seen) > keep:
            for old in sorted(self.seen)[:-keep]:
                del self.seen[old]

    def observed_direction(self, delta_t: int):
        if len(self.seen) < 2:
            return None
        newest = max(self.seen)
        earlier = next((self.seen[f] for f in sorted(self.seen, reverse=True) if f < newest - delta_t + 1), None)
        if earlier is None:
            oldest = min(self.seen)
            if oldest == newest:
                return None
            earlier = self.seen[oldest]
        step = _centre(self.seen[newest]) - _centre(earlier)
        length = np.linalg.norm(step)
        if length < 1e-6:
            return np.zeros(2, dtype=np.float32)
        return (step / length).astype(np.float32)


class OCSORT(ByteTrack):
    name = "ocsort"
    track_class = ObservedTrack

    def __init__(self, config: TrackerConfig):
        c = config.settings
        self.delta_t, self.inertia, self.use_byte = c["delta_t"], c["inertia"], c["use_byte"]
        super().__init__(config)

    # --- costs --------------------------------------------------------------------------------------------------------
    def _cost(self, tracks: list, dets: list) -> np.ndarray:
        cost = iou_cost(self.boxes(tracks), self.boxes(dets))
        cost = fuse_scores(cost, np.array([d.score for d in dets])) if self.fuse else cost.copy()
        return cost + self.inertia * self._direction_cost(tracks, dets)

    def _direction_cost(self, tracks: list, dets: list) -> np.ndarray:
        cost = np.zeros((len(tracks), len(dets)), dtype=np.float32)
        if cost.size == 0:
            return cost
        centres = np.array([_centre(d.xyxy32) for d in dets], dtype=np.float32)
        for i, track in enumerate(tracks):
            if track.direction is None or track.last_seen[0] < 0:
                continue
            towards = centres - _centre(track.last_seen)
            length = np.linalg.norm(towards, axis=1)
            valid = length > 1e-6
            if not valid.any():
                continue
            towards[valid] /= length[valid, None]
            cost[i, valid] = np.arccos(np.clip(towards[valid] @ track.direction, -1.0, 1.0)) / np.pi
        return cost

    # --- track updates ------------------------------------------------------------------------------------------------
    def _apply(self, pairs, tracks, dets, activated, refound, repair: bool = False) -> None:
        if not len(pairs):
            return
        if repair:
            for i, j in pairs:
                if tracks[i].state != TRACKED:
                    self._replay_gap(tracks[i], dets[j].xyxy32)
        super()._apply(pairs, tracks, dets, activated, refound)
        for i, j in pairs:
            self._remember(tracks[i], dets[j].xyxy32.copy())
            tracks[i].direction = tracks[i].observed_direction(self.delta_t)

    def _remember(self, track: ObservedTrack, box: np.ndarray) -> None:
        track.observe(box, self.frame_id, self.delta_t + 2)
        track.saved = (track.mean.copy(), track.cov.copy())

    def _activate(self, dets: list) -> None:
        super()._activate(dets)
        if dets:
            boxes = self.boxes(dets)  # dets now have a Kalman state: their box from it
            for d, box in zip(dets, boxes):
                self._remember(d, box.astype(np.float32))

    def _replay_gap(self, track: ObservedTrack, box: np.ndarray) -> None:
        """ORU: restart from the state at the last observation and step through a straight line to ``box``."""
        if track.saved is None or not track.seen:
            return
        last = max(track.seen)
        gap = self.frame_id - last
        if gap <= 1:
            return
        mean, cov = track.saved[0][None].copy(), track.saved[1][None].copy()
        start = track.seen[last]
        for t in range(1, gap):
            alpha = t / gap
            virtual = (1 - alpha) * start + alpha * box
            tlwh = virtual.copy()
            tlwh[2:] = virtual[2:] - virtual[:2]
            mean, cov = self._predict_one(mean, cov)
            mean, cov = self.kalman.update(mean, cov, self.kalman.measure(tlwh[None]))
        track.mean, track.cov = (a[0] for a in self._predict_one(mean, cov))

    def _predict_one(self, mean: np.ndarray, cov: np.ndarray):
        """Single-track prediction, with the matrix products grouped F (P F^T) as the reference's single-track
        filter does (the batched one groups (F P) F^T)."""
        std = self.kalman._stds(mean, 1.0 / 20, 1.0 / 160, 1e-2, 1e-5)
        cov = np.matmul(_TRANSITION, np.matmul(cov, _TRANSITION_T))
        cov[:, range(8), range(8)] += np.square(std)
        return mean @ _TRANSITION_T, cov

    # --- the stages OC-SORT changes -----------------------------------------------------------------------------------
    def _recover(self, tracks: list, dets: list, activated: list, refound: list):
        """OCR: match by the IoU of each track's last observation."""
        if not tracks or not dets:
            return list(range(len(tracks))), list(range(len(dets)))
        last = np.array([t.last_seen if t.last_seen[0] >= 0 else self.boxes([t])[0] for t in tracks],
                        dtype=np.float32)
        cost = iou_cost(last, self.boxes(dets))
        if self.fuse:
            cost = fuse_scores(cost, np.array([d.score for d in dets]))
        pairs, u_track, u_det = assign(cost, self.limit)
        self._apply(pairs, tracks, dets, activated, refound, repair=True)
        return list(u_track), list(u_det)

    def _after_first(self, pool, dets, u_track, u_det, activated, refound):
        if not len(u_det):
            return u_track, u_det
        candidates = [dets[i] for i in u_det]
        tracked = [i for i in u_track if pool[i].state == TRACKED]
        others = [i for i in u_track if pool[i].state != TRACKED]
        u_t1, u_d1 = self._recover([pool[i] for i in tracked], candidates, activated, refound)
        u_t2, u_d2 = self._recover([pool[i] for i in others], [candidates[j] for j in u_d1], activated, refound)
        return [tracked[i] for i in u_t1] + [others[i] for i in u_t2], [u_det[u_d1[j]] for j in u_d2]

    def _second(self, pool, u_track, dets_low, activated, refound, lost) -> None:
        if self.use_byte:
            return super()._second(pool, u_track, dets_low, activated, refound, lost)
        for i in u_track:
            if pool[i].state == TRACKED:
                pool[i].state = LOST
                lost.append(pool[i])
