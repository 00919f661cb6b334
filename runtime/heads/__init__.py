"""Heads: a model's raw outputs to detections, one module per output layout (see :mod:`runtime.heads.base`
for the interface). :data:`HEADS` lists them in the order they are asked; the first that accepts a
model's spec serves it.

* :mod:`runtime.heads.dfl` -- our truncated layout: DFL boxes, one-to-many, NMS on the host;
* :mod:`runtime.heads.stock` -- a stock Ultralytics ``output0`` (decoded in the graph), NMS on the host;
* :mod:`runtime.heads.classify` -- classifiers: logits (or stock probabilities) to ``probs``.
* :mod:`runtime.heads.obb` -- oriented boxes (task ``obb``), either layout; asked first, since the two
  above take any model of their layout.
* :mod:`runtime.heads.one_to_one` -- the one-to-one branch of YOLO26 / YOLOv10 (truncated or stock end-to-end),
  top-k on the host, no NMS.

New heads (oriented boxes, classification) go here as modules of their own.
"""

from __future__ import annotations

from runtime.errors import ModelError
from runtime.records.spec import ModelSpec

from runtime.heads.base import Head, HeadOutput, HeadSettings
from runtime.heads.classify import ClassifyHead
from runtime.heads.dfl import DflHead
from runtime.heads.obb import ObbHead, StockObbHead
from runtime.heads.one_to_one import OneToOneHead, StockEnd2EndHead
from runtime.heads.stock import StockHead

HEADS: tuple[type[Head], ...] = (ClassifyHead, ObbHead, StockObbHead, DflHead, StockHead, OneToOneHead,
                                 StockEnd2EndHead)

__all__ = ["HEADS", "Head", "HeadOutput", "HeadSettings", "head_for"]


def head_for(spec: ModelSpec, settings: HeadSettings) -> Head:
    """The head that reads ``spec``'s outputs, built for ``settings``; ModelError when none does."""
    for head in HEADS:
        if head.accepts(spec):
            return head(spec, settings)
    raise ModelError(f"{spec.path}: no head reads a {spec.layout} {spec.task} model")
