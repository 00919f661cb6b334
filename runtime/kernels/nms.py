"""Class-aware greedy non-maximum suppression, bit-identical to Ultralytics' NMS step.

Ultralytics (``utils/nms.py``) offsets every box by ``class * max_wh`` in float32 and calls
``torchvision.ops.nms`` on the offset boxes, then keeps the first ``max_det`` indices. This module
reproduces that exactly (same float32 IoU, same stable descending score order, same strict ``>``
comparison) with a Cython kernel that stops after ``max_det`` kept boxes and never compares boxes
of different classes when their offset boxes provably cannot overlap.
"""

from __future__ import annotations

import functools
import numbers

import numpy as np

from runtime.kernels._nms import greedy_nms, ranked_nms
from runtime.errors import InputError

__all__ = ["nms", "nms_candidates"]

GROUPING_MIN_BOXES = 256


def _as_2d(name: str, array: np.ndarray, ncols: int) -> np.ndarray:
    a = np.ascontiguousarray(array, dtype=np.float32)
    if a.ndim != 2 or a.shape[1] != ncols:
        raise InputError(f"{name} must have shape (n, {ncols}), got {np.shape(array)}")
    return a


def _as_class_ids(class_ids: np.ndarray, n: int) -> np.ndarray:
    c = np.asarray(class_ids)
    if c.shape != (n,):
        raise InputError(f"class_ids must have shape ({n},), got {c.shape}")
    if c.dtype.kind in "iub":
        return c.astype(np.int64, copy=False)
    if c.dtype.kind == "f":
        if not np.all(np.isfinite(c)) or not np.array_equal(c, np.rint(c)):
            raise InputError("class_ids must hold integer values")
        return c.astype(np.int64)
    raise InputError(f"class_ids must be an integer array, got dtype {c.dtype}")


def _score_order(scores: np.ndarray) -> np.ndarray:
    """Stable descending order; NaN scores first, as torch's descending sort places them."""
    nan = np.isnan(scores)
    if not nan.any():
        return np.argsort(-scores, kind="stable")
    finite = np.flatnonzero(~nan)
    return np.concatenate([np.flatnonzero(nan), finite[np.argsort(-scores[finite], kind="stable")]])


def _classes_separable(boxes: np.ndarray, offsets: np.ndarray) -> bool:
    """True when offset boxes of different classes can never overlap (so cross-class IoU is 0)."""
    distinct = np.unique(offsets).astype(np.float64)
    if distinct.size < 2:
        return True
    gap = np.min(np.diff(distinct))
    with np.errstate(invalid="ignore", over="ignore"):
        xs, ys = boxes[:, 0::2].astype(np.float64), boxes[:, 1::2].astype(np.float64)
        span = min(xs.max() - xs.min(), ys.max() - ys.min())
    # NaN/inf coordinates give a NaN/inf span: fall back to comparing every pair.
    return bool(np.isfinite(span) and np.isfinite(gap) and span <= gap)


@functools.lru_cache(maxsize=64)
def _float32_below(t: float) -> float:
    """Largest float32 f <= t: for float32 x, ``x > f`` equals torchvision's ``x > t`` in double."""
    f = np.float32(t)
    if float(f) > t:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


def nms(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_thr: float,
    max_det: int = 300,
    agnostic: bool = False,
    class_offset: float = 7680.0,
) -> np.ndarray:
    """Greedy NMS with Ultralytics' per-class box offset.

    Parameters
    ----------
    boxes_xyxy : (n, 4) float32 array
        Boxes as x1, y1, x2, y2 (coerced to C-contiguous float32).
    scores : (n,) float32 array
        Confidence of each box.
    class_ids : (n,) integer array
        Class of each box (integer-valued floats are accepted).
    iou_thr : float in [0, 1]
        A box is suppressed when its IoU with a kept, higher-scoring box is strictly greater.
    max_det : int >= 0
        Stop once this many boxes are kept.
    agnostic : bool
        Ignore classes (no offset, every pair is compared).
    class_offset : float
        Ultralytics' ``max_wh``: boxes are shifted by ``class_id * class_offset`` in float32.

    Returns
    -------
    keep : (k,) int64 array, k <= max_det
        Indices into the input, in order of decreasing score (ties keep input order).
    """
    boxes = _as_2d("boxes_xyxy", boxes_xyxy, 4)
    n = boxes.shape[0]
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    if scores.shape != (n,):
        raise InputError(f"scores must have shape ({n},), got {scores.shape}")
    classes = _as_class_ids(class_ids, n)
    if not isinstance(max_det, numbers.Integral) or max_det < 0:
        raise InputError(f"max_det must be a non-negative integer, got {max_det!r}")
    iou_thr = float(iou_thr)
    if not 0.0 <= iou_thr <= 1.0:
        raise InputError(f"iou_thr must be in [0, 1], got {iou_thr}")
    if n == 0 or max_det == 0:
        return np.zeros(0, dtype=np.int64)
    thr = _float32_below(iou_thr)
    keep = np.empty(min(n, int(max_det)), dtype=np.int64)
    # Grouping by class only pays for itself on many candidates; comparing every pair gives the same
    # keep list (offset boxes of different classes have IoU 0), all in one kernel call.
    offsets = None
    if not agnostic and n > GROUPING_MIN_BOXES:
        offsets = classes.astype(np.float32) * np.float32(class_offset)  # float32, like torch
    if offsets is None or not _classes_separable(boxes, offsets):
        k = ranked_nms(boxes, scores, classes, class_offset, bool(agnostic), thr, keep)
        return keep[:k].copy()
    order = _score_order(scores)
    with np.errstate(over="ignore", invalid="ignore"):
        offset_boxes = boxes + offsets[:, None]
    ranked_classes = classes[order]
    perm = np.argsort(ranked_classes, kind="stable")  # group layout -> score rank
    group_pos = np.empty(n, dtype=np.int64)
    group_pos[perm] = np.arange(n, dtype=np.int64)
    grouped_classes = ranked_classes[perm]
    group_end = np.searchsorted(grouped_classes, grouped_classes, side="right").astype(np.int64)
    group_src = order[perm].astype(np.int64)
    gboxes = np.ascontiguousarray(offset_boxes[group_src].T, dtype=np.float32)  # (4, n) x1, y1, x2, y2
    with np.errstate(over="ignore", invalid="ignore"):
        areas = np.ascontiguousarray((gboxes[2] - gboxes[0]) * (gboxes[3] - gboxes[1]))
    k = greedy_nms(gboxes, areas, group_pos, group_end, group_src, thr, keep)
    return keep[:k].copy()


def nms_candidates(boxes_xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_thr: float,
                   max_det: int, agnostic: bool = False, class_offset: float = 7680.0) -> np.ndarray:
    """:func:`nms` for candidates straight from :mod:`runtime.kernels.decode`, whose arrays need no checks:
    C-contiguous float32 (n, 4) boxes and (n,) scores, int32 (n,) class ids, ``max_det`` >= 1 and
    ``iou_thr`` in [0, 1] checked by the caller once. Same keep list as :func:`nms`."""
    n = scores.shape[0]
    if agnostic or n <= GROUPING_MIN_BOXES:
        keep = np.empty(min(n, max_det), dtype=np.int64)
        k = ranked_nms(boxes_xyxy, scores, class_ids, class_offset, bool(agnostic), _float32_below(iou_thr), keep)
        return keep[:k]
    return nms(boxes_xyxy, scores, class_ids, iou_thr, max_det, agnostic, class_offset)
