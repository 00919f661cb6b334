"""Multi-object trackers without torch: ByteTrack, BoT-SORT (no ReID), TrackTrack and OC-SORT, behaving as
Ultralytics 8.4.190's trackers do (same ids, same boxes) on the same detections.

>>> from runtime.track import Detections, make_tracker
>>> tracker = make_tracker("bytetrack")            # or "botsort", "tracktrack", "ocsort", or a tracker YAML path
>>> tracks = tracker.update(Detections(xyxy, scores, class_ids), frame)   # once per frame, in order
>>> tracks.track_ids, tracks.xyxy, tracks.det_index

Interface:

* :class:`Detections`: one frame's boxes (x1y1x2y2, original-image pixels), scores and class ids.
* :class:`Tracker`: ``update(detections, image=None) -> Tracks`` once per frame; ``reset()`` for a new video.
  ``image`` (BGR) is only read by trackers with camera-motion compensation (``botsort``, ``tracktrack``); without it
  they track without compensation. Boxes with a non-positive side or non-finite numbers are ignored.
* :class:`Tracks`: the confirmed tracks of the frame in Ultralytics' order: the tracker's boxes, ids, scores,
  classes and ``det_index``, the index of the detection each was matched to in this frame.
* :data:`TRACKERS`: name -> class. :func:`make_tracker` builds one from a name, a YAML or a
  :class:`TrackerConfig`; :func:`tracker_config` reads and checks the settings (Ultralytics' keys and defaults).

Each tracker counts its own ids from 1 (Ultralytics' per-tracker counter), so streams never share ids.
Not supported: ReID (``with_reid: true`` is refused), oriented boxes, FastTracker and Deep OC-SORT, and
TrackTrack's recovery of detections a looser NMS would have kept (it needs the raw predictions).
``track_buffer`` counts frames whatever the frame rate, as in Ultralytics 8.4.
"""

from __future__ import annotations

from pathlib import Path

from runtime.track.base import Tracker
from runtime.track.bytetrack import BoTSORT, ByteTrack
from runtime.track.config import TrackerConfig, tracker_config
from runtime.track.ocsort import OCSORT
from runtime.track.results import SourceTrackers, tracked
from runtime.track.tracktrack import TrackTrack
from runtime.track.types import Detections, Tracks

TRACKERS: dict[str, type[Tracker]] = {"bytetrack": ByteTrack, "botsort": BoTSORT, "tracktrack": TrackTrack,
                                      "ocsort": OCSORT}


DEFAULT_TRACKER = "bytetrack"  # Ultralytics' default is tracktrack, whose recovery of NMS-suppressed boxes is not here


def _config(name_or_yaml: str | Path | TrackerConfig, overrides: dict) -> TrackerConfig:
    config = tracker_config(name_or_yaml)
    return config.replace(**overrides) if overrides else config


def make_tracker(name_or_yaml: str | Path | TrackerConfig = DEFAULT_TRACKER, **overrides) -> Tracker:
    """A new tracker from a name, a tracker YAML path or a config; ``overrides`` change single keys
    (checked like the YAML's)."""
    config = _config(name_or_yaml, overrides)
    return TRACKERS[config.tracker_type](config)


def source_trackers(name_or_yaml: str | Path | TrackerConfig = DEFAULT_TRACKER, persist: bool = False,
                    **overrides) -> SourceTrackers:
    """Trackers for the sources of a stream of Results, one per video, image or live stream (see
    :mod:`runtime.track.results`); the settings are checked here, before any frame is read."""
    config = _config(name_or_yaml, overrides)
    return SourceTrackers(lambda: TRACKERS[config.tracker_type](config), config["track_buffer"], persist)


__all__ = ["Detections", "Tracks", "Tracker", "TrackerConfig", "TRACKERS", "tracker_config", "make_tracker",
           "DEFAULT_TRACKER", "SourceTrackers", "source_trackers", "tracked",
           "ByteTrack", "BoTSORT", "TrackTrack", "OCSORT"]
