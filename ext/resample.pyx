# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Pillow's antialiased bilinear resize of a BGR uint8 image, computed only for one crop of the resized image and
written straight into RGB CHW planes (uint8, or float32 / 255): a classifier's preprocessing in one call.

Bit-exact with ``PIL.Image.resize(..., BILINEAR)`` followed by the crop: the same integer arithmetic (22-bit
fixed-point weights, rounding offset, clamp after each pass), the passes in Pillow's order (``vertical_first``,
chosen by :mod:`runtime.kernels.resample`), on the same weights. Only the rows and columns the crop needs are
computed; integer sums do not depend on their order, so the passes can run over blocks of rows and whole rows at
a time, which vectorises: the horizontal pass on a block of 16 rows transposed to column-major order (the same
weight for every row), the vertical pass along rows.
"""

from libc.stdint cimport int32_t, uint8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy


ctypedef fused pixel_t:
    uint8_t
    float


cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>
    #include "isa_clones.h"

    #define RESAMPLE_BITS 22
    #define RESAMPLE_HALF (1 << (RESAMPLE_BITS - 1))
    #define RESAMPLE_BLOCK 16

    static inline uint8_t resample_clamp(int32_t v) {
        v >>= RESAMPLE_BITS;  /* arithmetic shift: floor, as Pillow's lookup table indexes it */
        return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
    }

    /* Rows [row0, row0 + n) of the BGR image (n <= 16), columns [col0, col0 + ncols), into planes
       t[c][x][r] (column-major, 16 rows per column); 4 rows at a time, so each row is read sequentially and
       each column's 16 bytes are written together. */
    #if defined(__GNUC__) && defined(__x86_64__)
    #include <immintrin.h>
    /* The transposition with SSSE3 shuffles (an AVX2 machine has them): per 16-pixel strip, each of the 16 rows'
       48 BGR bytes split into B, G and R vectors, then each channel's 16 x 16 bytes transposed by four rounds of
       interleaving the first and second halves. Strips that do not fill 16 pixels, and short blocks, go the
       portable way. */
    /* 16 x 16 bytes transposed in place: four rounds of interleaving the first and second halves. */
    __attribute__((target("avx2"))) static inline void resample_transpose16(__m128i* v) {
        __m128i u[16];
        for (int round = 0; round < 4; round++) {
            for (int k = 0; k < 8; k++) {
                u[2 * k] = _mm_unpacklo_epi8(v[k], v[k + 8]);
                u[2 * k + 1] = _mm_unpackhi_epi8(v[k], v[k + 8]);
            }
            for (int k = 0; k < 16; k++) v[k] = u[k];
        }
    }

    __attribute__((target("avx2"))) static void resample_transpose_avx2(
            const uint8_t* src, ptrdiff_t pitch, ptrdiff_t row0, ptrdiff_t col0, ptrdiff_t ncols, uint8_t* t,
            ptrdiff_t* done) {
        const __m128i b0 = _mm_setr_epi8(0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
        const __m128i b1 = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, 2, 5, 8, 11, 14, -1, -1, -1, -1, -1);
        const __m128i b2 = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 1, 4, 7, 10, 13);
        const __m128i g0 = _mm_setr_epi8(1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
        const __m128i g1 = _mm_setr_epi8(-1, -1, -1, -1, -1, 0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1);
        const __m128i g2 = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 2, 5, 8, 11, 14);
        const __m128i r0 = _mm_setr_epi8(2, 5, 8, 11, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
        const __m128i r1 = _mm_setr_epi8(-1, -1, -1, -1, -1, 1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1);
        const __m128i r2 = _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 3, 6, 9, 12, 15);
        ptrdiff_t x = 0;
        for (; x + 16 <= ncols; x += 16) {
            __m128i m[3][16];
            for (int i = 0; i < 16; i++) {
                const uint8_t* p = src + (row0 + i) * pitch + 3 * (col0 + x);
                __m128i a0 = _mm_loadu_si128((const __m128i*)p);
                __m128i a1 = _mm_loadu_si128((const __m128i*)(p + 16));
                __m128i a2 = _mm_loadu_si128((const __m128i*)(p + 32));
                m[0][i] = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(a0, b0), _mm_shuffle_epi8(a1, b1)),
                                       _mm_shuffle_epi8(a2, b2));
                m[1][i] = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(a0, g0), _mm_shuffle_epi8(a1, g1)),
                                       _mm_shuffle_epi8(a2, g2));
                m[2][i] = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(a0, r0), _mm_shuffle_epi8(a1, r1)),
                                       _mm_shuffle_epi8(a2, r2));
            }
            for (int c = 0; c < 3; c++) {
                __m128i* v = m[c];
                resample_transpose16(v);
                uint8_t* dst = t + (c * ncols + x) * RESAMPLE_BLOCK;
                for (int k = 0; k < 16; k++) _mm_storeu_si128((__m128i*)(dst + k * RESAMPLE_BLOCK), v[k]);
            }
        }
        *done = x;
    }
    #endif

    static void resample_transpose_from(const uint8_t* src, ptrdiff_t pitch, ptrdiff_t row0, ptrdiff_t n,
                                        ptrdiff_t col0, ptrdiff_t ncols, uint8_t* t, ptrdiff_t x_start);

    static void resample_transpose(const uint8_t* src, ptrdiff_t pitch, ptrdiff_t row0, ptrdiff_t n,
                                   ptrdiff_t col0, ptrdiff_t ncols, uint8_t* t) {
        ptrdiff_t done = 0;
    #if defined(__GNUC__) && defined(__x86_64__)
        if (n == RESAMPLE_BLOCK && __builtin_cpu_supports("avx2"))
            resample_transpose_avx2(src, pitch, row0, col0, ncols, t, &done);
    #endif
        resample_transpose_from(src, pitch, row0, n, col0, ncols, t, done);
    }

    /* The portable transposition of columns [x_start, ncols) of the strip. */
    AVX2_CLONES static void resample_transpose_from(const uint8_t* src, ptrdiff_t pitch, ptrdiff_t row0, ptrdiff_t n,
                                                    ptrdiff_t col0, ptrdiff_t ncols, uint8_t* t, ptrdiff_t x_start) {
        uint8_t* t0 = t;
        uint8_t* t1 = t + ncols * RESAMPLE_BLOCK;
        uint8_t* t2 = t + 2 * ncols * RESAMPLE_BLOCK;
        ptrdiff_t r = 0;
        for (; r + 4 <= n; r += 4) {
            const uint8_t* a = src + (row0 + r) * pitch + 3 * col0;
            const uint8_t* b = a + pitch;
            const uint8_t* c = b + pitch;
            const uint8_t* d = c + pitch;
            for (ptrdiff_t x = x_start; x < ncols; x++) {
                ptrdiff_t o = x * RESAMPLE_BLOCK + r;
                t0[o] = a[3 * x]; t0[o + 1] = b[3 * x]; t0[o + 2] = c[3 * x]; t0[o + 3] = d[3 * x];
                t1[o] = a[3 * x + 1]; t1[o + 1] = b[3 * x + 1]; t1[o + 2] = c[3 * x + 1]; t1[o + 3] = d[3 * x + 1];
                t2[o] = a[3 * x + 2]; t2[o + 1] = b[3 * x + 2]; t2[o + 2] = c[3 * x + 2]; t2[o + 3] = d[3 * x + 2];
            }
        }
        for (; r < n; r++) {
            const uint8_t* row = src + (row0 + r) * pitch + 3 * col0;
            for (ptrdiff_t x = x_start; x < ncols; x++) {
                t0[x * RESAMPLE_BLOCK + r] = row[3 * x];
                t1[x * RESAMPLE_BLOCK + r] = row[3 * x + 1];
                t2[x * RESAMPLE_BLOCK + r] = row[3 * x + 2];
            }
        }
    }

    /* Horizontal pass of one block: for every output column j and channel c, the 16 rows at once; results to
       mid[c][mrow + r][j] for the n valid rows. The portable loop, and an AVX2 one with intrinsics (compilers
       gather the bytes of the portable loop one by one), picked at run time; both add the same integers. */
    static void resample_horizontal_portable(const uint8_t* t, ptrdiff_t ncols, ptrdiff_t n, ptrdiff_t tw,
                                             const int32_t* first, const int32_t* count, const int32_t* w,
                                             ptrdiff_t kx, uint8_t* mid, ptrdiff_t mrows, ptrdiff_t mrow) {
        int32_t acc[RESAMPLE_BLOCK];
        for (ptrdiff_t c = 0; c < 3; c++) {
            const uint8_t* plane = t + c * ncols * RESAMPLE_BLOCK;
            uint8_t* out = mid + (c * mrows + mrow) * tw;
            for (ptrdiff_t j = 0; j < tw; j++) {
                for (int r = 0; r < RESAMPLE_BLOCK; r++) acc[r] = RESAMPLE_HALF;
                const int32_t* wj = w + j * kx;
                for (ptrdiff_t k = 0; k < count[j]; k++) {
                    const uint8_t* col = plane + (first[j] + k) * RESAMPLE_BLOCK;
                    int32_t wk = wj[k];
                    for (int r = 0; r < RESAMPLE_BLOCK; r++) acc[r] += (int32_t)col[r] * wk;
                }
                for (ptrdiff_t r = 0; r < n; r++) out[r * tw + j] = resample_clamp(acc[r]);
            }
        }
    }

    #if defined(__GNUC__) && defined(__x86_64__)
    #include <immintrin.h>
    #define RESAMPLE_HAVE_AVX2 1
    __attribute__((target("avx2"))) static void resample_horizontal_avx2(
            const uint8_t* t, ptrdiff_t ncols, ptrdiff_t n, ptrdiff_t tw, const int32_t* first, const int32_t* count,
            const int32_t* w, ptrdiff_t kx, uint8_t* mid, ptrdiff_t mrows, ptrdiff_t mrow) {
        const __m256i half = _mm256_set1_epi32(RESAMPLE_HALF);
        __m128i group[16];
        uint8_t lanes[RESAMPLE_BLOCK];
        for (ptrdiff_t c = 0; c < 3; c++) {
            const uint8_t* plane = t + c * ncols * RESAMPLE_BLOCK;
            uint8_t* out = mid + (c * mrows + mrow) * tw;
            for (ptrdiff_t j = 0; j < tw; j++) {
                __m256i lo = half, hi = half;
                const int32_t* wj = w + j * kx;
                const uint8_t* col = plane + (ptrdiff_t)first[j] * RESAMPLE_BLOCK;
                for (ptrdiff_t k = 0; k < count[j]; k++) {
                    __m128i px = _mm_loadu_si128((const __m128i*)(col + k * RESAMPLE_BLOCK));
                    __m256i wk = _mm256_set1_epi32(wj[k]);
                    lo = _mm256_add_epi32(lo, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(px), wk));
                    hi = _mm256_add_epi32(hi, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(px, 8)), wk));
                }
                /* >> 22 leaves -640..639: the saturating packs clamp to 0..255 exactly as resample_clamp */
                __m256i words = _mm256_packs_epi32(_mm256_srai_epi32(lo, RESAMPLE_BITS),
                                                   _mm256_srai_epi32(hi, RESAMPLE_BITS));
                __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1));
                /* packs works per 128-bit half: lanes come out as rows 0-3, 8-11, 4-7, 12-15 */
                bytes = _mm_shuffle_epi32(bytes, _MM_SHUFFLE(3, 1, 2, 0));
                ptrdiff_t j0 = j & ~(ptrdiff_t)15;
                if (j0 + 16 <= tw) {  /* a full group of 16 columns: transposed back to rows, stored 16 bytes at once */
                    group[j - j0] = bytes;
                    if (j - j0 == 15) {
                        resample_transpose16(group);
                        for (ptrdiff_t r = 0; r < n; r++) _mm_storeu_si128((__m128i*)(out + r * tw + j0), group[r]);
                    }
                } else {
                    _mm_storeu_si128((__m128i*)lanes, bytes);
                    for (ptrdiff_t r = 0; r < n; r++) out[r * tw + j] = lanes[r];
                }
            }
        }
    }
    #endif

    static void resample_horizontal(const uint8_t* t, ptrdiff_t ncols, ptrdiff_t n, ptrdiff_t tw,
                                    const int32_t* first, const int32_t* count, const int32_t* w, ptrdiff_t kx,
                                    uint8_t* mid, ptrdiff_t mrows, ptrdiff_t mrow) {
    #ifdef RESAMPLE_HAVE_AVX2
        if (__builtin_cpu_supports("avx2")) {
            resample_horizontal_avx2(t, ncols, n, tw, first, count, w, kx, mid, mrows, mrow);
            return;
        }
    #endif
        resample_horizontal_portable(t, ncols, n, tw, first, count, w, kx, mid, mrows, mrow);
    }

    /* Vertical pass of one output row of one plane: acc over the rows of its window, clamped into row8. */
    AVX2_CLONES static void resample_vertical(const uint8_t* plane, ptrdiff_t tw, ptrdiff_t first, ptrdiff_t count,
                                              const int32_t* w, int32_t* acc, uint8_t* row8) {
        for (ptrdiff_t j = 0; j < tw; j++) acc[j] = RESAMPLE_HALF;
        for (ptrdiff_t k = 0; k < count; k++) {
            const uint8_t* src = plane + (first + k) * tw;
            int32_t wk = w[k];
            for (ptrdiff_t j = 0; j < tw; j++) acc[j] += (int32_t)src[j] * wk;
        }
        for (ptrdiff_t j = 0; j < tw; j++) row8[j] = resample_clamp(acc[j]);
    }

    /* uint8 row -> float32 row / 255 (correctly rounded: numpy's uint8 -> float32 / 255 bit for bit). */
    AVX2_CLONES static void resample_to_float(const uint8_t* row8, ptrdiff_t n, float* out) {
        for (ptrdiff_t j = 0; j < n; j++) out[j] = (float)row8[j] / 255.0f;
    }
    """
    void resample_transpose(const uint8_t* src, Py_ssize_t pitch, Py_ssize_t row0, Py_ssize_t n, Py_ssize_t col0,
                            Py_ssize_t ncols, uint8_t* t) noexcept nogil
    void resample_horizontal(const uint8_t* t, Py_ssize_t ncols, Py_ssize_t n, Py_ssize_t tw, const int32_t* first,
                             const int32_t* count, const int32_t* w, Py_ssize_t kx, uint8_t* mid, Py_ssize_t mrows,
                             Py_ssize_t mrow) noexcept nogil
    void resample_vertical(const uint8_t* plane, Py_ssize_t tw, Py_ssize_t first, Py_ssize_t count, const int32_t* w,
                           int32_t* acc, uint8_t* row8) noexcept nogil
    void resample_to_float(const uint8_t* row8, Py_ssize_t n, float* out) noexcept nogil
    int RESAMPLE_BLOCK


cdef extern from *:
    """
    /* Vertical pass straight on interleaved BGR rows: output row i of columns [col0, col0 + ncols), all three
       channels at once (3 * ncols contiguous bytes per source row). */
    AVX2_CLONES static void resample_vertical_bgr(const uint8_t* src, ptrdiff_t pitch, ptrdiff_t col0,
                                                  ptrdiff_t ncols, ptrdiff_t first, ptrdiff_t count, const int32_t* w,
                                                  int32_t* acc, uint8_t* row8) {
        ptrdiff_t n = 3 * ncols;
        for (ptrdiff_t j = 0; j < n; j++) acc[j] = RESAMPLE_HALF;
        for (ptrdiff_t k = 0; k < count; k++) {
            const uint8_t* s = src + (first + k) * pitch + 3 * col0;
            int32_t wk = w[k];
            for (ptrdiff_t j = 0; j < n; j++) acc[j] += (int32_t)s[j] * wk;
        }
        for (ptrdiff_t j = 0; j < n; j++) row8[j] = resample_clamp(acc[j]);
    }
    """
    void resample_vertical_bgr(const uint8_t* src, Py_ssize_t pitch, Py_ssize_t col0, Py_ssize_t ncols,
                               Py_ssize_t first, Py_ssize_t count, const int32_t* w, int32_t* acc,
                               uint8_t* row8) noexcept nogil


def resample_crop_into(const uint8_t[:, :, ::1] image_bgr, pixel_t[:, :, ::1] out,
                       const int32_t[::1] x_first, const int32_t[::1] x_count, const int32_t[:, ::1] x_weights,
                       const int32_t[::1] y_first, const int32_t[::1] y_count, const int32_t[:, ::1] y_weights,
                       bint vertical_first=False):
    """out[2 - c, i, j] = Pillow-resized image_bgr[., ., c] at crop row i, column j (float32 planes: / 255).

    ``x_first[j]`` / ``x_count[j]`` / ``x_weights[j, :count]``: the source columns and fixed-point weights of
    output column j (likewise rows); windows must lie inside the image and move forward with j (ValueError
    otherwise). ``vertical_first``: run the vertical pass first (Pillow does when the height shrinks by more than
    twice as many pixels as the width).
    """
    cdef Py_ssize_t h = image_bgr.shape[0], w = image_bgr.shape[1]
    cdef Py_ssize_t th = out.shape[1], tw = out.shape[2]
    if out.shape[0] != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected a (h, w, 3) image and (3, H, W) planes, got {image_bgr.shape} and {out.shape}")
    if x_first.shape[0] != tw or x_count.shape[0] != tw or x_weights.shape[0] != tw:
        raise ValueError(f"column weights for {x_first.shape[0]} columns, the output has {tw}")
    if y_first.shape[0] != th or y_count.shape[0] != th or y_weights.shape[0] != th:
        raise ValueError(f"row weights for {y_first.shape[0]} rows, the output has {th}")
    if th == 0 or tw == 0:
        return
    cdef Py_ssize_t j
    for j in range(tw):
        if (x_first[j] < 0 or x_count[j] < 1 or x_count[j] > x_weights.shape[1] or x_first[j] + x_count[j] > w
                or (j and x_first[j] < x_first[j - 1])):
            raise ValueError(f"column window {j} ({x_first[j]}, {x_count[j]}) does not fit a {w}-pixel-wide image")
    for j in range(th):
        if (y_first[j] < 0 or y_count[j] < 1 or y_count[j] > y_weights.shape[1] or y_first[j] + y_count[j] > h
                or (j and y_first[j] < y_first[j - 1])):
            raise ValueError(f"row window {j} ({y_first[j]}, {y_count[j]}) does not fit a {h}-pixel-high image")
    cdef Py_ssize_t row0 = y_first[0], row1 = 0, col0 = x_first[0], col1 = 0
    for j in range(th):
        row1 = max(row1, y_first[j] + y_count[j])
    for j in range(tw):
        col1 = max(col1, x_first[j] + x_count[j])
    if vertical_first:
        _vertical_first(image_bgr, out, x_first, x_count, x_weights, y_first, y_count, y_weights, col0, col1)
        return
    cdef Py_ssize_t rows = row1 - row0, ncols = col1 - col0, block = RESAMPLE_BLOCK
    cdef uint8_t* t = <uint8_t*> malloc(3 * ncols * block)
    cdef uint8_t* mid = <uint8_t*> malloc(3 * rows * tw)
    cdef int32_t* acc = <int32_t*> malloc(tw * sizeof(int32_t))
    cdef uint8_t* row8 = <uint8_t*> malloc(tw)
    cdef int32_t* first_local = <int32_t*> malloc(tw * sizeof(int32_t))
    if t == NULL or mid == NULL or acc == NULL or row8 == NULL or first_local == NULL:
        free(t); free(mid); free(acc); free(row8); free(first_local)
        raise MemoryError()
    cdef Py_ssize_t r, n, c, i
    try:
        with nogil:
            for j in range(tw):
                first_local[j] = <int32_t>(x_first[j] - col0)
            r = row0
            while r < row1:
                n = min(block, row1 - r)
                resample_transpose(&image_bgr[0, 0, 0], 3 * w, r, n, col0, ncols, t)
                resample_horizontal(t, ncols, n, tw, first_local, &x_count[0], &x_weights[0, 0],
                                    x_weights.shape[1], mid, rows, r - row0)
                r += block
            for c in range(3):
                for i in range(th):
                    resample_vertical(mid + c * rows * tw, tw, y_first[i] - row0, y_count[i], &y_weights[i, 0],
                                      acc, row8)
                    if pixel_t is float:
                        resample_to_float(row8, tw, &out[2 - c, i, 0])
                    else:
                        memcpy(&out[2 - c, i, 0], row8, tw)
    finally:
        free(t); free(mid); free(acc); free(row8); free(first_local)


cdef _vertical_first(const uint8_t[:, :, ::1] image_bgr, pixel_t[:, :, ::1] out, const int32_t[::1] x_first,
                     const int32_t[::1] x_count, const int32_t[:, ::1] x_weights, const int32_t[::1] y_first,
                     const int32_t[::1] y_count, const int32_t[:, ::1] y_weights, Py_ssize_t col0, Py_ssize_t col1):
    """The vertical pass first (output rows of the needed source columns, interleaved), then the horizontal one."""
    cdef Py_ssize_t w = image_bgr.shape[1], th = out.shape[1], tw = out.shape[2]
    cdef Py_ssize_t ncols = col1 - col0, block = RESAMPLE_BLOCK, i, j, c, r, n
    cdef uint8_t* vert = <uint8_t*> malloc(th * 3 * ncols)
    cdef int32_t* acc = <int32_t*> malloc(3 * ncols * sizeof(int32_t))
    cdef uint8_t* t = <uint8_t*> malloc(3 * ncols * block)
    cdef uint8_t* planes = <uint8_t*> malloc(3 * th * tw)
    cdef int32_t* first_local = <int32_t*> malloc(tw * sizeof(int32_t))
    if vert == NULL or acc == NULL or t == NULL or planes == NULL or first_local == NULL:
        free(vert); free(acc); free(t); free(planes); free(first_local)
        raise MemoryError()
    try:
        with nogil:
            for i in range(th):
                resample_vertical_bgr(&image_bgr[0, 0, 0], 3 * w, col0, ncols, y_first[i], y_count[i],
                                      &y_weights[i, 0], acc, vert + i * 3 * ncols)
            for j in range(tw):
                first_local[j] = <int32_t>(x_first[j] - col0)
            r = 0
            while r < th:
                n = min(block, th - r)
                resample_transpose(vert, 3 * ncols, r, n, 0, ncols, t)
                resample_horizontal(t, ncols, n, tw, first_local, &x_count[0], &x_weights[0, 0], x_weights.shape[1],
                                    planes, th, r)
                r += block
            for c in range(3):
                for i in range(th):
                    if pixel_t is float:
                        resample_to_float(planes + (c * th + i) * tw, tw, &out[2 - c, i, 0])
                    else:
                        memcpy(&out[2 - c, i, 0], planes + (c * th + i) * tw, tw)
    finally:
        free(vert); free(acc); free(t); free(planes); free(first_local)
