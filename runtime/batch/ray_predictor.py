"""For your own Ray Data pipelines: :class:`BatchPredictor`, a callable class ``map_batches`` takes directly
(image rows in, record rows out), and :func:`read_media`, a reader of images and video frames into rows.

>>> import ray
>>> from runtime.batch.ray_predictor import BatchPredictor, read_media
>>> ds = ray.data.read_images("s3://bucket/photos/", include_paths=True)        # RGB "image" column
>>> ds = read_media("videos/", vid_stride=5)                                    # or: BGR "image_bgr" column
>>> rows = ds.map_batches(BatchPredictor, fn_constructor_kwargs={"model": "yolov8n.onnx", "conf": 0.3},
...                       batch_size=16, compute=ray.data.ActorPoolStrategy(size=4), num_cpus=1)
>>> rows.write_parquet("results/")

Input columns (others are ignored):

* ``image`` -- (H, W, 3) uint8 **RGB**, as ``ray.data.read_images`` and PIL give it (RGBA and grey too), or
  ``image_bgr`` -- (H, W, 3) uint8 **BGR**, as OpenCV and :func:`read_media` give it. The column's name says the
  colour order; the model gets what it was trained on either way.
* ``path`` or ``source`` (optional) -- where the image came from (``read_images(..., include_paths=True)``
  gives ``path``), copied to the output's ``source``;
* ``kind``, ``frame``, ``timestamp_ms`` (optional) -- the video frame's facts, as :func:`read_media` gives them.

Output columns: those of :mod:`runtime.batch.rows` (:data:`runtime.batch.rows.COLUMNS`): ``source``, ``kind``,
``frame``, ``timestamp_ms``, ``width``, ``height``, then per detection ``boxes`` (COCO xywh), ``scores``,
``class_ids``, ``class_names``, ``masks`` (COCO RLE counts; segment models) and ``keypoints`` (pose models).
:func:`runtime.batch.rows.row_to_record` turns a row back into the record ``python -m runtime.infer --jsonl``
writes for the same image.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from runtime.batch.inputs import BatchInput, local_copy, resolve_batch_inputs
from runtime.batch.rows import COLUMNS, record_to_row
from runtime.batch.run import make_predictor, record_of
from runtime.errors import InputError
from runtime.io.frames import load_image
from runtime.io.video import iter_video
from runtime.records.frame import Frame, FrameInfo

RGB_COLUMN, BGR_COLUMN = "image", "image_bgr"
_SOURCE_COLUMNS = ("path", "source")


def rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    """A PIL-order (RGB, RGBA or grey) uint8 image as OpenCV's BGR."""
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    raise InputError(f"image column: expected (H, W, 3) RGB, got shape {image.shape}")


class BatchPredictor:
    """A callable class for ``ray.data.Dataset.map_batches``: each actor loads ``model`` once, with
    ``threads`` inference threads (default: the CPUs Ray gave the actor, ``num_cpus``); ``options`` are
    :class:`runtime.Predictor`'s (``conf``, ``iou``, ``imgsz``, ``classes``, ``max_det``, ``agnostic``, ``batch``,
    ``engine``, ``precision``, ``device``). See the module's docstring for the columns."""

    def __init__(self, model: str | Path, threads: int | None = None, **options: Any) -> None:
        from runtime.batch.ray_job import assigned_cpus

        threads = threads or assigned_cpus()
        cv2.setNumThreads(threads)
        self.predictor = make_predictor(model, options, threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        if BGR_COLUMN in batch:
            images = [np.ascontiguousarray(image) for image in batch[BGR_COLUMN]]
        elif RGB_COLUMN in batch:
            images = [rgb_to_bgr(np.asarray(image)) for image in batch[RGB_COLUMN]]
        else:
            raise InputError(f"BatchPredictor needs an {RGB_COLUMN!r} (RGB) or {BGR_COLUMN!r} (BGR) column; the "
                             f"batch has {sorted(batch)}")
        n = len(images)
        sources = next((batch[c] for c in _SOURCE_COLUMNS if c in batch), [None] * n)
        infos = [_frame_info(batch, k, sources[k]) for k in range(n)]
        model, pipeline = self.predictor.model, self.predictor.pipeline
        rows = []
        for start in range(0, n, model.batch):
            part = slice(start, start + model.batch)
            prepared = model.prepare(images[part], [None if s is None else str(s) for s in sources[part]],
                                     infos[part])
            for result, info in zip(pipeline.results(model.infer(prepared)), infos[part]):
                rows.append(record_to_row(record_of(result, info.source)))
        return {column: [row[column] for row in rows] for column in COLUMNS}


def _frame_info(batch: dict[str, np.ndarray], k: int, source: Any) -> FrameInfo:
    """Where row ``k`` came from: its source, and the video frame's facts when the batch has them."""
    def value(column: str, default: Any) -> Any:
        if column not in batch:
            return default
        v = batch[column][k]
        return default if v is None or (isinstance(v, float) and math.isnan(v)) else v

    timestamp = value("timestamp_ms", None)
    return FrameInfo(str(source) if source is not None else f"image #{k}", str(value("kind", "image")),
                     int(value("frame", 0)), None if timestamp is None else float(timestamp))


def read_media(source: str | Path, vid_stride: int = 1, frames_per_block: int = 16):
    """A Ray Dataset of the images and video frames ``source`` names (as ``python -m runtime.batch`` takes it),
    decoded by OpenCV: columns ``image_bgr`` (BGR), ``source``, ``kind``, ``frame``, ``timestamp_ms``. Inputs
    that cannot be read are logged and left out (the batch job lists them; this reader only reads)."""
    import ray

    inputs = resolve_batch_inputs(source)
    rows = [{"source": inp.source, "kind": inp.kind} for inp in inputs]
    dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), 1024))  # rows are decoded one by one
    return dataset.map_batches(_decode_inputs, batch_size=1, batch_format="pyarrow",
                               fn_kwargs={"vid_stride": vid_stride, "frames_per_block": frames_per_block})


def _decode_inputs(batch, vid_stride: int, frames_per_block: int):
    """map_batches generator: the frames of each input row, ``frames_per_block`` at a time."""
    frames: list[Frame] = []
    for source, kind in zip(batch.column("source").to_pylist(), batch.column("kind").to_pylist()):
        for frame in _frames_of(BatchInput(source, kind), vid_stride):
            frames.append(frame)
            if len(frames) == frames_per_block:
                yield _frame_rows(frames)
                frames = []
    if frames:
        yield _frame_rows(frames)


def _frames_of(inp: BatchInput, vid_stride: int):
    import logging

    log = logging.getLogger(__name__)
    try:
        with local_copy(inp) as path:
            if inp.kind == "image":
                _, image = load_image(path, 0)
                yield Frame(image, FrameInfo(inp.source, "image", 0), inp.source, 0.0)
                return
            for event in iter_video(path, vid_stride=vid_stride):
                if isinstance(event, Frame):
                    yield Frame(event.image, FrameInfo(inp.source, "video", event.info.index, event.info.timestamp_ms),
                                inp.source, event.read_ms)
                else:
                    log.warning("skipped %s", event.message.replace(path, inp.source))
    except InputError as exc:
        log.warning("skipped %s", exc)


def _frame_rows(frames: list[Frame]) -> dict[str, Any]:
    images = np.empty(len(frames), dtype=object)
    images[:] = [f.image for f in frames]
    return {BGR_COLUMN: images, "source": [f.info.source for f in frames], "kind": [f.info.kind for f in frames],
            "frame": [f.info.index for f in frames],
            "timestamp_ms": [np.nan if f.info.timestamp_ms is None else f.info.timestamp_ms for f in frames]}
