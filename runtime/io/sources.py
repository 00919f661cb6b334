"""Turn what a caller passes to ``predict`` / ``stream`` into a list of inputs: still images (files or
arrays), video files and live streams (cameras, network URLs). Nothing is decoded here."""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from runtime.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm"})
# What OpenCV's FFmpeg backend reads as a video (GIFs too: imread cannot animate them), as Ultralytics lists them.
VIDEO_SUFFIXES = frozenset({".asf", ".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts",
                            ".wmv", ".webm"})
LIST_SUFFIXES = frozenset({".txt", ".streams"})
STREAM_SCHEMES = ("rtsp://", "rtmp://", "http://", "https://", "tcp://", "udp://")
_CAMERA_DEVICE = re.compile(r"^/dev/video(\d+)$")


@dataclass(frozen=True)
class ImageInput:
    """A still image: a file path, or an in-memory BGR array (``item``) at ``index`` in the caller's list."""

    item: str | np.ndarray
    index: int

    @property
    def name(self) -> str:
        return self.item if isinstance(self.item, str) else f"image #{self.index}"


@dataclass(frozen=True)
class VideoInput:
    """A video file, read frame by frame."""

    path: str

    @property
    def name(self) -> str:
        return self.path


@dataclass(frozen=True)
class StreamInput:
    """A live source: a camera index or a stream URL (``target`` as OpenCV opens it). ``replay_fps``
    replays a video file as if it were a camera delivering that many frames per second (benchmarks, tests)."""

    target: int | str
    name: str
    replay_fps: float | None = None


Input = Union[ImageInput, VideoInput, StreamInput]
Source = Union[str, Path, int, np.ndarray, StreamInput, Sequence[Union[str, Path, int, np.ndarray, StreamInput]]]


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; InputError if there are none."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: folder holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def list_media(folder: Path) -> list[Path]:
    """Image and video files directly inside ``folder``, sorted by name; InputError if there are none."""
    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise InputError(f"{folder}: folder holds no images or videos "
                         f"(looked for {', '.join(sorted(suffixes))})")
    return files


def camera_index(item: str | int) -> int | None:
    """The camera index ``item`` names ("0", 0, "/dev/video0"), or None if it names no camera."""
    if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
        if item < 0:
            raise InputError(f"camera index must be >= 0, got {item}")
        return int(item)
    if isinstance(item, str):
        text = item.strip()
        if text.isdigit():
            return int(text)
        match = _CAMERA_DEVICE.match(text)
        if match:
            return int(match.group(1))
    return None


def is_stream_url(text: str) -> bool:
    return text.strip().lower().startswith(STREAM_SCHEMES)


def _file_input(path: Path, index: int) -> Input:
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return VideoInput(str(path))
    return ImageInput(str(path), index)  # an unknown suffix is tried as an image: a clear error if it is not one


def _read_list(path: Path) -> list[str]:
    """The sources listed in a .txt / .streams file: one per line; blank lines and # comments ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the list of sources ({exc})") from None
    entries = [line.strip() for line in lines]
    entries = [e for e in entries if e and not e.startswith("#")]
    if not entries:
        raise InputError(f"{path}: the list of sources is empty")
    base = path.parent
    return [e if camera_index(e) is not None or is_stream_url(e) or Path(e).is_absolute() else str(base / e)
            for e in entries]


def resolve_inputs(source: Source, _depth: int = 0) -> list[Input]:
    """Flatten what a caller passes (path, folder, glob, video, camera index, URL, .txt/.streams list,
    BGR ndarray, or a list of these) into a list of inputs, in order. Missing paths raise InputError."""
    if isinstance(source, (str, Path, np.ndarray, int, StreamInput)):
        items = [source]
    else:
        try:
            items = list(source)
        except TypeError:
            raise InputError(f"unsupported source {type(source).__name__}: pass a path, folder, glob, video, "
                             "camera index, stream URL, BGR ndarray or a list of these") from None
    inputs: list[Input] = []
    for item in items:
        index = len(inputs)
        if isinstance(item, np.ndarray):
            inputs.append(ImageInput(item, index))
            continue
        if isinstance(item, StreamInput):
            inputs.append(item)
            continue
        if isinstance(item, bool) or not isinstance(item, (str, Path, int, np.integer)):
            raise InputError(f"unsupported source {type(item).__name__}: pass a path, folder, glob, video, "
                             "camera index, stream URL, BGR ndarray or a list of these")
        if not isinstance(item, Path):
            cam = camera_index(item)
            if cam is not None and not (isinstance(item, str) and Path(item).is_file()):
                inputs.append(StreamInput(cam, f"camera {cam}"))
                continue
            if is_stream_url(str(item)):
                inputs.append(StreamInput(str(item).strip(), str(item).strip()))
                continue
        path = Path(item)
        if path.is_dir():
            inputs.extend(_file_input(p, index + k) for k, p in enumerate(list_media(path)))
        elif path.is_file():
            if path.suffix.lower() in LIST_SUFFIXES:
                if _depth > 0:
                    raise InputError(f"{path}: a list of sources cannot name another list")
                inputs.extend(resolve_inputs(_read_list(path), _depth + 1))
            else:
                inputs.append(_file_input(path, index))
        elif glob.has_magic(str(item)):
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True))
            files = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
            if not files:
                raise InputError(f"{item}: the pattern matches no images or videos")
            inputs.extend(_file_input(p, index + k) for k, p in enumerate(files))
        else:
            raise InputError(f"{path}: no such file or folder")
    # renumber image indices by position (used only to name in-memory arrays)
    return [ImageInput(x.item, k) if isinstance(x, ImageInput) else x for k, x in enumerate(inputs)]


def expand_source(source: Source) -> list[str | np.ndarray]:
    """Flatten a path, folder, array or list of these into a list of image paths and arrays (images only)."""
    out: list[str | np.ndarray] = []
    for inp in resolve_inputs(source):
        if not isinstance(inp, ImageInput):
            raise InputError(f"{inp.name}: not a still image")
        out.append(inp.item)
    return out
