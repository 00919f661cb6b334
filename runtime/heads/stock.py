"""A stock Ultralytics export (``output0`` of shape (B, 4 + nc + extra, N): boxes as centre and size in
letterbox pixels, sigmoid scores, then mask coefficients or keypoints already decoded inside the graph;
``output1`` prototypes for segment). Only the NMS and the task's part run on the host."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from runtime.kernels.decode import Candidates, decode_standard
from runtime.records.spec import STANDARD_LAYOUT, ModelSpec

from runtime.heads.nms_head import NmsHead


class StockHead(NmsHead):
    """The decoded ``output0`` of a stock one-to-many export."""

    @classmethod
    def accepts(cls, spec: ModelSpec) -> bool:
        return spec.layout == STANDARD_LAYOUT

    def candidates(self, outputs: Mapping[str, np.ndarray], row: int) -> Candidates:
        s = self.settings
        return decode_standard(outputs[self.spec.output0][row], self.spec.nc, s.conf, multi_label=s.multi_label,
                               classes=s.classes, max_candidates=s.max_candidates)

    def extra_maps(self, outputs: Mapping[str, np.ndarray], row: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        extra = np.ascontiguousarray(outputs[self.spec.output0][row][4 + self.spec.nc:], dtype=np.float32)
        return (extra,), np.array([extra.shape[1]], np.int64)

    def decode_keypoints(self, raw: np.ndarray, anchor_ids: np.ndarray,
                         outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Already in letterbox pixels (visibility already through its sigmoid)."""
        return raw.reshape((len(raw),) + tuple(self.spec.kpt_shape)).astype(np.float32, copy=True)
