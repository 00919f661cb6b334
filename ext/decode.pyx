# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Decode kernels behind :mod:`runtime.decode` (private; call them only through the wrappers there).

One call decodes one image into NMS candidates: the class maps are scanned once in logit space
(running max per anchor), only prefiltered anchors pay for a sigmoid and the exact float32 test, the
cap is an O(n) radix select, and only kept anchors pay for the DFL. Everything after the argument
checks runs without the GIL (it is taken back briefly to allocate the outputs).

The module is built for the baseline ISA; its vector loops carry clones for wider units, picked at
load time for the CPU (ext/isa_clones.h): the float32 column max for AVX2, the float64 DFL for AVX2
and AVX-512. The module is built without FP contraction and the DFL adds its terms in one fixed
order whatever the vector width, so every CPU computes the same results.

Scores are the float32 rounding of the float64 sigmoid, i.e. a correctly rounded float32 sigmoid up
to rare double-rounding cases.
"""

cimport numpy as cnp
from libc.math cimport INFINITY, exp, fabs, log, nextafterf
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memset

import numpy as np

cnp.import_array()


cdef extern from *:
    """
    #include <math.h>
    #include <stddef.h>
    #include <stdint.h>
    #include <string.h>
    #include "isa_clones.h"
    #if defined(_MSC_VER)
    #define DECODE_RESTRICT __restrict
    #else
    #define DECODE_RESTRICT restrict
    #endif

    /* out[a] = max(mat[r * n + a] for r < nrows), rows of n floats, nrows >= 1. Row-outer, column-inner:
       every pass streams contiguous rows, four rows per pass so out is loaded and stored a quarter as
       often; the select is branch-free and vectorises. A NaN never wins against a number. */
    AVX2_CLONES static void decode_column_max(const float* mat, ptrdiff_t n, ptrdiff_t nrows, float* DECODE_RESTRICT out) {
        for (ptrdiff_t a = 0; a < n; a++) out[a] = mat[a];
        ptrdiff_t r = 1;
        for (; r + 4 <= nrows; r += 4) {
            const float* DECODE_RESTRICT r0 = mat + r * n;
            const float* DECODE_RESTRICT r1 = r0 + n;
            const float* DECODE_RESTRICT r2 = r1 + n;
            const float* DECODE_RESTRICT r3 = r2 + n;
            for (ptrdiff_t a = 0; a < n; a++) {
                float m = out[a], v;
                v = r0[a]; m = v > m ? v : m;
                v = r1[a]; m = v > m ? v : m;
                v = r2[a]; m = v > m ? v : m;
                v = r3[a]; out[a] = v > m ? v : m;
            }
        }
        for (; r < nrows; r++) {
            const float* DECODE_RESTRICT row = mat + r * n;
            for (ptrdiff_t a = 0; a < n; a++) { float v = row[a], m = out[a]; out[a] = v > m ? v : m; }
        }
    }

    /* DFL distances (l, t, r, b) of anchor column a of a (4 * reg_max, n) box map: per side a softmax over
       the reg_max bins, then the expectation sum(p_i * bins[i]); float64 throughout. exp(x - max)
       (argument <= 0) is a degree-10 Taylor polynomial of (x - max) / 128 squared 7 times (relative
       error < 2e-9; arguments clamped at -60, where a term is < 1e-26 of the largest and cannot move
       the sums). The vector lanes are 16 running sums, (side, bin % 4), added up in a fixed order at
       the end, so every ISA computes the same result.
       lanes: decode_dfl_lanes(reg_max) doubles, [logits | weights | keep] in groups of 16 (group g,
       side s, k: bin 4 g + k of side s), set up once by decode_dfl_prepare. */
    #define DECODE_DFL_LANES 16
    static inline ptrdiff_t decode_dfl_groups(ptrdiff_t reg_max) { return (reg_max + 3) / 4; }
    static inline ptrdiff_t decode_dfl_lanes(ptrdiff_t reg_max) { return 3 * DECODE_DFL_LANES * decode_dfl_groups(reg_max); }

    /* Weights (the bin values), keep flags (1: a bin, 0: padding to a multiple of 4) and the padding's
       logits (-inf: its terms clamp to exp(-60), which the keep flag zeroes). */
    static void decode_dfl_prepare(const double* bins, ptrdiff_t reg_max, double* lanes) {
        const ptrdiff_t groups = decode_dfl_groups(reg_max);
        double* logits = lanes;
        double* weights = lanes + groups * DECODE_DFL_LANES;
        double* keep = weights + groups * DECODE_DFL_LANES;
        for (ptrdiff_t g = 0; g < groups; g++)
            for (int j = 0; j < DECODE_DFL_LANES; j++) {
                const ptrdiff_t i = 4 * g + j % 4, at = g * DECODE_DFL_LANES + j;
                logits[at] = -INFINITY;
                weights[at] = i < reg_max ? bins[i] : 0.0;
                keep[at] = i < reg_max ? 1.0 : 0.0;
            }
    }

    AVX512_CLONES static void decode_dfl(const float* box, ptrdiff_t n, ptrdiff_t a, ptrdiff_t reg_max,
                                       double* DECODE_RESTRICT lanes, double* DECODE_RESTRICT dist) {
        const ptrdiff_t groups = decode_dfl_groups(reg_max);
        double* DECODE_RESTRICT logits = lanes;
        const double* DECODE_RESTRICT weights = lanes + groups * DECODE_DFL_LANES;
        const double* DECODE_RESTRICT keep = weights + groups * DECODE_DFL_LANES;
        double mx[DECODE_DFL_LANES], ssum[DECODE_DFL_LANES], wsum[DECODE_DFL_LANES];
        for (int side = 0; side < 4; side++) {
            const float* col = box + side * reg_max * n + a;
            double* dst = logits + side * 4;
            double m = col[0];
            for (ptrdiff_t i = 0; i < reg_max; i++) {
                const double v = col[i * n];
                dst[(i >> 2) * DECODE_DFL_LANES + (i & 3)] = v;
                m = v > m ? v : m;
            }
            mx[side * 4] = mx[side * 4 + 1] = mx[side * 4 + 2] = mx[side * 4 + 3] = m;
        }
        for (int j = 0; j < DECODE_DFL_LANES; j++) { ssum[j] = 0.0; wsum[j] = 0.0; }
        for (ptrdiff_t g = 0; g < groups; g++) {
            const double* DECODE_RESTRICT x = logits + g * DECODE_DFL_LANES;
            const double* DECODE_RESTRICT w = weights + g * DECODE_DFL_LANES;
            const double* DECODE_RESTRICT on = keep + g * DECODE_DFL_LANES;
            for (int j = 0; j < DECODE_DFL_LANES; j++) {
                double y = x[j] - mx[j];
                y = (y > -60.0 ? y : -60.0) * 0.0078125;
                double e = 1.0 / 362880.0 + y * (1.0 / 3628800.0);
                e = 1.0 / 40320.0 + y * e;
                e = 1.0 / 5040.0 + y * e;
                e = 1.0 / 720.0 + y * e;
                e = 1.0 / 120.0 + y * e;
                e = 1.0 / 24.0 + y * e;
                e = 1.0 / 6.0 + y * e;
                e = 0.5 + y * e;
                e = 1.0 + y * e;
                e = 1.0 + y * e;
                e = e * e; e = e * e; e = e * e; e = e * e; e = e * e; e = e * e; e = e * e;
                e = e * on[j];
                ssum[j] = ssum[j] + e;
                wsum[j] = wsum[j] + e * w[j];
            }
        }
        for (int side = 0; side < 4; side++) {
            const double* s = ssum + side * 4;
            const double* ws = wsum + side * 4;
            dist[side] = ((ws[0] + ws[1]) + (ws[2] + ws[3])) / ((s[0] + s[1]) + (s[2] + s[3]));
        }
    }

    /* The bit pattern of a float32 (for the radix select; positive floats order like their bits). */
    static inline uint32_t decode_float_bits(float x) { uint32_t u; memcpy(&u, &x, sizeof u); return u; }
    """
    void decode_column_max(const float* mat, Py_ssize_t n, Py_ssize_t nrows, float* out) noexcept nogil
    Py_ssize_t decode_dfl_lanes(Py_ssize_t reg_max) noexcept nogil
    void decode_dfl_prepare(const double* bins, Py_ssize_t reg_max, double* lanes) noexcept nogil
    void decode_dfl(const float* box, Py_ssize_t n, Py_ssize_t a, Py_ssize_t reg_max, double* lanes,
                    double* dist) noexcept nogil
    uint32_t decode_float_bits(float x) noexcept nogil


cdef struct Selection:
    # Candidates before the outputs exist: rows of (score, class, global anchor) in anchor order and,
    # when the cap triggered, the kept rows (ascending). Owned buffers, freed by _selection_free.
    float* maxbuf
    int32_t* pre
    float* score
    int32_t* cls
    int32_t* anchor
    int64_t* rows      # NULL: every row is kept
    Py_ssize_t m       # rows selected
    Py_ssize_t n_out   # rows kept


cdef struct Level:
    const float* box   # (4 * reg_max, n) DFL logits
    const float* cls   # (nc, n) class logits
    Py_ssize_t n       # anchors
    Py_ssize_t offset  # global id of the first anchor
    Py_ssize_t width
    double stride


cdef inline float _sigmoid32(float x) noexcept nogil:
    """float32(1 / (1 + exp(-x))) evaluated in float64: the float32 score of a logit."""
    return <float> (1.0 / (1.0 + exp(-<double> x)))


cdef inline double _logit64(double p) noexcept nogil:
    """log(p / (1 - p)) in float64; -inf for p <= 0, +inf for p >= 1."""
    if p <= 0.0:
        return -INFINITY
    if p >= 1.0:
        return INFINITY
    return log(p / (1.0 - p))


cdef inline void _free(void* p) noexcept nogil:
    if p != NULL:
        free(p)


cdef void _selection_free(Selection* s) noexcept nogil:
    _free(s.maxbuf)
    _free(s.pre)
    _free(s.score)
    _free(s.cls)
    _free(s.anchor)
    _free(s.rows)
    memset(s, 0, sizeof(Selection))


cdef void* _alloc(Py_ssize_t count, size_t size) noexcept nogil:
    """malloc of count items (at least one, so NULL always means out of memory)."""
    return malloc((count if count > 0 else 1) * size)


cdef int _first_class_with_score(const float* cls, Py_ssize_t n, Py_ssize_t nc, Py_ssize_t a, float s) noexcept nogil:
    """Smallest class c whose float32 score sigmoid(cls[c, a]) equals s (s = the column's best score).

    The sigmoid is monotone, so only logits above logit(previous float32 of s) can round to s; only
    those classes pay for a sigmoid. Reproduces argmax over the float32 scores with the first max on
    ties, including ties that float32 rounding / saturation creates between distinct logits.
    """
    cdef double lb = _logit64(<double> nextafterf(s, 0.0))
    lb = lb - 1e-6 * (1.0 + fabs(lb))
    cdef Py_ssize_t c
    cdef float v
    for c in range(nc):
        v = cls[c * n + a]
        if v > lb and _sigmoid32(v) == s:
            return <int> c
    return -1  # unreachable for a confirmed candidate: its max logit maps to s


cdef int _cap_rows(Selection* s, Py_ssize_t max_candidates) noexcept nogil:
    """Keep the top max_candidates scores (ascending row order; ties at the cut go to the earliest
    rows). Scores are > 0, so their float32 bit patterns order like the values: an O(m) two-pass radix
    select on the 16-bit halves. Returns -1 when out of memory."""
    cdef Py_ssize_t m = s.m, k = max_candidates, i, j, above, need
    if m <= k:
        s.n_out = m
        return 0
    cdef int64_t* hist = <int64_t*> calloc(65536, sizeof(int64_t))
    if hist == NULL:
        return -1
    s.rows = <int64_t*> _alloc(k, sizeof(int64_t))
    if s.rows == NULL:
        free(hist)
        return -1
    cdef uint32_t key, hi = 65535, lo = 65535, kth
    for i in range(m):
        hist[decode_float_bits(s.score[i]) >> 16] += 1
    above = 0
    while above + hist[hi] < k:
        above += hist[hi]
        hi -= 1
    memset(hist, 0, 65536 * sizeof(int64_t))
    for i in range(m):
        key = decode_float_bits(s.score[i])
        if (key >> 16) == hi:
            hist[key & 65535] += 1
    while above + hist[lo] < k:
        above += hist[lo]
        lo -= 1
    free(hist)
    kth = (hi << 16) | lo
    need = k - above  # rows equal to the k-th largest that still fit
    j = 0
    for i in range(m):
        key = decode_float_bits(s.score[i])
        if key > kth:
            s.rows[j] = i
            j += 1
        elif key == kth and need > 0:
            s.rows[j] = i
            j += 1
            need -= 1
    s.n_out = k
    return 0


cdef int _select_truncated(const Level* levels, int nl, Py_ssize_t nc, double logit_thr, float conf,
                           const uint8_t* allowed, bint multi_label, Py_ssize_t max_candidates,
                           Selection* s) noexcept nogil:
    """Steps 1-5 of a truncated-head decode (max logit per anchor, logit prefilter, exact float32
    confirmation and best class, classes filter, cap) into s. Returns -1 when out of memory."""
    cdef Py_ssize_t total = levels[nl - 1].offset + levels[nl - 1].n
    cdef Py_ssize_t g, j, k, a, c, cap, m
    cdef int l
    cdef float v, sc
    cdef const float* cls
    s.maxbuf = <float*> _alloc(total, sizeof(float))
    s.pre = <int32_t*> _alloc(total, sizeof(int32_t))
    if s.maxbuf == NULL or s.pre == NULL:
        return -1
    # 1. per-anchor max logit, streaming the (nc, anchors) maps once; no sigmoid yet
    for l in range(nl):
        if levels[l].n > 0:
            decode_column_max(levels[l].cls, levels[l].n, nc, s.maxbuf + levels[l].offset)
    # 2. anchors whose max logit clears the logit-space prefilter
    k = 0
    for g in range(total):
        if s.maxbuf[g] > logit_thr:
            s.pre[k] = <int32_t> g
            k += 1
    # 3. capacity: one row per prefiltered anchor (single label) or per prefiltered pair
    cap = k
    if multi_label:
        cap = 0
        l = 0
        for j in range(k):
            g = s.pre[j]
            while g >= levels[l].offset + levels[l].n:
                l += 1
            cls = levels[l].cls
            a = g - levels[l].offset
            for c in range(nc):
                if cls[c * levels[l].n + a] > logit_thr and allowed[c]:
                    cap += 1
    s.score = <float*> _alloc(cap, sizeof(float))
    s.cls = <int32_t*> _alloc(cap, sizeof(int32_t))
    s.anchor = <int32_t*> _alloc(cap, sizeof(int32_t))
    if s.score == NULL or s.cls == NULL or s.anchor == NULL:
        return -1
    # 4. exact float32 confirmation, best class, classes filter
    m = 0
    l = 0
    for j in range(k):
        g = s.pre[j]
        while g >= levels[l].offset + levels[l].n:
            l += 1
        cls = levels[l].cls
        a = g - levels[l].offset
        if multi_label:
            for c in range(nc):
                v = cls[c * levels[l].n + a]
                if v > logit_thr and allowed[c]:
                    sc = _sigmoid32(v)
                    if sc > conf:
                        s.score[m] = sc
                        s.cls[m] = <int32_t> c
                        s.anchor[m] = <int32_t> g
                        m += 1
        else:
            sc = _sigmoid32(s.maxbuf[g])
            if sc > conf:
                c = _first_class_with_score(cls, levels[l].n, nc, a, sc)
                if c >= 0 and allowed[c]:
                    s.score[m] = sc
                    s.cls[m] = <int32_t> c
                    s.anchor[m] = <int32_t> g
                    m += 1
    s.m = m
    # 5. cap: keep the top max_candidates scores, rows stay in anchor order
    return _cap_rows(s, max_candidates)


cdef int _write_truncated(const Level* levels, Py_ssize_t reg_max, const double* bins, const Selection* s,
                          float* boxes, float* scores, int32_t* class_ids, int64_t* anchor_ids) noexcept nogil:
    """Step 6: the kept rows into the outputs; DFL once per kept anchor (reg_max 1: the raw distances), as
    letterbox-pixel xyxy
    x1 = (ax - l) * s, y1 = (ay - t) * s, x2 = (ax + r) * s, y2 = (ay + b) * s, rounded once to float32.
    Returns -1 when out of memory."""
    cdef double* lanes = <double*> _alloc(decode_dfl_lanes(reg_max), sizeof(double))
    if lanes == NULL:
        return -1
    decode_dfl_prepare(bins, reg_max, lanes)
    cdef double dist[4]
    cdef double ax, ay, stride
    cdef Py_ssize_t j, r, g, a, x, y, prev = -1
    cdef int l = 0, k
    for j in range(s.n_out):
        r = s.rows[j] if s.rows != NULL else j
        g = s.anchor[r]
        scores[j] = s.score[r]
        class_ids[j] = s.cls[r]
        anchor_ids[j] = g
        if g == prev:
            boxes[4 * j] = boxes[4 * j - 4]
            boxes[4 * j + 1] = boxes[4 * j - 3]
            boxes[4 * j + 2] = boxes[4 * j - 2]
            boxes[4 * j + 3] = boxes[4 * j - 1]
            continue
        while g >= levels[l].offset + levels[l].n:
            l += 1
        a = g - levels[l].offset
        y = a // levels[l].width
        x = a - y * levels[l].width
        if reg_max == 1:  # DFL-free head (YOLO26): the box conv outputs the distances themselves
            for k in range(4):
                dist[k] = levels[l].box[k * levels[l].n + a]
        else:
            decode_dfl(levels[l].box, levels[l].n, a, reg_max, lanes, dist)
        ax = x + 0.5
        ay = y + 0.5
        stride = levels[l].stride
        boxes[4 * j] = <float> ((ax - dist[0]) * stride)
        boxes[4 * j + 1] = <float> ((ay - dist[1]) * stride)
        boxes[4 * j + 2] = <float> ((ax + dist[2]) * stride)
        boxes[4 * j + 3] = <float> ((ay + dist[3]) * stride)
        prev = g
    free(lanes)
    return 0


cdef cnp.ndarray _f32_matrix(object a, str what):
    """a as a C-contiguous 2-D float32 array, else ValueError naming what."""
    if (not cnp.PyArray_Check(a) or cnp.PyArray_TYPE(<cnp.ndarray> a) != cnp.NPY_FLOAT32
            or cnp.PyArray_NDIM(<cnp.ndarray> a) != 2 or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> a)):
        raise ValueError(f"{what}: expected a C-contiguous 2-D float32 array, got {a!r:.80}")
    return <cnp.ndarray> a


cdef tuple _outputs(Py_ssize_t n):
    return (np.empty((n, 4), np.float32), np.empty(n, np.float32), np.empty(n, np.int32), np.empty(n, np.int64))


def decode_truncated_image(tuple box_levels, tuple cls_levels, const int64_t[::1] widths, const double[::1] strides,
                           const double[::1] bins, double logit_thr, float conf, const uint8_t[::1] allowed,
                           bint multi_label, Py_ssize_t max_candidates):
    """Candidates of one image of a truncated head.

    box_levels: tuple of (4 * reg_max, H_i * W_i) float32 C-contiguous DFL logits ([side][bin], sides
    l, t, r, b); cls_levels: tuple of (nc, H_i * W_i) float32 C-contiguous class logits; widths: (L,)
    W_i; strides: (L,) float64; bins: (reg_max,) DFL bin values. logit_thr: prefilter bound a little
    below logit(conf); conf: a candidate needs score > conf (strict, float32). allowed: (nc,) uint8
    class mask (the classes filter, applied after choosing the best class). max_candidates: cap, top
    scores. Returns (boxes (m, 4) float32, scores (m,) float32, class_ids (m,) int32, anchor_ids (m,)
    int64) in anchor order, then class order for multi_label. ValueError on inconsistent arguments.
    """
    cdef int nl = len(cls_levels), l
    if nl == 0 or len(box_levels) != nl or widths.shape[0] != nl or strides.shape[0] != nl:
        raise ValueError(f"expected as many box levels, class levels, widths and strides (at least one), got "
                         f"{len(box_levels)}, {nl}, {widths.shape[0]} and {strides.shape[0]}")
    cdef cnp.ndarray b, c
    cdef Py_ssize_t nc = -1, reg_max = -1, total = 0
    cdef Level* levels = <Level*> malloc(nl * sizeof(Level))
    cdef Selection s
    cdef cnp.ndarray boxes, scores, class_ids, anchor_ids
    cdef int rc
    if levels == NULL:
        raise MemoryError()
    memset(&s, 0, sizeof(Selection))
    try:
        for l in range(nl):
            b = _f32_matrix(box_levels[l], f"box level {l}")
            c = _f32_matrix(cls_levels[l], f"class level {l}")
            if l == 0:
                nc, reg_max = c.shape[0], b.shape[0] // 4
            if (c.shape[0] != nc or c.shape[0] < 1 or b.shape[0] != 4 * reg_max or reg_max < 1
                    or b.shape[1] != c.shape[1] or widths[l] < 1 or c.shape[1] % widths[l]):
                raise ValueError(f"level {l}: box map {b.shape[0]}x{b.shape[1]}, class map {c.shape[0]}x{c.shape[1]} "
                                 f"and width {widths[l]} disagree with each other or with level 0")
            levels[l].box = <const float*> cnp.PyArray_DATA(b)
            levels[l].cls = <const float*> cnp.PyArray_DATA(c)
            levels[l].n = c.shape[1]
            levels[l].offset = total
            levels[l].width = widths[l]
            levels[l].stride = strides[l]
            total += c.shape[1]
        if bins.shape[0] != reg_max or allowed.shape[0] != nc:
            raise ValueError(f"expected {reg_max} DFL bins and {nc} class flags, got {bins.shape[0]} and {allowed.shape[0]}")
        if total >= 2**31 or max_candidates < 1:
            raise ValueError(f"expected fewer than 2**31 anchors and max_candidates >= 1, got {total} and {max_candidates}")
        with nogil:
            rc = _select_truncated(levels, nl, nc, logit_thr, conf, &allowed[0], multi_label, max_candidates, &s)
        if rc < 0:
            raise MemoryError()
        boxes, scores, class_ids, anchor_ids = _outputs(s.n_out)
        with nogil:
            rc = _write_truncated(levels, reg_max, &bins[0], &s, <float*> cnp.PyArray_DATA(boxes),
                                  <float*> cnp.PyArray_DATA(scores), <int32_t*> cnp.PyArray_DATA(class_ids),
                                  <int64_t*> cnp.PyArray_DATA(anchor_ids))
        if rc < 0:
            raise MemoryError()
        return boxes, scores, class_ids, anchor_ids
    finally:
        _selection_free(&s)
        free(levels)


cdef int _select_standard(const float* pred, Py_ssize_t n, Py_ssize_t nc, float conf, const uint8_t* allowed,
                          bint multi_label, Py_ssize_t max_candidates, Selection* s) noexcept nogil:
    """Candidates of a standard export (scores already sigmoided) into s; same steps as
    _select_truncated. Returns -1 when out of memory."""
    cdef Py_ssize_t a, j, k, c, cap, m
    cdef float sc
    s.maxbuf = <float*> _alloc(n, sizeof(float))
    s.pre = <int32_t*> _alloc(n, sizeof(int32_t))
    if s.maxbuf == NULL or s.pre == NULL:
        return -1
    decode_column_max(pred + 4 * n, n, nc, s.maxbuf)
    k = 0
    for a in range(n):
        if s.maxbuf[a] > conf:
            s.pre[k] = <int32_t> a
            k += 1
    cap = k
    if multi_label:
        cap = 0
        for j in range(k):
            a = s.pre[j]
            for c in range(nc):
                if pred[(4 + c) * n + a] > conf and allowed[c]:
                    cap += 1
    s.score = <float*> _alloc(cap, sizeof(float))
    s.cls = <int32_t*> _alloc(cap, sizeof(int32_t))
    s.anchor = <int32_t*> _alloc(cap, sizeof(int32_t))
    if s.score == NULL or s.cls == NULL or s.anchor == NULL:
        return -1
    m = 0
    for j in range(k):
        a = s.pre[j]
        if multi_label:
            for c in range(nc):
                sc = pred[(4 + c) * n + a]
                if sc > conf and allowed[c]:
                    s.score[m] = sc
                    s.cls[m] = <int32_t> c
                    s.anchor[m] = <int32_t> a
                    m += 1
        else:
            sc = s.maxbuf[a]
            c = 0
            while pred[(4 + c) * n + a] != sc:  # first max; sc is one of the column's values
                c += 1
            if allowed[c]:
                s.score[m] = sc
                s.cls[m] = <int32_t> c
                s.anchor[m] = <int32_t> a
                m += 1
    s.m = m
    return _cap_rows(s, max_candidates)


cdef void _write_standard(const float* pred, Py_ssize_t n, const Selection* s, float* boxes, float* scores,
                          int32_t* class_ids, int64_t* anchor_ids) noexcept nogil:
    """Kept rows into the outputs; boxes xyxy in float32 exactly as Ultralytics' xywh2xyxy (xy -/+ wh / 2)."""
    cdef Py_ssize_t j, r, a
    cdef float cx, cy, hw, hh
    for j in range(s.n_out):
        r = s.rows[j] if s.rows != NULL else j
        a = s.anchor[r]
        scores[j] = s.score[r]
        class_ids[j] = s.cls[r]
        anchor_ids[j] = a
        cx = pred[a]
        cy = pred[n + a]
        hw = pred[2 * n + a] / <float> 2.0
        hh = pred[3 * n + a] / <float> 2.0
        boxes[4 * j] = cx - hw
        boxes[4 * j + 1] = cy - hh
        boxes[4 * j + 2] = cx + hw
        boxes[4 * j + 3] = cy + hh


def decode_standard_image(object pred, Py_ssize_t nc, float conf, const uint8_t[::1] allowed, bint multi_label,
                          Py_ssize_t max_candidates):
    """Candidates of one image of a standard export: pred (4 + nc + extra, N) float32 C-contiguous,
    rows 0..3 decoded cx, cy, w, h (letterbox px), rows 4..4+nc sigmoid scores. Same outputs, order and
    cap as decode_truncated_image; anchor ids are column indices. ValueError on inconsistent arguments."""
    cdef cnp.ndarray p = _f32_matrix(pred, "pred")
    cdef Py_ssize_t n = p.shape[1]
    if nc < 1 or p.shape[0] < 4 + nc or allowed.shape[0] != nc or n >= 2**31 or max_candidates < 1:
        raise ValueError(f"pred of shape ({p.shape[0]}, {n}), nc {nc}, {allowed.shape[0]} class flags and "
                         f"max_candidates {max_candidates} disagree")
    cdef const float* data = <const float*> cnp.PyArray_DATA(p)
    cdef Selection s
    cdef cnp.ndarray boxes, scores, class_ids, anchor_ids
    cdef int rc
    memset(&s, 0, sizeof(Selection))
    try:
        with nogil:
            rc = _select_standard(data, n, nc, conf, &allowed[0], multi_label, max_candidates, &s)
        if rc < 0:
            raise MemoryError()
        boxes, scores, class_ids, anchor_ids = _outputs(s.n_out)
        with nogil:
            _write_standard(data, n, &s, <float*> cnp.PyArray_DATA(boxes), <float*> cnp.PyArray_DATA(scores),
                            <int32_t*> cnp.PyArray_DATA(class_ids), <int64_t*> cnp.PyArray_DATA(anchor_ids))
        return boxes, scores, class_ids, anchor_ids
    finally:
        _selection_free(&s)
