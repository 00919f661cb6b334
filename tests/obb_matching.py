"""Matching rotated detections for the OBB parity tests: exact polygon IoU of rotated boxes (OpenCV's convex
intersection) and the tally of the issue's criteria (same class, rotated IoU >= 0.99, |score difference| <= 0.002,
|angle difference| <= 1e-3 rad modulo pi)."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

IOU_MIN = 0.99
SCORE_TOL = 0.002
ANGLE_TOL = 1e-3


@dataclass
class Rotated:
    """One image's oriented detections: (n, 5) xywhr, (n,) scores, (n,) class ids."""

    xywhr: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def corners(xywhr: np.ndarray) -> np.ndarray:
    """(n, 4, 2) float32 corners, computed independently of the runtime (cv2.boxPoints)."""
    return np.array([cv2.boxPoints(((float(x), float(y)), (float(w), float(h)), float(np.degrees(r))))
                     for x, y, w, h, r in np.asarray(xywhr, np.float64)], np.float32).reshape(-1, 4, 2)


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _ccw(poly: np.ndarray) -> np.ndarray:
    x, y = poly[:, 0], poly[:, 1]
    return poly if np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)) >= 0 else poly[::-1]


def _clip(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman: the part of convex ``subject`` inside convex counter-clockwise ``clip`` (float64).
    (OpenCV's intersectConvexConvex misreads near-coincident polygons, exactly the case parity compares.)"""
    out = subject
    for k in range(len(clip)):
        if not len(out):
            break
        a, b = clip[k], clip[(k + 1) % len(clip)]
        edge = b - a
        side = edge[0] * (out[:, 1] - a[1]) - edge[1] * (out[:, 0] - a[0])  # >= 0: inside
        points = []
        for i in range(len(out)):
            j = (i + 1) % len(out)
            if side[i] >= 0:
                points.append(out[i])
            if (side[i] >= 0) != (side[j] >= 0):
                t = side[i] / (side[i] - side[j])
                points.append(out[i] + t * (out[j] - out[i]))
        out = np.array(points).reshape(-1, 2)
    return out


def polygon_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of rotated boxes (xywhr) by exact polygon intersection, in float64."""
    ca = [_ccw(p) for p in corners(a).astype(np.float64)]
    cb = [_ccw(q) for q in corners(b).astype(np.float64)]
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    reach = np.hypot(a[:, 2], a[:, 3])[:, None] / 2 + np.hypot(b[:, 2], b[:, 3])[None, :] / 2
    apart = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1]) > reach
    out = np.zeros((len(ca), len(cb)))
    for i, p in enumerate(ca):
        area_p = _area(p)
        for j, q in enumerate(cb):
            inter = 0.0 if apart[i, j] else _area(_clip(p, q))
            union = area_p + _area(q) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def angle_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| modulo pi, in [0, pi/2]."""
    d = np.mod(np.asarray(a, np.float64) - np.asarray(b, np.float64), np.pi)
    return np.minimum(d, np.pi - d)


@dataclass
class RotatedTally:
    theirs: int = 0
    matched: int = 0
    ours: int = 0
    ours_unmatched: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, name: str, theirs: Rotated, ours: Rotated, conf: float) -> None:
        """Count ``theirs`` above conf + tolerance that ``ours`` matches, and ours above it that match nothing."""
        iou = polygon_iou(theirs.xywhr, ours.xywhr) if len(theirs) and len(ours) else np.zeros((len(theirs), len(ours)))
        ok = ((iou >= IOU_MIN) & (theirs.class_ids[:, None] == ours.class_ids[None, :])
              & (np.abs(theirs.scores[:, None] - ours.scores[None, :]) <= SCORE_TOL)
              & (angle_gap(theirs.xywhr[:, None, 4], ours.xywhr[None, :, 4]) <= ANGLE_TOL))
        sure_theirs = theirs.scores > conf + SCORE_TOL
        sure_ours = ours.scores > conf + SCORE_TOL
        self.theirs += int(sure_theirs.sum())
        self.matched += int((ok.any(1) & sure_theirs).sum())
        self.ours += int(sure_ours.sum())
        self.ours_unmatched += int((~ok.any(0) & sure_ours).sum())
        for i in np.flatnonzero(sure_theirs & ~ok.any(1)):
            best = int(iou[i].argmax()) if iou.shape[1] else -1
            self.failures.append(f"{name}: theirs #{i} {theirs.xywhr[i].round(2).tolist()} score {theirs.scores[i]:.4f}"
                                 f" unmatched (best IoU {iou[i, best] if best >= 0 else 0:.4f})")

    def assert_parity(self, min_detections: int) -> None:
        assert self.theirs >= min_detections, f"only {self.theirs} detections compared"
        assert self.matched >= 0.99 * self.theirs, f"{self.matched}/{self.theirs} matched: {self.failures[:5]}"
        assert self.ours_unmatched <= 0.01 * self.ours, f"{self.ours_unmatched}/{self.ours} of ours unmatched"
