"""Video files read frame by frame through OpenCV's FFmpeg backend, never whole."""

from __future__ import annotations

import math
import threading
import time
from typing import Iterator

import cv2

from runtime.errors import InputError
from runtime.records.frame import Event, Frame, FrameInfo, Skipped


def open_video(path: str) -> cv2.VideoCapture:
    """An opened capture of the video file ``path``; InputError naming it when it does not open."""
    try:
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    except cv2.error as exc:
        raise InputError(f"{path}: cannot be opened as a video ({str(exc).strip().splitlines()[-1]})") from None
    if not cap.isOpened():
        cap.release()
        raise InputError(f"{path}: cannot be opened as a video (corrupt, truncated, or a codec OpenCV's FFmpeg "
                         "cannot decode)")
    return cap


def video_facts(cap: cv2.VideoCapture) -> tuple[float | None, int | None]:
    """(fps, frame count) the container reports; None where it reports nothing usable."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    fps = float(fps) if fps and math.isfinite(fps) and 0 < fps < 1000 else None
    count = int(count) if count and math.isfinite(count) and count > 0 else None
    return fps, count


def iter_video(path: str, *, vid_stride: int = 1, max_frames: int | None = None,
               stop: threading.Event | None = None) -> Iterator[Event]:
    """Every ``vid_stride``-th frame of a video file (frames 0, s, 2s, ...), at most ``max_frames``.

    A file that does not open yields one Skipped event; one that ends before the frame count its
    container announces (truncated or corrupt) yields its frames, then a Skipped event that says
    where it stopped. Timestamps are the container's, in ms.
    """
    if vid_stride < 1:
        raise InputError(f"vid_stride must be >= 1, got {vid_stride}")
    try:
        cap = open_video(path)
    except InputError as exc:
        yield Skipped(path, str(exc))
        return
    fps, count = video_facts(cap)
    expected = None if count is None else math.ceil(count / vid_stride)
    if expected is not None and max_frames is not None:
        expected = min(expected, max_frames)
    position = taken = 0  # frames consumed from the container / frames yielded
    failed = None
    try:
        while (max_frames is None or taken < max_frames) and not (stop is not None and stop.is_set()):
            t0 = time.perf_counter()
            try:
                ok, image = cap.read()
            except cv2.error as exc:
                ok, image, failed = False, None, str(exc).strip().splitlines()[-1]
            if not ok or image is None:
                break
            timestamp = cap.get(cv2.CAP_PROP_POS_MSEC)
            if not math.isfinite(timestamp) or (timestamp <= 0 and position > 0 and fps):
                timestamp = position * 1e3 / fps if fps else None
            info = FrameInfo(path, "video", position, timestamp, fps, expected, t0)
            position += 1
            frame = Frame(image, info, path, (time.perf_counter() - t0) * 1e3)
            for _ in range(vid_stride - 1):  # skipped frames are demuxed, not converted
                if not cap.grab():
                    break
                position += 1
            taken += 1
            yield frame
        else:
            return  # max_frames reached or stopped: the rest is unread on purpose
    finally:
        cap.release()
    if taken == 0:
        yield Skipped(path, f"{path}: no frame could be decoded" + (f" ({failed})" if failed else ""))
    elif count is not None and position < count - 1:
        # (containers may announce one frame more than they hold)
        yield Skipped(path, f"{path}: video stopped at frame {position} of {count} (truncated or corrupt)"
                      + (f"; {failed}" if failed else ""), position)
