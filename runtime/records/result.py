"""The detections of one image: parallel numpy arrays, indexable like a sequence."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from runtime.records.frame import FrameInfo
from runtime.records.crop import CenterCrop
from runtime.records.letterbox import Letterbox


@dataclass(frozen=True)
class Result:
    """Detections of one image, in original-image pixels.

    xyxy (n, 4) float32; scores (n,) float32; class_ids (n,) int32; masks (n, H, W) bool or None,
    at letterbox resolution (``mask_form == "letterbox"``, Ultralytics' predict default) or at the
    original image resolution (``mask_form == "native"``, Ultralytics' ``retina_masks``);
    masks_rle: the native-form masks as COCO compressed RLE dicts, when asked for instead of
    bitmaps; keypoints (n, K, 2|3) float32 or None. Segment and pose results carry these arrays even
    when there are no detections ((0, H, W) masks, (0, K, 3) keypoints); None means the model has
    none. Oriented-box (obb) models add ``xywhr`` (n, 5) float32 rotated boxes (centre, width, height, angle
    in radians, as Ultralytics' ``Results.obb.xywhr``) and ``corners`` (n, 4, 2) float32 their corners (its
    ``xyxyxyxy``); ``xyxy`` is then their axis-aligned hull (not clipped). ``track_ids`` (n,) int64: each
    detection's track id, on Results of ``Predictor.track`` (None elsewhere). ``names`` are all class names of the
    model. ``speed_ms`` holds this image's share of each stage. ``frame`` says where the image came from (source, frame index, timestamp), when known.
    ``probs`` (nc,) float32: a classifier's softmax over all classes (None for other models, whose
    Results it leaves unchanged); a classifier's Result has no boxes, and ``top1`` / ``top5`` / ``class_names``
    read its best classes. A Result is built whole and never changed; indexing and tracking make new ones.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    names: tuple[str, ...]
    letterbox: Letterbox | CenterCrop  # how the image was placed in the input (a classifier's: its centre crop)
    masks: np.ndarray | None = None
    mask_form: str | None = None
    keypoints: np.ndarray | None = None
    masks_rle: list[dict] | None = None
    path: str | None = None
    speed_ms: dict[str, float] = field(default_factory=dict)
    frame: FrameInfo | None = None
    track_ids: np.ndarray | None = None
    probs: np.ndarray | None = None
    xywhr: np.ndarray | None = None
    corners: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        checks: list[tuple[str, Any, tuple]] = [
            ("xyxy", self.xyxy, (n, 4)),
            ("scores", self.scores, (n,)),
            ("class_ids", self.class_ids, (n,)),
        ]
        if self.masks is not None:
            checks.append(("masks", self.masks, (n,) + self.masks.shape[1:]))
            if self.masks.ndim != 3:
                raise ValueError(f"masks must be (n, H, W), got shape {self.masks.shape}")
        if self.masks_rle is not None and len(self.masks_rle) != n:
            raise ValueError(f"masks_rle must hold {n} entries, got {len(self.masks_rle)}")
        if self.keypoints is not None:
            checks.append(("keypoints", self.keypoints, (n,) + self.keypoints.shape[1:]))
        if self.track_ids is not None:
            checks.append(("track_ids", self.track_ids, (n,)))
        if self.probs is not None:
            checks.append(("probs", self.probs, (len(self.names),)))
        if self.xywhr is not None:
            checks.append(("xywhr", self.xywhr, (n, 5)))
        if self.corners is not None:
            checks.append(("corners", self.corners, (n, 4, 2)))
        for name, arr, expected in checks:
            if arr.shape != expected:
                raise ValueError(f"{name} must have shape {expected}, got {arr.shape}")

    @classmethod
    def empty(cls, names: tuple[str, ...], letterbox: Letterbox, path: str | None = None) -> "Result":
        """The canonical result with no detections."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), names,
                   letterbox, path=path)

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: int | slice | np.ndarray) -> "Result":
        """Select detections by int, slice, integer array or boolean array; returns a Result."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1 if int(index) != -1 else None)
        return replace(
            self,
            xyxy=self.xyxy[index],
            scores=self.scores[index],
            class_ids=self.class_ids[index],
            masks=None if self.masks is None else self.masks[index],
            keypoints=None if self.keypoints is None else self.keypoints[index],
            masks_rle=None if self.masks_rle is None else _select(self.masks_rle, index),
            track_ids=None if self.track_ids is None else self.track_ids[index],
            xywhr=None if self.xywhr is None else self.xywhr[index],
            corners=None if self.corners is None else self.corners[index],
        )

    @property
    def source(self) -> str | None:
        """The file, camera or URL this image came from (``image #k`` for an array)."""
        return None if self.frame is None else self.frame.source

    @property
    def frame_index(self) -> int | None:
        """Index of the frame in its video or stream (0 for a still image)."""
        return None if self.frame is None else self.frame.index

    @property
    def timestamp_ms(self) -> float | None:
        """The frame's time: the container's (videos) or the capture clock's, ms since the epoch (streams)."""
        return None if self.frame is None else self.frame.timestamp_ms

    @property
    def orig_hw(self) -> tuple[int, int]:
        return self.letterbox.src_hw

    @property
    def class_names(self) -> list[str]:
        """Class name of each detection; for a classifier, of its top-5 classes, best first."""
        return [self.names[i] for i in (self.class_ids if self.probs is None else self.top5)]

    @property
    def top5(self) -> list[int]:
        """A classifier's five (or nc) most probable class ids, best first (ties: lower id first); [] otherwise."""
        return [] if self.probs is None else np.argsort(-self.probs, kind="stable")[:5].tolist()

    @property
    def top1(self) -> int | None:
        """A classifier's most probable class id; None for other models."""
        return None if self.probs is None else int(np.argmax(self.probs))

    @property
    def top5conf(self) -> np.ndarray | None:
        """The probabilities of :attr:`top5`."""
        return None if self.probs is None else self.probs[self.top5]

    @property
    def xywh(self) -> np.ndarray:
        """(n, 4) float32 boxes as top-left x, y, width, height (COCO's bbox format)."""
        out = self.xyxy.copy()
        out[:, 2:] -= out[:, :2]
        return out

    def counts(self) -> dict[str, int]:
        """Number of detections per class name, most frequent first."""
        ids, num = np.unique(self.class_ids, return_counts=True)
        pairs = sorted(zip(num.tolist(), ids.tolist()), key=lambda p: (-p[0], p[1]))
        return {self.names[i]: c for c, i in pairs}


def _select(items: list, index: slice | np.ndarray) -> list:
    """Index a plain list the way numpy indexes the parallel arrays."""
    if isinstance(index, slice):
        return items[index]
    index = np.asarray(index)
    if index.dtype == bool:
        return [x for x, k in zip(items, index) if k]
    return [items[int(i)] for i in index]
