"""Truncate an Ultralytics YOLO ONNX file to the truncated-head layout that ``tools/export.py`` writes.

For users who have an ONNX file but not the ``.pt``: a stock Ultralytics export (``output0`` [+ ``output1``]), a
vendor-style cut, or a file whose outputs already are the raw per-level convolutions. The result has the outputs
``box_pN``, ``cls_pN`` (``mc_pN`` / ``kpt_pN`` / ``ang_pN``) and ``proto`` straight from the head's last convolutions, the metadata
of our exports, and by default the uint8 input prologue, so quantization, the Predictor and evaluation take it like an
exported file.

Usage::

    python tools/truncate.py MODEL.onnx [-o OUT.onnx] [--cut TENSOR ...] [--task T] [--names FILE]
                             [--kpt-shape K D] [--reg-max N] [--imgsz N | H W] [--input-dtype uint8|float32]
                             [--simplify/--no-simplify]

Library::

    from tools.truncate import truncate
    out = truncate("yolo11n-pose.onnx", "yolo11n-pose-trunc.onnx")

How the head is found (from the graph's structure, not from node names):

1. One onnxruntime run of the file on a seeded random image gives the shape of every tensor near raw convolutions.
2. Each tensor's *provenance* is followed backwards through data-movement ops only (Reshape, Flatten, Concat, Split,
   Slice, Identity, Cast): a list of pyramid levels, each a list of channel ranges of raw Conv outputs. A Concat along
   the anchor axis of such per-level tensors is the head's per-level concat; its convs are the branches' last convs.
3. The DFL (a Softmax whose result feeds a ``1 x reg_max`` Conv, the bin values) marks the box branch, the Sigmoid
   on a whole branch the class branch; what remains is the mask-coefficient (segment) or keypoint (pose) branch, and
   the prototypes are the 4-D output at stride 4.
4. Before anything is written, the outputs of the found convs are decoded the way Ultralytics does (DFL, anchors,
   sigmoid, keypoints, rotated boxes) and compared with the same run's ``output0``: a graph they do not reproduce is refused.

``--cut`` names tensors instead of step 2: vendor cut points such as xquant's per-level ``Reshape`` outputs (walked
back to the convs that feed them) or the conv outputs themselves. A file with no decoded output, whose outputs are
4-D per-level maps (a patched head's export), is read as if every output were cut; what it cannot say (class names,
task, keypoint shape) comes from ``--names``/``--task``/``--kpt-shape`` or from the file's metadata.

Float16 files (Ultralytics' ``half=True``) are converted to float32 first: float16 weights widen exactly, and the
graph then computes in float32 like our exports.

YOLOv10 and YOLO26 files of either branch are taken: a one-to-many export (``output0`` (B, 4 + nc + extra, N)) and an
end-to-end export (``(B, max_det, 6 + extra)``, Ultralytics' ``nms=False``; a TopK in the graph) hold the convs of the
branch they computed, which the result keeps and names in its ``branch`` metadata. YOLO26's box branch has no DFL
(``reg_max`` 1: the conv outputs the distances); its Pose26 keypoints decode as ``(raw + anchor) * stride``, which
the verification tells from v8's rule. End-to-end files are verified row by row (:mod:`tools.end2end_check`).

Refused, with a one-line message and exit status 2: files that are not a YOLO detection head, ``nms=True`` exports
(NMS in the graph), YOLO26-obb, semantic-segmentation, depth and YOLOE open-vocabulary models (not supported),
already truncated or quantized files, and a ``--cut`` naming a tensor the file does not have.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

if __package__ in (None, ""):  # `python tools/truncate.py` puts tools/ first on sys.path: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.end2end_check import verify_end2end  # noqa: E402
from tools.layout import (  # noqa: E402
    probe_graph,
    prune_graph,
    INPUT_DTYPES,
    INPUT_NAME,
    LAYOUT,
    LEVEL_OUTPUTS,
    PROTO_NAME,
    finish_graph,
    level_name,
    output_names,
    run_cli,
)

__all__ = ["CutError", "NotAYoloHeadError", "TruncateError", "UnsupportedHeadError", "main", "read_names",
           "truncate"]

# ops that only move or re-type data: a tensor made by them from raw conv outputs still "is" those conv outputs
_DATA_MOVEMENT = {"Reshape", "Flatten", "Concat", "Split", "Slice", "Identity", "Cast"}
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "DynamicQuantizeLinear"}
_REFUSED_HEADS = {"SemanticSegment": "semantic segmentation", "Depth": "depth estimation",
                  "YOLOEDetect": "YOLOE open-vocabulary detection", "YOLOESegment": "YOLOE open-vocabulary segmentation",
                  "YOLOESegment26": "YOLOE open-vocabulary segmentation", "WorldDetect": "YOLO-World open-vocabulary",
                  "OBB26": "YOLO26 oriented boxes, not supported yet"}
_EXTRA_KIND = {"segment": "mc", "pose": "kpt", "obb": "ang"}


class TruncateError(Exception):
    """Base class of every error the tool raises on purpose (main() prints it and returns 2)."""


class NotAYoloHeadError(TruncateError):
    """The graph has no YOLO detection head the tool can find (or the found head does not reproduce output0)."""


class UnsupportedHeadError(TruncateError):
    """A YOLO model of a kind the truncated layout does not cover (end-to-end, no DFL, OBB, ...)."""


class CutError(TruncateError, ValueError):
    """A bad argument: --cut tensors, names, task, sizes or output path."""


# ------------------------------------------------------------------------------------------------------- the graph
@dataclass(frozen=True)
class _Seg:
    """Channels ``start:stop`` of the raw conv output ``conv``."""

    conv: str
    start: int
    stop: int


_Prov = tuple  # tuple over pyramid levels of tuples of _Seg, in channel order


@dataclass
class _Graph:
    model: Any
    path: Path
    producer: dict = field(default_factory=dict)
    consumers: dict = field(default_factory=dict)
    inits: dict = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    excluded_convs: set = field(default_factory=set)
    _memo: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in self.model.graph.node:
            for o in node.output:
                self.producer[o] = node
            for i in node.input:
                self.consumers.setdefault(i, []).append(node)
        self.inits = {t.name: t for t in self.model.graph.initializer}

    # constants ---------------------------------------------------------------------------------------------
    def const(self, name: str):
        """The value of an initializer, Constant node output or probed tensor; None when unknown."""
        from onnx import numpy_helper

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return self.values.get(name)

    # provenance --------------------------------------------------------------------------------------------
    def prov(self, t: str) -> _Prov | None:
        """Levels x channel segments of raw conv outputs that tensor ``t`` consists of (channel axis 1), or None."""
        if t not in self._memo:
            self._memo[t] = None  # guards against cycles
            self._memo[t] = self._prov(t)
        return self._memo[t]

    def _prov(self, t: str) -> _Prov | None:
        node = self.producer.get(t)
        shape = self.shapes.get(t)
        if node is None or shape is None:
            return None
        op = node.op_type
        if op == "Conv":
            if t in self.excluded_convs or len(shape) != 4:
                return None
            return ((_Seg(t, 0, int(shape[1])),),)
        if op not in _DATA_MOVEMENT:
            return None
        src = node.input[0]
        in_shape = self.shapes.get(src)
        if op in ("Identity", "Cast"):
            return self.prov(src)
        if op in ("Reshape", "Flatten"):
            ok = (in_shape is not None and len(in_shape) >= 3 and len(shape) == 3 and shape[:2] == in_shape[:2]
                  and shape[2] == _prod(in_shape[2:])) or shape == in_shape
            return self.prov(src) if ok else None
        if op == "Concat":
            axis = _attr(node, "axis", 0)
            axis = axis + len(shape) if axis < 0 else axis
            parts = [self.prov(i) for i in node.input]
            if any(p is None for p in parts):
                return None
            if axis == 1:  # channel concat, level by level
                if len({len(p) for p in parts}) != 1:
                    return None
                return tuple(tuple(s for p in parts for s in p[lv]) for lv in range(len(parts[0])))
            if len(shape) == 3 and axis == 2:  # anchor concat: levels side by side, same channel layout
                if len({_channels(lv) for p in parts for lv in p}) != 1:
                    return None
                return tuple(lv for p in parts for lv in p)
            return None
        if op in ("Split", "Slice"):
            if in_shape is None or len(in_shape) != len(shape) or shape[0] != in_shape[0]:
                return None
            if shape[2:] != in_shape[2:]:
                return None  # only cuts along the channel axis keep the per-level structure
            if op == "Split":
                axis = _attr(node, "axis", 0)
                axis = axis + len(shape) if axis < 0 else axis
                if axis != 1 or any(self.shapes.get(o) is None for o in node.output):
                    return None
                k = list(node.output).index(t)
                start = sum(int(self.shapes[o][1]) for o in node.output[:k])
            else:
                start = self._slice_start(node, in_shape)
                if start is None:
                    return None
            parent = self.prov(src)
            if parent is None:
                return None
            return tuple(_cut_channels(lv, start, start + int(shape[1])) for lv in parent)
        return None

    def _slice_start(self, node, in_shape: list[int]) -> int | None:
        """The channel-axis start of a Slice that cuts only axis 1 with step 1; None otherwise."""
        if len(node.input) > 1:  # opset >= 10: starts, ends, axes, steps as inputs
            vals = [self.const(n) if n else None for n in node.input[1:]]
            starts = vals[0]
            axes = vals[2] if len(vals) > 2 and vals[2] is not None else list(range(len(starts)))
            steps = vals[3] if len(vals) > 3 and vals[3] is not None else [1] * len(starts)
            if starts is None:
                return None
        else:
            starts = _attr(node, "starts", None)
            axes = _attr(node, "axes", None) or list(range(len(starts or [])))
            steps = [1] * len(starts or [])
        if starts is None:
            return None
        axes = [int(a) + len(in_shape) if int(a) < 0 else int(a) for a in list(axes)]
        if axes != [1] or [int(s) for s in list(steps)] != [1]:
            return None
        s = int(list(starts)[0])
        c = int(in_shape[1])
        return max(0, min(c, s + c if s < 0 else s))


def _attr(node, name: str, default):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _channels(level: tuple) -> int:
    return sum(s.stop - s.start for s in level)


def _cut_channels(level: tuple, start: int, stop: int) -> tuple:
    out, offset = [], 0
    for s in level:
        n = s.stop - s.start
        lo, hi = max(start, offset), min(stop, offset + n)
        if lo < hi:
            out.append(_Seg(s.conv, s.start + lo - offset, s.start + hi - offset))
        offset += n
    return tuple(out)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


# ---------------------------------------------------------------------------------------------- float16 -> float32
def _to_float32(model) -> bool:
    """Widen every float16 tensor, constant, cast and type of ``model`` to float32 in place; True if any was found."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    f16, f32 = TensorProto.FLOAT16, TensorProto.FLOAT
    changed = False

    def widen(tensor) -> None:
        nonlocal changed
        if tensor.data_type == f16:
            arr = numpy_helper.to_array(tensor).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(arr, tensor.name))
            changed = True

    graph = model.graph
    for t in graph.initializer:
        widen(t)
    for node in graph.node:
        for a in node.attribute:
            if a.type == a.TENSOR:
                widen(a.t)
            elif a.name in ("to", "dtype") and a.type == a.INT and a.i == f16:
                a.i = f32
                changed = True
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.tensor_type.elem_type == f16:
            vi.type.tensor_type.elem_type = f32
            changed = True
    return changed


# ----------------------------------------------------------------------------------------------------- probe run
def _probe_candidates(g: _Graph) -> list[str]:
    """Tensors whose provenance may be defined: outputs of convs read by data-movement ops or by the graph's
    outputs, and the outputs of data-movement ops fed by them (plus the small inputs of Slice nodes)."""
    graph_outputs = {o.name for o in g.model.graph.output}
    cand: set[str] = set()
    extra: list[str] = []
    for node in g.model.graph.node:
        if node.op_type == "Conv":
            t = node.output[0]
            readers = g.consumers.get(t, [])
            if t in graph_outputs or any(r.op_type in _DATA_MOVEMENT for r in readers):
                cand.add(t)
        elif node.op_type in _DATA_MOVEMENT and node.input and node.input[0] in cand:
            cand.update(node.output)
            if node.op_type == "Slice":
                extra += [i for i in node.input[1:] if i and i in g.producer and g.producer[i].op_type != "Constant"]
    return [n for n in g.model.graph.node for n in n.output if n in cand] + extra


# --------------------------------------------------------------------------------------------- head description
@dataclass
class _Level:
    stride: int
    convs: dict  # role ("box", "cls", "mc" / "kpt") -> conv output tensor


@dataclass
class _Head:
    task: str
    levels: list
    proto: str | None
    reg_max: int
    dfl_bins: list | None
    nc: int
    nm: int | None
    kpt_shape: list | None
    branch: str = "one2many"
    kpt_rule: str | None = None  # pose: "grid2x" (v8) or "anchor" (Pose26), set by the verification


def _stock_metadata(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _literal(raw: str | None):
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return None


def _names_from(value, where: str) -> dict[int, str]:
    """A dict {id: name} from a dict or list of names (ids must be 0..n-1)."""
    if isinstance(value, Mapping):
        try:
            by_id = {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise CutError(f"{where}: class ids must be integers") from None
    elif isinstance(value, (list, tuple)):
        by_id = {i: str(v) for i, v in enumerate(value)}
    else:
        raise CutError(f"{where}: expected a dict or list of class names")
    if sorted(by_id) != list(range(len(by_id))) or not by_id:
        raise CutError(f"{where}: class ids are not 0..{len(by_id) - 1}")
    return by_id


def read_names(path: str | os.PathLike) -> dict[int, str]:
    """Class names from a data yaml (its ``names:``), a JSON/YAML dict or list, or a text file with one name a line."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CutError(f"{p}: names file not found")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".yaml", ".yml", ".json"):
        try:
            import yaml
        except ImportError:  # pragma: no cover - PyYAML comes with ultralytics
            value = json.loads(text)
        else:
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise CutError(f"{p}: not a valid YAML/JSON file ({_first_line(e)})") from None
        if isinstance(value, Mapping) and "names" in value:
            value = value["names"]
        return _names_from(value, str(p))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _names_from(lines, str(p))


def _dfl(g: _Graph):
    """(box tensor, dfl conv output, bins) of the DFL: a Softmax whose result feeds, through Transpose/Reshape, a
    Conv with a (1, reg_max, 1, 1) weight; the box tensor is the softmax input walked back to a per-level tensor."""
    found = []
    for node in g.model.graph.node:
        if node.op_type != "Softmax":
            continue
        t, conv = node.output[0], None
        for _ in range(4):
            readers = g.consumers.get(t, [])
            if len(readers) != 1:
                break
            r = readers[0]
            if r.op_type == "Conv":
                conv = r
                break
            if r.op_type not in ("Transpose", "Reshape", "Identity"):
                break
            t = r.output[0]
        if conv is None or len(conv.input) < 2:
            continue
        w = g.const(conv.input[1])
        if w is None or w.ndim != 4 or w.shape[0] != 1 or w.shape[2:] != (1, 1) or w.shape[1] < 2:
            continue
        src = node.input[0]
        for _ in range(4):
            if g.prov(src) is not None:
                break
            p = g.producer.get(src)
            if p is None or p.op_type not in ("Transpose", "Reshape", "Identity", "Cast"):
                break
            src = p.input[0]
        found.append((src, conv.output[0], [float(v) for v in w.reshape(-1).astype("float64")]))
    return found


def _full_groups(p: _Prov) -> list[tuple[str, ...]] | None:
    """The per-level conv tuples of a provenance whose every level has the same layout of whole conv outputs."""
    if not p:
        return None
    width = len(p[0])
    if any(len(lv) != width for lv in p):
        return None
    groups = []
    for j in range(width):
        segs = [lv[j] for lv in p]
        if any(s.start != 0 for s in segs) or len({s.stop for s in segs}) != 1:
            return None
        groups.append(tuple(s.conv for s in segs))
    return groups


def _level_concats(g: _Graph) -> list[tuple[str, ...]]:
    """Branch conv groups (one conv per level) of every Concat along the anchor axis of per-level conv tensors."""
    groups: list[tuple[str, ...]] = []
    for node in g.model.graph.node:
        if node.op_type != "Concat" or len(node.input) < 2:
            continue
        p = g.prov(node.output[0])
        if p is None or len(p) != len(node.input) or any(len(g.prov(i) or ()) != 1 for i in node.input):
            continue
        for grp in _full_groups(p) or []:
            if grp not in groups:
                groups.append(grp)
    return groups


def _refuse_unsupported(path: Path, model, meta: Mapping[str, str]) -> None:
    ops = {n.op_type for n in model.graph.node}
    if meta.get("layout") == LAYOUT:
        raise CutError(f"{path}: already in the truncated-head layout (nothing to truncate)")
    if ops & _QUANTIZED_OPS:
        raise UnsupportedHeadError(f"{path}: a quantized graph ({', '.join(sorted(ops & _QUANTIZED_OPS))}); "
                                   "truncate the float model, then quantize it with tools/quantize.py")
    task = meta.get("task")
    head = meta.get("head", "")
    if head in _REFUSED_HEADS:
        raise UnsupportedHeadError(f"{path}: unsupported head {head} ({_REFUSED_HEADS[head]}); only detect, segment, "
                                   "pose, obb and classify heads can be truncated")
    if task is not None and task not in (*LEVEL_OUTPUTS, "classify"):
        raise UnsupportedHeadError(f"{path}: task {task!r} is not supported; only detect, segment, pose, obb and "
                                   "classify")
    if "NonMaxSuppression" in ops:
        raise UnsupportedHeadError(
            f"{path}: NMS in the graph ({head or 'an nms=True export'}): export without nms=True (one-to-many, or "
            "nms=False for the one-to-one branch of YOLOv10 / YOLO26)")


def _is_end2end(model, meta: Mapping[str, str]) -> bool:
    """A stock end-to-end export: Ultralytics' ``end2end`` metadata, else a TopK in the graph (older files)."""
    if "end2end" in meta:
        return str(meta["end2end"]).lower() == "true"
    return any(n.op_type == "TopK" for n in model.graph.node)


# ---------------------------------------------------------------------------------------------------- roles
def _assign(path: Path, convs_by_level: list[list[str]], hints: Mapping[str, str], roles: Sequence[str],
            want: Mapping[str, int | None], channels: Mapping[str, int], strides: Sequence[int]) -> list[dict]:
    """Per level, {role: conv}: structural hints first, then channel counts, then the order given."""
    out = []
    for convs, stride in zip(convs_by_level, strides):
        got: dict[str, str] = {}
        rest = list(convs)
        for c in convs:
            r = hints.get(c)
            if r in roles and r not in got:
                got[r] = c
                rest.remove(c)
        for r in roles:
            if r in got:
                continue
            pick = next((c for c in rest if want.get(r) is None or channels[c] == want[r]), None)
            if pick is None:
                have = ", ".join(f"{channels[c]}" for c in rest) or "none left"
                raise NotAYoloHeadError(f"{path}: no {r} branch at stride {stride} (expected {want.get(r)} channels; "
                                        f"convs left with channels: {have})")
            got[r] = pick
            rest.remove(pick)
        if rest:
            raise NotAYoloHeadError(f"{path}: more head convolutions at stride {stride} than a {len(roles)}-branch "
                                    f"head has ({len(convs)}: channels {[channels[c] for c in convs]})")
        out.append(got)
    return out


def _find_head(g: _Graph, meta: Mapping[str, str], cut: Sequence[str] | None, task: str | None,
               names: dict[int, str] | None, kpt_shape: Sequence[int] | None, reg_max: int | None,
               input_hw: tuple[int, int]) -> tuple[_Head, dict[int, str], bool]:
    """Find the head; returns (head, names, verifiable) where verifiable means output0 can check it."""
    path = g.path
    dfls = _dfl(g)
    dfl = next((d for d in dfls if g.prov(d[0]) is not None), None)
    if dfl is not None:
        g.excluded_convs.add(dfl[1])
        g._memo.clear()
    outputs = [o.name for o in g.model.graph.output]
    out_shapes = {o: g.shapes.get(o) for o in outputs}
    hints: dict[str, str] = {}

    box_groups = []
    if dfl is not None:
        box_groups = _full_groups(g.prov(dfl[0])) or []
        for grp in box_groups[:1]:
            for c in grp:
                hints[c] = "box"
    for node in g.model.graph.node:
        if node.op_type == "Sigmoid":  # the class scores: a sigmoid over a whole branch (minus 0.25: OBB angles)
            role = "ang" if any(r.op_type == "Sub" for r in g.consumers.get(node.output[0], [])) else "cls"
            for grp in _full_groups(g.prov(node.input[0]) or ()) or []:
                for c in grp:
                    hints.setdefault(c, role)

    proto: str | None = None
    if cut:
        missing = [t for t in cut if t not in g.producer and t not in {i.name for i in g.model.graph.input}]
        if missing:
            sample = [o for n in g.model.graph.node if n.op_type in ("Reshape", "Conv") for o in n.output][-4:]
            raise CutError(f"{path}: --cut names tensors that do not exist: {', '.join(missing)} "
                           f"(tensor names look like: {', '.join(sample)})")
        groups_convs: list[str] = []
        for t in cut:
            p = g.prov(t)
            shape = g.shapes.get(t)
            if p is None:
                if shape is not None and len(shape) == 4 and input_hw[0] // max(int(shape[2]), 1) == 4:
                    proto = t
                    continue
                op = g.producer[t].op_type if t in g.producer else "the graph input"
                raise CutError(f"{path}: cannot walk back from --cut {t} (made by {op}) to head convolutions through "
                               "Reshape/Concat/Split/Slice only")
            for lv in p:
                for s in lv:
                    if s.start != 0 or s.stop != int(g.shapes[s.conv][1]):
                        raise CutError(f"{path}: --cut {t} holds only channels {s.start}:{s.stop} of {s.conv}")
                    if s.conv not in groups_convs:
                        groups_convs.append(s.conv)
        all_convs = groups_convs
        verifiable = "output0" in outputs or dfl is not None
    else:
        groups = _level_concats(g)  # without a DFL: YOLO26's box branch, the distances themselves (reg_max 1)
        if not groups:
            raw = [o for o in outputs if out_shapes[o] is not None and len(out_shapes[o]) == 4]
            if raw and len(raw) == len(outputs) and len(raw) >= 2:  # raw per-level outputs: read them as a cut
                return _find_head(g, meta, raw, task, names, kpt_shape, reg_max, input_hw)
            raise NotAYoloHeadError(f"{path}: not a YOLO detection head: no per-level head convolutions feeding a "
                                    f"DFL and a concat (outputs {[(o, out_shapes[o]) for o in outputs]})")
        all_convs = [c for grp in groups for c in grp]
        verifiable = True
        protos = [o for o in outputs if len(out_shapes[o] or ()) == 4]  # stock segment: output1
        if len(protos) == 1:
            proto = protos[0]

    # levels by spatial size, finest first
    by_hw: dict[tuple[int, int], list[str]] = {}
    for c in all_convs:
        by_hw.setdefault(tuple(int(v) for v in g.shapes[c][2:]), []).append(c)
    hws = sorted(by_hw, key=lambda hw: -hw[0] * hw[1])
    strides = []
    for hw in hws:
        s = input_hw[0] // hw[0] if hw[0] else 0
        if s * hw[0] != input_hw[0] or s * hw[1] != input_hw[1]:
            raise NotAYoloHeadError(f"{path}: head maps of {hw[0]}x{hw[1]} do not divide the {input_hw[0]}x"
                                    f"{input_hw[1]} input evenly")
        try:
            level_name(s)
        except ValueError as e:
            raise NotAYoloHeadError(f"{path}: {e}") from None
        strides.append(s)
    # a single conv at a finer stride than every branch level is the prototypes (raw files)
    if len(hws) > 1 and len(by_hw[hws[0]]) == 1 and all(len(by_hw[hw]) > 1 for hw in hws[1:]):
        proto = proto or by_hw[hws[0]][0]
        hws, strides = hws[1:], strides[1:]
    convs_by_level = [by_hw[hw] for hw in hws]
    channels = {c: int(g.shapes[c][1]) for c in all_convs}

    # task
    meta_task = meta.get("task")
    width = {len(v) for v in convs_by_level}
    if len(width) != 1:
        raise NotAYoloHeadError(f"{path}: levels have different numbers of head convolutions "
                                f"({[len(v) for v in convs_by_level]})")
    n_branches = width.pop()
    if task is None:
        task = meta_task
    elif meta_task is not None and meta_task != task:
        raise CutError(f"{path}: --task {task} disagrees with the file's metadata task {meta_task!r}")
    if task is None:
        task = "detect" if n_branches == 2 else ("segment" if proto is not None else "pose")
    if task not in LEVEL_OUTPUTS:
        raise UnsupportedHeadError(f"{path}: task {task!r} is not supported; only detect, segment, pose and obb")
    roles = LEVEL_OUTPUTS[task]
    if n_branches != len(roles):
        raise NotAYoloHeadError(f"{path}: {n_branches} head branches per level, but a {task} head has {len(roles)} "
                                f"({', '.join(roles)})")
    if task != "segment":
        proto = None
    elif proto is None:  # a cut without the prototypes: the graph's own 4-D output at stride 4 (stock output1)
        protos = [o for o in outputs if len(out_shapes[o] or ()) == 4 and int(out_shapes[o][2]) * 4 == input_hw[0]]
        proto = protos[0] if len(protos) == 1 else None
    if task == "segment" and proto is None:
        raise NotAYoloHeadError(f"{path}: segment model without a prototype output (4-D map at stride 4)")

    if reg_max is None:
        reg_max = len(dfl[2]) if dfl is not None else (16 if cut else 1)
    bins = dfl[2] if dfl is not None else [float(i) for i in range(reg_max)]
    if len(bins) != reg_max:
        raise CutError(f"{path}: --reg-max {reg_max} disagrees with the file's DFL ({len(bins)} bins)")

    if names is None and meta.get("names") is not None:
        names = _names_from(_literal(meta["names"]), f"{path} metadata 'names'")
    if kpt_shape is None and task == "pose":
        kpt_shape = _literal(meta.get("kpt_shape"))
    want: dict[str, int | None] = {"box": 4 * reg_max, "cls": len(names) if names else None}
    nm = int(g.shapes[proto][1]) if proto else None
    if task == "segment":
        want["mc"] = nm
    if task == "pose":
        want["kpt"] = _prod(kpt_shape) if kpt_shape else None
    if task == "obb":
        want["ang"] = 1
    assigned = _assign(path, convs_by_level, hints, roles, want, channels, strides)
    nc = channels[assigned[0]["cls"]]
    for lv in assigned:
        for r, c in lv.items():
            if channels[c] != channels[assigned[0][r]]:
                raise NotAYoloHeadError(f"{path}: the {r} branch has {channels[c]} channels at one level and "
                                        f"{channels[assigned[0][r]]} at another")
    if channels[assigned[0]["box"]] != 4 * reg_max:
        raise NotAYoloHeadError(f"{path}: the box branch has {channels[assigned[0]['box']]} channels, expected "
                                f"4 * reg_max = {4 * reg_max}")
    if names is None:
        names = {i: str(i) for i in range(nc)}
        print(f"note: {path.name} has no class names: using 0..{nc - 1} (give --names FILE)", file=sys.stderr)
    if len(names) != nc:
        raise CutError(f"{path}: {len(names)} class names but the class branch has {nc} channels")
    if task == "pose":
        nk = channels[assigned[0]["kpt"]]
        if kpt_shape is None:
            if nk % 3:
                raise CutError(f"{path}: pose model without kpt_shape in its metadata: give --kpt-shape K D")
            kpt_shape = [nk // 3, 3]
        kpt_shape = [int(v) for v in kpt_shape]
        if _prod(kpt_shape) != nk or len(kpt_shape) != 2 or kpt_shape[1] not in (2, 3):
            raise CutError(f"{path}: kpt_shape {kpt_shape} does not fit the {nk}-channel keypoint branch")
    if task == "segment" and channels[assigned[0]["mc"]] != nm:
        raise NotAYoloHeadError(f"{path}: {channels[assigned[0]['mc']]} mask coefficients but {nm} prototypes")
    dfl_bins = None if bins == [float(i) for i in range(reg_max)] else bins
    levels = sorted((_Level(s, lv) for s, lv in zip(strides, assigned)), key=lambda lv: lv.stride)
    head = _Head(task, levels, proto, reg_max, dfl_bins, nc, nm, kpt_shape if task == "pose" else None)
    return head, names, verifiable and "output0" in outputs


# ------------------------------------------------------------------------------------------------- verification
def _decode_like_output0(values: Mapping[str, Any], head: _Head, bins: Sequence[float]):
    """What Ultralytics' export computes from the head convs: (B, 4 + nc [+ nm | nk | 1], N) float64."""
    import numpy as np

    rows = []
    b = np.asarray(bins, np.float64)
    for lv in head.levels:
        s = lv.stride
        box = values[lv.convs["box"]].astype(np.float64)
        n, c, h, w = box.shape
        if c == 4:  # no DFL (YOLO26): the distances themselves
            dist = box.reshape(n, 4, h * w)
        else:
            logits = box.reshape(n, 4, c // 4, h * w)
            p = np.exp(logits - logits.max(2, keepdims=True))
            dist = (p / p.sum(2, keepdims=True) * b[None, None, :, None]).sum(2)
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        ax, ay = xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5
        x1, y1, x2, y2 = ax - dist[:, 0], ay - dist[:, 1], ax + dist[:, 2], ay + dist[:, 3]
        parts = [np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1) * s]
        parts.append(1 / (1 + np.exp(-values[lv.convs["cls"]].astype(np.float64).reshape(n, -1, h * w))))
        if head.task == "segment":
            parts.append(values[lv.convs["mc"]].astype(np.float64).reshape(n, -1, h * w))
        if head.task == "pose":
            k, d = head.kpt_shape
            y = values[lv.convs["kpt"]].astype(np.float64).reshape(n, k, d, h * w).copy()
            if head.kpt_rule == "anchor":  # Pose26
                y[:, :, 0] = (y[:, :, 0] + ax) * s
                y[:, :, 1] = (y[:, :, 1] + ay) * s
            else:
                y[:, :, 0] = (y[:, :, 0] * 2 + (ax - 0.5)) * s
                y[:, :, 1] = (y[:, :, 1] * 2 + (ay - 0.5)) * s
            if d == 3:
                y[:, :, 2] = 1 / (1 + np.exp(-y[:, :, 2]))
            parts.append(y.reshape(n, k * d, h * w))
        if head.task == "obb":  # rotated centre, size; the angle last
            theta = (1 / (1 + np.exp(-values[lv.convs["ang"]].astype(np.float64).reshape(n, h * w))) - 0.25) * np.pi
            xf, yf = (dist[:, 2] - dist[:, 0]) / 2, (dist[:, 3] - dist[:, 1]) / 2
            cx = xf * np.cos(theta) - yf * np.sin(theta) + ax
            cy = xf * np.sin(theta) + yf * np.cos(theta) + ay
            wh = [dist[:, 0] + dist[:, 2], dist[:, 1] + dist[:, 3]]
            parts[0] = np.stack([cx, cy, *wh], 1) * s
            parts.append(theta[:, None])
        rows.append(np.concatenate(parts, 1))
    return np.concatenate(rows, 2)


def _verify(path: Path, values: Mapping[str, Any], head: _Head) -> float:
    """Raise NotAYoloHeadError unless the found convs, decoded, reproduce output0; return the worst excess. A pose
    head is tried with v8's keypoint rule, then Pose26's; the one that fits is kept in ``head.kpt_rule``."""
    if head.task == "pose" and head.kpt_rule is None:
        head.kpt_rule = "grid2x"
        try:
            return _verify(path, values, head)
        except NotAYoloHeadError:
            head.kpt_rule = "anchor"
    import numpy as np

    bins = head.dfl_bins or [float(i) for i in range(head.reg_max)]
    if head.branch == "one2one":
        dense = _decode_like_output0(values, head, bins)
        problem = verify_end2end(np.asarray(values["output0"], np.float64), dense, head.nc,
                                 pixel_rows=_pixel_rows(head))
        if problem:
            raise NotAYoloHeadError(f"{path}: the head convs found do not reproduce the end-to-end output0 ({problem}): "
                                    "not a stock Ultralytics YOLO head")
        return 0.0
    ref = np.asarray(values["output0"], np.float64)
    got = _decode_like_output0(values, head, bins)
    if got.shape != ref.shape:
        raise NotAYoloHeadError(f"{path}: the found head convs decode to {list(got.shape)}, but output0 is "
                                f"{list(ref.shape)}: not a stock Ultralytics YOLO head")
    # pixel-valued rows (boxes, keypoint x/y) get a pixel-scale tolerance, the rest a probability-scale one
    tol = np.full(ref.shape[1], 1e-4)
    tol[_pixel_rows(head)] = 1e-2
    excess = np.abs(got - ref) - (tol[None, :, None] + 1e-4 * np.abs(ref))
    worst = float(excess.max())
    if worst > 0:
        row = int(np.unravel_index(int(excess.argmax()), excess.shape)[1])
        what = "box" if row < 4 else ("class score" if row < 4 + head.nc else _EXTRA_KIND[head.task])
        raise NotAYoloHeadError(f"{path}: the head convs found do not reproduce output0 (a {what} row is off by "
                                f"{worst:.3g} beyond tolerance): not a stock Ultralytics YOLO head")
    return worst


def _pixel_rows(head: _Head) -> list[int]:
    """Rows of the decoded (4 + nc + extra) layout that hold pixels: the box and the keypoints' x, y."""
    rows = [0, 1, 2, 3]
    if head.task == "pose":
        k, d = head.kpt_shape
        rows += [4 + head.nc + i * d + j for i in range(k) for j in (0, 1)]
    return rows


# ------------------------------------------------------------------------------------------------- graph surgery
def _rename(model, mapping: Mapping[str, str]) -> None:
    for node in model.graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
    for vi in list(model.graph.input) + list(model.graph.value_info):
        vi.name = mapping.get(vi.name, vi.name)


def _constants_to_initializers(model) -> None:
    """Turn Constant nodes and Identity nodes of initializers (torch's unsimplified exports share equal weights that
    way) into plain initializers, so every Conv reads its weight and bias as initializers, as in our exports."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    keep = []
    for node in graph.node:
        tensor = None
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
        elif node.op_type == "Identity" and node.input[0] in inits:
            tensor = inits[node.input[0]]
        if tensor is None:
            keep.append(node)
            continue
        new = numpy_helper.from_array(numpy_helper.to_array(tensor), node.output[0])
        graph.initializer.append(new)
        inits[new.name] = new
    del graph.node[:]
    graph.node.extend(keep)


def _parse_hw(value, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    vals = [value] if isinstance(value, int) else list(value)
    if len(vals) not in (1, 2) or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in vals):
        raise CutError(f"{where}: imgsz must be one positive integer or an (H, W) pair, got {value!r}")
    return (vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1])


# ---------------------------------------------------------------------------------------------------------- API
def truncate(
    model_path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    cut: Sequence[str] | None = None,
    task: str | None = None,
    names: str | os.PathLike | Sequence[str] | Mapping[int, str] | None = None,
    kpt_shape: Sequence[int] | None = None,
    reg_max: int | None = None,
    imgsz: int | Sequence[int] | None = None,
    input_dtype: str = "uint8",
    simplify: bool = True,
) -> Path:
    """Write the truncated-head version of the YOLO ONNX file ``model_path``; return the path written.

    Args:
        model_path: a stock Ultralytics ONNX export (detect / segment / pose, one-to-many head), or a file whose
            outputs are the raw per-level head convs.
        out_path: destination (default ``<stem>-truncated.onnx`` beside the input; a folder means ``<folder>/<stem>
            -truncated.onnx``). Written to a temporary file, then renamed into place; the input is never modified.
        cut: tensor names to cut at instead of finding the head (per-level Reshape outputs or conv outputs, plus
            optionally the prototypes).
        task, names, kpt_shape, reg_max: what the file cannot tell (``names``: a names/data-yaml file, or the names).
        imgsz: the default inference size written to the metadata (default: the file's ``imgsz``, else its input).
        input_dtype: "uint8" (default: RGB 0..255 divided by 255 in the graph, like our exports) or "float32".
        simplify: run onnxslim on the result when importable.

    Raises:
        TruncateError (NotAYoloHeadError, UnsupportedHeadError, CutError) with a message naming the file.
    """
    import onnx

    src = Path(model_path).expanduser()
    if not src.is_file():
        raise CutError(f"{src}: no such model file")
    src = src.resolve()
    if input_dtype not in INPUT_DTYPES:
        raise CutError(f"{src}: input_dtype must be one of {', '.join(INPUT_DTYPES)}, got {input_dtype!r}")
    if task is not None and task not in (*LEVEL_OUTPUTS, "classify"):
        raise CutError(f"{src}: task must be one of {', '.join(LEVEL_OUTPUTS)}, classify, got {task!r}")
    if reg_max is not None and (isinstance(reg_max, bool) or not isinstance(reg_max, int) or reg_max < 1):
        raise CutError(f"{src}: reg_max must be a positive integer (1: no DFL), got {reg_max!r}")
    hw_arg = _parse_hw(imgsz, str(src))
    name_map: dict[int, str] | None = None
    if isinstance(names, (str, os.PathLike)):
        name_map = read_names(names)
    elif names is not None:
        name_map = _names_from(names, "names")
    if out_path is None:
        out = src.with_name(f"{src.stem}-truncated.onnx")
    else:
        out = Path(out_path).expanduser()
        if out.is_dir():
            out = out / f"{src.stem}-truncated.onnx"
    out = out.resolve()
    if out == src:
        raise CutError(f"{src}: the output path would overwrite the input file")

    from runtime.io.files import atomic_output, file_sha256

    sha = file_sha256(src)  # hash the bytes that are then parsed
    try:
        model = onnx.load(str(src))
    except Exception as e:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise NotAYoloHeadError(f"{src}: not a loadable ONNX model ({_first_line(e)})") from e
    meta = _stock_metadata(model)
    _refuse_unsupported(src, model, meta)

    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise NotAYoloHeadError(f"{src}: expected one image input, found {[i.name for i in inputs]}")
    del model.graph.input[:]
    model.graph.input.extend(inputs)  # drop initializers listed as inputs (old exporters): they are not inputs
    inp = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] not in (3, None):
        raise NotAYoloHeadError(f"{src}: input {inp.name!r} has shape {dims}, expected [batch, 3, height, width]")
    _to_float32(model)
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise NotAYoloHeadError(f"{src}: input {inp.name!r} is not a float image tensor")
    from tools.truncate_classify import is_classifier_file, truncate_classifier

    if is_classifier_file(meta, task):  # a stock classifier: cut before its softmax
        return truncate_classifier(model, src, out, meta, sha, name_map, hw_arg, dims, input_dtype, simplify,
                                   NotAYoloHeadError)

    meta_hw = _literal(meta.get("imgsz"))
    meta_hw = (meta_hw, meta_hw) if isinstance(meta_hw, int) else (tuple(meta_hw) if meta_hw else None)
    static_hw = (dims[2], dims[3]) if dims[2] and dims[3] else None
    probe_hw = static_hw or hw_arg or (tuple(int(v) for v in meta_hw) if meta_hw else (640, 640))
    feed = [dims[0] or 1, 3, int(probe_hw[0]), int(probe_hw[1])]

    g = _Graph(model, src)
    wanted = _probe_candidates(g) + [t for t in (cut or []) if t in g.producer]
    values = probe_graph(model, wanted, feed, where=str(src), error=NotAYoloHeadError)
    g.values = values
    g.shapes = {k: list(v.shape) for k, v in values.items()}

    head, name_map, verifiable = _find_head(g, meta, cut, task, name_map, kpt_shape, reg_max, (feed[2], feed[3]))
    if _is_end2end(model, meta):
        head.branch = "one2one"
    if verifiable:
        _verify(src, values, head)
    two_branches = head.branch == "one2one" or head.reg_max == 1 or meta.get("head") == "v10Detect"

    # the new graph: outputs renamed to our layout, everything after them dropped
    strides = [lv.stride for lv in head.levels]
    names_out = output_names(head.task, strides)
    tensors = [lv.convs[kind] for lv in head.levels for kind in LEVEL_OUTPUTS[head.task]]
    if head.proto:
        tensors.append(head.proto)
    if len(set(tensors)) != len(tensors):
        raise NotAYoloHeadError(f"{src}: one tensor found for two outputs")
    mapping = dict(zip(tensors, names_out))
    if inp.name != INPUT_NAME:
        mapping[inp.name] = INPUT_NAME
    _rename(model, mapping)
    _constants_to_initializers(model)
    prune_graph(model, names_out)
    batch_dim: int | str = dims[0] or "batch"
    for vi in model.graph.input:
        if vi.name == INPUT_NAME:
            shape_dims = vi.type.tensor_type.shape.dim
            if dims[0] is None:
                shape_dims[0].dim_param = "batch"
    del model.graph.output[:]
    for t, name in zip(tensors, names_out):
        c = int(g.shapes[t][1])
        lvl = name.rsplit("_", 1)[-1]
        s = {n: lv.stride for lv in head.levels for n in (level_name(lv.stride),)}.get(lvl, 4)
        hw = [static_hw[0] // s, static_hw[1] // s] if static_hw else [f"h_{lvl}", f"w_{lvl}"]
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                     [batch_dim, c, *hw]))
    if meta_hw is not None:
        default_hw = (int(meta_hw[0]), int(meta_hw[1]))
    else:
        default_hw = static_hw or (640, 640)
    metadata = dict(
        task=head.task, names=name_map, strides=strides, reg_max=head.reg_max, nm=head.nm, kpt_shape=head.kpt_shape,
        dfl_bins=head.dfl_bins, head=meta.get("head") if two_branches else None,
        branch=head.branch if two_branches else None, kpt_rule=head.kpt_rule if head.kpt_rule == "anchor" else None,
        imgsz=hw_arg or default_hw, batch=dims[0], dynamic_hw=static_hw is None,
        source=src.name, source_sha256=sha, ultralytics_version=meta.get("version", "unknown"),
    )
    model = finish_graph(model, names_out, metadata, input_dtype=input_dtype, simplify=simplify, where=str(src),
                         graph="truncated", error=NotAYoloHeadError)
    with atomic_output(out) as tmp:
        onnx.save(model, str(tmp))
    return out


# ------------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/truncate.py",
        description="Truncate a stock Ultralytics YOLO ONNX export (detect/segment/pose) or a vendor cut to the "
        "truncated-head layout of tools/export.py (raw per-level box/cls[/mc|kpt] conv outputs [+ proto]).",
    )
    p.add_argument("model", help="ONNX file (never modified)")
    p.add_argument("-o", "--output", default=None, help="output .onnx (default: MODEL-truncated.onnx beside it)")
    p.add_argument("--cut", nargs="+", action="extend", default=None, metavar="TENSOR",
                   help="cut at these tensors (per-level Reshape or conv outputs) instead of finding the head")
    p.add_argument("--task", choices=sorted((*LEVEL_OUTPUTS, "classify")), default=None,
                   help="task, when the file does not say")
    p.add_argument("--names", default=None, metavar="FILE",
                   help="class names: a data yaml (names:), a JSON/YAML list or dict, or one name a line")
    p.add_argument("--kpt-shape", type=int, nargs=2, default=None, metavar=("K", "D"),
                   help="keypoints and values per keypoint (pose), when the file does not say")
    p.add_argument("--reg-max", type=int, default=None,
                   help="DFL bins of a --cut or raw-output file (default 16; 1: YOLO26, no DFL)")
    p.add_argument("--imgsz", type=int, nargs="+", default=None, metavar="N",
                   help="default inference size for the metadata: N or H W (default: the file's)")
    p.add_argument("--input-dtype", choices=INPUT_DTYPES, default="uint8",
                   help="uint8 (default: RGB 0..255, divided by 255 in the graph) or float32 (RGB 0..1)")
    p.add_argument("--simplify", action=argparse.BooleanOptionalAction, default=True,
                   help="simplify the result with onnxslim if installed")
    return p


def main(argv: list[str] | None = None) -> int:
    def write(args: argparse.Namespace) -> Path:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return truncate(args.model, args.output, cut=args.cut, task=args.task, names=args.names,
                            kpt_shape=args.kpt_shape, reg_max=args.reg_max, imgsz=args.imgsz,
                            input_dtype=args.input_dtype, simplify=args.simplify)

    return run_cli(build_parser(), argv, write, TruncateError)


if __name__ == "__main__":
    sys.exit(main())
