"""Calibration data: images drawn reproducibly, preprocessed like the Predictor (letterbox, or a classifier's centre
crop), and the statistics built from them.

Two kinds of statistics, one per QDQ layout (see ``tools/recipe.py``): onnxruntime's calibration table of every
tensor's range (``load_or_calibrate``, for its ``quantize_static``), and the activation statistics of
``tools/qdq.py`` (``load_or_collect_stats``). Both are cached in ``cache_dir`` when one is given, keyed by the model,
the images and the method.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import pickle
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from runtime.io.files import atomic_write_bytes, file_sha256
from tools.qdq import ActivationStats, calibration_tensors, collect_stats
from tools.quant_model import ModelInfo, QuantizeError, quiet

LOGGER = logging.getLogger("quantize")
CACHE_VERSION = "2"
HISTOGRAM_CHUNK = 4  # images per histogram update: bounds the memory of percentile / entropy calibration
METHODS = ("minmax", "meanminmax", "percentile", "entropy")

__all__ = ["CalibrationImages", "calibrate", "load_or_calibrate", "load_or_collect_stats", "preprocess_image",
           "select_images"]


def select_images(folder: str | Path, num: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(calibration images, held-back images): ``num`` drawn with ``random.Random(seed)``, both sorted by name."""
    from runtime.errors import InputError
    from runtime.io.sources import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise QuantizeError(f"{folder}: calibration folder not found")
    try:
        files = list_images(folder)
    except InputError as exc:
        raise QuantizeError(f"{exc} (calibration folder is empty)") from exc
    except OSError as exc:
        raise QuantizeError(f"{folder}: calibration folder cannot be read ({exc.strerror or exc})") from exc
    n = min(num, len(files))
    picked = set(random.Random(seed).sample(range(len(files)), n))
    chosen = [f for i, f in enumerate(files) if i in picked]
    held = [f for i, f in enumerate(files) if i not in picked]
    return chosen, held


def preprocess_image(path: str | Path, hw: tuple[int, int], dtype: str, preprocess: str = "letterbox") -> np.ndarray:
    """(3, H, W) ``dtype`` (uint8 or float32) of one image, placed exactly like the Predictor does it
    (``preprocess``: "letterbox", or "center_crop" for classifiers; runtime.records.preprocess)."""
    from runtime.errors import InputError
    from runtime.records.preprocess import PREPROCESSES
    from runtime.io.frames import load_image

    try:
        _, image = load_image(str(path), 0)
    except InputError as exc:
        raise QuantizeError(str(exc)) from exc
    method = PREPROCESSES[preprocess]
    plan = method.plan(image.shape[:2], tuple(hw), False, 32)
    out_chw = np.empty((3, hw[0], hw[1]), dtype=dtype)
    method.into(image, plan, out_chw)
    return out_chw


class CalibrationImages:
    """onnxruntime CalibrationDataReader over image files: yields ``{input_name: (1, 3, H, W) dtype}``.

    Re-iterable: ``iter(reader)`` is a fresh pass, and ``get_next`` starts a new pass after returning None once.
    Images are read and letterboxed lazily (nothing big is kept in memory).
    """

    def __init__(self, paths: Sequence[str | Path], input_name: str, hw: tuple[int, int], dtype: str,
                 preprocess: str = "letterbox") -> None:
        self.paths = [Path(p) for p in paths]
        self.preprocess = preprocess
        self.input_name = input_name
        self.hw = hw
        self.dtype = dtype
        self._it: Iterator[dict[str, np.ndarray]] | None = None
        self._start, self._end = 0, len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for p in self.paths[self._start:self._end]:
            yield {self.input_name: preprocess_image(p, self.hw, self.dtype, self.preprocess)[None]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = iter(self)
        item = next(self._it, None)
        if item is None:
            self._it = None  # the next call starts a fresh pass
        return item

    def rewind(self) -> None:
        self._it = None

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = max(0, start_index), min(len(self.paths), end_index)
        self._it = None

    def subset(self, start: int, end: int) -> "CalibrationImages":
        return CalibrationImages(self.paths[start:end], self.input_name, self.hw, self.dtype, self.preprocess)


with contextlib.suppress(ImportError):  # register as a virtual subclass of onnxruntime's ABC
    from onnxruntime.quantization import CalibrationDataReader as _CDR

    _CDR.register(CalibrationImages)


def _calib_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "meanminmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}[method]


def calibrate(pre_path: str | Path, reader: CalibrationImages, method: str, percentile: float = 99.999,
              workdir: str | Path | None = None):
    """Per-tensor ranges (onnxruntime TensorsData) of every float tensor of ``pre_path`` over ``reader``."""
    from onnxruntime.quantization.calibrate import create_calibrator

    extra: dict[str, Any] = {}
    if method == "meanminmax":  # per-image min / max, averaged over the images (onnxruntime's moving_average)
        extra = {"moving_average": True}
    if method == "percentile":
        extra = {"percentile": float(percentile), "symmetric": False, "num_bins": 2048}
    with tempfile.TemporaryDirectory(prefix="quant-calib-", dir=workdir) as tmp, quiet():
        calibrator = create_calibrator(Path(pre_path), None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=_calib_method(method), extra_options=extra)
        if method in ("minmax", "meanminmax"):  # ReduceMin/ReduceMax outputs only: one pass, little memory
            calibrator.collect_data(reader)
        else:  # histogram methods keep full activations until collect_data returns: feed small chunks
            for start in range(0, len(reader), HISTOGRAM_CHUNK):
                calibrator.collect_data(reader.subset(start, start + HISTOGRAM_CHUNK))
        tensors_range = calibrator.compute_data()
        del calibrator
    return tensors_range


def _cache_key(info_sha: str, pre_sha: str, method: str, percentile: float, images: Sequence[Path],
               hw: tuple[int, int]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"float": info_sha, "pre": pre_sha, "method": method,
                         "percentile": percentile if method == "percentile" else None, "hw": list(hw),
                         "images": [str(p.resolve()) for p in images], "v": CACHE_VERSION}).encode())
    return h.hexdigest()[:20]


def load_or_calibrate(pre_path: Path, info: ModelInfo, images: Sequence[Path], method: str, percentile: float,
                      cache_dir: str | Path | None, workdir: str | Path | None = None) -> Path:
    """Calibration table as an onnxruntime calibration-cache JSON file; reused from ``cache_dir`` when present."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    key = _cache_key(info.sha256, file_sha256(pre_path), method, percentile, images, info.input_hw)
    if cache_dir is not None:
        path = Path(cache_dir) / f"calib-{method}-{key}.json"
        if path.is_file():
            LOGGER.info("calibration: reusing %s", path)
            return path
    else:
        path = Path(workdir or tempfile.gettempdir()) / f"calib-{method}-{key}.json"
    reader = CalibrationImages(images, info.input_name, info.input_hw, info.input_dtype, info.preprocess)
    t0 = time.perf_counter()
    tensors_range = calibrate(pre_path, reader, method, percentile, workdir)
    LOGGER.info("calibration: %s on %d images in %.1fs", method, len(images), time.perf_counter() - t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors_data(tensors_range, path)  # atomic (temp + rename) in onnxruntime
    return path


def load_or_collect_stats(float_path: Path, info: ModelInfo, images: Sequence[Path],
                          cache_dir: str | Path | None, threads: int | None = None) -> ActivationStats:
    """Activation statistics of the float model over ``images`` (tools/qdq.py); reused from ``cache_dir``."""
    key = _cache_key(info.sha256, info.sha256, "activations", 0.0, images, info.input_hw)
    path = Path(cache_dir) / f"stats-activations-{key}.pkl" if cache_dir is not None else None
    if path is not None and path.is_file():
        LOGGER.info("calibration: reusing %s", path)
        with open(path, "rb") as handle:
            return pickle.load(handle)
    import onnx

    tensors = calibration_tensors(onnx.load(str(float_path), load_external_data=False))
    reader = CalibrationImages(images, info.input_name, info.input_hw, info.input_dtype, info.preprocess)
    t0 = time.perf_counter()
    stats = collect_stats(float_path, tensors, iter(reader), threads)
    LOGGER.info("calibration: activation statistics on %d images in %.1fs", len(images), time.perf_counter() - t0)
    if path is not None:
        atomic_write_bytes(path, pickle.dumps(stats))
    return stats
