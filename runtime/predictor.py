"""Predictor: the public facade. Images, videos and streams in, Results out, through one
:class:`~runtime.model.Model` driven by a :class:`~runtime.pipeline.Pipeline`."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from runtime.model import Model
from runtime.pipeline import Pipeline, ResultStream, StreamOptions, StreamStats
from runtime.records.frame import Skipped
from runtime.records.preprocess import Placement
from runtime.records.result import Result
from runtime.io.sources import Source
from runtime.track import DEFAULT_TRACKER, SourceTrackers, source_trackers

__all__ = ["Predictor", "ResultStream", "StreamStats"]

PREDICT_CONF = 0.25  # Ultralytics' predict default
TRACK_CONF = 0.1  # Ultralytics' track mode default: the trackers' second stage needs low-score detections


class Predictor:
    """Run a YOLO detect / segment / pose ONNX model (float or W8A8) on images, videos and streams.

    Everything about the model (task, classes, strides, layout, input size, batch) is read from the
    file. Thresholds follow Ultralytics: a detection needs score > ``conf`` (default 0.25, and 0.1 for
    :meth:`track`, as Ultralytics' track mode, unless given); NMS suppresses at
    IoU > ``iou``; at most ``max_det`` are kept. ``rect`` is Ultralytics' minimal-padding letterbox,
    used when the model takes any input size and all images of a batch share a shape.
    ``retina_masks`` gives masks at original-image resolution instead of letterbox resolution;
    ``rle_masks`` gives them as COCO RLE instead of bitmaps. ``batch`` is how many images go into
    one inference call for a dynamic-batch model (a fixed-batch model always gets its own size).
    ``engine`` names the inference library (see :data:`runtime.engines.ENGINES`: "onnxruntime" or
    "openvino"; None, the default: the engine a W8A8 file was quantized for when it is installed, else
    onnxruntime); ``precision`` ("f32", "bf16", "f16"; None: the engine's default) and
    ``device`` (OpenVINO's CPU, GPU, NPU, AUTO) are passed to it, ``threads`` sets its thread count
    and ``providers`` onnxruntime's execution providers.
    ``predict`` and ``stream`` may be called from several threads at once. The images of one batch are
    postprocessed two at a time (this thread and a helper) unless ``threads`` is 1.
    ``read_ahead`` is accepted for compatibility and does nothing (the read-ahead it enabled was removed:
    it did not pay for itself).
    """

    def __init__(self, model: str | Path, conf: float | None = None, iou: float = 0.7, max_det: int = 300,
                 classes: Iterable[int] | None = None, agnostic: bool = False,
                 imgsz: int | Sequence[int] | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None, *, batch: int | None = None, rect: bool = True,
                 multi_label: bool = False, retina_masks: bool = False, rle_masks: bool = False,
                 read_ahead: bool | None = None, engine: str | None = None, precision: str | None = None,
                 device: str | None = None) -> None:
        if read_ahead is not None:
            warnings.warn("Predictor(read_ahead=...) has no effect any more and will be removed",
                          DeprecationWarning, stacklevel=2)
        self.model = Model(model, PREDICT_CONF if conf is None else conf, iou, max_det, classes, agnostic, imgsz,
                           threads, providers, batch=batch, rect=rect, multi_label=multi_label,
                           retina_masks=retina_masks, rle_masks=rle_masks, engine=engine, precision=precision,
                           device=device)
        self.pipeline = Pipeline(self.model, host_threads=1 if threads == 1 else 2)
        self._track_model = self.model if conf is not None else self.model.with_settings(conf=TRACK_CONF)
        self._persisted: dict[str, SourceTrackers] = {}  # track(persist=True)'s trackers, by tracker name or file
        self._lock = threading.Lock()
        self._latest = threading.local()  # each calling thread's latest stream, for `skipped`

    # The model's facts, as attributes of the Predictor (its API before the Model existed).
    engine = property(lambda self: self.model.engine)
    spec = property(lambda self: self.model.spec)
    settings = property(lambda self: self.model.settings)
    imgsz = property(lambda self: self.model.imgsz)
    batch = property(lambda self: self.model.batch)
    rect = property(lambda self: self.model.rect)
    names = property(lambda self: self.model.names)

    @property
    def skipped(self) -> list[Skipped]:
        """The inputs the latest ``predict`` / ``stream`` call of *this thread* could not read (each thread
        sees its own calls; a stream's own list is ``stream.skipped``)."""
        stats = getattr(self._latest, "stats", None)
        return [] if stats is None else stats.skipped

    def plan(self, shapes_hw: Sequence[tuple[int, int]]) -> list[Placement]:
        """Placement plans for one batch of images (letterbox, or a classifier's centre crop)."""
        return self.model.plan(shapes_hw)

    def predict(self, source: Source, **options) -> list[Result]:
        """One Result per image or frame of ``source``; the options are those of :meth:`stream`."""
        return list(self.stream(source, **options))

    __call__ = predict

    def stream(self, source: Source, *, vid_stride: int = 1, stream_buffer: int = 1, max_frames: int | None = None,
               strict: bool = False, reconnect: int | None = None) -> ResultStream[Result]:
        """Yield the Results of ``source`` as they come, decoding only as needed.

        ``source`` is an image path, folder (images and videos), glob, video file, camera index
        (``0``, ``"0"``, ``"/dev/video0"``), ``rtsp://`` / ``rtmp://`` / ``http(s)://`` URL, a
        ``.txt`` / ``.streams`` file listing sources, a BGR ndarray, or a list of these. Each Result's
        ``frame`` says where it came from. ``vid_stride`` keeps every n-th frame of videos and streams;
        ``max_frames`` caps the frames taken from each of them; ``stream_buffer`` is how many frames a
        live source may queue (the oldest are dropped and counted when inference is slower than the
        source). Inputs that cannot be read are logged and skipped (listed in the returned stream's
        ``skipped``) unless ``strict``, which raises InputError at the first. A live source that stops or
        cannot be opened is reopened with backoff until it is back; ``reconnect=N`` gives up after N
        attempts per outage (StreamError). Outages are counted in ``stream.stats.outages``.
        """
        pairs = self.stream_with_images(source, vid_stride=vid_stride, stream_buffer=stream_buffer,
                                        max_frames=max_frames, strict=strict, reconnect=reconnect)
        return pairs.with_items(_results_of(pairs))

    def stream_with_images(self, source: Source, *, vid_stride: int = 1, stream_buffer: int = 1,
                           max_frames: int | None = None, strict: bool = False,
                           reconnect: int | None = None) -> ResultStream[tuple[Result, np.ndarray]]:
        """Like :meth:`stream` but yields (Result, BGR image) pairs, for callers that also draw or crop."""
        return self._pairs(source, StreamOptions(vid_stride, stream_buffer, max_frames, bool(strict), reconnect),
                           self.model)

    def track(self, source: Source, tracker: str | Path = DEFAULT_TRACKER, persist: bool = False, *,
              vid_stride: int = 1, stream_buffer: int = 1, max_frames: int | None = None,
              strict: bool = False, reconnect: int | None = None) -> ResultStream[Result]:
        """Like :meth:`stream`, with a track id on every detection (``Result.track_ids``).

        ``tracker``: "bytetrack", "botsort", "tracktrack", "ocsort" or an Ultralytics tracker YAML (its keys
        and defaults are Ultralytics'). Each video, image and live stream has its own tracker, reset
        between files; ``persist=True`` keeps the trackers on this Predictor from call to call, files
        sharing one (Ultralytics' ``persist``). Only confirmed tracks are returned, with the tracker's
        boxes; masks and keypoints follow their detections. See :mod:`runtime.track.results`.
        """
        pairs = self.track_with_images(source, tracker, persist, vid_stride=vid_stride, stream_buffer=stream_buffer,
                                       max_frames=max_frames, strict=strict, reconnect=reconnect)
        return pairs.with_items(_results_of(pairs))

    def track_with_images(self, source: Source, tracker: str | Path = DEFAULT_TRACKER, persist: bool = False, *,
                          vid_stride: int = 1, stream_buffer: int = 1, max_frames: int | None = None,
                          strict: bool = False, reconnect: int | None = None) -> ResultStream[tuple[Result, np.ndarray]]:
        """Like :meth:`track` but yields (Result, BGR image) pairs, for callers that also draw or crop."""
        trackers = source_trackers(tracker, persist)  # checked before any frame is read
        if persist:
            with self._lock:
                trackers = self._persisted.setdefault(str(tracker), trackers)
        pairs = self._pairs(source, StreamOptions(vid_stride, stream_buffer, max_frames, bool(strict), reconnect),
                            self._track_model)
        return pairs.with_items(_tracked_pairs(pairs, trackers))

    def _pairs(self, source: Source, options: StreamOptions, model: Model) -> ResultStream[tuple[Result, np.ndarray]]:
        pairs = self.pipeline.stream(source, options, model)
        self._latest.stats = pairs.stats
        return pairs

    def predict_batch(self, images: Sequence[np.ndarray], paths: Sequence[str | None] | None = None) -> list[Result]:
        """Run one batch of BGR uint8 images (at most the model's fixed batch size) through the model."""
        return self.pipeline.run_batch(images, paths)


def _tracked_pairs(pairs: ResultStream, trackers: SourceTrackers) -> Iterator[tuple[Result, np.ndarray]]:
    try:
        for result, image in pairs:
            yield trackers(result, image), image
    finally:
        pairs.close()


def _results_of(pairs: ResultStream) -> Iterator[Result]:
    try:
        for result, _ in pairs:
            yield result
    finally:
        pairs.close()
