"""Reading the frames a Predictor runs, lazily and in order: still images decoded here, video files and
live streams through :mod:`runtime.io.video` and :mod:`runtime.io.streams`; an input that cannot be read
becomes a :class:`~runtime.records.frame.Skipped` event."""

from __future__ import annotations

import threading
import time
from typing import Iterator, Sequence

import cv2
import numpy as np

from runtime.errors import InputError
from runtime.io.sources import ImageInput, Input, StreamInput, VideoInput
from runtime.io.streams import iter_streams
from runtime.io.video import iter_video
from runtime.records.frame import Event, Frame, FrameInfo, Skipped


def as_bgr(image: np.ndarray, name: str) -> np.ndarray:
    """Check an in-memory image and return it as (h, w, 3) uint8 BGR."""
    if image.dtype != np.uint8:
        raise InputError(f"{name}: image must be uint8 (as OpenCV reads it), got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(f"{name}: image must be (h, w, 3) BGR, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{name}: image is empty, shape {image.shape}")
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def load_image(item: str | np.ndarray, index: int) -> tuple[str | None, np.ndarray]:
    """Read one item: returns (path or None, BGR uint8 image)."""
    if isinstance(item, np.ndarray):
        return None, as_bgr(item, f"image #{index}")
    try:
        image = cv2.imread(item, cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None:
        raise InputError(f"{item}: cannot be read as an image (corrupt or unsupported format)")
    return item, image


def read_image(inp: ImageInput) -> Event:
    """The frame of a still image, or a Skipped event when the file does not decode."""
    t0 = time.perf_counter()
    try:
        path, image = load_image(inp.item, inp.index)
    except InputError as exc:
        if isinstance(inp.item, np.ndarray):
            raise  # a caller's array of the wrong type or shape is a bug to fix, not an input to skip
        return Skipped(inp.name, str(exc))
    return Frame(image, FrameInfo(inp.name, "image", 0, read_start=t0), path, (time.perf_counter() - t0) * 1e3)


def is_live(inputs: Sequence[Input]) -> bool:
    """True when ``inputs`` are live streams; InputError when streams and files are mixed."""
    live = [isinstance(x, StreamInput) for x in inputs]
    if any(live) and not all(live):
        names = ", ".join(x.name for x in inputs if isinstance(x, StreamInput))
        raise InputError(f"live streams ({names}) cannot be mixed with files in one source; run them separately")
    return bool(live) and all(live)


def iter_frames(inputs: Sequence[Input], *, vid_stride: int = 1, max_frames: int | None = None,
                stream_buffer: int = 1, stop: threading.Event | None = None,
                on_stream=None, reconnect: int | None = None) -> Iterator[Event]:
    """Frames (and Skipped events) of ``inputs`` in order, decoded one at a time.

    Files are read one after the other; live streams (which cannot be mixed with files) are read
    round-robin, each by its own capture thread into a buffer of ``stream_buffer`` frames that
    drops the oldest. ``vid_stride`` keeps every n-th frame of videos and streams; ``max_frames``
    caps the frames taken from each video or stream. ``stop`` ends the iteration early;
    ``on_stream(stream)`` is called with every :class:`runtime.io.streams.LiveStream` opened;
    ``reconnect`` bounds a live source's reconnect attempts per outage (None: until stopped).
    """
    stop = stop or threading.Event()
    if is_live(inputs):
        yield from iter_streams(inputs, vid_stride=vid_stride, max_frames=max_frames, buffer=stream_buffer,
                                stop=stop, on_stream=on_stream, reconnect=reconnect)
        return
    for inp in inputs:
        if stop.is_set():
            return
        if isinstance(inp, ImageInput):
            yield read_image(inp)
        elif isinstance(inp, VideoInput):
            yield from iter_video(inp.path, vid_stride=vid_stride, max_frames=max_frames, stop=stop)
