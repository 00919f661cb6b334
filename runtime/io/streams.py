"""Live sources (cameras, network streams): a capture thread per source that keeps only the latest
frames, so the latency from capture to Result stays bounded when inference is slower than the source.

The capture thread reads as fast as the source delivers into a buffer of ``buffer`` frames; when the
buffer is full the oldest frame is dropped and counted. A source that stops delivering is reopened
with backoff (:data:`RETRY_DELAYS_S`); when every attempt fails the stream ends with a
:class:`~runtime.errors.StreamError` that names it, after the frames it delivered.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any, Callable, Iterator, Sequence

import cv2

from runtime.errors import InputError, StreamError
from runtime.records.frame import Event, Frame, FrameInfo
from runtime.io.clock import SYSTEM_CLOCK, Clock
from runtime.io.sources import StreamInput
from runtime.io.video import video_facts

LOGGER = logging.getLogger(__name__)

RETRY_DELAYS_S: tuple[float, ...] = (0.5, 1.0, 2.0)  # waits before each reconnect attempt
_POLL_S = 0.05  # how often a waiting reader checks whether it was asked to stop
CLOCK: Clock = SYSTEM_CLOCK  # what LiveStream and PacedCapture (unless given one) read and wait on; tests swap it


class PacedCapture:
    """A video file read as a camera would deliver it: frame n is handed out no earlier than n / fps
    seconds after the first read (the capture thread reads continuously, so frames inference has no
    time for are dropped from its buffer, as for a camera). ``capture_time`` is when the last frame
    was due, on ``clock`` (default :data:`CLOCK`)."""

    def __init__(self, path: str, fps: float, clock: Clock | None = None) -> None:
        if not fps > 0:
            raise InputError(f"replay fps must be > 0, got {fps}")
        self._clock = clock or CLOCK
        self._cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        self._period = 1.0 / fps
        self._start: float | None = None
        self._next = 0
        self.capture_time = 0.0

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's spelling
        return self._cap.isOpened()

    def get(self, prop: int) -> float:
        return self._cap.get(prop)

    def read(self) -> tuple[bool, Any]:
        now = self._clock.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._next * self._period
        if due > now:
            self._clock.sleep(due - now)
        self.capture_time = max(due, now)
        self._next += 1
        return self._cap.read()

    def release(self) -> None:
        self._cap.release()


def open_capture(inp: StreamInput) -> Any:
    """The OpenCV capture of a live input (a file replayed at ``replay_fps`` for benchmarks and tests)."""
    if inp.replay_fps is not None:
        return PacedCapture(str(inp.target), inp.replay_fps)
    cap = cv2.VideoCapture(inp.target)
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # where the backend honours it: no stale frames in the driver
    return cap


class LiveStream:
    """One live source read by a capture thread into a bounded latest-frame buffer.

    ``dropped`` counts frames that were captured but replaced by newer ones before inference took
    them; ``captured`` every frame read from the source; ``max_queued`` the deepest the buffer got.
    Capture times and reconnect waits are on :data:`CLOCK` (as it was when the stream opened).
    """

    def __init__(self, inp: StreamInput, *, buffer: int = 1, vid_stride: int = 1,
                 opener: Callable[[StreamInput], Any] | None = None) -> None:
        if buffer < 1:
            raise InputError(f"stream_buffer must be >= 1, got {buffer}")
        if vid_stride < 1:
            raise InputError(f"vid_stride must be >= 1, got {vid_stride}")
        self.input, self.name = inp, inp.name
        self._open = opener or open_capture
        self._clock = CLOCK
        self._stride = vid_stride
        self._frames: deque[Frame] = deque(maxlen=buffer)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ended = False
        self._error: StreamError | None = None
        self.captured = self.dropped = self.max_queued = self.reconnects = 0
        cap = self._open(inp)
        if not cap.isOpened():
            cap.release()
            cap = self._reconnect(initial=True)
        self._cap = cap
        self.fps = video_facts(cap)[0] if cap is not None else None
        self._thread = threading.Thread(target=self._run, name=f"yolo-capture {self.name}", daemon=True)
        self._thread.start()

    def _reconnect(self, initial: bool = False) -> Any:
        """Reopen the source with backoff; the capture, or StreamError when every attempt fails."""
        for attempt, delay in enumerate(RETRY_DELAYS_S, 1):
            if self._clock.wait(self._stop, delay):
                return None
            LOGGER.warning("%s: %s, reconnecting (attempt %d of %d)", self.name,
                           "cannot open" if initial else "stream stopped", attempt, len(RETRY_DELAYS_S))
            cap = self._open(self.input)
            if cap.isOpened():
                self.reconnects += 1
                return cap
            cap.release()
        what = "cannot be opened" if initial else f"stopped after {self.captured} frames"
        raise StreamError(f"{self.name}: stream {what}; {len(RETRY_DELAYS_S)} reconnect attempts failed")

    def _run(self) -> None:
        cap = self._cap
        try:
            while not self._stop.is_set() and cap is not None:
                try:
                    ok, image = cap.read()
                except cv2.error:
                    ok, image = False, None
                t = getattr(cap, "capture_time", 0.0) or self._clock.monotonic()
                if not ok or image is None:
                    cap.release()
                    if self.input.replay_fps is not None:
                        break  # a replayed file has simply ended
                    cap = self._reconnect()
                    continue
                index = self.captured
                self.captured += 1
                if index % self._stride:
                    continue
                info = FrameInfo(self.name, "stream", index,
                                 self._clock.wall() * 1e3 - (self._clock.monotonic() - t) * 1e3, self.fps, None, t)
                with self._cond:
                    if len(self._frames) == self._frames.maxlen:
                        self.dropped += 1
                    self._frames.append(Frame(image, info, None, (self._clock.monotonic() - t) * 1e3))
                    self.max_queued = max(self.max_queued, len(self._frames))
                    self._cond.notify_all()
        except StreamError as exc:
            self._error = exc
        finally:
            if cap is not None:
                cap.release()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def get(self, stop: threading.Event | None = None) -> Frame | None:
        """The oldest buffered frame (the latest one with ``buffer=1``), waiting for one; None once the
        stream has ended or ``stop`` is set; StreamError when it failed for good."""
        with self._cond:
            while not self._frames:
                if self._error is not None:
                    raise self._error
                if self._ended or (stop is not None and stop.is_set()):
                    return None
                self._cond.wait(_POLL_S)
            return self._frames.popleft()

    def close(self) -> None:
        """Stop the capture thread and release the source."""
        self._stop.set()
        self._thread.join(timeout=5.0)


def iter_streams(inputs: Sequence[StreamInput], *, vid_stride: int = 1, max_frames: int | None = None,
                 buffer: int = 1, stop: threading.Event | None = None, on_stream=None) -> Iterator[Event]:
    """Frames of live sources, round-robin, each from its own capture thread; see :class:`LiveStream`."""
    streams: list[LiveStream] = []
    try:
        for inp in inputs:
            stream = LiveStream(inp, buffer=buffer, vid_stride=vid_stride)
            streams.append(stream)
            if on_stream is not None:
                on_stream(stream)
        taken = {id(s): 0 for s in streams}
        active = list(streams)
        while active and not (stop is not None and stop.is_set()):
            for stream in list(active):
                frame = stream.get(stop)
                if frame is None:
                    active.remove(stream)
                    continue
                taken[id(stream)] += 1
                if max_frames is not None and taken[id(stream)] >= max_frames:
                    active.remove(stream)
                yield frame
    finally:
        for stream in streams:
            stream.close()
