"""A model file ready to run, synchronously: preprocess (letterbox, or a classifier's centre crop) -> engine -> head
-> Result, no threads of its own.

:class:`Model` is the unit the :class:`~runtime.pipeline.Pipeline` drives from its threads, and what a
caller uses who schedules work itself. Its three steps can run on different threads, one batch each:
:meth:`Model.prepare` (letterbox into a reused input buffer), :meth:`Model.infer` (the engine) and
:meth:`Model.results` (the head, any rows of a batch on any thread).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from runtime.engines import open_engine
from runtime.errors import InputError
from runtime.heads import HeadSettings, head_for
from runtime.records.frame import FrameInfo
from runtime.records.preprocess import Placement, preprocess_for
from runtime.records.result import Result
from runtime.records.spec import read_model_spec

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedBatch:
    """A batch read and letterboxed, ready for the engine: the BGR images, their paths and frame records,
    letterbox plans, the input tensor and the per-image ms of reading and preprocessing."""

    images: list[np.ndarray]
    paths: list[str | None]
    frames: list[FrameInfo | None]
    plans: list[Placement]
    tensor: np.ndarray
    speed: Mapping[str, float]

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class InferredBatch:
    """A batch the engine has run: its raw ``outputs`` by name and the per-image ms of every stage so far."""

    prepared: PreparedBatch
    outputs: Mapping[str, np.ndarray]
    speed: Mapping[str, float]

    def __len__(self) -> int:
        return len(self.prepared)


class Model:
    """A detect / segment / pose / classify ONNX model (float or W8A8) on one inference engine, run synchronously.

    Everything about the model (task, classes, strides, layout, input size, batch) is read from the file;
    the head that decodes its outputs is chosen once from that. Arguments as :class:`runtime.Predictor`'s.
    """

    def __init__(self, model: str | Path, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                 classes: Iterable[int] | None = None, agnostic: bool = False,
                 imgsz: int | Sequence[int] | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None, *, batch: int | None = None, rect: bool = True,
                 multi_label: bool = False, retina_masks: bool = False, rle_masks: bool = False,
                 engine: str | None = None, precision: str | None = None, device: str | None = None) -> None:
        if not 0.0 <= conf <= 1.0:
            raise InputError(f"conf must be within [0, 1], got {conf}")
        if not 0.0 <= iou <= 1.0:
            raise InputError(f"iou must be within [0, 1], got {iou}")
        if max_det < 1:
            raise InputError(f"max_det must be >= 1, got {max_det}")
        if batch is not None and batch < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        self.engine = open_engine(model, engine, threads=threads, providers=providers, precision=precision,
                                  device=device)
        e = self.engine
        self.spec = read_model_spec(model, e.metadata, e.inputs, e.outputs)
        _warn_on_layout_mismatch(model, e.metadata, e.name)
        class_tuple = None if classes is None else tuple(int(c) for c in classes)
        if class_tuple is not None:
            bad = [c for c in class_tuple if not 0 <= c < self.spec.nc]
            if bad:
                raise InputError(f"classes {bad} are out of range for a model with {self.spec.nc} classes")
        self.settings = HeadSettings(float(conf), float(iou), int(max_det), class_tuple, bool(agnostic),
                                     bool(multi_label), bool(retina_masks or rle_masks), bool(rle_masks))
        self.head = head_for(self.spec, self.settings)
        self.preprocess = preprocess_for(self.spec)
        self.imgsz = self._resolve_imgsz(imgsz)
        self.rect = bool(rect)
        if self.spec.batch is not None:
            if batch not in (None, self.spec.batch):
                LOGGER.warning("%s has a fixed batch of %d; ignoring batch=%d", model, self.spec.batch, batch)
            self.batch = self.spec.batch
        else:
            self.batch = batch or 1
        self._buffers = _InputBuffers()

    def _resolve_imgsz(self, imgsz: int | Sequence[int] | None) -> tuple[int, int]:
        fixed = self.spec.input_hw
        if imgsz is None:
            return fixed or self.spec.imgsz
        hw = _as_hw(imgsz)
        if fixed is not None:
            if hw != fixed:
                raise InputError(f"{self.spec.path}: model input is fixed at {fixed[0]}x{fixed[1]}; "
                                 f"imgsz {hw[0]}x{hw[1]} cannot be used (export with --dynamic-hw for other sizes)")
            return fixed
        stride = self.spec.max_stride
        rounded = tuple(max(stride, math.ceil(v / stride) * stride) for v in hw)
        if rounded != hw:
            LOGGER.warning("imgsz %s is not a multiple of stride %d; using %s", hw, stride, rounded)
        return rounded  # type: ignore[return-value]

    def with_settings(self, **changes) -> "Model":
        """This model with other head settings (``conf``, ``iou``, ...: :class:`~runtime.heads.HeadSettings`'
        fields), sharing the engine and the input buffers: e.g. tracking's lower ``conf``."""
        other = copy.copy(self)
        other.settings = dataclasses.replace(self.settings, **changes)
        other.head = head_for(self.spec, other.settings)
        return other

    @property
    def names(self) -> tuple[str, ...]:
        return self.spec.names

    def plan(self, shapes_hw: Sequence[tuple[int, int]]) -> list[Placement]:
        """Placement plans for one batch of images (letterbox with Ultralytics' rule for minimal padding, or a
        classifier's centre crop)."""
        auto = self.rect and self.spec.input_hw is None and len(set(shapes_hw)) == 1
        return [self.preprocess.plan(tuple(hw), self.imgsz, auto, self.spec.max_stride) for hw in shapes_hw]

    def prepare(self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None = None,
                frames: Sequence[FrameInfo | None] | None = None, read_ms: float | None = None) -> PreparedBatch:
        """Preprocess a batch of BGR uint8 images (at most a fixed-batch model's size) into an input tensor.
        ``read_ms``: the mean ms it took to read them, reported as the ``read`` stage."""
        images = list(images)
        n = len(images)
        if self.spec.batch is not None and n > self.spec.batch:
            raise InputError(f"batch of {n} images exceeds the model's fixed batch of {self.spec.batch}")
        t0 = time.perf_counter()
        plans = self.plan([img.shape[:2] for img in images])
        rows = self.spec.batch or n
        tensor = self._buffers.acquire((rows, 3) + plans[0].dst_hw, self.spec.input_dtype)
        for k, (image, plan) in enumerate(zip(images, plans)):
            self.preprocess.into(image, plan, tensor[k])
        if rows > n:
            tensor[n:] = 0  # padding rows of a fixed-batch model; their outputs are ignored
        speed = {"preprocess": (time.perf_counter() - t0) * 1e3 / n}
        if read_ms is not None:
            speed["read"] = read_ms
        return PreparedBatch(images, list(paths) if paths is not None else [None] * n,
                             list(frames) if frames is not None else [None] * n, plans, tensor, speed)

    def infer(self, batch: PreparedBatch) -> InferredBatch:
        """Run the engine on a prepared batch; its input buffer goes back to the pool."""
        t0 = time.perf_counter()
        try:
            outputs = self.engine.run(batch.tensor)
        finally:
            self._buffers.release(batch.tensor)
        return InferredBatch(batch, outputs, {**batch.speed, "inference": (time.perf_counter() - t0) * 1e3 / len(batch)})

    def results(self, batch: InferredBatch, rows: Iterable[int] | None = None,
                mask_threads: int | None = None) -> list[Result]:
        """The Results of ``rows`` (default: all) of an inferred batch, each built whole: detections,
        every stage's ms and where the image came from. ``mask_threads`` caps the mask kernels' threads
        (None: :data:`runtime.kernels.masks.DEFAULT_THREADS`), 1 when several images run at once."""
        prepared = batch.prepared
        out = []
        for k in range(len(batch)) if rows is None else rows:
            head = self.head(batch.outputs, k, prepared.plans[k], mask_threads)
            out.append(Result(names=self.spec.names, letterbox=prepared.plans[k], path=prepared.paths[k],
                              speed_ms={**head.stage_ms, **batch.speed}, frame=prepared.frames[k], **head.fields))
        return out

    def __call__(self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None = None) -> list[Result]:
        """The Results of one batch of BGR uint8 images, all three steps on this thread."""
        return self.results(self.infer(self.prepare(images, paths)))


def _as_hw(imgsz: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(imgsz, (int, np.integer)):
        return int(imgsz), int(imgsz)
    values = [int(v) for v in imgsz]
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise InputError(f"imgsz must be an int or (height, width), got {imgsz!r}")
    return values[0], values[1]


def _warn_on_layout_mismatch(model: str | Path, metadata: Mapping[str, str], engine: str) -> None:
    """A W8A8 file made for one engine runs on the other with the same accuracy but without its int8 speed-up
    (onnxruntime computes the OpenVINO layout's convs in float): say so once, at load."""
    try:
        target = json.loads(metadata.get("quantization", "{}")).get("target_engine")
    except (ValueError, AttributeError):
        return
    if target and target != engine:
        LOGGER.warning("%s was quantized for %s: %s gives the same accuracy but runs it slower "
                       "(use engine=%r, or quantize with --target %s)", model, target, engine, target, engine)


class _InputBuffers:
    """Reusable input tensors: letterboxing into the buffer of the previous batch instead of a fresh
    allocation took 0.46 instead of 0.60 ms per 640x640 float32 image here (no page faults).

    A buffer is taken while a batch is prepared and given back once the engine has run it. At
    most ``keep`` buffers are kept, the most recently returned ones (preparing ahead needs two).
    """

    def __init__(self, keep: int = 2) -> None:
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._keep = keep

    def acquire(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        with self._lock:
            for k, tensor in enumerate(self._free):
                if tensor.shape == shape and tensor.dtype == dtype:
                    return self._free.pop(k)
        return np.empty(shape, dtype)

    def release(self, tensor: np.ndarray) -> None:
        with self._lock:
            if not any(t is tensor for t in self._free):
                self._free.append(tensor)
                del self._free[:-self._keep]
