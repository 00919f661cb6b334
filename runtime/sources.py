"""Turn what a caller passes to ``predict`` into (name, BGR image) pairs, loading lazily."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np

from .errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm"})

Source = Union[str, Path, np.ndarray, Sequence[Union[str, Path, np.ndarray]]]


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; InputError if there are none."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: folder holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def expand_source(source: Source) -> list[str | np.ndarray]:
    """Flatten a path, folder, array or list of these into a list of file paths and arrays."""
    items = [source] if isinstance(source, (str, Path, np.ndarray)) else list(source)
    expanded: list[str | np.ndarray] = []
    for item in items:
        if isinstance(item, np.ndarray):
            expanded.append(item)
            continue
        if not isinstance(item, (str, Path)):
            raise InputError(f"unsupported source {type(item).__name__}: pass a path, folder, BGR ndarray or a list")
        path = Path(item)
        if path.is_dir():
            expanded.extend(str(p) for p in list_images(path))
        elif path.is_file():
            expanded.append(str(path))
        else:
            raise InputError(f"{path}: no such file or folder")
    return expanded


def as_bgr(image: np.ndarray, name: str) -> np.ndarray:
    """Check an in-memory image and return it as (h, w, 3) uint8 BGR."""
    if image.dtype != np.uint8:
        raise InputError(f"{name}: image must be uint8 (as OpenCV reads it), got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(f"{name}: image must be (h, w, 3) BGR, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"{name}: image is empty, shape {image.shape}")
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def load_image(item: str | np.ndarray, index: int) -> tuple[str | None, np.ndarray]:
    """Read one item: returns (path or None, BGR uint8 image)."""
    if isinstance(item, np.ndarray):
        return None, as_bgr(item, f"image #{index}")
    image = cv2.imread(item, cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{item}: cannot be read as an image (corrupt or unsupported format)")
    return item, image
