# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Letterbox kernels: pack a resized BGR uint8 image into padded RGB CHW planes (uint8 for models that
normalise in the graph, float32 0..1 for the others) in one pass, and map detections back to the source image."""

from libc.stdint cimport uint8_t
from libc.stdlib cimport free, malloc


cdef extern from "stream_store.h":
    void stream_bytes(uint8_t* dst, const uint8_t* src, Py_ssize_t n) noexcept nogil
    void stream_fill_bytes(uint8_t* dst, Py_ssize_t n, uint8_t v) noexcept nogil
    void stream_floats(float* dst, const float* src, Py_ssize_t n) noexcept nogil
    void stream_fill_floats(float* dst, Py_ssize_t n, float v) noexcept nogil
    void stream_fence() noexcept nogil


ctypedef fused pixel_t:
    uint8_t
    float


cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #include "isa_clones.h"

    /* One image row: BGR bytes -> R, G, B float rows at tmp, tmp + stride, tmp + 2 * stride (stays in L1).
       (float) v / 255.0f is correctly rounded, so it equals numpy's / torch's uint8 -> float32 / 255
       bit for bit; the loop vectorises. */
    AVX2_CLONES static void convert_row(const uint8_t* bgr, ptrdiff_t w, float* tmp, ptrdiff_t stride) {
        float* r = tmp;
        float* g = tmp + stride;
        float* b = tmp + 2 * stride;
        for (ptrdiff_t x = 0; x < w; x++) {
            r[x] = (float) bgr[3 * x + 2] / 255.0f;
            g[x] = (float) bgr[3 * x + 1] / 255.0f;
            b[x] = (float) bgr[3 * x] / 255.0f;
        }
    }

    /* One image row: BGR bytes -> R, G, B byte rows at tmp, tmp + stride, tmp + 2 * stride. */
    AVX2_CLONES static void split_row(const uint8_t* bgr, ptrdiff_t w, uint8_t* tmp, ptrdiff_t stride) {
        uint8_t* r = tmp;
        uint8_t* g = tmp + stride;
        uint8_t* b = tmp + 2 * stride;
        for (ptrdiff_t x = 0; x < w; x++) {
            r[x] = bgr[3 * x + 2];
            g[x] = bgr[3 * x + 1];
            b[x] = bgr[3 * x];
        }
    }
    """
    void convert_row(const uint8_t* bgr, Py_ssize_t w, float* tmp, Py_ssize_t stride) noexcept nogil
    void split_row(const uint8_t* bgr, Py_ssize_t w, uint8_t* tmp, Py_ssize_t stride) noexcept nogil


cdef inline void _fill(pixel_t* dst, Py_ssize_t n, pixel_t v) noexcept nogil:
    if pixel_t is float:
        stream_fill_floats(dst, n, v)
    else:
        stream_fill_bytes(dst, n, v)


cdef inline void _copy(pixel_t* dst, const pixel_t* src, Py_ssize_t n) noexcept nogil:
    if pixel_t is float:
        stream_floats(dst, src, n)
    else:
        stream_bytes(dst, src, n)


def pack_bgr_to_chw(const uint8_t[:, :, ::1] image_bgr, pixel_t[:, :, ::1] out, Py_ssize_t top,
                    Py_ssize_t left, pixel_t pad_value):
    """out[c, top + y, left + x] = image_bgr[y, x, 2 - c] (divided by 255 for float32 planes); every other
    pixel = pad_value.

    The image must fit: top + h <= H and left + w <= W (ValueError otherwise). ``out`` is written once,
    whole rows at a time, with streaming stores (ext/stream_store.h): inference reads it next, not this
    core's cache. Each output row is assembled, padding included, in a small buffer first: streaming the
    padding and the image part of a row separately leaves partly written lines at their seams, which cost
    3-5x the time on side-padded (portrait) images.
    """
    cdef Py_ssize_t h = image_bgr.shape[0], w = image_bgr.shape[1]
    cdef Py_ssize_t H = out.shape[1], W = out.shape[2]
    cdef Py_ssize_t c, y
    cdef pixel_t* tmp
    if out.shape[0] != 3 or image_bgr.shape[2] != 3 or top < 0 or left < 0 or top + h > H or left + w > W:
        raise ValueError(f"a ({h}, {w}, {image_bgr.shape[2]}) image at ({top}, {left}) does not fit "
                         f"output planes of shape ({out.shape[0]}, {H}, {W})")
    if H == 0 or W == 0:
        return
    tmp = <pixel_t*> malloc(3 * W * sizeof(pixel_t))
    if tmp == NULL:
        raise MemoryError()
    with nogil:
        for c in range(3 * W):
            tmp[c] = pad_value  # the side padding of every row; the image part is overwritten per row
        for c in range(3):
            _fill(&out[c, 0, 0], top * W, pad_value)
            _fill(&out[c, 0, 0] + (top + h) * W, (H - top - h) * W, pad_value)
        for y in range(h):
            if w > 0:
                if pixel_t is float:
                    convert_row(&image_bgr[y, 0, 0], w, tmp + left, W)
                else:
                    split_row(&image_bgr[y, 0, 0], w, tmp + left, W)
            for c in range(3):
                _copy(&out[c, top + y, 0], tmp + c * W, W)
        stream_fence()
    free(tmp)


def boxes_to_source(const float[:, ::1] boxes, float[:, ::1] out, float offset_x, float offset_y, float gain_x,
                    float gain_y, float width, float height):
    """out[i] = ((x1, y1, x2, y2) - offset) / gain, each clipped to [0, width] / [0, height], in float32.

    The inverse of the letterbox for detections, as numpy computes it on float32 arrays (NaN stays NaN).
    """
    cdef Py_ssize_t n = boxes.shape[0], i, k
    cdef float v, limit
    if boxes.shape[1] != 4 or out.shape[0] != n or out.shape[1] != 4:
        raise ValueError(f"boxes and out must both have shape (n, 4), got ({boxes.shape[0]}, {boxes.shape[1]}) "
                         f"and ({out.shape[0]}, {out.shape[1]})")
    with nogil:
        for i in range(n):
            for k in range(4):
                if k & 1:  # y1, y2
                    v = (boxes[i, k] - offset_y) / gain_y
                    limit = height
                else:  # x1, x2
                    v = (boxes[i, k] - offset_x) / gain_x
                    limit = width
                v = 0 if v < 0 else v
                out[i, k] = limit if v > limit else v
