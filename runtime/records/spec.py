"""What a model file is: read once from the ONNX metadata and output names.

Two layouts are understood:

* ``truncated`` — our own export: per-level raw head convolutions named ``box_pN``, ``cls_pN``
  (``mc_pN`` for segment, ``kpt_pN`` for pose, ``ang_pN`` angle logits for obb) and ``proto`` for segment, with the task, class
  names, strides and ``reg_max`` in the metadata.
* ``standard`` — a stock Ultralytics export: ``output0`` of shape [B, 4 + nc (+ nm | + nk), N]
  with decoded boxes and sigmoid scores, plus ``output1`` prototypes for segment.
* ``end2end`` — a stock end-to-end export of a one-to-one head (YOLO26, YOLOv10 with ``nms=False``):
  ``output0`` of shape [B, max_det, 6 (+ nm | + nk)], rows ``x1 y1 x2 y2 score class extra``, best first.

A truncated file of a head with two branches (YOLO26, YOLOv10) says in ``branch`` which one it computes:
``one2many`` (NMS on the host; the default) or ``one2one`` (top-k on the host, no NMS).

A classifier has one output of shape [B, nc]: ``logits`` (truncated: before the softmax) or a stock
``output0`` (softmax probabilities).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from runtime.errors import ModelError

TRUNCATED_LAYOUT = "truncated"
STANDARD_LAYOUT = "standard"
END2END_LAYOUT = "end2end"
BRANCHES = ("one2many", "one2one")
KEYPOINT_RULES = ("grid2x", "anchor")  # v8 Pose: (2 * raw + cell corner) * stride; Pose26: (raw + cell centre) * stride
SUPPORTED_LAYOUT_VERSIONS = {"1"}
TASKS = ("detect", "segment", "pose", "obb", "classify")
CLASSIFY_STRIDE = 32  # Ultralytics' predict rounds a classifier's imgsz up to a multiple of 32
_INPUT_TYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32"}  # onnxruntime NodeArg.type -> numpy
_LEVEL_NAME = re.compile(r"^(box|cls|mc|kpt|ang)_p(\d+)$")


@dataclass(frozen=True)
class LevelOutputs:
    """Output names of one pyramid level of a truncated-head model."""

    stride: int
    box: str
    cls: str
    extra: str | None  # mask coefficients (segment), raw keypoints (pose) or angle logits (obb)


@dataclass(frozen=True)
class ModelSpec:
    """Everything the runtime needs to know about a model, read from the file itself.

    ``input_hw`` is None when height and width are dynamic; ``batch`` is None when the batch
    dimension is dynamic. ``imgsz`` is the letterbox target used when the caller gives none.
    ``input_dtype`` is "uint8" (RGB 0..255, normalised inside the graph: our exports) or "float32"
    (RGB 0..1: stock Ultralytics exports).
    """

    path: Path
    layout: str
    task: str
    names: tuple[str, ...]
    strides: tuple[int, ...]
    reg_max: int
    dfl_bins: tuple[float, ...] | None  # DFL bin values when not 0..reg_max-1 (rounded checkpoints)
    nm: int
    kpt_shape: tuple[int, int] | None
    input_name: str
    input_dtype: str
    batch: int | None
    input_hw: tuple[int, int] | None
    imgsz: tuple[int, int]
    levels: tuple[LevelOutputs, ...]  # truncated layout only
    proto: str | None
    output0: str | None  # standard layout, and a classifier's one output
    metadata: Mapping[str, str]

    @property
    def nc(self) -> int:
        return len(self.names)

    @property
    def max_stride(self) -> int:
        return max(self.strides)

    @property
    def preprocess(self) -> str:
        """How an image becomes the input: Ultralytics' classify transforms for classifiers, else its letterbox."""
        return "center_crop" if self.task == "classify" else "letterbox"

    @property
    def branch(self) -> str:
        """Which head branch the outputs come from: "one2many" (NMS) or "one2one" (top-k, no NMS)."""
        return "one2one" if self.layout == END2END_LAYOUT else self.metadata.get("branch", "one2many")

    @property
    def keypoint_rule(self) -> str:
        """How raw keypoints become pixels (truncated pose files): "grid2x" (v8 Pose) or "anchor" (Pose26)."""
        return self.metadata.get("kpt_rule", "grid2x")

    @property
    def output_names(self) -> list[str]:
        """The outputs the postprocess reads, in a fixed order."""
        if self.output0 is not None:
            return [self.output0] + ([self.proto] if self.proto else [])
        names = [n for lv in self.levels for n in (lv.box, lv.cls, lv.extra) if n]
        return names + ([self.proto] if self.proto else [])


def _parse_names(raw: str, path: Path) -> tuple[str, ...]:
    try:
        value = json.loads(raw)
    except ValueError:
        try:
            value = ast.literal_eval(raw)  # stock Ultralytics writes a Python dict repr
        except (ValueError, SyntaxError) as exc:
            raise ModelError(f"{path}: metadata 'names' is not a dict of class names: {raw[:80]!r}") from exc
    if isinstance(value, Mapping):
        ids = sorted(int(k) for k in value)
        if ids != list(range(len(ids))):
            raise ModelError(f"{path}: class ids in metadata 'names' are not 0..{len(ids) - 1}")
        by_id = {int(k): str(v) for k, v in value.items()}
        return tuple(by_id[i] for i in ids)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(str(v) for v in value)
    raise ModelError(f"{path}: metadata 'names' is not a dict or list of class names")


def _parse_hw(raw: str | None, default: tuple[int, int] | None = None) -> tuple[int, int] | None:
    if raw is None:
        return default
    value = ast.literal_eval(raw)
    if isinstance(value, int):
        return (value, value)
    return (int(value[0]), int(value[1]))


def _static_dim(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _truncated_levels(path: Path, output_names: Sequence[str], task: str) -> tuple[tuple[LevelOutputs, ...], str | None]:
    by_level: dict[int, dict[str, str]] = {}
    for name in output_names:
        match = _LEVEL_NAME.match(name)
        if match:
            by_level.setdefault(int(match.group(2)), {})[match.group(1)] = name
    if not by_level:
        raise ModelError(f"{path}: no per-level outputs named box_pN / cls_pN")
    extra_kind = {"segment": "mc", "pose": "kpt", "obb": "ang"}.get(task)
    levels = []
    for level in sorted(by_level):
        found = by_level[level]
        missing = [k for k in ("box", "cls", extra_kind) if k and k not in found]
        if missing:
            raise ModelError(f"{path}: level p{level} lacks outputs {', '.join(f'{k}_p{level}' for k in missing)}")
        levels.append(LevelOutputs(2**level, found["box"], found["cls"], found.get(extra_kind) if extra_kind else None))
    proto = "proto" if task == "segment" else None
    if proto and proto not in output_names:
        raise ModelError(f"{path}: segment model without a 'proto' output")
    return tuple(levels), proto


def read_model_spec(path: str | Path, metadata: Mapping[str, str], inputs: Sequence[Any], outputs: Sequence[Any]) -> ModelSpec:
    """Build a ModelSpec from an engine's metadata map and input/output descriptions.

    ``inputs`` / ``outputs`` are :class:`runtime.engines.base.TensorInfo` records or onnxruntime
    ``NodeArg`` objects (anything with ``.name``, ``.shape`` and an onnxruntime type string
    ``.type``). Raises ModelError naming the file and what is wrong.
    """
    path = Path(path)
    if len(inputs) != 1:
        raise ModelError(f"{path}: expected one image input, found {len(inputs)}")
    inp = inputs[0]
    shape = list(inp.shape)
    if len(shape) != 4 or _static_dim(shape[1]) not in (3, None):
        raise ModelError(f"{path}: input '{inp.name}' has shape {shape}, expected [batch, 3, height, width]")
    input_type = getattr(inp, "type", "tensor(float)")
    input_dtype = _INPUT_TYPES.get(input_type)
    if input_dtype is None:
        raise ModelError(f"{path}: input '{inp.name}' is {input_type}, expected tensor(uint8) or tensor(float)")
    batch = _static_dim(shape[0])
    h, w = _static_dim(shape[2]), _static_dim(shape[3])
    input_hw = (h, w) if h and w else None
    output_names = [o.name for o in outputs]
    output_shapes = {o.name: list(o.shape) for o in outputs}
    for out in outputs:
        output_type = getattr(out, "type", "tensor(float)")
        if output_type != "tensor(float)":
            raise ModelError(f"{path}: output '{out.name}' is {output_type}, expected tensor(float) (float32)")

    task = metadata.get("task")
    if "names" not in metadata or task is None:
        raise ModelError(
            f"{path}: ONNX metadata lacks 'task'/'names'; export the model with "
            "`python tools/export.py MODEL.pt` (or Ultralytics' own exporter)"
        )
    if task not in TASKS:
        raise ModelError(f"{path}: task '{task}' is not supported (supported: {', '.join(TASKS)})")
    names = _parse_names(metadata["names"], path)
    if task == "classify":
        return _classify_spec(path, metadata, inp.name, input_dtype, batch, input_hw, names, outputs)
    kpt_shape = tuple(ast.literal_eval(metadata["kpt_shape"])) if task == "pose" and "kpt_shape" in metadata else None

    if metadata.get("layout") == "truncated-head":
        version = metadata.get("layout_version")
        if version not in SUPPORTED_LAYOUT_VERSIONS:
            raise ModelError(f"{path}: truncated-head layout version {version!r} is not supported by this runtime")
        levels, proto = _truncated_levels(path, output_names, task)
        strides = tuple(int(s) for s in json.loads(metadata["strides"]))
        if strides != tuple(lv.stride for lv in levels):
            raise ModelError(f"{path}: metadata strides {list(strides)} disagree with outputs {output_names}")
        reg_max = int(metadata.get("reg_max", 16))
        dfl_bins = tuple(float(v) for v in json.loads(metadata["dfl_bins"])) if "dfl_bins" in metadata else None
        if dfl_bins is not None and len(dfl_bins) != reg_max:
            raise ModelError(f"{path}: metadata dfl_bins holds {len(dfl_bins)} values, expected reg_max={reg_max}")
        nm = int(metadata.get("nm", 0)) if task == "segment" else 0
        if metadata.get("branch", "one2many") not in BRANCHES:
            raise ModelError(f"{path}: metadata branch {metadata['branch']!r} is not one of {', '.join(BRANCHES)}")
        if metadata.get("kpt_rule", "grid2x") not in KEYPOINT_RULES:
            raise ModelError(f"{path}: metadata kpt_rule {metadata['kpt_rule']!r} is not one of "
                             f"{', '.join(KEYPOINT_RULES)}")
        cls_channels = _static_dim(output_shapes[levels[0].cls][1])
        if cls_channels is not None and cls_channels != len(names):
            raise ModelError(f"{path}: {len(names)} class names but {cls_channels} class channels")
        return ModelSpec(path, TRUNCATED_LAYOUT, task, names, strides, reg_max, dfl_bins, nm, kpt_shape, inp.name,
                         input_dtype, batch, input_hw, _parse_hw(metadata.get("imgsz"), input_hw or (640, 640)), levels,
                         proto, None, dict(metadata))

    # Stock Ultralytics export: decoded boxes and scores in output0.
    if not outputs or len(output_shapes[output_names[0]]) != 3:
        raise ModelError(f"{path}: outputs {output_names} are neither a truncated head (box_pN, cls_pN, ...) "
                         "nor a standard Ultralytics output0 of shape [batch, 4 + nc, anchors]")
    rows = _static_dim(output_shapes[output_names[0]][1])
    nm = 0
    proto = None
    if task == "segment":
        if len(outputs) < 2:
            raise ModelError(f"{path}: segment model without a prototype output")
        proto = output_names[1]
        nm = _static_dim(output_shapes[proto][1]) or (rows - 4 - len(names) if rows else 32)
    layout = STANDARD_LAYOUT
    if _is_end2end(path, metadata, output_shapes[output_names[0]], task, len(names), nm, kpt_shape):
        layout = END2END_LAYOUT
    stride = int(ast.literal_eval(metadata.get("stride", "32")))
    return ModelSpec(path, layout, task, names, (stride,), 0, None, nm, kpt_shape, inp.name, input_dtype, batch,
                     input_hw, _parse_hw(metadata.get("imgsz"), input_hw or (640, 640)), (), proto, output_names[0],
                     dict(metadata))


def _classify_spec(path: Path, metadata: Mapping[str, str], input_name: str, input_dtype: str, batch: int | None,
                   input_hw: tuple[int, int] | None, names: tuple[str, ...], outputs: Sequence[Any]) -> ModelSpec:
    """A classifier: one [batch, nc] output, raw logits in our layout or softmax probabilities in a stock export."""
    shapes = {o.name: list(o.shape) for o in outputs}
    if len(outputs) != 1 or len(outputs[0].shape) != 2:
        raise ModelError(f"{path}: a classify model has one output of shape [batch, nc], found {shapes}")
    out = outputs[0]
    channels = _static_dim(out.shape[1])
    if channels is not None and channels != len(names):
        raise ModelError(f"{path}: {len(names)} class names but output '{out.name}' has {channels} classes")
    layout = STANDARD_LAYOUT
    if metadata.get("layout") == "truncated-head":
        if metadata.get("layout_version") not in SUPPORTED_LAYOUT_VERSIONS:
            raise ModelError(f"{path}: truncated-head layout version {metadata.get('layout_version')!r} "
                             "is not supported by this runtime")
        layout = TRUNCATED_LAYOUT
    imgsz = _parse_hw(metadata.get("imgsz"), input_hw or (224, 224))
    return ModelSpec(path, layout, "classify", names, (CLASSIFY_STRIDE,), 0, None, 0, None, input_name, input_dtype,
                     batch, input_hw, imgsz, (), None, out.name, dict(metadata))


def _is_end2end(path: Path, metadata: Mapping[str, str], shape: Sequence[Any], task: str, nc: int, nm: int,
                kpt_shape: tuple[int, int] | None) -> bool:
    """Whether a stock ``output0`` is end-to-end, (B, max_det, 6 + extra), or one-to-many, (B, 4 + nc + extra, N):
    Ultralytics' ``end2end`` metadata key when present, else the shape; ModelError when neither tells."""
    extra = {"segment": nm, "pose": kpt_shape[0] * kpt_shape[1] if kpt_shape else 0, "obb": 1}.get(task, 0)
    rows, cols = _static_dim(shape[1]), _static_dim(shape[2])
    if "end2end" in metadata:
        end2end = str(metadata["end2end"]).lower() == "true"
        want = 6 + extra if end2end else 4 + nc + extra
        got = cols if end2end else rows
        if got is not None and got != want:
            kind = "end-to-end" if end2end else "one-to-many"
            raise ModelError(f"{path}: metadata end2end={metadata['end2end']} but output0 {list(shape)} is not a "
                             f"{kind} output (expected {want} channels)")
        return end2end
    one_to_many = rows == 4 + nc + extra
    end_to_end = cols == 6 + extra
    if one_to_many != end_to_end:
        return end_to_end
    raise ModelError(f"{path}: cannot tell from output0 {list(shape)} whether it is end-to-end (B, max_det, "
                     f"{6 + extra}) or one-to-many (B, {4 + nc + extra}, anchors), and the metadata has no 'end2end' "
                     "key; add it (end2end=True or False) or re-export with Ultralytics' nms=False / nms=None")
