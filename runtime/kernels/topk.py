"""One-to-one selection (YOLO26, YOLOv10 ``nms=False``): the k best (anchor, class) scores, with no NMS.

Ultralytics' ``Detect.postprocess`` keeps the k anchors with the best class score, then the k best (anchor, class)
scores among them (``agnostic``: the k best anchors with their best class); the predictor then keeps scores over
``conf``. A pair outside the k best anchors never beats the best class of each of them, so the result is the k best
pairs overall, of which only those over ``conf`` survive. Here that runs in logit space (the sigmoid is monotone):

1. per anchor the best class logit (one pass over the class maps); anchors whose best logit cannot reach ``conf``
   are dropped, and of the rest the k best kept (``argpartition``, O(N));
2. of those anchors' logits, the pairs that can reach ``conf``, and of those the k best (O(k * nc));
3. the sigmoid on the winners only, as float32, and the exact ``score > conf`` test;
4. boxes for the winners only: DFL-free (``reg_max`` 1) distances as they are, else the DFL expectation.

Candidates come back in no particular order (the head sorts them). Ties at the k-th logit, and classes whose float32
scores tie while their logits differ (scores that round to 1.0), may resolve unlike torch's top-k.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from runtime.kernels.decode import Candidates

__all__ = ["one_to_one_candidates"]


def _logit_floor(conf: float) -> float:
    """A logit below which no score passes ``conf`` (lowered by a margin; the float32 test follows)."""
    if conf <= 0.0:
        return -math.inf
    if conf >= 1.0:
        return math.inf
    t = math.log(conf / (1.0 - conf))
    return t - 1e-6 * (1.0 + abs(t))


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values (all when there are no more than k), in no order."""
    if len(values) <= k:
        return np.arange(len(values))
    return np.argpartition(values, len(values) - k)[len(values) - k:]


def _distances(box: np.ndarray, local: np.ndarray, bins: np.ndarray | None) -> np.ndarray:
    """(n, 4) l, t, r, b in cells of the anchors ``local`` of a (4 * reg_max, n_l) box map, in float64."""
    raw = box[:, local].astype(np.float64)
    if bins is None:
        return raw.T
    reg_max = len(bins)
    logits = raw.reshape(4, reg_max, -1)
    p = np.exp(logits - logits.max(1, keepdims=True))
    return ((p * bins[None, :, None]).sum(1) / p.sum(1)).T


def one_to_one_candidates(box_levels: Sequence[np.ndarray], cls_levels: Sequence[np.ndarray], widths: Sequence[int],
                          strides: Sequence[float], conf: float, k: int, agnostic: bool,
                          dfl_bins: Sequence[float] | None = None) -> Candidates:
    """The one-to-one detections of one image over ``conf`` (module docstring), boxes in letterbox pixels.

    ``box_levels[i]``: (4 * reg_max, n_i) float32 (reg_max 1: the distances), ``cls_levels[i]``: (nc, n_i) class
    logits, ``widths[i]`` the level's grid width, ``strides[i]`` its stride; ``dfl_bins``: the DFL bin values when
    reg_max > 1 (0..reg_max-1 when None). ``k``: Ultralytics' top-k size, at most the number of anchors.
    """
    nc = cls_levels[0].shape[0]
    sizes = [c.shape[1] for c in cls_levels]
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    floor = _logit_floor(conf)
    best = np.concatenate([c.max(0) for c in cls_levels])  # 1. best class logit per anchor
    anchors = np.flatnonzero(best > floor)
    anchors = anchors[_top(best[anchors], k)]
    level = np.searchsorted(offsets, anchors, side="right") - 1
    local = anchors - offsets[level]
    logits = np.empty((len(anchors), nc), np.float32)
    for i, cls in enumerate(cls_levels):
        rows = level == i
        logits[rows] = cls[:, local[rows]].T
    if agnostic:  # 2. one class per anchor: its best
        row, cls_id = np.arange(len(anchors)), logits.argmax(1)
        chosen = logits[row, cls_id]
        keep = np.flatnonzero(chosen > floor)
    else:
        flat = logits.reshape(-1)
        keep = np.flatnonzero(flat > floor)
        keep = keep[_top(flat[keep], k)]
        row, cls_id = np.divmod(keep, nc)
        chosen, keep = flat[keep], np.arange(len(keep))
    row, cls_id, chosen = row[keep], cls_id[keep], chosen[keep]
    scores = (1.0 / (1.0 + np.exp(-chosen.astype(np.float64)))).astype(np.float32)  # 3. sigmoid, winners only
    passed = scores > np.float32(conf)
    row, cls_id, scores = row[passed], cls_id[passed], scores[passed]
    boxes = np.empty((len(row), 4), np.float32)
    bins = None if box_levels[0].shape[0] == 4 else np.asarray(
        dfl_bins if dfl_bins is not None else np.arange(box_levels[0].shape[0] // 4), np.float64)
    anchor_level, anchor_local = level[row], local[row]
    for i, box in enumerate(box_levels):  # 4. boxes of the winners
        rows = np.flatnonzero(anchor_level == i)
        if not len(rows):
            continue
        d = _distances(box, anchor_local[rows], bins)
        y, x = np.divmod(anchor_local[rows], widths[i])
        ax, ay = x + 0.5, y + 0.5
        s = float(strides[i])
        boxes[rows] = np.stack([(ax - d[:, 0]) * s, (ay - d[:, 1]) * s, (ax + d[:, 2]) * s, (ay + d[:, 3]) * s], 1)
    return Candidates(boxes, scores, cls_id.astype(np.int32), anchors[row].astype(np.int64))
