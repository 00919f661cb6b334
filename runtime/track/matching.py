"""Costs between boxes and the assignments the trackers make from them.

IoU is computed in float32 with a 1e-7 guard, as Ultralytics does, so that costs (and therefore every threshold
decision and every tie) come out the same. Optimal assignment is ``lap.lapjv`` with a cost limit (unmatched rows and
columns are those whose best pairing costs more than the limit).
"""

from __future__ import annotations

import lap
import numpy as np

EMPTY_PAIRS = np.zeros((0, 2), dtype=np.int64)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) float32 IoU of (n, 4) and (m, 4) x1y1x2y2 boxes."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float32)
    ax1, ay1, ax2, ay2 = a.T
    bx1, by1, bx2, by2 = b.T
    inter = ((np.minimum(ax2[:, None], bx2) - np.maximum(ax1[:, None], bx1)).clip(0)
             * (np.minimum(ay2[:, None], by2) - np.maximum(ay1[:, None], by1)).clip(0))
    union = (bx2 - bx1) * (by2 - by1) + ((ax2 - ax1) * (ay2 - ay1))[:, None] - inter
    return inter / (union + 1e-7)


def iou_cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - IoU."""
    return 1 - iou(a, b)


def fuse_scores(cost: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """1 - IoU * detection score: weak detections look farther away (ByteTrack's ``fuse_score``)."""
    if cost.size == 0:
        return cost
    return 1 - (1 - cost) * scores[None, :]


def assign(cost: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost matching of rows to columns, pairs costing more than ``limit`` left out.

    Returns (pairs (k, 2) in row order, unmatched rows, unmatched columns), all ascending int64 arrays.
    """
    rows, cols = cost.shape
    if cost.size == 0:
        return EMPTY_PAIRS, np.arange(rows), np.arange(cols)
    _, row_to_col, col_to_row = lap.lapjv(cost, extend_cost=True, cost_limit=limit)
    matched = np.flatnonzero(row_to_col >= 0)
    pairs = np.stack([matched, row_to_col[matched]], axis=1).astype(np.int64)
    return pairs, np.flatnonzero(row_to_col < 0), np.flatnonzero(col_to_row < 0)


def greedy_assign(cost: np.ndarray, limit: float, step: float) -> tuple[list, list, list]:
    """TrackTrack's iterative assignment: pairs that are each other's cheapest, cheaper than ``limit``, are taken
    together, then the limit drops by ``step`` and the rest is matched again, until a round takes nothing.

    Returns (pairs in the order taken, unmatched rows, unmatched columns).
    """
    pairs: list[tuple[int, int]] = []
    cost = cost.copy()
    n_rows, n_cols = cost.shape
    while n_rows and n_cols:
        best_col = np.argmin(cost, axis=1)
        best_row = np.argmin(cost, axis=0)
        rows = np.arange(n_rows)
        mutual = (best_row[best_col] == rows) & (cost[rows, best_col] < limit)
        taken = np.flatnonzero(mutual)
        if not len(taken):
            break
        pairs.extend(zip(taken.tolist(), best_col[taken].tolist()))
        cost[taken, :] = np.inf
        cost[:, best_col[taken]] = np.inf
        limit -= step
    used_rows = {r for r, _ in pairs}
    used_cols = {c for _, c in pairs}
    return (pairs, [r for r in range(n_rows) if r not in used_rows], [c for c in range(n_cols) if c not in used_cols])
