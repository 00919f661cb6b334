# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Letterbox kernels: pack a resized BGR uint8 image into padded RGB float32 CHW planes in one pass, and
map detections back to the source image."""

from libc.stdint cimport uint8_t
from libc.stdlib cimport free, malloc


cdef extern from "stream_store.h":
    void stream_floats(float* dst, const float* src, Py_ssize_t n) noexcept nogil
    void stream_fill_floats(float* dst, Py_ssize_t n, float v) noexcept nogil
    void stream_fence() noexcept nogil


cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    /* Built for AVX2 and for the baseline ISA; the loader picks one for the CPU it runs on. */
    #if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
    #define PACK_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define PACK_CLONES
    #endif

    /* One image row: BGR bytes -> R, G, B float rows in tmp (3 * w floats, stays in L1).
       (float) v / 255.0f is correctly rounded, so it equals numpy's / torch's uint8 -> float32 / 255
       bit for bit; the loop vectorises. */
    PACK_CLONES static void convert_row(const uint8_t* bgr, ptrdiff_t w, float* tmp) {
        float* r = tmp;
        float* g = tmp + w;
        float* b = tmp + 2 * w;
        for (ptrdiff_t x = 0; x < w; x++) {
            r[x] = (float) bgr[3 * x + 2] / 255.0f;
            g[x] = (float) bgr[3 * x + 1] / 255.0f;
            b[x] = (float) bgr[3 * x] / 255.0f;
        }
    }
    """
    void convert_row(const uint8_t* bgr, Py_ssize_t w, float* tmp) noexcept nogil


def pack_bgr_to_chw(const uint8_t[:, :, ::1] image_bgr, float[:, :, ::1] out, Py_ssize_t top,
                    Py_ssize_t left, float pad_value):
    """out[c, top + y, left + x] = image_bgr[y, x, 2 - c] / 255; every other pixel = pad_value.

    The image must fit: top + h <= H and left + w <= W (ValueError otherwise). ``out`` is written once,
    with streaming stores (ext/stream_store.h): inference reads it next, not this core's cache.
    """
    cdef Py_ssize_t h = image_bgr.shape[0], w = image_bgr.shape[1]
    cdef Py_ssize_t H = out.shape[1], W = out.shape[2]
    cdef Py_ssize_t c, y
    cdef float* tmp
    cdef float* row
    if out.shape[0] != 3 or image_bgr.shape[2] != 3 or top < 0 or left < 0 or top + h > H or left + w > W:
        raise ValueError(f"a ({h}, {w}, {image_bgr.shape[2]}) image at ({top}, {left}) does not fit "
                         f"output planes of shape ({out.shape[0]}, {H}, {W})")
    if H == 0 or W == 0:
        return
    tmp = <float*> malloc((3 * w + 1) * sizeof(float))
    if tmp == NULL:
        raise MemoryError()
    with nogil:
        for c in range(3):
            stream_fill_floats(&out[c, 0, 0], top * W, pad_value)
            stream_fill_floats(&out[c, 0, 0] + (top + h) * W, (H - top - h) * W, pad_value)
        for y in range(h):
            if w > 0:
                convert_row(&image_bgr[y, 0, 0], w, tmp)
            for c in range(3):
                row = &out[c, top + y, 0]
                if left > 0:
                    stream_fill_floats(row, left, pad_value)
                stream_floats(row + left, tmp + c * w, w)
                if left + w < W:
                    stream_fill_floats(row + left + w, W - left - w, pad_value)
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
