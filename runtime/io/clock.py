"""The clock live sources read and wait on, in one place so tests can drive it.

:class:`~runtime.io.streams.LiveStream` and :class:`~runtime.io.streams.PacedCapture` use
:data:`runtime.io.streams.CLOCK`, the system clock below (a PacedCapture may be given its own). A test patches in
(or passes) a clock whose time moves only when it says, so pacing, frame timestamps and reconnect backoff are
exact and nothing really waits.
"""

from __future__ import annotations

import threading
import time


class Clock:
    """The system clock: ``monotonic()`` in seconds (``time.perf_counter``, the clock of
    :attr:`FrameInfo.read_start <runtime.records.frame.FrameInfo.read_start>`), ``wall()`` in seconds since the
    epoch, ``sleep(seconds)``, and ``wait(event, seconds)``: wait for ``event`` at most ``seconds``, True when it
    was set."""

    def monotonic(self) -> float:
        return time.perf_counter()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(seconds)


SYSTEM_CLOCK = Clock()
