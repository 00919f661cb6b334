"""Oriented boxes as Ultralytics 8.4's OBB models give them (``nn/modules/head.py`` OBB, ``utils/nms.py``).

* :func:`rotated_boxes` -- the rotated box of candidate anchors of a truncated head: DFL distances ``l, t, r,
  b`` (softmax expectation over the bins), angle ``(sigmoid(logit) - 0.25) * pi`` in [-pi/4, 3pi/4), centre =
  anchor + the half-difference ``((r - l) / 2, (b - t) / 2)`` rotated by the angle, size ``(l + r, t + b)``,
  all times the level's stride (float32, the head's order of operations).
* :func:`probiou` -- probabilistic IoU (Llerena et al., arXiv:2106.06072): each box is the Gaussian of a
  uniform rectangle (covariance ``diag(w^2, h^2) / 12`` rotated), similarity ``1 - Hellinger distance``
  from the Bhattacharyya distance clamped to [1e-7, 100], with Ultralytics' epsilons.
* :func:`rotated_nms` -- Ultralytics' rotated NMS: boxes offset by ``class * 7680`` (centre only, float32),
  then the matrix ("Fast NMS", Bolya et al. arXiv:1904.02689) rule, **not** greedy NMS: a box is dropped when
  any higher-scoring box, suppressed or not, overlaps it with probiou > ``iou``; the first ``max_det``
  survivors in descending score order are kept.
* :func:`rotated_corners` / :func:`rotated_to_source` -- corners as Ultralytics' ``xywhr2xyxyxyxy`` and the
  letterbox inverse of ``scale_boxes(..., xywh=True)`` (centre moved and scaled, width by the x gain, height
  by the y gain, angle unchanged, nothing clipped).

Ultralytics 8.4 does not regularise predicted boxes (``regularize_rboxes`` is not called on predict): the angle
stays in [-pi/4, 3pi/4) and width may be the short side; so here too.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from runtime.errors import InputError
from runtime.kernels._obb import fast_nms_grid, fast_nms_ranked, probiou_matrix
from runtime.kernels._obb import rotated_boxes as _rotated_boxes

__all__ = ["CLASS_OFFSET", "probiou", "rotated_boxes", "rotated_corners", "rotated_nms", "rotated_to_source"]

CLASS_OFFSET = 7680.0  # Ultralytics' max_wh
PROBIOU_EPS = 1e-7  # Ultralytics' eps in probiou
MIN_GRID_AREA = 1.0  # px^2: smaller boxes make the distance bound loose, and NMS compares every pair


def _as_rboxes(name: str, boxes) -> np.ndarray:
    a = np.ascontiguousarray(boxes, dtype=np.float32)
    if a.ndim != 2 or a.shape[1] != 5:
        raise InputError(f"{name} must have shape (n, 5) (cx, cy, w, h, angle), got {np.shape(boxes)}")
    return a


def rotated_boxes(box_maps: tuple[np.ndarray, ...], angle_maps: tuple[np.ndarray, ...], level_ends: np.ndarray,
                  widths: np.ndarray, strides: np.ndarray, bins: np.ndarray, anchor_ids: np.ndarray) -> np.ndarray:
    """(n, 5) float32 rotated boxes (cx, cy, w, h, angle) in input pixels of the global ``anchor_ids``.

    ``box_maps`` per level (4 * len(bins), N_l) and ``angle_maps`` per level (N_l,) float32 C-contiguous;
    ``level_ends`` (L,) int64 cumulative N_l, ``widths`` (L,) int64 grid widths, ``strides`` (L,) float32,
    ``bins`` the DFL bin values (float32). InputError when they disagree.
    """
    out = np.empty((len(anchor_ids), 5), np.float32)
    try:
        _rotated_boxes(tuple(box_maps), tuple(angle_maps), level_ends, widths, strides,
                       np.ascontiguousarray(bins, dtype=np.float32),
                       np.ascontiguousarray(anchor_ids, dtype=np.int64), out)
    except (ValueError, IndexError) as exc:
        raise InputError(f"rotated_boxes: {exc}") from None
    return out


def probiou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(n, m) float64 probabilistic IoU of rotated boxes ``first`` (n, 5) and ``second`` (m, 5)."""
    a, b = _as_rboxes("first", first), _as_rboxes("second", second)
    out = np.empty((len(a), len(b)), np.float64)
    probiou_matrix(a, b, out)
    return out


def _score_order(scores: np.ndarray) -> np.ndarray:
    """Descending, exact ties in input order. Ultralytics sorts with torch's unstable sort, which orders exact
    ties its own way beyond a few boxes; where boxes tie (scores saturated at 1.0, seen on random-init models)
    and overlap, which of them survives may differ. Unrelated boxes and untied scores are unaffected."""
    return np.argsort(-scores, kind="stable")


def rotated_nms(xywhr: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_thr: float, max_det: int = 300,
                agnostic: bool = False, class_offset: float = CLASS_OFFSET) -> np.ndarray:
    """Indices of the boxes Ultralytics' rotated NMS keeps, in descending score order (see the module doc).

    xywhr (n, 5) float32 in input pixels, scores (n,), class_ids (n,) integers; a box is dropped at probiou
    strictly above ``iou_thr``; at most ``max_det`` are returned.
    """
    boxes = _as_rboxes("xywhr", xywhr)
    n = len(boxes)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    classes = np.asarray(class_ids)
    if scores.shape != (n,) or classes.shape != (n,):
        raise InputError(f"scores and class_ids must have shape ({n},), got {scores.shape} and {classes.shape}")
    if isinstance(max_det, bool) or not isinstance(max_det, numbers.Integral) or max_det < 0:
        raise InputError(f"max_det must be a non-negative integer, got {max_det!r}")
    iou_thr = float(iou_thr)
    if not 0.0 <= iou_thr <= 1.0:
        raise InputError(f"iou_thr must be in [0, 1], got {iou_thr}")
    if n == 0 or max_det == 0:
        return np.zeros(0, np.int64)
    order = _score_order(scores)
    ranked = boxes[order]
    if not agnostic:
        offsets = classes[order].astype(np.float32) * np.float32(class_offset)
        ranked[:, :2] += offsets[:, None]
    keep = np.empty(min(n, int(max_det)), np.int64)
    thr = float(np.float32(iou_thr))  # torch compares float32 IoUs with the threshold as a float32 scalar
    limit = _distance_limit(thr)
    reach = 4.0 * (limit + 1e-5) * 1.0001
    ranked = np.ascontiguousarray(ranked)
    area = ranked[:, 2].astype(np.float64) * ranked[:, 3]
    if reach > 0 and np.isfinite(ranked).all() and area.min() >= MIN_GRID_AREA:
        k = _grid_nms(ranked, thr, reach, limit, keep)
    else:
        k = fast_nms_ranked(ranked, thr, reach, limit, keep)
    return order[keep[:k]]


def _distance_limit(iou_thr: float) -> float:
    """The Bhattacharyya distance below which probiou exceeds ``iou_thr``: ``-ln(1 + eps - (1 - t)^2)``.

    The kernel skips a pair whose distance is surely above it: the distance is the quadratic term
    ``dT S^-1 d / 4`` (d: centre offset, S: the two covariances) plus a log-determinant term above -5e-6 when
    det(S) > 1e-2, and the quadratic term is at least ``|d|^2 / (4 trace(S))``, so pairs with ``|d|^2 >
    4 (limit + 1e-5) trace(S)`` (with a margin for rounding) are not compared. Negative (nothing suppresses)
    from ``iou_thr`` >= 1.
    """
    if iou_thr >= 1.0:
        return -1.0
    return -math.log(1.0 + PROBIOU_EPS - (1.0 - iou_thr) ** 2)


def _grid_nms(ranked: np.ndarray, thr: float, reach: float, limit: float, keep: np.ndarray) -> int:
    """The matrix rule comparing each box only with the earlier ones of neighbouring grid cells, the cell as
    wide as the farthest pair that can still overlap (every box at least MIN_GRID_AREA)."""
    boxes = ranked.astype(np.float64)
    trace = (boxes[:, 2] ** 2 + boxes[:, 3] ** 2) / 12.0
    cell = math.sqrt(reach * 2.0 * float(trace.max())) * 1.0001 + 1e-6
    cell_x = np.floor(boxes[:, 0] / cell).astype(np.int64)
    cell_y = np.floor(boxes[:, 1] / cell).astype(np.int64)
    cell_y -= cell_y.min() - 1  # >= 1, so the neighbour at -1 keeps its own key
    row_span = int(cell_y.max()) + 2
    keys = cell_x * row_span + cell_y
    by_key = np.argsort(keys, kind="stable")
    return fast_nms_grid(ranked, thr, reach, limit, cell_x, cell_y, np.ascontiguousarray(keys[by_key]), by_key, row_span,
                         keep)


def rotated_corners(xywhr: np.ndarray) -> np.ndarray:
    """(n, 4, 2) float32 corners of (n, 5) rotated boxes, in Ultralytics' order: from the corner at
    (+w/2, +h/2) of the box frame, then (+w/2, -h/2), (-w/2, -h/2), (-w/2, +h/2)."""
    boxes = _as_rboxes("xywhr", xywhr)
    centre = boxes[:, None, :2]
    cos, sin = np.cos(boxes[:, 4:5]), np.sin(boxes[:, 4:5])
    half_w = np.concatenate([boxes[:, 2:3] / 2 * cos, boxes[:, 2:3] / 2 * sin], 1)[:, None, :]
    half_h = np.concatenate([-boxes[:, 3:4] / 2 * sin, boxes[:, 3:4] / 2 * cos], 1)[:, None, :]
    signs_w = np.array([1, 1, -1, -1], np.float32)[None, :, None]
    signs_h = np.array([1, -1, -1, 1], np.float32)[None, :, None]
    return (centre + signs_w * half_w + signs_h * half_h).astype(np.float32)


def rotated_to_source(xywhr: np.ndarray, gain_xy: tuple[float, float], offset_xy: tuple[float, float]) -> np.ndarray:
    """(n, 5) float32 rotated boxes from input pixels to original-image pixels (not clipped): the inverse of a
    letterbox that scaled by ``gain_xy`` and then shifted by ``offset_xy`` (:class:`Letterbox`'s fields)."""
    out = _as_rboxes("xywhr", xywhr).copy()
    (gx, gy), (ox, oy) = gain_xy, offset_xy
    out[:, 0] = (out[:, 0] - np.float32(ox)) / np.float32(gx)
    out[:, 1] = (out[:, 1] - np.float32(oy)) / np.float32(gy)
    out[:, 2] /= np.float32(gx)
    out[:, 3] /= np.float32(gy)
    return out
