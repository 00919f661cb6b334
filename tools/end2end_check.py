"""Check that head convs found in a stock end-to-end export reproduce its ``output0``.

An end-to-end file (YOLOv10, YOLO26 with ``nms=False``) ends in a top-k: ``output0`` is (B, k, 6 + extra), rows
``x1 y1 x2 y2 score class extra`` best first. The found convs decode densely to Ultralytics' one-to-many layout
(B, 4 + nc + extra, N) with centre-size boxes; every row of ``output0`` must then be one of those (anchor, class)
pairs: same score, box and extra channels within tolerance. Rows are compared by content, not by position, so
the order torch's top-k gives tied scores does not matter.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SCORE_TOL = 1e-4
PIXEL_TOL = 1e-2


def _xyxy(dense_boxes: np.ndarray) -> np.ndarray:
    """(4, N) centre-size -> (N, 4) corners."""
    cx, cy, w, h = dense_boxes
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


def verify_end2end(output0: np.ndarray, dense: np.ndarray, nc: int, pixel_rows: Sequence[int]) -> str | None:
    """None when every row of ``output0`` (B, k, 6 + extra) is a pair of ``dense`` (B, 4 + nc + extra, N) and the
    rows hold the k best scores; otherwise what is wrong, in a few words."""
    b, k, width = output0.shape
    extra = dense.shape[1] - 4 - nc
    if dense.shape[0] != b or width != 6 + extra:
        return f"output0 is {list(output0.shape)}, the convs decode to {6 + extra} values per detection"
    pixel_extra = np.array([r - 4 - nc for r in pixel_rows if r >= 4 + nc], np.int64)
    extra_tol = np.full(extra, SCORE_TOL)
    extra_tol[pixel_extra] = PIXEL_TOL
    for i in range(b):
        boxes, scores, extras = _xyxy(dense[i, :4]), dense[i, 4:4 + nc].T, dense[i, 4 + nc:].T
        for row in output0[i]:
            score, cls = row[4], int(round(row[5]))
            if not 0 <= cls < nc:
                return f"class {row[5]:g} outside 0..{nc - 1}"
            near = np.flatnonzero(np.abs(scores[:, cls] - score) <= SCORE_TOL + SCORE_TOL * abs(score))
            fits = (np.abs(boxes[near] - row[:4]) <= PIXEL_TOL + 1e-4 * np.abs(row[:4])).all(1)
            if extra:
                fits &= (np.abs(extras[near] - row[6:]) <= extra_tol + 1e-4 * np.abs(row[6:])).all(1)
            if not fits.any():
                return f"no anchor has the score {score:.4g}, class {cls} and box of a row"
        kth_pair = np.sort(scores.reshape(-1))[-k]
        kth_anchor = np.sort(scores.max(1))[-k]  # agnostic exports: one class per anchor
        last = output0[i, -1, 4]
        if min(abs(kth_pair - last), abs(kth_anchor - last)) > SCORE_TOL + SCORE_TOL * abs(last):
            return f"the rows are not the {k} best scores (last {last:.4g}, expected {kth_pair:.4g})"
    return None
