"""Numba kernels behind :mod:`runtime.kernels.decode`. Private: call them only through the wrappers there.

Every kernel is ``@njit(cache=True, nogil=True)``; the machine code is cached next to this file in
``__pycache__`` (``<module>.<function>-<line>.py<ver>.nbi`` index + ``.nbc`` code), or under
``NUMBA_CACHE_DIR`` when that is set, or in numba's per-user cache when ``__pycache__`` is not
writable -- so only the first process on a machine compiles.

The wrappers always call with one fixed type signature per kernel (tuples of C-contiguous float32
2-D maps, int64/float64 1-D arrays, Python int/float/bool scalars, a float32 threshold and a
C-contiguous bool class mask) so a single cached specialisation serves every call (one per number
of levels for the truncated head).

Scores are the float32 rounding of the float64 sigmoid, i.e. a correctly rounded float32 sigmoid up
to rare double-rounding cases (torch's float32 sigmoid agrees to about one unit in the last place).
"""

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def sigmoid32(x):
    """float32(1 / (1 + exp(-x))) evaluated in float64: the float32 score of a logit."""
    return np.float32(1.0 / (1.0 + math.exp(-np.float64(x))))


@njit(cache=True, nogil=True)
def logit64(p):
    """log(p / (1 - p)) in float64; -inf for p <= 0, +inf for p >= 1."""
    if p <= 0.0:
        return -np.inf
    if p >= 1.0:
        return np.inf
    return math.log(p / (1.0 - p))


@njit(cache=True, nogil=True)
def column_max(mat, row0, nrows, out):
    """out[a] = max(mat[row0:row0 + nrows, a]) for every column a (nrows >= 1).

    Row-outer, column-inner running max into the preallocated ``out``: every pass streams contiguous
    rows of the (classes, anchors) layout, and the inner loop is a branch-free select that LLVM
    vectorises. Four rows per pass, so ``out`` is loaded and stored a quarter as often (22-25% less
    time than one row per pass on logits fresh from a session run). A NaN never wins against a
    number (it only survives in row row0).
    """
    n = mat.shape[1]
    for a in range(n):
        out[a] = mat[row0, a]
    r = row0 + 1
    end = row0 + nrows
    while r + 4 <= end:
        for a in range(n):
            m = out[a]
            v = mat[r, a]
            m = v if v > m else m
            v = mat[r + 1, a]
            m = v if v > m else m
            v = mat[r + 2, a]
            m = v if v > m else m
            v = mat[r + 3, a]
            out[a] = v if v > m else m
        r += 4
    while r < end:
        for a in range(n):
            v = mat[r, a]
            m = out[a]
            out[a] = v if v > m else m
        r += 1


@njit(cache=True, nogil=True)
def first_class_with_score(cls, a, s):
    """Smallest class c whose float32 score sigmoid32(cls[c, a]) equals s (s = the column's best score).

    The sigmoid is monotone, so only logits above logit(previous float32 of s) can round to s; only
    those classes pay for a sigmoid. Reproduces argmax over the float32 scores with the first max on
    ties, including ties that float32 rounding / saturation creates between distinct logits.
    """
    lb = logit64(np.float64(np.nextafter(s, np.float32(0.0))))
    lb = lb - 1e-6 * (1.0 + abs(lb))
    for c in range(cls.shape[0]):
        v = cls[c, a]
        if v > lb:
            if sigmoid32(v) == s:
                return c
    return -1  # unreachable for a confirmed candidate: its max logit maps to s


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def dfl_box(box, a, reg_max, bins, ax, ay, stride, buf, dist, out, row):
    """DFL for anchor column a of box (4 * reg_max, n): per side softmax over the reg_max bins, then
    the expectation sum(p_i * bins[i]) (bins is 0..reg_max-1 for a standard DFL); written as letterbox-pixel xyxy into out[row]:
    x1 = (ax - l) * s, y1 = (ay - t) * s, x2 = (ax + r) * s, y2 = (ay + b) * s.

    float64 throughout, one rounding to float32 at the end. exp(x - max) (argument <= 0) is a
    branch-free degree-10 Taylor polynomial of (x - max) / 128 squared 7 times (relative error
    < 2e-9; arguments clamped at -60, where a term is < 1e-26 of the largest and cannot move the
    sums), so the bin loops vectorise; the fastmath flags only allow the reassociation that the
    vectorised sums need (no nnan/ninf). buf, dist: float64 scratch of 4 * reg_max and 4 elements.
    """
    for i in range(4 * reg_max):
        buf[i] = box[i, a]
    for side in range(4):
        base = side * reg_max
        mx = buf[base]
        for i in range(1, reg_max):
            v = buf[base + i]
            mx = v if v > mx else mx
        ssum = 0.0
        wsum = 0.0
        for i in range(reg_max):
            y = buf[base + i] - mx
            y = (y if y > -60.0 else -60.0) * 0.0078125
            e = 1.0 / 362880.0 + y * (1.0 / 3628800.0)  # Horner, degree 10
            e = 1.0 / 40320.0 + y * e
            e = 1.0 / 5040.0 + y * e
            e = 1.0 / 720.0 + y * e
            e = 1.0 / 120.0 + y * e
            e = 1.0 / 24.0 + y * e
            e = 1.0 / 6.0 + y * e
            e = 0.5 + y * e
            e = 1.0 + y * e
            e = 1.0 + y * e
            e = e * e
            e = e * e
            e = e * e
            e = e * e
            e = e * e
            e = e * e
            e = e * e
            ssum += e
            wsum += e * bins[i]
        dist[side] = wsum / ssum
    out[row, 0] = np.float32((ax - dist[0]) * stride)
    out[row, 1] = np.float32((ay - dist[1]) * stride)
    out[row, 2] = np.float32((ax + dist[2]) * stride)
    out[row, 3] = np.float32((ay + dist[3]) * stride)


@njit(cache=True, nogil=True)
def topk_rows(scores, m, k):
    """Indices (ascending) of the k largest of scores[:m] (k < m); ties at the cut go to the
    earliest rows. Requires scores > 0 (true for every candidate: score > conf >= 0), whose float32
    bit patterns order like the values: an O(m) two-pass radix select on the 16-bit halves."""
    keys = scores.view(np.uint32)
    hist = np.zeros(65536, np.int64)
    for i in range(m):
        hist[keys[i] >> 16] += 1
    above = 0
    hi = 65535
    while above + hist[hi] < k:
        above += hist[hi]
        hi -= 1
    hist[:] = 0
    for i in range(m):
        key = keys[i]
        if (key >> 16) == hi:
            hist[key & 65535] += 1
    lo = 65535
    while above + hist[lo] < k:
        above += hist[lo]
        lo -= 1
    kth = (np.int64(hi) << 16) | np.int64(lo)
    need = k - above  # rows equal to the k-th largest that still fit
    out = np.empty(k, np.int64)
    j = 0
    for i in range(m):
        key = np.int64(keys[i])
        if key > kth:
            out[j] = i
            j += 1
        elif key == kth and need > 0:
            out[j] = i
            j += 1
            need -= 1
    return out


@njit(cache=True, nogil=True)
def capped_rows(scores, m, max_candidates):
    """Rows of the first m candidates that survive the cap (the top max_candidates scores), ascending."""
    if m > max_candidates:
        return topk_rows(scores, m, max_candidates)
    return np.arange(m)


@njit(cache=True, nogil=True)
def decode_truncated_image(
    box_levels, cls_levels, widths, strides, bins, logit_thr, conf, allowed, multi_label, max_candidates
):
    """Candidates of one image of a truncated head.

    box_levels: tuple of (4 * reg_max, H_i * W_i) float32 C-contiguous DFL logits ([side][bin],
    sides l, t, r, b); cls_levels: tuple of (nc, H_i * W_i) float32 C-contiguous class logits;
    widths: (L,) int64 W_i; strides: (L,) float64; bins: (reg_max,) float64 DFL bin values.
    logit_thr: float64 prefilter bound a little below
    logit(conf); conf: float32, a candidate needs score > conf (strict). allowed: (nc,) bool class
    mask (the classes filter, applied after choosing the best class). max_candidates: cap, top scores.
    Returns (boxes (m, 4) float32, scores (m,) float32, class_ids (m,) int32, anchor_ids (m,) int64)
    in anchor order, then class order for multi_label.
    """
    nl = len(cls_levels)
    nc = cls_levels[0].shape[0]
    reg_max = box_levels[0].shape[0] // 4
    offsets = np.empty(nl + 1, np.int64)
    offsets[0] = 0
    for l in range(nl):
        offsets[l + 1] = offsets[l] + cls_levels[l].shape[1]
    total = offsets[nl]

    # 1. per-anchor max logit, streaming the (nc, anchors) maps once; no sigmoid yet
    maxbuf = np.empty(total, np.float32)
    for l in range(nl):
        column_max(cls_levels[l], 0, nc, maxbuf[offsets[l]:offsets[l + 1]])

    # 2. anchors whose max logit clears the logit-space prefilter
    pre = np.empty(total, np.int32)
    k = 0
    for g in range(total):
        if maxbuf[g] > logit_thr:
            pre[k] = g
            k += 1

    # 3. capacity: one row per prefiltered anchor (single label) or per prefiltered pair
    cap = k
    if multi_label:
        cap = 0
        l = 0
        for j in range(k):
            g = pre[j]
            while g >= offsets[l + 1]:
                l += 1
            cls = cls_levels[l]
            a = g - offsets[l]
            for c in range(nc):
                if cls[c, a] > logit_thr and allowed[c]:
                    cap += 1

    # 4. exact float32 confirmation, best class, classes filter
    sel_score = np.empty(cap, np.float32)
    sel_class = np.empty(cap, np.int32)
    sel_anchor = np.empty(cap, np.int32)
    m = 0
    l = 0
    for j in range(k):
        g = pre[j]
        while g >= offsets[l + 1]:
            l += 1
        cls = cls_levels[l]
        a = g - offsets[l]
        if multi_label:
            for c in range(nc):
                v = cls[c, a]
                if v > logit_thr and allowed[c]:
                    s = sigmoid32(v)
                    if s > conf:
                        sel_score[m] = s
                        sel_class[m] = c
                        sel_anchor[m] = g
                        m += 1
        else:
            s = sigmoid32(maxbuf[g])
            if s > conf:
                c = first_class_with_score(cls, a, s)
                if c >= 0 and allowed[c]:
                    sel_score[m] = s
                    sel_class[m] = c
                    sel_anchor[m] = g
                    m += 1

    # 5. cap: keep the top max_candidates scores, rows stay in anchor order
    rows = capped_rows(sel_score, m, max_candidates)
    n_out = len(rows)

    # 6. outputs; DFL only for kept anchors, once per anchor
    boxes = np.empty((n_out, 4), np.float32)
    scores = np.empty(n_out, np.float32)
    class_ids = np.empty(n_out, np.int32)
    anchor_ids = np.empty(n_out, np.int64)
    buf = np.empty(4 * reg_max, np.float64)
    dist = np.empty(4, np.float64)
    prev = -1
    l = 0
    for j in range(n_out):
        r = rows[j]
        g = sel_anchor[r]
        scores[j] = sel_score[r]
        class_ids[j] = sel_class[r]
        anchor_ids[j] = g
        if g == prev:
            boxes[j, 0] = boxes[j - 1, 0]
            boxes[j, 1] = boxes[j - 1, 1]
            boxes[j, 2] = boxes[j - 1, 2]
            boxes[j, 3] = boxes[j - 1, 3]
        else:
            while g >= offsets[l + 1]:
                l += 1
            a = g - offsets[l]
            w = widths[l]
            y = a // w
            x = a - y * w
            dfl_box(box_levels[l], a, reg_max, bins, x + 0.5, y + 0.5, strides[l], buf, dist, boxes, j)
            prev = g
    return boxes, scores, class_ids, anchor_ids


@njit(cache=True, nogil=True)
def decode_standard_image(pred, nc, conf, allowed, multi_label, max_candidates):
    """Candidates of one image of a standard export: pred (4 + nc + extra, N) float32 C-contiguous,
    rows 0..3 decoded cx, cy, w, h (letterbox px), rows 4..4+nc sigmoid scores. Boxes become xyxy in
    float32 exactly as Ultralytics' xywh2xyxy (xy -/+ wh / 2). Same outputs, order and cap as
    decode_truncated_image; anchor ids are column indices."""
    n = pred.shape[1]
    maxbuf = np.empty(n, np.float32)
    column_max(pred, 4, nc, maxbuf)

    pre = np.empty(n, np.int32)
    k = 0
    for a in range(n):
        if maxbuf[a] > conf:
            pre[k] = a
            k += 1

    cap = k
    if multi_label:
        cap = 0
        for j in range(k):
            a = pre[j]
            for c in range(nc):
                if pred[4 + c, a] > conf and allowed[c]:
                    cap += 1

    sel_score = np.empty(cap, np.float32)
    sel_class = np.empty(cap, np.int32)
    sel_anchor = np.empty(cap, np.int32)
    m = 0
    for j in range(k):
        a = pre[j]
        if multi_label:
            for c in range(nc):
                s = pred[4 + c, a]
                if s > conf and allowed[c]:
                    sel_score[m] = s
                    sel_class[m] = c
                    sel_anchor[m] = a
                    m += 1
        else:
            s = maxbuf[a]
            c = 0
            while pred[4 + c, a] != s:  # first max; s is one of the column's values
                c += 1
            if allowed[c]:
                sel_score[m] = s
                sel_class[m] = c
                sel_anchor[m] = a
                m += 1

    rows = capped_rows(sel_score, m, max_candidates)
    n_out = len(rows)

    boxes = np.empty((n_out, 4), np.float32)
    scores = np.empty(n_out, np.float32)
    class_ids = np.empty(n_out, np.int32)
    anchor_ids = np.empty(n_out, np.int64)
    two = np.float32(2.0)
    for j in range(n_out):
        r = rows[j]
        a = sel_anchor[r]
        scores[j] = sel_score[r]
        class_ids[j] = sel_class[r]
        anchor_ids[j] = a
        cx = pred[0, a]
        cy = pred[1, a]
        hw = pred[2, a] / two
        hh = pred[3, a] / two
        boxes[j, 0] = cx - hw
        boxes[j, 1] = cy - hh
        boxes[j, 2] = cx + hw
        boxes[j, 3] = cy + hh
    return boxes, scores, class_ids, anchor_ids
