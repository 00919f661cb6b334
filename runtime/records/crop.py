"""Ultralytics' classify preprocessing, exactly: resize the shorter side to the input size with Pillow's
antialiased bilinear filter, crop the centre, RGB, ``/ 255``, no mean or std.

This is ``ultralytics.data.augment.classify_transforms`` as ``ClassificationPredictor`` runs it
(torchvision ``Resize`` + ``CenterCrop`` on a PIL image of the BGR array; the mean is 0 and the std 1).
A square input size resizes the shorter side (the longer one to ``int(size * long / short)``) and crops
the centre (offsets rounded half to even); a rectangular one resizes to exactly that size (no crop),
as torchvision does. The resampling is Pillow's filter reproduced bit for bit (:mod:`runtime.kernels.resample`:
support scaled with the reduction, 22-bit fixed-point weights, Pillow's order of the two passes), computed only
for the crop; neither OpenCV's ``INTER_LINEAR`` nor ``INTER_AREA`` gives the predictor's values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.kernels.resample import resize_crop_into


@dataclass(frozen=True)
class CenterCrop:
    """How one image became a classifier's input: ``src_hw`` original size, ``resized_hw`` size after the
    resize, ``dst_hw`` network input size, ``crop_top`` / ``crop_left`` the crop's offset in the resized image.
    Classifiers give no boxes, so there is no way back to image pixels."""

    src_hw: tuple[int, int]
    dst_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    crop_top: int
    crop_left: int


def plan_center_crop(src_hw: tuple[int, int], target_hw: tuple[int, int]) -> CenterCrop:
    """Plan the resize and centre crop of an image of ``src_hw`` into ``target_hw`` (torchvision's rules)."""
    h, w = int(src_hw[0]), int(src_hw[1])
    th, tw = int(target_hw[0]), int(target_hw[1])
    if h < 1 or w < 1 or th < 1 or tw < 1:
        raise ValueError(f"sizes must be positive, got source {src_hw} and target {target_hw}")
    if th != tw:
        return CenterCrop((h, w), (th, tw), (th, tw), 0, 0)
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = th, int(th * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    top, left = int(round((new_h - th) / 2.0)), int(round((new_w - tw) / 2.0))
    return CenterCrop((h, w), (th, tw), (new_h, new_w), top, left)


def center_crop_into(image_bgr: np.ndarray, plan: CenterCrop, out_chw: np.ndarray) -> None:
    """Write the resized, centre-cropped RGB image into ``out_chw`` (3, H, W): uint8 0..255 or float32 0..1
    (bit-identical to ``uint8 -> float / 255``). ``image_bgr`` is (h, w, 3) uint8 as OpenCV reads it."""
    if (out_chw.shape != (3, *plan.dst_hw) or out_chw.dtype not in (np.float32, np.uint8)
            or not out_chw.flags.c_contiguous):
        raise ValueError(f"out_chw must be C-contiguous float32 or uint8 of shape {(3, *plan.dst_hw)}, "
                         f"got {out_chw.dtype} {out_chw.shape}")
    if image_bgr.shape[:2] != plan.src_hw or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"image must be ({plan.src_hw[0]}, {plan.src_hw[1]}, 3), got {image_bgr.shape}")
    resize_crop_into(image_bgr, plan.resized_hw, plan.crop_top, plan.crop_left, out_chw)
