"""The one-to-many head with NMS (YOLOv8, YOLO11, YOLO12, YOLOv9, YOLOv5u): candidates over ``conf``,
Ultralytics' class-aware greedy NMS, then the task's part (masks or keypoints) on the kept anchors.

Subclasses say only how their layout gives candidates, the anchors' extra channels and keypoints."""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import Mapping

import numpy as np

from runtime.kernels._anchors import take_kept
from runtime.kernels.decode import Candidates
from runtime.kernels.nms import nms_candidates
from runtime.records.letterbox import Letterbox
from runtime.records.spec import ModelSpec

from runtime.heads.base import Head, HeadOutput, HeadSettings
from runtime.heads.tasks import Kept, task_part

NO_LEVELS = np.zeros(0, np.int64)


class NmsHead(Head):
    """Decode, NMS, the task's part; stage times ``decode``, ``nms`` (the selection, top-k on a one-to-one head)
    and ``masks`` (the part's time)."""

    def __init__(self, spec: ModelSpec, settings: HeadSettings) -> None:
        super().__init__(spec, settings)
        self.part = task_part(spec, settings, self.decode_keypoints)

    @abstractmethod
    def candidates(self, outputs: Mapping[str, np.ndarray], row: int) -> Candidates:
        """Row ``row``'s candidates over ``conf``, in anchor order, boxes in letterbox pixels."""

    @abstractmethod
    def extra_maps(self, outputs: Mapping[str, np.ndarray], row: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        """Per-level (C, N_l) float32 maps of the extra channels (mask coefficients or raw keypoints)
        of row ``row``, and their cumulative anchor counts."""

    def select(self, cand: Candidates) -> np.ndarray:
        """Indices of the candidates to keep, best first: Ultralytics' NMS (one-to-one heads override this)."""
        s = self.settings
        return nms_candidates(cand.boxes_xyxy, cand.scores, cand.class_ids, s.iou, s.max_det, s.agnostic)

    def decode_keypoints(self, raw: np.ndarray, anchor_ids: np.ndarray,
                         outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """(n, nk) keypoint channels of the kept anchors -> (n, K, D) float32 in letterbox pixels."""
        raise NotImplementedError(f"{type(self).__name__} has no keypoints")

    def __call__(self, outputs: Mapping[str, np.ndarray], row: int, letterbox: Letterbox,
                 mask_threads: int | None = None) -> HeadOutput:
        t0 = time.perf_counter()
        cand = self.candidates(outputs, row)
        t1 = time.perf_counter()
        keep = self.select(cand)
        t2 = time.perf_counter()
        maps, level_ends = self.extra_maps(outputs, row) if self.part.uses_extra and len(keep) else ((), NO_LEVELS)
        boxes_in, scores, class_ids, anchor_ids, extra = take_kept(
            keep, cand.boxes_xyxy, cand.scores, cand.class_ids, cand.anchor_ids, maps, level_ends)
        kept = Kept(boxes_in, letterbox.boxes_to_source(boxes_in), scores, class_ids, anchor_ids, extra)
        fields = self.part(kept, outputs, row, letterbox, mask_threads)
        t3 = time.perf_counter()
        return HeadOutput(fields, {"decode": (t1 - t0) * 1e3, "nms": (t2 - t1) * 1e3, "masks": (t3 - t2) * 1e3})
