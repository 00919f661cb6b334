"""Classifiers (YOLOv8-cls, YOLO11-cls): one [batch, nc] output per image, raw logits in our layout (the softmax
moved to the host, so a quantized graph never sees squashed values) or softmax probabilities in a stock export.
The Result carries ``probs`` and no boxes."""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from runtime.records.crop import CenterCrop
from runtime.records.spec import TRUNCATED_LAYOUT, ModelSpec

from runtime.heads.base import Head, HeadOutput, HeadSettings

_NO_BOXES = np.zeros((0, 4), np.float32)
_NO_SCORES = np.zeros(0, np.float32)
_NO_CLASSES = np.zeros(0, np.int32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax of (nc,) float32 logits, max subtracted first as torch does (a new array; few numpy calls: right
    after inference each costs tens of microseconds)."""
    exp = np.exp(logits - logits.max())
    exp /= exp.sum()
    return exp


class ClassifyHead(Head):
    """Softmax on the host (our layout) or the probabilities as given (stock export); stage ``decode``."""

    @classmethod
    def accepts(cls, spec: ModelSpec) -> bool:
        return spec.task == "classify"

    def __init__(self, spec: ModelSpec, settings: HeadSettings) -> None:
        super().__init__(spec, settings)
        self._output = spec.output0
        self._from_logits = spec.layout == TRUNCATED_LAYOUT

    def __call__(self, outputs: Mapping[str, np.ndarray], row: int, letterbox: CenterCrop,
                 mask_threads: int | None = None) -> HeadOutput:
        t0 = time.perf_counter()
        values = outputs[self._output][row]
        probs = softmax(values.astype(np.float32, copy=False)) if self._from_logits else np.array(values, np.float32)
        fields = {"xyxy": _NO_BOXES, "scores": _NO_SCORES, "class_ids": _NO_CLASSES, "probs": probs}
        return HeadOutput(fields, {"decode": (time.perf_counter() - t0) * 1e3, "nms": 0.0, "masks": 0.0})
