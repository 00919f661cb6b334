"""Our truncated-head layout (``layout: truncated-head``): per level the raw box convolution (DFL logits,
``box_pN``), the class logits (``cls_pN``) and the task's extra channels (``mc_pN`` mask coefficients or
``kpt_pN`` raw keypoints), plus ``proto`` for segment. Decoded on the host by
:class:`runtime.kernels.decode.TruncatedDecoder`; keypoints as Ultralytics' ``Pose.kpts_decode``."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from runtime.kernels.decode import Candidates, TruncatedDecoder
from runtime.records.spec import TRUNCATED_LAYOUT, ModelSpec

from runtime.heads.base import HeadSettings
from runtime.heads.nms_head import NmsHead


class DflHead(NmsHead):
    """The one-to-many head of a truncated-layout file (DFL boxes, or YOLO26's DFL-free ``reg_max`` 1)."""

    @classmethod
    def accepts(cls, spec: ModelSpec) -> bool:
        return spec.layout == TRUNCATED_LAYOUT and spec.branch == "one2many"

    def __init__(self, spec: ModelSpec, settings: HeadSettings) -> None:
        super().__init__(spec, settings)
        self._decoders: dict[tuple, TruncatedDecoder] = {}
        self._box_names = tuple(lv.box for lv in spec.levels)
        self._cls_names = tuple(lv.cls for lv in spec.levels)
        self._extra_names = tuple(lv.extra for lv in spec.levels)
        self._strides = np.asarray(spec.strides, np.float32)

    def _decoder(self, outputs: Mapping[str, np.ndarray]) -> TruncatedDecoder:
        """The decoder for these outputs' level shapes, built on first use. Keyed by the first class
        map's shape: every level's size follows from the input size. (Two threads may both build the
        first one; either is kept, both are equal.)"""
        key = outputs[self._cls_names[0]].shape[1:]
        decoder = self._decoders.get(key)
        if decoder is None:
            cls_shapes = [outputs[n].shape[1:] for n in self._cls_names]
            anchors = sum(int(h) * int(w) for _, h, w in cls_shapes)
            decoder = TruncatedDecoder([outputs[n].shape[1:] for n in self._box_names], cls_shapes, self.spec.strides,
                                       self.settings.conf, dfl_bins=self.spec.dfl_bins, **self.candidate_rule(anchors))
            self._decoders[key] = decoder
        return decoder

    def candidate_rule(self, anchors: int) -> dict:
        """The decoder's candidate options for a model of ``anchors`` anchors: Ultralytics' NMS candidates
        (``multi_label``, ``classes``, the cap)."""
        s = self.settings
        return {"multi_label": s.multi_label, "classes": s.classes, "max_candidates": s.max_candidates}

    def candidates(self, outputs: Mapping[str, np.ndarray], row: int) -> Candidates:
        return self._decoder(outputs).decode_row([outputs[n] for n in self._box_names],
                                                 [outputs[n] for n in self._cls_names], row)

    def extra_maps(self, outputs: Mapping[str, np.ndarray], row: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        maps = tuple(outputs[n][row].reshape(outputs[n].shape[1], -1) for n in self._extra_names)
        return maps, self._decoder(outputs).level_ends

    def decode_keypoints(self, raw: np.ndarray, anchor_ids: np.ndarray,
                         outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """``x = (2 * raw_x + cell_x) * stride`` (``cell_x`` the cell's left edge, in cells), likewise y; for
        YOLO26's Pose26 (``kpt_rule`` "anchor") ``x = (raw_x + cell_x + 0.5) * stride``. Visibility through a
        sigmoid."""
        k, d = self.spec.kpt_shape
        kpts = raw.reshape(len(raw), k, d).astype(np.float32, copy=True)
        level_ends = self._decoder(outputs).level_ends
        level = np.searchsorted(level_ends, anchor_ids, side="right")
        local = anchor_ids - np.concatenate(([0], level_ends[:-1]))[level]
        widths = np.array([outputs[name].shape[3] for name in self._cls_names])[level]
        cell_x = (local % widths).astype(np.float32)
        cell_y = (local // widths).astype(np.float32)
        stride = self._strides[level][:, None]
        if self.spec.keypoint_rule == "anchor":
            kpts[:, :, 0] = (kpts[:, :, 0] + (cell_x + np.float32(0.5))[:, None]) * stride
            kpts[:, :, 1] = (kpts[:, :, 1] + (cell_y + np.float32(0.5))[:, None]) * stride
        else:
            kpts[:, :, 0] = (kpts[:, :, 0] * 2 + cell_x[:, None]) * stride
            kpts[:, :, 1] = (kpts[:, :, 1] * 2 + cell_y[:, None]) * stride
        if d == 3:
            kpts[:, :, 2] = 1 / (1 + np.exp(-kpts[:, :, 2]))
        return kpts
