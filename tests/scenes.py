"""Synthetic pictures and video clips for tests that need real-ish images without Ultralytics' sample photos: a
smooth background, sensor noise and a few dozen filled shapes of many colours and sizes, drawn with OpenCV from
a seed (the same seed gives the same picture)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# name -> (height, width, seed), in name order: the shapes of the two photos Ultralytics ships
PICTURES = {"portrait.jpg": (1080, 810, 1), "wide.jpg": (720, 1280, 2)}


def scene(height: int, width: int, seed: int = 0, shapes: int = 40) -> np.ndarray:
    """A (height, width, 3) uint8 BGR picture: a colour gradient, noise and ``shapes`` rectangles and ellipses."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:height, :width].astype(np.float32)
    corners = rng.uniform(30, 220, (3, 3))
    image = np.stack([c[0] + (c[1] - c[0]) * xs / width + (c[2] - c[0]) * ys / height for c in corners], axis=2)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    scale = min(height, width)
    for _ in range(shapes):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        sx, sy = (int(v) for v in rng.uniform(0.03, 0.25, 2) * scale)
        if rng.random() < 0.5:
            cv2.rectangle(image, (cx - sx, cy - sy), (cx + sx, cy + sy), colour, -1)
        else:
            cv2.ellipse(image, (cx, cy), (sx, sy), float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return image


def write_pictures(folder: Path, names: tuple[str, ...] = tuple(PICTURES)) -> list[Path]:
    """Write the named :data:`PICTURES` as JPEGs into ``folder``; their paths, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        h, w, seed = PICTURES[name]
        path = folder / name
        assert cv2.imwrite(str(path), scene(h, w, seed)), path
        paths.append(path)
    return paths


def pan(n: int, size_wh: tuple[int, int], seed: int = 3) -> list[np.ndarray]:
    """``n`` frames of ``size_wh`` panning over one scene: every frame a little different, like a moving camera."""
    w, h = size_wh
    big = scene(h + 2 * n, w + 4 * n, seed)
    return [np.ascontiguousarray(big[2 * k:2 * k + h, 4 * k:4 * k + w]) for k in range(n)]


CLIP_FPS = 10.0
CLIP_SIZE_WH = (256, 192)


def clip_frames(n: int = 12) -> list[np.ndarray]:
    """The frames of the test clip: ``n`` frames of :data:`CLIP_SIZE_WH` panning over a scene."""
    return pan(n, CLIP_SIZE_WH)


def write_video(path: Path, frames: list[np.ndarray], fps: float = CLIP_FPS, codec: str = "mp4v") -> Path:
    """Write ``frames`` (BGR, one size) as a video file at ``fps`` with ``codec``; returns ``path``."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path} with codec {codec}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path
