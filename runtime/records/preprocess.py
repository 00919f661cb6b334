"""How an image becomes a model's input, chosen once per model from its spec: Ultralytics' letterbox
(detect, segment, pose) or its classify transforms (short-side resize and centre crop).

A :class:`Preprocess` plans each image's placement from its shape (cached: a stream has few shapes) and
writes the image into a row of the input tensor; the plan travels with the image into its Result. The
Model calls these two and never asks which task it runs.
"""

from __future__ import annotations

import functools
from typing import Protocol, Union

import numpy as np

from runtime.records.crop import CenterCrop, center_crop_into, plan_center_crop
from runtime.records.letterbox import Letterbox, letterbox_into, plan_letterbox
from runtime.records.spec import ModelSpec

Placement = Union[Letterbox, CenterCrop]


class Preprocess(Protocol):
    """Plans an image's placement in the input and writes it there."""

    name: str

    def plan(self, src_hw: tuple[int, int], target_hw: tuple[int, int], auto: bool, stride: int) -> Placement:
        """The placement of an image of ``src_hw`` into an input of ``target_hw`` (``auto``: minimal padding
        to a multiple of ``stride``, where the method pads at all)."""

    def into(self, image_bgr: np.ndarray, plan: Placement, out_chw: np.ndarray) -> None:
        """Write ``image_bgr`` placed by ``plan`` into ``out_chw`` (3, H, W), uint8 or float32 0..1."""


class LetterboxPreprocess:
    """Ultralytics' predict letterbox (``LetterBox``: resize to fit, pad with 114)."""

    name = "letterbox"

    def plan(self, src_hw: tuple[int, int], target_hw: tuple[int, int], auto: bool, stride: int) -> Letterbox:
        return _letterbox_plan(tuple(src_hw), tuple(target_hw), auto, stride)

    def into(self, image_bgr: np.ndarray, plan: Letterbox, out_chw: np.ndarray) -> None:
        letterbox_into(image_bgr, plan, out_chw)


class CenterCropPreprocess:
    """Ultralytics' classify transforms (:mod:`runtime.records.crop`); ``auto`` does not apply."""

    name = "center_crop"

    def plan(self, src_hw: tuple[int, int], target_hw: tuple[int, int], auto: bool, stride: int) -> CenterCrop:
        return _center_crop_plan(tuple(src_hw), tuple(target_hw))

    def into(self, image_bgr: np.ndarray, plan: CenterCrop, out_chw: np.ndarray) -> None:
        center_crop_into(image_bgr, plan, out_chw)


PREPROCESSES: dict[str, Preprocess] = {p.name: p for p in (LetterboxPreprocess(), CenterCropPreprocess())}


def preprocess_for(spec: ModelSpec) -> Preprocess:
    """The preprocessing ``spec``'s model was trained with (:attr:`ModelSpec.preprocess`)."""
    return PREPROCESSES[spec.preprocess]


@functools.lru_cache(maxsize=256)
def _letterbox_plan(src_hw: tuple[int, int], target_hw: tuple[int, int], auto: bool, stride: int) -> Letterbox:
    return plan_letterbox(src_hw, target_hw, auto=auto, stride=stride)


@functools.lru_cache(maxsize=256)
def _center_crop_plan(src_hw: tuple[int, int], target_hw: tuple[int, int]) -> CenterCrop:
    return plan_center_crop(src_hw, target_hw)
