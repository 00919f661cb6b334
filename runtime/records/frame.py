"""Where each image or video frame came from, the decoded frame, and the inputs that could not be read.

Plain records: they import nothing from the input layer, so a Result can carry a :class:`FrameInfo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np


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
