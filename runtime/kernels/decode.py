"""Host-side decode of YOLOv8 detect/segment head outputs into per-image NMS candidates.

Two input forms, one image per call:

* :func:`decode_truncated` -- the runtime's own ONNX models whose head stops at the raw convolutions:
  per level a box map ``(4 * reg_max, H, W)`` of DFL logits (channels ``[side][bin]``, sides l, t, r, b;
  ``reg_max`` 1, the DFL-free YOLO26 head: the four distances themselves, in strides)
  and a class map ``(nc, H, W)`` of logits (before the sigmoid).
* :func:`decode_standard` -- a stock Ultralytics export, ``(4 + nc + extra, N)`` with decoded
  ``cx, cy, w, h`` and sigmoid scores.

Both reproduce the candidate stage of Ultralytics' ``non_max_suppression`` (everything before the
NMS itself):

* score = sigmoid(logit) as a float32 (the float64 sigmoid rounded once to float32); a candidate needs
  ``score > float32(conf_thr)`` (strict; torch and numpy compare a float32 tensor with a Python float
  in float32 too);
* single label: the best class is the argmax of the float32 scores over *all* classes (first max on
  ties), the anchor is a candidate iff that score > conf, and the ``classes`` filter is applied
  afterwards (a box whose best class is not allowed is dropped, not re-labelled);
* multi label: every (anchor, class) pair with score > conf, then the ``classes`` filter;
* if more than ``max_candidates`` remain, only the ``max_candidates`` highest scores are kept (ties at
  the cut go to the earlier candidate in anchor order; Ultralytics' unstable argsort leaves that open).

Returned candidates are always in **anchor order** (ascending global anchor id, then ascending class id
for multi-label), also when the cap triggered; NMS sorts by score itself.

Boxes of the truncated form: anchor = cell centre ``(x + 0.5, y + 0.5)`` in grid units, distances
from DFL (softmax over the bins, expectation ``sum(p_i * i)``), ``x1 = (ax - l) * s``,
``y1 = (ay - t) * s``, ``x2 = (ax + r) * s``, ``y2 = (ay + b) * s`` in letterbox pixels (computed in
float64 and rounded once to float32; Ultralytics goes through centre/size in float32, which differs by
~1e-5 px). Global anchor id = level offset + ``y * W + x``, levels concatenated in the order given.

Speed: the class maps are scanned once in logit space (row-streaming running max per anchor) against
``logit(conf)`` lowered by a tiny margin, so only prefiltered anchors pay for a sigmoid (then the exact
float32 test), and only kept candidates pay for the DFL softmax (after the cap, once per anchor). One
compiled call per image does the whole decode, cap included (an O(n) radix select, no sort), without
the GIL. The kernels are Cython (ext/decode.pyx, :mod:`runtime.kernels._decode`), built for the baseline ISA
with AVX2 / AVX-512 clones of the vector loops picked at load time, so one build runs on any x86-64
CPU, fastest where the wide units exist, with the same results everywhere.

NaN logits/scores are not supported (a NaN never becomes a candidate, but it may hide the anchor's
other classes when it sits in class 0).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from runtime.errors import InputError
from runtime.kernels._decode import decode_standard_image, decode_truncated_image

__all__ = ["Candidates", "TruncatedDecoder", "decode_truncated", "decode_standard", "gather_anchor_rows"]

MAX_CANDIDATES = 30000  # Ultralytics' max_nms


@dataclass(frozen=True)
class Candidates:
    """Per-image candidates before NMS, in anchor order (then class order for multi-label).

    boxes_xyxy: (n, 4) float32 letterbox pixels; scores: (n,) float32; class_ids: (n,) int32;
    anchor_ids: (n,) int64 global anchor index (to gather mask coefficients / keypoints).
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    anchor_ids: np.ndarray

    @classmethod
    def empty(cls) -> "Candidates":
        return cls(
            np.empty((0, 4), np.float32),
            np.empty(0, np.float32),
            np.empty(0, np.int32),
            np.empty(0, np.int64),
        )

    def __len__(self) -> int:
        return int(self.scores.shape[0])


# --------------------------------------------------------------------------------------------- checks


def _conf32(conf_thr) -> np.float32:
    if isinstance(conf_thr, (bool, np.bool_)) or not isinstance(conf_thr, numbers.Real):
        raise InputError(f"conf_thr must be a real number in [0, 1], got {conf_thr!r}")
    c = float(conf_thr)
    if not (0.0 <= c <= 1.0):
        raise InputError(f"conf_thr must be in [0, 1], got {c}")
    return np.float32(c)


def _max_candidates(max_candidates) -> int:
    if isinstance(max_candidates, (bool, np.bool_)) or not isinstance(max_candidates, numbers.Integral):
        raise InputError(f"max_candidates must be a positive integer, got {max_candidates!r}")
    if int(max_candidates) < 1:
        raise InputError(f"max_candidates must be >= 1, got {int(max_candidates)}")
    return int(max_candidates)


def _allowed_mask(classes, nc: int) -> np.ndarray:
    """(nc,) bool mask of allowed class ids. Ids outside [0, nc) are accepted and simply match
    nothing (as in Ultralytics); an empty sequence allows nothing."""
    if classes is None:
        return np.ones(nc, np.bool_)
    if isinstance(classes, (numbers.Integral, np.integer)) and not isinstance(classes, (bool, np.bool_)):
        classes = [classes]
    allowed = np.zeros(nc, np.bool_)
    try:
        items = list(np.asarray(classes).reshape(-1)) if isinstance(classes, np.ndarray) else list(classes)
    except TypeError:
        raise InputError(f"classes must be None or a sequence of integer class ids, got {classes!r}") from None
    for c in items:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (numbers.Integral, np.integer)):
            raise InputError(f"classes must contain integer class ids, got {c!r} in {classes!r}")
        c = int(c)
        if 0 <= c < nc:
            allowed[c] = True
    return allowed


def _as_f32(a, what: str, ndim: int) -> np.ndarray:
    """Float array of rank ndim (a leading batch axis of size 1 is dropped) as C-contiguous float32."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"{what}: expected an array, got {type(a).__name__}") from e
    if a.ndim == ndim + 1 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != ndim:
        raise InputError(f"{what}: expected a {ndim}-D array, got shape {tuple(a.shape)}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)) or a.dtype == np.bool_:
        raise InputError(f"{what}: expected a float array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


# -------------------------------------------------------------------------------------------- helpers


def _wrap(out) -> Candidates:
    boxes, scores, class_ids, anchor_ids = out
    return Candidates(boxes, scores, class_ids, anchor_ids)


# ------------------------------------------------------------------------------------------------ API


class TruncatedDecoder:
    """:func:`decode_truncated` with everything but the maps checked and prepared once.

    For decoding image after image of one model: ``decoder(box_levels, cls_levels)`` only checks
    that each map is a C-contiguous float32 array of the shape given here (``box_shapes[i]`` =
    (4 * reg_max, H_i, W_i), ``cls_shapes[i]`` = (nc, H_i, W_i)), so the per-image cost is the
    kernel's. Arguments as in :func:`decode_truncated`; InputError when they are inconsistent.
    ``level_ends`` holds the cumulative anchor counts of the levels (global anchor ids run through them).
    """

    def __init__(
        self,
        box_shapes: Sequence[tuple[int, int, int]],
        cls_shapes: Sequence[tuple[int, int, int]],
        strides: Sequence[float],
        conf_thr: float,
        *,
        multi_label: bool = False,
        classes: Sequence[int] | None = None,
        max_candidates: int = MAX_CANDIDATES,
        dfl_bins: Sequence[float] | None = None,
    ) -> None:
        conf = _conf32(conf_thr)
        cap = _max_candidates(max_candidates)
        try:
            box_shapes = [tuple(int(d) for d in b) for b in box_shapes]
            cls_shapes = [tuple(int(d) for d in c) for c in cls_shapes]
            strides = list(np.asarray(strides, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError) as e:
            raise InputError(f"box_levels, cls_levels and strides must be sequences: {e}") from None
        nl = len(box_shapes)
        if nl == 0:
            raise InputError("expected at least one level, got 0 box levels")
        if len(cls_shapes) != nl or len(strides) != nl:
            raise InputError(
                f"mismatched levels: expected {nl} class levels and {nl} strides (one per box level), "
                f"got {len(cls_shapes)} class levels and {len(strides)} strides"
            )
        reg_max = nc = None
        for i, (b, c) in enumerate(zip(box_shapes, cls_shapes)):
            if len(b) != 3 or len(c) != 3:
                raise InputError(f"level {i}: expected 3-D maps, got shapes {b} (box) and {c} (class)")
            if b[1:] != c[1:]:
                raise InputError(
                    f"level {i}: box and class maps must share (H, W): expected {b[1:]} (box), got {c[1:]} (class)"
                )
            if b[0] == 0 or b[0] % 4:
                raise InputError(f"level {i}: box channels must be a positive multiple of 4 (4 * reg_max), got {b[0]}")
            if c[0] == 0:
                raise InputError(f"level {i}: expected at least one class channel, got 0")
            if reg_max is None:
                reg_max, nc = b[0] // 4, c[0]
            elif b[0] != 4 * reg_max:
                raise InputError(f"level {i}: expected {4 * reg_max} box channels like level 0, got {b[0]}")
            elif c[0] != nc:
                raise InputError(f"level {i}: expected {nc} class channels like level 0, got {c[0]}")
            s = float(strides[i])
            if not (math.isfinite(s) and s > 0):
                raise InputError(f"level {i}: stride must be a positive finite number, got {strides[i]!r}")
            strides[i] = s
        level_ends = np.cumsum([c[1] * c[2] for c in cls_shapes], dtype=np.int64)
        total = int(level_ends[-1])
        if total >= 2**31:
            raise InputError(f"expected fewer than 2**31 anchors in all, got {total}")
        allowed = _allowed_mask(classes, nc)
        bins = np.arange(reg_max, dtype=np.float64) if dfl_bins is None else np.ascontiguousarray(dfl_bins, np.float64)
        if bins.shape != (reg_max,):
            raise InputError(f"dfl_bins must hold reg_max={reg_max} values, got shape {bins.shape}")
        c64 = float(conf)
        t = -math.inf if c64 <= 0.0 else (math.inf if c64 >= 1.0 else math.log(c64 / (1.0 - c64)))
        if math.isfinite(t):
            t -= 1e-6 * (1.0 + abs(t))  # prefilter margin; the exact float32 test follows in the kernel
        level_ends.setflags(write=False)
        self.level_ends = level_ends  # cumulative anchors per level: global anchor id -> level
        self._maps = tuple((b, c, (b[0], b[1] * b[2]), (c[0], c[1] * c[2])) for b, c in zip(box_shapes, cls_shapes))
        self._empty = not allowed.any() or total == 0
        self._args = (np.asarray([c[2] for c in cls_shapes], np.int64), np.asarray(strides, np.float64), bins, t,
                      conf, allowed.view(np.uint8), bool(multi_label), cap)

    def __call__(self, box_levels: Sequence[np.ndarray], cls_levels: Sequence[np.ndarray]) -> Candidates:
        """Candidates of one image (maps as described in the class docstring), in anchor order."""
        if len(box_levels) != len(self._maps) or len(cls_levels) != len(self._maps):
            raise InputError(f"expected {len(self._maps)} box and class levels, "
                             f"got {len(box_levels)} and {len(cls_levels)}")
        boxes2d, cls2d = [], []
        for i, (b, c, (bshape, cshape, b2d, c2d)) in enumerate(zip(box_levels, cls_levels, self._maps)):
            for what, a, shape in (("box", b, bshape), ("class", c, cshape)):
                if a.shape != shape or a.dtype != np.float32 or not a.flags.c_contiguous:
                    raise InputError(f"{what} level {i}: expected a C-contiguous float32 array of shape {shape}, "
                                     f"got {a.dtype} {tuple(a.shape)}")
            boxes2d.append(b.reshape(b2d))
            cls2d.append(c.reshape(c2d))
        if self._empty:
            return Candidates.empty()
        return _wrap(decode_truncated_image(tuple(boxes2d), tuple(cls2d), *self._args))

    def decode_row(self, box_batches: Sequence[np.ndarray], cls_batches: Sequence[np.ndarray], row: int) -> Candidates:
        """Candidates of image ``row`` of a session's batched float32 outputs, per level (B, C, H, W).

        For the Postprocessor, whose outputs come from onnxruntime (C-contiguous, float32 checked
        when the model was loaded): no per-map checks beyond the reshape's size check, which keeps
        the Python between a session run and the kernel short.
        """
        if self._empty:
            return Candidates.empty()
        boxes2d = tuple(b[row].reshape(m[2]) for b, m in zip(box_batches, self._maps))
        cls2d = tuple(c[row].reshape(m[3]) for c, m in zip(cls_batches, self._maps))
        return _wrap(decode_truncated_image(boxes2d, cls2d, *self._args))


def decode_truncated(
    box_levels: Sequence[np.ndarray],
    cls_levels: Sequence[np.ndarray],
    strides: Sequence[float],
    conf_thr: float,
    *,
    multi_label: bool = False,
    classes: Sequence[int] | None = None,
    max_candidates: int = MAX_CANDIDATES,
    dfl_bins: Sequence[float] | None = None,
) -> Candidates:
    """Decode one image of a truncated head into candidates (see the module docstring for the rules).

    box_levels[i]: (4 * reg_max, H_i, W_i) DFL logits; cls_levels[i]: (nc, H_i, W_i) class logits;
    strides[i]: stride of level i in letterbox pixels. A leading batch axis of size 1 is accepted.
    reg_max is inferred as channels / 4. dfl_bins: the DFL's bin values (reg_max,), 0..reg_max-1
    when None; a checkpoint whose DFL weights were rounded carries its own. Raises InputError on
    inconsistent shapes or bad arguments. Returns candidates in anchor order. Decoding many images
    of one model: build a :class:`TruncatedDecoder` once instead.
    """
    try:
        box_levels = list(box_levels)
        cls_levels = list(cls_levels)
    except TypeError as e:
        raise InputError(f"box_levels, cls_levels and strides must be sequences: {e}") from None
    boxes = [_as_f32(b, f"box level {i}", 3) for i, b in enumerate(box_levels)]
    cls = [_as_f32(c, f"class level {i}", 3) for i, c in enumerate(cls_levels)]
    decoder = TruncatedDecoder([b.shape for b in boxes], [c.shape for c in cls], strides, conf_thr,
                               multi_label=multi_label, classes=classes, max_candidates=max_candidates,
                               dfl_bins=dfl_bins)
    return decoder(boxes, cls)


def decode_standard(
    pred: np.ndarray,
    nc: int,
    conf_thr: float,
    *,
    multi_label: bool = False,
    classes: Sequence[int] | None = None,
    max_candidates: int = MAX_CANDIDATES,
) -> Candidates:
    """Decode one image of a standard Ultralytics export: pred (4 + nc + extra, N), rows 0..3 decoded
    cx, cy, w, h (letterbox px), rows 4..4+nc sigmoid scores; a leading batch axis of size 1 is
    accepted. Boxes become xyxy as Ultralytics' xywh2xyxy does (float32 ``xy -/+ wh / 2``);
    anchor_ids are column indices. Returns candidates in anchor order."""
    conf = _conf32(conf_thr)
    cap = _max_candidates(max_candidates)
    if isinstance(nc, (bool, np.bool_)) or not isinstance(nc, (numbers.Integral, np.integer)) or int(nc) < 1:
        raise InputError(f"nc must be a positive integer, got {nc!r}")
    nc = int(nc)
    p = _as_f32(pred, "pred", 2)
    if p.shape[0] < 4 + nc:
        raise InputError(f"pred: expected at least 4 + nc = {4 + nc} rows, got shape {tuple(p.shape)}")
    allowed = _allowed_mask(classes, nc)
    if p.shape[1] >= 2**31:
        raise InputError(f"pred: expected fewer than 2**31 columns, got {p.shape[1]}")
    if not allowed.any() or p.shape[1] == 0:
        return Candidates.empty()

    return _wrap(decode_standard_image(p, nc, conf, allowed.view(np.uint8), bool(multi_label), cap))


def gather_anchor_rows(levels, anchor_ids: np.ndarray) -> np.ndarray:
    """Rows of per-anchor data for the given global anchor ids, as (n, C) float32.

    ``levels``: a sequence of per-level maps (C, H_i, W_i) (e.g. mask coefficients of a truncated
    head; anchor ids as in :func:`decode_truncated`; a leading batch axis of size 1 is accepted), or
    a single (C, N) ndarray (the extra rows of a standard export, anchor id = column).
    """
    ids = np.asarray(anchor_ids)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise InputError(f"anchor_ids: expected a 1-D integer array, got shape {ids.shape} dtype {ids.dtype}")
    ids = ids.astype(np.int64, copy=False)

    if isinstance(levels, np.ndarray):
        if levels.ndim != 2:
            raise InputError(
                f"levels: a single array must be (C, N), got shape {tuple(levels.shape)}; "
                "pass per-level (C, H, W) maps as a list"
            )
        mats = [_as_f32(levels, "levels", 2)]
    else:
        try:
            levels = list(levels)
        except TypeError:
            what = type(levels).__name__
            raise InputError(f"levels: expected an array or a sequence of arrays, got {what}") from None
        if not levels:
            raise InputError("levels: expected at least one level, got 0")
        mats = []
        for i, lv in enumerate(levels):
            m = _as_f32(lv, f"level {i}", 3)
            mats.append(m.reshape(m.shape[0], -1))
        ch = mats[0].shape[0]
        for i, m in enumerate(mats):
            if m.shape[0] != ch:
                raise InputError(f"level {i}: expected {ch} channels like level 0, got {m.shape[0]}")

    level_ends = np.cumsum([m.shape[1] for m in mats], dtype=np.int64)
    total = int(level_ends[-1])
    if ids.size and (ids.min() < 0 or ids.max() >= total):
        raise InputError(
            f"anchor_ids: expected ids in [0, {total}), got min {int(ids.min())} max {int(ids.max())}"
        )
    from runtime.kernels._anchors import gather_rows

    out = np.empty((ids.size, mats[0].shape[0]), np.float32)
    gather_rows(tuple(mats), level_ends, np.ascontiguousarray(ids), out)
    return out
