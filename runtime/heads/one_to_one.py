"""One-to-one heads (YOLO26, YOLOv10 with ``nms=False``): every anchor predicts at most one object per class, so
the detections are the best scores, with no NMS.

* :class:`OneToOneHead` -- a truncated file of the one-to-one branch (``branch: one2one``): raw box convs (DFL-free
  distances for YOLO26, DFL logits for YOLOv10), class logits and the task's channels, decoded on the host;
* :class:`StockEnd2EndHead` -- a stock end-to-end export, ``output0`` (B, max_det, 6 + extra) already selected in
  the graph: only Ultralytics' ``conf`` / ``classes`` / ``max_det`` filter runs on the host.

Ultralytics' one-to-one selection (``Detect.postprocess``): the top ``k = min(max(max_det, 300), anchors)`` anchors
by their best class score, then the top k of those anchors' (anchor, class) scores, so one anchor may give
several classes (``agnostic``: one class per anchor, its best); then ``score > conf``, the ``classes`` filter and
the first ``max_det``, best first. Any (anchor, class) pair outside the k best anchors scores no more than the best
class of each of those k anchors, so the two stages select exactly the k best pairs overall; pairs under ``conf``
never survive the filter. The host therefore takes the pairs over ``conf`` in logit space, keeps the k best, takes
the sigmoid of those winners only, sorts them and filters (:mod:`runtime.kernels.topk`): the same detections, at a
cost that does not grow with the number of pairs over ``conf``. Ties at the k-th score may resolve differently from torch's top-k.
``iou`` and ``multi_label`` do not apply (as in Ultralytics); a stock end-to-end file's ``agnostic`` and k were fixed
when it was exported.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from runtime.kernels.decode import Candidates
from runtime.kernels.topk import one_to_one_candidates
from runtime.records.spec import END2END_LAYOUT, TRUNCATED_LAYOUT, ModelSpec

from runtime.heads.dfl import DflHead
from runtime.heads.stock import StockHead

TOPK_FLOOR = 300  # Ultralytics' predictor asks the one-to-one head for max(max_det, 300) detections


def _best_first(cand: Candidates, classes: tuple[int, ...] | None, max_det: int) -> np.ndarray:
    """Indices of ``cand`` by descending score (ties by anchor, then class), the ``classes`` filter, the first
    max_det."""
    order = np.lexsort((cand.class_ids, cand.anchor_ids, -cand.scores))
    if classes is not None:
        order = order[np.isin(cand.class_ids[order], np.asarray(classes, np.int64))]
    return order[:max_det]


class OneToOneHead(DflHead):
    """The one-to-one branch of a truncated-layout file: top-k of the (anchor, class) scores over ``conf``
    (:func:`runtime.kernels.topk.one_to_one_candidates`); ``classes`` filters after the top-k, as in Ultralytics."""

    @classmethod
    def accepts(cls, spec: ModelSpec) -> bool:
        return spec.layout == TRUNCATED_LAYOUT and spec.branch == "one2one"

    def candidates(self, outputs: Mapping[str, np.ndarray], row: int) -> Candidates:
        s = self.settings
        cls = [outputs[n][row].reshape(outputs[n].shape[1], -1) for n in self._cls_names]
        box = [outputs[n][row].reshape(outputs[n].shape[1], -1) for n in self._box_names]
        widths = [outputs[n].shape[3] for n in self._cls_names]
        k = max(1, min(max(s.max_det, TOPK_FLOOR), sum(c.shape[1] for c in cls)))
        return one_to_one_candidates(box, cls, widths, self.spec.strides, s.conf, k, s.agnostic, self.spec.dfl_bins)

    def select(self, cand: Candidates) -> np.ndarray:
        return _best_first(cand, self.settings.classes, self.settings.max_det)


class StockEnd2EndHead(StockHead):
    """A stock end-to-end ``output0``: rows ``x1 y1 x2 y2 score class extra``, best first, already selected."""

    @classmethod
    def accepts(cls, spec: ModelSpec) -> bool:
        return spec.layout == END2END_LAYOUT

    def candidates(self, outputs: Mapping[str, np.ndarray], row: int) -> Candidates:
        rows = outputs[self.spec.output0][row]
        ids = np.flatnonzero(rows[:, 4] > np.float32(self.settings.conf))
        return Candidates(np.ascontiguousarray(rows[ids, :4], np.float32), rows[ids, 4].astype(np.float32),
                          rows[ids, 5].astype(np.int32), ids.astype(np.int64))

    def select(self, cand: Candidates) -> np.ndarray:
        keep = np.arange(len(cand))
        if self.settings.classes is not None:
            keep = keep[np.isin(cand.class_ids, np.asarray(self.settings.classes, np.int64))]
        return keep[:self.settings.max_det]

    def extra_maps(self, outputs: Mapping[str, np.ndarray], row: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        extra = np.ascontiguousarray(outputs[self.spec.output0][row][:, 6:].T, dtype=np.float32)
        return (extra,), np.array([extra.shape[1]], np.int64)


__all__ = ["OneToOneHead", "StockEnd2EndHead"]
