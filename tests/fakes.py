"""Stand-ins for time and cameras, so tests of live sources depend on the order of events, never on how fast a
busy machine runs them.

* :class:`FakeClock` -- a :class:`runtime.io.clock.Clock` whose time moves only when something sleeps or waits
  on it (at once, recorded): patch it in as ``runtime.io.streams.CLOCK``.
* :class:`FakeCamera` -- a capture that opens or not, delivers frames at once and stops after ``fail_after``.
* :class:`GatedCamera` -- a capture that delivers a frame only when the test lets it, so how many frames it
  captures while the consumer works is set by the test.

Frame n of a fake camera is filled with ``n % 256``, so a test can tell which frame a Result came from.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from runtime.io.clock import Clock

FRAME_HW = (96, 128)
WALL_AT_ZERO = 1.7e9  # the fake wall clock (seconds since the epoch) when the fake monotonic clock reads 0


class FakeClock(Clock):
    """Time that moves only when told: ``sleep(s)`` and an unanswered ``wait(event, s)`` advance it by ``s`` at
    once; every sleep and wait is recorded. Starts at ``start`` (not 0: a capture time of 0 reads as none)."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self.waits: list[float] = []
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL_AT_ZERO + self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        self.waits.append(seconds)
        if event.is_set():
            return True
        self.advance(seconds)
        return event.is_set()


def camera_frame(n: int) -> np.ndarray:
    return np.full(FRAME_HW + (3,), n % 256, np.uint8)


class FakeCamera:
    """An OpenCV-like capture reporting ``fps``: opens unless ``opens`` is False, delivers frames at once and
    stops delivering after ``fail_after`` frames (None: never). Every camera made is listed in ``opened``."""

    opened: list["FakeCamera"] = []

    def __init__(self, fps: float = 30.0, fail_after: int | None = None, opens: bool = True) -> None:
        self.fps, self.fail_after, self.opens = fps, fail_after, opens
        self.n = 0
        FakeCamera.opened.append(self)

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's spelling
        return self.opens

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        if self.fail_after is not None and self.n >= self.fail_after:
            return False, None
        frame = camera_frame(self.n)
        self.n += 1
        return True, frame

    def release(self) -> None:
        pass


class GatedCamera(FakeCamera):
    """A camera whose ``read`` waits until the test lets another frame through (:meth:`allow`); each frame it
    delivers advances ``clock`` (if given) by one frame period, as a real camera's read takes that long.
    :meth:`run_free` lets every read through (to end a test: a closing stream must not wait on the gate)."""

    def __init__(self, fps: float = 200.0, clock: FakeClock | None = None) -> None:
        super().__init__(fps)
        self.clock = clock
        self.delivered = 0
        self._allowed = 0
        self._free = False
        self._cond = threading.Condition()

    def allow(self, frames: int) -> None:
        with self._cond:
            self._allowed += frames
            self._cond.notify_all()

    def run_free(self) -> None:
        with self._cond:
            self._free = True
            self._cond.notify_all()

    def wait_delivered(self, frames: int, timeout: float = 60.0) -> bool:
        """Wait until ``frames`` frames have been read in all; False if that did not happen within ``timeout``
        seconds (a guard against a hang, not a measurement)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.delivered >= frames, timeout)

    def read(self):
        with self._cond:
            self._cond.wait_for(lambda: self._free or self._allowed > self.delivered)
            if self.clock is not None:
                self.clock.advance(1 / self.fps)
            ok, frame = super().read()
            self.delivered += 1
            self._cond.notify_all()
            return ok, frame
