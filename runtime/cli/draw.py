"""Annotated copies of images: boxes (rotated ones as their outline), labels with scores (and track ids), translucent masks, keypoints and
the recent path of each track."""

from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np

from runtime.records.result import Result

_PALETTE_HEX = ("FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
                "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7")
PALETTE_BGR = tuple(tuple(int(h[i:i + 2], 16) for i in (4, 2, 0)) for h in _PALETTE_HEX)


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable BGR colour per class id."""
    return PALETTE_BGR[class_id % len(PALETTE_BGR)]


def annotate(image_bgr: np.ndarray, result: Result, mask_alpha: float = 0.5,
             trails: Mapping[int, Sequence[tuple[float, float]]] | None = None) -> np.ndarray:
    """Return a copy of ``image_bgr`` (h, w, 3) uint8 with the detections of ``result`` drawn on it.

    Masks are drawn only when they are at original resolution (``mask_form == "native"``). A classifier's top-5
    classes and probabilities are written at the top left. Tracked Results carry the id in each label;
    ``trails`` maps track ids to their recent box centres, drawn as lines.
    """
    canvas = image_bgr.copy()
    h, w = canvas.shape[:2]
    thickness = max(round((h + w) / 2 * 0.003), 2)
    font_scale = thickness / 3
    if result.masks is not None and result.mask_form == "native" and len(result):
        overlay = canvas.copy()
        for mask, cls in zip(result.masks, result.class_ids):
            overlay[mask] = class_color(int(cls))
        cv2.addWeighted(overlay, mask_alpha, canvas, 1 - mask_alpha, 0, dst=canvas)
    ids = result.track_ids if result.track_ids is not None else [None] * len(result)
    quads = result.corners if result.corners is not None else [None] * len(result)  # oriented boxes
    for box, score, cls, track_id, quad in zip(result.xyxy, result.scores, result.class_ids, ids, quads):
        color = class_color(int(cls))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        if quad is None:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        else:
            cv2.polylines(canvas, [np.round(quad).astype(np.int32).reshape(-1, 1, 2)], True, color, thickness,
                          cv2.LINE_AA)
        path = (trails or {}).get(int(track_id)) if track_id is not None else None
        if path is not None and len(path) > 1:
            points = np.round(np.asarray(path, np.float32)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(canvas, [points], False, color, thickness, cv2.LINE_AA)
        label = f"{result.names[cls]} {score:.2f}" if track_id is None else f"id:{track_id} {result.names[cls]} {score:.2f}"
        (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, max(thickness - 1, 1))
        top = y1 - th - baseline - 3 if y1 - th - baseline - 3 >= 0 else y1
        cv2.rectangle(canvas, (x1, top), (x1 + tw + 2, top + th + baseline + 3), color, -1, cv2.LINE_AA)
        cv2.putText(canvas, label, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                    max(thickness - 1, 1), cv2.LINE_AA)
    if result.probs is not None:
        _draw_top5(canvas, result, font_scale, max(thickness - 1, 1))
    if result.keypoints is not None:
        for person in result.keypoints:
            for point in person:
                if point.shape[0] == 3 and point[2] < 0.5:
                    continue
                cv2.circle(canvas, (int(point[0]), int(point[1])), thickness + 1, (0, 255, 255), -1, cv2.LINE_AA)
    return canvas


def _draw_top5(canvas: np.ndarray, result: Result, font_scale: float, thickness: int) -> None:
    """A classifier's top-5 classes with probabilities, one line each at the top left, best first."""
    y = 0
    for c in result.top5:
        label = f"{result.names[c]} {float(result.probs[c]):.2f}"
        (tw, th), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        cv2.rectangle(canvas, (0, y), (tw + 6, y + th + baseline + 6), class_color(int(c)), -1, cv2.LINE_AA)
        cv2.putText(canvas, label, (3, y + th + 3), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thickness,
                    cv2.LINE_AA)
        y += th + baseline + 6
