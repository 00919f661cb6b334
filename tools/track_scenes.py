"""Seeded synthetic detection sequences for tracker tests and benchmarks.

:func:`scene` moves ``n_objects`` boxes at constant velocity plus noise across a frame; objects enter and leave at
random times, disappear for occlusion gaps (some shorter, some longer than a track buffer), sometimes score in the
low band that only the second association stage takes, and false positives appear. ``pan`` moves the whole scene by a
camera shift per frame; :func:`textured_frames` renders a matching panned, textured BGR image so optical flow sees
the camera move.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    xyxy: np.ndarray      # (n, 4) float32
    scores: np.ndarray    # (n,) float32
    class_ids: np.ndarray  # (n,) int32
    shift: tuple[float, float]  # camera offset of this frame, pixels


def scene(seed: int = 0, n_frames: int = 60, n_objects: int = 10, size: tuple[int, int] = (1280, 720),
          gaps: tuple[int, ...] = (5, 40), low_score_rate: float = 0.15, miss_rate: float = 0.03,
          false_positives: float = 0.5, pan: tuple[float, float] = (0.0, 0.0), jitter: float = 1.5,
          empty_frames: tuple[int, ...] = (), classes: int = 3, speed: float = 3.0,
          stop_in_gaps: bool = False, churn: bool = True) -> list[Frame]:
    """A list of per-frame detections (see the module docstring). ``gaps``: occlusion lengths drawn from, one per
    object with probability 1/2; ``empty_frames``: frame indices with no detections at all; ``speed``: standard
    deviation of the objects' velocities, pixels per frame; ``stop_in_gaps``: objects stand still while occluded
    (the Kalman prediction runs ahead of them, as OC-SORT's recovery is made for); ``churn`` False keeps every
    object in the scene from the first frame to the last (only gaps and misses hide them)."""
    rng = np.random.default_rng(seed)
    width, height = size
    wh = np.stack([rng.uniform(20, 90, n_objects), rng.uniform(40, 160, n_objects)], axis=1)
    centre = np.stack([rng.uniform(0, width, n_objects), rng.uniform(0, height, n_objects)], axis=1)
    velocity = rng.normal(0, speed, (n_objects, 2))
    stays = 1.0 if not churn else 0.6
    enter = np.where(rng.random(n_objects) < stays, 0, rng.integers(0, max(1, n_frames // 2), n_objects))
    leave = np.where(rng.random(n_objects) < stays, n_frames, rng.integers(n_frames // 2, n_frames + 1, n_objects))
    gap_start = rng.integers(1, max(2, n_frames), n_objects)
    gap_length = np.where(rng.random(n_objects) < 0.5, rng.choice(gaps, n_objects), 0)
    classes_of = rng.integers(0, classes, n_objects)
    base_score = rng.uniform(0.5, 0.95, n_objects)
    frames = []
    for f in range(n_frames):
        shift = (pan[0] * f, pan[1] * f)
        hidden = (gap_start <= f) & (f < gap_start + gap_length)
        moving = ~hidden[:, None] if stop_in_gaps else True
        centre = centre + velocity * moving + rng.normal(0, 0.5, centre.shape)
        wh = np.clip(wh * rng.normal(1, 0.01, wh.shape), 10, None)
        visible = (enter <= f) & (f < leave) & ~hidden
        visible &= rng.random(n_objects) >= miss_rate
        if f in empty_frames:
            visible[:] = False
        idx = np.flatnonzero(visible)
        c = centre[idx] + rng.normal(0, jitter, (len(idx), 2)) - np.array(shift)
        s = wh[idx] * rng.normal(1, 0.02, (len(idx), 2))
        boxes = np.concatenate([c - s / 2, c + s / 2], axis=1)
        scores = np.clip(base_score[idx] + rng.normal(0, 0.05, len(idx)), 0.01, 0.99)
        low = rng.random(len(idx)) < low_score_rate
        scores[low] = rng.uniform(0.11, 0.24, low.sum())
        cls = classes_of[idx]
        n_false = 0 if f in empty_frames else rng.poisson(false_positives)
        if n_false:
            fc = rng.uniform([0, 0], [width, height], (n_false, 2))
            fs = rng.uniform(15, 80, (n_false, 2))
            boxes = np.concatenate([boxes, np.concatenate([fc - fs / 2, fc + fs / 2], axis=1)])
            scores = np.concatenate([scores, rng.uniform(0.05, 0.5, n_false)])
            cls = np.concatenate([cls, rng.integers(0, classes, n_false)])
        order = rng.permutation(len(boxes))
        frames.append(Frame(boxes[order].astype(np.float32), scores[order].astype(np.float32),
                            cls[order].astype(np.int32), shift))
    return frames


def texture(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A large BGR texture with corners everywhere (blurred noise plus rectangles), to pan a view across."""
    import cv2

    rng = np.random.default_rng(seed)
    width, height = size
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 3)
    for _ in range(400):
        x, y = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(5, 60, 2)
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), color, -1)
    return image


def textured_frames(frames: list[Frame], size: tuple[int, int], seed: int = 0, base: np.ndarray | None = None):
    """One BGR view per frame, cropped from a texture (or ``base`` image) at that frame's camera shift."""
    width, height = size
    margin = int(max(max(abs(f.shift[0]), abs(f.shift[1])) for f in frames)) + 8
    if base is None:
        base = texture(seed, (width + 2 * margin, height + 2 * margin))
    else:
        import cv2

        base = cv2.resize(base, (width + 2 * margin, height + 2 * margin))
    for f in frames:
        x, y = margin + int(round(f.shift[0])), margin + int(round(f.shift[1]))
        yield np.ascontiguousarray(base[y:y + height, x:x + width])
