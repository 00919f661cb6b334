"""Predictor: images in, Results out, through one inference engine (onnxruntime or OpenVINO)."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .engine import DEFAULT_ENGINE, open_engine
from .errors import InputError
from .letterbox import Letterbox, letterbox_into, plan_letterbox
from .postprocess import Postprocessor, PostprocessSettings
from .result import Result
from .spec import read_model_spec
from .sources import Source, expand_source, load_image

LOGGER = logging.getLogger(__name__)


@functools.lru_cache(maxsize=256)
def _planned(src_hw: tuple[int, int], target_hw: tuple[int, int], auto: bool, stride: int) -> Letterbox:
    """plan_letterbox, once per image shape: a stream of photos has few distinct shapes."""
    return plan_letterbox(src_hw, target_hw, auto=auto, stride=stride)


def _as_hw(imgsz: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(imgsz, (int, np.integer)):
        return int(imgsz), int(imgsz)
    values = [int(v) for v in imgsz]
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise InputError(f"imgsz must be an int or (height, width), got {imgsz!r}")
    return values[0], values[1]


def _warn_on_layout_mismatch(model: str | Path, metadata: dict[str, str], engine: str) -> None:
    """A W8A8 file made for one engine runs on the other with the same results but without its int8 speed-up
    (onnxruntime computes the OpenVINO layout's convs in float): say so once, at load."""
    try:
        target = json.loads(metadata.get("quantization", "{}")).get("target_engine")
    except (ValueError, AttributeError):
        return
    if target and target != engine:
        LOGGER.warning("%s was quantized for %s: %s gives the same results but runs it slower "
                       "(use engine=%r, or quantize with --target %s)", model, target, engine, target, engine)


class Predictor:
    """Run a YOLOv8 detect / segment / pose ONNX model (float or W8A8) on images.

    Everything about the model (task, classes, strides, layout, input size, batch) is read from
    the file. Thresholds follow Ultralytics: a detection needs score > ``conf``; NMS suppresses at
    IoU > ``iou``; at most ``max_det`` are kept. ``rect`` is Ultralytics' minimal-padding letterbox,
    used when the model takes any input size and all images of a batch share a shape.
    ``retina_masks`` gives masks at original-image resolution instead of letterbox resolution;
    ``rle_masks`` gives them as COCO RLE instead of bitmaps. ``batch`` is how many images go into
    one inference call for a dynamic-batch model (a fixed-batch model always gets its own size).
    ``engine`` names the inference library (see :data:`runtime.engine.ENGINES`: "onnxruntime", the
    default, or "openvino"); ``precision`` ("f32", "bf16", "f16"; None: the engine's default) and
    ``device`` (OpenVINO's CPU, GPU, NPU, AUTO) are passed to it, ``threads`` sets its thread count
    and ``providers`` onnxruntime's execution providers.
    ``predict`` may be called from several threads at once. The images of one batch are
    postprocessed two at a time (this thread and a worker) unless ``threads`` is 1; a batch of one
    image then has a worker thread read its outputs into the shared cache while it is decoded
    (``read_ahead=False`` leaves the second core alone).
    """

    def __init__(self, model: str | Path, conf: float = 0.25, iou: float = 0.7, max_det: int = 300,
                 classes: Iterable[int] | None = None, agnostic: bool = False,
                 imgsz: int | Sequence[int] | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None, *, batch: int | None = None, rect: bool = True,
                 multi_label: bool = False, retina_masks: bool = False, rle_masks: bool = False,
                 read_ahead: bool = True, engine: str = DEFAULT_ENGINE, precision: str | None = None,
                 device: str | None = None) -> None:
        if not 0.0 <= conf <= 1.0:
            raise InputError(f"conf must be within [0, 1], got {conf}")
        if not 0.0 <= iou <= 1.0:
            raise InputError(f"iou must be within [0, 1], got {iou}")
        if max_det < 1:
            raise InputError(f"max_det must be >= 1, got {max_det}")
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
        self.settings = PostprocessSettings(float(conf), float(iou), int(max_det), class_tuple, bool(agnostic),
                                            bool(multi_label), bool(retina_masks or rle_masks), bool(rle_masks))
        self._postprocess = Postprocessor(self.spec, self.settings)
        self.imgsz = self._resolve_imgsz(imgsz)
        self.rect = bool(rect)
        if batch is not None and batch < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        if self.spec.batch is not None:
            if batch not in (None, self.spec.batch):
                LOGGER.warning("%s has a fixed batch of %d; ignoring batch=%d", model, self.spec.batch, batch)
            self.batch = self.spec.batch
        else:
            self.batch = batch or 1
        self._buffers = _InputBuffers()
        # The images of a batch are postprocessed on this thread and one worker (the kernels drop the
        # GIL), and a lone image's outputs are read ahead on the second core, unless the engine was
        # asked to use one thread or there is one CPU.
        self._host_pool = None
        if (threads is None or threads > 1) and _usable_cpus() > 1:
            self._host_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="yolo-postprocess")
        self._read_ahead = bool(read_ahead) and self._host_pool is not None

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

    @property
    def names(self) -> tuple[str, ...]:
        return self.spec.names

    def plan(self, shapes_hw: Sequence[tuple[int, int]]) -> list[Letterbox]:
        """Letterbox plans for one batch of images, with Ultralytics' rule for minimal padding."""
        auto = self.rect and self.spec.input_hw is None and len(set(shapes_hw)) == 1
        return [_planned(tuple(hw), self.imgsz, auto, self.spec.max_stride) for hw in shapes_hw]

    def predict(self, source: Source) -> list[Result]:
        """One Result per image of ``source`` (path, folder, BGR ndarray, or a list of these)."""
        return list(self.stream(source))

    __call__ = predict

    def stream(self, source: Source) -> Iterator[Result]:
        """Like ``predict`` but yields Results batch by batch, reading images only as needed."""
        for result, _ in self.stream_with_images(source):
            yield result

    def stream_with_images(self, source: Source) -> Iterator[tuple[Result, np.ndarray]]:
        """Yield (Result, BGR image) pairs, for callers that also draw or crop the images.

        The next batch is read and letterboxed on a worker thread while the current one runs
        through the model (image decoding, resizing and the inference engines all release the GIL).
        """
        items = expand_source(source)
        chunks = [items[i:i + self.batch] for i in range(0, len(items), self.batch)]
        if not chunks:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="yolo-prefetch") as pool:
            pending = pool.submit(self._read_and_prepare, chunks[0], 0)
            for k in range(len(chunks)):
                batch = pending.result()
                if k + 1 < len(chunks):
                    pending = pool.submit(self._read_and_prepare, chunks[k + 1], (k + 1) * self.batch)
                for result, image in zip(self._infer(batch), batch.images):
                    yield result, image

    def predict_batch(self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None = None) -> list[Result]:
        """Run one batch of BGR uint8 images (at most the model's fixed batch size) through the model."""
        paths = list(paths) if paths is not None else [None] * len(images)
        return self._infer(self._prepare(list(images), paths, read_ms=None))

    def _read_and_prepare(self, items: Sequence[str | np.ndarray], first_index: int) -> "_PreparedBatch":
        t0 = time.perf_counter()
        loaded = [load_image(item, first_index + k) for k, item in enumerate(items)]
        read_ms = (time.perf_counter() - t0) * 1e3 / len(loaded)
        return self._prepare([image for _, image in loaded], [path for path, _ in loaded], read_ms)

    def _prepare(self, images: list[np.ndarray], paths: list[str | None], read_ms: float | None) -> "_PreparedBatch":
        n = len(images)
        if self.spec.batch is not None and n > self.spec.batch:
            raise InputError(f"batch of {n} images exceeds the model's fixed batch of {self.spec.batch}")
        t0 = time.perf_counter()
        plans = self.plan([img.shape[:2] for img in images])
        rows = self.spec.batch or n
        tensor = self._buffers.acquire((rows, 3) + plans[0].dst_hw, self.spec.input_dtype)
        for k, (image, plan) in enumerate(zip(images, plans)):
            letterbox_into(image, plan, tensor[k])
        if rows > n:
            tensor[n:] = 0  # padding rows of a fixed-batch model; their outputs are ignored
        speed = {"preprocess": (time.perf_counter() - t0) * 1e3 / n}
        if read_ms is not None:
            speed["read"] = read_ms
        return _PreparedBatch(images, paths, plans, tensor, speed)

    def _infer(self, batch: "_PreparedBatch") -> list[Result]:
        n = len(batch.images)
        t0 = time.perf_counter()
        try:
            outputs = self.engine.run(batch.tensor)
        finally:
            self._buffers.release(batch.tensor)
        shared = dict(batch.speed, inference=(time.perf_counter() - t0) * 1e3 / n)
        if n > 1 and self._host_pool is not None:
            # Two images at a time, one kernel thread each: the second half on the worker.
            half = (n + 1) // 2
            later = self._host_pool.submit(self._postprocess_rows, outputs, batch, range(half, n), 1)
            try:
                results = self._postprocess_rows(outputs, batch, range(half), 1)
            finally:
                wait([later])  # the worker reads the outputs until it is done
            results += later.result()
        else:
            # One image at a time: the second core reads this image's outputs ahead of the kernels.
            results = self._postprocess_rows(outputs, batch, range(n), None, self._read_ahead)
        for result in results:
            result.speed_ms.update(shared)
        return results

    def _postprocess_rows(self, outputs: dict[str, np.ndarray], batch: "_PreparedBatch", rows: range,
                          mask_threads: int | None, read_ahead: bool = False) -> list[Result]:
        return [self._postprocess(outputs, k, batch.plans[k], batch.paths[k], mask_threads, read_ahead)
                for k in rows]


def _usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class _PreparedBatch:
    """A batch read and letterboxed, ready for the engine."""

    images: list[np.ndarray]
    paths: list[str | None]
    plans: list[Letterbox]
    tensor: np.ndarray
    speed: dict[str, float]


class _InputBuffers:
    """Reusable input tensors: letterboxing into the buffer of the previous batch instead of a fresh
    allocation took 0.46 instead of 0.60 ms per 640x640 float32 image here (no page faults).

    A buffer is taken while a batch is prepared and given back once the engine has run it. At
    most ``keep`` buffers are kept, the most recently returned ones (prefetching needs two).
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
