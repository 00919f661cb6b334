# cython: language_level=3, cdivision=True
"""Greedy non-maximum suppression kernels (private; use ``runtime.nms.nms``).

``ranked_nms`` does everything for boxes compared all against all: score order, class offsets,
areas and the greedy walk, in one call (the common case: a few hundred candidates or fewer).
``greedy_nms`` only runs the walk over boxes the wrapper has sorted, offset and grouped by class.
"""

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc, qsort


ctypedef fused class_id_t:
    int32_t
    int64_t


cdef struct Ranked:
    float score
    Py_ssize_t index


cdef int _by_score_then_index(const void* a, const void* b) noexcept nogil:
    """NaN scores first, then decreasing score, then increasing input index: the order of a stable
    descending sort in torch (and of ``runtime.nms._score_order``)."""
    cdef const Ranked* x = <const Ranked*> a
    cdef const Ranked* y = <const Ranked*> b
    cdef bint x_nan = x.score != x.score
    cdef bint y_nan = y.score != y.score
    if x_nan != y_nan:
        return -1 if x_nan else 1
    if not x_nan:
        if x.score > y.score:
            return -1
        if x.score < y.score:
            return 1
    return -1 if x.index < y.index else (1 if x.index > y.index else 0)


cdef inline void _suppress_row(
    const float* x1, const float* y1, const float* x2, const float* y2, const float* areas,
    Py_ssize_t g, Py_ssize_t start, Py_ssize_t end, float thr, uint8_t* suppressed,
) noexcept nogil:
    """suppressed[j] |= IoU(g, j) > thr for j in [start, end); branch-free so it vectorises.

    Same float32 operations as torchvision's CPU kernel (std::max / std::min selections, then
    inter / (area_i + area_j - inter)); recomputing already-suppressed boxes is harmless.
    """
    cdef Py_ssize_t j
    cdef float ix1 = x1[g], iy1 = y1[g], ix2 = x2[g], iy2 = y2[g], iarea = areas[g]
    cdef float xx1, yy1, xx2, yy2, w, h, inter
    for j in range(start, end):
        xx1 = x1[j] if ix1 < x1[j] else ix1
        yy1 = y1[j] if iy1 < y1[j] else iy1
        xx2 = x2[j] if x2[j] < ix2 else ix2
        yy2 = y2[j] if y2[j] < iy2 else iy2
        w = xx2 - xx1
        h = yy2 - yy1
        w = w if w > 0 else 0
        h = h if h > 0 else 0
        inter = w * h
        suppressed[j] |= (inter / (iarea + areas[j] - inter)) > thr


cdef Py_ssize_t _greedy_walk(
    const float* x1, const float* y1, const float* x2, const float* y2, const float* areas,
    const int64_t* group_pos, const int64_t* group_end, const int64_t* group_src, Py_ssize_t n,
    float iou_thr, int64_t* keep, Py_ssize_t max_det, uint8_t* suppressed,
) noexcept nogil:
    """The greedy walk over boxes in group layout (see ``greedy_nms``); returns the number kept."""
    cdef Py_ssize_t p, g, num_kept = 0
    for p in range(n):
        g = group_pos[p] if group_pos != NULL else p
        if suppressed[g]:
            continue
        keep[num_kept] = group_src[g]
        num_kept += 1
        if num_kept >= max_det:
            break
        _suppress_row(x1, y1, x2, y2, areas, g, g + 1, group_end[g] if group_end != NULL else n, iou_thr,
                      suppressed)
    return num_kept


@cython.boundscheck(False)
@cython.wraparound(False)
def ranked_nms(
    const float[:, ::1] boxes,
    const float[::1] scores,
    const class_id_t[::1] class_ids,
    float class_offset,
    bint agnostic,
    float iou_thr,
    int64_t[::1] keep,
):
    """Greedy NMS of boxes compared all against all; returns how many indices went to ``keep``.

    boxes      : (n, 4) float32 x1, y1, x2, y2.
    scores     : (n,) float32.
    class_ids  : (n,) int32 or int64; unless ``agnostic`` each box is shifted by
                 ``float32(class_id) * class_offset`` in float32, as Ultralytics does before NMS.
    iou_thr    : as for ``greedy_nms``.
    keep       : (max_det,) int64 output, input indices in order of decreasing score (NaN scores
                 first; ties: input order).
    """
    cdef Py_ssize_t n = boxes.shape[0]
    cdef Py_ssize_t max_det = keep.shape[0]
    cdef Py_ssize_t i, j, num_kept = 0
    cdef float off
    cdef Ranked* ranked
    cdef float* coords
    cdef int64_t* src
    cdef uint8_t* suppressed
    if n == 0 or max_det == 0:
        return 0
    ranked = <Ranked*> malloc(n * sizeof(Ranked))
    coords = <float*> malloc(5 * n * sizeof(float))
    src = <int64_t*> malloc(n * sizeof(int64_t))
    suppressed = <uint8_t*> calloc(n, sizeof(uint8_t))
    if ranked == NULL or coords == NULL or src == NULL or suppressed == NULL:
        free(ranked)
        free(coords)
        free(src)
        free(suppressed)
        raise MemoryError()
    with nogil:
        for i in range(n):
            ranked[i].score = scores[i]
            ranked[i].index = i
        qsort(ranked, n, sizeof(Ranked), _by_score_then_index)
        for j in range(n):  # rows x1, y1, x2, y2, area of the offset boxes in score order
            i = ranked[j].index
            src[j] = i
            off = 0.0 if agnostic else (<float> class_ids[i]) * class_offset
            coords[j] = boxes[i, 0] + off
            coords[n + j] = boxes[i, 1] + off
            coords[2 * n + j] = boxes[i, 2] + off
            coords[3 * n + j] = boxes[i, 3] + off
            coords[4 * n + j] = (coords[2 * n + j] - coords[j]) * (coords[3 * n + j] - coords[n + j])
        num_kept = _greedy_walk(coords, coords + n, coords + 2 * n, coords + 3 * n, coords + 4 * n, NULL, NULL, src,
                                n, iou_thr, &keep[0], max_det, suppressed)
    free(ranked)
    free(coords)
    free(src)
    free(suppressed)
    return num_kept


@cython.boundscheck(False)
@cython.wraparound(False)
def greedy_nms(
    const float[:, ::1] boxes_t,
    const float[::1] areas,
    const int64_t[::1] group_pos,
    const int64_t[::1] group_end,
    const int64_t[::1] group_src,
    float iou_thr,
    int64_t[::1] keep,
):
    """Run the greedy walk; return how many indices were written to ``keep``.

    Boxes are stored in *group layout*: every class (a single group when agnostic) is a contiguous
    block, ordered by decreasing score inside the block.

    boxes_t    : (4, n) float32, offset x1, y1, x2, y2 rows in group layout.
    areas      : (n,) float32, (x2 - x1) * (y2 - y1) of the offset boxes, computed in float32.
    group_pos  : (n,) int64, group-layout position of the box ranked ``p`` by score.
    group_end  : (n,) int64, one past the last position of the group holding each position.
    group_src  : (n,) int64, input index of the box at each group-layout position.
    iou_thr    : float32 threshold t such that, for every float32 IoU x, x > t equals torchvision's
                 double comparison x > iou_thr (the wrapper rounds iou_thr down to float32).
    keep       : (max_det,) int64 output, input indices in order of decreasing score.
    """
    cdef Py_ssize_t n = boxes_t.shape[1]
    cdef Py_ssize_t max_det = keep.shape[0]
    cdef Py_ssize_t num_kept = 0
    cdef uint8_t* suppressed
    if n == 0 or max_det == 0:
        return 0
    suppressed = <uint8_t*> calloc(n, sizeof(uint8_t))
    if suppressed == NULL:
        raise MemoryError()
    with nogil:
        num_kept = _greedy_walk(&boxes_t[0, 0], &boxes_t[1, 0], &boxes_t[2, 0], &boxes_t[3, 0], &areas[0],
                                &group_pos[0], &group_end[0], &group_src[0], n, iou_thr, &keep[0], max_det,
                                suppressed)
    free(suppressed)
    return num_kept
