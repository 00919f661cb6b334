# cython: language_level=3, cdivision=True
"""Instance-mask assembly kernels (private; use ``runtime.masks``).

Every mask is a separable linear resampling of ``coeffs @ protos`` followed by ``> 0`` and a box
crop. Per output row ``r`` the resampling reads ``K`` consecutive proto rows starting at
``y_start[r]`` with weights ``y_weights[r]`` (columns likewise). Per detection the kernels only
touch the output pixels inside the box and the proto window those pixels read.

Detections are independent: both kernels run them in parallel (OpenMP, when the extension is
built with it) with per-thread scratch buffers. Per pixel the arithmetic is the same float32
sequence whatever the thread count: logits summed over m in order, horizontal taps, vertical taps
(zero weights skipped), ``> 0``.
"""

cimport cython
from cython.parallel cimport parallel, prange
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.math cimport ceil, isnan
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcpy, memset


cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int __pyx_masks_max_threads(void) { return omp_get_max_threads(); }
    /* Let the runtime shrink the next teams when the CPUs are busy (load average); returns the
       previous setting for __pyx_masks_restore_dynamic. */
    static int __pyx_masks_dynamic(int on) { int old = omp_get_dynamic(); if (on) omp_set_dynamic(1); return old; }
    static void __pyx_masks_restore_dynamic(int old) { omp_set_dynamic(old); }
    #else
    static int __pyx_masks_max_threads(void) { return 1; }
    static int __pyx_masks_dynamic(int on) { (void) on; return 0; }
    static void __pyx_masks_restore_dynamic(int old) { (void) old; }
    #endif
    """
    int _max_threads "__pyx_masks_max_threads" () noexcept nogil
    int _dynamic "__pyx_masks_dynamic" (int on) noexcept nogil
    void _restore_dynamic "__pyx_masks_restore_dynamic" (int old) noexcept nogil


cdef extern from *:
    """
    #include <stddef.h>
    #include <stdint.h>
    #include "isa_clones.h"
    /* The vector loops of a mask region, built for AVX2 and for the baseline ISA. Separate multiply
       and add (the module is built without FP contraction), so both give the same float32 results. */

    /* dst = a * src over n floats. */
    AVX2_CLONES static void scale_row(float* dst, const float* src, float a, ptrdiff_t n) {
        for (ptrdiff_t c = 0; c < n; c++) dst[c] = a * src[c];
    }

    /* dst += a * src over n floats. */
    AVX2_CLONES static void add_scaled_row(float* dst, const float* src, float a, ptrdiff_t n) {
        for (ptrdiff_t c = 0; c < n; c++) dst[c] = dst[c] + a * src[c];
    }

    /* out[c] = (a * h0[c] + b * h1[c] > 0) over n pixels (NaN -> 0, like torch.gt); returns the count set. */
    AVX2_CLONES static ptrdiff_t threshold_two_rows(uint8_t* out, const float* h0, const float* h1, float a, float b,
                                                    ptrdiff_t n) {
        ptrdiff_t count = 0;
        for (ptrdiff_t c = 0; c < n; c++) {
            uint8_t on = a * h0[c] + b * h1[c] > 0;
            out[c] = on;
            count += on;
        }
        return count;
    }
    """
    void scale_row(float* dst, const float* src, float a, Py_ssize_t n) noexcept nogil
    void add_scaled_row(float* dst, const float* src, float a, Py_ssize_t n) noexcept nogil
    Py_ssize_t threshold_two_rows(uint8_t* out, const float* h0, const float* h1, float a, float b,
                                  Py_ssize_t n) noexcept nogil


cdef extern from "stream_store.h":
    void stream_bytes(uint8_t* dst, const uint8_t* src, Py_ssize_t n) noexcept nogil
    void stream_zero(uint8_t* dst, Py_ssize_t n) noexcept nogil
    void stream_fence() noexcept nogil


cdef extern from *:
    """
    #include <stdint.h>
    /* Index of the lowest non-zero byte of a non-zero word loaded (memcpy) from 8 bytes. */
    #if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    #define __pyx_masks_word_scan 1
    static inline int __pyx_masks_low_byte(uint64_t x) { return __builtin_ctzll(x) >> 3; }
    #else
    #define __pyx_masks_word_scan 0
    static inline int __pyx_masks_low_byte(uint64_t x) { (void) x; return 0; }
    #endif
    """
    const int WORD_SCAN "__pyx_masks_word_scan"
    int _low_byte "__pyx_masks_low_byte" (uint64_t x) noexcept nogil


cdef enum:
    # Below this many box pixels in all, the default thread count runs serially: starting a team
    # (and reading the load average) costs more than it saves.
    PARALLEL_MIN_PIXELS = 65536


cdef int _thread_count(int threads, const float* boxes, Py_ssize_t n, Py_ssize_t H, Py_ssize_t W) noexcept nogil:
    """``threads`` (<= 0: OpenMP's default, serial for small jobs) capped at n, at least 1."""
    cdef int t = threads
    cdef Py_ssize_t i, r0, r1, c0, c1, pixels = 0
    if t <= 0:
        t = _max_threads()
        if t > 1 and H > 0 and W > 0:
            for i in range(n):
                if _box_region(boxes + 4 * i, H, W, &r0, &r1, &c0, &c1):
                    pixels += (r1 - r0) * (c1 - c0)
            if pixels < PARALLEL_MIN_PIXELS:
                t = 1
    if t > n:
        t = <int> n
    if t < 1:
        t = 1
    return t


cdef inline void _crop_range(float lo, float hi, Py_ssize_t size, Py_ssize_t* a, Py_ssize_t* b) noexcept nogil:
    """Integer indices i in [0, size) with i >= lo and i < hi, as the half-open range [a, b)."""
    cdef double l, h
    if isnan(lo) or isnan(hi):
        a[0] = 0
        b[0] = 0
        return
    l = ceil(<double> lo)
    h = ceil(<double> hi)
    if l < 0:
        l = 0
    if l > size:
        l = size
    if h < 0:
        h = 0
    if h > size:
        h = size
    if h < l:
        h = l
    a[0] = <Py_ssize_t> l
    b[0] = <Py_ssize_t> h


cdef struct Tables:
    const int64_t* ys
    const float* yw
    const int64_t* xs
    const float* xw
    Py_ssize_t ky
    Py_ssize_t kx


cdef struct Scratch:
    # One per thread, sized for the largest region: W box columns, the whole proto grid.
    float* logits   # mh * mw
    float* hbuf     # mh * W
    float* acc      # W
    float* xa       # W: first horizontal tap weight of each box column (K = 2)
    float* xb       # W: second one
    Py_ssize_t* xo  # W: window column of each box column's first tap
    uint8_t* region # the largest box region of the call
    uint8_t* row    # W: one output row (assemble only)


cdef int _scratch_alloc(Scratch* s, Py_ssize_t mh, Py_ssize_t mw, Py_ssize_t W, Py_ssize_t region) noexcept nogil:
    s.region = <uint8_t*> malloc(region + 1)
    s.row = <uint8_t*> malloc(W + 1)
    s.logits = <float*> malloc((mh * mw + 1) * sizeof(float))
    s.hbuf = <float*> malloc((mh * W + 1) * sizeof(float))
    s.acc = <float*> malloc((W + 1) * sizeof(float))
    s.xa = <float*> malloc((W + 1) * sizeof(float))
    s.xb = <float*> malloc((W + 1) * sizeof(float))
    s.xo = <Py_ssize_t*> malloc((W + 1) * sizeof(Py_ssize_t))
    return (s.logits != NULL and s.hbuf != NULL and s.acc != NULL and s.xa != NULL and s.xb != NULL
            and s.xo != NULL and s.region != NULL and s.row != NULL)


cdef void _scratch_free(Scratch* s) noexcept nogil:
    free(s.region)
    free(s.row)
    free(s.logits)
    free(s.hbuf)
    free(s.acc)
    free(s.xa)
    free(s.xb)
    free(s.xo)


cdef Scratch* _scratch_new(Py_ssize_t mh, Py_ssize_t mw, Py_ssize_t W, Py_ssize_t region) noexcept nogil:
    """Heap scratch for one thread; NULL when out of memory."""
    cdef Scratch* s = <Scratch*> malloc(sizeof(Scratch))
    if s == NULL:
        return NULL
    if not _scratch_alloc(s, mh, mw, W, region):
        _scratch_free(s)
        free(s)
        return NULL
    return s


cdef void _scratch_delete(Scratch* s) noexcept nogil:
    if s != NULL:
        _scratch_free(s)
        free(s)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef Py_ssize_t _region(
    const float* protos, Py_ssize_t nm, Py_ssize_t mh, Py_ssize_t mw,
    const float* coeff, const Tables* t,
    Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0, Py_ssize_t c1,
    Scratch* sc, uint8_t* out, Py_ssize_t out_stride,
) noexcept nogil:
    """Binarise output rows [r0, r1) x cols [c0, c1) into ``out`` (row stride ``out_stride``).

    Returns the number of pixels set to 1.
    """
    cdef Py_ssize_t r, c, k, m, s, pr0, pr1, px0, px1, wh, ww, bw = c1 - c0, row_area = 0
    cdef Py_ssize_t plane = mh * mw
    cdef Py_ssize_t cnt
    cdef uint8_t* orow
    cdef const float* src
    cdef const float* w
    cdef const float* h0
    cdef float* dst
    cdef float* hrow
    cdef const float* lrow
    cdef float* logits = sc.logits
    cdef float* hbuf = sc.hbuf
    cdef float* acc = sc.acc
    cdef float* xa = sc.xa
    cdef float* xb = sc.xb
    cdef Py_ssize_t* xo = sc.xo
    cdef float cm, v

    # Proto window read by the box rows / cols (starts are non-decreasing but do not rely on it).
    pr0 = t.ys[r0]
    pr1 = t.ys[r0] + t.ky
    for r in range(r0 + 1, r1):
        if t.ys[r] < pr0:
            pr0 = t.ys[r]
        if t.ys[r] + t.ky > pr1:
            pr1 = t.ys[r] + t.ky
    px0 = t.xs[c0]
    px1 = t.xs[c0] + t.kx
    for c in range(c0 + 1, c1):
        if t.xs[c] < px0:
            px0 = t.xs[c]
        if t.xs[c] + t.kx > px1:
            px1 = t.xs[c] + t.kx
    wh = pr1 - pr0
    ww = px1 - px0

    # logits = coeff . protos over the window, float32, summed over m in order; one window row at
    # a time, so the row being accumulated stays in L1.
    for r in range(wh):
        src = protos + (pr0 + r) * mw + px0
        dst = logits + r * ww
        scale_row(dst, src, coeff[0], ww)
        for m in range(1, nm):
            src = src + plane
            add_scaled_row(dst, src, coeff[m], ww)

    # Horizontal taps: window rows x box cols.
    for c in range(bw):
        xo[c] = t.xs[c0 + c] - px0
    if t.kx == 2:
        for c in range(bw):
            xa[c] = t.xw[(c0 + c) * 2]
            xb[c] = t.xw[(c0 + c) * 2 + 1]
        for r in range(wh):
            lrow = logits + r * ww
            hrow = hbuf + r * bw
            for c in range(bw):
                s = xo[c]
                hrow[c] = xa[c] * lrow[s] + xb[c] * lrow[s + 1]
    else:
        for r in range(wh):
            lrow = logits + r * ww
            hrow = hbuf + r * bw
            for c in range(bw):
                s = xo[c]
                w = t.xw + (c0 + c) * t.kx
                v = w[0] * lrow[s]
                for k in range(1, t.kx):
                    v = v + w[k] * lrow[s + k]
                hrow[c] = v

    # Vertical taps over the box rows (zero taps skipped: adding 0 * h changes nothing), then
    # threshold straight into the output, counting as it goes.
    for r in range(r0, r1):
        s = t.ys[r] - pr0
        w = t.yw + r * t.ky
        orow = out + (r - r0) * out_stride
        cnt = 0
        if t.ky == 2 and w[0] != 0 and w[1] != 0:
            h0 = hbuf + s * bw
            cnt = threshold_two_rows(orow, h0, h0 + bw, w[0], w[1], bw)
        else:
            memset(acc, 0, bw * sizeof(float))
            for k in range(t.ky):
                cm = w[k]
                if cm == 0:
                    continue
                add_scaled_row(acc, hbuf + (s + k) * bw, cm, bw)
            for c in range(bw):
                orow[c] = acc[c] > 0
                cnt = cnt + (acc[c] > 0)
        row_area += cnt
    return row_area


cdef inline int _box_region(const float* box, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t* r0, Py_ssize_t* r1, Py_ssize_t* c0, Py_ssize_t* c1) noexcept nogil:
    """Output rows [r0, r1) / cols [c0, c1) kept by crop_mask for an xyxy box; 0 when empty."""
    _crop_range(box[0], box[2], W, c0, c1)
    _crop_range(box[1], box[3], H, r0, r1)
    return r1[0] > r0[0] and c1[0] > c0[0]


cdef Py_ssize_t _largest_region(const float* boxes, Py_ssize_t n, Py_ssize_t H, Py_ssize_t W) noexcept nogil:
    """Pixels of the largest box region among n boxes (the size of the scratch region buffer)."""
    cdef Py_ssize_t i, r0, r1, c0, c1, largest = 0
    if H <= 0 or W <= 0:
        return 0
    for i in range(n):
        if _box_region(boxes + 4 * i, H, W, &r0, &r1, &c0, &c1) and (r1 - r0) * (c1 - c0) > largest:
            largest = (r1 - r0) * (c1 - c0)
    return largest


cdef struct Job:
    Py_ssize_t cost
    Py_ssize_t i


cdef int _job_cmp(const void* a, const void* b) noexcept nogil:
    cdef const Job* x = <const Job*> a
    cdef const Job* y = <const Job*> b
    if x.cost != y.cost:
        return -1 if x.cost > y.cost else 1
    return -1 if x.i < y.i else (1 if x.i > y.i else 0)


cdef Py_ssize_t* _largest_first(const float* boxes, Py_ssize_t n, Py_ssize_t H, Py_ssize_t W) noexcept nogil:
    """Detection indices by decreasing box area (malloc'd; NULL when out of memory), so that the
    dynamic schedule hands out the long jobs first and the threads finish together."""
    cdef Py_ssize_t i, r0, r1, c0, c1
    cdef Job* jobs = <Job*> malloc(n * sizeof(Job))
    cdef Py_ssize_t* order = <Py_ssize_t*> malloc(n * sizeof(Py_ssize_t))
    if jobs == NULL or order == NULL:
        free(jobs)
        free(order)
        return NULL
    for i in range(n):
        jobs[i].i = i
        jobs[i].cost = 0
        if H > 0 and W > 0 and _box_region(boxes + 4 * i, H, W, &r0, &r1, &c0, &c1):
            jobs[i].cost = (r1 - r0) * (c1 - c0)
    qsort(jobs, n, sizeof(Job), _job_cmp)
    for i in range(n):
        order[i] = jobs[i].i
    free(jobs)
    return order


cdef Py_ssize_t _count_empty(const int64_t* areas, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, empty = 0
    for i in range(n):
        empty += areas[i] == 0
    return empty


cdef Py_ssize_t _mask_one(
    const float* protos, Py_ssize_t nm, Py_ssize_t mh, Py_ssize_t mw, const float* coeff, const float* box,
    const Tables* t, Scratch* sc, uint8_t* mask, Py_ssize_t H, Py_ssize_t W,
) noexcept nogil:
    """Write one whole (H, W) mask, every byte with streaming stores; returns its area.

    The box region is computed into the thread's scratch, then each output row is assembled in L1
    (zeros, region row, zeros) and streamed out. The box bounds live on this call's stack, so
    threads never share them.
    """
    cdef Py_ssize_t r0, r1, c0, c1, r, bw, area
    if not _box_region(box, H, W, &r0, &r1, &c0, &c1):
        stream_zero(mask, H * W)
        return 0
    bw = c1 - c0
    area = _region(protos, nm, mh, mw, coeff, t, r0, r1, c0, c1, sc, sc.region, bw)
    stream_zero(mask, r0 * W)
    memset(sc.row, 0, W)
    for r in range(r0, r1):
        memcpy(sc.row + c0, sc.region + (r - r0) * bw, bw)
        stream_bytes(mask + r * W, sc.row, W)
    stream_zero(mask + r1 * W, (H - r1) * W)
    return area


@cython.boundscheck(False)
@cython.wraparound(False)
def assemble(
    const float[:, :, ::1] protos,
    const float[:, ::1] coeffs,
    const float[:, ::1] boxes,
    const int64_t[::1] y_start,
    const float[:, ::1] y_weights,
    const int64_t[::1] x_start,
    const float[:, ::1] x_weights,
    uint8_t[:, :, ::1] masks,
    int64_t[::1] areas,
    int threads=0,
):
    """Write box-cropped binary masks into ``masks`` (every pixel) and their pixel counts.

    protos    : (nm, mh, mw) float32.
    coeffs    : (n, nm) float32.
    boxes     : (n, 4) float32 xyxy in output pixels.
    y_start   : (H,) int64; y_weights : (H, Ky) float32 with y_start + Ky <= mh.
    x_start   : (W,) int64; x_weights : (W, Kx) float32 with x_start + Kx <= mw.
    masks     : (n, H, W) uint8 output; its content on entry does not matter.
    areas     : (n,) int64 output.
    threads   : most threads to use, never more than n; <= 0: OpenMP's default number, with the
                team shrunk while the load average says the CPUs are busy (OpenMP dynamic
                adjustment: on a shared machine a parallel region otherwise waits, at its end, for
                workers the OS has not scheduled yet, which costs milliseconds).

    Returns the number of empty masks (area 0), which Ultralytics drops.
    """
    cdef Py_ssize_t n = coeffs.shape[0], nm = protos.shape[0], mh = protos.shape[1], mw = protos.shape[2]
    cdef Py_ssize_t H = masks.shape[1], W = masks.shape[2]
    cdef Py_ssize_t i, max_region
    cdef Tables t
    cdef Py_ssize_t j
    cdef Py_ssize_t* order = NULL
    cdef Scratch sc
    cdef Scratch* psc = NULL
    cdef int nt, dyn
    for i in range(n):
        areas[i] = 0
    if n == 0 or H == 0 or W == 0:
        return n
    t.ys = &y_start[0]
    t.yw = &y_weights[0, 0]
    t.xs = &x_start[0]
    t.xw = &x_weights[0, 0]
    t.ky = y_weights.shape[1]
    t.kx = x_weights.shape[1]
    max_region = _largest_region(&boxes[0, 0], n, H, W)
    nt = _thread_count(threads, &boxes[0, 0], n, H, W)
    if nt == 1:
        if not _scratch_alloc(&sc, mh, mw, W, max_region):
            _scratch_free(&sc)
            raise MemoryError()
        with nogil:
            for i in range(n):
                areas[i] = _mask_one(&protos[0, 0, 0], nm, mh, mw, &coeffs[i, 0], &boxes[i, 0], &t, &sc,
                                     &masks[i, 0, 0], H, W)
            stream_fence()
        _scratch_free(&sc)
        return _count_empty(&areas[0], n)
    # Per-thread scratch; a thread that cannot get it marks its detections with area -1.
    order = _largest_first(&boxes[0, 0], n, H, W)
    if order == NULL:
        raise MemoryError()
    dyn = _dynamic(threads <= 0)
    with nogil, parallel(num_threads=nt):
        psc = _scratch_new(mh, mw, W, max_region)
        for j in prange(n, schedule="dynamic", chunksize=1):
            i = order[j]
            if psc == NULL:
                areas[i] = -1
            else:
                areas[i] = _mask_one(&protos[0, 0, 0], nm, mh, mw, &coeffs[i, 0], &boxes[i, 0], &t, psc,
                                     &masks[i, 0, 0], H, W)
        stream_fence()  # this thread's streaming stores, before the team joins
        _scratch_delete(psc)
    _restore_dynamic(dyn)
    free(order)
    for i in range(n):
        if areas[i] < 0:
            raise MemoryError()
    return _count_empty(&areas[0], n)


cdef struct RleWriter:
    # pycocotools' rleToString applied to counts as they are produced: only the counts two
    # places back are needed (delta coding from the fourth count on). One per thread, with the
    # transition buffers of _rle_mask.
    char* buf
    Py_ssize_t cap
    Py_ssize_t used
    Py_ssize_t m        # counts written for the current mask
    int64_t prev1       # count m - 1
    int64_t prev2       # count m - 2
    int failed
    int32_t* tx         # transitions in row order: box column
    int32_t* ty         # and box row
    int32_t* sy         # box rows of the transitions sorted by column (stable)
    Py_ssize_t tcap
    Py_ssize_t* cstart  # W + 1: first transition of each column in sy
    Py_ssize_t* ccur    # W + 1: fill cursor


cdef inline void _rle_start(RleWriter* w) noexcept nogil:
    w.used = 0
    w.m = 0
    w.prev1 = 0
    w.prev2 = 0


cdef inline void _rle_put(RleWriter* w, int64_t count) noexcept nogil:
    """Append one count: LEB128-like, 5 bits per char, chars 48..111, x -= cnts[i-2] for i > 2."""
    cdef long long x = count
    cdef int more = 1
    cdef char c
    cdef char* grown
    if w.used + 16 > w.cap:  # a 64-bit value needs at most 13 chars
        grown = <char*> realloc(w.buf, 2 * w.cap + 16)
        if grown == NULL:
            w.failed = 1
            return
        w.buf = grown
        w.cap = 2 * w.cap + 16
    if w.m > 2:
        x -= w.prev2
    while more:
        c = <char> (x & 0x1f)
        x >>= 5
        if c & 0x10:
            more = x != -1
        else:
            more = x != 0
        if more:
            c |= 0x20
        w.buf[w.used] = c + 48
        w.used += 1
    w.prev2 = w.prev1
    w.prev1 = count
    w.m += 1


cdef RleWriter* _writer_new(Py_ssize_t W) noexcept nogil:
    cdef RleWriter* w = <RleWriter*> malloc(sizeof(RleWriter))
    if w == NULL:
        return NULL
    w.cap = 4096
    w.used = 0
    w.failed = 0
    w.tcap = 4096
    w.buf = <char*> malloc(w.cap)
    w.tx = <int32_t*> malloc(w.tcap * sizeof(int32_t))
    w.ty = <int32_t*> malloc(w.tcap * sizeof(int32_t))
    w.sy = <int32_t*> malloc(w.tcap * sizeof(int32_t))
    w.cstart = <Py_ssize_t*> malloc((W + 2) * sizeof(Py_ssize_t))
    w.ccur = <Py_ssize_t*> malloc((W + 2) * sizeof(Py_ssize_t))
    if w.buf == NULL or w.tx == NULL or w.ty == NULL or w.sy == NULL or w.cstart == NULL or w.ccur == NULL:
        _writer_delete(w)
        return NULL
    return w


cdef void _writer_delete(RleWriter* w) noexcept nogil:
    if w != NULL:
        free(w.buf)
        free(w.tx)
        free(w.ty)
        free(w.sy)
        free(w.cstart)
        free(w.ccur)
        free(w)


cdef int _trans_grow(RleWriter* w) noexcept nogil:
    cdef Py_ssize_t cap = 2 * w.tcap
    cdef int32_t* p
    p = <int32_t*> realloc(w.tx, cap * sizeof(int32_t))
    if p == NULL:
        return 0
    w.tx = p
    p = <int32_t*> realloc(w.ty, cap * sizeof(int32_t))
    if p == NULL:
        return 0
    w.ty = p
    p = <int32_t*> realloc(w.sy, cap * sizeof(int32_t))
    if p == NULL:
        return 0
    w.sy = p
    w.tcap = cap
    return 1


cdef inline int _trans_push(RleWriter* w, Py_ssize_t* nt, Py_ssize_t x, Py_ssize_t y) noexcept nogil:
    if nt[0] == w.tcap and not _trans_grow(w):
        w.failed = 1
        return 0
    w.tx[nt[0]] = <int32_t> x
    w.ty[nt[0]] = <int32_t> y
    nt[0] += 1
    return 1


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _rle_mask(RleWriter* wr, const uint8_t* region, Py_ssize_t H, Py_ssize_t W,
                    Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Counts of the H x W mask that is ``region`` ((r1-r0) x (c1-c0), row-major) at (r0, c0), 0 elsewhere.

    The counts are the gaps between the positions (column-major, as pycocotools flattens) where
    the value changes. Those are found row by row, 8 pixels at a time (masks are mostly runs),
    then ordered by column with a stable counting sort.
    """
    cdef Py_ssize_t x, y, k, j, nt = 0, bw = c1 - c0, bh = r1 - r0
    cdef int64_t pos, last = 0, HW = <int64_t> H * W
    cdef uint8_t before
    cdef uint64_t a, b
    cdef const uint8_t* row
    cdef const uint8_t* prev
    cdef const uint8_t* bottom = region + (bh - 1) * bw
    cdef Py_ssize_t* cstart = wr.cstart
    cdef Py_ssize_t* ccur = wr.ccur
    cdef int wraps = r0 == 0 and r1 == H  # a box column's first pixel follows the previous one's last
    # Box row 0: against the pixel before it in column-major order.
    for x in range(bw):
        before = 0
        if wraps and x > 0:
            before = bottom[x - 1]
        if region[x] != before and not _trans_push(wr, &nt, x, 0):
            return
    # Box rows 1..: against the row above, 8 pixels at a time.
    for y in range(1, bh):
        row = region + y * bw
        prev = row - bw
        x = 0
        while x + 8 <= bw:
            memcpy(&a, row + x, 8)
            memcpy(&b, prev + x, 8)
            a = a ^ b  # pixels are 0 / 1: one bit per differing byte
            if WORD_SCAN:
                while a:
                    if not _trans_push(wr, &nt, x + _low_byte(a), y):
                        return
                    a = a & (a - 1)
            elif a:
                for k in range(x, x + 8):
                    if row[k] != prev[k] and not _trans_push(wr, &nt, k, y):
                        return
            x += 8
        while x < bw:
            if row[x] != prev[x] and not _trans_push(wr, &nt, x, y):
                return
            x += 1
    # Stable counting sort of the transition rows by column.
    for x in range(bw + 1):
        cstart[x] = 0
    for j in range(nt):
        cstart[wr.tx[j] + 1] += 1
    for x in range(bw):
        cstart[x + 1] += cstart[x]
    for x in range(bw):
        ccur[x] = cstart[x]
    for j in range(nt):
        x = wr.tx[j]
        wr.sy[ccur[x]] = wr.ty[j]
        ccur[x] += 1
    # Gaps between change positions. After a column's last box row comes a 0 (rows below the box,
    # or the next column's rows above it / outside the box) unless the box wraps into its next
    # column, whose row 0 was handled above.
    for x in range(bw):
        pos = (c0 + x) * H + r0
        for j in range(cstart[x], cstart[x + 1]):
            _rle_put(wr, pos + wr.sy[j] - last)
            last = pos + wr.sy[j]
        if bottom[x] and not (wraps and x + 1 < bw):
            pos = (c0 + x) * H + r1
            if pos < HW:
                _rle_put(wr, pos - last)
                last = pos
    _rle_put(wr, HW - last)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _rle_one(
    Py_ssize_t i, const float* protos, Py_ssize_t nm, Py_ssize_t mh, Py_ssize_t mw,
    const float* coeffs, const float* boxes, const Tables* t, Py_ssize_t H, Py_ssize_t W,
    Scratch* sc, RleWriter* wr, int64_t* areas, char** strs, Py_ssize_t* lens,
) noexcept nogil:
    """Encode detection i into ``wr`` and copy its string to ``strs[i]`` (malloc'd), ``lens[i]``."""
    cdef Py_ssize_t r0, r1, c0, c1
    _rle_start(wr)
    if H > 0 and W > 0 and _box_region(boxes + 4 * i, H, W, &r0, &r1, &c0, &c1):
        areas[i] = _region(protos, nm, mh, mw, coeffs + i * nm, t, r0, r1, c0, c1, sc, sc.region, c1 - c0)
        _rle_mask(wr, sc.region, H, W, r0, r1, c0, c1)
    else:
        areas[i] = 0
        _rle_put(wr, <int64_t> H * W)
    if wr.failed:
        lens[i] = -1
        return
    strs[i] = <char*> malloc(wr.used + 1)
    if strs[i] == NULL:
        lens[i] = -1
        return
    memcpy(strs[i], wr.buf, wr.used)
    lens[i] = wr.used


@cython.boundscheck(False)
@cython.wraparound(False)
def encode_rle(
    const float[:, :, ::1] protos,
    const float[:, ::1] coeffs,
    const float[:, ::1] boxes,
    const int64_t[::1] y_start,
    const float[:, ::1] y_weights,
    const int64_t[::1] x_start,
    const float[:, ::1] x_weights,
    int64_t[::1] areas,
    int threads=0,
):
    """COCO compressed-RLE strings of the box-cropped masks, without full-size masks.

    Same inputs as ``assemble`` (output size is (len(y_start), len(x_start))); returns a list of
    ``n`` bytes objects (pycocotools' ``counts``) and fills ``areas`` (n,) int64.
    Runs are column-major (Fortran order) and start with a run of zeros, as pycocotools' rleEncode.
    ``threads`` as for ``assemble``.
    """
    cdef Py_ssize_t n = coeffs.shape[0], nm = protos.shape[0], mh = protos.shape[1], mw = protos.shape[2]
    cdef Py_ssize_t H = y_start.shape[0], W = x_start.shape[0]
    cdef Py_ssize_t i, max_region
    cdef Tables t
    cdef Scratch* psc = NULL
    cdef RleWriter* pwr = NULL
    cdef char** strs = NULL
    cdef Py_ssize_t j
    cdef Py_ssize_t* order = NULL
    cdef Py_ssize_t* lens = NULL
    cdef int nt, dyn, failed = 0
    if n == 0:
        return []
    max_region = _largest_region(&boxes[0, 0], n, H, W)
    t.ys = t.xs = NULL
    t.yw = t.xw = NULL
    t.ky = t.kx = 0
    if H > 0 and W > 0:
        t.ys = &y_start[0]
        t.yw = &y_weights[0, 0]
        t.xs = &x_start[0]
        t.xw = &x_weights[0, 0]
        t.ky = y_weights.shape[1]
        t.kx = x_weights.shape[1]
    strs = <char**> malloc(n * sizeof(char*))
    lens = <Py_ssize_t*> malloc(n * sizeof(Py_ssize_t))
    if strs == NULL or lens == NULL:
        free(strs)
        free(lens)
        raise MemoryError()
    for i in range(n):
        strs[i] = NULL
        lens[i] = 0
    nt = _thread_count(threads, &boxes[0, 0], n, H, W)
    if nt > 1:
        order = _largest_first(&boxes[0, 0], n, H, W)
        if order == NULL:
            free(strs)
            free(lens)
            raise MemoryError()
    # Per-thread scratch and writer; a thread that cannot get them marks its detections with
    # length -1. Strings are copied out per detection, bytes objects made after the parallel part.
    dyn = _dynamic(threads <= 0)
    with nogil, parallel(num_threads=nt):
        psc = _scratch_new(mh, mw, W, max_region)
        pwr = _writer_new(W)
        for j in prange(n, schedule="dynamic", chunksize=1):
            i = order[j] if order != NULL else j
            if psc == NULL or pwr == NULL:
                lens[i] = -1
            else:
                _rle_one(i, &protos[0, 0, 0], nm, mh, mw, &coeffs[0, 0], &boxes[0, 0], &t, H, W,
                         psc, pwr, &areas[0], strs, lens)
        _scratch_delete(psc)
        _writer_delete(pwr)
    _restore_dynamic(dyn)
    free(order)
    for i in range(n):
        if lens[i] < 0:
            failed = 1
    result = None
    if not failed:
        result = [PyBytes_FromStringAndSize(strs[i], lens[i]) for i in range(n)]
    for i in range(n):
        free(strs[i])
    free(strs)
    free(lens)
    if failed:
        raise MemoryError()
    return result
