"""Instance masks of segment models, matching Ultralytics' ``process_mask`` / ``process_mask_native``.

Both Ultralytics forms compute ``coeffs @ protos``, resample the logits bilinearly (PyTorch
``F.interpolate``, ``align_corners=False``), threshold ``> 0`` and zero every pixel outside the
box. The resampling is linear and separable, so it is described once per shape pair by a
:class:`MaskGeometry`: for each output row (column), a start proto row (column) and ``K``
float32 weights. The Cython kernel then works on the box region of each detection only.

* letterbox form (``process_mask(..., upsample=True)``): proto grid -> letterboxed input size.
* native form (``process_mask_native``): proto grid -> x ``f`` upsample (f in 1, 2, 4) -> crop of
  the letterbox padding -> resize to the original image (``scale_masks``); the two stages are
  composed into one table (at most 3 non-zero taps per output index).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from runtime.kernels import _masks
from runtime.errors import InputError

__all__ = [
    "MaskGeometry",
    "letterbox_mask_geometry",
    "native_mask_geometry",
    "MaskAssembler",
    "assemble_masks",
    "encode_masks_rle",
]

TAPS = 4  # most weights per output index (bilinear needs 2, the composed native form 3)

# Threads the mask kernels use when a call passes ``threads=None``. None: OpenMP's default number
# (OMP_NUM_THREADS, else one per CPU), shrunk while the load average says the CPUs are busy. An int
# caps it exactly, busy or not. Detections run in parallel; one detection never does. On an
# oversubscribed machine a parallel call waits, at its end, for workers the OS has not scheduled
# yet (milliseconds): set 1 where other threads keep the CPUs busy.
DEFAULT_THREADS: int | None = None


@dataclass(frozen=True, eq=False)
class MaskGeometry:
    """Separable proto-grid -> output-grid resampling tables (read-only arrays).

    out_hw    : (H, W) size of the output masks.
    y_start   : (H,) int64, first proto row read by each output row.
    y_weights : (H, K) float32, weights of proto rows y_start .. y_start + K - 1.
    x_start   : (W,) int64, first proto column read by each output column.
    x_weights : (W, K) float32, weights of proto columns x_start .. x_start + K - 1.
    proto_hw  : (mh, mw) proto grid the tables were built for.
    """

    out_hw: tuple[int, int]
    y_start: np.ndarray
    y_weights: np.ndarray
    x_start: np.ndarray
    x_weights: np.ndarray
    proto_hw: tuple[int, int] | None = None


# ----------------------------------------------------------------------------------------------
# Geometry: dense per-axis resampling matrices in float64 holding PyTorch's float32 weights.


def _bilinear_matrix(n_in: int, n_out: int, scale_factor: float | None = None) -> np.ndarray:
    """(n_out, n_in) float64 matrix of PyTorch's 1-D bilinear resize, align_corners=False.

    Source positions and weights are computed in float32 like ATen's CPU kernel; ``scale_factor``
    mirrors ``F.interpolate(scale_factor=...)`` (the kernel then uses 1/scale_factor).
    """
    m = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    if n_out == n_in:  # ATen copies
        m[rows, rows] = 1.0
        return m
    if scale_factor is not None and scale_factor > 0:
        scale = np.float32(1.0 / scale_factor)
    else:
        scale = np.float32(n_in) / np.float32(n_out)
    src = scale * (rows.astype(np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.where(src < 0, np.float32(0), src).astype(np.float32)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam1 = np.clip(src - i0.astype(np.float32), np.float32(0), np.float32(1)).astype(np.float32)
    lam0 = (np.float32(1) - lam1).astype(np.float32)
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    np.add.at(m, (rows, i0), lam0.astype(np.float64))
    np.add.at(m, (rows, i1), lam1.astype(np.float64))
    return m


def _tables(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense (n_out, n_in) matrix -> (start (n_out,) int64, weights (n_out, K) float32), read-only."""
    n_out, n_in = matrix.shape
    nonzero = matrix != 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), 0)
    last = np.where(nonzero.any(axis=1), n_in - 1 - nonzero[:, ::-1].argmax(axis=1), 0)
    span = int((last - first).max()) + 1 if n_out else 1
    if span > TAPS:
        raise AssertionError("resampling needs more taps than the geometry stores")  # pragma: no cover
    k = min(span, n_in)  # store only the taps in use: 2 for plain bilinear, halving the kernel's work
    start = np.minimum(first, n_in - k).astype(np.int64)
    weights = matrix[np.arange(n_out)[:, None], start[:, None] + np.arange(k)].astype(np.float32)
    start.setflags(write=False)
    weights.setflags(write=False)
    return start, weights


def _check_hw(name: str, hw) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in hw)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a (height, width) pair, got {hw!r}") from None
    if h < 1 or w < 1:
        raise InputError(f"{name} must be positive, got {(h, w)}")
    return h, w


def _geometry(proto_hw: tuple[int, int], out_hw: tuple[int, int], my: np.ndarray, mx: np.ndarray) -> MaskGeometry:
    ys, yw = _tables(my)
    xs, xw = _tables(mx)
    return MaskGeometry(out_hw, ys, yw, xs, xw, proto_hw)


@functools.lru_cache(maxsize=64)
def _letterbox_geometry(proto_hw: tuple[int, int], input_hw: tuple[int, int]) -> MaskGeometry:
    (mh, mw), (ih, iw) = proto_hw, input_hw
    return _geometry(proto_hw, input_hw, _bilinear_matrix(mh, ih), _bilinear_matrix(mw, iw))


def letterbox_mask_geometry(proto_hw: tuple[int, int], input_hw: tuple[int, int]) -> MaskGeometry:
    """Geometry of ``process_mask(..., shape=input_hw, upsample=True)``: masks at letterboxed input size.

    proto_hw : (mh, mw) prototype grid; input_hw : (ih, iw) network input size. Cached by shapes.
    """
    return _letterbox_geometry(_check_hw("proto_hw", proto_hw), _check_hw("input_hw", input_hw))


def _upsample(m: int, f: int) -> np.ndarray:
    """(m*f, m) matrix of ``F.interpolate(scale_factor=f, mode="bilinear")``; identity when f == 1."""
    return _bilinear_matrix(m, m * f, scale_factor=f) if f > 1 else np.eye(m)


@functools.lru_cache(maxsize=64)
def _native_geometry(proto_hw: tuple[int, int], image_hw: tuple[int, int]) -> MaskGeometry:
    (mh, mw), (h, w) = proto_hw, image_hw
    # process_mask_native: smallest integer upsample that crops the letterbox padding on whole pixels.
    gain = min(4 * mh / h, 4 * mw / w)
    pad = (4 * mh - max(round(h * gain), 1)) | (4 * mw - max(round(w * gain), 1))
    f = 4 // math.gcd(4, pad | pad // 2)
    # scale_masks(masks of size (mh*f, mw*f), (h, w)): crop the content, resize it to (h, w).
    im1_h, im1_w = mh * f, mw * f
    if (im1_h, im1_w) == (h, w):
        rows, cols = range(h), range(w)
    else:
        g = min(im1_h / h, im1_w / w)
        pad_w, pad_h = (im1_w - max(round(w * g), 1)) / 2, (im1_h - max(round(h * g), 1)) / 2
        top, left = round(pad_h - 0.1), round(pad_w - 0.1)
        bottom, right = top + max(round(h * g), 1), left + max(round(w * g), 1)
        rows, cols = range(im1_h)[top:bottom], range(im1_w)[left:right]  # Python slice semantics
    # Rows/cols that survive the crop, resized to (h, w) (ATen copies an axis whose size is unchanged).
    my = _bilinear_matrix(len(rows), h) @ _upsample(mh, f)[rows.start : rows.stop]
    mx = _bilinear_matrix(len(cols), w) @ _upsample(mw, f)[cols.start : cols.stop]
    return _geometry(proto_hw, image_hw, my, mx)


def native_mask_geometry(proto_hw: tuple[int, int], image_hw: tuple[int, int]) -> MaskGeometry:
    """Geometry of ``process_mask_native(..., shape=image_hw)``: masks at original-image size.

    proto_hw : (mh, mw) prototype grid; image_hw : (h0, w0) original image size. Cached by shapes.
    """
    return _native_geometry(_check_hw("proto_hw", proto_hw), _check_hw("image_hw", image_hw))


# ----------------------------------------------------------------------------------------------
# Assembly.


def _threads(threads: int | None) -> int:
    """Kernel argument: a positive thread cap, or 0 for OpenMP's default."""
    if threads is None:
        threads = DEFAULT_THREADS
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise InputError(f"threads must be a positive integer or None, got {threads!r}")
    return int(threads)


def _geometry_tables(geometry: MaskGeometry, mh: int, mw: int) -> tuple[np.ndarray, ...]:
    """The geometry's tables as the kernels take them, checked against a (mh, mw) proto grid."""
    h, w = geometry.out_hw
    tables = (
        np.ascontiguousarray(geometry.y_start, dtype=np.int64),
        np.ascontiguousarray(geometry.y_weights, dtype=np.float32),
        np.ascontiguousarray(geometry.x_start, dtype=np.int64),
        np.ascontiguousarray(geometry.x_weights, dtype=np.float32),
    )
    for axis, start, weights, size, limit in (("y", *tables[:2], h, mh), ("x", *tables[2:], w, mw)):
        if start.shape != (size,) or weights.ndim != 2 or weights.shape[0] != size or weights.shape[1] < 1:
            raise InputError(f"geometry {axis} tables must have shapes ({size},) and ({size}, K), "
                             f"got {start.shape} and {weights.shape}")
        if size and (int(start.min()) < 0 or int(start.max()) + weights.shape[1] > limit):
            raise InputError(f"geometry reads outside the proto grid of shape {(mh, mw)}")
    return tables


@functools.lru_cache(maxsize=64)
def _frozen_geometry_tables(geometry: MaskGeometry, mh: int, mw: int) -> tuple[np.ndarray, ...]:
    return _geometry_tables(geometry, mh, mw)


def _tables_for(geometry: MaskGeometry, mh: int, mw: int) -> tuple[np.ndarray, ...]:
    """Checked tables; cached for geometries whose arrays cannot change (all the ones built here)."""
    if all(not a.flags.writeable for a in (geometry.y_start, geometry.y_weights, geometry.x_start,
                                           geometry.x_weights)):
        return _frozen_geometry_tables(geometry, mh, mw)
    return _geometry_tables(geometry, mh, mw)


class MaskAssembler:
    """Masks of one geometry on one proto grid, the tables checked once.

    For image after image of one model (the Predictor keeps one per geometry): a call only checks
    that its arrays are C-contiguous float32 of the expected shapes, so an image costs the kernel.
    :func:`assemble_masks` and :func:`encode_masks_rle` are one-call forms that also convert their
    inputs. ``proto_shape`` is (nm, mh, mw); ``threads`` as in :func:`assemble_masks`.
    """

    def __init__(self, geometry: MaskGeometry, proto_shape: tuple[int, int, int], threads: int | None = None) -> None:
        if not isinstance(geometry, MaskGeometry):
            raise InputError(f"geometry must be a MaskGeometry, got {type(geometry).__name__}")
        try:
            nm, mh, mw = (int(v) for v in proto_shape)
        except (TypeError, ValueError):
            raise InputError(f"proto_shape must be (nm, mh, mw), got {proto_shape!r}") from None
        if geometry.proto_hw is not None and (mh, mw) != tuple(geometry.proto_hw):
            raise InputError(
                f"protos must have shape ({nm}, {geometry.proto_hw[0]}, {geometry.proto_hw[1]}) "
                f"for this geometry, got {tuple(proto_shape)}"
            )
        _threads(threads)  # checked now, resolved per call (DEFAULT_THREADS may change)
        self.geometry = geometry
        self.proto_shape = (nm, mh, mw)
        self.threads = threads
        self._tables = _tables_for(geometry, mh, mw)

    def _check(self, protos: np.ndarray, coeffs: np.ndarray, boxes_xyxy: np.ndarray) -> None:
        nm = self.proto_shape[0]
        n = coeffs.shape[0] if coeffs.ndim else 0
        for what, a, shape in (("protos", protos, self.proto_shape), ("coeffs", coeffs, (n, nm)),
                               ("boxes_xyxy", boxes_xyxy, (n, 4))):
            if a.shape != shape or a.dtype != np.float32 or not a.flags.c_contiguous:
                raise InputError(f"{what}: expected a C-contiguous float32 array of shape {shape}, "
                                 f"got {a.dtype} {a.shape}")

    def masks(self, protos: np.ndarray, coeffs: np.ndarray, boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(masks (n, H, W) bool, areas (n,) int64, number of empty masks); arguments as in :func:`assemble_masks`."""
        self._check(protos, coeffs, boxes_xyxy)
        h, w = self.geometry.out_hw
        n = coeffs.shape[0]
        masks = np.empty((n, h, w), dtype=np.bool_)  # the kernel writes every pixel
        areas = np.empty(n, dtype=np.int64)
        empty = _masks.assemble(protos, coeffs, boxes_xyxy, *self._tables, masks.view(np.uint8), areas,
                                _threads(self.threads))
        return masks, areas, empty

    def rle(self, protos: np.ndarray, coeffs: np.ndarray, boxes_xyxy: np.ndarray) -> tuple[list[dict], np.ndarray]:
        """(COCO RLE dicts, areas (n,) int64); arguments as in :func:`encode_masks_rle`."""
        self._check(protos, coeffs, boxes_xyxy)
        h, w = self.geometry.out_hw
        areas = np.empty(coeffs.shape[0], dtype=np.int64)
        counts = _masks.encode_rle(protos, coeffs, boxes_xyxy, *self._tables, areas, _threads(self.threads))
        return [{"size": [int(h), int(w)], "counts": c} for c in counts], areas


def _prepared(protos, coeffs, boxes_xyxy, geometry, threads) -> tuple[MaskAssembler, np.ndarray, np.ndarray, np.ndarray]:
    """Any array-likes as C-contiguous float32, checked, with the assembler for their geometry."""
    if not isinstance(geometry, MaskGeometry):
        raise InputError(f"geometry must be a MaskGeometry, got {type(geometry).__name__}")
    p = np.ascontiguousarray(protos, dtype=np.float32)
    if p.ndim != 3:
        raise InputError(f"protos must have shape (nm, mh, mw), got {np.shape(protos)}")
    assembler = MaskAssembler(geometry, p.shape, threads)
    nm = p.shape[0]
    c = np.ascontiguousarray(coeffs, dtype=np.float32)
    if c.ndim != 2 or c.shape[1] != nm:
        raise InputError(f"coeffs must have shape (n, {nm}), got {np.shape(coeffs)}")
    b = np.ascontiguousarray(boxes_xyxy, dtype=np.float32)
    if b.shape != (c.shape[0], 4):
        raise InputError(f"boxes_xyxy must have shape ({c.shape[0]}, 4), got {np.shape(boxes_xyxy)}")
    return assembler, p, c, b


def assemble_masks(
    protos: np.ndarray,
    coeffs: np.ndarray,
    boxes_xyxy: np.ndarray,
    geometry: MaskGeometry,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Binary instance masks cropped to their boxes.

    Parameters
    ----------
    protos : (nm, mh, mw) float32 array
        Mask prototypes of one image.
    coeffs : (n, nm) float32 array
        Mask coefficients of the kept detections.
    boxes_xyxy : (n, 4) float32 array
        Boxes in output-pixel coordinates (letterbox input pixels for the letterbox geometry,
        original-image pixels for the native one). Pixel (r, c) is kept iff x1 <= c < x2 and
        y1 <= r < y2; boxes need not be clipped.
    geometry : MaskGeometry
        From :func:`letterbox_mask_geometry` or :func:`native_mask_geometry`.
    threads : int, optional
        Most threads to spread the detections over (default :data:`DEFAULT_THREADS`). The
        result does not depend on it.

    Returns
    -------
    masks : (n, H, W) bool array, (H, W) = geometry.out_hw
    areas : (n,) int64 array
        Pixels set in each mask; Ultralytics drops detections whose area is 0.
    """
    assembler, p, c, b = _prepared(protos, coeffs, boxes_xyxy, geometry, threads)
    masks, areas, _ = assembler.masks(p, c, b)
    return masks, areas


def encode_masks_rle(
    protos: np.ndarray,
    coeffs: np.ndarray,
    boxes_xyxy: np.ndarray,
    geometry: MaskGeometry,
    threads: int | None = None,
) -> tuple[list[dict], np.ndarray]:
    """COCO compressed RLE of the masks :func:`assemble_masks` would return, without building them.

    Same parameters as :func:`assemble_masks`. Returns a list of ``n`` dicts
    ``{"size": [H, W], "counts": bytes}`` identical to
    ``pycocotools.mask.encode(np.asfortranarray(mask.astype(np.uint8)))`` and the (n,) int64 areas.
    """
    assembler, p, c, b = _prepared(protos, coeffs, boxes_xyxy, geometry, threads)
    return assembler.rle(p, c, b)
