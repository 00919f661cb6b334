"""Predictor: images in, Results out, through one inference engine (onnxruntime or OpenVINO)."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Generic, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from .engine import DEFAULT_ENGINE, open_engine
from .errors import InputError
from .letterbox import Letterbox, letterbox_into, plan_letterbox
from .postprocess import Postprocessor, PostprocessSettings
from .result import Result
from .spec import read_model_spec
from .frames import Event, Frame, FrameInfo, Skipped, is_live, iter_frames
from .sources import Source, resolve_inputs

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")


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
    """A W8A8 file made for one engine runs on the other with the same accuracy but without its int8 speed-up
    (onnxruntime computes the OpenVINO layout's convs in float): say so once, at load."""
    try:
        target = json.loads(metadata.get("quantization", "{}")).get("target_engine")
    except (ValueError, AttributeError):
        return
    if target and target != engine:
        LOGGER.warning("%s was quantized for %s: %s gives the same accuracy but runs it slower "
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
        self.skipped: list[Skipped] = []  # the inputs the latest stream / predict call could not read

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

    def predict(self, source: Source, **options) -> list[Result]:
        """One Result per image or frame of ``source``; the options are those of :meth:`stream`."""
        return list(self.stream(source, **options))

    __call__ = predict

    def stream(self, source: Source, *, vid_stride: int = 1, stream_buffer: int = 1, max_frames: int | None = None,
               strict: bool = False) -> "ResultStream[Result]":
        """Yield the Results of ``source`` as they come, decoding only as needed.

        ``source`` is an image path, folder (images and videos), glob, video file, camera index
        (``0``, ``"0"``, ``"/dev/video0"``), ``rtsp://`` / ``rtmp://`` / ``http(s)://`` URL, a
        ``.txt`` / ``.streams`` file listing sources, a BGR ndarray, or a list of these. Each Result's
        ``frame`` says where it came from. ``vid_stride`` keeps every n-th frame of videos and streams;
        ``max_frames`` caps the frames taken from each of them; ``stream_buffer`` is how many frames a
        live source may queue (the oldest are dropped and counted when inference is slower than the
        source). Inputs that cannot be read are logged and skipped (listed in the returned stream's
        ``skipped`` and in :attr:`skipped`) unless ``strict``, which raises InputError at the first.
        """
        pairs = self.stream_with_images(source, vid_stride=vid_stride, stream_buffer=stream_buffer,
                                        max_frames=max_frames, strict=strict)
        return ResultStream(_first_of_pairs(pairs), pairs.stats)

    def stream_with_images(self, source: Source, *, vid_stride: int = 1, stream_buffer: int = 1,
                           max_frames: int | None = None,
                           strict: bool = False) -> "ResultStream[tuple[Result, np.ndarray]]":
        """Like :meth:`stream` but yields (Result, BGR image) pairs, for callers that also draw or crop.

        Three stages overlap: a worker decodes and letterboxes the next batch, another runs the
        engine on the batch before it, and the calling thread postprocesses the one before that
        (decoding, resizing, the engines and the host kernels all release the GIL). Video frames
        are batched like images (``batch``). A live source is read by its own capture thread, and
        each frame is taken from it only when the engine is free, so no frame waits for inference.
        """
        if vid_stride < 1:
            raise InputError(f"vid_stride must be >= 1, got {vid_stride}")
        if stream_buffer < 1:
            raise InputError(f"stream_buffer must be >= 1, got {stream_buffer}")
        if max_frames is not None and max_frames < 1:
            raise InputError(f"max_frames must be >= 1, got {max_frames}")
        inputs = resolve_inputs(source)
        live = is_live(inputs)
        stats = StreamStats()
        self.skipped = stats.skipped
        stop = threading.Event()
        frames = iter_frames(inputs, vid_stride=vid_stride, max_frames=max_frames, stream_buffer=stream_buffer,
                             stop=stop, on_stream=stats.streams.append)
        return ResultStream(self._pipeline(frames, live, stats, bool(strict), stop), stats)

    def _pipeline(self, frames: Iterator[Event], live: bool, stats: "StreamStats", strict: bool,
                  stop: threading.Event) -> Iterator[tuple[Result, np.ndarray]]:
        size = 1 if live else self.batch
        exhausted = False

        def next_batch() -> _PreparedBatch | None:  # on one worker at a time
            nonlocal exhausted
            if exhausted:
                return None
            picked: list[Frame] = []
            for event in frames:
                if isinstance(event, Skipped):
                    LOGGER.warning("skipped %s", event.message)
                    stats.skipped.append(event)
                    if strict:
                        raise InputError(event.message)
                    continue
                picked.append(event)
                if len(picked) == size:
                    break
            else:
                exhausted = True
            if not picked:
                return None
            read_ms = sum(f.read_ms for f in picked) / len(picked)
            return self._prepare([f.image for f in picked], [f.path for f in picked], read_ms,
                                 [f.info for f in picked])

        prep_pool = None if live else ThreadPoolExecutor(max_workers=1, thread_name_prefix="yolo-prefetch")
        ran: queue.Queue = queue.Queue(maxsize=1)  # engine outputs waiting for this thread: bounded read-ahead

        def hand_over(item) -> bool:
            while not stop.is_set():
                try:
                    ran.put(item, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def engine_loop() -> None:
            """Run batch after batch without waiting for the consumer: files decode the next batch meanwhile;
            a live source's frame is taken only once the engine is free, so it is the freshest."""
            try:
                ready = None if live else prep_pool.submit(next_batch)
                while not stop.is_set():
                    batch = next_batch() if live else ready.result()
                    if batch is None:
                        break
                    if not live:
                        ready = prep_pool.submit(next_batch)
                    if not hand_over((batch,) + self._run_engine(batch)):
                        return
                hand_over(_END)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the consumer's thread
                hand_over(_Failure(exc))

        worker = threading.Thread(target=engine_loop, name="yolo-inference", daemon=True)
        worker.start()
        try:
            while True:
                item = ran.get()
                if item is _END:
                    break
                if isinstance(item, _Failure):
                    raise item.exc
                batch, outputs, shared = item
                results = self._postprocess_batch(outputs, shared, batch)
                for result, image, info in zip(results, batch.images, batch.frames):
                    stats.frames += 1
                    yield replace(result, frame=info), image
        finally:
            stop.set()
            worker.join()
            if prep_pool is not None:
                prep_pool.shutdown(wait=True, cancel_futures=True)
            frames.close()

    def predict_batch(self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None = None) -> list[Result]:
        """Run one batch of BGR uint8 images (at most the model's fixed batch size) through the model."""
        paths = list(paths) if paths is not None else [None] * len(images)
        return self._infer(self._prepare(list(images), paths, read_ms=None))

    def _prepare(self, images: list[np.ndarray], paths: list[str | None], read_ms: float | None,
                 frames: list[FrameInfo] | None = None) -> "_PreparedBatch":
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
        return _PreparedBatch(images, paths, plans, tensor, speed, frames or [None] * n)

    def _infer(self, batch: "_PreparedBatch") -> list[Result]:
        return self._postprocess_batch(*self._run_engine(batch), batch)

    def _run_engine(self, batch: "_PreparedBatch") -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The engine's outputs for a prepared batch, and the per-image stage times so far."""
        n = len(batch.images)
        t0 = time.perf_counter()
        try:
            outputs = self.engine.run(batch.tensor)
        finally:
            self._buffers.release(batch.tensor)
        return outputs, dict(batch.speed, inference=(time.perf_counter() - t0) * 1e3 / n)

    def _postprocess_batch(self, outputs: dict[str, np.ndarray], shared: dict[str, float],
                           batch: "_PreparedBatch") -> list[Result]:
        n = len(batch.images)
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


@dataclass
class StreamStats:
    """What a stream has done so far: ``frames`` Results yielded, ``skipped`` inputs that could not be
    read, and its live sources (``streams``), whose dropped frames :attr:`dropped` counts per source."""

    frames: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    streams: list = field(default_factory=list)

    @property
    def dropped(self) -> dict[str, int]:
        """Frames each live source captured but replaced with newer ones before inference took them."""
        return {s.name: s.dropped for s in self.streams}


class ResultStream(Generic[T]):
    """The iterator :meth:`Predictor.stream` returns: Results as they come, with the stream's
    :class:`StreamStats` (``skipped``, ``dropped``) readable at any time. ``close()`` (or leaving a
    ``with`` block) stops the decoding threads and releases the sources."""

    def __init__(self, items: Iterator[T], stats: StreamStats) -> None:
        self._items = items
        self.stats = stats

    def __iter__(self) -> "ResultStream[T]":
        return self

    def __next__(self) -> T:
        return next(self._items)

    @property
    def skipped(self) -> list[Skipped]:
        return self.stats.skipped

    @property
    def dropped(self) -> dict[str, int]:
        return self.stats.dropped

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "ResultStream[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _first_of_pairs(pairs: ResultStream) -> Iterator:
    try:
        for result, _ in pairs:
            yield result
    finally:
        pairs.close()


_END = object()  # the engine loop has run every batch
_POLL_S = 0.05  # how often a blocked hand-over checks whether the stream was closed


@dataclass(frozen=True)
class _Failure:
    """An exception of the engine loop, raised again on the consumer's thread."""

    exc: BaseException


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
    frames: list[FrameInfo | None]


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
