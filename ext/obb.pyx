# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Oriented boxes (private; use :mod:`runtime.kernels.obb`): the rotated box of each candidate anchor from the
DFL distances and the angle logit, the probabilistic IoU of two rotated boxes, and the matrix ("fast") NMS
that Ultralytics runs on rotated boxes."""

import numpy as np

from libc.math cimport cos, cosf, exp, expf, log, sin, sinf, sqrt, M_PI
from libc.stdint cimport int64_t

cdef double PROBIOU_EPS = 1e-7


cdef void _check_levels(tuple box_maps, tuple angle_maps, const int64_t[::1] level_ends,
                        const int64_t[::1] widths, const float[::1] strides, Py_ssize_t bins) except *:
    cdef Py_ssize_t levels = level_ends.shape[0], lv, start
    cdef const float[:, ::1] b
    cdef const float[::1] a
    if levels == 0 or len(box_maps) != levels or len(angle_maps) != levels:
        raise ValueError(f"expected {levels} box and angle maps, got {len(box_maps)} and {len(angle_maps)}")
    if widths.shape[0] != levels or strides.shape[0] != levels:
        raise ValueError(f"expected {levels} widths and strides, got {widths.shape[0]} and {strides.shape[0]}")
    for lv in range(levels):
        b = box_maps[lv]
        a = angle_maps[lv]
        start = level_ends[lv - 1] if lv else 0
        if b.shape[0] != 4 * bins or b.shape[1] != level_ends[lv] - start or a.shape[0] != b.shape[1]:
            raise ValueError(f"level {lv}: box map ({b.shape[0]}, {b.shape[1]}) and angle map ({a.shape[0]},) do "
                             f"not match {4 * bins} channels and {level_ends[lv] - start} anchors")
        if widths[lv] <= 0 or b.shape[1] % widths[lv]:
            raise ValueError(f"level {lv}: width {widths[lv]} does not divide {b.shape[1]} anchors")


cdef inline float _distance(const float[:, ::1] m, Py_ssize_t side, Py_ssize_t local, const float[::1] bins) noexcept nogil:
    """Expected distance of one side: softmax over the bins, in float32 as the network's DFL computes it."""
    cdef Py_ssize_t n = bins.shape[0], i, c0 = side * n
    cdef float top = m[c0, local], e, total = 0.0, weighted = 0.0
    for i in range(1, n):
        if m[c0 + i, local] > top:
            top = m[c0 + i, local]
    for i in range(n):
        e = expf(m[c0 + i, local] - top)
        total += e
        weighted += e * bins[i]
    return weighted / total


def rotated_boxes(tuple box_maps, tuple angle_maps, const int64_t[::1] level_ends, const int64_t[::1] widths,
                  const float[::1] strides, const float[::1] bins, const int64_t[::1] anchor_ids,
                  float[:, ::1] out):
    """out[k] = the rotated box (cx, cy, w, h, angle) of global anchor ``anchor_ids[k]``, in input pixels.

    box_maps   : per-level (4 * len(bins), N_l) float32 DFL logits, sides l, t, r, b.
    angle_maps : per-level (N_l,) float32 angle logits.
    level_ends : (L,) cumulative N_l; widths: (L,) grid widths; strides: (L,) float32.
    Angle ``(sigmoid(logit) - 0.25) * pi``; with anchor ``a`` the cell centre in cells, ``d = (r - l, b - t) / 2``
    rotated by the angle gives the centre offset: ``c = (R(angle) d + a) * stride``, ``w = (l + r) * stride``,
    ``h = (t + b) * stride`` -- every step in float32, in this order (as the network head does it).
    """
    _check_levels(box_maps, angle_maps, level_ends, widths, strides, bins.shape[0])
    cdef Py_ssize_t n = anchor_ids.shape[0], levels = level_ends.shape[0], k, lv, local, start
    cdef int64_t a
    cdef const float[:, ::1] m
    cdef const float[::1] ang
    cdef float l, t, r, b, theta, c, s, xf, yf, ax, ay, stride
    if out.shape[0] != n or out.shape[1] != 5:
        raise ValueError(f"out must have shape ({n}, 5), got ({out.shape[0]}, {out.shape[1]})")
    for k in range(n):
        a = anchor_ids[k]
        if a < 0 or a >= level_ends[levels - 1]:
            raise IndexError(f"anchor id {a} is outside [0, {level_ends[levels - 1]})")
    for lv in range(levels):
        m = box_maps[lv]
        ang = angle_maps[lv]
        start = level_ends[lv - 1] if lv else 0
        stride = strides[lv]
        for k in range(n):
            a = anchor_ids[k]
            if a < start or a >= level_ends[lv]:
                continue
            local = a - start
            l = _distance(m, 0, local, bins)
            t = _distance(m, 1, local, bins)
            r = _distance(m, 2, local, bins)
            b = _distance(m, 3, local, bins)
            theta = (<float>(1.0 / (1.0 + exp(-<double>ang[local]))) - <float>0.25) * <float>M_PI
            c = cosf(theta)
            s = sinf(theta)
            xf = (r - l) / <float>2
            yf = (b - t) / <float>2
            ax = <float>(local % widths[lv]) + <float>0.5
            ay = <float>(local // widths[lv]) + <float>0.5
            out[k, 0] = ((xf * c - yf * s) + ax) * stride
            out[k, 1] = ((xf * s + yf * c) + ay) * stride
            out[k, 2] = (l + r) * stride
            out[k, 3] = (t + b) * stride
            out[k, 4] = theta


cdef inline void _covariance(const float[:, ::1] boxes, Py_ssize_t i, double* a, double* b, double* c) noexcept nogil:
    """The covariance [[a, c], [c, b]] of the uniform distribution over box i (w^2 / 12, h^2 / 12, rotated)."""
    cdef double w2 = <double>boxes[i, 2] * boxes[i, 2] / 12.0, h2 = <double>boxes[i, 3] * boxes[i, 3] / 12.0
    cdef double co = cos(<double>boxes[i, 4]), si = sin(<double>boxes[i, 4])
    a[0] = w2 * co * co + h2 * si * si
    b[0] = w2 * si * si + h2 * co * co
    c[0] = (w2 - h2) * co * si


cdef inline double _probiou(double x1, double y1, double a1, double b1, double c1,
                            double x2, double y2, double a2, double b2, double c2) noexcept nogil:
    """1 - Hellinger distance of the two Gaussians (Bhattacharyya distance clamped to [eps, 100])."""
    cdef double sa = a1 + a2, sb = b1 + b2, sc = c1 + c2
    cdef double det = sa * sb - sc * sc
    cdef double dx = x1 - x2, dy = y1 - y2
    cdef double t1 = (sa * dy * dy + sb * dx * dx) / (det + PROBIOU_EPS) * 0.25
    cdef double t2 = (sc * (x2 - x1) * (y1 - y2)) / (det + PROBIOU_EPS) * 0.5
    cdef double d1 = a1 * b1 - c1 * c1, d2 = a2 * b2 - c2 * c2
    if d1 < 0:
        d1 = 0
    if d2 < 0:
        d2 = 0
    cdef double t3 = log(det / (4.0 * sqrt(d1 * d2) + PROBIOU_EPS) + PROBIOU_EPS) * 0.5
    cdef double bd = t1 + t2 + t3
    if bd < PROBIOU_EPS:
        bd = PROBIOU_EPS
    elif bd > 100.0:
        bd = 100.0
    return 1.0 - sqrt(1.0 - exp(-bd) + PROBIOU_EPS)


def probiou_matrix(const float[:, ::1] first, const float[:, ::1] second, double[:, ::1] out):
    """out[i, j] = probabilistic IoU of rotated boxes first[i] and second[j] (rows cx, cy, w, h, angle)."""
    cdef Py_ssize_t n = first.shape[0], m = second.shape[0], i, j
    if first.shape[1] != 5 or second.shape[1] != 5 or out.shape[0] != n or out.shape[1] != m:
        raise ValueError("probiou_matrix: boxes must be (n, 5) and (m, 5), out (n, m)")
    cdef double[:, ::1] cov2 = np.empty((m, 3), np.float64)
    cdef double a1, b1, c1
    with nogil:
        for j in range(m):
            _covariance(second, j, &cov2[j, 0], &cov2[j, 1], &cov2[j, 2])
        for i in range(n):
            _covariance(first, i, &a1, &b1, &c1)
            for j in range(m):
                out[i, j] = _probiou(first[i, 0], first[i, 1], a1, b1, c1,
                                     second[j, 0], second[j, 1], cov2[j, 0], cov2[j, 1], cov2[j, 2])


cdef inline bint _suppresses(const float[:, ::1] boxes, const double[:, ::1] cov, Py_ssize_t i, Py_ssize_t j,
                             double reach, double limit, double iou_thr) noexcept nogil:
    """Whether box i overlaps box j with probiou > iou_thr. Pairs farther apart than ``reach`` times their
    spread are not computed, nor the logarithm and roots of pairs whose distance term alone passes ``limit``
    (see fast_nms_ranked); both only when det(S) > 1e-2, where the other term is above -5e-6."""
    cdef double dx = <double>boxes[i, 0] - boxes[j, 0], dy = <double>boxes[i, 1] - boxes[j, 1]
    cdef double sa = cov[i, 0] + cov[j, 0], sb = cov[i, 1] + cov[j, 1], sc = cov[i, 2] + cov[j, 2]
    cdef double det = sa * sb - sc * sc
    if det > 1e-2:
        if dx * dx + dy * dy > reach * (cov[i, 3] + cov[j, 3]):
            return False
        if ((sa * dy * dy + sb * dx * dx) / (det + PROBIOU_EPS) * 0.25
                + (sc * (-dx) * dy) / (det + PROBIOU_EPS) * 0.5) > limit + 1e-5:
            return False
    return _probiou(boxes[i, 0], boxes[i, 1], cov[i, 0], cov[i, 1], cov[i, 2],
                    boxes[j, 0], boxes[j, 1], cov[j, 0], cov[j, 1], cov[j, 2]) > iou_thr


cdef double[:, ::1] _covariances(const float[:, ::1] boxes):
    cdef Py_ssize_t n = boxes.shape[0], j
    cdef double[:, ::1] cov = np.empty((n, 4), np.float64)  # a, b, c, trace
    with nogil:
        for j in range(n):
            _covariance(boxes, j, &cov[j, 0], &cov[j, 1], &cov[j, 2])
            cov[j, 3] = cov[j, 0] + cov[j, 1]
    return cov


def fast_nms_ranked(const float[:, ::1] boxes, double iou_thr, double reach, double limit, int64_t[::1] keep):
    """Matrix NMS on boxes already in descending score order (rows cx, cy, w, h, angle, class offset applied):
    box j survives when no box ranked before it, kept or not, has probabilistic IoU > ``iou_thr`` with it.
    Writes the surviving ranks, ascending, into ``keep`` until it is full; returns how many.

    ``reach`` bounds where an overlap is possible: with S the sum of the two covariances, the Bhattacharyya
    distance is at least |d|^2 / (4 trace(S)) (less a negligible term when det(S) > 1e-2), so a pair with
    |d|^2 > reach * trace(S) is not compared when ``reach`` makes that distance exceed the one ``iou_thr``
    allows, ``limit`` (see runtime.kernels.obb).
    """
    cdef Py_ssize_t n = boxes.shape[0], cap = keep.shape[0], i, j, kept = 0
    if boxes.shape[1] != 5:
        raise ValueError("boxes must be (n, 5)")
    cdef double[:, ::1] cov = _covariances(boxes)
    cdef bint suppressed
    with nogil:
        for j in range(n):
            if kept >= cap:
                break
            suppressed = False
            for i in range(j):
                if _suppresses(boxes, cov, i, j, reach, limit, iou_thr):
                    suppressed = True
                    break
            if not suppressed:
                keep[kept] = j
                kept += 1
    return kept


cdef int[3] _NEAR = [0, 1, -1]


cdef inline Py_ssize_t _first_at_least(const int64_t[::1] keys, int64_t key) noexcept nogil:
    cdef Py_ssize_t lo = 0, hi = keys.shape[0], mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


def fast_nms_grid(const float[:, ::1] boxes, double iou_thr, double reach, double limit, const int64_t[::1] cell_x,
                  const int64_t[::1] cell_y, const int64_t[::1] sorted_keys, const int64_t[::1] by_key,
                  int64_t row_span, int64_t[::1] keep):
    """:func:`fast_nms_ranked` when every pair that can overlap lies in neighbouring cells of a grid: box j is
    compared only with the earlier boxes of its own and the 8 neighbouring cells. ``cell_x`` / ``cell_y`` (n,)
    are the boxes' cells, ``sorted_keys`` the ascending keys ``cell_x * row_span + cell_y`` and ``by_key``
    the box of each sorted key, the boxes of one cell by ascending rank (a stable sort of the keys). Same
    survivors as :func:`fast_nms_ranked`."""
    cdef Py_ssize_t n = boxes.shape[0], cap = keep.shape[0], i, j, p, kept = 0
    cdef int dx, dy
    cdef int64_t key
    if boxes.shape[1] != 5 or cell_x.shape[0] != n or cell_y.shape[0] != n or sorted_keys.shape[0] != n \
            or by_key.shape[0] != n:
        raise ValueError("boxes must be (n, 5) with n cells, keys and key owners")
    cdef double[:, ::1] cov = _covariances(boxes)
    cdef bint suppressed
    with nogil:
        for j in range(n):
            if kept >= cap:
                break
            suppressed = False
            for dx in range(3):  # own cell first (0, 1, -1): its boxes overlap most often
                for dy in range(3):
                    key = (cell_x[j] + _NEAR[dx]) * row_span + cell_y[j] + _NEAR[dy]
                    p = _first_at_least(sorted_keys, key)
                    while p < n and sorted_keys[p] == key:
                        i = by_key[p]
                        p += 1
                        if i >= j:  # a cell lists its boxes by rank: the rest rank after j
                            break
                        if _suppresses(boxes, cov, i, j, reach, limit, iou_thr):
                            suppressed = True
                            break
                    if suppressed:
                        break
                if suppressed:
                    break
            if not suppressed:
                keep[kept] = j
                kept += 1
    return kept
