"""What a tracker takes and gives back for one frame: detections in, confirmed tracks out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


def _column(values, dtype, n: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=dtype).reshape(-1)
    if len(array) != n:
        raise InputError(f"Detections: {name} has {len(array)} values for {n} boxes")
    return array


@dataclass(frozen=True)
class Detections:
    """One frame's detections in original-image pixels.

    ``xyxy`` (n, 4) float32 corners, ``scores`` (n,) float32, ``class_ids`` (n,) int32. Arrays are converted to these
    dtypes on construction; mismatched lengths raise :class:`~runtime.errors.InputError`.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32)
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise InputError(f"Detections: xyxy must be (n, 4), got shape {xyxy.shape}")
        n = len(xyxy)
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "scores", _column(self.scores, np.float32, n, "scores"))
        object.__setattr__(self, "class_ids", _column(self.class_ids, np.int32, n, "class_ids"))

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))


@dataclass(frozen=True)
class Tracks:
    """The confirmed tracks of one frame, in the tracker's order (the order Ultralytics returns them in).

    ``xyxy`` (m, 4) float32 are the tracker's boxes (its Kalman estimate after this frame's update, as Ultralytics'
    track mode reports them, not the raw detections); ``track_ids`` (m,) int64, ``scores`` (m,) float32 and
    ``class_ids`` (m,) int32 are those of the detection last matched; ``det_index`` (m,) int64 is the index of that
    detection in this frame's :class:`Detections`, so masks or keypoints can be carried along.
    """

    xyxy: np.ndarray
    track_ids: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    det_index: np.ndarray

    def __len__(self) -> int:
        return len(self.track_ids)

    @classmethod
    def empty(cls) -> Tracks:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32),
                   np.zeros(0, np.int32), np.zeros(0, np.int64))
