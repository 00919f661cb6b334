"""Annotated videos written whole or closed cleanly: frames go to a hidden temporary file beside the
target, which is renamed onto it once the writer is released (so the container is complete and
playable, also after an interrupt), and removed if no frame was written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from runtime.errors import InputError

DEFAULT_CODEC = "mp4v"
_CODEC_SUFFIX = {"mp4v": ".mp4", "avc1": ".mp4", "h264": ".mp4", "hev1": ".mp4", "hvc1": ".mp4",
                 "mjpg": ".avi", "xvid": ".avi", "divx": ".avi", "vp80": ".webm", "vp90": ".webm"}


def video_suffix(codec: str) -> str:
    """The container a FourCC is written in: .mp4, .avi or .webm (.avi for codecs not listed)."""
    return _CODEC_SUFFIX.get(codec.lower(), ".avi")


def _fourcc(codec: str) -> int:
    if len(codec) != 4 or not codec.isascii():
        raise InputError(f"video codec must be a four-character code such as mp4v, avc1, MJPG; got {codec!r}")
    return cv2.VideoWriter_fourcc(*codec)


def check_codec(codec: str) -> None:
    """InputError when this OpenCV build cannot write ``codec``, found before any frame is run."""
    fourcc = _fourcc(codec)
    with tempfile.TemporaryDirectory() as folder:
        probe = os.path.join(folder, "probe" + video_suffix(codec))
        writer = cv2.VideoWriter(probe, fourcc, 10.0, (64, 48))
        try:
            ok = writer.isOpened() and (writer.write(np.zeros((48, 64, 3), np.uint8)) or True)
        finally:
            writer.release()
        if not ok:
            raise InputError(f"video codec {codec!r} cannot be written by this OpenCV build "
                             f"(try --video-codec mp4v or MJPG)")


class VideoSink:
    """An annotated video at ``path``, ``fps`` frames per second, frames of (width, height) ``size_wh``.

    :meth:`close` releases the writer and renames the temporary file onto ``path``; frames of
    another size (a stream that reconnected at another resolution) are resized to the first one.
    """

    def __init__(self, path: str | Path, fps: float, size_wh: tuple[int, int], codec: str = DEFAULT_CODEC) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".part" + self.path.suffix,
                                    dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(name)
        self.size_wh = (int(size_wh[0]), int(size_wh[1]))
        self._writer = cv2.VideoWriter(str(self._tmp), _fourcc(codec), float(fps), self.size_wh)
        if not self._writer.isOpened():
            self._tmp.unlink(missing_ok=True)
            raise InputError(f"{self.path}: cannot write a {codec} video of {self.size_wh[0]}x{self.size_wh[1]} "
                             f"at {fps:g} fps")
        self.frames = 0
        self._closed = False

    def write(self, image_bgr: np.ndarray) -> None:
        if (image_bgr.shape[1], image_bgr.shape[0]) != self.size_wh:
            image_bgr = cv2.resize(image_bgr, self.size_wh, interpolation=cv2.INTER_AREA)
        self._writer.write(image_bgr)
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file and move it onto ``path``; None (and nothing left behind) if it has no frames."""
        if self._closed:
            return self.path if self.path.exists() and self.frames else None
        self._closed = True
        try:
            self._writer.release()
            if not self.frames:
                return None
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._tmp, 0o666 & ~umask)
            os.replace(self._tmp, self.path)
            return self.path
        finally:
            self._tmp.unlink(missing_ok=True)
