"""The frames a Predictor runs: one record per still image or video frame, with where it came from,
and the events of inputs that could not be read. :func:`iter_frames` reads them lazily, in order."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator, Sequence, Union

import numpy as np

from .errors import InputError
from .sources import ImageInput, Input, StreamInput, VideoInput, load_image


@dataclass(frozen=True)
class FrameInfo:
    """Where a frame came from.

    ``source``: the file path, ``camera N``, the stream URL, or ``image #k`` for an in-memory array;
    ``kind``: "image", "video" or "stream"; ``index``: the frame's index in its source (0 for an
    image; stream frames count every captured frame, dropped ones too); ``timestamp_ms``: the frame's
    time in the container (video files) or the capture wall clock in ms since the epoch (streams),
    None for images; ``fps`` and ``frame_count`` (frames the source will give after ``vid_stride``)
    when known; ``read_start``: ``time.perf_counter()`` when decoding began (streams: when the frame
    was captured), the start of its latency.
    """

    source: str
    kind: str
    index: int
    timestamp_ms: float | None = None
    fps: float | None = None
    frame_count: int | None = None
    read_start: float = 0.0


@dataclass(frozen=True)
class Frame:
    """A decoded frame: (h, w, 3) uint8 BGR ``image``, its ``info``, the file it came from (None for
    arrays and streams) and the ms its decoding took."""

    image: np.ndarray
    info: FrameInfo
    path: str | None
    read_ms: float


@dataclass(frozen=True)
class Skipped:
    """An input (or part of one) that could not be read: ``message`` names the source and the reason."""

    source: str
    message: str
    frame_index: int | None = None

    def __str__(self) -> str:
        return self.message


Event = Union[Frame, Skipped]


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
                on_stream=None) -> Iterator[Event]:
    """Frames (and Skipped events) of ``inputs`` in order, decoded one at a time.

    Files are read one after the other; live streams (which cannot be mixed with files) are read
    round-robin, each by its own capture thread into a buffer of ``stream_buffer`` frames that
    drops the oldest. ``vid_stride`` keeps every n-th frame of videos and streams; ``max_frames``
    caps the frames taken from each video or stream. ``stop`` ends the iteration early;
    ``on_stream(stream)`` is called with every :class:`runtime.streams.LiveStream` opened.
    """
    from .streams import iter_streams
    from .video import iter_video

    stop = stop or threading.Event()
    if is_live(inputs):
        yield from iter_streams(inputs, vid_stride=vid_stride, max_frames=max_frames, buffer=stream_buffer,
                                stop=stop, on_stream=on_stream)
        return
    for inp in inputs:
        if stop.is_set():
            return
        if isinstance(inp, ImageInput):
            yield read_image(inp)
        elif isinstance(inp, VideoInput):
            yield from iter_video(inp.path, vid_stride=vid_stride, max_frames=max_frames, stop=stop)
