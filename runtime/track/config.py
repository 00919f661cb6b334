"""Tracker settings: Ultralytics' tracker YAML keys and defaults, checked once with errors that name the key.

A tracker is named (``"bytetrack"``, ``"botsort.yaml"``) or given as the path of an Ultralytics tracker YAML (flat
``key: value`` pairs with a ``tracker_type``). Keys a YAML leaves out take that tracker's Ultralytics default; keys
the tracker does not use, values of the wrong type or out of range, a file that is missing or does not parse: one
:class:`~runtime.errors.InputError` naming the key and the file.

PyYAML reads the files (the same parser Ultralytics uses), so any YAML Ultralytics accepts reads the same here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import InputError

# Ultralytics 8.4.190 cfg/trackers/*.yaml, key for key.
_BYTE_KEYS = {"track_high_thresh": 0.25, "track_low_thresh": 0.1, "new_track_thresh": 0.25, "track_buffer": 30,
              "match_thresh": 0.8, "fuse_score": True}
DEFAULTS: dict[str, dict[str, Any]] = {
    "bytetrack": dict(_BYTE_KEYS),
    "botsort": {**_BYTE_KEYS, "gmc_method": "sparseOptFlow", "proximity_thresh": 0.5, "appearance_thresh": 0.8,
                "with_reid": False, "model": "auto"},
    "ocsort": {**_BYTE_KEYS, "delta_t": 3, "inertia": 0.2, "use_byte": False},
    "tracktrack": {"track_high_thresh": 0.6, "track_low_thresh": 0.25, "new_track_thresh": 0.7, "track_buffer": 30,
                   "match_thresh": 0.7, "lost_match_thr": 0.0, "iou_weight": 0.5, "reid_weight": 0.5,
                   "conf_weight": 0.1, "angle_weight": 0.05, "penalty_p": 0.2, "penalty_q": 0.4, "reduce_step": 0.05,
                   "tai_thr": 0.55, "min_track_len": 3, "gmc_method": "sparseOptFlow", "with_reid": False,
                   "model": "auto"},
}
UNSUPPORTED = {"fasttrack": "FastTracker", "deepocsort": "Deep OC-SORT"}
GMC_METHODS = ("sparseOptFlow", "orb", "sift", "ecc", "none")

_UNIT = "a number from 0 to 1"
_NONNEG = "a number >= 0"
_KINDS: dict[str, str] = {
    **dict.fromkeys(("track_high_thresh", "track_low_thresh", "new_track_thresh", "proximity_thresh",
                     "appearance_thresh", "tai_thr"), _UNIT),
    **dict.fromkeys(("match_thresh", "lost_match_thr", "iou_weight", "reid_weight", "conf_weight", "angle_weight",
                     "penalty_p", "penalty_q", "reduce_step", "inertia"), _NONNEG),
    "track_buffer": "an integer >= 0",
    **dict.fromkeys(("min_track_len", "delta_t"), "an integer >= 1"),
    **dict.fromkeys(("fuse_score", "with_reid", "use_byte"), "true or false"),
    "gmc_method": "one of " + ", ".join(GMC_METHODS),
    "model": "a string",
}


def _valid(kind: str, value: Any) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if kind == _UNIT:
        return number and 0 <= value <= 1
    if kind == _NONNEG:
        return number and value >= 0 and value != float("inf")
    if kind.startswith("an integer"):
        return isinstance(value, int) and not isinstance(value, bool) and value >= int(kind[-1])
    if kind == "true or false":
        return isinstance(value, bool)
    if kind.startswith("one of"):
        return value is None or value in GMC_METHODS or value == "None"
    return isinstance(value, str)


@dataclass(frozen=True)
class TrackerConfig:
    """A checked tracker configuration: ``tracker_type`` and every key of that tracker (read-only mapping).

    ``source`` names where it came from (a file path, or ``built-in <name>``) for error messages.
    """

    tracker_type: str
    settings: Mapping[str, Any]
    source: str = field(default="", compare=False)

    def __getitem__(self, key: str) -> Any:
        return self.settings[key]

    def replace(self, **changes: Any) -> TrackerConfig:
        """A copy with some keys changed, checked like a YAML's."""
        return build_config({"tracker_type": self.tracker_type, **self.settings, **changes},
                            self.source or "overrides")


def build_config(values: Mapping[str, Any], source: str) -> TrackerConfig:
    """Check a ``key: value`` mapping (an Ultralytics tracker YAML's content) and fill in the defaults."""
    if not isinstance(values, Mapping):
        raise InputError(f"{source}: a tracker YAML must be a mapping of keys to values, got {type(values).__name__}")
    tracker_type = values.get("tracker_type")
    if tracker_type is None:
        raise InputError(f"{source}: missing key 'tracker_type' (one of {', '.join(DEFAULTS)})")
    if tracker_type in UNSUPPORTED:
        raise InputError(f"{source}: tracker_type '{tracker_type}' ({UNSUPPORTED[tracker_type]}) is not supported; "
                         f"use one of {', '.join(DEFAULTS)}")
    if tracker_type not in DEFAULTS:
        raise InputError(f"{source}: unknown tracker_type {tracker_type!r}; use one of {', '.join(DEFAULTS)}")
    defaults = DEFAULTS[tracker_type]
    settings = dict(defaults)
    for key, value in values.items():
        if key == "tracker_type":
            continue
        if key not in defaults:
            raise InputError(f"{source}: unknown key {key!r} for tracker_type {tracker_type} "
                             f"(its keys: {', '.join(defaults)})")
        kind = _KINDS[key]
        if not _valid(kind, value):
            raise InputError(f"{source}: {key} must be {kind}, got {value!r}")
        settings[key] = value
    if settings.get("gmc_method") in ("none", "None"):
        settings["gmc_method"] = None
    if settings.get("with_reid"):
        raise InputError(f"{source}: with_reid: true needs a ReID model, which this runtime does not run; "
                         "set with_reid: false")
    if settings["track_low_thresh"] > settings["track_high_thresh"]:
        raise InputError(f"{source}: track_low_thresh ({settings['track_low_thresh']}) is above "
                         f"track_high_thresh ({settings['track_high_thresh']})")
    return TrackerConfig(tracker_type, MappingProxyType(settings), source)


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read the tracker YAML ({e.strerror or e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise InputError(f"{path}: not valid YAML{line} ({getattr(e, 'problem', None) or e})") from None


def tracker_config(name_or_yaml: str | Path | TrackerConfig) -> TrackerConfig:
    """The configuration of a tracker given by name (``bytetrack``, ``botsort``, ``tracktrack``, ``ocsort``, with or
    without ``.yaml``) or by the path of a tracker YAML. An existing file wins over a built-in name."""
    if isinstance(name_or_yaml, TrackerConfig):
        return name_or_yaml
    path = Path(name_or_yaml)
    if path.is_file():
        return build_config(_read_yaml(path), str(path))
    stem = path.stem if path.suffix in (".yaml", ".yml") else str(name_or_yaml)
    if path.parent == Path(".") and stem in DEFAULTS:
        return build_config({"tracker_type": stem}, f"built-in {stem}")
    if path.suffix in (".yaml", ".yml") or path.parent != Path("."):
        raise InputError(f"{path}: tracker YAML not found")
    if stem in UNSUPPORTED:
        raise InputError(f"tracker {stem!r} ({UNSUPPORTED[stem]}) is not supported; use one of {', '.join(DEFAULTS)}")
    raise InputError(f"unknown tracker {str(name_or_yaml)!r}: use one of {', '.join(DEFAULTS)} or a tracker YAML path")
