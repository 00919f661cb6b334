"""Letterbox preprocessing exactly as Ultralytics' predict does it, and the way back to image pixels."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from runtime.kernels._preprocess import boxes_to_source, pack_bgr_to_chw

PAD_VALUE = 114
_PAD_FLOAT = np.float32(PAD_VALUE) / np.float32(255)


@dataclass(frozen=True)
class Letterbox:
    """How one image was placed into the network input.

    ``src_hw`` original size, ``dst_hw`` network input size, ``resized_hw`` size of the resized
    image inside it, ``pad_top`` / ``pad_left`` its offset. ``gain_xy`` / ``offset_xy`` are the
    inverse mapping Ultralytics' ``scale_boxes`` derives from ``dst_hw`` and ``src_hw`` alone;
    :meth:`boxes_to_source` is the only way back to image pixels.
    """

    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    pad_top: int
    pad_left: int
    gain_xy: tuple[float, float]
    offset_xy: tuple[int, int]

    def boxes_to_source(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Map (n, 4) float32 xyxy boxes from input pixels to source pixels, clipped to the image."""
        boxes = np.ascontiguousarray(boxes_xyxy, dtype=np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must have shape (n, 4), got {boxes.shape}")
        out = np.empty_like(boxes)
        (gx, gy), (ox, oy), (h, w) = self.gain_xy, self.offset_xy, self.src_hw
        boxes_to_source(boxes, out, ox, oy, gx, gy, w, h)
        return out

    def points_to_source(self, points_xy: np.ndarray) -> np.ndarray:
        """Map (..., 2) float32 points from input pixels to source pixels, clipped to the image."""
        out = np.empty_like(points_xy, dtype=np.float32)
        h, w = self.src_hw
        out[..., 0] = np.clip((points_xy[..., 0] - np.float32(self.offset_xy[0])) / np.float32(self.gain_xy[0]), 0, w)
        out[..., 1] = np.clip((points_xy[..., 1] - np.float32(self.offset_xy[1])) / np.float32(self.gain_xy[1]), 0, h)
        return out


def plan_letterbox(src_hw: tuple[int, int], target_hw: tuple[int, int], *, auto: bool = False,
                   stride: int = 32) -> Letterbox:
    """Plan the resize and padding of an image of ``src_hw`` into ``target_hw``.

    ``auto`` is Ultralytics' minimal-padding mode: pad only up to a multiple of ``stride``.
    Rounding is Python's (half to even), as in Ultralytics' LetterBox.
    """
    h, w = src_hw
    th, tw = target_hw
    r = min(th / h, tw / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = tw - new_w, th - new_h
    if auto:
        dw, dh = dw % stride, dh % stride
    top, bottom = round(dh / 2 - 0.1), round(dh / 2 + 0.1)
    left, right = round(dw / 2 - 0.1), round(dw / 2 + 0.1)
    dst_hw = (new_h + top + bottom, new_w + left + right)

    # Inverse mapping as ultralytics.utils.ops.scale_boxes recomputes it from the two shapes.
    gain = min(dst_hw[0] / h, dst_hw[1] / w)
    inv_h, inv_w = max(round(h * gain), 1), max(round(w * gain), 1)
    gain_xy = (inv_w / w, inv_h / h)
    offset_xy = (round((dst_hw[1] - inv_w) / 2 - 0.1), round((dst_hw[0] - inv_h) / 2 - 0.1))
    return Letterbox((h, w), dst_hw, (new_h, new_w), top, left, gain_xy, offset_xy)


def letterbox_into(image_bgr: np.ndarray, plan: Letterbox, out_chw: np.ndarray) -> None:
    """Write the letterboxed RGB image into ``out_chw`` (3, H, W): uint8 0..255, or float32 0..1.

    ``image_bgr`` is (h, w, 3) uint8 as OpenCV reads it. Resizing is INTER_LINEAR; padding is 114
    (114/255 in float32). Float values are bit-identical to Ultralytics' ``uint8 -> float / 255``;
    uint8 planes are for models that do that division in their graph (our exports).
    """
    new_h, new_w = plan.resized_hw
    if image_bgr.shape[:2] != (new_h, new_w):
        image_bgr = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if (out_chw.shape != (3, *plan.dst_hw) or out_chw.dtype not in (np.float32, np.uint8)
            or not out_chw.flags.c_contiguous):
        raise ValueError(f"out_chw must be C-contiguous float32 or uint8 of shape {(3, *plan.dst_hw)}, "
                         f"got {out_chw.dtype} {out_chw.shape}")
    pad = _PAD_FLOAT if out_chw.dtype == np.float32 else np.uint8(PAD_VALUE)
    pack_bgr_to_chw(np.ascontiguousarray(image_bgr), out_chw, plan.pad_top, plan.pad_left, pad)
