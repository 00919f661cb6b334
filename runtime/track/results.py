"""Tracking a stream of Results: one tracker per source, ids on every Result, as Ultralytics' track mode.

Each Result goes through the tracker of its source, in frame order. The tracked Result keeps the confirmed
tracks only: the detections they matched (with their masks, keypoints) under the tracker's boxes, clipped to
the image, with the track's score, class and id. A video file, an image or a live stream gets a tracker of
its own when its first frame arrives (Ultralytics resets its tracker whenever the source changes), so
several streams batched together never mix ids. ``persist`` is Ultralytics' ``persist=True``: the trackers
outlive the call, and files share one tracker that is never reset. A live stream's tracker is reset when
its frames stop for longer than ``track_buffer`` frames' worth of time (an outage its tracks cannot span);
its ids go on counting, so no id is given twice in one stream.

One difference from Ultralytics 8.4: when a frame yields no confirmed track, Ultralytics passes that frame's
detections on without ids unless a new track is waiting for confirmation; here such a frame has no
detections, so every Result of a tracking stream carries ids.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable

import numpy as np

from runtime.records.result import Result
from runtime.track.base import Tracker
from runtime.track.types import Detections

_FILES = "files"  # the one tracker all files share under persist
_DEFAULT_FPS = 30.0


def tracked(result: Result, tracker: Tracker, image: np.ndarray | None) -> Result:
    """``result`` after one update of ``tracker`` (its next frame): the confirmed tracks, in the tracker's
    order, with their boxes clipped to the image, scores, classes and ids; ``speed_ms["track"]`` is the ms
    the update took."""
    t0 = time.perf_counter()
    tracks = tracker.update(Detections(result.xyxy, result.scores, result.class_ids), image)
    kept = result[tracks.det_index]
    h, w = result.orig_hw
    boxes = tracks.xyxy.astype(np.float32, copy=True)
    np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
    return replace(kept, xyxy=boxes, scores=tracks.scores.astype(np.float32),
                   class_ids=tracks.class_ids.astype(np.int32), track_ids=tracks.track_ids.astype(np.int64),
                   speed_ms={**result.speed_ms, "track": (time.perf_counter() - t0) * 1e3})


class SourceTrackers:
    """The trackers of the sources a stream of Results comes from; call it with each (Result, image) in
    order. ``make`` builds a new tracker of the chosen kind; ``track_buffer`` bounds a live outage."""

    def __init__(self, make: Callable[[], Tracker], track_buffer: int, persist: bool = False) -> None:
        self._make = make
        self._track_buffer = track_buffer
        self.persist = persist
        self._trackers: dict[str, Tracker] = {}
        self._file_key: str | None = None  # the file whose tracker is kept (all files share one under persist)
        self._last_ms: dict[str, float] = {}
        self._lock = threading.Lock()  # a persisted set may serve several calls at once

    def _tracker(self, result: Result) -> Tracker:
        frame = result.frame
        if frame is not None and frame.kind == "stream":
            key = frame.source
            tracker = self._trackers.get(key) or self._trackers.setdefault(key, self._make())
            if self._outage(key, frame.timestamp_ms, frame.fps):
                tracker.reset(keep_ids=True)
            return tracker
        key = _FILES if self.persist else (frame.source if frame is not None else result.path or "")
        if key != self._file_key:
            self._trackers.pop(self._file_key, None)
            self._file_key = key
        return self._trackers.get(key) or self._trackers.setdefault(key, self._make())

    def _outage(self, key: str, timestamp_ms: float | None, fps: float | None) -> bool:
        """True when a live stream's frames stopped for longer than ``track_buffer`` frames' worth of time."""
        if timestamp_ms is None:
            return False
        last = self._last_ms.get(key)
        self._last_ms[key] = timestamp_ms
        return last is not None and timestamp_ms - last > self._track_buffer * 1e3 / (fps or _DEFAULT_FPS)

    def __call__(self, result: Result, image: np.ndarray | None) -> Result:
        with self._lock:
            return tracked(result, self._tracker(result), image)
