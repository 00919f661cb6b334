"""Post-training W8A8 quantization of a truncated-head YOLOv8 ONNX (onnxruntime static QDQ).

Usage::

    python tools/quantize.py FLOAT.onnx --calib DIR [--num N] [--seed S]
                             [--method minmax|meanminmax|percentile|entropy] [--percentile P]
                             [--per-channel/--no-per-channel] [--act-type u8|s8] [--act-symmetric/--no-act-symmetric]
                             [--reduce-range/--no-reduce-range] [--silu-clip C] [--float-head/--no-float-head]
                             [--exclude NAME ...] [--auto-exclude K] [--sensitivity] [--report DIR]
                             [--cache-dir DIR] [--threads N] [-o OUT.onnx]

Library::

    from tools.quantize import Recipe, quantize_model
    info = quantize_model("yolov8n-seg.onnx", "calib_images/", "yolov8n-seg-w8a8.onnx", Recipe())

Steps: onnxruntime's ``quant_pre_process`` (symbolic shape inference + optimization) on a temporary copy;
calibration on images drawn reproducibly (``--seed``) from ``--calib`` and letterboxed by ``runtime.letterbox``
exactly as the Predictor does; a calibration table (per-tensor ranges) computed once, then handed to
``quantize_static(..., quant_format=QDQ, calibration_cache_path=...)``. The same table is reused for every model built
from it (sensitivity analysis, ``--auto-exclude``), so those models differ only in which nodes stay float.

The output keeps the float model's metadata and adds ``quantization`` (JSON). It is written to a temporary file and
renamed into place, so a failed run never leaves a half-written model. Errors print one line and exit with status 2.

Default recipe (measured on the shared COCO data, yolov8n and yolov8n-seg at 640; calibration on train2017,
mAP on val2017 with tools/eval_coco.py; see tools/quant_report.py for the per-model report):

* weights S8 per-tensor symmetric, activations U8 asymmetric, no reduce_range: the only fast combination here
  (x86-64 AVX2 without VNNI: U8xS8 QLinearConv; S8 activations run ~0.5x float, 7-bit per-tensor weights lose
  10 mAP points). Per-channel weights did not help (the shared checkpoints' weights already sit on a per-tensor int8
  grid, which per-tensor quantization reproduces exactly).
* ``meanminmax`` calibration: per-image min / max averaged over 256 images (onnxruntime MinMax with
  moving_average over one pass). Plain minmax lets rare outliers stretch the ranges (-1.4 box mAP on yolov8n);
  percentile 99.99 / 99.999 and entropy clip the large activations that matter and were worse.
* ``silu_clip`` 7: the low end of every SiLU input range is raised to -7 (SiLU is flat below: |SiLU(x)| < 0.007),
  giving conv outputs like [-122, 48] three times finer steps. Swept over 5, 6, 7, 8 and 12 (see below).
* ``float_head``: the convs that produce the model outputs stay float, so box-distribution / class logits and
  mask coefficients are not rounded to 8 bits (cost ~3% of the speed-up).
* ``auto_exclude`` 6: the 6 Conv+SiLU groups whose float-ness most improves the outputs on held-back images
  (sensitivity analysis, same calibration table) stay float: the early high-resolution layers here.

Float -> W8A8 (default CLI, shared COCO val subset, 164 images): yolov8n box 0.3698 -> 0.3702; yolov8n-seg box
0.3674 -> 0.3676, mask 0.3085 -> 0.3062. Inference 1.8x faster at batch 1 on 1 thread, 1.54x (seg) / 1.59x
(detect) on onnxruntime's default 2 threads (bench/latency.py --baseline); files 29.28% / 29.97% of float.
SiLU clip swept with everything else fixed (box / mask delta in mAP points, seg; box, detect): 5: -0.10 / -0.11,
-0.84; 6: -0.39 / -0.49, +0.12 (but a 36% detect file); 7: +0.02 / -0.23, +0.04; 8: -0.52 / -0.33, -0.48;
12: -0.50 / -0.54. These differences are mostly noise: mAP on 164 images moves by +-0.3-0.5 points between
calibration draws of one recipe (--seed, --num), and by 0.7 points when only the float rounding of the layers kept
float changes (measured by storing their weights behind a DequantizeLinear, bit-identical values).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

if __package__ in (None, ""):  # `python tools/quantize.py` puts tools/ first on sys.path: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from runtime.files import file_sha256

LOGGER = logging.getLogger("quantize")

LAYOUT = "truncated-head"
METADATA_KEY = "quantization"
TOOL_VERSION = "1"
DEFAULT_NUM = 256
DEFAULT_SEED = 0
METHODS = ("minmax", "meanminmax", "percentile", "entropy")
ACT_TYPES = ("u8", "s8")
HISTOGRAM_CHUNK = 4  # images per histogram update: bounds the memory of percentile / entropy calibration

__all__ = [
    "CalibrationImages",
    "ModelInfo",
    "QuantizeError",
    "Recipe",
    "build_qdq",
    "calibrate",
    "conv_groups",
    "finalize_model",
    "inspect_float_model",
    "load_or_calibrate",
    "main",
    "prepare_model",
    "quantize_model",
    "select_images",
]


class QuantizeError(Exception):
    """An error the tool reports as one line (main() prints it and returns 2)."""


# ---------------------------------------------------------------------------------------------------------- recipe
@dataclass(frozen=True)
class Recipe:
    """How to quantize. The defaults are the measured best recipe (see the module docstring and the report)."""

    method: str = "meanminmax"  # calibration: minmax | meanminmax | percentile | entropy
    percentile: float = 99.999  # for method == "percentile"
    per_channel: bool = False  # per-output-channel weight scales
    activation_type: str = "u8"  # u8 (QUInt8) | s8 (QInt8)
    activation_symmetric: bool = False
    weight_symmetric: bool = True  # weights are always S8
    reduce_range: bool = False  # 7-bit weights (avoids u8*s8 pair saturation in AVX2 kernels without VNNI)
    silu_clip: float | None = 7.0  # clip the low end of every SiLU input range at -silu_clip (None: no clipping)
    float_head: bool = True  # keep the convs that produce the model outputs float (outputs not rounded to 8 bits)
    auto_exclude: int = 6  # keep the K most sensitive Conv+SiLU groups float (sensitivity analysis, held-back images)
    num: int = DEFAULT_NUM  # calibration images (all if the folder holds fewer)
    seed: int = DEFAULT_SEED
    exclude: tuple[str, ...] = ()  # node names kept float

    def validate(self) -> None:
        if self.method not in METHODS:
            raise QuantizeError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0.0 < self.percentile <= 100.0:
            raise QuantizeError(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.activation_type not in ACT_TYPES:
            raise QuantizeError(f"--act-type must be one of {', '.join(ACT_TYPES)}, got {self.activation_type!r}")
        if self.num < 1:
            raise QuantizeError(f"--num must be >= 1, got {self.num}")
        if self.auto_exclude < 0:
            raise QuantizeError(f"--auto-exclude must be >= 0, got {self.auto_exclude}")
        if self.silu_clip is not None and not self.silu_clip > 0:
            raise QuantizeError(f"--silu-clip must be > 0, got {self.silu_clip}")

    def label(self) -> str:
        """Short human-readable name, e.g. 'minmax/pt/u8-asym' or 'percentile99.99/pc-rr/s8-sym'."""
        m = self.method + (f"{self.percentile:g}" if self.method == "percentile" else "")
        w = ("pc" if self.per_channel else "pt") + ("-rr" if self.reduce_range else "")
        a = self.activation_type + ("-sym" if self.activation_symmetric else "-asym")
        ex = f"+{len(self.exclude)}float" if self.exclude else ""
        sc = f"/siluclip{self.silu_clip:g}" if self.silu_clip else ""
        fh = "/floathead" if self.float_head else ""
        return f"{m}/{w}/{a}{sc}{fh}{ex}"


DEFAULT_RECIPE = Recipe()


def _qtypes(recipe: Recipe):
    from onnxruntime.quantization import QuantType

    act = QuantType.QUInt8 if recipe.activation_type == "u8" else QuantType.QInt8
    return act, QuantType.QInt8


def _calib_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "meanminmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[method]


# ------------------------------------------------------------------------------------------------------ model check
@dataclass(frozen=True)
class ModelInfo:
    """What the quantizer needs to know about a float truncated-head model."""

    path: Path
    input_name: str
    input_dtype: str  # "uint8" (our exports: RGB 0..255, normalised in the graph) or "float32" (RGB 0..1)
    input_hw: tuple[int, int]
    output_names: tuple[str, ...]
    metadata: dict[str, str]
    node_names: tuple[str, ...]
    sha256: str


sha256_file = file_sha256


def _dims(value_info) -> list[int | str]:
    return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
            for d in value_info.type.tensor_type.shape.dim]


def inspect_float_model(path: str | Path) -> ModelInfo:
    """Check that ``path`` is a float truncated-head YOLOv8 ONNX; QuantizeError saying what it is otherwise."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise QuantizeError(f"{path}: model file not found")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise QuantizeError(f"{path}: not a loadable ONNX model ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from exc
    meta = {p.key: p.value for p in model.metadata_props}
    graph = model.graph
    ops = {n.op_type for n in graph.node}
    outputs = [o.name for o in graph.output]
    shapes = {o.name: _dims(o) for o in graph.output}
    if ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "DynamicQuantizeLinear"}:
        raise QuantizeError(f"{path}: model is already quantized (has {sorted(ops & {'QuantizeLinear', 'DequantizeLinear', 'QLinearConv', 'ConvInteger', 'DynamicQuantizeLinear'})}); "
                            "quantize the float export instead")
    if "output0" in outputs or meta.get("layout") != LAYOUT:
        if "output0" in outputs:
            what = (f"a standard Ultralytics export (output0 {shapes['output0']}"
                    + (f", output1 {shapes['output1']}" if "output1" in shapes else "") + ")")
            raise QuantizeError(
                f"{path}: is {what}, not a truncated-head YOLOv8 ONNX. Static W8A8 of the standard head quantizes "
                "the concatenated [boxes in pixels | class scores 0..1] tensor with one scale, which rounds every "
                "class score to zero (0 mAP). Re-export with: python tools/export.py MODEL.pt -o MODEL.onnx")
        raise QuantizeError(f"{path}: not a truncated-head YOLOv8 ONNX (metadata layout={meta.get('layout')!r}, "
                            f"outputs {outputs[:6]}); export one with: python tools/export.py MODEL.pt -o MODEL.onnx")
    if not any(o.startswith("box_p") for o in outputs) or not any(o.startswith("cls_p") for o in outputs):
        raise QuantizeError(f"{path}: metadata says truncated-head but outputs {outputs} lack box_pN / cls_pN")
    init_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(inputs) != 1:
        raise QuantizeError(f"{path}: expected one image input, found {[i.name for i in inputs]}")
    dims = _dims(inputs[0])
    if len(dims) != 4 or dims[1] not in (3, "?"):
        raise QuantizeError(f"{path}: input {inputs[0].name!r} has shape {dims}, expected [batch, 3, H, W]")
    input_dtype = {onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.FLOAT: "float32"}.get(
        inputs[0].type.tensor_type.elem_type)
    if input_dtype is None:
        raise QuantizeError(f"{path}: input {inputs[0].name!r} is neither uint8 nor float32")
    if isinstance(dims[2], int) and isinstance(dims[3], int) and dims[2] > 0 and dims[3] > 0:
        hw = (int(dims[2]), int(dims[3]))
    else:
        try:
            raw = json.loads(meta.get("imgsz", "null"))
            hw = (int(raw[0]), int(raw[-1])) if isinstance(raw, list) else (int(raw), int(raw))
        except (TypeError, ValueError, IndexError) as exc:
            raise QuantizeError(f"{path}: input size is dynamic and metadata 'imgsz' is missing") from exc
    return ModelInfo(path, inputs[0].name, input_dtype, hw, tuple(outputs), meta, tuple(n.name for n in graph.node),
                     sha256_file(path))


# ----------------------------------------------------------------------------------------------------- calibration
def select_images(folder: str | Path, num: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(calibration images, held-back images): ``num`` drawn with ``random.Random(seed)``, both sorted by name."""
    from runtime.errors import InputError
    from runtime.sources import list_images

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


def preprocess_image(path: str | Path, hw: tuple[int, int], dtype: str) -> np.ndarray:
    """(3, H, W) ``dtype`` (uint8 or float32) of one image, letterboxed exactly like the Predictor (runtime.letterbox)."""
    from runtime.errors import InputError
    from runtime.letterbox import letterbox_into, plan_letterbox
    from runtime.sources import load_image

    try:
        _, image = load_image(str(path), 0)
    except InputError as exc:
        raise QuantizeError(str(exc)) from exc
    plan = plan_letterbox(image.shape[:2], hw, auto=False)
    out_chw = np.empty((3, hw[0], hw[1]), dtype=dtype)
    letterbox_into(image, plan, out_chw)
    return out_chw


class CalibrationImages:
    """onnxruntime CalibrationDataReader over image files: yields ``{input_name: (1, 3, H, W) dtype}``.

    Re-iterable: ``iter(reader)`` is a fresh pass, and ``get_next`` starts a new pass after returning None once.
    Images are read and letterboxed lazily (nothing big is kept in memory).
    """

    def __init__(self, paths: Sequence[str | Path], input_name: str, hw: tuple[int, int], dtype: str) -> None:
        self.paths = [Path(p) for p in paths]
        self.input_name = input_name
        self.hw = hw
        self.dtype = dtype
        self._it: Iterator[dict[str, np.ndarray]] | None = None
        self._start, self._end = 0, len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for p in self.paths[self._start:self._end]:
            yield {self.input_name: preprocess_image(p, self.hw, self.dtype)[None]}

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
        return CalibrationImages(self.paths[start:end], self.input_name, self.hw, self.dtype)


with contextlib.suppress(ImportError):  # register as a virtual subclass of onnxruntime's ABC
    from onnxruntime.quantization import CalibrationDataReader as _CDR

    _CDR.register(CalibrationImages)


def prepare_model(float_path: str | Path, out_path: str | Path) -> Path:
    """onnxruntime's recommended pre-processing (symbolic shape inference + optimization) into ``out_path``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # both paths resolved before the chdir below, so relative paths keep meaning the caller's directory
    float_path, out_path = Path(float_path).resolve(), Path(out_path).resolve()
    # onnxruntime's symbolic shape inference saves "sym_shape_infer_temp.onnx" + a <uuid>.data file into the
    # current directory when it gives up: run it from a private temporary directory so nothing leaks
    with _quiet(), tempfile.TemporaryDirectory(prefix="quant-pre-") as scratch, contextlib.chdir(scratch):
        try:
            quant_pre_process(str(float_path), str(out_path), skip_optimization=False)
        except Exception:  # noqa: BLE001 - "Incomplete symbolic shape inference" on some dynamic-batch graphs
            # auto_merge lets symbolic shape inference unify the batch dims it cannot prove equal
            quant_pre_process(str(float_path), str(out_path), skip_optimization=False, auto_merge=True)
    return out_path


@contextlib.contextmanager
def _quiet():
    """Silence onnxruntime.quantization's prints and INFO logging (it prints per-tensor progress)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        try:
            yield
        finally:
            root.setLevel(level)


def calibrate(pre_path: str | Path, reader: CalibrationImages, method: str, percentile: float = 99.999,
              workdir: str | Path | None = None):
    """Per-tensor ranges (onnxruntime TensorsData) of every float tensor of ``pre_path`` over ``reader``."""
    from onnxruntime.quantization.calibrate import create_calibrator

    extra: dict[str, Any] = {}
    if method == "meanminmax":  # per-image min / max, averaged over the images (onnxruntime's moving_average)
        extra = {"moving_average": True}
    if method == "percentile":
        extra = {"percentile": float(percentile), "symmetric": False, "num_bins": 2048}
    with tempfile.TemporaryDirectory(prefix="quant-calib-", dir=workdir) as tmp, _quiet():
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
                         "images": [str(p.resolve()) for p in images], "v": TOOL_VERSION}).encode())
    return h.hexdigest()[:20]


def load_or_calibrate(pre_path: Path, info: ModelInfo, images: Sequence[Path], recipe: Recipe,
                      cache_dir: str | Path | None, workdir: str | Path | None = None) -> Path:
    """Calibration table as an onnxruntime calibration-cache JSON file; reused from ``cache_dir`` when present."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    key = _cache_key(info.sha256, sha256_file(pre_path), recipe.method, recipe.percentile, images, info.input_hw)
    if cache_dir is not None:
        path = Path(cache_dir) / f"calib-{recipe.method}-{key}.json"
        if path.is_file():
            LOGGER.info("calibration: reusing %s", path)
            return path
    else:
        path = Path(workdir or tempfile.gettempdir()) / f"calib-{recipe.method}-{key}.json"
    reader = CalibrationImages(images, info.input_name, info.input_hw, info.input_dtype)
    t0 = time.perf_counter()
    tensors_range = calibrate(pre_path, reader, recipe.method, recipe.percentile, workdir)
    LOGGER.info("calibration: %s on %d images in %.1fs", recipe.method, len(images), time.perf_counter() - t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors_data(tensors_range, path)  # atomic (temp + rename) in onnxruntime
    return path


# ---------------------------------------------------------------------------------------------------- QDQ building
def conv_groups(model_or_path) -> dict[str, list[str]]:
    """{Conv node name: [Conv, Sigmoid, Mul]} — every Conv with the nodes of its SiLU (if any), in graph order."""
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    groups: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        members = [node.name]
        out = node.output[0]
        sig = [c for c in consumers.get(out, []) if c.op_type == "Sigmoid"]
        if sig:
            mul = [c for c in consumers.get(out, []) if c.op_type == "Mul" and sig[0].output[0] in c.input]
            if mul:
                members += [sig[0].name, mul[0].name]
        groups[node.name] = members
    return groups


def silu_inputs(model) -> list[str]:
    """Tensors x that feed a SiLU written as Mul(x, Sigmoid(x))."""
    sig_out = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Sigmoid"}
    found = []
    for n in model.graph.node:
        if n.op_type == "Mul" and len(n.input) == 2:
            a, b = n.input
            for x, s in ((a, b), (b, a)):
                if sig_out.get(s) == x and x not in found:
                    found.append(x)
    return found


def adjust_ranges(calib_cache: str | Path, pre_path: str | Path, recipe: Recipe, out_path: str | Path) -> Path:
    """Apply range tricks of ``recipe`` to a calibration table; returns the table to quantize with.

    ``silu_clip``: the low end of a SiLU input's range is raised to -silu_clip. SiLU is flat there
    (|SiLU(x)| < 0.007 for x < -7), but minmax ranges of pre-SiLU conv outputs often reach -100, which wastes most
    of the 8-bit levels of the conv output and of the sigmoid/mul that read it.
    """
    import onnx
    from onnxruntime.quantization.calibrate import TensorData, load_tensors_data, save_tensors_data

    if not recipe.silu_clip:
        return Path(calib_cache)
    table = load_tensors_data(calib_cache)
    model = onnx.load(str(pre_path), load_external_data=False)
    floor = np.float32(-recipe.silu_clip)
    for name in silu_inputs(model):
        if name in table:
            td = table[name]
            lo, hi = td.range_value
            lo = np.maximum(np.asarray(lo, dtype=np.float32), floor).astype(np.float32)
            table.data[name] = TensorData(lowest=lo, highest=np.asarray(hi, dtype=np.float32))
    save_tensors_data(table, out_path)
    return Path(out_path)


def head_nodes(model_or_path) -> list[str]:
    """Nodes that produce a graph output (the last conv of every head branch, and the proto conv)."""
    import onnx

    model = onnx.load(str(model_or_path), load_external_data=False) if isinstance(model_or_path, (str, Path)) \
        else model_or_path
    outs = {o.name for o in model.graph.output}
    return [n.name for n in model.graph.node if set(n.output) & outs]


def excluded_nodes(pre_path: str | Path, recipe: Recipe) -> list[str]:
    """Every node the recipe keeps float: ``exclude`` plus the output convs when ``float_head``."""
    names = list(recipe.exclude)
    if recipe.float_head:
        names += [n for n in head_nodes(pre_path) if n not in names]
    return names


def build_qdq(pre_path: str | Path, calib_cache: str | Path, recipe: Recipe, out_path: str | Path) -> Path:
    """quantize_static (QDQ) of the pre-processed model with the ranges of ``calib_cache``; no recalibration."""
    from onnxruntime.quantization import QuantFormat, quantize_static
    from onnxruntime.quantization.calibrate import load_tensors_data

    act, wt = _qtypes(recipe)
    calib_cache = adjust_ranges(calib_cache, pre_path, recipe, Path(out_path).with_suffix(".ranges.json"))
    method = load_tensors_data(calib_cache).calibration_method
    extra = {"ActivationSymmetric": recipe.activation_symmetric, "WeightSymmetric": recipe.weight_symmetric}
    with _quiet():
        quantize_static(str(pre_path), str(out_path), calibration_data_reader=None, quant_format=QuantFormat.QDQ,
                        per_channel=recipe.per_channel, reduce_range=recipe.reduce_range, activation_type=act,
                        weight_type=wt, nodes_to_exclude=excluded_nodes(pre_path, recipe) or None, calibrate_method=method,
                        extra_options=extra, calibration_cache_path=str(calib_cache))
    return Path(out_path)


def quantization_settings(recipe: Recipe, info: ModelInfo, n_images: int, pre_path: str | Path | None = None
                          ) -> dict[str, Any]:
    import onnxruntime

    return {
        "format": "QDQ",
        "method": recipe.method,
        "percentile": recipe.percentile if recipe.method == "percentile" else None,
        "per_channel": recipe.per_channel,
        "activation_type": "QUInt8" if recipe.activation_type == "u8" else "QInt8",
        "weight_type": "QInt8",
        "activation_symmetric": recipe.activation_symmetric,
        "weight_symmetric": recipe.weight_symmetric,
        "reduce_range": recipe.reduce_range,
        "silu_clip": recipe.silu_clip,
        "calibration_images": n_images,
        "calibration_seed": recipe.seed,
        "float_head": recipe.float_head,
        "excluded_nodes": excluded_nodes(pre_path, recipe) if pre_path is not None else list(recipe.exclude),
        "float_source_sha256": info.sha256,
        "float_source": info.path.name,
        "onnxruntime": onnxruntime.__version__,
        "tool": f"tools/quantize.py v{TOOL_VERSION}",
    }


def finalize_model(qdq_path: str | Path, info: ModelInfo, settings: dict[str, Any], out_path: str | Path) -> Path:
    """Copy the float model's metadata + ``quantization`` JSON into the QDQ model; write ``out_path`` atomically."""
    import onnx

    model = onnx.load(str(qdq_path))
    del model.metadata_props[:]
    for key, value in info.metadata.items():
        if key != METADATA_KEY:
            model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(settings, sort_keys=True))
    return atomic_save(model, out_path)


def atomic_save(model, out_path: str | Path) -> Path:
    """Save an ONNX model whole or not at all."""
    import onnx

    from runtime.files import atomic_output

    with atomic_output(out_path) as tmp:
        onnx.save(model, str(tmp))
    return Path(out_path)


def check_excludes(names: Sequence[str], pre_nodes: Sequence[str], float_nodes: Sequence[str], path: Path) -> None:
    valid = set(pre_nodes)
    bad = [n for n in names if n not in valid]
    if bad:
        gone = [n for n in bad if n in set(float_nodes)]
        hint = f" ({', '.join(gone)} removed by pre-processing)" if gone else ""
        convs = [n for n in pre_nodes if n.endswith("/Conv") or "Conv" in n][:6]
        raise QuantizeError(f"{path}: --exclude names nodes that do not exist: {', '.join(bad)}{hint}. "
                            f"Valid names look like: {', '.join(convs)} ...")


# ---------------------------------------------------------------------------------------------------- orchestration
@dataclass
class QuantizeResult:
    output: Path
    recipe: Recipe  # with the auto-excluded nodes added to ``exclude``
    settings: dict[str, Any]
    calibration_images: list[Path]
    held_back_images: list[Path]
    sensitivity: Any = None
    report: dict[str, Any] | None = None


def quantize_model(float_path: str | Path, calib_dir: str | Path, out_path: str | Path, recipe: Recipe = DEFAULT_RECIPE,
                   *, cache_dir: str | Path | None = None, report_dir: str | Path | None = None,
                   sensitivity: bool = False, sensitivity_images: int = 6, report_images: int = 8,
                   threads: int | None = 1, top: int = 10, log=print) -> QuantizeResult:
    """Quantize ``float_path`` with ``recipe`` and write ``out_path`` (atomically). Returns what was done.

    ``recipe.auto_exclude`` (or ``sensitivity``) runs the per-group sensitivity analysis on held-back images with the
    same calibration table; the K most sensitive Conv+SiLU groups stay float. ``report_dir`` writes report.md/.json.
    ``cache_dir`` keeps calibration tables across runs (keyed by model, method, images and size).
    """
    recipe.validate()
    info = inspect_float_model(float_path)
    out = Path(out_path)
    if out.resolve() == info.path.resolve():
        raise QuantizeError(f"{out}: output would overwrite the float model")
    chosen, held = select_images(calib_dir, recipe.num, recipe.seed)
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        ws = Path(tmp)
        pre = prepare_model(info.path, ws / "preprocessed.onnx")
        import onnx

        pre_nodes = [n.name for n in onnx.load(str(pre)).graph.node]
        check_excludes(recipe.exclude, pre_nodes, info.node_names, info.path)
        LOGGER.info("%s: %d calibration images (seed %d), %d held back; recipe %s", info.path, len(chosen),
                    recipe.seed, len(held), recipe.label())
        table = load_or_calibrate(pre, info, chosen, recipe, cache_dir, ws)
        # images for measuring errors: held back from calibration (fall back to calibration images if none)
        eval_pool = held or chosen
        if not held:
            LOGGER.warning("no held-back images (all %d used for calibration): errors are measured on calibration "
                           "images", len(chosen))
        sens = None
        k = recipe.auto_exclude
        if sensitivity or k:
            from tools.sensitivity import run_sensitivity

            sens = run_sensitivity(pre, table, recipe, info, eval_pool[:max(1, sensitivity_images)], ws,
                                   threads=threads, log=log)
            if log:
                log(sens.format_table(top))
            if k:
                extra = [n for g in sens.top_groups(k) for n in g.nodes if n not in recipe.exclude]
                if log:
                    log(f"auto-exclude: keeping float {', '.join(g.name for g in sens.top_groups(k))}")
                recipe = replace(recipe, exclude=tuple(recipe.exclude) + tuple(extra))
        qdq = build_qdq(pre, table, recipe, ws / "qdq.onnx")
        settings = quantization_settings(recipe, info, len(chosen), pre)
        if sens is not None and k:
            settings["auto_exclude"] = {"k": k, "groups": [g.name for g in sens.top_groups(k)]}
        report = None
        if report_dir:
            # build the final model into the workspace, measure, then move both into place
            staged = finalize_model(qdq, info, settings, ws / "final.onnx")
            from tools.quant_report import build_report, write_report

            report = build_report(info.path, staged, pre, eval_pool[:max(1, report_images)], info,
                                  settings=settings, threads=threads, sensitivity=sens, auto_exclude=k,
                                  baseline_qdq=sens.baseline_model if (sens is not None and k) else None)
            report["quantized_model"] = str(out)
            finalize_model(staged, info, settings, out)
            write_report(report, report_dir)
            if log:
                log(f"report: {Path(report_dir) / 'report.md'}")
        else:
            finalize_model(qdq, info, settings, out)
    return QuantizeResult(out, recipe, settings, chosen, held, sens, report)


# ----------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    d = DEFAULT_RECIPE
    p = argparse.ArgumentParser(
        prog="quantize.py",
        description="W8A8 post-training quantization (onnxruntime static QDQ) of a truncated-head YOLOv8 ONNX.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help="float truncated-head ONNX written by tools/export.py")
    p.add_argument("--calib", required=True, help="folder of calibration images (never the evaluation images)")
    p.add_argument("--num", type=int, default=d.num, help="calibration images (all if the folder holds fewer)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the calibration image draw")
    p.add_argument("--method", choices=METHODS, default=d.method, help="calibration method")
    p.add_argument("--percentile", type=float, default=d.percentile, help="for --method percentile")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=d.per_channel,
                   help="per-output-channel weight scales")
    p.add_argument("--act-type", choices=ACT_TYPES, default=d.activation_type,
                   help="activation type: u8 = QUInt8, s8 = QInt8 (weights are always QInt8)")
    p.add_argument("--act-symmetric", action=argparse.BooleanOptionalAction, default=d.activation_symmetric,
                   help="symmetric activation ranges")
    p.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=d.reduce_range,
                   help="7-bit weights")
    p.add_argument("--silu-clip", type=float, default=d.silu_clip, metavar="C",
                   help="raise the low end of SiLU input ranges to -C (0 or negative: off)")
    p.add_argument("--float-head", action=argparse.BooleanOptionalAction, default=d.float_head,
                   help="keep the convs that produce the model outputs float")
    p.add_argument("--exclude", nargs="+", default=[], metavar="NAME", help="node names to keep float")
    p.add_argument("--auto-exclude", type=int, default=d.auto_exclude, metavar="K",
                   help="keep the K most sensitive Conv+SiLU groups float (runs the sensitivity analysis)")
    p.add_argument("--sensitivity", action="store_true",
                   help="per-group sensitivity analysis: how much the outputs improve when one group stays float")
    p.add_argument("--sensitivity-images", type=int, default=6, help="held-back images used by the sensitivity analysis")
    p.add_argument("--top", type=int, default=10, help="groups to print from the sensitivity analysis")
    p.add_argument("-o", "--output", help="output path (default: FLOAT-w8a8.onnx next to the input)")
    p.add_argument("--report", metavar="DIR", help="write report.md + report.json (per-tensor errors, outputs, speed)")
    p.add_argument("--report-images", type=int, default=8, help="held-back images used by the report")
    p.add_argument("--threads", type=int, default=1,
                   help="onnxruntime threads for the measurements (1: stable timings on a shared machine)")
    p.add_argument("--cache-dir", help="keep / reuse calibration tables here (keyed by model, method, images)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def recipe_from_args(args: argparse.Namespace, exclude: Sequence[str] = ()) -> Recipe:
    return Recipe(method=args.method, percentile=args.percentile, per_channel=args.per_channel,
                  activation_type=args.act_type, activation_symmetric=args.act_symmetric,
                  reduce_range=args.reduce_range,
                  float_head=args.float_head, auto_exclude=args.auto_exclude, silu_clip=args.silu_clip if args.silu_clip and args.silu_clip > 0 else None, num=args.num, seed=args.seed, exclude=tuple(exclude))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    LOGGER.setLevel(logging.INFO)
    if not LOGGER.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(h)
        LOGGER.propagate = False
    try:
        return _run(args)
    except QuantizeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    model = Path(args.model)
    out = Path(args.output) if args.output else model.with_name(model.stem + "-w8a8.onnx")
    recipe = recipe_from_args(args, args.exclude)
    res = quantize_model(model, args.calib, out, recipe, cache_dir=args.cache_dir, report_dir=args.report,
                         sensitivity=args.sensitivity, sensitivity_images=args.sensitivity_images,
                         report_images=args.report_images, threads=args.threads, top=args.top)
    size_f, size_q = model.stat().st_size, out.stat().st_size
    print(f"{out} ({size_q / 1e6:.1f} MB, {100 * size_q / size_f:.0f}% of float): {res.recipe.label()}, "
          f"{len(res.calibration_images)} calibration images, {len(res.settings['excluded_nodes'])} nodes float")
    return 0


if __name__ == "__main__":
    sys.exit(main())
