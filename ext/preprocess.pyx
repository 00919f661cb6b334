# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Pack a resized BGR uint8 image into a padded RGB float32 CHW plane set in one pass."""

from libc.stdint cimport uint8_t


def pack_bgr_to_chw(const uint8_t[:, :, ::1] image_bgr, float[:, :, ::1] out, Py_ssize_t top,
                    Py_ssize_t left, const float[::1] lut, float pad_value):
    """out[c, top + y, left + x] = lut[image_bgr[y, x, 2 - c]]; every other pixel = pad_value."""
    cdef Py_ssize_t h = image_bgr.shape[0], w = image_bgr.shape[1]
    cdef Py_ssize_t out_h = out.shape[1], out_w = out.shape[2]
    cdef Py_ssize_t c, y, x
    with nogil:
        for c in range(3):
            for y in range(out_h):
                if y < top or y >= top + h:
                    for x in range(out_w):
                        out[c, y, x] = pad_value
                else:
                    for x in range(left):
                        out[c, y, x] = pad_value
                    for x in range(left + w, out_w):
                        out[c, y, x] = pad_value
        for y in range(h):
            for x in range(w):
                out[0, top + y, left + x] = lut[image_bgr[y, x, 2]]
                out[1, top + y, left + x] = lut[image_bgr[y, x, 1]]
                out[2, top + y, left + x] = lut[image_bgr[y, x, 0]]
