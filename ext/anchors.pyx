# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Per-anchor rows of per-level maps and the rows of kept candidates (private; use
``runtime.decode.gather_anchor_rows`` and ``runtime.postprocess``)."""

import numpy as np

from libc.stdint cimport int32_t, int64_t


cdef void _check_maps(tuple maps, const int64_t[::1] level_ends, Py_ssize_t channels) except *:
    cdef Py_ssize_t levels = level_ends.shape[0], lv, start
    cdef const float[:, ::1] m
    if levels == 0 or len(maps) != levels:
        raise ValueError(f"expected {levels} level maps, got {len(maps)}")
    for lv in range(levels):
        m = maps[lv]
        start = level_ends[lv - 1] if lv else 0
        if m.shape[0] != channels or m.shape[1] != level_ends[lv] - start:
            raise ValueError(f"level {lv}: map of shape ({m.shape[0]}, {m.shape[1]}) does not match "
                             f"{channels} channels and {level_ends[lv] - start} anchors")


cdef void _gather(tuple maps, const int64_t[::1] level_ends, const int64_t[::1] anchor_ids, float[:, ::1] out) except *:
    """out[k] = the column of global anchor anchor_ids[k]; maps already checked against level_ends."""
    cdef Py_ssize_t n = anchor_ids.shape[0], levels = level_ends.shape[0], channels = out.shape[1]
    cdef Py_ssize_t k, c, lv, local, start
    cdef int64_t a
    cdef const float[:, ::1] m
    for k in range(n):
        a = anchor_ids[k]
        if a < 0 or a >= level_ends[levels - 1]:
            raise IndexError(f"anchor id {a} is outside [0, {level_ends[levels - 1]})")
    for lv in range(levels):
        m = maps[lv]
        start = level_ends[lv - 1] if lv else 0
        for k in range(n):
            a = anchor_ids[k]
            if a < start or a >= level_ends[lv]:
                continue
            local = a - start
            for c in range(channels):
                out[k, c] = m[c, local]


def gather_rows(tuple maps, const int64_t[::1] level_ends, const int64_t[::1] anchor_ids, float[:, ::1] out):
    """out[k] = column ``anchor_ids[k] - start`` of the level map holding that global anchor id.

    maps       : per-level (C, N_l) float32 C-contiguous arrays; global ids run through the levels
                 in order.
    level_ends : (L,) int64 cumulative N_l.
    anchor_ids : (n,) int64, each in [0, level_ends[-1]) (IndexError otherwise, nothing written).
    out        : (n, C) float32.
    """
    _check_maps(maps, level_ends, out.shape[1])
    _gather(maps, level_ends, anchor_ids, out)


def take_kept(const int64_t[::1] keep, const float[:, ::1] boxes, const float[::1] scores,
              const int32_t[::1] class_ids, const int64_t[::1] anchor_ids, tuple maps, const int64_t[::1] level_ends):
    """Rows ``keep`` of a candidate set, and the per-anchor rows of ``maps`` for them, in one call.

    keep : (k,) int64 indices into the n candidates (boxes (n, 4) float32, scores (n,) float32,
    class_ids (n,) int32, anchor_ids (n,) int64); IndexError when one is out of range. maps /
    level_ends as in ``gather_rows``, or an empty tuple for none. Returns new arrays
    ``(boxes (k, 4), scores (k,), class_ids (k,), anchor_ids (k,), rows (k, C) float32 or None)``.
    """
    cdef Py_ssize_t k = keep.shape[0], n = scores.shape[0], r, j
    if boxes.shape[0] != n or boxes.shape[1] != 4 or class_ids.shape[0] != n or anchor_ids.shape[0] != n:
        raise ValueError(f"candidate arrays disagree: boxes {tuple(boxes.shape)[:2]}, {n} scores, "
                         f"{class_ids.shape[0]} class ids, {anchor_ids.shape[0]} anchor ids")
    for r in range(k):
        if keep[r] < 0 or keep[r] >= n:
            raise IndexError(f"kept row {keep[r]} is outside [0, {n})")
    kept_boxes = np.empty((k, 4), np.float32)
    kept_scores = np.empty(k, np.float32)
    kept_classes = np.empty(k, np.int32)
    kept_anchors = np.empty(k, np.int64)
    cdef float[:, ::1] b = kept_boxes
    cdef float[::1] s = kept_scores
    cdef int32_t[::1] c = kept_classes
    cdef int64_t[::1] a = kept_anchors
    for r in range(k):
        j = keep[r]
        b[r, 0] = boxes[j, 0]
        b[r, 1] = boxes[j, 1]
        b[r, 2] = boxes[j, 2]
        b[r, 3] = boxes[j, 3]
        s[r] = scores[j]
        c[r] = class_ids[j]
        a[r] = anchor_ids[j]
    rows = None
    cdef const float[:, ::1] first
    if maps:
        first = maps[0]
        _check_maps(maps, level_ends, first.shape[0])
        rows = np.empty((k, first.shape[0]), np.float32)
        _gather(maps, level_ends, a, rows)
    return kept_boxes, kept_scores, kept_classes, kept_anchors, rows
