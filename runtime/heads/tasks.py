"""What each task adds to the boxes an NMS head keeps: nothing (detect), instance masks (segment) or
keypoints (pose). A part is chosen once per model by :func:`task_part`, so the per-image path never asks
which task it runs."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from runtime.kernels.masks import MaskAssembler, letterbox_mask_geometry, native_mask_geometry
from runtime.records.letterbox import Letterbox
from runtime.records.spec import ModelSpec

from runtime.heads.base import HeadSettings


@dataclass(frozen=True)
class Kept:
    """The detections NMS kept for one image, in NMS order: boxes in letterbox (``boxes_in``) and
    original-image (``boxes_src``) pixels, scores, class ids, global anchor ids and the anchors'
    extra channels (mask coefficients or raw keypoints; (n, 0) for detect)."""

    boxes_in: np.ndarray
    boxes_src: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    anchor_ids: np.ndarray
    extra: np.ndarray


# (raw keypoint channels (n, nk), global anchor ids (n,), the batch's outputs) -> (n, K, D) in letterbox pixels
KeypointDecoder = Callable[[np.ndarray, np.ndarray, Mapping[str, np.ndarray]], np.ndarray]


class BoxPart:
    """Detect: the boxes alone."""

    uses_extra = False

    def __call__(self, kept: Kept, outputs: Mapping[str, np.ndarray], row: int, letterbox: Letterbox,
                 mask_threads: int | None) -> dict[str, Any]:
        return {"xyxy": kept.boxes_src, "scores": kept.scores, "class_ids": kept.class_ids}


@functools.lru_cache(maxsize=64)
def _mask_assembler(form: str, proto_shape: tuple[int, int, int], out_hw: tuple[int, int],
                    threads: int | None) -> MaskAssembler:
    """The assembler of masks at the letterboxed input size (form "letterbox") or at the original
    image size ("native"), built once per shape pair and thread setting."""
    geometry = (native_mask_geometry if form == "native" else letterbox_mask_geometry)(proto_shape[1:], out_hw)
    return MaskAssembler(geometry, proto_shape, threads)


class MaskPart(BoxPart):
    """Segment: masks from the kept anchors' coefficients and the prototypes, as Ultralytics'
    ``process_mask`` (letterbox size, its predict default) or ``process_mask_native`` (``retina_masks``),
    or as COCO RLE. Detections whose mask is empty are dropped, as Ultralytics does."""

    uses_extra = True

    def __init__(self, proto: str, settings: HeadSettings) -> None:
        self.proto = proto
        self.native = settings.retina_masks or settings.rle_masks
        self.rle = settings.rle_masks

    def __call__(self, kept: Kept, outputs: Mapping[str, np.ndarray], row: int, letterbox: Letterbox,
                 mask_threads: int | None) -> dict[str, Any]:
        fields = super().__call__(kept, outputs, row, letterbox, mask_threads)
        form = "native" if self.native else "letterbox"
        if not len(kept.scores):
            out_hw = tuple(letterbox.src_hw if self.native else letterbox.dst_hw)
            empty = {"masks_rle": []} if self.rle else {"masks": np.zeros((0,) + out_hw, bool)}
            return {**fields, **empty, "mask_form": form}
        protos = outputs[self.proto][row]
        out_hw, crop = (letterbox.src_hw, kept.boxes_src) if self.native else (letterbox.dst_hw, kept.boxes_in)
        assembler = _mask_assembler(form, protos.shape, tuple(out_hw), mask_threads)
        if self.rle:
            rle, areas = assembler.rle(protos, kept.extra, crop)
            masks, any_empty = None, not areas.all()
        else:
            masks, areas, any_empty = assembler.masks(protos, kept.extra, crop)
            rle = None
        if any_empty:
            nonempty = areas > 0
            fields = {k: v[nonempty] for k, v in fields.items()}
            masks = None if masks is None else masks[nonempty]
            rle = None if rle is None else [r for r, k in zip(rle, nonempty) if k]
        return {**fields, "masks": masks, "masks_rle": rle, "mask_form": form}


class KeypointPart(BoxPart):
    """Pose: the kept anchors' keypoints, decoded by the head's own rule, in original-image pixels."""

    uses_extra = True

    def __init__(self, kpt_shape: tuple[int, int], decode: KeypointDecoder) -> None:
        self.kpt_shape = tuple(kpt_shape)
        self.decode = decode

    def __call__(self, kept: Kept, outputs: Mapping[str, np.ndarray], row: int, letterbox: Letterbox,
                 mask_threads: int | None) -> dict[str, Any]:
        fields = super().__call__(kept, outputs, row, letterbox, mask_threads)
        if not len(kept.scores):
            return {**fields, "keypoints": np.zeros((0,) + self.kpt_shape, np.float32)}
        keypoints = self.decode(kept.extra, kept.anchor_ids, outputs)
        keypoints[..., :2] = letterbox.points_to_source(keypoints[..., :2])
        return {**fields, "keypoints": keypoints}


def task_part(spec: ModelSpec, settings: HeadSettings, decode_keypoints: KeypointDecoder) -> BoxPart:
    """The part of ``spec``'s task; ``decode_keypoints`` is the head's keypoint rule (pose only)."""
    if spec.task == "segment":
        return MaskPart(spec.proto, settings)
    if spec.task == "pose":
        return KeypointPart(spec.kpt_shape, decode_keypoints)
    return BoxPart()
