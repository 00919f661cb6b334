"""Pillow's antialiased bilinear resize (``Image.resize(size, Image.BILINEAR)``), reproduced bit for bit, for a crop
of the resized image: the weights (here, in float64 as Pillow computes them) and the passes (``ext/resample.pyx``).

Pillow's filter for an output position ``i`` of a resize from ``n_in`` to ``n_out`` pixels: centre
``(i + 0.5) * scale`` (``scale = n_in / n_out``), a triangle of half-width ``max(scale, 1)`` (so a reduction
averages every pixel it covers: the antialiasing), window ``[int(centre - support + 0.5), int(centre + support +
0.5))`` clipped to the image, weights normalised to sum 1, then rounded to 22-bit fixed point. Each pass adds
``2**21``, shifts right by 22 and clamps to 0..255. The horizontal pass runs first, except where the height
shrinks, by more than twice as many pixels as the width: Pillow 13 runs the vertical pass first there
(python-pillow/Pillow#9549), and so does :func:`resize_crop_into` (:func:`pillow_vertical_first`).
"""

from __future__ import annotations

import functools

import numpy as np

from runtime.kernels._resample import resample_crop_into

PRECISION_BITS = 22

__all__ = ["PRECISION_BITS", "bilinear_weights", "pillow_vertical_first", "resize_crop_into"]


def pillow_vertical_first(src_hw: tuple[int, int], resized_hw: tuple[int, int]) -> bool:
    """Whether the installed Pillow resizes ``src_hw`` to ``resized_hw`` vertically first: from Pillow 13 on, when
    the height shrinks, by more than twice as many pixels as the width; always horizontally first before."""
    shrink_h, shrink_w = src_hw[0] - resized_hw[0], src_hw[1] - resized_hw[1]
    return shrink_h > 0 and shrink_h > 2 * shrink_w and _pillow_orders_passes()


@functools.lru_cache(maxsize=1)
def _pillow_orders_passes() -> bool:
    """Whether the installed Pillow chooses the order of its passes (13 and later; also when none is installed)."""
    try:
        from importlib.metadata import version

        return int(version("pillow").split(".")[0]) >= 13
    except Exception:  # noqa: BLE001 - no Pillow, or no readable version: follow the current Pillow
        return True


@functools.lru_cache(maxsize=512)
def bilinear_weights(n_in: int, n_out: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's bilinear weights of output positions ``start .. start + count - 1`` of a resize from ``n_in`` to
    ``n_out`` pixels: (first source pixel (count,), window length (count,), fixed-point weights (count, K)), int32,
    read-only (cached)."""
    if not (n_in >= 1 and n_out >= 1 and 0 <= start and count >= 1 and start + count <= n_out):
        raise ValueError(f"no output positions {start}..{start + count - 1} in a resize of {n_in} to {n_out} pixels")
    scale = n_in / n_out
    support = max(scale, 1.0)  # the triangle's half-width, 1 scaled by the reduction
    inverse = 1.0 / support
    centre = (np.arange(start, start + count, dtype=np.float64) + 0.5) * scale
    lo = np.maximum(np.trunc(centre - support + 0.5), 0).astype(np.int64)
    hi = np.minimum(np.trunc(centre + support + 0.5), n_in).astype(np.int64)
    length = hi - lo
    taps = np.arange(int(length.max()))
    distance = np.abs(((lo[:, None] + taps).astype(np.float64) - centre[:, None] + 0.5) * inverse)
    weights = np.where((distance < 1.0) & (taps < length[:, None]), 1.0 - distance, 0.0)
    total = np.zeros(count)
    for k in taps:  # summed in window order, as Pillow does (a pairwise sum can differ in the last bit)
        total = total + weights[:, k]
    weights = np.divide(weights, total[:, None], out=weights, where=total[:, None] != 0.0)
    fixed = np.trunc(0.5 + weights * float(1 << PRECISION_BITS)).astype(np.int32)
    out = (lo.astype(np.int32), length.astype(np.int32), np.ascontiguousarray(fixed))
    for array in out:
        array.flags.writeable = False
    return out


def resize_crop_into(image_bgr: np.ndarray, resized_hw: tuple[int, int], top: int, left: int,
                     out_chw: np.ndarray) -> None:
    """Write rows ``top ..`` and columns ``left ..`` of ``image_bgr`` (h, w, 3) uint8 resized to ``resized_hw`` by
    Pillow's bilinear filter into ``out_chw`` (3, H, W) as RGB planes: uint8, or float32 divided by 255."""
    image = np.ascontiguousarray(image_bgr, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (h, w, 3) uint8, got shape {image_bgr.shape}")
    if out_chw.ndim != 3 or out_chw.dtype not in (np.uint8, np.float32) or not out_chw.flags.c_contiguous:
        raise ValueError(f"out_chw must be C-contiguous (3, H, W) uint8 or float32, got {out_chw.dtype} "
                         f"{out_chw.shape}")
    (h, w), (rh, rw), (th, tw) = image.shape[:2], resized_hw, out_chw.shape[1:]
    if top < 0 or left < 0 or top + th > rh or left + tw > rw:
        raise ValueError(f"a {th}x{tw} crop at ({top}, {left}) does not fit the resized {rh}x{rw} image")
    xs = bilinear_weights(w, rw, left, tw)
    ys = bilinear_weights(h, rh, top, th)
    resample_crop_into(image, out_chw, *xs, *ys, pillow_vertical_first((h, w), (rh, rw)))
