"""Oriented boxes (task ``obb``: YOLOv8-obb, YOLO11-obb), as Ultralytics' ``OBBPredictor`` gives them.

Candidates over ``conf`` exactly as for detect (same class scan, ``classes`` filter and cap), each with its
rotated box; Ultralytics' rotated NMS (probabilistic IoU, the matrix rule; :mod:`runtime.kernels.obb`);
the kept boxes mapped to the original image. The Result carries ``xywhr``, ``corners`` and, as ``xyxy``,
their axis-aligned hull. Two layouts:

* :class:`ObbHead` -- our truncated layout: ``box_pN`` DFL logits, ``cls_pN`` class logits and ``ang_pN``
  angle logits per level, decoded on the host;
* :class:`StockObbHead` -- a stock export's ``output0`` (B, 4 + nc + 1, N): rotated centre and size in
  input pixels, sigmoid scores and the angle in radians, decoded in the graph.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from typing import Mapping

import numpy as np

from runtime.kernels.decode import Candidates, TruncatedDecoder, decode_standard
from runtime.kernels.obb import rotated_boxes, rotated_corners, rotated_nms, rotated_to_source
from runtime.records.letterbox import Letterbox
from runtime.records.spec import STANDARD_LAYOUT, TRUNCATED_LAYOUT, ModelSpec

from runtime.heads.base import Head, HeadOutput, HeadSettings


class RotatedHead(Head):
    """Candidates with rotated boxes, rotated NMS, boxes to the original image; stage times ``decode``,
    ``nms`` and ``masks`` (the mapping to the image, the task's part)."""

    @abstractmethod
    def rotated_candidates(self, outputs: Mapping[str, np.ndarray], row: int) -> tuple[np.ndarray, Candidates]:
        """Row ``row``'s candidates over ``conf`` and their (n, 5) float32 rotated boxes in input pixels."""

    def __call__(self, outputs: Mapping[str, np.ndarray], row: int, letterbox: Letterbox,
                 mask_threads: int | None = None) -> HeadOutput:
        s = self.settings
        t0 = time.perf_counter()
        xywhr, cand = self.rotated_candidates(outputs, row)
        t1 = time.perf_counter()
        keep = rotated_nms(xywhr, cand.scores, cand.class_ids, s.iou, s.max_det, s.agnostic)
        t2 = time.perf_counter()
        boxes = rotated_to_source(xywhr[keep], letterbox.gain_xy, letterbox.offset_xy)
        corners = rotated_corners(boxes)
        hull = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
        fields = {"xyxy": hull, "scores": cand.scores[keep], "class_ids": cand.class_ids[keep],
                  "xywhr": boxes, "corners": corners}
        t3 = time.perf_counter()
        return HeadOutput(fields, {"decode": (t1 - t0) * 1e3, "nms": (t2 - t1) * 1e3, "masks": (t3 - t2) * 1e3})


class ObbHead(RotatedHead):
    """The oriented-box head of a truncated-layout file (``box_pN``, ``cls_pN``, ``ang_pN``)."""

    @classmethod
    def accepts(cls, spec: ModelSpec) -> bool:
        return spec.layout == TRUNCATED_LAYOUT and spec.task == "obb"

    def __init__(self, spec: ModelSpec, settings: HeadSettings) -> None:
        super().__init__(spec, settings)
        self._decoders: dict[tuple, tuple[TruncatedDecoder, np.ndarray]] = {}
        self._box_names = tuple(lv.box for lv in spec.levels)
        self._cls_names = tuple(lv.cls for lv in spec.levels)
        self._angle_names = tuple(lv.extra for lv in spec.levels)
        self._strides = np.asarray(spec.strides, np.float32)
        bins = spec.dfl_bins if spec.dfl_bins is not None else range(spec.reg_max)
        self._bins = np.asarray(bins, np.float32)

    def _decoder(self, outputs: Mapping[str, np.ndarray]) -> tuple[TruncatedDecoder, np.ndarray]:
        """The candidate decoder and the grid widths for these outputs' level shapes, built on first use."""
        key = outputs[self._cls_names[0]].shape[1:]
        found = self._decoders.get(key)
        if found is None:
            s = self.settings
            decoder = TruncatedDecoder([outputs[n].shape[1:] for n in self._box_names],
                                       [outputs[n].shape[1:] for n in self._cls_names], self.spec.strides, s.conf,
                                       multi_label=s.multi_label, classes=s.classes, max_candidates=s.max_candidates,
                                       dfl_bins=self.spec.dfl_bins)
            widths = np.array([outputs[n].shape[3] for n in self._cls_names], np.int64)
            found = self._decoders[key] = (decoder, widths)
        return found

    def rotated_candidates(self, outputs: Mapping[str, np.ndarray], row: int) -> tuple[np.ndarray, Candidates]:
        decoder, widths = self._decoder(outputs)
        cand = decoder.decode_row([outputs[n] for n in self._box_names], [outputs[n] for n in self._cls_names], row)
        box_maps = tuple(np.ascontiguousarray(outputs[n][row].reshape(outputs[n].shape[1], -1), np.float32)
                         for n in self._box_names)
        angle_maps = tuple(np.ascontiguousarray(outputs[n][row].reshape(-1), np.float32) for n in self._angle_names)
        xywhr = rotated_boxes(box_maps, angle_maps, decoder.level_ends, widths, self._strides, self._bins,
                              cand.anchor_ids)
        return xywhr, cand


class StockObbHead(RotatedHead):
    """The decoded ``output0`` of a stock oriented-box export."""

    @classmethod
    def accepts(cls, spec: ModelSpec) -> bool:
        return spec.layout == STANDARD_LAYOUT and spec.task == "obb"

    def rotated_candidates(self, outputs: Mapping[str, np.ndarray], row: int) -> tuple[np.ndarray, Candidates]:
        s = self.settings
        out0 = outputs[self.spec.output0][row]
        cand = decode_standard(out0, self.spec.nc, s.conf, multi_label=s.multi_label, classes=s.classes,
                               max_candidates=s.max_candidates)
        columns = out0[:, cand.anchor_ids]
        xywhr = np.ascontiguousarray(np.concatenate([columns[:4], columns[-1:]]).T, np.float32)
        return xywhr, cand
