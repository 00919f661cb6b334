# cython: language_level=3, cdivision=True
"""Instance-mask assembly kernels (private; use ``runtime.masks``).

Every mask is a separable linear resampling of ``coeffs @ protos`` followed by ``> 0`` and a box
crop. Per output row ``r`` the resampling reads ``K`` consecutive proto rows starting at
``y_start[r]`` with weights ``y_weights[r]`` (columns likewise). Per detection the kernels only
touch the output pixels inside the box and the proto window those pixels read.
"""

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.math cimport ceil, isnan
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memset


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


cdef Py_ssize_t _region(
    const float* protos, Py_ssize_t nm, Py_ssize_t mh, Py_ssize_t mw,
    const float* coeff, Tables* t,
    Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t c0, Py_ssize_t c1,
    float* logits, float* hbuf, float* acc,
    uint8_t* out, Py_ssize_t out_stride,
) noexcept nogil:
    """Binarise output rows [r0, r1) x cols [c0, c1) into ``out`` (row stride ``out_stride``).

    Scratch: ``logits`` >= mh*mw floats, ``hbuf`` >= mh*(c1-c0) floats, ``acc`` >= c1-c0 floats.
    Returns the number of pixels set to 1.
    """
    cdef Py_ssize_t r, c, k, m, s, pr0, pr1, px0, px1, wh, ww, bw = c1 - c0, row_area = 0
    cdef uint8_t* orow
    cdef const float* src
    cdef const float* w
    cdef float* dst
    cdef float* hrow
    cdef const float* lrow
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

    # logits = coeff . protos over the window, float32.
    memset(logits, 0, wh * ww * sizeof(float))
    for m in range(nm):
        cm = coeff[m]
        for r in range(wh):
            src = protos + (m * mh + pr0 + r) * mw + px0
            dst = logits + r * ww
            for c in range(ww):
                dst[c] += cm * src[c]

    # Horizontal taps: window rows x box cols.
    for r in range(wh):
        lrow = logits + r * ww
        hrow = hbuf + r * bw
        for c in range(bw):
            s = t.xs[c0 + c] - px0
            w = t.xw + (c0 + c) * t.kx
            v = w[0] * lrow[s]
            for k in range(1, t.kx):
                v += w[k] * lrow[s + k]
            hrow[c] = v

    # Vertical taps over the box rows (zero taps skipped: adding 0 * h changes nothing), then
    # threshold straight into the output.
    for r in range(r0, r1):
        s = t.ys[r] - pr0
        w = t.yw + r * t.ky
        memset(acc, 0, bw * sizeof(float))
        for k in range(t.ky):
            cm = w[k]
            if cm == 0:
                continue
            hrow = hbuf + (s + k) * bw
            for c in range(bw):
                acc[c] += cm * hrow[c]
        orow = out + (r - r0) * out_stride
        for c in range(bw):
            orow[c] = acc[c] > 0  # branch-free; NaN -> 0 like torch.gt
        for c in range(bw):
            row_area += orow[c]
    return row_area


cdef inline int _box_region(const float* box, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t* r0, Py_ssize_t* r1, Py_ssize_t* c0, Py_ssize_t* c1) noexcept nogil:
    """Output rows [r0, r1) / cols [c0, c1) kept by crop_mask for an xyxy box; 0 when empty."""
    _crop_range(box[0], box[2], W, c0, c1)
    _crop_range(box[1], box[3], H, r0, r1)
    return r1[0] > r0[0] and c1[0] > c0[0]


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
):
    """Write box-cropped binary masks into ``masks`` (pre-zeroed) and their pixel counts.

    protos    : (nm, mh, mw) float32.
    coeffs    : (n, nm) float32.
    boxes     : (n, 4) float32 xyxy in output pixels.
    y_start   : (H,) int64; y_weights : (H, Ky) float32 with y_start + Ky <= mh.
    x_start   : (W,) int64; x_weights : (W, Kx) float32 with x_start + Kx <= mw.
    masks     : (n, H, W) uint8 output, zero on entry.
    areas     : (n,) int64 output.
    """
    cdef Py_ssize_t n = coeffs.shape[0], nm = protos.shape[0], mh = protos.shape[1], mw = protos.shape[2]
    cdef Py_ssize_t H = masks.shape[1], W = masks.shape[2]
    cdef Py_ssize_t i, r0, r1, c0, c1
    cdef Tables t
    cdef float* logits
    cdef float* hbuf
    cdef float* acc
    if n == 0 or H == 0 or W == 0:
        for i in range(n):
            areas[i] = 0
        return
    t.ys = &y_start[0]
    t.yw = &y_weights[0, 0]
    t.xs = &x_start[0]
    t.xw = &x_weights[0, 0]
    t.ky = y_weights.shape[1]
    t.kx = x_weights.shape[1]
    logits = <float*> malloc(mh * mw * sizeof(float))
    hbuf = <float*> malloc(mh * W * sizeof(float))
    acc = <float*> malloc(W * sizeof(float))
    if logits == NULL or hbuf == NULL or acc == NULL:
        free(logits)
        free(hbuf)
        free(acc)
        raise MemoryError()
    with nogil:
        for i in range(n):
            areas[i] = 0
            if not _box_region(&boxes[i, 0], H, W, &r0, &r1, &c0, &c1):
                continue
            areas[i] = _region(&protos[0, 0, 0], nm, mh, mw, &coeffs[i, 0], &t, r0, r1, c0, c1,
                               logits, hbuf, acc, &masks[i, r0, c0], W)
    free(logits)
    free(hbuf)
    free(acc)


cdef struct RleWriter:
    # pycocotools' rleToString applied to counts as they are produced: only the counts two
    # places back are needed (delta coding from the fourth count on).
    char* buf
    Py_ssize_t cap
    Py_ssize_t used
    Py_ssize_t m        # counts written for the current mask
    int64_t prev1       # count m - 1
    int64_t prev2       # count m - 2
    int failed


cdef inline void _rle_start(RleWriter* w) noexcept nogil:
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
):
    """COCO compressed-RLE strings of the box-cropped masks, without full-size masks.

    Same inputs as ``assemble`` (output size is (len(y_start), len(x_start))); returns a list of
    ``n`` bytes objects (pycocotools' ``counts``) and fills ``areas`` (n,) int64.
    Runs are column-major (Fortran order) and start with a run of zeros, as pycocotools' rleEncode.
    """
    cdef Py_ssize_t n = coeffs.shape[0], nm = protos.shape[0], mh = protos.shape[1], mw = protos.shape[2]
    cdef Py_ssize_t H = y_start.shape[0], W = x_start.shape[0]
    cdef Py_ssize_t i, r0, r1, c0, c1, x, y, bw, max_region = 0
    cdef int64_t run
    cdef uint8_t p, v
    cdef Tables t
    cdef float* logits = NULL
    cdef float* hbuf = NULL
    cdef float* acc = NULL
    cdef uint8_t* region = NULL
    cdef RleWriter wr
    cdef Py_ssize_t* offsets = NULL
    if n == 0:
        return []
    for i in range(n):
        if H > 0 and W > 0 and _box_region(&boxes[i, 0], H, W, &r0, &r1, &c0, &c1):
            if (r1 - r0) * (c1 - c0) > max_region:
                max_region = (r1 - r0) * (c1 - c0)
    if H > 0 and W > 0:
        t.ys = &y_start[0]
        t.yw = &y_weights[0, 0]
        t.xs = &x_start[0]
        t.xw = &x_weights[0, 0]
        t.ky = y_weights.shape[1]
        t.kx = x_weights.shape[1]
    wr.cap = 64 * n + 1024
    wr.used = 0
    wr.failed = 0
    wr.buf = <char*> malloc(wr.cap)
    logits = <float*> malloc((mh * mw + 1) * sizeof(float))
    hbuf = <float*> malloc((mh * W + 1) * sizeof(float))
    acc = <float*> malloc((W + 1) * sizeof(float))
    region = <uint8_t*> malloc(max_region + 1)
    offsets = <Py_ssize_t*> malloc((n + 1) * sizeof(Py_ssize_t))
    if wr.buf == NULL or logits == NULL or hbuf == NULL or acc == NULL or region == NULL or offsets == NULL:
        wr.failed = 1
    if not wr.failed:
        offsets[0] = 0
        with nogil:
            for i in range(n):
                areas[i] = 0
                _rle_start(&wr)
                if H > 0 and W > 0 and _box_region(&boxes[i, 0], H, W, &r0, &r1, &c0, &c1):
                    bw = c1 - c0
                    areas[i] = _region(&protos[0, 0, 0], nm, mh, mw, &coeffs[i, 0], &t, r0, r1, c0, c1,
                                       logits, hbuf, acc, region, bw)
                    # Walk the mask column by column; p is the value of the current run.
                    p = 0
                    run = c0 * H  # whole zero columns left of the box
                    for x in range(bw):
                        if r0 > 0:  # zero rows above the box
                            if p:
                                _rle_put(&wr, run)
                                run = 0
                                p = 0
                            run += r0
                        for y in range(r1 - r0):
                            v = region[y * bw + x]
                            if v != p:
                                _rle_put(&wr, run)
                                run = 0
                                p = v
                            run += 1
                        if r1 < H:  # zero rows below the box
                            if p:
                                _rle_put(&wr, run)
                                run = 0
                                p = 0
                            run += H - r1
                    if c1 < W:  # whole zero columns right of the box
                        if p:
                            _rle_put(&wr, run)
                            run = 0
                            p = 0
                        run += (W - c1) * H
                else:
                    run = H * W
                _rle_put(&wr, run)
                if wr.failed:
                    break
                offsets[i + 1] = wr.used
    result = None
    if not wr.failed:
        result = [PyBytes_FromStringAndSize(wr.buf + offsets[i], offsets[i + 1] - offsets[i]) for i in range(n)]
    free(logits)
    free(hbuf)
    free(acc)
    free(region)
    free(offsets)
    free(wr.buf)
    if wr.failed:
        raise MemoryError()
    return result
