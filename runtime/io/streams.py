"""Live sources (cameras, network streams): a capture thread per source that keeps only the latest
frames, so the latency from capture to Result stays bounded when inference is slower than the source.

The capture thread reads as fast as the source delivers into a buffer of ``buffer`` frames; when the
buffer is full the oldest frame is dropped and counted. A source that stops delivering (or cannot be
opened) is reopened with capped exponential backoff (:func:`backoff_delays`: 0.5 s doubling to 30 s)
until it is back or the run is stopped, so a camera that reboots does not end a run that is meant to
last; ``reconnect=N`` gives up after N attempts per outage with a :class:`~runtime.errors.StreamError`
that names the source, after the frames it delivered. Each outage is logged once when it starts and once
when it ends, and counted (``outages``, ``outage_s``); frame indices count on across it, and frames
captured before it are not delivered after it.
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

BACKOFF_FIRST_S = 0.5  # the wait before the first reconnect attempt of an outage
BACKOFF_MAX_S = 30.0  # the longest wait between two attempts
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


def backoff_delays(first: float = BACKOFF_FIRST_S, longest: float = BACKOFF_MAX_S) -> Iterator[float]:
    """The waits before each reconnect attempt of an outage: ``first``, doubling, then ``longest`` on end."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, longest)


class LiveStream:
    """One live source read by a capture thread into a bounded latest-frame buffer.

    ``dropped`` counts frames that were captured but replaced by newer ones before inference took
    them; ``captured`` every frame read from the source; ``max_queued`` the deepest the buffer got;
    ``outages`` how often the source was lost (or could not be opened), ``outage_s`` for how long in all,
    ``reconnects`` how often it came back. ``reconnect``: attempts per outage before giving up (None: until
    the stream is closed).
    Capture times and reconnect waits are on :data:`CLOCK` (as it was when the stream opened).
    """

    def __init__(self, inp: StreamInput, *, buffer: int = 1, vid_stride: int = 1,
                 opener: Callable[[StreamInput], Any] | None = None, reconnect: int | None = None) -> None:
        if buffer < 1:
            raise InputError(f"stream_buffer must be >= 1, got {buffer}")
        if vid_stride < 1:
            raise InputError(f"vid_stride must be >= 1, got {vid_stride}")
        if reconnect is not None and reconnect < 0:
            raise InputError(f"reconnect must be >= 0 (or None: until stopped), got {reconnect}")
        self.input, self.name = inp, inp.name
        self._attempts = reconnect
        self._open = opener or open_capture
        self._clock = CLOCK
        self._stride = vid_stride
        self._frames: deque[Frame] = deque(maxlen=buffer)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ended = False
        self._error: StreamError | None = None
        self.captured = self.dropped = self.max_queued = self.reconnects = self.outages = 0
        self.outage_s = 0.0
        self.fps: float | None = None  # the source's, once it has opened
        self._thread = threading.Thread(target=self._run, name=f"yolo-capture {self.name}", daemon=True)
        self._thread.start()

    def _reconnect(self, initial: bool = False) -> Any:
        """Reopen the source with backoff until it opens (the capture), the stream is closed (None) or the
        attempts run out (StreamError). Frames still buffered from before the outage are dropped once it
        is back: a newer frame follows at once."""
        what = "cannot be opened" if initial else f"stopped after {self.captured} frames"
        until = "until it is back" if self._attempts is None else f"up to {self._attempts} times"
        LOGGER.warning("%s: stream %s; reconnecting %s", self.name, what, until)
        self.outages += 1
        start = self._clock.monotonic()
        for attempt, delay in enumerate(backoff_delays(), 1):
            if self._attempts is not None and attempt > self._attempts:
                break
            if self._clock.wait(self._stop, delay):
                return None
            cap = self._open(self.input)
            if cap.isOpened():
                lasted = self._clock.monotonic() - start
                self.reconnects += 1
                self.outage_s += lasted
                with self._cond:
                    self.dropped += len(self._frames)
                    self._frames.clear()
                LOGGER.warning("%s: stream back after %.1f s (%d attempts)", self.name, lasted, attempt)
                return cap
            cap.release()
        self.outage_s += self._clock.monotonic() - start
        raise StreamError(f"{self.name}: stream {what}; {self._attempts} reconnect attempts failed")

    def _first_capture(self) -> Any:
        """The opened source, after as many attempts as it takes (None: closed before it opened). A replayed
        file that does not open fails at once."""
        cap = self._open(self.input)
        if cap.isOpened():
            return cap
        cap.release()
        if self.input.replay_fps is not None:
            raise StreamError(f"{self.name}: stream cannot be opened")
        return self._reconnect(initial=True)

    def _run(self) -> None:
        """The capture thread: open, then read frame after frame into the buffer, reopening when the source
        stops, until the stream is closed or gives up."""
        cap = None
        try:
            cap = self._first_capture()
            self.fps = video_facts(cap)[0] if cap is not None else None
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
        except Exception as exc:  # noqa: BLE001 - a capture backend's own failure ends this stream, named
            self._error = StreamError(f"{self.name}: stream failed ({type(exc).__name__}: {exc})")
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
                 buffer: int = 1, stop: threading.Event | None = None, on_stream=None,
                 reconnect: int | None = None) -> Iterator[Event]:
    """Frames of live sources, round-robin, each from its own capture thread; see :class:`LiveStream`."""
    streams: list[LiveStream] = []
    try:
        for inp in inputs:
            stream = LiveStream(inp, buffer=buffer, vid_stride=vid_stride, reconnect=reconnect)
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
