# cython: language_level=3, cdivision=True
"""Greedy non-maximum suppression kernel (private; use ``runtime.nms.nms``).

The wrapper sorts, offsets and groups the boxes; this kernel only runs the greedy walk.
"""

cimport cython
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport calloc, free


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
    cdef Py_ssize_t p, g, num_kept = 0
    cdef uint8_t* suppressed
    if n == 0 or max_det == 0:
        return 0
    suppressed = <uint8_t*> calloc(n, sizeof(uint8_t))
    if suppressed == NULL:
        raise MemoryError()
    with nogil:
        for p in range(n):
            g = group_pos[p]
            if suppressed[g]:
                continue
            keep[num_kept] = group_src[g]
            num_kept += 1
            if num_kept >= max_det:
                break
            _suppress_row(&boxes_t[0, 0], &boxes_t[1, 0], &boxes_t[2, 0], &boxes_t[3, 0], &areas[0],
                          g, g + 1, group_end[g], iou_thr, suppressed)
    free(suppressed)
    return num_kept
