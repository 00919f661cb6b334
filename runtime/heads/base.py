"""The head interface: how one image's raw network outputs become the detections of a Result.

A model's head is chosen once, from its :class:`~runtime.records.spec.ModelSpec`, by
:func:`runtime.heads.head_for`; outside :mod:`runtime.heads` nothing branches on the output layout or
the task. Adding a head is one module with a :class:`Head` subclass, plus its line in
:data:`runtime.heads.HEADS`.

A head

* ``accepts(spec)`` (classmethod): True when it reads this model's outputs (layout, task, branch);
* is built once per model, ``Head(spec, settings)``, and prepares there everything that depends only on
  the model and the settings, so an image costs little more than its kernels;
* is called once per image, ``head(outputs, row, letterbox, mask_threads=None)``: ``outputs`` are the
  engine's batched outputs by name, ``row`` the image's index in the batch, ``letterbox`` the plan that
  made its input. It returns a :class:`HeadOutput`: the Result's detection fields in original-image
  pixels and the milliseconds of its stages;
* may be called from several threads at once (one image each) and keeps no per-image state;
* imports records and kernels only: no engines, no I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from runtime.records.letterbox import Letterbox
from runtime.records.spec import ModelSpec


@dataclass(frozen=True)
class HeadSettings:
    """Thresholds and output forms, as Ultralytics' predict takes them (validated by the Model).

    A detection needs score > ``conf``; NMS suppresses at IoU > ``iou``; at most ``max_det`` are kept;
    ``classes`` keeps only those class ids; ``agnostic`` runs NMS across classes; ``multi_label`` lets an
    anchor give a candidate per class over ``conf``; ``retina_masks`` gives masks at the original image's
    size; ``rle_masks`` gives them as COCO RLE; ``max_candidates`` caps the candidates before NMS.
    """

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    classes: tuple[int, ...] | None = None
    agnostic: bool = False
    multi_label: bool = False
    retina_masks: bool = False
    rle_masks: bool = False
    max_candidates: int = 30000


@dataclass(frozen=True)
class HeadOutput:
    """One image's detections: ``fields`` are keyword arguments of :class:`~runtime.records.result.Result`
    (``xyxy``, ``scores``, ``class_ids`` and the task's own: ``masks``, ``mask_form``, ``masks_rle``,
    ``keypoints``, ``xywhr`` and ``corners``), ``stage_ms`` the milliseconds of each postprocess stage."""

    fields: Mapping[str, Any]
    stage_ms: Mapping[str, float]


class Head(ABC):
    """Turns raw outputs of one model into detections; see the module docstring for the contract."""

    def __init__(self, spec: ModelSpec, settings: HeadSettings) -> None:
        self.spec = spec
        self.settings = settings

    @classmethod
    @abstractmethod
    def accepts(cls, spec: ModelSpec) -> bool:
        """Whether this head reads the outputs of the model ``spec`` describes."""

    @abstractmethod
    def __call__(self, outputs: Mapping[str, np.ndarray], row: int, letterbox: Letterbox,
                 mask_threads: int | None = None) -> HeadOutput:
        """The detections of image ``row`` of a batch of raw outputs."""
